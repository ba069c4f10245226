/* handlers.h - one function per route (internal to the api module).
 * Each is an http_route_fn; routes.c holds the table. */
#ifndef MESSENGER_API_HANDLERS_H
#define MESSENGER_API_HANDLERS_H

#include "api/api.h"
#include "http/router.h"

void users_create(http_request_t *req, void *app, const http_params_t *p);
void users_get(http_request_t *req, void *app, const http_params_t *p);
void users_find(http_request_t *req, void *app, const http_params_t *p);

void messages_send(http_request_t *req, void *app, const http_params_t *p);
void messages_list(http_request_t *req, void *app, const http_params_t *p);

void conversations_list(http_request_t *req, void *app, const http_params_t *p);
void conversations_get(http_request_t *req, void *app, const http_params_t *p);

void auth_login(http_request_t *req, void *app, const http_params_t *p);
void auth_logout(http_request_t *req, void *app, const http_params_t *p);
void auth_me(http_request_t *req, void *app, const http_params_t *p);

void events_stream(http_request_t *req, void *app, const http_params_t *p);

/* GET / from a browser (Accept: text/html): answers with the web client
 * and returns true; false when there is none or the client wants JSON. */
bool web_index(http_request_t *req, const api_t *api);
void web_static(http_request_t *req, void *app, const http_params_t *p);

void service_root(http_request_t *req, void *app, const http_params_t *p);
void service_health(http_request_t *req, void *app, const http_params_t *p);
void service_openapi(http_request_t *req, void *app, const http_params_t *p);

/* Whether the call may see conversation c: always with auth off, else
 * only when the caller is one of its two participants. */
bool api_may_read(const api_call_t *call, const conversation_t *c);

/* Renders m as a Server-Sent Event and hands it to the event hub. */
void events_publish_message(api_t *api, const message_t *m);

/* Takes an attempt from rl for key: false when it may go ahead, else true
 * after answering 429 with Retry-After and detail. */
bool api_limited(http_request_t *req, ratelimit_t *rl, const char *key, size_t len, int64_t now,
                 const char *detail);
/* Answers a password hash that could not be queued (workq_submit's error):
 * 503, with Retry-After when the queue was full. */
void respond_hashing_busy(http_request_t *req, int submit_err);

/* Answers a failed store operation with the matching status and detail;
 * `what` names the thing that was not found (e.g. "User not found"). */
void respond_store_error(http_request_t *req, int err, const char *not_found_detail);

#endif
