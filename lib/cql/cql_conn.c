/*
 * cql_conn.c - one connection to one host: the non-blocking socket and its
 * epoll registration, the handshake (STARTUP, then USE when a keyspace is
 * set), the byte streams in both directions cut into whole frames, the
 * table of stream ids with the request waiting on each, the hand-over of
 * each response to whoever waits for it (its request, the prepare cache,
 * the topology refresh), and the back-off before the next attempt after a
 * failure.  The stream-id and epoll-tag invariants it keeps are stated in
 * cql_client_internal.h.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cql_client_internal.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define OUT_HIGH_WATER (8u * 1024 * 1024) /* stop dispatching above this */
#define READ_CHUNK (64u * 1024)

/* ---- streams ---------------------------------------------------------- */

static int stream_alloc(conn *cn)
{
    return cn->n_free ? cn->free_ids[--cn->n_free] : -1;
}

static void stream_release(conn *cn, int16_t id)
{
    cn->slots[id] = NULL;
    cn->free_ids[cn->n_free++] = id;
}

static void streams_reset(cql_client *c, conn *cn)
{
    cn->n_free = 0;
    cn->n_orphans = 0;
    /* Hand out low ids first (popped from the end). */
    for (uint32_t i = c->max_streams; i-- > 0;) {
        cn->slots[i] = NULL;
        cn->free_ids[cn->n_free++] = (int16_t)i;
    }
}

static uint64_t epoll_tag(const conn *cn) { return ((uint64_t)cn->gen << 32) | (cn->h->idx + 1u); }

static void epoll_update(cql_client *c, conn *cn)
{
    if (cn->fd < 0)
        return;
    struct epoll_event ev = {0};
    ev.data.u64 = epoll_tag(cn);
    ev.events = EPOLLIN | EPOLLRDHUP;
    if (cn->state == C_CONNECTING || cn->out.len > cn->out_off)
        ev.events |= EPOLLOUT;
    epoll_ctl(c->epfd, EPOLL_CTL_MOD, cn->fd, &ev);
}

static uint32_t backoff_ms(cql_client *c, const host *h)
{
    unsigned shift = h->attempt < 20 ? h->attempt : 20;
    uint64_t d = (uint64_t)c->backoff_base_ms << shift;
    if (d > c->backoff_max_ms)
        d = c->backoff_max_ms;
    /* "Equal jitter": half fixed, half random, so that many clients that
     * lost the same server do not reconnect in lock-step. */
    c->rng = c->rng * 1103515245u + 12345u;
    uint64_t half = d / 2;
    return (uint32_t)(half + (half ? (c->rng >> 8) % (half + 1) : 0));
}

void cql_conn_end_inflight(cql_client *c, conn *cn, int status, bool requeue)
{
    for (uint32_t i = 0; cn->slots && i < c->max_streams; i++) {
        req *r = cn->slots[i];
        if (!r || r == ORPHAN)
            continue;
        cn->slots[i] = NULL;
        r->where = W_NONE;
        cql_req_fail(c, r, status, requeue);
    }
}

/* The requests cn holds, when it closes: see cql_conn_close(). */
static void conn_settle(cql_client *c, conn *cn)
{
    /* Queued, never sent: user requests are routed again. */
    req *r;
    while ((r = cn->queue.tail)) {
        if (r->internal) {
            cql_req_drop_internal(c, r, CQL_ECONN, true);
        } else {
            cql_rl_remove(&cn->queue, r);
            r->conn = NULL;
            r->target = NULL;
            cql_req_to_pending(c, r, true);
        }
    }
    cql_conn_end_inflight(c, cn, CQL_ECONN, true);
    if (cn->slots)
        streams_reset(c, cn);
}

/*
 * Closes cn.  In-flight user requests fail with CQL_ECONN (they may or may
 * not have been executed); requests queued but not sent go back to pending
 * to be routed again; in-flight and queued PREPAREs are undone and their
 * waiters requeued (nothing was executed for them).  Schedules a reconnect
 * (at once if the connection was ready, else with back-off) unless the host
 * is inactive.
 */
