/* lmdb_open.c - the store's lifetime: store_lmdb_open takes the folder
 * (its lock, its state file, restoring data.mdb after a machine crash),
 * opens the environment, reserves space, recovers, migrates, makes the
 * first base and starts the threads, in that order; lmdb_close undoes it;
 * and the operations table that store.c dispatches through.
 *
 * Apart because the order of those steps, and what each failure leaves
 * behind, is the whole of it.
 */
#include "store/lmdb/lmdb_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/lmdb/datadir.h"
#include "util/log.h"

/* A base copy is made when the log has grown past the last base's size
 * (so copying costs at most as much I/O as logging), and at least this. */
#define REBASE_LOG_BYTES (64ull << 20)

/* What both a failed open and a close let go of last, once the environment
 * is closed. */
static void store_free(lmdb_store_t *s) {
    wal_close(s->wal);
    buf_free(&s->redo);
    datadir_unlock(s->lock_fd);
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
    /* Never an fsync per commit: the log makes writes durable ("Durability",
     * lmdb_internal.h).
     * Writes go straight into the shared map: a commit then costs no
     * write(2) per dirty page (those were a third of the writer's CPU); safe
     * on a full disk only where blocks can be reserved ("disk space"). */
    unsigned flags = MDB_NOTLS | (lmdb_can_reserve(cfg->dir) ? MDB_WRITEMAP : 0) | (has_base ? MDB_NOSYNC : 0);
    if ((rc = mdb_env_open(s->env, cfg->dir, flags, 0600))) return rc;
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(s->env, NULL, 0, &txn))) return rc;
    for (int i = 0; i < DB_COUNT; i++) {
        if ((rc = mdb_dbi_open(txn, lmdb_db_names[i], MDB_CREATE, &s->dbi[i]))) {
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
    } else if ((err = lmdb_base_now(s)) == STORE_OK) {
        err = lmdb_map_err(mdb_env_set_flags(s->env, MDB_NOSYNC, 1));
    } else if (err == STORE_EFULL && !s->bulk) {
        s->ro_base_pending = true;
        lmdb_go_read_only(s, RO_BASE);
        err = STORE_OK;
    }
    if (!err && atomic_load(&s->ro)) err = lmdb_map_err(mdb_env_sync(s->env, 1));
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
        if (s->bulk || !lmdb_space_errno(rc)) return STORE_EIO;
        s->ro_state_pending = true;
        lmdb_go_read_only(s, RO_STATE);
    }
    return STORE_OK;
}

int store_lmdb_open(const store_lmdb_config_t *cfg, idgen_t *ids, store_t **out) {
    if (mkdir(cfg->dir, 0700) != 0 && errno != EEXIST) {
        log_error("store", "cannot create data directory %s: %s", cfg->dir, strerror(errno));
        return STORE_EIO;
    }
    lmdb_store_t *s = calloc(1, sizeof *s);
    if (!s) return STORE_ENOMEM;
    s->base.ops = &lmdb_ops;
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
        err = lmdb_map_err(rc) ? lmdb_map_err(rc) : STORE_EIO;
        goto fail;
    }
    lmdb_space_init(s);
    if ((err = lmdb_reserve(s, lmdb_db_end(s) + 64 * lmdb_write_pages(s, 4096) * s->psize))) {
        if (err != STORE_EFULL) goto fail;
        lmdb_go_read_only(s, RO_SPACE);
    }
    if ((err = lmdb_recover(s)) || (err = lmdb_migrate(s)) ||
        (err = open_base(s, base_size >= 0 && !rebase, base_size)) || (err = lmdb_start_threads(s)))
        goto fail;
    log_info("store", "lmdb store open at %s (map %zu MiB, log seq %llu)", cfg->dir, cfg->map_size_mb,
             (unsigned long long)s->seq);
    *out = &s->base;
    return STORE_OK;
fail:
    if (s->env) mdb_env_close(s->env);
    store_free(s);
    return err;
}

static void lmdb_close(store_t *base) {
    lmdb_store_t *s = (lmdb_store_t *)base;
    lmdb_stop_threads(s);
    int rc = mdb_env_sync(s->env, 1);
    if (rc) log_error("store", "final sync failed: %s", mdb_strerror(rc));
    /* The load is in data.mdb only: copy it, so that the base and the log
     * hold it too. The copy is compact, and it replaces data.mdb as well: a
     * load leaves ~40% of the file as free pages from its copy-on-write
     * batches, and durable sends measured 20% faster on the compact file. */
    if (!rc && s->bulk) rc = lmdb_base_now(s);
    mdb_env_close(s->env);
    if (!rc && s->bulk && (rc = datadir_base_restore(s->dir)))
        log_error("store", "cannot put the compacted load in place in %s: %s", s->dir, strerror(-rc));
    if (!rc && !atomic_load(&s->failed)) {
        rc = datadir_state_write(s->dir, true, false);
        if (rc) log_error("store", "cannot record the clean close in %s: %s", s->dir, strerror(-rc));
    }
    store_free(s);
}

const store_ops_t lmdb_ops = {
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
