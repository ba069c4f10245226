/* lmdb_internal.h - what the files of src/store/lmdb/ share, and only they:
 * nothing outside this folder includes it. The backend's doors are
 * store_lmdb.h (opening it) and store.h through store_impl.h (its
 * operations table, lmdb_ops).
 *
 * The folder, one concern a file:
 *   lmdb_layout.c   tables, keys, value encodings, decoding rows as input
 *   lmdb_redo.c     redo records: every write of the writer, logged; replay
 *   lmdb_read.c     the reads: look-ups, pages of messages and conversations
 *   lmdb_apply.c    what each write (a send, a registration...) writes
 *   lmdb_commit.c   group commit: the queue, the writer and completer threads
 *   lmdb_space.c    disk space: reserving blocks, read-only on a full disk
 *   lmdb_base.c     base copies (base.mdb) and forgetting the log before them
 *   lmdb_recover.c  at open: the log's replay, an older layout's migration
 *   lmdb_open.c     open and close, the operations table
 *   wal.c/h         the write-ahead log (used by this backend only)
 *   datadir.c/h     the data folder: lock, state file, base copy
 *
 * The design of the whole backend follows; the files' own top comments say
 * what each owns.
 *
 * The embedded backend: LMDB in the same process.
 *
 * Layout. One LMDB environment with these named databases; the first three
 * mirror the seed design's Cassandra tables (its fourth,
 * conversations_by_user, is the recency index here), the rest are the
 * indexes that recency ordering, username look-up and idempotent sends need.
 * All integers are big-endian so that byte order is numeric order; "sk" is a
 * message id's sort key (uuid_sort_key: timestamp first).
 *
 *   users                     user_id                  -> username
 *   users_by_name             lower(username)          -> user_id
 *   messages_by_conversation  conv_id . sk(message_id) -> sender, receiver, created_ms, content
 *   conversation_metadata     conv_id                  -> created_ms, user_lo, user_hi
 *   conversations_by_recency  user_id . activity . conv_id -> conv_rec (the other user, activity,
 *                             created, last message: a list page is one range scan)
 *   idempotency               sender_id . key          -> created_ms, conv_id, message_id
 *   idempotency_by_time       created_ms . sender_id . key -> (empty)
 *
 * Invariants (kept by apply_send / apply_open, lmdb_apply.c, inside one write
 * transaction):
 *  - a conversation's activity is the greater of its creation time and its
 *    newest message's timestamp (100-ns ticks), so it never decreases; with
 *    ids the store assigns, it is the newest message's timestamp once there
 *    is one (which is what lets a send find the rows without metadata);
 *  - a conversation has metadata if and only if each of its two users has
 *    exactly one conversations_by_recency row for it, at its activity,
 *    holding its conv_rec; a conversation with messages has metadata.
 *
 * Why no conversations_by_user: a send reached each user's row in it and
 * then the recency row, two B-tree descents per user. A conversation's
 * activity is the same for both users and follows from its newest message,
 * which the send's own descent into messages_by_conversation finds, so the
 * recency rows are reached directly: three descents per send instead of
 * five (stores that still have the table lose it at open: lmdb_migrate()).
 *
 * Concurrency. Reads use their own read-only transaction on the caller's
 * thread (MDB_NOTLS: transactions are not tied to threads). All writes are
 * queued to one writer thread, which applies them to one open transaction
 * and commits it when the log is free to sync it ("Batches" below says when,
 * and how one write's failure spares the others): group commit. The map
 * is writable (MDB_WRITEMAP): pointers from reads must never be written
 * through.
 *
 * Durability. A B-tree commit writes scattered pages: a send touches five
 * rows in four trees, and an fsync'd LMDB commit of 60 sends wrote ~300
 * random 4 KiB pages (17-20 ms here, 3,800 sends/s). So a batch is made
 * durable by its *redo record* instead: every put and delete the batch made,
 * appended to the write-ahead log (wal.h), one sequential write. The LMDB
 * transaction is then committed without fsync (MDB_NOSYNC), which makes it
 * visible to readers, and the completer thread fdatasyncs the log before it
 * runs the batch's callbacks (see "Completion", lmdb_commit.c). The kernel writes the
 * pages back at its own pace, rewriting hot pages once instead of once per
 * commit.
 *
 * Recovery (datadir.h). Each batch's log seq is stored in store_meta in the
 * same transaction, so the database knows which records it holds. After a
 * process crash the kernel still has every page written: replay the log
 * past that seq. After an operating-system crash an unsynced data.mdb may be
 * torn (LMDB's pages and its meta page reach the disk in any order): copy
 * base.mdb, a consistent snapshot made at open and whenever the log has
 * grown by more than the base's size (64 MiB at least), over it, then
 * replay. Log segments older than the base are deleted. Until a store has
 * its first base, its commits are synced (a store from a version without
 * the log, or a new one). A bulk load is not logged: the base is written
 * again when it ends, and after a load that did not end the next open
 * writes one before anything else. Invariant: base.mdb plus the log's
 * records after the base's seq are every acknowledged write. A damaged log
 * is cut at its first torn or bad record (wal.h), a record that does not
 * follow the database's seq or does not parse included, and the store
 * starts with what is before it.
 */
