/* broker.h - fan-out of committed messages between API instances.
 *
 * Each instance publishes every message it commits; every instance
 * (including the publisher) receives every published payload and hands it to
 * its own event hub. One Redis pub/sub channel carries them all; payloads are
 * opaque bytes to the broker.
 *
 * Threads: broker_publish() may be called from any thread and never blocks
 * on the network (payloads are queued; a full queue drops the oldest and
 * counts it). Callbacks run on the broker's own subscriber thread.
 *
 * Loss: pub/sub is at-most-once. Whenever the subscription is (re)established
 * after having been lost, on_reset runs: the hub then ends every open event
 * stream, so that each client reconnects with Last-Event-ID and catches up
 * from the store, which is the source of truth. The first successful
 * subscription does not call on_reset.
 */
#ifndef MESSENGER_EVENTS_BROKER_H
#define MESSENGER_EVENTS_BROKER_H

#include <stddef.h>

typedef struct broker broker_t;

typedef struct broker_callbacks {
    void (*on_message)(void *ctx, const char *payload, size_t len);
    void (*on_reset)(void *ctx);
    void *ctx;
} broker_callbacks_t;

/* url: "redis://HOST:PORT" (HOST numeric or a name; PORT default 6379),
 * channel: the pub/sub channel name. Starts the broker's threads and returns
 * 0, or a negative errno-style code (-EINVAL for a bad url). It does not wait
 * for the connection: a broker that is down is retried with back-off, and
 * broker_connected() says whether the subscription is up. */
int broker_open(const char *url, const char *channel, const broker_callbacks_t *cb, broker_t **out);
void broker_publish(broker_t *b, const char *payload, size_t len);
int broker_connected(broker_t *b);
/* Stops the threads (publishing what is queued, within a short grace) and
 * frees the broker. No callback runs after it returns. */
void broker_close(broker_t *b);

#endif
