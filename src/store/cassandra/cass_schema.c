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

/* Cassandra's hints (and the batchlog replay of logged batches, which
 * the seeder's conversation opens still are) drop a table's mutations once
 * they are older than its gc_grace_seconds: 0 would lose a replayed
 * write's recency rows. Three hours is the default hint window. A send writes a tombstone
 * only when a row changes key (cass_internal.h), so few need purging;
 * levelled compaction keeps a partition in few sstables for the reads. */
#define RECENCY_GC_GRACE 10800
#define STR(x) #x
#define XSTR(x) STR(x)
#define RECENCY_TABLE_OPTIONS \
    "gc_grace_seconds = " XSTR(RECENCY_GC_GRACE) " AND compaction = {'class': 'LeveledCompactionStrategy'}"

/* The seed design's four tables, exactly as the FastAPI implementation
 * creates them, then ours, then the columns added to ours since (a table
 * of an earlier version gets them; CREATE already has them). %s: the
 * keyspace. */
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
    "CREATE TABLE IF NOT EXISTS %s.conversation_recency (user_id uuid, tier int, pos bigint, conversation_id blob, "
    "activity bigint, other_user_id uuid, last_message text, PRIMARY KEY (user_id, tier, pos, conversation_id)) "
    "WITH CLUSTERING ORDER BY (tier ASC, pos DESC, conversation_id DESC) AND " RECENCY_TABLE_OPTIONS,
    "CREATE TABLE IF NOT EXISTS %s.conversation_participants (conversation_id uuid PRIMARY KEY, user1_id uuid, "
    "user2_id uuid)",
    "CREATE TABLE IF NOT EXISTS %s.idempotency (sender_id uuid, client_message_id text, conversation_id uuid, "
    "message_id timeuuid, receiver_id uuid, content_sha256 blob, published boolean, "
    "PRIMARY KEY ((sender_id, client_message_id))) "
    "WITH default_time_to_live = 86400",
    "CREATE TABLE IF NOT EXISTS %s.user_credentials (user_id uuid PRIMARY KEY, password_hash text)",
    "CREATE TABLE IF NOT EXISTS %s.auth_tokens (token_hash blob PRIMARY KEY, user_id uuid, expires_at timestamp)",
    /* the carried list items (cass_internal.h); rows without them are read
     * the old way */
    "ALTER TABLE %s.conversation_recency ADD IF NOT EXISTS (other_user_id uuid, last_message text)",
    /* the claim of a keyed send's event (cass_send.c) */
    "ALTER TABLE %s.idempotency ADD IF NOT EXISTS published boolean",
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

/* gc_grace_seconds of ks.table into *out; false when there is no such table. */
static bool table_gc_grace(cql_client *c, const char *ks, const char *table, int32_t *out) {
    *out = -1;
    cql_value v[2] = {cql_value_text(ks), cql_value_text(table)};
    return run_sync(c, cass_cql(Q_TABLE_GC), v, 2, CQL_ONE, read_first_int, out) == CQL_OK && *out >= 0;
}

/* The previous versions' index, conversations_by_recency, is no longer read
 * or written, and is left in place (a server of an older version still
 * running on the keyspace keeps using it). It had gc_grace_seconds 0 while
 * written in logged batches: raised once, so that no table here loses a
 * replayed batch. */
static int old_recency_update(cql_client *c, const char *ks) {
    int32_t gc = 0;
    if (!table_gc_grace(c, ks, "conversations_by_recency", &gc) || gc != 0) return CQL_OK;
    log_info("store", "cassandra: conversations_by_recency (unused since conversation_recency): gc_grace_seconds 0 -> "
             XSTR(RECENCY_GC_GRACE));
    char q[256];
    snprintf(q, sizeof q, "ALTER TABLE %s.conversations_by_recency WITH gc_grace_seconds = " XSTR(RECENCY_GC_GRACE),
             ks);
    return run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
}

/* What schema_agreed() saw: the schema versions, as far as they agree. */
typedef struct versions {
    uint8_t first[16];
    bool seen, differ;
} versions_t;

static void read_version(void *arg, cql_result *r) {
    versions_t *v = arg;
    uint8_t u[16];
    if (cql_row_get_uuid(r, 0, u) != CQL_OK) { v->differ = true; return; } /* a peer not settled yet */
    if (!v->seen) memcpy(v->first, u, 16);
    else if (memcmp(v->first, u, 16) != 0) v->differ = true;
    v->seen = true;
}

/* Whether every node has the same schema version. Each node's own version
 * is in its system.local, and every other node's (by gossip) in its
 * system.peers; the requests go round the nodes, so a few of each see them
 * all. */
static bool schema_agreed(cql_client *c) {
    versions_t v = {.seen = false, .differ = false};
    for (int i = 0; i < 4 && !v.differ; i++)
        if (run_sync(c, cass_cql(Q_SCHEMA_LOCAL), NULL, 0, CQL_ONE, read_version, &v) != CQL_OK ||
            run_sync(c, cass_cql(Q_SCHEMA_PEERS), NULL, 0, CQL_ONE, read_version, &v) != CQL_OK)
            return false;
    return !v.differ;
}

