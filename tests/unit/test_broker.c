/* The Redis broker against a real redis-server that each test starts on a
 * free loopback port in a temporary folder: fan-out between two brokers
 * (contents with NULs, 64 KiB), ordering, url checks, a broker that starts
 * before Redis, a Redis restart (on_reset, then delivery), the queue bound,
 * a prompt broker_close while Redis is down or frozen, AUTH (requirepass),
 * opaque binary payloads, and a hostile "Redis" on a loopback socket whose
 * replies announce huge or nested arrays.
 *
 * Payloads are opaque to the broker; most tests send real message events
 * (header + rendered event, as events.c and src/api/sse.c build them).
 *
 * Needs /usr/bin/redis-server (Debian package redis-server): without it the
 * tests fail, they do not skip. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "api/render.h"
#include "events/broker.h"
#include "model/model.h"
#include "unit.h"
#include "util/buf.h"
#include "util/log.h"

#ifndef REDIS_SERVER /* -D to check the message when it is missing */
#define REDIS_SERVER "/usr/bin/redis-server"
#endif
#define CHANNEL "messenger-test"
#define WAIT_MS 5000 /* generous: every wait ends as soon as its condition holds */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* ---- a private redis-server ---- */

typedef struct server {
    char dir[64];
    int port;
    pid_t pid;        /* 0 when not running */
    const char *pass; /* requirepass, or NULL */
} server_t;

/* A port nothing listens on right now (the kernel's pick). */
static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static bool srv_ping(int port, const char *pass) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        if (pass) freeReplyObject(redisCommand(c, "AUTH %s", pass));
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
        if (r) freeReplyObject(r);
    }
    if (c) redisFree(c);
    return ok;
}

static void srv_start(server_t *s) {
    if (access(REDIS_SERVER, X_OK) != 0)
        fail_msg("%s not found: the broker tests need a real Redis "
                 "(apt-get install --no-install-recommends redis-server)", REDIS_SERVER);
    char port[16], log[128];
    snprintf(port, sizeof port, "%d", s->port);
    snprintf(log, sizeof log, "%s/redis.log", s->dir);
    char *argv[] = {REDIS_SERVER, "--port", port, "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--daemonize", "no", "--dir", s->dir,
                    "--logfile", log, s->pass ? "--requirepass" : NULL, (char *)s->pass, NULL};
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* Only async-signal-safe calls here: the test has threads. The
         * server dies with us if the test crashes. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    s->pid = pid;
    int64_t until = now_ms() + WAIT_MS;
    while (!srv_ping(s->port, s->pass)) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            s->pid = 0;
            fail_msg("redis-server on port %d exited at start-up (status %d); see %s", s->port, st, log);
        }
        if (now_ms() > until) fail_msg("redis-server on port %d does not answer PING", s->port);
        sleep_ms(10);
    }
}

