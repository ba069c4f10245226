/*
 * it_cassandra.c - integration test against a real Cassandra on
 * 127.0.0.1:9042 (scripts/cassandra start).  Exercises the whole stack:
 * handshake, schema changes, prepared inserts with many requests in flight,
 * paging, BATCH, USE keyspace, server errors, topology discovery and
 * token-aware routing on a one-node ring, our Murmur3 tokens against the
 * server's token(), and failure against servers that are down or silent.
 * Ends with "N passed, N failed".
 */
#include "cql.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int passed, failed;

#define CHECK(cond, ...)                                                                      \
    do {                                                                                      \
        if (cond) {                                                                           \
            passed++;                                                                         \
        } else {                                                                              \
            failed++;                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fputc('\n', stderr);                                                              \
        }                                                                                     \
    } while (0)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- synchronous call helper ------------------------------------------ */

typedef struct call call;
typedef void (*rows_fn)(call *c, cql_result *r);

struct call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int status;
    int kind;
    int32_t err_code;
    char err[512];
    rows_fn on_rows;
    void *ctx;
    uint8_t paging[1024];
    size_t paging_len;
    int more;
};

static void call_init(call *c, rows_fn fn, void *ctx)
{
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->on_rows = fn;
    c->ctx = ctx;
}

static void call_cb(void *arg, int status, cql_result *r)
{
    call *c = arg;
    c->status = status;
    c->err[0] = '\0';
    if (status == CQL_ESERVER) {
        const cql_error *e = cql_result_error(r);
        c->err_code = e->code;
        cql_error_format(e, c->err, sizeof c->err);
    } else if (status == 0) {
        c->kind = cql_result_kind(r);
        if (c->on_rows && c->kind == CQL_RESULT_ROWS)
            c->on_rows(c, r);
        const uint8_t *p;
        size_t n;
        cql_result_paging_state(r, &p, &n);
        c->more = cql_result_has_more_pages(r);
        if (n <= sizeof c->paging) {
            if (n)
                memcpy(c->paging, p, n);
            c->paging_len = n;
        }
    } else {
        snprintf(c->err, sizeof c->err, "%s", cql_strerror(status));
    }
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static int call_wait(call *c)
{
    pthread_mutex_lock(&c->mu);
    while (!c->done)
        pthread_cond_wait(&c->cv, &c->mu);
    c->done = 0;
    pthread_mutex_unlock(&c->mu);
    return c->status;
}

static int run(cql_client *cl, int prepared, const char *q, const cql_value *v, size_t n,
               const cql_query_opts *o, call *c)
{
    int rc = prepared ? cql_execute(cl, q, v, n, o, call_cb, c) : cql_query(cl, q, v, n, o, call_cb, c);
    if (rc)
        return rc;
    return call_wait(c);
}

static int simple(cql_client *cl, const char *q, char *err, size_t errsz)
{
    call c;
    call_init(&c, NULL, NULL);
    int rc = run(cl, 0, q, NULL, 0, NULL, &c);
    if (err)
        snprintf(err, errsz, "%s", c.err);
    return rc;
}

/* ---- data ------------------------------------------------------------- */

#define NROWS 500
#define PAGE 64

static const uint8_t PART[16] = {0x6b, 0x1e, 0x3a, 0x52, 0x0c, 0x4f, 0x4e, 0x7a,
                                 0x9d, 0x11, 0x20, 0x33, 0x44, 0x55, 0x66, 0x77};

static void timeuuid_for(int i, uint8_t u[16])
{
    memset(u, 0, 16);
    u[0] = (uint8_t)(i >> 8);
    u[1] = (uint8_t)i;
    u[6] = 0x11;          /* version 1 */
    u[7] = 0xee;
    u[8] = 0x80 | 0x1c;   /* RFC 4122 variant */
    u[15] = (uint8_t)i;
}

static void name_for(int i, char *buf, size_t n) { snprintf(buf, n, "имя-%d-✓", i); }

typedef struct insert_state {
    atomic_int remaining;
    atomic_int errors;
    char first_err[512];
    pthread_mutex_t mu;
    pthread_cond_t cv;
} insert_state;

static void insert_cb(void *arg, int status, cql_result *r)
{
    insert_state *s = arg;
    if (status) {
        if (atomic_fetch_add(&s->errors, 1) == 0) {
            if (status == CQL_ESERVER)
                cql_error_format(cql_result_error(r), s->first_err, sizeof s->first_err);
            else
                snprintf(s->first_err, sizeof s->first_err, "%s", cql_strerror(status));
        }
    }
    if (atomic_fetch_sub(&s->remaining, 1) == 1) {
        pthread_mutex_lock(&s->mu);
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
    }
}

typedef struct read_state {
    int seen[NROWS];
    int rows;
    int bad;
    char why[256];
} read_state;

static void verify_rows(call *c, cql_result *r)
{
    read_state *s = c->ctx;
    while (cql_result_next_row(r) == 1) {
        int32_t seq;
        uint8_t id[16], tid[16], want_tid[16];
        cql_str name, code;
        int64_t at, big;
        int ok;
        const uint8_t *data;
        size_t dlen;
        s->rows++;
        if (cql_row_get_uuid(r, 0, id) || memcmp(id, PART, 16) || cql_row_get_int(r, 1, &seq) ||
            seq < 0 || seq >= NROWS) {
            s->bad++;
            snprintf(s->why, sizeof s->why, "bad key");
            continue;
        }
        s->seen[seq]++;
        char want_name[64];
        name_for(seq, want_name, sizeof want_name);
        timeuuid_for(seq, want_tid);
        int name_rc = cql_row_get_text(r, 3, &name);
        int big_rc = cql_row_get_bigint(r, 6, &big);
        int bad = cql_row_get_uuid(r, 2, tid) || memcmp(tid, want_tid, 16) ||
                  (seq == 7 ? name_rc != CQL_ENULL
                            : (name_rc || name.len != strlen(want_name) ||
                               memcmp(name.ptr, want_name, name.len))) ||
                  cql_row_get_text(r, 4, &code) || code.len != 3 || memcmp(code.ptr, "ASC", 3) ||
                  cql_row_get_timestamp(r, 5, &at) || at != 1700000000000LL + seq ||
                  (seq == 8 ? big_rc != CQL_ENULL : (big_rc || big != (int64_t)seq * 10000000000LL)) ||
                  cql_row_get_bool(r, 7, &ok) || ok != (seq % 2) ||
                  cql_row_get_blob(r, 8, &data, &dlen) || dlen != 4 || data[3] != (uint8_t)seq ||
                  cql_row_get_int(r, 6, &seq) != CQL_ETYPE; /* type check */
        if (bad) {
            s->bad++;
            snprintf(s->why, sizeof s->why, "row %d differs", seq);
        }
    }
}

static void count_rows(call *c, cql_result *r)
{
    int64_t *out = c->ctx;
    if (cql_result_next_row(r) == 1 && cql_row_get_bigint(r, 0, out) != 0)
        *out = -1;
}

/* ---- tests ------------------------------------------------------------ */

static void test_schema(cql_client *cl)
{
    char err[512];
    int rc = simple(cl, "DROP KEYSPACE IF EXISTS cql_it", err, sizeof err);
    CHECK(rc == 0, "drop keyspace: %s", err);
    call c;
    call_init(&c, NULL, NULL);
    rc = run(cl, 0,
             "CREATE KEYSPACE cql_it WITH replication = "
             "{'class': 'SimpleStrategy', 'replication_factor': 1}",
             NULL, 0, NULL, &c);
    CHECK(rc == 0 && c.kind == CQL_RESULT_SCHEMA_CHANGE, "create keyspace: %d %s", rc, c.err);
    rc = simple(cl,
                "CREATE TABLE cql_it.all_types (id uuid, seq int, tid timeuuid, name text, "
                "code ascii, at timestamp, big bigint, ok boolean, data blob, "
                "PRIMARY KEY (id, seq))",
                err, sizeof err);
    CHECK(rc == 0, "create table: %s", err);
    /* Creating it again is an Already_exists error with its extra fields. */
    rc = simple(cl, "CREATE TABLE cql_it.all_types (id uuid PRIMARY KEY)", err, sizeof err);
    CHECK(rc == CQL_ESERVER && strstr(err, "Already_exists") && strstr(err, "cql_it.all_types"),
          "already exists: %d %s", rc, err);
    printf("  already-exists error: %s\n", err);
}

static void test_inserts(cql_client *cl)
{
    insert_state s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    atomic_store(&s.remaining, NROWS);
    const char *q = "INSERT INTO cql_it.all_types (id, seq, tid, name, code, at, big, ok, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    uint64_t t0 = now_ms();
    int submit_errors = 0;
    /* All NROWS requests are submitted before the first answer is awaited:
     * they are pipelined on one connection, and the first PREPARE is shared. */
    for (int i = 0; i < NROWS; i++) {
        uint8_t tid[16];
        char name[64];
        uint8_t data[4] = {0xca, 0xfe, (uint8_t)(i >> 8), (uint8_t)i};
        timeuuid_for(i, tid);
        name_for(i, name, sizeof name);
        cql_value v[9] = {
            cql_value_uuid(PART),
            cql_value_int(i),
            cql_value_timeuuid(tid),
            i == 7 ? cql_value_null() : cql_value_text(name),
            cql_value_ascii("ASC", 3),
            cql_value_timestamp(1700000000000LL + i),
            i == 8 ? cql_value_unset() : cql_value_bigint((int64_t)i * 10000000000LL),
            cql_value_bool(i % 2),
            cql_value_blob(data, sizeof data),
        };
        if (cql_execute(cl, q, v, 9, NULL, insert_cb, &s) != 0) {
            submit_errors++;
            atomic_fetch_sub(&s.remaining, 1);
        }
    }
    pthread_mutex_lock(&s.mu);
    while (atomic_load(&s.remaining) > 0)
        pthread_cond_wait(&s.cv, &s.mu);
    pthread_mutex_unlock(&s.mu);
    CHECK(submit_errors == 0, "%d submits failed", submit_errors);
    CHECK(atomic_load(&s.errors) == 0, "%d inserts failed, first: %s", atomic_load(&s.errors),
          s.first_err);
    printf("  %d prepared inserts in flight together: %llu ms\n", NROWS,
           (unsigned long long)(now_ms() - t0));
}

static void test_paging(cql_client *cl, int prepared)
{
    read_state s;
    memset(&s, 0, sizeof s);
    call c;
    call_init(&c, verify_rows, &s);
    cql_query_opts o;
    cql_query_opts_init(&o);
    o.page_size = PAGE;
    o.consistency = CQL_LOCAL_ONE;
    cql_value key = cql_value_uuid(PART);
    int pages = 0, rc;
    do {
        rc = run(cl, prepared,
                 "SELECT id, seq, tid, name, code, at, big, ok, data FROM cql_it.all_types "
                 "WHERE id = ?",
                 &key, 1, &o, &c);
        if (rc)
            break;
        pages++;
        o.paging_state = c.paging;
        o.paging_state_len = c.paging_len;
    } while (c.more && pages < 1000);
    CHECK(rc == 0, "select page %d: %d %s", pages, rc, c.err);
    CHECK(s.rows == NROWS, "read %d rows, want %d", s.rows, NROWS);
    CHECK(pages == (NROWS + PAGE - 1) / PAGE, "pages %d", pages);
    CHECK(s.bad == 0, "%d bad rows: %s", s.bad, s.why);
    int missing = 0;
    for (int i = 0; i < NROWS; i++)
        missing += s.seen[i] != 1;
    CHECK(missing == 0, "%d rows missing or duplicated", missing);
    printf("  %s paging: %d rows in %d pages of %d\n", prepared ? "prepared" : "unprepared",
           s.rows, pages, PAGE);
}

static int64_t count_partition(cql_client *cl, const uint8_t part[16])
{
    int64_t n = -2;
    call c;
    call_init(&c, count_rows, &n);
    cql_value key = cql_value_uuid(part);
    int rc = run(cl, 1, "SELECT count(*) FROM cql_it.all_types WHERE id = ?", &key, 1, NULL, &c);
    return rc ? rc : n;
}

static void test_batch(cql_client *cl)
{
    static const uint8_t part2[16] = {0xb0, 1, 2, 3, 4, 5, 0x40, 7, 0x80, 9, 10, 11, 12, 13, 14, 15};
    const char *ins = "INSERT INTO cql_it.all_types (id, seq, name) VALUES (?, ?, ?)";
    cql_value v[3][3];
    for (int i = 0; i < 3; i++) {
        v[i][0] = cql_value_uuid(part2);
        v[i][1] = cql_value_int(i);
        v[i][2] = cql_value_text("batched");
    }
    cql_value uv[1] = {cql_value_uuid(part2)};
    cql_batch_stmt stmts[4] = {
        {ins, v[0], 3, 1},
        {ins, v[1], 3, 1},
        {ins, v[2], 3, 1},
        {"INSERT INTO cql_it.all_types (id, seq, name) VALUES (?, 99, 'plain')", uv, 1, 0},
    };
    call c;
    call_init(&c, NULL, NULL);
    int rc = cql_batch(cl, CQL_BATCH_LOGGED, stmts, 4, NULL, call_cb, &c);
    if (rc == 0)
        rc = call_wait(&c);
    CHECK(rc == 0 && c.kind == CQL_RESULT_VOID, "batch: %d %s", rc, c.err);
    int64_t n = count_partition(cl, part2);
    CHECK(n == 4, "batch partition has %lld rows", (long long)n);
    /* A batch containing an invalid statement fails as a whole. */
    cql_batch_stmt bad[2] = {
        {ins, v[0], 3, 1},
        {"INSERT INTO cql_it.nope (a) VALUES (1)", NULL, 0, 0},
    };
    rc = cql_batch(cl, CQL_BATCH_UNLOGGED, bad, 2, NULL, call_cb, &c);
    if (rc == 0)
        rc = call_wait(&c);
    CHECK(rc == CQL_ESERVER && c.err_code == CQL_INVALID, "bad batch: %d %s", rc, c.err);
    printf("  batch of 3 prepared + 1 plain statement: ok; bad batch: %s\n", c.err);
}

static void test_errors(cql_client *cl)
{
    char err[512];
    call c;
    call_init(&c, NULL, NULL);
    int rc = run(cl, 0, "SELEC * FROM nowhere", NULL, 0, NULL, &c);
    CHECK(rc == CQL_ESERVER && c.err_code == CQL_SYNTAX_ERROR, "syntax: %d %s", rc, c.err);
    printf("  syntax error: %s\n", c.err);
    rc = run(cl, 0, "SELECT * FROM cql_it.no_such_table", NULL, 0, NULL, &c);
    CHECK(rc == CQL_ESERVER && c.err_code == CQL_INVALID && strstr(c.err, "no_such_table"),
          "unknown table: %d %s", rc, c.err);
    printf("  unknown table: %s\n", c.err);
    /* The PREPARE fails, and the EXECUTE waiting on it gets that error. */
    rc = run(cl, 1, "SELECT * FROM cql_it.no_such_table WHERE a = ?", NULL, 0, NULL, &c);
    CHECK(rc == CQL_ESERVER && c.err_code == CQL_INVALID, "prepare unknown: %d %s", rc, c.err);
    /* A wrong bound type is rejected by the server with a clear message. */
    cql_value wrong = cql_value_int(5);
    rc = run(cl, 1, "SELECT * FROM cql_it.all_types WHERE id = ?", &wrong, 1, NULL, &c);
    CHECK(rc == CQL_ESERVER && c.err_code == CQL_INVALID, "wrong type: %d %s", rc, c.err);
    printf("  wrong bound type: %s\n", c.err);
    /* The connection is still healthy after errors. */
    rc = simple(cl, "SELECT release_version FROM system.local", err, sizeof err);
    CHECK(rc == 0, "after errors: %s", err);
}

static void test_use_keyspace(void)
{
    const char *cp[] = {"127.0.0.1:9042"};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    o.keyspace = "cql_it";
    o.consistency = CQL_QUORUM;
    cql_client *cl;
    int rc = cql_client_new(&cl, &o);
    CHECK(rc == 0, "client: %s", cql_strerror(rc));
    if (rc)
        return;
    rc = cql_client_wait_ready(cl, 10000);
    CHECK(rc == 0, "ready with keyspace: %s", cql_strerror(rc));
    int64_t n = -2;
    call c;
    call_init(&c, count_rows, &n);
    cql_value key = cql_value_uuid(PART);
    rc = run(cl, 1, "SELECT count(*) FROM all_types WHERE id = ?", &key, 1, NULL, &c);
    CHECK(rc == 0 && n == NROWS, "unqualified count: rc=%d n=%lld %s", rc, (long long)n, c.err);
    printf("  USE cql_it + unqualified table name: count = %lld\n", (long long)n);
    cql_client_close(cl);
}

static void test_down_server(void)
{
    /* 1. Nothing listens: connection refused. */
    const char *cp[] = {"127.0.0.1:19042"};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    o.connect_timeout_ms = 1000;
    cql_client *cl;
    CHECK(cql_client_new(&cl, &o) == 0, "client");
    uint64_t t0 = now_ms();
    call c;
    call_init(&c, NULL, NULL);
    int rc = run(cl, 0, "SELECT now() FROM system.local", NULL, 0, NULL, &c);
    uint64_t dt = now_ms() - t0;
    char last[256];
    cql_client_last_error(cl, last, sizeof last);
    CHECK(rc == CQL_ENOHOST && dt < 3000, "stopped server: rc=%d after %llu ms", rc,
          (unsigned long long)dt);
    CHECK(strstr(last, "Connection refused") != NULL, "last error: %s", last);
    printf("  stopped server: %s after %llu ms (%s)\n", cql_strerror(rc), (unsigned long long)dt, last);
    cql_client_close(cl);

    /* 2. A server that accepts TCP but never answers STARTUP. */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 4) ||
        getsockname(ls, (struct sockaddr *)&sa, &sl)) {
        CHECK(0, "listen socket");
        return;
    }
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(sa.sin_port));
    const char *cp2[] = {addr};
    o.contact_points = cp2;
    CHECK(cql_client_new(&cl, &o) == 0, "client");
    t0 = now_ms();
    rc = run(cl, 0, "SELECT now() FROM system.local", NULL, 0, NULL, &c);
    dt = now_ms() - t0;
    cql_client_last_error(cl, last, sizeof last);
    CHECK(rc == CQL_ENOHOST && dt >= 900 && dt < 4000, "silent server: rc=%d after %llu ms", rc,
          (unsigned long long)dt);
    printf("  silent server: %s after %llu ms (%s)\n", cql_strerror(rc), (unsigned long long)dt, last);
    cql_client_close(cl);
    close(ls);
}

