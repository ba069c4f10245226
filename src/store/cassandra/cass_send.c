/* cass_send.c - the writes that move a conversation: a message send (the
 * idempotency key reserved by a lightweight transaction, four parallel
 * reads, then one unlogged batch per partition, in parallel; see "Recency
 * with bounded tombstones", "Without read-modify-write races" and "Why no
 * logged batch" in cass_internal.h) and a conversation opened with no
 * message (the seeder's).
 */
#include <stdlib.h>
#include <string.h>

#include "store/cassandra/cass_internal.h"
#include "util/sha256.h"
#include "util/timefmt.h"

/* ------------------------------------------------------------------ send */

typedef struct send_op {
    cass_store_t *s;
    store_send_cb cb;
    void *ctx;
    store_send_t req;
    message_t msg;
    join_t reads;           /* sender, receiver, metadata, newest ids */
    join_t writes;          /* the conversation's partition, the sender's, the receiver's */
    probe_t sender, receiver;
    bool has_meta, replayed, reserved;
    bool users_checked;     /* a keyed send checks both users before it reserves the key */
    int64_t created_ms;     /* has_meta: the conversation's creation */
    int n_newest;           /* message ids read, newest first (0..2), this send's own left out */
    int64_t newest[2];      /* their times, 100-ns ticks */
    uint8_t content_hash[SHA256_LEN];
    char text[];            /* content, then client_message_id */
} send_op_t;

static void send_finish(send_op_t *op, int err) {
    op->cb(op->ctx, err, err ? NULL : &op->msg, op->replayed);
    free(op);
}

static void send_write(send_op_t *op);

/* After both users' look-ups: STORE_ENOTFOUND when either is unknown. */
static int send_users_err(const send_op_t *op) {
    return op->sender.found && op->receiver.found ? STORE_OK : STORE_ENOTFOUND;
}

static void send_reads_done(void *arg, int err) {
    send_op_t *op = arg;
    if (!err && !op->users_checked) err = send_users_err(op);
    if (err) send_finish(op, err);
    else send_write(op);
}

static void on_send_meta(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = cass_map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) == 1) {
        op->has_meta = true;
        if (cass_row_time_ms(r, 0, &op->created_ms) != CQL_OK) op->created_ms = 0;
    }
    cass_join_arrive(&op->reads, err);
}

static void on_send_newest(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = cass_map_cql(status, r, "newest messages read");
    uuid_t id;
    /* Three are read: a retry may find its own message there, which is
     * not what came before it. */
    while (!err && op->n_newest < 2 && cql_result_next_row(r) == 1)
        if (row_uuid(r, 0, &id) && uuid_version(&id) == 1 && !(op->reserved && uuid_cmp(&id, &op->msg.id) == 0))
            op->newest[op->n_newest++] = (int64_t)uuid_time_ticks(&id);
    cass_join_arrive(&op->reads, err);
}

/* Both users' look-ups, into op->reads (two arrivals). */
static void send_probe_users(send_op_t *op) {
    cql_value vs[1] = {v_uuid(&op->req.sender_id)};
    cass_probe(op->s, &op->reads, &op->sender, "sender look-up", Q_USER_GET, vs, 1);
    cql_value vr[1] = {v_uuid(&op->req.receiver_id)};
    cass_probe(op->s, &op->reads, &op->receiver, "receiver look-up", Q_USER_GET, vr, 1);
}

static void send_reads(send_op_t *op) {
    cass_store_t *s = op->s;
    cass_join_start(&op->reads, op->users_checked ? 2 : 4, send_reads_done, op);
    if (!op->users_checked) send_probe_users(op);
    cql_value vm[1] = {v_uuid(&op->msg.conversation_id)};
    cass_exec(s, Q_META_GET, vm, 1, NULL, on_send_meta, op);
    cass_exec(s, Q_MSG_NEWEST, vm, 1, NULL, on_send_newest, op);
    cass_join_arrive(&op->reads, 0); /* the submitter's own count */
}

/* Who publishes a keyed send's event: the attempt (first or a retry) whose
 * lightweight transaction sets `published` on the key's row. The others are
 * answered as replays (200, no event), so the message's event goes out once
 * and one attempt gets 201, whichever of them completed its writes, and
 * even when a retry completed a first attempt that failed half-way. A claim
 * that times out is a 503 like any failed write: a later retry claims, or
 * finds that it was claimed (and then, if the attempt that claimed never
 * learnt it, the event is lost: the message is not). */