void cql_conn_close(cql_client *c, conn *cn, const char *why, bool count_failure)
{
    host *h = cn->h;
    bool was_ready = cn->state == C_READY;
    if (cn->fd >= 0) {
        epoll_ctl(c->epfd, EPOLL_CTL_DEL, cn->fd, NULL);
        close(cn->fd);
        cn->fd = -1;
    }
    if (why)
        cql_set_last_error(c, "%s: %s", h->label, why);
    cn->state = C_DOWN;
    cn->out.len = 0;
    cn->out_off = 0;
    cn->in_len = 0;
    if (was_ready) {
        c->n_ready--;
        c->pub_dirty = true;
    }
    if (c->control == h) {
        c->control = NULL;
        /* the refresh's queries were on this connection: they are dropped
         * below; a new control connection restarts it */
    }
    conn_settle(c, cn);
    if (was_ready || !count_failure) {
        h->attempt = 0;
        h->failed = false;
        h->retry_at = cql_now_ms();
    } else {
        h->attempt++;
        h->failed = true;
        h->retry_at = cql_now_ms() + backoff_ms(c, h);
    }
    cql_control_pick(c); /* when this was the control connection */
    cql_update_ready(c);
}

void cql_conn_fail(cql_client *c, conn *cn, const char *why) { cql_conn_close(c, cn, why, true); }

/* Builds an internal set-up request straight into cn's output. */
int cql_conn_send_setup(cql_client *c, conn *cn, int kind)
{
    int id = stream_alloc(cn);
    if (id < 0)
        return CQL_EINVAL;
    req *r = calloc(1, sizeof *r);
    if (!r) {
        stream_release(cn, (int16_t)id);
        return CQL_ENOMEM;
    }
    r->kind = kind;
    r->internal = true;
    r->stream = (int16_t)id;
    r->where = W_INFLIGHT;
    r->conn = cn;
    int rc;
    if (kind == RK_STARTUP) {
        rc = cql_build_startup(&cn->out, (int16_t)id);
    } else if (kind == RK_REGISTER) {
        static const char *const events[] = {"TOPOLOGY_CHANGE", "STATUS_CHANGE"};
        rc = cql_build_register(&cn->out, (int16_t)id, events, 2);
    } else {
        char q[300];
        int k = snprintf(q, sizeof q, "USE %s", c->keyspace);
        cql_qparams p;
        cql_qparams_init(&p);
        rc = cql_build_query(&cn->out, (int16_t)id, q, (size_t)k, &p);
    }
    if (rc) {
        stream_release(cn, (int16_t)id);
        free(r);
        return rc;
    }
    cn->slots[id] = r;
    epoll_update(c, cn);
    return 0;
}

static void conn_ready(cql_client *c, conn *cn)
{
    host *h = cn->h;
    bool reconnect = h->ever_ready;
    cn->state = C_READY;
    h->attempt = 0;
    h->failed = false;
    h->ever_ready = true;
    c->n_ready++;
    c->pub_dirty = true;
    cql_update_ready(c);
    if (!c->discovery)
        return;
    if (!c->control) {
        cql_control_pick(c);
    } else if (reconnect) {
        /* A node came back: its tokens or its peers may have changed. */
        cql_topo_refresh_soon(c);
    }
}

static void on_connected(cql_client *c, conn *cn)
{
    int rc = cql_conn_send_setup(c, cn, RK_STARTUP);
    if (rc) {
        cql_conn_fail(c, cn, cql_strerror(rc));
        return;
    }
    cn->state = C_STARTUP;
    epoll_update(c, cn);
}

/* The stream tables, allocated at the first attempt: false when out of
 * memory. */
static bool streams_alloc(cql_client *c, conn *cn)
{
    if (cn->slots)
        return true;
    cn->slots = calloc(c->max_streams, sizeof *cn->slots);
    cn->free_ids = calloc(c->max_streams, sizeof *cn->free_ids);
    if (!cn->slots || !cn->free_ids) {
        free(cn->slots);
        free(cn->free_ids);
        cn->slots = NULL;
        cn->free_ids = NULL;
        return false;
    }
    streams_reset(c, cn);
    return true;
}

/* h's name and port into h->sa; false with the reason in why. */
static bool host_resolve(host *h, char *why, size_t size)
{
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int g = getaddrinfo(h->name, h->port, &hints, &ai);
    if (g != 0 || !ai || ai->ai_addrlen > sizeof h->sa) {
        snprintf(why, size, "resolve: %s", g ? gai_strerror(g) : "no address");
        if (ai)
            freeaddrinfo(ai);
        return false;
    }
    memcpy(&h->sa, ai->ai_addr, ai->ai_addrlen);
    h->salen = ai->ai_addrlen;
    freeaddrinfo(ai);
    return true;
}

