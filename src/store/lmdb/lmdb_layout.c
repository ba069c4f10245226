/* lmdb_layout.c - the tables' rows as bytes: the tables' names, the keys,
 * and each value's encoding and decoding. What the tables hold and the
 * invariants between them are in lmdb_internal.h ("Layout"); how a row read
 * back is checked, under "decoding" there.
 *
 * Apart from the code that reads and writes the rows so that a format is
 * written down once, its encoder beside its decoder.
 */
#include "store/lmdb/lmdb_internal.h"

#include <string.h>

#include "util/bytes.h"
#include "util/log.h"
#include "util/timefmt.h"

/* In the order of the DB_* enum: a table's number is its index here. */
const char *const lmdb_db_names[DB_COUNT] = {
    "users", "users_by_name", "messages_by_conversation", "conversations_by_user",
    "conversation_metadata", "conversations_by_recency", "idempotency", "idempotency_by_time",
    "credentials", "auth_tokens", "auth_tokens_by_expiry",
    "store_meta", /* "wal_seq" -> the newest log record applied (be64) */
};

static const char WAL_SEQ_KEY[] = "wal_seq";

MDB_val lmdb_conv_row_key(uint8_t out[32], const uuid_t *user, const uuid_t *conv) {
    memcpy(out, user->b, 16);
    memcpy(out + 16, conv->b, 16);
    return lmdb_val(out, 32);
}

MDB_val lmdb_recency_key(uint8_t out[40], const uuid_t *user, uint64_t activity, const uuid_t *conv) {
    memcpy(out, user->b, 16);
    be64_put(out + 16, activity);
    memcpy(out + 24, conv->b, 16);
    return lmdb_val(out, 40);
}

int lmdb_seq_put(lmdb_store_t *s, MDB_txn *txn, uint64_t seq) {
    uint8_t b[8];
    be64_put(b, seq);
    MDB_val k = lmdb_val(WAL_SEQ_KEY, sizeof WAL_SEQ_KEY - 1), v = lmdb_val(b, 8);
    return lmdb_map_err(mdb_put(txn, s->dbi[DB_META], &k, &v, 0));
}

bool lmdb_time_ok(int64_t ms) {
    return ms >= TIME_MIN_MS && ms < TIME_MAX_MS;
}

bool lmdb_ticks_ok(uint64_t ticks) {
    return ticks >= unix_ms_to_ticks(TIME_MIN_MS) && ticks < unix_ms_to_ticks(TIME_MAX_MS);
}

static bool message_id_ok(const uuid_t *id) {
    return uuid_version(id) == 1 && lmdb_ticks_ok(uuid_time_ticks(id));
}

int lmdb_bad_row(const char *table, const char *why) {
    log_error("store", "%s: a bad row (%s): not used", table, why);
    return STORE_EIO;
}

int lmdb_seq_get(lmdb_store_t *s, MDB_txn *txn, uint64_t *seq) {
    MDB_val k = lmdb_val(WAL_SEQ_KEY, sizeof WAL_SEQ_KEY - 1), v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    *seq = 0;
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return lmdb_map_err(rc);
    if (v.mv_size != 8) return lmdb_bad_row("store_meta", "wal_seq is not 8 bytes");
    *seq = be64_get(v.mv_data);
    if (*seq >= SEQ_MAX) return lmdb_bad_row("store_meta", "wal_seq out of range");
    return STORE_OK;
}

int lmdb_decode_message(const MDB_val *k, const MDB_val *v, message_t *m) {
    const char *t = "messages_by_conversation";
    if (k->mv_size != 32 || v->mv_size < MSG_HDR) return lmdb_bad_row(t, "too short");
    const uint8_t *kp = k->mv_data, *vp = v->mv_data;
    if (!lmdb_ticks_ok(be64_get(kp + 16))) return lmdb_bad_row(t, "a message id's time out of range");
    memcpy(m->conversation_id.b, kp, 16);
    uuid_from_sort_key(&m->id, kp + 16);
    memcpy(m->sender_id.b, vp, 16);
    memcpy(m->receiver_id.b, vp + 16, 16);
    m->created_at_ms = (int64_t)be64_get(vp + 32);
    m->content = (const char *)vp + MSG_HDR;
    m->content_len = v->mv_size - MSG_HDR;
    if (!lmdb_time_ok(m->created_at_ms)) return lmdb_bad_row(t, "created_at out of range");
    if (uuid_is_nil(&m->sender_id) || uuid_is_nil(&m->receiver_id)) return lmdb_bad_row(t, "a nil user");
    return STORE_OK;
}

