/* api.h - the messenger HTTP API: routing and handlers over a store_t.
 *
 * api_handle() is the http_handler_fn given to the HTTP server. Handlers
 * validate everything the client sent (answering 4xx with a {"detail"} body
 * before touching the store), call one asynchronous store operation, and
 * answer from its callback. A handler never touches the request after the
 * store call: the answer may already be on its way.
 *
 * With auth on, api_handle() first resolves the bearer token of every route
 * that needs one (an asynchronous store read) and hands the handler the
 * caller in api_call(req); with auth off there is never a caller.
 */
#ifndef MESSENGER_API_H
#define MESSENGER_API_H

#include <stdbool.h>
#include <stddef.h>

#include "auth/password.h"
#include "auth/ratelimit.h"
#include "auth/token.h"
#include "events/events.h"
#include "http/router.h"
#include "http/http_server.h"
#include "store/store.h"
#include "util/workq.h"

typedef struct web_file web_file_t;

typedef struct api {
    store_t *store;
    size_t max_content;     /* bytes of message content */
    /* accounts */
    bool auth;
    password_params_t password;
    unsigned token_ttl_s;
    workq_t *hashing;       /* Argon2id runs here, off the event loops */
    ratelimit_t *login_by_name, *login_by_addr;
    ratelimit_t *register_by_addr; /* registrations (each costs a hash) */
    char dummy_hash[PASSWORD_HASH_MAX + 1]; /* verified for unknown users: same time */
    /* real-time events */
    events_t *events;
    size_t sse_max_pending;
    /* the web client */
    web_file_t *web;        /* loaded at start-up; NULL: none */
} api_t;

/* What the API keeps with a request from dispatch to answer (in the
 * request's scratch area). */
typedef struct api_call {
    api_t *api;
    const http_route_t *route;
    http_params_t params;   /* copied: the handler may run after the token look-up */
    bool has_caller;
    uuid_t caller;
    uint8_t token_hash[TOKEN_HASH_BYTES];
    int64_t token_expires_ms; /* the caller's session ends then (Unix ms) */
    _Alignas(16) unsigned char state[64]; /* the handler's own */
} api_call_t;

api_call_t *api_call(http_request_t *req);

void api_handle(http_request_t *req, void *app);

/* events_config_t's accept: whether an event from the broker is exactly
 * what events_publish_message renders for that message. */
bool events_accept_message(const uuid_t *sender, const uuid_t *receiver, const uuid_t *id, const char *event,
                           size_t len);

typedef struct api_limits {
    const char *web_dir;
    unsigned login_attempts;    /* failed logins per username per window (5x per address) */
    unsigned login_window_s;
    unsigned register_attempts; /* registrations per address per window */
} api_limits_t;

/* Sets up what api_t needs beyond store and limits (hashing workers, rate
 * limits, the dummy hash, the web files); 0 or -1 with the reason logged. */
int api_init(api_t *api, const api_limits_t *limits);
/* Shutdown, in this order: api_drain() once HTTP stopped taking requests
 * (it finishes the password work in flight, which still uses the store),
 * then the store is closed, then api_fini(). */
void api_drain(api_t *api);
void api_fini(api_t *api);

#endif
