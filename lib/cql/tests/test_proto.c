/* test_proto.c - unit tests of frames, builders, values and the response
 * parser, including truncation, hostile lengths and fuzzing; partition
 * tokens (Murmur3), routing keys, the token ring, collections. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cql_internal.h"

/* ---- helpers ---------------------------------------------------------- */

typedef struct sample {
    const char *name;
    uint8_t opcode, flags;
    uint8_t *body;
    size_t len;
} sample;

#define MAX_SAMPLES 64
static sample corpus[MAX_SAMPLES];
static size_t n_corpus;

static void add_sample(const char *name, uint8_t opcode, uint8_t flags, cql_buf *b)
{
    assert_int_equal(b->err, 0);
    assert_true(n_corpus < MAX_SAMPLES);
    sample *s = &corpus[n_corpus++];
    s->name = name;
    s->opcode = opcode;
    s->flags = flags;
    s->len = b->len;
    s->body = malloc(b->len ? b->len : 1);
    assert_non_null(s->body);
    if (b->len)
        memcpy(s->body, b->data, b->len);
    cql_buf_free(b);
}

/* Parses from an exact-size heap copy so ASan sees any over-read. */
static int parse(uint8_t opcode, uint8_t flags, const uint8_t *body, size_t len, cql_result **out,
                 uint8_t **keep)
{
    cql_header h = {CQL_VERSION_RESPONSE, flags, 1, opcode, (uint32_t)len};
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, body, len);
    /* Without `keep` the caller will not hold the body: let the parser take
     * its own (also exact-size) copy. */
    int rc = cql_result_parse(&h, len ? copy : NULL, len, keep == NULL, out);
    if (rc || !keep)
        free(copy);
    else
        *keep = copy;
    if (rc && keep)
        *keep = NULL;
    return rc;
}

static cql_result *parse_ok(uint8_t opcode, uint8_t flags, cql_buf *b, uint8_t **keep)
{
    cql_result *r = NULL;
    assert_int_equal(b->err, 0);
    int rc = parse(opcode, flags, b->data, b->len, &r, keep);
    assert_int_equal(rc, 0);
    assert_non_null(r);
    return r;
}

static bool str_eq(cql_str s, const char *want)
{
    return s.len == strlen(want) && (s.len == 0 || memcmp(s.ptr, want, s.len) == 0);
}

static void put_str(cql_buf *b, const char *s) { cql_buf_string(b, s, strlen(s)); }

/* Calls every accessor on a parsed result; used on fuzzed input, where the
 * only requirement is "no crash, no over-read". */
static void exercise(cql_result *r)
{
    char buf[128];
    cql_column col;
    const cql_error *e = cql_result_error(r);
    if (e) {
        cql_error_format(e, buf, sizeof buf);
        cql_error_format(e, NULL, 0);
    }
    for (size_t i = 0; i < cql_result_warning_count(r); i++)
        (void)cql_result_warning(r, i);
    (void)cql_result_tracing_id(r);
    int32_t nc = cql_result_column_count(r);
    /* No_metadata results with no rows may claim 2^31 columns */
    for (int32_t i = 0; i < nc && i < 10000; i++)
        assert_int_equal(cql_result_column(r, i, &col), 0);
    const uint8_t *p;
    size_t len;
    cql_result_paging_state(r, &p, &len);
    for (int32_t i = 0; i < cql_result_param_count(r); i++)
        assert_int_equal(cql_result_param(r, i, &col), 0);
    (void)cql_result_prepared_id(r, &p, &len);
    for (int32_t i = -1; i <= cql_result_pk_count(r); i++) {
        int k = cql_result_pk_index(r, i);
        assert_true(k == CQL_ERANGE || (k >= 0 && k < cql_result_param_count(r)));
    }
    (void)cql_result_keyspace(r);
    cql_str a, b2, c, d;
    (void)cql_result_schema_change(r, &a, &b2, &c, &d);
    for (size_t i = 0; i < cql_result_supported_count(r); i++)
        cql_result_supported(r, i, &a, buf, sizeof buf);
    if (cql_result_kind(r) == CQL_RESULT_ROWS) {
        int rows = 0;
        /* zero-column results may claim 2^31 rows: iterate a bounded prefix */
        while (rows < 10000 && cql_result_next_row(r) == 1) {
            rows++;
            for (int32_t i = -1; i <= nc; i++) {
                int32_t i32;
                int64_t i64;
                int bo;
                uint8_t u[16];
                cql_str s;
                (void)cql_row_is_null(r, i);
                (void)cql_row_get_raw(r, i, &p, &len);
                (void)cql_row_get_int(r, i, &i32);
                (void)cql_row_get_bigint(r, i, &i64);
                (void)cql_row_get_timestamp(r, i, &i64);
                (void)cql_row_get_bool(r, i, &bo);
                (void)cql_row_get_uuid(r, i, u);
                (void)cql_row_get_text(r, i, &s);
                (void)cql_row_get_blob(r, i, &p, &len);
                size_t alen;
                (void)cql_row_get_inet(r, i, u, &alen);
                cql_iter it;
                if (cql_row_get_text_set(r, i, &it) == 0)
                    while (cql_iter_next_text(&it, &s) == 1)
                        assert_true(s.len == 0 || s.ptr != NULL);
                if (cql_row_get_collection(r, i, &it) == 0) {
                    int32_t el;
                    while (cql_iter_next(&it, &p, &el) == 1)
                        assert_true(el >= -1);
                }
            }
        }
        if (rows < 10000)
            assert_int_equal(rows, cql_result_row_count(r));
    }
}

/* A request frame decoded back by the test (the server's view). */
static const uint8_t *req_body(const cql_buf *b, size_t at, cql_header *h)
{
    assert_int_equal(cql_header_decode(b->data + at, b->len - at, CQL_MAX_BODY_DEFAULT, false, h), 0);
    assert_int_equal(h->version, CQL_VERSION_REQUEST);
    assert_int_equal(b->len - at - CQL_HEADER_LEN, h->length);
    return b->data + at + CQL_HEADER_LEN;
}

/* ---- frame header ----------------------------------------------------- */

static void test_header_roundtrip(void **st)
{
    (void)st;
    int16_t streams[] = {0, 1, 127, 128, 255, 256, 32767, -1, -32768};
    for (size_t i = 0; i < sizeof streams / sizeof streams[0]; i++) {
        cql_header h = {CQL_VERSION_RESPONSE, 0x0F, streams[i], CQL_OP_RESULT, 0x01020304}, g;
        uint8_t raw[CQL_HEADER_LEN];
        cql_header_encode(&h, raw);
        assert_int_equal(raw[0], 0x84);
        assert_int_equal(raw[5], 0x01);
        assert_int_equal(raw[8], 0x04);
        assert_int_equal(cql_header_decode(raw, sizeof raw, UINT32_MAX, true, &g), 0);
        assert_int_equal(g.stream, streams[i]);
        assert_int_equal(g.flags, 0x0F);
        assert_int_equal(g.opcode, CQL_OP_RESULT);
        assert_int_equal(g.length, 0x01020304);
    }
}

static void test_header_errors(void **st)
{
    (void)st;
    cql_header h = {CQL_VERSION_RESPONSE, 0, 3, CQL_OP_READY, 0}, g;
    uint8_t raw[CQL_HEADER_LEN];
    cql_header_encode(&h, raw);
    for (size_t n = 0; n < CQL_HEADER_LEN; n++)
        assert_int_equal(cql_header_decode(raw, n, 100, true, &g), CQL_EAGAIN);
    /* direction and version */
    assert_int_equal(cql_header_decode(raw, 9, 100, false, &g), CQL_EPROTO);
    raw[0] = 0x83;
    assert_int_equal(cql_header_decode(raw, 9, 100, true, &g), CQL_EPROTO);
    raw[0] = 0x85;
    assert_int_equal(cql_header_decode(raw, 9, 100, true, &g), CQL_EPROTO);
    raw[0] = 0x84;
    /* negative length */
    cql_put_be32(raw + 5, 0x80000000u);
    assert_int_equal(cql_header_decode(raw, 9, UINT32_MAX, true, &g), CQL_EPROTO);
    cql_put_be32(raw + 5, 0xFFFFFFFFu);
    assert_int_equal(cql_header_decode(raw, 9, UINT32_MAX, true, &g), CQL_EPROTO);
    /* over the configured cap, and exactly at it */
    cql_put_be32(raw + 5, CQL_MAX_BODY_DEFAULT + 1);
    assert_int_equal(cql_header_decode(raw, 9, CQL_MAX_BODY_DEFAULT, true, &g), CQL_ETOOBIG);
    cql_put_be32(raw + 5, CQL_MAX_BODY_DEFAULT);
    assert_int_equal(cql_header_decode(raw, 9, CQL_MAX_BODY_DEFAULT, true, &g), 0);
    cql_put_be32(raw + 5, 1025);
    assert_int_equal(cql_header_decode(raw, 9, 1024, true, &g), CQL_ETOOBIG);
}

/* ---- builders --------------------------------------------------------- */

static void test_startup_options(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    assert_int_equal(cql_build_startup(&b, 7), 0);
    static const uint8_t want[] = {
        0x04, 0x00, 0x00, 0x07, 0x01, 0x00, 0x00, 0x00, 0x16, /* header, len 22 */
        0x00, 0x01, 0x00, 0x0B, 'C', 'Q', 'L', '_', 'V', 'E', 'R', 'S', 'I', 'O', 'N',
        0x00, 0x05, '3', '.', '0', '.', '0'};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    size_t at = b.len;
    assert_int_equal(cql_build_options(&b, 300), 0);
    cql_header h;
    req_body(&b, at, &h);
    assert_int_equal(h.opcode, CQL_OP_OPTIONS);
    assert_int_equal(h.stream, 300);
    assert_int_equal(h.length, 0);
    assert_int_equal(cql_build_options(&b, -1), CQL_EINVAL);
    assert_int_equal(cql_build_startup(&b, -5), CQL_EINVAL);
    cql_buf_free(&b);
}

static const uint8_t UUID4[16] = {0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef,
                                  0x80, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77};
static const uint8_t UUID1[16] = {0x58, 0x1c, 0x3a, 0x10, 0x7b, 0x2e, 0x11, 0xee,
                                  0x9c, 0x5b, 0x02, 0x42, 0xac, 0x12, 0x00, 0x02};

/* One value of every supported type plus null and unset. */
static size_t all_values(cql_value *v)
{
    static const uint8_t blob[] = {0, 1, 2, 0xff};
    size_t n = 0;
    v[n++] = cql_value_int(-2);
    v[n++] = cql_value_bigint(INT64_MIN);
    v[n++] = cql_value_bool(7);
    v[n++] = cql_value_timestamp(1700000000123);
    v[n++] = cql_value_uuid(UUID4);
    v[n++] = cql_value_timeuuid(UUID1);
    v[n++] = cql_value_text("héllo");
    v[n++] = cql_value_ascii("abc", 3);
    v[n++] = cql_value_blob(blob, sizeof blob);
    v[n++] = cql_value_blob(NULL, 0);
    v[n++] = cql_value_null();
    v[n++] = cql_value_unset();
    return n;
}

