/* wal.c - the write-ahead log (wal.h): segment files of checksummed records.
 *
 * Appends go through write(2) after the last record of the newest segment;
 * wal_sync() is one fdatasync of that file. A new segment file is made
 * durable in its folder (fsync of the directory) before records go into it,
 * so that a synced record can never sit in a file that a crash forgets. With
 * preparation on, the "wal-prepare" thread keeps the next segment ready as
 * PREP_NAME (zeros, synced), and a rotation renames it into place.
 */
#include "store/lmdb/wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "util/bytes.h"
#include "util/fs.h"
#include "util/log.h"
#include "util/thread.h"

#define WAL_MAGIC 0x4d574c31u /* "MWL1" */
#define HDR_LEN 20
#define NAME_LEN 21           /* 16 hex digits + ".wal" + NUL */
#define PREP_NAME "next.prep" /* the prepared segment (not a segment name) */
#define ZERO_CHUNK (1u << 20) /* zeros are written and checked this much at a time */

typedef struct segment {
    uint64_t first;           /* seq of its first record (its name) */
    uint64_t bytes;
} segment_t;

struct wal {
    char *dir;
    int dir_fd;
    size_t segment_bytes;
    /* mu guards segs, nsegs, cap and fd: wal_sync() and wal_forget() may run
     * on other threads than the appending one. The appending thread alone
     * changes the newest segment and fd; wal_forget() never drops the newest
     * segment, so between two locked sections the newest stays the same. */
    pthread_mutex_t mu;
    segment_t *segs;          /* oldest first; the last one is appended to */
    size_t nsegs, cap;
    int fd;                   /* the newest segment, or -1 until the first append */
    uint64_t last;            /* newest seq, 0 when empty */
    bool rotate;              /* the next append starts a new segment */
    bool broken;              /* a failed append could not be undone */
    wal_dropped_t dropped;    /* what the last wal_replay() dropped */
    /* A failed fdatasync, kept: after one, the kernel may have dropped the
     * unwritten pages, and a later sync of the same file can succeed with
     * them gone. Every later wal_sync() reports it. */
    _Atomic int sync_err;
    /* Segment preparation (wal_open's prepare); the flags under mu. */
    bool prepare;             /* wanted, and not given up after an error */
    bool prep_started;        /* prep_thread runs (only the appender starts it) */
    bool prep_gave_up;        /* it stopped after an error (say, a full disk) and awaits a join */
    bool prep_ready;          /* PREP_NAME is a whole, synced segment of zeros */
    atomic_bool prep_stop;
    pthread_cond_t prep_cv;
    pthread_t prep_thread;
};

static void seg_name(char out[NAME_LEN], uint64_t first) {
    snprintf(out, NAME_LEN, "%016" PRIx64 ".wal", first);
}

static uint32_t record_crc(const uint8_t *hdr, const void *data, size_t len) {
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, hdr + 4, 12); /* length and seq */
    /* zlib takes uInt lengths: feed large payloads in pieces. */
    const uint8_t *p = data;
    while (len) {
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int seg_cmp(const void *a, const void *b) {
    uint64_t x = ((const segment_t *)a)->first, y = ((const segment_t *)b)->first;
    return x < y ? -1 : x > y;
}

static int seg_push(wal_t *w, uint64_t first, uint64_t bytes) {
    if (w->nsegs == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        segment_t *s = realloc(w->segs, cap * sizeof *s);
        if (!s) return -ENOMEM;
        w->segs = s;
        w->cap = cap;
    }
    w->segs[w->nsegs++] = (segment_t){.first = first, .bytes = bytes};
    return 0;
}

/* Lists the segment files of the folder, oldest first. */
static int scan(wal_t *w) {
    DIR *d = opendir(w->dir);
    if (!d) return -errno;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (strlen(n) != NAME_LEN - 1 || strcmp(n + 16, ".wal") != 0) continue;
        char *end;
        errno = 0;
        unsigned long long first = strtoull(n, &end, 16);
        if (errno || end != n + 16) continue;
        struct stat st;
        if (fstatat(w->dir_fd, n, &st, 0) != 0) { rc = -errno; break; }
        if ((rc = seg_push(w, first, (uint64_t)st.st_size))) break;
    }
    closedir(d);
    if (!rc && w->nsegs) qsort(w->segs, w->nsegs, sizeof *w->segs, seg_cmp);
    return rc;
}

