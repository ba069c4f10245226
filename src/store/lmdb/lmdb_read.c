/* lmdb_read.c - the reads: a user (by id, by name), a login token, a
 * conversation, pages of a conversation's messages and of a user's
 * conversations, health. Each runs on the caller's thread in its own
 * read-only transaction and calls back before it returns.
 *
 * Apart from the writes because a read shares nothing with the writer but
 * the database: no queue, none of our locks (LMDB's read transactions), and
 * never a write through a pointer into the map (MDB_WRITEMAP).
 * lmdb_newest_message is the one look-up a write uses too (a send finds its
 * conversation with it).
 */
#include "store/lmdb/lmdb_internal.h"

#include <string.h>

#include "util/bytes.h"
#include "util/log.h"
#include "util/timefmt.h"

#define MAX_PAGE 100

static int read_begin(lmdb_store_t *s, MDB_txn **txn) {
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) log_error("store", "lmdb read txn: %s", mdb_strerror(rc));
    else tsan_see_published(s);
    return lmdb_map_err(rc);
}

/* Reads u->id's name and, with want_hash, its password hash (NULL when it
 * has none) in txn; the pointers are into the map. */
static int user_read(lmdb_store_t *s, MDB_txn *txn, user_t *u, bool want_hash) {
    MDB_val k = lmdb_val(u->id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS], &k, &v);
    if (rc) return lmdb_map_err(rc);
    if (v.mv_size == 0 || v.mv_size > USERNAME_MAX * 4) return lmdb_bad_row("users", "a name of a bad length");
    u->name = v.mv_data;
    u->name_len = v.mv_size;
    u->password_hash = NULL;
    u->password_hash_len = 0;
    if (!want_hash) return STORE_OK;
    rc = mdb_get(txn, s->dbi[DB_CREDENTIALS], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return lmdb_map_err(rc);
    if (v.mv_size == 0 || v.mv_size > HASH_MAX) return lmdb_bad_row("credentials", "a hash of a bad length");
    u->password_hash = v.mv_data;
    u->password_hash_len = v.mv_size;
    return STORE_OK;
}

void lmdb_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    user_t u = {.id = *id};
    err = user_read(s, txn, &u, false);
    cb(ctx, err, err ? NULL : &u);
    mdb_txn_abort(txn);
}

void lmdb_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    char folded[USERNAME_MAX * 4];
    if (len == 0 || len > sizeof folded) { cb(ctx, STORE_ENOTFOUND, NULL); return; }
    username_fold(name, len, folded);
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_val k = lmdb_val(folded, len), idv;
    int rc = mdb_get(txn, s->dbi[DB_USERS_BY_NAME], &k, &idv);
    user_t u;
    if (rc) {
        err = lmdb_map_err(rc);
    } else if (idv.mv_size != 16) {
        err = lmdb_bad_row("users_by_name", "an id that is not 16 bytes");
    } else {
        memcpy(u.id.b, idv.mv_data, 16);
        err = user_read(s, txn, &u, true);
    }
    cb(ctx, err, err ? NULL : &u);
    mdb_txn_abort(txn);
}

/* A token row that cannot be used (a bad length, an expiry out of range, a
 * nil user) reads as absent: no session, the client logs in again, and its
 * logout or expiry purges the row. */
void lmdb_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_val k = lmdb_val(hash, STORE_TOKEN_HASH_LEN), v;
    int rc = mdb_get(txn, s->dbi[DB_TOKENS], &k, &v);
    store_token_t t;
    if (rc == 0 && v.mv_size != TOKEN_LEN) {
        lmdb_bad_row("auth_tokens", "not 24 bytes");
        rc = MDB_NOTFOUND;
    } else if (rc == 0) {
        memcpy(t.hash, hash, STORE_TOKEN_HASH_LEN);
        t.expires_at_ms = (int64_t)be64_get(v.mv_data);
        memcpy(t.user_id.b, (const uint8_t *)v.mv_data + 8, 16);
        if (!lmdb_time_ok(t.expires_at_ms) || uuid_is_nil(&t.user_id)) {
            lmdb_bad_row("auth_tokens", "an expiry out of range or a nil user");
            rc = MDB_NOTFOUND;
        } else if (t.expires_at_ms <= time_now_ms()) {
            rc = MDB_NOTFOUND; /* expired rows are purged by the writer; until then they are absent */
        }
    }
    mdb_txn_abort(txn);
    if (rc) cb(ctx, lmdb_map_err(rc), NULL);
    else cb(ctx, STORE_OK, &t);
}

