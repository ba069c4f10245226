/* stream.c - streaming answers (http_server.h: http_respond_stream), for
 * Server-Sent Events.
 *
 * Streams (http_respond_stream) live on after their request was answered:
 * MHD pulls their body through stream_read(), which suspends the connection
 * when nothing is queued; http_stream_write() resumes it. The stream's own
 * mutex orders the two, so that a connection is resumed only when it was
 * suspended by stream_read() and not since resumed.
 *
 * A stream is shared by the connection (until stream_done) and by the
 * application (until http_stream_release): refs counts both, and the last
 * one frees it.
 */
#include <microhttpd.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "http/http_internal.h"
#include "util/defer.h"
#include "util/log.h"

static void stream_unref(http_stream_t *s) {
    pthread_mutex_lock(&s->mu);
    bool last = --s->refs == 0;
    pthread_mutex_unlock(&s->mu);
    if (!last) return;
    buf_free(&s->pending);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Resumes the connection if stream_read parked it. Called with s->mu held. */
static void stream_wake(http_stream_t *s) {
    if (s->suspended && s->conn) {
        s->suspended = false;
        MHD_resume_connection(s->conn);
    }
}

/* Disarms the drain callback if its moment has come (closed, or the queue
 * is short enough) and returns it. Called with s->mu held. */
static http_stream_drained_fn take_drained(http_stream_t *s, void **ctx) {
    http_stream_drained_fn fn = s->on_drained;
    if (!fn || (s->conn && !s->cut && s->pending.len - s->off > s->drained_below)) return NULL;
    s->on_drained = NULL;
    *ctx = s->drained_ctx;
    return fn;
}

/* Runs a drain callback taken by take_drained, without s->mu. */
static void run_drained(http_stream_drained_fn fn, void *ctx) {
    if (!fn) return;
    defer_scope_enter();
    fn(ctx);
    defer_scope_leave();
}

int http_stream_when_drained(http_stream_t *s, size_t below, http_stream_drained_fn fn, void *ctx) {
    pthread_mutex_lock(&s->mu);
    int rc = 1;
    if (s->conn && !s->cut && !s->ended && s->pending.len - s->off > below) {
        s->on_drained = fn;
        s->drained_ctx = ctx;
        s->drained_below = below;
        rc = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static ssize_t stream_read_locked(http_stream_t *s, char *out, size_t max);

/* MHD asks for more of the body (on the connection's thread). */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max) {
    (void)pos;
    http_stream_t *s = cls;
    pthread_mutex_lock(&s->mu);
    ssize_t n = stream_read_locked(s, out, max);
    void *ctx = NULL;
    http_stream_drained_fn fn = take_drained(s, &ctx);
    pthread_mutex_unlock(&s->mu);
    run_drained(fn, ctx);
    return n;
}

static ssize_t stream_read_locked(http_stream_t *s, char *out, size_t max) {
    ssize_t n;
    size_t avail = s->pending.len - s->off;
    if (s->cut) {
        n = MHD_CONTENT_READER_END_WITH_ERROR;
    } else if (avail) {
        size_t k = avail < max ? avail : max;
        memcpy(out, s->pending.data + s->off, k);
        s->off += k;
        if (s->off == s->pending.len) {
            /* Drained: give back a buffer that a burst made large. */
            if (s->pending.cap > 16384) buf_free(&s->pending);
            else buf_reset(&s->pending);
            s->off = 0;
        }
        n = (ssize_t)k;
    } else if (s->ended) {
        n = MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing to send: park the connection until a write wakes it. */
        s->suspended = true;
        MHD_suspend_connection(s->conn);
        n = 0;
    }
    return n;
}

/* The connection is done with the stream (MHD frees the response). */
static void stream_done(void *cls) {
    http_stream_t *s = cls;
    http_server_t *srv = s->srv;
    pthread_mutex_lock(&srv->streams_mu);
    if (s->prev) s->prev->next = s->next; else srv->streams = s->next;
    if (s->next) s->next->prev = s->prev;
    pthread_mutex_unlock(&srv->streams_mu);
    pthread_mutex_lock(&s->mu);
    s->conn = NULL;
    s->ended = true;
    void *ctx = NULL;
    http_stream_drained_fn fn = take_drained(s, &ctx);
    pthread_mutex_unlock(&s->mu);
    run_drained(fn, ctx);
    defer_scope_enter();
    s->on_closed(s->ctx);
    defer_scope_leave();
    stream_unref(s);
}

http_stream_t *http_respond_stream(http_request_t *r, const char *content_type, size_t max_pending,
                                   http_stream_closed_fn on_closed, void *ctx) {
    if (http_answered_already(r)) return NULL;
    http_stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        http_respond_error(r, 503, "server out of memory; try again");
        return NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    s->srv = r->srv;
    s->conn = r->conn;
    buf_init(&s->pending);
    s->max_pending = max_pending;
    s->refs = 2;
    s->on_closed = on_closed;
    s->ctx = ctx;
    /* Small blocks: an open stream should cost little while idle. */
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, stream_read, s, stream_done);
    if (!resp) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        http_respond_error(r, 503, "server out of memory; try again");
        return NULL;
    }
    r->content_type = content_type;
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies: do not hold events back */
    http_server_t *srv = r->srv;
    pthread_mutex_lock(&srv->streams_mu);
    s->next = srv->streams;
    if (s->next) s->next->prev = s;
    srv->streams = s;
    pthread_mutex_unlock(&srv->streams_mu);
    r->response = resp;
    http_finish(r, 200, true);
    return s;
}

/* Drops the client. Its connection may be parked waiting for the socket
 * to drain, which a client that does not read never lets happen: shutting
 * the socket down makes the event loop see it fail and close it now. Called
 * with s->mu held. */
static void stream_cut(http_stream_t *s) {
    s->cut = true;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (ci) shutdown(ci->connect_fd, SHUT_RDWR);
    stream_wake(s);
}

int http_stream_write(http_stream_t *s, const char *data, size_t len) {
    return http_stream_write_limit(s, data, len, s->max_pending);
}

int http_stream_write_limit(http_stream_t *s, const char *data, size_t len, size_t limit) {
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->ended || s->cut || !s->conn) {
        rc = -1;
    } else if (s->pending.len - s->off >= limit) {
        /* Over the limit already (one write may cross it: an event larger
         * than the limit still reaches a client that reads). */
        stream_cut(s); /* the client is not reading: drop it */
        rc = -1;
    } else {
        /* Sent bytes are dropped from the front once they are at least half
         * of the buffer: a stream that is written to as fast as it drains
         * (a catch-up) never empties its queue, and would otherwise keep
         * everything it ever sent. */
        if (s->off && s->off >= s->pending.len / 2) {
            memmove(s->pending.data, s->pending.data + s->off, s->pending.len - s->off);
            s->pending.len -= s->off;
            s->off = 0;
        }
        buf_append(&s->pending, data, len);
        if (!buf_ok(&s->pending)) {
            stream_cut(s);
            rc = -1;
        }
        stream_wake(s);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

void http_stream_end(http_stream_t *s) {
    pthread_mutex_lock(&s->mu);
    s->ended = true;
    stream_wake(s);
    pthread_mutex_unlock(&s->mu);
}

void http_stream_release(http_stream_t *s) {
    if (s) stream_unref(s);
}