int wal_open(const char *dir, size_t segment_bytes, bool prepare, wal_t **out) {
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -errno;
    wal_t *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    w->fd = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->prep_cv, NULL);
    w->prepare = prepare;
    w->segment_bytes = segment_bytes ? segment_bytes : 64u << 20;
    w->dir = strdup(dir);
    w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = !w->dir ? -ENOMEM : w->dir_fd < 0 ? -errno : scan(w);
    /* One a crash interrupted may be partial: it is made again. */
    if (!rc && unlinkat(w->dir_fd, PREP_NAME, 0) != 0 && errno != ENOENT) rc = -errno;
    if (rc) {
        wal_close(w);
        return rc;
    }
    *out = w;
    return 0;
}

/* Reads exactly n bytes at off; returns n, fewer at the end of the file, or
 * a negative errno. */
static ssize_t read_at(int fd, void *p, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)p + got, n - got, off + (off_t)got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

static int write_all(int fd, const void *p, size_t n, off_t off);

/* A payload buffer that grows to the largest record read. */
typedef struct pbuf {
    uint8_t *p;
    size_t cap;
} pbuf_t;

/* True when every byte of fd in [from, size) is zero: space of a prepared
 * segment that no append has reached (a record header is never zero). */
static bool zero_to_end(int fd, uint64_t from, uint64_t size) {
    uint8_t *buf = malloc(ZERO_CHUNK);
    if (!buf) return false;
    bool zero = true;
    for (uint64_t off = from; off < size && zero;) {
        size_t n = size - off < ZERO_CHUNK ? (size_t)(size - off) : ZERO_CHUNK;
        if (read_at(fd, buf, n, (off_t)off) != (ssize_t)n) { zero = false; break; }
        for (size_t i = 0; i < n && zero; i++) zero = buf[i] == 0;
        off += n;
    }
    free(buf);
    return zero;
}

enum { REC_OK = 0, REC_BAD = 1, REC_ZEROS = 2 };

/* Reads the record at `off` of fd (a segment of `size` bytes): its header
 * into hdr, its payload into pb, its length into *len. Returns REC_OK for a
 * whole record whose CRC matches, REC_ZEROS when only zeros are left (unused
 * prepared space), REC_BAD otherwise (*why says what), or a negative errno.
 * The length is checked against the file before anything is allocated, so
 * a damaged length field costs no memory. */
static int read_record(int fd, uint64_t off, uint64_t size, uint8_t hdr[HDR_LEN], pbuf_t *pb, size_t *len,
                       const char **why) {
    ssize_t r = read_at(fd, hdr, HDR_LEN, (off_t)off);
    if (r < 0) return (int)r;
    if (r < HDR_LEN) { *why = "a torn record header"; return REC_BAD; }
    uint32_t magic = get32(hdr), n = get32(hdr + 4);
    if (magic == 0 && zero_to_end(fd, off, size)) return REC_ZEROS;
    if (magic != WAL_MAGIC) { *why = "a bad record header (magic)"; return REC_BAD; }
    if (n > WAL_RECORD_MAX || size - off - HDR_LEN < n) { *why = "a record longer than its file"; return REC_BAD; }
    if (n > pb->cap) {
        void *p = realloc(pb->p, n);
        if (!p) return -ENOMEM;
        pb->p = p;
        pb->cap = n;
    }
    r = read_at(fd, pb->p, n, (off_t)(off + HDR_LEN));
    if (r < 0) return (int)r;
    if ((size_t)r != n || record_crc(hdr, pb->p, n) != get32(hdr + 16)) { *why = "a bad CRC"; return REC_BAD; }
    *len = n;
    return REC_OK;
}

