/*
 * cql_client.c - asynchronous, pipelined, token-aware connection layer.
 *
 * Design
 *   One client = one I/O thread = one connection per known node ("host").
 *   Hosts are the contact points plus, unless disable_discovery, the nodes
 *   that system.local / system.peers(_v2) list; each host has its own
 *   connection with its own stream ids (up to max_streams in flight) and
 *   its own reconnect back-off.  User threads only touch the submit queue
 *   (under `mu`) and wake the thread through an eventfd; everything else
 *   (hosts, connections, stream tables, ring, prepare cache, queues) is
 *   owned by the I/O thread and needs no lock.  Callbacks run on the I/O
 *   thread with no lock held, so they may submit new requests.
 *
 * Routing
 *   A prepared statement whose partition key columns are all bound (the
 *   PREPARED metadata lists their bind-marker indexes) has a routing key,
 *   hence a Murmur3 token; when the ring has more than one node the request
 *   goes to the token's owner, else to the next replicas (SimpleStrategy
 *   order: the next distinct owners clockwise), else to any ready host.
 *   Everything else (QUERY, statements without a key, one-node clusters)
 *   goes round-robin to the ready hosts.  A BATCH is routed by its first
 *   statement.
 *
 * Topology
 *   The first connection to become ready is the control connection: it
 *   REGISTERs for TOPOLOGY_CHANGE and STATUS_CHANGE events and reads
 *   system.local, then system.peers_v2 (system.peers when that table does
 *   not exist), at once, every topology_refresh_ms, shortly after a host
 *   reconnects and after a topology event.  Hosts are never freed before
 *   the client: one that leaves the ring is deactivated (connection closed,
 *   no reconnect), so host pointers and indexes stay valid for the ring,
 *   the prepare cache and the epoll tags.
 *
 * Request life cycle (each request is in exactly one place):
 *   submit queue -> pending -> [waiting for a PREPARE] -> a connection's
 *   queue -> in flight on that connection -> done
 *   Every user request, PREPARE and topology query also sits on the `live`
 *   list from the moment the I/O thread takes it until it completes; the
 *   timeout scan walks that list.  A request queued on a connection that
 *   fails goes back to pending and is routed again (it was never sent); one
 *   in flight fails with CQL_ECONN (it may have been executed).
 *
 * Prepared statements
 *   A node only knows the statements prepared on it.  The cache entry's id
 *   (an MD5 of the query, the same on every node) is learned by one PREPARE
 *   on any host, which is then repeated on every other ready host.  A node
 *   that still answers UNPREPARED (it restarted, joined later, or the two
 *   frames raced) gets a PREPARE of its own, and the request is resent to
 *   that same node, once.
 *
 * Invariants
 *   - A stream id is free only when no response can arrive for it: a
 *     timed-out request leaves an ORPHAN in its slot until the late response
 *     arrives or the connection closes, so a late answer is never delivered
 *     to the next user of the id.
 *   - A failed frame build leaves the output buffer unchanged (builders roll
 *     back), so each connection's byte stream consists of whole frames.
 *   - epoll events carry (host index, connection generation): an event for
 *     a socket closed earlier in the same epoll batch is recognised and
 *     dropped even if the descriptor number was reused.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cql_internal.h"

#include <arpa/inet.h>
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
#define MAX_REPLICAS 3          /* replicas tried, in ring order, before any host */
#define TOPO_RETRY_MS 2000      /* after a failed topology refresh */
#define TOPO_DEBOUNCE_MS 1000   /* after an event or a reconnect: let the node settle */
#define TOPO_REFRESH_DEFAULT_MS 60000

enum req_kind {
    RK_QUERY, RK_EXECUTE, RK_BATCH,                 /* user requests */
    RK_PREPARE, RK_TOPO_LOCAL, RK_TOPO_PEERS,       /* internal, with a deadline */
    RK_STARTUP, RK_USE, RK_REGISTER                 /* internal, connection set-up */
};
enum req_where { W_NONE, W_PENDING, W_WAITING, W_QUEUED, W_INFLIGHT };
enum prep_state { P_NONE, P_PREPARING, P_READY };
enum conn_state { C_DOWN, C_CONNECTING, C_STARTUP, C_USE, C_READY };
enum topo_state { T_IDLE, T_LOCAL, T_PEERS };

struct host;

typedef struct prep_entry {
    struct prep_entry *next; /* hash chain */
    uint32_t hash;
    int state;
    uint64_t seq;            /* P_PREPARING: the PREPARE that learns the id */
    char *query;
    size_t qlen;
    uint8_t *id;
    size_t idlen;
    uint16_t *pk;            /* bind indexes of the partition key columns */
    uint16_t npk;            /* 0: not routable */
    /* A PREPARE re-sent to one host after UNPREPARED, so that a burst of
     * UNPREPAREDs from that host shares it. */
    struct host *reprep_host;
    uint64_t reprep_seq;
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
    bool internal;           /* issued by the library, no callback */
    bool live;               /* on the live list */
    bool global;             /* PREPARE: learns the entry's id (vs one host) */
    bool peers_v2;           /* RK_TOPO_PEERS: which table */
    bool has_token;          /* token below computed */
    int64_t token;
    uint64_t seq;            /* PREPARE: its number; a waiting request: the
                                PREPARE it waits for */
    struct host *target;     /* PREPARE: the host it runs on (NULL = any);
                                user request: pinned host after a re-prepare */
    struct conn *conn;       /* W_QUEUED, W_INFLIGHT */
    const char *query;       /* QUERY/EXECUTE text (in arena) */
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
    struct req *qprev, *qnext; /* pending, waiting or connection queue */
    struct req *lprev, *lnext; /* live list */
} req;

typedef struct rlist {
    req *head, *tail;
} rlist;

typedef struct conn {
    struct host *h;
    int fd;
    int state;
    uint32_t gen;            /* bumped by every connection attempt */
    uint64_t deadline;       /* connect / handshake deadline */
    cql_buf out;
    size_t out_off;
    uint8_t *in;
    size_t in_len, in_cap;
    req **slots;             /* max_streams entries, allocated at first use */
    int16_t *free_ids;
    size_t n_free;
    size_t n_orphans;        /* slots held by timed-out requests (see scan_timeouts) */
    rlist queue;             /* routed here, not yet sent */
} conn;

typedef struct host {
    uint32_t idx;            /* position in c->hosts, the ring's owner id */
    char *name, *port;       /* contact point as given, or numeric address */
    char label[80];          /* "name:port" for messages */
    struct sockaddr_storage sa;
    socklen_t salen;         /* 0 until resolved */
    char dc[64];
    bool contact;            /* from cql_client_opts */
    bool in_ring;            /* listed by the last topology refresh */
    bool active;             /* we keep a connection to it */
    bool failed;             /* the last connection attempt failed */
    bool ever_ready;         /* a later READY is a reconnect */
    bool seen;               /* scratch for topology refreshes */
    unsigned attempt;        /* consecutive failures, for back-off */
    uint64_t retry_at;       /* C_DOWN: next connection attempt */
    uint32_t n_tokens;
    uint64_t requests;       /* user requests sent */
    conn cn;
} host;

/* A row of system.local / system.peers being collected. */
typedef struct topo_entry {
    host *h;                 /* the control host for system.local */
    struct sockaddr_storage sa;
    socklen_t salen;
    char dc[64];
    int64_t *tokens;
    size_t n_tokens;         /* count, even when not parsed (not Murmur3) */
} topo_entry;

struct cql_client {
    /* immutable after cql_client_new */
    char *keyspace;
    uint16_t consistency;
    uint32_t request_timeout_ms, connect_timeout_ms, backoff_base_ms, backoff_max_ms;
    uint32_t max_frame_body, max_streams, refresh_ms;
    bool discovery, token_routing;
    pthread_t thread;
    int epfd, evfd;

    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    req *sub_head, *sub_tail;
    bool closing;
    int ready_state;         /* 1 ready, 0 connecting, -1 down */
    char last_error[256];
    cql_host_info *pub;      /* snapshot for cql_client_hosts() */
    size_t pub_n, pub_cap;
    uint64_t pub_version;