static void srv_kill(server_t *s) {
    if (!s->pid) return;
    kill(s->pid, SIGCONT); /* in case a test froze it */
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

/* ---- what a broker delivered ---- */

typedef struct sink {
    pthread_mutex_t mu;
    char **items;
    size_t *lens;
    size_t count, cap;
    int resets;
} sink_t;

static void on_message(void *ctx, const char *payload, size_t len) {
    sink_t *s = ctx;
    char *copy = malloc(len + 1); /* cmocka's asserts belong to the test's thread */
    if (!copy) abort();
    memcpy(copy, payload, len);
    copy[len] = '\0';
    pthread_mutex_lock(&s->mu);
    if (s->count == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->items = realloc(s->items, s->cap * sizeof *s->items);
        s->lens = realloc(s->lens, s->cap * sizeof *s->lens);
        if (!s->items || !s->lens) abort();
    }
    s->items[s->count] = copy;
    s->lens[s->count] = len;
    s->count++;
    pthread_mutex_unlock(&s->mu);
}

static void on_reset(void *ctx) {
    sink_t *s = ctx;
    pthread_mutex_lock(&s->mu);
    s->resets++;
    pthread_mutex_unlock(&s->mu);
}

static size_t sink_count(sink_t *s) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->count;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static int sink_resets(sink_t *s) {
    pthread_mutex_lock(&s->mu);
    int n = s->resets;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static bool wait_count(sink_t *s, size_t n) {
    int64_t until = now_ms() + WAIT_MS;
    while (sink_count(s) < n)
        if (now_ms() > until) return false;
        else sleep_ms(2);
    return true;
}

static bool wait_resets(sink_t *s, int n) {
    int64_t until = now_ms() + WAIT_MS;
    while (sink_resets(s) < n)
        if (now_ms() > until) return false;
        else sleep_ms(2);
    return true;
}

static bool wait_connected(broker_t *b, int want) {
    int64_t until = now_ms() + WAIT_MS;
    while (broker_connected(b) != want)
        if (now_ms() > until) return false;
        else sleep_ms(2);
    return true;
}

/* The i-th payload received is exactly these bytes. (Compared outside the
 * lock: a failed assert leaves the test with a longjmp.) */
static void assert_item(sink_t *s, size_t i, const char *payload, size_t len) {
    pthread_mutex_lock(&s->mu);
    bool have = i < s->count;
    const char *item = have ? s->items[i] : NULL; /* items never move or change */
    size_t item_len = have ? s->lens[i] : 0;
    pthread_mutex_unlock(&s->mu);
    if (!have) fail_msg("no payload #%zu", i);
    assert_int_equal(item_len, len);
    assert_memory_equal(item, payload, len);
}

/* ---- payloads: real message events ---- */

typedef struct payload {
    char *p;
    size_t len;
} payload_t;

static const uuid_t ALICE = {{0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11}};
static const uuid_t BOB = {{0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22, 0x22}};

/* The payload of message number `seq` from ALICE to BOB, as events.c
 * publishes it: the three ids, then the event that src/api/sse.c renders
 * (the same literal layout; render_message is the API's own). */
static payload_t make_payload(unsigned seq, const char *content, size_t len) {
    message_t m = {.sender_id = ALICE, .receiver_id = BOB, .content = content, .content_len = len};
    uuid_make_v1(&m.id, UUID_TICKS_UNIX_EPOCH + 17150000000000000ULL + seq * 10000ULL, 0x1234, 0xaabbccddeeffULL);
    conversation_id_derive(&m.sender_id, &m.receiver_id, &m.conversation_id);
    m.created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m.id));
    buf_t b;
    buf_init(&b);
    buf_append(&b, m.sender_id.b, 16);
    buf_append(&b, m.receiver_id.b, 16);
    buf_append(&b, m.id.b, 16);
    char id[UUID_STR_LEN + 1];
    uuid_format(&m.id, id);
    buf_lit(&b, "id: ");
    buf_append(&b, id, UUID_STR_LEN);
    buf_lit(&b, "\nevent: message\ndata: ");
    render_message(&b, &m);
    buf_lit(&b, "\n\n");
    assert_true(buf_ok(&b));
    payload_t out = {b.data, b.len}; /* the buffer's memory is the caller's now */
    return out;
}

static payload_t text_payload(unsigned seq, const char *text) { return make_payload(seq, text, strlen(text)); }

static void publish(broker_t *b, payload_t p) {
    broker_publish(b, p.p, p.len);
    free(p.p);
}

/* The i-th payload received is message `seq` with this content. */
static void assert_payload(sink_t *s, size_t i, unsigned seq, const char *content, size_t len) {
    payload_t p = make_payload(seq, content, len);
    assert_item(s, i, p.p, p.len);
    free(p.p);
}

static void assert_text(sink_t *s, size_t i, unsigned seq, const char *text) {
    assert_payload(s, i, seq, text, strlen(text));
}

/* ---- fixture: a server (not started), two sinks, up to two brokers ---- */

typedef struct fixture {
    server_t srv;
    sink_t sink[2];
    broker_t *br[2];
    bool notice;   /* brokers opened from now on publish NOTICE after a loss */
} fixture_t;

/* A loss notice (events.c makes its own; any bytes do here). */
static const char NOTICE[] = "loss notice";

