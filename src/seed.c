/* seed.c - `messenger seed`: test data written through the store interface.
 *
 * Without size flags it writes the fixed edge-case set (README, "Test
 * data"); with --users/--conversations/--messages it generates a data set of
 * that size for benchmarks. Both are deterministic: ids and timestamps come
 * from fixed values and a fixed-seed PRNG, so running seed twice writes
 * nothing new (the store refuses the same ids again, and seed counts those
 * as already present).
 */
#include "seed.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server.h"
#include "util/log.h"
#include "util/sha256.h"
#include "util/timefmt.h"

/* 2024-01-01T00:00:00Z: every seeded timestamp is an offset from it. */
#define SEED_EPOCH_MS 1704067200000LL
#define SEED_CLOCK_SEQ 0x1234
#define SEED_NODE 0x5eed5eed5eedULL
/* Writes in flight at once: the embedded store batches them into large
 * commits; a Cassandra cluster is better served by a steady pipeline. */
#define IN_FLIGHT_LMDB 131072
#define IN_FLIGHT_CASSANDRA 512

/* Tracks asynchronous store calls: bounded in flight, waited for at the end. */
typedef struct tracker {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long in_flight;
    long max_in_flight;
    long done, existed, failed;
    uuid_t last_user;       /* result of the last user look-up */
    bool last_found;
} tracker_t;

static void tracker_init(tracker_t *t) {
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
}

