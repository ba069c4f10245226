/* broker_redis.c - the broker (broker.h) on Redis pub/sub, with hiredis.
 *
 * Two threads, two connections, because a connection that has sent
 * SUBSCRIBE can no longer send PUBLISH (RESP2 only allows the (un)subscribe
 * family and PING in that state):
 *
 *   subscriber  connect, SUBSCRIBE <channel>, then read "message" replies
 *               forever and hand each payload to on_message. Any error ends
 *               the session; it reconnects with back-off (100 ms doubling up
 *               to 2 s, back to 100 ms once a connection has lasted 5 s) and
 *               calls on_reset once the new subscription is confirmed,
 *               unless it is the very first one.
 *   publisher   takes payloads from a bounded FIFO (mutex + condvar), appends
 *               one PUBLISH per payload to the output buffer, writes them all
 *               and only then reads the replies: one round trip per batch
 *               instead of one per message. Same back-off on errors.
 *
 * Why non-blocking hiredis contexts and our own poll(2). With a blocking
 * context, hiredis 0.14 turns a socket read timeout (SO_RCVTIMEO) into a
 * fatal REDIS_ERR_IO and marks the context as failed: a read timeout cannot
 * be used as an idle tick, so an idle subscription would be torn down (and
 * every event stream reset) once per timeout. And a thread blocked in
 * connect() or read() cannot be woken by broker_close without racing on the
 * fd. So both threads use redisConnectNonBlock and drive the context with
 * redisBufferWrite / redisBufferRead / redisGetReply themselves, polling the
 * socket together with an eventfd that broker_close writes: close never
 * waits for a network timeout, and deadlines (connect 1 s, replies 2 s) are
 * ours to choose.
 *
 * Liveness. A Redis that dies or restarts closes the sockets, which poll
 * reports at once. A peer that silently vanishes (a partition, a frozen VM)
 * is found by the subscriber's heartbeat: after 5 s without any byte it
 * sends PING (allowed while subscribed; the answer is ["pong", ""]) and gives
 * the connection up if nothing at all arrives within 5 s more. Both sockets
 * also have TCP keepalive on. The idle publisher connection is checked before
 * every batch and once a second: on a healthy idle RESP2 connection the
 * server never sends anything, so "readable" means closed (or garbage).
 *
 * Loss. Pub/sub is at-most-once and so is this broker:
 *  - payloads published while the publisher is disconnected wait in the
 *    queue (up to QUEUE_MAX_ITEMS / QUEUE_MAX_BYTES; beyond, the oldest go);
 *  - a batch already handed to a connection that then fails is not sent
 *    again: Redis may have delivered part of it, and a duplicate is worse for
 *    the event streams than a gap, which on_reset and the store repair;
 *  - Redis delivers nothing to a subscriber while it is not subscribed.
 * The publisher holds its queue until this broker's own subscription has
 * been confirmed once: an instance's first messages reach its own streams
 * even when Redis comes up after the instance. Later gaps are covered by
 * on_reset (every loss of the subscription is followed by one).
 *
 * Signals. The threads start with every asynchronous signal blocked: the
 * process's signal handling (sigwait in the main thread) stays where it is,
 * and a write to a socket the server has closed makes write(2) fail with
 * EPIPE instead of killing the process with SIGPIPE (hiredis 0.14 uses
 * write(2), not send(MSG_NOSIGNAL)).
 */
#include "events/broker.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "model/uuid.h"
#include "util/log.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000
#define STABLE_MS 5000           /* a connection this old resets the back-off when lost */
#define CONNECT_TIMEOUT_MS 1000
#define IO_TIMEOUT_MS 2000       /* a write to finish, or one reply to arrive */
#define PING_IDLE_MS 5000        /* subscriber: PING after this long without a byte */
#define PING_TIMEOUT_MS 5000     /* ... and give up after this much more silence */
#define IDLE_CHECK_MS 1000       /* publisher: look at its idle connection this often */
#define CLOSE_GRACE_MS 500       /* broker_close: time left to publish what is queued */
#define LOG_INTERVAL_MS 10000    /* at most one line per kind of trouble this often */

/* Queue bounds. A message payload is a few KiB (content is at most 4 KiB);
 * 10,000 of them cover several seconds of a busy instance's traffic during a
 * Redis restart, and the byte bound keeps an outage from growing memory
 * without limit whatever the payload sizes. */
#define QUEUE_MAX_ITEMS 10000
#define QUEUE_MAX_BYTES ((size_t)32 << 20)
#define PAYLOAD_MAX ((size_t)8 << 20)   /* larger payloads are refused (and counted) */
#define BATCH_MAX_ITEMS 512
#define BATCH_MAX_BYTES ((size_t)1 << 20)

#define HOST_MAX 255
#define CHANNEL_MAX 1024
#define AUTH_MAX 512             /* bytes of a user name or password, decoded */

/* What one reply from Redis may make us hold (broker.h, trust boundary):
 * our replies are flat arrays of two or three elements, and a payload is at
 * most PAYLOAD_MAX bytes. */
#define REPLY_ARRAY_MAX 8
#define READER_MAX (PAYLOAD_MAX + ((size_t)64 << 10))

typedef struct qnode {
    struct qnode *next;
    size_t len;
    char data[];
} qnode_t;

