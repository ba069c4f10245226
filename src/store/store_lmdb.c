/* store_lmdb.c - the embedded backend: LMDB in the same process.
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
 * Invariants (kept by apply_send / apply_open inside one write transaction):
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
 * five (stores that still have the table lose it at open: migrate()).
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
 * runs the batch's callbacks (see "completion" below). The kernel writes the
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
#include "store/lmdb/store_lmdb.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "store/lmdb/datadir.h"
#include "store/store_impl.h"
#include "store/lmdb/wal.h"
#include "util/buf.h"
#include "util/bytes.h"
#include "util/log.h"
#include "util/thread.h"
#include "util/timefmt.h"

enum { DB_USERS, DB_USERS_BY_NAME, DB_MESSAGES, DB_CONVS_BY_USER, DB_CONV_META,
       DB_RECENCY, DB_IDEM, DB_IDEM_BY_TIME, DB_CREDENTIALS, DB_TOKENS, DB_TOKENS_BY_EXPIRY,
       DB_META, DB_COUNT };

/* DB_CONVS_BY_USER is no longer written: it stays so that the log of an
 * older version replays (record db numbers are these), and migrate()
 * empties it after that. */
static const char *const DB_NAMES[DB_COUNT] = {
    "users", "users_by_name", "messages_by_conversation", "conversations_by_user",
    "conversation_metadata", "conversations_by_recency", "idempotency", "idempotency_by_time",
    "credentials", "auth_tokens", "auth_tokens_by_expiry",
    "store_meta", /* "wal_seq" -> the newest log record applied (be64) */
};

static const char WAL_SEQ_KEY[] = "wal_seq";
/* The base copy's thread, and LMDB's copy thread that it starts. */
#define BASE_THREAD_NAME "lmdb-base"
/* A base copy is made when the log has grown past the last base's size
 * (so copying costs at most as much I/O as logging), and at least this. */
#define REBASE_LOG_BYTES (64ull << 20)

#define MSG_HDR 40       /* sender 16, receiver 16, created_ms 8 */
#define CONV_REC_HDR 65  /* other 16, activity 8, created_ms 8, has_last 1, last_id 16, last_ms 8, then content */
#define META_LEN 40      /* created_ms 8, user_lo 16, user_hi 16 */
#define IDEM_LEN 40      /* created_ms 8, conv 16, message_id 16 */
#define MAX_PAGE 100
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
     * while the log is busy syncing the previous one (see writer_main). */
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
     * sorts it out (recover()). */
    atomic_bool failed;
    /* Disk space (see "disk space"); the writer's, but for `ro`: */
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

static const store_ops_t LMDB_OPS;

/* ------------------------------------------------------------------ util */

static int map_err(int rc) {
    switch (rc) {
    case MDB_SUCCESS: return STORE_OK;
    case MDB_NOTFOUND: return STORE_ENOTFOUND;
    case MDB_MAP_FULL: case ENOSPC: return STORE_EFULL;
    case ENOMEM: return STORE_ENOMEM;
    default: return STORE_EIO;
    }
}

static MDB_val val(const void *p, size_t n) { return (MDB_val){.mv_size = n, .mv_data = (void *)p}; }

/* conversations_by_user's key (migrate() reads it): user . conv */
static MDB_val conv_row_key(uint8_t out[32], const uuid_t *user, const uuid_t *conv) {
    memcpy(out, user->b, 16);
    memcpy(out + 16, conv->b, 16);
    return val(out, 32);
}

/* conversations_by_recency's key: user . activity . conv */
static MDB_val recency_key(uint8_t out[40], const uuid_t *user, uint64_t activity, const uuid_t *conv) {
    memcpy(out, user->b, 16);
    be64_put(out + 16, activity);
    memcpy(out + 24, conv->b, 16);
    return val(out, 40);
}

/* ------------------------------------------------------------------ redo records
 *
 * A batch's redo record is every put and delete it made, in order, each
 *   op u8 | db u8 | key length u16 | value length u32 | key | value
 * (big-endian). Replayed in order onto the database the batch started from,
 * they give the database it committed. A put overwrites and a delete of a
 * missing key does nothing, so replaying onto a database that already holds
 * some of them gives the same result as well.
 *
 * Every write of the writer goes through db_put/db_del (or, for space that
 * MDB_RESERVE handed out, redo_log once it is filled), so nothing reaches the
 * database that the log does not hold.
 */
enum { REDO_PUT = 1, REDO_DEL = 2 };
#define REDO_HDR 8

static void redo_log(lmdb_store_t *s, int op, int db, const MDB_val *k, const MDB_val *v) {
    if (s->bulk) return;
    size_t vlen = v ? v->mv_size : 0;
    uint8_t h[REDO_HDR] = {(uint8_t)op, (uint8_t)db, (uint8_t)(k->mv_size >> 8), (uint8_t)k->mv_size,
                           (uint8_t)(vlen >> 24), (uint8_t)(vlen >> 16), (uint8_t)(vlen >> 8), (uint8_t)vlen};
    buf_append(&s->redo, h, REDO_HDR);
    buf_append(&s->redo, k->mv_data, k->mv_size);
    if (vlen) buf_append(&s->redo, v->mv_data, vlen);
}

static int db_put(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k, MDB_val *v, unsigned flags) {
    int rc = mdb_put(txn, s->dbi[db], k, v, flags);
    if (!rc && !(flags & MDB_RESERVE)) redo_log(s, REDO_PUT, db, k, v);
    return rc;
}

static int db_del(lmdb_store_t *s, MDB_txn *txn, int db, MDB_val *k) {
    int rc = mdb_del(txn, s->dbi[db], k, NULL);
    if (!rc) redo_log(s, REDO_DEL, db, k, NULL);
    return rc;
}

/* Deletes the item c is on, whose key is k (logged first: the delete may
 * free k's bytes when they point into the map). */
static int cursor_del(lmdb_store_t *s, MDB_cursor *c, int db, const MDB_val *k) {
    redo_log(s, REDO_DEL, db, k, NULL);
    return mdb_cursor_del(c, 0);
}

/* What redo_apply returns for a record that does not parse (a STORE_E* code
 * is negative): the log's CRC matched, so it was written that way (a bug,
 * or a forged record), and none of it may reach the database. */
#define REDO_MALFORMED 1

/* Applies one redo record (read back from the log: checked like input, every
 * length against what is left of the record before it is used). Returns
 * STORE_OK, REDO_MALFORMED, or a STORE_E* code from LMDB. */
static int redo_apply(lmdb_store_t *s, MDB_txn *txn, const uint8_t *p, size_t len) {
    while (len) {
        if (len < REDO_HDR) return REDO_MALFORMED;
        int op = p[0], db = p[1];
        size_t klen = (size_t)p[2] << 8 | p[3];
        size_t vlen = (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
        if ((op != REDO_PUT && op != REDO_DEL) || db >= DB_META || klen == 0 ||
            len - REDO_HDR < klen || len - REDO_HDR - klen < vlen || (op == REDO_DEL && vlen))
            return REDO_MALFORMED;
        MDB_val k = val(p + REDO_HDR, klen), v = val(p + REDO_HDR + klen, vlen);
        int rc = op == REDO_PUT ? mdb_put(txn, s->dbi[db], &k, &v, 0) : mdb_del(txn, s->dbi[db], &k, NULL);
        if (rc == MDB_BAD_VALSIZE) return REDO_MALFORMED;
        if (rc && rc != MDB_NOTFOUND) return map_err(rc);
        p += REDO_HDR + klen + vlen;
        len -= REDO_HDR + klen + vlen;
    }
    return STORE_OK;
}

static int seq_put(lmdb_store_t *s, MDB_txn *txn, uint64_t seq) {
    uint8_t b[8];
    be64_put(b, seq);
    MDB_val k = val(WAL_SEQ_KEY, sizeof WAL_SEQ_KEY - 1), v = val(b, 8);
    return map_err(mdb_put(txn, s->dbi[DB_META], &k, &v, 0));
}

/* ------------------------------------------------------------------ decoding
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
 * user (the batch goes on), answered STORE_EIO. Never leaves this file. */
#define STORE_EBADROW (-100)

static bool time_ok(int64_t ms) {
    return ms >= TIME_MIN_MS && ms < TIME_MAX_MS;
}

static bool ticks_ok(uint64_t ticks) {
    return ticks >= unix_ms_to_ticks(TIME_MIN_MS) && ticks < unix_ms_to_ticks(TIME_MAX_MS);
}

static bool message_id_ok(const uuid_t *id) {
    return uuid_version(id) == 1 && ticks_ok(uuid_time_ticks(id));
}

static int bad_row(const char *table, const char *why) {
    log_error("store", "%s: a bad row (%s): not used", table, why);
    return STORE_EIO;
}

static int seq_get(lmdb_store_t *s, MDB_txn *txn, uint64_t *seq) {
    MDB_val k = val(WAL_SEQ_KEY, sizeof WAL_SEQ_KEY - 1), v;
    int rc = mdb_get(txn, s->dbi[DB_META], &k, &v);
    *seq = 0;
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return map_err(rc);
    if (v.mv_size != 8) return bad_row("store_meta", "wal_seq is not 8 bytes");
    *seq = be64_get(v.mv_data);
    if (*seq >= SEQ_MAX) return bad_row("store_meta", "wal_seq out of range");
    return STORE_OK;
}

/* Decodes a messages_by_conversation row: key conv . sort key, value
 * sender, receiver, created_ms, content (the rest). */
static int decode_message(const MDB_val *k, const MDB_val *v, message_t *m) {
    const char *t = "messages_by_conversation";
    if (k->mv_size != 32 || v->mv_size < MSG_HDR) return bad_row(t, "too short");
    const uint8_t *kp = k->mv_data, *vp = v->mv_data;
    if (!ticks_ok(be64_get(kp + 16))) return bad_row(t, "a message id's time out of range");
    memcpy(m->conversation_id.b, kp, 16);
    uuid_from_sort_key(&m->id, kp + 16);
    memcpy(m->sender_id.b, vp, 16);
    memcpy(m->receiver_id.b, vp + 16, 16);
    m->created_at_ms = (int64_t)be64_get(vp + 32);
    m->content = (const char *)vp + MSG_HDR;
    m->content_len = v->mv_size - MSG_HDR;
    if (!time_ok(m->created_at_ms)) return bad_row(t, "created_at out of range");
    if (uuid_is_nil(&m->sender_id) || uuid_is_nil(&m->receiver_id)) return bad_row(t, "a nil user");
    return STORE_OK;
}

/* Fills c from a conversations_by_recency row: key user . activity . conv,
 * value a conv_rec (see fill_conv_rec). */
static int decode_conv_rec(const MDB_val *k, const MDB_val *v, conversation_t *c) {
    const char *t = "conversations_by_recency";
    if (k->mv_size != 40 || v->mv_size < CONV_REC_HDR) return bad_row(t, "too short");
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
    if (p[32] > 1) return bad_row(t, "has_last is neither 0 nor 1");
    if (c->activity != be64_get(kp + 16)) return bad_row(t, "its key's activity is not its value's");
    if (!ticks_ok(c->activity)) return bad_row(t, "activity out of range");
    if (!time_ok(c->created_at_ms) || !time_ok(c->last_message_at_ms)) return bad_row(t, "a time out of range");
    if (c->has_last_message && !message_id_ok(&c->last_message_id)) return bad_row(t, "a bad last message id");
    if (!c->has_last_message && c->last_message_len) return bad_row(t, "content without a message");
    if (uuid_is_nil(&c->user2_id)) return bad_row(t, "a nil user");
    return STORE_OK;
}

/* Decodes conversation_metadata's value: created_ms, user_lo, user_hi. */
static int decode_meta(const MDB_val *v, int64_t *created_ms, uuid_t *lo, uuid_t *hi) {
    const char *t = "conversation_metadata";
    if (v->mv_size < META_LEN) return bad_row(t, "too short");
    const uint8_t *p = v->mv_data;
    *created_ms = (int64_t)be64_get(p);
    if (lo) memcpy(lo->b, p + 8, 16);
    if (hi) memcpy(hi->b, p + 24, 16);
    if (!time_ok(*created_ms)) return bad_row(t, "created_at out of range");
    if (lo && hi && (uuid_is_nil(lo) || uuid_is_nil(hi))) return bad_row(t, "a nil user");
    return STORE_OK;
}

/* ------------------------------------------------------------------ reads */

/* ThreadSanitizer cannot see how LMDB hands a commit to its readers (atomics
 * and mutexes in uninstrumented code), while our own code writes values in
 * place in the map (MDB_WRITEMAP) on the writer thread and reads them on
 * others. These two say what LMDB guarantees: everything a committed
 * transaction wrote happens before every read transaction begun after it. */
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
static void tsan_published(lmdb_store_t *s) { __tsan_release(s->env); }
static void tsan_see_published(lmdb_store_t *s) { __tsan_acquire(s->env); }
#else
static void tsan_published(lmdb_store_t *s) { (void)s; }
static void tsan_see_published(lmdb_store_t *s) { (void)s; }
#endif

/* mdb_txn_commit, for the writer's transactions that readers will see. */
static int commit(lmdb_store_t *s, MDB_txn *txn) {
    tsan_published(s);
    return mdb_txn_commit(txn);
}

static int read_begin(lmdb_store_t *s, MDB_txn **txn) {
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) log_error("store", "lmdb read txn: %s", mdb_strerror(rc));
    else tsan_see_published(s);
    return map_err(rc);
}

