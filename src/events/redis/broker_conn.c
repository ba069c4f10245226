/* broker_conn.c - one RESP connection of the broker (link_t): connect,
 * AUTH, write the output buffer, read one reply, each within a deadline and
 * woken at once by broker_close (the eventfd polled beside the socket; see
 * broker_internal.h for why non-blocking contexts); the back-off between
 * attempts, and the rate-limited warnings of both threads. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <sys/socket.h>

#include "events/redis/broker_internal.h"
#include "util/log.h"

/* True when a line may be logged now; *suppressed gets how many were held
 * back since the previous one, and warn_limit_note() says so in words. */
bool warn_limit_allow(warn_limit_t *rl, int64_t now, uint64_t *suppressed) {
    if (now < rl->next_ms) {
        rl->suppressed++;
        return false;
    }
    *suppressed = rl->suppressed;
    rl->suppressed = 0;
    rl->next_ms = now + LOG_INTERVAL_MS;
    return true;
}

const char *warn_limit_note(uint64_t suppressed, char *buf, size_t cap) {
    if (!suppressed) return "";
    snprintf(buf, cap, " (%llu similar not logged)", (unsigned long long)suppressed);
    return buf;
}

void link_set_err(link_t *l, const char *what, const char *detail) {
    snprintf(l->err, sizeof l->err, "%s%s%s", what, detail && *detail ? ": " : "",
             detail ? detail : "");
}

void link_set_errno(link_t *l, const char *what, int e) {
    char buf[96];
    link_set_err(l, what, strerror_r(e, buf, sizeof buf));
}

/* The context's own error, with errno's text when hiredis says "I/O error"
 * without one. */
