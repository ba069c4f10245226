/* cass_schema.c - the keyspace and its tables (IF NOT EXISTS, at open when
 * asked and by `messenger schema`), and store_cassandra_migrate: our index
 * tables filled from the FastAPI implementation's. Both run blocking
 * statements (run_sync), at start-up only.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "store/cassandra/cass_internal.h"
#include "util/log.h"

/* Every send deletes a recency row, so a user's partition fills with
 * tombstones that every page of the list reads through (a 2M-message set:
 * ~400 per user, 51 ms per page). The table is an index that readers check
 * against conversations_by_user (a stale row is skipped and deleted), so a
 * deleted row that comes back does no harm: its tombstones need not outlive
 * a compaction (gc_grace_seconds 0), and levelled compaction with
 * single-sstable tombstone compactions purges them soon after they are
 * written. */
#define RECENCY_TABLE_OPTIONS \
    "gc_grace_seconds = 0 AND compaction = {'class': 'LeveledCompactionStrategy', " \
    "'unchecked_tombstone_compaction': 'true', 'tombstone_threshold': '0.1', 'tombstone_compaction_interval': '60'}"

/* The seed design's four tables, exactly as the FastAPI implementation
 * creates them, then ours. %s: the keyspace. */
static const char *const TABLES[] = {
    "CREATE TABLE IF NOT EXISTS %s.users (user_id uuid PRIMARY KEY, username text)",
    "CREATE TABLE IF NOT EXISTS %s.conversations_by_user (user_id uuid, conversation_id uuid, other_user_id uuid, "
    "last_message text, last_updated timestamp, PRIMARY KEY (user_id, conversation_id)) "
    "WITH CLUSTERING ORDER BY (conversation_id DESC)",
    "CREATE TABLE IF NOT EXISTS %s.messages_by_conversation (conversation_id uuid, message_id timeuuid, "
    "sender_id uuid, receiver_id uuid, content text, created_at timestamp, PRIMARY KEY (conversation_id, message_id)) "
    "WITH CLUSTERING ORDER BY (message_id DESC)",
    "CREATE TABLE IF NOT EXISTS %s.conversation_metadata (conversation_id uuid PRIMARY KEY, created_at timestamp)",
    "CREATE TABLE IF NOT EXISTS %s.users_by_name (username_lower text PRIMARY KEY, user_id uuid)",
    "CREATE TABLE IF NOT EXISTS %s.conversations_by_recency (user_id uuid, activity bigint, conversation_id blob, "
    "PRIMARY KEY (user_id, activity, conversation_id)) WITH CLUSTERING ORDER BY (activity DESC, conversation_id DESC) "
    "AND " RECENCY_TABLE_OPTIONS,
    "CREATE TABLE IF NOT EXISTS %s.conversation_participants (conversation_id uuid PRIMARY KEY, user1_id uuid, "
    "user2_id uuid)",
    "CREATE TABLE IF NOT EXISTS %s.idempotency (sender_id uuid, client_message_id text, conversation_id uuid, "
    "message_id timeuuid, receiver_id uuid, content_sha256 blob, PRIMARY KEY ((sender_id, client_message_id))) "
    "WITH default_time_to_live = 86400",
    "CREATE TABLE IF NOT EXISTS %s.user_credentials (user_id uuid PRIMARY KEY, password_hash text)",
    "CREATE TABLE IF NOT EXISTS %s.auth_tokens (token_hash blob PRIMARY KEY, user_id uuid, expires_at timestamp)",
};

/* ------------------------------------------------------------------ blocking calls */

/* Blocking calls, for start-up and `messenger schema` only. */
typedef struct sync_call {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
    char error[512];
    /* paging */
    uint8_t paging_state[1024];
    size_t paging_len;
    bool more;
    void (*on_row)(void *arg, cql_result *r);
    void *row_arg;
} sync_call_t;

static void on_sync(void *arg, int status, cql_result *r) {
    sync_call_t *c = arg;
    c->error[0] = '\0';
    if (status == CQL_ESERVER && r && cql_result_error(r)) cql_error_format(cql_result_error(r), c->error, sizeof c->error);
    c->more = false;
    if (status == CQL_OK && r) {
        if (c->on_row)
            while (cql_result_next_row(r) == 1) c->on_row(c->row_arg, r);
        const uint8_t *ps;
        size_t n;
        cql_result_paging_state(r, &ps, &n);
        c->more = cql_result_has_more_pages(r) && n > 0 && n <= sizeof c->paging_state;
        if (c->more) memcpy(c->paging_state, ps, n);
        c->paging_len = c->more ? n : 0;
    }
    pthread_mutex_lock(&c->mu);
    c->status = status;
    c->done = true;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Runs one statement (paged when on_row is set) and waits for it. */
static int run_sync(cql_client *cql, const char *q, const cql_value *v, size_t n, uint16_t consistency,
                    void (*on_row)(void *, cql_result *), void *row_arg) {
    sync_call_t c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);
    c.on_row = on_row;
    c.row_arg = row_arg;
    int status = CQL_OK;
    do {
        cql_query_opts o;
        cql_query_opts_init(&o);
        o.consistency = consistency;
        o.timeout_ms = 60000; /* schema changes can be slow */
        if (on_row) {
            o.page_size = 1000;
            o.paging_state = c.more ? c.paging_state : NULL;
            o.paging_state_len = c.more ? c.paging_len : 0;
        }
        c.done = false;
        int rc = cql_query(cql, q, v, n, &o, on_sync, &c);
        if (rc < 0) { status = rc; break; }
        pthread_mutex_lock(&c.mu);
        while (!c.done) pthread_cond_wait(&c.cv, &c.mu);
        pthread_mutex_unlock(&c.mu);
        status = c.status;
    } while (status == CQL_OK && c.more);
    if (status != CQL_OK)
        log_error("store", "cassandra: %.80s...: %s", q, c.error[0] ? c.error : cql_strerror(status));
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    return status;
}