static int setup(void **state) {
    /* Outages are the point here: no warnings, unless asked for with
     * TEST_LOG=debug|info|warn. */
    log_level_t level = LOG_ERROR;
    const char *want = getenv("TEST_LOG");
    if (want) log_level_parse(want, &level);
    log_set_level(level);
    signal(SIGPIPE, SIG_IGN);  /* as the server does */
    fixture_t *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->srv.dir, sizeof f->srv.dir, "/tmp/messenger-redis-XXXXXX");
    assert_non_null(mkdtemp(f->srv.dir));
    f->srv.port = free_port();
    for (int i = 0; i < 2; i++) pthread_mutex_init(&f->sink[i].mu, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    for (int i = 0; i < 2; i++) {
        broker_close(f->br[i]);
        sink_t *s = &f->sink[i];
        for (size_t j = 0; j < s->count; j++) free(s->items[j]);
        free(s->items);
        free(s->lens);
        pthread_mutex_destroy(&s->mu);
    }
    srv_kill(&f->srv);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->srv.dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Broker i on "redis://<userinfo>127.0.0.1:<port>". */
static void open_broker_as(fixture_t *f, int i, const char *userinfo) {
    char url[128];
    snprintf(url, sizeof url, "redis://%s127.0.0.1:%d", userinfo, f->srv.port);
    broker_callbacks_t cb = {.on_message = on_message, .on_reset = on_reset, .ctx = &f->sink[i]};
    if (f->notice) {
        cb.loss_notice = NOTICE;
        cb.loss_notice_len = sizeof NOTICE - 1;
    }
    assert_int_equal(broker_open(url, CHANNEL, &cb, &f->br[i]), 0);
    assert_non_null(f->br[i]);
}

static void open_broker(fixture_t *f, int i) { open_broker_as(f, i, ""); }

static void open_both_connected(fixture_t *f) {
    srv_start(&f->srv);
    open_broker(f, 0);
    open_broker(f, 1);
    assert_true(wait_connected(f->br[0], 1));
    assert_true(wait_connected(f->br[1], 1));
}

/* ---- tests ---- */

static void bad_urls(void **state) {
    fixture_t *f = *state;
    broker_callbacks_t cb = {.on_message = on_message, .on_reset = on_reset, .ctx = &f->sink[0]};
    const char *bad[] = {
        "", "127.0.0.1:6379", "http://127.0.0.1:6379", "rediss://127.0.0.1:6379",
        "unix:///tmp/redis.sock", "redis://", "redis://:6379", "redis://host:", "redis://host:0",
        "redis://host:65536", "redis://host:1234567", "redis://host:63x9", "redis://host:-1",
        "redis://host:6379?db=1", "redis://host:6379/0/x",
        "redis://host name", "redis://[::1", "redis://[]:6379", "redis://host:6379 ",
        /* credentials: a user needs a password, which must be non-empty,
         * well percent-encoded, printable and at most 512 bytes */
        "redis://user@host", "redis://:@host", "redis://user:@host", "redis://:pw%zz@host",
        "redis://:pw%2@host", "redis://:p w@host", "redis://:pw@", "redis://:pw@:6379",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        broker_t *b = (broker_t *)&cb; /* must be reset to NULL */
        int rc = broker_open(bad[i], CHANNEL, &cb, &b);
        if (rc != -EINVAL) fail_msg("broker_open(\"%s\") = %d, expected -EINVAL", bad[i], rc);
        assert_null(b);
    }
    broker_t *b = NULL;
    assert_int_equal(broker_open(NULL, CHANNEL, &cb, &b), -EINVAL);
    assert_int_equal(broker_open("redis://127.0.0.1", "", &cb, &b), -EINVAL);
    assert_int_equal(broker_open("redis://127.0.0.1", NULL, &cb, &b), -EINVAL);
    assert_int_equal(broker_open("redis://127.0.0.1", CHANNEL, NULL, &b), -EINVAL);
    broker_callbacks_t no_message = {.on_reset = on_reset};
    assert_int_equal(broker_open("redis://127.0.0.1", CHANNEL, &no_message, &b), -EINVAL);
    assert_int_equal(broker_open("redis://127.0.0.1", CHANNEL, &cb, NULL), -EINVAL);

    /* Valid forms open (nothing listens on these: they retry until closed). */
    char url[64];
    const char *good[] = {"redis://localhost:%d", "REDIS://127.0.0.1:%d/0", "redis://[::1]:%d/",
                          "redis://:secret@127.0.0.1:%d", "redis://user:p%%40ss:w@[::1]:%d/0"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(url, sizeof url, good[i], f->srv.port);
        assert_int_equal(broker_open(url, CHANNEL, &cb, &b), 0);
        assert_non_null(b);
        broker_close(b);
    }
    assert_int_equal(broker_open("redis://localhost", CHANNEL, &cb, &b), 0); /* port 6379 */
    broker_close(b);
    char long_pw[600] = "redis://:";
    memset(long_pw + 9, 'x', 513);
    strcpy(long_pw + 9 + 513, "@host");
    assert_int_equal(broker_open(long_pw, CHANNEL, &cb, &b), -EINVAL);
    long_pw[9 + 512] = '@'; /* 512 bytes: the most */
    strcpy(long_pw + 9 + 513, "host");
    assert_int_equal(broker_open(long_pw, CHANNEL, &cb, &b), 0);
    broker_close(b);
}

static void fan_out_binary_and_large(void **state) {
    fixture_t *f = *state;
    open_both_connected(f);
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);

    static const char bin[] = "a\0b\r\n\0c"; /* NULs and a RESP line end, in the content */
    publish(f->br[0], make_payload(1, bin, sizeof bin));
    assert_true(wait_count(&f->sink[0], 1));
    assert_true(wait_count(&f->sink[1], 1));
    assert_payload(&f->sink[0], 0, 1, bin, sizeof bin);
    assert_payload(&f->sink[1], 0, 1, bin, sizeof bin);

    publish(f->br[1], text_payload(2, "from b"));
    assert_true(wait_count(&f->sink[0], 2));
    assert_true(wait_count(&f->sink[1], 2));
    assert_text(&f->sink[0], 1, 2, "from b");
    assert_text(&f->sink[1], 1, 2, "from b");

    size_t big_len = 64 * 1024;
    char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)(i * 7 % 128); /* NULs and control characters */
    publish(f->br[1], make_payload(3, big, big_len));
    assert_true(wait_count(&f->sink[0], 3));
    assert_true(wait_count(&f->sink[1], 3));
    publish(f->br[0], text_payload(4, "")); /* after: two publishers are not ordered */
    assert_true(wait_count(&f->sink[0], 4));
    assert_true(wait_count(&f->sink[1], 4));
    for (int i = 0; i < 2; i++) {
        assert_payload(&f->sink[i], 2, 3, big, big_len);
        assert_text(&f->sink[i], 3, 4, "");
    }
    free(big);
    assert_int_equal(sink_count(&f->sink[0]), 4);
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);
}