static void check_values(cql_rd *r, const cql_value *v, size_t n, bool names)
{
    uint16_t count;
    assert_int_equal(cql_rd_u16(r, &count), 0);
    assert_int_equal(count, n);
    for (size_t i = 0; i < n; i++) {
        cql_str s;
        if (names) {
            assert_int_equal(cql_rd_string(r, &s), 0);
            char want[24];
            snprintf(want, sizeof want, "v%zu", i);
            assert_true(str_eq(s, want));
        }
        int32_t len;
        assert_int_equal(cql_rd_i32(r, &len), 0);
        assert_int_equal(len, v[i].len);
        if (len > 0) {
            const uint8_t *p;
            assert_int_equal(cql_rd_raw(r, (size_t)len, &p), 0);
            assert_memory_equal(p, v[i].ext ? v[i].ext : v[i].inl, (size_t)len);
        }
    }
}

static void test_query_all_flags(void **st)
{
    (void)st;
    cql_value v[16];
    size_t n = all_values(v);
    const char *names[16];
    char namebuf[16][24];
    for (size_t i = 0; i < n; i++) {
        snprintf(namebuf[i], sizeof namebuf[i], "v%zu", i);
        names[i] = namebuf[i];
    }
    static const uint8_t ps[] = {9, 8, 7};
    cql_qparams p;
    cql_qparams_init(&p);
    p.consistency = CQL_LOCAL_QUORUM;
    p.values = v;
    p.n_values = n;
    p.names = names;
    p.skip_metadata = true;
    p.page_size = 100;
    p.paging_state = ps;
    p.paging_state_len = sizeof ps;
    p.serial_consistency = CQL_LOCAL_SERIAL;
    p.timestamp_us = 1234567890123456;
    cql_buf b;
    cql_buf_init(&b);
    const char *q = "SELECT * FROM t WHERE a = :v0";
    assert_int_equal(cql_build_query(&b, 42, q, strlen(q), &p), 0);
    cql_header h;
    const uint8_t *body = req_body(&b, 0, &h);
    assert_int_equal(h.opcode, CQL_OP_QUERY);
    assert_int_equal(h.stream, 42);
    cql_rd r = {body, h.length, 0};
    cql_str s;
    uint16_t u16;
    uint8_t flags;
    int32_t i32;
    int64_t i64;
    assert_int_equal(cql_rd_long_string(&r, &s), 0);
    assert_true(str_eq(s, q));
    assert_int_equal(cql_rd_u16(&r, &u16), 0);
    assert_int_equal(u16, CQL_LOCAL_QUORUM);
    assert_int_equal(cql_rd_u8(&r, &flags), 0);
    assert_int_equal(flags, 0x7F);
    check_values(&r, v, n, true);
    assert_int_equal(cql_rd_i32(&r, &i32), 0);
    assert_int_equal(i32, 100);
    const uint8_t *pp;
    assert_int_equal(cql_rd_bytes(&r, &pp, &i32), 0);
    assert_int_equal(i32, 3);
    assert_memory_equal(pp, ps, 3);
    assert_int_equal(cql_rd_u16(&r, &u16), 0);
    assert_int_equal(u16, CQL_LOCAL_SERIAL);
    assert_int_equal(cql_rd_i64(&r, &i64), 0);
    assert_int_equal(i64, 1234567890123456);
    assert_int_equal(cql_rd_left(&r), 0);

    /* Minimal QUERY: consistency and flags only. */
    size_t at = b.len;
    cql_qparams_init(&p);
    assert_int_equal(cql_build_query(&b, 0, "USE ks", 6, &p), 0);
    body = req_body(&b, at, &h);
    assert_int_equal(h.length, 4 + 6 + 2 + 1);
    assert_int_equal(body[h.length - 1], 0);           /* flags */
    assert_int_equal(cql_be16(body + 10), CQL_ONE);    /* default consistency */
    cql_buf_free(&b);
}

static void test_builder_rejects_and_rolls_back(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    assert_int_equal(cql_build_options(&b, 1), 0);
    size_t good = b.len;
    uint8_t snapshot[CQL_HEADER_LEN];
    memcpy(snapshot, b.data, good);

    cql_qparams p;
    cql_qparams_init(&p);
    p.consistency = 0x0B; /* not a consistency */
    assert_int_equal(cql_build_query(&b, 2, "x", 1, &p), CQL_EINVAL);
    cql_qparams_init(&p);
    p.serial_consistency = CQL_QUORUM;
    assert_int_equal(cql_build_query(&b, 2, "x", 1, &p), CQL_EINVAL);

    /* Invalid values are caught while writing: the partial frame must go. */
    cql_value bad[3] = {cql_value_int(1), cql_value_blob(NULL, 5), cql_value_int(2)};
    assert_int_equal(bad[1].type, CQL_TYPE_INVALID);
    cql_qparams_init(&p);
    p.values = bad;
    p.n_values = 3;
    assert_int_equal(cql_build_query(&b, 2, "x", 1, &p), CQL_EINVAL);
    assert_int_equal(b.len, good);
    assert_int_equal(b.err, 0);
    assert_memory_equal(b.data, snapshot, good);

    cql_value nonascii = cql_value_ascii("\xc3\xa9", 2);
    assert_int_equal(nonascii.type, CQL_TYPE_INVALID);
    uint8_t v4[16];
    memcpy(v4, UUID4, 16);
    assert_int_equal(cql_value_timeuuid(v4).type, CQL_TYPE_INVALID);

    /* A string longer than a [string] can hold. */
    size_t big = 70000;
    char *s = malloc(big);
    assert_non_null(s);
    memset(s, 'a', big);
    const char *longname[1] = {s};
    s[big - 1] = '\0';
    cql_value one = cql_value_int(1);
    cql_qparams_init(&p);
    p.values = &one;
    p.n_values = 1;
    p.names = longname;
    assert_int_equal(cql_build_query(&b, 3, "x", 1, &p), CQL_EINVAL);
    assert_int_equal(b.len, good);
    assert_int_equal(cql_build_execute(&b, 3, (const uint8_t *)s, big, &p), CQL_EINVAL);
    assert_int_equal(b.len, good);
    free(s);
    assert_int_equal(cql_build_execute(&b, 3, NULL, 0, &p), CQL_EINVAL);
    assert_int_equal(cql_build_query(&b, -3, "x", 1, &p), CQL_EINVAL);
    assert_int_equal(b.len, good);
    cql_buf_free(&b);
}

static void test_prepare_execute(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    const char *q = "INSERT INTO t (a, b) VALUES (?, ?)";
    assert_int_equal(cql_build_prepare(&b, 5, q, strlen(q)), 0);
    cql_header h;
    const uint8_t *body = req_body(&b, 0, &h);
    assert_int_equal(h.opcode, CQL_OP_PREPARE);
    cql_rd r = {body, h.length, 0};
    cql_str s;
    assert_int_equal(cql_rd_long_string(&r, &s), 0);
    assert_true(str_eq(s, q));
    assert_int_equal(cql_rd_left(&r), 0);

    size_t at = b.len;
    static const uint8_t id[] = {0xde, 0xad, 0xbe, 0xef};
    cql_value v[16];
    size_t n = all_values(v);
    cql_qparams p;
    cql_qparams_init(&p);
    p.consistency = CQL_QUORUM;
    p.values = v;
    p.n_values = n;
    p.page_size = 10;
    assert_int_equal(cql_build_execute(&b, 32767, id, sizeof id, &p), 0);
    body = req_body(&b, at, &h);
    assert_int_equal(h.opcode, CQL_OP_EXECUTE);
    assert_int_equal(h.stream, 32767);
    r = (cql_rd){body, h.length, 0};
    const uint8_t *gid;
    size_t glen;
    uint16_t cl;
    uint8_t flags;
    int32_t ps;
    assert_int_equal(cql_rd_short_bytes(&r, &gid, &glen), 0);
    assert_int_equal(glen, 4);
    assert_memory_equal(gid, id, 4);
    assert_int_equal(cql_rd_u16(&r, &cl), 0);
    assert_int_equal(cl, CQL_QUORUM);
    assert_int_equal(cql_rd_u8(&r, &flags), 0);
    assert_int_equal(flags, CQL_QF_VALUES | CQL_QF_PAGE_SIZE);
    check_values(&r, v, n, false);
    assert_int_equal(cql_rd_i32(&r, &ps), 0);
    assert_int_equal(ps, 10);
    assert_int_equal(cql_rd_left(&r), 0);
    cql_buf_free(&b);
}

