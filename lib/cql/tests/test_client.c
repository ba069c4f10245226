/* test_client.c - the connection layer against a scripted fake server on
 * loopback: pipelining with out-of-order answers, stream-limit queueing,
 * timeouts with late answers, UNPREPARED re-prepare, reconnect, oversized
 * frames, close with requests pending, no host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cql_internal.h"

/* ---- fake server ------------------------------------------------------ */

typedef struct fake {
    int ls;
    int port;
    pthread_t th;
    atomic_bool stop;
    atomic_int connections, prepares, executes;
    atomic_int generation; /* bump to make the server forget prepared ids */
} fake;

static int read_full(int fd, uint8_t *p, size_t n, fake *f)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, 50);
        if (atomic_load(&f->stop))
            return -1;
        if (pr <= 0)
            continue;
        ssize_t k = read(fd, p + got, n - got);
        if (k <= 0)
            return -1;
        got += (size_t)k;
    }
    return 0;
}

static void send_frame(int fd, int16_t stream, uint8_t op, cql_buf *body)
{
    cql_header h = {CQL_VERSION_RESPONSE, 0, stream, op, (uint32_t)body->len};
    /* One write per frame: header and body in separate segments would hit
     * Nagle + delayed ACK and add ~40 ms per answer. */
    uint8_t *frame = malloc(9 + body->len);
    assert_non_null(frame);
    cql_header_encode(&h, frame);
    if (body->len)
        memcpy(frame + 9, body->data, body->len);
    ssize_t w = write(fd, frame, 9 + body->len);
    (void)w;
    free(frame);
    body->len = 0;
}

static void rows_int(cql_buf *b, int32_t v)
{
    cql_buf_i32(b, CQL_RESULT_ROWS);
    cql_buf_i32(b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(b, 1);
    cql_buf_string(b, "ks", 2);
    cql_buf_string(b, "t", 1);
    cql_buf_string(b, "v", 1);
    cql_buf_u16(b, CQL_TYPE_INT);
    cql_buf_i32(b, 1);
    cql_value x = cql_value_int(v);
    cql_buf_value(b, &x);
}

static void serve(fake *f, int fd)
{
    cql_buf b;
    cql_buf_init(&b);
    int16_t delayed = -1;
    for (;;) {
        uint8_t hdr[9];
        if (read_full(fd, hdr, 9, f))
            break;
        cql_header h;
        if (cql_header_decode(hdr, 9, 1 << 20, false, &h))
            break;
        uint8_t *body = malloc(h.length + 1);
        if (!body || read_full(fd, body, h.length, f)) {
            free(body);
            break;
        }
        cql_rd r = {body, h.length, 0};
        cql_str q = {0};
        bool quit = false;
        switch (h.opcode) {
        case CQL_OP_STARTUP:
            send_frame(fd, h.stream, CQL_OP_READY, &b);
            break;
        case CQL_OP_QUERY:
            cql_rd_long_string(&r, &q);
            if (q.len == 12 && !memcmp(q.ptr, "SELECT delay", 12)) {
                delayed = h.stream; /* answered after the next query */
            } else if (q.len == 11 && !memcmp(q.ptr, "SELECT slow", 11)) {
                usleep(300 * 1000);
                rows_int(&b, -7);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            } else if (q.len == 4 && !memcmp(q.ptr, "KILL", 4)) {
                quit = true;
            } else if (q.len == 3 && !memcmp(q.ptr, "BIG", 3)) {
                cql_header big = {CQL_VERSION_RESPONSE, 0, h.stream, CQL_OP_RESULT, 1u << 30};
                uint8_t raw[9];
                cql_header_encode(&big, raw);
                ssize_t w = write(fd, raw, 9);
                (void)w;
            } else {
                rows_int(&b, h.stream);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
                if (delayed >= 0) {
                    rows_int(&b, -1);
                    send_frame(fd, delayed, CQL_OP_RESULT, &b);
                    delayed = -1;
                }
            }
            break;
        case CQL_OP_PREPARE: {
            atomic_fetch_add(&f->prepares, 1);
            uint8_t id[3] = {'I', 'D', (uint8_t)atomic_load(&f->generation)};
            cql_buf_i32(&b, CQL_RESULT_PREPARED);
            cql_buf_short_bytes(&b, id, 3);
            cql_buf_i32(&b, 0);
            cql_buf_i32(&b, 0);
            cql_buf_i32(&b, 0);
            cql_buf_i32(&b, CQL_RF_NO_METADATA);
            cql_buf_i32(&b, 0);
            send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            break;
        }
        case CQL_OP_EXECUTE: {
            atomic_fetch_add(&f->executes, 1);
            const uint8_t *id;
            size_t idlen;
            cql_rd_short_bytes(&r, &id, &idlen);
            if (idlen != 3 || id[2] != (uint8_t)atomic_load(&f->generation)) {
                cql_buf_i32(&b, CQL_UNPREPARED);
                cql_buf_string(&b, "unknown id", 10);
                cql_buf_short_bytes(&b, id, idlen);
                send_frame(fd, h.stream, CQL_OP_ERROR, &b);
            } else {
                rows_int(&b, 42);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            }
            break;
        }
        default:
            cql_buf_i32(&b, CQL_PROTOCOL_ERROR);
            cql_buf_string(&b, "unexpected", 10);
            send_frame(fd, h.stream, CQL_OP_ERROR, &b);
            break;
        }
        free(body);
        if (quit)
            break;
    }
    cql_buf_free(&b);
    close(fd);
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd pfd = {f->ls, POLLIN, 0};
        if (poll(&pfd, 1, 50) <= 0)
            continue;
        int fd = accept(f->ls, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->connections, 1);
        serve(f, fd);
    }
    return NULL;
}

