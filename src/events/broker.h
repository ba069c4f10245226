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
 * The publishing side tells every instance of its own losses the same way:
 * once payloads it was given may not have reached Redis (a batch lost with
 * its connection, a full queue, a refused PUBLISH), it publishes
 * cb->loss_notice ahead of anything later, and every subscriber (itself
 * included) gets it through on_message like any payload. What was queued
 * while the publisher was disconnected is dropped at the reconnection and
 * counts as lost: published late, it would reach streams that have caught
 * up from the store since, and repeat what they sent.
 *
 * Trust boundary. Redis, and anything else that can reach it and PUBLISH on
 * the channel, is outside: what arrives is input.
 *  - Replies: an array of more than a few elements, a negative count or a
 *    nested array is refused before hiredis allocates for it (Debian's
 *    hiredis 0.14 allocates an announced array at once: `*666666661` would
 *    ask for 5.3 GB), and so is a reply whose unparsed bytes pass 8 MiB plus
 *    64 KiB; either drops the connection, with a warning, and the usual
 *    reconnection (and on_reset) follows. A "message" from another channel,
 *    or of another shape, is dropped with a (rate-limited) warning.
 *  - Payloads stay opaque here: on_message gets every string published on
 *    the channel, and its owner checks the format before any of it reaches
 *    a client (events.c: a session end, or a message event that
 *    events_config_t.accept, src/api/sse.c's events_accept_message, finds
 *    byte for byte equal to what this process renders for those ids and
 *    that content).
 * What no check can tell is a well-formed event that a hostile publisher
 * invented: whoever can PUBLISH on the channel can show a user a message
 * that is not in the store, or end streams. Keep Redis private to the API
 * instances, with a password (redis://:password@host:port sends AUTH on
 * both connections).
 */
#ifndef MESSENGER_EVENTS_BROKER_H
#define MESSENGER_EVENTS_BROKER_H

#include <stddef.h>

typedef struct broker broker_t;

typedef struct broker_callbacks {
    void (*on_message)(void *ctx, const char *payload, size_t len);
    void (*on_reset)(void *ctx);
    void *ctx;
    /* Published after a loss on the publishing side (see Loss above); must
     * outlive the broker. NULL: losses are only logged and counted. */
    const char *loss_notice;
    size_t loss_notice_len;
} broker_callbacks_t;

/* url: "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]" (HOST numeric or a name,
 * IPv6 in brackets; PORT default 6379; USER and PASSWORD percent-decoded,
 * each at most 512 bytes; with a password both connections send AUTH first),
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

/* For tests and fuzzing: bytes as the subscriber would read them from Redis
 * on a subscription to `channel`, through the same reader limits and the
 * same handling of each reply; accepted payloads go to cb->on_message, on
 * this thread. Returns the number of replies handled, or -1 where the
 * subscriber would drop the connection (a refused or malformed reply, an
 * unsubscribe). */
int broker_feed_subscriber(const char *channel, const char *bytes, size_t len, const broker_callbacks_t *cb);

#endif
