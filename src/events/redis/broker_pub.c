/* broker_pub.c - the publishing side: broker_publish's bounded queue, and
 * the publisher thread, which sends it in batches on its own connection
 * (see "Loss" in broker_internal.h for what may be lost, and why a batch is
 * never sent twice). */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>

#include "events/redis/broker_internal.h"
#include "util/log.h"

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

void q_free_all(qnode_t *n) {
    while (n) {
        qnode_t *next = n->next;
        free(n);
        n = next;
    }
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
        link_set_errno(l, "poll", errno);
        return false;
    }
    if (n == 0) return true;
    if (redisBufferRead(l->c) != REDIS_OK) link_set_ctx_err(l, "idle connection");
    else link_set_err(l, "idle connection", "unexpected data from the server");
    return false;
}

/* n payloads were not published: counted, and the loss notice is due.
 * With b->mu held. */
static void lose_locked(broker_t *b, size_t n) {
    b->dropped += n;
    b->lost = true;
}

static void count_lost(link_t *l, size_t n) {
    broker_t *b = l->b;
    uint64_t suppressed;
    char buf[48];
    pthread_mutex_lock(&b->mu);
    lose_locked(b, n);
    uint64_t total = b->dropped;
    pthread_mutex_unlock(&b->mu);
    if (warn_limit_allow(&l->rl_batch, now_ms(), &suppressed))
        log_warn("broker", "publisher: %zu payload(s) may not have been published (%s); %llu lost so far%s",
                 n, l->err, (unsigned long long)total, warn_limit_note(suppressed, buf, sizeof buf));
}

/* Takes one batch off the queue: up to BATCH_MAX_ITEMS payloads and
 * BATCH_MAX_BYTES bytes, but always the first payload, whatever its size.
 * *n gets how many; NULL when the queue is empty. */
static qnode_t *pub_take(broker_t *b, size_t *n_out) {
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
    *n_out = n;
    return batch;
}

/* Reads the replies to n PUBLISH commands; *answered gets how many came.
 * Returns 0, or -1 when the connection failed. */
static int pub_replies(link_t *l, size_t n, size_t *answered) {
    broker_t *b = l->b;
    int rc = 0;
    while (rc == 0 && *answered < n) {
        redisReply *r = NULL;
        int got = link_read(l, now_ms() + IO_TIMEOUT_MS, &r);
        if (got <= 0) {
            if (got == 0) link_set_err(l, "PUBLISH", "no answer");
            rc = -1;
            break;
        }
        (*answered)++;
        if (r->type == REDIS_REPLY_ERROR) {
            /* Redis did not publish this one (an ACL, say), but the
             * connection is fine. */
            uint64_t suppressed;
            char buf[48];
            pthread_mutex_lock(&b->mu);
            lose_locked(b, 1);
            pthread_mutex_unlock(&b->mu);
            if (warn_limit_allow(&l->rl_err, now_ms(), &suppressed))
                log_warn("broker", "publisher: PUBLISH refused: %s%s", r->str,
                         warn_limit_note(suppressed, buf, sizeof buf));
        } else if (r->type != REDIS_REPLY_INTEGER) {
            link_set_err(l, "PUBLISH", "unexpected answer");
            rc = -1;
        }
        freeReplyObject(r);
    }
    return rc;
}

/* True when a loss notice is due, and then no longer: the batch that
 * sends it sets b->lost again if it fails. */
static bool notice_take(broker_t *b) {
    pthread_mutex_lock(&b->mu);
    bool due = b->lost && b->cb.loss_notice;
    b->lost = false;
    pthread_mutex_unlock(&b->mu);
    return due;
}

static int pub_append(link_t *l, const char *payload, size_t len) {
    broker_t *b = l->b;
    if (redisAppendCommand(l->c, "PUBLISH %b %b", b->channel, b->channel_len, payload, len) == REDIS_OK) return 0;
    link_set_ctx_err(l, "PUBLISH");
    return -1;
}

/* Sends up to one batch from the queue, the loss notice first when one is
 * due, and reads its replies. Returns 0, or -1 when the connection failed
 * (the batch is then lost, see "Loss" in broker_internal.h). */