#ifndef MESSENGER_STORE_LMDB_INTERNAL_H
#define MESSENGER_STORE_LMDB_INTERNAL_H

#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/lmdb/store_lmdb.h"
#include "store/lmdb/wal.h"
#include "store/store_impl.h"
#include "util/buf.h"

enum { DB_USERS, DB_USERS_BY_NAME, DB_MESSAGES, DB_CONVS_BY_USER, DB_CONV_META,
       DB_RECENCY, DB_IDEM, DB_IDEM_BY_TIME, DB_CREDENTIALS, DB_TOKENS, DB_TOKENS_BY_EXPIRY,
       DB_META, DB_COUNT };

/* DB_CONVS_BY_USER is no longer written: it stays so that the log of an
 * older version replays (record db numbers are these), and lmdb_migrate()
 * empties it after that. */
extern const char *const lmdb_db_names[DB_COUNT]; /* lmdb_layout.c */

#define MSG_HDR 40       /* sender 16, receiver 16, created_ms 8 */
#define CONV_REC_HDR 65  /* other 16, activity 8, created_ms 8, has_last 1, last_id 16, last_ms 8, then content */
#define META_LEN 40      /* created_ms 8, user_lo 16, user_hi 16 */
#define IDEM_LEN 40      /* created_ms 8, conv 16, message_id 16 */
#define TOKEN_LEN 24     /* expires_ms 8, user 16 */
#define PRUNE_PER_BATCH 64 /* expired rows deleted per commit, per kind */

typedef enum { OP_USER_CREATE, OP_SEND, OP_CONV_OPEN, OP_TOKEN_PUT, OP_TOKEN_DEL } op_kind_t;

/* One queued write. Inputs are copied in, results written back, and the
 * callback invoked after the commit. */
typedef struct op {
    struct op *next;
    /* The first op of a committed batch links it into the completer's
     * queue (no allocation there, so none can fail). */
    struct op *next_batch;
    uint64_t batch_seq;     /* the batch's log record, 0: none */
    op_kind_t kind;
    void *ctx;
    union { store_user_cb user; store_send_cb send; store_conv_cb conv; store_token_cb token; } cb;
    int err;
    bool replayed;
    user_t user;            /* OP_USER_CREATE: name and hash point into `text` */
    store_token_t token;    /* OP_TOKEN_PUT, OP_TOKEN_DEL */
    store_send_t send;      /* OP_SEND: strings point into `text` */
    message_t msg;          /* OP_SEND result; content points into `text` or `result_text` */
    conversation_t conv;    /* OP_CONV_OPEN */
    uuid_t open_a, open_b;
    int64_t open_at_ms;
    char *result_text;      /* owned: content of a replayed message */
    char text[];            /* owned copies of the input strings */
} op_t;