/* Counts the whole, valid records in [from, size) of fd: record by record,
 * and past anything that is not one by searching for the next valid header
 * byte by byte (so a record inside another's payload may count too). Only
 * for the log line that says what a recovery dropped. */
static uint64_t count_records(int fd, uint64_t from, uint64_t size) {
    uint8_t *buf = malloc(ZERO_CHUNK);
    pbuf_t pb = {0};
    uint64_t n = 0, pos = from, boff = 0, blen = 0;
    while (buf && pos + HDR_LEN <= size) {
        if (pos < boff || pos + HDR_LEN > boff + blen) { /* refill from pos */
            size_t want = size - pos < ZERO_CHUNK ? (size_t)(size - pos) : ZERO_CHUNK;
            if (read_at(fd, buf, want, (off_t)pos) != (ssize_t)want) break;
            boff = pos;
            blen = want;
        }
        uint8_t hdr[HDR_LEN];
        size_t len = 0;
        const char *why;
        if (get32(buf + (pos - boff)) == WAL_MAGIC && read_record(fd, pos, size, hdr, &pb, &len, &why) == REC_OK) {
            n++;
            pos += HDR_LEN + len;
        } else {
            pos++;
        }
    }
    free(pb.p);
    free(buf);
    return n;
}

/* Where the log stops being whole: the first torn or bad record. */
typedef struct cut {
    bool found;
    size_t seg;             /* index in segs */
    uint64_t off;           /* where in that segment the bad record starts */
    uint64_t seq;           /* the seq it should have carried */
    const char *why;
} cut_t;

/* Reads the records of segment i, delivering those > after to fn. Returns
 * 0 when every byte is a whole record or unused space (then the segment's
 * bytes are its records'), 1 when a record is torn or bad (*cut says where;
 * the records before it were delivered), or a negative value (fn's, or an
 * errno). */
static int replay_segment(wal_t *w, size_t i, uint64_t *expect, uint64_t after,
                          int (*fn)(void *, uint64_t, const void *, size_t), void *ctx, cut_t *cut) {
    char name[NAME_LEN];
    seg_name(name, w->segs[i].first);
    int fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    uint64_t off = 0, size = w->segs[i].bytes;
    pbuf_t pb = {0};
    int rc = 0;
    while (off < size) {
        uint8_t hdr[HDR_LEN];
        size_t len = 0;
        const char *why = NULL;
        rc = read_record(fd, off, size, hdr, &pb, &len, &why);
        if (rc == REC_ZEROS) {
            rc = 0;
            w->segs[i].bytes = off; /* a prepared segment's unused space is no record */
            break;
        }
        if (rc == REC_OK && be64_get(hdr + 8) != *expect) {
            rc = REC_BAD; /* whole and valid, yet out of order: no crash does that */
            why = "a record out of sequence";
        } else if (rc == REC_OK && *expect > after && (rc = fn(ctx, *expect, pb.p, len)) > 0) {
            rc = REC_BAD;
            why = "a record its reader cannot use";
        }
        if (rc == REC_BAD) *cut = (cut_t){.found = true, .seg = i, .off = off, .seq = *expect, .why = why};
        if (rc) break;
        *expect += 1;
        off += HDR_LEN + len;
    }
    free(pb.p);
    close(fd);
    return rc;
}