static bool has_prefix(const MDB_val *k, const uint8_t *prefix, size_t n) {
    return k->mv_size >= n && memcmp(k->mv_data, prefix, n) == 0;
}

/* Positions cursor c on the last key that is strictly below `key` (of
 * length n). Returns MDB_NOTFOUND when there is none. */
static int seek_below(MDB_cursor *c, const uint8_t *key, size_t n, MDB_val *k, MDB_val *v) {
    *k = lmdb_val(key, n);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE); /* first key >= key */
    if (rc == MDB_NOTFOUND) return mdb_cursor_get(c, k, v, MDB_LAST);
    if (rc) return rc;
    return mdb_cursor_get(c, k, v, MDB_PREV);
}

int lmdb_newest_message(MDB_cursor *c, const uuid_t *conv, MDB_val *k, MDB_val *v) {
    uint8_t key[32];
    memcpy(key, conv->b, 16);
    memset(key + 16, 0xff, 16);
    int rc = seek_below(c, key, sizeof key, k, v);
    if (rc == 0 && !(k->mv_size == 32 && v->mv_size >= MSG_HDR && has_prefix(k, conv->b, 16))) rc = MDB_NOTFOUND;
    return rc;
}

/* Reads conversation `id` whole, as its metadata and newest message give it
 * (c: a cursor on messages_by_conversation). Pointers in *out point into
 * the map: valid while txn lives. */
static int conversation_read(lmdb_store_t *s, MDB_txn *txn, MDB_cursor *c, const uuid_t *id, conversation_t *out) {
    MDB_val k = lmdb_val(id->b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc) return lmdb_map_err(rc);
    memset(out, 0, sizeof *out);
    out->id = *id;
    int err = lmdb_decode_meta(&v, &out->created_at_ms, &out->user1_id, &out->user2_id);
    if (err) return err;
    out->activity = lmdb_conv_activity(out->created_at_ms, 0);
    out->last_message_at_ms = out->created_at_ms;
    rc = lmdb_newest_message(c, id, &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return lmdb_map_err(rc);
    message_t m;
    if ((err = lmdb_decode_message(&k, &v, &m))) return err;
    out->activity = lmdb_conv_activity(out->created_at_ms, uuid_time_ticks(&m.id));
    out->has_last_message = true;
    out->last_message_id = m.id;
    out->last_message_at_ms = m.created_at_ms;
    out->last_message_content = m.content;
    out->last_message_len = m.content_len;
    return STORE_OK;
}

void lmdb_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_cursor *c = NULL;
    message_t items[MAX_PAGE];
    store_msg_page_t page = {.items = items};
    int limit = q->limit < 1 ? 1 : q->limit > MAX_PAGE ? MAX_PAGE : q->limit;

    MDB_val k, v;
    int rc = mdb_cursor_open(txn, s->dbi[DB_MESSAGES], &c);
    if (rc) { err = lmdb_map_err(rc); goto done; }

    uint8_t key[32];
    memcpy(key, q->conversation_id.b, 16);
    if (q->has_after) {
        uuid_sort_key(&q->after, key + 16);
        k = lmdb_val(key, 32);
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == 32 && memcmp(k.mv_data, key, 32) == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    } else {
        if (q->has_before) uuid_sort_key(&q->before, key + 16);
        else memset(key + 16, 0xff, 16);
        rc = seek_below(c, key, 32, &k, &v);
    }
    MDB_cursor_op step = q->has_after ? MDB_NEXT : MDB_PREV;
    while (rc == 0 && has_prefix(&k, key, 16)) { /* lmdb_decode_message checks the sizes */
        if (page.count == (size_t)limit) { page.more = true; break; }
        if (lmdb_decode_message(&k, &v, &items[page.count]) == STORE_OK) page.count++; /* a bad row is skipped */
        rc = mdb_cursor_get(c, &k, &v, step);
    }
    if (rc && rc != MDB_NOTFOUND) { err = lmdb_map_err(rc); goto done; }
    /* A conversation with messages exists (sends create it): only an empty
     * page needs the look-up that tells "no such conversation" apart. One
     * B-tree descent fewer on every other page read. */
    if (!page.count) {
        k = lmdb_val(q->conversation_id.b, 16);
        rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
        if (rc) { err = lmdb_map_err(rc); goto done; }
    }
    err = STORE_OK;
done:
    if (c) mdb_cursor_close(c);
    cb(ctx, err, err ? NULL : &page);
    mdb_txn_abort(txn);
}

