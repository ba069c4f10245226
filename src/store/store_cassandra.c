/* store_cassandra.c - the Cassandra backend (see store_cassandra.h).
 *
 * Tables. The first four are the FastAPI implementation's, in its format;
 * the others are ours and only ever added:
 *
 *   users                     (user_id) username
 *   conversations_by_user     (user_id, conversation_id DESC) other_user_id, last_message, last_updated
 *   messages_by_conversation  (conversation_id, message_id DESC) sender_id, receiver_id, content, created_at
 *   conversation_metadata     (conversation_id) created_at
 *   users_by_name             (username_lower) user_id             unique names (LWT)
 *   conversations_by_recency  (user_id, activity DESC, conversation_id DESC)   the list order
 *                             (conversation_id a 16-byte blob: see v_conv_key)
 *   conversation_participants (conversation_id) user1_id, user2_id
 *   idempotency               ((sender_id, client_message_id)) ... TTL 24 h (LWT)
 *
 * Recency without read-modify-write races. A conversation's activity is the
 * time (ms) of its newest message, or its creation while it has none. Every
 * write of a send carries USING TIMESTAMP = the message's time in µs, so that
 * last-write-wins resolves concurrent sends to the newest message, whatever
 * order they arrive in. A send reads the conversation's current activity A,
 * then in one logged batch writes the message, both conversations_by_user
 * rows, deletes both recency rows at A and inserts both at the new activity.
 * Two concurrent sends can both read the same A; the older of the two then
 * leaves a recency row behind that is older than the conversation's
 * last_updated. Readers check every recency row against
 * conversations_by_user (one IN query per page) and skip such stale rows,
 * deleting them as they go (see on_cbu_in). A send's delete can never remove
 * a newer row: its tombstone carries the older message's timestamp.
 *
 * So a page of the conversation list costs two queries whatever the number
 * of conversations, a page of messages one, and a send three parallel
 * point reads (sender, receiver, current activity) and one batch.
 */
#include "store/store_cassandra.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cql.h"
#include "store/store_impl.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/timefmt.h"

#define MAX_PAGE 100
/* Every send deletes a recency row, so a user's partition fills with
 * tombstones that every page of the list reads through (a 2M-message set:
 * ~400 per user, 51 ms per page). The table is an index that readers check
 * against conversations_by_user (a stale row is skipped and deleted), so a
 * deleted row that comes back does no harm: its tombstones need not outlive
 * a compaction (gc_grace_seconds 0), and levelled compaction with
 * single-sstable tombstone compactions purges them soon after they are
 * written. */
#define RECENCY_TABLE_OPTIONS \
    "gc_grace_seconds = 0 AND compaction = {'class': 'LeveledCompactionStrategy', " \
    "'unchecked_tombstone_compaction': 'true', 'tombstone_threshold': '0.1', 'tombstone_compaction_interval': '60'}"
#define Q_RECENCY_GC "SELECT gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ? AND table_name = " \
    "'conversations_by_recency'"

#define RECENCY_SLACK 8 /* extra recency rows fetched per page, for stale ones */

/* Statements (names unqualified: the client USEs the keyspace). */
#define Q_USER_GET "SELECT username FROM users WHERE user_id = ?"
#define Q_USER_PUT "INSERT INTO users (user_id, username) VALUES (?, ?)"
#define Q_NAME_GET "SELECT user_id FROM users_by_name WHERE username_lower = ?"
#define Q_CRED_GET "SELECT password_hash FROM user_credentials WHERE user_id = ?"
#define Q_CRED_PUT "INSERT INTO user_credentials (user_id, password_hash) VALUES (?, ?)"
#define Q_TOKEN_GET "SELECT user_id, expires_at FROM auth_tokens WHERE token_hash = ?"
#define Q_TOKEN_PUT "INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?) USING TTL ?"
#define Q_TOKEN_DEL "DELETE FROM auth_tokens WHERE token_hash = ?"
#define Q_NAME_LWT "INSERT INTO users_by_name (username_lower, user_id) VALUES (?, ?) IF NOT EXISTS"
#define Q_IDEM_LWT                                                                                  \
    "INSERT INTO idempotency (sender_id, client_message_id, conversation_id, message_id, receiver_id, " \
    "content_sha256) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS"
#define Q_CBU_GET \
    "SELECT other_user_id, last_message, last_updated FROM conversations_by_user WHERE user_id = ? AND conversation_id = ?"
#define Q_CBU_PUT                                                                                          \
    "INSERT INTO conversations_by_user (user_id, conversation_id, other_user_id, last_message, last_updated) " \
    "VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?"
#define Q_MSG_PUT                                                                                                \
    "INSERT INTO messages_by_conversation (conversation_id, message_id, sender_id, receiver_id, content, created_at) " \
    "VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
#define Q_REC_DEL \
    "DELETE FROM conversations_by_recency USING TIMESTAMP ? WHERE user_id = ? AND activity = ? AND conversation_id = ?"
#define Q_REC_PUT \
    "INSERT INTO conversations_by_recency (user_id, activity, conversation_id) VALUES (?, ?, ?) USING TIMESTAMP ?"
#define Q_META_GET "SELECT created_at FROM conversation_metadata WHERE conversation_id = ?"
#define Q_META_PUT "INSERT INTO conversation_metadata (conversation_id, created_at) VALUES (?, ?) USING TIMESTAMP ?"
#define Q_PART_GET "SELECT user1_id, user2_id FROM conversation_participants WHERE conversation_id = ?"
#define Q_PART_PUT \
    "INSERT INTO conversation_participants (conversation_id, user1_id, user2_id) VALUES (?, ?, ?) USING TIMESTAMP ?"
#define MSG_COLS "SELECT message_id, sender_id, receiver_id, content, created_at FROM messages_by_conversation "
#define Q_MSG_GET MSG_COLS "WHERE conversation_id = ? AND message_id = ?"
#define Q_MSG_TOP MSG_COLS "WHERE conversation_id = ? LIMIT ?"
#define Q_MSG_BEFORE MSG_COLS "WHERE conversation_id = ? AND message_id < ? LIMIT ?"
#define Q_MSG_AFTER MSG_COLS "WHERE conversation_id = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?"
#define Q_REC_TOP "SELECT activity, conversation_id FROM conversations_by_recency WHERE user_id = ? LIMIT ?"
#define Q_REC_BELOW                                                                                   \
    "SELECT activity, conversation_id FROM conversations_by_recency WHERE user_id = ? AND (activity, " \
    "conversation_id) < (?, ?) LIMIT ?"
#define Q_HEALTH "SELECT release_version FROM system.local"

typedef struct cass_store {
    store_t base;
    cql_client *cql;
    idgen_t *ids;
    uint16_t consistency;
    uint32_t timeout_ms;
    /* "... conversation_id IN (?, ..., ?)" for n = 1..MAX_PAGE+RECENCY_SLACK+1 */
    char *cbu_in[MAX_PAGE + RECENCY_SLACK + 2];
} cass_store_t;

static const store_ops_t CASS_OPS;

/* ------------------------------------------------------------------ util */

static bool server_side_unavailable(int32_t code) {
    switch (code) {
    case CQL_UNAVAILABLE: case CQL_OVERLOADED: case CQL_IS_BOOTSTRAPPING:
    case CQL_WRITE_TIMEOUT: case CQL_READ_TIMEOUT: case CQL_READ_FAILURE: case CQL_WRITE_FAILURE:
        return true;
    default:
        return false;
    }
}

/* Maps a CQL completion to a store error, logging what the operator needs. */
static int map_cql(int status, cql_result *r, const char *what) {
    if (status == CQL_OK) return STORE_OK;
    if (status == CQL_ESERVER && r) {
        const cql_error *e = cql_result_error(r);
        char msg[512];
        if (e) cql_error_format(e, msg, sizeof msg);
        else snprintf(msg, sizeof msg, "server error");
        if (e && server_side_unavailable(e->code)) {
            log_warn("store", "cassandra %s: %s", what, msg);
            return STORE_EUNAVAILABLE;
        }
        log_error("store", "cassandra %s: %s", what, msg);
        return STORE_EIO;
    }
    switch (status) {
    case CQL_ETIMEDOUT: case CQL_ECONN: case CQL_ENOHOST: case CQL_ECLOSED:
        log_warn("store", "cassandra %s: %s", what, cql_strerror(status));
        return STORE_EUNAVAILABLE;
    case CQL_ENOMEM: return STORE_ENOMEM;
    default:
        log_error("store", "cassandra %s: %s", what, cql_strerror(status));
        return STORE_EIO;
    }
}

