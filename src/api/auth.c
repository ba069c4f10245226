/* auth.c - accounts: POST /api/auth/login, POST /api/auth/logout,
 * GET /api/auth/me, and what api_t needs for them (api_init).
 *
 * Password hashing and checking run on the `hashing` workers: Argon2id
 * takes tens of milliseconds and 19 MiB by design, which must not stall an
 * event loop or a store's I/O thread. An unknown username is checked
 * against a dummy hash, so that the answer takes as long as for a known one
 * and does not reveal which names exist.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "api/web.h"
#include "util/log.h"
#include "util/timefmt.h"

#define LOGIN_FAILED "Incorrect username or password"

/* Hashing workers, and how many hashes may wait for one: a few per worker,
 * so that a burst is absorbed but nobody can queue minutes of work. */
#define HASHING_WORKERS 2
#define HASHING_WAITING (4 * HASHING_WORKERS)

int api_init(api_t *api, const api_limits_t *lim) {
    api->hashing = workq_new(HASHING_WORKERS, HASHING_WAITING);
    api->login_by_name = ratelimit_new(lim->login_attempts, lim->login_window_s);
    /* One address may be many people (a NAT): a looser limit. */
    api->login_by_addr = ratelimit_new(lim->login_attempts * 5, lim->login_window_s);
    api->register_by_addr = ratelimit_new(lim->register_attempts, lim->login_window_s);
    if (!api->hashing || !api->login_by_name || !api->login_by_addr || !api->register_by_addr) {
        log_error("api", "out of memory or threads setting up accounts");
        api_fini(api);
        return -1;
    }
    if (password_hash(&api->password, "no such user", 12, api->dummy_hash, sizeof api->dummy_hash) != 0) {
        log_error("api", "cannot compute a password hash (no randomness, or too little memory for --argon2-memory-kib)");
        api_fini(api);
        return -1;
    }
    api->web = web_load(lim->web_dir);
    return 0;
}

void api_drain(api_t *api) {
    workq_free(api->hashing); /* runs what is queued: every request gets its answer */
    api->hashing = NULL;
}

void api_fini(api_t *api) {
    api_drain(api);
    ratelimit_free(api->login_by_name);
    ratelimit_free(api->login_by_addr);
    ratelimit_free(api->register_by_addr);
    api->login_by_name = api->login_by_addr = api->register_by_addr = NULL;
    web_free(api->web);
    api->web = NULL;
}

/* ---- login ---- */

typedef struct login {
    http_request_t *req;
    api_t *api;
    char addr[RATELIMIT_ADDR_KEY_MAX];
    char *password;
    size_t password_len;
    char name_key[2 + USERNAME_MAX * 4]; /* "u:" + folded name */
    size_t name_key_len;
    bool found;
    char name[USERNAME_MAX * 4];
    size_t name_len;
    uuid_t user_id;
    char hash[PASSWORD_HASH_MAX + 1];
    size_t hash_len;
    char token[TOKEN_CHARS + 1];
    store_token_t stored;
} login_t;

static void login_free(login_t *l) {
    if (l->password) {
        OPENSSL_cleanse(l->password, l->password_len);
        free(l->password);
    }
    OPENSSL_cleanse(l->token, sizeof l->token);
    free(l);
}

static void on_token_stored(void *ctx, int err, const store_token_t *t) {
    login_t *l = ctx;
    (void)t;
    if (err) {
        respond_store_error(l->req, err, "User not found");
        login_free(l);
        return;
    }
    buf_t b;
    buf_init(&b);
    buf_lit(&b, "{\"access_token\":\"");
    buf_append(&b, l->token, TOKEN_CHARS);
    buf_lit(&b, "\",\"token_type\":\"bearer\",\"expires_at\":");
    render_time(&b, l->stored.expires_at_ms);
    buf_lit(&b, ",\"user\":");
    user_t u = {.id = l->user_id, .name = l->name, .name_len = l->name_len};
    render_user(&b, &u);
    buf_putc(&b, '}');
    log_info("api", "req=%s login of %.*s", http_request_id(l->req), (int)l->name_len, l->name);
    http_respond_json(l->req, 200, &b);
    login_free(l);
}

static void respond_login_failed(login_t *l) {
    http_respond_header(l->req, "WWW-Authenticate", "Bearer");
    http_respond_error(l->req, 401, LOGIN_FAILED);
    login_free(l);
}

/* On a hashing worker. */
static void login_verify(void *arg) {
    login_t *l = arg;
    api_t *api = l->api;
    bool ok;
    if (l->found && l->hash_len) {
        ok = password_verify(l->hash, l->hash_len, l->password, l->password_len);
    } else {
        password_verify(api->dummy_hash, strlen(api->dummy_hash), l->password, l->password_len);
        ok = false;
    }
    int64_t now = time_now_ms();
    if (!ok) { /* the attempts taken stay counted */
        respond_login_failed(l);
        return;
    }
    ratelimit_clear(api->login_by_name, l->name_key, l->name_key_len);
    ratelimit_give_back(api->login_by_addr, l->addr, strlen(l->addr), now);
    if (token_generate(l->token, l->stored.hash) != 0) {
        http_respond_error(l->req, 503, "no randomness available for a token; try again");
        login_free(l);
        return;
    }
    l->stored.user_id = l->user_id;
    l->stored.expires_at_ms = now + (int64_t)api->token_ttl_s * 1000;
    store_token_put(api->store, &l->stored, on_token_stored, l);
}

