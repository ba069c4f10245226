/* broker_internal.h - what the files of src/events/redis/ share, and only
 * they: the broker (events/broker.h, the one door in) on Redis pub/sub, with
 * hiredis. Nothing outside this folder includes this header.
 *
 *   broker_redis.c   broker.h's lifecycle: open (url, channel, threads),
 *                    broker_connected, close
 *   broker_url.c     "redis://..." into host, port and credentials
 *   broker_conn.c    one RESP connection (link_t): connect, AUTH, write,
 *                    read one reply, each within a deadline and woken by
 *                    broker_close; back-off; rate-limited warnings
 *   broker_reader.c  what one reply may cost (broker.h, trust boundary):
 *                    hiredis's reply builder with a guard
 *   broker_sub.c     the subscriber thread: SUBSCRIBE, heartbeat, reconnection
 *   broker_fanout.c  what arrives on the subscription: payloads to
 *                    on_message, the rest dropped; on a confirmed
 *                    subscription, the publisher's gate and on_reset
 *   broker_pub.c     the publisher: broker_publish's bounded queue and the
 *                    thread that sends it in batches
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
 *    queue (up to QUEUE_MAX_ITEMS / QUEUE_MAX_BYTES; beyond, the oldest go),
 *    and are dropped when it connects again: by then the streams they were
 *    for may have caught up from the store (a Redis restart resets every
 *    subscriber), and a stale event would repeat a message there;
 *  - a batch already handed to a connection that then fails is not sent
 *    again: Redis may have delivered part of it, and a duplicate is worse for
 *    the event streams than a gap, which the store repairs;
 *  - Redis delivers nothing to a subscriber while it is not subscribed.
 * Every such gap is announced: the subscriber's by on_reset (every loss of
 * the subscription is followed by one), the publisher's by the loss notice
 * (b->lost), which goes out first in its next batch, to every instance.
 * The publisher holds its queue until this broker's own subscription has
 * been confirmed once: an instance's first messages reach its own streams
 * even when Redis comes up after the instance.
 *
 * Signals. The threads start with every asynchronous signal blocked: the
 * process's signal handling (sigwait in the main thread) stays where it is,
 * and a write to a socket the server has closed makes write(2) fail with
 * EPIPE instead of killing the process with SIGPIPE (hiredis 0.14 uses
 * write(2), not send(MSG_NOSIGNAL)).
 */
#ifndef MESSENGER_EVENTS_REDIS_BROKER_INTERNAL_H
#define MESSENGER_EVENTS_REDIS_BROKER_INTERNAL_H

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "events/broker.h"

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

/* One kind of warning's rate limit (src/auth/ratelimit.h is the API's
 * request limiter, another thing). */
typedef struct warn_limit {
    int64_t next_ms;      /* no line before this time */
    uint64_t suppressed;  /* lines held back since the last one */
} warn_limit_t;

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
    bool subscribed_once;    /* the publisher's gate, see "Loss" above */
    uint64_t dropped;        /* payloads known not to be published */
    bool lost;               /* payloads may be lost since the last loss notice went out */
    warn_limit_t rl_drop;

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
    warn_limit_t rl_conn;    /* "cannot connect" lines */
    warn_limit_t rl_lost;    /* "connection lost" lines (a flapping Redis) */
    warn_limit_t rl_batch;   /* publisher: batches lost with their connection */
    warn_limit_t rl_err;     /* error replies */
    warn_limit_t rl_payload; /* subscriber: payloads dropped as invalid */
    char err[160];           /* why the last operation failed */
} link_t;

/* A parsed "redis://" url (broker_url.c). */
typedef struct url {
    char host[HOST_MAX + 1];
    int port;
    bool has_pass;
    char user[AUTH_MAX + 1], pass[AUTH_MAX + 1];
    size_t user_len, pass_len;
} url_t;

static inline int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline bool str_is(const redisReply *r, const char *s) {
    size_t n = strlen(s);
    return r->type == REDIS_REPLY_STRING && r->len == n && memcmp(r->str, s, n) == 0;
}

/* ---- broker_url.c ---- */

/* "redis://[[USER]:PASSWORD@]HOST[:PORT][/[DB]]" into *u. Returns 0 or
 * -EINVAL. */
int broker_url_parse(const char *url, url_t *u);

/* ---- broker_conn.c ---- */

/* True when a line may be logged now; *suppressed gets how many were held
 * back since the previous one, and warn_limit_note() says so in words. */
bool warn_limit_allow(warn_limit_t *rl, int64_t now, uint64_t *suppressed);
const char *warn_limit_note(uint64_t suppressed, char *buf, size_t cap);

/* l->err: "what: detail", errno's text, or the context's own error. */
void link_set_err(link_t *l, const char *what, const char *detail);
void link_set_errno(link_t *l, const char *what, int e);
void link_set_ctx_err(link_t *l, const char *what);

/* Connects (and AUTHs) without blocking past CONNECT_TIMEOUT_MS or
 * broker_close. Returns 0 or -1 (l->err says why). */
int link_connect(link_t *l);
void link_close(link_t *l);
/* Writes the whole output buffer. Returns 0 or -1. */
int link_flush(link_t *l, int64_t deadline);
/* Reads one reply. Returns 1 with *out set (free it with freeReplyObject),
 * 0 when the deadline passed with no complete reply, -1 on error. */
int link_read(link_t *l, int64_t deadline, redisReply **out);
/* Sends what is appended to the output buffer and reads one reply, within
 * IO_TIMEOUT_MS each: a command's answer. Returns 0 with *out set (free it
 * with freeReplyObject), or -1 with l->err set: the connection failed, no
 * answer came, or Redis answered with an error ("<what> refused: ..."). */
int link_call(link_t *l, const char *what, redisReply **out);
/* Sleeps the back-off delay (or until closing starts) and doubles it. */
void link_backoff_sleep(link_t *l);
/* A connect attempt failed / an established connection failed: say so,
 * at most once per LOG_INTERVAL_MS. */
void link_log_connect_failure(link_t *l);
void link_log_lost(link_t *l);
/* A connection is up / has ended (closes it; the back-off goes back to its
 * minimum if it lasted STABLE_MS). */
void link_connected_again(link_t *l);
void link_ended(link_t *l);

/* ---- broker_reader.c ---- */

/* hiredis's reply builder with the guard, or NULL when it could not be set
 * up. Set it as a reader's fn before the reader parses anything. */
redisReplyObjectFunctions *reader_guarded_functions(void);
/* Call before each attempt to parse a reply: forgets the last refusal. */
void reader_refusal_clear(void);
/* True when the reader holds more unparsed bytes than any reply of ours can
 * take. */
bool reader_too_full(const redisReader *r);
/* After a reader failure: l->err gets the refusal's reason, or the reader's
 * own error. */
void link_set_reader_err(link_t *l, const char *what, const redisReader *r);

/* ---- broker_sub.c, broker_fanout.c ---- */

void *sub_main(void *arg);
/* The subscription is confirmed: opens the publisher's gate, and calls
 * on_reset unless it is the first one. */
void fanout_subscribed(broker_t *b);
/* One reply on an established subscription. Returns 0, or -1 when the
 * subscription is gone. */
int fanout_reply(link_t *l, const redisReply *r);

/* ---- broker_pub.c ---- */

void *pub_main(void *arg);
void q_free_all(qnode_t *n);

#endif
