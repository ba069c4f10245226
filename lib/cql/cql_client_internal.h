/*
 * cql_client_internal.h - the client's private state, and the calls its
 * files make to one another.  Included by the client's files only:
 *
 *   cql_client.c    options, cql_client_new() / cql_client_close(), and the
 *                   state user threads read under `mu` (readiness, last
 *                   error, the host snapshot)
 *   cql_submit.c    cql_query() / cql_execute() / cql_batch() on the
 *                   caller's thread: validate, deep-copy, queue; the I/O
 *                   thread's side of that submit queue
 *   cql_loop.c      the I/O thread: the epoll loop, timers, shutdown
 *   cql_request.c   a request's life on the I/O thread: its lists, dispatch,
 *                   frame building, completion, time-outs
 *   cql_conn.c      one connection: socket, handshake, frame I/O, stream
 *                   ids, responses to their requests, reconnect back-off
 *   cql_pool.c      the hosts (one connection each), readiness, routing
 *   cql_cluster.c   the control connection: topology refresh, events, ring
 *   cql_prepared.c  the prepare cache: one PREPARE learns an id, then every
 *                   node gets it; re-prepare on UNPREPARED
 *
 * The wire layer (cql_internal.h: buffers, frames, the response parser,
 * tokens) knows nothing of this header.  Names shared between these files
 * start with cql_, since the library is linked into programs that have
 * their own symbols; what one file alone uses stays static there.
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
 * Request life cycle (each request is in exactly one place):
 *   submit queue -> pending -> [waiting for a PREPARE] -> a connection's
 *   queue -> in flight on that connection -> done
 *   Every user request, PREPARE and topology query also sits on the `live`
 *   list from the moment the I/O thread takes it until it completes; the
 *   timeout scan walks that list.  A request queued on a connection that
 *   fails goes back to pending and is routed again (it was never sent); one
 *   in flight fails with CQL_ECONN (it may have been executed).
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
 *   - A completion callback never runs inside the call that started the
 *     operation: cql_query() and its siblings only queue (cql_submit.c), and
 *     every callback runs on the I/O thread (or, for requests the thread
 *     never took, in cql_client_close()).
 *
 * Every function below runs on the I/O thread unless it says otherwise.
 */
#ifndef CQL_CLIENT_INTERNAL_H
#define CQL_CLIENT_INTERNAL_H

#include "cql_internal.h"

#include <pthread.h>
#include <sys/socket.h>
#include <time.h>

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
    size_t n_orphans;        /* slots held by timed-out requests (see cql_scan_timeouts) */
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
    host **hosts;            /* never shrinks: see "Topology" in cql_cluster.c */
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

/* Marks the slot of a timed-out request whose answer is still due
 * (cql_request.c owns it). */
extern req cql_orphan_marker;
#define ORPHAN (&cql_orphan_marker)

/* Monotonic milliseconds: every deadline and timer is in this clock. */
static inline uint64_t cql_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A host requests may be sent to now. */
static inline bool cql_host_ready(const host *h) { return h->active && h->cn.state == C_READY; }

/* ---- cql_client.c: state shared with user threads (takes `mu`) -------- */

