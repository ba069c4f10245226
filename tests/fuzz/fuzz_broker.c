/* fuzz_broker.c - what Redis sends the event broker's subscriber
 * (src/events/broker_redis.c), through broker_feed_subscriber(): the same
 * hiredis reader with the same limits (array counts, nesting, buffered
 * bytes), the same handling of each reply, the same payload check before
 * the hub's callback. Three views of each input:
 *
 *  1. the input as the raw byte stream of the subscription (RESP);
 *  2. the input as the payload of a well-formed "message" reply, so that
 *     broker_payload_check() is fuzzed directly;
 *  3. a round trip: the input's first 48 bytes as sender, receiver and
 *     message ids, the rest as content, rendered by src/api/render.c as the
 *     API renders an event: the check must accept it exactly when the
 *     message is one the API could have sent (two different users, a
 *     version-1 id; any content renders), so it never drops real events.
 *
 * Properties: no crash, no allocation above libFuzzer's -malloc_limit_mb
 * (hiredis 0.14 allocated `*666666661` up front: 5.3 GB), every payload that
 * reaches on_message passes broker_payload_check(), and a refused reply
 * stops the stream. */
#include <string.h>

#include "api/render.h"
#include "events/broker.h"
#include "fuzz_common.h"
#include "model/model.h"
#include "model/uuid.h"
#include "util/buf.h"
#include "util/log.h"

#define CHANNEL "messenger:events"

static size_t delivered;

static void on_message(void *ctx, const char *payload, size_t len) {
    (void)ctx;
    FUZZ_CHECK(broker_payload_check(payload, len) == NULL);
    FUZZ_CHECK(len > BROKER_PAYLOAD_HDR);
    delivered++;
}

static const broker_callbacks_t CB = {.on_message = on_message};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    log_set_level(LOG_OFF); /* every dropped payload is a warning */
    return 0;
}

/* *3 $7 message $<channel> $<n> <payload> */
static void feed_as_message(const uint8_t *data, size_t size) {
    buf_t b;
    buf_init(&b);
    char head[128];
    int n = snprintf(head, sizeof head, "*3\r\n$7\r\nmessage\r\n$%zu\r\n%s\r\n$%zu\r\n", strlen(CHANNEL), CHANNEL,
                     size);
    buf_append(&b, head, (size_t)n);
    buf_append(&b, (const char *)data, size);
    buf_append(&b, "\r\n", 2);
    FUZZ_CHECK(buf_ok(&b));
    size_t before = delivered;
    int rc = broker_feed_subscriber(CHANNEL, b.data, b.len, &CB);
    FUZZ_CHECK(rc == 1);
    bool valid = broker_payload_check((const char *)data, size) == NULL;
    FUZZ_CHECK(delivered - before == (valid ? 1u : 0u));
    buf_free(&b);
}

static void render_event(buf_t *b, const message_t *m) {
    char id[UUID_STR_LEN + 1];
    uuid_format(&m->id, id);
    buf_lit(b, "id: ");
    buf_append(b, id, UUID_STR_LEN);
    buf_lit(b, "\nevent: message\ndata: ");
    render_message(b, m);
    buf_lit(b, "\n\n");
}

static void round_trip(const uint8_t *data, size_t size) {
    if (size < BROKER_PAYLOAD_HDR) return;
    message_t m;
    memset(&m, 0, sizeof m);
    memcpy(m.sender_id.b, data, 16);
    memcpy(m.receiver_id.b, data + 16, 16);
    memcpy(m.id.b, data + 32, 16);
    conversation_id_derive(&m.sender_id, &m.receiver_id, &m.conversation_id);
    m.created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m.id));
    m.content = (const char *)data + BROKER_PAYLOAD_HDR;
    m.content_len = size - BROKER_PAYLOAD_HDR;
    buf_t b;
    buf_init(&b);
    buf_append(&b, (const char *)data, BROKER_PAYLOAD_HDR);
    render_event(&b, &m);
    FUZZ_CHECK(buf_ok(&b));
    /* Any content renders (invalid UTF-8 as U+FFFD), so only the ids decide. */
    bool sendable = uuid_cmp(&m.sender_id, &m.receiver_id) != 0 && uuid_version(&m.id) == 1;
    const char *why = broker_payload_check(b.data, b.len);
    if (sendable != (why == NULL)) {
        fprintf(stderr, "sendable=%d, check says: %s\n", sendable, why ? why : "valid");
        FUZZ_CHECK(sendable == (why == NULL));
    }
    buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t before = delivered;
    int rc = broker_feed_subscriber(CHANNEL, (const char *)data, size, &CB);
    FUZZ_CHECK(rc >= -1);
    FUZZ_CHECK(rc < 0 || delivered - before <= (size_t)rc);
    feed_as_message(data, size);
    round_trip(data, size);
    return 0;
}