static void order_of_one_publisher(void **state) {
    fixture_t *f = *state;
    open_both_connected(f);
    const int n = 1000;
    char p[32];
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "payload-%04d", i);
        publish(f->br[0], text_payload((unsigned)i, p));
    }
    for (int s = 0; s < 2; s++) {
        assert_true(wait_count(&f->sink[s], (size_t)n));
        for (int i = 0; i < n; i++) {
            snprintf(p, sizeof p, "payload-%04d", i);
            assert_text(&f->sink[s], (size_t)i, (unsigned)i, p);
        }
    }
}

/* Opened before Redis runs: connects once it does. What was published in
 * the meantime waited for the broker's own subscription. */
static void redis_comes_up_later(void **state) {
    fixture_t *f = *state;
    open_broker(f, 0);
    publish(f->br[0], text_payload(1, "early"));
    sleep_ms(300);
    assert_int_equal(broker_connected(f->br[0]), 0);
    assert_int_equal(sink_count(&f->sink[0]), 0);

    srv_start(&f->srv);
    assert_true(wait_connected(f->br[0], 1));
    assert_true(wait_count(&f->sink[0], 1));
    assert_text(&f->sink[0], 0, 1, "early");

    open_broker(f, 1);
    assert_true(wait_connected(f->br[1], 1));
    publish(f->br[1], text_payload(2, "later"));
    assert_true(wait_count(&f->sink[0], 2));
    assert_true(wait_count(&f->sink[1], 1));
    assert_text(&f->sink[0], 1, 2, "later");
    assert_text(&f->sink[1], 0, 2, "later");
    /* A first subscription is no reset, however late it comes. */
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);
}

/* The i-th payload received is the loss notice. */
static bool is_notice(sink_t *s, size_t i) {
    pthread_mutex_lock(&s->mu);
    bool yes = i < s->count && s->lens[i] == sizeof NOTICE - 1 && memcmp(s->items[i], NOTICE, s->lens[i]) == 0;
    pthread_mutex_unlock(&s->mu);
    return yes;
}

