/* The write-ahead log against its header (store/lmdb/wal.h): an empty log,
 * records of every size back in order across reopen, replay after a seq,
 * the seq rule, the on-disk layout and segment names, rotation by size and
 * by hand, forgetting old segments, a torn tail cut off, and damage (the
 * log kept up to its first torn or bad record, the rest moved aside): a
 * segment cut at every offset and a byte flipped at every offset of a small
 * log, seqs that skip or repeat, huge length fields, a forged record inside
 * content, a reader refusing a record, a missing segment; content bytes
 * (zeros, header look-alikes) round-trip; a callback stopping the replay,
 * wal_bytes, and segments prepared in advance (zeros after the records). Every test works
 * in its own temporary folder, removed afterwards. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <zlib.h>

#include "store/lmdb/wal.h"
#include "unit.h"
#include "util/log.h"

#define HDR 20u      /* magic u32 | length u32 | seq u64 | crc32 u32 */
#define MAX_RECS 512 /* the most records one test keeps track of */
#define MAX_SEGS 256

/* ---- records: a payload is a pattern derived from its seq ---- */

typedef struct rec {
    uint64_t seq;
    size_t len;
} rec_t;

static uint8_t pat(uint64_t seq, size_t i) {
    return (uint8_t)(seq * 167u + i * 13u + (i >> 9) + 1u);
}

static int pattern_ok(uint64_t seq, const void *data, size_t len) {
    if (len == 0) return 1;
    if (!data) return 0;
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        if (p[i] != pat(seq, i)) return 0;
    return 1;
}

static uint64_t bytes_of(const rec_t *recs, size_t n) {
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += HDR + recs[i].len;
    return sum;
}

/* What one replay saw: seqs and lengths in call order, and how many
 * payloads differed from their pattern. stop_at (1-based call number) makes
 * the callback return stop_ret there. */
typedef struct got {
    rec_t recs[MAX_RECS];
    size_t n;
    size_t calls;
    size_t bad;
    size_t stop_at;
    int stop_ret;
} got_t;

static int collect(void *ctx, uint64_t seq, const void *data, size_t len) {
    got_t *g = ctx;
    g->calls++;
    if (!pattern_ok(seq, data, len)) g->bad++;
    if (g->n < MAX_RECS) g->recs[g->n++] = (rec_t){.seq = seq, .len = len};
    if (g->stop_at && g->calls == g->stop_at) return g->stop_ret;
    return 0;
}

/* ---- the fixture: a fresh folder, the open log (closed by teardown if a
 * test fails half-way, so that failures do not also leak) ---- */

typedef struct fx {
    char dir[64];
    wal_t *w;
    got_t got;
} fx_t;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/messenger-wal-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    if (f->w) wal_close(f->w);
    assert_int_equal(nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
    assert_int_not_equal(access(f->dir, F_OK), 0);
    free(f);
    return 0;
}

/* Empties the test's folder (segments and corrupt-* folders), keeping it. */
static int rm_below(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    return ftw->level == 0 ? 0 : remove(path);
}

static void clear_dir(fx_t *f) {
    assert_null(f->w);
    assert_int_equal(nftw(f->dir, rm_below, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void wopen(fx_t *f, size_t segment_bytes) {
    assert_null(f->w);
    assert_int_equal(wal_open(f->dir, segment_bytes, false, &f->w), 0);
    assert_non_null(f->w);
}

static void wclose(fx_t *f) {
    assert_non_null(f->w);
    wal_close(f->w);
    f->w = NULL;
}

/* Replays into f->got (reset first); returns wal_replay's result. */
static int replay(fx_t *f, uint64_t after, uint64_t *last) {
    memset(&f->got, 0, sizeof f->got);
    return wal_replay(f->w, after, collect, &f->got, last);
}

static int append(fx_t *f, uint64_t seq, size_t len) {
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    for (size_t i = 0; i < len; i++) buf[i] = pat(seq, i);
    int rc = wal_append(f->w, seq, buf, len);
    free(buf);
    return rc;
}

/* Appends recs[0..n) that must all succeed; *total tracks wal_bytes. */
static void append_all(fx_t *f, const rec_t *recs, size_t n, uint64_t *total) {
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(append(f, recs[i].seq, recs[i].len), 0);
        *total += HDR + recs[i].len;
        assert_int_equal(wal_bytes(f->w), *total);
    }
}

/* f->got must be exactly the records of recs[0..n) with seq > after. */
static void assert_got(const fx_t *f, uint64_t after, const rec_t *recs, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (recs[i].seq <= after) continue;
        assert_true(k < f->got.n);
        assert_int_equal(f->got.recs[k].seq, recs[i].seq);
        assert_int_equal(f->got.recs[k].len, recs[i].len);
        k++;
    }
    assert_int_equal(f->got.n, k);
    assert_int_equal(f->got.calls, k);
    assert_int_equal(f->got.bad, 0);
}

/* Opens the log afresh, replays after `after`: no error, exactly those of
 * recs[] with seq > after, *last == want_last, wal_bytes == the files; the
 * log stays open. */
static void reopen_check(fx_t *f, size_t seg, uint64_t after, const rec_t *recs, size_t n,
                         uint64_t want_last);

/* ---- the files ---- */

static void seg_path(const fx_t *f, uint64_t seq, char *out, size_t size) {
    snprintf(out, size, "%s/%016llx.wal", f->dir, (unsigned long long)seq);
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The first seqs of the *.wal files, ascending; every such name must be 16
 * lowercase hex digits and ".wal". */
static size_t list_segs(const fx_t *f, uint64_t *out) {
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".wal") != 0) continue;
        int ok = len == 20;
        for (size_t i = 0; ok && i < 16; i++) {
            char c = e->d_name[i];
            ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        }
        if (!ok) fprintf(stderr, "bad segment name: %s\n", e->d_name);
        assert_true(ok);
        assert_true(n < MAX_SEGS);
        out[n++] = strtoull(e->d_name, NULL, 16);
    }
    closedir(d);
    qsort(out, n, sizeof *out, cmp_u64);
    return n;
}

static size_t count_segs(const fx_t *f) {
    uint64_t segs[MAX_SEGS];
    return list_segs(f, segs);
}

static uint64_t file_size(const char *path) {
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    return (uint64_t)sb.st_size;
}

static uint64_t seg_size(const fx_t *f, uint64_t first) {
    char path[128];
    seg_path(f, first, path, sizeof path);
    return file_size(path);
}

static uint64_t files_bytes(const fx_t *f) {
    uint64_t segs[MAX_SEGS], sum = 0;
    size_t n = list_segs(f, segs);
    for (size_t i = 0; i < n; i++) sum += seg_size(f, segs[i]);
    return sum;
}

static uint64_t be(const uint8_t *p, int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++) v = v << 8 | p[i];
    return v;
}

/* Walks one intact segment by the documented layout: the records must tile
 * the file exactly, share one magic, and the first is the file's name.
 * Appends what it finds to out[*n]. */