    /* I/O thread only */
    host **hosts;            /* never shrinks: see "Topology" above */
    size_t nhosts, hosts_cap;
    size_t n_ready;          /* hosts whose connection is C_READY */
    size_t rr;               /* round-robin cursor */
    bool down;               /* every active host failed, none is ready */
    bool pub_dirty;
    uint32_t rng;
    rlist pending, waiting;
    req *live_head;
    uint64_t next_scan;
    prep_entry **prep_tab;
    size_t prep_buckets;
    uint64_t prep_seq;
    cql_buf keybuf;          /* routing key scratch */
    /* topology */
    cql_ring ring;
    host *control;
    int topo_state;
    uint64_t next_refresh;
    uint64_t topo_version;
    bool peers_v2_missing;   /* Cassandra < 4: use system.peers */
    bool murmur3;            /* partitioner of the last system.local */
    topo_entry *topo;
    size_t topo_n, topo_cap;
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
    o->disable_discovery = 0;
    o->disable_token_routing = 0;
    o->topology_refresh_ms = TOPO_REFRESH_DEFAULT_MS;
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
    r->live = true;
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
    if (!r->live)
        return;
    if (r->lprev) r->lprev->lnext = r->lnext; else c->live_head = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    r->lprev = r->lnext = NULL;
    r->live = false;
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
    if (c->ready_state != s) {
        c->ready_state = s;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Removes r from wherever it is (it keeps its stream slot, if any: the
 * caller deals with that). */
static void req_detach(cql_client *c, req *r)
{
    switch (r->where) {
    case W_PENDING: rl_remove(&c->pending, r); break;
    case W_WAITING: rl_remove(&c->waiting, r); break;
    case W_QUEUED: rl_remove(&r->conn->queue, r); break;
    default: break;
    }
    r->where = W_NONE;
    r->conn = NULL;
    live_remove(c, r);
}

static void req_complete(cql_client *c, req *r, int status, cql_result *res)
{
    req_detach(c, r);
    if (r->cb)
        r->cb(r->arg, status, status == 0 || status == CQL_ESERVER ? res : NULL);
    req_free(r);
}

static void to_pending(cql_client *c, req *r, bool front)
{
    rl_push(&c->pending, r, front);
    r->where = W_PENDING;
}

static void to_queue(conn *cn, req *r, bool front)
{
    rl_push(&cn->queue, r, front);
    r->where = W_QUEUED;
    r->conn = cn;
}

/* ---- streams ---------------------------------------------------------- */

static int stream_alloc(conn *cn)
{
    return cn->n_free ? cn->free_ids[--cn->n_free] : -1;
}

static void stream_release(conn *cn, int16_t id)
{
    cn->slots[id] = NULL;
    cn->free_ids[cn->n_free++] = id;
}

static void streams_reset(cql_client *c, conn *cn)
{
    cn->n_free = 0;
    cn->n_orphans = 0;
    /* Hand out low ids first (popped from the end). */
    for (uint32_t i = c->max_streams; i-- > 0;) {
        cn->slots[i] = NULL;
        cn->free_ids[cn->n_free++] = (int16_t)i;
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

/* Records what a PREPARED result says about e: its id and, for routing,
 * the partition key's bind indexes.  Returns CQL_ENOMEM or 0. */
static int prep_learn(prep_entry *e, const cql_result *res)
{
    const uint8_t *id;
    size_t idlen;
    if (cql_result_prepared_id(res, &id, &idlen))
        return CQL_EPROTO;
    int32_t npk = cql_result_pk_count(res);
    if (npk < 0 || npk > UINT16_MAX)
        npk = 0;
    uint8_t *copy = malloc(idlen);
    uint16_t *pk = npk ? malloc((size_t)npk * sizeof *pk) : NULL;
    if (!copy || (npk && !pk)) {
        free(copy);
        free(pk);
        return CQL_ENOMEM;
    }
    memcpy(copy, id, idlen);
    for (int32_t i = 0; i < npk; i++)
        pk[i] = (uint16_t)cql_result_pk_index(res, i); /* checked by the parser */
    free(e->id);
    free(e->pk);
    e->id = copy;
    e->idlen = idlen;
    e->pk = pk;
    e->npk = (uint16_t)npk;
    return 0;
}

/*
 * Ends the PREPARE numbered seq, of entry e.  On success (status 0) the
 * requests waiting for it go back to the front of pending, in order.  On a
 * server error or a timeout they fail with the same outcome (the statement
 * cannot run); with requeue (the connection was lost, nothing ran) they go
 * back to pending unpinned, to be retried elsewhere.
 */
static void prepare_done(cql_client *c, prep_entry *e, uint64_t seq, bool global, int status,
                         cql_result *res, bool requeue)
{
    if (global && e->seq == seq) {
        e->seq = 0;
        if (status)
            e->state = P_NONE; /* the next use prepares again */
    }
    if (e->reprep_seq == seq) {
        e->reprep_seq = 0;
        e->reprep_host = NULL;
    }
    req *prev;
    /* From the tail, pushing to the front: keeps the waiters' order. */
    for (req *r = c->waiting.tail; r; r = prev) {
        prev = r->qprev;
        if (r->seq != seq)
            continue;
        r->seq = 0;
        if (status && !requeue) {
            req_complete(c, r, status, res);
            continue;
        }
        if (status)
            r->target = NULL;
        rl_remove(&c->waiting, r);
        to_pending(c, r, true);
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

/* QUERY and EXECUTE differ only in the request kind. */
static int submit_statement(cql_client *c, int kind, const char *cql, const cql_value *values, size_t n,
                            const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    req *r;
    int rc = make_query_req(c, kind, cql, values, n, opts, cb, arg, &r);
    if (rc)
        return rc;
    if ((rc = submit(c, r)))
        req_free(r);
    return rc;
}

int cql_query(cql_client *c, const char *cql, const cql_value *values, size_t n,
              const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    return submit_statement(c, RK_QUERY, cql, values, n, opts, cb, arg);
}

int cql_execute(cql_client *c, const char *cql, const cql_value *values, size_t n,
                const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    return submit_statement(c, RK_EXECUTE, cql, values, n, opts, cb, arg);
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

/* ---- hosts ------------------------------------------------------------ */

static void format_label(host *h)
{
    bool v6 = strchr(h->name, ':') != NULL;
    snprintf(h->label, sizeof h->label, v6 ? "[%s]:%s" : "%s:%s", h->name, h->port);
}

/* Appends a host (connection down, inactive).  Takes name and port. */
static host *host_add(cql_client *c, char *name, char *port)
{
    if (c->nhosts == c->hosts_cap) {
        size_t cap = c->hosts_cap ? c->hosts_cap * 2 : 8;
        host **n = realloc(c->hosts, cap * sizeof *n);
        if (!n)
            goto fail;
        c->hosts = n;
        c->hosts_cap = cap;
    }
    if (c->nhosts >= UINT32_MAX)
        goto fail;
    host *h = calloc(1, sizeof *h);
    if (!h)
        goto fail;
    h->idx = (uint32_t)c->nhosts;
    h->name = name;
    h->port = port;
    format_label(h);
    h->cn.h = h;
    h->cn.fd = -1;
    cql_buf_init(&h->cn.out);
    c->hosts[c->nhosts++] = h;
    c->pub_dirty = true;
    return h;
fail:
    free(name);
    free(port);
    return NULL;
}

static bool sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    return false;
}

static uint16_t sa_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

/* addr is 4 or 16 bytes as an inet value carries them. */
static void sa_make(struct sockaddr_storage *sa, socklen_t *len, const uint8_t *addr, size_t alen,
                    uint16_t port)
{
    memset(sa, 0, sizeof *sa);
    if (alen == 4) {
        struct sockaddr_in *s = (void *)sa;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, addr, 4);
        *len = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (void *)sa;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, addr, 16);
        *len = sizeof *s;
    }
}

static host *host_by_sa(cql_client *c, const struct sockaddr_storage *sa)
{
    for (size_t i = 0; i < c->nhosts; i++)
        if (c->hosts[i]->salen && sa_equal(&c->hosts[i]->sa, sa))
            return c->hosts[i];
    return NULL;
}

static bool host_ready(const host *h) { return h->active && h->cn.state == C_READY; }

/* Publishes the hosts for cql_client_hosts(): one short critical section,
 * taken only when something changed. */
static void publish(cql_client *c)
{
    c->pub_dirty = false;
    pthread_mutex_lock(&c->mu);
    if (c->pub_cap < c->nhosts) {
        cql_host_info *n = realloc(c->pub, c->nhosts * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&c->mu);
            c->pub_dirty = true; /* try again next time */
            return;
        }
        c->pub = n;
        c->pub_cap = c->nhosts;
    }
    for (size_t i = 0; i < c->nhosts; i++) {
        const host *h = c->hosts[i];
        cql_host_info *p = &c->pub[i];
        memset(p, 0, sizeof *p);
        snprintf(p->address, sizeof p->address, "%.*s", (int)sizeof p->address - 1, h->label);
        snprintf(p->datacenter, sizeof p->datacenter, "%s", h->dc);
        p->up = host_ready(h);
        p->in_ring = h->in_ring;
        p->contact_point = h->contact;
        p->tokens = h->n_tokens;
        p->requests = h->requests;
    }
    c->pub_n = c->nhosts;
    c->pub_version = c->topo_version;
    pthread_mutex_unlock(&c->mu);
}

/* ---- connection ------------------------------------------------------- */

static void conn_fail(cql_client *c, conn *cn, const char *why);
static void topo_fail(cql_client *c);
static void update_ready(cql_client *c);
static void control_pick(cql_client *c);
static int send_setup(cql_client *c, conn *cn, int kind);

static uint64_t epoll_tag(const conn *cn) { return ((uint64_t)cn->gen << 32) | (cn->h->idx + 1u); }

static void epoll_update(cql_client *c, conn *cn)
{
    if (cn->fd < 0)
        return;
    struct epoll_event ev = {0};
    ev.data.u64 = epoll_tag(cn);
    ev.events = EPOLLIN | EPOLLRDHUP;
    if (cn->state == C_CONNECTING || cn->out.len > cn->out_off)
        ev.events |= EPOLLOUT;
    epoll_ctl(c->epfd, EPOLL_CTL_MOD, cn->fd, &ev);
}

static uint32_t backoff_ms(cql_client *c, const host *h)
{
    unsigned shift = h->attempt < 20 ? h->attempt : 20;
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
    while (c->pending.head)
        req_complete(c, c->pending.head, status, NULL);
}

/*
 * Disposes of an internal request that will get no answer.  A PREPARE ends
 * with `status` (its waiters requeued when requeue, else failed), a
 * topology query ends the refresh, set-up requests are just freed.
 */
static void internal_drop(cql_client *c, req *r, int status, bool requeue)
{
    req_detach(c, r);
    if (r->kind == RK_PREPARE)
        prepare_done(c, r->prep, r->seq, r->global, status, NULL, requeue);
    else if (r->kind == RK_TOPO_LOCAL || r->kind == RK_TOPO_PEERS)
        topo_fail(c);
    req_free(r);
}

/*
 * Closes cn.  In-flight user requests fail with CQL_ECONN (they may or may
 * not have been executed); requests queued but not sent go back to pending
 * to be routed again; in-flight and queued PREPAREs are undone and their
 * waiters requeued (nothing was executed for them).  Schedules a reconnect
 * (at once if the connection was ready, else with back-off) unless the host
 * is inactive.
 */
static void conn_close(cql_client *c, conn *cn, const char *why, bool count_failure)
{
    host *h = cn->h;
    bool was_ready = cn->state == C_READY;
    if (cn->fd >= 0) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, cn->fd, NULL);
        close(cn->fd);
        cn->fd = -1;
    }
    if (why)
        set_last_error(c, "%s: %s", h->label, why);
    cn->state = C_DOWN;
    cn->out.len = 0;
    cn->out_off = 0;
    cn->in_len = 0;
    if (was_ready) {
        c->n_ready--;
        c->pub_dirty = true;
    }
    if (c->control == h) {
        c->control = NULL;
        /* the refresh's queries were on this connection: they are dropped
         * below; a new control connection restarts it */
    }
    /* Queued, never sent: user requests are routed again. */
    req *r;
    while ((r = cn->queue.tail)) {
        if (r->internal) {
            internal_drop(c, r, CQL_ECONN, true);
        } else {
            rl_remove(&cn->queue, r);
            r->conn = NULL;
            r->target = NULL;
            to_pending(c, r, true);
        }
    }
    for (uint32_t i = 0; cn->slots && i < c->max_streams; i++) {
        r = cn->slots[i];
        if (!r || r == ORPHAN)
            continue;
        cn->slots[i] = NULL;
        r->where = W_NONE;
        if (r->internal)
            internal_drop(c, r, CQL_ECONN, true);
        else
            req_complete(c, r, CQL_ECONN, NULL);
    }
    if (cn->slots)
        streams_reset(c, cn);
    if (was_ready || !count_failure) {
        h->attempt = 0;
        h->failed = false;
        h->retry_at = now_ms();
    } else {
        h->attempt++;
        h->failed = true;
        h->retry_at = now_ms() + backoff_ms(c, h);
    }
    control_pick(c); /* when this was the control connection */
    update_ready(c);
}

static void conn_fail(cql_client *c, conn *cn, const char *why) { conn_close(c, cn, why, true); }

/*
 * Recomputes the client's readiness.  "Down" means no host is ready and
 * every active host failed its last attempt since: requests then fail fast
 * with CQL_ENOHOST instead of waiting for their timeouts (a host that was
 * just lost gets one immediate reconnect before it counts as failed).
 */
static void update_ready(cql_client *c)
{
    if (c->n_ready > 0) {
        c->down = false;
        set_ready_state(c, 1);
        return;
    }
    bool any = false, all_failed = true;
    for (size_t i = 0; i < c->nhosts; i++) {
        if (!c->hosts[i]->active)
            continue;
        any = true;
        if (!c->hosts[i]->failed)
            all_failed = false;
    }
    if (any && all_failed)
        c->down = true;
    if (c->down)
        fail_queued(c, CQL_ENOHOST);
    set_ready_state(c, c->down ? -1 : 0);
}

/* Builds an internal set-up request straight into cn's output. */
static int send_setup(cql_client *c, conn *cn, int kind)
{
    int id = stream_alloc(cn);
    if (id < 0)
        return CQL_EINVAL;
    req *r = calloc(1, sizeof *r);
    if (!r) {
        stream_release(cn, (int16_t)id);
        return CQL_ENOMEM;
    }
    r->kind = kind;
    r->internal = true;
    r->stream = (int16_t)id;
    r->where = W_INFLIGHT;
    r->conn = cn;
    int rc;
    if (kind == RK_STARTUP) {
        rc = cql_build_startup(&cn->out, (int16_t)id);
    } else if (kind == RK_REGISTER) {
        static const char *const events[] = {"TOPOLOGY_CHANGE", "STATUS_CHANGE"};
        rc = cql_build_register(&cn->out, (int16_t)id, events, 2);
    } else {
        char q[300];
        int k = snprintf(q, sizeof q, "USE %s", c->keyspace);
        cql_qparams p;
        cql_qparams_init(&p);
        rc = cql_build_query(&cn->out, (int16_t)id, q, (size_t)k, &p);
    }
    if (rc) {
        stream_release(cn, (int16_t)id);
        free(r);
        return rc;
    }
    cn->slots[id] = r;
    epoll_update(c, cn);
    return 0;
}

/*
 * Makes a ready host the control connection, when there is none: it
 * REGISTERs for events (a failed REGISTER only costs the events) and
 * refreshes the topology at once.  Prefers hosts in the ring.
 */
static void control_pick(cql_client *c)
{
    if (!c->discovery || c->control)
        return;
    host *best = NULL;
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        if (host_ready(h) && (!best || (h->in_ring && !best->in_ring)))
            best = h;
    }
    if (!best)
        return;
    c->control = best;
    (void)send_setup(c, &best->cn, RK_REGISTER);
    if (c->topo_state == T_IDLE)
        c->next_refresh = now_ms();
}