/* ---- topology and tokens ---------------------------------------------- */

static void first_bigint(call *c, cql_result *r)
{
    int64_t *out = c->ctx;
    if (cql_result_next_row(r) != 1 || cql_row_get_bigint(r, 0, out) != 0)
        *out = INT64_MIN;
}

/* Discovery against the real node: system.local + system.peers_v2 give a
 * ring of one node, and every request is sent to it. */
static void test_discovery(void)
{
    const char *cp[] = {"127.0.0.1:9042"};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    cql_client *cl;
    int rc = cql_client_new(&cl, &o);
    CHECK(rc == 0, "client: %s", cql_strerror(rc));
    if (rc)
        return;
    rc = cql_client_wait_ready(cl, 10000);
    CHECK(rc == 0, "ready: %s", cql_strerror(rc));
    uint64_t t0 = now_ms();
    while (cql_client_topology_version(cl) < 1 && now_ms() - t0 < 10000)
        usleep(5000);
    CHECK(cql_client_topology_version(cl) >= 1, "no topology refresh after 10 s");
    cql_host_info info[4];
    size_t n = cql_client_hosts(cl, info, 4);
    CHECK(n == 1, "%zu hosts known", n);
    if (n < 1) {
        cql_client_close(cl);
        return;
    }
    CHECK(info[0].in_ring && info[0].up && info[0].contact_point && info[0].tokens >= 1,
          "host %s ring=%d up=%d tokens=%u", info[0].address, info[0].in_ring, info[0].up,
          info[0].tokens);
    printf("  ring: %zu host, %s dc=%s tokens=%u\n", n, info[0].address, info[0].datacenter,
           info[0].tokens);
    uint64_t before = info[0].requests;
    int ok = 0;
    for (int i = 0; i < 20; i++) {
        int64_t v = -2;
        call c;
        call_init(&c, count_rows, &v);
        uint8_t u[16];
        memset(u, 0x90 + i, 16);
        cql_value key = cql_value_uuid(u);
        if (run(cl, 1, "SELECT count(*) FROM cql_it.all_types WHERE id = ?", &key, 1, NULL, &c) == 0 &&
            v == 0)
            ok++;
    }
    CHECK(ok == 20, "%d of 20 routed selects ok", ok);
    n = cql_client_hosts(cl, info, 4);
    CHECK(n == 1 && info[0].requests == before + 20, "host got %llu requests, want %llu",
          (unsigned long long)info[0].requests, (unsigned long long)(before + 20));
    cql_client_close(cl);
}

