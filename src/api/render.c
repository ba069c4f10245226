/* render.c - see render.h. */
#include "api/render.h"

#include <string.h>

#include "util/json_write.h"
#include "util/timefmt.h"

/* Messages are written straight into room reserved once per message (or
 * once per page), not through a buf_append per token: rendering is most of
 * a page read's own CPU. The put_* helpers write at o and return the end. */
static char *put(char *o, const char *s, size_t n) {
    memcpy(o, s, n);
    return o + n;
}
#define PUT_LIT(o, lit) put((o), "" lit, sizeof(lit) - 1)

/* Writes "uuid" (38 bytes); needs one byte more, for uuid_format's NUL. */
static char *put_uuid(char *o, const uuid_t *u) {
    *o++ = '"';
    uuid_format(u, o);
    o[UUID_STR_LEN] = '"';
    return o + UUID_STR_LEN + 1;
}

/* Writes "time" (26 bytes); needs one byte more, for time_format_ms's NUL. */
static char *put_time(char *o, int64_t unix_ms) {
    *o++ = '"';
    time_format_ms(unix_ms, o);
    o[TIME_STR_LEN] = '"';
    return o + TIME_STR_LEN + 1;
}

/* The ids a page repeats in every message (its conversation, its two
 * participants), formatted once. */
typedef struct id_memo {
    int n;
    uuid_t id[3];
    char text[3][UUID_STR_LEN + 2]; /* with the quotes */
} id_memo_t;

static char *put_uuid_memo(char *o, const uuid_t *u, id_memo_t *memo) {
    if (!memo) return put_uuid(o, u);
    for (int i = 0; i < memo->n; i++)
        if (memcmp(&memo->id[i], u, sizeof *u) == 0) return put(o, memo->text[i], UUID_STR_LEN + 2);
    char *end = put_uuid(o, u);
    if (memo->n < 3) {
        memo->id[memo->n] = *u;
        memcpy(memo->text[memo->n++], o, UUID_STR_LEN + 2);
    }
    return end;
}

void render_uuid(buf_t *b, const uuid_t *u) {
    if (!buf_reserve(b, UUID_STR_LEN + 3)) return;
    b->len = (size_t)(put_uuid(b->data + b->len, u) - b->data);
    b->data[b->len] = '\0';
}

void render_time(buf_t *b, int64_t unix_ms) {
    if (!buf_reserve(b, TIME_STR_LEN + 3)) return;
    b->len = (size_t)(put_time(b->data + b->len, unix_ms) - b->data);
    b->data[b->len] = '\0';
}

/* The most render_message writes besides its content's escaped form:
 * field names, punctuation, four ids, a time, and the NUL slack. */
#define MESSAGE_FIXED                                                                                       \
    (sizeof("{\"message_id\":,\"conversation_id\":,\"sender_id\":,\"receiver_id\":,\"content\":,\"created_at\":}") + \
     4 * (UUID_STR_LEN + 2) + TIME_STR_LEN + 2 + 1)

static size_t message_room(const message_t *m) {
    return m->content_len > (SIZE_MAX - MESSAGE_FIXED - 2) / 6 ? SIZE_MAX
                                                                : MESSAGE_FIXED + JSON_ESCAPED_MAX_LEN(m->content_len);
}