static void redis_restart_resets_and_resumes(void **state) {
    fixture_t *f = *state;
    f->notice = true;
    open_both_connected(f);
    publish(f->br[0], text_payload(1, "before"));
    assert_true(wait_count(&f->sink[1], 1));
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);

    srv_kill(&f->srv);
    assert_true(wait_connected(f->br[0], 0));
    assert_true(wait_connected(f->br[1], 0));
    sleep_ms(150); /* a few refused attempts: the back-off grows */
    srv_start(&f->srv);

    assert_true(wait_resets(&f->sink[0], 1));
    assert_true(wait_resets(&f->sink[1], 1));
    assert_true(wait_connected(f->br[0], 1));
    assert_true(wait_connected(f->br[1], 1));
    /* A publisher may not have noticed yet that its connection died with
     * Redis (it looks at an idle one once a second): what it is given until
     * it has connected again is dropped, and the loss announced. So the
     * first payload after the restart arrives, or the notice does instead;
     * after the notice (which went out on the new connection), it does. */
    size_t n0 = sink_count(&f->sink[0]), n1 = sink_count(&f->sink[1]);
    publish(f->br[0], text_payload(2, "after"));
    assert_true(wait_count(&f->sink[0], n0 + 1));
    assert_true(wait_count(&f->sink[1], n1 + 1));
    if (is_notice(&f->sink[0], n0)) {
        assert_true(is_notice(&f->sink[1], n1));
        n0++, n1++;
        publish(f->br[0], text_payload(2, "after"));
        assert_true(wait_count(&f->sink[0], n0 + 1));
        assert_true(wait_count(&f->sink[1], n1 + 1));
    }
    publish(f->br[1], text_payload(3, "after b"));
    assert_true(wait_count(&f->sink[0], n0 + 2));
    assert_true(wait_count(&f->sink[1], n1 + 2));
    assert_text(&f->sink[0], n0, 2, "after");
    assert_text(&f->sink[1], n1, 2, "after");
    assert_text(&f->sink[0], n0 + 1, 3, "after b");
    assert_text(&f->sink[1], n1 + 1, 3, "after b");
    assert_int_equal(sink_resets(&f->sink[0]), 1);
    assert_int_equal(sink_resets(&f->sink[1]), 1);
}

/* While Redis is down the queue keeps the most recent payloads, in order,
 * up to its bound; the oldest are dropped. */
static void full_queue_drops_oldest(void **state) {
    fixture_t *f = *state;
    f->notice = true;
    open_broker(f, 0);
    const int n = 12000; /* above the broker's bound of 10,000 payloads */
    char p[32];
    for (int i = 0; i < n; i++) {
        snprintf(p, sizeof p, "q%05d", i);
        publish(f->br[0], text_payload((unsigned)i, p));
    }
    srv_start(&f->srv);
    assert_true(wait_connected(f->br[0], 1));
    /* The newest arrives last: wait for it, then look at what came. */
    int64_t until = now_ms() + WAIT_MS;
    snprintf(p, sizeof p, "q%05d", n - 1);
    payload_t newest = text_payload((unsigned)n - 1, p);
    for (;;) {
        size_t c = sink_count(&f->sink[0]);
        pthread_mutex_lock(&f->sink[0].mu);
        bool last = c && f->sink[0].lens[c - 1] == newest.len &&
                    memcmp(f->sink[0].items[c - 1], newest.p, newest.len) == 0;
        pthread_mutex_unlock(&f->sink[0].mu);
        if (last) break;
        assert_true(now_ms() < until);
        sleep_ms(5);
    }
    free(newest.p);
    /* The loss is announced first, then what was kept. */
    assert_item(&f->sink[0], 0, NOTICE, sizeof NOTICE - 1);
    size_t got = sink_count(&f->sink[0]) - 1;
    assert_true(got > 0 && got < (size_t)n);
    for (size_t i = 0; i < got; i++) {
        int k = n - (int)got + (int)i;
        snprintf(p, sizeof p, "q%05d", k);
        assert_text(&f->sink[0], i + 1, (unsigned)k, p);
    }
}

/* What a publisher held while Redis was away is not published late (the
 * streams have caught up from the store by then: a late event would repeat
 * a message there): it is dropped, and every instance hears of the loss. */
