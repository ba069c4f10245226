/* cass_users.c - users and auth tokens on Cassandra: a registration writes
 * the credentials and the users row, then reserves the name in
 * users_by_name by a lightweight transaction; a look-up by id or by
 * (folded) name; tokens by the hash of their secret, with a TTL that ends
 * with them.
 */
#include <stdlib.h>
#include <string.h>

#include "store/cassandra/cass_internal.h"
#include "util/log.h"
#include "util/timefmt.h"

/* ------------------------------------------------------------------ users */

typedef struct user_op {
    cass_store_t *s;
    store_user_cb cb;
    void *ctx;
    user_t user;
    bool want_hash;         /* user_find: also read the credentials */
    char name[USERNAME_MAX * 4 + 1];
    char folded[USERNAME_MAX * 4 + 1];
    char hash[PASSWORD_HASH_MAX + 1];
} user_op_t;

static user_op_t *user_op_new(cass_store_t *s, store_user_cb cb, void *ctx, const char *name, size_t len) {
    if (len > USERNAME_MAX * 4) return NULL;
    user_op_t *op = calloc(1, sizeof *op);
    if (!op) return NULL;
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    if (len) memcpy(op->name, name, len);
    username_fold(name, len, op->folded);
    op->user.name = op->name;
    op->user.name_len = len;
    return op;
}

static void user_op_finish(user_op_t *op, int err) {
    op->cb(op->ctx, err, err ? NULL : &op->user);
    free(op);
}

static void on_cred_row(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "credentials read");
    cql_str h;
    if (!err && cql_result_next_row(r) == 1 && cql_row_get_text(r, 0, &h) == CQL_OK && h.ptr &&
        h.len <= PASSWORD_HASH_MAX) {
        memcpy(op->hash, h.ptr, h.len);
        op->user.password_hash = op->hash;
        op->user.password_hash_len = h.len;
    }
    user_op_finish(op, err);
}

static void on_user_row(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "user read");
    if (!err) {
        cql_str name;
        if (cql_result_next_row(r) != 1 || cql_row_get_text(r, 0, &name) != CQL_OK) {
            err = STORE_ENOTFOUND;
        } else {
            /* Names written by others may exceed our limit: cut, never overflow. */
            size_t n = name.len < sizeof op->name - 1 ? name.len : sizeof op->name - 1;
            memcpy(op->name, name.ptr, n);
            op->user.name_len = n;
        }
    }
    if (!err && op->want_hash) {
        cql_value v[1] = {v_uuid(&op->user.id)};
        cass_exec(op->s, Q_CRED_GET, v, 1, NULL, on_cred_row, op);
        return;
    }
    user_op_finish(op, err);
}

void cass_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    user_op_t *op = user_op_new(s, cb, ctx, "", 0);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->user.id = *id;
    cql_value v[1] = {v_uuid(id)};
    cass_exec(s, Q_USER_GET, v, 1, NULL, on_user_row, op);
}

static void on_name_row(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "username look-up");
    if (!err && (cql_result_next_row(r) != 1 || !row_uuid(r, 0, &op->user.id))) err = STORE_ENOTFOUND;
    if (err) { user_op_finish(op, err); return; }
    cql_value v[1] = {v_uuid(&op->user.id)};
    cass_exec(op->s, Q_USER_GET, v, 1, NULL, on_user_row, op);
}

void cass_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    if (len == 0 || len > USERNAME_MAX * 4) { cb(ctx, STORE_ENOTFOUND, NULL); return; }
    user_op_t *op = user_op_new(s, cb, ctx, name, len);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->want_hash = true;
    cql_value v[1] = {cql_value_textn(op->folded, len)};
    cass_exec(s, Q_NAME_GET, v, 1, NULL, on_name_row, op);
}

/* A registration writes its rows first and reserves the name last, so
 * that a failure half-way can never leave a name reserved for a user that
 * does not exist, which nobody could ever take again (the reservation is a
 * lightweight transaction: IF NOT EXISTS would refuse every later try).
 * Until the reservation the rows are reachable by nobody: the id is fresh
 * and random, and a look-up by name goes through users_by_name. From the
 * reservation on, the user is whole and can log in. A reservation whose
 * outcome is unknown (a time-out) is one or the other, never half. */

/* The name was taken: the rows written for it go again (best effort: a
 * row left behind names a user nobody can find by name). */
static void on_undo_user(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    if (cass_map_cql(status, r, "user row removal after a taken name"))
        log_warn("store", "cassandra: a registration's users row may be left behind (name taken)");
    user_op_finish(op, STORE_ECONFLICT);
}

static void on_undo_cred(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    (void)cass_map_cql(status, r, "credentials removal after a taken name");
    cql_value v[1] = {v_uuid(&op->user.id)};
    cass_exec(op->s, Q_USER_DEL, v, 1, NULL, on_undo_user, op);
}

/* Whether a refused reservation's row (the LWT answers with the row it
 * found) names our own id: a registration of the same user again (the
 * seeder's ids are derived from names), whose rows are the existing user's
 * and must stay. */