static void scan_seg(const fx_t *f, uint64_t first, rec_t *out, size_t *n, uint64_t *magic) {
    char path[128];
    seg_path(f, first, path, sizeof path);
    uint64_t size = file_size(path);
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    uint8_t *buf = malloc(size ? size : 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, size, fp), size);
    fclose(fp);
    uint64_t off = 0;
    int at_first = 1;
    while (off < size) {
        assert_true(size - off >= HDR);
        uint64_t m = be(buf + off, 4), len = be(buf + off + 4, 4), seq = be(buf + off + 8, 8);
        if (*magic == 0) *magic = m;
        assert_int_equal(m, *magic);
        assert_true(len <= size - off - HDR);
        if (at_first) assert_int_equal(seq, first);
        at_first = 0;
        assert_true(*n < MAX_RECS);
        out[(*n)++] = (rec_t){.seq = seq, .len = (size_t)len};
        off += HDR + len;
    }
    assert_int_equal(off, size);
    free(buf);
}

static void flip_byte(const char *path, uint64_t off) {
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
    b ^= 0x5a;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
    close(fd);
}

static void append_garbage(const char *path, size_t n, uint64_t avoid_magic) {
    uint8_t buf[512];
    assert_true(n <= sizeof buf);
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < n; i++) {
        x = x * 1664525u + 1013904223u;
        buf[i] = (uint8_t)(x >> 24);
    }
    if (n >= 4 && be(buf, 4) == avoid_magic) buf[0] ^= 0xff;
    int fd = open(path, O_WRONLY | O_APPEND);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, n), (ssize_t)n);
    close(fd);
}

static void reopen_check(fx_t *f, size_t seg, uint64_t after, const rec_t *recs, size_t n,
                         uint64_t want_last) {
    if (f->w) wclose(f);
    wopen(f, seg);
    uint64_t last = 0xdeadbeef;
    assert_int_equal(replay(f, after, &last), 0);
    assert_int_equal(last, want_last);
    assert_got(f, after, recs, n);
    assert_int_equal(wal_bytes(f->w), files_bytes(f));
}

/* Records first.. with lengths from len_of(i). */
static void make_recs(rec_t *recs, size_t n, uint64_t first, size_t (*len_of)(size_t)) {
    for (size_t i = 0; i < n; i++) recs[i] = (rec_t){.seq = first + i, .len = len_of(i)};
}

/* ---- tests ---- */