static cql_value v_uuid(const uuid_t *u) { return cql_value_uuid(u->b); }
static cql_value v_timeuuid(const uuid_t *u) { return cql_value_timeuuid(u->b); }
/* conversations_by_recency keys conversations as a blob: Cassandra orders a
 * uuid column by version nibble first, and derived conversation ids carry
 * arbitrary nibbles; a blob orders byte-wise, like our cursors. */
static cql_value v_conv_key(const uuid_t *u) { return cql_value_blob(u->b, 16); }

static void query_opts(const cass_store_t *s, cql_query_opts *o) {
    cql_query_opts_init(o);
    o->consistency = s->consistency;
    o->timeout_ms = s->timeout_ms;
}

/* Submits a prepared statement; on a submit failure the callback is run
 * here with that status, so callers have one path for every outcome. */
static void exec(cass_store_t *s, const char *q, const cql_value *v, size_t n, const cql_query_opts *opts,
                 cql_result_cb cb, void *arg) {
    cql_query_opts o;
    if (!opts) {
        query_opts(s, &o);
        opts = &o;
    }
    int rc = cql_execute(s->cql, q, v, n, opts, cb, arg);
    if (rc < 0) cb(arg, rc, NULL);
}

/* A lightweight transaction (INSERT ... IF NOT EXISTS): serial consistency
 * for its Paxos round, the store's consistency for the commit. */
static void exec_lwt(cass_store_t *s, const char *q, const cql_value *v, size_t n, cql_result_cb cb, void *arg) {
    cql_query_opts o;
    query_opts(s, &o);
    o.serial_consistency = CQL_LOCAL_SERIAL;
    exec(s, q, v, n, &o, cb, arg);
}

/* ---- fan-out: independent reads issued at once, joined by a counter ----
 * Each branch reports to the join; the last one to arrive runs `done`, on
 * whichever thread that is. The submitter holds one extra count while it
 * submits, so `done` cannot run before every branch is out. */
typedef struct join {
    _Atomic int pending;
    _Atomic int err;                 /* the first error of any branch */
    void (*done)(void *op, int err);
    void *op;
} join_t;

static void join_start(join_t *j, int branches, void (*done)(void *, int), void *op) {
    atomic_store(&j->pending, branches + 1);
    atomic_store(&j->err, 0);
    j->done = done;
    j->op = op;
}

static void join_arrive(join_t *j, int err) {
    if (err) {
        int expected = 0;
        atomic_compare_exchange_strong(&j->err, &expected, err);
    }
    if (atomic_fetch_sub(&j->pending, 1) == 1) j->done(j->op, atomic_load(&j->err));
}

/* A branch that only asks whether a row exists. */
typedef struct probe {
    join_t *join;
    bool found;
    const char *what;
} probe_t;

static void on_probe(void *arg, int status, cql_result *r) {
    probe_t *p = arg;
    int err = map_cql(status, r, p->what);
    if (!err) p->found = cql_result_next_row(r) == 1;
    join_arrive(p->join, err);
}

static void probe(cass_store_t *s, join_t *j, probe_t *p, const char *what, const char *q, const cql_value *v,
                  size_t n) {
    p->join = j;
    p->found = false;
    p->what = what;
    exec(s, q, v, n, NULL, on_probe, p);
}

/* Reads column `col` of the current row as a uuid. */
static bool row_uuid(cql_result *r, int col, uuid_t *out) { return cql_row_get_uuid(r, col, out->b) == CQL_OK; }

/* Reads column `col` of the current row as a time in Unix ms (a timestamp
 * or a bigint of ms): CQL_OK only for a time within time_ms_valid(). What a
 * node sends is input: a value outside it is logged and read as absent. */
static int row_time_ms(cql_result *r, int col, int64_t *out) {
    int64_t v;
    int rc = cql_row_get_timestamp(r, col, &v);
    if (rc == CQL_ETYPE) rc = cql_row_get_bigint(r, col, &v);
    if (rc != CQL_OK) return rc;
    if (!time_ms_valid(v)) {
        log_warn("store", "a time of %lld ms read from Cassandra is out of range: row ignored", (long long)v);
        return CQL_ERANGE;
    }
    *out = v;
    return CQL_OK;
}

static int64_t ticks_to_unix_us(uint64_t ticks) { return ((int64_t)ticks - (int64_t)UUID_TICKS_UNIX_EPOCH) / 10; }

/* conversation_metadata and conversation_participants are immutable, and the
 * first writer must win: an inverted write timestamp makes the earliest
 * creation time the "latest" write. */
static int64_t first_writer_wins_ts(int64_t created_ms) { return (INT64_C(1) << 62) - created_ms * 1000; }

/* Decodes a message row of the MSG_COLS shape. */
static bool decode_message(cql_result *r, const uuid_t *conv, message_t *m) {
    cql_str content;
    m->conversation_id = *conv;
    if (!row_uuid(r, 0, &m->id) || !row_uuid(r, 1, &m->sender_id) || !row_uuid(r, 2, &m->receiver_id))
        return false;
    if (cql_row_get_text(r, 3, &content) == CQL_OK) {
        m->content = content.ptr;
        m->content_len = content.len;
    } else {
        m->content = "";
        m->content_len = 0;
    }
    if (row_time_ms(r, 4, &m->created_at_ms) != CQL_OK)
        m->created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m->id));
    return uuid_version(&m->id) == 1 && time_ms_valid(m->created_at_ms); /* else damage: skipped */
}

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
    int err = map_cql(status, r, "credentials read");
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
    int err = map_cql(status, r, "user read");
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
        exec(op->s, Q_CRED_GET, v, 1, NULL, on_cred_row, op);
        return;
    }
    user_op_finish(op, err);
}

static void cass_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    user_op_t *op = user_op_new(s, cb, ctx, "", 0);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->user.id = *id;
    cql_value v[1] = {v_uuid(id)};
    exec(s, Q_USER_GET, v, 1, NULL, on_user_row, op);
}

static void on_name_row(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = map_cql(status, r, "username look-up");
    if (!err && (cql_result_next_row(r) != 1 || !row_uuid(r, 0, &op->user.id))) err = STORE_ENOTFOUND;
    if (err) { user_op_finish(op, err); return; }
    cql_value v[1] = {v_uuid(&op->user.id)};
    exec(op->s, Q_USER_GET, v, 1, NULL, on_user_row, op);
}

static void cass_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    if (len == 0 || len > USERNAME_MAX * 4) { cb(ctx, STORE_ENOTFOUND, NULL); return; }
    user_op_t *op = user_op_new(s, cb, ctx, name, len);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->want_hash = true;
    cql_value v[1] = {cql_value_textn(op->folded, len)};
    exec(s, Q_NAME_GET, v, 1, NULL, on_name_row, op);
}

static void on_user_put(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    user_op_finish(op, map_cql(status, r, "user insert"));
}

static void put_user_row(user_op_t *op) {
    cql_value v[2] = {v_uuid(&op->user.id), cql_value_textn(op->name, op->user.name_len)};
    exec(op->s, Q_USER_PUT, v, 2, NULL, on_user_put, op);
}

static void on_cred_put(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = map_cql(status, r, "credentials insert");
    if (err) user_op_finish(op, err);
    else put_user_row(op);
}

static void on_name_lwt(void *arg, int status, cql_result *r) {
    user_op_t *op = arg;
    int err = map_cql(status, r, "username reservation");
    int applied = 0;
    if (!err && (cql_result_next_row(r) != 1 || cql_row_get_bool(r, 0, &applied) != CQL_OK)) err = STORE_EIO;
    if (!err && !applied) err = STORE_ECONFLICT;
    if (err) { user_op_finish(op, err); return; }
    /* The credentials before the users row: once a user can be found, it
     * can log in. */
    if (op->user.password_hash) {
        cql_value v[2] = {v_uuid(&op->user.id), cql_value_textn(op->hash, op->user.password_hash_len)};
        exec(op->s, Q_CRED_PUT, v, 2, NULL, on_cred_put, op);
        return;
    }
    put_user_row(op);
}

