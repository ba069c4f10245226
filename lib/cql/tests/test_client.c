/* test_client.c - the connection layer against scripted fake servers on
 * loopback: pipelining with out-of-order answers, stream-limit queueing,
 * timeouts with late answers, UNPREPARED re-prepare, reconnect, oversized
 * frames, close with requests pending, no host; and, with fake clusters of
 * two or three nodes, discovery (system.peers_v2 and legacy system.peers),
 * token-aware routing of EXECUTE and BATCH, round-robin of the rest,
 * fail-over to the next replica when a node dies, reconnection (hurried by
 * a STATUS_CHANGE event) when it returns, control connection fail-over and
 * removal of a node that leaves the ring. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <inttypes.h>
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

/*
 * A fake node: an acceptor thread and one thread per connection.  It
 * answers STARTUP, REGISTER, the topology queries (system.local and
 * system.peers_v2 / system.peers, from the cluster description when it is
 * part of one), QUERY, PREPARE and EXECUTE.  Like a real node it only
 * knows the statements prepared on it since it (re)started: EXECUTE of
 * anything else is UNPREPARED.  A node can be killed (listener closed,
 * connections dropped) and revived on the same address.
 */
#define MAX_NODES 3

typedef struct cluster cluster;

typedef struct fake {
    int ls;                /* the acceptor thread's after setup */
    int port;
    char ip[16];
    int node;              /* index in the cluster; 0 standalone */
    cluster *cl;           /* NULL: a one-node cluster owning token 0 */
    pthread_t th;
    atomic_bool stop, down, listening;
    atomic_int active;     /* connection threads */
    atomic_int connections, prepares, executes, registers, peers_v2_queries, peers_queries;
    atomic_int generation; /* bump to make the server forget prepared ids */
    atomic_uint known;     /* bit per statement kind prepared since start */
    atomic_int event_port; /* nonzero: push STATUS_CHANGE UP 127.0.0.1:port */
} fake;

struct cluster {
    int n;
    atomic_int listed;     /* nodes reported by system.local / peers */
    bool legacy;           /* no system.peers_v2 (Cassandra 3) */
    fake *nodes[MAX_NODES];
    const char *tokens[MAX_NODES][2];
};

static int read_full(int fd, uint8_t *p, size_t n, fake *f, bool registered)
{
    size_t got = 0;
    while (got < n) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, 20);
        if (atomic_load(&f->stop) || atomic_load(&f->down))
            return -1;
        if (registered && got == 0 && atomic_load(&f->event_port)) {
            /* EVENT: [string] type, [string] change, [inet] address */
            cql_buf b;
            cql_buf_init(&b);
            cql_buf_string(&b, "STATUS_CHANGE", 13);
            cql_buf_string(&b, "UP", 2);
            cql_buf_u8(&b, 4);
            uint8_t lo[4] = {127, 0, 0, 1};
            cql_buf_put(&b, lo, 4);
            cql_buf_i32(&b, atomic_exchange(&f->event_port, 0));
            cql_header h = {CQL_VERSION_RESPONSE, 0, -1, CQL_OP_EVENT, (uint32_t)b.len};
            uint8_t hdr[9];
            cql_header_encode(&h, hdr);
            ssize_t w = write(fd, hdr, 9);
            w = write(fd, b.data, b.len);
            (void)w;
            cql_buf_free(&b);
        }
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