static void reconnection_drops_backlog_and_announces_it(void **state) {
    fixture_t *f = *state;
    f->notice = true;
    open_both_connected(f);
    srv_kill(&f->srv);
    assert_true(wait_connected(f->br[0], 0));
    for (int i = 0; i < 5; i++) publish(f->br[0], text_payload((unsigned)i, "held"));
    sleep_ms(150);
    srv_start(&f->srv);
    assert_true(wait_resets(&f->sink[0], 1));
    assert_true(wait_resets(&f->sink[1], 1));
    assert_true(wait_connected(f->br[1], 1));
    assert_true(wait_connected(f->br[0], 1));
    /* Both subscriptions are back. A payload published now arrives, unless
     * the publisher had not connected again yet: then it is dropped too and
     * the notice (which goes out on the new connection) arrives instead. */
    unsigned k = 0;
    for (;; k++) {
        assert_true(k < 20);
        size_t n = sink_count(&f->sink[1]);
        publish(f->br[0], text_payload(100 + k, "after"));
        assert_true(wait_count(&f->sink[1], n + 1));
        if (!is_notice(&f->sink[1], n)) break;
    }
    /* Nothing that was held arrives, anywhere: notices only, then the
     * payload that got through. */
    for (int s = 0; s < 2; s++) {
        int64_t until = now_ms() + WAIT_MS;
        size_t n;
        while ((n = sink_count(&f->sink[s])) == 0 || is_notice(&f->sink[s], n - 1)) {
            assert_true(now_ms() < until);
            sleep_ms(2);
        }
        for (size_t i = 0; i + 1 < n; i++) assert_true(is_notice(&f->sink[s], i));
        assert_text(&f->sink[s], n - 1, 100 + k, "after");
    }
}

static void close_is_prompt(void **state) {
    fixture_t *f = *state;
    /* Redis down: both threads are between refused attempts. */
    open_broker(f, 0);
    for (int i = 0; i < 10; i++) publish(f->br[0], text_payload((unsigned)i, "lost"));
    sleep_ms(250);
    int64_t t0 = now_ms();
    broker_close(f->br[0]);
    f->br[0] = NULL;
    int64_t dt = now_ms() - t0;
    if (dt >= 1000) fail_msg("broker_close took %lld ms with Redis down", (long long)dt);

    /* Redis frozen (SIGSTOP): connected, a batch waits for its answer and
     * the subscription hears nothing; close still returns at once. */
    srv_start(&f->srv);
    open_broker(f, 1);
    assert_true(wait_connected(f->br[1], 1));
    kill(f->srv.pid, SIGSTOP);
    for (int i = 0; i < 100; i++) publish(f->br[1], text_payload((unsigned)i, "stuck"));
    sleep_ms(100);
    t0 = now_ms();
    broker_close(f->br[1]);
    f->br[1] = NULL;
    dt = now_ms() - t0;
    kill(f->srv.pid, SIGCONT);
    if (dt >= 1000) fail_msg("broker_close took %lld ms with Redis frozen", (long long)dt);
}


/* --broker redis://[USER]:PASSWORD@host:port against requirepass: the right
 * password (percent-encoded, with the ACL user or without) subscribes and
 * delivers; a wrong one or none never subscribes. */
static void auth_with_password(void **state) {
    fixture_t *f = *state;
    f->srv.pass = "p@ss:w/rd";
    srv_start(&f->srv);
    open_broker_as(f, 0, ":wrong@");
    open_broker(f, 1);
    sleep_ms(500);
    assert_int_equal(broker_connected(f->br[0]), 0);
    assert_int_equal(broker_connected(f->br[1]), 0);
    broker_close(f->br[0]);
    broker_close(f->br[1]);
    f->br[0] = f->br[1] = NULL;

    open_broker_as(f, 0, ":p%40ss%3Aw%2Frd@");
    open_broker_as(f, 1, "default:p%40ss%3aw%2frd@"); /* Redis 6 ACL form */
    assert_true(wait_connected(f->br[0], 1));
    assert_true(wait_connected(f->br[1], 1));
    publish(f->br[0], text_payload(1, "authenticated"));
    assert_true(wait_count(&f->sink[0], 1));
    assert_true(wait_count(&f->sink[1], 1));
    assert_text(&f->sink[1], 0, 1, "authenticated");
}