/* Reads u->id's name and, with want_hash, its password hash (NULL when it
 * has none) in txn; the pointers are into the map. */
static int user_read(lmdb_store_t *s, MDB_txn *txn, user_t *u, bool want_hash) {
    MDB_val k = val(u->id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS], &k, &v);
    if (rc) return map_err(rc);
    if (v.mv_size == 0 || v.mv_size > USERNAME_MAX * 4) return bad_row("users", "a name of a bad length");
    u->name = v.mv_data;
    u->name_len = v.mv_size;
    u->password_hash = NULL;
    u->password_hash_len = 0;
    if (!want_hash) return STORE_OK;
    rc = mdb_get(txn, s->dbi[DB_CREDENTIALS], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return map_err(rc);
    if (v.mv_size == 0 || v.mv_size > HASH_MAX) return bad_row("credentials", "a hash of a bad length");
    u->password_hash = v.mv_data;
    u->password_hash_len = v.mv_size;
    return STORE_OK;
}

static void lmdb_user_get(store_t *base, const uuid_t *id, store_user_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    user_t u = {.id = *id};
    err = user_read(s, txn, &u, false);
    cb(ctx, err, err ? NULL : &u);
    mdb_txn_abort(txn);
}

static void lmdb_user_find(store_t *base, const char *name, size_t len, store_user_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    char folded[USERNAME_MAX * 4];
    if (len == 0 || len > sizeof folded) { cb(ctx, STORE_ENOTFOUND, NULL); return; }
    username_fold(name, len, folded);
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_val k = val(folded, len), idv;
    int rc = mdb_get(txn, s->dbi[DB_USERS_BY_NAME], &k, &idv);
    user_t u;
    if (rc) {
        err = map_err(rc);
    } else if (idv.mv_size != 16) {
        err = bad_row("users_by_name", "an id that is not 16 bytes");
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
static void lmdb_token_get(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_val k = val(hash, STORE_TOKEN_HASH_LEN), v;
    int rc = mdb_get(txn, s->dbi[DB_TOKENS], &k, &v);
    store_token_t t;
    if (rc == 0 && v.mv_size != TOKEN_LEN) {
        bad_row("auth_tokens", "not 24 bytes");
        rc = MDB_NOTFOUND;
    } else if (rc == 0) {
        memcpy(t.hash, hash, STORE_TOKEN_HASH_LEN);
        t.expires_at_ms = (int64_t)be64_get(v.mv_data);
        memcpy(t.user_id.b, (const uint8_t *)v.mv_data + 8, 16);
        if (!time_ok(t.expires_at_ms) || uuid_is_nil(&t.user_id)) {
            bad_row("auth_tokens", "an expiry out of range or a nil user");
            rc = MDB_NOTFOUND;
        } else if (t.expires_at_ms <= time_now_ms()) {
            rc = MDB_NOTFOUND; /* expired rows are purged by the writer; until then they are absent */
        }
    }
    mdb_txn_abort(txn);
    if (rc) cb(ctx, map_err(rc), NULL);
    else cb(ctx, STORE_OK, &t);
}

static bool has_prefix(const MDB_val *k, const uint8_t *prefix, size_t n) {
    return k->mv_size >= n && memcmp(k->mv_data, prefix, n) == 0;
}

/* Positions cursor c on the last key that is strictly below `key` (of
 * length n). Returns MDB_NOTFOUND when there is none. */
static int seek_below(MDB_cursor *c, const uint8_t *key, size_t n, MDB_val *k, MDB_val *v) {
    *k = val(key, n);
    int rc = mdb_cursor_get(c, k, v, MDB_SET_RANGE); /* first key >= key */
    if (rc == MDB_NOTFOUND) return mdb_cursor_get(c, k, v, MDB_LAST);
    if (rc) return rc;
    return mdb_cursor_get(c, k, v, MDB_PREV);
}

/* Positions c (on messages_by_conversation) on conv's newest message.
 * Returns MDB_NOTFOUND when conv has none. */
static int newest_message(MDB_cursor *c, const uuid_t *conv, MDB_val *k, MDB_val *v) {
    uint8_t key[32];
    memcpy(key, conv->b, 16);
    memset(key + 16, 0xff, 16);
    int rc = seek_below(c, key, sizeof key, k, v);
    if (rc == 0 && !(k->mv_size == 32 && v->mv_size >= MSG_HDR && has_prefix(k, conv->b, 16))) rc = MDB_NOTFOUND;
    return rc;
}

/* The timestamp (100-ns ticks) of the message whose key is k. */
static uint64_t message_key_ticks(const MDB_val *k) {
    uuid_t id;
    uuid_from_sort_key(&id, (const uint8_t *)k->mv_data + 16);
    return uuid_time_ticks(&id);
}

/* A conversation's activity (the invariant at the top): the greater of its
 * creation time and its newest message's timestamp (0: no message). */
static uint64_t conv_activity(int64_t created_ms, uint64_t newest_ticks) {
    uint64_t created = unix_ms_to_ticks(created_ms);
    return newest_ticks > created ? newest_ticks : created;
}

/* Reads conversation `id` whole, as its metadata and newest message give it
 * (c: a cursor on messages_by_conversation). Pointers in *out point into
 * the map: valid while txn lives. */
static int conversation_read(lmdb_store_t *s, MDB_txn *txn, MDB_cursor *c, const uuid_t *id, conversation_t *out) {
    MDB_val k = val(id->b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc) return map_err(rc);
    memset(out, 0, sizeof *out);
    out->id = *id;
    int err = decode_meta(&v, &out->created_at_ms, &out->user1_id, &out->user2_id);
    if (err) return err;
    out->activity = conv_activity(out->created_at_ms, 0);
    out->last_message_at_ms = out->created_at_ms;
    rc = newest_message(c, id, &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return map_err(rc);
    message_t m;
    if ((err = decode_message(&k, &v, &m))) return err;
    out->activity = conv_activity(out->created_at_ms, uuid_time_ticks(&m.id));
    out->has_last_message = true;
    out->last_message_id = m.id;
    out->last_message_at_ms = m.created_at_ms;
    out->last_message_content = m.content;
    out->last_message_len = m.content_len;
    return STORE_OK;
}

static void lmdb_messages_list(store_t *base, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) {
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
    if (rc) { err = map_err(rc); goto done; }

    uint8_t key[32];
    memcpy(key, q->conversation_id.b, 16);
    if (q->has_after) {
        uuid_sort_key(&q->after, key + 16);
        k = val(key, 32);
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc == 0 && k.mv_size == 32 && memcmp(k.mv_data, key, 32) == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    } else {
        if (q->has_before) uuid_sort_key(&q->before, key + 16);
        else memset(key + 16, 0xff, 16);
        rc = seek_below(c, key, 32, &k, &v);
    }
    MDB_cursor_op step = q->has_after ? MDB_NEXT : MDB_PREV;
    while (rc == 0 && has_prefix(&k, key, 16)) { /* decode_message checks the sizes */
        if (page.count == (size_t)limit) { page.more = true; break; }
        if (decode_message(&k, &v, &items[page.count]) == STORE_OK) page.count++; /* a bad row is skipped */
        rc = mdb_cursor_get(c, &k, &v, step);
    }
    if (rc && rc != MDB_NOTFOUND) { err = map_err(rc); goto done; }
    /* A conversation with messages exists (sends create it): only an empty
     * page needs the look-up that tells "no such conversation" apart. One
     * B-tree descent fewer on every other page read. */
    if (!page.count) {
        k = val(q->conversation_id.b, 16);
        rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
        if (rc) { err = map_err(rc); goto done; }
    }
    err = STORE_OK;
done:
    if (c) mdb_cursor_close(c);
    cb(ctx, err, err ? NULL : &page);
    mdb_txn_abort(txn);
}

static void lmdb_conversations_list(store_t *base, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    MDB_cursor *c = NULL;
    conversation_t items[MAX_PAGE];
    store_conv_page_t page = {.items = items};
    int limit = q->limit < 1 ? 1 : q->limit > MAX_PAGE ? MAX_PAGE : q->limit;

    MDB_val k = val(q->user_id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS], &k, &v);
    if (rc) { err = map_err(rc); goto done; }

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
        if (rc) { err = map_err(rc); goto done; }
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
    if (rc) { err = map_err(rc); goto done; }
    rc = seek_below(c, key, 40, &k, &v);
    while (rc == 0 && has_prefix(&k, key, 16) && k.mv_size == 40) {
        if (page.count == (size_t)limit) { page.more = true; break; }
        if (decode_conv_rec(&k, &v, &items[page.count]) == STORE_OK) page.count++; /* a bad row is skipped */
        rc = mdb_cursor_get(c, &k, &v, MDB_PREV);
    }
    if (rc && rc != MDB_NOTFOUND) { err = map_err(rc); goto done; }
    err = STORE_OK;
done:
    if (c) mdb_cursor_close(c);
    cb(ctx, err, err ? NULL : &page);
    mdb_txn_abort(txn);
}

static void lmdb_conversation_get(store_t *base, const uuid_t *id, store_conv_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, NULL); return; }
    conversation_t conv;
    MDB_cursor *c;
    err = map_err(mdb_cursor_open(txn, s->dbi[DB_MESSAGES], &c));
    if (!err) {
        err = conversation_read(s, txn, c, id, &conv);
        mdb_cursor_close(c);
    }
    cb(ctx, err, err ? NULL : &conv);
    mdb_txn_abort(txn);
}

