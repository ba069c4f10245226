/* lmdb_apply.c - what each write does to the tables. The write operations
 * of the operations table copy their input into an op and queue it for the
 * writer (lmdb_enqueue); on the writer thread, lmdb_apply_op applies it in
 * the open batch's transaction: a registration, a login token put or
 * deleted, a send (with its idempotency key), a conversation opened; and
 * lmdb_prune expires old idempotency keys and tokens.
 *
 * Apart from the batching (lmdb_commit.c) so that the rows each write
 * touches, and the invariants of lmdb_internal.h that it keeps, are read in
 * one place. Every apply_* function checks what a client can be refused for
 * before its first write ("Batches", lmdb_commit.c); every write goes
 * through lmdb_redo.c.
 */
#include "store/lmdb/lmdb_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "util/bytes.h"
#include "util/log.h"
#include "util/timefmt.h"

void lmdb_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx) {
    size_t hash_len = u->password_hash ? u->password_hash_len : 0;
    op_t *op = calloc(1, sizeof *op + u->name_len + hash_len + 1);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->kind = OP_USER_CREATE;
    op->cb.user = cb;
    op->ctx = ctx;
    op->user.id = u->id;
    memcpy(op->text, u->name, u->name_len);
    op->user.name = op->text;
    op->user.name_len = u->name_len;
    if (u->password_hash) {
        memcpy(op->text + u->name_len, u->password_hash, hash_len);
        op->user.password_hash = op->text + u->name_len;
        op->user.password_hash_len = hash_len;
    }
    lmdb_enqueue((lmdb_store_t *)base, op);
}

static void token_enqueue(lmdb_store_t *s, op_kind_t kind, const store_token_t *t, store_token_cb cb, void *ctx) {
    op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->kind = kind;
    op->cb.token = cb;
    op->ctx = ctx;
    op->token = *t;
    lmdb_enqueue(s, op);
}

void lmdb_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx) {
    token_enqueue((lmdb_store_t *)base, OP_TOKEN_PUT, t, cb, ctx);
}

void lmdb_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    store_token_t t;
    memset(&t, 0, sizeof t);
    memcpy(t.hash, hash, STORE_TOKEN_HASH_LEN);
    token_enqueue((lmdb_store_t *)base, OP_TOKEN_DEL, &t, cb, ctx);
}

void lmdb_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx) {
    size_t keylen = r->client_message_id ? r->client_message_id_len : 0;
    op_t *op = calloc(1, sizeof *op + r->content_len + keylen + 1);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL, false); return; }
    op->kind = OP_SEND;
    op->cb.send = cb;
    op->ctx = ctx;
    op->send = *r;
    if (r->content_len) memcpy(op->text, r->content, r->content_len);
    op->send.content = op->text;
    if (r->client_message_id) {
        memcpy(op->text + r->content_len, r->client_message_id, keylen);
        op->send.client_message_id = op->text + r->content_len;
    }
    lmdb_enqueue((lmdb_store_t *)base, op);
}

void lmdb_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms,
                                   store_conv_cb cb, void *ctx) {
    op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->kind = OP_CONV_OPEN;
    op->cb.conv = cb;
    op->ctx = ctx;
    op->open_a = *a;
    op->open_b = *b;
    op->open_at_ms = at_ms;
    lmdb_enqueue((lmdb_store_t *)base, op);
}

static int apply_user_create(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    char folded[USERNAME_MAX * 4];
    if (op->user.name_len == 0 || op->user.name_len > sizeof folded) return STORE_EIO;
    username_fold(op->user.name, op->user.name_len, folded);
    /* Both checks before the first write (see batch_apply,
     * lmdb_commit.c). */
    MDB_val nk = lmdb_val(folded, op->user.name_len), ik = lmdb_val(op->user.id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS_BY_NAME], &nk, &v);
    if (rc == 0) return STORE_ECONFLICT;
    if (rc != MDB_NOTFOUND) return lmdb_map_err(rc);
    rc = mdb_get(txn, s->dbi[DB_USERS], &ik, &v);
    if (rc == 0) return STORE_ECONFLICT; /* a random v4 id collided */
    if (rc != MDB_NOTFOUND) return lmdb_map_err(rc);
    v = lmdb_val(op->user.id.b, 16);
    if ((rc = lmdb_db_put(s, txn, DB_USERS_BY_NAME, &nk, &v, 0))) return lmdb_map_err(rc);
    v = lmdb_val(op->user.name, op->user.name_len);
    if ((rc = lmdb_db_put(s, txn, DB_USERS, &ik, &v, 0))) return lmdb_map_err(rc);
    if (!op->user.password_hash) return STORE_OK;
    v = lmdb_val(op->user.password_hash, op->user.password_hash_len);
    return lmdb_map_err(lmdb_db_put(s, txn, DB_CREDENTIALS, &ik, &v, 0));
}

