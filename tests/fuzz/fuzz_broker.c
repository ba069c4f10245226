/* fuzz_broker.c - what Redis sends an API instance's event broker, up to
 * the hub's check of each payload:
 *
 *  1. the input as the raw byte stream of the subscription (RESP), through
 *     broker_feed_subscriber() (src/events/redis/broker_fanout.c): the same hiredis
 *     reader with the same limits (array counts, nesting, buffered bytes)
 *     and the same handling of each reply; what it hands on goes, as in
 *     events.c, to the message check: events_accept_message()
 *     (src/api/sse.c, the hub's events_config_t.accept);
 *  2. the input as the payload of a well-formed "message" reply: delivered
 *     exactly once, as it is, then checked the same way (so the check is
 *     fuzzed directly: three 16-byte ids, then the event);
 *  3. a round trip: the input's first 48 bytes as sender, receiver and
 *     message ids, the rest as content, rendered as src/api/sse.c renders
 *     an event: the check must accept it whenever the API could have sent
 *     that message (a version-1 id whose time is in range; any content
 *     renders), so it never drops real events; and it must refuse the same
 *     event with one more byte, or one fewer.
 *
 * Properties: no crash, no allocation above libFuzzer's -malloc_limit_mb
 * (hiredis 0.14 allocated `*666666661` up front: 5.3 GB); an accepted event
 * is one SSE event whose data is a single line. */
#include <string.h>

#include "api/api.h"
#include "api/render.h"
#include "events/broker.h"
#include "fuzz_common.h"
#include "model/model.h"
#include "model/uuid.h"
#include "util/buf.h"
#include "util/log.h"

#define CHANNEL "messenger:events"
#define HDR 48 /* sender, receiver, message id: events.c's payload header */

static size_t delivered, accepted;

/* What events.c's on_broker_message does with a message payload. */
static bool check(const char *payload, size_t len) {
    if (len <= HDR) return false;
    uuid_t s, r, id;
    memcpy(s.b, payload, 16);
    memcpy(r.b, payload + 16, 16);
    memcpy(id.b, payload + 32, 16);
    const char *ev = payload + HDR;
    size_t n = len - HDR;
    if (!events_accept_message(&s, &r, &id, ev, n)) return false;
    /* What reaches a client: one event, one data line, no other field. */
    FUZZ_CHECK(n > 2 && memcmp(ev + n - 2, "\n\n", 2) == 0);
    const char *data = memmem(ev, n, "\ndata: ", 7);
    FUZZ_CHECK(data && memchr(data + 7, '\n', (size_t)(ev + n - 2 - data - 7)) == NULL);
    FUZZ_CHECK(memchr(ev, '\r', n) == NULL);
    return true;
}

static void on_message(void *ctx, const char *payload, size_t len) {
    (void)ctx;
    delivered++;
    if (check(payload, len)) accepted++;
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
    FUZZ_CHECK(rc == 1 && delivered == before + 1);
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
    if (size < HDR) return;
    message_t m;
    memset(&m, 0, sizeof m);
    memcpy(m.sender_id.b, data, 16);
    memcpy(m.receiver_id.b, data + 16, 16);
    memcpy(m.id.b, data + 32, 16);
    conversation_id_derive(&m.sender_id, &m.receiver_id, &m.conversation_id);
    m.created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m.id));
    m.content = (const char *)data + HDR;
    m.content_len = size - HDR;
    buf_t b;
    buf_init(&b);
    buf_append(&b, (const char *)data, HDR);
    render_event(&b, &m);
    buf_lit(&b, "x");
    FUZZ_CHECK(buf_ok(&b));
    bool ok = check(b.data, b.len - 1);
    /* The API sends version-1 ids of this era: those must pass. */
    int64_t year_2000 = 946684800000LL, year_2100 = 4102444800000LL;
    if (uuid_version(&m.id) == 1 && m.created_at_ms >= year_2000 && m.created_at_ms < year_2100) FUZZ_CHECK(ok);
    if (uuid_version(&m.id) != 1) FUZZ_CHECK(!ok);
    FUZZ_CHECK(!check(b.data, b.len));     /* a byte more */
    FUZZ_CHECK(!check(b.data, b.len - 2)); /* a byte fewer */
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