static void tracker_destroy(tracker_t *t) {
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

/* Waits until fewer than `max` calls are in flight, then counts one more. */
static void tracker_acquire(tracker_t *t, long max) {
    pthread_mutex_lock(&t->mu);
    while (t->in_flight >= max) pthread_cond_wait(&t->cv, &t->mu);
    t->in_flight++;
    pthread_mutex_unlock(&t->mu);
}

/* Counts one call as finished; `counted` writes go into the totals. */
static void tracker_finish(tracker_t *t, int err, bool counted) {
    pthread_mutex_lock(&t->mu);
    t->in_flight--;
    if (counted) {
        if (err == STORE_OK) t->done++;
        else if (err == STORE_ECONFLICT) t->existed++;
        else {
            t->failed++;
            log_error("seed", "store write failed: %s", store_strerror(err));
        }
    }
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void tracker_wait_all(tracker_t *t) {
    pthread_mutex_lock(&t->mu);
    while (t->in_flight > 0) pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static void tracker_release(tracker_t *t, int err) { tracker_finish(t, err, true); }

static void on_user(void *ctx, int err, const user_t *u) {
    (void)u;
    tracker_release(ctx, err);
}

static void on_lookup(void *ctx, int err, const user_t *u) {
    tracker_t *t = ctx;
    pthread_mutex_lock(&t->mu);
    t->last_found = err == STORE_OK;
    if (u) t->last_user = u->id;
    pthread_mutex_unlock(&t->mu);
    if (err && err != STORE_ENOTFOUND) log_error("seed", "user look-up failed: %s", store_strerror(err));
    tracker_finish(t, err, false);
}

/* A seeded write, retried while the store is momentarily unavailable (a
 * busy Cassandra times out under a bulk load). Every seeded write carries
 * fixed ids, so a retry after a half-applied attempt is harmless. */
#define SEED_ATTEMPTS 5

typedef struct seed_write {
    tracker_t *t;
    store_t *s;
    int attempts;
    bool is_send;
    store_send_t send;      /* is_send: content points into `text` */
    uuid_t a, b;            /* !is_send: open a conversation */
    int64_t at_ms;
    char text[];
} seed_write_t;

static void seed_write_submit(seed_write_t *w);

static void seed_write_done(seed_write_t *w, int err) {
    if (err == STORE_EUNAVAILABLE && ++w->attempts < SEED_ATTEMPTS) {
        seed_write_submit(w);
        return;
    }
    tracker_release(w->t, err);
    free(w);
}

static void on_send(void *ctx, int err, const message_t *m, bool replayed) {
    (void)m;
    (void)replayed;
    seed_write_done(ctx, err);
}

static void on_conv(void *ctx, int err, const conversation_t *c) {
    (void)c;
    seed_write_done(ctx, err);
}

static void seed_write_submit(seed_write_t *w) {
    if (w->is_send) store_message_send(w->s, &w->send, on_send, w);
    else store_conversation_open(w->s, &w->a, &w->b, w->at_ms, on_conv, w);
}

/* Queues the opening of a conversation with no messages (seed epoch + ms). */
static void open_at(store_t *s, tracker_t *t, const uuid_t *a, const uuid_t *b, int64_t at_ms) {
    seed_write_t *w = calloc(1, sizeof *w);
    if (!w) {
        tracker_acquire(t, t->max_in_flight);
        tracker_release(t, STORE_ENOMEM);
        return;
    }
    *w = (seed_write_t){.t = t, .s = s, .a = *a, .b = *b, .at_ms = at_ms};
    tracker_acquire(t, t->max_in_flight);
    seed_write_submit(w);
}

/* A stable id for a seeded user: SHA-256 of its name, as a version-4 UUID. */
static void seed_user_id(const char *name, uuid_t *out) {
    uint8_t d[SHA256_LEN];
    char in[96];
    int n = snprintf(in, sizeof in, "messenger-seed-user:%s", name);
    sha256(in, (size_t)n, d);
    memcpy(out->b, d, 16);
    out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x40);
    out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80);
}

/* Finds the user by name, or creates it with its stable id. */
static int ensure_user(store_t *s, tracker_t *t, const char *name, uuid_t *out) {
    tracker_acquire(t, 1);
    store_user_find(s, name, strlen(name), on_lookup, t);
    tracker_wait_all(t);
    if (t->last_found) {
        *out = t->last_user;
        return 0;
    }
    user_t u = {.name = name, .name_len = strlen(name)};
    seed_user_id(name, &u.id);
    tracker_acquire(t, 1);
    store_user_create(s, &u, on_user, t);
    tracker_wait_all(t);
    *out = u.id;
    return t->failed ? -1 : 0;
}

/* Queues one message with a fixed id at `ticks` (100-ns since 1582). */
static void send_at(store_t *s, tracker_t *t, const uuid_t *from, const uuid_t *to, uint64_t ticks,
                    const char *content, size_t len) {
    seed_write_t *w = calloc(1, sizeof *w + len + 1);
    if (!w) {
        tracker_acquire(t, t->max_in_flight);
        tracker_release(t, STORE_ENOMEM);
        return;
    }
    w->t = t;
    w->s = s;
    w->is_send = true;
    if (len) memcpy(w->text, content, len);
    w->send.sender_id = *from;
    w->send.receiver_id = *to;
    w->send.content = w->text;
    w->send.content_len = len;
    uuid_make_v1(&w->send.message_id, ticks, SEED_CLOCK_SEQ, SEED_NODE);
    tracker_acquire(t, t->max_in_flight);
    seed_write_submit(w);
}

static uint64_t at_minute(int minute) { return unix_ms_to_ticks(SEED_EPOCH_MS + (int64_t)minute * 60000); }

static int seed_edge_cases(store_t *s, tracker_t *t) {
    uuid_t alice, bob, carol, dave, erin;
    if (ensure_user(s, t, "alice", &alice) || ensure_user(s, t, "bob", &bob) ||
        ensure_user(s, t, "carol", &carol) || ensure_user(s, t, "dave", &dave) ||
        ensure_user(s, t, "erin", &erin))
        return -1;
    /* alice-bob: 3 greetings, then "Paginated message 1".."25" (25 newest):
     * a page walk of 20 then 8 covers pagination. */
    static const char *const greetings[] = {"Hi Bob!", "Hey Alice, how are you?", "Great, thanks!"};
    for (int i = 0; i < 3; i++) {
        const uuid_t *from = i % 2 ? &bob : &alice, *to = i % 2 ? &alice : &bob;
        send_at(s, t, from, to, at_minute(i), greetings[i], strlen(greetings[i]));
    }
    for (int i = 1; i <= 25; i++) {
        char text[32];
        int n = snprintf(text, sizeof text, "Paginated message %d", i);
        send_at(s, t, i % 2 ? &alice : &bob, i % 2 ? &bob : &alice, at_minute(10 + i), text, (size_t)n);
    }
    /* bob-carol: exactly one message. */
    send_at(s, t, &bob, &carol, at_minute(100), "Hello Carol, just one message here.", 35);
    /* alice-carol: a conversation with no messages. */
    open_at(s, t, &alice, &carol, SEED_EPOCH_MS + 200 * 60000);
    /* carol-erin: the special one (a pair of its own, so that it cannot
     * collide with the empty conversation). */
    static const char special[] = "Special chars: \"quotes\" 'single' \\backslash\\ <b>tags</b> & amp; tab\there\nnewline \x01 control";
    send_at(s, t, &carol, &erin, at_minute(300), special, sizeof special - 1);
    send_at(s, t, &erin, &carol, at_minute(301), "", 0);
    char *big = malloc(4096);
    if (!big) return -1;
    memset(big, 'A', 4096);
    send_at(s, t, &carol, &erin, at_minute(302), big, 4096);
    free(big); /* the store copied it */
    static const char emoji[] = "Emoji: \xF0\x9F\x98\x80 \xF0\x9F\x8E\x89 \xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD \xE2\x9D\xA4\xEF\xB8\x8F \xE4\xBD\xA0\xE5\xA5\xBD";
    send_at(s, t, &erin, &carol, at_minute(303), emoji, sizeof emoji - 1);
    /* Two messages with the same created_at (same millisecond), still two
     * distinct, ordered ids. */
    send_at(s, t, &carol, &erin, at_minute(304), "Same timestamp, first", 21);
    send_at(s, t, &erin, &carol, at_minute(304) + 1, "Same timestamp, second", 22);
    (void)dave; /* dave exists and has no conversations */
    tracker_wait_all(t);
    return t->failed ? -1 : 0;
}

/* xorshift64*: a fixed-seed PRNG, so generated data sets are reproducible. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A progress line on stderr: rewritten in place on a terminal, one line
 * every 10 s otherwise (logs stay readable). */
typedef struct progress {
    const char *what;
    long total;
    double t0, last;
    bool tty;
} progress_t;

static void progress_start(progress_t *p, const char *what, long total) {
    p->what = what;
    p->total = total;
    p->t0 = p->last = now_s();
    p->tty = isatty(STDERR_FILENO);
}

static void progress_show(progress_t *p, long done, bool final) {
    double now = now_s();
    if (!final && now - p->last < (p->tty ? 1.0 : 10.0)) return;
    p->last = now;
    double el = now - p->t0;
    fprintf(stderr, "%sseed: %s %ld/%ld (%.0f/s, %.1fs)%s", p->tty ? "\r" : "", p->what, done, p->total,
            el > 0 ? (double)done / el : 0.0, el, final || !p->tty ? "\n" : "");
}

/* A generated data set in the making: the users' ids and the conversations'
 * pairs (indexes into users), which later phases draw from. */
typedef struct gen {
    store_t *s;
    tracker_t *t;
    long nu, nc, nm;
    uuid_t *users;
    uint32_t (*pairs)[2];
    uint64_t next_tick; /* the next phase's first message time */
} gen_t;

static void gen_users(gen_t *g) {
    progress_t pr;
    progress_start(&pr, "users", g->nu);
    for (long i = 0; i < g->nu; i++) {
        char name[32];
        int n = snprintf(name, sizeof name, "user%07ld", i);
        user_t u = {.name = name, .name_len = (size_t)n};
        seed_user_id(name, &u.id);
        g->users[i] = u.id;
        tracker_acquire(g->t, g->t->max_in_flight);
        store_user_create(g->s, &u, on_user, g->t);
        progress_show(&pr, i, false);
    }
    tracker_wait_all(g->t);
    progress_show(&pr, g->nu, true);
}

/* Conversations: distinct pairs without a hash set, pair k is
 * (k mod nu, k mod nu + 1 + k / nu), so each user talks to neighbours. */
static void gen_conversations(gen_t *g) {
    progress_t pr;
    progress_start(&pr, "conversations", g->nc);
    for (long k = 0; k < g->nc; k++) {
        long a = k % g->nu, b = (a + 1 + k / g->nu) % g->nu;
        g->pairs[k][0] = (uint32_t)a;
        g->pairs[k][1] = (uint32_t)b;
        open_at(g->s, g->t, &g->users[a], &g->users[b], SEED_EPOCH_MS + k);
        progress_show(&pr, k, false);
    }
    tracker_wait_all(g->t);
    progress_show(&pr, g->nc, true);
}

/* Messages: each to a random conversation, 1 ms apart, starting a day
 * after the edge cases' epoch. */
static void gen_messages(gen_t *g) {
    uint64_t rng = 0x9E3779B97F4A7C15ULL;
    uint64_t base = unix_ms_to_ticks(SEED_EPOCH_MS + 86400000LL);
    progress_t pr;
    progress_start(&pr, "messages", g->nc > 0 ? g->nm : 0);
    for (long i = 0; g->nc > 0 && i < g->nm; i++) {
        uint64_t r = rng_next(&rng);
        long k = (long)(r % (uint64_t)g->nc);
        int dir = (int)((r >> 40) & 1);
        char text[96];
        int n = snprintf(text, sizeof text, "Message %ld: the quick brown fox jumps over the lazy dog", i);
        send_at(g->s, g->t, &g->users[g->pairs[k][dir]], &g->users[g->pairs[k][!dir]],
                base + (uint64_t)i * 10000, text, (size_t)n);
        progress_show(&pr, i, false);
    }
    tracker_wait_all(g->t);
    progress_show(&pr, pr.total, true);
    g->next_tick = base + (uint64_t)g->nm * 10000;
}

/* Benchmark extremes, both around user0000000: a user with very many
 * conversations, and a conversation with very many messages. */
static void gen_hub(gen_t *g, long hub) {
    progress_t pr;
    progress_start(&pr, "hub conversations", hub);
    for (long i = 1; i <= hub; i++) {
        open_at(g->s, g->t, &g->users[0], &g->users[i], SEED_EPOCH_MS + i);
        progress_show(&pr, i, false);
    }
    tracker_wait_all(g->t);
    progress_show(&pr, hub, true);
}

static void gen_long(gen_t *g, long count) {
    progress_t pr;
    progress_start(&pr, "long conversation", count);
    for (long i = 0; i < count; i++) {
        char text[96];
        int n = snprintf(text, sizeof text, "Long conversation message %ld", i);
        send_at(g->s, g->t, &g->users[i & 1], &g->users[!(i & 1)], g->next_tick + (uint64_t)i * 10000, text,
                (size_t)n);
        progress_show(&pr, i, false);
    }
    tracker_wait_all(g->t);
    progress_show(&pr, count, true);
}

static int seed_generated(store_t *s, tracker_t *t, const config_t *cfg) {
    gen_t g = {.s = s, .t = t, .nu = cfg->seed_users, .nc = cfg->seed_conversations, .nm = cfg->seed_messages};
    if (g.nu < 2 && (g.nc > 0 || g.nm > 0 || cfg->seed_hub > 0 || cfg->seed_long > 0)) {
        fprintf(stderr, "seed: conversations need at least 2 users\n");
        return -1;
    }
    if (g.nc > g.nu * (g.nu - 1) / 2) g.nc = g.nu * (g.nu - 1) / 2;
    g.users = calloc((size_t)(g.nu ? g.nu : 1), sizeof *g.users);
    g.pairs = calloc((size_t)(g.nc ? g.nc : 1), sizeof *g.pairs);
    if (!g.users || !g.pairs) {
        free(g.users);
        free(g.pairs);
        return -1;
    }
    gen_users(&g);
    gen_conversations(&g);
    gen_messages(&g);
    long hub = cfg->seed_hub < g.nu ? cfg->seed_hub : g.nu - 1;
    if (hub > 0) gen_hub(&g, hub);
    if (cfg->seed_long > 0) gen_long(&g, cfg->seed_long);
    free(g.users);
    free(g.pairs);
    return t->failed ? -1 : 0;
}

int seed_run(const config_t *cfg) {
    signal(SIGPIPE, SIG_IGN);
    server_t srv;
    if (server_open_store(&srv, cfg, true) != 0) return 1;
    tracker_t t;
    tracker_init(&t);
    t.max_in_flight = strcmp(cfg->store, "cassandra") == 0 ? IN_FLIGHT_CASSANDRA : IN_FLIGHT_LMDB;
    bool generated = cfg->seed_users || cfg->seed_conversations || cfg->seed_messages || cfg->seed_hub ||
                     cfg->seed_long;
    int rc = generated ? seed_generated(srv.store, &t, cfg) : seed_edge_cases(srv.store, &t);
    store_close(srv.store);
    fprintf(stderr, "seed: %ld written, %ld already present, %ld failed\n", t.done, t.existed, t.failed);
    tracker_destroy(&t);
    return rc == 0 && t.failed == 0 ? 0 : 1;
}