static void on_send_claim(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = cass_map_cql(status, r, "event claim");
    int applied = 0;
    if (!err && (cql_result_next_row(r) != 1 || cql_row_get_bool(r, 0, &applied) != CQL_OK)) err = STORE_EIO;
    op->replayed = !applied;
    send_finish(op, err);
}

static void send_writes_done(void *arg, int err) {
    send_op_t *op = arg;
    if (err || !op->req.client_message_id) {
        send_finish(op, err);
        return;
    }
    cql_value v[2] = {v_uuid(&op->req.sender_id),
                      cql_value_textn(op->req.client_message_id, op->req.client_message_id_len)};
    cass_exec_lwt(op->s, Q_IDEM_CLAIM, v, 2, on_send_claim, op);
}

static void on_send_write(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    cass_join_arrive(&op->writes, cass_map_cql(status, r, "send write"));
}

/* One partition's statements as an unlogged batch (atomic on each replica,
 * no batchlog), reporting to op->writes. */
static void send_batch(send_op_t *op, const cql_batch_stmt *st, size_t n) {
    cql_query_opts o;
    cass_query_opts(op->s, &o);
    int rc = cql_batch(op->s->cql, CQL_BATCH_UNLOGGED, st, n, &o, on_send_write, op);
    if (rc < 0) on_send_write(op, rc, NULL);
}

/* The conversation's activity before this send (false: no conversation
 * yet) and the key of the recency rows the previous send (or the open)
 * wrote: hot when its two newest messages lie within RECENCY_HOT_TICKS. */
static bool send_old_key(const send_op_t *op, int64_t *activity, rec_key_t *key) {
    if (op->n_newest == 0) {
        if (!op->has_meta) return false;
        *activity = (int64_t)unix_ms_to_ticks(op->created_ms);
        *key = rec_key_of(*activity, false);
        return true;
    }
    *activity = op->newest[0];
    *key = rec_key_of(*activity, op->n_newest == 2 && op->newest[0] - op->newest[1] <= RECENCY_HOT_TICKS);
    return true;
}

/* Where a send puts the conversation's recency rows: the new key, and
 * whether the rows at the old one go. */
typedef struct rec_move {
    bool write;             /* false: a message older than the activity leaves the rows */
    bool moved;
    rec_key_t key, old;
} rec_move_t;

static rec_move_t send_rec_move(const send_op_t *op, int64_t act) {
    rec_move_t mv = {0};
    int64_t old_act = 0;
    bool has_old = send_old_key(op, &old_act, &mv.old);
    /* A message older than the activity (the seeder's ids, a late replay)
     * leaves the rows where they are. */
    if (has_old && act <= old_act) return mv;
    mv.write = true;
    mv.key = rec_key_of(act, op->n_newest > 0 && act - op->newest[0] <= RECENCY_HOT_TICKS);
    mv.moved = has_old && (mv.old.tier != mv.key.tier || mv.old.pos != mv.key.pos);
    return mv;
}

/* One user's partition of a send: its conversations_by_user row, and its
 * recency row upserted at the new key (the old one deleted when the key
 * changes), as one unlogged batch. */
static void send_user_rows(send_op_t *op, const rec_move_t *mv, const uuid_t *user, const uuid_t *other) {
    const message_t *m = &op->msg;
    int64_t act = (int64_t)uuid_time_ticks(&m->id), ts = ticks_to_unix_us((uint64_t)act);
    cql_value cbu[6] = {v_uuid(user), v_uuid(&m->conversation_id), v_uuid(other),
                        cql_value_textn(m->content, m->content_len), cql_value_timestamp(m->created_at_ms),
                        cql_value_bigint(ts)};
    cql_value del[REC_DEL_VALUES], put[REC_PUT_VALUES];
    cql_batch_stmt st[3] = {{cass_cql(Q_CBU_PUT), cbu, 6, 1}};
    size_t n = 1;
    if (mv->write) {
        if (mv->moved) {
            cass_rec_del_values(del, user, &m->conversation_id, mv->old, ts);
            st[n++] = (cql_batch_stmt){cass_cql(Q_REC_DEL), del, REC_DEL_VALUES, 1};
        }
        rec_item_t item = {other, m->content, m->content_len};
        cass_rec_values(put, user, &m->conversation_id, mv->key, act, ts, &item);
        st[n++] = (cql_batch_stmt){cass_cql(Q_REC_PUT), put, REC_PUT_VALUES, 1};
    }
    send_batch(op, st, n);
}