static void message_to(buf_t *b, const message_t *m, id_memo_t *memo) {
    if (!buf_reserve(b, message_room(m))) return;
    char *o = b->data + b->len;
    o = PUT_LIT(o, "{\"message_id\":");
    o = put_uuid(o, &m->id);
    o = PUT_LIT(o, ",\"conversation_id\":");
    o = put_uuid_memo(o, &m->conversation_id, memo);
    o = PUT_LIT(o, ",\"sender_id\":");
    o = put_uuid_memo(o, &m->sender_id, memo);
    o = PUT_LIT(o, ",\"receiver_id\":");
    o = put_uuid_memo(o, &m->receiver_id, memo);
    o = PUT_LIT(o, ",\"content\":");
    o = json_escape_to(o, m->content, m->content_len);
    o = PUT_LIT(o, ",\"created_at\":");
    o = put_time(o, m->created_at_ms);
    *o++ = '}';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

void render_user(buf_t *b, const user_t *u) {
    buf_lit(b, "{\"user_id\":");
    render_uuid(b, &u->id);
    buf_lit(b, ",\"username\":");
    json_put_string(b, u->name, u->name_len);
    buf_putc(b, '}');
}

void render_message(buf_t *b, const message_t *m) { message_to(b, m, NULL); }

void render_message_page(buf_t *b, const message_t *items, size_t count, int limit, const char *next_cursor) {
    /* One allocation for the page: its exact worst case. */
    size_t room = 128;
    for (size_t i = 0; i < count && room != SIZE_MAX; i++) {
        size_t r = message_room(&items[i]);
        room = r > SIZE_MAX - room ? SIZE_MAX : room + r + 1;
    }
    if (room != SIZE_MAX) buf_reserve(b, room);
    id_memo_t memo = {.n = 0};
    render_page_begin(b, count, limit);
    for (size_t i = 0; i < count; i++) {
        if (i) buf_putc(b, ',');
        message_to(b, &items[i], &memo);
    }
    render_page_end(b, next_cursor);
}

static void render_last_content(buf_t *b, const conversation_t *c) {
    if (c->has_last_message) json_put_string(b, c->last_message_content, c->last_message_len);
    else buf_lit(b, "null");
}

void render_conversation_item(buf_t *b, const conversation_t *c) {
    buf_lit(b, "{\"conversation_id\":");
    render_uuid(b, &c->id);
    buf_lit(b, ",\"user1_id\":");
    render_uuid(b, &c->user1_id);
    buf_lit(b, ",\"user2_id\":");
    render_uuid(b, &c->user2_id);
    buf_lit(b, ",\"last_message_at\":");
    render_time(b, c->has_last_message ? c->last_message_at_ms : c->created_at_ms);
    buf_lit(b, ",\"last_message_content\":");
    render_last_content(b, c);
    buf_putc(b, '}');
}

void render_conversation_detail(buf_t *b, const conversation_t *c) {
    /* Participants in a stable order: the lower id first. */
    const uuid_t *u1 = &c->user1_id, *u2 = &c->user2_id;
    if (uuid_cmp(u1, u2) > 0) { const uuid_t *t = u1; u1 = u2; u2 = t; }
    buf_lit(b, "{\"conversation_id\":");
    render_uuid(b, &c->id);
    buf_lit(b, ",\"user1_id\":");
    render_uuid(b, u1);
    buf_lit(b, ",\"user2_id\":");
    render_uuid(b, u2);
    buf_lit(b, ",\"created_at\":");
    render_time(b, c->created_at_ms);
    buf_lit(b, ",\"last_message_at\":");
    if (c->has_last_message) render_time(b, c->last_message_at_ms);
    else buf_lit(b, "null");
    buf_lit(b, ",\"last_message_content\":");
    render_last_content(b, c);
    buf_lit(b, ",\"last_message_id\":");
    if (c->has_last_message) render_uuid(b, &c->last_message_id);
    else buf_lit(b, "null");
    buf_putc(b, '}');
}

void render_page_begin(buf_t *b, size_t count, int limit) {
    buf_lit(b, "{\"total\":");
    buf_put_i64(b, (long long)count);
    buf_lit(b, ",\"limit\":");
    buf_put_i64(b, limit);
    buf_lit(b, ",\"data\":[");
}

void render_page_end(buf_t *b, const char *next_cursor) {
    buf_lit(b, "],\"next_cursor\":");
    if (next_cursor) json_put_cstring(b, next_cursor);
    else buf_lit(b, "null");
    buf_putc(b, '}');
}
