/*
 * cql_client.c - the client's public face: options and their defaults,
 * cql_client_new() (which starts the I/O thread, cql_loop.c), the state
 * user threads read under `mu` (readiness, last error, the host snapshot),
 * and cql_client_close().  How the files of the client divide the work, the
 * threading design and the invariants: cql_client_internal.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cql_client_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define TOPO_REFRESH_DEFAULT_MS 60000

void cql_client_opts_init(cql_client_opts *o)
{
    memset(o, 0, sizeof *o);
    o->consistency = CQL_ONE;
    o->request_timeout_ms = 12000;
    o->connect_timeout_ms = 5000;
    o->reconnect_base_ms = 100;
    o->reconnect_max_ms = 10000;
    o->max_frame_body = CQL_MAX_BODY_DEFAULT;
    o->max_streams = CQL_MAX_STREAMS;
    o->disable_discovery = 0;
    o->disable_token_routing = 0;
    o->topology_refresh_ms = TOPO_REFRESH_DEFAULT_MS;
}

void cql_query_opts_init(cql_query_opts *o)
{
    memset(o, 0, sizeof *o);
    o->consistency = CQL_CONSISTENCY_DEFAULT;
    o->timestamp_us = -1;
}

void cql_set_last_error(cql_client *c, const char *fmt, ...)
{
    va_list ap;
    pthread_mutex_lock(&c->mu);
    va_start(ap, fmt);
    vsnprintf(c->last_error, sizeof c->last_error, fmt, ap);
    va_end(ap);
    pthread_mutex_unlock(&c->mu);
}

void cql_set_ready_state(cql_client *c, int s)
{
    pthread_mutex_lock(&c->mu);
    if (c->ready_state != s) {
        c->ready_state = s;
        pthread_cond_broadcast(&c->cv);
    }
    pthread_mutex_unlock(&c->mu);
}

/* Publishes the hosts for cql_client_hosts(): one short critical section,
 * taken only when something changed. */
void cql_publish(cql_client *c)
{
    c->pub_dirty = false;
    pthread_mutex_lock(&c->mu);
    if (c->pub_cap < c->nhosts) {
        cql_host_info *n = realloc(c->pub, c->nhosts * sizeof *n);
        if (!n) {
            pthread_mutex_unlock(&c->mu);
            c->pub_dirty = true; /* try again next time */
            return;
        }
        c->pub = n;
        c->pub_cap = c->nhosts;
    }
    for (size_t i = 0; i < c->nhosts; i++) {
        const host *h = c->hosts[i];
        cql_host_info *p = &c->pub[i];
        memset(p, 0, sizeof *p);
        snprintf(p->address, sizeof p->address, "%.*s", (int)sizeof p->address - 1, h->label);
        snprintf(p->datacenter, sizeof p->datacenter, "%s", h->dc);
        p->up = cql_host_ready(h);
        p->in_ring = h->in_ring;
        p->contact_point = h->contact;
        p->tokens = h->n_tokens;
        p->requests = h->requests;
    }
    c->pub_n = c->nhosts;
    c->pub_version = c->topo_version;
    pthread_mutex_unlock(&c->mu);
}

/* ---- lifecycle -------------------------------------------------------- */

static int parse_contact(const char *s, char **host_out, char **port_out)
{
    const char *colon = strrchr(s, ':');
    const char *hb = s, *he;
    const char *p = "9042";
    if (s[0] == '[') { /* [v6]:port */
        const char *close_b = strchr(s, ']');
        if (!close_b)
            return CQL_EINVAL;
        hb = s + 1;
        he = close_b;
        if (close_b[1] == ':')
            p = close_b + 2;
        else if (close_b[1])
            return CQL_EINVAL;
    } else if (colon && strchr(s, ':') == colon) {
        he = colon;
        p = colon + 1;
    } else {
        he = s + strlen(s); /* no port, or a bare IPv6 address */
    }
    if (he == hb || !*p)
        return CQL_EINVAL;
    *host_out = strndup(hb, (size_t)(he - hb));
    *port_out = strdup(p);
    if (!*host_out || !*port_out) {
        free(*host_out);
        free(*port_out);
        return CQL_ENOMEM;
    }
    return 0;
}

static void client_free(cql_client *c)
{
    for (size_t i = 0; i < c->nhosts; i++)
        cql_host_free(c->hosts[i]);
    free(c->hosts);
    free(c->keyspace);
    cql_prep_cache_free(c);
    cql_topo_reset(c);
    free(c->topo);
    cql_ring_free(&c->ring);
    cql_buf_free(&c->keybuf);
    free(c->pub);
    if (c->epfd >= 0)
        close(c->epfd);
    if (c->evfd >= 0)
        close(c->evfd);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

static bool keyspace_ok(const char *ks)
{
    /* USE is sent verbatim: allow identifiers and quoted identifiers only,
     * so the option cannot smuggle in another statement. */
    size_t n = strlen(ks);
    if (n == 0 || n > 250)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = ks[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '"'))
            return false;
    }
    return true;
}