static void conn_ready(cql_client *c, conn *cn)
{
    host *h = cn->h;
    bool reconnect = h->ever_ready;
    cn->state = C_READY;
    h->attempt = 0;
    h->failed = false;
    h->ever_ready = true;
    c->n_ready++;
    c->pub_dirty = true;
    update_ready(c);
    if (!c->discovery)
        return;
    if (!c->control) {
        control_pick(c);
    } else if (reconnect) {
        /* A node came back: its tokens or its peers may have changed. */
        uint64_t t = now_ms() + TOPO_DEBOUNCE_MS;
        if (t < c->next_refresh)
            c->next_refresh = t;
    }
}

static void on_connected(cql_client *c, conn *cn)
{
    int rc = send_setup(c, cn, RK_STARTUP);
    if (rc) {
        conn_fail(c, cn, cql_strerror(rc));
        return;
    }
    cn->state = C_STARTUP;
    epoll_update(c, cn);
}

static void conn_start(cql_client *c, host *h)
{
    conn *cn = &h->cn;
    char why[200];
    cn->gen++;
    if (!cn->slots) {
        cn->slots = calloc(c->max_streams, sizeof *cn->slots);
        cn->free_ids = calloc(c->max_streams, sizeof *cn->free_ids);
        if (!cn->slots || !cn->free_ids) {
            free(cn->slots);
            free(cn->free_ids);
            cn->slots = NULL;
            cn->free_ids = NULL;
            cn->state = C_CONNECTING;
            conn_fail(c, cn, "out of memory");
            return;
        }
        streams_reset(c, cn);
    }
    if (h->contact) {
        /* Contact points are names: resolve at every attempt, since the
         * name may move.  Blocking resolution on the I/O thread is
         * acceptable for addresses and local names; discovered hosts
         * come as addresses and never get here. */
        struct addrinfo hints = {0}, *ai = NULL;
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int g = getaddrinfo(h->name, h->port, &hints, &ai);
        if (g != 0 || !ai || ai->ai_addrlen > sizeof h->sa) {
            snprintf(why, sizeof why, "resolve: %s", g ? gai_strerror(g) : "no address");
            if (ai)
                freeaddrinfo(ai);
            cn->state = C_CONNECTING;
            conn_fail(c, cn, why);
            return;
        }
        memcpy(&h->sa, ai->ai_addr, ai->ai_addrlen);
        h->salen = ai->ai_addrlen;
        freeaddrinfo(ai);
    }
    int fd = socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cn->state = C_CONNECTING;
        conn_fail(c, cn, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (const struct sockaddr *)&h->sa, h->salen);
    int err = errno;
    cn->fd = fd;
    cn->state = C_CONNECTING;
    cn->deadline = now_ms() + c->connect_timeout_ms;
    struct epoll_event ev = {0};
    ev.data.u64 = epoll_tag(cn);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        conn_fail(c, cn, strerror(errno));
        return;
    }
    if (r == 0) {
        on_connected(c, cn);
    } else if (err != EINPROGRESS) {
        snprintf(why, sizeof why, "connect: %s", strerror(err));
        conn_fail(c, cn, why);
    }
}

