/* datadir.h - the embedded store's folder: who owns it, how it was left, and
 * its base copy.
 *
 *   lock       held (flock) by the one process that has the store open
 *   state      "boot <kernel boot id>\nclean <0|1>\nload <0|1>\n": which boot
 *              last opened the store, whether that process closed it cleanly,
 *              and whether it was a bulk load (whose writes are not logged)
 *   data.mdb   the LMDB database (LMDB's own lock.mdb beside it)
 *   base.mdb   a consistent copy of data.mdb, made durably (see below)
 *   wal/       the write-ahead log (wal.h)
 *
 * The store commits LMDB without fsync, so after an operating-system crash
 * data.mdb may be torn; base.mdb plus the log then rebuild it. After a mere
 * process crash the kernel still holds every page the process wrote, so
 * data.mdb is whole. The state file tells the two apart: an unclean state
 * written under another boot id means the machine went down.
 *
 * Errors are negative errno values.
 */
#ifndef MESSENGER_DATADIR_H
#define MESSENGER_DATADIR_H

#include <stdbool.h>
#include <stdint.h>

typedef struct MDB_env MDB_env;

/* Takes the folder's lock without waiting; -EWOULDBLOCK when another process
 * holds it. On success *fd keeps it until datadir_unlock(). */
int datadir_lock(const char *dir, int *fd);
void datadir_unlock(int fd);

typedef struct datadir_state {
    /* data.mdb can be used as it is: no state file (a new folder, or one
     * written by a version that synced every commit), a clean close, or an
     * unclean one under the running boot (a process crash). */
    bool trusted;
    /* An unclean close during a bulk load: data.mdb holds loaded rows that
     * neither base.mdb nor the log has. */
    bool load_unfinished;
} datadir_state_t;

void datadir_state_read(const char *dir, datadir_state_t *out);

/* Writes the state durably (temporary file, fsync, rename, fsync folder). */
int datadir_state_write(const char *dir, bool clean, bool loading);

/* The size of base.mdb, or a negative errno (-ENOENT: there is none). */
int64_t datadir_base_size(const char *dir);

/* Copies a consistent snapshot of env into base.mdb durably (compacted: no
 * free pages), replacing the old base only once the new one is whole. Safe
 * while other threads write. Sets *bytes to the copy's size. */
int datadir_base_write(MDB_env *env, const char *dir, uint64_t *bytes);

/* Replaces data.mdb with a copy of base.mdb, durably. */
int datadir_base_restore(const char *dir);

#endif
