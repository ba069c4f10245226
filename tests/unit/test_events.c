/* The event hub (sessions, the per-user cap, delivery) and the check of an
 * event that came from the broker (events_accept_message). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "unit.h"
#include "api/api.h"
#include "api/render.h"
#include "events/events.h"
#include "util/timefmt.h"

typedef struct {
    int delivered, ended;
} counts_t;

static void on_deliver(void *ctx, const uuid_t *id, const char *ev, size_t len) {
    (void)id, (void)ev, (void)len;
    ((counts_t *)ctx)->delivered++;
}
static void on_heartbeat(void *ctx) { (void)ctx; }
static void on_end(void *ctx) { ((counts_t *)ctx)->ended++; }

static void render_x(void *arg, buf_t *b) { (void)arg; buf_puts(b, "x"); }

static events_t *open_hub(unsigned max_per_user) {
    events_config_t cfg = {.heartbeat_s = 3600, .max_per_user = max_per_user, .accept = events_accept_message};
    events_t *ev;
    assert_int_equal(events_open(&cfg, &ev), 0);
    return ev;
}

static events_sub_t *sub(events_t *ev, const uuid_t *user, const events_session_t *session, counts_t *c) {
    events_sink_t sink = {.deliver = on_deliver, .heartbeat = on_heartbeat, .reset = on_end, .end = on_end, .ctx = c};
    events_sub_t *s;
    assert_int_equal(events_subscribe(ev, user, session, &sink, &s), 0);
    return s;
}

/* The cap ends the oldest; an ended subscription gets nothing more. */
static void per_user_cap_ends_the_oldest(void **state) {
    (void)state;
    events_t *ev = open_hub(2);
    uuid_t u = {{1}}, v = {{2}}, id = {{3}};
    counts_t c[3] = {{0}};
    events_sub_t *s0 = sub(ev, &u, NULL, &c[0]), *s1 = sub(ev, &u, NULL, &c[1]);
    assert_int_equal(c[0].ended, 0);
    events_sub_t *s2 = sub(ev, &u, NULL, &c[2]);
    assert_int_equal(c[0].ended, 1);
    assert_int_equal(c[1].ended + c[2].ended, 0);
    events_publish(ev, &v, &u, &id, render_x, NULL);
    assert_int_equal(c[0].delivered, 0);
    assert_int_equal(c[1].delivered, 1);
    assert_int_equal(c[2].delivered, 1);
    events_unsubscribe(ev, s0);
    events_unsubscribe(ev, s1);
    events_unsubscribe(ev, s2);
    events_close(ev);
}

/* Logout ends the streams of that token only, of that user only. */
static void end_session_ends_that_token_only(void **state) {
    (void)state;
    events_t *ev = open_hub(16);
    uuid_t u = {{1}}, v = {{2}};
    events_session_t t1 = {.expires_at_ms = INT64_MAX}, t2 = {.expires_at_ms = INT64_MAX};
    memset(t1.token_hash, 0xaa, 32);
    memset(t2.token_hash, 0xbb, 32);
    counts_t a = {0}, b = {0}, other = {0}, open = {0};
    events_sub_t *sa = sub(ev, &u, &t1, &a), *sb = sub(ev, &u, &t2, &b);
    events_sub_t *so = sub(ev, &v, &t1, &other), *sn = sub(ev, &u, NULL, &open);
    events_end_session(ev, &u, t1.token_hash);
    assert_int_equal(a.ended, 1);
    assert_int_equal(b.ended + other.ended + open.ended, 0);
    events_end_session(ev, &u, t1.token_hash); /* once */
    assert_int_equal(a.ended, 1);
    events_unsubscribe(ev, sa);
    events_unsubscribe(ev, sb);
    events_unsubscribe(ev, so);
    events_unsubscribe(ev, sn);
    events_close(ev);
}

/* The heartbeat thread ends an expired session within about a second. */
static void expired_session_ends(void **state) {
    (void)state;
    events_t *ev = open_hub(16);
    uuid_t u = {{1}};
    events_session_t t = {.expires_at_ms = time_now_ms() + 300};
    counts_t c = {0};
    events_sub_t *s = sub(ev, &u, &t, &c);
    int64_t until = time_now_ms() + 3000;
    while (!__atomic_load_n(&c.ended, __ATOMIC_SEQ_CST) && time_now_ms() < until) {
        struct timespec ms = {0, 10 * 1000 * 1000};
        nanosleep(&ms, NULL);
    }
    assert_int_equal(__atomic_load_n(&c.ended, __ATOMIC_SEQ_CST), 1);
    assert_true(time_now_ms() < t.expires_at_ms + 1500);
    events_unsubscribe(ev, s);
    events_close(ev);
}

