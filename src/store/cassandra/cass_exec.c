/* cass_exec.c - how the Cassandra store talks to lib/cql: a completion
 * mapped to a store error (and logged), submitting a statement with the
 * store's options, fan-out joins and probes, and decoding the rows that more
 * than one operation reads (see cass_internal.h for each contract).
 */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "store/cassandra/cass_internal.h"
#include "util/log.h"
#include "util/timefmt.h"

static bool server_side_unavailable(int32_t code) {
    switch (code) {
    case CQL_UNAVAILABLE: case CQL_OVERLOADED: case CQL_IS_BOOTSTRAPPING:
    case CQL_WRITE_TIMEOUT: case CQL_READ_TIMEOUT: case CQL_READ_FAILURE: case CQL_WRITE_FAILURE:
        return true;
    default:
        return false;
    }
}

/* Maps a CQL completion to a store error, logging what the operator needs. */
int cass_map_cql(int status, cql_result *r, const char *what) {
    if (status == CQL_OK) return STORE_OK;
    if (status == CQL_ESERVER && r) {
        const cql_error *e = cql_result_error(r);
        char msg[512];
        if (e) cql_error_format(e, msg, sizeof msg);
        else snprintf(msg, sizeof msg, "server error");
        if (e && server_side_unavailable(e->code)) {
            log_warn("store", "cassandra %s: %s", what, msg);
            return STORE_EUNAVAILABLE;
        }
        log_error("store", "cassandra %s: %s", what, msg);
        return STORE_EIO;
    }
    switch (status) {
    case CQL_ETIMEDOUT: case CQL_ECONN: case CQL_ENOHOST: case CQL_ECLOSED:
        log_warn("store", "cassandra %s: %s", what, cql_strerror(status));
        return STORE_EUNAVAILABLE;
    case CQL_ENOMEM: return STORE_ENOMEM;
    default:
        log_error("store", "cassandra %s: %s", what, cql_strerror(status));
        return STORE_EIO;
    }
}

void cass_query_opts(const cass_store_t *s, cql_query_opts *o) {
    cql_query_opts_init(o);
    o->consistency = s->consistency;
    o->timeout_ms = s->timeout_ms;
}

/* Submits a prepared statement; on a submit failure the callback is run
 * here with that status, so callers have one path for every outcome. */
void cass_exec_cql(cass_store_t *s, const char *q, const cql_value *v, size_t n, const cql_query_opts *opts,
                   cql_result_cb cb, void *arg) {
    cql_query_opts o;
    if (!opts) {
        cass_query_opts(s, &o);
        opts = &o;
    }
    int rc = cql_execute(s->cql, q, v, n, opts, cb, arg);
    if (rc < 0) cb(arg, rc, NULL);
}

/* A lightweight transaction (INSERT ... IF NOT EXISTS): serial consistency
 * for its Paxos round, the store's consistency for the commit. */
void cass_exec_lwt(cass_store_t *s, cass_q q, const cql_value *v, size_t n, cql_result_cb cb, void *arg) {
    cql_query_opts o;
    cass_query_opts(s, &o);
    o.serial_consistency = CQL_LOCAL_SERIAL;
    cass_exec(s, q, v, n, &o, cb, arg);
}

/* ------------------------------------------------------------------ fan-out */

void cass_join_start(join_t *j, int branches, void (*done)(void *, int), void *op) {
    atomic_store(&j->pending, branches + 1);
    atomic_store(&j->err, 0);
    j->done = done;
    j->op = op;
}

void cass_join_arrive(join_t *j, int err) {
    if (err) {
        int expected = 0;
        atomic_compare_exchange_strong(&j->err, &expected, err);
    }
    if (atomic_fetch_sub(&j->pending, 1) == 1) j->done(j->op, atomic_load(&j->err));
}

static void on_probe(void *arg, int status, cql_result *r) {
    probe_t *p = arg;
    int err = cass_map_cql(status, r, p->what);
    if (!err) p->found = cql_result_next_row(r) == 1;
    cass_join_arrive(p->join, err);
}

void cass_probe(cass_store_t *s, join_t *j, probe_t *p, const char *what, cass_q q, const cql_value *v, size_t n) {
    p->join = j;
    p->found = false;
    p->what = what;
    cass_exec(s, q, v, n, NULL, on_probe, p);
}

/* ------------------------------------------------------------------ rows */

int cass_col_index(cql_result *r, const char *name) {
    int32_t n = cql_result_column_count(r);
    for (int32_t i = 0; i < n; i++) {
        cql_column c;
        if (cql_result_column(r, i, &c) == CQL_OK && c.name.len == strlen(name) &&
            memcmp(c.name.ptr, name, c.name.len) == 0)
            return (int)i;
    }
    return -1;
}

int cass_row_time_ms(cql_result *r, int col, int64_t *out) {
    int64_t v;
    int rc = cql_row_get_timestamp(r, col, &v);
    if (rc == CQL_ETYPE) rc = cql_row_get_bigint(r, col, &v);
    if (rc != CQL_OK) return rc;
    if (!time_ms_valid(v)) {
        log_warn("store", "a time of %lld ms read from Cassandra is out of range: row ignored", (long long)v);
        return CQL_ERANGE;
    }
    *out = v;
    return CQL_OK;
}

/* Decodes a message row of the MSG_COLS shape. */
bool cass_decode_message(cql_result *r, const uuid_t *conv, message_t *m) {
    cql_str content;
    m->conversation_id = *conv;
    if (!row_uuid(r, 0, &m->id) || !row_uuid(r, 1, &m->sender_id) || !row_uuid(r, 2, &m->receiver_id))
        return false;
    if (cql_row_get_text(r, 3, &content) == CQL_OK) {
        m->content = content.ptr;
        m->content_len = content.len;
    } else {
        m->content = "";
        m->content_len = 0;
    }
    if (cass_row_time_ms(r, 4, &m->created_at_ms) != CQL_OK)
        m->created_at_ms = ticks_to_unix_ms(uuid_time_ticks(&m->id));
    return uuid_version(&m->id) == 1 && time_ms_valid(m->created_at_ms); /* else damage: skipped */
}
