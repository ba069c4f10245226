/* store.c - the public storage interface: dispatch to a backend under the
 * completion rule of util/defer.h.
 *
 * Every operation becomes a store_call_t that holds a copy of its
 * arguments (strings included: the caller's may be gone before a deferred
 * start) and the caller's callback. The backend is handed a trampoline
 * instead of that callback; the trampoline runs the caller's callback
 * inside a defer scope, so that what the callback starts in turn is also
 * started only after it returned.
 *
 * In the delayed-completion test mode (util/test_delay.h) every completion
 * is delivered from a thread of its own after a random 0-2 ms, while the
 * backend's thread waits (so that the result it points into stays valid). That is how a slow, remote store answers, and it makes
 * every race between a completion and the client's connection likely
 * enough for the test suites to find.
 */
#include "store/store_impl.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "util/defer.h"
#include "util/test_delay.h"
#include "util/log.h"

const char *store_strerror(int err) {
    switch (err) {
    case STORE_OK: return "ok";
    case STORE_ENOTFOUND: return "not found";
    case STORE_ECONFLICT: return "conflict";
    case STORE_EUNAVAILABLE: return "storage unavailable";
    case STORE_EFULL: return "storage full";
    case STORE_ENOMEM: return "out of memory";
    case STORE_EIO: return "storage error";
    case STORE_EBADCURSOR: return "cursor names no position";
    default: return "unknown storage error";
    }
}

typedef struct store_call store_call_t;
struct store_call {
    defer_item_t item;                 /* first: a deferred start */
    store_t *s;
    void (*start)(store_call_t *c);    /* hands the copied arguments to the backend */
    void (*fire)(store_call_t *c);     /* calls the caller's callback with the result */
    union {
        store_user_cb user;
        store_token_cb token;
        store_send_cb send;
        store_msg_page_cb msgs;
        store_conv_page_cb convs;
        store_conv_cb conv;
        store_health_cb health;
    } cb;
    void *ctx;
    /* the result, valid while it is being delivered */
    int err;
    const void *res;
    bool replayed;
    /* the arguments */
    union {
        user_t user;
        uuid_t id;
        struct { const char *name; size_t len; } find;
        store_token_t token;
        uint8_t hash[STORE_TOKEN_HASH_LEN];
        store_send_t send;
        store_msg_query_t mq;
        store_conv_query_t cq;
        struct { uuid_t a, b; int64_t at_ms; } open;
    } a;
    size_t used;                       /* of bytes[] */
    char bytes[];                      /* copies of the strings the arguments point to */
};

/* ---- delivery ---- */

static void fire_and_free(store_call_t *c) {
    defer_scope_enter();
    c->fire(c);
    free(c);
    defer_scope_leave();
}

static void *delayed_fire(void *arg) {
    test_delay_sleep();
    fire_and_free(arg);
    return NULL;
}

/* True when c was delivered the test mode's way (util/test_delay.h): from a
 * thread of its own, late, while this one waits so that the result the
 * backend points into stays valid. */
static bool deliver_delayed(store_call_t *c) {
    if (!test_delay_on()) return false;
    pthread_t t;
    if (pthread_create(&t, NULL, delayed_fire, c) != 0) return false;
    pthread_join(t, NULL);
    return true;
}

static void deliver(store_call_t *c) {
    if (!deliver_delayed(c)) fire_and_free(c);
}

/* ---- trampolines: what the backend calls ---- */

static void tr_user(void *ctx, int err, const user_t *u) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = u;
    deliver(c);
}
static void fire_user(store_call_t *c) { c->cb.user(c->ctx, c->err, c->res); }

static void tr_token(void *ctx, int err, const store_token_t *t) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = t;
    deliver(c);
}
static void fire_token(store_call_t *c) { c->cb.token(c->ctx, c->err, c->res); }

static void tr_send(void *ctx, int err, const message_t *m, bool replayed) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = m;
    c->replayed = replayed;
    deliver(c);
}
static void fire_send(store_call_t *c) { c->cb.send(c->ctx, c->err, c->res, c->replayed); }

static void tr_msgs(void *ctx, int err, const store_msg_page_t *p) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = p;
    deliver(c);
}
static void fire_msgs(store_call_t *c) { c->cb.msgs(c->ctx, c->err, c->res); }

static void tr_convs(void *ctx, int err, const store_conv_page_t *p) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = p;
    deliver(c);
}
static void fire_convs(store_call_t *c) { c->cb.convs(c->ctx, c->err, c->res); }

static void tr_conv(void *ctx, int err, const conversation_t *cv) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = cv;
    deliver(c);
}
static void fire_conv(store_call_t *c) { c->cb.conv(c->ctx, c->err, c->res); }

static void tr_health(void *ctx, int err, const char *detail) {
    store_call_t *c = ctx;
    c->err = err;
    c->res = detail;
    deliver(c);
}
static void fire_health(store_call_t *c) { c->cb.health(c->ctx, c->err, c->res); }

/* ---- starting ---- */

static store_call_t *call_new(store_t *s, size_t extra, void *ctx) {
    store_call_t *c = malloc(sizeof *c + extra);
    if (!c) {
        log_error("store", "out of memory starting a store operation");
        return NULL;
    }
    memset(c, 0, sizeof *c);
    c->s = s;
    c->ctx = ctx;
    return c;
}

/* A copy of [p, p+len) in c->bytes (NUL-terminated; NULL stays NULL). */
static const char *call_copy(store_call_t *c, const char *p, size_t len) {
    if (!p) return NULL;
    char *q = c->bytes + c->used;
    memcpy(q, p, len);
    q[len] = '\0';
    c->used += len + 1;
    return q;
}