/* ---- events_accept_message ---- */

static void event_for(const message_t *m, buf_t *b) {
    char id[UUID_STR_LEN + 1];
    uuid_format(&m->id, id);
    buf_init(b);
    buf_puts(b, "id: ");
    buf_puts(b, id);
    buf_puts(b, "\nevent: message\ndata: ");
    render_message(b, m);
    buf_puts(b, "\n\n");
}

static message_t sample(const char *content, size_t len) {
    message_t m = {.content = content, .content_len = len};
    uuid_parse(&m.sender_id, "11111111-1111-1111-1111-111111111111", 36);
    uuid_parse(&m.receiver_id, "22222222-2222-2222-2222-222222222222", 36);
    uuid_make_v1(&m.id, unix_ms_to_ticks(1700000000123), 7, 9);
    m.created_at_ms = 1700000000123;
    conversation_id_derive(&m.sender_id, &m.receiver_id, &m.conversation_id);
    return m;
}

static bool accept(const message_t *m, const char *ev, size_t len) {
    return events_accept_message(&m->sender_id, &m->receiver_id, &m->id, ev, len);
}

static void accepts_exactly_what_we_render(void **state) {
    (void)state;
    const char *contents[] = {"hi", "", "a\0b", "\"quoted\" \\ line\nbreak", "\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"};
    size_t lens[] = {2, 0, 3, 21, 10};
    for (size_t i = 0; i < 5; i++) {
        message_t m = sample(contents[i], lens[i]);
        buf_t b;
        event_for(&m, &b);
        assert_true(accept(&m, b.data, b.len));
        /* Any one byte changed outside the content (which is the payload's
         * to say), or the event cut short: refused. */
        size_t c0 = (size_t)(strstr(b.data, "\"content\":") - b.data), c1 = (size_t)(strstr(b.data, ",\"created_at\"") - b.data);
        for (size_t k = 0; k < b.len; k += 3) {
            if (k >= c0 + 11 && k < c1 - 1) continue;
            char saved = b.data[k];
            b.data[k] = saved == 'x' ? 'y' : 'x';
            assert_false(accept(&m, b.data, b.len));
            b.data[k] = saved;
            assert_false(accept(&m, b.data, k));
        }
        buf_free(&b);
    }
}

static void refuses_forgeries(void **state) {
    (void)state;
    message_t m = sample("hi", 2);
    buf_t b;
    event_for(&m, &b);
    /* Another sender in the header than in the event. */
    uuid_t other;
    uuid_parse(&other, "33333333-3333-3333-3333-333333333333", 36);
    assert_false(events_accept_message(&other, &m.receiver_id, &m.id, b.data, b.len));
    /* An id that is not a timeuuid. */
    uuid_t v4 = m.id;
    v4.b[6] = (uint8_t)((v4.b[6] & 0x0f) | 0x40);
    assert_false(events_accept_message(&m.sender_id, &m.receiver_id, &v4, b.data, b.len));
    buf_free(&b);
    /* A second data line, a smuggled event, duplicate keys, an extra field. */
    const char *forged[] = {
        "data: {}\n\nevent: reset\n\n",
        "\ndata: x",
    };
    for (size_t i = 0; i < 2; i++) {
        event_for(&m, &b);
        b.len -= 2;
        buf_puts(&b, forged[i]);
        buf_puts(&b, "\n\n");
        assert_false(accept(&m, b.data, b.len));
        buf_free(&b);
    }
    char id[UUID_STR_LEN + 1];
    uuid_format(&m.id, id);
    char ev[1024];
    int n = snprintf(ev, sizeof ev, "id: %s\nevent: message\ndata: {\"content\":\"hi\",\"content\":\"ho\"}\n\n", id);
    assert_false(accept(&m, ev, (size_t)n));
    assert_false(accept(&m, "", 0));
    assert_false(accept(&m, "\n\n", 2));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(per_user_cap_ends_the_oldest),
        cmocka_unit_test(end_session_ends_that_token_only),
        cmocka_unit_test(expired_session_ends),
        cmocka_unit_test(accepts_exactly_what_we_render),
        cmocka_unit_test(refuses_forgeries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
