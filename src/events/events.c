/* events.c - see events.h. A chained hash table of subscribers by user id
 * under one mutex; deliveries are short (a copy into a stream's queue), so
 * the lock is held briefly even with many subscribers. */
#include "events/events.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events/broker.h"
#include "util/log.h"
#include "util/timefmt.h"

#define BUCKETS 4096
#define PAYLOAD_HDR 48 /* sender 16, receiver 16, message id 16; then the event */
#define CHANNEL "messenger:events"
/* Every payload on the channel is one of three kinds, told apart by the
 * header's ids:
 *   a message:     sender | receiver | message id (a timeuuid) | the event
 *   a session end: user   | user     | nil | SESSION_END | token hash
 *   a loss notice: nil    | nil      | nil | LOSS_NOTICE (an instance's
 *                  publisher lost events: every stream catches up)
 * Anything else is dropped with a warning: the channel is input too. */
#define SESSION_END "session-end\n"
#define SESSION_END_LEN (sizeof SESSION_END - 1)
#define LOSS_NOTICE "events-lost\n"
#define LOSS_NOTICE_LEN (PAYLOAD_HDR + sizeof LOSS_NOTICE - 1)

struct events_sub {
    events_sub_t *next;
    uuid_t user;
    events_sink_t sink;
    uint64_t serial;            /* order of subscription: the lowest is the oldest */
    bool has_session, ended;
    events_session_t session;
};

struct events {
    pthread_mutex_t mu;         /* guards the table and next_serial */
    events_sub_t *table[BUCKETS];
    uint64_t next_serial;
    broker_t *broker;           /* NULL: publish straight to the table */
    unsigned heartbeat_s;
    unsigned max_per_user;
    bool (*accept)(const uuid_t *, const uuid_t *, const uuid_t *, const char *, size_t);
    char loss_notice[LOSS_NOTICE_LEN]; /* what the broker publishes after a loss */
    pthread_t heart;
    pthread_mutex_t heart_mu;
    pthread_cond_t heart_cv;
    bool closing;
};

static size_t bucket_of(const uuid_t *u) {
    /* User ids are random (v4) or hashes: any 4 bytes spread well. */
    uint32_t h;
    memcpy(&h, u->b + 12, sizeof h);
    return h % BUCKETS;
}

/* The subscriber of `user` here after s (NULL: the first), or NULL when
 * there is no other. Called with ev->mu held. */
static events_sub_t *sub_next(events_t *ev, const uuid_t *user, events_sub_t *s) {
    for (s = s ? s->next : ev->table[bucket_of(user)]; s; s = s->next)
        if (uuid_cmp(&s->user, user) == 0) return s;
    return NULL;
}

/* Delivers to the local subscribers of one user. Called with ev->mu held. */
static void deliver_to(events_t *ev, const uuid_t *user, const uuid_t *id, const char *event, size_t len) {
    for (events_sub_t *s = sub_next(ev, user, NULL); s; s = sub_next(ev, user, s))
        if (!s->ended) s->sink.deliver(s->sink.ctx, id, event, len);
}

/* Called with ev->mu held. */
static void deliver_both(events_t *ev, const uuid_t *sender, const uuid_t *receiver, const uuid_t *id,
                         const char *event, size_t len) {
    deliver_to(ev, sender, id, event, len);
    if (uuid_cmp(sender, receiver) != 0) deliver_to(ev, receiver, id, event, len);
}

static void deliver_local(events_t *ev, const uuid_t *sender, const uuid_t *receiver, const uuid_t *id,
                          const char *event, size_t len) {
    pthread_mutex_lock(&ev->mu);
    deliver_both(ev, sender, receiver, id, event, len);
    pthread_mutex_unlock(&ev->mu);
}

/* Tells `user`'s subscribers here that they missed an event. Called with
 * ev->mu held. */
static void reset_user(events_t *ev, const uuid_t *user) {
    for (events_sub_t *s = sub_next(ev, user, NULL); s; s = sub_next(ev, user, s)) s->sink.reset(s->sink.ctx);
}

static void for_each_sub(events_t *ev, void (*fn)(const events_sink_t *)) {
    pthread_mutex_lock(&ev->mu);
    for (size_t i = 0; i < BUCKETS; i++)
        for (events_sub_t *s = ev->table[i]; s; s = s->next) fn(&s->sink);
    pthread_mutex_unlock(&ev->mu);
}

static void call_heartbeat(const events_sink_t *k) { k->heartbeat(k->ctx); }
static void call_reset(const events_sink_t *k) { k->reset(k->ctx); }

/* Ends one subscription: nothing is delivered to it from here on. Called
 * with ev->mu held. */
static void end_sub(events_sub_t *s) {
    if (s->ended) return;
    s->ended = true;
    s->sink.end(s->sink.ctx);
}