/* The conversation's partition of a send: the message, and for a new
 * conversation its metadata and participants. */
static void send_conversation_rows(send_op_t *op) {
    const message_t *m = &op->msg;
    int64_t ts = ticks_to_unix_us(uuid_time_ticks(&m->id)), at = m->created_at_ms;
    const uuid_t *snd = &m->sender_id, *rcv = &m->receiver_id, *conv = &m->conversation_id;
    const uuid_t *lo = uuid_cmp(snd, rcv) <= 0 ? snd : rcv, *hi = lo == snd ? rcv : snd;
    cql_value v_msg[7] = {v_uuid(conv), v_timeuuid(&m->id), v_uuid(snd), v_uuid(rcv),
                          cql_value_textn(m->content, m->content_len), cql_value_timestamp(at), cql_value_bigint(ts)};
    int64_t fw = first_writer_wins_ts(at);
    cql_value v_meta[3] = {v_uuid(conv), cql_value_timestamp(at), cql_value_bigint(fw)};
    cql_value v_part[4] = {v_uuid(conv), v_uuid(lo), v_uuid(hi), cql_value_bigint(fw)};
    cql_batch_stmt st[3] = {{cass_cql(Q_MSG_PUT), v_msg, 7, 1},
                            {cass_cql(Q_META_PUT), v_meta, 3, 1},
                            {cass_cql(Q_PART_PUT), v_part, 4, 1}};
    send_batch(op, st, op->has_meta ? 1 : 3);
}

static void send_write(send_op_t *op) {
    cass_store_t *s = op->s;
    message_t *m = &op->msg;
    if (!op->reserved) {
        /* Later than the conversation's newest message, even when this
         * node's clock is behind the node that wrote it. */
        int64_t old_act = 0;
        rec_key_t ignored;
        uint64_t floor = send_old_key(op, &old_act, &ignored) ? (uint64_t)old_act + 1 : 0;
        idgen_next_after(s->ids, floor, &m->id);
    }
    m->created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m->id));
    rec_move_t mv = send_rec_move(op, (int64_t)uuid_time_ticks(&m->id));
    bool self = uuid_cmp(&m->sender_id, &m->receiver_id) == 0;
    cass_join_start(&op->writes, self ? 2 : 3, send_writes_done, op);
    send_conversation_rows(op);
    send_user_rows(op, &mv, &m->sender_id, &m->receiver_id);
    if (!self) send_user_rows(op, &mv, &m->receiver_id, &m->sender_id);
    cass_join_arrive(&op->writes, 0); /* the submitter's own count */
}

/* An idempotency key was already used: fetch what it names and compare.
 * A retry always writes the send again, with the reserved id (so with its
 * first attempt's time, even hours later) and the same timestamps: the
 * writes are idempotent, and they complete a first attempt that wrote only
 * some of its partitions ("Why no logged batch" in cass_internal.h). Then
 * it claims the event like any attempt (on_send_claim): it publishes and
 * gets 201 only if no attempt did before it. */
static void on_send_reserved_message(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = cass_map_cql(status, r, "idempotent replay read");
    if (err) { send_finish(op, err); return; }
    message_t old;
    if (cql_result_next_row(r) == 1 && cass_decode_message(r, &op->msg.conversation_id, &old) &&
        (uuid_cmp(&old.receiver_id, &op->req.receiver_id) != 0 || old.content_len != op->req.content_len ||
         (old.content_len && memcmp(old.content, op->req.content, old.content_len) != 0))) {
        send_finish(op, STORE_ECONFLICT);
        return;
    }
    /* Stored and equal, or reserved but not (yet) written: on_send_claim
     * decides between 201 and a replay. */
    send_reads(op);
}

