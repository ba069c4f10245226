/* events.h - the hub of real-time delivery: who is listening for which
 * user's messages, in this process, and the fan-out of every committed
 * message to them (through the broker when API instances share one).
 *
 * A subscriber is a sink: three callbacks. deliver() and heartbeat() run
 * under the hub's lock, from whatever thread published (a store's commit
 * thread, the broker's thread) or from the heartbeat thread: they must be
 * quick and must not call back into the hub. After events_unsubscribe()
 * returns, none of a sink's callbacks is running or will run.
 *
 * An event is opaque bytes to the hub, rendered by the API layer once per
 * message, whoever the recipients, and only when somebody may want it: a
 * broker is configured, or one of the two users has a subscriber here.
 */
#ifndef MESSENGER_EVENTS_EVENTS_H
#define MESSENGER_EVENTS_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/uuid.h"
#include "util/buf.h"

typedef struct events events_t;
typedef struct events_sub events_sub_t;

typedef struct events_sink {
    void (*deliver)(void *ctx, const uuid_t *message_id, const char *event, size_t len);
    void (*heartbeat)(void *ctx);
    /* Events may have been lost (the broker reconnected): the subscriber
     * should make its client catch up from the store. */
    void (*reset)(void *ctx);
    /* The subscription is over: its session ended (logout, expiry) or a
     * newer subscription of the same user displaced it. The subscriber
     * should end its stream; the hub delivers nothing more to it. */
    void (*end)(void *ctx);
    void *ctx;
} events_sink_t;

/* The login session a subscription belongs to (with auth on). */
typedef struct events_session {
    uint8_t token_hash[32];
    int64_t expires_at_ms;      /* Unix ms; the subscription ends then */
} events_session_t;

typedef struct events_config {
    const char *broker_url;     /* NULL (this process only) or "redis://[:password@]host:port" */
    unsigned heartbeat_s;
    unsigned max_per_user;      /* subscriptions of one user; a further one ends the oldest */
    /* Whether an event that came from the broker is one this process could
     * have rendered for that message (the API layer knows the format): the
     * broker's channel is input like any other, and a foreign or damaged
     * payload must never reach a client's stream. */
    bool (*accept)(const uuid_t *sender, const uuid_t *receiver, const uuid_t *message_id,
                   const char *event, size_t len);
} events_config_t;

/* Starts the heartbeat thread (which also ends expired sessions, once a
 * second). 0, or -1 with the reason logged. */
int events_open(const events_config_t *cfg, events_t **out);
/* Stops the broker and the heartbeat thread; every subscriber must have
 * unsubscribed. */
void events_close(events_t *ev);

/* session: NULL for none (auth off). When the user already has
 * max_per_user subscriptions, the oldest is ended (its sink's end()).
 * 0, or -1 when out of memory. */
int events_subscribe(events_t *ev, const uuid_t *user, const events_session_t *session,
                     const events_sink_t *sink, events_sub_t **out);
void events_unsubscribe(events_t *ev, events_sub_t *sub);

/* The broker's state for a readiness probe: -1 none configured, 0 its
 * subscription is down (events from other instances do not arrive), 1 up. */
int events_broker_state(events_t *ev);

/* Ends every subscription of user's session token_hash (a logout), here at
 * once and, through the broker, on every other instance. */
void events_end_session(events_t *ev, const uuid_t *user, const uint8_t token_hash[32]);

/* Appends a message's event to b (which may already hold a header). */
typedef void (*events_render_fn)(void *arg, buf_t *b);

/* A message was committed: its two participants' subscribers get the event
 * that render(arg) writes. render runs at most once, on this thread (under
 * the hub's lock when there is no broker), and not at all when nobody here
 * subscribes to either user and there is no broker: most sends. */
void events_publish(events_t *ev, const uuid_t *sender, const uuid_t *receiver, const uuid_t *message_id,
                    events_render_fn render, void *arg);

#endif
