/* users.c - POST /api/users, GET /api/users/{id}, GET /api/users?username= */
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "util/log.h"

static void on_user(void *ctx, int err, const user_t *u, unsigned ok_status, const char *conflict) {
    http_request_t *req = ctx;
    if (err == STORE_ECONFLICT) {
        http_respond_error(req, 409, conflict);
        return;
    }
    if (err) {
        respond_store_error(req, err, "User not found");
        return;
    }
    buf_t b;
    buf_init(&b);
    render_user(&b, u);
    http_respond_json(req, ok_status, &b);
}

static void on_created(void *ctx, int err, const user_t *u) {
    if (!err) {
        char id[UUID_STR_LEN + 1];
        uuid_format(&u->id, id);
        log_info("api", "req=%s user %s created", http_request_id(ctx), id);
    }
    on_user(ctx, err, u, 201, "username is already taken");
}

static void on_found(void *ctx, int err, const user_t *u) { on_user(ctx, err, u, 200, "conflict"); }

void users_create(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    input_err_t e;
    json_t *body;
    if (input_body_object(req, &body, &e)) {
        http_respond_error(req, 400, e.detail);
        return;
    }
    user_t u;
    const char *bad;
    if (input_string(body, "username", &u.name, &u.name_len, &e)) {
        http_respond_error(req, 422, e.detail);
    } else if ((bad = username_check(u.name, u.name_len))) {
        http_respond_error(req, 422, bad);
    } else if (uuid_random(&u.id) != 0) {
        http_respond_error(req, 503, "no randomness available for a user id; try again");
    } else {
        store_user_create(api->store, &u, on_created, req); /* copies u */
    }
    json_decref(body);
}

void users_get(http_request_t *req, void *app, const http_params_t *p) {
    api_t *api = app;
    input_err_t e;
    uuid_t id;
    if (input_path_uuid(p, 0, "user_id", &id, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    store_user_get(api->store, &id, on_found, req);
}

void users_find(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    const char *name = http_request_query(req, "username");
    if (!name) {
        http_respond_error(req, 422, "username: query parameter required");
        return;
    }
    store_user_find(api->store, name, strlen(name), on_found, req);
}
