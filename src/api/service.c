/* service.c - GET /, GET /health, GET /openapi.json */
#include "api/handlers.h"
#include "api/render.h"
#include "util/json_write.h"
#include "version.h"

/* The OpenAPI document, embedded at build time from src/api/openapi.json
 * (see openapi_blob.S). */
extern const char messenger_openapi_json[];
extern const char messenger_openapi_json_end[];

void handle_root(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    if (web_index(req, api)) return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"name\":\"messenger\",\"version\":\"" MESSENGER_VERSION "\",\"store\":");
    json_put_cstring(&b, store_name(api->store));
    buf_putc(&b, '}');
    http_respond_json(req, 200, &b);
}

/* 200 "ok"; 200 "degraded" with the reason while reads are served but
 * writes are refused (a full disk: the server is up and useful, and an
 * orchestrator should not restart it for that); 503 when the store does not
 * answer. */
static void on_health(void *ctx, int err, const char *detail) {
    http_request_t *req = ctx;
    if (err) {
        http_respond_error(req, 503, detail ? detail : store_strerror(err));
        return;
    }
    const char *degraded = store_degraded(api_call(req)->api->store);
    buf_t b;
    buf_init(&b);
    buf_puts(&b, degraded ? "{\"status\":\"degraded\",\"store\":" : "{\"status\":\"ok\",\"store\":");
    json_put_cstring(&b, detail ? detail : "");
    if (degraded) {
        buf_puts(&b, ",\"detail\":");
        json_put_cstring(&b, degraded);
    }
    buf_putc(&b, '}');
    http_respond_json(req, 200, &b);
}

void handle_health(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    store_health(api->store, on_health, req);
}

void handle_openapi(http_request_t *req, void *app, const http_params_t *p) {
    (void)app;
    (void)p;
    http_respond_static(req, 200, "application/json", messenger_openapi_json,
                        (size_t)(messenger_openapi_json_end - messenger_openapi_json));
}
