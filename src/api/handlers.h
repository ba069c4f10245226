/* handlers.h - one function per route (internal to the api module).
 * Each is an http_route_fn; routes.c holds the table. Every handler is
 * named handle_<what it serves>, so that a search for a storage operation
 * (the store's messages_list) or a module's function finds no handler. */
#ifndef MESSENGER_API_HANDLERS_H
#define MESSENGER_API_HANDLERS_H

#include "api/api.h"
#include "http/router.h"

void handle_users_create(http_request_t *req, void *app, const http_params_t *p);
void handle_users_get(http_request_t *req, void *app, const http_params_t *p);
void handle_users_find(http_request_t *req, void *app, const http_params_t *p);

void handle_message_send(http_request_t *req, void *app, const http_params_t *p);
void handle_messages_page(http_request_t *req, void *app, const http_params_t *p);

void handle_conversations_page(http_request_t *req, void *app, const http_params_t *p);
void handle_conversation_get(http_request_t *req, void *app, const http_params_t *p);

void handle_login(http_request_t *req, void *app, const http_params_t *p);
void handle_logout(http_request_t *req, void *app, const http_params_t *p);
void handle_me(http_request_t *req, void *app, const http_params_t *p);

void handle_events(http_request_t *req, void *app, const http_params_t *p);

/* GET / from a browser (Accept: text/html): answers with the web client
 * and returns true; false when there is none or the client wants JSON. */
bool web_index(http_request_t *req, const api_t *api);
void handle_static(http_request_t *req, void *app, const http_params_t *p);

void handle_root(http_request_t *req, void *app, const http_params_t *p);
void handle_health(http_request_t *req, void *app, const http_params_t *p);
void handle_health_live(http_request_t *req, void *app, const http_params_t *p);
void handle_health_ready(http_request_t *req, void *app, const http_params_t *p);
void handle_openapi(http_request_t *req, void *app, const http_params_t *p);

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
