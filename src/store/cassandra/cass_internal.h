/* cass_internal.h - PRIVATE to src/store/cassandra/: shared by this folder's
 * files and included by nothing outside it. The doors in are
 * store_cassandra.h (open, migrate) and store.h (every operation, through
 * the ops table that cass_open.c fills).
 *
 * Tables. The first four are the FastAPI implementation's, in its format;
 * the others are ours and only ever added (created in cass_schema.c):
 *
 *   users                     (user_id) username
 *   conversations_by_user     (user_id, conversation_id DESC) other_user_id, last_message, last_updated
 *   messages_by_conversation  (conversation_id, message_id DESC) sender_id, receiver_id, content, created_at
 *   conversation_metadata     (conversation_id) created_at
 *   users_by_name             (username_lower) user_id             unique names (LWT)
 *   conversation_recency      (user_id, tier, pos DESC, conversation_id DESC) activity,
 *                             other_user_id, last_message   the list order, and its items
 *                             (conversation_id a 16-byte blob: see v_conv_key)
 *   conversation_participants (conversation_id) user1_id, user2_id
 *   idempotency               ((sender_id, client_message_id)) ... TTL 24 h (LWT)
 *   (conversations_by_recency: the previous versions' list index, no longer read or written)
 *
 * Recency with bounded tombstones. A conversation's activity is the
 * timeuuid time (100-ns ticks) of its newest message, or its creation while
 * it has none; the list is ordered by (activity, conversation id), newest
 * first. Moving a row whose clustering key is its activity writes a
 * tombstone at the top of the partition on every send, which every list
 * read then scans (the queue anti-pattern). So a row has one of two forms:
 *  - tier 0, "cold": pos = activity, exact order on disk;
 *  - tier 1, "hot" (its two newest messages lie within RECENCY_HOT_TICKS of
 *    each other): pos = activity / RECENCY_HOT_TICKS, a five-minute bucket,
 *    and the exact activity a regular column. A send that stays in the
 *    bucket only overwrites that column: no tombstone.
 * A send deletes its old row only when the key changes: at most one
 * tombstone per user per five minutes of a conversation's life (and one per
 * send that follows a five-minute silence). A page reads the tier-0 rows
 * below its cursor, then the tier-1 buckets that can hold anything above
 * the last of them, and orders both in memory (cass_pages.c).
 *
 * Without read-modify-write races. Every write of a send carries USING
 * TIMESTAMP = the message's time in µs, so that last-write-wins resolves
 * concurrent sends to the newest message, whatever order they arrive in (an
 * equal timestamp resolves to the greater activity). A send reads the
 * conversation's two newest message ids, from which it knows the key of the
 * row the previous send wrote; then it writes the message, both
 * conversations_by_user rows, deletes both old recency rows if their key
 * changes and upserts the new ones. Concurrent sends, a send that failed
 * half-way (below), or a keyspace indexed by `messenger schema` can leave a
 * row behind that is older than the conversation's last_updated. Readers
 * check every recency row against conversations_by_user (one IN query per
 * page) and skip such stale rows, deleting them as they go (see on_cbu_in
 * in cass_pages.c). A send's delete can never remove a newer row: its
 * tombstone carries the older message's timestamp.
 *
 * Why no logged batch. A send writes three partitions: the conversation's
 * (the message; metadata and participants when it is new) and each user's
 * (conversations_by_user and conversation_recency share the user id as
 * partition key). Each is one unlogged batch, atomic and isolated on every
 * replica, and the three go out in parallel; the send is acknowledged once
 * all three are. A logged batch would make the three all-or-nothing, but
 * its batchlog is written to two other nodes first, and while a dead node
 * is not yet known to gossip as down (17-19 s here) every batchlog write
 * that picks it times out: every send stalled for that long (issue 14).
 * Without it, a send that fails (503) may have written one or two of its
 * partitions, all with the message's timestamp. What that leaves behind is
 * what readers repair already: a message whose list rows are older (the
 * next send of the conversation writes them), or a list row naming a
 * message that is not there (overwritten by the next send; a stale recency
 * row is skipped and deleted as above). A retry with the same
 * client_message_id writes all three again, idempotently.
 *
 * Carried list items. A recency row also carries what the list shows of
 * its conversation (other_user_id, last_message), written in the same
 * batch as the conversations_by_user row. A page without a cursor reads the
 * recency partition from the top, and a row a send left behind always lies
 * below the row that superseded it (both of a user's rows of one send are
 * in one batch; a send's own rows sort by its message's time): so the
 * first row of a conversation from the top is its newest, later ones are
 * stale, and such a page is built from the recency rows alone, without the
 * IN read of conversations_by_user (which costs one lookup per named row:
 * 3x slower in a user's 100,000-row partition). A page with a cursor, or
 * one that meets a row written before rows carried items (an upgraded
 * keyspace; conversation_recency gets the columns at start-up), checks its
 * rows against conversations_by_user as above: a stale row below a cursor
 * can be superseded by one above it, which this request has not seen.
 *
 * So a page of the conversation list costs two queries whatever the number
 * of conversations (three with a cursor), a page of messages one, and a
 * send four parallel point reads (sender, receiver, metadata, newest ids)
 * and three parallel single-partition writes.
 *
 * The files:
 *   cass_statements.c  every CQL text the store sends, in one table (Q_*)
 *   cass_exec.c        submitting requests, error mapping, fan-out joins, row decoding
 *   cass_users.c       users (create, get, find) and auth tokens
 *   cass_send.c        a message send (idempotent) and a conversation open (seeder)
 *   cass_pages.c       pages of messages and of conversations, one conversation
 *   cass_schema.c      keyspace and tables, blocking calls, the FastAPI-keyspace migration
 *   cass_open.c        configuration checks, connecting, health, open and close
 */
