/* The Redis broker against a real redis-server that each test starts on a
 * free loopback port in a temporary folder: fan-out between two brokers
 * (binary and 64 KiB payloads), ordering, url checks, a broker that starts
 * before Redis, a Redis restart (on_reset, then delivery), the queue bound,
 * and a prompt broker_close while Redis is down or frozen.
 *
 * Needs /usr/bin/redis-server (Debian package redis-server): without it the
 * tests fail, they do not skip. */
#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
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

#include "events/broker.h"
#include "unit.h"
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
    pid_t pid; /* 0 when not running */
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

static bool srv_ping(int port) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
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
                    "--logfile", log, NULL};
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
    while (!srv_ping(s->port)) {
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

/* ---- fixture: a server (not started), two sinks, up to two brokers ---- */

typedef struct fixture {
    server_t srv;
    sink_t sink[2];
    broker_t *br[2];
} fixture_t;

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

static void open_broker(fixture_t *f, int i) {
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", f->srv.port);
    broker_callbacks_t cb = {.on_message = on_message, .on_reset = on_reset, .ctx = &f->sink[i]};
    assert_int_equal(broker_open(url, CHANNEL, &cb, &f->br[i]), 0);
    assert_non_null(f->br[i]);
}

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
        "redis://user:pw@host:6379", "redis://host:6379?db=1", "redis://host:6379/0/x",
        "redis://host name", "redis://[::1", "redis://[]:6379", "redis://host:6379 ",
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
    const char *good[] = {"redis://localhost:%d", "REDIS://127.0.0.1:%d/0", "redis://[::1]:%d/"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        snprintf(url, sizeof url, good[i], f->srv.port);
        assert_int_equal(broker_open(url, CHANNEL, &cb, &b), 0);
        assert_non_null(b);
        broker_close(b);
    }
    assert_int_equal(broker_open("redis://localhost", CHANNEL, &cb, &b), 0); /* port 6379 */
    broker_close(b);
}

static void fan_out_binary_and_large(void **state) {
    fixture_t *f = *state;
    open_both_connected(f);
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);

    static const char bin[] = "a\0b\r\n\0c"; /* NULs and a RESP line end */
    broker_publish(f->br[0], bin, sizeof bin);
    assert_true(wait_count(&f->sink[0], 1));
    assert_true(wait_count(&f->sink[1], 1));
    assert_item(&f->sink[0], 0, bin, sizeof bin);
    assert_item(&f->sink[1], 0, bin, sizeof bin);

    broker_publish(f->br[1], "from b", 6);
    assert_true(wait_count(&f->sink[0], 2));
    assert_true(wait_count(&f->sink[1], 2));
    assert_item(&f->sink[0], 1, "from b", 6);
    assert_item(&f->sink[1], 1, "from b", 6);

    size_t big_len = 64 * 1024;
    char *big = malloc(big_len);
    assert_non_null(big);
    for (size_t i = 0; i < big_len; i++) big[i] = (char)(i * 7 % 251); /* NULs included */
    broker_publish(f->br[1], big, big_len);
    assert_true(wait_count(&f->sink[0], 3));
    assert_true(wait_count(&f->sink[1], 3));
    broker_publish(f->br[0], "", 0); /* after: two publishers are not ordered */
    assert_true(wait_count(&f->sink[0], 4));
    assert_true(wait_count(&f->sink[1], 4));
    for (int i = 0; i < 2; i++) {
        assert_item(&f->sink[i], 2, big, big_len);
        assert_item(&f->sink[i], 3, "", 0);
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
        int len = snprintf(p, sizeof p, "payload-%04d", i);
        broker_publish(f->br[0], p, (size_t)len);
    }
    for (int s = 0; s < 2; s++) {
        assert_true(wait_count(&f->sink[s], (size_t)n));
        for (int i = 0; i < n; i++) {
            int len = snprintf(p, sizeof p, "payload-%04d", i);
            assert_item(&f->sink[s], (size_t)i, p, (size_t)len);
        }
    }
}

/* Opened before Redis runs: connects once it does. What was published in
 * the meantime waited for the broker's own subscription. */