/* Copies [from, end) of fd into a new file `name` in folder dfd, synced. */
static int copy_tail(int fd, uint64_t from, uint64_t end, int dfd, const char *name) {
    int out = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0) return -errno;
    uint8_t *buf = malloc(ZERO_CHUNK);
    int rc = buf ? 0 : -ENOMEM;
    for (uint64_t off = from; !rc && off < end;) {
        size_t n = end - off < ZERO_CHUNK ? (size_t)(end - off) : ZERO_CHUNK;
        ssize_t r = read_at(fd, buf, n, (off_t)off);
        rc = r < 0 ? (int)r : r != (ssize_t)n ? -EIO : write_all(out, buf, n, (off_t)(off - from));
        off += n;
    }
    if (!rc && fsync(out) != 0) rc = -errno;
    free(buf);
    close(out);
    if (rc) unlinkat(dfd, name, 0);
    return rc;
}

/* Makes the folder `corrupt-<UTC time>[-N]` in the log's folder; its name
 * goes to out. Returns its descriptor or a negative errno. */
static int aside_folder(wal_t *w, char out[64]) {
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    for (int k = 1; k < 1000; k++) {
        if (k == 1) snprintf(out, 64, "corrupt-%s", stamp);
        else snprintf(out, 64, "corrupt-%s-%d", stamp, k);
        if (mkdirat(w->dir_fd, out, 0700) == 0) {
            int fd = openat(w->dir_fd, out, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            return fd >= 0 ? fd : -errno;
        }
        if (errno != EEXIST) return -errno;
    }
    return -EEXIST;
}

/* Keeps a copy of what is dropped in a corrupt-* folder (see wal.h): the
 * damaged segment's bytes from the cut on, and the later segments, moved
 * whole (a rename: no space needed). A later segment that cannot be moved
 * is deleted: left in place it would collide with the segments the log
 * makes from the cut on. Returns 0, or the error that kept the copy from
 * being whole (logged by the caller). */
static int set_aside(wal_t *w, const cut_t *c, char folder[64]) {
    int dfd = aside_folder(w, folder);
    int rc = dfd < 0 ? dfd : 0;
    char name[NAME_LEN], tail[NAME_LEN + 32];
    seg_name(name, w->segs[c->seg].first);
    if (!rc && c->off == 0) {
        rc = renameat(w->dir_fd, name, dfd, name) != 0 ? -errno : 0;
    } else if (!rc) {
        snprintf(tail, sizeof tail, "%s.from-byte-%" PRIu64, name, c->off);
        int fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
        rc = fd < 0 ? -errno : copy_tail(fd, c->off, w->segs[c->seg].bytes, dfd, tail);
        if (fd >= 0) close(fd);
    }
    for (size_t j = c->seg + 1; j < w->nsegs; j++) {
        seg_name(name, w->segs[j].first);
        if (dfd >= 0 && renameat(w->dir_fd, name, dfd, name) == 0) continue;
        if (!rc) rc = -errno;
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT) return -errno;
    }
    if (dfd >= 0) {
        if (!rc && fsync(dfd) != 0) rc = -errno;
        close(dfd);
    }
    return rc;
}

/* Cuts segment c->seg at c->off, durably (deleting it when nothing is left
 * of it and it is still there). */
static int cut_segment(wal_t *w, const cut_t *c) {
    char name[NAME_LEN];
    seg_name(name, w->segs[c->seg].first);
    if (c->off == 0) return unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT ? -errno : 0;
    int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = ftruncate(fd, (off_t)c->off) != 0 || fdatasync(fd) != 0 ? -errno : 0;
    close(fd);
    return rc;
}

/* Sums up what is dropped from the cut on: bytes, whole records, later
 * segments. Only for the log line and wal_replay_dropped(). */
static void measure_drop(wal_t *w, const cut_t *c, wal_dropped_t *d) {
    *d = (wal_dropped_t){.from_seq = c->seq, .segments = w->nsegs - c->seg - 1};
    for (size_t j = c->seg; j < w->nsegs; j++) {
        uint64_t from = j == c->seg ? c->off : 0;
        d->bytes += w->segs[j].bytes - from;
        char name[NAME_LEN];
        seg_name(name, w->segs[j].first);
        int fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        d->records += count_records(fd, from, w->segs[j].bytes);
        close(fd);
    }
    /* A crash during an append tears only the newest record: nothing whole
     * after it, no later segment. Anything else is damage. */
    d->damage = d->segments > 0 || d->records > 0;
}

