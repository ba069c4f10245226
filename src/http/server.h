/* server.h - the HTTP layer: libmicrohttpd underneath, a request struct on
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
#ifndef MESSENGER_HTTP_SERVER_H
#define MESSENGER_HTTP_SERVER_H

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
    unsigned idle_timeout_s; /* idle keep-alive connections are closed after this */
    size_t connection_memory; /* per-connection pool: request line and headers */
} http_server_config_t;

/* Starts listening and serving. Returns 0, or -1 with the reason logged. */
int http_server_start(const http_server_config_t *cfg, http_handler_fn handler, void *app,
                      http_server_t **out);
uint16_t http_server_port(const http_server_t *srv);
/* Shutdown is two steps, so that the store can be closed in between:
 *   http_server_drain()   stops accepting (new requests on open keep-alive
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
#define HTTP_REQUEST_SCRATCH 64
void *http_request_scratch(http_request_t *req);

/* ---- answering (exactly once per request, from any thread) ---- */
/* Sends body (JSON) with the given status; takes ownership of body. */
void http_respond_json(http_request_t *req, unsigned status, buf_t *body);
/* Sends {"detail": detail} with the given status. */
void http_respond_error(http_request_t *req, unsigned status, const char *detail);
/* Sends a static body (never freed) with the given content type. */
void http_respond_static(http_request_t *req, unsigned status, const char *content_type,
                         const void *data, size_t len);

#endif