static void lmdb_health(store_t *base, store_health_cb cb, void *ctx) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    MDB_txn *txn;
    int err = read_begin(s, &txn);
    if (err) { cb(ctx, err, "lmdb read transaction failed"); return; }
    mdb_txn_abort(txn);
    cb(ctx, STORE_OK, "lmdb");
}

/* ------------------------------------------------------------------ writes */

static void enqueue(lmdb_store_t *s, op_t *op) {
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        op->err = STORE_EUNAVAILABLE;
        switch (op->kind) {
        case OP_USER_CREATE: op->cb.user(op->ctx, op->err, NULL); break;
        case OP_SEND: op->cb.send(op->ctx, op->err, NULL, false); break;
        case OP_CONV_OPEN: op->cb.conv(op->ctx, op->err, NULL); break;
        case OP_TOKEN_PUT: case OP_TOKEN_DEL: op->cb.token(op->ctx, op->err, NULL); break;
        }
        free(op);
        return;
    }
    op->next = NULL;
    if (s->tail) s->tail->next = op; else s->head = op;
    s->tail = op;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void lmdb_user_create(store_t *base, const user_t *u, store_user_cb cb, void *ctx) {
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
    enqueue((lmdb_store_t *)base, op);
}

static void token_enqueue(lmdb_store_t *s, op_kind_t kind, const store_token_t *t, store_token_cb cb, void *ctx) {
    op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->kind = kind;
    op->cb.token = cb;
    op->ctx = ctx;
    op->token = *t;
    enqueue(s, op);
}

static void lmdb_token_put(store_t *base, const store_token_t *t, store_token_cb cb, void *ctx) {
    token_enqueue((lmdb_store_t *)base, OP_TOKEN_PUT, t, cb, ctx);
}

static void lmdb_token_delete(store_t *base, const uint8_t *hash, store_token_cb cb, void *ctx) {
    store_token_t t;
    memset(&t, 0, sizeof t);
    memcpy(t.hash, hash, STORE_TOKEN_HASH_LEN);
    token_enqueue((lmdb_store_t *)base, OP_TOKEN_DEL, &t, cb, ctx);
}

static void lmdb_message_send(store_t *base, const store_send_t *r, store_send_cb cb, void *ctx) {
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
    enqueue((lmdb_store_t *)base, op);
}

static void lmdb_conversation_open(store_t *base, const uuid_t *a, const uuid_t *b, int64_t at_ms,
                                   store_conv_cb cb, void *ctx) {
    op_t *op = calloc(1, sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, NULL); return; }
    op->kind = OP_CONV_OPEN;
    op->cb.conv = cb;
    op->ctx = ctx;
    op->open_a = *a;
    op->open_b = *b;
    op->open_at_ms = at_ms;
    enqueue((lmdb_store_t *)base, op);
}

static int apply_user_create(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    char folded[USERNAME_MAX * 4];
    if (op->user.name_len == 0 || op->user.name_len > sizeof folded) return STORE_EIO;
    username_fold(op->user.name, op->user.name_len, folded);
    /* Both checks before the first write (see batch_apply). */
    MDB_val nk = val(folded, op->user.name_len), ik = val(op->user.id.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_USERS_BY_NAME], &nk, &v);
    if (rc == 0) return STORE_ECONFLICT;
    if (rc != MDB_NOTFOUND) return map_err(rc);
    rc = mdb_get(txn, s->dbi[DB_USERS], &ik, &v);
    if (rc == 0) return STORE_ECONFLICT; /* a random v4 id collided */
    if (rc != MDB_NOTFOUND) return map_err(rc);
    v = val(op->user.id.b, 16);
    if ((rc = db_put(s, txn, DB_USERS_BY_NAME, &nk, &v, 0))) return map_err(rc);
    v = val(op->user.name, op->user.name_len);
    if ((rc = db_put(s, txn, DB_USERS, &ik, &v, 0))) return map_err(rc);
    if (!op->user.password_hash) return STORE_OK;
    v = val(op->user.password_hash, op->user.password_hash_len);
    return map_err(db_put(s, txn, DB_CREDENTIALS, &ik, &v, 0));
}

/* tokens: hash -> expires . user, and expires . hash -> "" for purging. */
static int apply_token_put(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    const store_token_t *t = &op->token;
    uint8_t rec[TOKEN_LEN], tk[8 + STORE_TOKEN_HASH_LEN];
    be64_put(rec, (uint64_t)t->expires_at_ms);
    memcpy(rec + 8, t->user_id.b, 16);
    memcpy(tk, rec, 8);
    memcpy(tk + 8, t->hash, STORE_TOKEN_HASH_LEN);
    MDB_val k = val(t->hash, STORE_TOKEN_HASH_LEN), v = val(rec, sizeof rec), ek = val(tk, sizeof tk), empty = val("", 0);
    int rc = db_put(s, txn, DB_TOKENS, &k, &v, 0);
    if (!rc) rc = db_put(s, txn, DB_TOKENS_BY_EXPIRY, &ek, &empty, 0);
    return map_err(rc);
}