#ifndef MESSENGER_CASS_INTERNAL_H
#define MESSENGER_CASS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "cql.h"
#include "model/uuid.h"
#include "store/cassandra/store_cassandra.h"
#include "store/store_impl.h"

/* The width of a hot row's bucket and the gap between a conversation's two
 * newest messages that makes it hot: 5 minutes in 100-ns ticks. Wider
 * buckets mean fewer tombstones per hot conversation (one per bucket per
 * user) and more rows per list read (every hot conversation in the buckets
 * a page covers); see docs/cassandra-store.md. */
#define RECENCY_HOT_TICKS (INT64_C(300) * 10000000)
/* The most tier-1 rows one page fetch orders in memory. */
#define RECENCY_HOT_MAX 5000

/* A recency row's key: tier 0 at its exact activity, tier 1 in its bucket. */
typedef struct rec_key {
    int32_t tier;
    int64_t pos;
} rec_key_t;

static inline rec_key_t rec_key_of(int64_t activity, bool hot) {
    return hot ? (rec_key_t){1, activity / RECENCY_HOT_TICKS} : (rec_key_t){0, activity};
}

#define MAX_PAGE 100
#define RECENCY_SLACK 8 /* extra recency rows fetched per page, for stale ones */
/* The most recency rows one fetch checks against conversations_by_user:
 * the largest IN list (cass_in_statements_build). */
#define CBU_IN_MAX (MAX_PAGE + RECENCY_SLACK + 1)

typedef struct cass_store {
    store_t base;
    cql_client *cql;
    idgen_t *ids;
    uint16_t consistency;
    uint32_t timeout_ms;
    /* "... conversation_id IN (?, ..., ?)" for n = 1..MAX_PAGE+RECENCY_SLACK+1 */
    char *cbu_in[CBU_IN_MAX + 1];
} cass_store_t;

/* ------------------------------------------------------------------ statements (cass_statements.c) */

/* Every statement the store sends, by name; its text is cass_cql(q), in
 * the one table of cass_statements.c. A prepared statement's text is also
 * its handle: lib/cql's prepare cache is keyed by it (prepared on first use,
 * re-prepared when a node forgets it). The schema's DDL, formatted with the
 * keyspace, is in cass_schema.c. */
