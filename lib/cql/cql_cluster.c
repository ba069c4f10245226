/*
 * cql_cluster.c - what the client knows of the cluster, learned over the
 * control connection: which nodes exist (they become hosts, cql_pool.c),
 * their data centers and tokens (the ring routing reads), and the events
 * that announce a change.
 *
 * Topology
 *   The first connection to become ready is the control connection: it
 *   REGISTERs for TOPOLOGY_CHANGE and STATUS_CHANGE events and reads
 *   system.local, then system.peers_v2 (system.peers when that table does
 *   not exist), at once, every topology_refresh_ms, shortly after a host
 *   reconnects and after a topology event.  Hosts are never freed before
 *   the client: one that leaves the ring is deactivated (connection closed,
 *   no reconnect), so host pointers and indexes stay valid for the ring,
 *   the prepare cache and the epoll tags.
 */
#include "cql_client_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOPO_RETRY_MS 2000      /* after a failed topology refresh */
#define TOPO_DEBOUNCE_MS 1000   /* after an event or a reconnect: let the node settle */

/*
 * Makes a ready host the control connection, when there is none: it
 * REGISTERs for events (a failed REGISTER only costs the events) and
 * refreshes the topology at once.  Prefers hosts in the ring.
 */
void cql_control_pick(cql_client *c)
{
    if (!c->discovery || c->control)
        return;
    host *best = NULL;
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        if (cql_host_ready(h) && (!best || (h->in_ring && !best->in_ring)))
            best = h;
    }
    if (!best)
        return;
    c->control = best;
    (void)cql_conn_send_setup(c, &best->cn, RK_REGISTER);
    if (c->topo_state == T_IDLE)
        c->next_refresh = cql_now_ms();
}

/* ---- topology --------------------------------------------------------- */

void cql_topo_reset(cql_client *c)
{
    for (size_t i = 0; i < c->topo_n; i++)
        free(c->topo[i].tokens);
    c->topo_n = 0;
}

void cql_topo_fail(cql_client *c)
{
    cql_topo_reset(c);
    c->topo_state = T_IDLE;
    c->next_refresh = cql_now_ms() + TOPO_RETRY_MS;
}

void cql_topo_refresh_soon(cql_client *c)
{
    uint64_t t = cql_now_ms() + TOPO_DEBOUNCE_MS;
    if (t < c->next_refresh)
        c->next_refresh = t;
}

static int topo_send(cql_client *c, int kind, bool v2)
{
    static const char q_local[] =
        "SELECT tokens, data_center, rpc_address, partitioner FROM system.local";
    static const char q_peers_v2[] =
        "SELECT peer, native_address, native_port, data_center, tokens FROM system.peers_v2";
    static const char q_peers[] = "SELECT peer, rpc_address, data_center, tokens FROM system.peers";
    if (!c->control || !cql_host_ready(c->control))
        return CQL_ECONN;
    req *r = cql_req_internal(c, kind);
    if (!r)
        return CQL_ENOMEM;
    r->peers_v2 = v2;
    r->query = kind == RK_TOPO_LOCAL ? q_local : v2 ? q_peers_v2 : q_peers;
    r->qlen = strlen(r->query);
    cql_qparams_init(&r->params);
    r->params.consistency = CQL_ONE; /* system tables are node-local */
    cql_req_to_queue(&c->control->cn, r, true);
    return 0;
}

void cql_topo_start(cql_client *c)
{
    cql_topo_reset(c);
    if (topo_send(c, RK_TOPO_LOCAL, false)) {
        cql_topo_fail(c);
        return;
    }
    c->topo_state = T_LOCAL;
}

static bool parse_i64(cql_str s, int64_t *out)
{
    char buf[24];
    if (s.len == 0 || s.len >= sizeof buf)
        return false;
    memcpy(buf, s.ptr, s.len);
    buf[s.len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf)
        return false;
    *out = v;
    return true;
}

static void copy_text(char *dst, size_t size, const cql_result *res, int32_t col)
{
    cql_str s;
    dst[0] = '\0';
    if (cql_row_get_text(res, col, &s) == 0)
        snprintf(dst, size, "%.*s", s.len > 255 ? 255 : (int)s.len, s.ptr);
}

/* Adds an entry for the current row: tokens at column tcol, data center at
 * dcol.  Returns 0 or a negative code. */