typedef struct ratelimit {
    int64_t next_ms;      /* no line before this time */
    uint64_t suppressed;  /* lines held back since the last one */
} ratelimit_t;

struct broker {
    char host[HOST_MAX + 1];
    int port;
    bool has_pass;             /* the url carried a password: AUTH first */
    char user[AUTH_MAX + 1], pass[AUTH_MAX + 1];
    size_t user_len, pass_len; /* user_len 0: AUTH with the password alone */
    char url[HOST_MAX + 20];   /* "redis://host:port", for log lines */
    char *channel;
    size_t channel_len;
    broker_callbacks_t cb;

    /* Read by both threads without the lock; written once, under mu, by
     * broker_close. grace_deadline is written before stopping is set. */
    atomic_bool stopping;
    int64_t grace_deadline;
    atomic_int subscribed;   /* broker_connected() */

    int sub_wake;  /* eventfd: readable once broker_close has started; never drained */
    int pub_wake;  /* eventfd: a kick to the publisher, which drains it */

    pthread_mutex_t mu;      /* guards everything below */
    pthread_cond_t cv;       /* the publisher waits here for work (CLOCK_MONOTONIC) */
    qnode_t *q_head, *q_tail;
    size_t q_items, q_bytes;
    bool subscribed_once;    /* the publisher's gate, see the top of the file */
    uint64_t dropped;        /* payloads known not to be published */
    ratelimit_t rl_drop;

    pthread_t sub_thread, pub_thread;
    bool sub_started, pub_started;
};

/* One thread's connection and its reconnection state. */
typedef struct link {
    broker_t *b;
    const char *role;        /* "subscriber" or "publisher", for log lines */
    bool is_sub;
    int wake_fd;
    redisContext *c;
    int64_t backoff_ms;
    int64_t last_rx_ms;      /* last time any byte arrived */
    int64_t up_ms;           /* when the current connection was established */
    unsigned failures;       /* connection attempts failed in a row */
    ratelimit_t rl_conn;     /* "cannot connect" lines */
    ratelimit_t rl_lost;     /* "connection lost" lines (a flapping Redis) */
    ratelimit_t rl_batch;    /* publisher: batches lost with their connection */
    ratelimit_t rl_err;      /* error replies */
    ratelimit_t rl_payload;  /* subscriber: payloads dropped as invalid */
    char err[160];           /* why the last operation failed */
} link_t;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* True when a line may be logged now; *suppressed gets how many were held
 * back since the previous one, and note() says so in words. */
static bool rl_allow(ratelimit_t *rl, int64_t now, uint64_t *suppressed) {
    if (now < rl->next_ms) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->next_ms = now + LOG_INTERVAL_MS;
    return true;
}

static const char *note(uint64_t suppressed, char *buf, size_t cap) {
    if (!suppressed) return "";
    snprintf(buf, cap, " (%llu similar not logged)", (unsigned long long)suppressed);
    return buf;
}