static void redis_comes_up_later(void **state) {
    fixture_t *f = *state;
    open_broker(f, 0);
    broker_publish(f->br[0], "early", 5);
    sleep_ms(300);
    assert_int_equal(broker_connected(f->br[0]), 0);
    assert_int_equal(sink_count(&f->sink[0]), 0);

    srv_start(&f->srv);
    assert_true(wait_connected(f->br[0], 1));
    assert_true(wait_count(&f->sink[0], 1));
    assert_item(&f->sink[0], 0, "early", 5);

    open_broker(f, 1);
    assert_true(wait_connected(f->br[1], 1));
    broker_publish(f->br[1], "later", 5);
    assert_true(wait_count(&f->sink[0], 2));
    assert_true(wait_count(&f->sink[1], 1));
    assert_item(&f->sink[0], 1, "later", 5);
    assert_item(&f->sink[1], 0, "later", 5);
    /* A first subscription is no reset, however late it comes. */
    assert_int_equal(sink_resets(&f->sink[0]) + sink_resets(&f->sink[1]), 0);
}

static void redis_restart_resets_and_resumes(void **state) {
    fixture_t *f = *state;
    open_both_connected(f);
    broker_publish(f->br[0], "before", 6);
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
    size_t n0 = sink_count(&f->sink[0]), n1 = sink_count(&f->sink[1]);
    broker_publish(f->br[0], "after", 5);
    assert_true(wait_count(&f->sink[0], n0 + 1));
    assert_true(wait_count(&f->sink[1], n1 + 1));
    broker_publish(f->br[1], "after b", 7);
    assert_true(wait_count(&f->sink[0], n0 + 2));
    assert_true(wait_count(&f->sink[1], n1 + 2));
    assert_item(&f->sink[0], n0, "after", 5);
    assert_item(&f->sink[1], n1, "after", 5);
    assert_item(&f->sink[0], n0 + 1, "after b", 7);
    assert_item(&f->sink[1], n1 + 1, "after b", 7);
    assert_int_equal(sink_resets(&f->sink[0]), 1);
    assert_int_equal(sink_resets(&f->sink[1]), 1);
}

/* While Redis is down the queue keeps the most recent payloads, in order,
 * up to its bound; the oldest are dropped. */
static void full_queue_drops_oldest(void **state) {
    fixture_t *f = *state;
    open_broker(f, 0);
    const int n = 12000; /* above the broker's bound of 10,000 payloads */
    char p[32];
    for (int i = 0; i < n; i++) {
        int len = snprintf(p, sizeof p, "q%05d", i);
        broker_publish(f->br[0], p, (size_t)len);
    }
    srv_start(&f->srv);
    assert_true(wait_connected(f->br[0], 1));
    /* The newest arrives last: wait for it, then look at what came. */
    int64_t until = now_ms() + WAIT_MS;
    int len = snprintf(p, sizeof p, "q%05d", n - 1);
    for (;;) {
        size_t c = sink_count(&f->sink[0]);
        pthread_mutex_lock(&f->sink[0].mu);
        bool last = c && f->sink[0].lens[c - 1] == (size_t)len &&
                    memcmp(f->sink[0].items[c - 1], p, (size_t)len) == 0;
        pthread_mutex_unlock(&f->sink[0].mu);
        if (last) break;
        assert_true(now_ms() < until);
        sleep_ms(5);
    }
    size_t got = sink_count(&f->sink[0]);
    assert_true(got > 0 && got < (size_t)n);
    for (size_t i = 0; i < got; i++) {
        len = snprintf(p, sizeof p, "q%05d", n - (int)got + (int)i);
        assert_item(&f->sink[0], i, p, (size_t)len);
    }
}

static void close_is_prompt(void **state) {
    fixture_t *f = *state;
    /* Redis down: both threads are between refused attempts. */
    open_broker(f, 0);
    for (int i = 0; i < 10; i++) broker_publish(f->br[0], "lost", 4);
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
    for (int i = 0; i < 100; i++) broker_publish(f->br[1], "stuck", 5);
    sleep_ms(100);
    t0 = now_ms();
    broker_close(f->br[1]);
    f->br[1] = NULL;
    dt = now_ms() - t0;
    kill(f->srv.pid, SIGCONT);
    if (dt >= 1000) fail_msg("broker_close took %lld ms with Redis frozen", (long long)dt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(bad_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(fan_out_binary_and_large, setup, teardown),
        cmocka_unit_test_setup_teardown(order_of_one_publisher, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_comes_up_later, setup, teardown),
        cmocka_unit_test_setup_teardown(redis_restart_resets_and_resumes, setup, teardown),
        cmocka_unit_test_setup_teardown(full_queue_drops_oldest, setup, teardown),
        cmocka_unit_test_setup_teardown(close_is_prompt, setup, teardown),
    };
    return cmocka_run_group_tests_name("broker", tests, NULL, NULL);
}
