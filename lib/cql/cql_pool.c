/*
 * cql_pool.c - the hosts the client keeps a connection to (one each: the
 * pool), whether any of them is ready, and which one a request goes to.
 *
 * Routing
 *   A prepared statement whose partition key columns are all bound (the
 *   PREPARED metadata lists their bind-marker indexes) has a routing key,
 *   hence a Murmur3 token; when the ring has more than one node the request
 *   goes to the token's owner, else to the next replicas (SimpleStrategy
 *   order: the next distinct owners clockwise), else to any ready host.
 *   Everything else (QUERY, statements without a key, one-node clusters)
 *   goes round-robin to the ready hosts.  A BATCH is routed by its first
 *   statement.
 *
 * Hosts are only ever appended (see "Topology" in cql_cluster.c): c->hosts
 * indexes are the ring's owner ids and part of the epoll tags.
 */
#include "cql_client_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_REPLICAS 3          /* replicas tried, in ring order, before any host */

/* ---- hosts ------------------------------------------------------------ */

static void format_label(host *h)
{
    bool v6 = strchr(h->name, ':') != NULL;
    snprintf(h->label, sizeof h->label, v6 ? "[%s]:%s" : "%s:%s", h->name, h->port);
}

/* Appends a host (connection down, inactive).  Takes name and port. */
host *cql_host_add(cql_client *c, char *name, char *port)
{
    if (c->nhosts == c->hosts_cap) {
        size_t cap = c->hosts_cap ? c->hosts_cap * 2 : 8;
        host **n = realloc(c->hosts, cap * sizeof *n);
        if (!n)
            goto fail;
        c->hosts = n;
        c->hosts_cap = cap;
    }
    if (c->nhosts >= UINT32_MAX)
        goto fail;
    host *h = calloc(1, sizeof *h);
    if (!h)
        goto fail;
    h->idx = (uint32_t)c->nhosts;
    h->name = name;
    h->port = port;
    format_label(h);
    h->cn.h = h;
    h->cn.fd = -1;
    cql_buf_init(&h->cn.out);
    c->hosts[c->nhosts++] = h;
    c->pub_dirty = true;
    return h;
fail:
    free(name);
    free(port);
    return NULL;
}

void cql_host_free(host *h)
{
    free(h->name);
    free(h->port);
    free(h->cn.slots);
    free(h->cn.free_ids);
    free(h->cn.in);
    cql_buf_free(&h->cn.out);
    free(h);
}

static bool sa_equal(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return false;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof x->sin6_addr);
    }
    return false;
}

uint16_t cql_sa_port(const struct sockaddr_storage *sa)
{
    if (sa->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)(const void *)sa)->sin_port);
    if (sa->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
    return 0;
}

/* addr is 4 or 16 bytes as an inet value carries them. */
void cql_sa_make(struct sockaddr_storage *sa, socklen_t *len, const uint8_t *addr, size_t alen,
                 uint16_t port)
{
    memset(sa, 0, sizeof *sa);
    if (alen == 4) {
        struct sockaddr_in *s = (void *)sa;
        s->sin_family = AF_INET;
        s->sin_port = htons(port);
        memcpy(&s->sin_addr, addr, 4);
        *len = sizeof *s;
    } else {
        struct sockaddr_in6 *s = (void *)sa;
        s->sin6_family = AF_INET6;
        s->sin6_port = htons(port);
        memcpy(&s->sin6_addr, addr, 16);
        *len = sizeof *s;
    }
}

host *cql_host_by_sa(cql_client *c, const struct sockaddr_storage *sa)
{
    for (size_t i = 0; i < c->nhosts; i++)
        if (c->hosts[i]->salen && sa_equal(&c->hosts[i]->sa, sa))
            return c->hosts[i];
    return NULL;
}

/* ---- readiness -------------------------------------------------------- */

/*
 * Recomputes the client's readiness.  "Down" means no host is ready and
 * every active host failed its last attempt since: requests then fail fast
 * with CQL_ENOHOST instead of waiting for their timeouts (a host that was
 * just lost gets one immediate reconnect before it counts as failed).
 */
void cql_update_ready(cql_client *c)
{
    if (c->n_ready > 0) {
        c->down = false;
        cql_set_ready_state(c, 1);
        return;
    }
    bool any = false, all_failed = true;
    for (size_t i = 0; i < c->nhosts; i++) {
        if (!c->hosts[i]->active)
            continue;
        any = true;
        if (!c->hosts[i]->failed)
            all_failed = false;
    }
    if (any && all_failed)
        c->down = true;
    if (c->down)
        cql_req_fail_queued(c, CQL_ENOHOST);
    cql_set_ready_state(c, c->down ? -1 : 0);
}

/* Takes host h out of service (it left the ring): closes its connection
 * without counting a failure and stops reconnecting. */
void cql_host_deactivate(cql_client *c, host *h)
{
    if (!h->active)
        return;
    h->active = false;
    if (h->cn.state != C_DOWN)
        cql_conn_close(c, &h->cn, NULL, false);
    c->pub_dirty = true;
    cql_update_ready(c);
}

void cql_host_activate(host *h)
{
    if (h->active)
        return;
    h->active = true;
    h->failed = false;
    h->attempt = 0;
    h->retry_at = 0;
}

/* ---- routing ---------------------------------------------------------- */

/* The token of r's partition, when r is a routable prepared statement. */
static bool req_token(cql_client *c, req *r, int64_t *tok)
{
    if (r->has_token) {
        *tok = r->token;
        return true;
    }
    const prep_entry *e = NULL;
    const cql_value *vals = NULL;
    size_t n = 0;
    if (r->kind == RK_EXECUTE) {
        e = r->prep;
        vals = r->values;
        n = r->n_values;
    } else if (r->kind == RK_BATCH && r->n_parts && r->parts[0].prepared) {
        e = r->parts[0].prep;
        vals = r->parts[0].values;
        n = r->parts[0].n_values;
    }
    if (!e || e->state != P_READY || e->npk == 0 || e->npk > 64)
        return false;
    const cql_value *comp[64];
    for (uint16_t i = 0; i < e->npk; i++) {
        if (e->pk[i] >= n)
            return false; /* fewer values than markers: the server will say */
        comp[i] = &vals[e->pk[i]];
    }
    c->keybuf.len = 0;
    if (cql_routing_key(&c->keybuf, comp, e->npk))
        return false; /* a null / unset key component */
    r->token = cql_murmur3_token(c->keybuf.data, c->keybuf.len);
    r->has_token = true;
    *tok = r->token;
    return true;
}

conn *cql_any_ready(cql_client *c)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        size_t k = (c->rr + i) % c->nhosts;
        if (cql_host_ready(c->hosts[k])) {
            c->rr = k + 1;
            return &c->hosts[k]->cn;
        }
    }
    return NULL;
}

conn *cql_route(cql_client *c, req *r)
{
    if (r->target) {
        if (cql_host_ready(r->target))
            return &r->target->cn;
        r->target = NULL;
    }
    int64_t tok;
    if (c->token_routing && c->ring.n_owners > 1 && req_token(c, r, &tok)) {
        uint32_t reps[MAX_REPLICAS];
        size_t n = cql_ring_replicas(&c->ring, tok, reps, MAX_REPLICAS);
        for (size_t i = 0; i < n; i++)
            if (reps[i] < c->nhosts && cql_host_ready(c->hosts[reps[i]]))
                return &c->hosts[reps[i]]->cn;
    }
    return cql_any_ready(c);
}

