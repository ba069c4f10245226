/* store.c - dispatch from the public storage interface to a backend. */
#include "store/store_impl.h"

const char *store_strerror(int err) {
    switch (err) {
    case STORE_OK: return "ok";
    case STORE_ENOTFOUND: return "not found";
    case STORE_ECONFLICT: return "conflict";
    case STORE_EUNAVAILABLE: return "storage unavailable";
    case STORE_EFULL: return "storage full";
    case STORE_ENOMEM: return "out of memory";
    case STORE_EIO: return "storage error";
    case STORE_EBADCURSOR: return "cursor names no position";
    default: return "unknown storage error";
    }
}

void store_user_create(store_t *s, const user_t *u, store_user_cb cb, void *ctx) { s->ops->user_create(s, u, cb, ctx); }
void store_user_get(store_t *s, const uuid_t *id, store_user_cb cb, void *ctx) { s->ops->user_get(s, id, cb, ctx); }
void store_user_find(store_t *s, const char *n, size_t len, store_user_cb cb, void *ctx) { s->ops->user_find(s, n, len, cb, ctx); }
void store_token_put(store_t *s, const store_token_t *t, store_token_cb cb, void *ctx) { s->ops->token_put(s, t, cb, ctx); }
void store_token_get(store_t *s, const uint8_t h[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx) { s->ops->token_get(s, h, cb, ctx); }
void store_token_delete(store_t *s, const uint8_t h[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx) { s->ops->token_delete(s, h, cb, ctx); }
void store_message_send(store_t *s, const store_send_t *r, store_send_cb cb, void *ctx) { s->ops->message_send(s, r, cb, ctx); }
void store_messages_list(store_t *s, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx) { s->ops->messages_list(s, q, cb, ctx); }
void store_conversations_list(store_t *s, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx) { s->ops->conversations_list(s, q, cb, ctx); }
void store_conversation_get(store_t *s, const uuid_t *id, store_conv_cb cb, void *ctx) { s->ops->conversation_get(s, id, cb, ctx); }
void store_conversation_open(store_t *s, const uuid_t *a, const uuid_t *b, int64_t at, store_conv_cb cb, void *ctx) { s->ops->conversation_open(s, a, b, at, cb, ctx); }
void store_health(store_t *s, store_health_cb cb, void *ctx) { s->ops->health(s, cb, ctx); }
const char *store_name(const store_t *s) { return s->ops->name; }
void store_close(store_t *s) { if (s) s->ops->close(s); }