/* Payloads are opaque here (the hub checks their format): whatever is
 * published on the channel is delivered as it is, binary included, while
 * messages of another shape do not end the subscription. */
static void payloads_are_opaque(void **state) {
    fixture_t *f = *state;
    srv_start(&f->srv);
    open_broker(f, 0);
    assert_true(wait_connected(f->br[0], 1));
    redisContext *c = redisConnect("127.0.0.1", f->srv.port);
    assert_true(c && !c->err);
    static const char bin[] = "a\0b\r\n*3\r\n\0c"; /* NULs and RESP syntax */
    freeReplyObject(redisCommand(c, "PUBLISH %s %b", CHANNEL, bin, sizeof bin));
    freeReplyObject(redisCommand(c, "PUBLISH %s %s", CHANNEL, ""));
    redisFree(c);
    assert_true(wait_count(&f->sink[0], 2));
    assert_item(&f->sink[0], 0, bin, sizeof bin);
    assert_item(&f->sink[0], 1, "", 0);
    assert_int_equal(broker_connected(f->br[0]), 1);
    assert_int_equal(sink_resets(&f->sink[0]), 0);
}

/* ---- a hostile "Redis" on a loopback socket ---- */

typedef struct fake {
    int lfd, port;
    const char *hostile; /* sent right after the subscription's confirmation */
    size_t hostile_len;
    int dropped;         /* connections the broker closed after the hostile bytes */
    bool stop;
    pthread_mutex_t mu;
    pthread_t thread;
} fake_t;

static void write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w <= 0) return; /* the broker hung up: that is the point */
        p += w;
        n -= (size_t)w;
    }
}

/* Serves one connection: confirms a SUBSCRIBE, sends the hostile bytes,
 * then waits for the broker to hang up (or the test to end). */
static void fake_serve(fake_t *f, int fd) {
    char buf[4096];
    bool sent = false;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        pthread_mutex_lock(&f->mu);
        bool stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop) break;
        if (poll(&p, 1, 50) <= 0) continue;
        ssize_t r = read(fd, buf, sizeof buf);
        if (r <= 0) {
            pthread_mutex_lock(&f->mu);
            if (sent) f->dropped++;
            pthread_mutex_unlock(&f->mu);
            break;
        }
        if (!sent && memmem(buf, (size_t)r, "SUBSCRIBE", 9)) {
            char ok[128];
            int n = snprintf(ok, sizeof ok, "*3\r\n$9\r\nsubscribe\r\n$%zu\r\n%s\r\n:1\r\n", strlen(CHANNEL), CHANNEL);
            write_all(fd, ok, (size_t)n);
            write_all(fd, f->hostile, f->hostile_len);
            sent = true;
        }
    }
    close(fd);
}

/* Accepts connections one at a time: the subscriber's comes first or
 * second (the publisher's idles), so each is served on its own thread. */
static void *serve_one(void *arg);
typedef struct conn_arg {
    fake_t *f;
    int fd;
} conn_arg_t;
static void *serve_one(void *arg) {
    conn_arg_t *c = arg;
    fake_serve(c->f, c->fd);
    free(c);
    return NULL;
}

static void *fake_main(void *arg) {
    fake_t *f = arg;
    pthread_t th[8];
    int n = 0;
    for (;;) {
        pthread_mutex_lock(&f->mu);
        bool stop = f->stop;
        pthread_mutex_unlock(&f->mu);
        if (stop) break;
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0 || n == 8) continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) continue;
        conn_arg_t *c = malloc(sizeof *c);
        if (!c) abort();
        *c = (conn_arg_t){f, fd};
        if (pthread_create(&th[n], NULL, serve_one, c) == 0) n++;
        else close(fd), free(c);
    }
    for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
    return NULL;
}