static int apply_token_del(lmdb_store_t *s, MDB_txn *txn, op_t *op) {
    MDB_val k = val(op->token.hash, STORE_TOKEN_HASH_LEN), v;
    int rc = mdb_get(txn, s->dbi[DB_TOKENS], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return map_err(rc);
    if (v.mv_size == TOKEN_LEN) {
        uint8_t tk[8 + STORE_TOKEN_HASH_LEN];
        memcpy(tk, v.mv_data, 8);
        memcpy(tk + 8, op->token.hash, STORE_TOKEN_HASH_LEN);
        MDB_val ek = val(tk, sizeof tk);
        rc = db_del(s, txn, DB_TOKENS_BY_EXPIRY, &ek);
        if (rc && rc != MDB_NOTFOUND) return map_err(rc);
    }
    return map_err(db_del(s, txn, DB_TOKENS, &k));
}

static bool user_exists(lmdb_store_t *s, MDB_txn *txn, const uuid_t *id) {
    MDB_val k = val(id->b, 16), v;
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
    MDB_val k = val(conv->b, 16), v = val(m, META_LEN);
    return map_err(db_put(s, txn, DB_CONV_META, &k, &v, 0));
}

/* Writes a conv_rec (see decode_conv_rec) into p. */
static void fill_conv_rec(uint8_t *p, const uuid_t *other, uint64_t activity, int64_t created_ms,
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
    int rc = newest_message(s->cur_msgs, conv, &k, &v);
    if (rc && rc != MDB_NOTFOUND) return map_err(rc);
    if (rc == 0) {
        newest = message_key_ticks(&k);
        uint8_t rk[40];
        MDB_val rkv = recency_key(rk, user, newest, conv), rv;
        rc = mdb_cursor_get(s->cur_recency, &rkv, &rv, MDB_SET);
        if (rc && rc != MDB_NOTFOUND) return map_err(rc);
        /* A bad row here falls through to the metadata, and the send's
         * recency_move replaces it. */
        int64_t created = rc == 0 && rv.mv_size >= CONV_REC_HDR ? (int64_t)be64_get((const uint8_t *)rv.mv_data + 24) : 0;
        if (time_ok(created) && ticks_ok(newest)) {
            out->exists = true;
            out->activity = newest;
            out->created_ms = created;
            return STORE_OK;
        }
        if (!ticks_ok(newest)) newest = 0;
    }
    k = val(conv->b, 16);
    rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc == MDB_NOTFOUND) return STORE_OK;
    if (rc) return map_err(rc);
    if (decode_meta(&v, &out->created_ms, NULL, NULL)) return STORE_EBADROW;
    out->exists = true;
    out->activity = conv_activity(out->created_ms, newest);
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
        MDB_val k = recency_key(rk, user, old->activity, conv), ignored;
        rc = mdb_cursor_get(s->cur_recency, &k, &ignored, MDB_SET);
        if (rc == 0) rc = cursor_del(s, s->cur_recency, DB_RECENCY, &k);
        /* Missing breaks an invariant; the new row mends it. */
        if (rc == MDB_NOTFOUND) log_warn("store", "conversations_by_recency: a conversation's row was missing");
        else if (rc) return map_err(rc);
    }
    size_t len = CONV_REC_HDR + (msg ? msg->content_len : 0);
    MDB_val k = recency_key(rk, user, activity, conv), v = {.mv_size = len, .mv_data = NULL};
    rc = mdb_cursor_put(s->cur_recency, &k, &v, MDB_RESERVE);
    if (rc) return map_err(rc);
    fill_conv_rec(v.mv_data, other, activity, created_ms, msg);
    redo_log(s, REDO_PUT, DB_RECENCY, &k, &v);
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
    MDB_val k = val(key, klen), v;
    int rc = mdb_get(txn, s->dbi[DB_IDEM], &k, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return map_err(rc);
    /* A row that cannot be used counts as absent: the send goes on and
     * its idem_record replaces it. */
    if (v.mv_size < IDEM_LEN) {
        bad_row("idempotency", "too short");
        return 0;
    }
    const uint8_t *p = v.mv_data;
    if (!time_ok((int64_t)be64_get(p))) {
        bad_row("idempotency", "a time out of range");
        return 0;
    }
    if ((int64_t)be64_get(p) < now - IDEMPOTENCY_WINDOW_MS) return 0;
    uint8_t mk[32];
    memcpy(mk, p + 8, 16);
    uuid_t mid;
    memcpy(mid.b, p + 24, 16);
    uuid_sort_key(&mid, mk + 16);
    MDB_val mkv = val(mk, 32), mv;
    rc = mdb_get(txn, s->dbi[DB_MESSAGES], &mkv, &mv);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc) return map_err(rc);
    message_t old;
    if (decode_message(&mkv, &mv, &old)) return 0;
    /* It must be this sender's message (the key is per sender): else it
     * would hand them someone else's. */
    if (uuid_cmp(&old.sender_id, &r->sender_id) != 0) {
        bad_row("idempotency", "another sender's message");
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
    MDB_val k = val(key, klen), v = val(rec, IDEM_LEN);
    int rc = db_put(s, txn, DB_IDEM, &k, &v, 0);
    if (rc) return map_err(rc);
    /* idempotency_by_time: created . sender . key, for pruning */
    be64_put(key, (uint64_t)now);
    memcpy(key + 8, r->sender_id.b, 16);
    memcpy(key + 24, r->client_message_id, r->client_message_id_len);
    k = val(key, 8 + klen);
    MDB_val empty = val("", 0);
    return map_err(db_put(s, txn, DB_IDEM_BY_TIME, &k, &empty, 0));
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
    if (rc) return map_err(rc);
    MDB_val k, v;
    int n = 0;
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0 && n < PRUNE_PER_BATCH && k.mv_size > 8 && (int64_t)be64_get(k.mv_data) < before) {
        MDB_val pk = val((const uint8_t *)k.mv_data + 8, k.mv_size - 8), pv;
        int rc2 = mdb_get(txn, s->dbi[primary], &pk, &pv);
        if (rc2 == 0 && pv.mv_size >= 8 && memcmp(pv.mv_data, k.mv_data, 8) == 0)
            rc2 = db_del(s, txn, primary, &pk);
        if (rc2 && rc2 != MDB_NOTFOUND) { rc = rc2; break; }
        rc = cursor_del(s, c, by_time, &k);
        if (rc) break;
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_GET_CURRENT);
        if (rc == MDB_NOTFOUND || rc == EINVAL) rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? STORE_OK : map_err(rc);
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
    MDB_val k = val(key, 32), v = {.mv_size = MSG_HDR + m->content_len, .mv_data = NULL};
    int rc = mdb_cursor_put(s->cur_msgs, &k, &v, MDB_RESERVE | MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST) return STORE_ECONFLICT;
    if (rc) return map_err(rc);
    uint8_t *p = v.mv_data;
    memcpy(p, m->sender_id.b, 16);
    memcpy(p + 16, m->receiver_id.b, 16);
    be64_put(p + 32, (uint64_t)m->created_at_ms);
    if (m->content_len) memcpy(p + MSG_HDR, m->content, m->content_len);
    redo_log(s, REDO_PUT, DB_MESSAGES, &k, &v);

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
    MDB_val k = val(conv.b, 16), v;
    int rc = mdb_get(txn, s->dbi[DB_CONV_META], &k, &v);
    if (rc == 0) {
        if (decode_meta(&v, &created, NULL, NULL)) return STORE_EBADROW; /* it exists: as it is */
    } else if (rc == MDB_NOTFOUND) {
        if (!user_exists(s, txn, &op->open_a) || !user_exists(s, txn, &op->open_b)) return STORE_ENOTFOUND;
        conv_state_t none = {.exists = false};
        uint64_t activity = conv_activity(created, 0);
        int err = meta_put(s, txn, &conv, &op->open_a, &op->open_b, created);
        if (!err) err = recency_move(s, &op->open_a, &op->open_b, &conv, &none, activity, created, NULL);
        if (!err && uuid_cmp(&op->open_a, &op->open_b) != 0)
            err = recency_move(s, &op->open_b, &op->open_a, &conv, &none, activity, created, NULL);
        if (err) return err;
    } else {
        return map_err(rc);
    }
    memset(&op->conv, 0, sizeof op->conv);
    op->conv.id = conv;
    op->conv.user1_id = op->open_a;
    op->conv.user2_id = op->open_b;
    op->conv.created_at_ms = created;
    op->conv.last_message_at_ms = created;
    return STORE_OK;
}

static int apply_op(lmdb_store_t *s, MDB_txn *txn, op_t *op, int64_t now) {
    switch (op->kind) {
    case OP_USER_CREATE: return apply_user_create(s, txn, op);
    case OP_SEND: return apply_send(s, txn, op, now);
    case OP_CONV_OPEN: return apply_open(s, txn, op, now);
    case OP_TOKEN_PUT: return apply_token_put(s, txn, op);
    case OP_TOKEN_DEL: return apply_token_del(s, txn, op);
    }
    return STORE_EIO;
}

static void complete(op_t *op) {
    switch (op->kind) {
    case OP_USER_CREATE: op->cb.user(op->ctx, op->err, op->err ? NULL : &op->user); break;
    case OP_SEND: op->cb.send(op->ctx, op->err, op->err ? NULL : &op->msg, op->replayed); break;
    case OP_CONV_OPEN: op->cb.conv(op->ctx, op->err, op->err ? NULL : &op->conv); break;
    case OP_TOKEN_PUT: case OP_TOKEN_DEL: op->cb.token(op->ctx, op->err, op->err ? NULL : &op->token); break;
    }
    free(op->result_text);
    free(op);
}

/* Expires a bounded number of idempotency keys and login tokens inside the
 * batch's transaction. */
static int prune(lmdb_store_t *s, MDB_txn *txn, int64_t now) {
    int err = prune_expired(s, txn, DB_IDEM_BY_TIME, DB_IDEM, now - IDEMPOTENCY_WINDOW_MS);
    if (!err) err = prune_expired(s, txn, DB_TOKENS_BY_EXPIRY, DB_TOKENS, now + 1);
    if (err) log_warn("store", "pruning expired keys and tokens: %s", store_strerror(err));
    return err;
}

static int64_t mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int errno_to_store(int neg_errno) {
    return neg_errno == -ENOSPC || neg_errno == -EDQUOT ? STORE_EFULL : neg_errno == -ENOMEM ? STORE_ENOMEM : STORE_EIO;
}

/* ------------------------------------------------------------------ disk space
 *
 * MDB_WRITEMAP writes the database through a shared, writable map of
 * data.mdb, which LMDB makes as large as the map size with ftruncate (16 GiB
 * by default): a sparse file. The first write to a page past the blocks the
 * file has makes the kernel allocate one then and there, and on a full disk
 * it answers that page fault with SIGBUS: the process dies. So the writer
 * never touches a page that is not allocated. Before it applies writes it
 * reserves data.mdb's blocks (fallocate, which allocates without writing
 * and leaves the size alone) up to the end of the database plus the most
 * those writes can add (write_pages: a worst case), and RESERVE_AHEAD beyond
 * when the disk has it, so that a fallocate is rare. A reservation that
 * fails is a full disk: those writes are refused with STORE_EFULL (507) and
 * the store turns read-only (below). Pages LMDB reuses from its free list
 * lie below the end of the database: written before, so allocated.
 *
 * Why keep write-map and reserve, rather than drop write-map: without it
 * every commit writes each dirty page with its own pwrite (a third of the
 * writer's CPU when it was measured, and write-map took durable sends from
 * 13,200 to 18,900/s then). Reserving costs one mdb_env_info and a dozen
 * mdb_stat per batch, and a fallocate per 64 MiB of growth. Measured
 * 2026-12-07 on a 1M-message set (`messenger seed --users 10000
 * --conversations 100000 --messages 1000000`), durable sends of the store
 * alone, `messenger bench-store --requests send.txt --duration 5` on a fresh
 * copy each run, 8 runs of each build alternated in one session on the
 * shared 2-core machine: medians 72,700 sends/s and 10.66 us of CPU per send
 * before, 77,700/s and 10.30 us with reserving (runs spread 34-94k/s: no
 * cost above the noise, and far inside the 5% budget). A bulk load (the same
 * seed) took 9.2 s either way. Where the file system cannot fallocate
 * (EOPNOTSUPP), the store opens without write-map: LMDB's pwrite then fails
 * cleanly on a full disk (after the log append: the store then refuses
 * writes until a restart, as for any commit failure).
 *
 * Read-only. When the disk is full (a reservation, the log or, at open, the
 * state file or the first base copy cannot get space), the store serves
 * reads and answers every write STORE_EFULL at once, without touching the
 * disk. Every RO_RETRY_US the writer tries again: the state file and base
 * copy that are still owed, then a reservation, and with free space it takes
 * writes again by itself. store_lmdb_read_only() tells /health.
 */
#define RESERVE_AHEAD (64ull << 20)
#define BATCH_PAGES_MAX (32768ull)       /* 128 MiB of 4 KiB pages at worst: a batch stops growing there */
#define BULK_BATCH_PAGES_MAX (262144ull) /* 1 GiB: a bulk load takes far larger batches */
#define RO_RETRY_US 1000000
#define RESUME_FREE_BYTES (4ull << 20) /* less free than this stays read-only (no flapping) */

enum { RO_NONE, RO_SPACE, RO_LOG, RO_STATE, RO_BASE, RO_COUNT };
static const char *const RO_WHY[RO_COUNT] = {
    NULL, "disk full: the database file cannot grow", "disk full: the write-ahead log cannot grow",
    "disk full: the state file cannot be written", "disk full: the first base copy cannot be written",
};

static bool space_errno(int neg_errno) {
    return neg_errno == -ENOSPC || neg_errno == -EDQUOT;
}

/* The most pages one put or delete of a value of vlen bytes can add beyond
 * the end of the database: a copy of every page on its path (copy on
 * write), a split at every level and a new root, or a sibling touched at
 * every level by a rebalance, and the value's overflow pages. */
static uint64_t write_pages(const lmdb_store_t *s, size_t vlen) {
    return 2 * (s->depth + 1) + 2 + vlen / s->psize;
}

/* The most pages one queued write can add: none of them writes more than
 * eight rows (a send: message, metadata, two recency rows moved, two
 * idempotency rows), each at most its input plus a fixed header. */
