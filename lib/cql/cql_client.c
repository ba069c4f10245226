/*
 * cql_client.c - asynchronous, pipelined connection layer.
 *
 * Design
 *   One client = one I/O thread = one connection at a time to one of the
 *   contact points.  Up to max_streams requests are in flight on it, keyed
 *   by stream id.  User threads only touch the submit queue (under `mu`) and
 *   wake the thread through an eventfd; everything else (connection, stream
 *   table, prepare cache, queues) is owned by the I/O thread and needs no
 *   lock.  Callbacks run on the I/O thread with no lock held, so they may
 *   submit new requests.
 *
 * Request life cycle (each request is in exactly one place):
 *   submit queue -> pending -> [waiting for PREPARE] -> in flight -> done
 *   Every request also sits on the `live` list from the moment the I/O
 *   thread takes it until it completes; the timeout scan walks that list.
 *
 * Invariants
 *   - A stream id is free only when no response can arrive for it: a
 *     timed-out request leaves an ORPHAN in its slot until the late response
 *     arrives or the connection closes, so a late answer is never delivered
 *     to the next user of the id.
 *   - A failed frame build leaves the output buffer unchanged (builders roll
 *     back), so the byte stream always consists of whole frames.
 *
 * TODO(routing): token-aware routing and system.peers discovery.  Design
 *   note: keep one `conn` per node (this file's single conn becomes an
 *   array), fetch system.local/system.peers on the first connection, build a
 *   sorted token ring (Murmur3 over the partition key, whose bind-marker
 *   positions the Prepared metadata already lists as pk indexes), and pick
 *   the node owning the token for EXECUTE; REGISTER for TOPOLOGY_CHANGE and
 *   STATUS_CHANGE on one control connection to keep the ring fresh.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cql_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define OUT_HIGH_WATER (8u * 1024 * 1024) /* stop dispatching above this */
#define READ_CHUNK (64u * 1024)

enum req_kind { RK_QUERY, RK_EXECUTE, RK_BATCH, RK_PREPARE, RK_STARTUP, RK_USE };
enum req_where { W_NONE, W_PENDING, W_WAITING, W_INFLIGHT };
enum prep_state { P_NONE, P_PREPARING, P_READY };
enum conn_state { C_DOWN, C_CONNECTING, C_STARTUP, C_USE, C_READY };

typedef struct prep_entry {
    struct prep_entry *next; /* hash chain */
    uint32_t hash;
    int state;
    char *query;
    size_t qlen;
    uint8_t *id;
    size_t idlen;
} prep_entry;

typedef struct batch_part {
    const char *query;
    size_t qlen;
    const cql_value *values;
    size_t n_values;
    bool prepared;
    prep_entry *prep;
} batch_part;

typedef struct req {
    int kind;
    int where;
    cql_result_cb cb;
    void *arg;
    uint64_t deadline;       /* monotonic ms */
    int16_t stream;
    bool reprepared;         /* UNPREPARED already retried once */
    bool internal;           /* STARTUP/USE/PREPARE issued by the library */
    const char *query;       /* QUERY/EXECUTE/PREPARE text (in arena) */
    size_t qlen;
    cql_value *values;       /* deep copies; ext points into arena */
    size_t n_values;
    cql_qparams params;
    uint8_t batch_type;
    batch_part *parts;
    size_t n_parts;
    prep_entry *prep;        /* EXECUTE: resolved at first dispatch;
                                PREPARE: the entry being prepared */
    char *arena;             /* owns every copied byte of this request */
    struct req *qprev, *qnext; /* pending or waiting list */
    struct req *lprev, *lnext; /* live list */
} req;

typedef struct rlist {
    req *head, *tail;
} rlist;

struct cql_client {
    /* immutable after cql_client_new */
    char **hosts, **ports;
    size_t nhosts;
    char *keyspace;
    uint16_t consistency;
    uint32_t request_timeout_ms, connect_timeout_ms, backoff_base_ms, backoff_max_ms;
    uint32_t max_frame_body, max_streams;
    pthread_t thread;
    int epfd, evfd;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *sub_head, *sub_tail;
    bool closing;
    int ready_state;         /* 1 ready, 0 connecting, -1 down */
    char last_error[256];

    /* I/O thread only */
    int fd;
    int state;
    uint64_t conn_deadline;  /* connect/handshake deadline, or retry time */
    size_t host_idx;
    unsigned attempt;        /* consecutive failures, for back-off */
    size_t failures_in_round;
    bool down;               /* a whole round of contact points failed */
    uint32_t rng;
    cql_buf out;
    size_t out_off;
    uint8_t *in;
    size_t in_len, in_cap;
    rlist pending, waiting;
    req *live_head;
    req **slots;
    int16_t *free_ids;
    size_t n_free;
    prep_entry **prep_tab;
    size_t prep_buckets;
    uint64_t next_scan;
};

/* Marks the slot of a timed-out request whose answer is still due. */
static req orphan_marker;
#define ORPHAN (&orphan_marker)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cql_client_opts_init(cql_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->consistency = CQL_ONE;
    o->request_timeout_ms = 12000;
    o->connect_timeout_ms = 5000;
    o->reconnect_base_ms = 100;
    o->reconnect_max_ms = 10000;
    o->max_frame_body = CQL_MAX_BODY_DEFAULT;
    o->max_streams = CQL_MAX_STREAMS;
}