static void conn_flush(cql_client *c, conn *cn)
{
    while (cn->fd >= 0 && cn->out_off < cn->out.len) {
        ssize_t n = send(cn->fd, cn->out.data + cn->out_off, cn->out.len - cn->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            char why[200];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            conn_fail(c, cn, why);
            return;
        }
        cn->out_off += (size_t)n;
    }
    if (cn->out_off == cn->out.len) {
        cn->out.len = 0;
        cn->out_off = 0;
    } else if (cn->out_off > cn->out.len / 2) {
        memmove(cn->out.data, cn->out.data + cn->out_off, cn->out.len - cn->out_off);
        cn->out.len -= cn->out_off;
        cn->out_off = 0;
    }
}

/* Takes host h out of service (it left the ring): closes its connection
 * without counting a failure and stops reconnecting. */
static void host_deactivate(cql_client *c, host *h)
{
    if (!h->active)
        return;
    h->active = false;
    if (h->cn.state != C_DOWN)
        conn_close(c, &h->cn, NULL, false);
    c->pub_dirty = true;
    update_ready(c);
}

static void host_activate(host *h)
{
    if (h->active)
        return;
    h->active = true;
    h->failed = false;
    h->attempt = 0;
    h->retry_at = 0;
}

/* ---- topology --------------------------------------------------------- */

static void topo_reset(cql_client *c)
{
    for (size_t i = 0; i < c->topo_n; i++)
        free(c->topo[i].tokens);
    c->topo_n = 0;
}

static void topo_fail(cql_client *c)
{
    topo_reset(c);
    c->topo_state = T_IDLE;
    c->next_refresh = now_ms() + TOPO_RETRY_MS;
}

static req *make_internal(cql_client *c, int kind)
{
    req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->internal = true;
    r->stream = -1;
    r->deadline = now_ms() + c->request_timeout_ms;
    live_add(c, r);
    return r;
}

static int topo_send(cql_client *c, int kind, bool v2)
{
    static const char q_local[] =
        "SELECT tokens, data_center, rpc_address, partitioner FROM system.local";
    static const char q_peers_v2[] =
        "SELECT peer, native_address, native_port, data_center, tokens FROM system.peers_v2";
    static const char q_peers[] = "SELECT peer, rpc_address, data_center, tokens FROM system.peers";
    if (!c->control || !host_ready(c->control))
        return CQL_ECONN;
    req *r = make_internal(c, kind);
    if (!r)
        return CQL_ENOMEM;
    r->peers_v2 = v2;
    r->query = kind == RK_TOPO_LOCAL ? q_local : v2 ? q_peers_v2 : q_peers;
    r->qlen = strlen(r->query);
    cql_qparams_init(&r->params);
    r->params.consistency = CQL_ONE; /* system tables are node-local */
    to_queue(&c->control->cn, r, true);
    return 0;
}

static void topo_start(cql_client *c)
{
    topo_reset(c);
    if (topo_send(c, RK_TOPO_LOCAL, false)) {
        topo_fail(c);
        return;
    }
    c->topo_state = T_LOCAL;
}

static bool parse_i64(cql_str s, int64_t *out)
{
    char buf[24];
    if (s.len == 0 || s.len >= sizeof buf)
        return false;
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf)
        return false;
    *out = v;
    return true;
}

static void copy_text(char *dst, size_t size, const cql_result *res, int32_t col)
{
    cql_str s;
    dst[0] = '\0';
    if (cql_row_get_text(res, col, &s) == 0)
        snprintf(dst, size, "%.*s", s.len > 255 ? 255 : (int)s.len, s.ptr);
}

/* Adds an entry for the current row: tokens at column tcol, data center at
 * dcol.  Returns 0 or a negative code. */
