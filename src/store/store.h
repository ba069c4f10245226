/* store.h - the storage interface: every operation the API needs.
 *
 * The interface is asynchronous: each call takes a callback and returns at
 * once. The callback runs exactly once, and never inside the call that
 * started the operation (util/defer.h): on the caller's thread once its
 * handler or callback has returned (a backend that answers from memory,
 * like LMDB reads), or on a backend thread (a durable commit, a network
 * round trip). Handlers must not assume which thread. Two exceptions, where
 * there is nothing to return to: a thread outside any defer scope (a
 * command-line tool), and no memory for the call itself (STORE_ENOMEM).
 * Arguments are copied: the caller's may be freed when the call returns.
 * Pointers inside a result (strings, arrays) are valid only during the
 * callback; copy what must outlive it.
 *
 * Errors are negative STORE_E* codes; 0 is success. A backend never reports
 * a client's mistake it could have been told about up front: inputs are
 * validated by the API layer before they reach the store.
 */
#ifndef MESSENGER_STORE_H
#define MESSENGER_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"
#include "model/uuid.h"

enum {
    STORE_OK = 0,
    STORE_ENOTFOUND = -1,    /* a named user/conversation does not exist */
    STORE_ECONFLICT = -2,    /* unique username taken; idempotency key reused */
    STORE_EUNAVAILABLE = -3, /* backend unreachable or shutting down */
    STORE_EFULL = -4,        /* out of space (LMDB map full, disk full) */
    STORE_ENOMEM = -5,
    STORE_EIO = -6,          /* any other backend failure */
    STORE_EBADCURSOR = -7,   /* a cursor that names no position */
};
const char *store_strerror(int err);

typedef struct store store_t;

/* ---- users ---- */
typedef void (*store_user_cb)(void *ctx, int err, const user_t *user);
/* Creates a user (with its password hash, when it has one); STORE_ECONFLICT
 * when the name (case-insensitively) is taken. */
void store_user_create(store_t *s, const user_t *user, store_user_cb cb, void *ctx);
/* The user without its password hash. */
void store_user_get(store_t *s, const uuid_t *id, store_user_cb cb, void *ctx);
/* By name, case-insensitively; the only read that returns the password hash. */
void store_user_find(store_t *s, const char *name, size_t len, store_user_cb cb, void *ctx);

/* ---- login tokens ----
 * A bearer token is stored only as its SHA-256, so that a copy of the store
 * grants nobody a session. Expired tokens read as absent and are purged. */
#define STORE_TOKEN_HASH_LEN 32
typedef struct store_token {
    uint8_t hash[STORE_TOKEN_HASH_LEN];
    uuid_t user_id;
    int64_t expires_at_ms;  /* Unix ms */
} store_token_t;
typedef void (*store_token_cb)(void *ctx, int err, const store_token_t *token);
void store_token_put(store_t *s, const store_token_t *t, store_token_cb cb, void *ctx);
/* STORE_ENOTFOUND when the token is unknown, revoked or expired. */
void store_token_get(store_t *s, const uint8_t hash[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx);
/* Revokes; succeeds also when there was no such token. */
void store_token_delete(store_t *s, const uint8_t hash[STORE_TOKEN_HASH_LEN], store_token_cb cb, void *ctx);

/* ---- send ---- */
typedef struct store_send {
    uuid_t sender_id, receiver_id;
    const char *content;
    size_t content_len;
    const char *client_message_id; /* NULL: not idempotent */
    size_t client_message_id_len;
    /* Nil: the backend assigns a fresh timeuuid when it applies the send, so
     * that within one backend commit order equals id order. Non-nil (the
     * seeder): used as is, created_at taken from its timestamp. */
    uuid_t message_id;
} store_send_t;

/* replayed: the send repeated an earlier one with the same sender and
 * client_message_id within the idempotency window; msg is that earlier
 * message. STORE_ENOTFOUND: a user does not exist. STORE_ECONFLICT: the key
 * was used for a different message. */
typedef void (*store_send_cb)(void *ctx, int err, const message_t *msg, bool replayed);
void store_message_send(store_t *s, const store_send_t *req, store_send_cb cb, void *ctx);

/* ---- message pages ---- */
typedef struct store_msg_query {
    uuid_t conversation_id;
    int limit;              /* 1..100 */
    bool has_before, has_after; /* at most one */
    uuid_t before, after;   /* exclusive bounds, compared in timeuuid order */
} store_msg_query_t;

typedef struct store_msg_page {
    const message_t *items; /* newest first, or oldest first for `after` */
    size_t count;
    bool more;              /* further messages exist in the walk's direction */
} store_msg_page_t;

/* STORE_ENOTFOUND when the conversation does not exist. */
typedef void (*store_msg_page_cb)(void *ctx, int err, const store_msg_page_t *page);
void store_messages_list(store_t *s, const store_msg_query_t *q, store_msg_page_cb cb, void *ctx);

/* ---- conversation pages ---- */
typedef struct store_conv_query {
    uuid_t user_id;
    int limit;
    bool has_cursor;
    bool cursor_is_id;      /* FastAPI-style cursor: a bare conversation id */
    uint64_t cursor_activity; /* position: strictly older than (activity, id) */
    uuid_t cursor_id;
} store_conv_query_t;

typedef struct store_conv_page {
    const conversation_t *items; /* most recent activity first */
    size_t count;
    bool more;
} store_conv_page_t;

/* STORE_ENOTFOUND when the user does not exist; STORE_EBADCURSOR when a bare
 * conversation-id cursor is not one of the user's conversations. */
typedef void (*store_conv_page_cb)(void *ctx, int err, const store_conv_page_t *page);
void store_conversations_list(store_t *s, const store_conv_query_t *q, store_conv_page_cb cb, void *ctx);

typedef void (*store_conv_cb)(void *ctx, int err, const conversation_t *conv);
void store_conversation_get(store_t *s, const uuid_t *id, store_conv_cb cb, void *ctx);

/* Creates an empty conversation (no messages) between two existing users, or
 * returns the existing one. Used by the seeder; created_at_ms 0 means now. */
void store_conversation_open(store_t *s, const uuid_t *a, const uuid_t *b, int64_t created_at_ms,
                             store_conv_cb cb, void *ctx);

/* ---- health and lifetime ---- */
typedef void (*store_health_cb)(void *ctx, int err, const char *detail);
void store_health(store_t *s, store_health_cb cb, void *ctx);

/* NULL while the store works fully; else why it works only in part (reads
 * are served, writes refused: e.g. LMDB on a full disk), a static string.
 * Any thread. */
const char *store_degraded(store_t *s);

/* Name of the backend, e.g. "lmdb". */
const char *store_name(const store_t *s);

/* Stops taking new operations (they fail with STORE_EUNAVAILABLE), completes
 * every operation already accepted (pending commits are flushed and their
 * callbacks run), and frees the store. */
void store_close(store_t *s);

#endif
