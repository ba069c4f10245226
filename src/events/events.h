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

#include <stddef.h>

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
    void *ctx;
} events_sink_t;

/* broker_url: NULL (this process only) or "redis://host:port". Starts the
 * heartbeat thread. 0, or -1 with the reason logged. */
int events_open(const char *broker_url, unsigned heartbeat_s, events_t **out);
/* Stops the broker and the heartbeat thread; every subscriber must have
 * unsubscribed. */
void events_close(events_t *ev);

/* 0, or -1 when out of memory. */
int events_subscribe(events_t *ev, const uuid_t *user, const events_sink_t *sink, events_sub_t **out);
void events_unsubscribe(events_t *ev, events_sub_t *sub);

/* Appends a message's event to b (which may already hold a header). */
typedef void (*events_render_fn)(void *arg, buf_t *b);

/* A message was committed: its two participants' subscribers get the event
 * that render(arg) writes. render runs at most once, on this thread (under
 * the hub's lock when there is no broker), and not at all when nobody here
 * subscribes to either user and there is no broker: most sends. */
void events_publish(events_t *ev, const uuid_t *sender, const uuid_t *receiver, const uuid_t *message_id,
                    events_render_fn render, void *arg);

#endif