/* On a cluster, a schema change is made on one node and reaches the others
 * by gossip: a CREATE TABLE sent to a node that has not heard of the new
 * keyspace fails ("Keyspace ... doesn't exist"), and so would the first
 * statements prepared there. So after each step the nodes are given time to
 * agree (as drivers do), up to 30 s; then the start-up goes on and says so.
 * One node agrees with itself at once. */
static void wait_schema_agreement(cql_client *c) {
    struct timespec pause = {0, 200 * 1000 * 1000};
    for (int tries = 0; tries < 150; tries++) {
        if (schema_agreed(c)) return;
        nanosleep(&pause, NULL);
    }
    log_warn("store", "cassandra: the nodes did not agree on the schema within 30 s; going on");
}

/* Creates the keyspace and tables; *fresh: conversation_recency did not
 * exist before (its rows are still to be made from conversations_by_user). */
static int create_schema(const store_cassandra_config_t *cfg, bool *fresh) {
    cql_client *c;
    int err = cass_connect(cfg, NULL, &c);
    if (err) return err;
    char q[1024];
    const char *ks = cfg->keyspace;
    int32_t gc;
    *fresh = !table_gc_grace(c, ks, "conversation_recency", &gc);
    snprintf(q, sizeof q,
             "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = {'class': 'SimpleStrategy', 'replication_factor': %d}",
             ks, cfg->replication_factor > 0 ? cfg->replication_factor : 1);
    int rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    if (rc == CQL_OK) wait_schema_agreement(c);
    for (size_t i = 0; rc == CQL_OK && i < sizeof TABLES / sizeof TABLES[0]; i++) {
        snprintf(q, sizeof q, TABLES[i], ks);
        rc = run_sync(c, q, NULL, 0, CQL_ONE, NULL, NULL);
    }
    if (rc == CQL_OK) rc = old_recency_update(c, ks);
    if (rc == CQL_OK) wait_schema_agreement(c);
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
    uuid_t user, conv, other;
    int64_t updated;
    if (!row_uuid(r, 0, &user) || !row_uuid(r, 1, &conv) || cass_row_time_ms(r, 2, &updated) != CQL_OK) return;
    cql_str text;
    bool has_text = cql_row_get_text(r, 4, &text) == CQL_OK;
    rec_item_t item = {row_uuid(r, 3, &other) ? &other : NULL, has_text ? text.ptr : NULL, has_text ? text.len : 0};
    int64_t act = (int64_t)unix_ms_to_ticks(updated);
    cql_value v[REC_PUT_VALUES];
    cass_rec_values(v, &user, &conv, rec_key_of(act, false), act, updated * 1000, &item);
    migrate_submit(m, Q_REC_PUT, v, REC_PUT_VALUES, false);
}

/* Waits for what the scan submitted: closing would fail it. */
static void migrate_drain(migrate_ctx_t *m) {
    struct timespec tick = {0, 2 * 1000 * 1000};
    while (atomic_load(&m->in_flight) > 0) nanosleep(&tick, NULL);
}

/* Indexes every conversations_by_user row in conversation_recency (tier 0
 * at last_updated; a send or a reader moves it on) and, with users, every
 * user in users_by_name. */
static int migrate(const store_cassandra_config_t *cfg, bool users) {
    migrate_ctx_t m = {.consistency = cfg->consistency};
    int err = cass_connect(cfg, cfg->keyspace, &m.cql);
    if (err) return err;
    int rc = CQL_OK;
    if (users) rc = run_sync(m.cql, cass_cql(Q_SCAN_USERS), NULL, 0, cfg->consistency, migrate_user_row, &m);
    long n_users = m.rows;
    if (rc == CQL_OK)
        rc = run_sync(m.cql, cass_cql(Q_SCAN_CBU), NULL, 0, cfg->consistency, migrate_conv_row, &m);
    migrate_drain(&m);
    cql_client_close(m.cql);
    long failed = atomic_load(&m.failed);
    log_info("store", "migration: %ld users indexed by name, %ld conversation rows indexed by recency, %ld failed",
             n_users, m.rows - n_users, failed);
    return rc == CQL_OK && failed == 0 ? STORE_OK : STORE_EIO;
}

/* A keyspace of an earlier version gets its new list index at the first
 * start-up that creates it: served at once, without `messenger schema`. */
int cass_create_schema(const store_cassandra_config_t *cfg) {
    bool fresh = false;
    int err = create_schema(cfg, &fresh);
    if (!err && fresh) {
        log_info("store", "cassandra: conversation_recency is new: indexing conversations_by_user (once)");
        err = migrate(cfg, false);
    }
    return err;
}

int store_cassandra_migrate(const store_cassandra_config_t *cfg) {
    if (!cass_keyspace_check(cfg->keyspace)) return STORE_EIO;
    bool fresh;
    int err = create_schema(cfg, &fresh);
    return err ? err : migrate(cfg, true);
}
