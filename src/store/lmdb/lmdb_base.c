/* lmdb_base.c - base copies: base.mdb, the consistent snapshot of the
 * database that the log's records after it complete ("Recovery",
 * lmdb_internal.h). A copy is made in the background, on its own thread,
 * when the log has grown past the last base (lmdb_base_tend, on the
 * writer), or at once on the calling thread (lmdb_base_now: at open, when a
 * bulk load closes, when the store leaves read-only mode); either way the
 * log before it is then forgotten.
 *
 * Apart because it is the one thread besides the writer and the completer,
 * and the one place that lets go of the log.
 */
#include "store/lmdb/lmdb_internal.h"

#include <string.h>

#include "store/lmdb/datadir.h"
#include "util/log.h"
#include "util/thread.h"

/* The base copy's thread, and LMDB's copy thread that it starts. */
#define BASE_THREAD_NAME "lmdb-base"

static void *base_main(void *arg) {
    lmdb_store_t *s = arg;
    pthread_setname_np(pthread_self(), BASE_THREAD_NAME);
    /* Background work: the writer, the HTTP threads and, for the disk, the
     * log's syncs go first (LMDB's copy thread, started by this one, is in
     * the idle I/O class too). On a disk that never idles that could make
     * the copy crawl while the log it would let go of grows: lmdb_base_tend()
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

void lmdb_base_tend(lmdb_store_t *s) {
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

int lmdb_base_now(lmdb_store_t *s) {
    log_info("store", "writing the base copy of %s", s->dir);
    int rc = datadir_base_write(s->env, s->dir, &s->base_bytes);
    if (rc) {
        log_error("store", "cannot write the base copy in %s: %s", s->dir, strerror(-rc));
        return lmdb_space_errno(rc) ? STORE_EFULL : STORE_EIO;
    }
    wal_rotate(s->wal);
    rc = wal_forget(s->wal, s->seq);
    if (rc) log_warn("store", "write-ahead log: deleting old segments: %s", strerror(-rc));
    return STORE_OK;
}
