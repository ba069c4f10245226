/* lmdb_recover.c - bringing the database up to date at open, on the
 * opening thread before the writer starts: the write-ahead log's replay
 * (lmdb_recover), then the one-time move of an older layout's table
 * (lmdb_migrate).
 *
 * Apart because it runs once, before anything else writes, and because
 * what it may drop or must refuse (a bad record, an LMDB failure) is a
 * policy of its own ("Recovery", lmdb_internal.h; wal.h).
 */
#include "store/lmdb/lmdb_internal.h"

#include <stdio.h>
#include <string.h>

#include "util/log.h"

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
    int err = lmdb_replay_space(r->s, data, len);
    if (!err) err = lmdb_map_err(mdb_txn_begin(r->s->env, NULL, 0, &txn));
    if (!err) {
        err = lmdb_redo_apply(r->s, txn, data, len);
        if (!err) err = lmdb_seq_put(r->s, txn, seq);
        if (!err) err = lmdb_map_err(mdb_txn_commit(txn));
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

int lmdb_recover(lmdb_store_t *s) {
    MDB_txn *txn;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc) return lmdb_map_err(rc);
    int err = lmdb_seq_get(s, txn, &s->seq);
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
        if ((err = lmdb_base_now(s))) return err;
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

/* Reserves room for lmdb_migrate() ("disk space", lmdb_space.c): in one transaction it
 * copies every page of the recency tree at most once, gives each of the
 * old table's rows (st) a value of up to a conv_rec with content, and frees
 * the old table's pages into the free list. */
static int migrate_space(lmdb_store_t *s, MDB_txn *txn, const MDB_stat *old) {
    MDB_stat rec;
    int rc = mdb_stat(txn, s->dbi[DB_RECENCY], &rec);
    if (rc) return lmdb_map_err(rc);
    uint64_t old_pages = old->ms_branch_pages + old->ms_leaf_pages + old->ms_overflow_pages;
    uint64_t pages = 2 * (rec.ms_branch_pages + rec.ms_leaf_pages + rec.ms_overflow_pages) +
                     old->ms_entries * (2 + (CONV_REC_HDR + 4096) / s->psize) + old_pages / 256 + 1024;
    return lmdb_reserve(s, lmdb_db_end(s) + pages * s->psize);
}

int lmdb_migrate(lmdb_store_t *s) {
    MDB_txn *txn;
    MDB_stat st;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) return lmdb_map_err(rc);
    if ((rc = mdb_stat(txn, s->dbi[DB_CONVS_BY_USER], &st)) || st.ms_entries == 0) {
        mdb_txn_abort(txn);
        return lmdb_map_err(rc);
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
            MDB_val rk = lmdb_conv_row_key(ck, &user, &conv), rv;
            if ((rc = mdb_get(txn, s->dbi[DB_CONVS_BY_USER], &rk, &rv))) break;
            /* A copy: the put moves the page's bytes that k points at. */
            memcpy(key, k.mv_data, sizeof key);
            MDB_val kc = lmdb_val(key, sizeof key);
            if ((rc = mdb_cursor_put(c, &kc, &rv, MDB_CURRENT))) break;
            filled++;
        }
        mdb_cursor_close(c);
    }
    if (rc == MDB_NOTFOUND) rc = mdb_drop(txn, s->dbi[DB_CONVS_BY_USER], 0);
    if (rc) {
        log_error("store", "moving conversation rows to the recency index: %s", mdb_strerror(rc));
        mdb_txn_abort(txn);
        return lmdb_map_err(rc) ? lmdb_map_err(rc) : STORE_EIO;
    }
    if (filled) log_info("store", "filled %zu recency rows", filled);
    return lmdb_map_err(mdb_txn_commit(txn));
}