static void empty_log(void **state) {
    fx_t *f = *state;
    wopen(f, 0);
    uint64_t last = 77;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(f->got.calls, 0);
    assert_int_equal(last, 0);
    assert_int_equal(wal_bytes(f->w), 0);
    wclose(f);

    /* again, on the (still empty) log, and after a seq */
    wopen(f, 0);
    last = 77;
    assert_int_equal(replay(f, 5, &last), 0);
    assert_int_equal(f->got.calls, 0);
    assert_int_equal(last, 0);
    assert_int_equal(wal_bytes(f->w), 0);
    assert_int_equal(files_bytes(f), 0);
    wclose(f);

    /* a folder that does not exist yet is created */
    char sub[96];
    snprintf(sub, sizeof sub, "%s/sub", f->dir);
    wal_t *w = NULL;
    assert_int_equal(wal_open(sub, 0, false, &w), 0);
    assert_non_null(w);
    last = 77;
    assert_int_equal(wal_replay(w, 0, collect, &f->got, &last), 0);
    assert_int_equal(last, 0);
    assert_int_equal(append(&(fx_t){.w = w}, 1, 10), 0);
    assert_int_equal(wal_sync(w), 0);
    wal_close(w);
    struct stat sb;
    assert_int_equal(stat(sub, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
}

static const size_t roundtrip_lens[] = {0, 1, 19, 20, 21, 100, 4095, 1u << 20, 3, 0, 65536, 7};
#define ROUNDTRIP_N (sizeof roundtrip_lens / sizeof roundtrip_lens[0])

static void roundtrip(void **state) {
    fx_t *f = *state;
    rec_t recs[ROUNDTRIP_N];
    for (size_t i = 0; i < ROUNDTRIP_N; i++) recs[i] = (rec_t){.seq = 1 + i, .len = roundtrip_lens[i]};

    wopen(f, 0);
    uint64_t last = 77, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, 0);
    append_all(f, recs, ROUNDTRIP_N, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    /* the documented layout: one segment named by seq 1, the records in a row */
    uint64_t segs[MAX_SEGS];
    assert_int_equal(list_segs(f, segs), 1);
    assert_int_equal(segs[0], 1);
    assert_int_equal(seg_size(f, 1), total);
    rec_t on_disk[MAX_RECS];
    size_t n = 0;
    uint64_t magic = 0;
    scan_seg(f, 1, on_disk, &n, &magic);
    assert_int_equal(n, ROUNDTRIP_N);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(on_disk[i].seq, recs[i].seq);
        assert_int_equal(on_disk[i].len, recs[i].len);
    }

    reopen_check(f, 0, 0, recs, ROUNDTRIP_N, ROUNDTRIP_N);
    assert_int_equal(wal_bytes(f->w), total);
    const uint64_t afters[] = {1, 5, 7, 8, ROUNDTRIP_N - 1, ROUNDTRIP_N, 1000};
    for (size_t i = 0; i < sizeof afters / sizeof afters[0]; i++)
        reopen_check(f, 0, afters[i], recs, ROUNDTRIP_N, ROUNDTRIP_N);
    wclose(f);
}

static void seq_rule(void **state) {
    fx_t *f = *state;
    rec_t recs[8];
    size_t n = 0;
    uint64_t last = 0, total = 0;

    /* the first append of an empty log may use any seq */
    wopen(f, 0);
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(append(f, 100, 10), 0);
    recs[n++] = (rec_t){100, 10};
    total += HDR + 10;
    const uint64_t bad[] = {100, 99, 102, 0, 1, 200, UINT64_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(append(f, bad[i], 5), -EINVAL);
        assert_int_equal(wal_bytes(f->w), total);
    }
    assert_int_equal(append(f, 101, 0), 0);
    recs[n++] = (rec_t){101, 0};
    total += HDR;
    assert_int_equal(append(f, 101, 3), -EINVAL);
    assert_int_equal(append(f, 103, 3), -EINVAL);
    assert_int_equal(append(f, 102, 30), 0);
    recs[n++] = (rec_t){102, 30};
    total += HDR + 30;
    assert_int_equal(wal_bytes(f->w), total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    uint64_t segs[MAX_SEGS];
    assert_int_equal(list_segs(f, segs), 1);
    assert_int_equal(segs[0], 100);
    assert_int_equal(seg_size(f, 100), total);

    /* after reopening, the newest seq comes from the files */
    reopen_check(f, 0, 0, recs, n, 102);
    assert_int_equal(append(f, 102, 1), -EINVAL);
    assert_int_equal(append(f, 104, 1), -EINVAL);
    assert_int_equal(append(f, 1, 1), -EINVAL);
    assert_int_equal(wal_bytes(f->w), total);
    assert_int_equal(append(f, 103, 44), 0);
    recs[n++] = (rec_t){103, 44};
    assert_int_equal(wal_sync(f->w), 0);
    reopen_check(f, 0, 0, recs, n, 103);
    wclose(f);
}

static size_t rot_len(size_t i) {
    return i == 60 ? 9000 : 100 + (i * 53) % 400;
}

static void rotation_by_size(void **state) {
    fx_t *f = *state;
    enum { N = 120, SEG = 4096 };
    const uint64_t first = 0xabcd00; /* names with hex letters */
    rec_t recs[N];
    make_recs(recs, N, first, rot_len);
    size_t maxlen = 0;
    for (size_t i = 0; i < N; i++)
        if (recs[i].len > maxlen) maxlen = recs[i].len;

    wopen(f, SEG);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    append_all(f, recs, N, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    /* several segments, each named by its first record, each about SEG */
    uint64_t segs[MAX_SEGS];
    size_t nseg = list_segs(f, segs);
    assert_true(nseg >= 4);
    assert_int_equal(segs[0], first);
    rec_t on_disk[MAX_RECS];
    size_t n = 0;
    uint64_t magic = 0;
    for (size_t s = 0; s < nseg; s++) {
        size_t before = n;
        scan_seg(f, segs[s], on_disk, &n, &magic);
        assert_true(n > before);
        uint64_t size = seg_size(f, segs[s]);
        assert_true(size <= SEG + HDR + maxlen);
        if (s + 1 < nseg) assert_true(size + HDR + maxlen > SEG);
    }
    assert_int_equal(n, N);
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(on_disk[i].seq, recs[i].seq);
        assert_int_equal(on_disk[i].len, recs[i].len);
    }
    assert_int_equal(files_bytes(f), total);

    /* replay across the segments, whole and from the middle of one */
    reopen_check(f, SEG, 0, recs, N, first + N - 1);
    assert_int_equal(wal_bytes(f->w), total);
    reopen_check(f, SEG, first + 57, recs, N, first + N - 1);
    reopen_check(f, SEG, segs[2] - 1, recs, N, first + N - 1);
    reopen_check(f, SEG, segs[2], recs, N, first + N - 1);

    /* a rotation by hand: the next record opens a file named by its seq */
    uint64_t next = first + N;
    char path[128];
    seg_path(f, next, path, sizeof path);
    assert_int_not_equal(access(path, F_OK), 0);
    assert_int_equal(wal_rotate(f->w), 0);
    assert_int_equal(append(f, next, 10), 0);
    assert_int_equal(wal_sync(f->w), 0);
    assert_int_equal(access(path, F_OK), 0);
    snprintf(path, sizeof path, "%s/0000000000abcd78.wal", f->dir); /* the format, literally */
    assert_int_equal(access(path, F_OK), 0);
    wclose(f);
}

static size_t small_len(size_t i) {
    return 30 + i;
}

static void rotation_by_hand(void **state) {
    fx_t *f = *state;
    rec_t recs[9];
    make_recs(recs, 9, 1, small_len);
    wopen(f, 0);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    append_all(f, recs, 3, &total);
    assert_int_equal(count_segs(f), 1);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 3, 3, &total);
    assert_int_equal(wal_sync(f->w), 0);
    assert_int_equal(count_segs(f), 2);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 6, 3, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    uint64_t segs[MAX_SEGS];
    assert_int_equal(list_segs(f, segs), 3);
    assert_int_equal(segs[0], 1);
    assert_int_equal(segs[1], 4);
    assert_int_equal(segs[2], 7);
    assert_int_equal(seg_size(f, 4), bytes_of(recs + 3, 3));
    reopen_check(f, 0, 0, recs, 9, 9);
    reopen_check(f, 0, 4, recs, 9, 9);
    wclose(f);
}

/* 1..10 | 11..20 | 21..30, by wal_rotate, lengths 30+i. */
static void three_segments(fx_t *f, rec_t *recs, uint64_t *total) {
    make_recs(recs, 30, 1, small_len);
    wopen(f, 0);
    uint64_t last = 0;
    *total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    for (size_t s = 0; s < 3; s++) {
        if (s) assert_int_equal(wal_rotate(f->w), 0);
        append_all(f, recs + 10 * s, 10, total);
    }
    assert_int_equal(wal_sync(f->w), 0);
}

static void forget(void **state) {
    fx_t *f = *state;
    rec_t recs[31];
    uint64_t total;
    three_segments(f, recs, &total);
    uint64_t seg1 = bytes_of(recs, 10), seg2 = bytes_of(recs + 10, 10);
    uint64_t segs[MAX_SEGS];

    /* nothing yet: segment 1 holds 6..10 too */
    assert_int_equal(wal_forget(f->w, 0), 0);
    assert_int_equal(wal_forget(f->w, 5), 0);
    assert_int_equal(wal_forget(f->w, 9), 0);
    assert_int_equal(count_segs(f), 3);
    assert_int_equal(wal_bytes(f->w), total);

    /* every record of segment 1 is <= 10 */
    assert_int_equal(wal_forget(f->w, 10), 0);
    assert_int_equal(list_segs(f, segs), 2);
    assert_int_equal(segs[0], 11);
    assert_int_equal(segs[1], 21);
    assert_int_equal(wal_bytes(f->w), total - seg1);
    assert_true(wal_bytes(f->w) < total);
    wclose(f);

    /* the rest from 11 on, no error */
    reopen_check(f, 0, 0, recs + 10, 20, 30);
    assert_int_equal(f->got.recs[0].seq, 11);
    assert_int_equal(wal_bytes(f->w), total - seg1);

    /* beyond everything: segment 11 goes, the active one never */
    assert_int_equal(wal_forget(f->w, 1000), 0);
    assert_int_equal(list_segs(f, segs), 1);
    assert_int_equal(segs[0], 21);
    assert_int_equal(wal_bytes(f->w), total - seg1 - seg2);
    assert_int_equal(files_bytes(f), total - seg1 - seg2);

    /* appends go on after forgetting */
    recs[30] = (rec_t){31, 5};
    assert_int_equal(append(f, 31, 5), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    reopen_check(f, 0, 0, recs + 20, 11, 31);
    assert_int_equal(f->got.recs[0].seq, 21);
    reopen_check(f, 0, 25, recs + 20, 11, 31);
    wclose(f);
}

static void forget_boundary(void **state) {
    fx_t *f = *state;
    rec_t recs[30];
    uint64_t total;
    three_segments(f, recs, &total);
    /* 20 is segment 11's last record: segments 1 and 11 both go */
    assert_int_equal(wal_forget(f->w, 20), 0);
    uint64_t segs[MAX_SEGS];
    assert_int_equal(list_segs(f, segs), 1);
    assert_int_equal(segs[0], 21);
    assert_int_equal(wal_bytes(f->w), bytes_of(recs + 20, 10));
    wclose(f);
    reopen_check(f, 0, 0, recs + 20, 10, 30);
    wclose(f);
}

/* ---- a torn tail ---- */

enum torn { GARBAGE_SHORT, GARBAGE_LONG, CUT_HALF, CUT_IN_HEADER, ONLY_RECORD };

static size_t torn_len(size_t i) {
    static const size_t lens[] = {10, 300, 0, 1000, 77, 50, 2000, 5, 600};
    return lens[i];
}

static void torn_case(fx_t *f, enum torn kind) {
    rec_t recs[16];
    make_recs(recs, 9, 1, torn_len); /* 1..5 | 6..9 */
    wopen(f, 0);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    append_all(f, recs, 5, &total);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 5, 4, &total);
    size_t n = 9; /* records that stay */
    uint64_t newest = 6;
    if (kind == ONLY_RECORD) {
        assert_int_equal(wal_rotate(f->w), 0);
        recs[9] = (rec_t){10, 400};
        append_all(f, recs + 9, 1, &total);
        newest = 10;
    }
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    char path[128];
    seg_path(f, newest, path, sizeof path);
    uint64_t size = file_size(path), want = size;
    rec_t on_disk[MAX_RECS];
    size_t nd = 0;
    uint64_t magic = 0;
    scan_seg(f, newest, on_disk, &nd, &magic);
    uint64_t last_rec = HDR + on_disk[nd - 1].len;
    switch (kind) {
    case GARBAGE_SHORT:
        append_garbage(path, 11, magic);
        break;
    case GARBAGE_LONG:
        append_garbage(path, 200, magic);
        break;
    case CUT_HALF:
        assert_int_equal(truncate(path, (off_t)(size - last_rec / 2)), 0);
        want = size - last_rec;
        n = 8;
        break;
    case CUT_IN_HEADER:
        assert_int_equal(truncate(path, (off_t)(size - last_rec + 9)), 0);
        want = size - last_rec;
        n = 8;
        break;
    case ONLY_RECORD:
        assert_int_equal(truncate(path, (off_t)(size - last_rec / 2)), 0);
        n = 9;
        break;
    }
    assert_int_not_equal(file_size(path), want);

    /* the whole records come back, the tail is cut off */
    reopen_check(f, 0, 0, recs, n, n);
    if (kind != ONLY_RECORD) assert_int_equal(file_size(path), want);
    assert_int_equal(wal_bytes(f->w), bytes_of(recs, n));

    /* and the log goes on from there */
    assert_int_equal(append(f, n, 1), -EINVAL);
    recs[n] = (rec_t){n + 1, 33};
    recs[n + 1] = (rec_t){n + 2, 0};
    uint64_t t = bytes_of(recs, n);
    append_all(f, recs + n, 2, &t);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    reopen_check(f, 0, 0, recs, n + 2, n + 2);
    wclose(f);
    if (kind != ONLY_RECORD) {
        assert_int_equal(file_size(path), want + HDR + 33 + HDR);
        nd = 0;
        scan_seg(f, newest, on_disk, &nd, &magic); /* no garbage left in between */
    }
}

static void torn_garbage_short(void **state) {
    torn_case(*state, GARBAGE_SHORT);
}
static void torn_garbage_long(void **state) {
    torn_case(*state, GARBAGE_LONG);
}
static void torn_cut_half(void **state) {
    torn_case(*state, CUT_HALF);
}
static void torn_cut_in_header(void **state) {
    torn_case(*state, CUT_IN_HEADER);
}
static void torn_only_record(void **state) {
    torn_case(*state, ONLY_RECORD);
}

/* The only record of the log is torn: once it is cut the log is empty, so
 * *last is 0 and the next append may again use any seq. */
static void torn_only_record_of_log(void **state) {
    fx_t *f = *state;
    wopen(f, 0);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    const rec_t first = {100, 300};
    append_all(f, &first, 1, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    char path[128];
    seg_path(f, 100, path, sizeof path);
    assert_int_equal(truncate(path, 150), 0);

    wopen(f, 0);
    last = 77;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(f->got.calls, 0);
    assert_int_equal(last, 0);
    assert_int_equal(wal_bytes(f->w), 0);
    const rec_t next = {500, 20};
    total = 0;
    append_all(f, &next, 1, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);

    reopen_check(f, 0, 0, &next, 1, 500);
    wclose(f);
    uint64_t segs[MAX_SEGS];
    size_t nseg = list_segs(f, segs);
    rec_t on_disk[MAX_RECS];
    size_t n = 0;
    uint64_t magic = 0;
    for (size_t i = 0; i < nseg; i++) scan_seg(f, segs[i], on_disk, &n, &magic);
    assert_int_equal(n, 1);
    assert_int_equal(on_disk[0].seq, 500);
}

/* ---- damage: the log is kept up to the first torn or bad record ---- */

static size_t fixed_len(size_t i) {
    (void)i;
    return 40;
}

/* 1..4 | 5..8 | 9..12 | 13..16, records of 40 bytes, closed. */
static void four_segments(fx_t *f, rec_t *recs) {
    make_recs(recs, 16, 1, fixed_len);
    wopen(f, 0);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    for (size_t s = 0; s < 4; s++) {
        if (s) assert_int_equal(wal_rotate(f->w), 0);
        append_all(f, recs + 4 * s, 4, &total);
    }
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    assert_int_equal(count_segs(f), 4);
}

/* The one corrupt-* folder in the log's folder (its name into out), or 0
 * when there is none. */
static int aside_dir(const fx_t *f, char *out, size_t size) {
    DIR *d = opendir(f->dir);
    assert_non_null(d);
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, "corrupt-", 8) != 0) continue;
        assert_int_equal(found, 0);
        snprintf(out, size, "%s/%s", f->dir, e->d_name);
        found = 1;
    }
    closedir(d);
    return found;
}