static void test_batch(void **st)
{
    (void)st;
    static const uint8_t id[] = {1, 2, 3};
    cql_value v1[2] = {cql_value_int(1), cql_value_text("x")};
    cql_value v2[1] = {cql_value_null()};
    cql_batch_item items[3] = {
        {.prepared = false, .query = "INSERT a", .query_len = 8, .values = v1, .n_values = 2},
        {.prepared = true, .id = id, .id_len = 3, .values = v2, .n_values = 1},
        {.prepared = false, .query = "DELETE b", .query_len = 8},
    };
    cql_buf b;
    cql_buf_init(&b);
    assert_int_equal(cql_build_batch(&b, 9, CQL_BATCH_UNLOGGED, items, 3, CQL_ALL, CQL_SERIAL, 77), 0);
    cql_header h;
    const uint8_t *body = req_body(&b, 0, &h);
    assert_int_equal(h.opcode, CQL_OP_BATCH);
    cql_rd r = {body, h.length, 0};
    uint8_t u8;
    uint16_t u16;
    cql_str s;
    const uint8_t *p;
    size_t len;
    int64_t ts;
    assert_int_equal(cql_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, CQL_BATCH_UNLOGGED);
    assert_int_equal(cql_rd_u16(&r, &u16), 0);
    assert_int_equal(u16, 3);
    assert_int_equal(cql_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, 0);
    assert_int_equal(cql_rd_long_string(&r, &s), 0);
    assert_true(str_eq(s, "INSERT a"));
    check_values(&r, v1, 2, false);
    assert_int_equal(cql_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, 1);
    assert_int_equal(cql_rd_short_bytes(&r, &p, &len), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(p, id, 3);
    check_values(&r, v2, 1, false);
    assert_int_equal(cql_rd_u8(&r, &u8), 0);
    assert_int_equal(cql_rd_long_string(&r, &s), 0);
    assert_true(str_eq(s, "DELETE b"));
    check_values(&r, NULL, 0, false);
    assert_int_equal(cql_rd_u16(&r, &u16), 0);
    assert_int_equal(u16, CQL_ALL);
    assert_int_equal(cql_rd_u8(&r, &u8), 0);
    assert_int_equal(u8, CQL_QF_SERIAL_CONSISTENCY | CQL_QF_DEFAULT_TIMESTAMP);
    assert_int_equal(cql_rd_u16(&r, &u16), 0);
    assert_int_equal(u16, CQL_SERIAL);
    assert_int_equal(cql_rd_i64(&r, &ts), 0);
    assert_int_equal(ts, 77);
    assert_int_equal(cql_rd_left(&r), 0);

    size_t at = b.len;
    assert_int_equal(cql_build_batch(&b, 9, 3, items, 3, CQL_ALL, 0, -1), CQL_EINVAL);
    items[1].id = NULL;
    assert_int_equal(cql_build_batch(&b, 9, 0, items, 3, CQL_ALL, 0, -1), CQL_EINVAL);
    assert_int_equal(b.len, at);
    cql_buf_free(&b);
}

/* ---- values ----------------------------------------------------------- */

static void test_values_roundtrip(void **st)
{
    (void)st;
    int32_t ints[] = {0, 1, -1, INT32_MAX, INT32_MIN, 0x01020304};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        cql_value v = cql_value_int(ints[i]);
        int32_t out;
        assert_int_equal(v.len, 4);
        assert_int_equal(v.type, CQL_TYPE_INT);
        assert_int_equal(cql_decode_int(v.inl, 4, &out), 0);
        assert_int_equal(out, ints[i]);
    }
    cql_value v = cql_value_int(0x01020304);
    assert_int_equal(v.inl[0], 1); /* big-endian */
    assert_int_equal(v.inl[3], 4);
    int64_t longs[] = {0, -1, INT64_MAX, INT64_MIN, 1700000000123};
    for (size_t i = 0; i < sizeof longs / sizeof longs[0]; i++) {
        int64_t out;
        v = cql_value_bigint(longs[i]);
        assert_int_equal(v.len, 8);
        assert_int_equal(cql_decode_bigint(v.inl, 8, &out), 0);
        assert_int_equal(out, longs[i]);
        v = cql_value_timestamp(longs[i]);
        assert_int_equal(v.type, CQL_TYPE_TIMESTAMP);
        assert_int_equal(cql_decode_bigint(v.inl, 8, &out), 0);
        assert_int_equal(out, longs[i]);
    }
    int b;
    v = cql_value_bool(1);
    assert_int_equal(cql_decode_bool(v.inl, 1, &b), 0);
    assert_int_equal(b, 1);
    v = cql_value_bool(0);
    assert_int_equal(cql_decode_bool(v.inl, 1, &b), 0);
    assert_int_equal(b, 0);
    uint8_t two = 2;
    assert_int_equal(cql_decode_bool(&two, 1, &b), 0);
    assert_int_equal(b, 1);
    uint8_t u[16];
    v = cql_value_uuid(UUID4);
    assert_int_equal(cql_decode_uuid(v.inl, 16, u), 0);
    assert_memory_equal(u, UUID4, 16);
    v = cql_value_timeuuid(UUID1);
    assert_int_equal(v.type, CQL_TYPE_TIMEUUID);
    assert_int_equal(cql_decode_uuid(v.inl, 16, u), 0);
    assert_memory_equal(u, UUID1, 16);
    v = cql_value_text("hi");
    assert_int_equal(v.len, 2);
    assert_memory_equal(v.ext, "hi", 2);
    v = cql_value_text("");
    assert_int_equal(v.len, 0);
    assert_non_null(v.ext);
    assert_int_equal(cql_value_null().len, -1);
    assert_int_equal(cql_value_unset().len, -2);
    /* copies are independent of the original (inline storage) */
    cql_value a = cql_value_bigint(5), c2 = a;
    a.inl[7] = 9;
    int64_t out;
    assert_int_equal(cql_decode_bigint(c2.inl, 8, &out), 0);
    assert_int_equal(out, 5);
    /* wrong lengths */
    assert_int_equal(cql_decode_int(u, 3, &ints[0]), CQL_EPROTO);
    assert_int_equal(cql_decode_bigint(u, 4, &out), CQL_EPROTO);
    assert_int_equal(cql_decode_bool(u, 0, &b), CQL_EPROTO);
    assert_int_equal(cql_decode_uuid(u, 15, u), CQL_EPROTO);
}

/* ---- responses -------------------------------------------------------- */

typedef struct err_case {
    int32_t code;
    const char *expect; /* substring of the formatted message */
} err_case;

static void build_error(cql_buf *b, int32_t code)
{
    cql_buf_init(b);
    cql_buf_i32(b, code);
    put_str(b, "boom");
    switch (code) {
    case CQL_UNAVAILABLE:
        cql_buf_u16(b, CQL_QUORUM); cql_buf_i32(b, 3); cql_buf_i32(b, 1);
        break;
    case CQL_WRITE_TIMEOUT:
        cql_buf_u16(b, CQL_ALL); cql_buf_i32(b, 1); cql_buf_i32(b, 2); put_str(b, "BATCH_LOG");
        break;
    case CQL_READ_TIMEOUT:
        cql_buf_u16(b, CQL_ONE); cql_buf_i32(b, 0); cql_buf_i32(b, 1); cql_buf_u8(b, 0);
        break;
    case CQL_READ_FAILURE:
        cql_buf_u16(b, CQL_TWO); cql_buf_i32(b, 1); cql_buf_i32(b, 2); cql_buf_i32(b, 1);
        cql_buf_u8(b, 1);
        break;
    case CQL_WRITE_FAILURE:
        cql_buf_u16(b, CQL_THREE); cql_buf_i32(b, 2); cql_buf_i32(b, 3); cql_buf_i32(b, 1);
        put_str(b, "COUNTER");
        break;
    case CQL_FUNCTION_FAILURE:
        put_str(b, "ks"); put_str(b, "fn"); cql_buf_u16(b, 2); put_str(b, "int"); put_str(b, "text");
        break;
    case CQL_ALREADY_EXISTS:
        put_str(b, "ks"); put_str(b, "tbl");
        break;
    case CQL_UNPREPARED:
        cql_buf_short_bytes(b, "\xab\xcd", 2);
        break;
    default:
        break;
    }
}

static const err_case err_cases[] = {
    {CQL_SERVER_ERROR, "Server_error (0x0000): boom"},
    {CQL_PROTOCOL_ERROR, "Protocol_error (0x000a): boom"},
    {CQL_AUTH_ERROR, "Authentication_error (0x0100)"},
    {CQL_UNAVAILABLE, "Unavailable (0x1000): boom [cl=QUORUM required=3 alive=1]"},
    {CQL_OVERLOADED, "Overloaded (0x1001)"},
    {CQL_IS_BOOTSTRAPPING, "Is_bootstrapping (0x1002)"},
    {CQL_TRUNCATE_ERROR, "Truncate_error (0x1003)"},
    {CQL_WRITE_TIMEOUT, "[cl=ALL received=1 blockfor=2 write_type=BATCH_LOG]"},
    {CQL_READ_TIMEOUT, "[cl=ONE received=0 blockfor=1 data_present=no]"},
    {CQL_READ_FAILURE, "[cl=TWO received=1 blockfor=2 failures=1 data_present=yes]"},
    {CQL_FUNCTION_FAILURE, "[function=ks.fn(int, text)]"},
    {CQL_WRITE_FAILURE, "[cl=THREE received=2 blockfor=3 failures=1 write_type=COUNTER]"},
    {CQL_SYNTAX_ERROR, "Syntax_error (0x2000): boom"},
    {CQL_UNAUTHORIZED, "Unauthorized (0x2100)"},
    {CQL_INVALID, "Invalid (0x2200)"},
    {CQL_CONFIG_ERROR, "Config_error (0x2300)"},
    {CQL_ALREADY_EXISTS, "Already_exists (0x2400): boom [table=ks.tbl]"},
    {CQL_UNPREPARED, "Unprepared (0x2500): boom [id=abcd]"},
    {0x7777, "Unknown_error (0x7777): boom"},
};

static void test_errors(void **st)
{
    (void)st;
    for (size_t i = 0; i < sizeof err_cases / sizeof err_cases[0]; i++) {
        cql_buf b;
        build_error(&b, err_cases[i].code);
        uint8_t *keep;
        cql_result *r = parse_ok(CQL_OP_ERROR, 0, &b, &keep);
        const cql_error *e = cql_result_error(r);
        assert_non_null(e);
        assert_int_equal(e->code, err_cases[i].code);
        assert_true(str_eq(e->message, "boom"));
        char msg[256];
        int n = cql_error_format(e, msg, sizeof msg);
        assert_int_equal((size_t)n, strlen(msg));
        if (!strstr(msg, err_cases[i].expect))
            fail_msg("code 0x%04x: '%s' lacks '%s'", (unsigned)err_cases[i].code, msg,
                     err_cases[i].expect);
        /* snprintf semantics with a tiny buffer */
        char tiny[8];
        assert_int_equal(cql_error_format(e, tiny, sizeof tiny), n);
        assert_int_equal(strlen(tiny), 7);
        assert_int_equal(cql_result_kind(r), CQL_RESULT_NONE);
        assert_int_equal(cql_result_row_count(r), 0);
        cql_result_free(r);
        free(keep);
        char nm[32];
        snprintf(nm, sizeof nm, "error-%04x", (unsigned)err_cases[i].code);
        (void)nm;
        add_sample("error", CQL_OP_ERROR, 0, &b);
    }
    /* Already_exists for a keyspace has an empty table. */
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_ALREADY_EXISTS);
    put_str(&b, "exists");
    put_str(&b, "ks");
    put_str(&b, "");
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_ERROR, 0, &b, &keep);
    char msg[128];
    cql_error_format(cql_result_error(r), msg, sizeof msg);
    assert_non_null(strstr(msg, "[keyspace=ks]"));
    cql_result_free(r);
    free(keep);
    cql_buf_free(&b);
}

static void test_ready_supported(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_result *r = parse_ok(CQL_OP_READY, 0, &b, NULL);
    assert_int_equal(cql_result_opcode(r), CQL_OP_READY);
    assert_null(cql_result_error(r));
    cql_result_free(r);

    cql_buf_u16(&b, 2);
    put_str(&b, "CQL_VERSION");
    cql_buf_u16(&b, 1);
    put_str(&b, "3.4.7");
    put_str(&b, "COMPRESSION");
    cql_buf_u16(&b, 2);
    put_str(&b, "snappy");
    put_str(&b, "lz4");
    uint8_t *keep;
    r = parse_ok(CQL_OP_SUPPORTED, 0, &b, &keep);
    assert_int_equal(cql_result_supported_count(r), 2);
    cql_str key;
    char vals[64];
    assert_int_equal(cql_result_supported(r, 1, &key, vals, sizeof vals), 10);
    assert_true(str_eq(key, "COMPRESSION"));
    assert_string_equal(vals, "snappy,lz4");
    assert_int_equal(cql_result_supported(r, 2, &key, vals, sizeof vals), CQL_ERANGE);
    cql_result_free(r);
    free(keep);
    add_sample("supported", CQL_OP_SUPPORTED, 0, &b);
}

