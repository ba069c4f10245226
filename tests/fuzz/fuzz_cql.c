/* fuzz_cql.c - CQL native protocol v4 responses, as a node sends them:
 * the frame header, then the body through cql_result_parse() (RESULT of
 * every kind, ERROR, READY, SUPPORTED, AUTHENTICATE, EVENT...), the EVENT
 * body reader and the value decoders.
 *
 * Input: a 9-byte frame header, then the body. The header is decoded as the
 * client decodes it, and the body is then parsed whatever the header's
 * length says (the length is set to the bytes present), so that mutations of
 * the body are not wasted on a length mismatch. Bit 0 of the stream id picks
 * zero-copy or copied parsing.
 *
 * After a successful parse every accessor is called, every row is walked and
 * every cell read through every typed getter, so that ASan sees any read the
 * parser's validation did not cover. The work bound of cql.h is asserted:
 * rows x columns, column, collection and warning counts never exceed what
 * the body's bytes can hold, so that no reply can make a loop run out of
 * proportion to its size (a 25-byte frame once asked for 2^31-1 rows). */
#include <string.h>

#include "cql_internal.h"
#include "fuzz_common.h"

/* Values of a cell through every decoder, typed or not. */
static void read_cell(cql_result *r, int32_t col, size_t body_len) {
    const uint8_t *p;
    size_t len;
    int32_t i32;
    int64_t i64;
    int b;
    uint8_t u[16];
    cql_str s;
    (void)cql_row_is_null(r, col);
    if (cql_row_get_raw(r, col, &p, &len) == 0) {
        FUZZ_CHECK(len <= body_len);
        (void)cql_decode_int(p, len, &i32);
        (void)cql_decode_bigint(p, len, &i64);
        (void)cql_decode_bool(p, len, &b);
        (void)cql_decode_uuid(p, len, u);
        cql_iter it;
        if (cql_collection_begin(&it, p, len) == 0) {
            FUZZ_CHECK(it.left >= 0 && (size_t)it.left <= len / 4);
            const uint8_t *e;
            int32_t elen;
            while (cql_iter_next(&it, &e, &elen) == 1) FUZZ_CHECK(elen < 0 || (size_t)elen <= len);
        }
    }
    (void)cql_row_get_int(r, col, &i32);
    (void)cql_row_get_bigint(r, col, &i64);
    (void)cql_row_get_timestamp(r, col, &i64);
    (void)cql_row_get_bool(r, col, &b);
    (void)cql_row_get_uuid(r, col, u);
    (void)cql_row_get_text(r, col, &s);
    (void)cql_row_get_blob(r, col, &p, &len);
    (void)cql_row_get_inet(r, col, u, &len);
    cql_iter it;
    if (cql_row_get_text_set(r, col, &it) == 0)
        while (cql_iter_next_text(&it, &s) == 1) FUZZ_CHECK(s.len <= body_len);
    if (cql_row_get_collection(r, col, &it) == 0)
        while (cql_iter_next_text(&it, &s) == 1) {}
}

static void walk_rows(cql_result *r, size_t body_len) {
    int32_t nrows = cql_result_row_count(r), ncols = cql_result_column_count(r);
    FUZZ_CHECK(nrows >= 0 && ncols >= 0 && ncols <= CQL_MAX_COLUMNS);
    /* The bound of cql.h: every value is at least 4 bytes of the body, and
     * a Rows result of no columns has no rows. */
    if (ncols == 0) FUZZ_CHECK(nrows == 0);
    else FUZZ_CHECK((uint64_t)nrows * (uint64_t)ncols <= body_len / 4);
    for (int pass = 0; pass < 2; pass++) {
        int32_t seen = 0;
        int rc;
        while ((rc = cql_result_next_row(r)) == 1) {
            seen++;
            FUZZ_CHECK(seen <= nrows);
            for (int32_t c = -1; c <= ncols; c++) read_cell(r, c, body_len); /* -1, ncols: out of range */
        }
        FUZZ_CHECK(rc == 0 && seen == nrows); /* validated at parse time: no late error */
        FUZZ_CHECK(cql_result_next_row(r) == 0);
        cql_result_rewind(r);
    }
}