static int fake_setup(void **st)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(f->ls, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(f->ls, 8), 0);
    assert_int_equal(getsockname(f->ls, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
    *st = f;
    return 0;
}

static int fake_teardown(void **st)
{
    fake *f = *st;
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    close(f->ls);
    free(f);
    return 0;
}

/* ---- client helpers --------------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending;
    int status[8];
    int32_t value[8];
    int order[8];
    int next_order;
} waiter;

typedef struct slot {
    waiter *w;
    int i;
} slot;

static void cb(void *arg, int status, cql_result *r)
{
    slot *s = arg;
    waiter *w = s->w;
    pthread_mutex_lock(&w->mu);
    w->status[s->i] = status;
    w->value[s->i] = INT32_MIN;
    if (status == 0 && cql_result_next_row(r) == 1)
        cql_row_get_int(r, 0, &w->value[s->i]);
    w->order[s->i] = w->next_order++;
    w->pending--;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_init(waiter *w, slot *s, int n)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    for (int i = 0; i < n; i++) {
        s[i].w = w;
        s[i].i = i;
    }
}

static void waiter_add(waiter *w, int n)
{
    pthread_mutex_lock(&w->mu);
    w->pending += n;
    pthread_mutex_unlock(&w->mu);
}

static void waiter_wait(waiter *w)
{
    pthread_mutex_lock(&w->mu);
    while (w->pending > 0)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static cql_client *connect_fake(fake *f, uint32_t max_streams)
{
    static char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", f->port);
    const char *cp[] = {addr};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    o.reconnect_base_ms = 20;
    o.max_streams = max_streams;
    o.request_timeout_ms = 5000;
    cql_client *c;
    assert_int_equal(cql_client_new(&c, &o), 0);
    assert_int_equal(cql_client_wait_ready(c, 5000), 0);
    return c;
}

static int one(cql_client *c, bool prepared, const char *q, uint32_t timeout, int32_t *value)
{
    waiter w;
    slot s[1];
    waiter_init(&w, s, 1);
    waiter_add(&w, 1);
    cql_query_opts o;
    cql_query_opts_init(&o);
    o.timeout_ms = timeout;
    int rc = prepared ? cql_execute(c, q, NULL, 0, &o, cb, &s[0]) : cql_query(c, q, NULL, 0, &o, cb, &s[0]);
    assert_int_equal(rc, 0);
    waiter_wait(&w);
    if (value)
        *value = w.value[0];
    return w.status[0];
}

static uint64_t ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- tests ------------------------------------------------------------ */

static void test_out_of_order(void **st)
{
    cql_client *c = connect_fake(*st, 1024);
    waiter w;
    slot s[2];
    waiter_init(&w, s, 2);
    waiter_add(&w, 2);
    assert_int_equal(cql_query(c, "SELECT delay", NULL, 0, NULL, cb, &s[0]), 0);
    assert_int_equal(cql_query(c, "SELECT flush", NULL, 0, NULL, cb, &s[1]), 0);
    waiter_wait(&w);
    assert_int_equal(w.status[0], 0);
    assert_int_equal(w.status[1], 0);
    assert_int_equal(w.value[0], -1);  /* the delayed answer reached its own request */
    assert_true(w.value[1] >= 0);      /* the server echoes the stream id */
    assert_true(w.order[1] < w.order[0]);
    assert_int_equal(cql_client_close(c), 0);
}

typedef struct many {
    atomic_int ok, bad, left;
    atomic_int seen_streams[4];
} many;

static void many_cb(void *arg, int status, cql_result *r)
{
    many *m = arg;
    int32_t v = -1;
    if (status == 0 && cql_result_next_row(r) == 1 && cql_row_get_int(r, 0, &v) == 0 && v >= 0 && v < 4)
        atomic_fetch_add(&m->ok, 1);
    else if (atomic_fetch_add(&m->bad, 1) == 0)
        fprintf(stderr, "first bad: status %d value %d\n", status, v);
    atomic_fetch_sub(&m->left, 1);
}

/* 3000 requests through 4 stream ids: the rest wait in the pending queue,
 * and every stream id the server sees is below the limit. */
static void test_stream_limit_queueing(void **st)
{
    cql_client *c = connect_fake(*st, 4);
    many m = {0};
    atomic_store(&m.left, 3000);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(cql_query(c, "SELECT x", NULL, 0, NULL, many_cb, &m), 0);
    while (atomic_load(&m.left) > 0)
        usleep(1000);
    assert_int_equal(atomic_load(&m.ok), 3000);
    assert_int_equal(atomic_load(&m.bad), 0);
    assert_int_equal(cql_client_close(c), 0);
}

static void test_timeout_then_late_answer(void **st)
{
    cql_client *c = connect_fake(*st, 1); /* one stream: reuse would be visible */
    uint64_t t0 = ms();
    int32_t v;
    assert_int_equal(one(c, false, "SELECT slow", 100, &v), CQL_ETIMEDOUT);
    uint64_t dt = ms() - t0;
    assert_true(dt >= 90 && dt < 290);
    /* The only stream is orphaned until the late answer (-7) arrives; the
     * next request must get its own answer, never the late one. */
    assert_int_equal(one(c, false, "SELECT next", 0, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cql_client_close(c), 0);
}

static void test_unprepared_reprepare(void **st)
{
    fake *f = *st;
    cql_client *c = connect_fake(f, 64);
    int p0 = atomic_load(&f->prepares), e0 = atomic_load(&f->executes);
    int32_t v;
    /* Concurrent first uses share a single PREPARE. */
    waiter w;
    slot s[8];
    waiter_init(&w, s, 8);
    waiter_add(&w, 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(cql_execute(c, "SELECT p", NULL, 0, NULL, cb, &s[i]), 0);
    waiter_wait(&w);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(w.status[i], 0);
        assert_int_equal(w.value[i], 42);
    }
    assert_int_equal(atomic_load(&f->prepares) - p0, 1);
    assert_int_equal(one(c, true, "SELECT p", 0, &v), 0);
    assert_int_equal(atomic_load(&f->prepares) - p0, 1); /* cached */
    atomic_fetch_add(&f->generation, 1);                  /* server forgets */
    assert_int_equal(one(c, true, "SELECT p", 0, &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(atomic_load(&f->prepares) - p0, 2);
    assert_int_equal(atomic_load(&f->executes) - e0, 8 + 1 + 2);
    assert_int_equal(cql_client_close(c), 0);
}

static void test_reconnect(void **st)
{
    fake *f = *st;
    cql_client *c = connect_fake(f, 64);
    int n0 = atomic_load(&f->connections);
    assert_int_equal(one(c, false, "KILL", 0, NULL), CQL_ECONN);
    int32_t v;
    int rc;
    uint64_t t0 = ms();
    /* Until the reconnect completes requests may fail fast; then they work. */
    while ((rc = one(c, false, "SELECT again", 0, &v)) != 0 && ms() - t0 < 3000)
        usleep(10000);
    assert_int_equal(rc, 0);
    assert_true(atomic_load(&f->connections) >= n0 + 1);

    assert_int_equal(one(c, false, "BIG", 0, NULL), CQL_ECONN);
    char last[256];
    cql_client_last_error(c, last, sizeof last);
    assert_non_null(strstr(last, "exceeds the maximum"));
    t0 = ms();
    while ((rc = one(c, false, "SELECT again", 0, &v)) != 0 && ms() - t0 < 3000)
        usleep(10000);
    assert_int_equal(rc, 0);
    assert_int_equal(cql_client_close(c), 0);
}

static void test_close_fails_pending(void **st)
{
    cql_client *c = connect_fake(*st, 64);
    waiter w;
    slot s[2];
    waiter_init(&w, s, 2);
    waiter_add(&w, 2);
    assert_int_equal(cql_query(c, "SELECT delay", NULL, 0, NULL, cb, &s[0]), 0);
    assert_int_equal(cql_execute(c, "SELECT q", NULL, 0, NULL, cb, &s[1]), 0);
    usleep(50 * 1000);
    assert_int_equal(cql_client_close(c), 0); /* callbacks ran before it returned */
    assert_int_equal(w.pending, 0);
    assert_int_equal(w.status[0], CQL_ECLOSED);
}

static void test_no_host_and_bad_args(void **st)
{
    (void)st;
    const char *cp[] = {"127.0.0.1:1"};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    cql_client *c;
    assert_int_equal(cql_client_new(&c, &o), 0);
    assert_int_equal(cql_client_wait_ready(c, 3000), CQL_ENOHOST);
    assert_int_equal(one(c, false, "SELECT 1", 0, NULL), CQL_ENOHOST);
    char last[256];
    cql_client_last_error(c, last, sizeof last);
    assert_non_null(strstr(last, "127.0.0.1:1: connect: Connection refused"));
    /* synchronous argument errors never invoke the callback */
    cql_value bad = cql_value_blob(NULL, 3);
    assert_int_equal(cql_query(c, "x", &bad, 1, NULL, cb, NULL), CQL_EINVAL);
    assert_int_equal(cql_query(c, NULL, NULL, 0, NULL, cb, NULL), CQL_EINVAL);
    cql_query_opts qo;
    cql_query_opts_init(&qo);
    qo.consistency = 77;
    assert_int_equal(cql_query(c, "x", NULL, 0, &qo, cb, NULL), CQL_EINVAL);
    assert_int_equal(cql_batch(c, CQL_BATCH_LOGGED, NULL, 0, NULL, cb, NULL), CQL_EINVAL);
    assert_int_equal(cql_client_close(c), 0);

    o.keyspace = "ks; DROP TABLE x";
    assert_int_equal(cql_client_new(&c, &o), CQL_EINVAL);
    o.keyspace = NULL;
    o.max_streams = 40000;
    assert_int_equal(cql_client_new(&c, &o), CQL_EINVAL);
    const char *badcp[] = {"[::1"};
    cql_client_opts_init(&o);
    o.contact_points = badcp;
    o.n_contact_points = 1;
    assert_int_equal(cql_client_new(&c, &o), CQL_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_stream_limit_queueing),
        cmocka_unit_test(test_timeout_then_late_answer),
        cmocka_unit_test(test_unprepared_reprepare),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_close_fails_pending),
        cmocka_unit_test(test_no_host_and_bad_args),
    };
    return cmocka_run_group_tests_name("cql_client", tests, fake_setup, fake_teardown);
}
