/* The embedded store's folder (store/lmdb/datadir.h), against its contract:
 *  - the lock: taken without waiting, -EWOULDBLOCK while another process (or
 *    another open of the folder) holds it, free again after datadir_unlock
 *    or when its holder dies; a missing folder, a folder we may not write,
 *    a path too long: each a negative errno, and nothing created;
 *  - the state file: its exact bytes, what each (boot, clean, load) reads
 *    back as, and every unreadable, corrupt or short state on the safe side
 *    (untrusted);
 *  - base.mdb: its size, a consistent copy of an LMDB environment, and the
 *    restore of data.mdb from it; no temporary file left behind.
 *
 * Runs as root too: "no permission" cases drop to uid/gid 65534 in a child
 * process (root passes every permission check). Results cross back as the
 * child's exit status, never through cmocka (its asserts must not run in a
 * forked child). */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/lmdb/datadir.h"
#include "unit.h"

#define NOBODY 65534

typedef struct fixture {
    char dir[64];
    char boot[64]; /* this boot's id, as the state file writes it */
} fixture_t;

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/messenger-datadir-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    FILE *b = fopen("/proc/sys/kernel/random/boot_id", "r");
    assert_non_null(b);
    assert_non_null(fgets(f->boot, sizeof f->boot, b));
    fclose(b);
    f->boot[strcspn(f->boot, "\n")] = '\0';
    assert_true(strlen(f->boot) > 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    char cmd[128];
    chmod(f->dir, 0700); /* a test may have left it read-only */
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- files ---- */

static void join(char out[PATH_MAX], const char *dir, const char *name) {
    assert_true(snprintf(out, PATH_MAX, "%s/%s", dir, name) < PATH_MAX);
}

static void put_file(const char *dir, const char *name, const void *data, size_t len) {
    char p[PATH_MAX];
    join(p, dir, name);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void put_text(const char *dir, const char *name, const char *text) {
    put_file(dir, name, text, strlen(text));
}

/* The whole file, NUL-terminated (caller frees); *len its size. */
static char *get_file(const char *dir, const char *name, size_t *len) {
    char p[PATH_MAX];
    join(p, dir, name);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    assert_true(n >= 0);
    rewind(f);
    char *data = malloc((size_t)n + 1);
    assert_non_null(data);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    data[n] = '\0';
    *len = (size_t)n;
    return data;
}

static bool exists(const char *dir, const char *name) {
    char p[PATH_MAX];
    join(p, dir, name);
    return access(p, F_OK) == 0;
}

static void expect_state(const char *dir, bool trusted, bool load_unfinished) {
    datadir_state_t st = {.trusted = !trusted, .load_unfinished = !load_unfinished};
    datadir_state_read(dir, &st);
    assert_int_equal(st.trusted, trusted);
    assert_int_equal(st.load_unfinished, load_unfinished);
}

/* ---- another process ---- */

typedef int (*child_fn)(const char *dir);

/* Runs fn(dir) in a child process, as uid/gid 65534 when `nobody` (and we
 * are root), and returns what it returned (0 to 255). */
static int in_child(child_fn fn, const char *dir, bool nobody) {
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        if (nobody && geteuid() == 0 &&
            (setgroups(0, NULL) != 0 || setgid(NOBODY) != 0 || setuid(NOBODY) != 0))
            _exit(254);
        _exit(fn(dir) & 0xff);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_not_equal(WEXITSTATUS(status), 254); /* could not drop privileges */
    return WEXITSTATUS(status);
}

/* datadir_lock's result as an exit status: 0, or the errno. */
static int child_lock(const char *dir) {
    int fd = -1;
    int rc = datadir_lock(dir, &fd);
    return rc == 0 ? (fd >= 0 ? 0 : 253) : -rc;
}

/* Takes the lock and exits holding it: the kernel releases it. */
static int child_lock_and_die(const char *dir) {
    int fd;
    return datadir_lock(dir, &fd) == 0 ? 0 : 1;
}

static int child_state_write(const char *dir) {
    return -datadir_state_write(dir, true, false);
}

/* 1 when the state reads as trusted, 0 when not. */
static int child_state_trusted(const char *dir) {
    datadir_state_t st;
    datadir_state_read(dir, &st);
    return st.trusted ? 1 : 0;
}

/* ---- the lock ---- */

/* The lock file is created in an existing folder; the lock is ours until
 * datadir_unlock, and can then be taken again. */
static void lock_creates_its_file(void **state) {
    fixture_t *f = *state;
    assert_false(exists(f->dir, "lock"));
    int fd = -1;
    assert_int_equal(datadir_lock(f->dir, &fd), 0);
    assert_true(fd >= 0);
    assert_true(exists(f->dir, "lock"));
    datadir_unlock(fd);
    fd = -1;
    assert_int_equal(datadir_lock(f->dir, &fd), 0);
    assert_true(fd >= 0);
    datadir_unlock(fd);
    datadir_unlock(-1); /* a no-op */
}

/* One holder at a time: another process, or a second open in this one, is
 * refused at once with -EWOULDBLOCK (and its *fd left alone); released by
 * datadir_unlock or by the holder's death. */
static void lock_held_by_one(void **state) {
    fixture_t *f = *state;
    int fd = -1;
    assert_int_equal(datadir_lock(f->dir, &fd), 0);
    assert_int_equal(in_child(child_lock, f->dir, false), EWOULDBLOCK);
    int fd2 = -7;
    assert_int_equal(datadir_lock(f->dir, &fd2), -EWOULDBLOCK);
    assert_int_equal(fd2, -7);
    datadir_unlock(fd);
    assert_int_equal(in_child(child_lock, f->dir, false), 0); /* released at its exit */

    assert_int_equal(in_child(child_lock_and_die, f->dir, false), 0);
    assert_int_equal(datadir_lock(f->dir, &fd), 0);
    datadir_unlock(fd);
}

static void lock_missing_folder(void **state) {
    fixture_t *f = *state;
    char missing[PATH_MAX];
    join(missing, f->dir, "missing");
    int fd = -7;
    assert_int_equal(datadir_lock(missing, &fd), -ENOENT);
    assert_int_equal(fd, -7);
    assert_false(exists(f->dir, "missing")); /* the folder is not created */
}

/* A folder we may not write (no lock file can be made), and a lock file we
 * may not open for writing. */
static void lock_no_permission(void **state) {
    fixture_t *f = *state;
    assert_int_equal(chmod(f->dir, 0555), 0);
    assert_int_equal(in_child(child_lock, f->dir, true), EACCES);
    assert_false(exists(f->dir, "lock"));

    assert_int_equal(chmod(f->dir, 0755), 0);
    int fd;
    assert_int_equal(datadir_lock(f->dir, &fd), 0);
    datadir_unlock(fd);
    char p[PATH_MAX];
    join(p, f->dir, "lock");
    assert_int_equal(chmod(p, 0400), 0); /* read-only, even to its owner */
    assert_int_equal(in_child(child_lock, f->dir, true), EACCES);
}

/* A folder whose path leaves no room for a file name: -ENAMETOOLONG from
 * everything that names a file in it, untrusted from datadir_state_read. */
static void path_too_long(void **state) {
    (void)state;
    char *dir = malloc(PATH_MAX);
    assert_non_null(dir);
    memset(dir, 'd', PATH_MAX - 4);
    dir[0] = '/';
    dir[PATH_MAX - 4] = '\0';
    int fd = -7;
    assert_int_equal(datadir_lock(dir, &fd), -ENAMETOOLONG);
    assert_int_equal(fd, -7);
    assert_int_equal(datadir_state_write(dir, true, false), -ENAMETOOLONG);
    assert_int_equal(datadir_base_size(dir), -ENAMETOOLONG);
    assert_int_equal(datadir_base_restore(dir), -ENAMETOOLONG);
    expect_state(dir, false, false);
    free(dir);
}

/* ---- the state file ---- */

/* "boot <id>\nclean <0|1>\nload <0|1>\n", written whole: no temporary file
 * left, a stale one from an interrupted write replaced. */
static void state_write_exact_bytes(void **state) {
    fixture_t *f = *state;
    put_text(f->dir, "state.tmp", "left over by a crash in the middle of a write");
    static const struct {
        bool clean, loading;
        const char *flags;
    } cases[] = {
        {true, false, "clean 1\nload 0\n"},
        {false, false, "clean 0\nload 0\n"},
        {false, true, "clean 0\nload 1\n"},
        {true, true, "clean 1\nload 1\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(datadir_state_write(f->dir, cases[i].clean, cases[i].loading), 0);
        char want[160];
        snprintf(want, sizeof want, "boot %s\n%s", f->boot, cases[i].flags);
        size_t len;
        char *got = get_file(f->dir, "state", &len);
        assert_string_equal(got, want);
        assert_int_equal(len, strlen(want));
        free(got);
        assert_false(exists(f->dir, "state.tmp"));
    }
}

/* What this process writes, read back under the same boot: always usable
 * (clean, or a mere process crash); a load is unfinished only when the
 * close was unclean. */
static void state_round_trip(void **state) {
    fixture_t *f = *state;
    for (int clean = 0; clean <= 1; clean++) {
        for (int loading = 0; loading <= 1; loading++) {
            assert_int_equal(datadir_state_write(f->dir, clean, loading), 0);
            expect_state(f->dir, true, !clean && loading);
        }
    }
}

/* No state file: a new folder, or one from a version that synced every
 * commit. A folder that is not there has no state file either. */
static void state_absent_is_trusted(void **state) {
    fixture_t *f = *state;
    expect_state(f->dir, true, false);
    char missing[PATH_MAX];
    join(missing, f->dir, "missing");
    expect_state(missing, true, false);
}

/* Unclean under another boot: the machine went down, data.mdb may be torn.
 * A clean close is trusted whatever the boot. */
static void state_other_boot(void **state) {
    fixture_t *f = *state;
    static const struct {
        const char *text;
        bool trusted, load_unfinished;
    } cases[] = {
        {"boot 00000000-0000-0000-0000-000000000000\nclean 0\nload 0\n", false, false},
        {"boot 00000000-0000-0000-0000-000000000000\nclean 0\nload 1\n", false, true},
        {"boot 00000000-0000-0000-0000-000000000000\nclean 1\nload 1\n", true, false},
        {"boot 00000000-0000-0000-0000-000000000000\nclean 0\n", false, false}, /* older: no load line */
        {"boot unknown\nclean 0\nload 0\n", false, false}, /* written where the boot id was unreadable */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_text(f->dir, "state", cases[i].text);
        expect_state(f->dir, cases[i].trusted, cases[i].load_unfinished);
    }
}

/* Read back like input: anything but the format, in full up to the clean
 * flag, is untrusted. */
static void state_corrupt(void **state) {
    fixture_t *f = *state;
    char long_boot[200];
    snprintf(long_boot, sizeof long_boot, "boot %0150d\nclean 1\nload 0\n", 7); /* past the 63-byte token */
    const char *cases[] = {
        "",
        "boot",
        "boot x",
        "boot x\nclean",
        "boot x\nclean 2\nload 0\n",
        "boot x\nclean 1\nload 2\n",
        "boot x\nclean -1\nload 0\n",
        "boot x\nclean one\nload 0\n",
        "clean 1\nboot x\nload 0\n",
        "BOOT x\nclean 1\nload 0\n",
        long_boot,
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        put_text(f->dir, "state", cases[i]);
        expect_state(f->dir, false, false);
    }
    put_file(f->dir, "state", "\0\0\0\0\xff\xfe", 6);
    expect_state(f->dir, false, false);
}

/* A state file cut short (a write torn by the crash it should describe):
 * untrusted until the clean flag is whole, then what that flag says. */
static void state_short(void **state) {
    fixture_t *f = *state;
    assert_int_equal(datadir_state_write(f->dir, false, true), 0);
    size_t len;
    char *full = get_file(f->dir, "state", &len);
    size_t flag_end = strstr(full, "clean 0") + strlen("clean 0") - full;
    for (size_t n = 0; n < len; n++) {
        put_file(f->dir, "state", full, n);
        datadir_state_t st;
        datadir_state_read(f->dir, &st);
        assert_int_equal(st.trusted, n >= flag_end);
        assert_int_equal(st.load_unfinished, n == len - 1); /* only "load 1" whole says load */
    }
    free(full);
}

/* A state that exists but cannot be read is not "no state": untrusted. */
static void state_unreadable(void **state) {
    fixture_t *f = *state;
    char p[PATH_MAX];
    join(p, f->dir, "state");
    assert_int_equal(mkdir(p, 0700), 0); /* opens, but reads nothing */
    expect_state(f->dir, false, false);
    assert_int_equal(rmdir(p), 0);

    assert_int_equal(chmod(f->dir, 0755), 0);
    assert_int_equal(datadir_state_write(f->dir, true, false), 0);
    assert_int_equal(chmod(p, 0000), 0);
    assert_int_equal(in_child(child_state_trusted, f->dir, true), 0);
    assert_int_equal(chmod(p, 0644), 0);
    assert_int_equal(in_child(child_state_trusted, f->dir, true), 1); /* the same file, readable */
}

/* A failed write leaves the old state as it was and no temporary file. */
static void state_write_failures(void **state) {
    fixture_t *f = *state;
    char missing[PATH_MAX];
    join(missing, f->dir, "missing");
    assert_int_equal(datadir_state_write(missing, true, false), -ENOENT);
    assert_false(exists(f->dir, "missing"));

    put_text(f->dir, "state", "boot x\nclean 0\nload 1\n");
    assert_int_equal(chmod(f->dir, 0555), 0);
    assert_int_equal(in_child(child_state_write, f->dir, true), EACCES);
    assert_int_equal(chmod(f->dir, 0700), 0);
    size_t len;
    char *got = get_file(f->dir, "state", &len);
    assert_string_equal(got, "boot x\nclean 0\nload 1\n");
    free(got);
    assert_false(exists(f->dir, "state.tmp"));

    /* The last step fails (a folder where the state goes): the temporary
     * file, written and synced by then, goes too. */
    char p[PATH_MAX];
    join(p, f->dir, "state");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(datadir_state_write(f->dir, true, false), -EISDIR);
    assert_false(exists(f->dir, "state.tmp"));
}

/* ---- base.mdb ---- */

static void base_size_and_restore(void **state) {
    fixture_t *f = *state;
    assert_int_equal(datadir_base_size(f->dir), -ENOENT);
    assert_int_equal(datadir_base_restore(f->dir), -ENOENT);
    put_text(f->dir, "data.mdb", "the current data");
    assert_int_equal(datadir_base_restore(f->dir), -ENOENT);
    size_t len;
    char *data = get_file(f->dir, "data.mdb", &len);
    assert_string_equal(data, "the current data"); /* untouched */
    free(data);

    size_t n = 3 * 1024 * 1024 + 17; /* more than one chunk, however it is copied */
    char *base = malloc(n);
    assert_non_null(base);
    for (size_t i = 0; i < n; i++) base[i] = (char)(i * 131 + i / 4096);
    put_file(f->dir, "base.mdb", base, n);
    assert_int_equal(datadir_base_size(f->dir), (int64_t)n);
    assert_int_equal(datadir_base_restore(f->dir), 0);
    data = get_file(f->dir, "data.mdb", &len);
    assert_int_equal(len, n);
    assert_memory_equal(data, base, n);
    free(data);
    free(base);
    assert_false(exists(f->dir, "data.mdb.tmp"));
    assert_true(exists(f->dir, "base.mdb")); /* a copy: the base stays */

    char p[PATH_MAX];
    join(p, f->dir, "data.mdb");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0); /* the last step fails */
    assert_int_equal(datadir_base_restore(f->dir), -EISDIR);
    assert_false(exists(f->dir, "data.mdb.tmp"));
}

static void put_value(MDB_env *env, const char *key, const char *value) {
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {strlen(key), (void *)key}, v = {strlen(value), (void *)value};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
}

/* The value of key in dir/base.mdb opened as an LMDB file, or NULL. */
static char *base_value(const char *dir, const char *key) {
    char p[PATH_MAX];
    join(p, dir, "base.mdb");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, p, MDB_NOSUBDIR | MDB_RDONLY | MDB_NOLOCK, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {strlen(key), (void *)key}, v;
    char *out = NULL;
    if (mdb_get(txn, dbi, &k, &v) == 0) out = strndup(v.mv_data, v.mv_size);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return out;
}

/* A copy of the environment that LMDB opens, replaced whole by the next;
 * *bytes is its size; no temporary file left. */
static void base_write_copies(void **state) {
    fixture_t *f = *state;
    MDB_env *env;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 8 << 20), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    put_value(env, "k", "first");
    uint64_t bytes = 0;
    assert_int_equal(datadir_base_write(env, f->dir, &bytes), 0);
    assert_true(bytes > 0);
    assert_int_equal(datadir_base_size(f->dir), (int64_t)bytes);
    assert_false(exists(f->dir, "base.mdb.tmp"));
    char *v = base_value(f->dir, "k");
    assert_string_equal(v, "first");
    free(v);

    put_value(env, "k", "second");
    put_value(env, "other", "x");
    assert_int_equal(datadir_base_write(env, f->dir, &bytes), 0);
    assert_int_equal(datadir_base_size(f->dir), (int64_t)bytes);
    v = base_value(f->dir, "k");
    assert_string_equal(v, "second");
    free(v);

    char missing[PATH_MAX];
    join(missing, f->dir, "missing");
    bytes = 7;
    assert_int_equal(datadir_base_write(env, missing, &bytes), -ENOENT);
    assert_int_equal(bytes, 7);

    char p[PATH_MAX];
    join(p, f->dir, "base.mdb");
    assert_int_equal(unlink(p), 0);
    assert_int_equal(mkdir(p, 0700), 0); /* the last step fails */
    assert_int_equal(datadir_base_write(env, f->dir, &bytes), -EISDIR);
    assert_int_equal(bytes, 7);
    assert_false(exists(f->dir, "base.mdb.tmp"));
    mdb_env_close(env);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(lock_creates_its_file, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_held_by_one, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_missing_folder, setup, teardown),
        cmocka_unit_test_setup_teardown(lock_no_permission, setup, teardown),
        cmocka_unit_test_setup_teardown(path_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(state_write_exact_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(state_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(state_absent_is_trusted, setup, teardown),
        cmocka_unit_test_setup_teardown(state_other_boot, setup, teardown),
        cmocka_unit_test_setup_teardown(state_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(state_short, setup, teardown),
        cmocka_unit_test_setup_teardown(state_unreadable, setup, teardown),
        cmocka_unit_test_setup_teardown(state_write_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(base_size_and_restore, setup, teardown),
        cmocka_unit_test_setup_teardown(base_write_copies, setup, teardown),
    };
    return cmocka_run_group_tests_name("datadir", tests, NULL, NULL);
}