static void walk_metadata(const cql_result *r, size_t body_len) {
    cql_column col;
    int32_t ncols = cql_result_column_count(r);
    for (int32_t i = -1; i <= ncols; i++)
        if (cql_result_column(r, i, &col) == 0)
            FUZZ_CHECK(col.name.len <= body_len && col.keyspace.len <= body_len && col.table.len <= body_len);
    const uint8_t *ps;
    size_t pslen;
    cql_result_paging_state(r, &ps, &pslen);
    FUZZ_CHECK(pslen <= body_len);
    (void)cql_result_has_more_pages(r);
}

static void walk_prepared(const cql_result *r, size_t body_len) {
    const uint8_t *id;
    size_t idlen;
    if (cql_result_prepared_id(r, &id, &idlen) == 0) FUZZ_CHECK(idlen > 0 && idlen <= body_len);
    int32_t np = cql_result_param_count(r), npk = cql_result_pk_count(r);
    FUZZ_CHECK(np >= 0 && (size_t)np <= body_len / 4 && npk >= 0 && (size_t)npk <= body_len / 2);
    cql_column col;
    for (int32_t i = -1; i <= np; i++) (void)cql_result_param(r, i, &col);
    for (int32_t i = -1; i <= npk; i++) {
        int idx = cql_result_pk_index(r, i);
        if (i >= 0 && i < npk) FUZZ_CHECK(idx >= 0 && idx < np);
    }
}

static void walk_result(cql_result *r, size_t body_len) {
    char buf[512];
    (void)cql_result_opcode(r);
    (void)cql_result_tracing_id(r);
    size_t nw = cql_result_warning_count(r);
    FUZZ_CHECK(nw <= body_len / 2);
    for (size_t i = 0; i <= nw; i++) FUZZ_CHECK(cql_result_warning(r, i).len <= body_len);
    const cql_error *e = cql_result_error(r);
    if (e) {
        int n = cql_error_format(e, buf, sizeof buf);
        FUZZ_CHECK(n >= 0 && strlen(buf) < sizeof buf);
        (void)cql_error_format(e, buf, 1); /* truncation */
        (void)cql_error_format(e, NULL, 0);
    }
    size_t ns = cql_result_supported_count(r);
    FUZZ_CHECK(ns <= body_len / 4);
    for (size_t i = 0; i <= ns; i++) {
        cql_str key;
        (void)cql_result_supported(r, i, &key, buf, sizeof buf);
        (void)cql_result_supported(r, i, &key, buf, 3);
    }
    cql_str a, b, c, d;
    (void)cql_result_keyspace(r);
    (void)cql_result_schema_change(r, &a, &b, &c, &d);
    walk_metadata(r, body_len);
    walk_prepared(r, body_len);
    if (cql_result_kind(r) == CQL_RESULT_ROWS) walk_rows(r, body_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < CQL_HEADER_LEN) {
        cql_header h;
        FUZZ_CHECK(cql_header_decode(data, size, CQL_MAX_BODY_DEFAULT, true, &h) == CQL_EAGAIN);
        return 0;
    }
    cql_header h;
    int rc = cql_header_decode(data, size, CQL_MAX_BODY_DEFAULT, true, &h);
    FUZZ_CHECK(rc == 0 || rc == CQL_EPROTO || rc == CQL_ETOOBIG);
    if (rc == 0) FUZZ_CHECK(h.length <= CQL_MAX_BODY_DEFAULT);
    size_t body_len = size - CQL_HEADER_LEN;
    /* An exact-size copy of the body: ASan then sees any read past it. */
    uint8_t *body = (uint8_t *)fuzz_dup(data + CQL_HEADER_LEN, body_len, 0);
    h.opcode = data[4];
    h.flags = data[1];
    h.stream = (int16_t)cql_be16(data + 2);
    h.length = (uint32_t)body_len;
    cql_result *r = NULL;
    bool copy = h.stream & 1;
    rc = cql_result_parse(&h, body_len ? body : NULL, body_len, copy, &r);
    if (rc == 0) {
        FUZZ_CHECK(r != NULL);
        if (copy) memset(body, 0xA5, body_len); /* a copied result must not look at it again */
        walk_result(r, body_len);
        cql_result_free(r);
    } else {
        FUZZ_CHECK(r == NULL);
    }
    cql_event ev;
    if (cql_event_parse(data + CQL_HEADER_LEN, body_len, &ev) == 0) {
        FUZZ_CHECK(ev.type.len + ev.change.len + 4 <= body_len);
        if (ev.has_addr) FUZZ_CHECK(ev.addr_len == 4 || ev.addr_len == 16);
    }
    free(body);
    return 0;
}
