/*
 * cql_submit.c - cql_query(), cql_execute() and cql_batch(), on the
 * caller's thread: check the arguments, copy everything the request needs
 * (texts, values, paging state) into one arena it owns, append it to the
 * submit queue under `mu` and wake the I/O thread.  Nothing here calls a
 * callback: a submit call that returns 0 has only queued its request, and
 * the I/O thread completes it later (the rule cql.h states).  The I/O
 * thread's side of the queue, cql_take_submissions(), ends this file.
 */
#include "cql_client_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- request construction (any thread) -------------------------------- */

static size_t values_bytes(const cql_value *v, size_t n)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].ext && v[i].len > 0)
            total += (size_t)v[i].len;
    return total;
}

static int values_check(const cql_value *v, size_t n)
{
    if (n > UINT16_MAX || (n && !v))
        return CQL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (v[i].type == CQL_TYPE_INVALID || v[i].len < -2 ||
            (!v[i].ext && v[i].len > (int32_t)sizeof v[i].inl))
            return CQL_EINVAL;
    return 0;
}

/* Copies n values into dst, moving external bytes into the arena. */
static void values_copy(cql_value *dst, const cql_value *src, size_t n, char **arena)
{
    for (size_t i = 0; i < n; i++) {
        dst[i] = src[i];
        if (src[i].ext && src[i].len > 0) {
            memcpy(*arena, src[i].ext, (size_t)src[i].len);
            dst[i].ext = (const uint8_t *)*arena;
            *arena += src[i].len;
        }
    }
}

static uint16_t pick_consistency(const cql_client *c, const cql_query_opts *o)
{
    return o && o->consistency != CQL_CONSISTENCY_DEFAULT ? o->consistency : c->consistency;
}

static uint64_t pick_deadline(const cql_client *c, const cql_query_opts *o)
{
    uint32_t t = o && o->timeout_ms ? o->timeout_ms : c->request_timeout_ms;
    return cql_now_ms() + t;
}

/* The consistency o asks for (else the client's) into *cl, once it and o's
 * serial consistency are checked. */
static int check_opts(const cql_client *c, const cql_query_opts *o, uint16_t *cl)
{
    *cl = pick_consistency(c, o);
    if (*cl > CQL_LOCAL_ONE)
        return CQL_EINVAL;
    if (o && o->serial_consistency && o->serial_consistency != CQL_SERIAL &&
        o->serial_consistency != CQL_LOCAL_SERIAL)
        return CQL_EINVAL;
    return 0;
}

/* What every user request carries: kind, callback, deadline, and the
 * options QUERY, EXECUTE and BATCH all send. */
static void req_init(const cql_client *c, req *r, int kind, uint16_t cl, const cql_query_opts *o,
                     cql_result_cb cb, void *arg)
{
    r->kind = kind;
    r->cb = cb;
    r->arg = arg;
    r->stream = -1;
    r->deadline = pick_deadline(c, o);
    cql_qparams_init(&r->params);
    r->params.consistency = cl;
    if (o) {
        r->params.serial_consistency = o->serial_consistency;
        r->params.timestamp_us = o->timestamp_us;
    }
}

static int submit(cql_client *c, req *r)
{
    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        return CQL_ECLOSED;
    }
    r->qnext = NULL;
    if (c->sub_tail)
        c->sub_tail->qnext = r;
    else
        c->sub_head = r;
    c->sub_tail = r;
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    /* eventfd writes only fail on counter overflow, which cannot happen
     * with increments of 1 drained every loop. */
    ssize_t w = write(c->evfd, &one, sizeof one);
    (void)w;
    return 0;
}

static int make_query_req(cql_client *c, int kind, const char *cql, const cql_value *values,
                          size_t n, const cql_query_opts *o, cql_result_cb cb, void *arg,
                          req **out)
{
    int rc;
    if (!c || !cql || !cb)
        return CQL_EINVAL;
    uint16_t cl;
    if ((rc = values_check(values, n)) || (rc = check_opts(c, o, &cl)))
        return rc;
    size_t qlen = strlen(cql);
    size_t ps_len = o && o->paging_state ? o->paging_state_len : 0;
    if (qlen > INT32_MAX || ps_len > INT32_MAX)
        return CQL_EINVAL;
    req *r = calloc(1, sizeof *r);
    if (!r)
        return CQL_ENOMEM;
    r->arena = malloc(qlen + 1 + ps_len + values_bytes(values, n));
    r->values = n ? calloc(n, sizeof *r->values) : NULL;
    if (!r->arena || (n && !r->values)) {
        cql_req_free(r);
        return CQL_ENOMEM;
    }
    char *a = r->arena;
    memcpy(a, cql, qlen + 1);
    r->query = a;
    r->qlen = qlen;
    a += qlen + 1;
    values_copy(r->values, values, n, &a);
    r->n_values = n;
    req_init(c, r, kind, cl, o, cb, arg);
    r->params.values = r->values;
    r->params.n_values = n;
    if (o) {
        r->params.page_size = o->page_size;
        if (o->paging_state) {
            memcpy(a, o->paging_state, ps_len);
            r->params.paging_state = (const uint8_t *)a;
            r->params.paging_state_len = ps_len;
        }
    }
    *out = r;
    return 0;
}

