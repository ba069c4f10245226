/*
 * cql_request.c - a request's life on the I/O thread, from the moment
 * cql_take_submissions() puts it on pending to its completion: the lists it
 * moves through (see "Request life cycle" in cql_client_internal.h), its
 * frame, routing from pending to a connection's queue (cql_dispatch()),
 * completion, and time-outs.  Internal requests (PREPARE, topology queries,
 * connection set-up) share the structure and the lists, without callback.
 */
#include "cql_client_internal.h"

#include <stdlib.h>

/* ORPHAN is its address (cql_client_internal.h); its fields are never
 * read. */
req cql_orphan_marker;

/* ---- lists ------------------------------------------------------------ */

void cql_rl_push(rlist *l, req *r, bool front)
{
    r->qprev = r->qnext = NULL;
    if (!l->head) {
        l->head = l->tail = r;
    } else if (front) {
        r->qnext = l->head;
        l->head->qprev = r;
        l->head = r;
    } else {
        r->qprev = l->tail;
        l->tail->qnext = r;
        l->tail = r;
    }
}

void cql_rl_remove(rlist *l, req *r)
{
    if (r->qprev) r->qprev->qnext = r->qnext; else l->head = r->qnext;
    if (r->qnext) r->qnext->qprev = r->qprev; else l->tail = r->qprev;
    r->qprev = r->qnext = NULL;
}

void cql_live_add(cql_client *c, req *r)
{
    r->live = true;
    r->lprev = NULL;
    r->lnext = c->live_head;
    if (c->live_head)
        c->live_head->lprev = r;
    c->live_head = r;
    if (r->deadline < c->next_scan)
        c->next_scan = r->deadline;
}

static void live_remove(cql_client *c, req *r)
{
    if (!r->live)
        return;
    if (r->lprev) r->lprev->lnext = r->lnext; else c->live_head = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    r->lprev = r->lnext = NULL;
    r->live = false;
}

void cql_req_free(req *r)
{
    if (!r)
        return;
    free(r->values);
    free(r->parts);
    free(r->arena);
    free(r);
}

/* Removes r from wherever it is (it keeps its stream slot, if any: the
 * caller deals with that). */
void cql_req_detach(cql_client *c, req *r)
{
    switch (r->where) {
    case W_PENDING: cql_rl_remove(&c->pending, r); break;
    case W_WAITING: cql_rl_remove(&c->waiting, r); break;
    case W_QUEUED: cql_rl_remove(&r->conn->queue, r); break;
    default: break;
    }
    r->where = W_NONE;
    r->conn = NULL;
    live_remove(c, r);
}

void cql_req_complete(cql_client *c, req *r, int status, cql_result *res)
{
    cql_req_detach(c, r);
    if (r->cb)
        r->cb(r->arg, status, status == 0 || status == CQL_ESERVER ? res : NULL);
    cql_req_free(r);
}

void cql_req_to_pending(cql_client *c, req *r, bool front)
{
    cql_rl_push(&c->pending, r, front);
    r->where = W_PENDING;
}

void cql_req_to_queue(conn *cn, req *r, bool front)
{
    cql_rl_push(&cn->queue, r, front);
    r->where = W_QUEUED;
    r->conn = cn;
}

/* Fails every pending and waiting request (used when the client is down). */
void cql_req_fail_queued(cql_client *c, int status)
{
    while (c->waiting.head)
        cql_req_complete(c, c->waiting.head, status, NULL);
    while (c->pending.head)
        cql_req_complete(c, c->pending.head, status, NULL);
}

/*
 * Disposes of an internal request that will get no answer.  A PREPARE ends
 * with `status` (its waiters requeued when requeue, else failed), a
 * topology query ends the refresh, set-up requests are just freed.
 */
void cql_req_drop_internal(cql_client *c, req *r, int status, bool requeue)
{
    cql_req_detach(c, r);
    if (r->kind == RK_PREPARE)
        cql_prepare_done(c, r->prep, r->seq, r->global, status, NULL, requeue);
    else if (r->kind == RK_TOPO_LOCAL || r->kind == RK_TOPO_PEERS)
        cql_topo_fail(c);
    cql_req_free(r);
}