/* Drops everything from the cut on (the policy in wal.h): logs what, keeps
 * a copy of damage, cuts the segment, forgets the later ones. */
static int drop_from(wal_t *w, const cut_t *c) {
    wal_dropped_t d;
    measure_drop(w, c, &d);
    char name[NAME_LEN], folder[64] = "";
    seg_name(name, w->segs[c->seg].first);
    if (!d.damage) {
        log_warn("store", "write-ahead log: cutting a torn tail of %" PRIu64 " bytes (%s) off segment %s: "
                 "a crash during an append, never acknowledged", d.bytes, c->why, name);
    } else {
        int arc = set_aside(w, c, folder);
        log_error("store", "write-ahead log damaged: %s at byte %" PRIu64 " of segment %s, where record %" PRIu64
                  " belongs. Dropping the %" PRIu64 " bytes from there on (%" PRIu64 " whole records, %" PRIu64
                  " later segments) and starting with the records before it", c->why, c->off, name, c->seq, d.bytes,
                  d.records, d.segments);
        if (arc) log_error("store", "write-ahead log: could not keep a whole copy of the dropped bytes: %s",
                           strerror(-arc));
        else log_warn("store", "write-ahead log: the dropped bytes are kept in %s/%s", w->dir, folder);
        snprintf(d.folder, sizeof d.folder, "%s", arc ? "" : folder);
    }
    int rc = cut_segment(w, c);
    if (rc) return rc;
    w->nsegs = c->off ? c->seg + 1 : c->seg;
    w->segs[c->seg].bytes = c->off;
    w->dropped = d;
    return fsync(w->dir_fd) != 0 ? -errno : 0;
}

/* Deletes the empty segments at the end of the log. */
static void drop_empty_tail(wal_t *w) {
    while (w->nsegs && w->segs[w->nsegs - 1].bytes == 0) {
        char name[NAME_LEN];
        seg_name(name, w->segs[w->nsegs - 1].first);
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT) break;
        w->nsegs--;
    }
}

int wal_replay(wal_t *w, uint64_t after,
               int (*fn)(void *ctx, uint64_t seq, const void *data, size_t len), void *ctx,
               uint64_t *last) {
    memset(&w->dropped, 0, sizeof w->dropped);
    /* An empty newest segment holds nothing (a crash right after creating
     * it, or an append that failed and was undone): drop it. An empty one
     * before others was emptied by damage: the replay stops there. */
    drop_empty_tail(w);
    uint64_t expect = w->nsegs ? w->segs[0].first : 0; /* the seq the next record must carry */
    cut_t cut = {.found = false};
    for (size_t i = 0; i < w->nsegs && !cut.found; i++) {
        if (i + 1 < w->nsegs && w->segs[i + 1].first - 1 <= after) {
            /* Only records <= after: not read (a restart after a long run
             * reads only what the database lacks), not needed to follow on
             * (a deletion by wal_forget() that did not reach the disk). */
            expect = w->segs[i + 1].first;
            continue;
        }
        if (w->segs[i].first != expect) {
            cut = (cut_t){.found = true, .seg = i, .off = 0, .seq = expect, .why = "a missing segment before it"};
            break;
        }
        int rc = replay_segment(w, i, &expect, after, fn, ctx, &cut);
        if (rc < 0) return rc;
    }
    if (cut.found) {
        int rc = drop_from(w, &cut);
        if (rc) {
            log_error("store", "write-ahead log: cannot cut it at its damage: %s", strerror(-rc));
            return rc;
        }
        drop_empty_tail(w);
    }
    w->last = w->nsegs ? expect - 1 : 0;
    *last = w->last;
    return 0;
}

