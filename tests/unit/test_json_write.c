/* JSON string escaping: every byte class must round-trip through jansson,
 * and the output must be pure printable ASCII. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "util/json_write.h"

/* Writes s as a JSON string, parses it back with jansson, and returns the
 * decoded bytes (caller frees); also checks the output is printable ASCII. */
static char *round_trip(const char *s, size_t len, size_t *out_len) {
    buf_t b;
    buf_init(&b);
    json_put_string(&b, s, len);
    assert_true(buf_ok(&b));
    for (size_t i = 0; i < b.len; i++) assert_true(b.data[i] >= 0x20 && b.data[i] < 0x7f);
    json_error_t err;
    json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
    assert_non_null(v);
    assert_true(json_is_string(v));
    *out_len = json_string_length(v);
    char *copy = malloc(*out_len + 1);
    assert_non_null(copy);
    memcpy(copy, json_string_value(v), *out_len + 1);
    json_decref(v);
    buf_free(&b);
    return copy;
}

static void expect_round_trip(const char *s, size_t len) {
    size_t n;
    char *back = round_trip(s, len, &n);
    assert_int_equal(n, len);
    assert_memory_equal(back, s, len);
    free(back);
}

static void every_ascii_byte(void **state) {
    (void)state;
    char all[128];
    for (int i = 0; i < 128; i++) all[i] = (char)i;
    expect_round_trip(all, sizeof all); /* NUL, controls, quote, backslash, DEL */
    for (int i = 0; i < 128; i++) expect_round_trip(&all[i], 1);
}

static void exact_escapes(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    json_put_string(&b, "a\"b\\c\nd\te\x01\x7f\xC3\xA9\xF0\x9F\x98\x80\xE2\x80\xA8", 20);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\nd\\te\\u0001\\u007f\\u00e9\\ud83d\\ude00\\u2028\"");
    buf_free(&b);
}

/* Encodes code point cp as UTF-8 into p; returns its length. */
static size_t utf8_encode(unsigned cp, char *p) {
    if (cp < 0x80) { p[0] = (char)cp; return 1; }
    if (cp < 0x800) { p[0] = (char)(0xC0 | cp >> 6); p[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        p[0] = (char)(0xE0 | cp >> 12); p[1] = (char)(0x80 | ((cp >> 6) & 0x3F)); p[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | cp >> 18); p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static void every_code_point(void **state) {
    (void)state;
    /* All of Unicode but the surrogates, in chunks, through one writer. */
    char *s = malloc(4 * 4096);
    assert_non_null(s);
    for (unsigned start = 0; start <= 0x10FFFF; start += 4096) {
        size_t len = 0;
        for (unsigned cp = start; cp < start + 4096 && cp <= 0x10FFFF; cp++) {
            if (cp >= 0xD800 && cp <= 0xDFFF) continue;
            len += utf8_encode(cp, s + len);
        }
        expect_round_trip(s, len);
    }
    free(s);
}

static void invalid_bytes_become_replacement(void **state) {
    (void)state;
    const char *bad[] = {"\xFF", "\xC3", "\xED\xA0\x80", "\xC0\xAF", "\x80", "\xF4\x90\x80\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n;
        char *back = round_trip(bad[i], strlen(bad[i]), &n);
        /* Every invalid byte is one U+FFFD (EF BF BD). */
        assert_int_equal(n % 3, 0);
        assert_true(n >= 3);
        for (size_t j = 0; j < n; j += 3) assert_memory_equal(back + j, "\xEF\xBF\xBD", 3);
        free(back);
    }
}

static void random_bytes_always_valid_json(void **state) {
    (void)state;
    uint64_t x = 88172645463325252ULL;
    char s[256];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = (size_t)(x % sizeof s);
        for (size_t i = 0; i < len; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            s[i] = (char)x;
        }
        size_t n;
        free(round_trip(s, len, &n)); /* asserts valid, ASCII-only JSON */
    }
}

/* The writer copies 8 plain bytes at a time: every ASCII byte, at every
 * position of a word (and across words), must still be seen and escaped. */
static void special_byte_in_every_lane(void **state) {
    (void)state;
    char s[24];
    for (int v = 0; v < 128; v++) {
        for (size_t at = 0; at < sizeof s; at++) {
            memset(s, 'a', sizeof s);
            s[at] = (char)v;
            expect_round_trip(s, sizeof s);
            for (size_t len = at + 1; len <= sizeof s; len += 5) expect_round_trip(s, len);
        }
    }
    /* A non-ASCII byte in a lane becomes U+FFFD; the plain bytes around it survive. */
    memset(s, 'b', sizeof s);
    s[13] = (char)0xE9;
    size_t n;
    char *back = round_trip(s, sizeof s, &n);
    assert_int_equal(n, sizeof s + 2);
    assert_memory_equal(back, "bbbbbbbbbbbbb" "\xEF\xBF\xBD" "bbbbbbbbbb", n);
    free(back);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_ascii_byte),
        cmocka_unit_test(exact_escapes),
        cmocka_unit_test(every_code_point),
        cmocka_unit_test(invalid_bytes_become_replacement),
        cmocka_unit_test(random_bytes_always_valid_json),
        cmocka_unit_test(special_byte_in_every_lane),
    };
    return cmocka_run_group_tests_name("json_write", tests, NULL, NULL);
}