typedef struct lmdb_store {
    store_t base;
    MDB_env *env;
    MDB_dbi dbi[DB_COUNT];
    idgen_t *ids;
    size_t max_batch;
    bool bulk;              /* loading: no log, large batches */
    char *dir;
    int lock_fd;            /* datadir_lock() */
    /* Owned by the writer thread: */
    wal_t *wal;             /* not written in bulk mode */
    buf_t redo;             /* the redo records of the batch being applied */
    /* The batch's cursors on the two trees every send rewrites (NULL
     * outside a batch). A positioned LMDB cursor finds a key that lies on
     * its current leaf page without descending from the root, and a send
     * reads, then writes, neighbouring keys: a conversation's newest message
     * and the new one after it; a user's recency rows old and new. */
    MDB_cursor *cur_msgs, *cur_recency;
    /* The open batch: writes applied to `txn`, not yet committed. It grows
     * while the log is busy syncing the previous one (see writer_main,
     * lmdb_commit.c). */
    MDB_txn *txn;
    op_t *open_head, *open_tail;
    size_t open_n;
    int open_err;           /* a failure that dooms the whole open batch */
    int64_t open_apply_us;  /* time spent applying it, for the debug log */
    uint64_t seq;           /* the newest log record in the database */
    uint64_t base_bytes;    /* size of the last base copy */
    uint64_t logged_since_base; /* log bytes appended since the last base began */
    uint64_t rebase_log_bytes;
    uint64_t base_seq;      /* the seq the running base copy holds at least */
    bool base_running;
    bool base_hurried;      /* the running copy got the default I/O class back */
    pthread_t base_thread;
    /* Set by the base thread under mu: */
    bool base_done;
    int base_err;
    uint64_t base_done_bytes;
    /* The log and the database disagree (a commit failed after its record
     * was logged, or a log sync failed): writes are refused until a restart
     * sorts it out (lmdb_recover()). */
    atomic_bool failed;
    /* Disk space ("disk space", lmdb_space.c); the writer's, but for `ro`: */
    int data_fd;            /* data.mdb (LMDB's own descriptor); -1: no write-map, nothing to reserve */
    uint64_t psize, map_bytes;
    uint64_t reserved;      /* data.mdb's blocks are allocated up to here */
    uint64_t batch_end;     /* where the database ended when the open batch began */
    uint64_t batch_pages;   /* the most pages the open batch can add beyond batch_end */
    uint64_t depth;         /* the deepest tree when the open batch began, plus growth room */
    /* Read-only for lack of space: 0, or the RO_* reason (any thread reads it). */
    atomic_int ro;
    bool ro_state_pending;  /* the state file does not say "clean 0" yet */
    bool ro_base_pending;   /* no base copy yet (then commits stay synced) */
    int64_t ro_next_try_us;
    /* Committed batches waiting for their log sync and callbacks, oldest
     * first: the completer thread's queue. */
    pthread_mutex_t done_mu;
    pthread_cond_t done_cv;
    op_t *done_head, *done_tail; /* first ops of batches, linked by next_batch */
    /* No batch is queued for the completer and it is not syncing: the
     * writer commits its open batch as soon as it sees this. Set by the
     * completer (under done_mu, then it signals cv under mu), cleared by
     * hand_over. */
    atomic_bool log_idle;
    bool writer_exited;
    pthread_t completer;
    uint64_t synced;        /* completer: every record up to this is durable */
    pthread_t writer;
    pthread_mutex_t mu;     /* guards the queue and `closing` */
    pthread_cond_t cv;
    op_t *head, *tail;
    bool closing;
} lmdb_store_t;

/* The operations table (lmdb_open.c): a store_t is this backend's when its
 * ops are these. */
extern const store_ops_t lmdb_ops;

/* ------------------------------------------------------------------ helpers */

static inline MDB_val lmdb_val(const void *p, size_t n) { return (MDB_val){.mv_size = n, .mv_data = (void *)p}; }

/* LMDB's (or errno's) code as a STORE_E* code; MDB_SUCCESS is STORE_OK. */
static inline int lmdb_map_err(int rc) {
    switch (rc) {
    case MDB_SUCCESS: return STORE_OK;
    case MDB_NOTFOUND: return STORE_ENOTFOUND;
    case MDB_MAP_FULL: case ENOSPC: return STORE_EFULL;
    case ENOMEM: return STORE_ENOMEM;
    default: return STORE_EIO;
    }
}