static void set_err(link_t *l, const char *what, const char *detail) {
    snprintf(l->err, sizeof l->err, "%s%s%s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
}

static void set_errno(link_t *l, const char *what, int e) {
    char buf[96];
    set_err(l, what, strerror_r(e, buf, sizeof buf));
}

/* The context's own error, with errno's text when hiredis says "I/O error"
 * without one. */
static void set_ctx_err(link_t *l, const char *what) {
    if (l->c->err == REDIS_ERR_IO && l->c->errstr[0] == '\0') set_errno(l, what, errno);
    else if (l->c->err == REDIS_ERR_EOF) set_err(l, what, "connection closed by the server");
    else set_err(l, what, l->c->errstr[0] ? l->c->errstr : "unknown hiredis error");
}

/* ---- the queue (callers hold b->mu) ---- */

static qnode_t *q_pop(broker_t *b) {
    qnode_t *n = b->q_head;
    if (!n) return NULL;
    b->q_head = n->next;
    if (!b->q_head) b->q_tail = NULL;
    b->q_items--;
    b->q_bytes -= n->len;
    return n;
}

static void q_free_all(qnode_t *n) {
    while (n) {
        qnode_t *next = n->next;
        free(n);
        n = next;
    }
}

/* ---- waiting ---- */

/* The publisher's deadlines shrink to the close grace once closing starts. */
static int64_t cap_deadline(const link_t *l, int64_t deadline) {
    if (!l->is_sub && atomic_load(&l->b->stopping) && l->b->grace_deadline < deadline)
        return l->b->grace_deadline;
    return deadline;
}

static void drain_wake(int fd) {
    eventfd_t v;
    (void)eventfd_read(fd, &v); /* nonblocking: EAGAIN when there was no kick */
}

/* Waits until the socket is ready for events. Returns 1 when it is (or has
 * an error or hang-up, which the next I/O call reports), 0 when the deadline
 * passed, -1 when the broker is closing (subscriber) or poll failed. */
static int wait_ready(link_t *l, short events, int64_t deadline) {
    for (;;) {
        if (l->is_sub && atomic_load(&l->b->stopping)) {
            set_err(l, "closing", NULL);
            return -1;
        }
        int64_t limit = cap_deadline(l, deadline);
        int64_t now = now_ms();
        if (now >= limit) return 0;
        int64_t wait = limit - now;
        struct pollfd p[2] = {{.fd = l->c->fd, .events = events}, {.fd = l->wake_fd, .events = POLLIN}};
        int n = poll(p, 2, wait > INT_MAX ? INT_MAX : (int)wait);
        if (n < 0) {
            if (errno == EINTR) continue;
            set_errno(l, "poll", errno);
            return -1;
        }
        if (p[1].revents) {
            /* Closing started: the subscriber stops at the loop's top; the
             * publisher drains the kick and goes on with capped deadlines. */
            if (!l->is_sub) drain_wake(l->wake_fd);
            continue;
        }
        if (p[0].revents) return 1;
    }
}

/* Sleeps the back-off delay (or until closing starts) and doubles it. */
static void backoff_sleep(link_t *l) {
    int64_t until = now_ms() + l->backoff_ms;
    l->backoff_ms = l->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : l->backoff_ms * 2;
    for (;;) {
        if (atomic_load(&l->b->stopping)) return;
        int64_t left = until - now_ms();
        if (left <= 0) return;
        struct pollfd p = {.fd = l->wake_fd, .events = POLLIN};
        int n = poll(&p, 1, (int)left);
        if (n > 0 && !l->is_sub) drain_wake(l->wake_fd);
    }
}

/* ---- what a reply may cost (broker.h, trust boundary) ----
 *
 * hiredis 0.14 builds replies through the reader's redisReplyObjectFunctions
 * and allocates an array's element pointers as soon as its header arrives,
 * for whatever count the header announces. Ours are hiredis's own functions
 * except createArray, which first refuses what we never receive: a count
 * below 0 or above REPLY_ARRAY_MAX, or an array inside an array. A NULL from
 * createArray makes the reader fail (it reports "out of memory"; the reason
 * is kept in reader_refused), and the connection is dropped. Bulk strings
 * are allocated only once all their bytes are in; the reader's buffer, which
 * holds them until then, is capped by reader_too_full(). */

static redisReplyObjectFunctions guarded_fns;
static void *(*default_create_array)(const redisReadTask *, int);
static pthread_once_t guarded_once = PTHREAD_ONCE_INIT;
/* Why the reader refused the last reply on this thread, or NULL. */
static _Thread_local const char *reader_refused;

static void *guarded_create_array(const redisReadTask *task, int elements) {
    if (task->parent) reader_refused = "a nested array";
    else if (elements < 0 || elements > REPLY_ARRAY_MAX) reader_refused = "an array of a hostile size";
    else return default_create_array(task, elements);
    return NULL;
}

static void guarded_init(void) {
    /* hiredis's default functions are static: a fresh reader points to them. */
    redisReader *r = redisReaderCreate();
    if (!r) return;
    guarded_fns = *r->fn;
    default_create_array = guarded_fns.createArray;
    guarded_fns.createArray = guarded_create_array;
    redisReaderFree(r);
}

/* The guarded functions, or NULL when they could not be set up. */
static redisReplyObjectFunctions *guarded_functions(void) {
    pthread_once(&guarded_once, guarded_init);
    return default_create_array ? &guarded_fns : NULL;
}

/* True when the reader holds more unparsed bytes than any reply of ours can
 * take: reading more would only grow its buffer. */
static bool reader_too_full(const redisReader *r) {
    return r->len - r->pos > READER_MAX;
}

/* After a reader failure: the refusal's reason, or the reader's own error
 * (a protocol error; on a non-blocking context redisGetReply does no I/O). */
static void set_reader_err(link_t *l, const char *what, const redisReader *r) {
    if (reader_refused) set_err(l, "reply refused", reader_refused);
    else set_err(l, what, r->errstr[0] ? r->errstr : "malformed reply");
    reader_refused = NULL;
}

/* ---- one connection ---- */

static void link_close(link_t *l) {
    if (l->c) redisFree(l->c);
    l->c = NULL;
}

static int link_auth(link_t *l);

/* Connects without blocking past CONNECT_TIMEOUT_MS or broker_close.
 * Returns 0 or -1 (l->err says why). Name resolution (getaddrinfo, inside
 * redisConnectNonBlock) is the one step that can still block; numeric
 * addresses and /etc/hosts names do not. */
static int link_connect(link_t *l) {
    broker_t *b = l->b;
    l->c = redisConnectNonBlock(b->host, b->port);
    if (!l->c) {
        set_err(l, "connect", "out of memory");
        return -1;
    }
    if (l->c->err) {
        set_ctx_err(l, "connect");
        link_close(l);
        return -1;
    }
    int r = wait_ready(l, POLLOUT, now_ms() + CONNECT_TIMEOUT_MS);
    if (r <= 0) {
        if (r == 0) set_err(l, "connect", "timed out");
        link_close(l);
        return -1;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(l->c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) soerr = errno;
    if (soerr) {
        set_errno(l, "connect", soerr);
        link_close(l);
        return -1;
    }
    if (redisEnableKeepAlive(l->c) != REDIS_OK) {
        set_ctx_err(l, "keepalive");
        link_close(l);
        return -1;
    }
    redisReplyObjectFunctions *fns = guarded_functions();
    if (!fns) {
        set_err(l, "connect", "out of memory");
        link_close(l);
        return -1;
    }
    l->c->reader->fn = fns;
    l->last_rx_ms = now_ms();
    if (link_auth(l) != 0) {
        link_close(l);
        return -1;
    }
    return 0;
}

/* Writes the whole output buffer. Returns 0 or -1. */
static int link_flush(link_t *l, int64_t deadline) {
    for (;;) {
        int done = 0;
        if (redisBufferWrite(l->c, &done) != REDIS_OK) {
            set_ctx_err(l, "write");
            return -1;
        }
        if (done) return 0;
        int r = wait_ready(l, POLLOUT, deadline);
        if (r == 0) set_err(l, "write", "timed out");
        if (r <= 0) return -1;
    }
}

/* Reads one reply. Returns 1 with *out set (free it with freeReplyObject),
 * 0 when the deadline passed with no complete reply, -1 on error. */
static int link_read(link_t *l, int64_t deadline, redisReply **out) {
    for (;;) {
        void *reply = NULL;
        reader_refused = NULL;
        /* On a non-blocking context this only parses what was read already. */
        if (redisGetReply(l->c, &reply) != REDIS_OK) {
            set_reader_err(l, "read", l->c->reader);
            return -1;
        }
        if (reply) {
            *out = reply;
            return 1;
        }
        if (reader_too_full(l->c->reader)) {
            set_err(l, "reply refused", "more than 8 MiB without a whole reply");
            return -1;
        }
        int r = wait_ready(l, POLLIN, deadline);
        if (r <= 0) return r;
        if (redisBufferRead(l->c) != REDIS_OK) {
            set_ctx_err(l, "read");
            return -1;
        }
        l->last_rx_ms = now_ms();
    }
}

/* AUTH, when the url carried a password; the password itself is never
 * logged (l->err gets Redis's answer). Returns 0 or -1. */
static int link_auth(link_t *l) {
    broker_t *b = l->b;
    if (!b->has_pass) return 0;
    int rc = b->user_len ? redisAppendCommand(l->c, "AUTH %b %b", b->user, b->user_len, b->pass, b->pass_len)
                         : redisAppendCommand(l->c, "AUTH %b", b->pass, b->pass_len);
    if (rc != REDIS_OK) {
        set_ctx_err(l, "AUTH");
        return -1;
    }
    if (link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) return -1;
    redisReply *r = NULL;
    int got = link_read(l, now_ms() + IO_TIMEOUT_MS, &r);
    if (got <= 0) {
        if (got == 0) set_err(l, "AUTH", "no answer");
        return -1;
    }
    rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        set_err(l, "AUTH refused", r->str);
        rc = -1;
    } else if (r->type != REDIS_REPLY_STATUS) {
        set_err(l, "AUTH", "unexpected answer");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* A connect attempt failed: say so, at most once per LOG_INTERVAL_MS. */
static void log_connect_failure(link_t *l) {
    uint64_t suppressed;
    l->failures++;
    if (rl_allow(&l->rl_conn, now_ms(), &suppressed)) {
        if (l->failures == 1)
            log_warn("broker", "%s: cannot reach %s (%s); retrying", l->role, l->b->url, l->err);
        else
            log_warn("broker", "%s: still cannot reach %s (%s) after %u attempts", l->role,
                     l->b->url, l->err, l->failures);
    }
}

/* An established connection failed. */
static void log_lost(link_t *l) {
    uint64_t suppressed;
    char buf[48];
    if (rl_allow(&l->rl_lost, now_ms(), &suppressed))
        log_warn("broker", "%s: connection lost (%s); reconnecting%s", l->role, l->err,
                 note(suppressed, buf, sizeof buf));
}

/* The back-off is not reset by a successful connection but by one that
 * lasted: a server that accepts and then drops every connection (a crash
 * loop, a client limit) is retried ever more slowly, not ten times a second,
 * and the subscriber does not call on_reset ten times a second either. */
static void connected_again(link_t *l) {
    l->up_ms = now_ms();
    l->failures = 0;
    l->rl_conn.next_ms = 0; /* the next outage is reported at once */
    l->rl_conn.suppressed = 0;
}

static void connection_ended(link_t *l) {
    link_close(l);
    if (now_ms() - l->up_ms >= STABLE_MS) l->backoff_ms = BACKOFF_MIN_MS;
}

static bool str_is(const redisReply *r, const char *s) {
    size_t n = strlen(s);
    return r->type == REDIS_REPLY_STRING && r->len == n && memcmp(r->str, s, n) == 0;
}

/* ---- subscriber ---- */

/* SUBSCRIBE and wait for ["subscribe", channel, count]. Returns 0 or -1. */
static int sub_subscribe(link_t *l) {
    broker_t *b = l->b;
    if (redisAppendCommand(l->c, "SUBSCRIBE %b", b->channel, b->channel_len) != REDIS_OK) {
        set_ctx_err(l, "SUBSCRIBE");
        return -1;
    }
    if (link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) return -1;
    redisReply *r = NULL;
    int got = link_read(l, now_ms() + IO_TIMEOUT_MS, &r);
    if (got <= 0) {
        if (got == 0) set_err(l, "SUBSCRIBE", "no answer");
        return -1;
    }
    int rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        set_err(l, "SUBSCRIBE refused", r->str);
        rc = -1;
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !str_is(r->element[0], "subscribe") ||
               r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len != b->channel_len ||
               memcmp(r->element[1]->str, b->channel, b->channel_len) != 0) {
        set_err(l, "SUBSCRIBE", "unexpected answer");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

static void drop_payload(link_t *l, const char *why) {
    uint64_t suppressed;
    char buf[48];
    if (rl_allow(&l->rl_payload, now_ms(), &suppressed))
        log_warn("broker", "subscriber: dropped a payload from redis (%s)%s", why, note(suppressed, buf, sizeof buf));
}

/* A "message" reply: a string payload on our channel goes to on_message,
 * whose owner checks its format (broker.h, trust boundary); anything else
 * is dropped with a warning. */
static void sub_message(link_t *l, const redisReply *r) {
    broker_t *b = l->b;
    const redisReply *ch = r->element[1], *pl = r->element[2];
    if (ch->type != REDIS_REPLY_STRING || ch->len != b->channel_len || memcmp(ch->str, b->channel, ch->len) != 0)
        drop_payload(l, "a message from another channel");
    else if (pl->type != REDIS_REPLY_STRING)
        drop_payload(l, "a payload that is not a string");
    else
        b->cb.on_message(b->cb.ctx, pl->str, pl->len);
}

/* One reply on an established subscription. Returns 0, or -1 when the
 * subscription is gone. */
static int sub_handle(link_t *l, const redisReply *r) {
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING) {
        const redisReply *kind = r->element[0];
        if (str_is(kind, "message")) {
            if (r->elements == 3) sub_message(l, r);
            else drop_payload(l, "a message reply of the wrong shape");
            return 0;
        } else if (str_is(kind, "pong") || str_is(kind, "subscribe")) {
            return 0;
        } else if (str_is(kind, "unsubscribe")) {
            set_err(l, "subscription", "unsubscribed by the server");
            return -1;
        }
    } else if (r->type == REDIS_REPLY_ERROR) {
        uint64_t suppressed;
        char buf[48];
        if (rl_allow(&l->rl_err, now_ms(), &suppressed))
            log_warn("broker", "subscriber: error from redis: %s%s", r->str, note(suppressed, buf, sizeof buf));
        return 0;
    }
    log_debug("broker", "subscriber: ignored a reply of type %d", r->type);
    return 0;
}

/* Reads the subscription until it fails or the broker closes. */
static void sub_loop(link_t *l) {
    int64_t ping_ms = 0; /* when the last PING went out */
    for (;;) {
        bool ping_due = ping_ms <= l->last_rx_ms; /* no PING out since the last byte */
        int64_t deadline = l->last_rx_ms + PING_IDLE_MS + (ping_due ? 0 : PING_TIMEOUT_MS);
        redisReply *r = NULL;
        int got = link_read(l, deadline, &r);
        if (got < 0) return;
        if (got == 0) {
            if (!ping_due) {
                set_err(l, "subscription", "no answer to PING: connection presumed dead");
                return;
            }
            if (redisAppendCommand(l->c, "PING") != REDIS_OK) {
                set_ctx_err(l, "PING");
                return;
            }
            if (link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) return;
            ping_ms = now_ms();
            continue;
        }
        int rc = sub_handle(l, r);
        freeReplyObject(r);
        if (rc != 0) return;
    }
}

static void *sub_main(void *arg) {
    broker_t *b = arg;
    pthread_setname_np(pthread_self(), "redis-sub");
    link_t l = {.b = b, .role = "subscriber", .is_sub = true, .wake_fd = b->sub_wake,
                .backoff_ms = BACKOFF_MIN_MS};
    while (!atomic_load(&b->stopping)) {
        if (link_connect(&l) != 0 || sub_subscribe(&l) != 0) {
            link_close(&l);
            if (atomic_load(&b->stopping)) break;
            log_connect_failure(&l);
            backoff_sleep(&l);
            continue;
        }
        connected_again(&l);
        atomic_store(&b->subscribed, 1);
        pthread_mutex_lock(&b->mu);
        bool first = !b->subscribed_once;
        b->subscribed_once = true;
        pthread_cond_broadcast(&b->cv); /* opens the publisher's gate */
        pthread_mutex_unlock(&b->mu);
        log_info("broker", "subscribed to channel %s on %s%s", b->channel, b->url,
                 first ? "" : " again");
        /* Before any message of the new subscription: the hub ends its
         * streams, whose clients then catch up from the store. */
        if (!first && b->cb.on_reset) b->cb.on_reset(b->cb.ctx);

        sub_loop(&l);

        atomic_store(&b->subscribed, 0);
        connection_ended(&l);
        if (atomic_load(&b->stopping)) break;
        log_lost(&l);
        /* A Redis restart refuses connections for a while: wait before the
         * first attempt too, rather than spending it at once. */
        backoff_sleep(&l);
    }
    return NULL;
}

/* ---- publisher ---- */

/* On a healthy idle connection the server sends nothing: anything readable
 * (end of file, a reset, stray bytes) means the connection is unusable. */
static bool pub_alive(link_t *l) {
    struct pollfd p = {.fd = l->c->fd, .events = POLLIN};
    int n;
    do n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    if (n < 0) {
        set_errno(l, "poll", errno);
        return false;
    }
    if (n == 0) return true;
    if (redisBufferRead(l->c) != REDIS_OK) set_ctx_err(l, "idle connection");
    else set_err(l, "idle connection", "unexpected data from the server");
    return false;
}

static void count_lost(link_t *l, size_t n) {
    broker_t *b = l->b;
    uint64_t suppressed;
    char buf[48];
    pthread_mutex_lock(&b->mu);
    b->dropped += n;
    uint64_t total = b->dropped;
    pthread_mutex_unlock(&b->mu);
    if (rl_allow(&l->rl_batch, now_ms(), &suppressed))
        log_warn("broker", "publisher: %zu payload(s) may not have been published (%s); %llu lost so far%s",
                 n, l->err, (unsigned long long)total, note(suppressed, buf, sizeof buf));
}

/* Sends up to one batch from the queue and reads its replies. Returns 0, or
 * -1 when the connection failed (the batch is then lost, see the top). */
static int pub_batch(link_t *l) {
    broker_t *b = l->b;
    qnode_t *batch = NULL, **tail = &batch;
    size_t n = 0, bytes = 0;
    pthread_mutex_lock(&b->mu);
    while (b->q_head && n < BATCH_MAX_ITEMS && (n == 0 || bytes + b->q_head->len <= BATCH_MAX_BYTES)) {
        qnode_t *q = q_pop(b);
        q->next = NULL;
        *tail = q;
        tail = &q->next;
        n++;
        bytes += q->len;
    }
    pthread_mutex_unlock(&b->mu);
    if (n == 0) return 0;

    /* hiredis copies each command into its output buffer: the nodes can go
     * as soon as they are appended. */
    int rc = 0;
    for (qnode_t *q = batch; q; q = q->next) {
        if (rc == 0 && redisAppendCommand(l->c, "PUBLISH %b %b", b->channel, b->channel_len,
                                          q->data, q->len) != REDIS_OK) {
            set_ctx_err(l, "PUBLISH");
            rc = -1;
        }
    }
    q_free_all(batch);
    if (rc == 0 && link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) rc = -1;
    size_t answered = 0;
    while (rc == 0 && answered < n) {
        redisReply *r = NULL;
        int got = link_read(l, now_ms() + IO_TIMEOUT_MS, &r);
        if (got <= 0) {
            if (got == 0) set_err(l, "PUBLISH", "no answer");
            rc = -1;
            break;
        }
        answered++;
        if (r->type == REDIS_REPLY_ERROR) {
            /* Redis did not publish this one (an ACL, say), but the
             * connection is fine. */
            uint64_t suppressed;
            char buf[48];
            pthread_mutex_lock(&b->mu);
            b->dropped++;
            pthread_mutex_unlock(&b->mu);
            if (rl_allow(&l->rl_err, now_ms(), &suppressed))
                log_warn("broker", "publisher: PUBLISH refused: %s%s", r->str,
                         note(suppressed, buf, sizeof buf));
        } else if (r->type != REDIS_REPLY_INTEGER) {
            set_err(l, "PUBLISH", "unexpected answer");
            rc = -1;
        }
        freeReplyObject(r);
    }
    if (rc != 0) count_lost(l, n - answered);
    return rc;
}

static void *pub_main(void *arg) {
    broker_t *b = arg;
    pthread_setname_np(pthread_self(), "redis-pub");
    link_t l = {.b = b, .role = "publisher", .is_sub = false, .wake_fd = b->pub_wake,
                .backoff_ms = BACKOFF_MIN_MS};
    for (;;) {
        if (!l.c) {
            /* Closing: no new connection; what is queued is dropped below. */
            if (atomic_load(&b->stopping)) break;
            if (link_connect(&l) != 0) {
                if (atomic_load(&b->stopping)) break;
                log_connect_failure(&l);
                backoff_sleep(&l);
                continue;
            }
            if (l.failures) log_info("broker", "publisher: connected to %s", b->url);
            connected_again(&l);
        }

        pthread_mutex_lock(&b->mu);
        bool ready = b->q_head && (b->subscribed_once || b->stopping);
        if (!ready && !b->stopping) {
            /* One wait, then round the loop: a tick looks at the idle
             * connection, so a Redis restart is noticed before the next
             * batch is handed to a dead socket. */
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            long ns = ts.tv_nsec + (long)(IDLE_CHECK_MS % 1000) * 1000000L;
            ts.tv_sec += IDLE_CHECK_MS / 1000 + ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&b->cv, &b->mu, &ts);
            ready = b->q_head && (b->subscribed_once || b->stopping);
        }
        bool stopping = b->stopping;
        pthread_mutex_unlock(&b->mu);

        if (stopping && (!ready || now_ms() >= b->grace_deadline)) break;
        if (!pub_alive(&l)) {
            log_lost(&l);
            connection_ended(&l);
            backoff_sleep(&l);
            continue;
        }
        if (ready && pub_batch(&l) != 0) {
            connection_ended(&l);
            if (!atomic_load(&b->stopping)) {
                log_lost(&l);
                backoff_sleep(&l);
            }
        }
    }
    link_close(&l);
    return NULL;
}

/* ---- interface ---- */

static bool host_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

typedef struct url {
    char host[HOST_MAX + 1];
    int port;
    bool has_pass;
    char user[AUTH_MAX + 1], pass[AUTH_MAX + 1];
    size_t user_len, pass_len;
} url_t;

/* Percent-decodes s[0..n) into out (AUTH_MAX bytes and a NUL). Raw spaces
 * and control characters are refused: a url is one printable word. */
static int pct_decode(const char *s, size_t n, char *out, size_t *len) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = n - i >= 3 ? uuid_hex_digit(s[i + 1]) : -1, lo = n - i >= 3 ? uuid_hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if ((unsigned char)c <= ' ' || c == 0x7f) {
            return -1;
        }
        if (k == AUTH_MAX) return -1;
        out[k++] = c;
    }
    out[k] = '\0';
    *len = k;
    return 0;
}

