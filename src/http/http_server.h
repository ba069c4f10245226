/* http_server.h - the HTTP layer: libmicrohttpd underneath, a request struct on
 * top, and asynchronous completion.
 *
 * For every complete request (headers and body read, body within the
 * limit) the server calls the one handler it was given. The handler answers
 * with http_respond*() exactly once, either before it returns or later from
 * any thread (typically a storage callback): when it returns without having
 * answered, the connection is suspended until the answer arrives, so no
 * server thread ever waits for storage.
 *
 * The server itself answers what no handler should see: bodies over the
 * limit (413) and requests that ended before their body did.
 */
#ifndef MESSENGER_HTTP_HTTP_SERVER_H
#define MESSENGER_HTTP_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

typedef struct http_server http_server_t;
typedef struct http_request http_request_t;

typedef void (*http_handler_fn)(http_request_t *req, void *app);

typedef struct http_server_config {
    const char *host;       /* numeric IPv4 or IPv6 address */
    uint16_t port;          /* 0: pick a free port (see http_server_port) */
    unsigned threads;       /* event-loop threads */
    size_t max_body;        /* bytes; larger bodies get 413 */
    unsigned max_connections;
    unsigned max_connections_per_address; /* 0: no limit */
    unsigned idle_timeout_s; /* idle keep-alive connections are closed after this */
    size_t connection_memory; /* per-connection pool: request line and headers */
} http_server_config_t;

/* Starts listening and serving. Returns 0, or -1 with the reason logged. */
int http_server_start(const http_server_config_t *cfg, http_handler_fn handler, void *app,
                      http_server_t **out);
uint16_t http_server_port(const http_server_t *srv);
/* Shutdown is two steps, so that the store can be closed in between:
 *   http_server_drain()   stops accepting (a new connection is closed at
 *                         once; new requests on open keep-alive
 *                         connections get 503) and waits up to grace_ms for
 *                         every dispatched request to be answered; returns
 *                         how many are still waiting (on the store);
 *   http_server_destroy() waits for the answers still owed (the caller has
 *                         closed the store meanwhile, which answers them),
 *                         then closes every connection and frees the server.
 * No connection is suspended when libmicrohttpd is stopped. */
long http_server_drain(http_server_t *srv, unsigned grace_ms);
void http_server_destroy(http_server_t *srv);

/* ---- the request (valid until it has been answered) ---- */
const char *http_request_method(const http_request_t *req);
const char *http_request_path(const http_request_t *req); /* percent-decoded, no query */
/* The first value of a query parameter (percent-decoded), or NULL. */
const char *http_request_query(const http_request_t *req, const char *name);
const char *http_request_header(const http_request_t *req, const char *name);
const char *http_request_body(const http_request_t *req, size_t *len);
const char *http_request_id(const http_request_t *req);
/* A small scratch area for the handler's own use between dispatch and its
 * answer (for instance the page limit it must echo). Zeroed at dispatch. */
#define HTTP_REQUEST_SCRATCH 256
void *http_request_scratch(http_request_t *req);
/* The client's address, numeric ("127.0.0.1", "::1"), or "" when unknown. */
const char *http_request_peer(const http_request_t *req);

/* ---- answering (exactly once per request, from any thread) ---- */
/* Sends body (JSON) with the given status; takes ownership of body. */
void http_respond_json(http_request_t *req, unsigned status, buf_t *body);
/* Sends {"detail": detail} with the given status. */
void http_respond_error(http_request_t *req, unsigned status, const char *detail);
/* Sends a static body (never freed) with the given content type. */
void http_respond_static(http_request_t *req, unsigned status, const char *content_type,
                         const void *data, size_t len);
/* Adds a header to the answer this request is about to be given (call it
 * before http_respond_*; up to 4 per request; name must be a literal, value
 * is copied, at most 127 bytes). */
void http_respond_header(http_request_t *req, const char *name, const char *value);

/* ---- streaming answers (Server-Sent Events) ----
 * http_respond_stream() answers 200 with a body of unknown length (chunked)
 * that the application writes to, from any thread, for as long as it likes.
 * The connection is suspended while there is nothing to send, so an idle
 * stream costs no thread and no polling.
 *
 * Ownership: the stream is shared by the connection and the application.
 * on_closed runs exactly once (on a server thread) when the connection is
 * done with it: the client went away, http_stream_end() was called and the
 * tail was sent, the queue limit was exceeded, or the server is stopping.
 * The application must still call http_stream_release() once, after which
 * it must not touch the stream; writes after on_closed fail harmlessly. */
typedef struct http_stream http_stream_t;
typedef void (*http_stream_closed_fn)(void *ctx);
/* max_pending: bytes queued and not yet sent at which a further write cuts
 * the stream (a client that does not read must not grow our memory; a
 * single write may cross the limit). Returns the
 * stream, or NULL when it could not be created (the request has then been
 * answered with an error). */
http_stream_t *http_respond_stream(http_request_t *req, const char *content_type, size_t max_pending,
                                   http_stream_closed_fn on_closed, void *ctx);
/* Queues data; 0, or -1 when the stream is closed or has just been cut for
 * going over max_pending. */
int http_stream_write(http_stream_t *s, const char *data, size_t len);
/* Same with another bound on the queue than max_pending, for a burst that
 * the application has bounded itself (a resumed stream's catch-up). */
int http_stream_write_limit(http_stream_t *s, const char *data, size_t len, size_t limit);
/* Calls fn(ctx) once, on a server thread (in a defer scope), when at most
 * `below` bytes are left queued, or when the connection is done with the
 * stream (writes then fail). Returns 0 when fn will be called; 1 when at
 * most `below` bytes are queued already, or the stream is closed: fn is not
 * called, go on now. One at a time per stream. For a producer that must not
 * queue faster than its client reads (a resumed stream's catch-up). */
typedef void (*http_stream_drained_fn)(void *ctx);
int http_stream_when_drained(http_stream_t *s, size_t below, http_stream_drained_fn fn, void *ctx);
/* Ends the body once what is queued has been sent. */
void http_stream_end(http_stream_t *s);
void http_stream_release(http_stream_t *s);

#endif
