/* The LMDB store through the public storage interface: users, sends,
 * pages in both directions, recency order, cursors, idempotency, errors,
 * and durability across close/reopen; rows planted with the LMDB API that
 * the store never writes (times out of range, short values, impossible
 * lengths, foreign idempotency rows, a wal_seq that would wrap), read back
 * through the store; the state file's parsing. */
#include <dirent.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "model/cursor.h"
#include "store/lmdb/datadir.h"
#include "store/lmdb/store_lmdb.h"
#include "unit.h"
#include "util/log.h"
#include "util/timefmt.h"

/* ---- a synchronous view of the asynchronous interface ---- */

typedef struct result {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int err;
    bool replayed;
    user_t user;
    char name[300];
    message_t msg;
    char content[8192];
    message_t msgs[100];
    conversation_t convs[100];
    size_t count;
    bool more;
} result_t;

static result_t *R;

static void reset(void) {
    pthread_mutex_lock(&R->mu);
    R->done = false;
    R->err = 0;
    R->count = 0;
    R->more = false;
    R->replayed = false;
    pthread_mutex_unlock(&R->mu);
}

static void signal_done(int err) {
    pthread_mutex_lock(&R->mu);
    R->err = err;
    R->done = true;
    pthread_cond_signal(&R->cv);
    pthread_mutex_unlock(&R->mu);
}

static int wait_done(void) {
    pthread_mutex_lock(&R->mu);
    while (!R->done) pthread_cond_wait(&R->cv, &R->mu);
    int err = R->err;
    pthread_mutex_unlock(&R->mu);
    return err;
}

static void on_user(void *ctx, int err, const user_t *u) {
    (void)ctx;
    if (u) {
        R->user = *u;
        memcpy(R->name, u->name, u->name_len);
        R->user.name = R->name;
    }
    signal_done(err);
}

static void on_send(void *ctx, int err, const message_t *m, bool replayed) {
    (void)ctx;
    if (m) {
        R->msg = *m;
        memcpy(R->content, m->content, m->content_len);
        R->msg.content = R->content;
    }
    R->replayed = replayed;
    signal_done(err);
}

/* Page items point into the read transaction: only ids are compared later. */
static void on_msgs(void *ctx, int err, const store_msg_page_t *p) {
    (void)ctx;
    if (p) {
        memcpy(R->msgs, p->items, p->count * sizeof *p->items);
        R->count = p->count;
        R->more = p->more;
    }
    signal_done(err);
}

static void on_convs(void *ctx, int err, const store_conv_page_t *p) {
    (void)ctx;
    if (p) {
        memcpy(R->convs, p->items, p->count * sizeof *p->items);
        R->count = p->count;
        R->more = p->more;
    }
    signal_done(err);
}

static void on_conv(void *ctx, int err, const conversation_t *c) {
    (void)ctx;
    if (c) R->convs[0] = *c;
    signal_done(err);
}

typedef struct fixture {
    char dir[64];
    idgen_t ids;
    store_t *store;
} fixture_t;

static void open_store(fixture_t *f) {
    store_lmdb_config_t cfg = {.dir = f->dir, .map_size_mb = 64, .max_batch = 64};
    assert_int_equal(store_lmdb_open(&cfg, &f->ids, &f->store), STORE_OK);
}