static int topo_add(cql_client *c, const cql_result *res, int32_t tcol, int32_t dcol,
                    topo_entry **out)
{
    if (c->topo_n == c->topo_cap) {
        size_t cap = c->topo_cap ? c->topo_cap * 2 : 8;
        topo_entry *n = realloc(c->topo, cap * sizeof *n);
        if (!n)
            return CQL_ENOMEM;
        c->topo = n;
        c->topo_cap = cap;
    }
    topo_entry *e = &c->topo[c->topo_n];
    memset(e, 0, sizeof *e);
    copy_text(e->dc, sizeof e->dc, res, dcol);
    if (cql_row_is_null(res, tcol) != 1) {
        cql_iter it;
        int rc = cql_row_get_text_set(res, tcol, &it);
        if (rc)
            return rc;
        e->n_tokens = (size_t)it.left;
        if (c->murmur3 && it.left > 0) {
            e->tokens = calloc((size_t)it.left, sizeof *e->tokens);
            if (!e->tokens)
                return CQL_ENOMEM;
            cql_str s;
            size_t k = 0;
            while (k < e->n_tokens && (rc = cql_iter_next_text(&it, &s)) == 1)
                if (!parse_i64(s, &e->tokens[k++]))
                    rc = CQL_EPROTO;
            if (rc < 0 || k != e->n_tokens) {
                free(e->tokens);
                e->tokens = NULL;
                return rc < 0 ? rc : CQL_EPROTO;
            }
        }
    }
    c->topo_n++;
    *out = e;
    return 0;
}

static int topo_on_local(cql_client *c, cql_result *res)
{
    if (cql_result_kind(res) != CQL_RESULT_ROWS || cql_result_next_row(res) != 1)
        return CQL_EPROTO;
    char part[256];
    copy_text(part, sizeof part, res, 3);
    size_t pl = strlen(part), sl = strlen("Murmur3Partitioner");
    /* Token routing only for Murmur3 (tokens of other partitioners are
     * not 64-bit numbers); discovery works with any. */
    c->murmur3 = pl >= sl && !strcmp(part + pl - sl, "Murmur3Partitioner");
    topo_entry *e;
    int rc = topo_add(c, res, 0, 1, &e);
    if (rc)
        return rc;
    e->h = c->control; /* whatever its rpc_address says, it is this node */
    return 0;
}

static int topo_on_peers(cql_client *c, cql_result *res, bool v2)
{
    if (cql_result_kind(res) != CQL_RESULT_ROWS)
        return CQL_EPROTO;
    uint16_t default_port = sa_port(&c->control->sa);
    int rc;
    while ((rc = cql_result_next_row(res)) == 1) {
        uint8_t peer[16], rpc[16];
        size_t plen, rlen;
        int32_t port = default_port;
        if (cql_row_get_inet(res, 0, peer, &plen) != 0)
            continue; /* a row without an address is useless */
        static const uint8_t any[16] = {0};
        if (cql_row_get_inet(res, 1, rpc, &rlen) != 0 || !memcmp(rpc, any, rlen)) {
            /* no or wildcard client address: the node's own address */
            memcpy(rpc, peer, plen);
            rlen = plen;
        }
        if (v2 && (cql_row_get_int(res, 2, &port) != 0 || port <= 0 || port > 65535))
            port = default_port;
        topo_entry *e;
        if ((rc = topo_add(c, res, v2 ? 4 : 3, v2 ? 3 : 2, &e)))
            return rc;
        sa_make(&e->sa, &e->salen, rpc, rlen, (uint16_t)port);
    }
    return rc < 0 ? rc : 0;
}

static host *topo_host_for(cql_client *c, topo_entry *e)
{
    if (e->h)
        return e->h;
    host *h = host_by_sa(c, &e->sa);
    if (h)
        return h;
    char name[INET6_ADDRSTRLEN], port[8];
    const void *a = e->sa.ss_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)(const void *)&e->sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)(const void *)&e->sa)->sin6_addr;
    if (!inet_ntop(e->sa.ss_family, a, name, sizeof name))
        return NULL;
    snprintf(port, sizeof port, "%u", (unsigned)sa_port(&e->sa));
    char *n = strdup(name), *p = strdup(port);
    if (!n || !p) {
        free(n);
        free(p);
        return NULL;
    }
    h = host_add(c, n, p);
    if (h) {
        h->sa = e->sa;
        h->salen = e->salen;
    }
    return h;
}

/* The refresh is complete: reconcile the hosts and swap the ring in. */
static void topo_apply(cql_client *c)
{
    size_t total = 0;
    for (size_t i = 0; i < c->nhosts; i++)
        c->hosts[i]->seen = false;
    for (size_t i = 0; i < c->topo_n; i++) {
        topo_entry *e = &c->topo[i];
        e->h = topo_host_for(c, e);
        if (!e->h) {
            topo_fail(c); /* out of memory: keep the old view, retry later */
            return;
        }
        if (!e->h->seen)
            e->h->n_tokens = 0;
        e->h->seen = true;
        e->h->n_tokens += (uint32_t)e->n_tokens;
        snprintf(e->h->dc, sizeof e->h->dc, "%s", e->dc);
        total += e->tokens ? e->n_tokens : 0;
    }
    int64_t *toks = total ? malloc(total * sizeof *toks) : NULL;
    uint32_t *owners = total ? malloc(total * sizeof *owners) : NULL;
    cql_ring ring;
    cql_ring_init(&ring);
    if (total && (!toks || !owners)) {
        free(toks);
        free(owners);
        topo_fail(c);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->topo_n; i++)
        for (size_t j = 0; c->topo[i].tokens && j < c->topo[i].n_tokens; j++) {
            toks[k] = c->topo[i].tokens[j];
            owners[k++] = c->topo[i].h->idx;
        }
    int rc = cql_ring_build(&ring, toks, owners, k);
    free(toks);
    free(owners);
    if (rc) {
        topo_fail(c);
        return;
    }
    cql_ring_free(&c->ring);
    c->ring = ring;
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        h->in_ring = h->seen;
        if (h->seen)
            host_activate(h);
        else if (!h->contact)
            host_deactivate(c, h); /* decommissioned or removed */
        if (!h->seen)
            h->n_tokens = 0;
    }
    topo_reset(c);
    c->topo_state = T_IDLE;
    c->topo_version++;
    c->pub_dirty = true;
    c->next_refresh = now_ms() + c->refresh_ms;
}

/* EVENT frames on the control connection (section 4.2.6). */
static void on_event(cql_client *c, const cql_header *hd, const uint8_t *body)
{
    if (hd->flags)
        return; /* events carry no tracing / warnings: not one we know */
    cql_event ev;
    if (cql_event_parse(body, hd->length, &ev))
        return;
    bool topo = ev.type.len == 15 && !memcmp(ev.type.ptr, "TOPOLOGY_CHANGE", 15);
    bool status = ev.type.len == 13 && !memcmp(ev.type.ptr, "STATUS_CHANGE", 13);
    bool up = status && ev.change.len == 2 && !memcmp(ev.change.ptr, "UP", 2);
    if (up && ev.has_addr && ev.port > 0 && ev.port <= 65535) {
        /* Reconnect now rather than at the end of its back-off. */
        struct sockaddr_storage sa;
        socklen_t sl;
        sa_make(&sa, &sl, ev.addr, ev.addr_len, (uint16_t)ev.port);
        host *h = host_by_sa(c, &sa);
        if (h && h->active && h->cn.state == C_DOWN) {
            h->attempt = 0;
            h->retry_at = now_ms();
        }
    }
    if (topo || up) {
        /* The node announcing itself is not serving yet: wait a little. */
        uint64_t t = now_ms() + TOPO_DEBOUNCE_MS;
        if (t < c->next_refresh)
            c->next_refresh = t;
    }
}

/* ---- routing ---------------------------------------------------------- */