/* tokens: hash -> expires . user, and expires . hash -> "" for purging. */
static int apply_token_put(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    const store_token_t *t = &op->token;
    uint8_t rec[TOKEN_LEN], tk[8 + STORE_TOKEN_HASH_LEN];
    be64_put(rec, (uint64_t)t->expires_at_ms);
    memcpy(rec + 8, t->user_id.b, 16);
    memcpy(tk, rec, 8);
    memcpy(tk + 8, t->hash, STORE_TOKEN_HASH_LEN);
    MDB_val k = lmdb_val(t->hash, STORE_TOKEN_HASH_LEN), v = lmdb_val(rec, sizeof rec);
    MDB_val ek = lmdb_val(tk, sizeof tk), empty = lmdb_val("", 0);
    int rc = lmdb_db_put(s, txn, DB_TOKENS, &k, &v, 0);
    if (!rc) rc = lmdb_db_put(s, txn, DB_TOKENS_BY_EXPIRY, &ek, &empty, 0);
    return lmdb_map_err(rc);
}

static int apply_token_del(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    MDB_val k = lmdb_val(op->token.hash, STORE_TOKEN_HASH_LEN), v;
    int rc = mdb_get(txn, s->dbi[DB_TOKENS], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return lmdb_map_err(rc);
    if (v.mv_size == TOKEN_LEN) {
        uint8_t tk[8 + STORE_TOKEN_HASH_LEN];
        memcpy(tk, v.mv_data, 8);
        memcpy(tk + 8, op->token.hash, STORE_TOKEN_HASH_LEN);
        MDB_val ek = lmdb_val(tk, sizeof tk);
        rc = lmdb_db_del(s, txn, DB_TOKENS_BY_EXPIRY, &ek);
        if (rc && rc != MDB_NOTFOUND) return lmdb_map_err(rc);
    }
    return lmdb_map_err(lmdb_db_del(s, txn, DB_TOKENS, &k));
}

static bool user_exists(lmdb_store_t *s, MDB_txn *txn, const uuid_t *id) {
    MDB_val k = lmdb_val(id->b, 16), v;
    return mdb_get(txn, s->dbi[DB_USERS], &k, &v) == 0;
}

/* Writes conv's metadata (a new conversation); participants lower first. */
static int meta_put(lmdb_store_t *s, MDB_txn *txn, const uuid_t *conv, const uuid_t *a, const uuid_t *b,
                    int64_t created_ms) {
    const uuid_t *lo = uuid_cmp(a, b) <= 0 ? a : b, *hi = lo == a ? b : a;
    uint8_t m[META_LEN];
    be64_put(m, (uint64_t)created_ms);
    memcpy(m + 8, lo->b, 16);
    memcpy(m + 24, hi->b, 16);
    MDB_val k = lmdb_val(conv->b, 16), v = lmdb_val(m, META_LEN);
    return lmdb_map_err(lmdb_db_put(s, txn, DB_CONV_META, &k, &v, 0));
}

/* What a send or an open needs to know of a conversation before it writes:
 * read once, since the map may move under later writes. */
typedef struct conv_state {
    bool exists;            /* it has metadata and both recency rows */
    uint64_t activity;      /* exists: the rows' position */
    int64_t created_ms;     /* exists: its creation time */
} conv_state_t;

/* Finds conversation conv of `user` for a send: its newest message (which
 * leaves s->cur_msgs where the new one goes) usually gives its activity, and
 * the user's recency row at that activity its creation time; the metadata is
 * read only when that fails (no message yet, or the conversation was created
 * after its newest message: ids given by the caller). */
static int conv_find(lmdb_store_t *s, MDB_txn *txn, const uuid_t *conv, const uuid_t *user, conv_state_t *out) {
    MDB_val k, v;
    uint64_t newest = 0;
    memset(out, 0, sizeof *out);
    int rc = lmdb_newest_message(s->cur_msgs, conv, &k, &v);
    if (rc && rc != MDB_NOTFOUND) return lmdb_map_err(rc);
    if (rc == 0) {
        newest = lmdb_message_key_ticks(&k);
        uint8_t rk[40];
        MDB_val rkv = lmdb_recency_key(rk, user, newest, conv), rv;
        rc = mdb_cursor_get(s->cur_recency, &rkv, &rv, MDB_SET);
        if (rc && rc != MDB_NOTFOUND) return lmdb_map_err(rc);
        /* A bad row here falls through to the metadata, and the send's
         * recency_move replaces it. */
        int64_t created = rc == 0 && rv.mv_size >= CONV_REC_HDR ? (int64_t)be64_get((const uint8_t *)rv.mv_data + 24) : 0;
        if (lmdb_time_ok(created) && lmdb_ticks_ok(newest)) {
            out->exists = true;
            out->activity = newest;
            out->created_ms = created;
            return STORE_OK;
        }
        if (!lmdb_ticks_ok(newest)) newest = 0;
    }
    k = lmdb_val(conv->b, 16);
    rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return lmdb_map_err(rc);
    if (lmdb_decode_meta(&v, &out->created_ms, NULL, NULL)) return STORE_EBADROW;
    out->exists = true;
    out->activity = lmdb_conv_activity(out->created_ms, newest);
    return STORE_OK;
}

/* Puts user's recency row of conv at `activity`, holding the conversation
 * as msg (its newest message; NULL: none) leaves it, and deletes the row at
 * old->activity when the conversation exists. */
static int recency_move(lmdb_store_t *s, const uuid_t *user, const uuid_t *other, const uuid_t *conv,
                        const conv_state_t *old, uint64_t activity, int64_t created_ms, const message_t *msg) {
    uint8_t rk[40];
    int rc;
    if (old->exists) {
        MDB_val k = lmdb_recency_key(rk, user, old->activity, conv), ignored;
        rc = mdb_cursor_get(s->cur_recency, &k, &ignored, MDB_SET);
        if (rc == 0) rc = lmdb_cursor_del(s, s->cur_recency, DB_RECENCY, &k);
        /* Missing breaks an invariant; the new row mends it. */
        if (rc == MDB_NOTFOUND) log_warn("store", "conversations_by_recency: a conversation's row was missing");
        else if (rc) return lmdb_map_err(rc);
    }
    size_t len = CONV_REC_HDR + (msg ? msg->content_len : 0);
    MDB_val k = lmdb_recency_key(rk, user, activity, conv), v = {.mv_size = len, .mv_data = NULL};
    rc = mdb_cursor_put(s->cur_recency, &k, &v, MDB_RESERVE);
    if (rc) return lmdb_map_err(rc);
    lmdb_fill_conv_rec(v.mv_data, other, activity, created_ms, msg);
    lmdb_redo_log(s, REDO_PUT, DB_RECENCY, &k, &v);
    return STORE_OK;
}

/* Idempotency: looks the key up; on a live hit fills op->msg with the
 * earlier message and returns 1, 0 when absent or expired, or an error. */
static int idem_lookup(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now) {
    const store_send_t *r = &op->send;
    size_t klen = 16 + r->client_message_id_len;
    uint8_t key[16 + CLIENT_MESSAGE_ID_MAX];
    memcpy(key, r->sender_id.b, 16);
    memcpy(key + 16, r->client_message_id, r->client_message_id_len);
    MDB_val k = lmdb_val(key, klen), v;
    int rc = mdb_get(txn, s->dbi[DB_IDEM], &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return lmdb_map_err(rc);
    /* A row that cannot be used counts as absent: the send goes on and
     * its idem_record replaces it. */
    if (v.mv_size < IDEM_LEN) {
        lmdb_bad_row("idempotency", "too short");
        return 0;
    }
    const uint8_t *p = v.mv_data;
    if (!lmdb_time_ok((int64_t)be64_get(p))) {
        lmdb_bad_row("idempotency", "a time out of range");
        return 0;
    }
    if ((int64_t)be64_get(p) < now - IDEMPOTENCY_WINDOW_MS) return 0;
    uint8_t mk[32];
    memcpy(mk, p + 8, 16);
    uuid_t mid;
    memcpy(mid.b, p + 24, 16);
    uuid_sort_key(&mid, mk + 16);
    MDB_val mkv = lmdb_val(mk, 32), mv;
    rc = mdb_get(txn, s->dbi[DB_MESSAGES], &mkv, &mv);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return lmdb_map_err(rc);
    message_t old;
    if (lmdb_decode_message(&mkv, &mv, &old)) return 0;
    /* It must be this sender's message (the key is per sender): else it
     * would hand them someone else's. */
    if (uuid_cmp(&old.sender_id, &r->sender_id) != 0) {
        lmdb_bad_row("idempotency", "another sender's message");
        return 0;
    }
    if (uuid_cmp(&old.receiver_id, &r->receiver_id) != 0 || old.content_len != r->content_len ||
        (r->content_len && memcmp(old.content, r->content, r->content_len) != 0))
        return STORE_ECONFLICT;
    /* The message's bytes live in the map, which the commit may move: copy. */
    op->result_text = malloc(old.content_len + 1);
    if (!op->result_text) return STORE_ENOMEM;
    if (old.content_len) memcpy(op->result_text, old.content, old.content_len);
    old.content = op->result_text;
    op->msg = old;
    return 1;
}

static int idem_record(lmdb_store_t *s, MDB_txn *txn, const op_t *op, int64_t now) {
    const store_send_t *r = &op->send;
    size_t klen = 16 + r->client_message_id_len;
    uint8_t key[8 + 16 + CLIENT_MESSAGE_ID_MAX];
    /* idempotency: sender . key -> created, conv, id */
    memcpy(key, r->sender_id.b, 16);
    memcpy(key + 16, r->client_message_id, r->client_message_id_len);
    uint8_t rec[IDEM_LEN];
    be64_put(rec, (uint64_t)now);
    memcpy(rec + 8, op->msg.conversation_id.b, 16);
    memcpy(rec + 24, op->msg.id.b, 16);
    MDB_val k = lmdb_val(key, klen), v = lmdb_val(rec, IDEM_LEN);
    int rc = lmdb_db_put(s, txn, DB_IDEM, &k, &v, 0);
    if (rc) return lmdb_map_err(rc);
    /* idempotency_by_time: created . sender . key, for pruning */
    be64_put(key, (uint64_t)now);
    memcpy(key + 8, r->sender_id.b, 16);
    memcpy(key + 24, r->client_message_id, r->client_message_id_len);
    k = lmdb_val(key, 8 + klen);
    MDB_val empty = lmdb_val("", 0);
    return lmdb_map_err(lmdb_db_put(s, txn, DB_IDEM_BY_TIME, &k, &empty, 0));
}

/* Deletes a bounded number of idempotency keys older than the window, so
 * that the tables stay small without a separate sweeper. */
/* Deletes up to PRUNE_PER_BATCH rows whose time (the first 8 bytes of both
 * the index key and the primary value) is before `before`: index rows are
 * time . primary-key -> "", so expired ones come first. A primary row is
 * deleted only if it still carries that time (it may have been rewritten). */
static int prune_expired(lmdb_store_t *s, MDB_txn *txn, int by_time, int primary, int64_t before) {
    MDB_cursor *c;
    int rc = mdb_cursor_open(txn, s->dbi[by_time], &c);
    if (rc) return lmdb_map_err(rc);
    MDB_val k, v;
    int n = 0;
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0 && n < PRUNE_PER_BATCH && k.mv_size > 8 && (int64_t)be64_get(k.mv_data) < before) {
        MDB_val pk = lmdb_val((const uint8_t *)k.mv_data + 8, k.mv_size - 8), pv;
        int rc2 = mdb_get(txn, s->dbi[primary], &pk, &pv);
        if (rc2 == 0 && pv.mv_size >= 8 && memcmp(pv.mv_data, k.mv_data, 8) == 0)
            rc2 = lmdb_db_del(s, txn, primary, &pk);
        if (rc2 && rc2 != MDB_NOTFOUND) { rc = rc2; break; }
        rc = lmdb_cursor_del(s, c, by_time, &k);
        if (rc) break;
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
        if (rc == MDB_NOTFOUND || rc == EINVAL) rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? STORE_OK : lmdb_map_err(rc);
}

static int apply_send(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now) {
    const store_send_t *r = &op->send;
    if (r->client_message_id) {
        int hit = idem_lookup(s, txn, op, now);
        if (hit < 0) return hit;
        if (hit == 1) { op->replayed = true; return STORE_OK; }
    }
    message_t *m = &op->msg;
    conversation_id_derive(&r->sender_id, &r->receiver_id, &m->conversation_id);
    /* When the conversation exists, so do both users (users are never
     * deleted): two look-ups fewer on the common path. */
    conv_state_t conv;
    int err = conv_find(s, txn, &m->conversation_id, &r->sender_id, &conv);
    if (err) return err;
    if (!conv.exists && (!user_exists(s, txn, &r->sender_id) || !user_exists(s, txn, &r->receiver_id)))
        return STORE_ENOTFOUND;
    m->sender_id = r->sender_id;
    m->receiver_id = r->receiver_id;
    m->content = r->content;
    m->content_len = r->content_len;
    if (uuid_is_nil(&r->message_id)) {
        /* Never older than the conversation's activity, even if the wall
         * clock stepped back since it was set. */
        idgen_next_after(s->ids, conv.exists ? conv.activity + 1 : 0, &m->id);
    } else {
        m->id = r->message_id;
    }
    uint64_t activity = uuid_time_ticks(&m->id);
    m->created_at_ms = ticks_to_unix_ms(activity);

    /* conv_find left cur_msgs at the conversation's end, where the new
     * message usually goes. */
    uint8_t key[32];
    memcpy(key, m->conversation_id.b, 16);
    uuid_sort_key(&m->id, key + 16);
    MDB_val k = lmdb_val(key, 32), v = {.mv_size = MSG_HDR + m->content_len, .mv_data = NULL};
    int rc = mdb_cursor_put(s->cur_msgs, &k, &v, MDB_RESERVE | MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) return STORE_ECONFLICT;
    if (rc) return lmdb_map_err(rc);
    uint8_t *p = v.mv_data;
    memcpy(p, m->sender_id.b, 16);
    memcpy(p + 16, m->receiver_id.b, 16);
    be64_put(p + 32, (uint64_t)m->created_at_ms);
    if (m->content_len) memcpy(p + MSG_HDR, m->content, m->content_len);
    lmdb_redo_log(s, REDO_PUT, DB_MESSAGES, &k, &v);

    int64_t created = conv.exists ? conv.created_ms : m->created_at_ms;
    if (!conv.exists) err = meta_put(s, txn, &m->conversation_id, &m->sender_id, &m->receiver_id, created);
    /* A message older than the activity (ids given by the caller: the
     * seeder writes out of order) leaves the rows where they are. */
    if (!err && (!conv.exists || activity > conv.activity)) {
        err = recency_move(s, &m->sender_id, &m->receiver_id, &m->conversation_id, &conv, activity, created, m);
        if (!err && uuid_cmp(&m->sender_id, &m->receiver_id) != 0)
            err = recency_move(s, &m->receiver_id, &m->sender_id, &m->conversation_id, &conv, activity, created, m);
    }
    if (!err && r->client_message_id) err = idem_record(s, txn, op, now);
    return err;
}

static int apply_open(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now) {
    uuid_t conv;
    conversation_id_derive(&op->open_a, &op->open_b, &conv);
    int64_t created = op->open_at_ms ? op->open_at_ms : now;
    MDB_val k = lmdb_val(conv.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc == 0) {
        if (lmdb_decode_meta(&v, &created, NULL, NULL)) return STORE_EBADROW; /* it exists: as it is */
    } else if (rc == MDB_NOTFOUND) {
        if (!user_exists(s, txn, &op->open_a) || !user_exists(s, txn, &op->open_b)) return STORE_ENOTFOUND;
        conv_state_t none = {.exists = false};
        uint64_t activity = lmdb_conv_activity(created, 0);
        int err = meta_put(s, txn, &conv, &op->open_a, &op->open_b, created);
        if (!err) err = recency_move(s, &op->open_a, &op->open_b, &conv, &none, activity, created, NULL);
        if (!err && uuid_cmp(&op->open_a, &op->open_b) != 0)
            err = recency_move(s, &op->open_b, &op->open_a, &conv, &none, activity, created, NULL);
        if (err) return err;
    } else {
        return lmdb_map_err(rc);
    }
    memset(&op->conv, 0, sizeof op->conv);
    op->conv.id = conv;
    op->conv.user1_id = op->open_a;
    op->conv.user2_id = op->open_b;
    op->conv.created_at_ms = created;
    op->conv.last_message_at_ms = created;
    return STORE_OK;
}

int lmdb_apply_op(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now) {
    switch (op->kind) {
    case OP_USER_CREATE: return apply_user_create(s, txn, op);
    case OP_SEND: return apply_send(s, txn, op, now);
    case OP_CONV_OPEN: return apply_open(s, txn, op, now);
    case OP_TOKEN_PUT: return apply_token_put(s, txn, op);
    case OP_TOKEN_DEL: return apply_token_del(s, txn, op);
    }
    return STORE_EIO;
}

int lmdb_prune(lmdb_store_t *s, MDB_txn *txn, int64_t now) {
    int err = prune_expired(s, txn, DB_IDEM_BY_TIME, DB_IDEM, now - IDEMPOTENCY_WINDOW_MS);
    if (!err) err = prune_expired(s, txn, DB_TOKENS_BY_EXPIRY, DB_TOKENS, now + 1);
    if (err) log_warn("store", "pruning expired keys and tokens: %s", store_strerror(err));
    return err;
}