static int pub_batch(link_t *l) {
    broker_t *b = l->b;
    bool notice = notice_take(b);
    size_t n;
    qnode_t *batch = pub_take(b, &n);
    if (n == 0 && !notice) return 0;

    /* hiredis copies each command into its output buffer: the nodes can go
     * as soon as they are appended. */
    int rc = notice ? pub_append(l, b->cb.loss_notice, b->cb.loss_notice_len) : 0;
    for (qnode_t *q = batch; q; q = q->next)
        if (rc == 0) rc = pub_append(l, q->data, q->len);
    q_free_all(batch);
    if (rc == 0 && link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) rc = -1;
    size_t total = n + notice, answered = 0;
    if (rc == 0) rc = pub_replies(l, total, &answered);
    /* The notice is first: a failure loses the payloads not answered and
     * the notice too when nothing was (count_lost sets b->lost again). */
    if (rc != 0) count_lost(l, total - answered < n ? total - answered : n);
    return rc;
}

/* A new connection after a lost one: what was queued meanwhile is dropped
 * (see "Loss" in broker_internal.h), and the loss notice becomes due. */
static void pub_drop_backlog(broker_t *b) {
    pthread_mutex_lock(&b->mu);
    qnode_t *q = b->q_head;
    size_t n = b->q_items;
    b->q_head = b->q_tail = NULL;
    b->q_items = b->q_bytes = 0;
    if (n) lose_locked(b, n);
    pthread_mutex_unlock(&b->mu);
    q_free_all(q);
    if (n) log_warn("broker", "publisher: connected again; %zu payload(s) queued meanwhile dropped, "
                              "every event stream told to catch up from the store", n);
}

/* A batch is ready: payloads are queued or a loss notice is due, and the
 * gate is open (this broker's subscription has been confirmed once; see
 * "Loss" in broker_internal.h) or closing has started. With b->mu held. */
static bool pub_ready(const broker_t *b) {
    return (b->q_head || b->lost) && (b->subscribed_once || b->stopping);
}

/* Waits for work, at most IDLE_CHECK_MS. Returns pub_ready(); *stopping
 * says whether closing has started. */
static bool pub_wait(broker_t *b, bool *stopping) {
    pthread_mutex_lock(&b->mu);
    bool ready = pub_ready(b);
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
        ready = pub_ready(b);
    }
    *stopping = b->stopping;
    pthread_mutex_unlock(&b->mu);
    return ready;
}

void *pub_main(void *arg) {
    broker_t *b = arg;
    pthread_setname_np(pthread_self(), "redis-pub");
    link_t l = {.b = b, .role = "publisher", .is_sub = false, .wake_fd = b->pub_wake,
                .backoff_ms = BACKOFF_MIN_MS};
    bool was_connected = false;
    for (;;) {
        if (!l.c) {
            /* Closing: no new connection; what is queued is dropped below. */
            if (atomic_load(&b->stopping)) break;
            if (link_connect(&l) != 0) {
                if (atomic_load(&b->stopping)) break;
                link_log_connect_failure(&l);
                link_backoff_sleep(&l);
                continue;
            }
            if (l.failures) log_info("broker", "publisher: connected to %s", b->url);
            link_connected_again(&l);
            if (was_connected) pub_drop_backlog(b);
            was_connected = true;
        }

        bool stopping;
        bool ready = pub_wait(b, &stopping);
        if (stopping && (!ready || now_ms() >= b->grace_deadline)) break;
        if (!pub_alive(&l)) {
            link_log_lost(&l);
            link_ended(&l);
            link_backoff_sleep(&l);
            continue;
        }
        if (ready && pub_batch(&l) != 0) {
            link_ended(&l);
            if (!atomic_load(&b->stopping)) {
                link_log_lost(&l);
                link_backoff_sleep(&l);
            }
        }
    }
    link_close(&l);
    return NULL;
}

/* ---- interface ---- */

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
            lose_locked(b, 1);
            why = "queue full while redis is unreachable: dropped the oldest";
        }
        if (b->q_tail) b->q_tail->next = n;
        else b->q_head = n;
        b->q_tail = n;
        b->q_items++;
        b->q_bytes += len;
        pthread_cond_signal(&b->cv);
    } else {
        lose_locked(b, 1);
    }
    bool say = why && warn_limit_allow(&b->rl_drop, now_ms(), &suppressed);
    total = b->dropped;
    size_t items = b->q_items, bytes = b->q_bytes;
    pthread_mutex_unlock(&b->mu);

    q_free_all(evicted);
    if (say)
        log_warn("broker", "publish: %s (queue %zu payloads, %zu bytes; %llu lost so far)%s", why,
                 items, bytes, (unsigned long long)total, warn_limit_note(suppressed, buf, sizeof buf));
}