void wal_replay_dropped(const wal_t *w, wal_dropped_t *out) {
    *out = w->dropped;
}

static int write_all(int fd, const void *p, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)p + done, n - done, off + (off_t)done);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        done += (size_t)r;
    }
    return 0;
}

/* Writes PREP_NAME: segment_bytes of zeros, synced. */
static int prep_write(wal_t *w) {
    int fd = openat(w->dir_fd, PREP_NAME, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) return -errno;
    void *zeros = calloc(1, ZERO_CHUNK);
    int rc = zeros ? 0 : -ENOMEM;
    for (uint64_t off = 0; !rc && off < w->segment_bytes; off += ZERO_CHUNK) {
        if (atomic_load(&w->prep_stop)) rc = -ECANCELED;
        else rc = write_all(fd, zeros, w->segment_bytes - off < ZERO_CHUNK ? w->segment_bytes - off : ZERO_CHUNK,
                            (off_t)off);
    }
    if (!rc && fdatasync(fd) != 0) rc = -errno;
    free(zeros);
    close(fd);
    if (rc) unlinkat(w->dir_fd, PREP_NAME, 0);
    return rc;
}

/* The wal-prepare thread: keeps PREP_NAME ready while the log is open. */
static void *prep_main(void *arg) {
    wal_t *w = arg;
    pthread_setname_np(pthread_self(), "wal-prepare");
    /* The appends and syncs go first, for the CPU and for the disk. Starved,
     * preparation only falls behind: a rotation that finds no prepared
     * segment makes one itself (prep_take). */
    thread_background(true);
    pthread_mutex_lock(&w->mu);
    while (!atomic_load(&w->prep_stop)) {
        if (w->prep_ready) {
            pthread_cond_wait(&w->prep_cv, &w->mu);
            continue;
        }
        pthread_mutex_unlock(&w->mu);
        int rc = prep_write(w);
        pthread_mutex_lock(&w->mu);
        if (rc == -ECANCELED) break;
        if (rc) { /* e.g. a full disk: segments are made as they are needed */
            log_warn("store", "write-ahead log: cannot prepare a segment (%s): making them on demand",
                     strerror(-rc));
            w->prepare = false;
            w->prep_gave_up = true;
            break;
        }
        w->prep_ready = true;
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Takes the prepared segment, if one is ready, as segment `name`: true when
 * it did, false when there is none (or it could not be moved). */
static bool prep_take(wal_t *w, const char *name) {
    pthread_mutex_lock(&w->mu);
    bool ready = w->prepare && w->prep_ready;
    pthread_mutex_unlock(&w->mu);
    if (!ready) return 0;
    /* While prep_ready is set the preparer leaves PREP_NAME alone; it may
     * make the next one (O_TRUNC on that name) only once this one has been
     * moved away, or it would zero the records being appended. */
    bool taken = renameat2(w->dir_fd, PREP_NAME, w->dir_fd, name, RENAME_NOREPLACE) == 0;
    if (!taken) {
        log_warn("store", "write-ahead log: cannot use the prepared segment (%s)", strerror(errno));
        unlinkat(w->dir_fd, PREP_NAME, 0);
    }
    pthread_mutex_lock(&w->mu);
    w->prep_ready = false;
    pthread_cond_signal(&w->prep_cv); /* make the next one */
    pthread_mutex_unlock(&w->mu);
    return taken;
}

/* Opens segment `first` for appending, creating it durably. */
static int open_segment(wal_t *w, uint64_t first, bool create) {
    /* wal_sync() syncs only the newest segment: the one left behind is
     * made durable here. */
    if (w->fd >= 0 && fdatasync(w->fd) != 0) {
        int rc = -errno;
        atomic_store(&w->sync_err, rc);
        w->broken = true;
        return rc;
    }
    char name[NAME_LEN];
    seg_name(name, first);
    bool prepared = create && prep_take(w, name);
    int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC | (create && !prepared ? O_CREAT | O_EXCL : 0), 0600);
    if (fd < 0) return -errno;
    int rc = create && fsync(w->dir_fd) != 0 ? -errno : 0;
    pthread_mutex_lock(&w->mu);
    if (!rc && create) rc = seg_push(w, first, 0);
    int old = rc ? fd : w->fd;
    if (!rc) w->fd = fd;
    pthread_mutex_unlock(&w->mu);
    if (rc) {
        close(fd);
        unlinkat(w->dir_fd, name, 0);
        return rc;
    }
    if (old >= 0) close(old);
    w->rotate = false;
    return 0;
}

int wal_append(wal_t *w, uint64_t seq, const void *data, size_t len) {
    if (w->broken) return -EIO;
    if (len > WAL_RECORD_MAX || (w->last && seq != w->last + 1) || seq == 0) return -EINVAL;
    pthread_mutex_lock(&w->mu);
    bool have = w->nsegs > 0;
    segment_t cur = have ? w->segs[w->nsegs - 1] : (segment_t){0};
    int fd = w->fd;
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    if (!have || w->rotate || cur.bytes >= w->segment_bytes) {
        rc = open_segment(w, seq, !(have && cur.bytes == 0 && cur.first == seq));
        cur = (segment_t){.first = seq, .bytes = have && cur.first == seq ? cur.bytes : 0};
    } else if (fd < 0) {
        rc = open_segment(w, cur.first, false);
    }
    if (rc) return rc;
    fd = w->fd; /* only this thread changes it */

    uint8_t hdr[HDR_LEN];
    put32(hdr, WAL_MAGIC);
    put32(hdr + 4, (uint32_t)len);
    be64_put(hdr + 8, seq);
    put32(hdr + 16, record_crc(hdr, data, len));
    off_t off = (off_t)cur.bytes;
    rc = write_all(fd, hdr, HDR_LEN, off);
    if (!rc) rc = write_all(fd, data, len, off + HDR_LEN);
    if (rc) {
        if (ftruncate(fd, off) != 0) {
            w->broken = true;
            log_error("store", "write-ahead log: cannot undo a failed append (%s): refusing writes", strerror(errno));
        }
        return rc;
    }
    pthread_mutex_lock(&w->mu);
    w->segs[w->nsegs - 1].bytes += HDR_LEN + len;
    /* The preparer starts once a segment is half full: a log that never
     * gets that far (a short run, a test) never writes segments of zeros. */
    if (w->prepare && !w->prep_started && w->segs[w->nsegs - 1].bytes >= w->segment_bytes / 2) {
        w->prep_started = pthread_create(&w->prep_thread, NULL, prep_main, w) == 0;
        if (!w->prep_started) w->prepare = false;
    }
    pthread_mutex_unlock(&w->mu);
    w->last = seq;
    return 0;
}

int wal_sync(wal_t *w) {
    /* A copy of the descriptor: the appending thread may move on to a new
     * segment (having synced this one) and close it meanwhile. */
    pthread_mutex_lock(&w->mu);
    int fd = w->fd >= 0 ? dup(w->fd) : -2;
    int rc = fd == -1 ? -errno : 0;
    pthread_mutex_unlock(&w->mu);
    if (fd >= 0) {
        if (fdatasync(fd) != 0) rc = -errno;
        close(fd);
    }
    if (rc) atomic_store(&w->sync_err, rc);
    int kept = atomic_load(&w->sync_err);
    return kept ? kept : rc;
}

int wal_sync_all(wal_t *w) {
    int rc = atomic_load(&w->sync_err);
    for (size_t i = 0; i < w->nsegs && !rc; i++) {
        char name[NAME_LEN];
        seg_name(name, w->segs[i].first);
        int fd = openat(w->dir_fd, name, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fdatasync(fd) != 0) rc = -errno;
        if (fd >= 0) close(fd);
    }
    if (!rc && fsync(w->dir_fd) != 0) rc = -errno;
    if (rc) atomic_store(&w->sync_err, rc);
    return rc;
}

int wal_reset(wal_t *w) {
    pthread_mutex_lock(&w->mu);
    int old = w->fd;
    w->fd = -1;
    int rc = 0;
    for (size_t i = 0; i < w->nsegs && !rc; i++) {
        char name[NAME_LEN];
        seg_name(name, w->segs[i].first);
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT) rc = -errno;
    }
    if (!rc) w->nsegs = 0;
    pthread_mutex_unlock(&w->mu);
    if (old >= 0) close(old);
    if (rc) return rc;
    w->last = 0;
    w->rotate = false;
    w->broken = false;
    return fsync(w->dir_fd) != 0 ? -errno : 0;
}