static void cass_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx) {
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
    cql_value v[2] = {cql_value_textn(op->folded, u->name_len), v_uuid(&u->id)};
    exec_lwt(s, Q_NAME_LWT, v, 2, on_name_lwt, op);
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
    token_op_finish(arg, map_cql(status, r, "token write"));
}

static void on_token_row(void *arg, int status, cql_result *r) {
    token_op_t *op = arg;
    int err = map_cql(status, r, "token read");
    /* The row's TTL ends with the token; the time check covers the last
     * second and clocks that disagree. */
    if (!err && (cql_result_next_row(r) != 1 || !row_uuid(r, 0, &op->t.user_id) ||
                 row_time_ms(r, 1, &op->t.expires_at_ms) != CQL_OK ||
                 op->t.expires_at_ms <= time_now_ms()))
        err = STORE_ENOTFOUND;
    token_op_finish(op, err);
}

static void cass_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, t->hash);
    if (!op) return;
    op->t = *t;
    int64_t ttl_s = (t->expires_at_ms - time_now_ms()) / 1000 + 1;
    if (ttl_s < 1) ttl_s = 1;
    if (ttl_s > 630720000) ttl_s = 630720000; /* Cassandra's largest TTL: 20 years */
    cql_value v[4] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN), v_uuid(&op->t.user_id),
                      cql_value_timestamp(op->t.expires_at_ms), cql_value_int((int32_t)ttl_s)};
    exec((cass_store_t *)base, Q_TOKEN_PUT, v, 4, NULL, on_token_written, op);
}

static void cass_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, hash);
    if (!op) return;
    cql_value v[1] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN)};
    exec((cass_store_t *)base, Q_TOKEN_GET, v, 1, NULL, on_token_row, op);
}

static void cass_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    token_op_t *op = token_op_new(cb, ctx, hash);
    if (!op) return;
    cql_value v[1] = {cql_value_blob(op->t.hash, STORE_TOKEN_HASH_LEN)};
    exec((cass_store_t *)base, Q_TOKEN_DEL, v, 1, NULL, on_token_written, op);
}

/* ------------------------------------------------------------------ send */

typedef struct send_op {
    cass_store_t *s;
    store_send_cb cb;
    void *ctx;
    store_send_t req;
    message_t msg;
    join_t reads;           /* sender, receiver, activity, metadata */
    probe_t sender, receiver, meta;
    bool has_old, replayed, reserved;
    int64_t old_activity;
    uint8_t content_hash[SHA256_LEN];
    char *result_text;      /* content of a replayed message */
    char text[];            /* content, then client_message_id */
} send_op_t;

static void send_finish(send_op_t *op, int err) {
    op->cb(op->ctx, err, err ? NULL : &op->msg, op->replayed);
    free(op->result_text);
    free(op);
}

static void send_write(send_op_t *op);

static void send_reads_done(void *arg, int err) {
    send_op_t *op = arg;
    if (!err && (!op->sender.found || !op->receiver.found)) err = STORE_ENOTFOUND;
    if (err) send_finish(op, err);
    else send_write(op);
}

static void on_send_activity(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = map_cql(status, r, "conversation read");
    if (!err && cql_result_next_row(r) == 1 && row_time_ms(r, 2, &op->old_activity) == CQL_OK)
        op->has_old = true;
    join_arrive(&op->reads, err);
}

static void send_reads(send_op_t *op) {
    cass_store_t *s = op->s;
    join_start(&op->reads, 4, send_reads_done, op);
    cql_value vs[1] = {v_uuid(&op->req.sender_id)};
    probe(s, &op->reads, &op->sender, "sender look-up", Q_USER_GET, vs, 1);
    cql_value vr[1] = {v_uuid(&op->req.receiver_id)};
    probe(s, &op->reads, &op->receiver, "receiver look-up", Q_USER_GET, vr, 1);
    cql_value va[2] = {v_uuid(&op->req.sender_id), v_uuid(&op->msg.conversation_id)};
    exec(s, Q_CBU_GET, va, 2, NULL, on_send_activity, op);
    cql_value vm[1] = {v_uuid(&op->msg.conversation_id)};
    probe(s, &op->reads, &op->meta, "metadata read", Q_META_GET, vm, 1);
    join_arrive(&op->reads, 0); /* the submitter's own count */
}

static void on_send_batch(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    send_finish(op, map_cql(status, r, "send batch"));
}

static void send_write(send_op_t *op) {
    cass_store_t *s = op->s;
    message_t *m = &op->msg;
    if (!op->reserved) {
        /* Not older than the conversation's newest message, even when this
         * node's clock is behind the node that wrote it. */
        uint64_t floor = op->has_old ? unix_ms_to_ticks(op->old_activity) : 0;
        idgen_next_after(s->ids, floor, &m->id);
    }
    m->created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m->id));
    int64_t ts = ticks_to_unix_us(uuid_time_ticks(&m->id));
    int64_t act = m->created_at_ms;
    const uuid_t *snd = &m->sender_id, *rcv = &m->receiver_id, *conv = &m->conversation_id;
    const uuid_t *lo = uuid_cmp(snd, rcv) <= 0 ? snd : rcv, *hi = lo == snd ? rcv : snd;
    cql_value content = cql_value_textn(m->content, m->content_len);

    cql_value v_msg[7] = {v_uuid(conv), v_timeuuid(&m->id), v_uuid(snd), v_uuid(rcv), content,
                          cql_value_timestamp(act), cql_value_bigint(ts)};
    cql_value v_cbu_s[6] = {v_uuid(snd), v_uuid(conv), v_uuid(rcv), content, cql_value_timestamp(act), cql_value_bigint(ts)};
    cql_value v_cbu_r[6] = {v_uuid(rcv), v_uuid(conv), v_uuid(snd), content, cql_value_timestamp(act), cql_value_bigint(ts)};
    cql_value v_del_s[4] = {cql_value_bigint(ts), v_uuid(snd), cql_value_bigint(op->old_activity), v_conv_key(conv)};
    cql_value v_del_r[4] = {cql_value_bigint(ts), v_uuid(rcv), cql_value_bigint(op->old_activity), v_conv_key(conv)};
    cql_value v_rec_s[4] = {v_uuid(snd), cql_value_bigint(act), v_conv_key(conv), cql_value_bigint(ts)};
    cql_value v_rec_r[4] = {v_uuid(rcv), cql_value_bigint(act), v_conv_key(conv), cql_value_bigint(ts)};
    int64_t fw = first_writer_wins_ts(act);
    cql_value v_meta[3] = {v_uuid(conv), cql_value_timestamp(act), cql_value_bigint(fw)};
    cql_value v_part[4] = {v_uuid(conv), v_uuid(lo), v_uuid(hi), cql_value_bigint(fw)};

    cql_batch_stmt st[9];
    size_t n = 0;
    st[n++] = (cql_batch_stmt){Q_MSG_PUT, v_msg, 7, 1};
    st[n++] = (cql_batch_stmt){Q_CBU_PUT, v_cbu_s, 6, 1};
    st[n++] = (cql_batch_stmt){Q_CBU_PUT, v_cbu_r, 6, 1};
    if (op->has_old && op->old_activity != act) {
        st[n++] = (cql_batch_stmt){Q_REC_DEL, v_del_s, 4, 1};
        st[n++] = (cql_batch_stmt){Q_REC_DEL, v_del_r, 4, 1};
    }
    st[n++] = (cql_batch_stmt){Q_REC_PUT, v_rec_s, 4, 1};
    st[n++] = (cql_batch_stmt){Q_REC_PUT, v_rec_r, 4, 1};
    if (!op->meta.found) {
        st[n++] = (cql_batch_stmt){Q_META_PUT, v_meta, 3, 1};
        st[n++] = (cql_batch_stmt){Q_PART_PUT, v_part, 4, 1};
    }
    cql_query_opts o;
    query_opts(s, &o);
    int rc = cql_batch(s->cql, CQL_BATCH_LOGGED, st, n, &o, on_send_batch, op);
    if (rc < 0) on_send_batch(op, rc, NULL);
}