void cql_query_opts_init(cql_query_opts *o)
{
    memset(o, 0, sizeof *o);
    o->consistency = CQL_CONSISTENCY_DEFAULT;
    o->timestamp_us = -1;
}

/* ---- lists ------------------------------------------------------------ */

static void rl_push(rlist *l, req *r, bool front)
{
    r->qprev = r->qnext = NULL;
    if (!l->head) {
        l->head = l->tail = r;
    } else if (front) {
        r->qnext = l->head;
        l->head->qprev = r;
        l->head = r;
    } else {
        r->qprev = l->tail;
        l->tail->qnext = r;
        l->tail = r;
    }
}

static void rl_remove(rlist *l, req *r)
{
    if (r->qprev) r->qprev->qnext = r->qnext; else l->head = r->qnext;
    if (r->qnext) r->qnext->qprev = r->qprev; else l->tail = r->qprev;
    r->qprev = r->qnext = NULL;
}

static void live_add(cql_client *c, req *r)
{
    r->lprev = NULL;
    r->lnext = c->live_head;
    if (c->live_head)
        c->live_head->lprev = r;
    c->live_head = r;
    if (r->deadline < c->next_scan)
        c->next_scan = r->deadline;
}

static void live_remove(cql_client *c, req *r)
{
    if (r->lprev) r->lprev->lnext = r->lnext; else if (c->live_head == r) c->live_head = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    r->lprev = r->lnext = NULL;
}

static void req_free(req *r)
{
    if (!r)
        return;
    free(r->values);
    free(r->parts);
    free(r->arena);
    free(r);
}

static void set_last_error(cql_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_last_error(cql_client *c, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&c->mu);
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&c->mu);
}

static void set_ready_state(cql_client *c, int s)
{
    pthread_mutex_lock(&c->mu);
    c->ready_state = s;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Removes r from wherever it is, runs its callback, frees it. */
static void req_detach(cql_client *c, req *r)
{
    switch (r->where) {
    case W_PENDING: rl_remove(&c->pending, r); break;
    case W_WAITING: rl_remove(&c->waiting, r); break;
    default: break;
    }
    r->where = W_NONE;
    if (!r->internal || r->kind == RK_PREPARE)
        live_remove(c, r);
}

static void req_complete(cql_client *c, req *r, int status, cql_result *res)
{
    req_detach(c, r);
    if (r->cb)
        r->cb(r->arg, status, status == 0 || status == CQL_ESERVER ? res : NULL);
    req_free(r);
}

/* ---- streams ---------------------------------------------------------- */

static int stream_alloc(cql_client *c)
{
    return c->n_free ? c->free_ids[--c->n_free] : -1;
}

static void stream_release(cql_client *c, int16_t id)
{
    c->slots[id] = NULL;
    c->free_ids[c->n_free++] = id;
}

static void streams_reset(cql_client *c)
{
    c->n_free = 0;
    /* Hand out low ids first (popped from the end). */
    for (uint32_t i = c->max_streams; i-- > 0;) {
        c->slots[i] = NULL;
        c->free_ids[c->n_free++] = (int16_t)i;
    }
}

/* ---- prepare cache ---------------------------------------------------- */

static uint32_t hash_str(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static prep_entry *prep_get(cql_client *c, const char *q, size_t qlen)
{
    uint32_t h = hash_str(q, qlen);
    prep_entry **b = &c->prep_tab[h % c->prep_buckets];
    for (prep_entry *e = *b; e; e = e->next)
        if (e->hash == h && e->qlen == qlen && !memcmp(e->query, q, qlen))
            return e;
    prep_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->query = malloc(qlen + 1))) {
        free(e);
        return NULL;
    }
    memcpy(e->query, q, qlen);
    e->query[qlen] = '\0';
    e->qlen = qlen;
    e->hash = h;
    e->next = *b;
    *b = e;
    return e;
}

static bool req_needs(const req *r, const prep_entry *e)
{
    if (r->kind == RK_EXECUTE)
        return r->prep == e;
    if (r->kind == RK_BATCH)
        for (size_t i = 0; i < r->n_parts; i++)
            if (r->parts[i].prep == e)
                return true;
    return false;
}

/*
 * Ends the PREPARE of e.  On success (status 0) the waiters that need
 * nothing else go back to pending.  On a server error or a timeout, the
 * waiters that need e fail with the same outcome (the statement cannot run);
 * with requeue (connection lost) they go back to pending to be retried.
 */
static void prepare_done(cql_client *c, prep_entry *e, int status, cql_result *res, bool requeue)
{
    if (status)
        e->state = P_NONE;
    req *next;
    for (req *r = c->waiting.head; r; r = next) {
        next = r->qnext;
        if (!req_needs(r, e))
            continue;
        if (status && !requeue) {
            req_complete(c, r, status, res);
            continue;
        }
        rl_remove(&c->waiting, r);
        rl_push(&c->pending, r, true);
        r->where = W_PENDING;
    }
}

/* ---- request construction (any thread) -------------------------------- */

static size_t values_bytes(const cql_value *v, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].ext && v[i].len > 0)
            total += (size_t)v[i].len;
    return total;
}

static int values_check(const cql_value *v, size_t n)
{
    if (n > UINT16_MAX || (n && !v))
        return CQL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (v[i].type == CQL_TYPE_INVALID || v[i].len < -2 ||
            (!v[i].ext && v[i].len > (int32_t)sizeof v[i].inl))
            return CQL_EINVAL;
    return 0;
}

