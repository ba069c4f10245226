/* cass_open.c - the Cassandra store's lifetime: the configuration checked,
 * the client connected (also for cass_schema.c), the statements' IN lists
 * built, the operations table, the health check, and close.
 */
#include <stdlib.h>
#include <string.h>

#include "store/cassandra/cass_internal.h"
#include "util/log.h"

static const store_ops_t CASS_OPS;

static bool keyspace_name_ok(const char *ks) {
    size_t n = strlen(ks);
    if (n == 0 || n > 48) return false;
    for (size_t i = 0; i < n; i++)
        if (!((ks[i] >= 'a' && ks[i] <= 'z') || (ks[i] >= 'A' && ks[i] <= 'Z') || (ks[i] >= '0' && ks[i] <= '9') ||
              ks[i] == '_'))
            return false;
    return true;
}

bool cass_keyspace_check(const char *keyspace) {
    if (keyspace_name_ok(keyspace)) return true;
    log_error("store", "keyspace name '%s' must be 1-48 letters, digits or underscores", keyspace);
    return false;
}

int cass_connect(const store_cassandra_config_t *cfg, const char *keyspace, cql_client **out) {
    cql_client_opts o;
    cql_client_opts_init(&o);
    o.contact_points = cfg->hosts;
    o.n_contact_points = cfg->n_hosts;
    o.keyspace = keyspace;
    o.consistency = cfg->consistency;
    if (cfg->timeout_ms) o.request_timeout_ms = cfg->timeout_ms;
    int rc = cql_client_new(out, &o);
    if (rc < 0) {
        log_error("store", "cassandra client: %s", cql_strerror(rc));
        return STORE_EUNAVAILABLE;
    }
    rc = cql_client_wait_ready(*out, cfg->connect_wait_ms ? cfg->connect_wait_ms : 30000);
    if (rc < 0) {
        char why[256];
        cql_client_last_error(*out, why, sizeof why);
        log_error("store", "cannot reach cassandra (%s): %s", cql_strerror(rc), why);
        cql_client_close(*out);
        *out = NULL;
        return STORE_EUNAVAILABLE;
    }
    return STORE_OK;
}

/* ------------------------------------------------------------------ health */

typedef struct health_op {
    store_health_cb cb;
    void *ctx;
} health_op_t;

static void on_health(void *arg, int status, cql_result *r) {
    health_op_t *op = arg;
    int err = cass_map_cql(status, r, "health check");
    op->cb(op->ctx, err, err ? "cassandra is unreachable" : "cassandra");
    free(op);
}

static void cass_health(store_t *base, store_health_cb cb, void *ctx) {
    cass_store_t *s = (cass_store_t *)base;
    health_op_t *op = malloc(sizeof *op);
    if (!op) { cb(ctx, STORE_ENOMEM, "out of memory"); return; }
    op->cb = cb;
    op->ctx = ctx;
    cass_exec(s, Q_HEALTH, NULL, 0, NULL, on_health, op);
}

/* ------------------------------------------------------------------ lifetime */

static void cass_close(store_t *base) {
    cass_store_t *s = (cass_store_t *)base;
    cql_client_close(s->cql); /* fails what is pending: every callback runs */
    cass_in_statements_free(s);
    free(s);
}

/* A statement name added without its text leaves a NULL slot that the
 * table's _Static_assert cannot see (cass_statements.c); every test run
 * opens the store, so this finds it before anything ships. */
static bool statements_complete(void) {
    for (int q = 0; q < Q_COUNT; q++)
        if (!cass_cql_text[q]) {
            log_error("store", "statement %d has no CQL text (a bug in cass_statements.c)", q);
            return false;
        }
    return true;
}

int store_cassandra_open(const store_cassandra_config_t *cfg, idgen_t *ids, store_t **out) {
    if (!statements_complete() || !cass_keyspace_check(cfg->keyspace)) return STORE_EIO;
    if (cfg->create_schema) {
        int err = cass_create_schema(cfg);
        if (err) return err;
    }
    cass_store_t *s = calloc(1, sizeof *s);
    if (!s) return STORE_ENOMEM;
    s->base.ops = &CASS_OPS;
    s->ids = ids;
    s->consistency = cfg->consistency;
    s->timeout_ms = cfg->timeout_ms;
    int err = cass_in_statements_build(s);
    if (!err) err = cass_connect(cfg, cfg->keyspace, &s->cql);
    if (err) {
        cass_in_statements_free(s);
        free(s);
        return err;
    }
    log_info("store", "cassandra store open (keyspace %s, consistency %s)", cfg->keyspace,
             cql_consistency_name(cfg->consistency));
    *out = &s->base;
    return STORE_OK;
}

static const store_ops_t CASS_OPS = {
    .name = "cassandra",
    .user_create = cass_user_create,
    .user_get = cass_user_get,
    .user_find = cass_user_find,
    .token_put = cass_token_put,
    .token_get = cass_token_get,
    .token_delete = cass_token_delete,
    .message_send = cass_message_send,
    .messages_list = cass_messages_list,
    .conversations_list = cass_conversations_list,
    .conversation_get = cass_conversation_get,
    .conversation_open = cass_conversation_open,
    .health = cass_health,
    .close = cass_close,
};
