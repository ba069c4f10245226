/* model.h - the domain: users, messages, conversations, and the rules for
 * what a valid username, message content and idempotency key are.
 *
 * These structs are views: their string pointers borrow memory owned by
 * whoever produced them (a parsed request, or a store read transaction) and
 * are valid only as long as that owner says.
 */
#ifndef MESSENGER_MODEL_H
#define MESSENGER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/uuid.h"

#define USERNAME_MAX 64          /* characters (code points) */
#define CLIENT_MESSAGE_ID_MAX 128 /* bytes */
#define IDEMPOTENCY_WINDOW_MS (24LL * 3600 * 1000)

#define PASSWORD_HASH_MAX 255     /* bytes of an encoded Argon2id hash */

typedef struct user {
    uuid_t id;
    const char *name;
    size_t name_len;
    /* The account's Argon2id hash in its encoded form ("$argon2id$v=19$..."),
     * or NULL for a user without a password (created on the open API). Never
     * rendered; only store_user_find returns it. */
    const char *password_hash;
    size_t password_hash_len;
} user_t;

typedef struct message {
    uuid_t id;              /* timeuuid; its timestamp is the send time */
    uuid_t conversation_id;
    uuid_t sender_id;
    uuid_t receiver_id;
    int64_t created_at_ms;  /* Unix ms */
    const char *content;
    size_t content_len;
} message_t;

typedef struct conversation {
    uuid_t id;
    uuid_t user1_id;          /* the user asked about (or the lower id) */
    uuid_t user2_id;          /* the other participant */
    int64_t created_at_ms;
    bool has_last_message;
    uuid_t last_message_id;
    int64_t last_message_at_ms; /* created_at_ms when there is no message */
    const char *last_message_content;
    size_t last_message_len;
    uint64_t activity;        /* recency position: 100-ns ticks (see cursor.h) */
} conversation_t;

/* The deterministic conversation id shared with the FastAPI implementation:
 * SHA-256 over the two lowercase canonical ids, sorted and concatenated;
 * the first 16 bytes of the digest, version bits untouched. */
void conversation_id_derive(const uuid_t *a, const uuid_t *b, uuid_t *out);

/* Validation. Each returns NULL when the value is acceptable, otherwise a
 * static English sentence saying what is wrong (used as the 422 detail). */
const char *username_check(const char *s, size_t len);
const char *content_check(const char *s, size_t len, size_t max_bytes);
const char *client_message_id_check(const char *s, size_t len);

/* The form under which usernames are unique and looked up: ASCII letters
 * folded to lower case, every other byte kept ("Alice" and "alice" are one
 * name; no Unicode case folding). Writes len bytes to out. */
void username_fold(const char *s, size_t len, char *out);

/* True when s[0..len) is well-formed UTF-8 (no surrogates, no overlongs). */
bool utf8_valid(const char *s, size_t len);

#endif