/* Sets the message cql_client_last_error() returns. */
void cql_set_last_error(cql_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* 1 ready, 0 connecting, -1 down; wakes cql_client_wait_ready() on a change. */
void cql_set_ready_state(cql_client *c, int s);
/* Copies the hosts into the snapshot cql_client_hosts() reads; clears
 * pub_dirty (sets it again when it could not allocate). */
void cql_publish(cql_client *c);

/* ---- cql_submit.c ----------------------------------------------------- */

/* Moves what user threads submitted onto pending (and the live list); fails
 * it at once with CQL_ENOHOST while the client is down.  *closing says
 * whether cql_client_close() has begun. */
void cql_take_submissions(cql_client *c, bool *closing);

/* ---- cql_loop.c ------------------------------------------------------- */

/* The I/O thread's body (arg: the client); returns after `closing`, having
 * failed every request it owned with CQL_ECLOSED. */
void *cql_io_main(void *arg);

/* ---- cql_request.c: the life cycle ------------------------------------ */

void cql_rl_push(rlist *l, req *r, bool front);
void cql_rl_remove(rlist *l, req *r);
/* Puts r on the live list; its deadline brings the next time-out scan
 * forward if it is earlier. */
void cql_live_add(cql_client *c, req *r);
/* Frees r and every byte it copied (NULL is a no-op). */
void cql_req_free(req *r);
/* Takes r off its list (pending, waiting, a connection's queue) and the
 * live list; a stream slot it holds is the caller's to release. */
void cql_req_detach(cql_client *c, req *r);
/* Detaches r, runs its callback (the result only for 0 and CQL_ESERVER)
 * and frees it. */
void cql_req_complete(cql_client *c, req *r, int status, cql_result *res);
void cql_req_to_pending(cql_client *c, req *r, bool front);
void cql_req_to_queue(conn *cn, req *r, bool front);
/* Fails every pending and waiting request with status. */
void cql_req_fail_queued(cql_client *c, int status);
/* An internal request (no callback) of kind, with the request deadline,
 * already on the live list; NULL when out of memory. */
req *cql_req_internal(cql_client *c, int kind);
/* Ends an internal request that will get no answer (see the definition). */
void cql_req_drop_internal(cql_client *c, req *r, int status, bool requeue);
/* Ends r with status, whoever issued it: cql_req_complete() for a user
 * request, cql_req_drop_internal() (with requeue) for an internal one. */
void cql_req_fail(cql_client *c, req *r, int status, bool requeue);
/* Appends r's frame, on r->stream, to cn's output; on failure the output
 * is unchanged. */
int cql_req_build_frame(conn *cn, req *r);
/* Routes pending requests to ready connections (through the prepare cache
 * for EXECUTE and BATCH) and sends what the connections' queues hold. */
void cql_dispatch(cql_client *c);
/* Times out live requests past their deadline and closes connections most
 * of whose stream ids are held by timed-out requests; sets next_scan. */
void cql_scan_timeouts(cql_client *c, uint64_t now);

/* ---- cql_conn.c: one connection --------------------------------------- */

/* Opens a connection to h (resolving a contact point's name first); a
 * failure is handled as a failed attempt, with back-off. */
void cql_conn_start(cql_client *c, host *h);
/* Closes cn and settles every request on it (see the definition);
 * count_failure: a failed attempt, reconnect with back-off. */
void cql_conn_close(cql_client *c, conn *cn, const char *why, bool count_failure);
/* cql_conn_close() counting a failure; why becomes the last error. */
void cql_conn_fail(cql_client *c, conn *cn, const char *why);
/* Sends an internal set-up request (RK_STARTUP, RK_USE, RK_REGISTER) on cn
 * at once.  Returns 0 or a negative code (nothing was sent). */
int cql_conn_send_setup(cql_client *c, conn *cn, int kind);
/* Ends every request in flight on cn with status (cql_req_fail()) and
 * frees its slot; ORPHAN slots stay, their answers still due. */
void cql_conn_end_inflight(cql_client *c, conn *cn, int status, bool requeue);
/* Builds and writes what cn's queue holds, within stream ids and the
 * output high-water mark. */
void cql_conn_send(cql_client *c, conn *cn);
/* An epoll event for the connection tagged tag (see the invariants). */
void cql_conn_on_event(cql_client *c, uint64_t tag, uint32_t e);

/* ---- cql_pool.c: hosts, readiness, routing ---------------------------- */

/* Appends a host (connection down, inactive), taking name and port (both
 * freed on failure); NULL when out of memory. */
host *cql_host_add(cql_client *c, char *name, char *port);
/* Frees h and its connection's buffers; the socket is closed already. */
void cql_host_free(host *h);
/* The host whose resolved address is sa, or NULL. */
host *cql_host_by_sa(cql_client *c, const struct sockaddr_storage *sa);
uint16_t cql_sa_port(const struct sockaddr_storage *sa);
void cql_sa_make(struct sockaddr_storage *sa, socklen_t *len, const uint8_t *addr, size_t alen,
                 uint16_t port);
void cql_host_activate(host *h);
void cql_host_deactivate(cql_client *c, host *h);
/* Recomputes readiness after a connection came up or went down; when the
 * client is down, fails what is queued with CQL_ENOHOST. */
void cql_update_ready(cql_client *c);
/* The next ready connection, round-robin; NULL when none is ready. */
conn *cql_any_ready(cql_client *c);
/* The connection r should go to (its pinned host, a replica, or any). */
conn *cql_route(cql_client *c, req *r);

/* ---- cql_cluster.c: control connection and topology ------------------- */

/* Makes a ready host the control connection when there is none. */
void cql_control_pick(cql_client *c);
/* Brings the next refresh within TOPO_DEBOUNCE_MS (a node came back or
 * announced itself). */
void cql_topo_refresh_soon(cql_client *c);
/* Reads system.local, then system.peers(_v2), on the control connection. */
void cql_topo_start(cql_client *c);
/* Abandons a refresh under way; the next one is in TOPO_RETRY_MS. */
void cql_topo_fail(cql_client *c);
/* Frees the rows a refresh has collected. */
void cql_topo_reset(cql_client *c);
/* The answer to a topology query (r is freed here). */
void cql_topo_on_response(cql_client *c, req *r, int rc, cql_result *res);
/* An EVENT frame on the control connection. */
void cql_topo_on_event(cql_client *c, const cql_header *hd, const uint8_t *body);

/* ---- cql_prepared.c: the prepare cache -------------------------------- */

/* Allocates the cache's buckets: CQL_ENOMEM or 0. */
int cql_prep_cache_init(cql_client *c);
void cql_prep_cache_free(cql_client *c);
/* 1: every statement r executes has an id, send it; 0: r must wait for
 * the PREPARE numbered r->seq; < 0: fail r with that code. */
int cql_ensure_prepared(cql_client *c, req *r);
/* Ends the PREPARE numbered seq and settles its waiters (see the
 * definition). */
void cql_prepare_done(cql_client *c, prep_entry *e, uint64_t seq, bool global, int status,
                      cql_result *res, bool requeue);
/* The answer to a PREPARE sent on cn (r is freed here). */
void cql_prepare_on_response(cql_client *c, conn *cn, req *r, int rc, cql_result *res);
/* r got UNPREPARED from cn's host: prepare there and resend r, once. */
void cql_on_unprepared(cql_client *c, conn *cn, req *r, const cql_error *err);

#endif /* CQL_CLIENT_INTERNAL_H */