/* An idempotency key was already used: fetch what it names and compare. */
static void on_send_reserved_message(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = map_cql(status, r, "idempotent replay read");
    if (err) { send_finish(op, err); return; }
    message_t old;
    if (cql_result_next_row(r) == 1 && decode_message(r, &op->msg.conversation_id, &old)) {
        if (uuid_cmp(&old.receiver_id, &op->req.receiver_id) != 0 || old.content_len != op->req.content_len ||
            (old.content_len && memcmp(old.content, op->req.content, old.content_len) != 0)) {
            send_finish(op, STORE_ECONFLICT);
            return;
        }
        op->result_text = malloc(old.content_len + 1);
        if (!op->result_text) { send_finish(op, STORE_ENOMEM); return; }
        if (old.content_len) memcpy(op->result_text, old.content, old.content_len);
        old.content = op->result_text;
        op->msg = old;
        op->replayed = true;
        send_finish(op, STORE_OK);
        return;
    }
    /* Reserved but never written (the first attempt failed half-way):
     * complete it now with the reserved id. */
    op->replayed = true;
    send_reads(op);
}

static int col_index(cql_result *r, const char *name) {
    int32_t n = cql_result_column_count(r);
    for (int32_t i = 0; i < n; i++) {
        cql_column c;
        if (cql_result_column(r, i, &c) == CQL_OK && c.name.len == strlen(name) &&
            memcmp(c.name.ptr, name, c.name.len) == 0)
            return (int)i;
    }
    return -1;
}

static void on_send_idem(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = map_cql(status, r, "idempotency reservation");
    int applied = 0;
    if (!err && (cql_result_next_row(r) != 1 || cql_row_get_bool(r, 0, &applied) != CQL_OK)) err = STORE_EIO;
    if (err) { send_finish(op, err); return; }
    if (applied) { send_reads(op); return; }
    /* Taken: the row that holds the key comes back with the answer. */
    int c_conv = col_index(r, "conversation_id"), c_id = col_index(r, "message_id"),
        c_rcv = col_index(r, "receiver_id"), c_hash = col_index(r, "content_sha256");
    uuid_t conv, id, rcv;
    const uint8_t *hash;
    size_t hash_len;
    if (c_conv < 0 || c_id < 0 || c_rcv < 0 || c_hash < 0 || !row_uuid(r, c_conv, &conv) || !row_uuid(r, c_id, &id) ||
        !row_uuid(r, c_rcv, &rcv) || cql_row_get_blob(r, c_hash, &hash, &hash_len) != CQL_OK) {
        send_finish(op, STORE_EIO);
        return;
    }
    if (uuid_cmp(&rcv, &op->req.receiver_id) != 0 || hash_len != sizeof op->content_hash ||
        memcmp(hash, op->content_hash, hash_len) != 0) {
        send_finish(op, STORE_ECONFLICT);
        return;
    }
    op->msg.id = id;
    op->reserved = true;
    cql_value v[2] = {v_uuid(&conv), v_timeuuid(&id)};
    exec(op->s, Q_MSG_GET, v, 2, NULL, on_send_reserved_message, op);
}

static void cass_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    size_t keylen = r->client_message_id ? r->client_message_id_len : 0;
    send_op_t *op = calloc(1, sizeof *op + r->content_len + keylen + 1);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL, false); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->req = *r;
    if (r->content_len) memcpy(op->text, r->content, r->content_len);
    op->req.content = op->text;
    if (keylen) {
        memcpy(op->text + r->content_len, r->client_message_id, keylen);
        op->req.client_message_id = op->text + r->content_len;
    }
    message_t *m = &op->msg;
    conversation_id_derive(&r->sender_id, &r->receiver_id, &m->conversation_id);
    m->sender_id = r->sender_id;
    m->receiver_id = r->receiver_id;
    m->content = op->req.content;
    m->content_len = r->content_len;
    if (!uuid_is_nil(&r->message_id)) {
        m->id = r->message_id; /* the seeder's fixed id */
        op->reserved = true;
    }
    if (!op->req.client_message_id) {
        send_reads(op);
        return;
    }
    /* Reserve the key and the message id in one lightweight transaction. */
    idgen_next(s->ids, &m->id);
    op->reserved = true;
    sha256(op->req.content, op->req.content_len, op->content_hash);
    cql_value v[6] = {v_uuid(&r->sender_id), cql_value_textn(op->req.client_message_id, keylen),
                      v_uuid(&m->conversation_id), v_timeuuid(&m->id), v_uuid(&r->receiver_id),
                      cql_value_blob(op->content_hash, sizeof op->content_hash)};
    exec_lwt(s, Q_IDEM_LWT, v, 6, on_send_idem, op);
}

/* ------------------------------------------------------------------ message pages */

typedef struct msg_page_op {
    cass_store_t *s;
    store_msg_page_cb cb;
    void *ctx;
    store_msg_query_t q;
} msg_page_op_t;

static void on_meta_for_empty_page(void *arg, int status, cql_result *r) {
    msg_page_op_t *op = arg;
    int err = map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) != 1) err = STORE_ENOTFOUND;
    store_msg_page_t page = {.items = NULL, .count = 0, .more = false};
    op->cb(op->ctx, err, err ? NULL : &page);
    free(op);
}

static void on_msg_page(void *arg, int status, cql_result *r) {
    msg_page_op_t *op = arg;
    int err = map_cql(status, r, "message page");
    if (err) {
        op->cb(op->ctx, err, NULL);
        free(op);
        return;
    }
    message_t items[MAX_PAGE];
    store_msg_page_t page = {.items = items};
    while (cql_result_next_row(r) == 1) {
        if (page.count == (size_t)op->q.limit) { page.more = true; break; }
        if (decode_message(r, &op->q.conversation_id, &items[page.count])) page.count++;
    }
    if (page.count == 0 && !page.more) {
        /* Empty: an empty conversation, or none at all? */
        cql_value v[1] = {v_uuid(&op->q.conversation_id)};
        exec(op->s, Q_META_GET, v, 1, NULL, on_meta_for_empty_page, op);
        return;
    }
    op->cb(op->ctx, STORE_OK, &page);
    free(op);
}

static void cass_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    msg_page_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->q = *q;
    if (op->q.limit < 1) op->q.limit = 1;
    if (op->q.limit > MAX_PAGE) op->q.limit = MAX_PAGE;
    cql_value v[3];
    v[0] = v_uuid(&q->conversation_id);
    int32_t fetch = op->q.limit + 1; /* one more tells whether more exist */
    if (q->has_after || q->has_before) {
        v[1] = v_timeuuid(q->has_after ? &q->after : &q->before);
        v[2] = cql_value_int(fetch);
        exec(s, q->has_after ? Q_MSG_AFTER : Q_MSG_BEFORE, v, 3, NULL, on_msg_page, op);
    } else {
        v[1] = cql_value_int(fetch);
        exec(s, Q_MSG_TOP, v, 2, NULL, on_msg_page, op);
    }
}

/* ------------------------------------------------------------------ conversation pages */

typedef struct conv_item {
    conversation_t c;
    char *content; /* owned copy */
} conv_item_t;

typedef struct conv_page_op {
    cass_store_t *s;
    store_conv_page_cb cb;
    void *ctx;
    store_conv_query_t q;
    join_t start;                /* user exists; a bare cursor's position */
    probe_t user;
    bool cursor_set;             /* position to continue below */
    int64_t pos_activity;
    uuid_t pos_id;
    bool has_start;              /* the page's own cursor (fixed), see relocate */
    int64_t start_activity;
    uuid_t start_id;
    /* rows of the current recency fetch */
    size_t n_rows;
    bool rows_more;
    int64_t row_activity[MAX_PAGE + RECENCY_SLACK + 1];
    uuid_t row_conv[MAX_PAGE + RECENCY_SLACK + 1];
    /* accepted items */
    size_t count;
    bool more;
    conv_item_t items[2 * (MAX_PAGE + 1) + RECENCY_SLACK]; /* the best limit+1, plus one fetch */
} conv_page_op_t;