static void test_void_keyspace_schema(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_VOID);
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_int_equal(cql_result_kind(r), CQL_RESULT_VOID);
    assert_int_equal(cql_result_next_row(r), CQL_EINVAL);
    cql_result_free(r);
    free(keep);
    add_sample("void", CQL_OP_RESULT, 0, &b);

    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_SET_KEYSPACE);
    put_str(&b, "messenger");
    r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_true(str_eq(cql_result_keyspace(r), "messenger"));
    cql_result_free(r);
    free(keep);
    add_sample("set_keyspace", CQL_OP_RESULT, 0, &b);

    struct {
        const char *target;
        int extra; /* 0 keyspace, 1 table/type, 2 function */
    } cases[] = {{"KEYSPACE", 0}, {"TABLE", 1}, {"TYPE", 1}, {"FUNCTION", 2}, {"AGGREGATE", 2}};
    for (size_t i = 0; i < 5; i++) {
        cql_buf_init(&b);
        cql_buf_i32(&b, CQL_RESULT_SCHEMA_CHANGE);
        put_str(&b, "CREATED");
        put_str(&b, cases[i].target);
        put_str(&b, "ks");
        if (cases[i].extra)
            put_str(&b, "obj");
        if (cases[i].extra == 2) {
            cql_buf_u16(&b, 1);
            put_str(&b, "int");
        }
        r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
        cql_str ch, tg, ks, nm;
        assert_int_equal(cql_result_schema_change(r, &ch, &tg, &ks, &nm), 0);
        assert_true(str_eq(ch, "CREATED"));
        assert_true(str_eq(tg, cases[i].target));
        assert_true(str_eq(ks, "ks"));
        assert_true(str_eq(nm, cases[i].extra ? "obj" : ""));
        cql_result_free(r);
        free(keep);
        add_sample("schema_change", CQL_OP_RESULT, 0, &b);
    }
}

/* Column spec helper: no global spec -> ks and table first. */
static void col(cql_buf *b, bool global, const char *name, uint16_t type)
{
    if (!global) {
        put_str(b, "ks");
        put_str(b, "t");
    }
    put_str(b, name);
    cql_buf_u16(b, type);
}

static void value(cql_buf *b, const cql_value v) { cql_buf_value(b, &v); }

static void build_rows(cql_buf *b, bool global, bool more, int32_t nrows)
{
    cql_buf_init(b);
    cql_buf_i32(b, CQL_RESULT_ROWS);
    cql_buf_i32(b, (global ? CQL_RF_GLOBAL_TABLES_SPEC : 0) | (more ? CQL_RF_HAS_MORE_PAGES : 0));
    cql_buf_i32(b, 11);
    if (more)
        cql_buf_bytes(b, "\x01\x02\x03\x04\x05", 5);
    if (global) {
        put_str(b, "ks");
        put_str(b, "t");
    }
    col(b, global, "id", CQL_TYPE_UUID);
    col(b, global, "tid", CQL_TYPE_TIMEUUID);
    col(b, global, "name", CQL_TYPE_VARCHAR);
    col(b, global, "code", CQL_TYPE_ASCII);
    col(b, global, "at", CQL_TYPE_TIMESTAMP);
    col(b, global, "n", CQL_TYPE_INT);
    col(b, global, "big", CQL_TYPE_BIGINT);
    col(b, global, "ok", CQL_TYPE_BOOLEAN);
    col(b, global, "data", CQL_TYPE_BLOB);
    /* collections and a custom type to prove the type walker */
    col(b, global, "tags", CQL_TYPE_MAP);
    cql_buf_u16(b, CQL_TYPE_VARCHAR);
    cql_buf_u16(b, CQL_TYPE_LIST);
    cql_buf_u16(b, CQL_TYPE_INT);
    col(b, global, "x", CQL_TYPE_CUSTOM);
    put_str(b, "org.example.Type");
    cql_buf_i32(b, nrows);
    for (int32_t i = 0; i < nrows; i++) {
        value(b, cql_value_uuid(UUID4));
        value(b, cql_value_timeuuid(UUID1));
        value(b, i == 1 ? cql_value_null() : cql_value_text("héllo"));
        value(b, cql_value_ascii("AB", 2));
        value(b, cql_value_timestamp(1700000000000 + i));
        value(b, cql_value_int(i * 10));
        value(b, cql_value_bigint(-(int64_t)i));
        value(b, cql_value_bool(i & 1));
        value(b, cql_value_blob("\x00\xff", 2));
        value(b, cql_value_blob("", 0)); /* empty map */
        value(b, cql_value_null());
    }
}

static void test_rows(void **st)
{
    (void)st;
    for (int global = 0; global < 2; global++) {
        cql_buf b;
        build_rows(&b, global, global, 3);
        uint8_t *keep;
        cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
        assert_int_equal(cql_result_kind(r), CQL_RESULT_ROWS);
        assert_int_equal(cql_result_row_count(r), 3);
        assert_int_equal(cql_result_column_count(r), 11);
        cql_column c;
        assert_int_equal(cql_result_column(r, 2, &c), 0);
        assert_true(str_eq(c.name, "name"));
        assert_true(str_eq(c.keyspace, "ks"));
        assert_true(str_eq(c.table, "t"));
        assert_int_equal(c.type, CQL_TYPE_VARCHAR);
        assert_int_equal(cql_result_column(r, 9, &c), 0);
        assert_int_equal(c.type, CQL_TYPE_MAP);
        assert_int_equal(c.subtype[0], CQL_TYPE_VARCHAR);
        assert_int_equal(c.subtype[1], CQL_TYPE_LIST);
        assert_int_equal(cql_result_column(r, 10, &c), 0);
        assert_true(str_eq(c.custom_class, "org.example.Type"));
        assert_int_equal(cql_result_column(r, 11, &c), CQL_ERANGE);
        assert_int_equal(cql_result_column(r, -1, &c), CQL_ERANGE);
        const uint8_t *ps;
        size_t pslen;
        cql_result_paging_state(r, &ps, &pslen);
        assert_int_equal(cql_result_has_more_pages(r), global);
        assert_int_equal(pslen, global ? 5 : 0);
        if (global)
            assert_memory_equal(ps, "\x01\x02\x03\x04\x05", 5);

        int32_t i32;
        /* no current row yet */
        assert_int_equal(cql_row_get_int(r, 5, &i32), CQL_ERANGE);
        for (int32_t row = 0; row < 3; row++) {
            assert_int_equal(cql_result_next_row(r), 1);
            uint8_t u[16];
            cql_str s;
            int64_t i64;
            int bo;
            const uint8_t *p;
            size_t len;
            assert_int_equal(cql_row_get_uuid(r, 0, u), 0);
            assert_memory_equal(u, UUID4, 16);
            assert_int_equal(cql_row_get_uuid(r, 1, u), 0);
            assert_memory_equal(u, UUID1, 16);
            if (row == 1) {
                assert_int_equal(cql_row_get_text(r, 2, &s), CQL_ENULL);
                assert_int_equal(cql_row_is_null(r, 2), 1);
            } else {
                assert_int_equal(cql_row_get_text(r, 2, &s), 0);
                assert_true(str_eq(s, "héllo"));
                assert_int_equal(cql_row_is_null(r, 2), 0);
            }
            assert_int_equal(cql_row_get_text(r, 3, &s), 0);
            assert_true(str_eq(s, "AB"));
            assert_int_equal(cql_row_get_timestamp(r, 4, &i64), 0);
            assert_int_equal(i64, 1700000000000 + row);
            assert_int_equal(cql_row_get_int(r, 5, &i32), 0);
            assert_int_equal(i32, row * 10);
            assert_int_equal(cql_row_get_bigint(r, 6, &i64), 0);
            assert_int_equal(i64, -row);
            assert_int_equal(cql_row_get_bool(r, 7, &bo), 0);
            assert_int_equal(bo, row & 1);
            assert_int_equal(cql_row_get_blob(r, 8, &p, &len), 0);
            assert_int_equal(len, 2);
            assert_memory_equal(p, "\x00\xff", 2);
            assert_int_equal(cql_row_get_raw(r, 9, &p, &len), 0);
            assert_int_equal(len, 0);
            assert_int_equal(cql_row_get_raw(r, 10, &p, &len), CQL_ENULL);
            /* type checks */
            assert_int_equal(cql_row_get_int(r, 6, &i32), CQL_ETYPE);
            assert_int_equal(cql_row_get_bigint(r, 5, &i64), CQL_ETYPE);
            assert_int_equal(cql_row_get_text(r, 8, &s), CQL_ETYPE);
            assert_int_equal(cql_row_get_uuid(r, 2, u), CQL_ETYPE);
            assert_int_equal(cql_row_get_timestamp(r, 6, &i64), CQL_ETYPE);
            assert_int_equal(cql_row_get_bool(r, 5, &bo), CQL_ETYPE);
            assert_int_equal(cql_row_get_blob(r, 2, &p, &len), CQL_ETYPE);
            assert_int_equal(cql_row_get_int(r, 11, &i32), CQL_ERANGE);
            assert_int_equal(cql_row_get_int(r, -1, &i32), CQL_ERANGE);
        }
        assert_int_equal(cql_result_next_row(r), 0);
        assert_int_equal(cql_result_next_row(r), 0);
        assert_int_equal(cql_row_get_int(r, 5, &i32), CQL_ERANGE);
        cql_result_rewind(r);
        assert_int_equal(cql_result_next_row(r), 1);
        assert_int_equal(cql_row_get_int(r, 5, &i32), 0);
        assert_int_equal(i32, 0);
        cql_result_free(r);
        free(keep);
        add_sample(global ? "rows-global" : "rows", CQL_OP_RESULT, 0, &b);
    }
}