void lmdb_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_cursor *c = NULL;
    conversation_t items[MAX_PAGE];
    store_conv_page_t page = {.items = items};
    int limit = q->limit < 1 ? 1 : q->limit > MAX_PAGE ? MAX_PAGE : q->limit;

    MDB_val k = lmdb_val(q->user_id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS], &k, &v);
    if (rc) { err = lmdb_map_err(rc); goto done; }

    /* Recency key: user . activity . conv; we walk it backwards from the
     * cursor position (exclusive), or from the end of the user's range. */
    uint8_t key[40];
    memcpy(key, q->user_id.b, 16);
    if (!q->has_cursor) {
        memset(key + 16, 0xff, 24);
    } else if (q->cursor_is_id) {
        /* A conversation id: the position is its activity now. */
        conversation_t conv;
        MDB_cursor *mc;
        rc = mdb_cursor_open(txn, s->dbi[DB_MESSAGES], &mc);
        if (rc) { err = lmdb_map_err(rc); goto done; }
        err = conversation_read(s, txn, mc, &q->cursor_id, &conv);
        mdb_cursor_close(mc);
        if (!err && uuid_cmp(&conv.user1_id, &q->user_id) != 0 && uuid_cmp(&conv.user2_id, &q->user_id) != 0)
            err = STORE_ENOTFOUND;
        if (err == STORE_ENOTFOUND) err = STORE_EBADCURSOR;
        if (err) goto done;
        be64_put(key + 16, conv.activity);
        memcpy(key + 24, q->cursor_id.b, 16);
    } else {
        be64_put(key + 16, q->cursor_activity);
        memcpy(key + 24, q->cursor_id.b, 16);
    }
    rc = mdb_cursor_open(txn, s->dbi[DB_RECENCY], &c);
    if (rc) { err = lmdb_map_err(rc); goto done; }
    rc = seek_below(c, key, 40, &k, &v);
    while (rc == 0 && has_prefix(&k, key, 16) && k.mv_size == 40) {
        if (page.count == (size_t)limit) { page.more = true; break; }
        if (lmdb_decode_conv_rec(&k, &v, &items[page.count]) == STORE_OK) page.count++; /* a bad row is skipped */
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    }
    if (rc && rc != MDB_NOTFOUND) { err = lmdb_map_err(rc); goto done; }
    err = STORE_OK;
done:
    if (c) mdb_cursor_close(c);
    cb(ctx, err, err ? NULL : &page);
    mdb_txn_abort(txn);
}

void lmdb_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    conversation_t conv;
    MDB_cursor *c;
    err = lmdb_map_err(mdb_cursor_open(txn, s->dbi[DB_MESSAGES], &c));
    if (!err) {
        err = conversation_read(s, txn, c, id, &conv);
        mdb_cursor_close(c);
    }
    cb(ctx, err, err ? NULL : &conv);
    mdb_txn_abort(txn);
}

void lmdb_health(store_t *base, store_health_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, "lmdb read transaction failed"); return; }
    mdb_txn_abort(txn);
    cb(ctx, STORE_OK, "lmdb");
}
