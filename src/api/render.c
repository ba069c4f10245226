/* render.c - see render.h. */
#include "api/render.h"

#include "util/json_write.h"
#include "util/timefmt.h"

void render_uuid(buf_t *b, const uuid_t *u) {
    char s[UUID_STR_LEN + 3];
    s[0] = '"';
    uuid_format(u, s + 1);
    s[UUID_STR_LEN + 1] = '"';
    buf_append(b, s, UUID_STR_LEN + 2);
}

void render_time(buf_t *b, int64_t unix_ms) {
    char s[TIME_STR_LEN + 3];
    s[0] = '"';
    time_format_ms(unix_ms, s + 1);
    s[TIME_STR_LEN + 1] = '"';
    buf_append(b, s, TIME_STR_LEN + 2);
}

void render_user(buf_t *b, const user_t *u) {
    buf_lit(b, "{\"user_id\":");
    render_uuid(b, &u->id);
    buf_lit(b, ",\"username\":");
    json_put_string(b, u->name, u->name_len);
    buf_putc(b, '}');
}

void render_message(buf_t *b, const message_t *m) {
    buf_lit(b, "{\"message_id\":");
    render_uuid(b, &m->id);
    buf_lit(b, ",\"conversation_id\":");
    render_uuid(b, &m->conversation_id);
    buf_lit(b, ",\"sender_id\":");
    render_uuid(b, &m->sender_id);
    buf_lit(b, ",\"receiver_id\":");
    render_uuid(b, &m->receiver_id);
    buf_lit(b, ",\"content\":");
    json_put_string(b, m->content, m->content_len);
    buf_lit(b, ",\"created_at\":");
    render_time(b, m->created_at_ms);
    buf_putc(b, '}');
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