static void conv_page_finish(conv_page_op_t *op, int err) {
    conversation_t out[MAX_PAGE];
    store_conv_page_t page = {.items = out, .count = 0, .more = op->more};
    if (!err) {
        for (size_t i = 0; i < op->count && i < (size_t)op->q.limit; i++) out[page.count++] = op->items[i].c;
    }
    op->cb(op->ctx, err, err ? NULL : &page);
    for (size_t i = 0; i < op->count; i++) free(op->items[i].content);
    free(op);
}

static void conv_fetch_recency(conv_page_op_t *op);

static void on_stale_deleted(void *arg, int status, cql_result *r) {
    (void)arg;
    if (status) map_cql(status, r, "stale recency row delete");
}

/* Deletes a recency row that no longer matches its conversation. The
 * tombstone's timestamp is the end of that row's millisecond: it removes the
 * row, and nothing written for a later message. */
static void delete_stale(cass_store_t *s, const uuid_t *user, int64_t activity, const uuid_t *conv) {
    cql_value v[4] = {cql_value_bigint((activity + 1) * 1000 - 1), v_uuid(user), cql_value_bigint(activity),
                      v_conv_key(conv)};
    exec(s, Q_REC_DEL, v, 4, NULL, on_stale_deleted, NULL);
}

/* True when conv was already accepted by this request (a conversation whose
 * newest send is half-applied can have two live recency rows for a moment). */
static bool conv_seen(const conv_page_op_t *op, const uuid_t *conv) {
    for (size_t i = 0; i < op->count; i++)
        if (uuid_cmp(&op->items[i].c.id, conv) == 0) return true;
    return false;
}

/* Position order of the list: activity, then conversation id, descending. */
static int position_cmp(int64_t a_act, const uuid_t *a_id, int64_t b_act, const uuid_t *b_id) {
    if (a_act != b_act) return a_act < b_act ? -1 : 1;
    return uuid_cmp(a_id, b_id);
}

static int item_desc(const void *x, const void *y) {
    const conv_item_t *a = x, *b = y;
    return -position_cmp((int64_t)a->c.activity, &a->c.id, (int64_t)b->c.activity, &b->c.id);
}

/* Checks the fetched recency rows against conversations_by_user, whose
 * last_updated is the conversation's true position:
 *  - activity == last_updated: the conversation's row -> accept once;
 *  - activity >  last_updated: a send's batch reached the recency partition
 *    before conversations_by_user -> accept once (the position is right);
 *  - activity <  last_updated: superseded -> delete it, and if no live row
 *    of the conversation was seen, place the conversation at last_updated
 *    itself (its batch reached conversations_by_user first, or the row was
 *    left behind by a race): within this page's range it belongs there;
 *  - no conversations_by_user row yet: a first send in flight -> skip.
 * Only provably superseded rows are deleted, so a reader never removes the
 * row that makes a conversation visible. While one of its batches is
 * half-applied a conversation still shows at its true position on a page
 * that covers it; a walk whose cursor is already below that position misses
 * it, which is the "moved to the top by new activity" case the API allows. */
static void on_cbu_in(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = map_cql(status, r, "conversation rows");
    if (err) { conv_page_finish(op, err); return; }
    enum { MISSING, STALE, LIVE } state[MAX_PAGE + RECENCY_SLACK + 1];
    conv_item_t found[MAX_PAGE + RECENCY_SLACK + 1];
    memset(found, 0, sizeof found);
    for (size_t i = 0; i < op->n_rows; i++) state[i] = MISSING;
    while (!err && cql_result_next_row(r) == 1) {
        uuid_t conv, other;
        int64_t updated;
        if (!row_uuid(r, 0, &conv) || !row_uuid(r, 1, &other) || row_time_ms(r, 3, &updated) != CQL_OK)
            continue;
        for (size_t i = 0; i < op->n_rows; i++) {
            if (state[i] != MISSING || uuid_cmp(&op->row_conv[i], &conv) != 0) continue;
            conversation_t *c = &found[i].c;
            int64_t at = op->row_activity[i] < updated ? updated : op->row_activity[i];
            state[i] = op->row_activity[i] < updated ? STALE : LIVE;
            c->id = conv;
            c->user1_id = op->q.user_id;
            c->user2_id = other;
            c->activity = (uint64_t)at;
            c->created_at_ms = at;
            c->last_message_at_ms = at;
            cql_str text;
            if (cql_row_get_text(r, 2, &text) == CQL_OK) {
                c->has_last_message = true;
                found[i].content = malloc(text.len + 1);
                if (!found[i].content) { err = STORE_ENOMEM; break; }
                if (text.len) memcpy(found[i].content, text.ptr, text.len);
                c->last_message_content = found[i].content;
                c->last_message_len = text.len;
            }
        }
    }
    /* Live rows first, so that a relocated stale row never doubles one. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < op->n_rows; i++) {
            if (state[i] != (pass == 0 ? LIVE : STALE)) continue;
            conv_item_t *it = &found[i];
            if (pass == 1 && !err)
                delete_stale(op->s, &op->q.user_id, op->row_activity[i], &op->row_conv[i]);
            bool in_range = !op->has_start || position_cmp((int64_t)it->c.activity, &it->c.id, op->start_activity,
                                                           &op->start_id) < 0;
            if (err || !in_range || op->count == sizeof op->items / sizeof op->items[0] || conv_seen(op, &it->c.id)) {
                free(it->content);
                it->content = NULL;
                continue;
            }
            op->items[op->count++] = *it;
            it->content = NULL;
        }
    }
    for (size_t i = 0; i < op->n_rows; i++) free(found[i].content);
    if (err) { conv_page_finish(op, err); return; }
    qsort(op->items, op->count, sizeof op->items[0], item_desc);
    /* Only the first limit+1 can ever be on this page. */
    while (op->count > (size_t)op->q.limit + 1) free(op->items[--op->count].content);
    /* Enough when the first limit+1 items all lie above the rows still to be
     * fetched (anything fetched later sorts below them). */
    if (op->count > (size_t)op->q.limit &&
        (!op->rows_more || position_cmp((int64_t)op->items[op->q.limit].c.activity, &op->items[op->q.limit].c.id,
                                        op->row_activity[op->n_rows - 1], &op->row_conv[op->n_rows - 1]) >= 0)) {
        op->more = true;
        conv_page_finish(op, STORE_OK);
        return;
    }
    if (!op->rows_more) { conv_page_finish(op, STORE_OK); return; }
    /* Skipped rows made the page short: continue below the last row seen. */
    op->cursor_set = true;
    op->pos_activity = op->row_activity[op->n_rows - 1];
    op->pos_id = op->row_conv[op->n_rows - 1];
    conv_fetch_recency(op);
}

static void conv_validate(conv_page_op_t *op) {
    if (op->n_rows == 0) { conv_page_finish(op, STORE_OK); return; }
    cql_value v[MAX_PAGE + RECENCY_SLACK + 2];
    v[0] = v_uuid(&op->q.user_id);
    for (size_t i = 0; i < op->n_rows; i++) v[i + 1] = v_uuid(&op->row_conv[i]);
    exec(op->s, op->s->cbu_in[op->n_rows], v, op->n_rows + 1, NULL, on_cbu_in, op);
}

static void on_recency(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = map_cql(status, r, "conversation recency");
    if (err) { conv_page_finish(op, err); return; }
    size_t want = (size_t)op->q.limit + 1 - op->count + RECENCY_SLACK;
    op->n_rows = 0;
    while (op->n_rows < want && cql_result_next_row(r) == 1) {
        int64_t a;
        const uint8_t *key;
        size_t key_len;
        if (row_time_ms(r, 0, &a) != CQL_OK || cql_row_get_blob(r, 1, &key, &key_len) != CQL_OK ||
            key_len != 16)
            continue;
        memcpy(op->row_conv[op->n_rows].b, key, 16);
        op->row_activity[op->n_rows++] = a;
    }
    op->rows_more = op->n_rows == want;
    conv_validate(op);
}