void cql_conn_start(cql_client *c, host *h)
{
    conn *cn = &h->cn;
    char why[200];
    cn->gen++;
    if (!streams_alloc(c, cn)) {
        cn->state = C_CONNECTING;
        cql_conn_fail(c, cn, "out of memory");
        return;
    }
    /* Contact points are names: resolve at every attempt, since the
     * name may move.  Blocking resolution on the I/O thread is
     * acceptable for addresses and local names; discovered hosts
     * come as addresses and never get here. */
    if (h->contact && !host_resolve(h, why, sizeof why)) {
        cn->state = C_CONNECTING;
        cql_conn_fail(c, cn, why);
        return;
    }
    int fd = socket(h->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        cn->state = C_CONNECTING;
        cql_conn_fail(c, cn, strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int r = connect(fd, (const struct sockaddr *)&h->sa, h->salen);
    int err = errno;
    cn->fd = fd;
    cn->state = C_CONNECTING;
    cn->deadline = cql_now_ms() + c->connect_timeout_ms;
    struct epoll_event ev = {0};
    ev.data.u64 = epoll_tag(cn);
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
    if (epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        cql_conn_fail(c, cn, strerror(errno));
        return;
    }
    if (r == 0) {
        on_connected(c, cn);
    } else if (err != EINPROGRESS) {
        snprintf(why, sizeof why, "connect: %s", strerror(err));
        cql_conn_fail(c, cn, why);
    }
}

static void conn_flush(cql_client *c, conn *cn)
{
    while (cn->fd >= 0 && cn->out_off < cn->out.len) {
        ssize_t n = send(cn->fd, cn->out.data + cn->out_off, cn->out.len - cn->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            char why[200];
            snprintf(why, sizeof why, "send: %s", strerror(errno));
            cql_conn_fail(c, cn, why);
            return;
        }
        cn->out_off += (size_t)n;
    }
    if (cn->out_off == cn->out.len) {
        cn->out.len = 0;
        cn->out_off = 0;
    } else if (cn->out_off > cn->out.len / 2) {
        memmove(cn->out.data, cn->out.data + cn->out_off, cn->out.len - cn->out_off);
        cn->out.len -= cn->out_off;
        cn->out_off = 0;
    }
}

/* Sends what cn's queue holds, as far as stream ids and the output high
 * water mark allow. */
void cql_conn_send(cql_client *c, conn *cn)
{
    req *r;
    while (cn->state == C_READY && (r = cn->queue.head) && cn->n_free &&
           cn->out.len - cn->out_off < OUT_HIGH_WATER) {
        cql_rl_remove(&cn->queue, r);
        r->where = W_NONE;
        r->stream = (int16_t)stream_alloc(cn);
        int rc = cql_req_build_frame(cn, r);
        if (rc) {
            stream_release(cn, r->stream);
            cql_req_fail(c, r, rc, false);
            continue;
        }
        cn->slots[r->stream] = r;
        r->where = W_INFLIGHT;
        r->conn = cn;
        if (!r->internal) {
            cn->h->requests++;
            c->pub_dirty = true;
        }
    }
    conn_flush(c, cn);
    epoll_update(c, cn);
}

static void on_setup_response(cql_client *c, conn *cn, req *r, const cql_header *h, int rc,
                              cql_result *res)
{
    const cql_error *err = rc ? NULL : cql_result_error(res);
    char msg[512];
    int kind = r->kind;
    cql_req_free(r);
    if (kind == RK_REGISTER)
        return; /* without events the periodic refresh still works */
    bool ok = !rc && (kind == RK_STARTUP ? h->opcode == CQL_OP_READY
                                         : cql_result_kind(res) == CQL_RESULT_SET_KEYSPACE);
    if (ok && kind == RK_STARTUP && c->keyspace) {
        int brc = cql_conn_send_setup(c, cn, RK_USE);
        if (brc) {
            cql_conn_fail(c, cn, cql_strerror(brc));
        } else {
            cn->state = C_USE;
            cn->deadline = cql_now_ms() + c->connect_timeout_ms;
        }
    } else if (ok) {
        conn_ready(c, cn);
    } else {
        if (err)
            cql_error_format(err, msg, sizeof msg);
        else if (!rc && h->opcode == CQL_OP_AUTHENTICATE)
            snprintf(msg, sizeof msg, "server requires authentication (unsupported)");
        else
            snprintf(msg, sizeof msg, "handshake failed: %s",
                     rc ? cql_strerror(rc) : "unexpected response");
        cql_conn_fail(c, cn, msg);
    }
}

static void on_response(cql_client *c, conn *cn, const cql_header *h, const uint8_t *body)
{
    if (h->stream < 0) {
        if (h->opcode == CQL_OP_EVENT && cn->h == c->control)
            cql_topo_on_event(c, h, body);
        return;
    }
    if ((uint32_t)h->stream >= c->max_streams || !cn->slots[h->stream]) {
        cql_conn_fail(c, cn, "response on a stream id with no request");
        return;
    }
    req *r = cn->slots[h->stream];
    stream_release(cn, h->stream);
    if (r == ORPHAN) {
        cn->n_orphans--;
        return; /* answer to a request that already timed out */
    }
    r->where = W_NONE;
    r->conn = NULL;

    cql_result *res = NULL;
    int rc = cql_result_parse(h, body, h->length, false, &res);
    const cql_error *err = rc ? NULL : cql_result_error(res);

    switch (r->kind) {
    case RK_STARTUP:
    case RK_USE:
    case RK_REGISTER:
        on_setup_response(c, cn, r, h, rc, res);
        break;
    case RK_PREPARE:
        cql_prepare_on_response(c, cn, r, rc, res);
        break;
    case RK_TOPO_LOCAL:
    case RK_TOPO_PEERS:
        cql_topo_on_response(c, r, rc, res);
        break;
    default:
        if (err && err->code == CQL_UNPREPARED && !r->reprepared &&
            (r->kind == RK_EXECUTE || r->kind == RK_BATCH)) {
            /* The node does not know the statement (restart, eviction,
             * or it was never prepared there): prepare and resend. */
            cql_on_unprepared(c, cn, r, err);
            break;
        }
        cql_req_complete(c, r, rc ? rc : err ? CQL_ESERVER : 0, res);
        break;
    }
    cql_result_free(res);
}

static void conn_read(cql_client *c, conn *cn)
{
    uint32_t gen = cn->gen;
    for (;;) {
        size_t limit = (size_t)CQL_HEADER_LEN + c->max_frame_body + READ_CHUNK;
        if (cn->in_cap - cn->in_len < READ_CHUNK) {
            size_t cap = cn->in_cap ? cn->in_cap * 2 : 4 * READ_CHUNK;
            if (cap > limit)
                cap = limit;
            if (cap <= cn->in_cap) {
                cql_conn_fail(c, cn, "input buffer limit");
                return;
            }
            uint8_t *n = realloc(cn->in, cap);
            if (!n) {
                cql_conn_fail(c, cn, "out of memory");
                return;
            }
            cn->in = n;
            cn->in_cap = cap;
        }
        ssize_t n = recv(cn->fd, cn->in + cn->in_len, cn->in_cap - cn->in_len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            char why[200];
            snprintf(why, sizeof why, "recv: %s", strerror(errno));
            cql_conn_fail(c, cn, why);
            return;
        }
        if (n == 0) {
            cql_conn_fail(c, cn, "connection closed by server");
            return;
        }
        cn->in_len += (size_t)n;
        size_t pos = 0;
        while (cn->fd >= 0 && cn->gen == gen && cn->in_len - pos >= CQL_HEADER_LEN) {
            cql_header h;
            int rc = cql_header_decode(cn->in + pos, cn->in_len - pos, c->max_frame_body, true, &h);
            if (rc) {
                char why[200];
                snprintf(why, sizeof why, "bad frame header: %s", cql_strerror(rc));
                cql_conn_fail(c, cn, why);
                return;
            }
            if (cn->in_len - pos - CQL_HEADER_LEN < h.length)
                break;
            on_response(c, cn, &h, cn->in + pos + CQL_HEADER_LEN);
            pos += CQL_HEADER_LEN + h.length;
        }
        if (cn->fd < 0 || cn->gen != gen)
            return; /* the connection was closed while handling a frame */
        memmove(cn->in, cn->in + pos, cn->in_len - pos);
        cn->in_len -= pos;
    }
}

void cql_conn_on_event(cql_client *c, uint64_t tag, uint32_t e)
{
    uint64_t idx = (tag & 0xffffffffu) - 1;
    if (idx >= c->nhosts)
        return;
    conn *cn = &c->hosts[idx]->cn;
    if (cn->fd < 0 || cn->gen != (uint32_t)(tag >> 32))
        return; /* closed (and maybe reopened) earlier in this batch */
    if (cn->state == C_CONNECTING) {
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
            int err = 0;
            socklen_t len = sizeof err;
            getsockopt(cn->fd, SOL_SOCKET, SO_ERROR, &err, &len);
            if (err) {
                char why[200];
                snprintf(why, sizeof why, "connect: %s", strerror(err));
                cql_conn_fail(c, cn, why);
            } else {
                on_connected(c, cn);
            }
        }
        return;
    }
    uint32_t gen = cn->gen;
    if (e & EPOLLIN)
        conn_read(c, cn);
    if (cn->fd >= 0 && cn->gen == gen && (e & EPOLLOUT)) {
        conn_flush(c, cn);
        epoll_update(c, cn); /* drop EPOLLOUT once drained: level-triggered */
    }
    if (cn->fd >= 0 && cn->gen == gen && (e & (EPOLLERR | EPOLLHUP)))
        cql_conn_fail(c, cn, "socket error");
}