/* Copies n values into dst, moving external bytes into the arena. */
static void values_copy(cql_value *dst, const cql_value *src, size_t n, char **arena)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        if (src[i].ext && src[i].len > 0) {
            memcpy(*arena, src[i].ext, (size_t)src[i].len);
            dst[i].ext = (const uint8_t *)*arena;
            *arena += src[i].len;
        }
    }
}

static uint16_t pick_consistency(const cql_client *c, const cql_query_opts *o)
{
    return o && o->consistency != CQL_CONSISTENCY_DEFAULT ? o->consistency : c->consistency;
}

static uint64_t pick_deadline(const cql_client *c, const cql_query_opts *o)
{
    uint32_t t = o && o->timeout_ms ? o->timeout_ms : c->request_timeout_ms;
    return now_ms() + t;
}

static int submit(cql_client *c, req *r)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return CQL_ECLOSED;
    }
    r->qnext = NULL;
    if (c->sub_tail)
        c->sub_tail->qnext = r;
    else
        c->sub_head = r;
    c->sub_tail = r;
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    /* eventfd writes only fail on counter overflow, which cannot happen
     * with increments of 1 drained every loop. */
    ssize_t w = write(c->evfd, &one, sizeof one);
    (void)w;
    return 0;
}

static int make_query_req(cql_client *c, int kind, const char *cql, const cql_value *values,
                          size_t n, const cql_query_opts *o, cql_result_cb cb, void *arg,
                          req **out)
{
    int rc;
    if (!c || !cql || !cb)
        return CQL_EINVAL;
    if ((rc = values_check(values, n)))
        return rc;
    uint16_t cl = pick_consistency(c, o);
    if (cl > CQL_LOCAL_ONE)
        return CQL_EINVAL;
    if (o && o->serial_consistency && o->serial_consistency != CQL_SERIAL &&
        o->serial_consistency != CQL_LOCAL_SERIAL)
        return CQL_EINVAL;
    size_t qlen = strlen(cql);
    size_t ps_len = o && o->paging_state ? o->paging_state_len : 0;
    if (qlen > INT32_MAX || ps_len > INT32_MAX)
        return CQL_EINVAL;
    req *r = calloc(1, sizeof *r);
    if (!r)
        return CQL_ENOMEM;
    r->arena = malloc(qlen + 1 + ps_len + values_bytes(values, n));
    r->values = n ? calloc(n, sizeof *r->values) : NULL;
    if (!r->arena || (n && !r->values)) {
        req_free(r);
        return CQL_ENOMEM;
    }
    char *a = r->arena;
    memcpy(a, cql, qlen + 1);
    r->query = a;
    r->qlen = qlen;
    a += qlen + 1;
    values_copy(r->values, values, n, &a);
    r->n_values = n;
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->stream = -1;
    r->deadline = pick_deadline(c, o);
    cql_qparams_init(&r->params);
    r->params.consistency = cl;
    r->params.values = r->values;
    r->params.n_values = n;
    if (o) {
        r->params.page_size = o->page_size;
        r->params.serial_consistency = o->serial_consistency;
        r->params.timestamp_us = o->timestamp_us;
        if (o->paging_state) {
            memcpy(a, o->paging_state, ps_len);
            r->params.paging_state = (const uint8_t *)a;
            r->params.paging_state_len = ps_len;
        }
    }
    *out = r;
    return 0;
}

int cql_query(cql_client *c, const char *cql, const cql_value *values, size_t n,
              const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    req *r;
    int rc = make_query_req(c, RK_QUERY, cql, values, n, opts, cb, arg, &r);
    if (rc)
        return rc;
    if ((rc = submit(c, r)))
        req_free(r);
    return rc;
}

int cql_execute(cql_client *c, const char *cql, const cql_value *values, size_t n,
                const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    req *r;
    int rc = make_query_req(c, RK_EXECUTE, cql, values, n, opts, cb, arg, &r);
    if (rc)
        return rc;
    if ((rc = submit(c, r)))
        req_free(r);
    return rc;
}

