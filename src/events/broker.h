/* broker.h - fan-out of committed messages between API instances.
 *
 * Each instance publishes every message it commits; every instance
 * (including the publisher) receives every published payload and hands it to
 * its own event hub. One Redis pub/sub channel carries them all.
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
 *
 * Trust boundary. Redis, and anything else that can reach it and PUBLISH on
 * the channel, is outside: what arrives is input, checked as strictly as a
 * client's request before any of it reaches a user's event stream.
 *  - Replies: an array of more than a few elements, a negative count or a
 *    nested array is refused before hiredis allocates for it (Debian's
 *    hiredis 0.14 allocates an announced array at once: `*666666661` would
 *    ask for 5.3 GB), and so is a reply whose unparsed bytes pass 8 MiB plus
 *    64 KiB; either drops the connection, with a warning, and the usual
 *    reconnection (and on_reset) follows.
 *  - Payloads: on_message only ever sees payloads that broker_payload_check()
 *    accepts; any other message on the channel (foreign, malformed, forged
 *    with inconsistent ids, invalid UTF-8, an SSE line break smuggled into
 *    the data line) is dropped with a (rate-limited) warning.
 * What the check cannot tell is a well-formed event that a hostile publisher
 * invented: whoever can PUBLISH on the channel can show any user a message
 * that is not in the store (the next catch-up from the store will not have
 * it). Keep Redis private to the API instances, with a password
 * (redis://:password@host:port sends AUTH on both connections).
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

/* The payload format, built by events.c: the sender, receiver and message
 * ids (16 bytes each), then the message's SSE event exactly as
 * src/api/events.c renders it:
 *   id: <message id>\nevent: message\ndata: {"message_id":"<id>",
 *   "conversation_id":"<id>","sender_id":"<id>","receiver_id":"<id>",
 *   "content":<JSON string>,"created_at":"<ISO-8601 ms>"}\n\n
 * (the data line is one line, without spaces). broker_payload_check()
 * returns NULL for such a payload whose ids agree (the header's, the id:
 * line's and the JSON's; the conversation id derived from the two users;
 * the message id a version-1 UUID; sender and receiver different), whose
 * content is a valid JSON string of valid UTF-8 of at most
 * BROKER_CONTENT_MAX bytes, and whose time is well-formed; otherwise a
 * static sentence saying what is wrong. */
#define BROKER_PAYLOAD_HDR 48
#define BROKER_CONTENT_MAX ((size_t)1 << 20) /* the most --max-content-bytes allows */
const char *broker_payload_check(const char *payload, size_t len);

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