/* ------------------------------------------------------------------ schema */

/* run_sync's row callback for one int column (a missing row leaves *arg). */
static void read_first_int(void *arg, cql_result *r) {
    int32_t v;
    if (cql_row_get_int(r, 0, &v) == CQL_OK) *(int32_t *)arg = v;
}

/* A recency table made by an earlier version gets the options above,
 * once: an ALTER on every start-up would change the schema every time. */
static int recency_options_update(cql_client *c, const char *ks) {
    char q[1024];
    int32_t gc_grace = 0;
    cql_value kv = cql_value_text(ks);
    int rc = run_sync(c, cass_cql(Q_RECENCY_GC), &kv, 1, CQL_ONE, read_first_int, &gc_grace);
    if (rc == CQL_OK && gc_grace != 0) {
        log_info("store", "cassandra: conversations_by_recency: gc_grace_seconds %d -> 0, levelled compaction",
                 (int)gc_grace);
        snprintf(q, sizeof q, "ALTER TABLE %s.conversations_by_recency WITH " RECENCY_TABLE_OPTIONS, ks);
        rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    }
    return rc;
}

int cass_create_schema(const store_cassandra_config_t *cfg) {
    cql_client *c;
    int err = cass_connect(cfg, NULL, &c);
    if (err) return err;
    char q[1024];
    const char *ks = cfg->keyspace;
    snprintf(q, sizeof q,
             "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': %d}",
             ks, cfg->replication_factor > 0 ? cfg->replication_factor : 1);
    int rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    for (size_t i = 0; rc == CQL_OK && i < sizeof TABLES / sizeof TABLES[0]; i++) {
        snprintf(q, sizeof q, TABLES[i], ks);
        rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    }
    if (rc == CQL_OK) rc = recency_options_update(c, ks);
    cql_client_close(c);
    if (rc != CQL_OK) return STORE_EIO;
    log_info("store", "cassandra keyspace %s ready", ks);
    return STORE_OK;
}

/* ------------------------------------------------------------------ migration */

typedef struct migrate_ctx {
    cql_client *cql;
    uint16_t consistency;
    long rows;              /* touched by the scanning thread only */
    _Atomic long failed;
    _Atomic long in_flight; /* writes submitted and not yet answered */
} migrate_ctx_t;

static void on_migrate_write(void *arg, int status, cql_result *r) {
    migrate_ctx_t *m = arg;
    if (status) {
        cass_map_cql(status, r, "migration write");
        atomic_fetch_add(&m->failed, 1);
    }
    atomic_fetch_sub(&m->in_flight, 1);
}

static void migrate_submit(migrate_ctx_t *m, cass_q q, const cql_value *v, size_t n, bool lwt) {
    cql_query_opts o;
    cql_query_opts_init(&o);
    o.consistency = m->consistency;
    if (lwt) o.serial_consistency = CQL_LOCAL_SERIAL;
    atomic_fetch_add(&m->in_flight, 1);
    if (cql_execute(m->cql, cass_cql(q), v, n, &o, on_migrate_write, m) < 0) {
        atomic_fetch_add(&m->failed, 1);
        atomic_fetch_sub(&m->in_flight, 1);
    }
    m->rows++;
}

static void migrate_user_row(void *arg, cql_result *r) {
    migrate_ctx_t *m = arg;
    uuid_t id;
    cql_str name;
    if (!row_uuid(r, 0, &id) || cql_row_get_text(r, 1, &name) != CQL_OK || name.len > USERNAME_MAX * 4) return;
    char folded[USERNAME_MAX * 4];
    username_fold(name.ptr, name.len, folded);
    cql_value v[2] = {cql_value_textn(folded, name.len), v_uuid(&id)};
    migrate_submit(m, Q_NAME_LWT, v, 2, true);
}

static void migrate_conv_row(void *arg, cql_result *r) {
    migrate_ctx_t *m = arg;
    uuid_t user, conv;
    int64_t updated;
    if (!row_uuid(r, 0, &user) || !row_uuid(r, 1, &conv) || cass_row_time_ms(r, 2, &updated) != CQL_OK) return;
    cql_value v[4] = {v_uuid(&user), cql_value_bigint(updated), v_conv_key(&conv), cql_value_bigint(updated * 1000)};
    migrate_submit(m, Q_REC_PUT, v, 4, false);
}

int store_cassandra_migrate(const store_cassandra_config_t *cfg) {
    if (!cass_keyspace_check(cfg->keyspace)) return STORE_EIO;
    int err = cass_create_schema(cfg);
    if (err) return err;
    migrate_ctx_t m = {.consistency = cfg->consistency};
    err = cass_connect(cfg, cfg->keyspace, &m.cql);
    if (err) return err;
    int rc = run_sync(m.cql, cass_cql(Q_SCAN_USERS), NULL, 0, cfg->consistency, migrate_user_row, &m);
    long users = m.rows;
    if (rc == CQL_OK)
        rc = run_sync(m.cql, cass_cql(Q_SCAN_CBU), NULL, 0, cfg->consistency, migrate_conv_row, &m);
    /* Closing would fail what is still in flight: wait for it first. */
    struct timespec tick = {0, 2 * 1000 * 1000};
    while (atomic_load(&m.in_flight) > 0) nanosleep(&tick, NULL);
    cql_client_close(m.cql);
    long failed = atomic_load(&m.failed);
    log_info("store", "migration: %ld users indexed by name, %ld conversation rows indexed by recency, %ld failed",
             users, m.rows - users, failed);
    return rc == CQL_OK && failed == 0 ? STORE_OK : STORE_EIO;
}