/* The token of r's partition, when r is a routable prepared statement. */
static bool req_token(cql_client *c, req *r, int64_t *tok)
{
    if (r->has_token) {
        *tok = r->token;
        return true;
    }
    const prep_entry *e = NULL;
    const cql_value *vals = NULL;
    size_t n = 0;
    if (r->kind == RK_EXECUTE) {
        e = r->prep;
        vals = r->values;
        n = r->n_values;
    } else if (r->kind == RK_BATCH && r->n_parts && r->parts[0].prepared) {
        e = r->parts[0].prep;
        vals = r->parts[0].values;
        n = r->parts[0].n_values;
    }
    if (!e || e->state != P_READY || e->npk == 0 || e->npk > 64)
        return false;
    const cql_value *comp[64];
    for (uint16_t i = 0; i < e->npk; i++) {
        if (e->pk[i] >= n)
            return false; /* fewer values than markers: the server will say */
        comp[i] = &vals[e->pk[i]];
    }
    c->keybuf.len = 0;
    if (cql_routing_key(&c->keybuf, comp, e->npk))
        return false; /* a null / unset key component */
    r->token = cql_murmur3_token(c->keybuf.data, c->keybuf.len);
    r->has_token = true;
    *tok = r->token;
    return true;
}

static conn *any_ready(cql_client *c)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        size_t k = (c->rr + i) % c->nhosts;
        if (host_ready(c->hosts[k])) {
            c->rr = k + 1;
            return &c->hosts[k]->cn;
        }
    }
    return NULL;
}

static conn *route(cql_client *c, req *r)
{
    if (r->target) {
        if (host_ready(r->target))
            return &r->target->cn;
        r->target = NULL;
    }
    int64_t tok;
    if (c->token_routing && c->ring.n_owners > 1 && req_token(c, r, &tok)) {
        uint32_t reps[MAX_REPLICAS];
        size_t n = cql_ring_replicas(&c->ring, tok, reps, MAX_REPLICAS);
        for (size_t i = 0; i < n; i++)
            if (reps[i] < c->nhosts && host_ready(c->hosts[reps[i]]))
                return &c->hosts[reps[i]]->cn;
    }
    return any_ready(c);
}

/* ---- sending ---------------------------------------------------------- */

static int build_frame(conn *cn, req *r)
{
    switch (r->kind) {
    case RK_QUERY:
    case RK_TOPO_LOCAL:
    case RK_TOPO_PEERS:
        return cql_build_query(&cn->out, r->stream, r->query, r->qlen, &r->params);
    case RK_EXECUTE:
        return cql_build_execute(&cn->out, r->stream, r->prep->id, r->prep->idlen, &r->params);
    case RK_PREPARE:
        return cql_build_prepare(&cn->out, r->stream, r->prep->query, r->prep->qlen);
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
        int rc = cql_build_batch(&cn->out, r->stream, r->batch_type, items, r->n_parts,
                                 r->params.consistency, r->params.serial_consistency,
                                 r->params.timestamp_us);
        free(items);
        return rc;
    }
    default:
        return CQL_EINVAL;
    }
}

/* A PREPARE of e on host target (NULL: any), numbered for its waiters. */
static req *make_prepare_req(cql_client *c, prep_entry *e, host *target, bool global)
{
    req *p = make_internal(c, RK_PREPARE);
    if (!p)
        return NULL;
    p->prep = e;
    p->target = target;
    p->global = global;
    p->seq = ++c->prep_seq;
    return p;
}

/* After e's first successful PREPARE: prepare it on every other ready
 * host too, so that routed EXECUTEs find it there.  Best effort. */
static void prepare_elsewhere(cql_client *c, prep_entry *e, const host *done)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        if (h == done || !host_ready(h))
            continue;
        req *p = make_prepare_req(c, e, h, false);
        if (!p)
            return;
        to_queue(&h->cn, p, true);
    }
}

/*
 * Makes sure every statement r executes has a known id.  Returns 1 when r
 * can be sent now, 0 when it must wait (r->seq says for which PREPARE),
 * < 0 on error.  A missing id is learned by one PREPARE on any ready host,
 * shared by every request that needs it.
 */
static int ensure_prepared(cql_client *c, req *r)
{
    uint64_t wait = 0;
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
        if (e->state == P_NONE) {
            conn *cn = any_ready(c);
            if (!cn)
                return CQL_ENOHOST; /* not reached: dispatch checks n_ready */
            req *p = make_prepare_req(c, e, NULL, true);
            if (!p)
                return CQL_ENOMEM;
            e->state = P_PREPARING;
            e->seq = p->seq;
            to_queue(cn, p, true);
        }
        if (!wait)
            wait = e->seq;
    }
    r->seq = wait;
    return wait ? 0 : 1;
}

/* Sends what cn's queue holds, as far as stream ids and the output high
 * water mark allow. */
static void conn_send(cql_client *c, conn *cn)
{
    req *r;
    while (cn->state == C_READY && (r = cn->queue.head) && cn->n_free &&
           cn->out.len - cn->out_off < OUT_HIGH_WATER) {
        rl_remove(&cn->queue, r);
        r->where = W_NONE;
        r->stream = (int16_t)stream_alloc(cn);
        int rc = build_frame(cn, r);
        if (rc) {
            stream_release(cn, r->stream);
            if (r->internal)
                internal_drop(c, r, rc, false);
            else
                req_complete(c, r, rc, NULL);
            continue;
        }
        cn->slots[r->stream] = r;
        r->where = W_INFLIGHT;
        r->conn = cn;
        if (!r->internal) {
            cn->h->requests++;
            c->pub_dirty = true;
        }
    }
    conn_flush(c, cn);
    epoll_update(c, cn);
}

static void dispatch(cql_client *c)
{
    req *r;
    /* Route: pending -> [waiting] -> a ready connection's queue. */
    while (c->n_ready && (r = c->pending.head)) {
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
        conn *cn = route(c, r);
        if (!cn)
            break; /* not reached while n_ready > 0 */
        rl_remove(&c->pending, r);
        to_queue(cn, r, false);
    }
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        if (cn->state == C_READY && (cn->queue.head || cn->out.len > cn->out_off))
            conn_send(c, cn);
    }
}

/* ---- receiving -------------------------------------------------------- */

/* Finds the prepared entry among r's statements whose id is `id`. */
static prep_entry *req_entry_with_id(req *r, const uint8_t *id, size_t idlen)
{
    for (size_t i = 0; i < (r->kind == RK_BATCH ? r->n_parts : 1); i++) {
        prep_entry *e = r->kind == RK_BATCH ? r->parts[i].prep : r->prep;
        if (e && e->idlen == idlen && !memcmp(e->id, id, idlen))
            return e;
    }
    return NULL;
}

/* UNPREPARED from cn's host: prepare there (sharing a PREPARE already on
 * its way), then resend r to that host.  Once per request. */
static void on_unprepared(cql_client *c, conn *cn, req *r, const cql_error *err)
{
    host *h = cn->h;
    r->reprepared = true;
    r->target = h;
    prep_entry *e = req_entry_with_id(r, err->unprepared_id, err->unprepared_id_len);
    if (!e) {
        /* Sent with an id that has been replaced since: resend as is. */
        to_pending(c, r, true);
        return;
    }
    uint64_t seq;
    if (e->reprep_host == h && e->reprep_seq) {
        seq = e->reprep_seq;
    } else {
        req *p = make_prepare_req(c, e, h, false);
        if (!p) {
            req_complete(c, r, CQL_ENOMEM, NULL);
            return;
        }
        e->reprep_host = h;
        e->reprep_seq = seq = p->seq;
        to_queue(cn, p, true);
    }
    r->seq = seq;
    rl_push(&c->waiting, r, false);
    r->where = W_WAITING;
}