static bool opts_valid(const cql_client_opts *o)
{
    return o->n_contact_points && o->contact_points && o->max_streams != 0 &&
           o->max_streams <= CQL_MAX_STREAMS && o->consistency <= CQL_LOCAL_ONE &&
           o->max_frame_body >= 1024 && o->max_frame_body <= INT32_MAX &&
           (!o->keyspace || keyspace_ok(o->keyspace));
}

/* A client with o's settings (zeros replaced by the defaults), no hosts,
 * no descriptors yet (-1): client_free() can take it from here. */
static cql_client *client_alloc(const cql_client_opts *o)
{
    cql_client *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->epfd = c->evfd = -1;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    cql_buf_init(&c->keybuf);
    cql_ring_init(&c->ring);
    c->consistency = o->consistency;
    c->request_timeout_ms = o->request_timeout_ms ? o->request_timeout_ms : 12000;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    c->backoff_base_ms = o->reconnect_base_ms ? o->reconnect_base_ms : 100;
    c->backoff_max_ms = o->reconnect_max_ms ? o->reconnect_max_ms : 10000;
    c->max_frame_body = o->max_frame_body;
    c->max_streams = o->max_streams;
    c->refresh_ms = o->topology_refresh_ms ? o->topology_refresh_ms : TOPO_REFRESH_DEFAULT_MS;
    c->discovery = !o->disable_discovery;
    c->token_routing = !o->disable_token_routing;
    c->next_scan = UINT64_MAX;
    c->next_refresh = UINT64_MAX;
    c->rng = (uint32_t)cql_now_ms() ^ (uint32_t)(uintptr_t)c;
    return c;
}

/* The contact points, as active hosts to connect to at once. */
static int add_contacts(cql_client *c, const cql_client_opts *o)
{
    int rc;
    for (size_t i = 0; i < o->n_contact_points; i++) {
        char *name, *port;
        if (!o->contact_points[i])
            return CQL_EINVAL;
        if ((rc = parse_contact(o->contact_points[i], &name, &port)))
            return rc;
        host *h = cql_host_add(c, name, port);
        if (!h)
            return CQL_ENOMEM;
        h->contact = true;
        h->active = true; /* retry_at 0: connect at once */
    }
    return 0;
}

/* The epoll set with the eventfd in it, then the I/O thread. */
static int start_io(cql_client *c)
{
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (c->epfd < 0 || c->evfd < 0)
        return CQL_ESYS;
    struct epoll_event ev = {0};
    ev.events = EPOLLIN;
    ev.data.u64 = 0; /* the eventfd; connections are tagged >= 1 */
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->evfd, &ev) < 0)
        return CQL_ESYS;
    cql_publish(c);
    if (pthread_create(&c->thread, NULL, cql_io_main, c) != 0)
        return CQL_ESYS;
    return 0;
}

int cql_client_new(cql_client **out, const cql_client_opts *o)
{
    if (!out || !o || !opts_valid(o))
        return CQL_EINVAL;
    *out = NULL;
    cql_client *c = client_alloc(o);
    if (!c)
        return CQL_ENOMEM;
    int rc = cql_prep_cache_init(c);
    if (!rc && o->keyspace && !(c->keyspace = strdup(o->keyspace)))
        rc = CQL_ENOMEM;
    if (!rc)
        rc = add_contacts(c, o);
    if (!rc)
        rc = start_io(c);
    if (rc) {
        client_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int cql_client_wait_ready(cql_client *c, uint32_t timeout_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    while (c->ready_state == 0 && !c->closing)
        if (pthread_cond_timedwait(&c->cv, &c->mu, &ts) == ETIMEDOUT)
            break;
    if (c->closing)
        rc = CQL_ECLOSED;
    else if (c->ready_state == 1)
        rc = 0;
    else if (c->ready_state < 0)
        rc = CQL_ENOHOST;
    else
        rc = CQL_ETIMEDOUT;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int cql_client_last_error(cql_client *c, char *buf, size_t size)
{
    pthread_mutex_lock(&c->mu);
    int n = snprintf(buf, size, "%s", c->last_error);
    pthread_mutex_unlock(&c->mu);
    return n;
}

size_t cql_client_hosts(cql_client *c, cql_host_info *out, size_t max)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->pub_n;
    for (size_t i = 0; out && i < n && i < max; i++)
        out[i] = c->pub[i];
    pthread_mutex_unlock(&c->mu);
    return n;
}

uint64_t cql_client_topology_version(cql_client *c)
{
    pthread_mutex_lock(&c->mu);
    uint64_t v = c->pub_version;
    pthread_mutex_unlock(&c->mu);
    return v;
}

int cql_client_close(cql_client *c)
{
    if (!c)
        return CQL_EINVAL;
    if (pthread_equal(pthread_self(), c->thread))
        return CQL_EINVAL;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    uint64_t one = 1;
    ssize_t w = write(c->evfd, &one, sizeof one);
    (void)w;
    pthread_join(c->thread, NULL);
    /* Requests submitted between the thread's last look at the queue and
     * `closing` being set: fail them here (no thread is left to do it). */
    req *r = c->sub_head;
    while (r) {
        req *next = r->qnext;
        r->cb(r->arg, CQL_ECLOSED, NULL);
        cql_req_free(r);
        r = next;
    }
    c->sub_head = c->sub_tail = NULL;
    client_free(c);
    return 0;
}

