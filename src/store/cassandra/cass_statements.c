/* cass_statements.c - every CQL text the Cassandra store sends, in one table
 * indexed by cass_q (cass_internal.h), and the IN lists built from one text
 * at open. A statement's text is written here and nowhere else: call sites
 * name it (Q_USER_GET), and for a prepared statement the text is also the
 * key of lib/cql's prepare cache. The DDL is in cass_schema.c.
 */
#include <stdio.h>
#include <stdlib.h>

#include "store/cassandra/cass_internal.h"

/* Statements (names unqualified: the client USEs the keyspace). */
#define REC_COLS "SELECT activity, conversation_id, tier, pos, other_user_id, last_message FROM conversation_recency "
#define MSG_COLS "SELECT message_id, sender_id, receiver_id, content, created_at FROM messages_by_conversation "

const char *const cass_cql_text[] = {
    [Q_USER_GET] = "SELECT username FROM users WHERE user_id = ?",
    [Q_USER_PUT] = "INSERT INTO users (user_id, username) VALUES (?, ?)",
    [Q_NAME_GET] = "SELECT user_id FROM users_by_name WHERE username_lower = ?",
    [Q_CRED_GET] = "SELECT password_hash FROM user_credentials WHERE user_id = ?",
    [Q_CRED_PUT] = "INSERT INTO user_credentials (user_id, password_hash) VALUES (?, ?)",
    [Q_USER_DEL] = "DELETE FROM users WHERE user_id = ?",
    [Q_CRED_DEL] = "DELETE FROM user_credentials WHERE user_id = ?",
    [Q_TOKEN_GET] = "SELECT user_id, expires_at FROM auth_tokens WHERE token_hash = ?",
    [Q_TOKEN_PUT] = "INSERT INTO auth_tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?) USING TTL ?",
    [Q_TOKEN_DEL] = "DELETE FROM auth_tokens WHERE token_hash = ?",
    [Q_NAME_LWT] = "INSERT INTO users_by_name (username_lower, user_id) VALUES (?, ?) IF NOT EXISTS",
    [Q_IDEM_LWT] = "INSERT INTO idempotency (sender_id, client_message_id, conversation_id, message_id, receiver_id, "
                   "content_sha256) VALUES (?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    [Q_IDEM_CLAIM] = "UPDATE idempotency SET published = true WHERE sender_id = ? AND client_message_id = ? "
                     "IF published = null",
    [Q_CBU_GET] = "SELECT other_user_id, last_message, last_updated FROM conversations_by_user WHERE user_id = ? AND "
                  "conversation_id = ?",
    [Q_CBU_PUT] = "INSERT INTO conversations_by_user (user_id, conversation_id, other_user_id, last_message, "
                  "last_updated) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
    [Q_MSG_PUT] = "INSERT INTO messages_by_conversation (conversation_id, message_id, sender_id, receiver_id, content, "
                  "created_at) VALUES (?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    [Q_REC_DEL] = "DELETE FROM conversation_recency USING TIMESTAMP ? WHERE user_id = ? AND tier = ? AND pos = ? AND "
                  "conversation_id = ?",
    [Q_REC_PUT] = "INSERT INTO conversation_recency (user_id, tier, pos, conversation_id, activity, other_user_id, "
                  "last_message) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
    [Q_META_GET] = "SELECT created_at FROM conversation_metadata WHERE conversation_id = ?",
    [Q_META_PUT] = "INSERT INTO conversation_metadata (conversation_id, created_at) VALUES (?, ?) USING TIMESTAMP ?",
    [Q_PART_GET] = "SELECT user1_id, user2_id FROM conversation_participants WHERE conversation_id = ?",
    [Q_PART_PUT] = "INSERT INTO conversation_participants (conversation_id, user1_id, user2_id) VALUES (?, ?, ?) "
                   "USING TIMESTAMP ?",
    [Q_MSG_GET] = MSG_COLS "WHERE conversation_id = ? AND message_id = ?",
    [Q_MSG_TOP] = MSG_COLS "WHERE conversation_id = ? LIMIT ?",
    [Q_MSG_BEFORE] = MSG_COLS "WHERE conversation_id = ? AND message_id < ? LIMIT ?",
    [Q_MSG_AFTER] = MSG_COLS "WHERE conversation_id = ? AND message_id > ? ORDER BY message_id ASC LIMIT ?",
    [Q_MSG_NEWEST] = "SELECT message_id FROM messages_by_conversation WHERE conversation_id = ? LIMIT 3",
    [Q_REC_TOP] = REC_COLS "WHERE user_id = ? AND tier = 0 LIMIT ?",
    [Q_REC_BELOW] = REC_COLS "WHERE user_id = ? AND tier = 0 AND (pos, conversation_id) < (?, ?) LIMIT ?",
    [Q_REC_HOT] = REC_COLS "WHERE user_id = ? AND tier = 1 AND pos >= ? AND pos <= ? LIMIT ?",
    [Q_HEALTH] = "SELECT release_version FROM system.local",
    /* Unprepared (cass_schema.c's blocking calls). */
    [Q_TABLE_GC] = "SELECT gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
    [Q_SCHEMA_LOCAL] = "SELECT schema_version FROM system.local",
    [Q_SCHEMA_PEERS] = "SELECT schema_version FROM system.peers",
    [Q_SCAN_USERS] = "SELECT user_id, username FROM users",
    [Q_SCAN_CBU] = "SELECT user_id, conversation_id, last_updated, other_user_id, last_message FROM "
                   "conversations_by_user",
};

/* A name added at the end of cass_q without its text fails here; one added
 * elsewhere without its text is a NULL that the first test to run it finds. */
_Static_assert(sizeof cass_cql_text / sizeof cass_cql_text[0] == Q_COUNT, "one text per statement");

int cass_in_statements_build(cass_store_t *s) {
    for (size_t n = 1; n < sizeof s->cbu_in / sizeof s->cbu_in[0]; n++) {
        size_t len = 200 + 3 * n;
        char *q = malloc(len);
        if (!q) return STORE_ENOMEM;
        int off = snprintf(q, len,
                           "SELECT conversation_id, other_user_id, last_message, last_updated FROM conversations_by_user "
                           "WHERE user_id = ? AND conversation_id IN (");
        for (size_t i = 0; i < n; i++) off += snprintf(q + off, len - (size_t)off, i ? ",?" : "?");
        snprintf(q + off, len - (size_t)off, ")");
        s->cbu_in[n] = q;
    }
    return STORE_OK;
}

void cass_in_statements_free(cass_store_t *s) {
    for (size_t i = 0; i < sizeof s->cbu_in / sizeof s->cbu_in[0]; i++) free(s->cbu_in[i]);
}
