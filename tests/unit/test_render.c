/* The API's JSON shapes (api/render.h), byte for byte: users, messages,
 * pages of messages, conversations listed and on their own, and the page
 * frame. Strings as json_write.h promises (pure ASCII: quotes, backslashes,
 * control characters and DEL escaped, non-ASCII as \uXXXX with surrogate
 * pairs, malformed UTF-8 as U+FFFD), empty strings, and the longest fields
 * the API accepts (a 64-character username of 4-byte characters; content up
 * to the 1 MiB bound of max_content_bytes, every byte escaped). Every render_
 * function appends to what the buffer holds. */
#include <stdlib.h>
#include <string.h>

#include "api/render.h"
#include "unit.h"

#define ID_A "00112233-4455-6677-8899-aabbccddeeff"
#define ID_B "0a000000-0000-4000-8000-00000000000b"
#define ID_C "0c000000-0000-4000-8000-00000000000c"
#define ID_D "0d000000-0000-4000-8000-00000000000d"
#define ID_E "0a000000-0000-4000-8000-00000000000e" /* ID_B but for its last byte */
#define ID_M "8e1b9a40-07b7-11ef-8000-000000000001"
#define T_MS 1714566896789LL /* 2024-05-01T12:34:56.789Z */
#define T_STR "2024-05-01T12:34:56.789Z"
#define T2_MS 1714566900000LL
#define T2_STR "2024-05-01T12:35:00.000Z"

static uuid_t id(const char *s) {
    uuid_t u;
    assert_int_equal(uuid_parse(&u, s, strlen(s)), 0);
    return u;
}

/* b holds exactly want (and its NUL), and no allocation failed. */
static void expect_buf(const buf_t *b, const char *want) {
    assert_true(buf_ok(b));
    assert_string_equal(b->data, want);
    assert_int_equal(b->len, strlen(want));
}

/* want becomes head, unit n times, then tail. */
static void repeated(buf_t *want, const char *head, const char *unit, size_t n, const char *tail) {
    buf_init(want);
    buf_puts(want, head);
    for (size_t i = 0; i < n; i++) buf_puts(want, unit);
    buf_puts(want, tail);
    assert_true(buf_ok(want));
}

static message_t message(const char *content, size_t len) {
    return (message_t){.id = id(ID_M), .conversation_id = id(ID_C), .sender_id = id(ID_A),
                       .receiver_id = id(ID_B), .created_at_ms = T_MS, .content = content,
                       .content_len = len};
}

#define MESSAGE_HEAD                                                                                       \
    "{\"message_id\":\"" ID_M "\",\"conversation_id\":\"" ID_C "\",\"sender_id\":\"" ID_A              \
    "\",\"receiver_id\":\"" ID_B "\",\"content\":"
#define MESSAGE_TAIL ",\"created_at\":\"" T_STR "\"}"

static void uuid_and_time(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_lit(&b, "id=");
    uuid_t u = id("00112233-4455-6677-8899-AABBCCDDEEFF");
    render_uuid(&b, &u);
    expect_buf(&b, "id=\"" ID_A "\"");
    buf_reset(&b);
    render_time(&b, T_MS);
    buf_putc(&b, ' ');
    render_time(&b, 0);
    buf_putc(&b, ' ');
    render_time(&b, TIME_MS_MAX);
    expect_buf(&b, "\"" T_STR "\" \"1970-01-01T00:00:00.000Z\" \"2200-01-01T00:00:00.000Z\"");
    buf_free(&b);
}

static void user_exact(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    user_t u = {.id = id(ID_A), .name = "alice", .name_len = 5, .password_hash = "$argon2id$secret",
                .password_hash_len = 16};
    buf_lit(&b, "[");
    render_user(&b, &u);
    expect_buf(&b, "[{\"user_id\":\"" ID_A "\",\"username\":\"alice\"}"); /* never the hash */
    buf_reset(&b);
    u.name = "";
    u.name_len = 0;
    render_user(&b, &u);
    expect_buf(&b, "{\"user_id\":\"" ID_A "\",\"username\":\"\"}");
    buf_free(&b);
}