int wal_rotate(wal_t *w) {
    pthread_mutex_lock(&w->mu);
    if (w->nsegs && w->segs[w->nsegs - 1].bytes) w->rotate = true;
    pthread_mutex_unlock(&w->mu);
    return 0;
}

int wal_forget(wal_t *w, uint64_t upto) {
    /* Off the list under the lock; the files go after it, gently (deleting a
     * large file can take a while: ext4 may discard its blocks then and
     * there, and the device is busy meanwhile). */
    pthread_mutex_lock(&w->mu);
    size_t drop = 0;
    while (drop + 1 < w->nsegs && w->segs[drop + 1].first - 1 <= upto) drop++; /* i ends where i+1 starts */
    uint64_t *gone = drop ? malloc(drop * sizeof *gone) : NULL;
    if (drop && !gone) drop = 0;
    for (size_t i = 0; i < drop; i++) gone[i] = w->segs[i].first;
    if (drop) {
        memmove(w->segs, w->segs + drop, (w->nsegs - drop) * sizeof *w->segs);
        w->nsegs -= drop;
    }
    pthread_mutex_unlock(&w->mu);
    int rc = 0;
    for (size_t i = 0; i < drop; i++) {
        char name[NAME_LEN];
        seg_name(name, gone[i]);
        int fd = openat(w->dir_fd, name, O_WRONLY | O_CLOEXEC);
        if (fd >= 0) { /* its blocks a slice at a time (fs.h) */
            fs_release_gently(fd);
            close(fd);
        }
        if (unlinkat(w->dir_fd, name, 0) != 0 && errno != ENOENT && !rc) rc = -errno;
    }
    free(gone);
    if (drop && !rc && fsync(w->dir_fd) != 0) rc = -errno;
    return rc;
}

int wal_prepare_again(wal_t *w) {
    pthread_mutex_lock(&w->mu);
    bool gave_up = w->prep_gave_up;
    pthread_mutex_unlock(&w->mu);
    if (!gave_up) return 0;
    pthread_join(w->prep_thread, NULL); /* it has returned, or is about to */
    pthread_mutex_lock(&w->mu);
    w->prep_gave_up = false;
    w->prep_started = false; /* the next append past half a segment starts it again */
    w->prepare = true;
    pthread_mutex_unlock(&w->mu);
    return 1;
}

uint64_t wal_bytes(wal_t *w) {
    uint64_t n = 0;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->nsegs; i++) n += w->segs[i].bytes;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void wal_close(wal_t *w) {
    if (!w) return;
    if (w->prep_started) {
        pthread_mutex_lock(&w->mu);
        atomic_store(&w->prep_stop, true);
        pthread_cond_signal(&w->prep_cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->prep_thread, NULL);
    }
    if (w->fd >= 0) close(w->fd);
    if (w->dir_fd >= 0) close(w->dir_fd);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->prep_cv);
    free(w->segs);
    free(w->dir);
    free(w);
}
