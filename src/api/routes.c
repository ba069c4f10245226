/* routes.c - the route table, authentication of the caller, and the entry
 * point of the API. */
#include "api/api.h"

#include <openssl/crypto.h>
#include <string.h>
#include <strings.h>

#include "api/handlers.h"
#include "http/router.h"
#include "util/log.h"

/* The FastAPI implementation's routes, plus ours; more specific first. */
static const http_route_t ROUTES[] = {
    {"GET", "/", handle_root},
    {"GET", "/health", handle_health},
    {"GET", "/health/live", handle_health_live},
    {"GET", "/health/ready", handle_health_ready},
    {"GET", "/openapi.json", handle_openapi},
    {"GET", "/static/{}", handle_static},
    {"POST", "/api/users", handle_users_create},
    {"GET", "/api/users", handle_users_find},
    {"GET", "/api/users/{}", handle_users_get},
    {"POST", "/api/auth/login", handle_login},
    {"POST", "/api/auth/logout", handle_logout},
    {"GET", "/api/auth/me", handle_me},
    {"GET", "/api/events", handle_events},
    {"POST", "/api/messages/", handle_message_send},
    {"POST", "/api/messages", handle_message_send},
    {"POST", "/api/messages/send", handle_message_send},
    {"GET", "/api/messages/conversation/{}", handle_messages_page},
    {"GET", "/api/messages/conversation/{}/before", handle_messages_page},
    {"GET", "/api/conversations/user/{}", handle_conversations_page},
    {"GET", "/api/conversations/{}", handle_conversation_get},
};

/* Routes anyone may call, with auth on too: the service's own, the web
 * client's files, registering and logging in. */
static bool route_is_open(const http_route_t *r) {
    return r->handler == handle_root || r->handler == handle_health || r->handler == handle_health_live ||
           r->handler == handle_health_ready || r->handler == handle_openapi ||
           r->handler == handle_static || r->handler == handle_users_create || r->handler == handle_login;
}

api_call_t *api_call(http_request_t *req) {
    _Static_assert(sizeof(api_call_t) <= HTTP_REQUEST_SCRATCH, "api_call_t must fit the request's scratch area");
    return http_request_scratch(req);
}

bool api_may_read(const api_call_t *call, const conversation_t *c) {
    if (!call->has_caller) return true;
    return uuid_cmp(&c->user1_id, &call->caller) == 0 || uuid_cmp(&c->user2_id, &call->caller) == 0;
}

static void respond_unauthorized(http_request_t *req, const char *detail) {
    http_respond_header(req, "WWW-Authenticate", "Bearer");
    http_respond_error(req, 401, detail);
}

static void on_token(void *ctx, int err, const store_token_t *t) {
    http_request_t *req = ctx;
    api_call_t *call = api_call(req);
    /* The store found the row by this very hash; comparing again costs
     * nothing and keeps the check independent of how a backend looks up. */
    if (!err && CRYPTO_memcmp(t->hash, call->token_hash, TOKEN_HASH_BYTES) != 0) err = STORE_ENOTFOUND;
    if (err == STORE_ENOTFOUND) {
        respond_unauthorized(req, "Invalid or expired token");
        return;
    }
    if (err) {
        respond_store_error(req, err, "Invalid or expired token");
        return;
    }
    call->has_caller = true;
    call->caller = t->user_id;
    call->token_expires_ms = t->expires_at_ms;
    call->route->handler(req, call->api, &call->params);
}

/* "Bearer <token>" (scheme case-insensitive): the token, or NULL. */
static const char *bearer_token(http_request_t *req, size_t *len) {
    const char *h = http_request_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) return NULL;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h);
    while (n && h[n - 1] == ' ') n--;
    *len = n;
    return n ? h : NULL;
}

void api_handle(http_request_t *req, void *app) {
    api_t *api = app;
    http_params_t params;
    unsigned status;
    const http_route_t *r = http_route_match(ROUTES, sizeof ROUTES / sizeof ROUTES[0],
                                             http_request_method(req), http_request_path(req),
                                             &params, &status);
    if (!r) {
        if (status == 405) {
            char allow[64];
            http_route_allow(ROUTES, sizeof ROUTES / sizeof ROUTES[0], http_request_path(req), allow, sizeof allow);
            http_respond_header(req, "Allow", allow);
        }
        http_respond_error(req, status, status == 405 ? "Method Not Allowed" : "Not Found");
        return;
    }
    api_call_t *call = api_call(req);
    call->api = api;
    call->route = r;
    call->params = params;
    if (!api->auth || route_is_open(r)) {
        r->handler(req, app, &call->params);
        return;
    }
    size_t len;
    const char *token = bearer_token(req, &len);
    if (!token) {
        respond_unauthorized(req, "Not authenticated");
        return;
    }
    if (token_digest(token, len, call->token_hash) != 0) {
        respond_unauthorized(req, "Invalid or expired token");
        return;
    }
    store_token_get(api->store, call->token_hash, on_token, req);
}

void respond_store_error(http_request_t *req, int err, const char *not_found_detail) {
    switch (err) {
    case STORE_ENOTFOUND: http_respond_error(req, 404, not_found_detail); break;
    case STORE_ECONFLICT: http_respond_error(req, 409, "conflict"); break;
    case STORE_EBADCURSOR: http_respond_error(req, 422, "before_conversation_id names no position in this list"); break;
    case STORE_EUNAVAILABLE: http_respond_error(req, 503, "storage is unavailable; try again"); break;
    case STORE_ENOMEM: http_respond_error(req, 503, "server out of memory; try again"); break;
    case STORE_EFULL: http_respond_error(req, 507, "storage is full"); break;
    /* Damage found in the store (a row that fails its checks) or a failure
     * of the backend: the server's problem, not the client's, and perhaps
     * passing. */
    case STORE_EIO: http_respond_error(req, 503, "storage error; try again"); break;
    default: http_respond_error(req, 500, store_strerror(err)); break;
    }
}