static void run_deferred(defer_item_t *it) {
    store_call_t *c = (store_call_t *)it;
    c->start(c);
}

static void dispatch(store_call_t *c, void (*start)(store_call_t *)) {
    c->start = start;
    if (defer_in_scope()) {
        c->item.run = run_deferred;
        defer_post(&c->item);
    } else {
        start(c); /* a tool's thread: nothing to return to (defer.h) */
    }
}

/* Out of memory for the call itself: the one case where the callback runs
 * inside the call (there is nothing left to queue it with). */
#define CALL_OR_FAIL(c, s, extra, ctx, fail)   \
    store_call_t *c = call_new(s, extra, ctx); \
    if (!c) { fail; return; }

static void start_user_create(store_call_t *c) { c->s->ops->user_create(c->s, &c->a.user, tr_user, c); }
void store_user_create(store_t *s, const user_t *u, store_user_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, u->name_len + u->password_hash_len + 2, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.user = *u;
    c->a.user.name = call_copy(c, u->name, u->name_len);
    c->a.user.password_hash = call_copy(c, u->password_hash, u->password_hash_len);
    c->cb.user = cb;
    c->fire = fire_user;
    dispatch(c, start_user_create);
}

static void start_user_get(store_call_t *c) { c->s->ops->user_get(c->s, &c->a.id, tr_user, c); }
void store_user_get(store_t *s, const uuid_t *id, store_user_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.id = *id;
    c->cb.user = cb;
    c->fire = fire_user;
    dispatch(c, start_user_get);
}

static void start_user_find(store_call_t *c) {
    c->s->ops->user_find(c->s, c->a.find.name, c->a.find.len, tr_user, c);
}
void store_user_find(store_t *s, const char *name, size_t len, store_user_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, len + 1, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.find.name = call_copy(c, name, len);
    c->a.find.len = len;
    c->cb.user = cb;
    c->fire = fire_user;
    dispatch(c, start_user_find);
}

static void start_token_put(store_call_t *c) { c->s->ops->token_put(c->s, &c->a.token, tr_token, c); }
void store_token_put(store_t *s, const store_token_t *t, store_token_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.token = *t;
    c->cb.token = cb;
    c->fire = fire_token;
    dispatch(c, start_token_put);
}

static void start_token_get(store_call_t *c) { c->s->ops->token_get(c->s, c->a.hash, tr_token, c); }
void store_token_get(store_t *s, const uint8_t h[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    memcpy(c->a.hash, h, STORE_TOKEN_HASH_LEN);
    c->cb.token = cb;
    c->fire = fire_token;
    dispatch(c, start_token_get);
}

static void start_token_delete(store_call_t *c) { c->s->ops->token_delete(c->s, c->a.hash, tr_token, c); }
void store_token_delete(store_t *s, const uint8_t h[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    memcpy(c->a.hash, h, STORE_TOKEN_HASH_LEN);
    c->cb.token = cb;
    c->fire = fire_token;
    dispatch(c, start_token_delete);
}

static void start_send(store_call_t *c) { c->s->ops->message_send(c->s, &c->a.send, tr_send, c); }
void store_message_send(store_t *s, const store_send_t *r, store_send_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, r->content_len + r->client_message_id_len + 2, ctx, cb(ctx, STORE_ENOMEM, NULL, false));
    c->a.send = *r;
    c->a.send.content = call_copy(c, r->content ? r->content : "", r->content_len);
    c->a.send.client_message_id = call_copy(c, r->client_message_id, r->client_message_id_len);
    c->cb.send = cb;
    c->fire = fire_send;
    dispatch(c, start_send);
}

static void start_msgs(store_call_t *c) { c->s->ops->messages_list(c->s, &c->a.mq, tr_msgs, c); }
void store_messages_list(store_t *s, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.mq = *q;
    c->cb.msgs = cb;
    c->fire = fire_msgs;
    dispatch(c, start_msgs);
}

static void start_convs(store_call_t *c) { c->s->ops->conversations_list(c->s, &c->a.cq, tr_convs, c); }
void store_conversations_list(store_t *s, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.cq = *q;
    c->cb.convs = cb;
    c->fire = fire_convs;
    dispatch(c, start_convs);
}

static void start_conv_get(store_call_t *c) { c->s->ops->conversation_get(c->s, &c->a.id, tr_conv, c); }
void store_conversation_get(store_t *s, const uuid_t *id, store_conv_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.id = *id;
    c->cb.conv = cb;
    c->fire = fire_conv;
    dispatch(c, start_conv_get);
}

static void start_conv_open(store_call_t *c) {
    c->s->ops->conversation_open(c->s, &c->a.open.a, &c->a.open.b, c->a.open.at_ms, tr_conv, c);
}
void store_conversation_open(store_t *s, const uuid_t *a, const uuid_t *b, int64_t at, store_conv_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, NULL));
    c->a.open.a = *a;
    c->a.open.b = *b;
    c->a.open.at_ms = at;
    c->cb.conv = cb;
    c->fire = fire_conv;
    dispatch(c, start_conv_open);
}

static void start_health(store_call_t *c) { c->s->ops->health(c->s, tr_health, c); }
void store_health(store_t *s, store_health_cb cb, void *ctx) {
    CALL_OR_FAIL(c, s, 0, ctx, cb(ctx, STORE_ENOMEM, "out of memory"));
    c->cb.health = cb;
    c->fire = fire_health;
    dispatch(c, start_health);
}

const char *store_degraded(store_t *s) { return s->ops->degraded ? s->ops->degraded(s) : NULL; }
const char *store_name(const store_t *s) { return s->ops->name; }
void store_close(store_t *s) { if (s) s->ops->close(s); }
