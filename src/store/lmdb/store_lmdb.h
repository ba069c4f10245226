/* store_lmdb.h - the embedded storage backend (LMDB, same process).
 *
 * Reads run on the caller's thread and complete before the call returns.
 * Writes go to one writer thread that applies every queued write in a single
 * LMDB transaction (group commit) and logs it in the write-ahead log;
 * callbacks run on a second thread, in commit order, once the log is synced.
 * The folder holds data.mdb, base.mdb, wal/, state and lock (datadir.h);
 * one process at a time may open it.
 */
#ifndef MESSENGER_STORE_LMDB_H
#define MESSENGER_STORE_LMDB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/uuid.h"
#include "store/store.h"

typedef struct store_lmdb_config {
    const char *dir;        /* created if missing */
    size_t map_size_mb;     /* maximum database size */
    size_t max_batch;       /* most writes in one commit */
    /* Bulk loading (the seeder): writes are not logged; the store syncs
     * and writes a base copy when it closes. A crash while loading loses
     * what was loaded (after a machine crash: all of it, back to the last
     * base), never what was there before. */
    bool bulk_load;
    /* A new base copy is written when the write-ahead log has grown past
     * the larger of this and the last base's size (0: 64 MiB). */
    uint64_t rebase_log_bytes;
} store_lmdb_config_t;

/* Opens (creating if needed) the store in cfg->dir. ids must outlive the
 * store. Returns 0, or a negative STORE_E* code with a message logged. On a
 * full disk it opens READ-ONLY (below) rather than failing. */
int store_lmdb_open(const store_lmdb_config_t *cfg, idgen_t *ids, store_t **out);

/* NULL while the store takes writes. While the disk is full it is
 * read-only: reads are served, every write answers STORE_EFULL at once, a
 * warning was logged, and it takes writes again by itself within about a
 * second of space returning. Then this returns why, a static string such as
 * "disk full: the write-ahead log cannot grow" (for GET /health to report
 * "degraded"). Any thread, any time while the store is open; NULL for a
 * store that is not this backend's. */
const char *store_lmdb_read_only(store_t *s);

#endif