/* ThreadSanitizer cannot see how LMDB hands a commit to its readers (atomics
 * and mutexes in uninstrumented code), while our own code writes values in
 * place in the map (MDB_WRITEMAP) on the writer thread and reads them on
 * others. These two say what LMDB guarantees: everything a committed
 * transaction wrote happens before every read transaction begun after it. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
static inline void tsan_published(lmdb_store_t *s) { __tsan_release(s->env); }
static inline void tsan_see_published(lmdb_store_t *s) { __tsan_acquire(s->env); }
#else
static inline void tsan_published(lmdb_store_t *s) { (void)s; }
static inline void tsan_see_published(lmdb_store_t *s) { (void)s; }
#endif

/* CLOCK_MONOTONIC in microseconds (lmdb_commit.c). */
int64_t lmdb_mono_us(void);

/* ------------------------------------------------------------------ layout (lmdb_layout.c) */

/* conversations_by_user's key (lmdb_migrate() reads it): user . conv */
MDB_val lmdb_conv_row_key(uint8_t out[32], const uuid_t *user, const uuid_t *conv);

/* conversations_by_recency's key: user . activity . conv */
MDB_val lmdb_recency_key(uint8_t out[40], const uuid_t *user, uint64_t activity, const uuid_t *conv);

/* The timestamp (100-ns ticks) of the message whose key is k. */
uint64_t lmdb_message_key_ticks(const MDB_val *k);

/* A conversation's activity (the invariant under "Layout" above): the
 * greater of its creation time and its newest message's timestamp (0: no
 * message). */
uint64_t lmdb_conv_activity(int64_t created_ms, uint64_t newest_ticks);

/* Writes a conv_rec (see lmdb_decode_conv_rec) into p. */
void lmdb_fill_conv_rec(uint8_t *p, const uuid_t *other, uint64_t activity, int64_t created_ms,
                        const message_t *msg);

/* store_meta's "wal_seq": the newest log record the database holds. _put
 * writes it in txn (not logged: the record it names is the log's own);
 * _get reads it (0 when absent) and checks it like any row. */
int lmdb_seq_put(lmdb_store_t *s, MDB_txn *txn, uint64_t seq);
int lmdb_seq_get(lmdb_store_t *s, MDB_txn *txn, uint64_t *seq);

/* ------------------------------------------------------------------ decoding (lmdb_layout.c)
 *
 * Values read back from the database are input, like a request: every
 * time, length and id is checked where it is decoded, and a row that fails
 * is logged and then skipped (in a page), answered STORE_EIO (a single
 * read, a write that needs it: nothing is written then), or taken as absent
 * where a fresh write replaces it (an idempotency row, a token). Times must
 * lie in [2000, 2200) (Unix ms; ids' timestamps likewise in 100-ns ticks);
 * lengths come from LMDB's own value sizes, each checked against the fixed
 * part of its row before anything is read. */
#define TIME_MIN_MS 946684800000LL  /* 2000-01-01T00:00:00Z */
#define TIME_MAX_MS 7258118400000LL /* 2200-01-01T00:00:00Z */
#define SEQ_MAX (1ull << 48)        /* more batches than a log ever holds: no wrap of seq + 1 */
#define HASH_MAX 4096               /* an encoded password hash (about 100 bytes) */

/* A bad row met by a write before it wrote anything: refused like a missing
 * user (the batch goes on), answered STORE_EIO (batch_apply, lmdb_commit.c).
 * Never leaves the backend. */
#define STORE_EBADROW (-100)

/* Whether a time (Unix ms), or an id's timestamp (100-ns ticks), lies in
 * [2000, 2200). */
bool lmdb_time_ok(int64_t ms);
bool lmdb_ticks_ok(uint64_t ticks);

/* Logs that a row of `table` is bad, and why; returns STORE_EIO. */
int lmdb_bad_row(const char *table, const char *why);

/* Decodes a messages_by_conversation row: key conv . sort key, value
 * sender, receiver, created_ms, content (the rest). */
int lmdb_decode_message(const MDB_val *k, const MDB_val *v, message_t *m);

