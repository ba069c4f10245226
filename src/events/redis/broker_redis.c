/* broker_redis.c - the broker (events/broker.h) on Redis pub/sub, with
 * hiredis: its lifecycle. broker_open parses the url, sets the broker up and
 * starts the subscriber (broker_sub.c) and publisher (broker_pub.c) threads;
 * broker_close stops them. How the pieces fit: broker_internal.h. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "events/redis/broker_internal.h"
#include "util/log.h"

/* Frees what broker_open may have set up; the threads must not run. */
static void broker_free(broker_t *b) {
    q_free_all(b->q_head);
    if (b->sub_wake >= 0) close(b->sub_wake);
    if (b->pub_wake >= 0) close(b->pub_wake);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b->channel);
    explicit_bzero(b->pass, sizeof b->pass); /* no copy of it left in freed memory */
    free(b);
}

static void stop_threads(broker_t *b) {
    pthread_mutex_lock(&b->mu);
    b->grace_deadline = now_ms() + CLOSE_GRACE_MS;
    atomic_store(&b->stopping, true);
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    (void)eventfd_write(b->sub_wake, 1);
    (void)eventfd_write(b->pub_wake, 1);
    if (b->sub_started) pthread_join(b->sub_thread, NULL);
    if (b->pub_started) pthread_join(b->pub_thread, NULL);
    b->sub_started = b->pub_started = false;
}

/* Copies the parsed url into b (credentials included) and names b in log
 * lines without them. */
static void take_url(broker_t *b, const url_t *u) {
    memcpy(b->host, u->host, sizeof b->host);
    b->port = u->port;
    b->has_pass = u->has_pass;
    memcpy(b->user, u->user, sizeof b->user);
    memcpy(b->pass, u->pass, sizeof b->pass);
    b->user_len = u->user_len;
    b->pass_len = u->pass_len;
    if (strchr(b->host, ':')) snprintf(b->url, sizeof b->url, "redis://[%s]:%d", b->host, b->port);
    else snprintf(b->url, sizeof b->url, "redis://%s:%d", b->host, b->port);
}

/* The two threads. The threads inherit the signal mask: block everything
 * asynchronous (see "Signals" in broker_internal.h); faults stay deliverable, for
 * sanitizers. Returns 0 or a positive errno (threads stopped again). */
static int start_threads(broker_t *b) {
    sigset_t all, old;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&b->sub_thread, NULL, sub_main, b);
    b->sub_started = rc == 0;
    if (rc == 0) {
        rc = pthread_create(&b->pub_thread, NULL, pub_main, b);
        b->pub_started = rc == 0;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) stop_threads(b);
    return rc;
}

int broker_open(const char *url, const char *channel, const broker_callbacks_t *cb, broker_t **out) {
    if (!out) return -EINVAL;
    *out = NULL;
    if (!url || !channel || !cb || !cb->on_message) return -EINVAL;
    url_t u;
    int rc = broker_url_parse(url, &u);
    size_t chlen = strnlen(channel, CHANNEL_MAX + 1);
    broker_t *b = rc == 0 && chlen >= 1 && chlen <= CHANNEL_MAX ? calloc(1, sizeof *b) : NULL;
    if (b) take_url(b, &u);
    explicit_bzero(&u, sizeof u); /* the password lives in b only */
    if (rc != 0 || chlen == 0 || chlen > CHANNEL_MAX) return -EINVAL;
    if (!b) return -ENOMEM;
    b->sub_wake = b->pub_wake = -1;
    b->cb = *cb;
    b->channel_len = chlen;
    atomic_init(&b->stopping, false);
    atomic_init(&b->subscribed, 0);
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc != 0) {
        pthread_mutex_destroy(&b->mu);
        explicit_bzero(b->pass, sizeof b->pass);
        free(b);
        return -rc;
    }
    b->channel = malloc(chlen + 1);
    b->sub_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    b->pub_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    rc = !b->channel ? -ENOMEM : b->sub_wake < 0 || b->pub_wake < 0 ? -errno : 0;
    if (rc == 0) {
        memcpy(b->channel, channel, chlen + 1);
        log_info("broker", "%s channel %s%s", b->url, b->channel, b->has_pass ? " (with AUTH)" : "");
        rc = -start_threads(b);
    }
    if (rc != 0) {
        broker_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

int broker_connected(broker_t *b) {
    return atomic_load(&b->subscribed);
}

void broker_close(broker_t *b) {
    if (!b) return;
    stop_threads(b);
    /* The threads are gone: no lock needed. */
    if (b->q_items)
        log_warn("broker", "closing with %zu payload(s) not published (redis unreachable or too slow)",
                 b->q_items);
    log_info("broker", "closed");
    broker_free(b);
}
