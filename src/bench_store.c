/* bench_store.c - `messenger bench-store`: the storage layer alone, no HTTP.
 *
 * Drives the store interface with the exact operations (and so, on
 * Cassandra, the exact CQL statements) the API issues, from a closed loop of
 * --concurrency operations in flight, for --duration seconds. It is the
 * ceiling against which `make bench` judges the HTTP API: on Cassandra, page
 * reads and sends through HTTP should reach 70% of it.
 *
 * Prints one JSON line per scenario:
 *   {"scenario":"page","store":"cassandra","concurrency":64,"ops":...,"ops_per_s":...,
 *    "p50_ms":...,"p99_ms":...,"errors":...}
 */
#include "bench_store.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server.h"
#include "util/log.h"

#define MAX_SAMPLES 4000000

typedef struct bench {
    store_t *store;
    const char *scenario;
    uuid_t users[2];
    uuid_t conv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long in_flight;
    bool stop;
    long ops, errors;
    double *lat_ms; /* one sample per completed operation, up to MAX_SAMPLES */
    long n_lat;
} bench_t;

/* A slot is one operation in flight. A store may complete an operation
 * before the call that started it returns (LMDB reads), so issuing the next
 * one from the callback would recurse without bound: the slot's state lets
 * the issuing loop take over instead (a trampoline). */
enum { SLOT_IDLE, SLOT_ISSUING, SLOT_AGAIN };

typedef struct slot {
    bench_t *b;
    struct timespec start;
    unsigned seq;
    _Atomic int state;
} slot_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void issue(slot_t *s);

/* Records one completion and, unless stopping, issues the slot's next op. */
static void complete(slot_t *s, int err) {
    bench_t *b = s->b;
    struct timespec end;
    clock_gettime(CLOCK_MONOTONIC, &end);
    double ms = (double)(end.tv_sec - s->start.tv_sec) * 1e3 + (double)(end.tv_nsec - s->start.tv_nsec) / 1e6;
    pthread_mutex_lock(&b->mu);
    b->ops++;
    if (err) b->errors++;
    if (b->n_lat < MAX_SAMPLES) b->lat_ms[b->n_lat++] = ms;
    bool stop = b->stop;
    if (stop) {
        b->in_flight--;
        pthread_cond_broadcast(&b->cv);
    }
    pthread_mutex_unlock(&b->mu);
    if (stop) return;
    int expected = SLOT_ISSUING;
    if (!atomic_compare_exchange_strong(&s->state, &expected, SLOT_AGAIN)) issue(s);
}

static void on_page(void *ctx, int err, const store_msg_page_t *p) {
    (void)p;
    complete(ctx, err);
}

static void on_send(void *ctx, int err, const message_t *m, bool replayed) {
    (void)m;
    (void)replayed;
    complete(ctx, err);
}

static void start_op(slot_t *s);

static void issue(slot_t *s) {
    for (;;) {
        atomic_store(&s->state, SLOT_ISSUING);
        start_op(s);
        int expected = SLOT_ISSUING;
        if (atomic_compare_exchange_strong(&s->state, &expected, SLOT_IDLE)) return; /* completes later */
        /* SLOT_AGAIN: it completed already; issue the next one here. */
    }
}

static void start_op(slot_t *s) {
    bench_t *b = s->b;
    clock_gettime(CLOCK_MONOTONIC, &s->start);
    s->seq++;
    if (strcmp(b->scenario, "page") == 0) {
        store_msg_query_t q = {.conversation_id = b->conv, .limit = 20};
        store_messages_list(b->store, &q, on_page, s);
    } else {
        store_send_t r;
        memset(&r, 0, sizeof r);
        r.sender_id = b->users[s->seq & 1];
        r.receiver_id = b->users[!(s->seq & 1)];
        r.content = "bench-store message";
        r.content_len = strlen(r.content);
        store_message_send(b->store, &r, on_send, s);
    }
}