/* Ends the subscriptions of user's session token_hash here. */
static void end_session_local(events_t *ev, const uuid_t *user, const uint8_t *token_hash) {
    pthread_mutex_lock(&ev->mu);
    for (events_sub_t *s = sub_next(ev, user, NULL); s; s = sub_next(ev, user, s))
        if (s->has_session && memcmp(s->session.token_hash, token_hash, 32) == 0) end_sub(s);
    pthread_mutex_unlock(&ev->mu);
}

/* Ends every subscription whose session has expired. */
static void end_expired(events_t *ev, int64_t now_ms) {
    pthread_mutex_lock(&ev->mu);
    for (size_t i = 0; i < BUCKETS; i++)
        for (events_sub_t *s = ev->table[i]; s; s = s->next)
            if (s->has_session && s->session.expires_at_ms <= now_ms) end_sub(s);
    pthread_mutex_unlock(&ev->mu);
}

/* ---- the broker's side ---- */

/* The PAYLOAD_HDR bytes every payload starts with (on_broker_message reads
 * them back). */
static void put_payload_header(buf_t *b, const uuid_t *a, const uuid_t *c, const uuid_t *id) {
    buf_append(b, a->b, 16);
    buf_append(b, c->b, 16);
    buf_append(b, id->b, 16);
}

static void on_broker_message(void *ctx, const char *payload, size_t len) {
    events_t *ev = ctx;
    static const uuid_t nil;
    if (len <= PAYLOAD_HDR) {
        log_warn("events", "broker payload of %zu bytes dropped: too short", len);
        return;
    }
    uuid_t sender, receiver, id;
    memcpy(sender.b, payload, 16);
    memcpy(receiver.b, payload + 16, 16);
    memcpy(id.b, payload + 32, 16);
    const char *rest = payload + PAYLOAD_HDR;
    size_t n = len - PAYLOAD_HDR;
    if (uuid_cmp(&id, &nil) == 0) {
        if (len == LOSS_NOTICE_LEN && memcmp(payload, ev->loss_notice, len) == 0) {
            log_warn("events", "an instance could not publish some events: event streams told to catch up");
            for_each_sub(ev, call_reset);
        } else if (n == SESSION_END_LEN + 32 && memcmp(rest, SESSION_END, SESSION_END_LEN) == 0 &&
                   uuid_cmp(&sender, &receiver) == 0) {
            end_session_local(ev, &sender, (const uint8_t *)rest + SESSION_END_LEN);
        } else {
            log_warn("events", "broker payload of %zu bytes dropped: not a session end or loss notice", len);
        }
        return;
    }
    if (!ev->accept(&sender, &receiver, &id, rest, n)) {
        log_warn("events", "broker payload of %zu bytes dropped: not a message event", len);
        return;
    }
    deliver_local(ev, &sender, &receiver, &id, rest, n);
}

static void on_broker_reset(void *ctx) {
    log_warn("events", "broker subscription was lost and is back: event streams told to catch up");
    for_each_sub(ctx, call_reset);
}

/* ---- heartbeats ---- */

/* Once a second: sessions that expired end (the contract is "within one
 * second"); every heartbeat_s seconds: a keep-alive on every stream. */
static void *heart_main(void *arg) {
    events_t *ev = arg;
    pthread_setname_np(pthread_self(), "sse-heartbeat");
    unsigned ticks = 0;
    pthread_mutex_lock(&ev->heart_mu);
    while (!ev->closing) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        int rc = 0;
        while (!ev->closing && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&ev->heart_cv, &ev->heart_mu, &until);
        if (ev->closing) break;
        pthread_mutex_unlock(&ev->heart_mu);
        end_expired(ev, time_now_ms());
        if (++ticks >= ev->heartbeat_s) {
            ticks = 0;
            for_each_sub(ev, call_heartbeat);
        }
        pthread_mutex_lock(&ev->heart_mu);
    }
    pthread_mutex_unlock(&ev->heart_mu);
    return NULL;
}

/* ---- public ---- */

int events_open(const events_config_t *cfg, events_t **out) {
    const char *broker_url = cfg->broker_url;
    events_t *ev = calloc(1, sizeof *ev);
    if (!ev) return -1;
    pthread_mutex_init(&ev->mu, NULL);
    pthread_mutex_init(&ev->heart_mu, NULL);
    pthread_cond_init(&ev->heart_cv, NULL);
    ev->heartbeat_s = cfg->heartbeat_s ? cfg->heartbeat_s : 15;
    ev->max_per_user = cfg->max_per_user ? cfg->max_per_user : 16;
    ev->accept = cfg->accept;
    memcpy(ev->loss_notice + PAYLOAD_HDR, LOSS_NOTICE, sizeof LOSS_NOTICE - 1); /* after a nil header */
    if (broker_url) {
        broker_callbacks_t cb = {.on_message = on_broker_message, .on_reset = on_broker_reset, .ctx = ev,
                                 .loss_notice = ev->loss_notice, .loss_notice_len = sizeof ev->loss_notice};
        int rc = broker_open(broker_url, CHANNEL, &cb, &ev->broker);
        if (rc) {
            log_error("events", "cannot use broker %s: %s", broker_url, strerror(-rc));
            goto fail;
        }
        log_info("events", "events shared through %s", broker_url);
    }
    if (pthread_create(&ev->heart, NULL, heart_main, ev) != 0) {
        broker_close(ev->broker);
        goto fail;
    }
    *out = ev;
    return 0;
fail:
    pthread_mutex_destroy(&ev->mu);
    pthread_mutex_destroy(&ev->heart_mu);
    pthread_cond_destroy(&ev->heart_cv);
    free(ev);
    return -1;
}

