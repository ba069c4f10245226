/* routes.c - the route table and the entry point of the API. */
#include "api/api.h"

#include "api/handlers.h"
#include "http/router.h"

/* The FastAPI implementation's routes, plus ours; more specific first. */
static const http_route_t ROUTES[] = {
    {"GET", "/", service_root},
    {"GET", "/health", service_health},
    {"GET", "/openapi.json", service_openapi},
    {"POST", "/api/users", users_create},
    {"GET", "/api/users", users_find},
    {"GET", "/api/users/{}", users_get},
    {"POST", "/api/messages/", messages_send},
    {"POST", "/api/messages", messages_send},
    {"POST", "/api/messages/send", messages_send},
    {"GET", "/api/messages/conversation/{}", messages_list},
    {"GET", "/api/messages/conversation/{}/before", messages_list},
    {"GET", "/api/conversations/user/{}", conversations_list},
    {"GET", "/api/conversations/{}", conversations_get},
};

void api_handle(http_request_t *req, void *app) {
    http_params_t params;
    unsigned status;
    const http_route_t *r = http_route_match(ROUTES, sizeof ROUTES / sizeof ROUTES[0],
                                             http_request_method(req), http_request_path(req),
                                             &params, &status);
    if (!r) {
        http_respond_error(req, status, status == 405 ? "Method Not Allowed" : "Not Found");
        return;
    }
    r->handler(req, app, &params);
}

void respond_store_error(http_request_t *req, int err, const char *not_found_detail) {
    switch (err) {
    case STORE_ENOTFOUND: http_respond_error(req, 404, not_found_detail); break;
    case STORE_ECONFLICT: http_respond_error(req, 409, "conflict"); break;
    case STORE_EBADCURSOR: http_respond_error(req, 422, "before_conversation_id names no position in this list"); break;
    case STORE_EUNAVAILABLE: http_respond_error(req, 503, "storage is unavailable; try again"); break;
    case STORE_ENOMEM: http_respond_error(req, 503, "server out of memory; try again"); break;
    case STORE_EFULL: http_respond_error(req, 507, "storage is full"); break;
    default: http_respond_error(req, 500, store_strerror(err)); break;
    }
}