/* Replays after a damage: no error, exactly recs[0..keep) back, the files
 * are exactly those records, and the log goes on from there (an append of
 * the next seq, back after a reopen). The log is left closed. */
static void check_kept(fx_t *f, const rec_t *recs, size_t keep) {
    if (f->w) wclose(f);
    wopen(f, 0);
    uint64_t last = 77;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, keep ? recs[keep - 1].seq : 0);
    assert_got(f, 0, recs, keep);
    assert_int_equal(wal_bytes(f->w), bytes_of(recs, keep));
    assert_int_equal(files_bytes(f), bytes_of(recs, keep));
    uint64_t next = keep ? recs[keep - 1].seq + 1 : 1000;
    assert_int_equal(append(f, next, 9), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    rec_t more[MAX_RECS];
    assert_true(keep < MAX_RECS);
    memcpy(more, recs, keep * sizeof *recs);
    more[keep] = (rec_t){next, 9};
    reopen_check(f, 0, 0, more, keep + 1, next);
    wclose(f);
}

enum damage { FLIP_MIDDLE_OF_OLDEST, FLIP_LAST_OF_OLDER, FLIP_SEQ_OF_OLDER, CUT_OLDER };

static void corrupt_case(fx_t *f, enum damage kind) {
    rec_t recs[16];
    four_segments(f, recs);
    char path[128];
    const uint64_t rec = HDR + 40;
    size_t keep = 0, later = 0;
    switch (kind) {
    case FLIP_MIDDLE_OF_OLDEST: /* a payload byte of seq 2 */
        seg_path(f, 1, path, sizeof path);
        flip_byte(path, 1 * rec + HDR + 5);
        keep = 1, later = 3;
        break;
    case FLIP_LAST_OF_OLDER: /* a payload byte of seq 8, the end of segment 5 */
        seg_path(f, 5, path, sizeof path);
        flip_byte(path, 3 * rec + HDR + 39);
        keep = 7, later = 2;
        break;
    case FLIP_SEQ_OF_OLDER: /* the seq of 10, in segment 9 (the CRC covers it) */
        seg_path(f, 9, path, sizeof path);
        flip_byte(path, 1 * rec + 15);
        keep = 9, later = 1;
        break;
    case CUT_OLDER: /* segment 5 loses half of its last record */
        seg_path(f, 5, path, sizeof path);
        assert_int_equal(truncate(path, (off_t)(4 * rec - rec / 2)), 0);
        keep = 7, later = 2;
        break;
    }
    wopen(f, 0);
    uint64_t last = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, keep);
    assert_got(f, 0, recs, keep);
    wal_dropped_t d;
    wal_replay_dropped(f->w, &d);
    assert_true(d.damage);
    assert_int_equal(d.from_seq, keep + 1);
    assert_int_equal(d.segments, later);
    assert_true(d.records >= 16 - keep - 1); /* the bad one may not count */
    assert_true(d.folder[0] != '\0');
    wclose(f);
    /* the later segments moved aside whole, the damaged tail copied */
    char dir[320], moved[400];
    assert_true(aside_dir(f, dir, sizeof dir));
    for (size_t s = 4 - later; s < 4; s++) {
        snprintf(moved, sizeof moved, "%s/%016llx.wal", dir, (unsigned long long)(4 * s + 1));
        assert_int_equal(file_size(moved), 4 * rec);
    }
    assert_int_equal(count_segs(f), 4 - later);
    check_kept(f, recs, keep);
}