static void test_rows_no_metadata(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, CQL_RF_NO_METADATA | CQL_RF_HAS_MORE_PAGES);
    cql_buf_i32(&b, 2);
    cql_buf_bytes(&b, "\x07", 1);
    cql_buf_i32(&b, 2);
    for (int i = 0; i < 2; i++) {
        value(&b, cql_value_int(i));
        value(&b, cql_value_bigint(i));
    }
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    cql_column c;
    assert_int_equal(cql_result_column(r, 1, &c), 0);
    assert_int_equal(c.type, CQL_TYPE_UNKNOWN);
    assert_int_equal(cql_result_has_more_pages(r), 1);
    int32_t i32;
    int64_t i64;
    assert_int_equal(cql_result_next_row(r), 1);
    assert_int_equal(cql_result_next_row(r), 1);
    /* Without metadata, only the length check guards the accessors. */
    assert_int_equal(cql_row_get_int(r, 0, &i32), 0);
    assert_int_equal(i32, 1);
    assert_int_equal(cql_row_get_bigint(r, 1, &i64), 0);
    assert_int_equal(cql_row_get_bigint(r, 0, &i64), CQL_EPROTO);
    assert_int_equal(cql_result_next_row(r), 0);
    cql_result_free(r);
    free(keep);
    add_sample("rows-nometa", CQL_OP_RESULT, 0, &b);

    /* zero rows, zero columns */
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, 0);
    cql_buf_i32(&b, 0);
    cql_buf_i32(&b, 0);
    r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_int_equal(cql_result_next_row(r), 0);
    cql_result_free(r);
    free(keep);
    cql_buf_free(&b);
}

static void test_prepared(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_PREPARED);
    cql_buf_short_bytes(&b, "\x11\x22\x33\x44", 4);
    cql_buf_i32(&b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(&b, 2);
    cql_buf_i32(&b, 1);       /* pk_count */
    cql_buf_u16(&b, 0);       /* pk index */
    put_str(&b, "ks");
    put_str(&b, "t");
    col(&b, true, "id", CQL_TYPE_UUID);
    col(&b, true, "tags", CQL_TYPE_SET);
    cql_buf_u16(&b, CQL_TYPE_VARCHAR);
    cql_buf_i32(&b, CQL_RF_NO_METADATA); /* result metadata: empty */
    cql_buf_i32(&b, 0);
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_int_equal(cql_result_kind(r), CQL_RESULT_PREPARED);
    const uint8_t *id;
    size_t len;
    assert_int_equal(cql_result_prepared_id(r, &id, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(id, "\x11\x22\x33\x44", 4);
    assert_int_equal(cql_result_param_count(r), 2);
    cql_column c;
    assert_int_equal(cql_result_param(r, 1, &c), 0);
    assert_true(str_eq(c.name, "tags"));
    assert_int_equal(c.type, CQL_TYPE_SET);
    assert_int_equal(c.subtype[0], CQL_TYPE_VARCHAR);
    assert_int_equal(cql_result_param(r, 2, &c), CQL_ERANGE);
    assert_int_equal(cql_result_column_count(r), 0);
    cql_result_free(r);
    free(keep);
    add_sample("prepared", CQL_OP_RESULT, 0, &b);

    /* pk index out of range of the bind markers */
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_PREPARED);
    cql_buf_short_bytes(&b, "\x01", 1);
    cql_buf_i32(&b, 0);
    cql_buf_i32(&b, 0);
    cql_buf_i32(&b, 1);
    cql_buf_u16(&b, 3);
    cql_buf_i32(&b, CQL_RF_NO_METADATA);
    cql_buf_i32(&b, 0);
    cql_result *bad;
    assert_int_equal(parse(CQL_OP_RESULT, 0, b.data, b.len, &bad, NULL), CQL_EPROTO);
    assert_null(bad);
    cql_buf_free(&b);
}

static void test_frame_flags(void **st)
{
    (void)st;
    static const uint8_t trace[16] = {0xaa, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 0xbb};
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_put(&b, trace, 16);
    cql_buf_u16(&b, 2);
    put_str(&b, "Aggregation query used without partition key");
    put_str(&b, "second");
    cql_buf_u16(&b, 1); /* custom payload: bytes map */
    put_str(&b, "k");
    cql_buf_bytes(&b, "vv", 2);
    cql_buf_i32(&b, CQL_RESULT_VOID);
    uint8_t flags = CQL_FLAG_TRACING | CQL_FLAG_WARNING | CQL_FLAG_CUSTOM_PAYLOAD;
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, flags, &b, &keep);
    assert_int_equal(cql_result_kind(r), CQL_RESULT_VOID);
    assert_memory_equal(cql_result_tracing_id(r), trace, 16);
    assert_int_equal(cql_result_warning_count(r), 2);
    assert_true(str_eq(cql_result_warning(r, 0), "Aggregation query used without partition key"));
    assert_true(str_eq(cql_result_warning(r, 1), "second"));
    assert_int_equal(cql_result_warning(r, 2).len, 0);
    cql_result_free(r);
    free(keep);
    add_sample("flags", CQL_OP_RESULT, flags, &b);

    /* warnings without tracing come first */
    cql_buf_init(&b);
    cql_buf_u16(&b, 1);
    put_str(&b, "w");
    cql_buf_i32(&b, CQL_RESULT_VOID);
    r = parse_ok(CQL_OP_RESULT, CQL_FLAG_WARNING, &b, &keep);
    assert_null(cql_result_tracing_id(r));
    assert_int_equal(cql_result_warning_count(r), 1);
    cql_result_free(r);
    free(keep);

    /* compression was never negotiated */
    cql_result *bad;
    assert_int_equal(parse(CQL_OP_RESULT, CQL_FLAG_COMPRESSION, b.data, b.len, &bad, NULL),
                     CQL_EUNSUPPORTED);
    /* request opcodes and unknown opcodes are not responses */
    assert_int_equal(parse(CQL_OP_QUERY, 0, b.data, b.len, &bad, NULL), CQL_EPROTO);
    assert_int_equal(parse(0x42, 0, b.data, b.len, &bad, NULL), CQL_EPROTO);
    cql_buf_free(&b);
    /* trailing bytes are tolerated (section 1) */
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_VOID);
    cql_buf_i32(&b, 12345);
    r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    cql_result_free(r);
    free(keep);
    cql_buf_free(&b);
}

/* ---- hostile input ---------------------------------------------------- */

/* Every strict prefix of a well-formed frame that uses all its bytes must
 * be rejected cleanly. */
static void test_truncation_every_offset(void **st)
{
    (void)st;
    assert_true(n_corpus > 10);
    for (size_t i = 0; i < n_corpus; i++) {
        const sample *s = &corpus[i];
        cql_result *r;
        assert_int_equal(parse(s->opcode, s->flags, s->body, s->len, &r, NULL), 0);
        cql_result_free(r);
        for (size_t n = 0; n < s->len; n++) {
            int rc = parse(s->opcode, s->flags, s->body, n, &r, NULL);
            if (rc != CQL_EPROTO)
                fail_msg("%s: prefix %zu of %zu gave %d", s->name, n, s->len, rc);
            assert_null(r);
        }
    }
}

/* Overwrite every 2- and 4-byte window with hostile lengths/counts. */
static void test_hostile_lengths(void **st)
{
    (void)st;
    static const uint32_t v32[] = {0xFFFFFFFFu, 0x80000000u, 0x7FFFFFFFu, 0xFFFFFFFEu, 0x00FFFFFFu};
    static const uint16_t v16[] = {0xFFFF, 0x8000, 0x7FFF};
    for (size_t i = 0; i < n_corpus; i++) {
        const sample *s = &corpus[i];
        uint8_t *m = malloc(s->len + 1);
        assert_non_null(m);
        for (size_t off = 0; off + 2 <= s->len; off++) {
            for (size_t k = 0; k < 5; k++) {
                cql_result *r;
                if (off + 4 <= s->len) {
                    memcpy(m, s->body, s->len);
                    cql_put_be32(m + off, v32[k]);
                    if (parse(s->opcode, s->flags, m, s->len, &r, NULL) == 0) {
                        exercise(r);
                        cql_result_free(r);
                    }
                }
                if (k < 3) {
                    memcpy(m, s->body, s->len);
                    cql_put_be16(m + off, v16[k]);
                    if (parse(s->opcode, s->flags, m, s->len, &r, NULL) == 0) {
                        exercise(r);
                        cql_result_free(r);
                    }
                }
            }
        }
        free(m);
    }
}

/* Counts that promise more than the body holds must fail before any large
 * allocation (ASan would report a multi-GiB calloc as an error). */
static void test_huge_counts(void **st)
{
    (void)st;
    cql_buf b;
    cql_result *r;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, CQL_RF_NO_METADATA);
    cql_buf_i32(&b, INT32_MAX);
    cql_buf_i32(&b, INT32_MAX);
    assert_int_equal(parse(CQL_OP_RESULT, 0, b.data, b.len, &r, NULL), CQL_EPROTO);
    cql_buf_free(&b);

    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(&b, INT32_MAX);
    put_str(&b, "ks");
    put_str(&b, "t");
    assert_int_equal(parse(CQL_OP_RESULT, 0, b.data, b.len, &r, NULL), CQL_EPROTO);
    cql_buf_free(&b);

    /* INT32_MAX rows of zero columns carry nothing, and every caller's
     * row loop would spin two billion times: malformed (cql.h), with or
     * without metadata, and so is a single such row. */
    for (int meta = 0; meta < 2; meta++) {
        for (int32_t rows = 1; rows > 0; rows = rows == 1 ? INT32_MAX : 0) {
            cql_buf_init(&b);
            cql_buf_i32(&b, CQL_RESULT_ROWS);
            cql_buf_i32(&b, meta ? CQL_RF_GLOBAL_TABLES_SPEC : CQL_RF_NO_METADATA);
            cql_buf_i32(&b, 0);
            if (meta) {
                put_str(&b, "ks");
                put_str(&b, "t");
            }
            cql_buf_i32(&b, rows);
            assert_int_equal(parse(CQL_OP_RESULT, 0, b.data, b.len, &r, NULL), CQL_EPROTO);
            cql_buf_free(&b);
        }
    }

    /* No_metadata column counts cost no bytes: capped at CQL_MAX_COLUMNS. */
    for (int32_t n = CQL_MAX_COLUMNS; n <= CQL_MAX_COLUMNS + 1; n++) {
        cql_buf_init(&b);
        cql_buf_i32(&b, CQL_RESULT_ROWS);
        cql_buf_i32(&b, CQL_RF_NO_METADATA);
        cql_buf_i32(&b, n);
        cql_buf_i32(&b, 0);
        int rc = parse(CQL_OP_RESULT, 0, b.data, b.len, &r, NULL);
        if (n == CQL_MAX_COLUMNS) {
            assert_int_equal(rc, 0);
            assert_int_equal(cql_result_column_count(r), CQL_MAX_COLUMNS);
            assert_int_equal(cql_result_next_row(r), 0);
            cql_result_free(r);
        } else {
            assert_int_equal(rc, CQL_EPROTO);
        }
        cql_buf_free(&b);
    }

    /* deeply nested type */
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(&b, 1);
    put_str(&b, "ks");
    put_str(&b, "t");
    put_str(&b, "c");
    for (int i = 0; i < 1000; i++)
        cql_buf_u16(&b, CQL_TYPE_LIST);
    cql_buf_u16(&b, CQL_TYPE_INT);
    cql_buf_i32(&b, 0);
    assert_int_equal(parse(CQL_OP_RESULT, 0, b.data, b.len, &r, NULL), CQL_EPROTO);
    cql_buf_free(&b);

    /* a header that claims 2 GiB is refused before any body is read */
    cql_header h;
    uint8_t raw[9] = {0x84, 0, 0, 1, CQL_OP_RESULT, 0x7f, 0xff, 0xff, 0xff};
    assert_int_equal(cql_header_decode(raw, 9, CQL_MAX_BODY_DEFAULT, true, &h), CQL_ETOOBIG);
}

