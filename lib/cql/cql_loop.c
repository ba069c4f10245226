/*
 * cql_loop.c - the client's I/O thread.  Each turn takes what user threads
 * submitted, runs what is due (connection attempts and their deadlines, the
 * topology refresh, request time-outs), routes and sends, publishes the
 * host snapshot if it changed, then sleeps in epoll_wait() until a socket
 * or the submit eventfd wakes it, or the next deadline (at most a second).
 * When cql_client_close() sets `closing`, it fails what it still owns and
 * returns.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cql_client_internal.h"

#include <sys/epoll.h>
#include <unistd.h>

/* Starts due connection attempts, expires slow ones, starts a due
 * topology refresh. */
static void run_timers(cql_client *c, uint64_t now)
{
    for (size_t i = 0; i < c->nhosts; i++) {
        host *h = c->hosts[i];
        conn *cn = &h->cn;
        if (!h->active)
            continue;
        if (cn->state == C_DOWN && now >= h->retry_at)
            cql_conn_start(c, h);
        else if (cn->state != C_DOWN && cn->state != C_READY && now >= cn->deadline)
            cql_conn_fail(c, cn,
                          cn->state == C_CONNECTING ? "connect timed out" : "handshake timed out");
    }
    if (c->discovery && c->control && c->topo_state == T_IDLE && now >= c->next_refresh)
        cql_topo_start(c);
}

/* The earliest time run_timers() or cql_scan_timeouts() has something to do. */
static uint64_t next_wake(const cql_client *c)
{
    uint64_t wake = c->next_scan;
    for (size_t i = 0; i < c->nhosts; i++) {
        const host *h = c->hosts[i];
        if (!h->active)
            continue;
        if (h->cn.state == C_DOWN && h->retry_at < wake)
            wake = h->retry_at;
        else if (h->cn.state != C_DOWN && h->cn.state != C_READY && h->cn.deadline < wake)
            wake = h->cn.deadline;
    }
    if (c->discovery && c->control && c->topo_state == T_IDLE && c->next_refresh < wake)
        wake = c->next_refresh;
    return wake;
}

static void shutdown_all(cql_client *c)
{
    /* Fail everything still owned by the thread. */
    for (size_t i = 0; i < c->nhosts; i++) {
        conn *cn = &c->hosts[i]->cn;
        req *r;
        cql_conn_end_inflight(c, cn, CQL_ECLOSED, false);
        while ((r = cn->queue.head))
            cql_req_fail(c, r, CQL_ECLOSED, false);
        if (cn->fd >= 0) {
            close(cn->fd);
            cn->fd = -1;
        }
    }
    while (c->waiting.head)
        cql_req_complete(c, c->waiting.head, CQL_ECLOSED, NULL);
    while (c->pending.head)
        cql_req_complete(c, c->pending.head, CQL_ECLOSED, NULL);
}

void *cql_io_main(void *arg)
{
    cql_client *c = arg;
    pthread_setname_np(pthread_self(), "cql-io");
    bool closing = false;
    for (;;) {
        cql_take_submissions(c, &closing);
        if (closing)
            break;
        uint64_t now = cql_now_ms();
        run_timers(c, now);
        if (now >= c->next_scan)
            cql_scan_timeouts(c, now);
        cql_dispatch(c);
        if (c->pub_dirty)
            cql_publish(c);

        now = cql_now_ms();
        uint64_t wake = next_wake(c);
        int timeout = wake <= now ? 0 : wake - now > 1000 ? 1000 : (int)(wake - now);
        struct epoll_event evs[16];
        int n = epoll_wait(c->epfd, evs, 16, timeout);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.u64 == 0) {
                uint64_t v;
                ssize_t rd = read(c->evfd, &v, sizeof v);
                (void)rd;
                continue;
            }
            cql_conn_on_event(c, evs[i].data.u64, evs[i].events);
        }
    }
    shutdown_all(c);
    return NULL;
}