static int setup(void **state) {
    log_set_level(LOG_WARN);
    fixture_t *f = calloc(1, sizeof *f);
    R = calloc(1, sizeof *R);
    pthread_mutex_init(&R->mu, NULL);
    pthread_cond_init(&R->cv, NULL);
    snprintf(f->dir, sizeof f->dir, "/tmp/messenger-unit-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    assert_int_equal(idgen_init(&f->ids), 0);
    open_store(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    store_close(f->store);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    pthread_mutex_destroy(&R->mu);
    pthread_cond_destroy(&R->cv);
    free(R);
    free(f);
    return 0;
}

static uuid_t make_user(store_t *s, const char *name) {
    user_t u = {.name = name, .name_len = strlen(name)};
    assert_int_equal(uuid_random(&u.id), 0);
    reset();
    store_user_create(s, &u, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    return u.id;
}

/* A send; at_ms != 0 gives the message id (as the seeder does), else the
 * store makes one. */
static int send_req(store_t *s, const uuid_t *from, const uuid_t *to, const char *text, const char *key,
                    int64_t at_ms) {
    store_send_t r;
    memset(&r, 0, sizeof r);
    r.sender_id = *from;
    r.receiver_id = *to;
    r.content = text;
    r.content_len = strlen(text);
    if (key) {
        r.client_message_id = key;
        r.client_message_id_len = strlen(key);
    }
    if (at_ms) uuid_make_v1(&r.message_id, unix_ms_to_ticks(at_ms), 1, 2);
    reset();
    store_message_send(s, &r, on_send, NULL);
    return wait_done();
}

static int send(store_t *s, const uuid_t *from, const uuid_t *to, const char *text, const char *key) {
    return send_req(s, from, to, text, key, 0);
}

static int send_at(store_t *s, const uuid_t *from, const uuid_t *to, const char *text, int64_t at_ms) {
    return send_req(s, from, to, text, NULL, at_ms);
}

static int get_conv(store_t *s, const uuid_t *conv) {
    reset();
    store_conversation_get(s, conv, on_conv, NULL);
    return wait_done();
}

static int list_msgs(store_t *s, const uuid_t *conv, int limit, const uuid_t *before, const uuid_t *after) {
    store_msg_query_t q = {.conversation_id = *conv, .limit = limit};
    if (before) { q.has_before = true; q.before = *before; }
    if (after) { q.has_after = true; q.after = *after; }
    reset();
    store_messages_list(s, &q, on_msgs, NULL);
    return wait_done();
}

static int list_convs(store_t *s, const uuid_t *user, int limit, const store_conv_query_t *cursor) {
    store_conv_query_t q = cursor ? *cursor : (store_conv_query_t){0};
    q.user_id = *user;
    q.limit = limit;
    reset();
    store_conversations_list(s, &q, on_convs, NULL);
    return wait_done();
}

static void users(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "Alice");
    user_t dup = {.name = "aLICE", .name_len = 5};
    uuid_random(&dup.id);
    reset();
    store_user_create(f->store, &dup, on_user, NULL);
    assert_int_equal(wait_done(), STORE_ECONFLICT); /* case-insensitive */
    reset();
    store_user_find(f->store, "ALICE", 5, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    assert_memory_equal(&R->user.id, &a, 16);
    assert_int_equal(R->user.name_len, 5);
    assert_memory_equal(R->user.name, "Alice", 5); /* the name as registered */
    reset();
    store_user_get(f->store, &a, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    uuid_t nobody;
    uuid_random(&nobody);
    reset();
    store_user_get(f->store, &nobody, on_user, NULL);
    assert_int_equal(wait_done(), STORE_ENOTFOUND);
    reset();
    store_user_find(f->store, "bob", 3, on_user, NULL);
    assert_int_equal(wait_done(), STORE_ENOTFOUND);
}

static void send_and_pages(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    uuid_t ids[28];
    for (int i = 0; i < 28; i++) {
        char text[32];
        snprintf(text, sizeof text, "m%d", i);
        assert_int_equal(send(f->store, i % 2 ? &b : &a, i % 2 ? &a : &b, text, NULL), STORE_OK);
        ids[i] = R->msg.id;
        assert_int_equal(uuid_version(&ids[i]), 1);
        if (i) {
            uint8_t k0[16], k1[16];
            uuid_sort_key(&ids[i - 1], k0);
            uuid_sort_key(&ids[i], k1);
            assert_true(memcmp(k0, k1, 16) < 0);
        }
    }
    uuid_t conv;
    conversation_id_derive(&a, &b, &conv);
    assert_memory_equal(&R->msg.conversation_id, &conv, 16);
    /* newest first: 20, then 8 with no more */
    assert_int_equal(list_msgs(f->store, &conv, 20, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 20);
    assert_true(R->more);
    assert_memory_equal(&R->msgs[0].id, &ids[27], 16);
    assert_memory_equal(&R->msgs[19].id, &ids[8], 16);
    uuid_t cursor = R->msgs[19].id;
    assert_int_equal(list_msgs(f->store, &conv, 20, &cursor, NULL), STORE_OK);
    assert_int_equal(R->count, 8);
    assert_false(R->more);
    assert_memory_equal(&R->msgs[0].id, &ids[7], 16);
    assert_memory_equal(&R->msgs[7].id, &ids[0], 16);
    /* exactly 20 + 0: a full page that is the last has more == false */
    assert_int_equal(list_msgs(f->store, &conv, 28, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 28);
    assert_false(R->more);
    /* after: oldest first */
    assert_int_equal(list_msgs(f->store, &conv, 5, NULL, &ids[20]), STORE_OK);
    assert_int_equal(R->count, 5);
    assert_true(R->more);
    assert_memory_equal(&R->msgs[0].id, &ids[21], 16);
    assert_int_equal(list_msgs(f->store, &conv, 5, NULL, &ids[25]), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_false(R->more);
    /* a conversation that does not exist */
    uuid_t none;
    uuid_random(&none);
    assert_int_equal(list_msgs(f->store, &none, 5, NULL, NULL), STORE_ENOTFOUND);
    /* a send to an unknown user writes nothing */
    assert_int_equal(send(f->store, &a, &none, "x", NULL), STORE_ENOTFOUND);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 1);
}

static void recency_order_and_cursor(void **state) {
    fixture_t *f = *state;
    uuid_t me = make_user(f->store, "me");
    uuid_t others[5];
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "o%d", i);
        others[i] = make_user(f->store, name);
        assert_int_equal(send(f->store, &me, &others[i], name, NULL), STORE_OK);
    }
    /* newest activity first: o4 .. o0 */
    assert_int_equal(list_convs(f->store, &me, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 5);
    assert_memory_equal(&R->convs[0].user2_id, &others[4], 16);
    assert_memory_equal(&R->convs[0].user1_id, &me, 16);
    /* o1 gets a message: it moves to the top */
    assert_int_equal(send(f->store, &others[1], &me, "back on top", NULL), STORE_OK);
    assert_int_equal(list_convs(f->store, &me, 2, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_true(R->more);
    assert_memory_equal(&R->convs[0].user2_id, &others[1], 16);
    assert_int_equal(R->convs[0].last_message_len, 11);
    assert_memory_equal(&R->convs[1].user2_id, &others[4], 16);
    /* position cursor after o4; then o4 gets new activity: the walk still
     * continues with o3, o2, o0 and nothing repeats */
    store_conv_query_t cur = {.has_cursor = true, .cursor_activity = R->convs[1].activity, .cursor_id = R->convs[1].id};
    assert_int_equal(send(f->store, &me, &others[4], "bump", NULL), STORE_OK);
    assert_int_equal(list_convs(f->store, &me, 10, &cur), STORE_OK);
    assert_int_equal(R->count, 3);
    assert_false(R->more);
    assert_memory_equal(&R->convs[0].user2_id, &others[3], 16);
    assert_memory_equal(&R->convs[2].user2_id, &others[0], 16);
    /* a bare conversation id as cursor: after that conversation's position */
    store_conv_query_t bare = {.has_cursor = true, .cursor_is_id = true};
    conversation_id_derive(&me, &others[3], &bare.cursor_id);
    assert_int_equal(list_convs(f->store, &me, 10, &bare), STORE_OK);
    assert_int_equal(R->count, 2);
    uuid_random(&bare.cursor_id);
    assert_int_equal(list_convs(f->store, &me, 10, &bare), STORE_EBADCURSOR);
    uuid_t nobody;
    uuid_random(&nobody);
    assert_int_equal(list_convs(f->store, &nobody, 10, NULL), STORE_ENOTFOUND);
}

static void idempotent_sends(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b"), c = make_user(f->store, "c");
    assert_int_equal(send(f->store, &a, &b, "hello", "k1"), STORE_OK);
    assert_false(R->replayed);
    uuid_t first = R->msg.id;
    assert_int_equal(send(f->store, &a, &b, "hello", "k1"), STORE_OK);
    assert_true(R->replayed);
    assert_memory_equal(&R->msg.id, &first, 16);
    assert_int_equal(R->msg.content_len, 5);
    assert_int_equal(send(f->store, &a, &b, "other", "k1"), STORE_ECONFLICT);
    assert_int_equal(send(f->store, &a, &c, "hello", "k1"), STORE_ECONFLICT);
    assert_int_equal(send(f->store, &b, &a, "hello", "k1"), STORE_OK); /* another sender */
    assert_false(R->replayed);
    uuid_t conv;
    conversation_id_derive(&a, &b, &conv);
    assert_int_equal(list_msgs(f->store, &conv, 100, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
}

static void open_empty_conversation(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    reset();
    store_conversation_open(f->store, &a, &b, 1704067200000LL, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    uuid_t conv = R->convs[0].id;
    reset();
    store_conversation_get(f->store, &conv, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    assert_false(R->convs[0].has_last_message);
    assert_true(R->convs[0].created_at_ms == 1704067200000LL);
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 0);
    assert_false(R->more);
    assert_int_equal(list_convs(f->store, &b, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 1);
    assert_false(R->convs[0].has_last_message);
    /* a message makes it the last message; created_at stays */
    assert_int_equal(send(f->store, &b, &a, "first", NULL), STORE_OK);
    reset();
    store_conversation_get(f->store, &conv, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    assert_true(R->convs[0].has_last_message);
    assert_true(R->convs[0].created_at_ms == 1704067200000LL);
}

static void survives_reopen(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    assert_int_equal(send(f->store, &a, &b, "durable", NULL), STORE_OK);
    store_close(f->store);
    open_store(f);
    uuid_t conv;
    conversation_id_derive(&a, &b, &conv);
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 1);
}

/* Many writers at once: group commit must keep every send, once. */
struct writer_arg {
    store_t *s;
    uuid_t a, b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending, failed;
};

static void on_bulk(void *ctx, int err, const message_t *m, bool replayed) {
    (void)m;
    (void)replayed;
    struct writer_arg *w = ctx;
    pthread_mutex_lock(&w->mu);
    w->pending--;
    if (err) w->failed++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void concurrent_sends(void **state) {
    fixture_t *f = *state;
    struct writer_arg w = {.s = f->store};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.a = make_user(f->store, "a");
    w.b = make_user(f->store, "b");
    const int n = 3000;
    w.pending = n;
    for (int i = 0; i < n; i++) {
        store_send_t r;
        memset(&r, 0, sizeof r);
        r.sender_id = i % 2 ? w.a : w.b;
        r.receiver_id = i % 2 ? w.b : w.a;
        r.content = "x";
        r.content_len = 1;
        store_message_send(f->store, &r, on_bulk, &w); /* all in flight at once */
    }
    pthread_mutex_lock(&w.mu);
    while (w.pending) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(w.failed, 0);
    uuid_t conv;
    conversation_id_derive(&w.a, &w.b, &conv);
    int total = 0;
    uuid_t cursor;
    bool first = true;
    do {
        assert_int_equal(list_msgs(f->store, &conv, 100, first ? NULL : &cursor, NULL), STORE_OK);
        total += (int)R->count;
        if (R->count) cursor = R->msgs[R->count - 1].id;
        first = false;
    } while (R->more);
    assert_int_equal(total, n);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
}

static void write_state(const char *dir, const char *text) {
    char path[128];
    snprintf(path, sizeof path, "%s/state", dir);
    FILE *st = fopen(path, "w");
    assert_non_null(st);
    fputs(text, st);
    fclose(st);
}

static void lose_data_file(const char *dir) {
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    assert_int_equal(truncate(path, 0), 0);
}

static int count_log_segments(const char *dir, bool *has_first) {
    char path[128];
    snprintf(path, sizeof path, "%s/wal", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    *has_first = false;
    while ((e = readdir(d)) != NULL) {
        if (strstr(e->d_name, ".wal")) n++;
        if (strcmp(e->d_name, "0000000000000001.wal") == 0) *has_first = true;
    }
    closedir(d);
    return n;
}

/* The log grows past the base, new base copies are written while sends go
 * on, and the log before them is deleted; after a machine crash (state
 * written under another boot, data.mdb lost) base.mdb and the rest of the
 * log give back every acknowledged send. */
static void rebase_then_machine_crash(void **state) {
    fixture_t *f = *state;
    store_close(f->store);
    store_lmdb_config_t cfg = {.dir = f->dir, .map_size_mb = 64, .max_batch = 64, .rebase_log_bytes = 4096};
    assert_int_equal(store_lmdb_open(&cfg, &f->ids, &f->store), STORE_OK);
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    enum { N = 400 };
    char text[600];
    uuid_t last;
    for (int i = 0; i < N; i++) {
        snprintf(text, sizeof text, "%04d %0500d", i, i);
        assert_int_equal(send(f->store, i % 2 ? &b : &a, i % 2 ? &a : &b, text, NULL), STORE_OK);
        last = R->msg.id;
        if (i % 50 == 0) usleep(20000); /* let base copies finish between sends */
    }
    store_close(f->store); /* waits for a running base copy */
    bool has_first;
    count_log_segments(f->dir, &has_first);
    assert_false(has_first); /* forgotten: a later base holds it */

    write_state(f->dir, "boot 00000000-0000-0000-0000-000000000000\nclean 0\n");
    lose_data_file(f->dir);

    assert_int_equal(store_lmdb_open(&cfg, &f->ids, &f->store), STORE_OK);
    uuid_t conv, cursor;
    conversation_id_derive(&a, &b, &conv);
    int seen = 0;
    bool more = true;
    for (int page = 0; more; page++) {
        assert_int_equal(list_msgs(f->store, &conv, 100, page ? &cursor : NULL, NULL), STORE_OK);
        if (page == 0) assert_memory_equal(&R->msgs[0].id, &last, 16);
        for (size_t i = 0; i < R->count; i++) {
            snprintf(text, sizeof text, "%04d", N - 1 - seen);
            assert_memory_equal(R->msgs[i].content, text, 4); /* into the map: no write runs meanwhile */
            seen++;
        }
        cursor = R->msgs[R->count - 1].id;
        more = R->more;
    }
    assert_int_equal(seen, N);
}

/* A bulk load (not logged) that dies before it closes: the next open keeps
 * what it loaded and writes a new base before anything builds on it, so a
 * machine crash after that loses nothing that was acknowledged. */
static void unfinished_bulk_load(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "before");
    store_close(f->store);
    f->store = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) { /* the loader: loads, then dies without closing */
        store_lmdb_config_t bulk = {.dir = f->dir, .map_size_mb = 64, .max_batch = 1024, .bulk_load = true};
        store_t *st;
        if (store_lmdb_open(&bulk, &f->ids, &st) != STORE_OK) _exit(2);
        user_t u = {.name = "loaded", .name_len = 6};
        if (uuid_random(&u.id) != 0) _exit(3);
        reset();
        store_user_create(st, &u, on_user, NULL);
        _exit(wait_done() == STORE_OK ? 0 : 4);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    open_store(f); /* the same boot: a process crash */
    reset();
    store_user_find(f->store, "loaded", 6, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    uuid_t loaded = R->user.id;
    assert_int_equal(send(f->store, &a, &loaded, "built on the load", NULL), STORE_OK);
    store_close(f->store);
    f->store = NULL;

    /* a machine crash: data.mdb lost, the state from another boot */
    write_state(f->dir, "boot 00000000-0000-0000-0000-000000000000\nclean 0\nload 0\n");
    lose_data_file(f->dir);
    open_store(f);
    uuid_t conv;
    conversation_id_derive(&a, &loaded, &conv);
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 1);
    reset();
    store_user_get(f->store, &loaded, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK);
}

/* Ids given by the caller may be older than a conversation's activity (the
 * seeder writes out of order, and opens conversations after their first
 * messages' times): the recency rows stay put, one per user, and a later
 * send still finds them (its newest message is then not its activity). */
static void explicit_ids_out_of_order(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b"), c = make_user(f->store, "c");
    const int64_t t0 = 1704067200000LL; /* 2024-01-01 */
    reset();
    store_conversation_open(f->store, &a, &b, t0, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    uuid_t conv = R->convs[0].id;
    /* a is in another conversation, active at t0 + 5 s */
    assert_int_equal(send_at(f->store, &a, &c, "with c", t0 + 5000), STORE_OK);
    /* an older message than the conversation's creation: activity stays */
    assert_int_equal(send_at(f->store, &b, &a, "before it was opened", t0 - 60000), STORE_OK);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_memory_equal(&R->convs[1].id, &conv, 16);
    assert_true(R->convs[1].activity == unix_ms_to_ticks(t0));
    assert_false(R->convs[1].has_last_message); /* the row is as the open left it */
    /* the same id again is refused, and writes nothing */
    assert_int_equal(send_at(f->store, &b, &a, "before it was opened", t0 - 60000), STORE_ECONFLICT);
    /* newer than c's: moves to the top, for both users */
    assert_int_equal(send_at(f->store, &a, &b, "newest", t0 + 10000), STORE_OK);
    /* older than the newest: stays second message, rows unchanged */
    assert_int_equal(send_at(f->store, &b, &a, "late arrival", t0 + 7000), STORE_OK);
    /* a send with a generated id finds the rows through the newest message */
    assert_int_equal(send(f->store, &b, &a, "now", NULL), STORE_OK);
    uuid_t now_id = R->msg.id;
    for (int u = 0; u < 2; u++) {
        assert_int_equal(list_convs(f->store, u ? &b : &a, 10, NULL), STORE_OK);
        assert_int_equal(R->count, u ? 1 : 2); /* one row per user and conversation */
        assert_memory_equal(&R->convs[0].id, &conv, 16);
        assert_true(R->convs[0].has_last_message);
        assert_memory_equal(&R->convs[0].last_message_id, &now_id, 16);
        assert_true(R->convs[0].created_at_ms == t0);
    }
    assert_int_equal(get_conv(f->store, &conv), STORE_OK);
    assert_memory_equal(&R->convs[0].last_message_id, &now_id, 16);
    assert_true(R->convs[0].activity == uuid_time_ticks(&now_id));
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 4);
}

/* A store written before the recency rows were the only per-user rows: it
 * has conversations_by_user, and the oldest have empty recency values.
 * Opening it fills those and empties the old table. */
static void migrates_conversations_by_user(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b"), c = make_user(f->store, "c");
    assert_int_equal(send(f->store, &a, &b, "to b", NULL), STORE_OK);
    assert_int_equal(send(f->store, &c, &a, "from c", NULL), STORE_OK);
    store_close(f->store);
    f->store = NULL;

    /* Rewrite it as the old layout: every recency row copied to
     * conversations_by_user (user . conv), and a's rows emptied. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi rec, old;
    MDB_cursor *cur;
    MDB_val k, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 64u << 20), 0);
    assert_int_equal(mdb_env_open(env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "conversations_by_recency", 0, &rec), 0);
    assert_int_equal(mdb_dbi_open(txn, "conversations_by_user", MDB_CREATE, &old), 0);
    assert_int_equal(mdb_cursor_open(txn, rec, &cur), 0);
    int rows = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t ok[32];
        assert_int_equal(k.mv_size, 40);
        memcpy(ok, k.mv_data, 16);
        memcpy(ok + 16, (uint8_t *)k.mv_data + 24, 16);
        MDB_val okv = {.mv_size = 32, .mv_data = ok};
        assert_int_equal(mdb_put(txn, old, &okv, &v, 0), 0);
        rows++;
    }
    assert_int_equal(rows, 4);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (memcmp(k.mv_data, a.b, 16) != 0) continue;
        uint8_t key[40]; /* a copy: the put moves the bytes k points at */
        memcpy(key, k.mv_data, 40);
        MDB_val kc = {.mv_size = 40, .mv_data = key}, empty = {.mv_size = 0, .mv_data = ""};
        assert_int_equal(mdb_cursor_put(cur, &kc, &empty, MDB_CURRENT), 0);
    }
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    open_store(f);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_memory_equal(&R->convs[0].user2_id, &c, 16);
    assert_int_equal(R->convs[0].last_message_len, 6); /* "from c", from the old row */
    assert_memory_equal(&R->convs[1].user2_id, &b, 16);
    /* it works on as usual */
    assert_int_equal(send(f->store, &b, &a, "back", NULL), STORE_OK);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_memory_equal(&R->convs[0].user2_id, &b, 16);
    store_close(f->store);
    f->store = NULL;

    /* the old table is empty now */
    MDB_stat st;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "conversations_by_user", 0, &old), 0);
    assert_int_equal(mdb_stat(txn, old, &st), 0);
    assert_int_equal(st.ms_entries, 0);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    open_store(f);
}

/* ---- rows the store never writes, planted with the LMDB API: read back,
 * they are checked like input (logged, then skipped, refused or absent) ---- */

typedef struct raw {
    MDB_env *env;
    MDB_txn *txn;
} raw_t;

/* Closes the fixture's store and opens its data file directly. */
static void raw_begin(fixture_t *f, raw_t *r) {
    store_close(f->store);
    f->store = NULL;
    assert_int_equal(mdb_env_create(&r->env), 0);
    assert_int_equal(mdb_env_set_maxdbs(r->env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(r->env, 64u << 20), 0);
    assert_int_equal(mdb_env_open(r->env, f->dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(r->env, NULL, 0, &r->txn), 0);
}

static MDB_dbi raw_dbi(raw_t *r, const char *table) {
    MDB_dbi dbi;
    assert_int_equal(mdb_dbi_open(r->txn, table, 0, &dbi), 0);
    return dbi;
}

static void raw_put(raw_t *r, const char *table, const void *k, size_t kn, const void *v, size_t vn) {
    MDB_val kv = {.mv_size = kn, .mv_data = (void *)k}, vv = {.mv_size = vn, .mv_data = (void *)v};
    assert_int_equal(mdb_put(r->txn, raw_dbi(r, table), &kv, &vv, 0), 0);
}

/* Copies row k of table into out (at most cap bytes); returns its size. */
static size_t raw_get(raw_t *r, const char *table, const void *k, size_t kn, uint8_t *out, size_t cap) {
    MDB_val kv = {.mv_size = kn, .mv_data = (void *)k}, vv;
    assert_int_equal(mdb_get(r->txn, raw_dbi(r, table), &kv, &vv), 0);
    assert_true(vv.mv_size <= cap);
    memcpy(out, vv.mv_data, vv.mv_size);
    return vv.mv_size;
}

/* Commits, closes, and opens the store again. */
static void raw_end(fixture_t *f, raw_t *r) {
    assert_int_equal(mdb_txn_commit(r->txn), 0);
    mdb_env_close(r->env);
    open_store(f);
}

static void put_be64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static void message_key(uint8_t key[32], const uuid_t *conv, const uuid_t *id) {
    memcpy(key, conv->b, 16);
    uuid_sort_key(id, key + 16);
}

#define YEAR_1970 0LL
#define YEAR_3000 32503680000000LL

/* Messages with a time out of range, or cut short, are skipped in pages;
 * a bad newest message makes the conversation itself STORE_EIO. */
static void bad_message_rows(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    uuid_t ids[5], conv;
    for (int i = 0; i < 5; i++) {
        assert_int_equal(send(f->store, i % 2 ? &b : &a, i % 2 ? &a : &b, "hello", NULL), STORE_OK);
        ids[i] = R->msg.id;
        conv = R->msg.conversation_id;
    }
    raw_t r;
    raw_begin(f, &r);
    uint8_t key[32], v[256];
    message_key(key, &conv, &ids[1]);
    size_t n = raw_get(&r, "messages_by_conversation", key, 32, v, sizeof v);
    put_be64(v + 32, YEAR_1970);
    raw_put(&r, "messages_by_conversation", key, 32, v, n);
    message_key(key, &conv, &ids[2]);
    raw_put(&r, "messages_by_conversation", key, 32, v, 10); /* shorter than its header */
    message_key(key, &conv, &ids[3]);
    n = raw_get(&r, "messages_by_conversation", key, 32, v, sizeof v);
    put_be64(v + 32, YEAR_3000);
    raw_put(&r, "messages_by_conversation", key, 32, v, n);
    raw_end(f, &r);

    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 2);
    assert_memory_equal(&R->msgs[0].id, &ids[4], 16);
    assert_memory_equal(&R->msgs[1].id, &ids[0], 16);
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, &ids[0]), STORE_OK);
    assert_int_equal(R->count, 1);
    assert_int_equal(get_conv(f->store, &conv), STORE_OK);

    raw_begin(f, &r);
    message_key(key, &conv, &ids[4]);
    n = raw_get(&r, "messages_by_conversation", key, 32, v, sizeof v);
    memset(v, 0, 16); /* a nil sender */
    raw_put(&r, "messages_by_conversation", key, 32, v, n);
    raw_end(f, &r);
    assert_int_equal(get_conv(f->store, &conv), STORE_EIO);
    assert_int_equal(list_msgs(f->store, &conv, 10, NULL, NULL), STORE_OK);
    assert_int_equal(R->count, 1);
}

/* Recency rows with a time out of range, a has_last that is not 0 or 1, or
 * an activity other than their key's are skipped in the list; a send into
 * such a conversation replaces its rows. */
static void bad_recency_rows(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), others[3], convs[3];
    const char *names[3] = {"b", "c", "d"};
    for (int i = 0; i < 3; i++) {
        others[i] = make_user(f->store, names[i]);
        assert_int_equal(send(f->store, &a, &others[i], "hi", NULL), STORE_OK);
        convs[i] = R->msg.conversation_id;
    }
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 3);
    uint64_t act[3];
    for (int i = 0; i < 3; i++) act[i] = R->convs[2 - i].activity; /* convs[i]'s */
    raw_t r;
    raw_begin(f, &r);
    uint8_t key[40], v[256];
    for (int i = 0; i < 3; i++) {
        memcpy(key, a.b, 16);
        put_be64(key + 16, act[i]);
        memcpy(key + 24, convs[i].b, 16);
        size_t n = raw_get(&r, "conversations_by_recency", key, 40, v, sizeof v);
        if (i == 0) put_be64(v + 24, YEAR_3000);  /* created */
        if (i == 1) v[32] = 7;                    /* has_last */
        if (i == 2) put_be64(v + 16, act[i] + 1); /* activity other than the key's */
        raw_put(&r, "conversations_by_recency", key, 40, v, n);
    }
    raw_end(f, &r);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 0);
    assert_int_equal(list_convs(f->store, &others[0], 10, NULL), STORE_OK);
    assert_int_equal(R->count, 1); /* the other user's row is whole */
    for (int i = 0; i < 3; i++) assert_int_equal(send(f->store, &others[i], &a, "mended", NULL), STORE_OK);
    assert_int_equal(list_convs(f->store, &a, 10, NULL), STORE_OK);
    assert_int_equal(R->count, 3);
    for (int i = 0; i < 3; i++) assert_memory_equal(&R->convs[i].id, &convs[2 - i], 16);
}

/* Metadata with a time out of range: the conversation is STORE_EIO, a send
 * that needs it is refused with STORE_EIO, and other writes go on. */
static void bad_metadata_row(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b"), c = make_user(f->store, "c");
    reset();
    store_conversation_open(f->store, &a, &b, 1704067200000LL, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_OK);
    uuid_t conv = R->convs[0].id;
    raw_t r;
    raw_begin(f, &r);
    uint8_t v[64];
    size_t n = raw_get(&r, "conversation_metadata", conv.b, 16, v, sizeof v);
    put_be64(v, (uint64_t)-5);
    raw_put(&r, "conversation_metadata", conv.b, 16, v, n);
    raw_end(f, &r);
    assert_int_equal(get_conv(f->store, &conv), STORE_EIO);
    assert_int_equal(send(f->store, &a, &b, "into a bad conversation", NULL), STORE_EIO);
    assert_int_equal(send(f->store, &a, &c, "elsewhere", NULL), STORE_OK);
    reset();
    store_conversation_open(f->store, &b, &a, 0, on_conv, NULL);
    assert_int_equal(wait_done(), STORE_EIO);
}

static void on_token(void *ctx, int err, const store_token_t *t) {
    (void)ctx;
    (void)t;
    signal_done(err);
}

static int token_op(store_t *s, int op, const store_token_t *t) {
    reset();
    if (op == 0) store_token_put(s, t, on_token, NULL);
    else if (op == 1) store_token_get(s, t->hash, on_token, NULL);
    else store_token_delete(s, t->hash, on_token, NULL);
    return wait_done();
}

/* Token rows that cannot be used (an expiry out of range, a nil user, a
 * bad length) read as absent: no session. */
static void bad_token_rows(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a");
    store_token_t t[3];
    for (int i = 0; i < 3; i++) {
        memset(&t[i], 0, sizeof t[i]);
        memset(t[i].hash, 'a' + i, sizeof t[i].hash);
        t[i].user_id = a;
        t[i].expires_at_ms = time_now_ms() + 3600000;
        assert_int_equal(token_op(f->store, 0, &t[i]), STORE_OK);
        assert_int_equal(token_op(f->store, 1, &t[i]), STORE_OK);
    }
    raw_t r;
    raw_begin(f, &r);
    uint8_t v[64];
    size_t n = raw_get(&r, "auth_tokens", t[0].hash, 32, v, sizeof v);
    put_be64(v, YEAR_3000); /* a session for ever */
    raw_put(&r, "auth_tokens", t[0].hash, 32, v, n);
    n = raw_get(&r, "auth_tokens", t[1].hash, 32, v, sizeof v);
    memset(v + 8, 0, 16);
    raw_put(&r, "auth_tokens", t[1].hash, 32, v, n);
    raw_put(&r, "auth_tokens", t[2].hash, 32, v, 30);
    raw_end(f, &r);
    for (int i = 0; i < 3; i++) assert_int_equal(token_op(f->store, 1, &t[i]), STORE_ENOTFOUND);
    assert_int_equal(token_op(f->store, 2, &t[0]), STORE_OK); /* logout still works */
}

/* An idempotency row with a time out of range, or pointing at another
 * sender's message, is not used: the send writes a new message (never
 * hands out the foreign one) and replaces the row. */
static void bad_idempotency_rows(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a"), b = make_user(f->store, "b");
    assert_int_equal(send(f->store, &a, &b, "first", "k1"), STORE_OK);
    uuid_t first = R->msg.id;
    assert_int_equal(send(f->store, &a, &b, "secret of a", "k2"), STORE_OK);
    raw_t r;
    raw_begin(f, &r);
    uint8_t key[16 + 2], v[64], bkey[16 + 2];
    memcpy(key, a.b, 16);
    memcpy(key + 16, "k1", 2);
    size_t n = raw_get(&r, "idempotency", key, sizeof key, v, sizeof v);
    put_be64(v, YEAR_3000);
    raw_put(&r, "idempotency", key, sizeof key, v, n);
    memcpy(key + 16, "k2", 2);
    n = raw_get(&r, "idempotency", key, sizeof key, v, sizeof v);
    memcpy(bkey, b.b, 16);
    memcpy(bkey + 16, "k2", 2);
    raw_put(&r, "idempotency", bkey, sizeof bkey, v, n); /* b's key -> a's message */
    raw_end(f, &r);
    assert_int_equal(send(f->store, &a, &b, "first", "k1"), STORE_OK);
    assert_false(R->replayed);
    assert_memory_not_equal(&R->msg.id, &first, 16);
    assert_int_equal(send(f->store, &a, &b, "first", "k1"), STORE_OK); /* the row was replaced */
    assert_true(R->replayed);
    assert_int_equal(send(f->store, &b, &a, "secret of a", "k2"), STORE_OK);
    assert_false(R->replayed);
    assert_memory_equal(&R->msg.sender_id, &b, 16);
}

/* A user row whose name or password hash has an impossible length, or a
 * name index entry that is not an id: STORE_EIO, not a bad user. */
static void bad_user_rows(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "alice"), b = make_user(f->store, "bob"), c = make_user(f->store, "carol");
    raw_t r;
    raw_begin(f, &r);
    raw_put(&r, "users", a.b, 16, "", 0);
    static uint8_t huge[5000];
    raw_put(&r, "credentials", b.b, 16, huge, sizeof huge);
    raw_put(&r, "users_by_name", "carol", 5, c.b, 5);
    raw_end(f, &r);
    reset();
    store_user_get(f->store, &a, on_user, NULL);
    assert_int_equal(wait_done(), STORE_EIO);
    reset();
    store_user_find(f->store, "bob", 3, on_user, NULL);
    assert_int_equal(wait_done(), STORE_EIO);
    reset();
    store_user_get(f->store, &b, on_user, NULL);
    assert_int_equal(wait_done(), STORE_OK); /* the name alone is fine */
    reset();
    store_user_find(f->store, "carol", 5, on_user, NULL);
    assert_int_equal(wait_done(), STORE_EIO);
}

/* The log's seq in the database out of range: the open refuses (it cannot
 * know which records the database holds), it does not wrap. */
static void bad_wal_seq(void **state) {
    fixture_t *f = *state;
    uuid_t a = make_user(f->store, "a");
    (void)a;
    raw_t r;
    raw_begin(f, &r);
    uint8_t v[8];
    put_be64(v, UINT64_MAX);
    raw_put(&r, "store_meta", "wal_seq", 7, v, 8);
    assert_int_equal(mdb_txn_commit(r.txn), 0);
    mdb_env_close(r.env);
    store_lmdb_config_t cfg = {.dir = f->dir, .map_size_mb = 64, .max_batch = 64};
    assert_int_equal(store_lmdb_open(&cfg, &f->ids, &f->store), STORE_EIO);
    assert_null(f->store);
    /* mended by hand, it opens */
    raw_begin(f, &r);
    put_be64(v, 1);
    raw_put(&r, "store_meta", "wal_seq", 7, v, 8);
    raw_end(f, &r);
    assert_non_null(f->store);
}

/* The state file is read back like input: a flag that is not 0 or 1, or
 * garbage, is untrusted (the safe side). */
static void state_file_parsing(void **state) {
    fixture_t *f = *state;
    static const struct {
        const char *text;
        bool trusted;
    } cases[] = {
        {"boot x\nclean 1\nload 0\n", true},  {"boot x\nclean 7\nload 0\n", false},
        {"boot x\nclean 1\nload 9\n", false}, {"boot x\nclean -1\n", false},
        {"garbage", false},                   {"", false},
        {"boot x\nclean 1\n", true},
    };
    char dir[96];
    snprintf(dir, sizeof dir, "%s/statecheck", f->dir);
    assert_int_equal(mkdir(dir, 0700), 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_state(dir, cases[i].text);
        datadir_state_t st;
        datadir_state_read(dir, &st);
        assert_int_equal(st.trusted, cases[i].trusted);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(users, setup, teardown),
        cmocka_unit_test_setup_teardown(send_and_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(recency_order_and_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(idempotent_sends, setup, teardown),
        cmocka_unit_test_setup_teardown(open_empty_conversation, setup, teardown),
        cmocka_unit_test_setup_teardown(survives_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(concurrent_sends, setup, teardown),
        cmocka_unit_test_setup_teardown(rebase_then_machine_crash, setup, teardown),
        cmocka_unit_test_setup_teardown(unfinished_bulk_load, setup, teardown),
        cmocka_unit_test_setup_teardown(explicit_ids_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(migrates_conversations_by_user, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_message_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_recency_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_metadata_row, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_token_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_idempotency_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_user_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(bad_wal_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(state_file_parsing, setup, teardown),
    };
    return cmocka_run_group_tests_name("store_lmdb", tests, NULL, NULL);
}