int lmdb_decode_conv_rec(const MDB_val *k, const MDB_val *v, conversation_t *c) {
    const char *t = "conversations_by_recency";
    if (k->mv_size != 40 || v->mv_size < CONV_REC_HDR) return lmdb_bad_row(t, "too short");
    const uint8_t *p = v->mv_data, *kp = k->mv_data;
    memset(c, 0, sizeof *c);
    memcpy(c->user1_id.b, kp, 16);
    memcpy(c->id.b, kp + 24, 16);
    memcpy(c->user2_id.b, p, 16);
    c->activity = be64_get(p + 16);
    c->created_at_ms = (int64_t)be64_get(p + 24);
    c->has_last_message = p[32] != 0;
    memcpy(c->last_message_id.b, p + 33, 16);
    c->last_message_at_ms = (int64_t)be64_get(p + 49);
    c->last_message_content = (const char *)p + CONV_REC_HDR;
    c->last_message_len = v->mv_size - CONV_REC_HDR;
    if (p[32] > 1) return lmdb_bad_row(t, "has_last is neither 0 nor 1");
    if (c->activity != be64_get(kp + 16)) return lmdb_bad_row(t, "its key's activity is not its value's");
    if (!lmdb_ticks_ok(c->activity)) return lmdb_bad_row(t, "activity out of range");
    if (!lmdb_time_ok(c->created_at_ms) || !lmdb_time_ok(c->last_message_at_ms))
        return lmdb_bad_row(t, "a time out of range");
    if (c->has_last_message && !message_id_ok(&c->last_message_id)) return lmdb_bad_row(t, "a bad last message id");
    if (!c->has_last_message && c->last_message_len) return lmdb_bad_row(t, "content without a message");
    if (uuid_is_nil(&c->user2_id)) return lmdb_bad_row(t, "a nil user");
    return STORE_OK;
}

int lmdb_decode_meta(const MDB_val *v, int64_t *created_ms, uuid_t *lo, uuid_t *hi) {
    const char *t = "conversation_metadata";
    if (v->mv_size < META_LEN) return lmdb_bad_row(t, "too short");
    const uint8_t *p = v->mv_data;
    *created_ms = (int64_t)be64_get(p);
    if (lo) memcpy(lo->b, p + 8, 16);
    if (hi) memcpy(hi->b, p + 24, 16);
    if (!lmdb_time_ok(*created_ms)) return lmdb_bad_row(t, "created_at out of range");
    if (lo && hi && (uuid_is_nil(lo) || uuid_is_nil(hi))) return lmdb_bad_row(t, "a nil user");
    return STORE_OK;
}

uint64_t lmdb_message_key_ticks(const MDB_val *k) {
    uuid_t id;
    uuid_from_sort_key(&id, (const uint8_t *)k->mv_data + 16);
    return uuid_time_ticks(&id);
}

uint64_t lmdb_conv_activity(int64_t created_ms, uint64_t newest_ticks) {
    uint64_t created = unix_ms_to_ticks(created_ms);
    return newest_ticks > created ? newest_ticks : created;
}

void lmdb_fill_conv_rec(uint8_t *p, const uuid_t *other, uint64_t activity, int64_t created_ms,
                          const message_t *msg) {
    memcpy(p, other->b, 16);
    be64_put(p + 16, activity);
    be64_put(p + 24, (uint64_t)created_ms);
    p[32] = msg != NULL;
    if (msg) {
        memcpy(p + 33, msg->id.b, 16);
        be64_put(p + 49, (uint64_t)msg->created_at_ms);
        if (msg->content_len) memcpy(p + CONV_REC_HDR, msg->content, msg->content_len);
    } else {
        memset(p + 33, 0, 16);
        be64_put(p + 49, (uint64_t)created_ms);
    }
}