void cql_req_fail(cql_client *c, req *r, int status, bool requeue)
{
    if (r->internal)
        cql_req_drop_internal(c, r, status, requeue);
    else
        cql_req_complete(c, r, status, NULL);
}

req *cql_req_internal(cql_client *c, int kind)
{
    req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    r->internal = true;
    r->stream = -1;
    r->deadline = cql_now_ms() + c->request_timeout_ms;
    cql_live_add(c, r);
    return r;
}

/* ---- sending ---------------------------------------------------------- */

int cql_req_build_frame(conn *cn, req *r)
{
    switch (r->kind) {
    case RK_QUERY:
    case RK_TOPO_LOCAL:
    case RK_TOPO_PEERS:
        return cql_build_query(&cn->out, r->stream, r->query, r->qlen, &r->params);
    case RK_EXECUTE:
        return cql_build_execute(&cn->out, r->stream, r->prep->id, r->prep->idlen, &r->params);
    case RK_PREPARE:
        return cql_build_prepare(&cn->out, r->stream, r->prep->query, r->prep->qlen);
    case RK_BATCH: {
        cql_batch_item *items = calloc(r->n_parts, sizeof *items);
        if (!items)
            return CQL_ENOMEM;
        for (size_t i = 0; i < r->n_parts; i++) {
            const batch_part *p = &r->parts[i];
            items[i].prepared = p->prepared;
            items[i].query = p->query;
            items[i].query_len = p->qlen;
            if (p->prepared) {
                items[i].id = p->prep->id;
                items[i].id_len = p->prep->idlen;
            }
            items[i].values = p->values;
            items[i].n_values = p->n_values;
        }
        int rc = cql_build_batch(&cn->out, r->stream, r->batch_type, items, r->n_parts,
                                 r->params.consistency, r->params.serial_consistency,
                                 r->params.timestamp_us);
        free(items);
        return rc;
    }
    default:
        return CQL_EINVAL;
    }
}

void cql_dispatch(cql_client *c)
{
    req *r;
    /* Route: pending -> [waiting] -> a ready connection's queue. */
    while (c->n_ready && (r = c->pending.head)) {
        if (r->kind == RK_EXECUTE || r->kind == RK_BATCH) {
            int ok = cql_ensure_prepared(c, r);
            if (ok < 0) {
                cql_req_complete(c, r, ok, NULL);
                continue;
            }
            if (ok == 0) {
                cql_rl_remove(&c->pending, r);
                cql_rl_push(&c->waiting, r, false);
                r->where = W_WAITING;
                continue;
            }
        }
        conn *cn = cql_route(c, r);
        if (!cn)
            break; /* not reached while n_ready > 0 */
        cql_rl_remove(&c->pending, r);
        cql_req_to_queue(cn, r, false);
    }
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        if (cn->state == C_READY && (cn->queue.head || cn->out.len > cn->out_off))
            cql_conn_send(c, cn);
    }
}

/* ---- time-outs -------------------------------------------------------- */

void cql_scan_timeouts(cql_client *c, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    req *nx;
    for (req *r = c->live_head; r; r = nx) {
        nx = r->lnext;
        if (r->deadline > now) {
            if (r->deadline < next)
                next = r->deadline;
            continue;
        }
        if (r->where == W_INFLIGHT) {
            r->conn->slots[r->stream] = ORPHAN;
            r->conn->n_orphans++;
        }
        if (r->internal) {
            cql_req_drop_internal(c, r, CQL_ETIMEDOUT, false);
            nx = c->live_head; /* its waiters may have been freed: restart */
            next = UINT64_MAX;
            continue;
        }
        cql_req_complete(c, r, CQL_ETIMEDOUT, NULL);
    }
    c->next_scan = next;
    /* A node that keeps its socket open but stops answering would hold every
     * stream id with timed-out requests, and the connection would look ready
     * while no request could be sent on it. Past a quarter of the stream ids
     * held that way, close it: reconnection with back-off takes over, and
     * routing falls back to other replicas meanwhile. */
    size_t limit = c->max_streams / 4 ? c->max_streams / 4 : 1;
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        if (cn->state == C_READY && cn->n_orphans >= limit)
            cql_conn_fail(c, cn, "too many requests timed out: the node stopped answering");
    }
}