static void fake_start(fake_t *f, const char *hostile, size_t len) {
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->mu, NULL);
    f->hostile = hostile;
    f->hostile_len = len;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(f->lfd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t alen = sizeof a;
    assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &alen), 0);
    assert_int_equal(listen(f->lfd, 8), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static int fake_dropped(fake_t *f) {
    pthread_mutex_lock(&f->mu);
    int n = f->dropped;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static void fake_stop(fake_t *f) {
    pthread_mutex_lock(&f->mu);
    f->stop = true;
    pthread_mutex_unlock(&f->mu);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    pthread_mutex_destroy(&f->mu);
}

/* ../shared/fuzz-findings/redis-array-header-666666661.bin and its kin:
 * Debian's hiredis 0.14 would allocate 5.3 GB for the first (an ASan build
 * aborts, a release build stalls until the PING times out), and the
 * subscriber read element 0 of the NULL array a negative count makes. Each
 * must make the broker hang up at once, without allocating for it. */
static void hostile_replies_drop_the_connection(void **state) {
    fixture_t *f = *state;
    size_t big = ((size_t)8 << 20) + ((size_t)128 << 10); /* past the 8 MiB + 64 KiB reader bound */
    char *huge_bulk = malloc(big);
    assert_non_null(huge_bulk);
    int n = snprintf(huge_bulk, 32, "$%zu\r\n", (size_t)2000000000);
    memset(huge_bulk + n, 'x', big - (size_t)n);
    struct {
        const char *name, *bytes;
        size_t len;
    } cases[] = {
        {"*666666661", "*666666661\r\n", 12},
        {"*-5", "*-5\r\n", 5},
        {"nested", "*2\r\n*1\r\n:1\r\n:2\r\n", 16},
        {"*9 message", "*9\r\n$7\r\nmessage\r\n", 17},
        {"2 GB bulk string", huge_bulk, big},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_t fk;
        fake_start(&fk, cases[i].bytes, cases[i].len);
        f->srv.port = fk.port;
        open_broker(f, 0);
        int64_t until = now_ms() + WAIT_MS;
        while (fake_dropped(&fk) < 1 && now_ms() < until) sleep_ms(5);
        int dropped = fake_dropped(&fk);
        broker_close(f->br[0]);
        f->br[0] = NULL;
        fake_stop(&fk);
        if (dropped < 1) fail_msg("%s: the broker kept the connection", cases[i].name);
        assert_int_equal(sink_count(&f->sink[0]), 0);
    }
    free(huge_bulk);
}

/* The same replies through broker_feed_subscriber (what the fuzz harness
 * drives): refused, and a valid stream is handled reply by reply. */
static void feed_subscriber_limits(void **state) {
    fixture_t *f = *state;
    broker_callbacks_t cb = {.on_message = on_message, .ctx = &f->sink[0]};
    assert_int_equal(broker_feed_subscriber(CHANNEL, "*666666661\r\n", 12, &cb), -1);
    assert_int_equal(broker_feed_subscriber(CHANNEL, "*-5\r\n", 5, &cb), -1);
    assert_int_equal(broker_feed_subscriber(CHANNEL, "*1\r\n*0\r\n", 8, &cb), -1);
    assert_int_equal(broker_feed_subscriber(CHANNEL, "*-1\r\n+OK\r\n", 10, &cb), 2);
    payload_t p = text_payload(1, "fed");
    char head[128];
    int n = snprintf(head, sizeof head, "*3\r\n$7\r\nmessage\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(CHANNEL), CHANNEL, p.len);
    buf_t b;
    buf_init(&b);
    buf_lit(&b, "*2\r\n$4\r\npong\r\n$0\r\n\r\n");
    buf_append(&b, head, (size_t)n);
    buf_append(&b, p.p, p.len);
    buf_lit(&b, "\r\n");
    assert_true(buf_ok(&b));
    assert_int_equal(broker_feed_subscriber(CHANNEL, b.data, b.len, &cb), 2);
    assert_int_equal(broker_feed_subscriber("another", b.data, b.len, &cb), 2); /* not our channel */
    assert_int_equal(sink_count(&f->sink[0]), 1);
    assert_item(&f->sink[0], 0, p.p, p.len);
    buf_free(&b);
    free(p.p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(fan_out_binary_and_large, setup, teardown),
        cmocka_unit_test_setup_teardown(order_of_one_publisher, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_comes_up_later, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_restart_resets_and_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(full_queue_drops_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(reconnection_drops_backlog_and_announces_it, setup, teardown),
        cmocka_unit_test_setup_teardown(close_is_prompt, setup, teardown),
        cmocka_unit_test_setup_teardown(auth_with_password, setup, teardown),
        cmocka_unit_test_setup_teardown(payloads_are_opaque, setup, teardown),
        cmocka_unit_test_setup_teardown(hostile_replies_drop_the_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(feed_subscriber_limits, setup, teardown),
    };
    return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