static bool reserved_for_us(cql_result *r, const uuid_t *id) {
    int col = cass_col_index(r, "user_id");
    uuid_t found;
    return col > 0 && row_uuid(r, col, &found) && uuid_cmp(&found, id) == 0;
}

static void on_name_lwt(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "username reservation");
    int applied = 0;
    if (!err && (cql_result_next_row(r) != 1 || cql_row_get_bool(r, 0, &applied) != CQL_OK)) err = STORE_EIO;
    if (err || applied) { user_op_finish(op, err); return; }
    if (reserved_for_us(r, &op->user.id)) { user_op_finish(op, STORE_ECONFLICT); return; }
    cql_value v[1] = {v_uuid(&op->user.id)};
    cass_exec(op->s, Q_CRED_DEL, v, 1, NULL, on_undo_cred, op);
}

static void reserve_name(user_op_t *op) {
    cql_value v[2] = {cql_value_textn(op->folded, op->user.name_len), v_uuid(&op->user.id)};
    cass_exec_lwt(op->s, Q_NAME_LWT, v, 2, on_name_lwt, op);
}

static void on_user_put(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "user insert");
    if (err) user_op_finish(op, err);
    else reserve_name(op);
}

static void put_user_row(user_op_t *op) {
    cql_value v[2] = {v_uuid(&op->user.id), cql_value_textn(op->name, op->user.name_len)};
    cass_exec(op->s, Q_USER_PUT, v, 2, NULL, on_user_put, op);
}

/* The credentials before the users row: once a user can be found by id, it
 * can log in (when it registered with a password). */
static void on_cred_put(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = cass_map_cql(status, r, "credentials insert");
    if (err) user_op_finish(op, err);
    else put_user_row(op);
}

void cass_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    if (u->password_hash && u->password_hash_len > PASSWORD_HASH_MAX) { cb(ctx, STORE_EIO, NULL); return; }
    user_op_t *op = user_op_new(s, cb, ctx, u->name, u->name_len);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->user.id = u->id;
    if (u->password_hash) {
        memcpy(op->hash, u->password_hash, u->password_hash_len);
        op->user.password_hash = op->hash;
        op->user.password_hash_len = u->password_hash_len;
    }
    if (op->user.password_hash) {
        cql_value v[2] = {v_uuid(&op->user.id), cql_value_textn(op->hash, op->user.password_hash_len)};
        cass_exec(s, Q_CRED_PUT, v, 2, NULL, on_cred_put, op);
    } else {
        put_user_row(op);
    }
}

/* ------------------------------------------------------------------ tokens */

typedef struct token_op {
    store_token_cb cb;
    void *ctx;
    store_token_t t;
} token_op_t;

static token_op_t *token_op_new(store_token_cb cb, void *ctx, const uint8_t *hash) {
    token_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return NULL; }
    op->cb = cb;
    op->ctx = ctx;
    memcpy(op->t.hash, hash, STORE_TOKEN_HASH_LEN);
    return op;
}

static void token_op_finish(token_op_t *op, int err) {
    op->cb(op->ctx, err, err ? NULL : &op->t);
    free(op);
}

static void on_token_written(void *arg, int status, cql_result *r) {
    token_op_finish(arg, cass_map_cql(status, r, "token write"));
}

static void on_token_row(void *arg, int status, cql_result *r) {
    token_op_t *op = arg;
    int err = cass_map_cql(status, r, "token read");
    /* The row's TTL ends with the token; the time check covers the last
     * second and clocks that disagree. */
    if (!err && (cql_result_next_row(r) != 1 || !row_uuid(r, 0, &op->t.user_id) ||
                 cass_row_time_ms(r, 1, &op->t.expires_at_ms) != CQL_OK ||
                 op->t.expires_at_ms <= time_now_ms()))
        err = STORE_ENOTFOUND;
    token_op_finish(op, err);
}

void cass_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, t->hash);
    if (!op) return;
    op->t = *t;
    int64_t ttl_s = (t->expires_at_ms - time_now_ms()) / 1000 + 1;
    if (ttl_s < 1) ttl_s = 1;
    if (ttl_s > 630720000) ttl_s = 630720000; /* Cassandra's largest TTL: 20 years */
    cql_value v[4] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN), v_uuid(&op->t.user_id),
                      cql_value_timestamp(op->t.expires_at_ms), cql_value_int((int32_t)ttl_s)};
    cass_exec((cass_store_t *)base, Q_TOKEN_PUT, v, 4, NULL, on_token_written, op);
}

void cass_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, hash);
    if (!op) return;
    cql_value v[1] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN)};
    cass_exec((cass_store_t *)base, Q_TOKEN_GET, v, 1, NULL, on_token_row, op);
}

void cass_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, hash);
    if (!op) return;
    cql_value v[1] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN)};
    cass_exec((cass_store_t *)base, Q_TOKEN_DEL, v, 1, NULL, on_token_written, op);
}
