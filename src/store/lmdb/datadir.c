/* datadir.c - the embedded store's folder (datadir.h). */
#include "store/lmdb/datadir.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fs.h"
#include "util/log.h"

#define BOOT_ID_MAX 64

static int path(char out[PATH_MAX], const char *dir, const char *name) {
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = fsync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Renames tmp over final within dir, durably. */
static int install(const char *dir, const char *tmp, const char *final) {
    if (rename(tmp, final) != 0) return -errno;
    return fsync_dir(dir);
}

int datadir_lock(const char *dir, int *fd) {
    char p[PATH_MAX];
    int rc = path(p, dir, "lock");
    if (rc) return rc;
    int f = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (f < 0) return -errno;
    if (flock(f, LOCK_EX | LOCK_NB) != 0) {
        rc = -errno;
        close(f);
        return rc;
    }
    *fd = f;
    return 0;
}

void datadir_unlock(int fd) {
    if (fd >= 0) close(fd); /* closing releases the flock */
}

/* The kernel's id of this boot; "" when it cannot be read (then every
 * unclean state counts as a machine crash: the safe side). */
static void boot_id(char out[BOOT_ID_MAX]) {
    out[0] = '\0';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
    if (!f) return;
    if (!fgets(out, BOOT_ID_MAX, f)) out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

void datadir_state_read(const char *dir, datadir_state_t *out) {
    *out = (datadir_state_t){.trusted = false, .load_unfinished = false};
    char p[PATH_MAX];
    if (path(p, dir, "state")) return;
    FILE *f = fopen(p, "re");
    if (!f) {
        out->trusted = errno == ENOENT;
        return;
    }
    char boot[BOOT_ID_MAX] = "", now[BOOT_ID_MAX];
    int clean = 0, load = 0;
    int parsed = fscanf(f, "boot %63s clean %d load %d", boot, &clean, &load); /* no load line: older */
    fclose(f);
    /* Read back from disk: checked like input. Unreadable, or a flag that
     * is neither 0 nor 1, is the safe side (untrusted). */
    if (parsed < 2 || (clean != 0 && clean != 1) || (load != 0 && load != 1)) return;
    out->load_unfinished = clean != 1 && load == 1;
    if (clean == 1) {
        out->trusted = true;
        return;
    }
    boot_id(now);
    out->trusted = now[0] && strcmp(now, boot) == 0;
}

int datadir_state_write(const char *dir, bool clean, bool loading) {
    char p[PATH_MAX], tmp[PATH_MAX], boot[BOOT_ID_MAX];
    int rc = path(p, dir, "state");
    if (!rc) rc = path(tmp, dir, "state.tmp");
    if (rc) return rc;
    boot_id(boot);
    char text[BOOT_ID_MAX + 48];
    int n = snprintf(text, sizeof text, "boot %s\nclean %d\nload %d\n", boot[0] ? boot : "unknown", clean ? 1 : 0,
                     loading ? 1 : 0);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    ssize_t w = write(fd, text, (size_t)n);
    rc = w < 0 ? -errno : w != n ? -EIO : fsync(fd) != 0 ? -errno : 0;
    close(fd);
    if (!rc) rc = install(dir, tmp, p);
    if (rc) unlink(tmp);
    return rc;
}

int64_t datadir_base_size(const char *dir) {
    char p[PATH_MAX];
    struct stat st;
    int rc = path(p, dir, "base.mdb");
    if (rc) return rc;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -errno;
}

int datadir_base_write(MDB_env *env, const char *dir, uint64_t *bytes) {
    char p[PATH_MAX], tmp[PATH_MAX];
    int rc = path(p, dir, "base.mdb");
    if (!rc) rc = path(tmp, dir, "base.mdb.tmp");
    if (rc) return rc;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    /* Past the page cache (LMDB's copy writes page-aligned buffers, as its
     * own mdb_env_copy2 does with O_DIRECT): a base is hundreds of MiB, and
     * through the cache it became one flood of writeback at the final
     * fsync that the log's fdatasyncs queued behind (sends' p99 0.7 s while
     * a base was written). Where the file system refuses, the cache it is. */
    int fl = fcntl(fd, F_GETFL);
    bool direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    /* mdb_env_copyfd2 copies the snapshot of its own read transaction: a
     * consistent database even while the writer commits. Compacting leaves
     * out free pages and renumbers the rest: a smaller base, written faster. */
    rc = mdb_env_copyfd2(env, fd, MDB_CP_COMPACT);
    if (rc) rc = rc > 0 ? -rc : -EIO;
    struct stat st;
    if (!rc && (fsync(fd) != 0 || fstat(fd, &st) != 0)) rc = -errno;
    /* Through the cache, the copy's pages (clean after the fsync) would stay
     * there; a base is only read again after a machine crash. */
    if (!rc && !direct) posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    close(fd);
    /* The old base's blocks go after the new one is in place, a slice at a
     * time (fs.h): hold it open across the rename. */
    int old = rc ? -1 : open(p, O_WRONLY | O_CLOEXEC);
    if (!rc) rc = install(dir, tmp, p);
    if (old >= 0) {
        if (!rc) fs_release_gently(old);
        close(old);
    }
    if (rc) {
        unlink(tmp);
        return rc;
    }
    *bytes = (uint64_t)st.st_size;
    return 0;
}

int datadir_base_restore(const char *dir) {
    char base[PATH_MAX], data[PATH_MAX], tmp[PATH_MAX];
    int rc = path(base, dir, "base.mdb");
    if (!rc) rc = path(data, dir, "data.mdb");
    if (!rc) rc = path(tmp, dir, "data.mdb.tmp");
    if (rc) return rc;
    int in = open(base, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -errno;
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
        rc = -errno;
        close(in);
        return rc;
    }
    ssize_t n;
    while ((n = copy_file_range(in, NULL, out, NULL, 1 << 30, 0)) > 0) {}
    if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
        /* A file system without copy_file_range: copy by hand. */
        enum { CHUNK = 1 << 20 };
        char *buf = malloc(CHUNK);
        n = buf ? 0 : -1;
        if (!buf) errno = ENOMEM;
        if (!n && (lseek(in, 0, SEEK_SET) != 0 || ftruncate(out, 0) != 0 || lseek(out, 0, SEEK_SET) != 0)) n = -1;
        ssize_t r;
        while (n == 0 && (r = read(in, buf, CHUNK)) != 0) {
            if (r < 0 || write(out, buf, (size_t)r) != r) n = -1;
        }
        free(buf);
    }
    rc = n < 0 ? (errno ? -errno : -EIO) : fsync(out) != 0 ? -errno : 0;
    /* The copy streamed through the page cache, which may now hold the file
     * in large folios: every 4 KiB page LMDB then writes would dirty a whole
     * folio (sends measured 2-3x slower, bench/README.md). Clean after the
     * fsync: drop them. */
    if (!rc) posix_fadvise(out, 0, 0, POSIX_FADV_DONTNEED);
    close(in);
    close(out);
    if (!rc) rc = install(dir, tmp, data);
    if (rc) unlink(tmp);
    return rc;
}
