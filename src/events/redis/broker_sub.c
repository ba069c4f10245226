/* broker_sub.c - the subscriber thread: connect, SUBSCRIBE, read the
 * subscription (each reply to broker_fanout.c) with a heartbeat, and
 * reconnect with back-off whenever it is lost. */
#include <pthread.h>

#include "events/redis/broker_internal.h"

/* SUBSCRIBE and wait for ["subscribe", channel, count]. Returns 0 or -1. */
static int sub_subscribe(link_t *l) {
    broker_t *b = l->b;
    if (redisAppendCommand(l->c, "SUBSCRIBE %b", b->channel, b->channel_len) != REDIS_OK) {
        link_set_ctx_err(l, "SUBSCRIBE");
        return -1;
    }
    redisReply *r = NULL;
    if (link_call(l, "SUBSCRIBE", &r) != 0) return -1;
    int rc = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 || !str_is(r->element[0], "subscribe") ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len != b->channel_len ||
        memcmp(r->element[1]->str, b->channel, b->channel_len) != 0) {
        link_set_err(l, "SUBSCRIBE", "unexpected answer");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

/* Reads the subscription until it fails or the broker closes. */
static void sub_loop(link_t *l) {
    int64_t ping_ms = 0; /* when the last PING went out */
    for (;;) {
        bool ping_due = ping_ms <= l->last_rx_ms; /* no PING out since the last byte */
        int64_t deadline = l->last_rx_ms + PING_IDLE_MS + (ping_due ? 0 : PING_TIMEOUT_MS);
        redisReply *r = NULL;
        int got = link_read(l, deadline, &r);
        if (got < 0) return;
        if (got == 0) {
            if (!ping_due) {
                link_set_err(l, "subscription", "no answer to PING: connection presumed dead");
                return;
            }
            if (redisAppendCommand(l->c, "PING") != REDIS_OK) {
                link_set_ctx_err(l, "PING");
                return;
            }
            if (link_flush(l, now_ms() + IO_TIMEOUT_MS) != 0) return;
            ping_ms = now_ms();
            continue;
        }
        int rc = fanout_reply(l, r);
        freeReplyObject(r);
        if (rc != 0) return;
    }
}

void *sub_main(void *arg) {
    broker_t *b = arg;
    pthread_setname_np(pthread_self(), "redis-sub");
    link_t l = {.b = b, .role = "subscriber", .is_sub = true, .wake_fd = b->sub_wake,
                .backoff_ms = BACKOFF_MIN_MS};
    while (!atomic_load(&b->stopping)) {
        if (link_connect(&l) != 0 || sub_subscribe(&l) != 0) {
            link_close(&l);
            if (atomic_load(&b->stopping)) break;
            link_log_connect_failure(&l);
            link_backoff_sleep(&l);
            continue;
        }
        link_connected_again(&l);
        atomic_store(&b->subscribed, 1);
        fanout_subscribed(b);
        sub_loop(&l);

        atomic_store(&b->subscribed, 0);
        link_ended(&l);
        if (atomic_load(&b->stopping)) break;
        link_log_lost(&l);
        /* A Redis restart refuses connections for a while: wait before the
         * first attempt too, rather than spending it at once. */
        link_backoff_sleep(&l);
    }
    return NULL;
}