int cql_batch(cql_client *c, enum cql_batch_type type, const cql_batch_stmt *stmts, size_t n,
              const cql_query_opts *o, cql_result_cb cb, void *arg)
{
    int rc;
    if (!c || !cb || (unsigned)type > CQL_BATCH_COUNTER || n == 0 || n > UINT16_MAX || !stmts)
        return CQL_EINVAL;
    uint16_t cl = pick_consistency(c, o);
    if (cl > CQL_LOCAL_ONE)
        return CQL_EINVAL;
    if (o && o->serial_consistency && o->serial_consistency != CQL_SERIAL &&
        o->serial_consistency != CQL_LOCAL_SERIAL)
        return CQL_EINVAL;
    size_t bytes = 0, nvals = 0;
    for (size_t i = 0; i < n; i++) {
        if (!stmts[i].cql || (rc = values_check(stmts[i].values, stmts[i].n_values)))
            return stmts[i].cql ? rc : CQL_EINVAL;
        size_t ql = strlen(stmts[i].cql);
        if (ql > INT32_MAX)
            return CQL_EINVAL;
        bytes += ql + 1 + values_bytes(stmts[i].values, stmts[i].n_values);
        nvals += stmts[i].n_values;
    }
    req *r = calloc(1, sizeof *r);
    if (!r)
        return CQL_ENOMEM;
    r->arena = malloc(bytes);
    r->parts = calloc(n, sizeof *r->parts);
    r->values = nvals ? calloc(nvals, sizeof *r->values) : NULL;
    if (!r->arena || !r->parts || (nvals && !r->values)) {
        req_free(r);
        return CQL_ENOMEM;
    }
    char *a = r->arena;
    cql_value *v = r->values;
    for (size_t i = 0; i < n; i++) {
        batch_part *p = &r->parts[i];
        size_t ql = strlen(stmts[i].cql);
        memcpy(a, stmts[i].cql, ql + 1);
        p->query = a;
        p->qlen = ql;
        a += ql + 1;
        values_copy(v, stmts[i].values, stmts[i].n_values, &a);
        p->values = v;
        p->n_values = stmts[i].n_values;
        v += stmts[i].n_values;
        p->prepared = stmts[i].prepared != 0;
    }
    r->n_parts = n;
    r->kind = RK_BATCH;
    r->batch_type = (uint8_t)type;
    r->cb = cb;
    r->arg = arg;
    r->stream = -1;
    r->deadline = pick_deadline(c, o);
    cql_qparams_init(&r->params);
    r->params.consistency = cl;
    if (o) {
        r->params.serial_consistency = o->serial_consistency;
        r->params.timestamp_us = o->timestamp_us;
    }
    if ((rc = submit(c, r)))
        req_free(r);
    return rc;
}

/* ---- connection ------------------------------------------------------- */

static void conn_fail(cql_client *c, const char *why);

