/* bench_store.c - `messenger-bench-store`: the storage layer alone, no HTTP.
 *
 * A program of its own beside the server (as redis-benchmark sits beside
 * redis-server), linked against the same library: it takes every setting of
 * `messenger` (the store's above all; `--help` lists them) and its own four.
 *
 * Drives the store interface with the exact operations (and so, on
 * Cassandra, the exact CQL statements) the API issues, from a closed loop of
 * --concurrency operations in flight, for --duration seconds. It is the
 * ceiling against which `make bench` judges the HTTP API: on Cassandra, page
 * reads and sends through HTTP should reach 70% of it.
 *
 * Its operations: without --requests, it creates two fresh users and a
 * conversation of 100 messages, reads that conversation's first page over
 * and over ("page") and sends between the two users ("send"). With
 * --requests FILE, FILE is a request file of bench/mix.lua (what `make bench`
 * drives the HTTP API with), read once: each line becomes the store call the
 * API makes for that request (with --auth off), and every operation issues a
 * line drawn at random, so the store does the HTTP scenario's work.
 *
 * Prints one JSON line per scenario:
 *   {"scenario":"page","store":"cassandra","requests":"page.txt","concurrency":64,"ops":...,
 *    "ops_per_s":...,"p50_ms":...,"p99_ms":...,"errors":...}
 * ("requests" is the request file's name, or null.)
 */
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/input.h"
#include "config.h"
#include "server.h"
#include "util/buf.h"
#include "util/json_write.h"
#include "util/log.h"
#include "version.h"

#define MAX_SAMPLES 4000000

/* The tool's own settings, beside the server's (config.h). */
typedef struct bench_opts {
    unsigned concurrency;
    unsigned duration_s;
    const char *scenario; /* NULL: both, or the request file's kind */
    const char *requests; /* NULL: the built-in set-up; else a request file */
} bench_opts_t;

static int parse_requests(void *target, const char *v) {
    if (!*v) return -1;
    ((bench_opts_t *)target)->requests = v;
    return 0;
}

static void show_requests(const void *target, char *out, size_t size) {
    const char *v = ((const bench_opts_t *)target)->requests;
    snprintf(out, size, "%s", v ? v : "none");
}

static const config_setting_t BENCH_SETTINGS[] = {
    {"concurrency", NULL, "N", CONFIG_FIELD(bench_opts_t, concurrency), 1, 100000, .def = "64",
     .help = "operations in flight"},
    {"duration", NULL, "SECONDS", CONFIG_FIELD(bench_opts_t, duration_s), 1, 3600, .def = "10",
     .help = "of each scenario"},
    {"scenario", NULL, "page|send", .type = SET_CHOICE, .offset = offsetof(bench_opts_t, scenario),
     .choices = (const char *const[]){"page", "send", NULL}, .def_note = "both; with --requests: the file's kind, which it must match",
     .help = "one scenario only"},
    {"requests", NULL, "FILE", .type = SET_FUNC, .parse = parse_requests, .show = show_requests,
     .help = "each operation is a random line of a bench/mix.lua request file instead of its own two "
             "users: GET /api/messages/conversation/ID?limit=N[&before_message_id=ID] lines for page, "
             "POST /api/messages/ {JSON} lines for send"},
};

/* --requests FILE: its bounds, and its lines parsed into store calls. */
#define REQ_MAX_LINE (64 * 1024) /* bytes in one line, without its newline */
#define REQ_MAX_LINES 1000000

typedef struct requests {
    bool is_send;
    size_t n, cap;
    store_msg_query_t *pages; /* !is_send */
    store_send_t *sends;      /* is_send; content and client_message_id are our copies */
} requests_t;

typedef struct bench {
    store_t *store;
    const char *scenario;
    const requests_t *reqs;   /* NULL: the two users of setup() */
    uuid_t users[2];
    uuid_t conv;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    long in_flight;
    bool stop;
    long ops, errors;
    int first_err;
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
    uint64_t rng;    /* xorshift64 state: which request line comes next */
    _Atomic int state;
} slot_t;

