/* router.h - matching a method and path against a table of routes.
 *
 * A pattern is a literal path in which "{}" stands for exactly one
 * non-empty path segment (no '/'); the matched segments are handed to the
 * handler in order. HEAD matches GET routes. Matching is exact otherwise:
 * "/api/messages" and "/api/messages/" are different routes.
 */
#ifndef MESSENGER_HTTP_ROUTER_H
#define MESSENGER_HTTP_ROUTER_H

#include <stddef.h>

#include "http/http_server.h"

#define HTTP_MAX_PARAMS 4

typedef struct http_params {
    const char *val[HTTP_MAX_PARAMS]; /* not NUL-terminated: use len */
    size_t len[HTTP_MAX_PARAMS];
    int count;
} http_params_t;

typedef void (*http_route_fn)(http_request_t *req, void *app, const http_params_t *params);

typedef struct http_route {
    const char *method;
    const char *pattern;
    http_route_fn handler;
} http_route_t;

/* Returns the matching route, or NULL with *status set to 404 (no such
 * path) or 405 (the path exists for another method). */
const http_route_t *http_route_match(const http_route_t *routes, size_t n, const char *method,
                                     const char *path, http_params_t *params, unsigned *status);

/* The methods the routes accept for path, as a 405's Allow header wants
 * them (RFC 9110 15.5.6): "GET, HEAD", "POST", ... in table order, HEAD
 * after GET; "" for none. Writes at most cap bytes, NUL included. */
void http_route_allow(const http_route_t *routes, size_t n, const char *path, char *out, size_t cap);

#endif