static uint64_t op_pages(const lmdb_store_t *s, const op_t *op) {
    if (s->data_fd < 0) return 0;
    size_t v = 128;
    if (op->kind == OP_SEND) v += op->send.content_len + (op->send.client_message_id ? op->send.client_message_id_len : 0);
    if (op->kind == OP_USER_CREATE) v += op->user.name_len + op->user.password_hash_len;
    return 8 * write_pages(s, v);
}

/* The end of the database: its last committed page. */
static uint64_t db_end(const lmdb_store_t *s) {
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    return ((uint64_t)info.me_last_pgno + 1) * s->psize;
}

/* The deepest tree (txn's view), plus one level a batch may add. */
static uint64_t tree_depth(const lmdb_store_t *s, MDB_txn *txn) {
    uint64_t d = 1;
    MDB_stat st;
    if (mdb_stat(txn, 1, &st) == 0 && st.ms_depth > d) d = st.ms_depth; /* LMDB's main tree */
    for (int i = 0; i < DB_COUNT; i++)
        if (mdb_stat(txn, s->dbi[i], &st) == 0 && st.ms_depth > d) d = st.ms_depth;
    return d + 1;
}

/* Allocates data.mdb's blocks up to `end`, and RESERVE_AHEAD beyond when the
 * disk has it. STORE_OK, STORE_EFULL (no space) or STORE_EIO. */
static int reserve(lmdb_store_t *s, uint64_t end) {
    if (s->data_fd < 0 || end <= s->reserved) return STORE_OK;
    if (end > s->map_bytes) end = s->map_bytes; /* past the map LMDB says MDB_MAP_FULL itself */
    uint64_t ahead = s->map_bytes - end > RESERVE_AHEAD ? end + RESERVE_AHEAD : s->map_bytes;
    int rc = fallocate(s->data_fd, 0, (off_t)s->reserved, (off_t)(ahead - s->reserved));
    if (rc != 0 && (errno == ENOSPC || errno == EDQUOT) && ahead > end) {
        ahead = end; /* the need alone, then */
        rc = fallocate(s->data_fd, 0, (off_t)s->reserved, (off_t)(ahead - s->reserved));
    }
    if (rc == 0) {
        s->reserved = ahead;
        return STORE_OK;
    }
    if (errno == ENOSPC || errno == EDQUOT) return STORE_EFULL;
    log_error("store", "cannot allocate space in data.mdb: %s", strerror(errno));
    return STORE_EIO;
}

/* A new batch: where the database ends, how deep its trees are. */
static void batch_space_begin(lmdb_store_t *s) {
    s->batch_pages = 0;
    if (s->data_fd < 0) return;
    s->batch_end = db_end(s);
    s->depth = tree_depth(s, s->txn);
}

/* Reserves room for `pages` more in the open batch (with its commit's own
 * pages: the free list and meta page, growing with the batch). */
static int batch_space_add(lmdb_store_t *s, uint64_t pages) {
    if (s->data_fd < 0) return STORE_OK;
    uint64_t total = s->batch_pages + pages, fixed = 64 + 2 * write_pages(s, 0) + total / 256;
    int err = reserve(s, s->batch_end + (total + fixed) * s->psize);
    if (!err) s->batch_pages = total;
    return err;
}

/* Turns the store read-only for lack of space (reason RO_*). */
static void go_read_only(lmdb_store_t *s, int why) {
    s->ro_next_try_us = mono_us() + RO_RETRY_US;
    if (atomic_exchange(&s->ro, why) == RO_NONE)
        log_warn("store", "%s: the store is READ-ONLY (reads served, writes answer 507) until space returns "
                 "(it tries again every %d s by itself)", RO_WHY[why], RO_RETRY_US / 1000000);
}

static int base_now(lmdb_store_t *s);

/* The writer, while read-only and between batches: takes writes again when
 * the disk has room for them, once what is owed is written. */
static void ro_try_leave(lmdb_store_t *s) {
    s->ro_next_try_us = mono_us() + RO_RETRY_US;
    struct statvfs v;
    if (statvfs(s->dir, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < RESUME_FREE_BYTES) return;
    int rc;
    if (s->ro_state_pending && (rc = datadir_state_write(s->dir, false, s->bulk))) {
        log_debug("store", "still cannot write the state file: %s", strerror(-rc));
        return;
    }
    s->ro_state_pending = false;
    if (s->ro_base_pending) {
        if (base_now(s) || mdb_env_set_flags(s->env, MDB_NOSYNC, 1)) return;
        s->ro_base_pending = false;
    }
    if (s->data_fd >= 0 && reserve(s, db_end(s) + (64 + 64 * write_pages(s, 4096)) * s->psize)) return;
    atomic_store(&s->ro, RO_NONE);
    if (wal_prepare_again(s->wal)) log_info("store", "write-ahead log: preparing segments again");
    log_warn("store", "disk space is back: the store takes writes again (it was read-only)");
}

/* Reserves room to replay one redo record (wal recovery, before the writer
 * runs): a put or delete's worst case per entry. */
static int replay_space(lmdb_store_t *s, const uint8_t *p, size_t len) {
    if (s->data_fd < 0) return STORE_OK;
    uint64_t pages = 64 + 2 * write_pages(s, 0);
    while (len >= REDO_HDR) {
        size_t klen = (size_t)p[2] << 8 | p[3];
        size_t vlen = (size_t)p[4] << 24 | (size_t)p[5] << 16 | (size_t)p[6] << 8 | p[7];
        if (len - REDO_HDR < klen || len - REDO_HDR - klen < vlen) break; /* redo_apply refuses it */
        pages += write_pages(s, klen + vlen);
        p += REDO_HDR + klen + vlen;
        len -= REDO_HDR + klen + vlen;
    }
    pages += pages / 256;
    return reserve(s, db_end(s) + pages * s->psize);
}

/* Sets up reserving after the environment is open: its page size, map
 * size, deepest tree, data.mdb's descriptor (with write-map only); and
 * lock.mdb, which LMDB maps too (the readers' table) and makes sparse as
 * well: allocated whole (best effort: its first page, the one in use, was
 * written when it was made). */
static void space_init(lmdb_store_t *s) {
    MDB_stat st;
    MDB_envinfo info;
    unsigned flags = 0;
    mdb_env_stat(s->env, &st);
    mdb_env_info(s->env, &info);
    mdb_env_get_flags(s->env, &flags);
    s->psize = st.ms_psize;
    s->map_bytes = info.me_mapsize;
    s->data_fd = -1;
    if (flags & MDB_WRITEMAP) mdb_env_get_fd(s->env, &s->data_fd);
    MDB_txn *txn;
    s->depth = 8;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn) == 0) {
        s->depth = tree_depth(s, txn);
        mdb_txn_abort(txn);
    }
    char p[4096];
    if (snprintf(p, sizeof p, "%s/lock.mdb", s->dir) >= (int)sizeof p) return;
    int fd = open(p, O_RDWR | O_CLOEXEC);
    struct stat lst;
    if (fd >= 0 && fstat(fd, &lst) == 0 && fallocate(fd, 0, 0, lst.st_size) != 0)
        log_warn("store", "cannot allocate lock.mdb's blocks: %s", strerror(errno));
    if (fd >= 0) close(fd);
}

/* Whether the file system of dir can allocate a file's blocks without
 * writing them, which write-map needs to be safe on a full disk (above). A
 * full disk answers ENOSPC: it can, just not now. */
static bool can_reserve(const char *dir) {
    char p[4096];
    if (snprintf(p, sizeof p, "%s/fallocate.probe", dir) >= (int)sizeof p) return false;
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return true; /* cannot tell (no room even for the probe): the common case */
    bool ok = fallocate(fd, 0, 0, 4096) == 0 || errno == ENOSPC || errno == EDQUOT;
    if (!ok) log_warn("store", "%s cannot allocate a file's blocks (fallocate: %s): LMDB runs without write-map",
                      dir, strerror(errno));
    close(fd);
    unlink(p);
    return ok;
}

/* Appends the batch in txn to the log, then commits it (without fsync).
 * Returns the batch's error (on error txn is gone either way), and sets
 * *seq to the batch's log record (0: it wrote nothing) and *log_us to the
 * append's time (for the debug log). The record is not
 * durable yet: the completer syncs it before any callback of the batch runs
 * (see completer_main). */
static int commit_logged(lmdb_store_t *s, MDB_txn *txn, uint64_t *seq_out, int64_t *log_us) {
    *seq_out = 0;
    if (!s->redo.len) return map_err(commit(s, txn)); /* nothing was written */
    uint64_t seq = s->seq + 1;
    int err = buf_ok(&s->redo) ? seq_put(s, txn, seq) : STORE_ENOMEM;
    if (!err) {
        int64_t t0 = mono_us();
        int rc = wal_append(s->wal, seq, s->redo.data, s->redo.len);
        *log_us = mono_us() - t0;
        if (!rc) s->logged_since_base += s->redo.len;
        if (rc) {
            log_error("store", "write-ahead log: %s", strerror(-rc));
            err = errno_to_store(rc);
            if (space_errno(rc)) go_read_only(s, RO_LOG);
        }
    }
    if (err) {
        mdb_txn_abort(txn);
        return err;
    }
    /* From here on the batch is in the log: a restart replays it whatever
     * happens now, unless the machine goes down before the completer's
     * sync (and then nobody was told it was written). */
    s->seq = seq;
    *seq_out = seq;
    int rc = commit(s, txn);
    if (rc) {
        atomic_store(&s->failed, true);
        log_error("store", "commit of a logged batch failed (%s): refusing writes until a restart replays the log",
                  mdb_strerror(rc));
        return STORE_EUNAVAILABLE;
    }
    return STORE_OK;
}

/* ------------------------------------------------------------------ completion
 *
 * The writer does not wait for the log's fdatasync: it hands each committed
 * batch to the completer thread and goes on with the next one, so that
 * applying batch N+1 overlaps syncing batch N (they took ~70% and ~25% of a
 * cycle when the writer did both). The completer syncs the log once for all
 * the batches it finds queued, then runs their callbacks in commit order.
 * So a write is acknowledged (its HTTP answer, its event) only once it is
 * durable, while readers may see it up to one log sync (~0.3 ms) earlier: a
 * machine crash in that window loses a write that a reader saw but whose
 * sender was never told it was written (as with Redis's appendfsync always).
 */
static void hand_over(lmdb_store_t *s, op_t *ops, uint64_t seq) {
    ops->next_batch = NULL;
    ops->batch_seq = seq;
    pthread_mutex_lock(&s->done_mu);
    if (s->done_tail) s->done_tail->next_batch = ops; else s->done_head = ops;
    s->done_tail = ops;
    atomic_store(&s->log_idle, false);
    pthread_cond_signal(&s->done_cv);
    pthread_mutex_unlock(&s->done_mu);
}