/* token(k) computed by the server equals ours, for uuid keys (whose bytes
 * span 0x00..0xff, so the sign-extended tail matters) and a composite key. */
static void test_tokens(cql_client *cl)
{
    char err[512];
    int rc = simple(cl, "CREATE TABLE cql_it.tok (id uuid PRIMARY KEY, v int)", err, sizeof err);
    CHECK(rc == 0, "create tok: %s", err);
    rc = simple(cl, "CREATE TABLE cql_it.tok2 (a int, b text, c int, PRIMARY KEY ((a, b), c))", err,
                sizeof err);
    CHECK(rc == 0, "create tok2: %s", err);
    uint32_t seed = 0x5eed;
    int same = 0, total = 0;
    for (int i = 0; i < 24; i++) {
        uint8_t u[16];
        for (int j = 0; j < 16; j++) {
            seed = seed * 1103515245u + 12345u;
            u[j] = (uint8_t)(seed >> 16);
        }
        u[6] = (uint8_t)((u[6] & 0x0f) | 0x40); /* version 4 */
        cql_value v[2] = {cql_value_uuid(u), cql_value_int(i)};
        call c;
        call_init(&c, NULL, NULL);
        rc = run(cl, 1, "INSERT INTO cql_it.tok (id, v) VALUES (?, ?)", v, 2, NULL, &c);
        CHECK(rc == 0, "insert tok: %s", c.err);
        int64_t server = 0, ours = 1;
        call_init(&c, first_bigint, &server);
        rc = run(cl, 1, "SELECT token(id) FROM cql_it.tok WHERE id = ?", v, 1, NULL, &c);
        cql_partition_token(v, 1, &ours);
        total++;
        if (rc == 0 && server == ours)
            same++;
        else
            fprintf(stderr, "  token mismatch: server %lld ours %lld (%s)\n", (long long)server,
                    (long long)ours, c.err);
    }
    for (int i = 0; i < 8; i++) {
        char b[32];
        snprintf(b, sizeof b, "clé-%d-\xc3\xbf", i * 31);
        cql_value v[3] = {cql_value_int(i * 1000 - 3000), cql_value_text(b), cql_value_int(i)};
        call c;
        call_init(&c, NULL, NULL);
        rc = run(cl, 1, "INSERT INTO cql_it.tok2 (a, b, c) VALUES (?, ?, ?)", v, 3, NULL, &c);
        CHECK(rc == 0, "insert tok2: %s", c.err);
        int64_t server = 0, ours = 1;
        call_init(&c, first_bigint, &server);
        rc = run(cl, 1, "SELECT token(a, b) FROM cql_it.tok2 WHERE a = ? AND b = ?", v, 2, NULL, &c);
        cql_partition_token(v, 2, &ours);
        total++;
        if (rc == 0 && server == ours)
            same++;
        else
            fprintf(stderr, "  composite token mismatch: server %lld ours %lld (%s)\n",
                    (long long)server, (long long)ours, c.err);
    }
    CHECK(same == total, "%d of %d tokens agree", same, total);
    printf("  token(): %d of %d keys (24 uuid, 8 composite) agree with cql_partition_token\n", same,
           total);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *cp[] = {"127.0.0.1:19043", "127.0.0.1:9042"}; /* first one is down */
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 2;
    o.reconnect_base_ms = 50;
    cql_client *cl;
    int rc = cql_client_new(&cl, &o);
    if (rc) {
        fprintf(stderr, "cql_client_new: %s\n", cql_strerror(rc));
        return 1;
    }
    uint64_t t0 = now_ms();
    rc = cql_client_wait_ready(cl, 15000);
    if (rc == CQL_ENOHOST) /* the first contact point failed: the second is tried next */
        rc = cql_client_wait_ready(cl, 15000);
    char last[256];
    cql_client_last_error(cl, last, sizeof last);
    if (rc) {
        fprintf(stderr, "cannot connect to 127.0.0.1:9042: %s (%s); start it with scripts/cassandra start\n",
                cql_strerror(rc), last);
        cql_client_close(cl);
        printf("0 passed, 1 failed\n");
        return 1;
    }
    printf("connected via second contact point in %llu ms (first: %s)\n",
           (unsigned long long)(now_ms() - t0), last);
    printf("schema\n");
    test_schema(cl);
    printf("inserts\n");
    test_inserts(cl);
    printf("paging\n");
    test_paging(cl, 1);
    test_paging(cl, 0);
    printf("batch\n");
    test_batch(cl);
    printf("errors\n");
    test_errors(cl);
    printf("use keyspace\n");
    test_use_keyspace();
    printf("topology\n");
    test_discovery();
    test_tokens(cl);
    char err[512];
    rc = simple(cl, "DROP KEYSPACE cql_it", err, sizeof err);
    CHECK(rc == 0, "drop: %s", err);
    cql_client_close(cl);
    printf("down servers\n");
    test_down_server();
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