/* ---- synchronous set-up helpers ---- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int err;
} waiter_t;

static void waiter_done(waiter_t *w, int err) {
    pthread_mutex_lock(&w->mu);
    w->err = err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int waiter_wait(waiter_t *w) {
    pthread_mutex_lock(&w->mu);
    while (!w->done) pthread_cond_wait(&w->cv, &w->mu);
    w->done = false;
    int err = w->err;
    pthread_mutex_unlock(&w->mu);
    return err;
}

static void on_setup_user(void *ctx, int err, const user_t *u) {
    (void)u;
    waiter_done(ctx, err);
}

static void on_setup_send(void *ctx, int err, const message_t *m, bool replayed) {
    (void)m;
    (void)replayed;
    waiter_done(ctx, err);
}

/* Two fresh users and a conversation of 100 messages to read pages from. */
static int setup(bench_t *b) {
    waiter_t w = {.done = false};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int err = 0;
    for (int i = 0; i < 2 && !err; i++) {
        char name[64];
        user_t u = {0};
        if (uuid_random(&u.id) != 0) { err = STORE_EIO; break; }
        char id[UUID_STR_LEN + 1];
        uuid_format(&u.id, id);
        int n = snprintf(name, sizeof name, "bench-%.8s-%d", id, i);
        u.name = name;
        u.name_len = (size_t)n;
        b->users[i] = u.id;
        store_user_create(b->store, &u, on_setup_user, &w);
        err = waiter_wait(&w);
    }
    for (int i = 0; i < 100 && !err; i++) {
        store_send_t r;
        memset(&r, 0, sizeof r);
        r.sender_id = b->users[i & 1];
        r.receiver_id = b->users[!(i & 1)];
        r.content = "set-up message";
        r.content_len = strlen(r.content);
        store_message_send(b->store, &r, on_setup_send, &w);
        err = waiter_wait(&w);
    }
    conversation_id_derive(&b->users[0], &b->users[1], &b->conv);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return err;
}

static void *slot_main(void *arg) {
    issue(arg);
    return NULL;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

static void run_scenario(bench_t *b, const char *scenario, const config_t *cfg) {
    b->scenario = scenario;
    b->ops = b->errors = b->n_lat = 0;
    b->stop = false;
    unsigned conc = cfg->bench_concurrency;
    slot_t *slots = calloc(conc, sizeof *slots);
    if (!slots) return;
    pthread_t *threads = calloc(conc, sizeof *threads);
    if (!threads) { free(slots); return; }
    b->in_flight = conc;
    double t0 = now_s();
    /* Each slot starts on a thread of its own: with a store that answers
     * inline, that thread keeps issuing until `stop`; otherwise it returns at
     * once and the store's callbacks keep the slot going. */
    for (unsigned i = 0; i < conc; i++) {
        slots[i].b = b;
        if (pthread_create(&threads[i], NULL, slot_main, &slots[i]) != 0) {
            log_error("bench", "cannot start thread %u", i);
            pthread_mutex_lock(&b->mu);
            b->in_flight--;
            pthread_mutex_unlock(&b->mu);
            threads[i] = 0;
        }
    }
    struct timespec d = {.tv_sec = (time_t)cfg->bench_duration_s, .tv_nsec = 0};
    nanosleep(&d, NULL);
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    double elapsed = now_s() - t0;
    long ops = b->ops; /* completions within the measured window */
    while (b->in_flight > 0) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    for (unsigned i = 0; i < conc; i++)
        if (threads[i]) pthread_join(threads[i], NULL);
    free(threads);
    qsort(b->lat_ms, (size_t)b->n_lat, sizeof *b->lat_ms, cmp_double);
    double p50 = b->n_lat ? b->lat_ms[b->n_lat / 2] : 0, p99 = b->n_lat ? b->lat_ms[b->n_lat * 99 / 100] : 0;
    printf("{\"scenario\":\"%s\",\"store\":\"%s\",\"concurrency\":%u,\"ops\":%ld,\"ops_per_s\":%.0f,"
           "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%ld}\n",
           scenario, store_name(b->store), conc, ops, (double)ops / elapsed, p50, p99, b->errors);
    fflush(stdout);
    free(slots);
}

int bench_store_run(const config_t *cfg) {
    server_t srv;
    if (server_open_store(&srv, cfg, false) != 0) return 1;
    bench_t b;
    memset(&b, 0, sizeof b);
    b.store = srv.store;
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    b.lat_ms = malloc(sizeof(double) * MAX_SAMPLES);
    int rc = 1;
    if (b.lat_ms && setup(&b) == STORE_OK) {
        const char *only = cfg->bench_scenario;
        if (!only || strcmp(only, "page") == 0) run_scenario(&b, "page", cfg);
        if (!only || strcmp(only, "send") == 0) run_scenario(&b, "send", cfg);
        rc = 0;
    } else {
        log_error("bench", "set-up failed (store unavailable?)");
    }
    store_close(srv.store);
    free(b.lat_ms);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    return rc;
}
