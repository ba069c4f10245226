/* broker_fanout.c - what arrives on the subscription: a payload on our
 * channel goes to on_message, anything else is dropped or ends the
 * subscription; and what a confirmed subscription opens (the publisher's
 * gate) and calls (on_reset). broker_feed_subscriber drives the same
 * handling from bytes, for tests and fuzzing. */
#include <pthread.h>

#include "events/redis/broker_internal.h"
#include "util/log.h"

static void drop_payload(link_t *l, const char *why) {
    uint64_t suppressed;
    char buf[48];
    if (warn_limit_allow(&l->rl_payload, now_ms(), &suppressed))
        log_warn("broker", "subscriber: dropped a payload from redis (%s)%s", why,
                 warn_limit_note(suppressed, buf, sizeof buf));
}

/* A "message" reply: a string payload on our channel goes to on_message,
 * whose owner checks its format (broker.h, trust boundary); anything else
 * is dropped with a warning. */
static void fanout_message(link_t *l, const redisReply *r) {
    broker_t *b = l->b;
    const redisReply *ch = r->element[1], *pl = r->element[2];
    if (ch->type != REDIS_REPLY_STRING || ch->len != b->channel_len || memcmp(ch->str, b->channel, ch->len) != 0)
        drop_payload(l, "a message from another channel");
    else if (pl->type != REDIS_REPLY_STRING)
        drop_payload(l, "a payload that is not a string");
    else
        b->cb.on_message(b->cb.ctx, pl->str, pl->len);
}

/* One reply on an established subscription. Returns 0, or -1 when the
 * subscription is gone. */
int fanout_reply(link_t *l, const redisReply *r) {
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 && r->element[0]->type == REDIS_REPLY_STRING) {
        const redisReply *kind = r->element[0];
        if (str_is(kind, "message")) {
            if (r->elements == 3) fanout_message(l, r);
            else drop_payload(l, "a message reply of the wrong shape");
            return 0;
        } else if (str_is(kind, "pong") || str_is(kind, "subscribe")) {
            return 0;
        } else if (str_is(kind, "unsubscribe")) {
            link_set_err(l, "subscription", "unsubscribed by the server");
            return -1;
        }
    } else if (r->type == REDIS_REPLY_ERROR) {
        uint64_t suppressed;
        char buf[48];
        if (warn_limit_allow(&l->rl_err, now_ms(), &suppressed))
            log_warn("broker", "subscriber: error from redis: %s%s", r->str,
                     warn_limit_note(suppressed, buf, sizeof buf));
        return 0;
    }
    log_debug("broker", "subscriber: ignored a reply of type %d", r->type);
    return 0;
}

/* The subscription is confirmed (broker_sub.c has set b->subscribed). */
void fanout_subscribed(broker_t *b) {
    pthread_mutex_lock(&b->mu);
    bool first = !b->subscribed_once;
    b->subscribed_once = true;
    pthread_cond_broadcast(&b->cv); /* opens the publisher's gate */
    pthread_mutex_unlock(&b->mu);
    log_info("broker", "subscribed to channel %s on %s%s", b->channel, b->url,
             first ? "" : " again");
    /* Before any message of the new subscription: the hub ends its
     * streams, whose clients then catch up from the store. */
    if (!first && b->cb.on_reset) b->cb.on_reset(b->cb.ctx);
}

/* ---- tests and fuzzing ---- */

int broker_feed_subscriber(const char *channel, const char *bytes, size_t len, const broker_callbacks_t *cb) {
    redisReplyObjectFunctions *fns = reader_guarded_functions();
    redisReader *rd = fns ? redisReaderCreate() : NULL;
    if (!rd) return -1;
    rd->fn = fns;
    /* A broker and a link without threads or connection: what fanout_reply
     * touches (the channel, the callbacks, the error and log state). */
    broker_t b = {.channel = (char *)channel, .channel_len = strlen(channel), .cb = *cb};
    link_t l = {.b = &b, .role = "subscriber", .is_sub = true};
    int handled = 0;
    size_t off = 0;
    while (handled >= 0) {
        void *reply = NULL;
        reader_refusal_clear();
        if (redisReaderGetReply(rd, &reply) != REDIS_OK) {
            link_set_reader_err(&l, "read", rd);
            handled = -1;
        } else if (reply) {
            int rc = fanout_reply(&l, reply);
            freeReplyObject(reply);
            handled = rc == 0 ? handled + 1 : -1;
        } else if (off == len) {
            break;
        } else if (reader_too_full(rd)) {
            handled = -1;
        } else {
            /* As redisBufferRead: at most 16 KiB a read. */
            size_t n = len - off < 16384 ? len - off : 16384;
            if (redisReaderFeed(rd, bytes + off, n) != REDIS_OK) handled = -1;
            off += n;
        }
    }
    redisReaderFree(rd);
    return handled;
}