static uint64_t rng_state;
static uint32_t rnd(void)
{
    /* xorshift64*: deterministic across platforms */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

#define FUZZ_ITERS 200000

static void test_fuzz_random(void **st)
{
    (void)st;
    rng_state = 0x9E3779B97F4A7C15ull;
    static const uint8_t ops[] = {CQL_OP_ERROR, CQL_OP_READY, CQL_OP_AUTHENTICATE,
                                  CQL_OP_SUPPORTED, CQL_OP_RESULT, CQL_OP_EVENT,
                                  CQL_OP_AUTH_CHALLENGE, CQL_OP_AUTH_SUCCESS, 0x04, 0x77};
    uint8_t buf[96];
    size_t ok = 0;
    for (int it = 0; it < FUZZ_ITERS; it++) {
        size_t len = rnd() % sizeof buf;
        for (size_t i = 0; i < len; i++) {
            /* bias towards small numbers so lengths and kinds line up */
            uint32_t x = rnd();
            buf[i] = (x & 3) ? (uint8_t)(x >> 8) % 6 : (uint8_t)(x >> 8);
        }
        cql_result *r;
        uint8_t op = ops[rnd() % sizeof ops];
        uint8_t flags = (uint8_t)(rnd() & 0x0E);
        if (parse(op, flags, buf, len, &r, NULL) == 0) {
            ok++;
            exercise(r);
            cql_result_free(r);
        }
    }
    print_message("fuzz_random: %d frames, %zu parsed\n", FUZZ_ITERS, ok);
}

static void test_fuzz_mutate(void **st)
{
    (void)st;
    rng_state = 12345;
    size_t ok = 0;
    for (int it = 0; it < FUZZ_ITERS; it++) {
        const sample *s = &corpus[rnd() % n_corpus];
        uint8_t *m = malloc(s->len + 8);
        assert_non_null(m);
        memcpy(m, s->body, s->len);
        size_t len = s->len;
        int edits = 1 + (int)(rnd() % 4);
        for (int e = 0; e < edits && len; e++) {
            size_t at = rnd() % len;
            switch (rnd() % 4) {
            case 0: m[at] ^= (uint8_t)(1u << (rnd() % 8)); break;
            case 1: m[at] = (uint8_t)rnd(); break;
            case 2: len = at; break; /* truncate */
            default: m[at] = (uint8_t)(rnd() % 3 ? 0xFF : 0x00); break;
            }
        }
        cql_result *r;
        if (parse(s->opcode, s->flags, m, len, &r, NULL) == 0) {
            ok++;
            exercise(r);
            cql_result_free(r);
        }
        free(m);
    }
    print_message("fuzz_mutate: %d frames, %zu parsed\n", FUZZ_ITERS, ok);
}

static void test_strerror(void **st)
{
    (void)st;
    for (int e = 0; e >= -16; e--)
        assert_non_null(cql_strerror(e));
    assert_string_equal(cql_strerror(CQL_ETIMEDOUT), "request timed out");
    assert_string_equal(cql_strerror(-999), "unknown error");
    assert_string_equal(cql_consistency_name(CQL_LOCAL_ONE), "LOCAL_ONE");
    assert_string_equal(cql_consistency_name(99), "UNKNOWN");
}

/* With CQL_DUMP_CORPUS=DIR, each sample is also written to DIR as a whole
 * response frame (header and body): the seeds of tests/fuzz/fuzz_cql. */
static void dump_corpus(const char *dir)
{
    for (size_t i = 0; i < n_corpus; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/seed-%s", dir, corpus[i].name);
        FILE *f = fopen(path, "wb");
        if (!f)
            continue;
        cql_header h = {CQL_VERSION_RESPONSE, corpus[i].flags, 0, corpus[i].opcode,
                        (uint32_t)corpus[i].len};
        uint8_t hdr[CQL_HEADER_LEN];
        cql_header_encode(&h, hdr);
        fwrite(hdr, 1, sizeof hdr, f);
        fwrite(corpus[i].body, 1, corpus[i].len, f);
        fclose(f);
    }
}

static int teardown_corpus(void **st)
{
    (void)st;
    const char *dump = getenv("CQL_DUMP_CORPUS");
    if (dump)
        dump_corpus(dump);
    for (size_t i = 0; i < n_corpus; i++)
        free(corpus[i].body);
    n_corpus = 0;
    return 0;
}

/* ---- partition tokens ------------------------------------------------- */

/*
 * Vectors from the DataStax Python driver's cassandra.murmur3.murmur3(),
 * which implements Cassandra's variant (sign-extended tail bytes), and
 * checked against `SELECT token(k)` of a real Cassandra by it_cassandra.
 * Pattern of length n: b[i] = (i * 0x9d + 0x41 + n * 7) & 0xff, so that
 * every tail length 0..15 (twice over, plus blocks) mixes bytes below and
 * above 0x80.
 */
static const int64_t PATTERN_TOKENS[41] = {
    0LL, -4197513287269367591LL, -2996635066869252059LL, -7553922542580588118LL,
    1632117972182580117LL, 7443022083636775205LL, 1497162935131480957LL,
    289318868616097845LL, 815068947074561777LL, 2991909811581198267LL,
    8562381154380115593LL, 1292832736930394104LL, 3848144602588838014LL,
    -946701395131991288LL, 5744171112270548445LL, -7702635032776637504LL,
    -2923191844700758398LL, 8829366296933179863LL, -6823986667338289800LL,
    -1407121246850060405LL, 1728896003701809010LL, 6603022239946490272LL,
    8931862930393477455LL, 6880609260892988962LL, -4370770855742778849LL,
    -8521724684416858459LL, -4962183335595400645LL, 731753977927146563LL,
    -3275298058817882347LL, 7960848746592789802LL, 6938687313751189735LL,
    -8742554329450552287LL, -5214887422277680303LL, -8522057509944118287LL,
    7720168059299700778LL, -4221492506661870951LL, 6850074938781712541LL,
    -7369774446031536692LL, -3346957640778407382LL, 7836401512731663563LL,
    6113414114677001949LL,
};

/* n bytes of 0xff: the sign extension affects every tail byte. */
static const int64_t FF_TOKENS[18] = {
    0LL, -4442228696663692417LL, 6163071069786142063LL, -9154616442117352147LL,
    7297452126230313552LL, -8869521063059112040LL, 2112339540026359505LL,
    4860178782003914630LL, 7071048584287372947LL, 8434364767658694854LL,
    -2285028417834605101LL, 4844839740296823970LL, 5441275315642417349LL,
    5402220310222980743LL, -7003579699878715426LL, -2195530867418009455LL,
    -2824192546314762522LL, -4128212798341382003LL,
};

/* Hashes from an exact-size heap copy, so ASan sees any over-read. */
static int64_t token_of(const uint8_t *p, size_t n)
{
    uint8_t *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n)
        memcpy(copy, p, n);
    int64_t t = cql_murmur3_token(n ? copy : NULL, n);
    free(copy);
    return t;
}

static void test_murmur3_vectors(void **st)
{
    (void)st;
    uint8_t buf[64];
    for (size_t n = 0; n <= 40; n++) {
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)((i * 0x9d + 0x41 + n * 7) & 0xff);
        int64_t t = token_of(buf, n);
        if (t != PATTERN_TOKENS[n])
            fail_msg("pattern length %zu: %lld, want %lld", n, (long long)t,
                     (long long)PATTERN_TOKENS[n]);
    }
    memset(buf, 0xff, sizeof buf);
    for (size_t n = 0; n < 18; n++)
        assert_true(token_of(buf, n) == FF_TOKENS[n]);
    assert_true(token_of((const uint8_t *)"hello", 5) == -3758069500696749310LL);
    assert_true(token_of((const uint8_t *)"messenger", 9) == 6259742647036618357LL);
    assert_true(token_of((const uint8_t *)"\x80", 1) == -5284281814142962636LL);
    assert_true(token_of((const uint8_t *)"\x00", 1) == 5048724184180415669LL);
    assert_true(token_of((const uint8_t *)"\x7f", 1) == 5072634478945617755LL);
    assert_true(cql_murmur3_token(NULL, 0) == 0);
    /* Long.MIN_VALUE is never a partition's token */
    assert_true(cql_token_from_hash(0x8000000000000000ULL) == INT64_MAX);
    assert_true(cql_token_from_hash(0x8000000000000001ULL) == INT64_MIN + 1);
    assert_true(cql_token_from_hash(0xffffffffffffffffULL) == -1);
    assert_true(cql_token_from_hash(0x7fffffffffffffffULL) == INT64_MAX);
    assert_true(cql_token_from_hash(0) == 0);
    /* an int partition key: its 4 big-endian bytes */
    cql_value v = cql_value_int(42);
    int64_t t;
    assert_int_equal(cql_partition_token(&v, 1, &t), 0);
    assert_true(t == -7160136740246525330LL);
    /* The second half differs from h1 and both are deterministic. */
    uint64_t h[2], h2[2];
    cql_murmur3_x64_128("hello", 5, 0, h);
    cql_murmur3_x64_128("hello", 5, 0, h2);
    assert_true(h[0] == h2[0] && h[1] == h2[1] && h[0] != h[1]);
    assert_true((int64_t)h[0] == -3758069500696749310LL);
}