static void epoll_update(cql_client *c)
{
    if (c->fd < 0)
        return;
    struct epoll_event ev = {0};
    ev.data.fd = c->fd;
    ev.events = EPOLLIN | EPOLLRDHUP;
    if (c->state == C_CONNECTING || c->out.len > c->out_off)
        ev.events |= EPOLLOUT;
    epoll_ctl(c->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static uint32_t backoff_ms(cql_client *c)
{
    unsigned shift = c->attempt < 20 ? c->attempt : 20;
    uint64_t d = (uint64_t)c->backoff_base_ms << shift;
    if (d > c->backoff_max_ms)
        d = c->backoff_max_ms;
    /* "Equal jitter": half fixed, half random, so that many clients that
     * lost the same server do not reconnect in lock-step. */
    c->rng = c->rng * 1103515245u + 12345u;
    uint64_t half = d / 2;
    return (uint32_t)(half + (half ? (c->rng >> 8) % (half + 1) : 0));
}

/* Fails every pending and waiting request (used when the client is down). */
static void fail_queued(cql_client *c, int status)
{
    while (c->waiting.head)
        req_complete(c, c->waiting.head, status, NULL);
    while (c->pending.head) {
        req *r = c->pending.head;
        if (r->internal) { /* an internal PREPARE not yet sent */
            prep_entry *e = r->prep;
            req_detach(c, r);
            req_free(r);
            if (e)
                e->state = P_NONE;
            continue;
        }
        req_complete(c, r, status, NULL);
    }
}

/*
 * Closes the connection.  In-flight user requests fail with CQL_ECONN
 * (they may or may not have been executed); in-flight PREPAREs are undone
 * and their waiters requeued (nothing was executed for them).  Schedules a
 * reconnect with back-off.
 */
static void conn_fail(cql_client *c, const char *why)
{
    bool was_ready = c->state == C_READY;
    if (c->fd >= 0) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
    if (why)
        set_last_error(c, "%s:%s: %s", c->hosts[c->host_idx], c->ports[c->host_idx], why);
    c->out.len = 0;
    c->out_off = 0;
    c->in_len = 0;
    for (uint32_t i = 0; i < c->max_streams; i++) {
        req *r = c->slots[i];
        if (!r || r == ORPHAN)
            continue;
        c->slots[i] = NULL;
        r->where = W_NONE;
        if (r->kind == RK_PREPARE) {
            prep_entry *e = r->prep;
            req_detach(c, r);
            req_free(r);
            prepare_done(c, e, CQL_ECONN, NULL, true);
        } else if (r->internal) {
            req_free(r); /* STARTUP / USE */
        } else {
            req_complete(c, r, CQL_ECONN, NULL);
        }
    }
    streams_reset(c);
    c->state = C_DOWN;
    if (was_ready) {
        c->attempt = 0;
    } else {
        c->attempt++;
        c->failures_in_round++;
        c->host_idx = (c->host_idx + 1) % c->nhosts;
    }
    c->conn_deadline = now_ms() + (was_ready ? 0 : backoff_ms(c));
    if (!was_ready && c->failures_in_round >= c->nhosts) {
        /* Every contact point failed since the last success: fail fast
         * instead of letting requests wait for their timeouts. */
        c->down = true;
        fail_queued(c, CQL_ENOHOST);
        set_ready_state(c, -1);
    } else {
        set_ready_state(c, c->down ? -1 : 0);
    }
}

static int send_internal(cql_client *c, int kind)
{
    int id = stream_alloc(c);
    if (id < 0)
        return CQL_EINVAL;
    req *r = calloc(1, sizeof *r);
    if (!r) {
        stream_release(c, (int16_t)id);
        return CQL_ENOMEM;
    }
    r->kind = kind;
    r->internal = true;
    r->stream = (int16_t)id;
    r->where = W_INFLIGHT;
    int rc;
    if (kind == RK_STARTUP) {
        rc = cql_build_startup(&c->out, (int16_t)id);
    } else {
        char q[300];
        int k = snprintf(q, sizeof q, "USE %s", c->keyspace);
        cql_qparams p;
        cql_qparams_init(&p);
        rc = cql_build_query(&c->out, (int16_t)id, q, (size_t)k, &p);
    }
    if (rc) {
        stream_release(c, (int16_t)id);
        free(r);
        return rc;
    }
    c->slots[id] = r;
    return 0;
}

static void conn_ready(cql_client *c)
{
    c->state = C_READY;
    c->attempt = 0;
    c->failures_in_round = 0;
    c->down = false;
    set_ready_state(c, 1);
}

static void on_connected(cql_client *c)
{
    int rc = send_internal(c, RK_STARTUP);
    if (rc) {
        conn_fail(c, cql_strerror(rc));
        return;
    }
    c->state = C_STARTUP;
    epoll_update(c);
}

static void conn_start(cql_client *c)
{
    const char *host = c->hosts[c->host_idx], *port = c->ports[c->host_idx];
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    /* Blocking resolution on the I/O thread: acceptable for contact points
     * given as addresses or local names; see the TODO at the top for the
     * multi-node design, which would resolve once. */
    int g = getaddrinfo(host, port, &hints, &ai);
    if (g != 0 || !ai) {
        char why[200];
        snprintf(why, sizeof why, "resolve: %s", gai_strerror(g));
        c->state = C_CONNECTING;
        conn_fail(c, why);
        return;
    }
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        freeaddrinfo(ai);
        c->state = C_CONNECTING;
        conn_fail(c, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = errno;
    freeaddrinfo(ai);
    c->fd = fd;
    c->state = C_CONNECTING;
    c->conn_deadline = now_ms() + c->connect_timeout_ms;
    struct epoll_event ev = {0};
    ev.data.fd = fd;
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        conn_fail(c, strerror(errno));
        return;
    }
    if (r == 0) {
        on_connected(c);
    } else if (err != EINPROGRESS) {
        char why[200];
        snprintf(why, sizeof why, "connect: %s", strerror(err));
        conn_fail(c, why);
    }
}

static void conn_flush(cql_client *c)
{
    while (c->fd >= 0 && c->out_off < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            char why[200];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            conn_fail(c, why);
            return;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out.len) {
        c->out.len = 0;
        c->out_off = 0;
    } else if (c->out_off > c->out.len / 2) {
        memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
}

/* ---- sending ---------------------------------------------------------- */

static int build_frame(cql_client *c, req *r)
{
    switch (r->kind) {
    case RK_QUERY:
        return cql_build_query(&c->out, r->stream, r->query, r->qlen, &r->params);
    case RK_EXECUTE:
        return cql_build_execute(&c->out, r->stream, r->prep->id, r->prep->idlen, &r->params);
    case RK_PREPARE:
        return cql_build_prepare(&c->out, r->stream, r->prep->query, r->prep->qlen);
    case RK_BATCH: {
        cql_batch_item *items = calloc(r->n_parts, sizeof *items);
        if (!items)
            return CQL_ENOMEM;
        for (size_t i = 0; i < r->n_parts; i++) {
            const batch_part *p = &r->parts[i];
            items[i].prepared = p->prepared;
            items[i].query = p->query;
            items[i].query_len = p->qlen;
            if (p->prepared) {
                items[i].id = p->prep->id;
                items[i].id_len = p->prep->idlen;
            }
            items[i].values = p->values;
            items[i].n_values = p->n_values;
        }
        int rc = cql_build_batch(&c->out, r->stream, r->batch_type, items, r->n_parts,
                                 r->params.consistency, r->params.serial_consistency,
                                 r->params.timestamp_us);
        free(items);
        return rc;
    }
    default:
        return CQL_EINVAL;
    }
}

static req *make_prepare_req(cql_client *c, prep_entry *e)
{
    req *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->kind = RK_PREPARE;
    p->internal = true;
    p->prep = e;
    p->stream = -1;
    p->deadline = now_ms() + c->request_timeout_ms;
    live_add(c, p);
    return p;
}

/*
 * Makes sure every statement r executes is prepared.  Returns 1 when r can
 * be sent now, 0 when it must wait (PREPAREs queued), < 0 on error.
 */
static int ensure_prepared(cql_client *c, req *r)
{
    int missing = 0;
    for (size_t i = 0; i < (r->kind == RK_BATCH ? r->n_parts : 1); i++) {
        prep_entry **slot;
        const char *q;
        size_t qlen;
        if (r->kind == RK_EXECUTE) {
            slot = &r->prep;
            q = r->query;
            qlen = r->qlen;
        } else if (r->kind == RK_BATCH && r->parts[i].prepared) {
            slot = &r->parts[i].prep;
            q = r->parts[i].query;
            qlen = r->parts[i].qlen;
        } else {
            continue;
        }
        if (!*slot && !(*slot = prep_get(c, q, qlen)))
            return CQL_ENOMEM;
        prep_entry *e = *slot;
        if (e->state == P_READY)
            continue;
        missing++;
        if (e->state == P_NONE) {
            req *p = make_prepare_req(c, e);
            if (!p)
                return CQL_ENOMEM;
            e->state = P_PREPARING;
            rl_push(&c->pending, p, true);
            p->where = W_PENDING;
        }
    }
    return missing ? 0 : 1;
}

static void dispatch(cql_client *c)
{
    while (c->state == C_READY && c->pending.head && c->n_free &&
           c->out.len - c->out_off < OUT_HIGH_WATER) {
        req *r = c->pending.head;
        if (r->kind == RK_EXECUTE || r->kind == RK_BATCH) {
            int ok = ensure_prepared(c, r);
            if (ok < 0) {
                req_complete(c, r, ok, NULL);
                continue;
            }
            if (ok == 0) {
                rl_remove(&c->pending, r);
                rl_push(&c->waiting, r, false);
                r->where = W_WAITING;
                continue;
            }
        }
        rl_remove(&c->pending, r);
        r->stream = (int16_t)stream_alloc(c);
        int rc = build_frame(c, r);
        if (rc) {
            stream_release(c, r->stream);
            r->where = W_NONE;
            if (r->kind == RK_PREPARE) {
                prep_entry *e = r->prep;
                req_detach(c, r);
                req_free(r);
                prepare_done(c, e, rc, NULL, false);
            } else {
                req_complete(c, r, rc, NULL);
            }
            continue;
        }
        c->slots[r->stream] = r;
        r->where = W_INFLIGHT;
    }
    conn_flush(c);
    epoll_update(c);
}

/* ---- receiving -------------------------------------------------------- */

static void on_response(cql_client *c, const cql_header *h, const uint8_t *body)
{
    if (h->stream < 0)
        return; /* EVENT: we never REGISTER, so just ignore server pushes */
    if ((uint32_t)h->stream >= c->max_streams || !c->slots[h->stream]) {
        conn_fail(c, "response on a stream id with no request");
        return;
    }
    req *r = c->slots[h->stream];
    stream_release(c, h->stream);
    if (r == ORPHAN)
        return; /* answer to a request that already timed out */
    r->where = W_NONE;

    cql_result *res = NULL;
    int rc = cql_result_parse(h, body, h->length, false, &res);
    const cql_error *err = rc ? NULL : cql_result_error(res);
    char msg[512];

    switch (r->kind) {
    case RK_STARTUP:
    case RK_USE: {
        bool ok = !rc && (r->kind == RK_STARTUP ? h->opcode == CQL_OP_READY
                                                : cql_result_kind(res) == CQL_RESULT_SET_KEYSPACE);
        int kind = r->kind;
        req_free(r);
        if (ok && kind == RK_STARTUP && c->keyspace) {
            int brc = send_internal(c, RK_USE);
            if (brc) {
                conn_fail(c, cql_strerror(brc));
            } else {
                c->state = C_USE;
                c->conn_deadline = now_ms() + c->connect_timeout_ms;
            }
        } else if (ok) {
            conn_ready(c);
        } else {
            if (err)
                cql_error_format(err, msg, sizeof msg);
            else if (!rc && h->opcode == CQL_OP_AUTHENTICATE)
                snprintf(msg, sizeof msg, "server requires authentication (unsupported)");
            else
                snprintf(msg, sizeof msg, "handshake failed: %s",
                         rc ? cql_strerror(rc) : "unexpected response");
            conn_fail(c, msg);
        }
        break;
    }
    case RK_PREPARE: {
        prep_entry *e = r->prep;
        req_detach(c, r);
        req_free(r);
        const uint8_t *id;
        size_t idlen;
        if (!rc && cql_result_prepared_id(res, &id, &idlen) == 0) {
            uint8_t *copy = malloc(idlen);
            if (!copy) {
                prepare_done(c, e, CQL_ENOMEM, NULL, false);
                break;
            }
            memcpy(copy, id, idlen);
            free(e->id);
            e->id = copy;
            e->idlen = idlen;
            e->state = P_READY;
            prepare_done(c, e, 0, NULL, false);
        } else {
            prepare_done(c, e, rc ? rc : err ? CQL_ESERVER : CQL_EPROTO, res, false);
        }
        break;
    }
    default:
        if (err && err->code == CQL_UNPREPARED && !r->reprepared &&
            (r->kind == RK_EXECUTE || r->kind == RK_BATCH)) {
            /* The node forgot the statement (restart, cache eviction):
             * prepare again and resend, once. */
            for (size_t i = 0; i < (r->kind == RK_BATCH ? r->n_parts : 1); i++) {
                prep_entry *e = r->kind == RK_BATCH ? r->parts[i].prep : r->prep;
                if (e && e->state == P_READY && e->idlen == err->unprepared_id_len &&
                    !memcmp(e->id, err->unprepared_id, e->idlen))
                    e->state = P_NONE;
            }
            r->reprepared = true;
            rl_push(&c->pending, r, true);
            r->where = W_PENDING;
            break;
        }
        req_complete(c, r, rc ? rc : err ? CQL_ESERVER : 0, res);
        break;
    }
    cql_result_free(res);
}

static void conn_read(cql_client *c)
{
    for (;;) {
        size_t limit = (size_t)CQL_HEADER_LEN + c->max_frame_body + READ_CHUNK;
        if (c->in_cap - c->in_len < READ_CHUNK) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 4 * READ_CHUNK;
            if (cap > limit)
                cap = limit;
            if (cap <= c->in_cap) {
                conn_fail(c, "input buffer limit");
                return;
            }
            uint8_t *n = realloc(c->in, cap);
            if (!n) {
                conn_fail(c, "out of memory");
                return;
            }
            c->in = n;
            c->in_cap = cap;
        }
        ssize_t n = recv(c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            char why[200];
            snprintf(why, sizeof why, "recv: %s", strerror(errno));
            conn_fail(c, why);
            return;
        }
        if (n == 0) {
            conn_fail(c, "connection closed by server");
            return;
        }
        c->in_len += (size_t)n;
        size_t pos = 0;
        int fd = c->fd;
        while (c->fd == fd && c->in_len - pos >= CQL_HEADER_LEN) {
            cql_header h;
            int rc = cql_header_decode(c->in + pos, c->in_len - pos, c->max_frame_body, true, &h);
            if (rc) {
                char why[200];
                snprintf(why, sizeof why, "bad frame header: %s", cql_strerror(rc));
                conn_fail(c, why);
                return;
            }
            if (c->in_len - pos - CQL_HEADER_LEN < h.length)
                break;
            on_response(c, &h, c->in + pos + CQL_HEADER_LEN);
            pos += CQL_HEADER_LEN + h.length;
        }
        if (c->fd != fd)
            return; /* the connection was closed while handling a frame */
        memmove(c->in, c->in + pos, c->in_len - pos);
        c->in_len -= pos;
    }
}

/* ---- the loop --------------------------------------------------------- */

static void scan_timeouts(cql_client *c, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    req *nx;
    for (req *r = c->live_head; r; r = nx) {
        nx = r->lnext;
        if (r->deadline > now) {
            if (r->deadline < next)
                next = r->deadline;
            continue;
        }
        if (r->where == W_INFLIGHT)
            c->slots[r->stream] = ORPHAN;
        if (r->kind == RK_PREPARE) {
            prep_entry *e = r->prep;
            req_detach(c, r);
            req_free(r);
            prepare_done(c, e, CQL_ETIMEDOUT, NULL, false);
            nx = c->live_head; /* prepare_done may have freed nx: restart */
            next = UINT64_MAX;
            continue;
        }
        req_complete(c, r, CQL_ETIMEDOUT, NULL);
    }
    c->next_scan = next;
}

static void take_submissions(cql_client *c, bool *closing)
{
    pthread_mutex_lock(&c->mu);
    req *r = c->sub_head;
    c->sub_head = c->sub_tail = NULL;
    *closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    while (r) {
        req *next = r->qnext;
        live_add(c, r);
        rl_push(&c->pending, r, false);
        r->where = W_PENDING;
        if (c->down && c->state != C_READY)
            req_complete(c, r, CQL_ENOHOST, NULL);
        r = next;
    }
}

static void *io_main(void *arg)
{
    cql_client *c = arg;
    bool closing = false;
    c->conn_deadline = 0; /* connect at once */
    for (;;) {
        take_submissions(c, &closing);
        if (closing)
            break;
        uint64_t now = now_ms();
        if (c->state == C_DOWN && now >= c->conn_deadline)
            conn_start(c);
        else if (c->state != C_DOWN && c->state != C_READY && now >= c->conn_deadline)
            conn_fail(c, c->state == C_CONNECTING ? "connect timed out" : "handshake timed out");
        if (now >= c->next_scan)
            scan_timeouts(c, now);
        dispatch(c);

        now = now_ms();
        uint64_t wake = c->next_scan;
        if (c->state != C_READY && c->conn_deadline < wake)
            wake = c->conn_deadline;
        int timeout = wake <= now ? 0 : wake - now > 1000 ? 1000 : (int)(wake - now);
        struct epoll_event evs[8];
        int n = epoll_wait(c->epfd, evs, 8, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.fd == c->evfd) {
                uint64_t v;
                ssize_t rd = read(c->evfd, &v, sizeof v);
                (void)rd;
                continue;
            }
            if (evs[i].data.fd != c->fd || c->fd < 0)
                continue;
            uint32_t e = evs[i].events;
            if (c->state == C_CONNECTING) {
                if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
                    int err = 0;
                    socklen_t len = sizeof err;
                    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                    if (err) {
                        char why[200];
                        snprintf(why, sizeof why, "connect: %s", strerror(err));
                        conn_fail(c, why);
                    } else {
                        on_connected(c);
                    }
                }
                continue;
            }
            if (e & EPOLLIN)
                conn_read(c);
            if (c->fd >= 0 && (e & EPOLLOUT))
                conn_flush(c);
            if (c->fd >= 0 && (e & (EPOLLERR | EPOLLHUP)))
                conn_fail(c, "socket error");
        }
    }
    /* Shutdown: fail everything still owned by the thread. */
    for (uint32_t i = 0; c->slots && i < c->max_streams; i++) {
        req *r = c->slots[i];
        if (r && r != ORPHAN) {
            c->slots[i] = NULL;
            r->where = W_NONE;
            if (r->internal && r->kind != RK_PREPARE) {
                req_free(r);
            } else {
                req_complete(c, r, CQL_ECLOSED, NULL);
            }
        }
    }
    while (c->waiting.head)
        req_complete(c, c->waiting.head, CQL_ECLOSED, NULL);
    while (c->pending.head)
        req_complete(c, c->pending.head, CQL_ECLOSED, NULL);
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

static int parse_contact(const char *s, char **host, char **port)
{
    const char *colon = strrchr(s, ':');
    const char *hb = s, *he;
    const char *p = "9042";
    if (s[0] == '[') { /* [v6]:port */
        const char *close_b = strchr(s, ']');
        if (!close_b)
            return CQL_EINVAL;
        hb = s + 1;
        he = close_b;
        if (close_b[1] == ':')
            p = close_b + 2;
        else if (close_b[1])
            return CQL_EINVAL;
    } else if (colon && strchr(s, ':') == colon) {
        he = colon;
        p = colon + 1;
    } else {
        he = s + strlen(s); /* no port, or a bare IPv6 address */
    }
    if (he == hb || !*p)
        return CQL_EINVAL;
    *host = strndup(hb, (size_t)(he - hb));
    *port = strdup(p);
    if (!*host || !*port) {
        free(*host);
        free(*port);
        return CQL_ENOMEM;
    }
    return 0;
}

static void client_free(cql_client *c)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        free(c->hosts[i]);
        free(c->ports[i]);
    }
    free(c->hosts);
    free(c->ports);
    free(c->keyspace);
    if (c->prep_tab) {
        for (size_t i = 0; i < c->prep_buckets; i++) {
            prep_entry *e = c->prep_tab[i], *n;
            for (; e; e = n) {
                n = e->next;
                free(e->query);
                free(e->id);
                free(e);
            }
        }
        free(c->prep_tab);
    }
    free(c->slots);
    free(c->free_ids);
    free(c->in);
    cql_buf_free(&c->out);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->evfd >= 0)
        close(c->evfd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static bool keyspace_ok(const char *ks)
{
    /* USE is sent verbatim: allow identifiers and quoted identifiers only,
     * so the option cannot smuggle in another statement. */
    size_t n = strlen(ks);
    if (n == 0 || n > 250)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = ks[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '"'))
            return false;
    }
    return true;
}