/* The attempt was not evaluated: it does not count. */
static void login_give_back(login_t *l) {
    int64_t now = time_now_ms();
    ratelimit_give_back(l->api->login_by_name, l->name_key, l->name_key_len, now);
    ratelimit_give_back(l->api->login_by_addr, l->addr, strlen(l->addr), now);
}

void respond_hashing_busy(http_request_t *req, int submit_err) {
    if (submit_err == -EAGAIN) {
        http_respond_header(req, "Retry-After", "1");
        http_respond_error(req, 503, "server is busy checking passwords; try again");
    } else {
        http_respond_error(req, 503, "server is shutting down or out of memory; try again");
    }
}

static void on_login_user(void *ctx, int err, const user_t *u) {
    login_t *l = ctx;
    if (err && err != STORE_ENOTFOUND) {
        login_give_back(l);
        respond_store_error(l->req, err, LOGIN_FAILED);
        login_free(l);
        return;
    }
    if (!err) {
        l->found = true;
        l->user_id = u->id;
        l->name_len = u->name_len < sizeof l->name ? u->name_len : sizeof l->name;
        memcpy(l->name, u->name, l->name_len);
        if (u->password_hash && u->password_hash_len <= PASSWORD_HASH_MAX) {
            memcpy(l->hash, u->password_hash, u->password_hash_len);
            l->hash_len = u->password_hash_len;
        }
    }
    int rc = workq_submit(l->api->hashing, login_verify, l);
    if (rc != 0) {
        login_give_back(l);
        respond_hashing_busy(l->req, rc);
        login_free(l);
    }
}

bool api_limited(http_request_t *req, ratelimit_t *rl, const char *key, size_t len, int64_t now,
                 const char *detail) {
    unsigned wait = ratelimit_take(rl, key, len, now);
    if (!wait) return false;
    char v[16];
    snprintf(v, sizeof v, "%u", wait);
    http_respond_header(req, "Retry-After", v);
    http_respond_error(req, 429, detail);
    return true;
}

void handle_login(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    input_err_t e;
    json_t *body = input_body_or_400(req);
    if (!body) return;
    const char *name, *pw;
    size_t name_len, pw_len;
    if (input_string(body, "username", &name, &name_len, &e) || input_string(body, "password", &pw, &pw_len, &e)) {
        http_respond_error(req, 422, e.detail);
        json_decref(body);
        return;
    }
    login_t *l = calloc(1, sizeof *l);
    if (!l || name_len > USERNAME_MAX * 4 || pw_len > PASSWORD_MAX_BYTES || !(l->password = malloc(pw_len + 1))) {
        if (l) free(l);
        /* Names and passwords too long to exist cannot log in. */
        if (name_len > USERNAME_MAX * 4 || pw_len > PASSWORD_MAX_BYTES) {
            http_respond_header(req, "WWW-Authenticate", "Bearer");
            http_respond_error(req, 401, LOGIN_FAILED);
        } else {
            http_respond_error(req, 503, "server out of memory; try again");
        }
        json_decref(body);
        return;
    }
    l->req = req;
    l->api = api;
    ratelimit_addr_key(http_request_peer(req), l->addr);
    memcpy(l->password, pw, pw_len);
    l->password_len = pw_len;
    l->name_key[0] = 'u';
    l->name_key[1] = ':';
    username_fold(name, name_len, l->name_key + 2);
    l->name_key_len = name_len + 2;
    /* Both attempts are taken before the password is looked at, and kept
     * unless it turns out right (or is never checked). */
    int64_t now = time_now_ms();
    static const char too_many[] = "Too many failed login attempts; try again later";
    if (api_limited(req, api->login_by_name, l->name_key, l->name_key_len, now, too_many)) {
        login_free(l);
        json_decref(body);
        return;
    }
    if (api_limited(req, api->login_by_addr, l->addr, strlen(l->addr), now, too_many)) {
        ratelimit_give_back(api->login_by_name, l->name_key, l->name_key_len, now);
        login_free(l);
        json_decref(body);
        return;
    }
    store_user_find(api->store, name, name_len, on_login_user, l);
    json_decref(body);
}

/* ---- logout, me ---- */

static void on_revoked(void *ctx, int err, const store_token_t *t) {
    (void)t;
    http_request_t *req = ctx;
    if (err) {
        respond_store_error(req, err, "Invalid or expired token");
        return;
    }
    /* The session is over everywhere: its event streams end too. */
    const api_call_t *call = api_call(req);
    if (call->has_caller && call->api->events) events_end_session(call->api->events, &call->caller, call->token_hash);
    http_respond_static(req, 204, "text/plain", "", 0);
}

void handle_logout(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    store_token_delete(api->store, api_call(req)->token_hash, on_revoked, req);
}

static void on_me(void *ctx, int err, const user_t *u) {
    http_request_t *req = ctx;
    if (err) {
        respond_store_error(req, err, "User not found");
        return;
    }
    buf_t b;
    buf_init(&b);
    render_user(&b, u);
    http_respond_json(req, 200, &b);
}

void handle_me(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    const api_call_t *call = api_call(req);
    if (!call->has_caller) { /* auth off: there is no "me" */
        http_respond_error(req, 404, "No authenticated user: authentication is off on this server");
        return;
    }
    store_user_get(api->store, &call->caller, on_me, req);
}
