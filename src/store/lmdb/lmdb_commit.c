/* lmdb_commit.c - group commit: the queue from the callers to the writer
 * thread, the writer, which applies queued writes to one open batch and
 * commits it, logged, when the log is free, and the completer thread, which
 * syncs the log and then runs the batches' callbacks in commit order; and
 * the two threads' start and stop.
 *
 * Apart from what a write does (lmdb_apply.c): this file decides when, in
 * what transaction and on what thread; that one, which rows.
 *
 * Completion.
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
#include "store/lmdb/lmdb_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/log.h"
#include "util/timefmt.h"

#define BATCH_PAGES_MAX (32768ull)       /* 128 MiB of 4 KiB pages at worst: a batch stops growing there */
#define BULK_BATCH_PAGES_MAX (262144ull) /* 1 GiB: a bulk load takes far larger batches */

/* mdb_txn_commit, for the writer's transactions that readers will see. */
static int commit(lmdb_store_t *s, MDB_txn *txn) {
    tsan_published(s);
    return mdb_txn_commit(txn);
}

int64_t lmdb_mono_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
}

static int errno_to_store(int neg_errno) {
    return neg_errno == -ENOSPC || neg_errno == -EDQUOT ? STORE_EFULL : neg_errno == -ENOMEM ? STORE_ENOMEM : STORE_EIO;
}

/* Runs op's callback with its result (none when it failed) and frees it. */
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

void lmdb_enqueue(lmdb_store_t *s, op_t *op) {
    pthread_mutex_lock(&s->mu);
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        op->err = STORE_EUNAVAILABLE;
        complete(op);
        return;
    }
    op->next = NULL;
    if (s->tail) s->tail->next = op; else s->head = op;
    s->tail = op;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}


/* Appends the batch in txn to the log, then commits it (without fsync).
 * Returns the batch's error (on error txn is gone either way), and sets
 * *seq to the batch's log record (0: it wrote nothing) and *log_us to the
 * append's time (for the debug log). The record is not
 * durable yet: the completer syncs it before any callback of the batch runs
 * (see completer_main). */