void events_close(events_t *ev) {
    if (!ev) return;
    pthread_mutex_lock(&ev->heart_mu);
    ev->closing = true;
    pthread_cond_signal(&ev->heart_cv);
    pthread_mutex_unlock(&ev->heart_mu);
    pthread_join(ev->heart, NULL);
    if (ev->broker) broker_close(ev->broker);
    for (size_t i = 0; i < BUCKETS; i++)
        if (ev->table[i]) log_error("events", "closed with subscribers still registered");
    pthread_mutex_destroy(&ev->mu);
    pthread_mutex_destroy(&ev->heart_mu);
    pthread_cond_destroy(&ev->heart_cv);
    free(ev);
}

/* Ends user's oldest live subscriptions until fewer than max_per_user are
 * left. Called with ev->mu held. */
static void make_room(events_t *ev, const uuid_t *user) {
    for (;;) {
        unsigned live = 0;
        events_sub_t *oldest = NULL;
        for (events_sub_t *s = sub_next(ev, user, NULL); s; s = sub_next(ev, user, s)) {
            if (s->ended) continue;
            live++;
            if (!oldest || s->serial < oldest->serial) oldest = s;
        }
        if (live < ev->max_per_user) return;
        end_sub(oldest);
    }
}

int events_subscribe(events_t *ev, const uuid_t *user, const events_session_t *session,
                     const events_sink_t *sink, events_sub_t **out) {
    events_sub_t *s = calloc(1, sizeof *s);
    if (!s) return -1;
    s->user = *user;
    s->sink = *sink;
    if (session) {
        s->has_session = true;
        s->session = *session;
    }
    size_t b = bucket_of(user);
    pthread_mutex_lock(&ev->mu);
    make_room(ev, user);
    s->serial = ev->next_serial++;
    s->next = ev->table[b];
    ev->table[b] = s;
    pthread_mutex_unlock(&ev->mu);
    *out = s;
    return 0;
}

int events_broker_state(events_t *ev) {
    if (!ev || !ev->broker) return -1;
    return broker_connected(ev->broker) ? 1 : 0;
}

void events_end_session(events_t *ev, const uuid_t *user, const uint8_t token_hash[32]) {
    end_session_local(ev, user, token_hash);
    if (!ev->broker) return;
    static const uuid_t nil;
    buf_t b;
    buf_init(&b);
    put_payload_header(&b, user, user, &nil);
    buf_append(&b, SESSION_END, SESSION_END_LEN);
    buf_append(&b, token_hash, 32);
    if (buf_ok(&b)) broker_publish(ev->broker, b.data, b.len);
    else log_error("events", "out of memory publishing a logout: other instances end its streams at expiry");
    buf_free(&b);
}

void events_unsubscribe(events_t *ev, events_sub_t *sub) {
    if (!sub) return;
    pthread_mutex_lock(&ev->mu);
    for (events_sub_t **p = &ev->table[bucket_of(&sub->user)]; *p; p = &(*p)->next) {
        if (*p == sub) {
            *p = sub->next;
            break;
        }
    }
    pthread_mutex_unlock(&ev->mu);
    free(sub);
}

void events_publish(events_t *ev, const uuid_t *sender, const uuid_t *receiver, const uuid_t *id,
                    events_render_fn render, void *arg) {
    buf_t b;
    buf_init(&b);
    if (!ev->broker) {
        /* Checked and delivered under one lock: a subscriber that comes in
         * between cannot miss the event. */
        pthread_mutex_lock(&ev->mu);
        if (sub_next(ev, sender, NULL) || sub_next(ev, receiver, NULL)) {
            render(arg, &b);
            if (buf_ok(&b)) {
                deliver_both(ev, sender, receiver, id, b.data, b.len);
            } else {
                log_error("events", "out of memory rendering an event: its streams told to catch up");
                reset_user(ev, sender);
                reset_user(ev, receiver);
            }
        }
        pthread_mutex_unlock(&ev->mu);
        buf_free(&b);
        return;
    }
    /* Through the broker even for our own subscribers: one path, one order.
     * The payload is the header, then the event. */
    put_payload_header(&b, sender, receiver, id);
    render(arg, &b);
    if (buf_ok(&b)) {
        broker_publish(ev->broker, b.data, b.len);
    } else {
        /* Every instance's streams of these users miss it: the notice (kept
         * ready, no allocation) tells them all. */
        log_error("events", "out of memory publishing an event: streams told to catch up");
        broker_publish(ev->broker, ev->loss_notice, sizeof ev->loss_notice);
    }
    buf_free(&b);
}
