/* conversations.c - GET /api/conversations/user/{id} (by recency, with a
 * position cursor) and GET /api/conversations/{id}. */
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "model/cursor.h"

typedef struct conv_list_state {
    int limit;
} conv_list_state_t;

static void on_list(void *ctx, int err, const store_conv_page_t *page) {
    http_request_t *req = ctx;
    if (err) {
        respond_store_error(req, err, "User not found");
        return;
    }
    const conv_list_state_t *st = (void *)api_call(req)->state;
    buf_t b;
    buf_init(&b);
    render_page_begin(&b, page->count, st->limit);
    for (size_t i = 0; i < page->count; i++) {
        if (i) buf_putc(&b, ',');
        render_conversation_item(&b, &page->items[i]);
    }
    char cursor[CONV_CURSOR_LEN + 1];
    bool has_next = page->more && page->count;
    if (has_next) {
        const conversation_t *last = &page->items[page->count - 1];
        conv_cursor_format(last->activity, &last->id, cursor);
    }
    render_page_end(&b, has_next ? cursor : NULL);
    http_respond_json(req, 200, &b);
}

void handle_conversations_page(http_request_t *req, void *app, const http_params_t *p) {
    api_t *api = app;
    input_err_t e;
    store_conv_query_t q;
    memset(&q, 0, sizeof q);
    if (input_path_uuid(p, 0, "user_id", &q.user_id, &e) || input_limit(req, &q.limit, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    const api_call_t *call = api_call(req);
    if (call->has_caller && uuid_cmp(&call->caller, &q.user_id) != 0) {
        http_respond_error(req, 404, "User not found"); /* another user's list: not for the caller to see */
        return;
    }
    const char *cur = http_request_query(req, "before_conversation_id");
    if (cur) {
        cursor_kind_t kind = conv_cursor_parse(cur, strlen(cur), &q.cursor_activity, &q.cursor_id);
        if (kind == CURSOR_INVALID) {
            http_respond_error(req, 422, "before_conversation_id: not a cursor from next_cursor, nor a conversation id");
            return;
        }
        q.has_cursor = true;
        q.cursor_is_id = kind == CURSOR_BARE_ID;
    }
    conv_list_state_t *st = (void *)api_call(req)->state;
    st->limit = q.limit;
    store_conversations_list(api->store, &q, on_list, req);
}

static void on_conversation(void *ctx, int err, const conversation_t *c) {
    http_request_t *req = ctx;
    if (!err && !api_may_read(api_call(req), c)) err = STORE_ENOTFOUND;
    if (err) {
        respond_store_error(req, err, "Conversation not found");
        return;
    }
    buf_t b;
    buf_init(&b);
    render_conversation_detail(&b, c);
    http_respond_json(req, 200, &b);
}

void handle_conversation_get(http_request_t *req, void *app, const http_params_t *p) {
    api_t *api = app;
    input_err_t e;
    uuid_t id;
    if (input_path_uuid(p, 0, "conversation_id", &id, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    store_conversation_get(api->store, &id, on_conversation, req);
}