static void corrupt_middle_of_oldest(void **state) {
    corrupt_case(*state, FLIP_MIDDLE_OF_OLDEST);
}
static void corrupt_last_of_older(void **state) {
    corrupt_case(*state, FLIP_LAST_OF_OLDER);
}
static void corrupt_seq_of_older(void **state) {
    corrupt_case(*state, FLIP_SEQ_OF_OLDER);
}
static void corrupt_cut_older(void **state) {
    corrupt_case(*state, CUT_OLDER);
}

/* A missing segment: the log is kept up to it, the segments after it go
 * aside. */
static void gap(void **state) {
    fx_t *f = *state;
    const uint64_t victims[] = {5, 9};
    for (size_t v = 0; v < 2; v++) {
        rec_t recs[16];
        four_segments(f, recs);
        char path[128];
        seg_path(f, victims[v], path, sizeof path);
        assert_int_equal(unlink(path), 0);
        check_kept(f, recs, victims[v] - 1);
        wal_dropped_t d;
        wopen(f, 0);
        wal_replay_dropped(f->w, &d);
        assert_int_equal(d.bytes, 0); /* nothing dropped yet on a fresh open */
        wclose(f);
        clear_dir(f);
    }
}

/* ---- records written by hand (the layout in wal.h) ---- */

/* Appends to *p one record: seq, its payload, and a header whose length is
 * `len_field` (normally len) and whose CRC is right for what it says. */
static void put_record(uint8_t **p, uint64_t seq, const uint8_t *data, size_t len, uint32_t len_field) {
    uint8_t *h = *p;
    const uint32_t magic = 0x4d574c31u;
    for (int i = 0; i < 4; i++) h[i] = (uint8_t)(magic >> (24 - 8 * i));
    for (int i = 0; i < 4; i++) h[4 + i] = (uint8_t)(len_field >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) h[8 + i] = (uint8_t)(seq >> (56 - 8 * i));
    uLong c = crc32(0L, Z_NULL, 0);
    c = crc32(c, h + 4, 12);
    c = crc32(c, data, (uInt)len);
    for (int i = 0; i < 4; i++) h[16 + i] = (uint8_t)((uint32_t)c >> (24 - 8 * i));
    memcpy(h + HDR, data, len);
    *p += HDR + len;
}

static void write_file(const char *path, const void *data, size_t n) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

/* Writes segment `first` holding records with the given seqs, payloads by
 * pattern, lengths 30 + i. */
static void write_seg(const fx_t *f, uint64_t first, const uint64_t *seqs, size_t n) {
    uint8_t buf[4096], *p = buf, data[64];
    for (size_t i = 0; i < n; i++) {
        size_t len = 30 + i;
        for (size_t j = 0; j < len; j++) data[j] = pat(seqs[i], j);
        put_record(&p, seqs[i], data, len, (uint32_t)len);
    }
    char path[128];
    seg_path(f, first, path, sizeof path);
    write_file(path, buf, (size_t)(p - buf));
}

/* Seqs that skip (3 missing), repeat, or go back: kept up to the first
 * that does not follow. */
static void seq_gaps(void **state) {
    fx_t *f = *state;
    const struct {
        uint64_t seqs[5];
        size_t keep;
    } cases[] = {
        {{1, 2, 4, 5, 6}, 2}, {{1, 2, 2, 3, 4}, 2}, {{1, 2, 3, 1, 2}, 3}, {{1, 2, 3, 4, 99}, 4},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        write_seg(f, 1, cases[c].seqs, 5);
        rec_t recs[5];
        for (size_t i = 0; i < 5; i++) recs[i] = (rec_t){cases[c].seqs[i], 30 + i};
        wopen(f, 0);
        uint64_t last;
        assert_int_equal(replay(f, 0, &last), 0);
        assert_int_equal(last, cases[c].keep);
        assert_got(f, 0, recs, cases[c].keep);
        wal_dropped_t d;
        wal_replay_dropped(f->w, &d);
        assert_true(d.damage);
        assert_int_equal(d.from_seq, cases[c].keep + 1);
        assert_int_equal(d.records, 5 - cases[c].keep);
        wclose(f);
        assert_int_equal(files_bytes(f), bytes_of(recs, cases[c].keep));
        clear_dir(f);
    }
}

/* A length field past the file, or past WAL_RECORD_MAX, with a CRC that is
 * right for it: record 1 is kept, nothing huge is allocated. */
static void huge_length(void **state) {
    fx_t *f = *state;
    const uint32_t lens[] = {0xffffffffu, WAL_RECORD_MAX, WAL_RECORD_MAX + 1u, 31, 100000};
    for (size_t c = 0; c < sizeof lens / sizeof lens[0]; c++) {
        uint8_t buf[512], *p = buf, data[64];
        for (size_t j = 0; j < 30; j++) data[j] = pat(1, j);
        put_record(&p, 1, data, 30, 30);
        for (size_t j = 0; j < 30; j++) data[j] = pat(2, j);
        put_record(&p, 2, data, 30, lens[c]); /* says lens[c], holds 30 */
        char path[128];
        seg_path(f, 1, path, sizeof path);
        write_file(path, buf, (size_t)(p - buf));
        const rec_t one = {1, 30};
        wopen(f, 0);
        uint64_t last;
        assert_int_equal(replay(f, 0, &last), 0);
        assert_int_equal(last, 1);
        assert_got(f, 0, &one, 1);
        wclose(f);
        assert_int_equal(files_bytes(f), HDR + 30);
        clear_dir(f);
    }
}

