/* fuzz_input.c - what a client sends, through src/api/input.c and the model's
 * parsers, mostly differentially:
 *
 *  - the input as a request body: input_json_object() (our flat-object fast
 *    path, else jansson) accepts exactly what json_loadb(JSON_ALLOW_NUL |
 *    JSON_REJECT_DUPLICATES) accepts as an object (input.h's contract), with
 *    an equal value; input_parse_flat(), when it
 *    answers, agrees with jansson. Then the readers the handlers use:
 *    input_send (POST /api/messages/), input_uuid (sender_id), input_string /
 *    input_optional_string and the username / password checks (POST
 *    /api/users, /api/auth/login), each checked against its documented rule;
 *  - the input as a query or path value: input_limit_value against its rule
 *    (plain digits, 1..100), uuid_parse against a reference parser and
 *    uuid_format (round trip), input_timeuuid (the before/after cursors and
 *    Last-Event-ID, which src/api/sse.c reads as uuid_parse + version 1),
 *    conv_cursor_parse against its grammar and conv_cursor_format;
 *  - the validators: utf8_valid against jansson's UTF-8 check, content_check,
 *    client_message_id_check, username_check. */
#include <ctype.h>
#include <jansson.h>
#include <string.h>

#include "api/input.h"
#include "auth/password.h"
#include "fuzz_common.h"
#include "model/cursor.h"
#include "model/model.h"

#define MAX_CONTENT 4096

/* ---- reference parsers: the grammar, written for clarity, not speed ---- */

static int ref_hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (unsigned char)tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 8-4-4-4-12 hex digits, either case. */
static bool ref_uuid(const char *s, size_t len, uint8_t out[16]) {
    if (len != UUID_STR_LEN) return false;
    int nib = 0;
    for (size_t i = 0; i < len; i++) {
        bool dash_here = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash_here) {
            if (s[i] != '-') return false;
            continue;
        }
        int v = ref_hex((unsigned char)s[i]);
        if (v < 0) return false;
        if (nib % 2 == 0) out[nib / 2] = (uint8_t)(v << 4);
        else out[nib / 2] |= (uint8_t)v;
        nib++;
    }
    return nib == 32;
}

static void lower(const char *s, size_t len, char *out) {
    for (size_t i = 0; i < len; i++) out[i] = (char)tolower((unsigned char)s[i]);
}

static void check_uuid(const char *s, size_t len) {
    uuid_t u = {{0}}, before;
    memset(before.b, 0x5A, 16);
    u = before;
    uint8_t ref[16];
    bool want = ref_uuid(s, len, ref);
    int rc = uuid_parse(&u, s, len);
    FUZZ_CHECK((rc == 0) == want);
    if (!want) {
        FUZZ_CHECK(memcmp(u.b, before.b, 16) == 0); /* left alone on failure */
        return;
    }
    FUZZ_CHECK(memcmp(u.b, ref, 16) == 0);
    char out[UUID_STR_LEN + 1], low[UUID_STR_LEN];
    uuid_format(&u, out);
    lower(s, len, low);
    FUZZ_CHECK(memcmp(out, low, UUID_STR_LEN) == 0 && out[UUID_STR_LEN] == '\0');

    /* Message ids (before/after_message_id, Last-Event-ID): version 1. */
    input_err_t e;
    uuid_t t;
    int trc = input_timeuuid("Last-Event-ID", s, len, &t, &e);
    FUZZ_CHECK((trc == 0) == ((ref[6] >> 4) == 1));
}

static void check_limit(const char *s, size_t len) {
    bool digits = len >= 1 && len <= 3;
    int v = 0;
    for (size_t i = 0; digits && i < len; i++) {
        digits = s[i] >= '0' && s[i] <= '9';
        v = v * 10 + (s[i] - '0');
    }
    bool want = digits && v >= 1 && v <= 100;
    int limit = -1;
    input_err_t e;
    int rc = input_limit_value(s, len, &limit, &e);
    FUZZ_CHECK((rc == 0) == want);
    if (want) FUZZ_CHECK(limit == v);
    else FUZZ_CHECK(strlen(e.detail) < sizeof e.detail && strncmp(e.detail, "limit: ", 7) == 0);
}