void link_set_ctx_err(link_t *l, const char *what) {
    if (l->c->err == REDIS_ERR_IO && l->c->errstr[0] == '\0') link_set_errno(l, what, errno);
    else if (l->c->err == REDIS_ERR_EOF) link_set_err(l, what, "connection closed by the server");
    else link_set_err(l, what, l->c->errstr[0] ? l->c->errstr : "unknown hiredis error");
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
            link_set_err(l, "closing", NULL);
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
            link_set_errno(l, "poll", errno);
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
void link_backoff_sleep(link_t *l) {
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

/* ---- one connection ---- */

void link_close(link_t *l) {
    if (l->c) redisFree(l->c);
    l->c = NULL;
}

/* Writes the whole output buffer. Returns 0 or -1. */
int link_flush(link_t *l, int64_t deadline) {
    for (;;) {
        int done = 0;
        if (redisBufferWrite(l->c, &done) != REDIS_OK) {
            link_set_ctx_err(l, "write");
            return -1;
        }
        if (done) return 0;
        int r = wait_ready(l, POLLOUT, deadline);
        if (r == 0) link_set_err(l, "write", "timed out");
        if (r <= 0) return -1;
    }
}

/* Reads one reply. Returns 1 with *out set (free it with freeReplyObject),
 * 0 when the deadline passed with no complete reply, -1 on error. */
int link_read(link_t *l, int64_t deadline, redisReply **out) {
    for (;;) {
        void *reply = NULL;
        reader_refusal_clear();
        /* On a non-blocking context this only parses what was read already. */
        if (redisGetReply(l->c, &reply) != REDIS_OK) {
            link_set_reader_err(l, "read", l->c->reader);
            return -1;
        }
        if (reply) {
            *out = reply;
            return 1;
        }
        if (reader_too_full(l->c->reader)) {
            link_set_err(l, "reply refused", "more than 8 MiB without a whole reply");
            return -1;
        }
        int r = wait_ready(l, POLLIN, deadline);
        if (r <= 0) return r;
        if (redisBufferRead(l->c) != REDIS_OK) {
            link_set_ctx_err(l, "read");
            return -1;
        }
        l->last_rx_ms = now_ms();
    }
}

int link_call(link_t *l, const char *what, redisReply **out) {
    if (link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) return -1;
    redisReply *r = NULL;
    int got = link_read(l, now_ms() + IO_TIMEOUT_MS, &r);
    if (got <= 0) {
        if (got == 0) link_set_err(l, what, "no answer");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        char refused[32];
        snprintf(refused, sizeof refused, "%s refused", what);
        link_set_err(l, refused, r->str);
        freeReplyObject(r);
        return -1;
    }
    *out = r;
    return 0;
}

/* AUTH, when the url carried a password; the password itself is never
 * logged (l->err gets Redis's answer). Returns 0 or -1. */
static int link_auth(link_t *l) {
    broker_t *b = l->b;
    if (!b->has_pass) return 0;
    int rc = b->user_len ? redisAppendCommand(l->c, "AUTH %b %b", b->user, b->user_len, b->pass, b->pass_len)
                         : redisAppendCommand(l->c, "AUTH %b", b->pass, b->pass_len);
    if (rc != REDIS_OK) {
        link_set_ctx_err(l, "AUTH");
        return -1;
    }
    redisReply *r = NULL;
    if (link_call(l, "AUTH", &r) != 0) return -1;
    rc = 0;
    if (r->type != REDIS_REPLY_STATUS) {
        link_set_err(l, "AUTH", "unexpected answer");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* Connects without blocking past CONNECT_TIMEOUT_MS or broker_close.
 * Returns 0 or -1 (l->err says why). Name resolution (getaddrinfo, inside
 * redisConnectNonBlock) is the one step that can still block; numeric
 * addresses and /etc/hosts names do not. */
int link_connect(link_t *l) {
    broker_t *b = l->b;
    l->c = redisConnectNonBlock(b->host, b->port);
    if (!l->c) {
        link_set_err(l, "connect", "out of memory");
        return -1;
    }
    if (l->c->err) {
        link_set_ctx_err(l, "connect");
        link_close(l);
        return -1;
    }
    int r = wait_ready(l, POLLOUT, now_ms() + CONNECT_TIMEOUT_MS);
    if (r <= 0) {
        if (r == 0) link_set_err(l, "connect", "timed out");
        link_close(l);
        return -1;
    }
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(l->c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0) soerr = errno;
    if (soerr) {
        link_set_errno(l, "connect", soerr);
        link_close(l);
        return -1;
    }
    if (redisEnableKeepAlive(l->c) != REDIS_OK) {
        link_set_ctx_err(l, "keepalive");
        link_close(l);
        return -1;
    }
    redisReplyObjectFunctions *fns = reader_guarded_functions();
    if (!fns) {
        link_set_err(l, "connect", "out of memory");
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

/* A connect attempt failed: say so, at most once per LOG_INTERVAL_MS. */
void link_log_connect_failure(link_t *l) {
    uint64_t suppressed;
    l->failures++;
    if (warn_limit_allow(&l->rl_conn, now_ms(), &suppressed)) {
        if (l->failures == 1)
            log_warn("broker", "%s: cannot reach %s (%s); retrying", l->role, l->b->url, l->err);
        else
            log_warn("broker", "%s: still cannot reach %s (%s) after %u attempts", l->role,
                     l->b->url, l->err, l->failures);
    }
}

/* An established connection failed. */
void link_log_lost(link_t *l) {
    uint64_t suppressed;
    char buf[48];
    if (warn_limit_allow(&l->rl_lost, now_ms(), &suppressed))
        log_warn("broker", "%s: connection lost (%s); reconnecting%s", l->role, l->err,
                 warn_limit_note(suppressed, buf, sizeof buf));
}

/* The back-off is not reset by a successful connection but by one that
 * lasted: a server that accepts and then drops every connection (a crash
 * loop, a client limit) is retried ever more slowly, not ten times a second,
 * and the subscriber does not call on_reset ten times a second either. */
void link_connected_again(link_t *l) {
    l->up_ms = now_ms();
    l->failures = 0;
    l->rl_conn.next_ms = 0; /* the next outage is reported at once */
    l->rl_conn.suppressed = 0;
}

void link_ended(link_t *l) {
    link_close(l);
    if (now_ms() - l->up_ms >= STABLE_MS) l->backoff_ms = BACKOFF_MIN_MS;
}
