/* json_render.c - is the hand-written JSON worth it?
 *
 * Output: renders the same 20-message page of one conversation between two
 * users (the API's hot path: a page read) two ways,
 * many times: with our writer (api/render.c over util/json_write.c) and with
 * jansson (build the tree with json_pack, then json_dumps with
 * JSON_ENSURE_ASCII | JSON_COMPACT, which escapes like ours). Prints the time
 * per page for each and checks that both produce the same JSON value.
 *
 * Input: parses a send's body (POST /api/messages/, as the benchmark sends
 * it) with the fast path (api/input.c: input_parse_flat) and with
 * json_loadb, checking that both give the same value.
 *
 *   make bench-json      (builds build/release/bench_json and runs it)
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "api/input.h"
#include "api/render.h"
#include "model/uuid.h"
#include "util/timefmt.h"

#define PAGE 20
#define ROUNDS 200000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *ours(const message_t *m, size_t n, size_t *len) {
    buf_t b;
    buf_init(&b);
    render_message_page(&b, m, n, PAGE, "00000000-0000-1000-8000-000000000000");
    return buf_steal(&b, len);
}

static char *theirs(const message_t *m, size_t n) {
    json_t *data = json_array();
    for (size_t i = 0; i < n; i++) {
        char id[UUID_STR_LEN + 1], conv[UUID_STR_LEN + 1], snd[UUID_STR_LEN + 1], rcv[UUID_STR_LEN + 1];
        char at[TIME_STR_LEN + 1];
        uuid_format(&m[i].id, id);
        uuid_format(&m[i].conversation_id, conv);
        uuid_format(&m[i].sender_id, snd);
        uuid_format(&m[i].receiver_id, rcv);
        time_format_ms(m[i].created_at_ms, at);
        json_array_append_new(data, json_pack("{s:s,s:s,s:s,s:s,s:s%,s:s}", "message_id", id, "conversation_id", conv,
                                              "sender_id", snd, "receiver_id", rcv, "content", m[i].content,
                                              m[i].content_len, "created_at", at));
    }
    json_t *page = json_pack("{s:i,s:i,s:o,s:s}", "total", (int)n, "limit", PAGE, "data", data, "next_cursor",
                             "00000000-0000-1000-8000-000000000000");
    char *out = json_dumps(page, JSON_COMPACT | JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER);
    json_decref(page);
    return out;
}

static const char SEND_BODY[] =
    "{\"sender_id\":\"dd3fa3c6-d1cb-462d-bab3-5f984dffbeb0\",\"receiver_id\":\"404b9e4d-d259-41c1-bf59-18aabf784a81\","
    "\"content\":\"bench 20261128 message 0: the quick brown fox jumps over the lazy dog\"}";

static int parse_bench(void) {
    size_t n = sizeof SEND_BODY - 1;
    json_error_t e;
    json_t *a = input_parse_flat(SEND_BODY, n), *b = json_loadb(SEND_BODY, n, JSON_ALLOW_NUL, &e);
    int same = a && b && json_equal(a, b);
    json_decref(a);
    json_decref(b);
    if (!same) {
        fprintf(stderr, "bench_json: the two parses differ\n");
        return 1;
    }
    double t0 = now_s();
    for (int r = 0; r < ROUNDS * 5; r++) json_decref(input_parse_flat(SEND_BODY, n));
    double t_ours = (now_s() - t0) / (ROUNDS * 5);
    t0 = now_s();
    for (int r = 0; r < ROUNDS; r++) json_decref(json_loadb(SEND_BODY, n, JSON_ALLOW_NUL, &e));
    double t_theirs = (now_s() - t0) / ROUNDS;
    printf("{\"parse\":\"send body\",\"body_bytes\":%zu,\"hand_written_us\":%.2f,\"jansson_us\":%.2f,\"speedup\":%.1f}\n",
           n, t_ours * 1e6, t_theirs * 1e6, t_theirs / t_ours);
    return 0;
}

int main(void) {
    idgen_t g;
    if (idgen_init(&g) != 0) return 1;
    message_t m[PAGE];
    static const char *const texts[] = {"hello there", "Paginated message 17", "caf\xC3\xA9 \xF0\x9F\x98\x80 \"quoted\"",
                                        "a somewhat longer message, the kind people actually send to each other"};
    /* A real page: one conversation, its two users taking turns. */
    uuid_t conv, users[2];
    uuid_random(&conv);
    uuid_random(&users[0]);
    uuid_random(&users[1]);
    for (int i = 0; i < PAGE; i++) {
        idgen_next(&g, &m[i].id);
        m[i].conversation_id = conv;
        m[i].sender_id = users[i % 2];
        m[i].receiver_id = users[1 - i % 2];
        m[i].created_at_ms = 1732500000000LL + i;
        m[i].content = texts[i % 4];
        m[i].content_len = strlen(texts[i % 4]);
    }
    size_t len;
    char *a = ours(m, PAGE, &len), *b = theirs(m, PAGE);
    json_t *ja = json_loads(a, 0, NULL), *jb = json_loads(b, 0, NULL);
    int same = ja && jb && json_equal(ja, jb);
    json_decref(ja);
    json_decref(jb);
    free(a);
    free(b);
    if (!same) {
        fprintf(stderr, "bench_json: the two renderings differ\n");
        return 1;
    }
    double t0 = now_s();
    for (int r = 0; r < ROUNDS; r++) free(ours(m, PAGE, &len));
    double t_ours = (now_s() - t0) / ROUNDS;
    t0 = now_s();
    for (int r = 0; r < ROUNDS / 4; r++) free(theirs(m, PAGE));
    double t_theirs = (now_s() - t0) / (ROUNDS / 4);
    printf("{\"render\":\"page\",\"page_bytes\":%zu,\"hand_written_us\":%.2f,\"jansson_us\":%.2f,\"speedup\":%.1f}\n",
           len, t_ours * 1e6, t_theirs * 1e6, t_theirs / t_ours);
    return parse_bench();
}