typedef enum cass_q {
    /* prepared (cass_exec, cql_batch) */
    Q_USER_GET,
    Q_USER_PUT,
    Q_NAME_GET,
    Q_CRED_GET,
    Q_CRED_PUT,
    Q_USER_DEL,
    Q_CRED_DEL,
    Q_TOKEN_GET,
    Q_TOKEN_PUT,
    Q_TOKEN_DEL,
    Q_NAME_LWT,
    Q_IDEM_LWT,
    Q_IDEM_CLAIM,
    Q_CBU_GET,
    Q_CBU_PUT,
    Q_MSG_PUT,
    Q_REC_DEL,
    Q_REC_PUT,
    Q_META_GET,
    Q_META_PUT,
    Q_PART_GET,
    Q_PART_PUT,
    Q_MSG_GET,
    Q_MSG_TOP,
    Q_MSG_BEFORE,
    Q_MSG_AFTER,
    Q_MSG_NEWEST,
    Q_REC_TOP,
    Q_REC_BELOW,
    Q_REC_HOT,
    Q_HEALTH,
    /* unprepared, blocking (cass_schema.c: start-up and `messenger schema`) */
    Q_TABLE_GC,
    Q_SCHEMA_LOCAL,
    Q_SCHEMA_PEERS,
    Q_SCAN_USERS,
    Q_SCAN_CBU,
    Q_COUNT
} cass_q;

extern const char *const cass_cql_text[Q_COUNT];

static inline const char *cass_cql(cass_q q) { return cass_cql_text[q]; }

/* Fills s->cbu_in[1..CBU_IN_MAX]; STORE_ENOMEM leaves what was built for
 * cass_in_statements_free. */
int cass_in_statements_build(cass_store_t *s);
void cass_in_statements_free(cass_store_t *s);

/* ------------------------------------------------------------------ requests (cass_exec.c) */

/* Maps a CQL completion to a store error, logging what the operator needs. */
int cass_map_cql(int status, cql_result *r, const char *what);

void cass_query_opts(const cass_store_t *s, cql_query_opts *o);

/* Submits a prepared statement; on a submit failure the callback is run
 * here with that status, so callers have one path for every outcome.
 * opts NULL: the store's consistency and timeout. */
void cass_exec_cql(cass_store_t *s, const char *cql, const cql_value *v, size_t n, const cql_query_opts *opts,
                   cql_result_cb cb, void *arg);
static inline void cass_exec(cass_store_t *s, cass_q q, const cql_value *v, size_t n, const cql_query_opts *opts,
                             cql_result_cb cb, void *arg) {
    cass_exec_cql(s, cass_cql(q), v, n, opts, cb, arg);
}

/* A lightweight transaction (INSERT ... IF NOT EXISTS): serial consistency
 * for its Paxos round, the store's consistency for the commit. */
void cass_exec_lwt(cass_store_t *s, cass_q q, const cql_value *v, size_t n, cql_result_cb cb, void *arg);

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

void cass_join_start(join_t *j, int branches, void (*done)(void *, int), void *op);
void cass_join_arrive(join_t *j, int err);

/* A branch that only asks whether a row exists. */
typedef struct probe {
    join_t *join;
    bool found;
    const char *what;
} probe_t;

void cass_probe(cass_store_t *s, join_t *j, probe_t *p, const char *what, cass_q q, const cql_value *v, size_t n);

/* ---- values and rows ---- */

static inline cql_value v_uuid(const uuid_t *u) { return cql_value_uuid(u->b); }
static inline cql_value v_timeuuid(const uuid_t *u) { return cql_value_timeuuid(u->b); }
/* conversations_by_recency keys conversations as a blob: Cassandra orders a
 * uuid column by version nibble first, and derived conversation ids carry
 * arbitrary nibbles; a blob orders byte-wise, like our cursors. */
static inline cql_value v_conv_key(const uuid_t *u) { return cql_value_blob(u->b, 16); }

/* A recency row carries what the list shows of its conversation: the
 * other user, and the newest message's content (absent for a conversation
 * opened without one), so that a first page needs no other read (see
 * "Carried list items" above). */