static void user_escaping(void **state) {
    (void)state;
    /* quote, backslash, slash, controls, DEL, e-acute, U+2028, an emoji,
     * a stray continuation byte, a NUL */
    static const char name[] = "a\"b\\c/\n\t\x01\x1f\x7f\xC3\xA9\xE2\x80\xA8\xF0\x9F\x98\x80\x80z\0!";
    buf_t b;
    buf_init(&b);
    user_t u = {.id = id(ID_A), .name = name, .name_len = sizeof name - 1};
    render_user(&b, &u);
    expect_buf(&b, "{\"user_id\":\"" ID_A "\",\"username\":"
                   "\"a\\\"b\\\\c/\\n\\t\\u0001\\u001f\\u007f\\u00e9\\u2028\\ud83d\\ude00\\ufffdz\\u0000!\"}");
    buf_free(&b);
}

/* USERNAME_MAX characters, each as long as UTF-8 goes: 64 surrogate pairs. */
static void user_longest_name(void **state) {
    (void)state;
    char name[USERNAME_MAX * 4];
    for (int i = 0; i < USERNAME_MAX; i++) memcpy(name + 4 * i, "\xF0\x9F\x98\x80", 4);
    buf_t want;
    repeated(&want, "{\"user_id\":\"" ID_A "\",\"username\":\"", "\\ud83d\\ude00", USERNAME_MAX, "\"}");
    buf_t b;
    buf_init(&b);
    user_t u = {.id = id(ID_A), .name = name, .name_len = sizeof name};
    render_user(&b, &u);
    expect_buf(&b, want.data);
    buf_free(&b);
    buf_free(&want);
}

static void message_exact(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_lit(&b, "x");
    message_t m = message("hello", 5);
    render_message(&b, &m);
    expect_buf(&b, "x" MESSAGE_HEAD "\"hello\"" MESSAGE_TAIL);
    buf_reset(&b);
    m = message("", 0);
    render_message(&b, &m);
    expect_buf(&b, MESSAGE_HEAD "\"\"" MESSAGE_TAIL);
    buf_free(&b);
}

static void message_escaping(void **state) {
    (void)state;
    static const char content[] = "say \"hi\"\\\b\f\n\r\t\0end \xC3\xA9 \xF0\x9F\x98\x80 \xFF\xC3 \xED\xA0\x80";
    buf_t b;
    buf_init(&b);
    message_t m = message(content, sizeof content - 1);
    render_message(&b, &m);
    expect_buf(&b, MESSAGE_HEAD
               "\"say \\\"hi\\\"\\\\\\b\\f\\n\\r\\t\\u0000end \\u00e9 \\ud83d\\ude00 \\ufffd\\ufffd "
               "\\ufffd\\ufffd\\ufffd\"" MESSAGE_TAIL);
    buf_free(&b);
}

/* Content of len bytes, every one of which renders as `esc`. */
static void expect_worst_content(unsigned char byte, const char *esc, size_t len) {
    char *content = malloc(len);
    assert_non_null(content);
    memset(content, byte, len);
    buf_t want;
    repeated(&want, MESSAGE_HEAD "\"", esc, len, "\"" MESSAGE_TAIL);
    buf_t b;
    buf_init(&b);
    message_t m = message(content, len);
    render_message(&b, &m);
    assert_true(buf_ok(&b));
    assert_int_equal(b.len, want.len);
    assert_memory_equal(b.data, want.data, want.len);
    assert_int_equal(b.data[b.len], '\0');
    buf_free(&b);
    buf_free(&want);
    free(content);
}

/* The longest content the configuration allows, each byte at its longest
 * escaped form (a control character; a malformed byte); and the default
 * 4096 bytes as 4-byte characters. */
