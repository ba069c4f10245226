/* fuzz_wal.c - recovery of the write-ahead log (src/store/lmdb/wal.h) from a
 * segment file of arbitrary bytes, through the public API only: the input
 * is written as `0000000000000001.wal` in an empty folder, then wal_open +
 * wal_replay, as the LMDB store does at start-up.
 *
 * Properties: whatever the bytes, recovery neither crashes nor reads out of
 * bounds; records come in sequence order, each at most WAL_RECORD_MAX bytes
 * and no more than the file holds; and recovery is stable: a second
 * wal_open + wal_replay of what the first one left answers the same (same
 * result, same records, same newest seq), so a crash during start-up
 * cannot make the next start-up see a different log.
 *
 * The folder is on /dev/shm when there is one (fsync costs nothing there)
 * and emptied after each input (recovery may set corrupt data aside in a
 * subfolder).
 *
 * FUZZ_WAL_SEEDS=DIR: writes a few valid segments made with wal_append to
 * DIR (the corpus's seeds) and exits. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz_common.h"
#include "store/lmdb/wal.h"
#include "util/log.h"

static char dir[64];

typedef struct seen {
    uint64_t count, last_seq, bytes, sum;
    size_t file_len;
} seen_t;

static int on_record(void *ctx, uint64_t seq, const void *data, size_t len) {
    seen_t *s = ctx;
    FUZZ_CHECK(len <= WAL_RECORD_MAX && len <= s->file_len);
    FUZZ_CHECK(s->count == 0 || seq == s->last_seq + 1);
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) s->sum += p[i]; /* ASan: every byte readable */
    s->count++;
    s->last_seq = seq;
    s->bytes += len;
    FUZZ_CHECK(s->bytes <= s->file_len);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    if (ftw->level > 0) remove(path);
    return 0;
}

static void empty_dir(void) { nftw(dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS); }

static void write_file(const char *name, const uint8_t *data, size_t size) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FUZZ_CHECK(fd >= 0);
    size_t off = 0;
    while (off < size) {
        ssize_t n = write(fd, data + off, size - off);
        FUZZ_CHECK(n > 0);
        off += (size_t)n;
    }
    close(fd);
}

/* One recovery; returns wal_replay's result (or wal_open's). */
static int recover(seen_t *s, uint64_t *last) {
    wal_t *w = NULL;
    *last = 0;
    int rc = wal_open(dir, 0, false, &w);
    if (rc) return rc;
    rc = wal_replay(w, 0, on_record, s, last);
    if (rc == 0 && s->count) FUZZ_CHECK(*last == s->last_seq);
    wal_close(w);
    return rc;
}

static void make_seeds(const char *out) {
    static const char *payloads[] = {"", "a", "MWL1 looks like a header", "\0\0\0\0\0\0\0\0", "x"};
    for (int n = 1; n <= 4; n++) {
        wal_t *w = NULL;
        FUZZ_CHECK(wal_open(dir, 0, false, &w) == 0);
        uint64_t last;
        FUZZ_CHECK(wal_replay(w, 0, on_record, &(seen_t){.file_len = SIZE_MAX}, &last) == 0);
        for (int i = 0; i < n; i++) {
            const char *p = payloads[(i + n) % 5];
            size_t len = (i + n) % 5 == 3 ? 8 : strlen(p);
            FUZZ_CHECK(wal_append(w, (uint64_t)i + 1, p, len) == 0);
        }
        FUZZ_CHECK(wal_sync(w) == 0);
        wal_close(w);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "cp %s/0000000000000001.wal %s/seed-%d-records", dir, out, n);
        FUZZ_CHECK(system(cmd) == 0);
        empty_dir();
    }
}

static void cleanup(void) {
    empty_dir();
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_set_level(LOG_OFF); /* recovery logs every drop: noise at 10,000 inputs a second */
    struct stat st;
    snprintf(dir, sizeof dir, "%s/fuzz-wal-XXXXXX", stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp");
    FUZZ_CHECK(mkdtemp(dir) != NULL);
    atexit(cleanup);
    const char *seeds = getenv("FUZZ_WAL_SEEDS");
    if (seeds) {
        make_seeds(seeds);
        exit(0);
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    write_file("0000000000000001.wal", data, size);
    seen_t a = {.file_len = size}, b = {.file_len = size};
    uint64_t last_a, last_b;
    int rc_a = recover(&a, &last_a);
    FUZZ_CHECK(rc_a <= 0);
    int rc_b = recover(&b, &last_b);
    FUZZ_CHECK(rc_b == rc_a);
    if (rc_a == 0) {
        FUZZ_CHECK(b.count == a.count && b.bytes == a.bytes && b.sum == a.sum && last_b == last_a);
    }
    empty_dir();
    return 0;
}