/* Writes records 1 (zeros), 2 (the carrier), 3 (empty); closed. */
static void forged_log(fx_t *f, const uint8_t *zeros, size_t nz, const uint8_t *carrier, size_t nc) {
    uint64_t last;
    wopen(f, 0);
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(wal_append(f->w, 1, zeros, nz), 0);
    assert_int_equal(wal_append(f->w, 2, carrier, nc), 0);
    assert_int_equal(wal_append(f->w, 3, zeros, 0), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
}

/* Content is bytes: zeros, and a whole forged record (header and CRC right,
 * the next seq) inside a payload round-trip as content; cut anywhere inside
 * the carrier, the forged record never comes back as a record. */
static void forged_record_in_content(void **state) {
    fx_t *f = *state;
    uint8_t carrier[200], inner[40], zeros[100] = {0};
    memset(carrier, 'x', sizeof carrier);
    for (size_t j = 0; j < sizeof inner; j++) inner[j] = (uint8_t)('A' + j % 26);
    uint8_t *p = carrier + 10;
    put_record(&p, 3, inner, sizeof inner, sizeof inner); /* a valid record for seq 3 */
    uint64_t last;
    forged_log(f, zeros, sizeof zeros, carrier, sizeof carrier);
    wopen(f, 0);
    memset(&f->got, 0, sizeof f->got);
    assert_int_equal(wal_replay(f->w, 0, collect, &f->got, &last), 0);
    assert_int_equal(last, 3);
    assert_int_equal(f->got.n, 3);
    assert_int_equal(f->got.recs[1].len, sizeof carrier);
    wclose(f);
    /* the payloads themselves: read them back through a checking callback */
    char path[128];
    seg_path(f, 1, path, sizeof path);
    uint64_t carrier_at = HDR + sizeof zeros;
    for (uint64_t cut = carrier_at + 1; cut < carrier_at + HDR + sizeof carrier; cut += 7) {
        assert_int_equal(truncate(path, (off_t)cut), 0);
        const rec_t one = {1, sizeof zeros};
        wopen(f, 0);
        memset(&f->got, 0, sizeof f->got);
        assert_int_equal(wal_replay(f->w, 0, collect, &f->got, &last), 0);
        assert_int_equal(last, 1);
        assert_int_equal(f->got.n, 1);
        assert_int_equal(f->got.recs[0].seq, one.seq);
        wclose(f);
        assert_int_equal(file_size(path), carrier_at);
        clear_dir(f);
        forged_log(f, zeros, sizeof zeros, carrier, sizeof carrier); /* again, for the next cut */
    }
}

/* The payloads come back byte for byte (zeros, a forged header inside). */
typedef struct exact {
    const uint8_t *want[4];
    size_t len[4];
    size_t n, bad;
} exact_t;

static int check_exact(void *ctx, uint64_t seq, const void *data, size_t len) {
    exact_t *x = ctx;
    size_t i = x->n++;
    if (i >= 4 || seq != i + 1 || len != x->len[i] || (len && memcmp(data, x->want[i], len) != 0)) x->bad++;
    return 0;
}

static void content_bytes_roundtrip(void **state) {
    fx_t *f = *state;
    uint8_t zeros[64] = {0}, forged[120], header_like[HDR];
    memset(forged, 0, sizeof forged);
    uint8_t *p = forged + 3, inner[16] = "not a record!!!";
    put_record(&p, 2, inner, sizeof inner, sizeof inner);
    memcpy(header_like, forged + 3, HDR); /* a header alone, as the whole content */
    exact_t x = {.want = {zeros, forged, header_like, zeros}, .len = {sizeof zeros, sizeof forged, HDR, 1}};
    wopen(f, 0);
    uint64_t last;
    assert_int_equal(replay(f, 0, &last), 0);
    for (size_t i = 0; i < 4; i++) assert_int_equal(wal_append(f->w, i + 1, x.want[i], x.len[i]), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    wopen(f, 0);
    assert_int_equal(wal_replay(f->w, 0, check_exact, &x, &last), 0);
    assert_int_equal(x.n, 4);
    assert_int_equal(x.bad, 0);
    assert_int_equal(last, 4);
    wal_dropped_t d;
    wal_replay_dropped(f->w, &d);
    assert_int_equal(d.bytes, 0);
    wclose(f);
}

/* ---- every offset of a small log ---- */

/* The files of the log's folder, kept in memory to be written back. */
typedef struct snap {
    uint64_t first[8];
    uint8_t *data[8];
    size_t size[8];
    size_t n;
} snap_t;

static void snap_take(const fx_t *f, snap_t *s) {
    uint64_t segs[MAX_SEGS];
    s->n = list_segs(f, segs);
    assert_true(s->n <= 8);
    for (size_t i = 0; i < s->n; i++) {
        char path[128];
        seg_path(f, segs[i], path, sizeof path);
        s->first[i] = segs[i];
        s->size[i] = file_size(path);
        s->data[i] = malloc(s->size[i]);
        assert_non_null(s->data[i]);
        FILE *fp = fopen(path, "rb");
        assert_non_null(fp);
        assert_int_equal(fread(s->data[i], 1, s->size[i], fp), s->size[i]);
        fclose(fp);
    }
}

static void snap_put(fx_t *f, const snap_t *s) {
    clear_dir(f);
    for (size_t i = 0; i < s->n; i++) {
        char path[128];
        seg_path(f, s->first[i], path, sizeof path);
        write_file(path, s->data[i], s->size[i]);
    }
}

static void snap_free(snap_t *s) {
    for (size_t i = 0; i < s->n; i++) free(s->data[i]);
}

static size_t every_len(size_t i) {
    static const size_t lens[] = {12, 0, 33, 5, 20, 1, 40, 7, 25, 3, 16};
    return lens[i];
}

/* 1..4 | 5..8 | 9..11 with the lengths above. */
static void small_log(fx_t *f, rec_t *recs, snap_t *s) {
    make_recs(recs, 11, 1, every_len);
    wopen(f, 0);
    uint64_t last, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    append_all(f, recs, 4, &total);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 4, 4, &total);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 8, 3, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    snap_take(f, s);
    assert_int_equal(s->n, 3);
}

/* Whole records that lie before byte `off` of segment `seg` (by index),
 * counting every earlier segment whole. */
static size_t records_before(const snap_t *s, const rec_t *recs, size_t seg, uint64_t off) {
    size_t k = 0;
    for (size_t i = 0; i < seg; i++)
        for (uint64_t o = 0; o < s->size[i]; k++) o += HDR + recs[k].len;
    for (uint64_t o = 0; o + HDR + recs[k].len <= off; k++) o += HDR + recs[k].len;
    return k;
}

enum harm { CUT, FLIP };

/* Harms each offset of each segment of a small log in turn: cut there
 * (exactly the whole records before the cut come back, later segments go
 * aside) or a byte flipped there (exactly the records before the one that
 * holds it come back, never a record that was not written); either way the
 * log goes on (check_kept). */
static void at_every_offset(fx_t *f, enum harm harm) {
    rec_t recs[16];
    snap_t s;
    small_log(f, recs, &s);
    for (size_t seg = 0; seg < s.n; seg++) {
        for (uint64_t off = 0; off < s.size[seg]; off++) {
            snap_put(f, &s);
            char path[128], dir[320];
            seg_path(f, s.first[seg], path, sizeof path);
            if (harm == CUT) assert_int_equal(truncate(path, (off_t)off), 0);
            else flip_byte(path, off);
            check_kept(f, recs, records_before(&s, recs, seg, off));
            /* a cut is damage (a copy kept) exactly when whole records were dropped */
            if (harm == CUT) assert_int_equal(aside_dir(f, dir, sizeof dir), seg + 1 < s.n);
        }
    }
    snap_free(&s);
}

static void truncated_at_every_offset(void **state) {
    at_every_offset(*state, CUT);
}

static void flipped_at_every_offset(void **state) {
    at_every_offset(*state, FLIP);
}

/* 1..5 | 6..10, lengths 30+i, closed; returns the bytes. */
static uint64_t two_segments(fx_t *f, rec_t *recs) {
    make_recs(recs, 10, 1, small_len);
    wopen(f, 0);
    uint64_t last = 0, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    append_all(f, recs, 5, &total);
    assert_int_equal(wal_rotate(f->w), 0);
    append_all(f, recs + 5, 5, &total);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    return total;
}

/* The reader refuses a record (WAL_REPLAY_BAD): the log ends before it. */
static void reader_refuses(void **state) {
    fx_t *f = *state;
    rec_t recs[10];
    uint64_t last;
    two_segments(f, recs);
    wopen(f, 0);
    memset(&f->got, 0, sizeof f->got);
    f->got.stop_at = 4;
    f->got.stop_ret = WAL_REPLAY_BAD;
    assert_int_equal(wal_replay(f->w, 0, collect, &f->got, &last), 0);
    assert_int_equal(f->got.calls, 4);
    assert_int_equal(last, 3);
    wal_dropped_t d;
    wal_replay_dropped(f->w, &d);
    assert_true(d.damage);
    assert_int_equal(d.from_seq, 4);
    assert_int_equal(d.segments, 1);
    assert_int_equal(d.records, 7);
    wclose(f);
    check_kept(f, recs, 3);
}

/* ---- the callback stops the replay ---- */

static void callback_stops(void **state) {
    fx_t *f = *state;
    rec_t recs[10];
    uint64_t last, total = two_segments(f, recs);

    const struct {
        size_t at;
        int ret;
    } stops[] = {{1, -ECANCELED}, {4, -1}, {7, -ECANCELED}, {10, -12345}};
    for (size_t i = 0; i < sizeof stops / sizeof stops[0]; i++) {
        wopen(f, 0);
        memset(&f->got, 0, sizeof f->got);
        f->got.stop_at = stops[i].at;
        f->got.stop_ret = stops[i].ret;
        assert_int_equal(wal_replay(f->w, 0, collect, &f->got, &last), stops[i].ret);
        assert_int_equal(f->got.calls, stops[i].at);
        assert_int_equal(f->got.bad, 0);
        for (size_t k = 0; k < f->got.n; k++) assert_int_equal(f->got.recs[k].seq, k + 1);
        wclose(f);
    }
    /* a stopped replay took nothing away */
    reopen_check(f, 0, 0, recs, 10, 10);
    assert_int_equal(wal_bytes(f->w), total);
    wclose(f);
}

/* Reopens (without preparation: reading needs none) and expects exactly
 * recs[0..n) back. */
static void reopen_check_records(fx_t *f, size_t seg, const rec_t *recs, size_t n) {
    if (f->w) wclose(f);
    wopen(f, seg);
    uint64_t last = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, recs[n - 1].seq);
    assert_got(f, 0, recs, n);
}