static void message_longest_content(void **state) {
    (void)state;
    expect_worst_content(0x01, "\\u0001", (size_t)1 << 20);
    expect_worst_content(0xFF, "\\ufffd", (size_t)1 << 20);

    char content[4096];
    for (size_t i = 0; i < sizeof content; i += 4) memcpy(content + i, "\xF0\x9F\x98\x80", 4);
    buf_t want;
    repeated(&want, MESSAGE_HEAD "\"", "\\ud83d\\ude00", sizeof content / 4, "\"" MESSAGE_TAIL);
    buf_t b;
    buf_init(&b);
    message_t m = message(content, sizeof content);
    render_message(&b, &m);
    expect_buf(&b, want.data);
    buf_free(&b);
    buf_free(&want);
}

static void message_page_exact(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    render_message_page(&b, NULL, 0, 20, NULL);
    expect_buf(&b, "{\"total\":0,\"limit\":20,\"data\":[],\"next_cursor\":null}");
    buf_reset(&b);
    message_t m[2] = {message("one", 3), message("two", 3)};
    m[1].id = id(ID_D);
    m[1].sender_id = id(ID_B); /* the reply: participants swapped */
    m[1].receiver_id = id(ID_A);
    m[1].created_at_ms = T2_MS;
    buf_lit(&b, "page:");
    render_message_page(&b, m, 2, 50, "Y3Vyc29y");
    expect_buf(&b, "page:{\"total\":2,\"limit\":50,\"data\":[" MESSAGE_HEAD "\"one\"" MESSAGE_TAIL
                   ",{\"message_id\":\"" ID_D "\",\"conversation_id\":\"" ID_C "\",\"sender_id\":\"" ID_B
                   "\",\"receiver_id\":\"" ID_A "\",\"content\":\"two\",\"created_at\":\"" T2_STR
                   "\"}],\"next_cursor\":\"Y3Vyc29y\"}");
    buf_free(&b);
}

/* A page renders each message as render_message does, whatever ids repeat
 * (the page formats repeated ids once): more distinct ids than it keeps,
 * ids that come back in another field, and one id in every field. */
static void message_page_ids(void **state) {
    (void)state;
    const char *ids[] = {ID_A, ID_B, ID_C, ID_D, ID_E, ID_M};
    message_t m[12];
    for (size_t i = 0; i < 12; i++) {
        m[i] = message("x", 1);
        m[i].conversation_id = id(ids[i % 6]);
        m[i].sender_id = id(ids[(i + 1) % 6]);
        m[i].receiver_id = id(ids[(i * 5 + 4) % 6]);
        m[i].id = id(ids[(i * 2) % 6]);
        m[i].created_at_ms = T_MS + (int64_t)i;
    }
    m[11].conversation_id = m[11].sender_id = m[11].receiver_id = m[11].id;
    buf_t want;
    buf_init(&want);
    render_page_begin(&want, 12, 12);
    for (size_t i = 0; i < 12; i++) {
        if (i) buf_putc(&want, ',');
        render_message(&want, &m[i]);
    }
    render_page_end(&want, NULL);
    buf_t b;
    buf_init(&b);
    render_message_page(&b, m, 12, 12, NULL);
    expect_buf(&b, want.data);
    buf_free(&b);
    buf_free(&want);
}

/* Without a message, last_message_at_ms still holds a time: what a
 * conversation shows then is its creation time, whatever that field says. */
static conversation_t conversation(bool with_message) {
    /* user1 is the user asked about: here the higher id */
    return (conversation_t){.id = id(ID_C), .user1_id = id(ID_B), .user2_id = id(ID_A),
                            .created_at_ms = T_MS, .has_last_message = with_message,
                            .last_message_id = id(ID_M), .last_message_at_ms = T2_MS,
                            .last_message_content = with_message ? "see \"you\"\n" : NULL,
                            .last_message_len = with_message ? 10 : 0, .activity = 42};
}

/* Listed for one user: user1 stays that user; no message yet shows the
 * creation time and a null content. */