/* "[USER]:PASSWORD@" at *p, up to the last '@' before the first '/' (an '@'
 * or '/' inside them must be percent-encoded). Absent: nothing to do. */
static int parse_userinfo(const char **p, url_t *u) {
    size_t auth_len = strcspn(*p, "/");
    const char *at = memrchr(*p, '@', auth_len);
    if (!at) return 0;
    const char *colon = memchr(*p, ':', (size_t)(at - *p));
    if (!colon || colon + 1 == at) return -EINVAL; /* a user needs a password */
    if (pct_decode(*p, (size_t)(colon - *p), u->user, &u->user_len) != 0 ||
        pct_decode(colon + 1, (size_t)(at - colon - 1), u->pass, &u->pass_len) != 0)
        return -EINVAL;
    u->has_pass = true;
    *p = at + 1;
    return 0;
}

/* "redis://[[USER]:PASSWORD@]HOST[:PORT][/[DB]]": HOST a name, an IPv4
 * address, or an IPv6 address in brackets; PORT 1-65535, default 6379. A
 * database number is accepted and ignored: pub/sub channels are not per
 * database. Query strings and other schemes (rediss, unix) are refused. */
static int parse_url(const char *url, url_t *u) {
    static const char scheme[] = "redis://";
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0) return -EINVAL;
    const char *p = url + sizeof scheme - 1;
    if (parse_userinfo(&p, u) != 0) return -EINVAL;
    const char *h = p;
    size_t hlen;
    if (*p == '[') {
        h = ++p;
        while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
               *p == ':' || *p == '.')
            p++;
        if (*p != ']') return -EINVAL;
        hlen = (size_t)(p - h);
        p++;
    } else {
        while (host_char(*p)) p++;
        hlen = (size_t)(p - h);
    }
    if (hlen == 0 || hlen > HOST_MAX) return -EINVAL;
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    long v = 6379;
    if (*p == ':') {
        p++;
        v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || v < 1 || v > 65535) return -EINVAL;
    }
    if (*p == '/') {
        p++;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p != '\0') return -EINVAL;
    u->port = (int)v;
    return 0;
}