/* QUERY and EXECUTE differ only in the request kind. */
static int submit_statement(cql_client *c, int kind, const char *cql, const cql_value *values, size_t n,
                            const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    req *r;
    int rc = make_query_req(c, kind, cql, values, n, opts, cb, arg, &r);
    if (rc)
        return rc;
    if ((rc = submit(c, r)))
        cql_req_free(r);
    return rc;
}

int cql_query(cql_client *c, const char *cql, const cql_value *values, size_t n,
              const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    return submit_statement(c, RK_QUERY, cql, values, n, opts, cb, arg);
}

int cql_execute(cql_client *c, const char *cql, const cql_value *values, size_t n,
                const cql_query_opts *opts, cql_result_cb cb, void *arg)
{
    return submit_statement(c, RK_EXECUTE, cql, values, n, opts, cb, arg);
}

/* The arena bytes and the value count n statements need, each statement
 * checked on the way. */
static int batch_size(const cql_batch_stmt *stmts, size_t n, size_t *bytes, size_t *nvals)
{
    int rc;
    *bytes = *nvals = 0;
    for (size_t i = 0; i < n; i++) {
        if (!stmts[i].cql || (rc = values_check(stmts[i].values, stmts[i].n_values)))
            return stmts[i].cql ? rc : CQL_EINVAL;
        size_t ql = strlen(stmts[i].cql);
        if (ql > INT32_MAX)
            return CQL_EINVAL;
        *bytes += ql + 1 + values_bytes(stmts[i].values, stmts[i].n_values);
        *nvals += stmts[i].n_values;
    }
    return 0;
}

/* Copies the statements into r's parts, arena and values (sized by
 * batch_size()). */
static void batch_copy(req *r, const cql_batch_stmt *stmts, size_t n)
{
    char *a = r->arena;
    cql_value *v = r->values;
    for (size_t i = 0; i < n; i++) {
        batch_part *p = &r->parts[i];
        size_t ql = strlen(stmts[i].cql);
        memcpy(a, stmts[i].cql, ql + 1);
        p->query = a;
        p->qlen = ql;
        a += ql + 1;
        values_copy(v, stmts[i].values, stmts[i].n_values, &a);
        p->values = v;
        p->n_values = stmts[i].n_values;
        v += stmts[i].n_values;
        p->prepared = stmts[i].prepared != 0;
    }
    r->n_parts = n;
}

int cql_batch(cql_client *c, enum cql_batch_type type, const cql_batch_stmt *stmts, size_t n,
              const cql_query_opts *o, cql_result_cb cb, void *arg)
{
    int rc;
    uint16_t cl;
    size_t bytes, nvals;
    if (!c || !cb || (unsigned)type > CQL_BATCH_COUNTER || n == 0 || n > UINT16_MAX || !stmts)
        return CQL_EINVAL;
    if ((rc = check_opts(c, o, &cl)) || (rc = batch_size(stmts, n, &bytes, &nvals)))
        return rc;
    req *r = calloc(1, sizeof *r);
    if (!r)
        return CQL_ENOMEM;
    r->arena = malloc(bytes);
    r->parts = calloc(n, sizeof *r->parts);
    r->values = nvals ? calloc(nvals, sizeof *r->values) : NULL;
    if (!r->arena || !r->parts || (nvals && !r->values)) {
        cql_req_free(r);
        return CQL_ENOMEM;
    }
    batch_copy(r, stmts, n);
    r->batch_type = (uint8_t)type;
    req_init(c, r, RK_BATCH, cl, o, cb, arg);
    if ((rc = submit(c, r)))
        cql_req_free(r);
    return rc;
}

/* ---- the I/O thread's side of the submit queue ------------------------ */

void cql_take_submissions(cql_client *c, bool *closing)
{
    pthread_mutex_lock(&c->mu);
    req *r = c->sub_head;
    c->sub_head = c->sub_tail = NULL;
    *closing = c->closing;
    pthread_mutex_unlock(&c->mu);
    while (r) {
        req *next = r->qnext;
        cql_live_add(c, r);
        cql_req_to_pending(c, r, false);
        if (c->down && c->n_ready == 0)
            cql_req_complete(c, r, CQL_ENOHOST, NULL);
        r = next;
    }
}

