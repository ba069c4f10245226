/*
 * cql_prepared.c - the prepare cache: one entry per statement text that
 * cql_execute() or a prepared BATCH statement has used, with its id and the
 * bind indexes of its partition key (routing reads them, cql_pool.c).
 *
 * Prepared statements
 *   A node only knows the statements prepared on it.  The cache entry's id
 *   (an MD5 of the query, the same on every node) is learned by one PREPARE
 *   on any host, which is then repeated on every other ready host.  A node
 *   that still answers UNPREPARED (it restarted, joined later, or the two
 *   frames raced) gets a PREPARE of its own, and the request is resent to
 *   that same node, once.
 *
 * Entries live as long as the client (cql_prep_cache_free()), so requests
 * and PREPAREs may keep pointers to them.
 */
#include "cql_client_internal.h"

#include <stdlib.h>
#include <string.h>

#define PREP_BUCKETS 256

/* ---- prepare cache ---------------------------------------------------- */

int cql_prep_cache_init(cql_client *c)
{
    c->prep_buckets = PREP_BUCKETS;
    c->prep_tab = calloc(c->prep_buckets, sizeof *c->prep_tab);
    return c->prep_tab ? 0 : CQL_ENOMEM;
}

void cql_prep_cache_free(cql_client *c)
{
    if (!c->prep_tab)
        return;
    for (size_t i = 0; i < c->prep_buckets; i++) {
        prep_entry *e = c->prep_tab[i], *n;
        for (; e; e = n) {
            n = e->next;
            free(e->query);
            free(e->id);
            free(e->pk);
            free(e);
        }
    }
    free(c->prep_tab);
}

static uint32_t hash_str(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 16777619u;
    return h;
}

static prep_entry *prep_get(cql_client *c, const char *q, size_t qlen)
{
    uint32_t h = hash_str(q, qlen);
    prep_entry **b = &c->prep_tab[h % c->prep_buckets];
    for (prep_entry *e = *b; e; e = e->next)
        if (e->hash == h && e->qlen == qlen && !memcmp(e->query, q, qlen))
            return e;
    prep_entry *e = calloc(1, sizeof *e);
    if (!e || !(e->query = malloc(qlen + 1))) {
        free(e);
        return NULL;
    }
    memcpy(e->query, q, qlen);
    e->query[qlen] = '\0';
    e->qlen = qlen;
    e->hash = h;
    e->next = *b;
    *b = e;
    return e;
}

/* Records what a PREPARED result says about e: its id and, for routing,
 * the partition key's bind indexes.  Returns CQL_ENOMEM or 0. */
static int prep_learn(prep_entry *e, const cql_result *res)
{
    const uint8_t *id;
    size_t idlen;
    if (cql_result_prepared_id(res, &id, &idlen))
        return CQL_EPROTO;
    int32_t npk = cql_result_pk_count(res);
    if (npk < 0 || npk > UINT16_MAX)
        npk = 0;
    uint8_t *copy = malloc(idlen);
    uint16_t *pk = npk ? malloc((size_t)npk * sizeof *pk) : NULL;
    if (!copy || (npk && !pk)) {
        free(copy);
        free(pk);
        return CQL_ENOMEM;
    }
    memcpy(copy, id, idlen);
    for (int32_t i = 0; i < npk; i++)
        pk[i] = (uint16_t)cql_result_pk_index(res, i); /* checked by the parser */
    free(e->id);
    free(e->pk);
    e->id = copy;
    e->idlen = idlen;
    e->pk = pk;
    e->npk = (uint16_t)npk;
    return 0;
}

/*
 * Ends the PREPARE numbered seq, of entry e.  On success (status 0) the
 * requests waiting for it go back to the front of pending, in order.  On a
 * server error or a timeout they fail with the same outcome (the statement
 * cannot run); with requeue (the connection was lost, nothing ran) they go
 * back to pending unpinned, to be retried elsewhere.
 */
void cql_prepare_done(cql_client *c, prep_entry *e, uint64_t seq, bool global, int status,
                      cql_result *res, bool requeue)
{
    if (global && e->seq == seq) {
        e->seq = 0;
        if (status)
            e->state = P_NONE; /* the next use prepares again */
    }
    if (e->reprep_seq == seq) {
        e->reprep_seq = 0;
        e->reprep_host = NULL;
    }
    req *prev;
    /* From the tail, pushing to the front: keeps the waiters' order. */
    for (req *r = c->waiting.tail; r; r = prev) {
        prev = r->qprev;
        if (r->seq != seq)
            continue;
        r->seq = 0;
        if (status && !requeue) {
            cql_req_complete(c, r, status, res);
            continue;
        }
        if (status)
            r->target = NULL;
        cql_rl_remove(&c->waiting, r);
        cql_req_to_pending(c, r, true);
    }
}

/* ---- preparing -------------------------------------------------------- */