static void conv_fetch_recency(conv_page_op_t *op) {
    int32_t want = op->q.limit + 1 - (int32_t)op->count + RECENCY_SLACK;
    cql_value v[4];
    v[0] = v_uuid(&op->q.user_id);
    if (op->cursor_set) {
        v[1] = cql_value_bigint(op->pos_activity);
        v[2] = v_conv_key(&op->pos_id);
        v[3] = cql_value_int(want);
        exec(op->s, Q_REC_BELOW, v, 4, NULL, on_recency, op);
    } else {
        v[1] = cql_value_int(want);
        exec(op->s, Q_REC_TOP, v, 2, NULL, on_recency, op);
    }
}

static void conv_start_done(void *arg, int err) {
    conv_page_op_t *op = arg;
    if (!err && !op->user.found) err = STORE_ENOTFOUND;
    if (err) conv_page_finish(op, err);
    else conv_fetch_recency(op);
}

static void on_conv_cursor(void *arg, int status, cql_result *r) {
    conv_page_op_t *op = arg;
    int err = map_cql(status, r, "cursor conversation read");
    if (!err && (cql_result_next_row(r) != 1 || row_time_ms(r, 2, &op->pos_activity) != CQL_OK))
        err = STORE_EBADCURSOR;
    op->cursor_set = op->has_start = true;
    op->pos_id = op->start_id = op->q.cursor_id;
    op->start_activity = op->pos_activity;
    join_arrive(&op->start, err);
}

static void cass_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    conv_page_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->q = *q;
    if (op->q.limit < 1) op->q.limit = 1;
    if (op->q.limit > MAX_PAGE) op->q.limit = MAX_PAGE;
    bool bare = q->has_cursor && q->cursor_is_id;
    if (q->has_cursor && !bare) {
        op->cursor_set = op->has_start = true;
        op->pos_activity = op->start_activity = (int64_t)q->cursor_activity;
        op->pos_id = op->start_id = q->cursor_id;
    }
    join_start(&op->start, bare ? 2 : 1, conv_start_done, op);
    cql_value vu[1] = {v_uuid(&q->user_id)};
    probe(s, &op->start, &op->user, "user read", Q_USER_GET, vu, 1);
    if (bare) {
        cql_value vc[2] = {v_uuid(&q->user_id), v_uuid(&q->cursor_id)};
        exec(s, Q_CBU_GET, vc, 2, NULL, on_conv_cursor, op);
    }
    join_arrive(&op->start, 0);
}

/* ------------------------------------------------------------------ one conversation */

typedef struct conv_get_op {
    cass_store_t *s;
    store_conv_cb cb;
    void *ctx;
    conversation_t conv;
    join_t reads;               /* metadata, participants, newest message */
    bool has_meta, has_part;
    uuid_t part1, part2;
    char *content;
} conv_get_op_t;

static void conv_get_done(void *arg, int err) {
    conv_get_op_t *op = arg;
    if (!err && !op->has_meta) err = STORE_ENOTFOUND;
    if (!err && op->has_part) {
        op->conv.user1_id = op->part1;
        op->conv.user2_id = op->part2;
    }
    op->cb(op->ctx, err, err ? NULL : &op->conv);
    free(op->content);
    free(op);
}

static void on_get_meta(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) == 1) {
        op->has_meta = true;
        if (row_time_ms(r, 0, &op->conv.created_at_ms) != CQL_OK) op->conv.created_at_ms = 0;
    }
    join_arrive(&op->reads, err);
}

static void on_get_part(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = map_cql(status, r, "participants read");
    if (!err && cql_result_next_row(r) == 1 && row_uuid(r, 0, &op->part1) && row_uuid(r, 1, &op->part2))
        op->has_part = true;
    join_arrive(&op->reads, err);
}

static void on_get_last(void *arg, int status, cql_result *r) {
    conv_get_op_t *op = arg;
    int err = map_cql(status, r, "last message read");
    message_t m;
    if (!err && cql_result_next_row(r) == 1 && decode_message(r, &op->conv.id, &m)) {
        op->content = malloc(m.content_len + 1);
        if (!op->content) {
            err = STORE_ENOMEM;
        } else {
            if (m.content_len) memcpy(op->content, m.content, m.content_len);
            op->conv.has_last_message = true;
            op->conv.last_message_id = m.id;
            op->conv.last_message_at_ms = m.created_at_ms;
            op->conv.last_message_content = op->content;
            op->conv.last_message_len = m.content_len;
            /* Participants of a conversation the FastAPI implementation wrote
             * (no participants row): the sender and receiver. */
            op->conv.user1_id = m.sender_id;
            op->conv.user2_id = m.receiver_id;
        }
    }
    join_arrive(&op->reads, err);
}

static void cass_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    conv_get_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->conv.id = *id;
    join_start(&op->reads, 3, conv_get_done, op);
    cql_value v[2] = {v_uuid(id), cql_value_int(1)};
    exec(s, Q_META_GET, v, 1, NULL, on_get_meta, op);
    exec(s, Q_PART_GET, v, 1, NULL, on_get_part, op);
    exec(s, Q_MSG_TOP, v, 2, NULL, on_get_last, op);
    join_arrive(&op->reads, 0);
}

/* ------------------------------------------------------------------ open (seeder) */

typedef struct open_op {
    cass_store_t *s;
    store_conv_cb cb;
    void *ctx;
    conversation_t conv;
    uuid_t a, b;
    join_t reads;               /* both users exist; metadata */
    probe_t user_a, user_b;
    bool exists;
} open_op_t;

static void open_finish(open_op_t *op, int err) {
    op->cb(op->ctx, err, err ? NULL : &op->conv);
    free(op);
}

static void on_open_batch(void *arg, int status, cql_result *r) {
    open_op_t *op = arg;
    open_finish(op, map_cql(status, r, "open batch"));
}

static void open_write(open_op_t *op) {
    int64_t at = op->conv.created_at_ms, ts = at * 1000, fw = first_writer_wins_ts(at);
    const uuid_t *conv = &op->conv.id;
    const uuid_t *lo = uuid_cmp(&op->a, &op->b) <= 0 ? &op->a : &op->b, *hi = lo == &op->a ? &op->b : &op->a;
    cql_value none = cql_value_null();
    cql_value v_meta[3] = {v_uuid(conv), cql_value_timestamp(at), cql_value_bigint(fw)};
    cql_value v_part[4] = {v_uuid(conv), v_uuid(lo), v_uuid(hi), cql_value_bigint(fw)};
    cql_value v_cbu_a[6] = {v_uuid(&op->a), v_uuid(conv), v_uuid(&op->b), none, cql_value_timestamp(at), cql_value_bigint(ts)};
    cql_value v_cbu_b[6] = {v_uuid(&op->b), v_uuid(conv), v_uuid(&op->a), none, cql_value_timestamp(at), cql_value_bigint(ts)};
    cql_value v_rec_a[4] = {v_uuid(&op->a), cql_value_bigint(at), v_conv_key(conv), cql_value_bigint(ts)};
    cql_value v_rec_b[4] = {v_uuid(&op->b), cql_value_bigint(at), v_conv_key(conv), cql_value_bigint(ts)};
    cql_batch_stmt st[6] = {
        {Q_META_PUT, v_meta, 3, 1}, {Q_PART_PUT, v_part, 4, 1}, {Q_CBU_PUT, v_cbu_a, 6, 1},
        {Q_CBU_PUT, v_cbu_b, 6, 1}, {Q_REC_PUT, v_rec_a, 4, 1}, {Q_REC_PUT, v_rec_b, 4, 1},
    };
    cql_query_opts o;
    query_opts(op->s, &o);
    int rc = cql_batch(op->s->cql, CQL_BATCH_LOGGED, st, 6, &o, on_open_batch, op);
    if (rc < 0) on_open_batch(op, rc, NULL);
}

static void open_read_done(void *arg, int err) {
    open_op_t *op = arg;
    if (!err && (!op->user_a.found || !op->user_b.found)) err = STORE_ENOTFOUND;
    if (err || op->exists) open_finish(op, err);
    else open_write(op);
}

