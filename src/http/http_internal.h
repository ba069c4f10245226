/* http_internal.h - what the files of src/http share, and only they:
 * the request, stream and server structs, and the few functions one file
 * calls in another. Everything else goes through server.h.
 */
#ifndef MESSENGER_HTTP_INTERNAL_H
#define MESSENGER_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "http/http_server.h"
#include "util/buf.h"

enum { REQ_RUNNING = 0, REQ_SUSPENDED = 1, REQ_ANSWERED = 2 };

struct http_server {
    struct MHD_Daemon *daemon;
    http_handler_fn handler;
    void *app;
    size_t max_body;
    uint16_t port;
    uint32_t id_prefix;          /* random per process, so request ids differ across restarts */
    _Atomic uint64_t next_id;
    _Atomic long inflight;       /* dispatched requests not yet completed */
    _Atomic bool stopping;       /* set by http_server_stop: new requests get 503 */
    pthread_mutex_t streams_mu;  /* guards the list of open streams */
    http_stream_t *streams;
};

#define MAX_EXTRA_HEADERS 4

struct http_stream {
    pthread_mutex_t mu;          /* guards everything below */
    http_server_t *srv;
    struct MHD_Connection *conn; /* NULL once the connection is done with us */
    buf_t pending;               /* queued bytes; [off, len) not yet sent */
    size_t off;
    size_t max_pending;
    bool suspended;              /* by stream_read, not yet resumed */
    bool ended;                  /* no more writes; finish after the queue */
    bool cut;                    /* over max_pending: close without finishing */
    int refs;                    /* the connection's and the application's */
    http_stream_closed_fn on_closed;
    void *ctx;
    http_stream_drained_fn on_drained; /* http_stream_when_drained, while armed */
    void *drained_ctx;
    size_t drained_below;
    http_stream_t *prev, *next;  /* srv->streams */
};

struct http_request {
    http_server_t *srv;
    struct MHD_Connection *conn;
    const char *method;
    const char *path;
    buf_t body;
    bool too_large;              /* a chunked body went over max_body */
    size_t discarded;            /* bytes of it read and dropped since */
    bool dispatched;
    bool close_after;            /* answer with Connection: close */
    bool counted;                /* in srv->inflight (from dispatch to completion) */
    _Atomic int state;
    unsigned status;
    /* The answer. A body is kept as plain bytes until the connection's own
     * thread turns it into a libmicrohttpd response (queue_answer), so that
     * the response and its headers are allocated and freed by one thread,
     * even when the answer came from a store thread. A stream's response is
     * made by http_respond_stream() itself. */
    bool answered_ok;            /* false: no answer could be built (500) */
    const char *answer;
    size_t answer_len;
    bool answer_owned;           /* free() it if it is never handed over */
    const char *content_type;
    struct MHD_Response *response;
    struct timespec start;
    char id[72];
    char peer[48];
    int n_headers;
    const char *header_name[MAX_EXTRA_HEADERS];
    char header_value[MAX_EXTRA_HEADERS][128];
    _Alignas(16) unsigned char scratch[HTTP_REQUEST_SCRATCH];
};

/* ---- http_server.c ---- */

/* True (after reporting it) when r has been answered already. */
bool http_answered_already(http_request_t *r);
/* Publishes the answer whose fields the caller has set, and resumes the
 * connection if the dispatching thread suspended it (the state machine at
 * the top of http_server.c). ok false: nothing could be built (500). */
void http_finish(http_request_t *r, unsigned status, bool ok);

/* ---- checks.c: what libmicrohttpd lets through and we do not ---- */

/* MHD_OPTION_UNESCAPE_CALLBACK: percent-decoding that keeps %00 literal. */
size_t http_unescape_keep_nul(void *cls, struct MHD_Connection *c, char *s);
/* Why a request is refused before anything else looks at it, or NULL. */
const char *http_request_malformed(struct MHD_Connection *c);
/* Whether the request's Content-Length says more than max bytes. */
bool http_content_length_too_large(struct MHD_Connection *c, size_t max);

#endif