static void send_error(int fd, int16_t stream, int32_t code, const char *msg, cql_buf *b)
{
    cql_buf_i32(b, code);
    cql_buf_string(b, msg, strlen(msg));
    send_frame(fd, stream, CQL_OP_ERROR, b);
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

static void put_col(cql_buf *b, const char *name, uint16_t type, uint16_t sub)
{
    cql_buf_string(b, name, strlen(name));
    cql_buf_u16(b, type);
    if (type == CQL_TYPE_SET)
        cql_buf_u16(b, sub);
}

static void put_inet(cql_buf *b, const char *ip)
{
    uint8_t a[4];
    assert_int_equal(inet_pton(AF_INET, ip, a), 1);
    cql_buf_bytes(b, a, 4);
}

static void put_text(cql_buf *b, const char *s) { cql_buf_bytes(b, s, strlen(s)); }

/* A set<text> value: [int] n, then n [bytes]. */
static void put_text_set(cql_buf *b, const char *const *v, int n)
{
    cql_buf sub;
    cql_buf_init(&sub);
    cql_buf_i32(&sub, n);
    for (int i = 0; i < n; i++)
        put_text(&sub, v[i]);
    cql_buf_bytes(b, sub.data, sub.len);
    cql_buf_free(&sub);
}

static void rows_header(cql_buf *b, const char *table, int ncols)
{
    cql_buf_i32(b, CQL_RESULT_ROWS);
    cql_buf_i32(b, CQL_RF_GLOBAL_TABLES_SPEC);
    cql_buf_i32(b, ncols);
    cql_buf_string(b, "system", 6);
    cql_buf_string(b, table, strlen(table));
}

static void answer_local(fake *f, cql_buf *b)
{
    static const char *const zero[] = {"0"};
    rows_header(b, "local", 4);
    put_col(b, "tokens", CQL_TYPE_SET, CQL_TYPE_VARCHAR);
    put_col(b, "data_center", CQL_TYPE_VARCHAR, 0);
    put_col(b, "rpc_address", CQL_TYPE_INET, 0);
    put_col(b, "partitioner", CQL_TYPE_VARCHAR, 0);
    cql_buf_i32(b, 1);
    if (f->cl)
        put_text_set(b, f->cl->tokens[f->node], 2);
    else
        put_text_set(b, zero, 1);
    put_text(b, "dc1");
    put_inet(b, f->ip);
    put_text(b, "org.apache.cassandra.dht.Murmur3Partitioner");
}

static void answer_peers(fake *f, cql_buf *b, bool v2)
{
    rows_header(b, v2 ? "peers_v2" : "peers", v2 ? 5 : 4);
    put_col(b, "peer", CQL_TYPE_INET, 0);
    put_col(b, v2 ? "native_address" : "rpc_address", CQL_TYPE_INET, 0);
    if (v2)
        put_col(b, "native_port", CQL_TYPE_INT, 0);
    put_col(b, "data_center", CQL_TYPE_VARCHAR, 0);
    put_col(b, "tokens", CQL_TYPE_SET, CQL_TYPE_VARCHAR);
    cluster *cl = f->cl;
    int listed = cl ? atomic_load(&cl->listed) : 1;
    cql_buf_i32(b, listed - (f->node < listed ? 1 : 0));
    for (int i = 0; cl && i < listed; i++) {
        if (i == f->node)
            continue;
        fake *p = cl->nodes[i];
        put_inet(b, p->ip);
        if (v2) {
            put_inet(b, p->ip);
            cql_value port = cql_value_int(p->port);
            cql_buf_value(b, &port);
        } else {
            put_inet(b, "0.0.0.0"); /* a wildcard rpc_address: use peer */
        }
        put_text(b, "dc1");
        put_text_set(b, cl->tokens[i], 2);
    }
}

/* Statement kinds the fake prepares: the bind markers and partition key
 * of each, and a one-byte id suffix. */
enum { ST_PLAIN = 0, ST_INSERT = 1, ST_TWO = 2 };

static int stmt_kind(cql_str q)
{
    if (q.len >= 6 && !memcmp(q.ptr, "INSERT", 6))
        return ST_INSERT; /* INSERT ... (k, v) VALUES (?, ?): key k = marker 0 */
    if (q.len >= 10 && !memcmp(q.ptr, "UPDATE two", 10))
        return ST_TWO;    /* markers (b text, x int, a int), key (a, b) = [2, 0] */
    return ST_PLAIN;
}

static void answer_prepare(fake *f, int kind, cql_buf *b)
{
    uint8_t id[4] = {'I', 'D', (uint8_t)atomic_load(&f->generation), (uint8_t)kind};
    cql_buf_i32(b, CQL_RESULT_PREPARED);
    cql_buf_short_bytes(b, id, 4);
    if (kind == ST_PLAIN) {
        cql_buf_i32(b, 0);
        cql_buf_i32(b, 0);
        cql_buf_i32(b, 0);
    } else if (kind == ST_INSERT) {
        cql_buf_i32(b, CQL_RF_GLOBAL_TABLES_SPEC);
        cql_buf_i32(b, 2);
        cql_buf_i32(b, 1);
        cql_buf_u16(b, 0);
        cql_buf_string(b, "ks", 2);
        cql_buf_string(b, "t", 1);
        put_col(b, "k", CQL_TYPE_INT, 0);
        put_col(b, "v", CQL_TYPE_INT, 0);
    } else {
        cql_buf_i32(b, CQL_RF_GLOBAL_TABLES_SPEC);
        cql_buf_i32(b, 3);
        cql_buf_i32(b, 2);
        cql_buf_u16(b, 2);
        cql_buf_u16(b, 0);
        cql_buf_string(b, "ks", 2);
        cql_buf_string(b, "two", 3);
        put_col(b, "b", CQL_TYPE_VARCHAR, 0);
        put_col(b, "x", CQL_TYPE_INT, 0);
        put_col(b, "a", CQL_TYPE_INT, 0);
    }
    cql_buf_i32(b, CQL_RF_NO_METADATA); /* result metadata */
    cql_buf_i32(b, 0);
}

static bool contains(cql_str q, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= q.len; i++)
        if (!memcmp(q.ptr + i, needle, n))
            return true;
    return false;
}