/* A PREPARE of e on host target (NULL: any), numbered for its waiters. */
static req *make_prepare_req(cql_client *c, prep_entry *e, host *target, bool global)
{
    req *p = cql_req_internal(c, RK_PREPARE);
    if (!p)
        return NULL;
    p->prep = e;
    p->target = target;
    p->global = global;
    p->seq = ++c->prep_seq;
    return p;
}

/* After e's first successful PREPARE: prepare it on every other ready
 * host too, so that routed EXECUTEs find it there.  Best effort. */
static void prepare_elsewhere(cql_client *c, prep_entry *e, const host *done)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        if (h == done || !cql_host_ready(h))
            continue;
        req *p = make_prepare_req(c, e, h, false);
        if (!p)
            return;
        cql_req_to_queue(&h->cn, p, true);
    }
}

/*
 * Makes sure every statement r executes has a known id.  Returns 1 when r
 * can be sent now, 0 when it must wait (r->seq says for which PREPARE),
 * < 0 on error.  A missing id is learned by one PREPARE on any ready host,
 * shared by every request that needs it.
 */
int cql_ensure_prepared(cql_client *c, req *r)
{
    uint64_t wait = 0;
    for (size_t i = 0; i < (r->kind == RK_BATCH ? r->n_parts : 1); i++) {
        prep_entry **slot;
        const char *q;
        size_t qlen;
        if (r->kind == RK_EXECUTE) {
            slot = &r->prep;
            q = r->query;
            qlen = r->qlen;
        } else if (r->kind == RK_BATCH && r->parts[i].prepared) {
            slot = &r->parts[i].prep;
            q = r->parts[i].query;
            qlen = r->parts[i].qlen;
        } else {
            continue;
        }
        if (!*slot && !(*slot = prep_get(c, q, qlen)))
            return CQL_ENOMEM;
        prep_entry *e = *slot;
        if (e->state == P_READY)
            continue;
        if (e->state == P_NONE) {
            conn *cn = cql_any_ready(c);
            if (!cn)
                return CQL_ENOHOST; /* not reached: cql_dispatch checks n_ready */
            req *p = make_prepare_req(c, e, NULL, true);
            if (!p)
                return CQL_ENOMEM;
            e->state = P_PREPARING;
            e->seq = p->seq;
            cql_req_to_queue(cn, p, true);
        }
        if (!wait)
            wait = e->seq;
    }
    r->seq = wait;
    return wait ? 0 : 1;
}

/* ---- receiving -------------------------------------------------------- */

/* Finds the prepared entry among r's statements whose id is `id`. */
static prep_entry *req_entry_with_id(req *r, const uint8_t *id, size_t idlen)
{
    for (size_t i = 0; i < (r->kind == RK_BATCH ? r->n_parts : 1); i++) {
        prep_entry *e = r->kind == RK_BATCH ? r->parts[i].prep : r->prep;
        if (e && e->idlen == idlen && !memcmp(e->id, id, idlen))
            return e;
    }
    return NULL;
}

/* UNPREPARED from cn's host: prepare there (sharing a PREPARE already on
 * its way), then resend r to that host.  Once per request. */
void cql_on_unprepared(cql_client *c, conn *cn, req *r, const cql_error *err)
{
    host *h = cn->h;
    r->reprepared = true;
    r->target = h;
    prep_entry *e = req_entry_with_id(r, err->unprepared_id, err->unprepared_id_len);
    if (!e) {
        /* Sent with an id that has been replaced since: resend as is. */
        cql_req_to_pending(c, r, true);
        return;
    }
    uint64_t seq;
    if (e->reprep_host == h && e->reprep_seq) {
        seq = e->reprep_seq;
    } else {
        req *p = make_prepare_req(c, e, h, false);
        if (!p) {
            cql_req_complete(c, r, CQL_ENOMEM, NULL);
            return;
        }
        e->reprep_host = h;
        e->reprep_seq = seq = p->seq;
        cql_req_to_queue(cn, p, true);
    }
    r->seq = seq;
    cql_rl_push(&c->waiting, r, false);
    r->where = W_WAITING;
}

void cql_prepare_on_response(cql_client *c, conn *cn, req *r, int rc, cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    prep_entry *e = r->prep;
    uint64_t seq = r->seq;
    bool global = r->global;
    cql_req_detach(c, r);
    cql_req_free(r);
    int status = rc ? rc : err ? CQL_ESERVER : 0;
    if (!status && cql_result_kind(res) != CQL_RESULT_PREPARED)
        status = CQL_EPROTO;
    if (!status)
        status = prep_learn(e, res);
    if (!status && global) {
        e->state = P_READY;
        cql_prepare_done(c, e, seq, true, 0, NULL, false);
        prepare_elsewhere(c, e, cn->h);
        return;
    }
    cql_prepare_done(c, e, seq, global, status, status == CQL_ESERVER ? res : NULL, false);
}

