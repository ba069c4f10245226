/* users.c - POST /api/users, GET /api/users/{id}, GET /api/users?username= */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "util/log.h"
#include "util/timefmt.h"

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

/* A registration with a password: hashed on a worker, then stored. */
typedef struct signup {
    http_request_t *req;
    api_t *api;
    user_t user;
    char name[USERNAME_MAX * 4];
    char *password;
    size_t password_len;
    char hash[PASSWORD_HASH_MAX + 1];
} signup_t;

static void signup_free(signup_t *su) {
    OPENSSL_cleanse(su->password, su->password_len);
    free(su->password);
    free(su);
}

static void on_signed_up(void *ctx, int err, const user_t *u) {
    signup_t *su = ctx;
    on_created(su->req, err, u);
    signup_free(su);
}

static void signup_hash(void *arg) { /* on a hashing worker */
    signup_t *su = arg;
    if (password_hash(&su->api->password, su->password, su->password_len, su->hash, sizeof su->hash) != 0) {
        http_respond_error(su->req, 503, "cannot hash the password now (no randomness or memory); try again");
        signup_free(su);
        return;
    }
    su->user.password_hash = su->hash;
    su->user.password_hash_len = strlen(su->hash);
    store_user_create(su->api->store, &su->user, on_signed_up, su);
}

/* Every registration that will cost a hash takes an attempt of its client
 * address first (ratelimit.h), whether it then succeeds or not. */
static void signup_start(http_request_t *req, api_t *api, const user_t *u, const char *pw, size_t pw_len) {
    char addr[RATELIMIT_ADDR_KEY_MAX];
    ratelimit_addr_key(http_request_peer(req), addr);
    int64_t now = time_now_ms();
    if (api_limited(req, api->register_by_addr, addr, strlen(addr), now,
                    "Too many registrations from this address; try again later"))
        return;
    signup_t *su = calloc(1, sizeof *su);
    if (su) su->password = malloc(pw_len + 1);
    if (!su || !su->password) {
        free(su);
        ratelimit_give_back(api->register_by_addr, addr, strlen(addr), now);
        http_respond_error(req, 503, "server out of memory; try again");
        return;
    }
    su->req = req;
    su->api = api;
    su->user = *u;
    memcpy(su->name, u->name, u->name_len);
    su->user.name = su->name;
    memcpy(su->password, pw, pw_len);
    su->password_len = pw_len;
    int rc = workq_submit(api->hashing, signup_hash, su);
    if (rc != 0) {
        ratelimit_give_back(api->register_by_addr, addr, strlen(addr), now);
        respond_hashing_busy(req, rc);
        signup_free(su);
    }
}

void handle_users_create(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    input_err_t e;
    json_t *body = input_body_or_400(req);
    if (!body) return;
    user_t u = {0};
    const char *bad, *pw = NULL;
    size_t pw_len = 0;
    if (input_string(body, "username", &u.name, &u.name_len, &e) ||
        input_optional_string(body, "password", &pw, &pw_len, &e)) {
        http_respond_error(req, 422, e.detail);
    } else if ((bad = username_check(u.name, u.name_len))) {
        http_respond_error(req, 422, bad);
    } else if (!pw && api->auth) {
        http_respond_error(req, 422, "password: field required");
    } else if (pw && (bad = password_check(pw, pw_len))) {
        http_respond_error(req, 422, bad);
    } else if (uuid_random(&u.id) != 0) {
        http_respond_error(req, 503, "no randomness available for a user id; try again");
    } else if (pw) {
        signup_start(req, api, &u, pw, pw_len);
    } else {
        store_user_create(api->store, &u, on_created, req); /* copies u */
    }
    json_decref(body);
}

void handle_users_get(http_request_t *req, void *app, const http_params_t *p) {
    api_t *api = app;
    input_err_t e;
    uuid_t id;
    if (input_path_uuid(p, 0, "user_id", &id, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    store_user_get(api->store, &id, on_found, req);
}

void handle_users_find(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    const char *name = http_request_query(req, "username");
    if (!name) {
        http_respond_error(req, 422, "username: query parameter required");
        return;
    }
    /* Text reaches the store only as valid UTF-8 (Cassandra rejects the
     * rest with an error of its own). */
    if (!utf8_valid(name, strlen(name))) {
        http_respond_error(req, 422, "username: not valid UTF-8");
        return;
    }
    store_user_find(api->store, name, strlen(name), on_found, req);
}
