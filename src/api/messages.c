/* messages.c - sending (POST /api/messages/, .../send) and reading
 * (GET /api/messages/conversation/{id}[/before]) messages. */
#include <stdio.h>
#include <string.h>

#include "api/handlers.h"
#include "api/input.h"
#include "api/render.h"
#include "util/log.h"

static void on_sent(void *ctx, int err, const message_t *m, bool replayed) {
    http_request_t *req = ctx;
    if (err == STORE_ECONFLICT) {
        http_respond_error(req, 409, "client_message_id was already used for a different message");
        return;
    }
    if (err) {
        respond_store_error(req, err, "User not found");
        return;
    }
    if (log_enabled(LOG_DEBUG)) {
        char id[UUID_STR_LEN + 1];
        uuid_format(&m->id, id);
        log_debug("api", "req=%s message %s %s", http_request_id(req), id, replayed ? "replayed" : "stored");
    }
    if (!replayed) events_publish_message(api_call(req)->api, m);
    buf_t b;
    buf_init(&b);
    render_message(&b, m);
    http_respond_json(req, replayed ? 200 : 201, &b);
}

/* The sender: the caller when there is one (sender_id, if given, must be
 * the caller), else the body's sender_id. */
static int sender_of(const api_call_t *call, json_t *body, uuid_t *out, unsigned *status, input_err_t *e) {
    *status = 422;
    if (!call->has_caller) return input_uuid(body, "sender_id", out, e);
    json_t *given = json_object_get(body, "sender_id");
    if (given && !json_is_null(given)) {
        uuid_t id;
        if (input_uuid(body, "sender_id", &id, e)) return -1;
        if (uuid_cmp(&id, &call->caller) != 0) {
            *status = 403;
            snprintf(e->detail, sizeof e->detail, "sender_id must be the authenticated user");
            return -1;
        }
    }
    *out = call->caller;
    return 0;
}

void handle_message_send(http_request_t *req, void *app, const http_params_t *p) {
    (void)p;
    api_t *api = app;
    input_err_t e;
    json_t *body = input_body_or_400(req);
    if (!body) return;
    store_send_t s;
    memset(&s, 0, sizeof s);
    unsigned status = 422;
    if (sender_of(api_call(req), body, &s.sender_id, &status, &e) || input_send(body, api->max_content, &s, &e))
        http_respond_error(req, status, e.detail);
    else
        store_message_send(api->store, &s, on_sent, req); /* copies s */
    json_decref(body);
}

/* What a message-list handler keeps between its query and the answer. */
typedef struct msg_list_state {
    int limit;
    store_msg_query_t q;
} msg_list_state_t;

static void on_page(void *ctx, int err, const store_msg_page_t *page) {
    http_request_t *req = ctx;
    const msg_list_state_t *st = (void *)api_call(req)->state;
    /* With auth off (no caller), a conversation nobody has written to has
     * an empty history, as in the FastAPI implementation (its own API test
     * asks for the messages of the all-zero id and expects 200 []). With
     * auth on, the caller was checked against its participants before, so
     * an unknown conversation is still 404 there. */
    if (err == STORE_ENOTFOUND && !api_call(req)->has_caller) {
        buf_t b;
        buf_init(&b);
        render_message_page(&b, NULL, 0, st->limit, NULL);
        http_respond_json(req, 200, &b);
        return;
    }
    if (err) {
        respond_store_error(req, err, "Conversation not found");
        return;
    }
    char cursor[UUID_STR_LEN + 1];
    if (page->more && page->count) uuid_format(&page->items[page->count - 1].id, cursor);
    buf_t b;
    buf_init(&b);
    render_message_page(&b, page->items, page->count, st->limit, page->more && page->count ? cursor : NULL);
    http_respond_json(req, 200, &b);
}

/* With auth on: the conversation's participants only; anyone else is told
 * it does not exist. */
static void on_access(void *ctx, int err, const conversation_t *c) {
    http_request_t *req = ctx;
    api_call_t *call = api_call(req);
    if (!err && !api_may_read(call, c)) err = STORE_ENOTFOUND;
    if (err) {
        respond_store_error(req, err, "Conversation not found");
        return;
    }
    const msg_list_state_t *st = (void *)call->state;
    store_messages_list(call->api->store, &st->q, on_page, req);
}

void handle_messages_page(http_request_t *req, void *app, const http_params_t *p) {
    api_t *api = app;
    input_err_t e;
    store_msg_query_t q;
    memset(&q, 0, sizeof q);
    if (input_path_uuid(p, 0, "conversation_id", &q.conversation_id, &e) || input_limit(req, &q.limit, &e) ||
        input_query_timeuuid(req, "before_message_id", &q.has_before, &q.before, &e) ||
        input_query_timeuuid(req, "after_message_id", &q.has_after, &q.after, &e)) {
        http_respond_error(req, 422, e.detail);
        return;
    }
    if (q.has_before && q.has_after) {
        http_respond_error(req, 422, "before_message_id and after_message_id cannot be combined");
        return;
    }
    msg_list_state_t *st = (void *)api_call(req)->state;
    st->limit = q.limit;
    st->q = q;
    if (api_call(req)->has_caller) store_conversation_get(api->store, &q.conversation_id, on_access, req);
    else store_messages_list(api->store, &q, on_page, req);
}
