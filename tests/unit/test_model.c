/* The domain rules: conversation ids, validation, cursors, time format. */
#include <string.h>

#include "model/cursor.h"
#include "model/model.h"
#include "unit.h"
#include "util/timefmt.h"

static void conv_id_vector(const char *a, const char *b, const char *want) {
    uuid_t ua, ub, c;
    char out[UUID_STR_LEN + 1];
    assert_int_equal(uuid_parse(&ua, a, 36), 0);
    assert_int_equal(uuid_parse(&ub, b, 36), 0);
    conversation_id_derive(&ua, &ub, &c);
    uuid_format(&c, out);
    assert_string_equal(out, want);
    conversation_id_derive(&ub, &ua, &c); /* order of the two users does not matter */
    uuid_format(&c, out);
    assert_string_equal(out, want);
}

static void conversation_id_vectors(void **state) {
    (void)state;
    const char *u1 = "11111111-1111-1111-1111-111111111111", *u2 = "22222222-2222-2222-2222-222222222222",
               *u3 = "33333333-3333-3333-3333-333333333333";
    conv_id_vector(u1, u2, "70030948-bb89-9933-eaf8-ac47c88cbaff");
    conv_id_vector(u1, u3, "6fd01fcd-2566-e1aa-5733-840ab194d15a");
    conv_id_vector(u2, u3, "bf2359f9-c0dd-21fe-d1dc-cdb4a1ae30ba");
    /* Uppercase input is the same user. */
    conv_id_vector("AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE", u2, "248d0122-7042-80f4-6c00-90a8a043721b");
}

static void utf8_validation(void **state) {
    (void)state;
    assert_true(utf8_valid("", 0));
    assert_true(utf8_valid("plain", 5));
    assert_true(utf8_valid("\xC3\xA9", 2));           /* é */
    assert_true(utf8_valid("\xE2\x82\xAC", 3));       /* € */
    assert_true(utf8_valid("\xF0\x9F\x98\x80", 4));   /* 😀 */
    assert_true(utf8_valid("\xF4\x8F\xBF\xBF", 4));   /* U+10FFFF */
    assert_true(utf8_valid("a\0b", 3));               /* NUL is valid UTF-8 */
    assert_false(utf8_valid("\xC0\xAF", 2));          /* overlong */
    assert_false(utf8_valid("\xE0\x80\xAF", 3));      /* overlong */
    assert_false(utf8_valid("\xED\xA0\x80", 3));      /* surrogate */
    assert_false(utf8_valid("\xF4\x90\x80\x80", 4));  /* > U+10FFFF */
    assert_false(utf8_valid("\xC3", 1));              /* truncated */
    assert_false(utf8_valid("\xE2\x82", 2));
    assert_false(utf8_valid("\x80", 1));              /* lone continuation */
    assert_false(utf8_valid("\xFF", 1));
}

static void username_rules(void **state) {
    (void)state;
    assert_null(username_check("alice", 5));
    assert_non_null(username_check("", 0));
    assert_non_null(username_check("a\nb", 3));
    assert_non_null(username_check("a\x7f", 2));
    assert_non_null(username_check("a\xC2\x85", 3)); /* U+0085, a C1 control */
    assert_non_null(username_check("a\0b", 3));
    assert_non_null(username_check("\xFF", 1));
    char name[4 * 65];
    for (int i = 0; i < 64; i++) memcpy(name + 4 * i, "\xF0\x9F\x98\x80", 4);
    assert_null(username_check(name, 4 * 64));      /* 64 characters, 256 bytes */
    memcpy(name + 4 * 64, "\xF0\x9F\x98\x80", 4);
    assert_non_null(username_check(name, 4 * 65));  /* 65 characters */
}

static void username_folding(void **state) {
    (void)state;
    char out[16];
    username_fold("AliCE-Z_\xC3\x89", 10, out);
    assert_memory_equal(out, "alice-z_\xC3\x89", 10); /* non-ASCII bytes kept */
}

static void content_rules(void **state) {
    (void)state;
    char big[4097];
    memset(big, 'A', sizeof big);
    assert_null(content_check("", 0, 4096));
    assert_null(content_check(big, 4096, 4096));
    assert_non_null(content_check(big, 4097, 4096));
    assert_non_null(content_check("\xC3", 1, 4096));
    assert_null(content_check("tab\tnew\nline", 13, 4096));
    assert_null(client_message_id_check("k", 1));
    assert_non_null(client_message_id_check("", 0));
    assert_non_null(client_message_id_check(big, 129));
}

static void cursor_round_trip(void **state) {
    (void)state;
    uuid_t id, back;
    uuid_parse(&id, "70030948-bb89-9933-eaf8-ac47c88cbaff", 36);
    char s[CONV_CURSOR_LEN + 1];
    conv_cursor_format(0x01ee8f3c2a7d1234ULL, &id, s);
    assert_string_equal(s, "01ee8f3c2a7d1234.70030948-bb89-9933-eaf8-ac47c88cbaff");
    uint64_t act = 0;
    assert_int_equal(conv_cursor_parse(s, strlen(s), &act, &back), CURSOR_POSITION);
    assert_true(act == 0x01ee8f3c2a7d1234ULL);
    assert_memory_equal(&id, &back, 16);
    assert_int_equal(conv_cursor_parse(s + 17, 36, &act, &back), CURSOR_BARE_ID);
    const char *bad[] = {"", "x", "01ee8f3c2a7d1234-70030948-bb89-9933-eaf8-ac47c88cbaff",
                         "01ee8f3c2a7d123g.70030948-bb89-9933-eaf8-ac47c88cbaff",
                         "01ee8f3c2a7d1234.70030948-bb89-9933-eaf8-ac47c88cbafg",
                         "1ee8f3c2a7d1234.70030948-bb89-9933-eaf8-ac47c88cbaff"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(conv_cursor_parse(bad[i], strlen(bad[i]), &act, &back), CURSOR_INVALID);
}

static void time_format(void **state) {
    (void)state;
    char s[TIME_STR_LEN + 1];
    time_format_ms(0, s);
    assert_string_equal(s, "1970-01-01T00:00:00.000Z");
    time_format_ms(1704067200123LL, s);
    assert_string_equal(s, "2024-01-01T00:00:00.123Z");
    time_format_ms(951782400000LL - 1, s); /* the day before 2000-02-29 ends */
    assert_string_equal(s, "2000-02-28T23:59:59.999Z");
    time_format_ms(951782400000LL, s);
    assert_string_equal(s, "2000-02-29T00:00:00.000Z");
    time_format_ms(-1, s);
    assert_string_equal(s, "1969-12-31T23:59:59.999Z");
    time_format_ms(INT64_MAX, s);
    assert_string_equal(s, "9999-12-31T23:59:59.999Z");
    time_format_ms(INT64_MIN, s);
    assert_string_equal(s, "0000-01-01T00:00:00.000Z");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(conversation_id_vectors),
        cmocka_unit_test(utf8_validation),
        cmocka_unit_test(username_rules),
        cmocka_unit_test(username_folding),
        cmocka_unit_test(content_rules),
        cmocka_unit_test(cursor_round_trip),
        cmocka_unit_test(time_format),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