static int topo_add(cql_client *c, const cql_result *res, int32_t tcol, int32_t dcol,
                    topo_entry **out)
{
    if (c->topo_n == c->topo_cap) {
        size_t cap = c->topo_cap ? c->topo_cap * 2 : 8;
        topo_entry *n = realloc(c->topo, cap * sizeof *n);
        if (!n)
            return CQL_ENOMEM;
        c->topo = n;
        c->topo_cap = cap;
    }
    topo_entry *e = &c->topo[c->topo_n];
    memset(e, 0, sizeof *e);
    copy_text(e->dc, sizeof e->dc, res, dcol);
    if (cql_row_is_null(res, tcol) != 1) {
        cql_iter it;
        int rc = cql_row_get_text_set(res, tcol, &it);
        if (rc)
            return rc;
        e->n_tokens = (size_t)it.left;
        if (c->murmur3 && it.left > 0) {
            e->tokens = calloc((size_t)it.left, sizeof *e->tokens);
            if (!e->tokens)
                return CQL_ENOMEM;
            cql_str s;
            size_t k = 0;
            while (k < e->n_tokens && (rc = cql_iter_next_text(&it, &s)) == 1)
                if (!parse_i64(s, &e->tokens[k++]))
                    rc = CQL_EPROTO;
            if (rc < 0 || k != e->n_tokens) {
                free(e->tokens);
                e->tokens = NULL;
                return rc < 0 ? rc : CQL_EPROTO;
            }
        }
    }
    c->topo_n++;
    *out = e;
    return 0;
}

static int topo_on_local(cql_client *c, cql_result *res)
{
    if (cql_result_kind(res) != CQL_RESULT_ROWS || cql_result_next_row(res) != 1)
        return CQL_EPROTO;
    char part[256];
    copy_text(part, sizeof part, res, 3);
    size_t pl = strlen(part), sl = strlen("Murmur3Partitioner");
    /* Token routing only for Murmur3 (tokens of other partitioners are
     * not 64-bit numbers); discovery works with any. */
    c->murmur3 = pl >= sl && !strcmp(part + pl - sl, "Murmur3Partitioner");
    topo_entry *e;
    int rc = topo_add(c, res, 0, 1, &e);
    if (rc)
        return rc;
    e->h = c->control; /* whatever its rpc_address says, it is this node */
    return 0;
}

static int topo_on_peers(cql_client *c, cql_result *res, bool v2)
{
    if (cql_result_kind(res) != CQL_RESULT_ROWS)
        return CQL_EPROTO;
    uint16_t default_port = cql_sa_port(&c->control->sa);
    int rc;
    while ((rc = cql_result_next_row(res)) == 1) {
        uint8_t peer[16], rpc[16];
        size_t plen, rlen;
        int32_t port = default_port;
        if (cql_row_get_inet(res, 0, peer, &plen) != 0)
            continue; /* a row without an address is useless */
        static const uint8_t any[16] = {0};
        if (cql_row_get_inet(res, 1, rpc, &rlen) != 0 || !memcmp(rpc, any, rlen)) {
            /* no or wildcard client address: the node's own address */
            memcpy(rpc, peer, plen);
            rlen = plen;
        }
        if (v2 && (cql_row_get_int(res, 2, &port) != 0 || port <= 0 || port > 65535))
            port = default_port;
        topo_entry *e;
        if ((rc = topo_add(c, res, v2 ? 4 : 3, v2 ? 3 : 2, &e)))
            return rc;
        cql_sa_make(&e->sa, &e->salen, rpc, rlen, (uint16_t)port);
    }
    return rc < 0 ? rc : 0;
}

static host *topo_host_for(cql_client *c, topo_entry *e)
{
    if (e->h)
        return e->h;
    host *h = cql_host_by_sa(c, &e->sa);
    if (h)
        return h;
    char name[INET6_ADDRSTRLEN], port[8];
    const void *a = e->sa.ss_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)(const void *)&e->sa)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)(const void *)&e->sa)->sin6_addr;
    if (!inet_ntop(e->sa.ss_family, a, name, sizeof name))
        return NULL;
    snprintf(port, sizeof port, "%u", (unsigned)cql_sa_port(&e->sa));
    char *n = strdup(name), *p = strdup(port);
    if (!n || !p) {
        free(n);
        free(p);
        return NULL;
    }
    h = cql_host_add(c, n, p);
    if (h) {
        h->sa = e->sa;
        h->salen = e->salen;
    }
    return h;
}

/* A ring of the total tokens the refresh parsed, each owned by its host
 * (topo_apply() has set every entry's host).  Returns 0 or a negative
 * code. */