static void on_open_meta(void *arg, int status, cql_result *r) {
    open_op_t *op = arg;
    int err = map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) == 1) {
        op->exists = true;
        if (row_time_ms(r, 0, &op->conv.created_at_ms) != CQL_OK) op->conv.created_at_ms = 0;
        op->conv.last_message_at_ms = op->conv.created_at_ms;
    }
    join_arrive(&op->reads, err);
}

static void cass_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms,
                                   store_conv_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    open_op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->s = s;
    op->cb = cb;
    op->ctx = ctx;
    op->a = *a;
    op->b = *b;
    conversation_id_derive(a, b, &op->conv.id);
    op->conv.user1_id = *a;
    op->conv.user2_id = *b;
    op->conv.created_at_ms = at_ms ? at_ms : time_now_ms();
    op->conv.last_message_at_ms = op->conv.created_at_ms;
    join_start(&op->reads, 3, open_read_done, op);
    cql_value va[1] = {v_uuid(a)}, vb[1] = {v_uuid(b)}, vm[1] = {v_uuid(&op->conv.id)};
    probe(s, &op->reads, &op->user_a, "user read", Q_USER_GET, va, 1);
    probe(s, &op->reads, &op->user_b, "user read", Q_USER_GET, vb, 1);
    exec(s, Q_META_GET, vm, 1, NULL, on_open_meta, op);
    join_arrive(&op->reads, 0);
}

/* ------------------------------------------------------------------ health */

typedef struct health_op {
    store_health_cb cb;
    void *ctx;
} health_op_t;

static void on_health(void *arg, int status, cql_result *r) {
    health_op_t *op = arg;
    int err = map_cql(status, r, "health check");
    op->cb(op->ctx, err, err ? "cassandra is unreachable" : "cassandra");
    free(op);
}

static void cass_health(store_t *base, store_health_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    health_op_t *op = malloc(sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, "out of memory"); return; }
    op->cb = cb;
    op->ctx = ctx;
    exec(s, Q_HEALTH, NULL, 0, NULL, on_health, op);
}

/* ------------------------------------------------------------------ schema */

/* Blocking calls, for start-up and `messenger schema` only. */
typedef struct sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char error[512];
    /* paging */
    uint8_t paging_state[1024];
    size_t paging_len;
    bool more;
    void (*on_row)(void *arg, cql_result *r);
    void *row_arg;
} sync_call_t;