/* Fills c from a conversations_by_recency row: key user . activity . conv,
 * value a conv_rec (see lmdb_fill_conv_rec). */
int lmdb_decode_conv_rec(const MDB_val *k, const MDB_val *v, conversation_t *c);

/* Decodes conversation_metadata's value: created_ms, user_lo, user_hi. */
int lmdb_decode_meta(const MDB_val *v, int64_t *created_ms, uuid_t *lo, uuid_t *hi);

/* ------------------------------------------------------------------ redo records (lmdb_redo.c)
 *
 * Every write of the writer goes through lmdb_db_put/lmdb_db_del (or, for
 * space that MDB_RESERVE handed out, lmdb_redo_log once it is filled), so
 * nothing reaches the database that the log does not hold. None of them
 * logs in bulk mode. */
enum { REDO_PUT = 1, REDO_DEL = 2 };

/* Appends a put (v: the value) or a delete (v: NULL) to the batch's record. */
void lmdb_redo_log(lmdb_store_t *s, int op, int db, const MDB_val *k, const MDB_val *v);

/* mdb_put and mdb_del on table db, logged when they succeed (a put with
 * MDB_RESERVE is logged by the caller once it has filled the value). */
int lmdb_db_put(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k, MDB_val *v, unsigned flags);
int lmdb_db_del(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k);

/* Deletes the item c is on, whose key is k (logged first: the delete may
 * free k's bytes when they point into the map). */
int lmdb_cursor_del(lmdb_store_t *s, MDB_cursor *c, int db, const MDB_val *k);

/* What lmdb_redo_apply returns for a record that does not parse (a STORE_E*
 * code is negative): the log's CRC matched, so it was written that way (a
 * bug, or a forged record), and none of it may reach the database. */
#define REDO_MALFORMED 1

/* Applies one redo record (read back from the log: checked like input, every
 * length against what is left of the record before it is used). Returns
 * STORE_OK, REDO_MALFORMED, or a STORE_E* code from LMDB. */
int lmdb_redo_apply(lmdb_store_t *s, MDB_txn *txn, const uint8_t *p, size_t len);

/* Reserves room to replay one redo record (wal recovery, before the writer
 * runs): a put or delete's worst case per entry. */
int lmdb_replay_space(lmdb_store_t *s, const uint8_t *p, size_t len);

/* ------------------------------------------------------------------ reads (lmdb_read.c) */

/* Positions c (on messages_by_conversation) on conv's newest message.
 * Returns MDB_NOTFOUND when conv has none. */
int lmdb_newest_message(MDB_cursor *c, const uuid_t *conv, MDB_val *k, MDB_val *v);

/* The read operations (contracts: their wrappers in store.h). */
void lmdb_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx);
void lmdb_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx);
void lmdb_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx);
void lmdb_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx);
void lmdb_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx);
void lmdb_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx);
void lmdb_health(store_t *base, store_health_cb cb, void *ctx);

/* ------------------------------------------------------------------ writes (lmdb_apply.c) */

/* The write operations (contracts: their wrappers in store.h): each copies
 * its input into an op and queues it (lmdb_enqueue). */
void lmdb_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx);
void lmdb_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx);
void lmdb_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx);
void lmdb_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx);
void lmdb_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms,
                            store_conv_cb cb, void *ctx);

/* The writer: applies op in txn (the open batch's) at time `now`, filling
 * its result. STORE_ENOTFOUND, STORE_ECONFLICT and STORE_EBADROW are
 * refusals made before anything was written; any other error may leave a
 * write half-done (see "Batches", lmdb_commit.c). */
int lmdb_apply_op(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now);

/* Expires a bounded number of idempotency keys and login tokens inside the
 * batch's transaction. */
int lmdb_prune(lmdb_store_t *s, MDB_txn *txn, int64_t now);

/* ------------------------------------------------------------------ group commit (lmdb_commit.c) */

/* Queues op for the writer, which owns it from then on; once the store is
 * closing, answers it STORE_EUNAVAILABLE at once instead. Any thread. */
void lmdb_enqueue(lmdb_store_t *s, op_t *op);