int cql_client_new(cql_client **out, const cql_client_opts *o)
{
    if (!out || !o || !o->n_contact_points || !o->contact_points || o->max_streams == 0 ||
        o->max_streams > CQL_MAX_STREAMS || o->consistency > CQL_LOCAL_ONE ||
        o->max_frame_body < 1024 || o->max_frame_body > INT32_MAX ||
        (o->keyspace && !keyspace_ok(o->keyspace)))
        return CQL_EINVAL;
    *out = NULL;
    cql_client *c = calloc(1, sizeof *c);
    if (!c)
        return CQL_ENOMEM;
    c->epfd = c->evfd = c->fd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    cql_buf_init(&c->out);
    c->consistency = o->consistency;
    c->request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 12000;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    c->backoff_base_ms = o->reconnect_base_ms ? o->reconnect_base_ms : 100;
    c->backoff_max_ms = o->reconnect_max_ms ? o->reconnect_max_ms : 10000;
    c->max_frame_body = o->max_frame_body;
    c->max_streams = o->max_streams;
    c->next_scan = UINT64_MAX;
    c->rng = (uint32_t)now_ms() ^ (uint32_t)(uintptr_t)c;
    c->prep_buckets = 256;
    int rc = CQL_ENOMEM;
    c->hosts = calloc(o->n_contact_points, sizeof *c->hosts);
    c->ports = calloc(o->n_contact_points, sizeof *c->ports);
    c->slots = calloc(c->max_streams, sizeof *c->slots);
    c->free_ids = calloc(c->max_streams, sizeof *c->free_ids);
    c->prep_tab = calloc(c->prep_buckets, sizeof *c->prep_tab);
    if (!c->hosts || !c->ports || !c->slots || !c->free_ids || !c->prep_tab)
        goto fail;
    if (o->keyspace && !(c->keyspace = strdup(o->keyspace)))
        goto fail;
    for (size_t i = 0; i < o->n_contact_points; i++) {
        if (!o->contact_points[i]) {
            rc = CQL_EINVAL;
            goto fail;
        }
        if ((rc = parse_contact(o->contact_points[i], &c->hosts[i], &c->ports[i])))
            goto fail;
        c->nhosts++;
    }
    streams_reset(c);
    rc = CQL_ESYS;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0)
        goto fail;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.fd = c->evfd;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) < 0)
        goto fail;
    if (pthread_create(&c->thread, NULL, io_main, c) != 0)
        goto fail;
    *out = c;
    return 0;