static uint64_t xorshift64(uint64_t *x) {
    uint64_t v = *x;
    v ^= v << 13;
    v ^= v >> 7;
    v ^= v << 17;
    return *x = v;
}

/* A well-mixed, non-zero seed for slot i (splitmix64 of clock and index). */
static uint64_t slot_seed(uint64_t base, unsigned i) {
    uint64_t z = base + (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z ? z : 0x2545F4914F6CDD1DULL;
}

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
    if (err) {
        b->errors++;
        if (!b->first_err) b->first_err = err;
    }
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
    if (b->reqs) {
        size_t i = (size_t)(xorshift64(&s->rng) % b->reqs->n);
        if (b->reqs->is_send) store_message_send(b->store, &b->reqs->sends[i], on_send, s);
        else store_messages_list(b->store, &b->reqs->pages[i], on_page, s);
    } else if (strcmp(b->scenario, "page") == 0) {
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

/* ---- --requests FILE: a bench/mix.lua request file as ready store calls ---- */

static void requests_free(requests_t *r) {
    for (size_t i = 0; r->sends && i < r->n; i++) {
        free((char *)r->sends[i].content);
        free((char *)r->sends[i].client_message_id);
    }
    free(r->sends);
    free(r->pages);
    memset(r, 0, sizeof *r);
}

/* Room for one more operation. */
static int requests_grow(requests_t *r) {
    if (r->n < r->cap) return 0;
    size_t cap = r->cap ? r->cap * 2 : 1024;
    if (cap > REQ_MAX_LINES) cap = REQ_MAX_LINES;
    if (cap <= r->n) return -1;
    if (r->is_send) {
        store_send_t *p = realloc(r->sends, cap * sizeof *p);
        if (!p) return -1;
        r->sends = p;
    } else {
        store_msg_query_t *p = realloc(r->pages, cap * sizeof *p);
        if (!p) return -1;
        r->pages = p;
    }
    r->cap = cap;
    return 0;
}

/* Reads the next line of f without its "\n" (nor a "\r" before it) into buf,
 * which holds REQ_MAX_LINE + 1 bytes. Returns 1 with *len set, 0 at the end
 * of the file, -1 for a line longer than REQ_MAX_LINE, -2 on a read error. */
static int read_line(FILE *f, char *buf, size_t *len) {
    size_t n = 0;
    int c;
    while ((c = getc_unlocked(f)) != EOF && c != '\n') {
        if (n == REQ_MAX_LINE) return -1;
        buf[n++] = (char)c;
    }
    if (ferror(f)) return -2;
    if (c == EOF && n == 0) return 0;
    if (n && buf[n - 1] == '\r') n--;
    buf[n] = '\0';
    *len = n;
    return 1;
}

static bool has_prefix(const char *s, size_t len, const char *prefix) {
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0;
}

/* The part of a GET line after "GET ": what GET /api/messages/conversation/{id}
 * (or its /before alias) with limit and before_message_id asks of the store.
 * Returns 0, or -1 with the reason in why. */
/* One NAME=VALUE of a page's query into q (limit and before_message_id,
 * each at most once, read as the API reads them). Returns 0 or -1 with why. */
static int parse_page_param(const char *s, size_t plen, store_msg_query_t *q, bool *have_limit, char *why,
                            size_t why_len) {
    const char *eq = memchr(s, '=', plen);
    if (!eq || eq == s) {
        snprintf(why, why_len, "a query parameter is not NAME=VALUE");
        return -1;
    }
    size_t klen = (size_t)(eq - s), vlen = plen - klen - 1;
    const char *v = eq + 1;
    input_err_t e;
    if (klen == 5 && memcmp(s, "limit", 5) == 0) {
        if (*have_limit) {
            snprintf(why, why_len, "limit is given twice");
            return -1;
        }
        if (input_limit_value(v, vlen, &q->limit, &e)) { /* as the API */
            snprintf(why, why_len, "%s", e.detail);
            return -1;
        }
        *have_limit = true;
    } else if (klen == 17 && memcmp(s, "before_message_id", 17) == 0) {
        if (q->has_before) {
            snprintf(why, why_len, "before_message_id is given twice");
            return -1;
        }
        if (input_timeuuid("before_message_id", v, vlen, &q->before, &e)) {
            snprintf(why, why_len, "%s", e.detail);
            return -1;
        }
        q->has_before = true;
    } else {
        snprintf(why, why_len, "unsupported query parameter '%.*s' (limit and before_message_id only)",
                 (int)(klen > 64 ? 64 : klen), s);
        return -1;
    }
    return 0;
}

static int parse_page(const char *s, size_t len, store_msg_query_t *q, char *why, size_t why_len) {
    static const char prefix[] = "/api/messages/conversation/";
    memset(q, 0, sizeof *q);
    q->limit = LIMIT_DEFAULT; /* the API's */
    if (!has_prefix(s, len, prefix)) {
        snprintf(why, why_len, "not a message page (GET %sID?limit=N[&before_message_id=ID])", prefix);
        return -1;
    }
    s += sizeof prefix - 1;
    len -= sizeof prefix - 1;
    if (len < UUID_STR_LEN || uuid_parse(&q->conversation_id, s, UUID_STR_LEN) != 0) {
        snprintf(why, why_len, "the conversation id is not a valid UUID");
        return -1;
    }
    s += UUID_STR_LEN;
    len -= UUID_STR_LEN;
    if (has_prefix(s, len, "/before")) {
        s += 7;
        len -= 7;
    }
    if (len == 0) return 0;
    if (*s != '?') {
        snprintf(why, why_len, "unexpected text after the conversation id");
        return -1;
    }
    s++;
    len--;
    bool have_limit = false;
    for (;;) {
        const char *amp = memchr(s, '&', len);
        size_t plen = amp ? (size_t)(amp - s) : len;
        if (parse_page_param(s, plen, q, &have_limit, why, why_len)) return -1;
        if (!amp) return 0;
        s = amp + 1;
        len -= plen + 1;
    }
}

/* A heap copy of s[0..len) plus a NUL; NULL when out of memory. */
static char *copy_bytes(const char *s, size_t len) {
    char *p = malloc(len + 1);
    if (!p) return NULL;
    if (len) memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* The part of a POST line after "POST ": PATH, a space, the JSON body of
 * POST /api/messages/ (sender_id, receiver_id, content, and optionally
 * client_message_id), checked as the API checks it. On success *r holds
 * copies of the strings (the caller frees them). */
static int parse_send(const char *s, size_t len, size_t max_content, store_send_t *r, char *why, size_t why_len) {
    static const char *const paths[] = {"/api/messages/", "/api/messages", "/api/messages/send"};
    memset(r, 0, sizeof *r);
    const char *sp = memchr(s, ' ', len);
    size_t plen = sp ? (size_t)(sp - s) : len;
    bool known = false;
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (plen == strlen(paths[i]) && memcmp(s, paths[i], plen) == 0) known = true;
    if (!known) {
        snprintf(why, why_len, "not a send (POST /api/messages/ {JSON})");
        return -1;
    }
    if (!sp) {
        snprintf(why, why_len, "no JSON body after the path");
        return -1;
    }
    json_t *o;
    input_err_t e;
    if (input_json_object(sp + 1, len - plen - 1, &o, &e)) {
        snprintf(why, why_len, "%s", e.detail);
        return -1;
    }
    int rc = -1;
    /* Checked as the API checks it (api/input.h); the strings point into o. */
    if (input_uuid(o, "sender_id", &r->sender_id, &e) || input_send(o, max_content, r, &e)) {
        snprintf(why, why_len, "%s", e.detail);
        r->content = r->client_message_id = NULL; /* they pointed into o */
    } else {
        const char *content = r->content, *cmid = r->client_message_id;
        r->content = r->client_message_id = NULL;
        if (!(r->content = copy_bytes(content, r->content_len)) ||
            (cmid && !(r->client_message_id = copy_bytes(cmid, r->client_message_id_len)))) {
            snprintf(why, why_len, "out of memory");
            free((char *)r->content);
            r->content = NULL;
        } else {
            rc = 0;
        }
    }
    json_decref(o);
    return rc;
}

/* Reading a request file: where we are, for the messages. */
typedef struct reader {
    const char *path;
    size_t line, first;   /* this line; the first request's line (0: none yet) */
    const char *scenario; /* --scenario, or the first request's kind */
    bool given;           /* scenario came from --scenario */
    size_t max_content;
} reader_t;

/* Parses one non-blank line into r (grown by one). Returns 0, or -1 with
 * the problem printed with file name and line number. */
static int requests_take(requests_t *r, reader_t *rd, const char *buf, size_t len) {
    bool is_send;
    if (has_prefix(buf, len, "GET ")) is_send = false;
    else if (has_prefix(buf, len, "POST ")) is_send = true;
    else {
        fprintf(stderr, "messenger: bench-store: %s:%zu: not a request line (\"GET PATH\" or \"POST PATH JSON\")\n",
                rd->path, rd->line);
        return -1;
    }
    const char *kind = is_send ? "send" : "page";
    if (!rd->scenario) rd->scenario = kind;
    if (!rd->first) {
        rd->first = rd->line;
        r->is_send = is_send;
    }
    if (strcmp(rd->scenario, kind) != 0) {
        if (rd->given)
            fprintf(stderr, "messenger: bench-store: %s:%zu: a %s request (%s) does not belong to --scenario %s\n",
                    rd->path, rd->line, kind, is_send ? "POST" : "GET", rd->scenario);
        else
            fprintf(stderr, "messenger: bench-store: %s:%zu: a %s request (%s) in a file of %s requests (line %zu): "
                    "one scenario per file\n", rd->path, rd->line, kind, is_send ? "POST" : "GET",
                    r->is_send ? "send" : "page", rd->first);
        return -1;
    }
    if (requests_grow(r) != 0) {
        fprintf(stderr, "messenger: bench-store: out of memory at %s:%zu\n", rd->path, rd->line);
        return -1;
    }
    char why[320];
    int bad = is_send ? parse_send(buf + 5, len - 5, rd->max_content, &r->sends[r->n], why, sizeof why)
                      : parse_page(buf + 4, len - 4, &r->pages[r->n], why, sizeof why);
    if (bad) {
        fprintf(stderr, "messenger: bench-store: %s:%zu: %s\n", rd->path, rd->line, why);
        return -1;
    }
    r->n++;
    return 0;
}

/* Reads every line of f into r; returns 0 or -1 (printed). */
static int requests_read(requests_t *r, reader_t *rd, FILE *f, char *buf) {
    for (;;) {
        size_t len = 0;
        int got = read_line(f, buf, &len);
        if (got == 0) break;
        if (got == -2) {
            fprintf(stderr, "messenger: bench-store: %s: cannot read: %s\n", rd->path, strerror(errno));
            return -1;
        }
        if (++rd->line > REQ_MAX_LINES) {
            fprintf(stderr, "messenger: bench-store: %s: more than %d lines\n", rd->path, REQ_MAX_LINES);
            return -1;
        }
        if (got == -1) {
            fprintf(stderr, "messenger: bench-store: %s:%zu: line longer than %d bytes\n", rd->path, rd->line,
                    REQ_MAX_LINE);
            return -1;
        }
        if (len == 0) continue; /* a blank line, e.g. at the end */
        if (requests_take(r, rd, buf, len)) return -1;
    }
    if (r->n == 0) {
        fprintf(stderr, "messenger: bench-store: %s: no requests in the file\n", rd->path);
        return -1;
    }
    return 0;
}

/* Loads the request file at path into r. *scenario is --scenario, or NULL:
 * then the file's first request decides it. Every problem is printed with
 * the file name and line number; returns 0 or -1. */
static int requests_load(requests_t *r, const char *path, const char **scenario, size_t max_content) {
    memset(r, 0, sizeof *r);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "messenger: bench-store: --requests %s: %s\n", path, strerror(errno));
        return -1;
    }
    char *buf = malloc(REQ_MAX_LINE + 1);
    if (!buf) {
        fprintf(stderr, "messenger: bench-store: out of memory\n");
        fclose(f);
        return -1;
    }
    reader_t rd = {.path = path, .scenario = *scenario, .given = *scenario != NULL, .max_content = max_content};
    int rc = requests_read(r, &rd, f, buf);
    *scenario = rd.scenario;
    free(buf);
    fclose(f);
    if (rc) requests_free(r);
    return rc;
}

/* The JSON value naming the request file: its base name as a string, or null. */
static char *requests_label(const char *path) {
    buf_t b;
    buf_init(&b);
    if (!path) {
        buf_lit(&b, "null");
    } else {
        const char *slash = strrchr(path, '/');
        json_put_cstring(&b, slash ? slash + 1 : path);
    }
    if (!buf_ok(&b)) {
        buf_free(&b);
        return NULL;
    }
    size_t len;
    return buf_steal(&b, &len);
}

static void *slot_main(void *arg) {
    issue(arg);
    return NULL;
}

static int cmp_double(const void *x, const void *y) {
    double a = *(const double *)x, c = *(const double *)y;
    return a < c ? -1 : a > c;
}

/* Runs one scenario and prints its JSON line; label is the "requests"
 * value. Returns 0, or -1 when it could not run. */
static int run_scenario(bench_t *b, const char *scenario, const bench_opts_t *o, const char *label) {
    b->scenario = scenario;
    b->ops = b->errors = b->n_lat = 0;
    b->first_err = 0;
    b->stop = false;
    unsigned conc = o->concurrency;
    slot_t *slots = calloc(conc, sizeof *slots);
    if (!slots) return -1;
    pthread_t *threads = calloc(conc, sizeof *threads);
    if (!threads) { free(slots); return -1; }
    bool *started = calloc(conc, sizeof *started);
    if (!started) { free(threads); free(slots); return -1; }
    struct timespec seed_ts;
    clock_gettime(CLOCK_REALTIME, &seed_ts);
    uint64_t seed = (uint64_t)seed_ts.tv_sec * 1000000000u + (uint64_t)seed_ts.tv_nsec;
    b->in_flight = conc;
    double t0 = now_s();
    /* Each slot starts on a thread of its own: with a store that answers
     * inline, that thread keeps issuing until `stop`; otherwise it returns at
     * once and the store's callbacks keep the slot going. */
    for (unsigned i = 0; i < conc; i++) {
        slots[i].b = b;
        slots[i].rng = slot_seed(seed, i);
        if (pthread_create(&threads[i], NULL, slot_main, &slots[i]) != 0) {
            log_error("bench", "cannot start thread %u", i);
            pthread_mutex_lock(&b->mu);
            b->in_flight--;
            pthread_mutex_unlock(&b->mu);
        } else {
            started[i] = true;
        }
    }
    struct timespec d = {.tv_sec = (time_t)o->duration_s, .tv_nsec = 0};
    nanosleep(&d, NULL);
    pthread_mutex_lock(&b->mu);
    b->stop = true;
    double elapsed = now_s() - t0;
    long ops = b->ops; /* completions within the measured window */
    while (b->in_flight > 0) pthread_cond_wait(&b->cv, &b->mu);
    pthread_mutex_unlock(&b->mu);
    for (unsigned i = 0; i < conc; i++)
        if (started[i]) pthread_join(threads[i], NULL);
    free(started);
    free(threads);
    qsort(b->lat_ms, (size_t)b->n_lat, sizeof *b->lat_ms, cmp_double);
    double p50 = b->n_lat ? b->lat_ms[b->n_lat / 2] : 0, p99 = b->n_lat ? b->lat_ms[b->n_lat * 99 / 100] : 0;
    printf("{\"scenario\":\"%s\",\"store\":\"%s\",\"requests\":%s,\"concurrency\":%u,\"ops\":%ld,"
           "\"ops_per_s\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%ld}\n",
           scenario, store_name(b->store), label, conc, ops, (double)ops / elapsed, p50, p99, b->errors);
    fflush(stdout);
    if (b->errors)
        log_warn("bench", "%s: %ld of %ld operations failed; the first: %s", scenario, b->errors, b->ops,
                 store_strerror(b->first_err));
    free(slots);
    return 0;
}

static int bench_run(const config_t *cfg, const bench_opts_t *o) {
    /* The request file first: a bad one fails before the store is opened. */
    const char *only = o->scenario;
    requests_t reqs;
    memset(&reqs, 0, sizeof reqs);
    if (o->requests && requests_load(&reqs, o->requests, &only, cfg->max_content) != 0) return 2;
    char *label = requests_label(o->requests);
    if (!label) {
        log_error("bench", "out of memory");
        requests_free(&reqs);
        return 1;
    }
    server_t srv;
    if (server_open_store(&srv, cfg, false) != 0) {
        free(label);
        requests_free(&reqs);
        return 1;
    }
    bench_t b;
    memset(&b, 0, sizeof b);
    b.store = srv.store;
    b.reqs = o->requests ? &reqs : NULL;
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    b.lat_ms = malloc(sizeof(double) * MAX_SAMPLES);
    int rc = 1;
    if (!b.lat_ms) {
        log_error("bench", "out of memory");
    } else if (!b.reqs && setup(&b) != STORE_OK) {
        log_error("bench", "set-up failed (store unavailable?)");
    } else {
        rc = 0;
        if (!only || strcmp(only, "page") == 0)
            if (run_scenario(&b, "page", o, label) != 0) rc = 1;
        if (!rc && (!only || strcmp(only, "send") == 0))
            if (run_scenario(&b, "send", o, label) != 0) rc = 1;
        if (rc) log_error("bench", "out of memory");
    }
    store_close(srv.store);
    free(b.lat_ms);
    pthread_mutex_destroy(&b.mu);
    pthread_cond_destroy(&b.cv);
    free(label);
    requests_free(&reqs);
    return rc;
}

static void usage(const char *prog) {
    printf("messenger-bench-store %s - the store alone (no HTTP): page reads and sends\n\n"
           "Usage: %s [options]\n"
           "One JSON line per scenario on standard output.\n\n"
           "Its own options:\n", MESSENGER_VERSION, prog);
    config_print_options(stdout, BENCH_SETTINGS, sizeof BENCH_SETTINGS / sizeof BENCH_SETTINGS[0]);
    printf("\nThe store's options are the server's (environment variable in brackets):\n");
    config_print_options(stdout, config_settings, config_n_settings);
}

int main(int argc, char **argv) {
    config_t cfg;
    bench_opts_t o;
    memset(&o, 0, sizeof o);
    config_extra_t extra = {BENCH_SETTINGS, sizeof BENCH_SETTINGS / sizeof BENCH_SETTINGS[0], &o};
    if (config_load_tool(&cfg, &extra, argc, argv) != 0) return 2;
    log_set_level(cfg.log_level);
    if (cfg.command == CMD_HELP) { usage(argv[0]); return 0; }
    if (cfg.command == CMD_VERSION) { printf("messenger-bench-store %s\n", MESSENGER_VERSION); return 0; }
    return bench_run(&cfg, &o);
}