static void on_setup_response(cql_client *c, conn *cn, req *r, const cql_header *h, int rc,
                              cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    char msg[512];
    int kind = r->kind;
    req_free(r);
    if (kind == RK_REGISTER)
        return; /* without events the periodic refresh still works */
    bool ok = !rc && (kind == RK_STARTUP ? h->opcode == CQL_OP_READY
                                         : cql_result_kind(res) == CQL_RESULT_SET_KEYSPACE);
    if (ok && kind == RK_STARTUP && c->keyspace) {
        int brc = send_setup(c, cn, RK_USE);
        if (brc) {
            conn_fail(c, cn, cql_strerror(brc));
        } else {
            cn->state = C_USE;
            cn->deadline = now_ms() + c->connect_timeout_ms;
        }
    } else if (ok) {
        conn_ready(c, cn);
    } else {
        if (err)
            cql_error_format(err, msg, sizeof msg);
        else if (!rc && h->opcode == CQL_OP_AUTHENTICATE)
            snprintf(msg, sizeof msg, "server requires authentication (unsupported)");
        else
            snprintf(msg, sizeof msg, "handshake failed: %s",
                     rc ? cql_strerror(rc) : "unexpected response");
        conn_fail(c, cn, msg);
    }
}

static void on_prepare_response(cql_client *c, conn *cn, req *r, int rc, cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    prep_entry *e = r->prep;
    uint64_t seq = r->seq;
    bool global = r->global;
    req_detach(c, r);
    req_free(r);
    int status = rc ? rc : err ? CQL_ESERVER : 0;
    if (!status && cql_result_kind(res) != CQL_RESULT_PREPARED)
        status = CQL_EPROTO;
    if (!status)
        status = prep_learn(e, res);
    if (!status && global) {
        e->state = P_READY;
        prepare_done(c, e, seq, true, 0, NULL, false);
        prepare_elsewhere(c, e, cn->h);
        return;
    }
    prepare_done(c, e, seq, global, status, status == CQL_ESERVER ? res : NULL, false);
}

static void on_topo_response(cql_client *c, req *r, int rc, cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    int kind = r->kind;
    bool v2 = r->peers_v2;
    req_detach(c, r);
    req_free(r);
    if (!c->control || (kind == RK_TOPO_LOCAL) != (c->topo_state == T_LOCAL)) {
        topo_fail(c);
        return;
    }
    if (kind == RK_TOPO_PEERS && v2 && err && err->code == CQL_INVALID) {
        /* "unconfigured table peers_v2": Cassandra before 4.0 */
        c->peers_v2_missing = true;
        if (topo_send(c, RK_TOPO_PEERS, false))
            topo_fail(c);
        return;
    }
    if (rc || err) {
        topo_fail(c);
        return;
    }
    if (kind == RK_TOPO_LOCAL) {
        if (topo_on_local(c, res) || topo_send(c, RK_TOPO_PEERS, !c->peers_v2_missing)) {
            topo_fail(c);
            return;
        }
        c->topo_state = T_PEERS;
        return;
    }
    if (topo_on_peers(c, res, v2)) {
        topo_fail(c);
        return;
    }
    topo_apply(c);
}

static void on_response(cql_client *c, conn *cn, const cql_header *h, const uint8_t *body)
{
    if (h->stream < 0) {
        if (h->opcode == CQL_OP_EVENT && cn->h == c->control)
            on_event(c, h, body);
        return;
    }
    if ((uint32_t)h->stream >= c->max_streams || !cn->slots[h->stream]) {
        conn_fail(c, cn, "response on a stream id with no request");
        return;
    }
    req *r = cn->slots[h->stream];
    stream_release(cn, h->stream);
    if (r == ORPHAN) {
        cn->n_orphans--;
        return; /* answer to a request that already timed out */
    }
    r->where = W_NONE;
    r->conn = NULL;

    cql_result *res = NULL;
    int rc = cql_result_parse(h, body, h->length, false, &res);
    const cql_error *err = rc ? NULL : cql_result_error(res);

    switch (r->kind) {
    case RK_STARTUP:
    case RK_USE:
    case RK_REGISTER:
        on_setup_response(c, cn, r, h, rc, res);
        break;
    case RK_PREPARE:
        on_prepare_response(c, cn, r, rc, res);
        break;
    case RK_TOPO_LOCAL:
    case RK_TOPO_PEERS:
        on_topo_response(c, r, rc, res);
        break;
    default:
        if (err && err->code == CQL_UNPREPARED && !r->reprepared &&
            (r->kind == RK_EXECUTE || r->kind == RK_BATCH)) {
            /* The node does not know the statement (restart, eviction,
             * or it was never prepared there): prepare and resend. */
            on_unprepared(c, cn, r, err);
            break;
        }
        req_complete(c, r, rc ? rc : err ? CQL_ESERVER : 0, res);
        break;
    }
    cql_result_free(res);
}

static void conn_read(cql_client *c, conn *cn)
{
    uint32_t gen = cn->gen;
    for (;;) {
        size_t limit = (size_t)CQL_HEADER_LEN + c->max_frame_body + READ_CHUNK;
        if (cn->in_cap - cn->in_len < READ_CHUNK) {
            size_t cap = cn->in_cap ? cn->in_cap * 2 : 4 * READ_CHUNK;
            if (cap > limit)
                cap = limit;
            if (cap <= cn->in_cap) {
                conn_fail(c, cn, "input buffer limit");
                return;
            }
            uint8_t *n = realloc(cn->in, cap);
            if (!n) {
                conn_fail(c, cn, "out of memory");
                return;
            }
            cn->in = n;
            cn->in_cap = cap;
        }
        ssize_t n = recv(cn->fd, cn->in + cn->in_len, cn->in_cap - cn->in_len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            char why[200];
            snprintf(why, sizeof why, "recv: %s", strerror(errno));
            conn_fail(c, cn, why);
            return;
        }
        if (n == 0) {
            conn_fail(c, cn, "connection closed by server");
            return;
        }
        cn->in_len += (size_t)n;
        size_t pos = 0;
        while (cn->fd >= 0 && cn->gen == gen && cn->in_len - pos >= CQL_HEADER_LEN) {
            cql_header h;
            int rc = cql_header_decode(cn->in + pos, cn->in_len - pos, c->max_frame_body, true, &h);
            if (rc) {
                char why[200];
                snprintf(why, sizeof why, "bad frame header: %s", cql_strerror(rc));
                conn_fail(c, cn, why);
                return;
            }
            if (cn->in_len - pos - CQL_HEADER_LEN < h.length)
                break;
            on_response(c, cn, &h, cn->in + pos + CQL_HEADER_LEN);
            pos += CQL_HEADER_LEN + h.length;
        }
        if (cn->fd < 0 || cn->gen != gen)
            return; /* the connection was closed while handling a frame */
        memmove(cn->in, cn->in + pos, cn->in_len - pos);
        cn->in_len -= pos;
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
        if (r->where == W_INFLIGHT) {
            r->conn->slots[r->stream] = ORPHAN;
            r->conn->n_orphans++;
        }
        if (r->internal) {
            internal_drop(c, r, CQL_ETIMEDOUT, false);
            nx = c->live_head; /* its waiters may have been freed: restart */
            next = UINT64_MAX;
            continue;
        }
        req_complete(c, r, CQL_ETIMEDOUT, NULL);
    }
    c->next_scan = next;
    /* A node that keeps its socket open but stops answering would hold every
     * stream id with timed-out requests, and the connection would look ready
     * while no request could be sent on it. Past a quarter of the stream ids
     * held that way, close it: reconnection with back-off takes over, and
     * routing falls back to other replicas meanwhile. */
    size_t limit = c->max_streams / 4 ? c->max_streams / 4 : 1;
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        if (cn->state == C_READY && cn->n_orphans >= limit)
            conn_fail(c, cn, "too many requests timed out: the node stopped answering");
    }
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
        to_pending(c, r, false);
        if (c->down && c->n_ready == 0)
            req_complete(c, r, CQL_ENOHOST, NULL);
        r = next;
    }
}

/* Starts due connection attempts, expires slow ones, starts a due
 * topology refresh. */
