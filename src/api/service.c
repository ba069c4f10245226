/* service.c - GET /, the health probes (/health, /health/live,
 * /health/ready), GET /openapi.json */
#include <string.h>

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

/* The process answers: a liveness probe restarts the server only when
 * this fails, never for a store or broker outage it can ride out. */
void handle_health_live(http_request_t *req, void *app, const http_params_t *p) {
    (void)app;
    (void)p;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"status\":\"live\"}");
    http_respond_json(req, 200, &b);
}

/* Appends `"name":"value"` to a checks object (after the first, a comma). */
static void put_check(buf_t *b, bool first, const char *name, const char *value) {
    if (!first) buf_putc(b, ',');
    json_put_cstring(b, name);
    buf_putc(b, ':');
    json_put_cstring(b, value);
}

/* Ready for traffic: the store answered a real query (within its request
 * deadline), it takes writes, and the broker is subscribed when one is
 * configured. 200 or 503, each check named in "checks"; a 503's detail
 * lists what is wrong. */
static void on_ready(void *ctx, int err, const char *detail) {
    http_request_t *req = ctx;
    api_t *api = api_call(req)->api;
    const char *store = err ? (detail ? detail : store_strerror(err)) : "ok";
    const char *writes = err ? "unknown" : store_degraded(api->store);
    int broker = events_broker_state(api->events);
    bool ready = !err && !writes && broker != 0;
    buf_t b;
    buf_init(&b);
    if (ready) {
        buf_puts(&b, "{\"status\":\"ready\"");
    } else {
        char why[128] = "not ready:";
        if (err) strcat(why, " the store does not answer;");
        else if (writes) strcat(why, " the store refuses writes;");
        if (broker == 0) strcat(why, " the broker is not connected;");
        why[strlen(why) - 1] = '\0'; /* the last ';' */
        buf_puts(&b, "{\"detail\":");
        json_put_cstring(&b, why);
    }
    buf_puts(&b, ",\"checks\":{");
    put_check(&b, true, "store", store);
    put_check(&b, false, "writes", writes ? writes : "ok");
    put_check(&b, false, "broker", broker < 0 ? "none" : broker ? "connected" : "disconnected");
    buf_puts(&b, "}}");
    http_respond_json(req, ready ? 200 : 503, &b);
}

void handle_health_ready(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    store_health(api->store, on_ready, req);
}

void handle_openapi(http_request_t *req, void *app, const http_params_t *p) {
    (void)app;
    (void)p;
    http_respond_static(req, 200, "application/json", messenger_openapi_json,
                        (size_t)(messenger_openapi_json_end - messenger_openapi_json));
}