static void serve(fake *f, int fd)
{
    cql_buf b;
    cql_buf_init(&b);
    int16_t delayed = -1;
    bool registered = false;
    for (;;) {
        uint8_t hdr[9];
        if (read_full(fd, hdr, 9, f, registered))
            break;
        cql_header h;
        if (cql_header_decode(hdr, 9, 1 << 20, false, &h))
            break;
        uint8_t *body = malloc(h.length + 1);
        if (!body || read_full(fd, body, h.length, f, false)) {
            free(body);
            break;
        }
        cql_rd r = {body, h.length, 0};
        cql_str q = {0};
        bool quit = false;
        int32_t me = f->cl ? f->node : -100;
        switch (h.opcode) {
        case CQL_OP_STARTUP:
            send_frame(fd, h.stream, CQL_OP_READY, &b);
            break;
        case CQL_OP_REGISTER:
            atomic_fetch_add(&f->registers, 1);
            registered = true;
            send_frame(fd, h.stream, CQL_OP_READY, &b);
            break;
        case CQL_OP_QUERY:
            cql_rd_long_string(&r, &q);
            if (contains(q, "FROM system.local")) {
                answer_local(f, &b);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            } else if (contains(q, "FROM system.peers_v2")) {
                atomic_fetch_add(&f->peers_v2_queries, 1);
                if (f->cl && f->cl->legacy) {
                    send_error(fd, h.stream, CQL_INVALID, "unconfigured table peers_v2", &b);
                } else {
                    answer_peers(f, &b, true);
                    send_frame(fd, h.stream, CQL_OP_RESULT, &b);
                }
            } else if (contains(q, "FROM system.peers")) {
                atomic_fetch_add(&f->peers_queries, 1);
                answer_peers(f, &b, false);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            } else if (q.len == 12 && !memcmp(q.ptr, "SELECT delay", 12)) {
                delayed = h.stream; /* answered after the next query */
            } else if (q.len == 11 && !memcmp(q.ptr, "SELECT hang", 11)) {
                /* never answered: a node that stopped responding */
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
                /* standalone: echo the stream id; in a cluster: who answered */
                rows_int(&b, f->cl ? me : h.stream);
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
            cql_rd_long_string(&r, &q);
            int kind = stmt_kind(q);
            atomic_fetch_or(&f->known, 1u << kind);
            answer_prepare(f, kind, &b);
            send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            break;
        }
        case CQL_OP_EXECUTE: {
            atomic_fetch_add(&f->executes, 1);
            const uint8_t *id;
            size_t idlen;
            cql_rd_short_bytes(&r, &id, &idlen);
            if (idlen != 4 || id[2] != (uint8_t)atomic_load(&f->generation) || id[3] > 2 ||
                !(atomic_load(&f->known) & (1u << id[3]))) {
                cql_buf_i32(&b, CQL_UNPREPARED);
                cql_buf_string(&b, "unknown id", 10);
                cql_buf_short_bytes(&b, id, idlen);
                send_frame(fd, h.stream, CQL_OP_ERROR, &b);
            } else {
                rows_int(&b, f->cl ? me : 42);
                send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            }
            break;
        }
        case CQL_OP_BATCH:
            /* tells who answered, like EXECUTE (a real node says VOID) */
            rows_int(&b, f->cl ? me : 42);
            send_frame(fd, h.stream, CQL_OP_RESULT, &b);
            break;
        default:
            send_error(fd, h.stream, CQL_PROTOCOL_ERROR, "unexpected", &b);
            break;
        }
        free(body);
        if (quit)
            break;
    }
    cql_buf_free(&b);
    close(fd);
}

typedef struct conn_arg {
    fake *f;
    int fd;
} conn_arg;

static void *conn_main(void *arg)
{
    conn_arg *a = arg;
    serve(a->f, a->fd);
    atomic_fetch_sub(&a->f->active, 1);
    free(a);
    return NULL;
}