/* The completer has synced what it took: if nothing new is queued, tells
 * the writer that the log is free for its open batch. Done before the
 * callbacks run, so that the writer's commit overlaps them. */
static void log_free(lmdb_store_t *s) {
    pthread_mutex_lock(&s->done_mu);
    bool idle = !s->done_head;
    if (idle) atomic_store(&s->log_idle, true);
    pthread_mutex_unlock(&s->done_mu);
    if (!idle) return;
    pthread_mutex_lock(&s->mu);
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

static void *completer_main(void *arg) {
    lmdb_store_t *s = arg;
    pthread_setname_np(pthread_self(), "lmdb-sync");
    for (;;) {
        pthread_mutex_lock(&s->done_mu);
        while (!s->done_head && !s->writer_exited) pthread_cond_wait(&s->done_cv, &s->done_mu);
        op_t *d = s->done_head;
        s->done_head = s->done_tail = NULL;
        pthread_mutex_unlock(&s->done_mu);
        if (!d) return NULL;
        /* Every record up to the newest queued one was written before it was
         * queued: one sync makes them all durable. */
        uint64_t need = 0;
        for (op_t *x = d; x; x = x->next_batch)
            if (x->batch_seq > need) need = x->batch_seq;
        bool lost = atomic_load(&s->failed);
        if (need > s->synced && !lost) {
            int64_t t0 = mono_us();
            int rc = wal_sync(s->wal);
            log_debug("store", "log synced up to %llu in %lld us", (unsigned long long)need,
                      (long long)(mono_us() - t0));
            if (rc) {
                log_error("store", "write-ahead log sync failed (%s): refusing writes until a restart", strerror(-rc));
                atomic_store(&s->failed, true);
                lost = true;
            } else {
                s->synced = need;
            }
        }
        log_free(s);
        while (d) {
            op_t *next = d->next_batch;
            for (op_t *op = d; op;) {
                op_t *op_next = op->next;
                /* A refusal stays true; a write (or a replay of one) that is
                 * not durable is not acknowledged. */
                if (lost && !op->err) op->err = STORE_EUNAVAILABLE;
                complete(op);
                op = op_next;
            }
            d = next;
        }
    }
}

/* Batches. The writer applies queued writes to an open transaction, and
 * commits it (logging it first) when the completer is free to sync the log:
 * while one batch's fdatasync runs, the next batch grows. So there is about
 * one commit per log sync, whatever the load, and a commit's fixed costs
 * (the log record's write, LMDB's free-page list, the meta page, the
 * hand-over) are shared by every write that arrived during a sync instead of
 * by the few that were queued at one instant. Nothing waits longer for it: a
 * write committed earlier would still wait for that same sync. A write is
 * visible to readers from its commit, acknowledged from its sync.
 *
 * There are no nested transactions (MDB_WRITEMAP has none): every apply_*
 * function checks what a client can be refused for (a missing user, a taken
 * name, a reused key) before its first write, so such a refusal leaves
 * nothing behind and the batch goes on. Any other failure (map full, I/O)
 * may leave a write half-done, so it fails the whole batch, and nothing of
 * it is written. */

/* Opens a batch: its transaction and cursors, unless the store refuses
 * writes (then open_err answers every write of the batch). */
static void batch_open(lmdb_store_t *s) {
    buf_reset(&s->redo);
    s->open_apply_us = 0;
    s->txn = NULL;
    s->open_err = atomic_load(&s->failed) ? STORE_EUNAVAILABLE
                : atomic_load(&s->ro)     ? STORE_EFULL
                                          : map_err(mdb_txn_begin(s->env, NULL, 0, &s->txn));
    if (!s->open_err) s->open_err = map_err(mdb_cursor_open(s->txn, s->dbi[DB_MESSAGES], &s->cur_msgs));
    if (!s->open_err) s->open_err = map_err(mdb_cursor_open(s->txn, s->dbi[DB_RECENCY], &s->cur_recency));
    if (!s->open_err) batch_space_begin(s);
}

/* Applies the chain `ops` (n writes) to the open batch, opening one if
 * there is none. Room for the chain's worst case is reserved first (see
 * "disk space"): without it, its writes are refused (STORE_EFULL) and the
 * rest of the batch goes on. */
static void batch_apply(lmdb_store_t *s, op_t *ops, size_t n) {
    int64_t now = time_now_ms(), t0 = mono_us();
    if (!s->open_n) batch_open(s);
    uint64_t pages = 0;
    for (op_t *op = ops; op; op = op->next) pages += op_pages(s, op);
    int space = s->open_err               ? STORE_OK
              : atomic_load(&s->ro)       ? STORE_EFULL
                                          : batch_space_add(s, pages);
    if (space == STORE_EFULL) go_read_only(s, RO_SPACE);
    op_t *last = ops;
    for (op_t *op = ops; op; op = op->next) {
        if (space) {
            op->err = space;
        } else if (!s->open_err) {
            op->err = apply_op(s, s->txn, op, now);
            if (op->err == STORE_EBADROW) op->err = STORE_EIO; /* refused before it wrote: the batch goes on */
            else if (op->err && op->err != STORE_ENOTFOUND && op->err != STORE_ECONFLICT) s->open_err = op->err;
        }
        last = op;
    }
    if (s->open_tail) s->open_tail->next = ops; else s->open_head = ops;
    s->open_tail = last;
    s->open_n += n;
    s->open_apply_us += mono_us() - t0;
}

/* Commits the open batch (or aborts it after a failure) and hands it to the
 * completer, which makes it durable and runs its callbacks. */
static void batch_commit(lmdb_store_t *s) {
    int64_t t0 = mono_us(), log_us = 0;
    uint64_t seq = 0;
    int err = s->open_err;
    /* A log sync failed while this batch grew: the store refuses writes
     * from then on, and this batch is not written either. */
    if (!err && atomic_load(&s->failed)) err = STORE_EUNAVAILABLE;
    /* Pruning is housekeeping: skipped when there is no room for its worst
     * case (it deletes, but deleting copies pages too). */
    if (!err && !s->bulk && batch_space_add(s, 4 * PRUNE_PER_BATCH * write_pages(s, 0)) == STORE_OK)
        err = prune(s, s->txn, time_now_ms());
    if (s->cur_msgs) mdb_cursor_close(s->cur_msgs);
    if (s->cur_recency) mdb_cursor_close(s->cur_recency);
    s->cur_msgs = s->cur_recency = NULL;
    if (err) {
        if (s->txn) mdb_txn_abort(s->txn);
    } else {
        err = s->bulk ? map_err(commit(s, s->txn)) : commit_logged(s, s->txn, &seq, &log_us);
    }
    s->txn = NULL;
    op_t *batch = s->open_head;
    if (err) {
        if (err == STORE_EFULL && atomic_load(&s->ro))
            log_debug("store", "%zu writes refused: the store is read-only", s->open_n);
        else
            log_error("store", "commit of %zu writes failed: %s", s->open_n, store_strerror(err));
        for (op_t *op = batch; op; op = op->next)
            if (op->err != STORE_ENOTFOUND && op->err != STORE_ECONFLICT) op->err = err;
    } else {
        log_debug("store", "committed %zu writes (log seq %llu, %zu bytes): apply %lld us, log %lld us, commit %lld us",
                  s->open_n, (unsigned long long)s->seq, s->redo.len, (long long)s->open_apply_us, (long long)log_us,
                  (long long)(mono_us() - t0));
    }
    if (s->redo.cap > (16u << 20)) buf_free(&s->redo); /* do not keep a huge batch's buffer */
    s->open_head = s->open_tail = NULL;
    s->open_n = 0;
    s->open_err = 0;
    hand_over(s, batch, seq);
}

/* ------------------------------------------------------------------ base copies */

static void *base_main(void *arg) {
    lmdb_store_t *s = arg;
    pthread_setname_np(pthread_self(), BASE_THREAD_NAME);
    /* Background work: the writer, the HTTP threads and, for the disk, the
     * log's syncs go first (LMDB's copy thread, started by this one, is in
     * the idle I/O class too). On a disk that never idles that could make
     * the copy crawl while the log it would let go of grows: base_tend()
     * then gives it the default class back. */
    thread_background(true);
    uint64_t bytes = 0;
    int rc = datadir_base_write(s->env, s->dir, &bytes);
    if (!rc) { /* the log before the base is not needed any more */
        int frc = wal_forget(s->wal, s->base_seq);
        if (frc) log_warn("store", "write-ahead log: deleting old segments: %s", strerror(-frc));
    }
    pthread_mutex_lock(&s->mu);
    s->base_done = true;
    s->base_err = rc;
    s->base_done_bytes = bytes;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

/* The writer's side of base copies: starts one when the log has grown past
 * the last base, and, when one has finished, forgets the log before it.
 * Only the writer starts and joins base threads. */
static void base_tend(lmdb_store_t *s) {
    pthread_mutex_lock(&s->mu);
    bool finished = s->base_running && s->base_done;
    pthread_mutex_unlock(&s->mu);
    if (finished) {
        pthread_join(s->base_thread, NULL);
        s->base_running = s->base_done = false;
        if (s->base_err) {
            log_error("store", "base copy failed: %s (the log is kept; retrying later)", strerror(-s->base_err));
        } else {
            s->base_bytes = s->base_done_bytes;
            log_info("store", "base copy done (%llu MiB, log seq %llu)", (unsigned long long)(s->base_bytes >> 20),
                     (unsigned long long)s->base_seq);
        }
    }
    uint64_t limit = s->base_bytes > s->rebase_log_bytes ? s->base_bytes : s->rebase_log_bytes;
    if (s->base_running && !s->base_hurried && s->logged_since_base > limit / 2) {
        /* Half a base's worth of log since the copy began (a copy of a warm
         * map takes seconds; at 35,000 sends/s this is tens of seconds):
         * the idle I/O class is starving it. */
        int n = thread_io_default_by_name(BASE_THREAD_NAME);
        s->base_hurried = true;
        log_warn("store", "base copy still running after %llu MiB of log: "
                 "giving it the default I/O priority (%d threads)",
                 (unsigned long long)(s->logged_since_base >> 20), n);
    }
    if (!s->base_running && !atomic_load(&s->failed) && s->logged_since_base > limit) {
        /* The copy holds at least everything committed so far. */
        s->base_seq = s->seq;
        s->logged_since_base = 0;
        s->base_hurried = false;
        wal_rotate(s->wal);
        if (pthread_create(&s->base_thread, NULL, base_main, s) == 0) s->base_running = true;
        else log_error("store", "cannot start a base copy thread");
    }
}

/* Takes queued writes for the open batch (s->mu held): up to a full batch,
 * which is max_batch writes or, at worst, BATCH_PAGES_MAX pages (see "disk
 * space": what a batch may add is reserved before it is applied, so a
 * batch must not be unbounded). Sets *full when the open batch can take no
 * more. */
static op_t *take_chain(lmdb_store_t *s, size_t *n, bool *full) {
    uint64_t max = s->bulk ? BULK_BATCH_PAGES_MAX : BATCH_PAGES_MAX, pages = s->open_n ? s->batch_pages : 0;
    op_t *first = s->head, *last = NULL;
    *n = 0;
    *full = s->open_n >= s->max_batch;
    for (op_t *op = first; op && !*full; op = op->next) {
        uint64_t p = op_pages(s, op);
        if ((s->open_n || *n) && pages + p > max) { *full = true; break; }
        pages += p;
        last = op;
        if (s->open_n + ++*n >= s->max_batch) *full = true;
    }
    if (!last) return NULL;
    s->head = last->next;
    if (!s->head) s->tail = NULL;
    last->next = NULL;
    return first;
}

/* Waits (s->mu held) until there is something to do: queued writes, a
 * closing store, a finished base copy, a free log for the open batch, or,
 * while read-only, the time to try taking writes again. */
static void writer_wait(lmdb_store_t *s) {
    while (!s->head && !s->closing && !(s->base_running && s->base_done) &&
           !(s->open_n && atomic_load(&s->log_idle))) {
        if (!atomic_load(&s->ro)) {
            pthread_cond_wait(&s->cv, &s->mu);
            continue;
        }
        int64_t us = s->ro_next_try_us - mono_us();
        if (us <= 0) return;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += us / 1000000;
        ts.tv_nsec += (us % 1000000) * 1000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
}

/* The writer thread: applies queued writes to the open batch and commits
 * it when the log is free (see batch_apply), when it is full (take_chain),
 * when it failed, or when the store closes. While read-only it tries to
 * take writes again now and then (ro_try_leave). */
static void *writer_main(void *arg) {
    lmdb_store_t *s = arg;
    pthread_setname_np(pthread_self(), "lmdb-writer");
    for (;;) {
        if (!s->bulk) base_tend(s);
        if (atomic_load(&s->ro) && !s->open_n && mono_us() >= s->ro_next_try_us) ro_try_leave(s);
        pthread_mutex_lock(&s->mu);
        writer_wait(s);
        if (!s->head && s->closing && !s->open_n) {
            pthread_mutex_unlock(&s->mu);
            return NULL;
        }
        size_t n = 0;
        bool full = false;
        op_t *batch = take_chain(s, &n, &full);
        bool closing = s->closing;
        pthread_mutex_unlock(&s->mu);
        if (batch) batch_apply(s, batch, n);
        if (s->open_n && (atomic_load(&s->log_idle) || s->open_err || full || closing)) batch_commit(s);
    }
}

/* ------------------------------------------------------------------ lifetime */

typedef struct replay_ctx {
    lmdb_store_t *s;
    uint64_t applied;
    int err;                /* the STORE_E* code that stopped the replay */
} replay_ctx_t;

/* Applies one logged batch in its own transaction, with its seq. A record
 * that does not follow the database's seq (records are missing between the
 * two), or that does not parse, is bad: WAL_REPLAY_BAD makes the log drop it
 * and everything after it (wal.h), and the store starts without them. An
 * LMDB failure (I/O, a full map or disk) stops the open instead: the record
 * is fine, and dropping it would lose an acknowledged write. */
static int replay_one(void *arg, uint64_t seq, const void *data, size_t len) {
    replay_ctx_t *r = arg;
    if (seq != r->s->seq + 1) {
        log_error("store", "write-ahead log: record %llu follows the database's %llu (records are missing)",
                  (unsigned long long)seq, (unsigned long long)r->s->seq);
        return WAL_REPLAY_BAD;
    }
    MDB_txn *txn;
    int err = replay_space(r->s, data, len);
    if (!err) err = map_err(mdb_txn_begin(r->s->env, NULL, 0, &txn));
    if (!err) {
        err = redo_apply(r->s, txn, data, len);
        if (!err) err = seq_put(r->s, txn, seq);
        if (!err) err = map_err(mdb_txn_commit(txn));
        else mdb_txn_abort(txn);
    }
    if (err == REDO_MALFORMED) {
        log_error("store", "write-ahead log: record %llu (%zu bytes) is not a batch of writes",
                  (unsigned long long)seq, len);
        return WAL_REPLAY_BAD;
    }
    if (err) {
        log_error("store", "write-ahead log: cannot apply record %llu: %s", (unsigned long long)seq, store_strerror(err));
        r->err = err;
        return -1;
    }
    r->s->seq = seq;
    r->applied++;
    return 0;
}

/* Makes a base copy now, on this thread, and forgets the log before it. */
static int base_now(lmdb_store_t *s) {
    log_info("store", "writing the base copy of %s", s->dir);
    int rc = datadir_base_write(s->env, s->dir, &s->base_bytes);
    if (rc) {
        log_error("store", "cannot write the base copy in %s: %s", s->dir, strerror(-rc));
        return space_errno(rc) ? STORE_EFULL : STORE_EIO;
    }
    wal_rotate(s->wal);
    rc = wal_forget(s->wal, s->seq);
    if (rc) log_warn("store", "write-ahead log: deleting old segments: %s", strerror(-rc));
    return STORE_OK;
}

/* Brings the database up to the end of the log. */
static int recover(lmdb_store_t *s) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return map_err(rc);
    int err = seq_get(s, txn, &s->seq);
    mdb_txn_abort(txn);
    if (err) return err;
    char wal_dir[4096];
    if (snprintf(wal_dir, sizeof wal_dir, "%s/wal", s->dir) >= (int)sizeof wal_dir) return STORE_EIO;
    if ((rc = wal_open(wal_dir, 0, !s->bulk, &s->wal))) {
        log_error("store", "cannot open the write-ahead log in %s: %s", wal_dir, strerror(-rc));
        return STORE_EIO;
    }
    replay_ctx_t r = {.s = s};
    uint64_t last = 0;
    rc = wal_replay(s->wal, s->seq, replay_one, &r, &last);
    if (rc) {
        if (r.err) return r.err;
        log_error("store", "write-ahead log in %s: %s", wal_dir, strerror(-rc));
        return STORE_EIO;
    }
    wal_dropped_t dropped;
    wal_replay_dropped(s->wal, &dropped);
    if (last < s->seq && (last || dropped.bytes)) {
        /* The database holds batches whose records never became durable (a
         * log sync failed; nobody was told they were written), or that a
         * damaged log lost after a process crash. The database is whole, so
         * it becomes the new base and the log starts afresh. */
        log_warn("store", "the write-ahead log ends at record %llu, before the database's %llu: "
                 "writing a new base copy and starting a new log", (unsigned long long)last,
                 (unsigned long long)s->seq);
        if ((err = base_now(s))) return err;
        if ((rc = wal_reset(s->wal))) {
            log_error("store", "cannot reset the write-ahead log in %s: %s", wal_dir, strerror(-rc));
            return STORE_EIO;
        }
    }
    /* A process that died before its sync left records that only the page
     * cache holds: make them durable before anything builds on them. */
    if ((rc = wal_sync_all(s->wal))) {
        log_error("store", "cannot sync the write-ahead log in %s: %s", wal_dir, strerror(-rc));
        return STORE_EIO;
    }
    s->logged_since_base = wal_bytes(s->wal);
    if (r.applied) log_info("store", "replayed %llu batches from the write-ahead log (now at %llu)",
                            (unsigned long long)r.applied, (unsigned long long)s->seq);
    return STORE_OK;
}

/* Reserves room for migrate() (see "disk space"): in one transaction it
 * copies every page of the recency tree at most once, gives each of the
 * old table's rows (st) a value of up to a conv_rec with content, and frees
 * the old table's pages into the free list. */
static int migrate_space(lmdb_store_t *s, MDB_txn *txn, const MDB_stat *old) {
    MDB_stat rec;
    int rc = mdb_stat(txn, s->dbi[DB_RECENCY], &rec);
    if (rc) return map_err(rc);
    uint64_t old_pages = old->ms_branch_pages + old->ms_leaf_pages + old->ms_overflow_pages;
    uint64_t pages = 2 * (rec.ms_branch_pages + rec.ms_leaf_pages + rec.ms_overflow_pages) +
                     old->ms_entries * (2 + (CONV_REC_HDR + 4096) / s->psize) + old_pages / 256 + 1024;
    return reserve(s, db_end(s) + pages * s->psize);
}

/* Stores written before the recency rows were the only per-user rows also
 * have conversations_by_user (user . conv -> conv_rec), and the oldest of
 * them have empty recency values: fill those from it, then empty it. It runs
 * at every open, after recovery (an older version's log may put rows in it),
 * and is not logged: should the machine go down before data.mdb is written
 * back, recovery restores the base, replays, and this runs again. */
static int migrate(lmdb_store_t *s) {
    MDB_txn *txn;
    MDB_stat st;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return map_err(rc);
    if ((rc = mdb_stat(txn, s->dbi[DB_CONVS_BY_USER], &st)) || st.ms_entries == 0) {
        mdb_txn_abort(txn);
        return map_err(rc);
    }
    log_info("store", "moving %zu conversation rows to the recency index (once)", st.ms_entries);
    if ((rc = migrate_space(s, txn, &st))) {
        mdb_txn_abort(txn);
        return rc;
    }
    MDB_cursor *c;
    size_t filled = 0;
    if (!(rc = mdb_cursor_open(txn, s->dbi[DB_RECENCY], &c))) {
        MDB_val k, v;
        for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            if (v.mv_size >= CONV_REC_HDR || k.mv_size != 40) continue;
            uuid_t user, conv;
            memcpy(user.b, k.mv_data, 16);
            memcpy(conv.b, (const uint8_t *)k.mv_data + 24, 16);
            uint8_t ck[32], key[40];
            MDB_val rk = conv_row_key(ck, &user, &conv), rv;
            if ((rc = mdb_get(txn, s->dbi[DB_CONVS_BY_USER], &rk, &rv))) break;
            /* A copy: the put moves the page's bytes that k points at. */
            memcpy(key, k.mv_data, sizeof key);
            MDB_val kc = val(key, sizeof key);
            if ((rc = mdb_cursor_put(c, &kc, &rv, MDB_CURRENT))) break;
            filled++;
        }
        mdb_cursor_close(c);
    }
    if (rc == MDB_NOTFOUND) rc = mdb_drop(txn, s->dbi[DB_CONVS_BY_USER], 0);
    if (rc) {
        log_error("store", "moving conversation rows to the recency index: %s", mdb_strerror(rc));
        mdb_txn_abort(txn);
        return map_err(rc) ? map_err(rc) : STORE_EIO;
    }
    if (filled) log_info("store", "filled %zu recency rows", filled);
    return map_err(mdb_txn_commit(txn));
}

static void lmdb_close(store_t *base) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL); /* the writer drains the queue first */
    pthread_mutex_lock(&s->done_mu);
    s->writer_exited = true;
    pthread_cond_signal(&s->done_cv);
    pthread_mutex_unlock(&s->done_mu);
    pthread_join(s->completer, NULL); /* then the completer: syncs, callbacks */
    if (s->base_running) {
        pthread_join(s->base_thread, NULL);
        s->base_running = false;
    }
    int rc = mdb_env_sync(s->env, 1);
    if (rc) log_error("store", "final sync failed: %s", mdb_strerror(rc));
    /* The load is in data.mdb only: copy it, so that the base and the log
     * hold it too. The copy is compact, and it replaces data.mdb as well: a
     * load leaves ~40% of the file as free pages from its copy-on-write
     * batches, and durable sends measured 20% faster on the compact file. */
    if (!rc && s->bulk) rc = base_now(s);
    mdb_env_close(s->env);
    if (!rc && s->bulk && (rc = datadir_base_restore(s->dir)))
        log_error("store", "cannot put the compacted load in place in %s: %s", s->dir, strerror(-rc));
    if (!rc && !atomic_load(&s->failed)) {
        rc = datadir_state_write(s->dir, true, false);
        if (rc) log_error("store", "cannot record the clean close in %s: %s", s->dir, strerror(-rc));
    }
    wal_close(s->wal);
    buf_free(&s->redo);
    datadir_unlock(s->lock_fd);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->done_mu);
    pthread_cond_destroy(&s->done_cv);
    free(s->dir);
    free(s);
}