typedef struct rec_item {
    const uuid_t *other;    /* NULL: not known (the row is read the old way) */
    const char *content;    /* NULL: no message */
    size_t content_len;
} rec_item_t;

#define REC_PUT_VALUES 8
/* Q_REC_PUT's values: user's recency row of conv at key, written at ts (µs). */
static inline void cass_rec_values(cql_value v[REC_PUT_VALUES], const uuid_t *user, const uuid_t *conv, rec_key_t key,
                                   int64_t activity, int64_t ts, const rec_item_t *item) {
    v[0] = v_uuid(user);
    v[1] = cql_value_int(key.tier);
    v[2] = cql_value_bigint(key.pos);
    v[3] = v_conv_key(conv);
    v[4] = cql_value_bigint(activity);
    v[5] = item->other ? v_uuid(item->other) : cql_value_null();
    v[6] = item->content ? cql_value_textn(item->content, item->content_len) : cql_value_null();
    v[7] = cql_value_bigint(ts);
}

#define REC_DEL_VALUES 5
/* Q_REC_DEL's values: user's recency row of conv at key, deleted with a
 * tombstone at ts (µs). */
static inline void cass_rec_del_values(cql_value v[REC_DEL_VALUES], const uuid_t *user, const uuid_t *conv,
                                       rec_key_t key, int64_t ts) {
    v[0] = cql_value_bigint(ts);
    v[1] = v_uuid(user);
    v[2] = cql_value_int(key.tier);
    v[3] = cql_value_bigint(key.pos);
    v[4] = v_conv_key(conv);
}

/* Reads column `col` of the current row as a uuid. */
static inline bool row_uuid(cql_result *r, int col, uuid_t *out) {
    return cql_row_get_uuid(r, col, out->b) == CQL_OK;
}

/* The index of the result's column called `name`, or -1. A lightweight
 * transaction that is not applied answers with the row it found, whose
 * columns are named rather than placed. */
int cass_col_index(cql_result *r, const char *name);

/* Reads column `col` of the current row as a time in Unix ms (a timestamp
 * or a bigint of ms): CQL_OK only for a time within time_ms_valid(). What a
 * node sends is input: a value outside it is logged and read as absent. */
int cass_row_time_ms(cql_result *r, int col, int64_t *out);

static inline int64_t ticks_to_unix_us(uint64_t ticks) {
    return ((int64_t)ticks - (int64_t)UUID_TICKS_UNIX_EPOCH) / 10;
}

/* conversation_metadata and conversation_participants are immutable, and the
 * first writer must win: an inverted write timestamp makes the earliest
 * creation time the "latest" write. */
static inline int64_t first_writer_wins_ts(int64_t created_ms) { return (INT64_C(1) << 62) - created_ms * 1000; }

/* Decodes a message row of the MSG_COLS shape (cass_statements.c: Q_MSG_GET,
 * Q_MSG_TOP, Q_MSG_BEFORE, Q_MSG_AFTER). */
bool cass_decode_message(cql_result *r, const uuid_t *conv, message_t *m);

/* ------------------------------------------------------------------ operations (store_impl.h's contracts) */

void cass_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx);     /* cass_users.c */
void cass_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx);
void cass_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx);
void cass_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx);
void cass_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx);
void cass_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx);
void cass_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx);     /* cass_send.c */
void cass_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms, store_conv_cb cb,
                            void *ctx);
void cass_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx); /* cass_pages.c */
void cass_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx);
void cass_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx);

/* ------------------------------------------------------------------ start-up (cass_open.c, cass_schema.c) */

/* False, with the reason logged, for a keyspace name outside [A-Za-z0-9_]{1,48}. */
bool cass_keyspace_check(const char *keyspace);

/* A client connected to cfg's hosts (USE keyspace unless NULL), waited for
 * up to cfg->connect_wait_ms (30 s when 0); STORE_EUNAVAILABLE logged. */
int cass_connect(const store_cassandra_config_t *cfg, const char *keyspace, cql_client **out);

/* Creates the keyspace and tables (IF NOT EXISTS), blocking. */
int cass_create_schema(const store_cassandra_config_t *cfg);

#endif