static void test_routing_key(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_value k1 = cql_value_int(1), ka = cql_value_text("a");
    const cql_value *one[1] = {&k1};
    assert_int_equal(cql_routing_key(&b, one, 1), 0);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "\x00\x00\x00\x01", 4);
    b.len = 0;
    /* composite: <len:2><bytes><0> per component */
    const cql_value *two[2] = {&k1, &ka};
    assert_int_equal(cql_routing_key(&b, two, 2), 0);
    assert_int_equal(b.len, 11);
    assert_memory_equal(b.data, "\x00\x04\x00\x00\x00\x01\x00\x00\x01\x61\x00", 11);
    cql_value comp[2] = {k1, ka};
    int64_t t;
    assert_int_equal(cql_partition_token(comp, 2, &t), 0);
    assert_true(t == 6516349416904725244LL);
    /* uuid + bigint, checked against the Python driver's composite key */
    uint8_t u[16];
    for (int i = 0; i < 16; i++)
        u[i] = (uint8_t)i;
    cql_value ub[2] = {cql_value_uuid(u), cql_value_bigint(-5)};
    assert_int_equal(cql_partition_token(ub, 2, &t), 0);
    assert_true(t == -827427692987796608LL);

    /* failures leave the buffer as it was */
    b.len = 3;
    cql_value nul = cql_value_null(), unset = cql_value_unset();
    const cql_value *bad1[2] = {&k1, &nul};
    const cql_value *bad2[1] = {&unset};
    assert_int_equal(cql_routing_key(&b, bad1, 2), CQL_EINVAL);
    assert_int_equal(cql_routing_key(&b, bad2, 1), CQL_EINVAL);
    assert_int_equal(cql_routing_key(&b, NULL, 1), CQL_EINVAL);
    assert_int_equal(cql_routing_key(&b, one, 0), CQL_EINVAL);
    assert_int_equal(b.len, 3);
    assert_int_equal(b.err, 0);
    /* a component too long for the 2-byte frame is only a problem when
     * the key is composite */
    size_t big = 70000;
    char *blob = calloc(1, big);
    assert_non_null(blob);
    cql_value vb = cql_value_blob(blob, big);
    const cql_value *bigone[1] = {&vb}, *bigtwo[2] = {&k1, &vb};
    assert_int_equal(cql_routing_key(&b, bigtwo, 2), CQL_EINVAL);
    b.len = 0;
    assert_int_equal(cql_routing_key(&b, bigone, 1), 0);
    assert_int_equal(b.len, big);
    free(blob);
    cql_buf_free(&b);
    assert_int_equal(cql_partition_token(&nul, 1, &t), CQL_EINVAL);
    assert_int_equal(cql_partition_token(NULL, 1, &t), CQL_EINVAL);
}

static void test_ring(void **st)
{
    (void)st;
    cql_ring ring;
    uint32_t reps[8];
    /* empty */
    assert_int_equal(cql_ring_build(&ring, NULL, NULL, 0), 0);
    assert_int_equal(cql_ring_find(&ring, 5), 0);
    assert_int_equal(cql_ring_replicas(&ring, 5, reps, 3), 0);
    cql_ring_free(&ring);

    /* owners 0..2, two tokens each, given unsorted */
    const int64_t toks[6] = {400, -700, 100, -400, 700, -100};
    const uint32_t own[6] = {1, 0, 0, 1, 2, 2};
    assert_int_equal(cql_ring_build(&ring, toks, own, 6), 0);
    assert_int_equal(ring.n, 6);
    assert_int_equal(ring.n_owners, 3);
    for (size_t i = 1; i < ring.n; i++)
        assert_true(ring.tokens[i - 1] < ring.tokens[i]);
    /* sorted: -700:0 -400:1 -100:2 100:0 400:1 700:2 */
    assert_int_equal(ring.owners[cql_ring_find(&ring, -700)], 0); /* exact token */
    assert_int_equal(ring.owners[cql_ring_find(&ring, -699)], 1);
    assert_int_equal(ring.owners[cql_ring_find(&ring, 0)], 0);
    assert_int_equal(ring.owners[cql_ring_find(&ring, 700)], 2);
    assert_int_equal(cql_ring_find(&ring, 701), 0);               /* wraps */
    assert_int_equal(cql_ring_find(&ring, INT64_MAX), 0);
    assert_int_equal(cql_ring_find(&ring, INT64_MIN), 0);
    /* replicas: owner then next distinct owners clockwise */
    assert_int_equal(cql_ring_replicas(&ring, 150, reps, 1), 1);
    assert_int_equal(reps[0], 1);
    assert_int_equal(cql_ring_replicas(&ring, 150, reps, 2), 2);
    assert_int_equal(reps[0], 1);
    assert_int_equal(reps[1], 2);
    assert_int_equal(cql_ring_replicas(&ring, 650, reps, 3), 3);  /* wraps past the end */
    assert_int_equal(reps[0], 2);
    assert_int_equal(reps[1], 0);
    assert_int_equal(reps[2], 1);
    assert_int_equal(cql_ring_replicas(&ring, 650, reps, 8), 3);  /* RF > nodes */
    cql_ring_free(&ring);

    /* vnodes: consecutive tokens of one owner are skipped when looking
     * for the next replica; a duplicated token keeps one owner */
    const int64_t t2[6] = {10, 20, 30, 40, 40, 50};
    const uint32_t o2[6] = {7, 7, 7, 9, 8, 7};
    assert_int_equal(cql_ring_build(&ring, t2, o2, 6), 0);
    assert_int_equal(ring.n, 5);
    assert_int_equal(ring.n_owners, 2);
    assert_int_equal(ring.owners[cql_ring_find(&ring, 40)], 8);
    assert_int_equal(cql_ring_replicas(&ring, 5, reps, 2), 2);
    assert_int_equal(reps[0], 7);
    assert_int_equal(reps[1], 8);
    assert_int_equal(cql_ring_replicas(&ring, 45, reps, 3), 2);
    assert_int_equal(reps[0], 7);
    assert_int_equal(reps[1], 8);
    cql_ring_free(&ring);

    /* one node with one token owns everything */
    const int64_t t3[1] = {0};
    const uint32_t o3[1] = {4};
    assert_int_equal(cql_ring_build(&ring, t3, o3, 1), 0);
    assert_int_equal(ring.owners[cql_ring_find(&ring, INT64_MIN)], 4);
    assert_int_equal(ring.owners[cql_ring_find(&ring, INT64_MAX)], 4);
    assert_int_equal(cql_ring_replicas(&ring, 99, reps, 3), 1);
    cql_ring_free(&ring);
}

/* ---- collections ------------------------------------------------------ */

static void text_set(cql_buf *b, const char *const *v, int n)
{
    cql_buf_i32(b, n);
    for (int i = 0; i < n; i++)
        cql_buf_bytes(b, v[i], strlen(v[i]));
}

/* Iterates a collection held in an exact-size heap copy. */
static int iterate(const uint8_t *p, size_t len, int *count)
{
    uint8_t *copy = malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, p, len);
    cql_iter it;
    int rc = cql_collection_begin(&it, len ? copy : NULL, len);
    *count = 0;
    cql_str s;
    if (!rc)
        while ((rc = cql_iter_next_text(&it, &s)) == 1)
            (*count)++;
    free(copy);
    return rc;
}

static void test_text_set_decoding(void **st)
{
    (void)st;
    static const char *const toks[3] = {"-9223372036854775808", "0", "42"};
    cql_buf b;
    cql_buf_init(&b);
    text_set(&b, toks, 3);
    cql_iter it;
    cql_str s;
    assert_int_equal(cql_collection_begin(&it, b.data, b.len), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cql_iter_next_text(&it, &s), 1);
        assert_true(str_eq(s, toks[i]));
    }
    assert_int_equal(cql_iter_next_text(&it, &s), 0);
    assert_int_equal(cql_iter_next_text(&it, &s), 0); /* stays at the end */
    int n;
    assert_int_equal(iterate(b.data, b.len, &n), 0);
    assert_int_equal(n, 3);
    /* every strict prefix is an error, never an over-read */
    for (size_t cut = 0; cut < b.len; cut++)
        assert_int_equal(iterate(b.data, cut, &n), CQL_EPROTO);
    /* trailing garbage */
    cql_buf_u8(&b, 0);
    assert_int_equal(iterate(b.data, b.len, &n), CQL_EPROTO);
    cql_buf_free(&b);

    /* empty set */
    uint8_t empty[4] = {0, 0, 0, 0};
    assert_int_equal(iterate(empty, 4, &n), 0);
    assert_int_equal(n, 0);
    /* negative and impossible counts */
    uint8_t neg[4] = {0xff, 0xff, 0xff, 0xfe};
    assert_int_equal(iterate(neg, 4, &n), CQL_EPROTO);
    uint8_t huge[8] = {0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0};
    assert_int_equal(iterate(huge, 8, &n), CQL_EPROTO);
    /* an element longer than what remains */
    uint8_t longel[10] = {0, 0, 0, 1, 0, 0, 0, 9, 'a', 'b'};
    assert_int_equal(iterate(longel, 10, &n), CQL_EPROTO);
    uint8_t negel[8] = {0, 0, 0, 1, 0x80, 0, 0, 0}; /* a null element */
    assert_int_equal(iterate(negel, 8, &n), CQL_ENULL);
    const uint8_t *p;
    int32_t len;
    assert_int_equal(cql_collection_begin(&it, negel, 8), 0);
    assert_int_equal(cql_iter_next(&it, &p, &len), 1);
    assert_int_equal(len, -1);
    assert_int_equal(cql_collection_begin(&it, NULL, 3), CQL_EINVAL);
    /* random garbage: errors or clean iteration, never an over-read */
    uint32_t seed = 12345;
    uint8_t g[24];
    for (int round = 0; round < 20000; round++) {
        size_t glen = (size_t)(seed % sizeof g);
        for (size_t i = 0; i < glen; i++) {
            seed = seed * 1103515245u + 12345u;
            g[i] = (uint8_t)(seed >> 16);
            if (i < 3 || (i >= 4 && i < 7))
                g[i] = (uint8_t)(g[i] & 1 ? 0 : g[i] & 0x3); /* plausible lengths */
        }
        seed = seed * 1103515245u + 12345u;
        int rc = iterate(g, glen, &n);
        assert_true(rc == 0 || rc == CQL_EPROTO || rc == CQL_ENULL);
    }
}