static void conversation_item_exact(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    conversation_t c = conversation(true);
    buf_lit(&b, ",");
    render_conversation_item(&b, &c);
    expect_buf(&b, ",{\"conversation_id\":\"" ID_C "\",\"user1_id\":\"" ID_B "\",\"user2_id\":\"" ID_A
                   "\",\"last_message_at\":\"" T2_STR "\",\"last_message_content\":\"see \\\"you\\\"\\n\"}");
    buf_reset(&b);
    c = conversation(false);
    render_conversation_item(&b, &c);
    expect_buf(&b, "{\"conversation_id\":\"" ID_C "\",\"user1_id\":\"" ID_B "\",\"user2_id\":\"" ID_A
                   "\",\"last_message_at\":\"" T_STR "\",\"last_message_content\":null}");
    buf_reset(&b);
    c = conversation(true);
    c.last_message_content = "";
    c.last_message_len = 0;
    render_conversation_item(&b, &c);
    expect_buf(&b, "{\"conversation_id\":\"" ID_C "\",\"user1_id\":\"" ID_B "\",\"user2_id\":\"" ID_A
                   "\",\"last_message_at\":\"" T2_STR "\",\"last_message_content\":\"\"}");
    buf_free(&b);
}

/* On its own: the lower id first whichever way it is given; no message
 * yet is three nulls. */
static void conversation_detail_exact(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    conversation_t c = conversation(true);
    render_conversation_detail(&b, &c);
    const char *with =
        "{\"conversation_id\":\"" ID_C "\",\"user1_id\":\"" ID_A "\",\"user2_id\":\"" ID_B
        "\",\"created_at\":\"" T_STR "\",\"last_message_at\":\"" T2_STR
        "\",\"last_message_content\":\"see \\\"you\\\"\\n\",\"last_message_id\":\"" ID_M "\"}";
    expect_buf(&b, with);
    buf_reset(&b);
    c.user1_id = id(ID_A);
    c.user2_id = id(ID_B);
    render_conversation_detail(&b, &c);
    expect_buf(&b, with);
    buf_reset(&b);
    c = conversation(false);
    buf_lit(&b, "=");
    render_conversation_detail(&b, &c);
    expect_buf(&b, "={\"conversation_id\":\"" ID_C "\",\"user1_id\":\"" ID_A "\",\"user2_id\":\"" ID_B
                   "\",\"created_at\":\"" T_STR
                   "\",\"last_message_at\":null,\"last_message_content\":null,\"last_message_id\":null}");
    buf_free(&b);
}

/* The frame the caller fills; the cursor is a string like any other. */
static void page_frame(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    render_page_begin(&b, 3, 100);
    buf_lit(&b, "1,2,3");
    render_page_end(&b, NULL);
    expect_buf(&b, "{\"total\":3,\"limit\":100,\"data\":[1,2,3],\"next_cursor\":null}");
    buf_reset(&b);
    render_page_begin(&b, 0, 1);
    render_page_end(&b, "a\"b\\c\x01\xC3\xA9");
    expect_buf(&b, "{\"total\":0,\"limit\":1,\"data\":[],\"next_cursor\":\"a\\\"b\\\\c\\u0001\\u00e9\"}");
    buf_reset(&b);
    render_page_begin(&b, 0, 0);
    render_page_end(&b, "");
    expect_buf(&b, "{\"total\":0,\"limit\":0,\"data\":[],\"next_cursor\":\"\"}");
    buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(uuid_and_time),
        cmocka_unit_test(user_exact),
        cmocka_unit_test(user_escaping),
        cmocka_unit_test(user_longest_name),
        cmocka_unit_test(message_exact),
        cmocka_unit_test(message_escaping),
        cmocka_unit_test(message_longest_content),
        cmocka_unit_test(message_page_exact),
        cmocka_unit_test(message_page_ids),
        cmocka_unit_test(conversation_item_exact),
        cmocka_unit_test(conversation_detail_exact),
        cmocka_unit_test(page_frame),
    };
    return cmocka_run_group_tests_name("render", tests, NULL, NULL);
}