/* Frees what broker_open may have set up; the threads must not run. */
static void broker_free(broker_t *b) {
    q_free_all(b->q_head);
    if (b->sub_wake >= 0) close(b->sub_wake);
    if (b->pub_wake >= 0) close(b->pub_wake);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->channel);
    explicit_bzero(b->pass, sizeof b->pass); /* no copy of it left in freed memory */
    free(b);
}

static void stop_threads(broker_t *b) {
    pthread_mutex_lock(&b->mu);
    b->grace_deadline = now_ms() + CLOSE_GRACE_MS;
    atomic_store(&b->stopping, true);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    (void)eventfd_write(b->sub_wake, 1);
    (void)eventfd_write(b->pub_wake, 1);
    if (b->sub_started) pthread_join(b->sub_thread, NULL);
    if (b->pub_started) pthread_join(b->pub_thread, NULL);
    b->sub_started = b->pub_started = false;
}

/* Copies the parsed url into b (credentials included) and names b in log
 * lines without them. */
static void take_url(broker_t *b, const url_t *u) {
    memcpy(b->host, u->host, sizeof b->host);
    b->port = u->port;
    b->has_pass = u->has_pass;
    memcpy(b->user, u->user, sizeof b->user);
    memcpy(b->pass, u->pass, sizeof b->pass);
    b->user_len = u->user_len;
    b->pass_len = u->pass_len;
    if (strchr(b->host, ':')) snprintf(b->url, sizeof b->url, "redis://[%s]:%d", b->host, b->port);
    else snprintf(b->url, sizeof b->url, "redis://%s:%d", b->host, b->port);
}