static void on_send_idem(void *arg, int status, cql_result *r) {
    send_op_t *op = arg;
    int err = cass_map_cql(status, r, "idempotency reservation");
    int applied = 0;
    if (!err && (cql_result_next_row(r) != 1 || cql_row_get_bool(r, 0, &applied) != CQL_OK)) err = STORE_EIO;
    if (err) { send_finish(op, err); return; }
    if (applied) { send_reads(op); return; }
    /* Taken: the row that holds the key comes back with the answer. */
    int c_conv = cass_col_index(r, "conversation_id"), c_id = cass_col_index(r, "message_id"),
        c_rcv = cass_col_index(r, "receiver_id"), c_hash = cass_col_index(r, "content_sha256");
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
    cass_exec(op->s, Q_MSG_GET, v, 2, NULL, on_send_reserved_message, op);
}

/* Both users exist: reserve the key and the message id in one lightweight
 * transaction. */
static void send_reserve(void *arg, int err) {
    send_op_t *op = arg;
    if (!err) err = send_users_err(op);
    if (err) { send_finish(op, err); return; }
    message_t *m = &op->msg;
    idgen_next(op->s->ids, &m->id);
    op->reserved = true;
    sha256(op->req.content, op->req.content_len, op->content_hash);
    cql_value v[6] = {v_uuid(&op->req.sender_id),
                      cql_value_textn(op->req.client_message_id, op->req.client_message_id_len),
                      v_uuid(&m->conversation_id), v_timeuuid(&m->id), v_uuid(&op->req.receiver_id),
                      cql_value_blob(op->content_hash, sizeof op->content_hash)};
    cass_exec_lwt(op->s, Q_IDEM_LWT, v, 6, on_send_idem, op);
}

void cass_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx) {
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
    /* The users first: a send that names an unknown user must not burn its
     * key (a retry to the right receiver would be refused as a reuse). */
    op->users_checked = true;
    cass_join_start(&op->reads, 2, send_reserve, op);
    send_probe_users(op);
    cass_join_arrive(&op->reads, 0); /* the submitter's own count */
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
    open_finish(op, cass_map_cql(status, r, "open batch"));
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
    int64_t act = (int64_t)unix_ms_to_ticks(at);
    cql_value v_rec_a[REC_PUT_VALUES], v_rec_b[REC_PUT_VALUES];
    rec_item_t item_a = {&op->b, NULL, 0}, item_b = {&op->a, NULL, 0};
    cass_rec_values(v_rec_a, &op->a, conv, rec_key_of(act, false), act, ts, &item_a);
    cass_rec_values(v_rec_b, &op->b, conv, rec_key_of(act, false), act, ts, &item_b);
    cql_batch_stmt st[6] = {
        {cass_cql(Q_META_PUT), v_meta, 3, 1}, {cass_cql(Q_PART_PUT), v_part, 4, 1},
        {cass_cql(Q_CBU_PUT), v_cbu_a, 6, 1}, {cass_cql(Q_CBU_PUT), v_cbu_b, 6, 1},
        {cass_cql(Q_REC_PUT), v_rec_a, REC_PUT_VALUES, 1}, {cass_cql(Q_REC_PUT), v_rec_b, REC_PUT_VALUES, 1},
    };
    cql_query_opts o;
    cass_query_opts(op->s, &o);
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
    int err = cass_map_cql(status, r, "metadata read");
    if (!err && cql_result_next_row(r) == 1) {
        op->exists = true;
        if (cass_row_time_ms(r, 0, &op->conv.created_at_ms) != CQL_OK) op->conv.created_at_ms = 0;
        op->conv.last_message_at_ms = op->conv.created_at_ms;
    }
    cass_join_arrive(&op->reads, err);
}

void cass_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms, store_conv_cb cb,
                            void *ctx) {
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
    cass_join_start(&op->reads, 3, open_read_done, op);
    cql_value va[1] = {v_uuid(a)}, vb[1] = {v_uuid(b)}, vm[1] = {v_uuid(&op->conv.id)};
    cass_probe(s, &op->reads, &op->user_a, "user read", Q_USER_GET, va, 1);
    cass_probe(s, &op->reads, &op->user_b, "user read", Q_USER_GET, vb, 1);
    cass_exec(s, Q_META_GET, vm, 1, NULL, on_open_meta, op);
    cass_join_arrive(&op->reads, 0);
}
