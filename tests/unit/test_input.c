/* The request body's fast path (api/input.h: input_parse_flat) against
 * jansson, its oracle: whatever it accepts, json_loadb(JSON_ALLOW_NUL |
 * JSON_REJECT_DUPLICATES) must accept as an equal value; what it declines
 * goes to jansson. Checked on a corpus (which must also show that the
 * common shapes are taken) and on random documents built from JSON's pieces
 * and then damaged. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/input.h"
#include "unit.h"

/* 1: the fast path took it (and jansson agrees), 0: it declined. */
static int check(const char *s, size_t n) {
    json_error_t e;
    json_t *fast = input_parse_flat(s, n);
    json_t *slow = json_loadb(s, n, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &e);
    int took = fast != NULL;
    if (fast) {
        if (!slow || !json_equal(fast, slow)) fprintf(stderr, "differs from jansson: %.*s\n", (int)n, s);
        assert_non_null(slow);
        assert_true(json_equal(fast, slow));
    }
    json_decref(fast);
    json_decref(slow);
    return took;
}

static int check_str(const char *s) { return check(s, strlen(s)); }

static void takes_the_common_shapes(void **state) {
    (void)state;
    const char *taken[] = {
        "{\"sender_id\":\"dd3fa3c6-d1cb-462d-bab3-5f984dffbeb0\",\"receiver_id\":"
        "\"404b9e4d-d259-41c1-bf59-18aabf784a81\",\"content\":\"hello\"}",
        "{}",
        " \t\r\n{ } \n",
        "{\"a\" : \"b\" , \"c\":null}",
        "{\"content\":\"quote \\\" backslash \\\\ slash \\/ \\b\\f\\n\\r\\t end\"}",
        "{\"content\":\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\"}",
        "{\"\":\"\"}",
        "{\"client_message_id\":null,\"content\":\"\x7f\"}",
    };
    for (size_t i = 0; i < sizeof taken / sizeof *taken; i++) {
        if (!check_str(taken[i])) fprintf(stderr, "declined: %s\n", taken[i]);
        assert_int_equal(check_str(taken[i]), 1);
    }
}

static void declines_the_rest(void **state) {
    (void)state;
    const char *declined[] = {
        "", " ", "[]", "\"x\"", "null", "{", "}", "{\"a\"}", "{\"a\":}", "{\"a\":\"b\",}", "{,}",
        "{\"a\":\"b\"} x", "{\"a\":\"b\"}{}", "{\"a\":1}", "{\"a\":true}", "{\"a\":[]}", "{\"a\":{}}",
        "{\"a\":\"\\u00e9\"}", "{\"a\":\"\\u0000\"}", "{\"\\u0061\":\"b\"}", "{\"a\":\"\\x\"}",
        "{\"a\":\"b\x01\"}", "{\"a\":\"\xc3\"}", "{\"a\":\"\xc0\x80\"}", "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}", "{\"a\":\"unterminated}", "{\"a\":nul}", "{\"a\":nullx}",
        "{\"a\" \"b\"}", "{'a':'b'}", "\xef\xbb\xbf{}", "{\"a\":\"b\"\x0b}",
        "{\"a\":\"1\",\"a\":\"2\"}", "{\"a\":null,\"a\":null}", /* a repeated key: refused */
    };
    for (size_t i = 0; i < sizeof declined / sizeof *declined; i++) {
        if (check_str(declined[i])) fprintf(stderr, "taken: %s\n", declined[i]);
        assert_int_equal(check_str(declined[i]), 0);
    }
    /* a NUL byte inside a string, and after the document */
    assert_int_equal(check("{\"a\":\"b\0c\"}", 11), 0);
    assert_int_equal(check("{}\0", 3), 0);
}

/* ---- random documents ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static unsigned rnd(unsigned n) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (unsigned)(rng % n);
}

static void put(char *buf, size_t *n, size_t cap, const char *s) {
    size_t l = strlen(s);
    if (*n + l < cap) {
        memcpy(buf + *n, s, l);
        *n += l;
    }
}

static const char *const PIECES[] = {
    "a", "content", "sender_id", "\\\"", "\\\\", "\\/", "\\n", "\\t", "\\u00e9", "\\ud83d\\ude00", "\\x",
    "\xc3\xa9", "\xf0\x9f\x98\x80", "\xc3", "\xed\xa0\x80", "\x01", " ", "\x7f", "z", "\xe2\x82\xac",
};

static void random_string(char *buf, size_t *n, size_t cap) {
    put(buf, n, cap, "\"");
    for (unsigned i = rnd(6); i > 0; i--) put(buf, n, cap, PIECES[rnd(sizeof PIECES / sizeof *PIECES)]);
    put(buf, n, cap, "\"");
}

static const char *const WS[] = {"", "", "", " ", "\n", "\t ", "\r\n"};
static const char *const OTHER[] = {"null", "null", "1", "-0.5e3", "true", "false", "[]", "{}", "[\"x\"]",
                                    "{\"k\":\"v\"}", "nul"};

static size_t random_doc(char *buf, size_t cap) {
    size_t n = 0;
    put(buf, &n, cap, WS[rnd(7)]);
    put(buf, &n, cap, "{");
    unsigned members = rnd(5);
    for (unsigned i = 0; i < members; i++) {
        if (i) put(buf, &n, cap, rnd(30) ? "," : "");
        put(buf, &n, cap, WS[rnd(7)]);
        random_string(buf, &n, cap);
        put(buf, &n, cap, WS[rnd(7)]);
        put(buf, &n, cap, rnd(30) ? ":" : "");
        put(buf, &n, cap, WS[rnd(7)]);
        if (rnd(4)) random_string(buf, &n, cap);
        else put(buf, &n, cap, OTHER[rnd(sizeof OTHER / sizeof *OTHER)]);
    }
    put(buf, &n, cap, WS[rnd(7)]);
    put(buf, &n, cap, rnd(40) ? "}" : "");
    put(buf, &n, cap, rnd(40) ? WS[rnd(7)] : "x");
    /* and now and then a damaged byte */
    if (n && rnd(8) == 0) buf[rnd((unsigned)n)] = (char)rnd(256);
    if (n && rnd(16) == 0) n = rnd((unsigned)n);
    return n;
}

static void agrees_with_jansson_on_random_documents(void **state) {
    (void)state;
    char buf[512];
    unsigned taken = 0, total = 100000;
    for (unsigned i = 0; i < total; i++) taken += (unsigned)check(buf, random_doc(buf, sizeof buf));
    /* both ways are exercised */
    assert_true(taken > total / 10);
    assert_true(taken < total * 9 / 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(takes_the_common_shapes),
        cmocka_unit_test(declines_the_rest),
        cmocka_unit_test(agrees_with_jansson_on_random_documents),
    };
    return cmocka_run_group_tests_name("input", tests, NULL, NULL);
}