static int fake_listen(const char *ip, int port)
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    inet_pton(AF_INET, ip, &sa.sin_addr);
    if (bind(ls, (struct sockaddr *)&sa, sizeof sa) || listen(ls, 16)) {
        close(ls);
        return -1;
    }
    return ls;
}

static void *fake_main(void *arg)
{
    fake *f = arg;
    while (!atomic_load(&f->stop)) {
        if (atomic_load(&f->down)) {
            if (f->ls >= 0) {
                close(f->ls);
                f->ls = -1;
                atomic_store(&f->listening, false);
            }
            usleep(2000);
            continue;
        }
        if (f->ls < 0) {
            if ((f->ls = fake_listen(f->ip, f->port)) < 0) {
                usleep(5000);
                continue;
            }
            atomic_store(&f->listening, true);
        }
        struct pollfd pfd = {f->ls, POLLIN, 0};
        if (poll(&pfd, 1, 20) <= 0)
            continue;
        int fd = accept(f->ls, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->connections, 1);
        conn_arg *a = malloc(sizeof *a);
        assert_non_null(a);
        a->f = f;
        a->fd = fd;
        atomic_fetch_add(&f->active, 1);
        pthread_t t;
        if (pthread_create(&t, NULL, conn_main, a) != 0) {
            atomic_fetch_sub(&f->active, 1);
            close(fd);
            free(a);
            continue;
        }
        pthread_detach(t);
    }
    if (f->ls >= 0)
        close(f->ls);
    return NULL;
}

/* Starts a node on ip:port (port 0: any); NULL when the address is taken. */
static fake *fake_start(const char *ip, int port, cluster *cl, int node)
{
    fake *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->ip, sizeof f->ip, "%s", ip);
    f->cl = cl;
    f->node = node;
    f->ls = fake_listen(ip, port);
    if (f->ls < 0) {
        free(f);
        return NULL;
    }
    struct sockaddr_in sa;
    socklen_t sl = sizeof sa;
    assert_int_equal(getsockname(f->ls, (struct sockaddr *)&sa, &sl), 0);
    f->port = ntohs(sa.sin_port);
    atomic_store(&f->listening, true);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
    return f;
}

static void fake_stop(fake *f)
{
    atomic_store(&f->stop, true);
    pthread_join(f->th, NULL);
    while (atomic_load(&f->active) > 0)
        usleep(1000);
    free(f);
}

/* Kills a node: no listener, connections dropped, prepared ids forgotten. */
static void fake_kill(fake *f)
{
    atomic_store(&f->down, true);
    while (atomic_load(&f->listening) || atomic_load(&f->active) > 0)
        usleep(1000);
    atomic_store(&f->known, 0);
}

static void fake_revive(fake *f)
{
    atomic_store(&f->down, false);
    while (!atomic_load(&f->listening))
        usleep(1000);
}

static int fake_setup(void **st)
{
    *st = fake_start("127.0.0.1", 0, NULL, 0);
    assert_non_null(*st);
    return 0;
}