fail:
    client_free(c);
    return rc;
}

int cql_client_wait_ready(cql_client *c, uint32_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    while (c->ready_state == 0 && !c->closing)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    if (c->closing)
        rc = CQL_ECLOSED;
    else if (c->ready_state == 1)
        rc = 0;
    else if (c->ready_state < 0)
        rc = CQL_ENOHOST;
    else
        rc = CQL_ETIMEDOUT;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int cql_client_last_error(cql_client *c, char *buf, size_t size)
{
    pthread_mutex_lock(&c->mu);
    int n = snprintf(buf, size, "%s", c->last_error);
    pthread_mutex_unlock(&c->mu);
    return n;
}

int cql_client_close(cql_client *c)
{
    if (!c)
        return CQL_EINVAL;
    if (pthread_equal(pthread_self(), c->thread))
        return CQL_EINVAL;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    ssize_t w = write(c->evfd, &one, sizeof one);
    (void)w;
    pthread_join(c->thread, NULL);
    /* Requests submitted between the thread's last look at the queue and
     * `closing` being set: fail them here (no thread is left to do it). */
    req *r = c->sub_head;
    while (r) {
        req *next = r->qnext;
        r->cb(r->arg, CQL_ECLOSED, NULL);
        req_free(r);
        r = next;
    }
    c->sub_head = c->sub_tail = NULL;
    client_free(c);
    return 0;
}
