/* lmdb_space.c - disk space: the writer reserves data.mdb's blocks before
 * it writes, and the store turns read-only on a full disk and back by
 * itself. Apart because every write path (a batch, a replay, the migration,
 * open) asks it for room, with one worst case, and because the read-only
 * mode is one state with one way in and one way out.
 *
 * Disk space.
 *
 * MDB_WRITEMAP writes the database through a shared, writable map of
 * data.mdb, which LMDB makes as large as the map size with ftruncate (16 GiB
 * by default): a sparse file. The first write to a page past the blocks the
 * file has makes the kernel allocate one then and there, and on a full disk
 * it answers that page fault with SIGBUS: the process dies. So the writer
 * never touches a page that is not allocated. Before it applies writes it
 * reserves data.mdb's blocks (fallocate, which allocates without writing
 * and leaves the size alone) up to the end of the database plus the most
 * those writes can add (lmdb_write_pages: a worst case), and RESERVE_AHEAD beyond
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
#include "store/lmdb/lmdb_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "store/lmdb/datadir.h"
#include "util/log.h"

#define RESERVE_AHEAD (64ull << 20)
#define RO_RETRY_US 1000000
#define RESUME_FREE_BYTES (4ull << 20) /* less free than this stays read-only (no flapping) */

static const char *const RO_WHY[RO_COUNT] = {
    NULL, "disk full: the database file cannot grow", "disk full: the write-ahead log cannot grow",
    "disk full: the state file cannot be written", "disk full: the first base copy cannot be written",
};

bool lmdb_space_errno(int neg_errno) {
    return neg_errno == -ENOSPC || neg_errno == -EDQUOT;
}

uint64_t lmdb_write_pages(const lmdb_store_t *s, size_t vlen) {
    return 2 * (s->depth + 1) + 2 + vlen / s->psize;
}

uint64_t lmdb_op_pages(const lmdb_store_t *s, const op_t *op) {
    if (s->data_fd < 0) return 0;
    size_t v = 128;
    if (op->kind == OP_SEND) v += op->send.content_len + (op->send.client_message_id ? op->send.client_message_id_len : 0);
    if (op->kind == OP_USER_CREATE) v += op->user.name_len + op->user.password_hash_len;
    return 8 * lmdb_write_pages(s, v);
}

uint64_t lmdb_db_end(const lmdb_store_t *s) {
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

int lmdb_reserve(lmdb_store_t *s, uint64_t end) {
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

void lmdb_batch_space_begin(lmdb_store_t *s) {
    s->batch_pages = 0;
    if (s->data_fd < 0) return;
    s->batch_end = lmdb_db_end(s);
    s->depth = tree_depth(s, s->txn);
}

int lmdb_batch_space_add(lmdb_store_t *s, uint64_t pages) {
    if (s->data_fd < 0) return STORE_OK;
    uint64_t total = s->batch_pages + pages, fixed = 64 + 2 * lmdb_write_pages(s, 0) + total / 256;
    int err = lmdb_reserve(s, s->batch_end + (total + fixed) * s->psize);
    if (!err) s->batch_pages = total;
    return err;
}

void lmdb_go_read_only(lmdb_store_t *s, int why) {
    s->ro_next_try_us = lmdb_mono_us() + RO_RETRY_US;
    if (atomic_exchange(&s->ro, why) == RO_NONE)
        log_warn("store", "%s: the store is READ-ONLY (reads served, writes answer 507) until space returns "
                 "(it tries again every %d s by itself)", RO_WHY[why], RO_RETRY_US / 1000000);
}

void lmdb_ro_try_leave(lmdb_store_t *s) {
    s->ro_next_try_us = lmdb_mono_us() + RO_RETRY_US;
    struct statvfs v;
    if (statvfs(s->dir, &v) == 0 && (uint64_t)v.f_bavail * v.f_frsize < RESUME_FREE_BYTES) return;
    int rc;
    if (s->ro_state_pending && (rc = datadir_state_write(s->dir, false, s->bulk))) {
        log_debug("store", "still cannot write the state file: %s", strerror(-rc));
        return;
    }
    s->ro_state_pending = false;
    if (s->ro_base_pending) {
        if (lmdb_base_now(s) || mdb_env_set_flags(s->env, MDB_NOSYNC, 1)) return;
        s->ro_base_pending = false;
    }
    if (s->data_fd >= 0 && lmdb_reserve(s, lmdb_db_end(s) + (64 + 64 * lmdb_write_pages(s, 4096)) * s->psize)) return;
    atomic_store(&s->ro, RO_NONE);
    if (wal_prepare_again(s->wal)) log_info("store", "write-ahead log: preparing segments again");
    log_warn("store", "disk space is back: the store takes writes again (it was read-only)");
}

void lmdb_space_init(lmdb_store_t *s) {
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

bool lmdb_can_reserve(const char *dir) {
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

const char *store_lmdb_read_only(store_t *base) {
    if (!base || base->ops != &lmdb_ops) return NULL;
    int why = atomic_load(&((lmdb_store_t *)base)->ro);
    return why > RO_NONE && why < RO_COUNT ? RO_WHY[why] : NULL;
}