/* "<16 hex>.<uuid>" or a bare uuid. */
static void check_cursor(const char *s, size_t len) {
    uint64_t act = 0;
    uuid_t id;
    uint8_t ref[16];
    cursor_kind_t k = conv_cursor_parse(s, len, &act, &id);
    if (len == UUID_STR_LEN) {
        FUZZ_CHECK((k == CURSOR_BARE_ID) == ref_uuid(s, len, ref));
        FUZZ_CHECK(k == CURSOR_BARE_ID || k == CURSOR_INVALID);
        return;
    }
    bool want = len == CONV_CURSOR_LEN && s[16] == '.' && ref_uuid(s + 17, UUID_STR_LEN, ref);
    for (size_t i = 0; want && i < 16; i++) want = ref_hex((unsigned char)s[i]) >= 0;
    FUZZ_CHECK((k == CURSOR_POSITION) == want);
    if (!want) {
        FUZZ_CHECK(k == CURSOR_INVALID);
        return;
    }
    char out[CONV_CURSOR_LEN + 1], low[CONV_CURSOR_LEN];
    conv_cursor_format(act, &id, out);
    lower(s, len, low);
    FUZZ_CHECK(memcmp(out, low, CONV_CURSOR_LEN) == 0);
}

static void check_text(const char *s, size_t len) {
    /* jansson checks UTF-8 the same way (no overlongs, no surrogates, at
     * most U+10FFFF), NULs allowed. */
    json_t *j = json_stringn(s, len);
    bool valid = utf8_valid(s, len);
    FUZZ_CHECK(valid == (j != NULL));
    json_decref(j);
    const char *c = content_check(s, len, MAX_CONTENT);
    FUZZ_CHECK((c == NULL) == (valid && len <= MAX_CONTENT));
    const char *k = client_message_id_check(s, len);
    FUZZ_CHECK((k == NULL) == (valid && len >= 1 && len <= CLIENT_MESSAGE_ID_MAX));
    const char *u = username_check(s, len);
    if (!u) FUZZ_CHECK(valid && len >= 1 && len <= 4 * USERNAME_MAX);
    (void)password_check(s, len);
}

/* ---- the body ---- */

static void check_send(json_t *obj) {
    store_send_t s;
    memset(&s, 0, sizeof s);
    memset(s.sender_id.b, 0x11, 16);
    input_err_t e;
    if (input_send(obj, MAX_CONTENT, &s, &e) != 0) {
        FUZZ_CHECK(strlen(e.detail) < sizeof e.detail && e.detail[0] != '\0');
        return;
    }
    /* Everything accepted obeys the documented rules. */
    json_t *r = json_object_get(obj, "receiver_id"), *c = json_object_get(obj, "content");
    FUZZ_CHECK(json_is_string(r) && json_is_string(c));
    uint8_t ref[16];
    FUZZ_CHECK(ref_uuid(json_string_value(r), json_string_length(r), ref));
    FUZZ_CHECK(memcmp(ref, s.receiver_id.b, 16) == 0 && uuid_cmp(&s.receiver_id, &s.sender_id) != 0);
    FUZZ_CHECK(s.content_len <= MAX_CONTENT && utf8_valid(s.content, s.content_len));
    if (s.client_message_id)
        FUZZ_CHECK(s.client_message_id_len >= 1 && s.client_message_id_len <= CLIENT_MESSAGE_ID_MAX);
}

static void check_readers(json_t *obj) {
    input_err_t e;
    const char *str;
    size_t len;
    uuid_t u;
    check_send(obj);
    if (input_uuid(obj, "sender_id", &u, &e) == 0) {
        const char *v = json_string_value(json_object_get(obj, "sender_id"));
        FUZZ_CHECK(v != NULL);
    }
    if (input_string(obj, "username", &str, &len, &e) == 0) {
        FUZZ_CHECK(len == json_string_length(json_object_get(obj, "username")));
        (void)username_check(str, len);
    }
    if (input_optional_string(obj, "password", &str, &len, &e) == 0 && str) (void)password_check(str, len);
}

static void check_body(const uint8_t *data, size_t size) {
    char *body = fuzz_dup(data, size, 0);
    json_error_t jerr;
    /* The contract of input.h: a JSON object, NULs allowed, each key once. */
    json_t *ref = json_loadb(body, size, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    bool ref_ok = ref && json_is_object(ref);
    json_t *flat = input_parse_flat(body, size);
    if (flat) FUZZ_CHECK(ref_ok && json_equal(flat, ref));
    json_decref(flat);

    json_t *got = NULL;
    input_err_t e;
    int rc = input_json_object(body, size, &got, &e);
    FUZZ_CHECK((rc == 0) == ref_ok);
    if (rc == 0) {
        FUZZ_CHECK(json_equal(got, ref));
        check_readers(got);
        json_decref(got);
    } else {
        FUZZ_CHECK(got == NULL && strlen(e.detail) < sizeof e.detail);
    }
    json_decref(ref);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    check_body(data, size);
    char *s = fuzz_dup(data, size, 0);
    check_uuid(s, size);
    check_limit(s, size);
    check_cursor(s, size);
    check_text(s, size);
    free(s);
    return 0;
}