static int fake_teardown(void **st)
{
    fake_stop(*st);
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

static uint64_t ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
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
    /* Discovery is on: let its first refresh (REGISTER, system.local,
     * system.peers_v2) finish, so that it does not compete with the
     * tests' requests for stream ids or for the fake's attention. */
    uint64_t t0 = ms();
    while (cql_client_topology_version(c) < 1 && ms() - t0 < 5000)
        usleep(1000);
    assert_true(cql_client_topology_version(c) >= 1);
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
    if (dt < 90 || dt >= 290)
        fail_msg("timed out after %llu ms", (unsigned long long)dt);
    /* The only stream is orphaned until the late answer (-7) arrives; the
     * next request must get its own answer, never the late one. */
    assert_int_equal(one(c, false, "SELECT next", 0, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(cql_client_close(c), 0);
}

/* A node that keeps the socket open but stops answering must not keep a
 * dead connection looking ready: past a quarter of the stream ids held by
 * timed-out requests, the client closes it and reconnects. */
static void test_unanswering_node_is_disconnected(void **st)
{
    fake *f = *st;
    cql_client *c = connect_fake(f, 8); /* limit: 2 orphaned streams */
    int n0 = atomic_load(&f->connections);
    int32_t v;
    assert_int_equal(one(c, false, "SELECT hang", 50, &v), CQL_ETIMEDOUT);
    assert_int_equal(one(c, false, "SELECT hang", 50, &v), CQL_ETIMEDOUT);
    uint64_t t0 = ms();
    while (atomic_load(&f->connections) < n0 + 1 && ms() - t0 < 3000)
        usleep(5000);
    assert_true(atomic_load(&f->connections) >= n0 + 1);
    char last[256];
    cql_client_last_error(c, last, sizeof last);
    assert_non_null(strstr(last, "stopped answering"));
    int rc;
    t0 = ms();
    while ((rc = one(c, false, "SELECT again", 0, &v)) != 0 && ms() - t0 < 3000)
        usleep(10000);
    assert_int_equal(rc, 0);
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

/* ---- one node, discovery on ------------------------------------------- */

static bool wait_until(bool (*pred)(cql_client *, void *), cql_client *c, void *arg, uint32_t ms_max)
{
    uint64_t t0 = ms();
    while (!pred(c, arg)) {
        if (ms() - t0 > ms_max)
            return false;
        usleep(2000);
    }
    return true;
}

/* `*(int *)arg` hosts known and up, after at least one topology refresh. */
static bool hosts_up(cql_client *c, void *arg)
{
    cql_host_info info[8];
    size_t n = cql_client_hosts(c, info, 8);
    int up = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        up += info[i].up;
    return cql_client_topology_version(c) >= 1 && up == *(int *)arg;
}

static void test_single_node_discovery(void **st)
{
    fake *f = *st;
    cql_client *c = connect_fake(f, 64);
    int one_host = 1;
    assert_true(wait_until(hosts_up, c, &one_host, 3000));
    cql_host_info info[4];
    assert_int_equal(cql_client_hosts(c, info, 4), 1);
    assert_true(info[0].in_ring && info[0].contact_point && info[0].up);
    assert_int_equal(info[0].tokens, 1);
    assert_string_equal(info[0].datacenter, "dc1");
    assert_true(atomic_load(&f->registers) >= 1);
    uint64_t before = info[0].requests;
    int32_t v;
    assert_int_equal(one(c, true, "SELECT p", 0, &v), 0);
    assert_int_equal(one(c, false, "SELECT q", 0, &v), 0);
    cql_client_hosts(c, info, 4);
    assert_int_equal(info[0].requests, before + 2);
    assert_int_equal(cql_client_close(c), 0);
}

/* ---- several nodes ---------------------------------------------------- */

/* Owner of token t: the node with the smallest token >= t, else the one
 * with the smallest token; `skip` (-1: none) is left out.  Deliberately a
 * brute-force scan, independent of the client's ring code. */
static int owner_of(const cluster *cl, int64_t t, int skip)
{
    int best = -1, lowest = -1;
    int64_t bv = 0, lv = 0;
    for (int i = 0; i < cl->n; i++) {
        if (i == skip)
            continue;
        for (int j = 0; j < 2; j++) {
            int64_t v = strtoll(cl->tokens[i][j], NULL, 10);
            if (v >= t && (best < 0 || v < bv)) {
                best = i;
                bv = v;
            }
            if (lowest < 0 || v < lv) {
                lowest = i;
                lv = v;
            }
        }
    }
    return best >= 0 ? best : lowest;
}

static cluster *cluster_start(int n, bool legacy)
{
    static const char *const toks[MAX_NODES][2] = {
        {"-7000000000000000000", "1000000000000000000"},
        {"-4000000000000000000", "4000000000000000000"},
        {"-1000000000000000000", "7000000000000000000"},
    };
    cluster *cl = calloc(1, sizeof *cl);
    assert_non_null(cl);
    cl->n = n;
    cl->legacy = legacy;
    atomic_store(&cl->listed, n);
    for (int i = 0; i < n; i++) {
        cl->tokens[i][0] = toks[i][0];
        cl->tokens[i][1] = toks[i][1];
    }
    /* Legacy system.peers has no port: the nodes share one port on
     * distinct loopback addresses (127.0.0.x is all loopback on Linux). */
    for (int attempt = 0; attempt < 20; attempt++) {
        int ok = 1;
        for (int i = 0; i < n && ok; i++) {
            char ip[16];
            snprintf(ip, sizeof ip, "127.0.0.%d", legacy ? i + 1 : 1);
            cl->nodes[i] = fake_start(ip, legacy && i ? cl->nodes[0]->port : 0, cl, i);
            if (!cl->nodes[i]) {
                ok = 0;
                for (int j = 0; j < i; j++)
                    fake_stop(cl->nodes[j]);
            }
        }
        if (ok)
            return cl;
    }
    fail_msg("cannot bind the fake cluster");
    return NULL;
}

static void cluster_stop(cluster *cl)
{
    for (int i = 0; i < cl->n; i++)
        fake_stop(cl->nodes[i]);
    free(cl);
}

static cql_client *connect_cluster(cluster *cl, uint32_t refresh_ms, uint32_t backoff_max)
{
    static char addr[64];
    snprintf(addr, sizeof addr, "%s:%d", cl->nodes[0]->ip, cl->nodes[0]->port);
    const char *cp[] = {addr};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 1;
    o.reconnect_base_ms = 20;
    o.reconnect_max_ms = backoff_max;
    o.request_timeout_ms = 5000;
    if (refresh_ms)
        o.topology_refresh_ms = refresh_ms;
    cql_client *c;
    assert_int_equal(cql_client_new(&c, &o), 0);
    assert_int_equal(cql_client_wait_ready(c, 5000), 0);
    assert_true(wait_until(hosts_up, c, &cl->n, 5000));
    return c;
}

/* Index in info[] of the host at node i's address, or -1. */
static int host_of(const cluster *cl, int i, const cql_host_info *info, size_t n)
{
    char want[64];
    snprintf(want, sizeof want, "%s:%d", cl->nodes[i]->ip, cl->nodes[i]->port);
    for (size_t k = 0; k < n; k++)
        if (!strcmp(info[k].address, want))
            return (int)k;
    return -1;
}

typedef struct node_state {
    cluster *cl;
    int node;
    int up;
} node_state;

static bool node_is(cql_client *c, void *arg)
{
    node_state *s = arg;
    cql_host_info info[8];
    size_t n = cql_client_hosts(c, info, 8);
    int k = host_of(s->cl, s->node, info, n < 8 ? n : 8);
    return k >= 0 && info[k].up == s->up;
}

/* EXECUTE of the INSERT with key k; returns the node that answered. */
static int insert_at(cql_client *c, int32_t k, int *status)
{
    waiter w;
    slot sl[1];
    waiter_init(&w, sl, 1);
    waiter_add(&w, 1);
    cql_value v[2] = {cql_value_int(k), cql_value_int(k * 10)};
    assert_int_equal(cql_execute(c, "INSERT INTO t (k, v) VALUES (?, ?)", v, 2, NULL, cb, &sl[0]), 0);
    waiter_wait(&w);
    *status = w.status[0];
    return w.value[0];
}

static int64_t int_token(int32_t k)
{
    cql_value v = cql_value_int(k);
    int64_t t;
    assert_int_equal(cql_partition_token(&v, 1, &t), 0);
    return t;
}

static void test_cluster_routing(void **st)
{
    (void)st;
    cluster *cl = cluster_start(3, false);
    cql_client *c = connect_cluster(cl, 0, 3000);

    cql_host_info info[8];
    size_t n = cql_client_hosts(c, info, 8);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++) {
        int k = host_of(cl, i, info, n);
        assert_true(k >= 0);
        assert_true(info[k].in_ring && info[k].up);
        assert_int_equal(info[k].tokens, 2);
        assert_string_equal(info[k].datacenter, "dc1");
    }
    assert_int_equal(atomic_load(&cl->nodes[0]->peers_v2_queries) >= 1, 1);
    assert_int_equal(atomic_load(&cl->nodes[0]->peers_queries), 0);

    /* Every EXECUTE reaches the owner of its key's token. */
    int per_node[MAX_NODES] = {0};
    for (int32_t k = 0; k < 60; k++) {
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        int want = owner_of(cl, int_token(k), -1);
        if (who != want)
            fail_msg("key %d token %" PRId64 ": answered by node %d, owner is %d", k,
                     int_token(k), who, want);
        per_node[who]++;
    }
    for (int i = 0; i < 3; i++)
        assert_true(per_node[i] > 0);
    /* The first PREPARE was repeated on the other nodes. */
    for (int i = 0; i < 3; i++)
        assert_true(atomic_load(&cl->nodes[i]->prepares) >= 1);

    /* A composite key (a, b) bound at markers 2 and 0. */
    for (int32_t a = 0; a < 12; a++) {
        char b[16];
        snprintf(b, sizeof b, "b%d", a * 7);
        waiter w;
        slot sl[1];
        waiter_init(&w, sl, 1);
        waiter_add(&w, 1);
        cql_value v[3] = {cql_value_text(b), cql_value_int(-1), cql_value_int(a)};
        assert_int_equal(cql_execute(c, "UPDATE two SET x = ? WHERE b = ? AND a = ?", v, 3, NULL,
                                     cb, &sl[0]), 0);
        waiter_wait(&w);
        assert_int_equal(w.status[0], 0);
        cql_value key[2] = {cql_value_int(a), cql_value_text(b)};
        int64_t t;
        assert_int_equal(cql_partition_token(key, 2, &t), 0);
        assert_int_equal(w.value[0], owner_of(cl, t, -1));
    }

    /* A BATCH goes where its first statement's key lives. */
    for (int32_t k = 100; k < 112; k++) {
        waiter w;
        slot sl[1];
        waiter_init(&w, sl, 1);
        waiter_add(&w, 1);
        cql_value v1[2] = {cql_value_int(k), cql_value_int(0)};
        cql_value v2[2] = {cql_value_int(k + 1000), cql_value_int(0)};
        cql_batch_stmt stmts[3] = {
            {"INSERT INTO t (k, v) VALUES (?, ?)", v1, 2, 1},
            {"INSERT INTO t (k, v) VALUES (?, ?)", v2, 2, 1},
            {"INSERT INTO t (k, v) VALUES (7, 7)", NULL, 0, 0},
        };
        assert_int_equal(cql_batch(c, CQL_BATCH_UNLOGGED, stmts, 3, NULL, cb, &sl[0]), 0);
        waiter_wait(&w);
        assert_int_equal(w.status[0], 0);
        assert_int_equal(w.value[0], owner_of(cl, int_token(k), -1));
    }

    /* Unrouteable requests go round-robin. */
    int seen[MAX_NODES] = {0};
    for (int i = 0; i < 9; i++) {
        int32_t who;
        assert_int_equal(one(c, false, "SELECT anything", 0, &who), 0);
        assert_true(who >= 0 && who < 3);
        seen[who]++;
    }
    assert_true(seen[0] && seen[1] && seen[2]);

    /* Node 1 dies: its keys go to the next replica on the ring. */
    fake_kill(cl->nodes[1]);
    node_state down1 = {cl, 1, 0};
    assert_true(wait_until(node_is, c, &down1, 3000));
    int moved = 0;
    for (int32_t k = 0; k < 60; k++) {
        int64_t t = int_token(k);
        if (owner_of(cl, t, -1) != 1)
            continue;
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        assert_int_equal(who, owner_of(cl, t, 1));
        moved++;
    }
    assert_true(moved > 0);

    /* It comes back: the client reconnects (the STATUS_CHANGE UP pushed
     * on the control connection cuts the back-off short) and routes to
     * it again; it forgot its prepared statements, so they are prepared
     * there again transparently. */
    int conns = atomic_load(&cl->nodes[1]->connections);
    int preps = atomic_load(&cl->nodes[1]->prepares);
    usleep(1500 * 1000); /* let the back-off grow past ~640 ms */
    fake_revive(cl->nodes[1]);
    atomic_store(&cl->nodes[0]->event_port, cl->nodes[1]->port);
    uint64_t t0 = ms();
    node_state up1 = {cl, 1, 1};
    assert_true(wait_until(node_is, c, &up1, 5000));
    uint64_t dt = ms() - t0;
    if (dt > 400)
        fail_msg("reconnect took %llu ms after STATUS_CHANGE UP", (unsigned long long)dt);
    assert_true(atomic_load(&cl->nodes[1]->connections) > conns);
    for (int32_t k = 0; k < 60; k++) {
        int64_t t = int_token(k);
        if (owner_of(cl, t, -1) != 1)
            continue;
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        assert_int_equal(who, 1);
    }
    assert_true(atomic_load(&cl->nodes[1]->prepares) > preps);

    /* The control connection's node (the contact point) dies: another
     * node takes over the control connection and refreshes the topology,
     * and node 0's keys go to their next replica. */
    uint64_t version = cql_client_topology_version(c);
    int regs1 = atomic_load(&cl->nodes[1]->registers) + atomic_load(&cl->nodes[2]->registers);
    fake_kill(cl->nodes[0]);
    node_state down0 = {cl, 0, 0};
    assert_true(wait_until(node_is, c, &down0, 3000));
    t0 = ms();
    while (cql_client_topology_version(c) <= version && ms() - t0 < 3000)
        usleep(2000);
    assert_true(cql_client_topology_version(c) > version);
    assert_true(atomic_load(&cl->nodes[1]->registers) + atomic_load(&cl->nodes[2]->registers) > regs1);
    for (int32_t k = 0; k < 30; k++) {
        int64_t t = int_token(k);
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        assert_int_equal(who, owner_of(cl, t, owner_of(cl, t, -1) == 0 ? 0 : -1));
    }
    fake_revive(cl->nodes[0]);
    node_state up0 = {cl, 0, 1};
    assert_true(wait_until(node_is, c, &up0, 5000));
    assert_int_equal(cql_client_close(c), 0);
    cluster_stop(cl);
}

/* Several contact points of one cluster: each node is one host, whether it
 * was given as a contact point or discovered. */
static void test_cluster_contact_points_dedupe(void **st)
{
    (void)st;
    cluster *cl = cluster_start(3, false);
    char a1[64], a0[64];
    snprintf(a1, sizeof a1, "127.0.0.1:%d", cl->nodes[1]->port);
    snprintf(a0, sizeof a0, "127.0.0.1:%d", cl->nodes[0]->port);
    const char *cp[] = {a1, a0};
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cp;
    o.n_contact_points = 2;
    cql_client *c;
    assert_int_equal(cql_client_new(&c, &o), 0);
    assert_int_equal(cql_client_wait_ready(c, 5000), 0);
    assert_true(wait_until(hosts_up, c, &cl->n, 5000));
    cql_host_info info[8];
    assert_int_equal(cql_client_hosts(c, info, 8), 3);
    int contacts = 0;
    for (int i = 0; i < 3; i++) {
        assert_true(info[i].in_ring);
        contacts += info[i].contact_point;
    }
    assert_int_equal(contacts, 2);
    for (int i = 0; i < 3; i++)
        assert_int_equal(atomic_load(&cl->nodes[i]->connections), 1);
    /* disable_token_routing: prepared statements go round-robin too */
    assert_int_equal(cql_client_close(c), 0);
    o.disable_token_routing = 1;
    assert_int_equal(cql_client_new(&c, &o), 0);
    assert_true(wait_until(hosts_up, c, &cl->n, 5000));
    int seen[MAX_NODES] = {0};
    for (int i = 0; i < 9; i++) {
        int status, who = insert_at(c, 5, &status);
        assert_int_equal(status, 0);
        seen[who]++;
    }
    assert_true(seen[0] && seen[1] && seen[2]);
    assert_int_equal(cql_client_close(c), 0);
    cluster_stop(cl);
}

static bool node2_gone(cql_client *c, void *arg)
{
    cluster *cl = arg;
    cql_host_info info[8];
    size_t n = cql_client_hosts(c, info, 8);
    int k = host_of(cl, 2, info, n < 8 ? n : 8);
    return k >= 0 && !info[k].in_ring && !info[k].up;
}

/* Cassandra 3 (no peers_v2): system.peers, peers on their own addresses
 * with the control connection's port; a node that leaves the ring is
 * dropped at the next periodic refresh. */
static void test_cluster_legacy_peers_and_removal(void **st)
{
    (void)st;
    cluster *cl = cluster_start(3, true);
    cql_client *c = connect_cluster(cl, 150, 1000);
    assert_true(atomic_load(&cl->nodes[0]->peers_v2_queries) >= 1);
    assert_true(atomic_load(&cl->nodes[0]->peers_queries) >= 1);
    for (int32_t k = 0; k < 30; k++) {
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        assert_int_equal(who, owner_of(cl, int_token(k), -1));
    }
    /* Node 2 is decommissioned: the next refresh no longer lists it. */
    atomic_store(&cl->listed, 2);
    assert_true(wait_until(node2_gone, c, cl, 3000));
    cl->n = 2; /* the owners the client should now compute */
    for (int32_t k = 0; k < 30; k++) {
        int status, who = insert_at(c, k, &status);
        assert_int_equal(status, 0);
        assert_int_equal(who, owner_of(cl, int_token(k), -1));
    }
    cl->n = 3;
    assert_int_equal(cql_client_close(c), 0);
    cluster_stop(cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_order),
        cmocka_unit_test(test_stream_limit_queueing),
        cmocka_unit_test(test_timeout_then_late_answer),
        cmocka_unit_test(test_unanswering_node_is_disconnected),
        cmocka_unit_test(test_unprepared_reprepare),
        cmocka_unit_test(test_reconnect),
        cmocka_unit_test(test_close_fails_pending),
        cmocka_unit_test(test_no_host_and_bad_args),
        cmocka_unit_test(test_single_node_discovery),
        cmocka_unit_test(test_cluster_routing),
        cmocka_unit_test(test_cluster_contact_points_dedupe),
        cmocka_unit_test(test_cluster_legacy_peers_and_removal),
    };
    return cmocka_run_group_tests_name("cql_client", tests, fake_setup, fake_teardown);
}