static int topo_ring(cql_client *c, size_t total, cql_ring *ring)
{
    int64_t *toks = total ? malloc(total * sizeof *toks) : NULL;
    uint32_t *owners = total ? malloc(total * sizeof *owners) : NULL;
    if (total && (!toks || !owners)) {
        free(toks);
        free(owners);
        return CQL_ENOMEM;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->topo_n; i++)
        for (size_t j = 0; c->topo[i].tokens && j < c->topo[i].n_tokens; j++) {
            toks[k] = c->topo[i].tokens[j];
            owners[k++] = c->topo[i].h->idx;
        }
    int rc = cql_ring_build(ring, toks, owners, k);
    free(toks);
    free(owners);
    return rc;
}

/* The refresh is complete: reconcile the hosts and swap the ring in. */
static void topo_apply(cql_client *c)
{
    size_t total = 0;
    for (size_t i = 0; i < c->nhosts; i++)
        c->hosts[i]->seen = false;
    for (size_t i = 0; i < c->topo_n; i++) {
        topo_entry *e = &c->topo[i];
        e->h = topo_host_for(c, e);
        if (!e->h) {
            cql_topo_fail(c); /* out of memory: keep the old view, retry later */
            return;
        }
        if (!e->h->seen)
            e->h->n_tokens = 0;
        e->h->seen = true;
        e->h->n_tokens += (uint32_t)e->n_tokens;
        snprintf(e->h->dc, sizeof e->h->dc, "%s", e->dc);
        total += e->tokens ? e->n_tokens : 0;
    }
    cql_ring ring;
    cql_ring_init(&ring);
    if (topo_ring(c, total, &ring)) {
        cql_topo_fail(c);
        return;
    }
    cql_ring_free(&c->ring);
    c->ring = ring;
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        h->in_ring = h->seen;
        if (h->seen)
            cql_host_activate(h);
        else if (!h->contact)
            cql_host_deactivate(c, h); /* decommissioned or removed */
        if (!h->seen)
            h->n_tokens = 0;
    }
    cql_topo_reset(c);
    c->topo_state = T_IDLE;
    c->topo_version++;
    c->pub_dirty = true;
    c->next_refresh = cql_now_ms() + c->refresh_ms;
}

/* EVENT frames on the control connection (section 4.2.6). */
void cql_topo_on_event(cql_client *c, const cql_header *hd, const uint8_t *body)
{
    if (hd->flags)
        return; /* events carry no tracing / warnings: not one we know */
    cql_event ev;
    if (cql_event_parse(body, hd->length, &ev))
        return;
    bool topo = ev.type.len == 15 && !memcmp(ev.type.ptr, "TOPOLOGY_CHANGE", 15);
    bool status = ev.type.len == 13 && !memcmp(ev.type.ptr, "STATUS_CHANGE", 13);
    bool up = status && ev.change.len == 2 && !memcmp(ev.change.ptr, "UP", 2);
    if (up && ev.has_addr && ev.port > 0 && ev.port <= 65535) {
        /* Reconnect now rather than at the end of its back-off. */
        struct sockaddr_storage sa;
        socklen_t sl;
        cql_sa_make(&sa, &sl, ev.addr, ev.addr_len, (uint16_t)ev.port);
        host *h = cql_host_by_sa(c, &sa);
        if (h && h->active && h->cn.state == C_DOWN) {
            h->attempt = 0;
            h->retry_at = cql_now_ms();
        }
    }
    if (topo || up) {
        /* The node announcing itself is not serving yet: wait a little. */
        cql_topo_refresh_soon(c);
    }
}

void cql_topo_on_response(cql_client *c, req *r, int rc, cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    int kind = r->kind;
    bool v2 = r->peers_v2;
    cql_req_detach(c, r);
    cql_req_free(r);
    if (!c->control || (kind == RK_TOPO_LOCAL) != (c->topo_state == T_LOCAL)) {
        cql_topo_fail(c);
        return;
    }
    if (kind == RK_TOPO_PEERS && v2 && err && err->code == CQL_INVALID) {
        /* "unconfigured table peers_v2": Cassandra before 4.0 */
        c->peers_v2_missing = true;
        if (topo_send(c, RK_TOPO_PEERS, false))
            cql_topo_fail(c);
        return;
    }
    if (rc || err) {
        cql_topo_fail(c);
        return;
    }
    if (kind == RK_TOPO_LOCAL) {
        if (topo_on_local(c, res) || topo_send(c, RK_TOPO_PEERS, !c->peers_v2_missing)) {
            cql_topo_fail(c);
            return;
        }
        c->topo_state = T_PEERS;
        return;
    }
    if (topo_on_peers(c, res, v2)) {
        cql_topo_fail(c);
        return;
    }
    topo_apply(c);
}