static void run_timers(cql_client *c, uint64_t now)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        conn *cn = &h->cn;
        if (!h->active)
            continue;
        if (cn->state == C_DOWN && now >= h->retry_at)
            conn_start(c, h);
        else if (cn->state != C_DOWN && cn->state != C_READY && now >= cn->deadline)
            conn_fail(c, cn, cn->state == C_CONNECTING ? "connect timed out" : "handshake timed out");
    }
    if (c->discovery && c->control && c->topo_state == T_IDLE && now >= c->next_refresh)
        topo_start(c);
}

/* The earliest time run_timers() or scan_timeouts() has something to do. */
static uint64_t next_wake(const cql_client *c)
{
    uint64_t wake = c->next_scan;
    for (size_t i = 0; i < c->nhosts; i++) {
        const host *h = c->hosts[i];
        if (!h->active)
            continue;
        if (h->cn.state == C_DOWN && h->retry_at < wake)
            wake = h->retry_at;
        else if (h->cn.state != C_DOWN && h->cn.state != C_READY && h->cn.deadline < wake)
            wake = h->cn.deadline;
    }
    if (c->discovery && c->control && c->topo_state == T_IDLE && c->next_refresh < wake)
        wake = c->next_refresh;
    return wake;
}

static void on_socket_event(cql_client *c, uint64_t tag, uint32_t e)
{
    uint64_t idx = (tag & 0xffffffffu) - 1;
    if (idx >= c->nhosts)
        return;
    conn *cn = &c->hosts[idx]->cn;
    if (cn->fd < 0 || cn->gen != (uint32_t)(tag >> 32))
        return; /* closed (and maybe reopened) earlier in this batch */
    if (cn->state == C_CONNECTING) {
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                char why[200];
                snprintf(why, sizeof why, "connect: %s", strerror(err));
                conn_fail(c, cn, why);
            } else {
                on_connected(c, cn);
            }
        }
        return;
    }
    uint32_t gen = cn->gen;
    if (e & EPOLLIN)
        conn_read(c, cn);
    if (cn->fd >= 0 && cn->gen == gen && (e & EPOLLOUT)) {
        conn_flush(c, cn);
        epoll_update(c, cn); /* drop EPOLLOUT once drained: level-triggered */
    }
    if (cn->fd >= 0 && cn->gen == gen && (e & (EPOLLERR | EPOLLHUP)))
        conn_fail(c, cn, "socket error");
}

static void shutdown_all(cql_client *c)
{
    /* Fail everything still owned by the thread. */
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        req *r;
        for (uint32_t s = 0; cn->slots && s < c->max_streams; s++) {
            r = cn->slots[s];
            if (!r || r == ORPHAN)
                continue;
            cn->slots[s] = NULL;
            r->where = W_NONE;
            if (r->internal)
                internal_drop(c, r, CQL_ECLOSED, false);
            else
                req_complete(c, r, CQL_ECLOSED, NULL);
        }
        while ((r = cn->queue.head)) {
            if (r->internal)
                internal_drop(c, r, CQL_ECLOSED, false);
            else
                req_complete(c, r, CQL_ECLOSED, NULL);
        }
        if (cn->fd >= 0) {
            close(cn->fd);
            cn->fd = -1;
        }
    }
    while (c->waiting.head)
        req_complete(c, c->waiting.head, CQL_ECLOSED, NULL);
    while (c->pending.head)
        req_complete(c, c->pending.head, CQL_ECLOSED, NULL);
}

static void *io_main(void *arg)
{
    cql_client *c = arg;
    pthread_setname_np(pthread_self(), "cql-io");
    bool closing = false;
    for (;;) {
        take_submissions(c, &closing);
        if (closing)
            break;
        uint64_t now = now_ms();
        run_timers(c, now);
        if (now >= c->next_scan)
            scan_timeouts(c, now);
        dispatch(c);
        if (c->pub_dirty)
            publish(c);

        now = now_ms();
        uint64_t wake = next_wake(c);
        int timeout = wake <= now ? 0 : wake - now > 1000 ? 1000 : (int)(wake - now);
        struct epoll_event evs[16];
        int n = epoll_wait(c->epfd, evs, 16, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                uint64_t v;
                ssize_t rd = read(c->evfd, &v, sizeof v);
                (void)rd;
                continue;
            }
            on_socket_event(c, evs[i].data.u64, evs[i].events);
        }
    }
    shutdown_all(c);
    return NULL;
}

/* ---- lifecycle -------------------------------------------------------- */

static int parse_contact(const char *s, char **host_out, char **port_out)
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
    *host_out = strndup(hb, (size_t)(he - hb));
    *port_out = strdup(p);
    if (!*host_out || !*port_out) {
        free(*host_out);
        free(*port_out);
        return CQL_ENOMEM;
    }
    return 0;
}

static void client_free(cql_client *c)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        free(h->name);
        free(h->port);
        free(h->cn.slots);
        free(h->cn.free_ids);
        free(h->cn.in);
        cql_buf_free(&h->cn.out);
        free(h);
    }
    free(c->hosts);
    free(c->keyspace);
    if (c->prep_tab) {
        for (size_t i = 0; i < c->prep_buckets; i++) {
            prep_entry *e = c->prep_tab[i], *n;
            for (; e; e = n) {
                n = e->next;
                free(e->query);
                free(e->id);
                free(e->pk);
                free(e);
            }
        }
        free(c->prep_tab);
    }
    topo_reset(c);
    free(c->topo);
    cql_ring_free(&c->ring);
    cql_buf_free(&c->keybuf);
    free(c->pub);
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
    c->epfd = c->evfd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    cql_buf_init(&c->keybuf);
    cql_ring_init(&c->ring);
    c->consistency = o->consistency;
    c->request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 12000;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    c->backoff_base_ms = o->reconnect_base_ms ? o->reconnect_base_ms : 100;
    c->backoff_max_ms = o->reconnect_max_ms ? o->reconnect_max_ms : 10000;
    c->max_frame_body = o->max_frame_body;
    c->max_streams = o->max_streams;
    c->refresh_ms = o->topology_refresh_ms ? o->topology_refresh_ms : TOPO_REFRESH_DEFAULT_MS;
    c->discovery = !o->disable_discovery;
    c->token_routing = !o->disable_token_routing;
    c->next_scan = UINT64_MAX;
    c->next_refresh = UINT64_MAX;
    c->rng = (uint32_t)now_ms() ^ (uint32_t)(uintptr_t)c;
    c->prep_buckets = 256;
    int rc = CQL_ENOMEM;
    c->prep_tab = calloc(c->prep_buckets, sizeof *c->prep_tab);
    if (!c->prep_tab)
        goto fail;
    if (o->keyspace && !(c->keyspace = strdup(o->keyspace)))
        goto fail;
    for (size_t i = 0; i < o->n_contact_points; i++) {
        char *name, *port;
        if (!o->contact_points[i]) {
            rc = CQL_EINVAL;
            goto fail;
        }
        if ((rc = parse_contact(o->contact_points[i], &name, &port)))
            goto fail;
        host *h = host_add(c, name, port);
        if (!h) {
            rc = CQL_ENOMEM;
            goto fail;
        }
        h->contact = true;
        h->active = true; /* retry_at 0: connect at once */
    }
    rc = CQL_ESYS;
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0)
        goto fail;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.u64 = 0; /* the eventfd; connections are tagged >= 1 */
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) < 0)
        goto fail;
    publish(c);
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

size_t cql_client_hosts(cql_client *c, cql_host_info *out, size_t max)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->pub_n;
    for (size_t i = 0; out && i < n && i < max; i++)
        out[i] = c->pub[i];
    pthread_mutex_unlock(&c->mu);
    return n;
}

uint64_t cql_client_topology_version(cql_client *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t v = c->pub_version;
    pthread_mutex_unlock(&c->mu);
    return v;
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