/* Opens the environment and its tables (creating them in a new store);
 * without fsync per commit only when a base copy exists. */
static int open_env(lmdb_store_t *s, const store_lmdb_config_t *cfg, bool has_base) {
    int rc = mdb_env_create(&s->env);
    if (rc) return rc;
    if ((rc = mdb_env_set_maxdbs(s->env, DB_COUNT)) ||
        (rc = mdb_env_set_maxreaders(s->env, 1024)) ||
        (rc = mdb_env_set_mapsize(s->env, cfg->map_size_mb * 1024 * 1024)))
        return rc;
    /* Never an fsync per commit: the log makes writes durable (see the top).
     * Writes go straight into the shared map: a commit then costs no
     * write(2) per dirty page (those were a third of the writer's CPU); safe
     * on a full disk only where blocks can be reserved ("disk space"). */
    unsigned flags = MDB_NOTLS | (can_reserve(cfg->dir) ? MDB_WRITEMAP : 0) | (has_base ? MDB_NOSYNC : 0);
    if ((rc = mdb_env_open(s->env, cfg->dir, flags, 0600))) return rc;
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn))) return rc;
    for (int i = 0; i < DB_COUNT; i++) {
        if ((rc = mdb_dbi_open(txn, DB_NAMES[i], MDB_CREATE, &s->dbi[i]))) {
            mdb_txn_abort(txn);
            return rc;
        }
    }
    return mdb_txn_commit(txn);
}