static int commit_logged(lmdb_store_t *s, MDB_txn *txn, uint64_t *seq_out, int64_t *log_us) {
    *seq_out = 0;
    if (!s->redo.len) return lmdb_map_err(commit(s, txn)); /* nothing was written */
    uint64_t seq = s->seq + 1;
    int err = buf_ok(&s->redo) ? lmdb_seq_put(s, txn, seq) : STORE_ENOMEM;
    if (!err) {
        int64_t t0 = lmdb_mono_us();
        int rc = wal_append(s->wal, seq, s->redo.data, s->redo.len);
        *log_us = lmdb_mono_us() - t0;
        if (!rc) s->logged_since_base += s->redo.len;
        if (rc) {
            log_error("store", "write-ahead log: %s", strerror(-rc));
            err = errno_to_store(rc);
            if (lmdb_space_errno(rc)) lmdb_go_read_only(s, RO_LOG);
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
            int64_t t0 = lmdb_mono_us();
            int rc = wal_sync(s->wal);
            log_debug("store", "log synced up to %llu in %lld us", (unsigned long long)need,
                      (long long)(lmdb_mono_us() - t0));
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
                                          : lmdb_map_err(mdb_txn_begin(s->env, NULL, 0, &s->txn));
    if (!s->open_err) s->open_err = lmdb_map_err(mdb_cursor_open(s->txn, s->dbi[DB_MESSAGES], &s->cur_msgs));
    if (!s->open_err) s->open_err = lmdb_map_err(mdb_cursor_open(s->txn, s->dbi[DB_RECENCY], &s->cur_recency));
    if (!s->open_err) lmdb_batch_space_begin(s);
}

/* Applies the chain `ops` (n writes) to the open batch, opening one if
 * there is none. Room for the chain's worst case is reserved first (see
 * "disk space"): without it, its writes are refused (STORE_EFULL) and the
 * rest of the batch goes on. */
static void batch_apply(lmdb_store_t *s, op_t *ops, size_t n) {
    int64_t now = time_now_ms(), t0 = lmdb_mono_us();
    if (!s->open_n) batch_open(s);
    uint64_t pages = 0;
    for (op_t *op = ops; op; op = op->next) pages += lmdb_op_pages(s, op);
    int space = s->open_err               ? STORE_OK
              : atomic_load(&s->ro)       ? STORE_EFULL
                                          : lmdb_batch_space_add(s, pages);
    if (space == STORE_EFULL) lmdb_go_read_only(s, RO_SPACE);
    op_t *last = ops;
    for (op_t *op = ops; op; op = op->next) {
        if (space) {
            op->err = space;
        } else if (!s->open_err) {
            op->err = lmdb_apply_op(s, s->txn, op, now);
            if (op->err == STORE_EBADROW) op->err = STORE_EIO; /* refused before it wrote: the batch goes on */
            else if (op->err && op->err != STORE_ENOTFOUND && op->err != STORE_ECONFLICT) s->open_err = op->err;
        }
        last = op;
    }
    if (s->open_tail) s->open_tail->next = ops; else s->open_head = ops;
    s->open_tail = last;
    s->open_n += n;
    s->open_apply_us += lmdb_mono_us() - t0;
}

/* Commits the open batch (or aborts it after a failure) and hands it to the
 * completer, which makes it durable and runs its callbacks. */
static void batch_commit(lmdb_store_t *s) {
    int64_t t0 = lmdb_mono_us(), log_us = 0;
    uint64_t seq = 0;
    int err = s->open_err;
    /* A log sync failed while this batch grew: the store refuses writes
     * from then on, and this batch is not written either. */
    if (!err && atomic_load(&s->failed)) err = STORE_EUNAVAILABLE;
    /* Pruning is housekeeping: skipped when there is no room for its worst
     * case (it deletes, but deleting copies pages too). */
    if (!err && !s->bulk && lmdb_batch_space_add(s, 4 * PRUNE_PER_BATCH * lmdb_write_pages(s, 0)) == STORE_OK)
        err = lmdb_prune(s, s->txn, time_now_ms());
    if (s->cur_msgs) mdb_cursor_close(s->cur_msgs);
    if (s->cur_recency) mdb_cursor_close(s->cur_recency);
    s->cur_msgs = s->cur_recency = NULL;
    if (err) {
        if (s->txn) mdb_txn_abort(s->txn);
    } else {
        err = s->bulk ? lmdb_map_err(commit(s, s->txn)) : commit_logged(s, s->txn, &seq, &log_us);
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
                  (long long)(lmdb_mono_us() - t0));
    }
    if (s->redo.cap > (16u << 20)) buf_free(&s->redo); /* do not keep a huge batch's buffer */
    s->open_head = s->open_tail = NULL;
    s->open_n = 0;
    s->open_err = 0;
    hand_over(s, batch, seq);
}

/* Takes queued writes for the open batch (s->mu held): up to a full batch,
 * which is max_batch writes or, at worst, BATCH_PAGES_MAX pages (see "disk
 * space", lmdb_space.c: what a batch may add is reserved before it is applied, so a
 * batch must not be unbounded). Sets *full when the open batch can take no
 * more. */
static op_t *take_chain(lmdb_store_t *s, size_t *n, bool *full) {
    uint64_t max = s->bulk ? BULK_BATCH_PAGES_MAX : BATCH_PAGES_MAX, pages = s->open_n ? s->batch_pages : 0;
    op_t *first = s->head, *last = NULL;
    *n = 0;
    *full = s->open_n >= s->max_batch;
    for (op_t *op = first; op && !*full; op = op->next) {
        uint64_t p = lmdb_op_pages(s, op);
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
        int64_t us = s->ro_next_try_us - lmdb_mono_us();
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
 * take writes again now and then (lmdb_ro_try_leave). */
static void *writer_main(void *arg) {
    lmdb_store_t *s = arg;
    pthread_setname_np(pthread_self(), "lmdb-writer");
    for (;;) {
        if (!s->bulk) lmdb_base_tend(s);
        if (atomic_load(&s->ro) && !s->open_n && lmdb_mono_us() >= s->ro_next_try_us) lmdb_ro_try_leave(s);
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

/* The queue's and the completer's locks: made before the threads start,
 * destroyed once neither runs. */
static void sync_init(lmdb_store_t *s) {
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->done_mu, NULL);
    atomic_init(&s->log_idle, true);
    pthread_cond_init(&s->done_cv, NULL);
}

static void sync_destroy(lmdb_store_t *s) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->done_mu);
    pthread_cond_destroy(&s->done_cv);
}

/* Tells the completer that the writer is gone, and joins it once it has
 * synced and called back what was queued. */
static void completer_stop(lmdb_store_t *s) {
    pthread_mutex_lock(&s->done_mu);
    s->writer_exited = true;
    pthread_cond_signal(&s->done_cv);
    pthread_mutex_unlock(&s->done_mu);
    pthread_join(s->completer, NULL);
}

int lmdb_start_threads(lmdb_store_t *s) {
    s->synced = s->seq;
    sync_init(s);
    if (pthread_create(&s->completer, NULL, completer_main, s) == 0) {
        if (pthread_create(&s->writer, NULL, writer_main, s) == 0) return STORE_OK;
        completer_stop(s);
    }
    sync_destroy(s);
    return STORE_EIO;
}

void lmdb_stop_threads(lmdb_store_t *s) {
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->writer, NULL); /* the writer drains the queue first */
    completer_stop(s);             /* then the completer: syncs, callbacks */
    if (s->base_running) {
        pthread_join(s->base_thread, NULL);
        s->base_running = false;
    }
    sync_destroy(s);
}