/* The two threads. The threads inherit the signal mask: block everything
 * asynchronous (see the top of the file); faults stay deliverable, for
 * sanitizers. Returns 0 or a positive errno (threads stopped again). */
static int start_threads(broker_t *b) {
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&b->sub_thread, NULL, sub_main, b);
    b->sub_started = rc == 0;
    if (rc == 0) {
        rc = pthread_create(&b->pub_thread, NULL, pub_main, b);
        b->pub_started = rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) stop_threads(b);
    return rc;
}

int broker_open(const char *url, const char *channel, const broker_callbacks_t *cb, broker_t **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    if (!url || !channel || !cb || !cb->on_message) return -EINVAL;
    url_t u;
    int rc = parse_url(url, &u);
    size_t chlen = strnlen(channel, CHANNEL_MAX + 1);
    broker_t *b = rc == 0 && chlen >= 1 && chlen <= CHANNEL_MAX ? calloc(1, sizeof *b) : NULL;
    if (b) take_url(b, &u);
    explicit_bzero(&u, sizeof u); /* the password lives in b only */
    if (rc != 0 || chlen == 0 || chlen > CHANNEL_MAX) return -EINVAL;
    if (!b) return -ENOMEM;
    b->sub_wake = b->pub_wake = -1;
    b->cb = *cb;
    b->channel_len = chlen;
    atomic_init(&b->stopping, false);
    atomic_init(&b->subscribed, 0);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&b->mu);
        explicit_bzero(b->pass, sizeof b->pass);
        free(b);
        return -rc;
    }
    b->channel = malloc(chlen + 1);
    b->sub_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->pub_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = !b->channel ? -ENOMEM : b->sub_wake < 0 || b->pub_wake < 0 ? -errno : 0;
    if (rc == 0) {
        memcpy(b->channel, channel, chlen + 1);
        log_info("broker", "%s channel %s%s", b->url, b->channel, b->has_pass ? " (with AUTH)" : "");
        rc = -start_threads(b);
    }
    if (rc != 0) {
        broker_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void broker_publish(broker_t *b, const char *payload, size_t len) {
    uint64_t suppressed = 0, total = 0;
    char buf[48];
    const char *why = NULL;
    qnode_t *n = NULL, *evicted = NULL, **etail = &evicted;
    if (len > PAYLOAD_MAX) why = "payload too large";
    else if (!(n = malloc(sizeof *n + len))) why = "out of memory";
    if (n) {
        n->next = NULL;
        n->len = len;
        if (len) memcpy(n->data, payload, len);
    }

    pthread_mutex_lock(&b->mu);
    if (n && atomic_load(&b->stopping)) {
        /* broker_close has started: a use after close would be the
         * caller's bug, but a publish racing with close is not. */
        free(n);
        n = NULL;
        why = "broker closing";
    }
    if (n) {
        /* Full: the oldest go, so that what is kept is the most recent. */
        while (b->q_head && (b->q_items >= QUEUE_MAX_ITEMS || b->q_bytes + len > QUEUE_MAX_BYTES)) {
            qnode_t *old = q_pop(b);
            old->next = NULL;
            *etail = old;
            etail = &old->next;
            b->dropped++;
            why = "queue full while redis is unreachable: dropped the oldest";
        }
        if (b->q_tail) b->q_tail->next = n;
        else b->q_head = n;
        b->q_tail = n;
        b->q_items++;
        b->q_bytes += len;
        pthread_cond_signal(&b->cv);
    } else {
        b->dropped++;
    }
    bool say = why && rl_allow(&b->rl_drop, now_ms(), &suppressed);
    total = b->dropped;
    size_t items = b->q_items, bytes = b->q_bytes;
    pthread_mutex_unlock(&b->mu);

    q_free_all(evicted);
    if (say)
        log_warn("broker", "publish: %s (queue %zu payloads, %zu bytes; %llu lost so far)%s", why,
                 items, bytes, (unsigned long long)total, note(suppressed, buf, sizeof buf));
}

int broker_connected(broker_t *b) {
    return atomic_load(&b->subscribed);
}

void broker_close(broker_t *b) {
    if (!b) return;
    stop_threads(b);
    /* The threads are gone: no lock needed. */
    if (b->q_items)
        log_warn("broker", "closing with %zu payload(s) not published (redis unreachable or too slow)",
                 b->q_items);
    log_info("broker", "closed");
    broker_free(b);
}

/* ---- tests and fuzzing ---- */

int broker_feed_subscriber(const char *channel, const char *bytes, size_t len, const broker_callbacks_t *cb) {
    redisReplyObjectFunctions *fns = guarded_functions();
    redisReader *rd = fns ? redisReaderCreate() : NULL;
    if (!rd) return -1;
    rd->fn = fns;
    /* A broker and a link without threads or connection: what sub_handle
     * touches (the channel, the callbacks, the error and log state). */
    broker_t b = {.channel = (char *)channel, .channel_len = strlen(channel), .cb = *cb};
    link_t l = {.b = &b, .role = "subscriber", .is_sub = true};
    int handled = 0;
    size_t off = 0;
    while (handled >= 0) {
        void *reply = NULL;
        reader_refused = NULL;
        if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
            set_reader_err(&l, "read", rd);
            handled = -1;
        } else if (reply) {
            int rc = sub_handle(&l, reply);
            freeReplyObject(reply);
            handled = rc == 0 ? handled + 1 : -1;
        } else if (off == len) {
            break;
        } else if (reader_too_full(rd)) {
            handled = -1;
        } else {
            /* As redisBufferRead: at most 16 KiB a read. */
            size_t n = len - off < 16384 ? len - off : 16384;
            if (redisReaderFeed(rd, bytes + off, n) != REDIS_OK) handled = -1;
            off += n;
        }
    }
    redisReaderFree(rd);
    return handled;
}