/* ---- prepared segments (wal_open's prepare) ---- */

/* Waits until the preparer has written next.prep whole (then a little more,
 * for its sync), so that the next rotation takes it. */
static void wait_prepared(const fx_t *f, size_t seg) {
    char path[128];
    snprintf(path, sizeof path, "%s/next.prep", f->dir);
    struct stat sb;
    for (int i = 0; i < 400 && !(stat(path, &sb) == 0 && (size_t)sb.st_size == seg); i++) usleep(5000);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal((size_t)sb.st_size, seg);
    usleep(100000);
}

/* Writes n bytes at off of the segment that starts at seq. */
static void pwrite_seg(const fx_t *f, uint64_t seq, uint64_t off, const void *data, size_t n) {
    char path[128];
    seg_path(f, seq, path, sizeof path);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* A log whose newest segment is a prepared one: recs[0..k) fill the first
 * segment half (the preparer starts), recs[k..n) go to the prepared one.
 * Returns k. */
static size_t prepared_log(fx_t *f, size_t seg, rec_t *recs, size_t n) {
    assert_int_equal(wal_open(f->dir, seg, true, &f->w), 0);
    uint64_t last;
    assert_int_equal(replay(f, 0, &last), 0);
    size_t k = 0;
    while (wal_bytes(f->w) < seg / 2) {
        assert_true(k < n);
        assert_int_equal(append(f, recs[k].seq, recs[k].len), 0);
        k++;
    }
    wait_prepared(f, seg);
    assert_int_equal(wal_rotate(f->w), 0);
    for (size_t i = k; i < n; i++) assert_int_equal(append(f, recs[i].seq, recs[i].len), 0);
    assert_int_equal(wal_sync(f->w), 0);
    assert_int_equal(seg_size(f, recs[k].seq), seg); /* the prepared file, zeros after the records */
    assert_true(bytes_of(recs + k, n - k) < seg);
    return k;
}

static size_t len_prepared(size_t i) { return 50 + (i * 37) % 300; }

/* Many rotations while the preparer works: every record comes back, the
 * unused space is no record, and appends after a reopen go on after the
 * last record (not at the end of the file). */
static void prepared_segments(void **state) {
    fx_t *f = *state;
    const size_t seg = 8192;
    rec_t recs[400];
    make_recs(recs, 400, 1, len_prepared);
    assert_int_equal(wal_open(f->dir, seg, true, &f->w), 0);
    uint64_t last, total = 0;
    assert_int_equal(replay(f, 0, &last), 0);
    for (size_t i = 0; i < 300; i++) {
        assert_int_equal(append(f, recs[i].seq, recs[i].len), 0);
        total += HDR + recs[i].len;
        assert_int_equal(wal_bytes(f->w), total); /* records, not the files' size */
        if (i % 8 == 7) {
            assert_int_equal(wal_sync(f->w), 0);
            usleep(3000); /* time for the preparer, now and then */
        }
    }
    assert_int_equal(wal_sync(f->w), 0);
    uint64_t segs[MAX_SEGS];
    size_t ns = list_segs(f, segs), prepared = 0;
    for (size_t i = 0; i < ns; i++) prepared += seg_size(f, segs[i]) == seg;
    assert_true(ns > 5);
    assert_true(prepared > 0);
    wclose(f);
    assert_int_equal(wal_open(f->dir, seg, true, &f->w), 0);
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, 300);
    assert_got(f, 0, recs, 300);
    assert_int_equal(wal_bytes(f->w), total);
    for (size_t i = 300; i < 400; i++) assert_int_equal(append(f, recs[i].seq, recs[i].len), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    reopen_check_records(f, seg, recs, 400);
}

/* A torn append into prepared space (bytes of a record, then zeros) is cut
 * off like any torn tail, and the log goes on. */
static void prepared_torn_tail(void **state) {
    fx_t *f = *state;
    const size_t seg = 16384;
    rec_t recs[81];
    make_recs(recs, 81, 1, len_prepared);
    size_t k = prepared_log(f, seg, recs, 80);
    wclose(f);
    uint8_t junk[37];
    memset(junk, 0xa7, sizeof junk);
    uint64_t end = bytes_of(recs + k, 80 - k);
    pwrite_seg(f, recs[k].seq, end, junk, sizeof junk);
    assert_int_equal(wal_open(f->dir, seg, true, &f->w), 0);
    uint64_t last;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, 80);
    assert_got(f, 0, recs, 80);
    assert_int_equal(seg_size(f, recs[k].seq), end); /* cut */
    assert_int_equal(append(f, 81, recs[80].len), 0);
    assert_int_equal(wal_sync(f->w), 0);
    wclose(f);
    reopen_check_records(f, seg, recs, 81);
}