/* Starts the completer and the writer, with their locks. Every log record
 * up to s->seq must be durable (lmdb_recover synced them). STORE_OK, or
 * STORE_EIO with neither running and no lock left. */
int lmdb_start_threads(lmdb_store_t *s);

/* Closing: the writer drains the queue and exits, then the completer syncs
 * and runs the last callbacks, then a base copy still running ends; each is
 * joined, and the locks are destroyed. */
void lmdb_stop_threads(lmdb_store_t *s);

/* ------------------------------------------------------------------ disk space (lmdb_space.c) */

enum { RO_NONE, RO_SPACE, RO_LOG, RO_STATE, RO_BASE, RO_COUNT };

/* Whether a negative errno means a full disk (or quota). */
bool lmdb_space_errno(int neg_errno);

/* The most pages one put or delete of a value of vlen bytes can add beyond
 * the end of the database: a copy of every page on its path (copy on
 * write), a split at every level and a new root, or a sibling touched at
 * every level by a rebalance, and the value's overflow pages. */
uint64_t lmdb_write_pages(const lmdb_store_t *s, size_t vlen);

/* The most pages one queued write can add: none of them writes more than
 * eight rows (a send: message, metadata, two recency rows moved, two
 * idempotency rows), each at most its input plus a fixed header. */
uint64_t lmdb_op_pages(const lmdb_store_t *s, const op_t *op);

/* The end of the database: its last committed page. */
uint64_t lmdb_db_end(const lmdb_store_t *s);

/* Allocates data.mdb's blocks up to `end`, and RESERVE_AHEAD beyond when the
 * disk has it. STORE_OK, STORE_EFULL (no space) or STORE_EIO. */
int lmdb_reserve(lmdb_store_t *s, uint64_t end);

/* A new batch: where the database ends, how deep its trees are. */
void lmdb_batch_space_begin(lmdb_store_t *s);

/* Reserves room for `pages` more in the open batch (with its commit's own
 * pages: the free list and meta page, growing with the batch). */
int lmdb_batch_space_add(lmdb_store_t *s, uint64_t pages);

/* Turns the store read-only for lack of space (reason RO_*). */
void lmdb_go_read_only(lmdb_store_t *s, int why);

/* The writer, while read-only and between batches: takes writes again when
 * the disk has room for them, once what is owed is written. */
void lmdb_ro_try_leave(lmdb_store_t *s);

/* Sets up reserving after the environment is open: its page size, map
 * size, deepest tree, data.mdb's descriptor (with write-map only); and
 * lock.mdb, which LMDB maps too (the readers' table) and makes sparse as
 * well: allocated whole (best effort: its first page, the one in use, was
 * written when it was made). */
void lmdb_space_init(lmdb_store_t *s);

/* Whether the file system of dir can allocate a file's blocks without
 * writing them, which write-map needs to be safe on a full disk
 * (lmdb_space.c). A full disk answers ENOSPC: it can, just not now. */
bool lmdb_can_reserve(const char *dir);

/* ------------------------------------------------------------------ base copies (lmdb_base.c) */

/* The writer's side of base copies: starts one when the log has grown past
 * the last base, and, when one has finished, forgets the log before it.
 * Only the writer starts and joins base threads. */
void lmdb_base_tend(lmdb_store_t *s);

/* Makes a base copy now, on this thread, and forgets the log before it. */
int lmdb_base_now(lmdb_store_t *s);

/* ------------------------------------------------------------------ at open (lmdb_recover.c) */

/* Brings the database up to the end of the log. Opens the log (s->wal) and
 * sets s->seq; on return every record up to s->seq is durable. */
int lmdb_recover(lmdb_store_t *s);

/* Stores written before the recency rows were the only per-user rows also
 * have conversations_by_user (user . conv -> conv_rec), and the oldest of
 * them have empty recency values: fill those from it, then empty it. It runs
 * at every open, after recovery (an older version's log may put rows in it),
 * and is not logged: should the machine go down before data.mdb is written
 * back, recovery restores the base, replays, and this runs again. */
int lmdb_migrate(lmdb_store_t *s);

#endif