static void on_sync(void *arg, int status, cql_result *r) {
    sync_call_t *c = arg;
    c->error[0] = '\0';
    if (status == CQL_ESERVER && r && cql_result_error(r)) cql_error_format(cql_result_error(r), c->error, sizeof c->error);
    c->more = false;
    if (status == CQL_OK && r) {
        if (c->on_row)
            while (cql_result_next_row(r) == 1) c->on_row(c->row_arg, r);
        const uint8_t *ps;
        size_t n;
        cql_result_paging_state(r, &ps, &n);
        c->more = cql_result_has_more_pages(r) && n > 0 && n <= sizeof c->paging_state;
        if (c->more) memcpy(c->paging_state, ps, n);
        c->paging_len = c->more ? n : 0;
    }
    pthread_mutex_lock(&c->mu);
    c->status = status;
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Runs one statement (paged when on_row is set) and waits for it. */
static int run_sync(cql_client *cql, const char *q, const cql_value *v, size_t n, uint16_t consistency,
                    void (*on_row)(void *, cql_result *), void *row_arg) {
    sync_call_t c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.on_row = on_row;
    c.row_arg = row_arg;
    int status = CQL_OK;
    do {
        cql_query_opts o;
        cql_query_opts_init(&o);
        o.consistency = consistency;
        o.timeout_ms = 60000; /* schema changes can be slow */
        if (on_row) {
            o.page_size = 1000;
            o.paging_state = c.more ? c.paging_state : NULL;
            o.paging_state_len = c.more ? c.paging_len : 0;
        }
        c.done = false;
        int rc = cql_query(cql, q, v, n, &o, on_sync, &c);
        if (rc < 0) { status = rc; break; }
        pthread_mutex_lock(&c.mu);
        while (!c.done) pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        status = c.status;
    } while (status == CQL_OK && c.more);
    if (status != CQL_OK)
        log_error("store", "cassandra: %.80s...: %s", q, c.error[0] ? c.error : cql_strerror(status));
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    return status;
}

static bool keyspace_name_ok(const char *ks) {
    size_t n = strlen(ks);
    if (n == 0 || n > 48) return false;
    for (size_t i = 0; i < n; i++)
        if (!((ks[i] >= 'a' && ks[i] <= 'z') || (ks[i] >= 'A' && ks[i] <= 'Z') || (ks[i] >= '0' && ks[i] <= '9') ||
              ks[i] == '_'))
            return false;
    return true;
}

static int connect_client(const store_cassandra_config_t *cfg, const char *keyspace, cql_client **out) {
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cfg->hosts;
    o.n_contact_points = cfg->n_hosts;
    o.keyspace = keyspace;
    o.consistency = cfg->consistency;
    if (cfg->timeout_ms) o.request_timeout_ms = cfg->timeout_ms;
    int rc = cql_client_new(out, &o);
    if (rc < 0) {
        log_error("store", "cassandra client: %s", cql_strerror(rc));
        return STORE_EUNAVAILABLE;
    }
    rc = cql_client_wait_ready(*out, cfg->connect_wait_ms ? cfg->connect_wait_ms : 30000);
    if (rc < 0) {
        char why[256];
        cql_client_last_error(*out, why, sizeof why);
        log_error("store", "cannot reach cassandra (%s): %s", cql_strerror(rc), why);
        cql_client_close(*out);
        *out = NULL;
        return STORE_EUNAVAILABLE;
    }
    return STORE_OK;
}

/* run_sync's row callback for one int column (a missing row leaves *arg). */
static void read_first_int(void *arg, cql_result *r) {
    int32_t v;
    if (cql_row_get_int(r, 0, &v) == CQL_OK) *(int32_t *)arg = v;
}

static int create_schema(const store_cassandra_config_t *cfg) {
    cql_client *c;
    int err = connect_client(cfg, NULL, &c);
    if (err) return err;
    char q[1024];
    const char *ks = cfg->keyspace;
    snprintf(q, sizeof q,
             "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': %d}",
             ks, cfg->replication_factor > 0 ? cfg->replication_factor : 1);
    /* The seed design's four tables, exactly as the FastAPI implementation
     * creates them, then ours. */
    const char *tables[] = {
        "CREATE TABLE IF NOT EXISTS %s.users (user_id uuid PRIMARY KEY, username text)",
        "CREATE TABLE IF NOT EXISTS %s.conversations_by_user (user_id uuid, conversation_id uuid, other_user_id uuid, "
        "last_message text, last_updated timestamp, PRIMARY KEY (user_id, conversation_id)) "
        "WITH CLUSTERING ORDER BY (conversation_id DESC)",
        "CREATE TABLE IF NOT EXISTS %s.messages_by_conversation (conversation_id uuid, message_id timeuuid, "
        "sender_id uuid, receiver_id uuid, content text, created_at timestamp, PRIMARY KEY (conversation_id, message_id)) "
        "WITH CLUSTERING ORDER BY (message_id DESC)",
        "CREATE TABLE IF NOT EXISTS %s.conversation_metadata (conversation_id uuid PRIMARY KEY, created_at timestamp)",
        "CREATE TABLE IF NOT EXISTS %s.users_by_name (username_lower text PRIMARY KEY, user_id uuid)",
        "CREATE TABLE IF NOT EXISTS %s.conversations_by_recency (user_id uuid, activity bigint, conversation_id blob, "
        "PRIMARY KEY (user_id, activity, conversation_id)) WITH CLUSTERING ORDER BY (activity DESC, conversation_id DESC) "
        "AND " RECENCY_TABLE_OPTIONS,
        "CREATE TABLE IF NOT EXISTS %s.conversation_participants (conversation_id uuid PRIMARY KEY, user1_id uuid, "
        "user2_id uuid)",
        "CREATE TABLE IF NOT EXISTS %s.idempotency (sender_id uuid, client_message_id text, conversation_id uuid, "
        "message_id timeuuid, receiver_id uuid, content_sha256 blob, PRIMARY KEY ((sender_id, client_message_id))) "
        "WITH default_time_to_live = 86400",
        "CREATE TABLE IF NOT EXISTS %s.user_credentials (user_id uuid PRIMARY KEY, password_hash text)",
        "CREATE TABLE IF NOT EXISTS %s.auth_tokens (token_hash blob PRIMARY KEY, user_id uuid, expires_at timestamp)",
    };
    int rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    for (size_t i = 0; rc == CQL_OK && i < sizeof tables / sizeof tables[0]; i++) {
        snprintf(q, sizeof q, tables[i], ks);
        rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    }
    /* A recency table made by an earlier version gets the options above,
     * once: an ALTER on every start-up would change the schema every time. */
    int32_t gc_grace = 0;
    cql_value kv = cql_value_text(ks);
    if (rc == CQL_OK) rc = run_sync(c, Q_RECENCY_GC, &kv, 1, CQL_ONE, read_first_int, &gc_grace);
    if (rc == CQL_OK && gc_grace != 0) {
        log_info("store", "cassandra: conversations_by_recency: gc_grace_seconds %d -> 0, levelled compaction",
                 (int)gc_grace);
        snprintf(q, sizeof q, "ALTER TABLE %s.conversations_by_recency WITH " RECENCY_TABLE_OPTIONS, ks);
        rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    }
    cql_client_close(c);
    if (rc != CQL_OK) return STORE_EIO;
    log_info("store", "cassandra keyspace %s ready", ks);
    return STORE_OK;
}

/* ------------------------------------------------------------------ lifetime */

static void cass_close(store_t *base) {
    cass_store_t *s = (cass_store_t *)base;
    cql_client_close(s->cql); /* fails what is pending: every callback runs */
    for (size_t i = 0; i < sizeof s->cbu_in / sizeof s->cbu_in[0]; i++) free(s->cbu_in[i]);
    free(s);
}

static int build_in_statements(cass_store_t *s) {
    for (size_t n = 1; n < sizeof s->cbu_in / sizeof s->cbu_in[0]; n++) {
        size_t len = 200 + 3 * n;
        char *q = malloc(len);
        if (!q) return STORE_ENOMEM;
        int off = snprintf(q, len,
                           "SELECT conversation_id, other_user_id, last_message, last_updated FROM conversations_by_user "
                           "WHERE user_id = ? AND conversation_id IN (");
        for (size_t i = 0; i < n; i++) off += snprintf(q + off, len - (size_t)off, i ? ",?" : "?");
        snprintf(q + off, len - (size_t)off, ")");
        s->cbu_in[n] = q;
    }
    return STORE_OK;
}

int store_cassandra_open(const store_cassandra_config_t *cfg, idgen_t *ids, store_t **out) {
    if (!keyspace_name_ok(cfg->keyspace)) {
        log_error("store", "keyspace name '%s' must be 1-48 letters, digits or underscores", cfg->keyspace);
        return STORE_EIO;
    }
    if (cfg->create_schema) {
        int err = create_schema(cfg);
        if (err) return err;
    }
    cass_store_t *s = calloc(1, sizeof *s);
    if (!s) return STORE_ENOMEM;
    s->base.ops = &CASS_OPS;
    s->ids = ids;
    s->consistency = cfg->consistency;
    s->timeout_ms = cfg->timeout_ms;
    int err = build_in_statements(s);
    if (!err) err = connect_client(cfg, cfg->keyspace, &s->cql);
    if (err) {
        for (size_t i = 0; i < sizeof s->cbu_in / sizeof s->cbu_in[0]; i++) free(s->cbu_in[i]);
        free(s);
        return err;
    }
    log_info("store", "cassandra store open (keyspace %s, consistency %s)", cfg->keyspace,
             cql_consistency_name(cfg->consistency));
    *out = &s->base;
    return STORE_OK;
}

/* ------------------------------------------------------------------ migration */

typedef struct migrate_ctx {
    cql_client *cql;
    uint16_t consistency;
    long rows;              /* touched by the scanning thread only */
    _Atomic long failed;
    _Atomic long in_flight; /* writes submitted and not yet answered */
} migrate_ctx_t;

static void on_migrate_write(void *arg, int status, cql_result *r) {
    migrate_ctx_t *m = arg;
    if (status) {
        map_cql(status, r, "migration write");
        atomic_fetch_add(&m->failed, 1);
    }
    atomic_fetch_sub(&m->in_flight, 1);
}

static void migrate_submit(migrate_ctx_t *m, const char *q, const cql_value *v, size_t n, bool lwt) {
    cql_query_opts o;
    cql_query_opts_init(&o);
    o.consistency = m->consistency;
    if (lwt) o.serial_consistency = CQL_LOCAL_SERIAL;
    atomic_fetch_add(&m->in_flight, 1);
    if (cql_execute(m->cql, q, v, n, &o, on_migrate_write, m) < 0) {
        atomic_fetch_add(&m->failed, 1);
        atomic_fetch_sub(&m->in_flight, 1);
    }
    m->rows++;
}

static void migrate_user_row(void *arg, cql_result *r) {
    migrate_ctx_t *m = arg;
    uuid_t id;
    cql_str name;
    if (!row_uuid(r, 0, &id) || cql_row_get_text(r, 1, &name) != CQL_OK || name.len > USERNAME_MAX * 4) return;
    char folded[USERNAME_MAX * 4];
    username_fold(name.ptr, name.len, folded);
    cql_value v[2] = {cql_value_textn(folded, name.len), v_uuid(&id)};
    migrate_submit(m, Q_NAME_LWT, v, 2, true);
}

static void migrate_conv_row(void *arg, cql_result *r) {
    migrate_ctx_t *m = arg;
    uuid_t user, conv;
    int64_t updated;
    if (!row_uuid(r, 0, &user) || !row_uuid(r, 1, &conv) || row_time_ms(r, 2, &updated) != CQL_OK) return;
    cql_value v[4] = {v_uuid(&user), cql_value_bigint(updated), v_conv_key(&conv), cql_value_bigint(updated * 1000)};
    migrate_submit(m, Q_REC_PUT, v, 4, false);
}

int store_cassandra_migrate(const store_cassandra_config_t *cfg) {
    if (!keyspace_name_ok(cfg->keyspace)) {
        log_error("store", "keyspace name '%s' must be 1-48 letters, digits or underscores", cfg->keyspace);
        return STORE_EIO;
    }
    int err = create_schema(cfg);
    if (err) return err;
    migrate_ctx_t m = {.consistency = cfg->consistency};
    err = connect_client(cfg, cfg->keyspace, &m.cql);
    if (err) return err;
    int rc = run_sync(m.cql, "SELECT user_id, username FROM users", NULL, 0, cfg->consistency, migrate_user_row, &m);
    long users = m.rows;
    if (rc == CQL_OK)
        rc = run_sync(m.cql, "SELECT user_id, conversation_id, last_updated FROM conversations_by_user", NULL, 0,
                      cfg->consistency, migrate_conv_row, &m);
    /* Closing would fail what is still in flight: wait for it first. */
    struct timespec tick = {0, 2 * 1000 * 1000};
    while (atomic_load(&m.in_flight) > 0) nanosleep(&tick, NULL);
    cql_client_close(m.cql);
    long failed = atomic_load(&m.failed);
    log_info("store", "migration: %ld users indexed by name, %ld conversation rows indexed by recency, %ld failed",
             users, m.rows - users, failed);
    return rc == CQL_OK && failed == 0 ? STORE_OK : STORE_EIO;
}

static const store_ops_t CASS_OPS = {
    .name = "cassandra",
    .user_create = cass_user_create,
    .user_get = cass_user_get,
    .user_find = cass_user_find,
    .token_put = cass_token_put,
    .token_get = cass_token_get,
    .token_delete = cass_token_delete,
    .message_send = cass_message_send,
    .messages_list = cass_messages_list,
    .conversations_list = cass_conversations_list,
    .conversation_get = cass_conversation_get,
    .conversation_open = cass_conversation_open,
    .health = cass_health,
    .close = cass_close,
};