/* A prepared segment left before it was full (a rotation by hand) keeps
 * zeros after its records: the next segment follows on all the same. */
static void prepared_zero_tail_then_next(void **state) {
    fx_t *f = *state;
    const size_t seg = 16384;
    rec_t recs[90];
    make_recs(recs, 90, 1, len_prepared);
    size_t k = prepared_log(f, seg, recs, 80);
    assert_int_equal(wal_rotate(f->w), 0);
    for (size_t i = 80; i < 90; i++) assert_int_equal(append(f, recs[i].seq, recs[i].len), 0);
    assert_int_equal(wal_sync(f->w), 0);
    assert_int_equal(seg_size(f, recs[k].seq), seg);
    wclose(f);
    reopen_check_records(f, seg, recs, 90);
    /* replaying from the newest segment only, too */
    wclose(f);
    wopen(f, seg);
    uint64_t last;
    assert_int_equal(replay(f, 85, &last), 0);
    assert_int_equal(last, 90);
    assert_got(f, 85, recs, 90);
}

/* Damage in a prepared segment with whole records after it: the log ends
 * before that segment, which goes aside whole. */
static void prepared_damage(void **state) {
    fx_t *f = *state;
    const size_t seg = 16384;
    rec_t recs[80];
    make_recs(recs, 80, 1, len_prepared);
    size_t k = prepared_log(f, seg, recs, 80);
    wclose(f);
    uint8_t zeros[HDR] = {0};
    pwrite_seg(f, recs[k].seq, 0, zeros, HDR); /* the segment's first header */
    wopen(f, seg);
    uint64_t last;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(last, recs[k - 1].seq);
    assert_got(f, 0, recs, k);
    wal_dropped_t d;
    wal_replay_dropped(f->w, &d);
    assert_true(d.damage);
    assert_int_equal(d.records, 80 - k - 1);
    wclose(f);
    char dir[320], moved[400];
    assert_true(aside_dir(f, dir, sizeof dir));
    snprintf(moved, sizeof moved, "%s/%016llx.wal", dir, (unsigned long long)recs[k].seq);
    assert_int_equal(file_size(moved), seg);
}

/* Preparation that failed (here: next.prep is a folder) stops; after
 * wal_prepare_again() the next append past half a segment starts it again. */
static void prepare_again_after_failure(void **state) {
    fx_t *f = *state;
    const size_t seg = 8192;
    assert_int_equal(wal_open(f->dir, seg, true, &f->w), 0);
    uint64_t last;
    assert_int_equal(replay(f, 0, &last), 0);
    assert_int_equal(wal_prepare_again(f->w), 0); /* nothing to resume */
    char path[128];
    snprintf(path, sizeof path, "%s/next.prep", f->dir);
    assert_int_equal(mkdir(path, 0700), 0);
    uint64_t seq = 1;
    while (wal_bytes(f->w) < seg / 2) assert_int_equal(append(f, seq++, 100), 0);
    int resumed = 0;
    for (int i = 0; i < 400 && !resumed; i++) {
        resumed = wal_prepare_again(f->w);
        if (!resumed) usleep(5000);
    }
    assert_int_equal(resumed, 1);
    assert_int_equal(rmdir(path), 0);
    assert_int_equal(append(f, seq++, 100), 0);
    wait_prepared(f, seg);
    assert_int_equal(wal_sync(f->w), 0);
}

int main(void) {
    log_set_level(LOG_OFF); /* torn tails and corruption are logged on purpose */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(empty_log, setup, teardown),
        cmocka_unit_test_setup_teardown(roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(seq_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_by_size, setup, teardown),
        cmocka_unit_test_setup_teardown(rotation_by_hand, setup, teardown),
        cmocka_unit_test_setup_teardown(forget, setup, teardown),
        cmocka_unit_test_setup_teardown(forget_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_garbage_short, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_garbage_long, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_cut_half, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_cut_in_header, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_only_record, setup, teardown),
        cmocka_unit_test_setup_teardown(torn_only_record_of_log, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_middle_of_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_last_of_older, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_seq_of_older, setup, teardown),
        cmocka_unit_test_setup_teardown(corrupt_cut_older, setup, teardown),
        cmocka_unit_test_setup_teardown(gap, setup, teardown),
        cmocka_unit_test_setup_teardown(seq_gaps, setup, teardown),
        cmocka_unit_test_setup_teardown(huge_length, setup, teardown),
        cmocka_unit_test_setup_teardown(forged_record_in_content, setup, teardown),
        cmocka_unit_test_setup_teardown(content_bytes_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(truncated_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(flipped_at_every_offset, setup, teardown),
        cmocka_unit_test_setup_teardown(reader_refuses, setup, teardown),
        cmocka_unit_test_setup_teardown(callback_stops, setup, teardown),
        cmocka_unit_test_setup_teardown(prepared_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(prepared_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(prepared_zero_tail_then_next, setup, teardown),
        cmocka_unit_test_setup_teardown(prepared_damage, setup, teardown),
        cmocka_unit_test_setup_teardown(prepare_again_after_failure, setup, teardown),
    };
    return cmocka_run_group_tests_name("wal", tests, NULL, NULL);
}