/* A store without a base (new, or written by an older version that synced
 * every commit) gets one before it acknowledges anything, and commits
 * without fsync only from then on; on a full disk it starts read-only and
 * owes the base. A read-only start makes what recovery committed durable:
 * the state file may still say "clean 1". */
static int open_base(lmdb_store_t *s, bool has_base, int64_t base_size) {
    int err = STORE_OK;
    if (has_base) {
        s->base_bytes = (uint64_t)base_size;
    } else if ((err = base_now(s)) == STORE_OK) {
        err = map_err(mdb_env_set_flags(s->env, MDB_NOSYNC, 1));
    } else if (err == STORE_EFULL && !s->bulk) {
        s->ro_base_pending = true;
        go_read_only(s, RO_BASE);
        err = STORE_OK;
    }
    if (!err && atomic_load(&s->ro)) err = map_err(mdb_env_sync(s->env, 1));
    return err;
}

/* Takes the folder's lock and decides, from the state file, how data.mdb
 * can be used (restoring it from base.mdb after a machine crash; *rebase:
 * it needs a new base first), then marks the store open. */
static int open_dir(lmdb_store_t *s, int64_t *base_size, bool *rebase) {
    int rc = datadir_lock(s->dir, &s->lock_fd);
    if (rc) {
        if (rc == -EWOULDBLOCK) log_error("store", "data directory %s is in use by another process", s->dir);
        else log_error("store", "cannot lock data directory %s: %s", s->dir, strerror(-rc));
        return STORE_EUNAVAILABLE;
    }
    *base_size = datadir_base_size(s->dir);
    datadir_state_t st;
    datadir_state_read(s->dir, &st);
    *rebase = false;
    if (!st.trusted && *base_size >= 0) {
        log_warn("store", "%s was not closed cleanly before the machine restarted: rebuilding data.mdb from "
                 "base.mdb and the write-ahead log", s->dir);
        if ((rc = datadir_base_restore(s->dir))) {
            log_error("store", "cannot restore base.mdb in %s: %s", s->dir, strerror(-rc));
            return STORE_EIO;
        }
        if (st.load_unfinished) log_warn("store", "the bulk load that was running then is lost");
    } else if (!st.trusted) {
        /* No base yet: every commit so far was synced (see open_env). */
        log_warn("store", "%s was not closed cleanly before the machine restarted; it has no base copy yet, and "
                 "its commits were synced: using it as it is", s->dir);
    } else if (st.load_unfinished && !s->bulk) {
        /* The loaded rows are in data.mdb (the page cache kept them), but
         * neither in the base nor in the log: a new base, before any write
         * builds on them. */
        log_warn("store", "a bulk load into %s did not finish: keeping what it loaded", s->dir);
        *rebase = true;
    }
    /* From here on data.mdb holds unsynced commits until a clean close. On
     * a full disk the store starts read-only instead, commits nothing of its
     * own, and writes the state before it takes writes again. */
    if ((rc = datadir_state_write(s->dir, false, s->bulk))) {
        log_error("store", "cannot write the state file in %s: %s", s->dir, strerror(-rc));
        if (s->bulk || !space_errno(rc)) return STORE_EIO;
        s->ro_state_pending = true;
        go_read_only(s, RO_STATE);
    }
    return STORE_OK;
}

/* Starts the completer and the writer. */
static int start_threads(lmdb_store_t *s) {
    s->synced = s->seq;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->done_mu, NULL);
    atomic_init(&s->log_idle, true);
    pthread_cond_init(&s->done_cv, NULL);
    if (pthread_create(&s->completer, NULL, completer_main, s) == 0) {
        if (pthread_create(&s->writer, NULL, writer_main, s) == 0) return STORE_OK;
        pthread_mutex_lock(&s->done_mu);
        s->writer_exited = true;
        pthread_cond_signal(&s->done_cv);
        pthread_mutex_unlock(&s->done_mu);
        pthread_join(s->completer, NULL);
    }
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->done_mu);
    pthread_cond_destroy(&s->done_cv);
    return STORE_EIO;
}

int store_lmdb_open(const store_lmdb_config_t *cfg, idgen_t *ids, store_t **out) {
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST) {
        log_error("store", "cannot create data directory %s: %s", cfg->dir, strerror(errno));
        return STORE_EIO;
    }
    lmdb_store_t *s = calloc(1, sizeof *s);
    if (!s) return STORE_ENOMEM;
    s->base.ops = &LMDB_OPS;
    s->ids = ids;
    s->max_batch = cfg->max_batch ? cfg->max_batch : 1024;
    s->bulk = cfg->bulk_load;
    s->rebase_log_bytes = cfg->rebase_log_bytes ? cfg->rebase_log_bytes : REBASE_LOG_BYTES;
    s->lock_fd = -1;
    s->data_fd = -1;
    buf_init(&s->redo);
    int err = STORE_ENOMEM, rc;
    int64_t base_size = -1;
    bool rebase = false;
    if (!(s->dir = strdup(cfg->dir)) || (err = open_dir(s, &base_size, &rebase))) goto fail;
    if ((rc = open_env(s, cfg, base_size >= 0))) {
        log_error("store", "cannot open lmdb store at %s: %s", cfg->dir, mdb_strerror(rc));
        err = map_err(rc) ? map_err(rc) : STORE_EIO;
        goto fail;
    }
    space_init(s);
    if ((err = reserve(s, db_end(s) + 64 * write_pages(s, 4096) * s->psize))) {
        if (err != STORE_EFULL) goto fail;
        go_read_only(s, RO_SPACE);
    }
    if ((err = recover(s)) || (err = migrate(s)) || (err = open_base(s, base_size >= 0 && !rebase, base_size)) ||
        (err = start_threads(s)))
        goto fail;
    log_info("store", "lmdb store open at %s (map %zu MiB, log seq %llu)", cfg->dir, cfg->map_size_mb,
             (unsigned long long)s->seq);
    *out = &s->base;
    return STORE_OK;
fail:
    if (s->env) mdb_env_close(s->env);
    wal_close(s->wal);
    buf_free(&s->redo);
    datadir_unlock(s->lock_fd);
    free(s->dir);
    free(s);
    return err;
}

static const store_ops_t LMDB_OPS = {
    .name = "lmdb",
    .user_create = lmdb_user_create,
    .user_get = lmdb_user_get,
    .user_find = lmdb_user_find,
    .token_put = lmdb_token_put,
    .token_get = lmdb_token_get,
    .token_delete = lmdb_token_delete,
    .message_send = lmdb_message_send,
    .messages_list = lmdb_messages_list,
    .conversations_list = lmdb_conversations_list,
    .conversation_get = lmdb_conversation_get,
    .conversation_open = lmdb_conversation_open,
    .health = lmdb_health,
    .degraded = store_lmdb_read_only,
    .close = lmdb_close,
};

const char *store_lmdb_read_only(store_t *base) {
    if (!base || base->ops != &LMDB_OPS) return NULL;
    int why = atomic_load(&((lmdb_store_t *)base)->ro);
    return why > RO_NONE && why < RO_COUNT ? RO_WHY[why] : NULL;
}