/* A system.local-like row: set<text>, inet, text; plus a list<int>. */
static void test_rows_set_and_inet(void **st)
{
    (void)st;
    static const char *const toks[2] = {"-3", "77"};
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_ROWS);
    cql_buf_i32(&b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(&b, 5);
    put_str(&b, "system");
    put_str(&b, "local");
    col(&b, true, "tokens", CQL_TYPE_SET);
    cql_buf_u16(&b, CQL_TYPE_VARCHAR);
    col(&b, true, "rpc_address", CQL_TYPE_INET);
    col(&b, true, "data_center", CQL_TYPE_VARCHAR);
    col(&b, true, "ints", CQL_TYPE_LIST);
    cql_buf_u16(&b, CQL_TYPE_INT);
    col(&b, true, "addr6", CQL_TYPE_INET);
    cql_buf_i32(&b, 2);
    for (int row = 0; row < 2; row++) {
        cql_buf sub;
        cql_buf_init(&sub);
        text_set(&sub, toks, row ? 0 : 2);
        cql_buf_bytes(&b, sub.data, sub.len);
        cql_buf_free(&sub);
        if (row)
            cql_buf_bytes(&b, "\x01\x02\x03\x04\x05", 5); /* not an address */
        else
            cql_buf_bytes(&b, "\x7f\x00\x00\x01", 4);
        cql_buf_bytes(&b, "dc1", 3);
        cql_buf_init(&sub);
        cql_buf_i32(&sub, 1);
        cql_value one = cql_value_int(5);
        cql_buf_value(&sub, &one);
        cql_buf_bytes(&b, sub.data, sub.len);
        cql_buf_free(&sub);
        if (row)
            cql_buf_i32(&b, -1); /* null */
        else
            cql_buf_bytes(&b, "\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01", 16);
    }
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_int_equal(cql_result_next_row(r), 1);
    cql_iter it;
    cql_str s;
    assert_int_equal(cql_row_get_text_set(r, 0, &it), 0);
    assert_int_equal(cql_iter_next_text(&it, &s), 1);
    assert_true(str_eq(s, "-3"));
    assert_int_equal(cql_iter_next_text(&it, &s), 1);
    assert_true(str_eq(s, "77"));
    assert_int_equal(cql_iter_next_text(&it, &s), 0);
    uint8_t a[16];
    size_t alen;
    assert_int_equal(cql_row_get_inet(r, 1, a, &alen), 0);
    assert_int_equal(alen, 4);
    assert_memory_equal(a, "\x7f\x00\x00\x01", 4);
    assert_int_equal(cql_row_get_inet(r, 4, a, &alen), 0);
    assert_int_equal(alen, 16);
    assert_int_equal(a[0], 0x20);
    /* type checks */
    assert_int_equal(cql_row_get_text_set(r, 2, &it), CQL_ETYPE); /* text */
    assert_int_equal(cql_row_get_text_set(r, 3, &it), CQL_ETYPE); /* list<int> */
    assert_int_equal(cql_row_get_collection(r, 3, &it), 0);
    const uint8_t *p;
    int32_t len;
    assert_int_equal(cql_iter_next(&it, &p, &len), 1);
    assert_int_equal(len, 4);
    assert_int_equal(cql_row_get_inet(r, 2, a, &alen), CQL_ETYPE);
    assert_int_equal(cql_row_get_text_set(r, 9, &it), CQL_ERANGE);
    assert_int_equal(cql_result_next_row(r), 1);
    assert_int_equal(cql_row_get_text_set(r, 0, &it), 0);
    assert_int_equal(cql_iter_next_text(&it, &s), 0); /* empty set */
    assert_int_equal(cql_row_get_inet(r, 1, a, &alen), CQL_EPROTO);
    assert_int_equal(cql_row_get_inet(r, 4, a, &alen), CQL_ENULL);
    cql_result_free(r);
    free(keep);
    add_sample("rows set inet", CQL_OP_RESULT, 0, &b);
}

static void test_prepared_pk(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    cql_buf_i32(&b, CQL_RESULT_PREPARED);
    cql_buf_short_bytes(&b, "\x09", 1);
    cql_buf_i32(&b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(&b, 3);
    cql_buf_i32(&b, 2);       /* pk_count */
    cql_buf_u16(&b, 2);       /* key (a, b) bound at markers 2 and 0 */
    cql_buf_u16(&b, 0);
    put_str(&b, "ks");
    put_str(&b, "t");
    col(&b, true, "b", CQL_TYPE_VARCHAR);
    col(&b, true, "x", CQL_TYPE_INT);
    col(&b, true, "a", CQL_TYPE_INT);
    cql_buf_i32(&b, CQL_RF_NO_METADATA);
    cql_buf_i32(&b, 0);
    uint8_t *keep;
    cql_result *r = parse_ok(CQL_OP_RESULT, 0, &b, &keep);
    assert_int_equal(cql_result_pk_count(r), 2);
    assert_int_equal(cql_result_pk_index(r, 0), 2);
    assert_int_equal(cql_result_pk_index(r, 1), 0);
    assert_int_equal(cql_result_pk_index(r, 2), CQL_ERANGE);
    assert_int_equal(cql_result_pk_index(r, -1), CQL_ERANGE);
    cql_result_free(r);
    free(keep);
    add_sample("prepared composite pk", CQL_OP_RESULT, 0, &b);
}

/* ../shared/fuzz-findings/cql-result-rows-0-columns-2g-rows.bin, the whole
 * 25-byte frame: RESULT Rows, No_metadata, 0 columns, 2^31-1 rows. It froze
 * the I/O thread for 9.5 s; now it is refused at once. */
static void test_fuzz_finding_zero_columns(void **st)
{
    (void)st;
    static const uint8_t frame[] = {
        0x84, 0x00, 0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x10, /* header, 16-byte body */
        0x00, 0x00, 0x00, 0x02,                               /* Rows */
        0x00, 0x00, 0x00, 0x00,                               /* flags */
        0x00, 0x00, 0x00, 0x00,                               /* 0 columns */
        0x7f, 0xff, 0xff, 0xff,                               /* 2^31-1 rows */
    };
    cql_header h;
    assert_int_equal(cql_header_decode(frame, sizeof frame, CQL_MAX_BODY_DEFAULT, true, &h), 0);
    assert_int_equal(h.length, sizeof frame - CQL_HEADER_LEN);
    cql_result *r = NULL;
    assert_int_equal(cql_result_parse(&h, frame + CQL_HEADER_LEN, h.length, true, &r), CQL_EPROTO);
    assert_null(r);
}

/* EVENT bodies: the two strings are required, the [inet] is optional. */
static void test_event_parse(void **st)
{
    (void)st;
    cql_buf b;
    cql_event ev;
    cql_buf_init(&b);
    put_str(&b, "STATUS_CHANGE");
    put_str(&b, "UP");
    cql_buf_u8(&b, 4);
    cql_buf_put(&b, "\x7f\x00\x00\x02", 4);
    cql_buf_i32(&b, 9042);
    assert_int_equal(cql_event_parse(b.data, b.len, &ev), 0);
    assert_true(str_eq(ev.type, "STATUS_CHANGE"));
    assert_true(str_eq(ev.change, "UP"));
    assert_true(ev.has_addr);
    assert_int_equal(ev.addr_len, 4);
    assert_memory_equal(ev.addr, "\x7f\x00\x00\x02", 4);
    assert_int_equal(ev.port, 9042);
    /* every truncation: the strings cut short are errors, the address
     * cut short is just absent */
    for (size_t n = 0; n < b.len; n++) {
        int rc = cql_event_parse(b.data, n, &ev);
        if (n < 2 + 13 + 2 + 2)
            assert_int_equal(rc, CQL_EPROTO);
        else
            assert_true(rc == 0 && !ev.has_addr);
    }
    cql_buf_free(&b);

    cql_buf_init(&b);
    put_str(&b, "SCHEMA_CHANGE");
    put_str(&b, "CREATED");
    put_str(&b, "KEYSPACE");
    put_str(&b, "ks");
    assert_int_equal(cql_event_parse(b.data, b.len, &ev), 0);
    assert_false(ev.has_addr);
    cql_buf_free(&b);
    assert_int_equal(cql_event_parse(NULL, 0, &ev), CQL_EPROTO);
}

static void test_register_and_inet(void **st)
{
    (void)st;
    cql_buf b;
    cql_buf_init(&b);
    const char *ev[2] = {"TOPOLOGY_CHANGE", "STATUS_CHANGE"};
    assert_int_equal(cql_build_register(&b, 3, ev, 2), 0);
    cql_header h;
    const uint8_t *body = req_body(&b, 0, &h);
    assert_int_equal(h.opcode, CQL_OP_REGISTER);
    assert_int_equal(h.stream, 3);
    cql_rd r = {body, h.length, 0};
    uint16_t n;
    cql_str raw, s;
    assert_int_equal(cql_rd_string_list(&r, &n, &raw), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cql_rd_left(&r), 0);
    cql_rd l = {(const uint8_t *)raw.ptr, raw.len, 2};
    assert_int_equal(cql_rd_string(&l, &s), 0);
    assert_true(str_eq(s, "TOPOLOGY_CHANGE"));
    size_t before = b.len;
    assert_int_equal(cql_build_register(&b, -1, ev, 2), CQL_EINVAL);
    const char *bad[1] = {NULL};
    assert_int_equal(cql_build_register(&b, 1, bad, 1), CQL_EINVAL);
    assert_int_equal(b.len, before);
    cql_buf_free(&b);

    /* [inet] of an EVENT */
    uint8_t in[9] = {4, 127, 0, 0, 1, 0, 0, 0x23, 0x52};
    uint8_t addr[16];
    size_t alen;
    int32_t port;
    cql_rd ri = {in, sizeof in, 0};
    assert_int_equal(cql_rd_inet(&ri, addr, &alen, &port), 0);
    assert_int_equal(alen, 4);
    assert_int_equal(port, 9042);
    for (size_t cut = 0; cut < sizeof in; cut++) {
        cql_rd rc = {in, cut, 0};
        assert_int_equal(cql_rd_inet(&rc, addr, &alen, &port), CQL_EPROTO);
        assert_int_equal(rc.off, 0);
    }
    in[0] = 5;
    cql_rd r5 = {in, sizeof in, 0};
    assert_int_equal(cql_rd_inet(&r5, addr, &alen, &port), CQL_EPROTO);
}


int main(void)
{
    /* Order matters: the response tests fill the corpus that the hostile
     * input tests replay. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_roundtrip),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_startup_options),
        cmocka_unit_test(test_query_all_flags),
        cmocka_unit_test(test_builder_rejects_and_rolls_back),
        cmocka_unit_test(test_prepare_execute),
        cmocka_unit_test(test_batch),
        cmocka_unit_test(test_values_roundtrip),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ready_supported),
        cmocka_unit_test(test_void_keyspace_schema),
        cmocka_unit_test(test_rows),
        cmocka_unit_test(test_rows_no_metadata),
        cmocka_unit_test(test_prepared),
        cmocka_unit_test(test_rows_set_and_inet),
        cmocka_unit_test(test_prepared_pk),
        cmocka_unit_test(test_frame_flags),
        cmocka_unit_test(test_truncation_every_offset),
        cmocka_unit_test(test_hostile_lengths),
        cmocka_unit_test(test_huge_counts),
        cmocka_unit_test(test_fuzz_random),
        cmocka_unit_test(test_fuzz_mutate),
        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_murmur3_vectors),
        cmocka_unit_test(test_routing_key),
        cmocka_unit_test(test_ring),
        cmocka_unit_test(test_text_set_decoding),
        cmocka_unit_test(test_register_and_inet),
        cmocka_unit_test(test_fuzz_finding_zero_columns),
        cmocka_unit_test(test_event_parse),
    };
    return cmocka_run_group_tests_name("cql_proto", tests, NULL, teardown_corpus);
}
