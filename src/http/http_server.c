/* http_server.c - libmicrohttpd glue: request lifecycle, body limits, async
 * answers via suspend/resume, access logging. See server.h.
 *
 * Request state machine (req->state), the heart of asynchronous answers:
 *
 *   RUNNING   --handler answers inline------------------> ANSWERED
 *   RUNNING   --handler returns unanswered: suspend-----> SUSPENDED
 *   SUSPENDED --answer from another thread: resume-----> ANSWERED
 *
 * The answering thread swaps in ANSWERED; if it saw SUSPENDED it resumes the
 * connection. The dispatching thread suspends first and then tries
 * RUNNING -> SUSPENDED; if that fails the answer arrived in between, and it
 * resumes at once. Either way exactly one side resumes, and only a
 * connection that really was suspended (MHD requires this).

 * Streams: stream.c. What we refuse that libmicrohttpd lets through:
 * checks.c. Both share http_internal.h with this file.
 */
#include "http/http_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http_internal.h"
#include "util/defer.h"
#include "util/json_write.h"
#include "util/log.h"

/* ------------------------------------------------------------- accessors */

const char *http_request_method(const http_request_t *r) { return r->method; }
const char *http_request_path(const http_request_t *r) { return r->path; }
const char *http_request_id(const http_request_t *r) { return r->id; }
void *http_request_scratch(http_request_t *r) { return r->scratch; }

const char *http_request_peer(const http_request_t *r) { return r->peer; }

const char *http_request_query(const http_request_t *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *http_request_header(const http_request_t *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *http_request_body(const http_request_t *r, size_t *len) {
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

/* ------------------------------------------------------------- answering */

/* A request answered twice, or completed without an answer, breaks the
 * handlers' contract (http_server.h). Test builds stop at once, so that the
 * suites find it; a production server logs it and goes on. */
static void contract_broken(const http_request_t *r, const char *what) {
    log_error("http", "req=%s %s %s: %s (a bug)", r->id, r->method, r->path, what);
#ifdef MESSENGER_TEST_HOOKS
    abort();
#endif
}

void http_respond_header(http_request_t *r, const char *name, const char *value) {
    if (r->n_headers == MAX_EXTRA_HEADERS || strlen(value) >= sizeof r->header_value[0]) {
        log_error("http", "req=%s response header %s dropped", r->id, name);
        return;
    }
    r->header_name[r->n_headers] = name;
    snprintf(r->header_value[r->n_headers], sizeof r->header_value[0], "%s", value);
    r->n_headers++;
}

/* True (after reporting it) when r has been answered already: a second
 * answer must not touch the first one's fields, which the connection's
 * thread may be sending. */
bool http_answered_already(http_request_t *r) {
    if (atomic_load(&r->state) != REQ_ANSWERED) return false;
    contract_broken(r, "answered twice");
    return true;
}

/* Publishes the answer (the fields set by the caller) to the connection's
 * thread. `ok` false: nothing could be built; MHD then answers with an
 * internal error and closes the connection. */
void http_finish(http_request_t *r, unsigned status, bool ok) {
    r->answered_ok = ok;
    r->status = ok ? status : 500;
    int prev = atomic_exchange(&r->state, REQ_ANSWERED);
    if (prev == REQ_SUSPENDED) MHD_resume_connection(r->conn);
    else if (prev == REQ_ANSWERED) contract_broken(r, "answered twice, at the same time");
}

void http_respond_json(http_request_t *r, unsigned status, buf_t *body) {
    if (http_answered_already(r)) {
        buf_free(body);
        return;
    }
    size_t len;
    char *data = buf_steal(body, &len);
    if (!data) log_error("http", "req=%s out of memory building the response", r->id);
    r->answer = data;
    r->answer_len = len;
    r->answer_owned = true;
    r->content_type = "application/json";
    http_finish(r, status, data != NULL);
}

void http_respond_error(http_request_t *r, unsigned status, const char *detail) {
    if (http_answered_already(r)) return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "{\"detail\":");
    json_put_cstring(&b, detail);
    buf_putc(&b, '}');
    if (status >= 500) log_warn("http", "req=%s %u: %s", r->id, status, detail);
    else log_debug("http", "req=%s %u: %s", r->id, status, detail);
    http_respond_json(r, status, &b);
}

void http_respond_static(http_request_t *r, unsigned status, const char *content_type,
                         const void *data, size_t len) {
    if (http_answered_already(r)) return;
    r->answer = data;
    r->answer_len = len;
    r->answer_owned = false;
    r->content_type = content_type;
    http_finish(r, status, true);
}

/* On the connection's thread, once the request is answered: builds the
 * libmicrohttpd response (unless a stream brought its own) and queues it. */
static enum MHD_Result queue_answer(http_request_t *r) {
    if (!r->answered_ok) return MHD_NO;
    struct MHD_Response *resp = r->response;
    if (!resp) {
        resp = MHD_create_response_from_buffer(r->answer_len, (void *)r->answer,
                                               r->answer_owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!resp) {
            log_error("http", "req=%s out of memory building the response", r->id);
            r->status = 500; /* for the access log: the connection is dropped */
            return MHD_NO;   /* on_completed frees the answer */
        }
        r->answer = NULL; /* the response owns it now */
    }
    r->response = NULL;
    MHD_add_response_header(resp, "Content-Type", r->content_type);
    for (int i = 0; i < r->n_headers; i++) MHD_add_response_header(resp, r->header_name[i], r->header_value[i]);
    MHD_add_response_header(resp, "X-Request-Id", r->id);
    if (r->close_after) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ok = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* ------------------------------------------------------------- lifecycle */

/* A client's X-Request-Id is echoed when it is short and plain. */
static bool sane_request_id(const char *s) {
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= 64 || !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                         c == '-' || c == '_' || c == '.'))
            return false;
    }
    return n > 0;
}

static http_request_t *request_new(http_server_t *srv, struct MHD_Connection *c, const char *url,
                                   const char *method) {
    http_request_t *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = srv;
    r->conn = c;
    r->method = method;
    r->path = url;
    buf_init(&r->body);
    atomic_init(&r->state, REQ_RUNNING);
    clock_gettime(CLOCK_MONOTONIC, &r->start);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, r->peer, sizeof r->peer);
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, r->peer, sizeof r->peer);
    }
    const char *given = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Request-Id");
    if (given && sane_request_id(given)) {
        snprintf(r->id, sizeof r->id, "%s", given);
    } else {
        /* "<8 hex of the process prefix>-<hex counter>", without snprintf:
         * this runs for every request. */
        static const char hex[] = "0123456789abcdef";
        uint64_t n = atomic_fetch_add(&srv->next_id, 1) + 1;
        char *p = r->id;
        for (int i = 28; i >= 0; i -= 4) *p++ = hex[(srv->id_prefix >> i) & 15];
        *p++ = '-';
        int shift = 60;
        while (shift > 0 && ((n >> shift) & 15) == 0) shift -= 4;
        for (; shift >= 0; shift -= 4) *p++ = hex[(n >> shift) & 15];
        *p = '\0';
    }
    return r;
}

/* The first call for a request: its headers are in, its body is not. */
static enum MHD_Result on_request_start(http_server_t *srv, struct MHD_Connection *c, const char *url,
                                        const char *method, void **con_cls) {
    http_request_t *r = request_new(srv, c, url, method);
    if (!r) return MHD_NO;
    *con_cls = r;
    const char *why = http_request_malformed(c);
    if (why) {
        /* Answered before the body, which is never read: the connection
         * closes after the answer. */
        r->dispatched = true;
        r->close_after = true;
        http_respond_error(r, 400, why);
        return queue_answer(r);
    }
    if (http_content_length_too_large(c, srv->max_body)) {
        /* Answer before reading the body; MHD then closes the connection. */
        r->dispatched = true;
        http_respond_error(r, 413, "request body is larger than the configured limit");
        return queue_answer(r);
    }
    return MHD_YES;
}

/* A piece of the body. */
static enum MHD_Result on_request_body(http_server_t *srv, http_request_t *r, const char *upload,
                                       size_t *upload_size) {
    if (!r->too_large && *upload_size > srv->max_body - r->body.len) {
        /* A body without Content-Length (chunked) went over the limit.
         * libmicrohttpd cannot answer in the middle of an upload: read on
         * without keeping anything, and answer 413 at its end... */
        r->too_large = true;
        buf_free(&r->body);
    }
    if (r->too_large) {
        r->discarded += *upload_size;
        *upload_size = 0;
        /* ...unless it goes on and on: then just close the connection. */
        return r->discarded > 4 * srv->max_body ? MHD_NO : MHD_YES;
    }
    buf_append(&r->body, upload, *upload_size);
    *upload_size = 0;
    return MHD_YES;
}

/* The whole request is in: hand it to the handler, and suspend the
 * connection when the handler returns unanswered. */
static enum MHD_Result on_request_dispatch(http_server_t *srv, http_request_t *r, struct MHD_Connection *c) {
    r->dispatched = true;
    /* Counted in flight first, then `stopping` checked: either the stopper
     * sees this request in flight and waits for its answer, or this request
     * sees `stopping` and is answered here, never suspended (MHD_stop_daemon
     * must not find a suspended connection). A client still sending its
     * body is not counted: shutdown does not wait for slow uploads. */
    atomic_fetch_add(&srv->inflight, 1);
    r->counted = true;
    if (atomic_load(&srv->stopping)) {
        r->close_after = true;
        http_respond_error(r, 503, "server is shutting down");
        return queue_answer(r);
    }
    if (r->too_large) {
        http_respond_error(r, 413, "request body is larger than the configured limit");
        return queue_answer(r);
    }
    if (!buf_ok(&r->body)) {
        http_respond_error(r, 503, "out of memory reading the request body");
        return queue_answer(r);
    }
    /* The handler runs in a defer scope: the operations it starts begin when
     * it has returned (util/defer.h), and those that answer at once are
     * answered by the time the scope is left, without a suspend. */
    defer_scope_enter();
    srv->handler(r, srv->app);
    defer_scope_leave();
    if (atomic_load(&r->state) == REQ_ANSWERED) return queue_answer(r);
    MHD_suspend_connection(c);
    int expected = REQ_RUNNING;
    if (!atomic_compare_exchange_strong(&r->state, &expected, REQ_SUSPENDED))
        MHD_resume_connection(c); /* answered between the check and the suspend */
    return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
    (void)version;
    http_server_t *srv = cls;
    http_request_t *r = *con_cls;
    if (!r) return on_request_start(srv, c, url, method, con_cls);
    if (r->dispatched) {
        /* Called again after a resume: the answer is in. */
        if (atomic_load(&r->state) == REQ_ANSWERED) return queue_answer(r);
        return MHD_YES;
    }
    if (*upload_size) return on_request_body(srv, r, upload, upload_size);
    return on_request_dispatch(srv, r, c);
}

/* Accept policy: while draining, a new connection is closed at once. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen) {
    (void)addr;
    (void)addrlen;
    const http_server_t *srv = cls;
    return atomic_load(&srv->stopping) ? MHD_NO : MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)c;
    http_server_t *srv = cls;
    http_request_t *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    if (log_enabled(LOG_INFO)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        double ms = (double)(now.tv_sec - r->start.tv_sec) * 1e3 + (double)(now.tv_nsec - r->start.tv_nsec) / 1e6;
        if (r->dispatched)
            log_msg(LOG_INFO, "http", "req=%s %s %s %u %.3fms%s", r->id, r->method, r->path, r->status, ms,
                    toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection ended early)");
        else
            log_msg(LOG_INFO, "http", "req=%s %s %s aborted before the body was complete", r->id, r->method, r->path);
    }
    /* A dispatched request is suspended until it is answered, and a
     * suspended connection never completes: unanswered here is a bug. */
    if (r->dispatched && atomic_load(&r->state) != REQ_ANSWERED) contract_broken(r, "completed without an answer");
    if (r->response) MHD_destroy_response(r->response);
    if (r->answer_owned) free((void *)r->answer);
    bool counted = r->counted;
    buf_free(&r->body);
    free(r);
    if (counted) atomic_fetch_sub(&srv->inflight, 1);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = '\0';
    /* A client that went away, or a stream we cut: routine for event
     * streams, not worth a warning. */
    if (strstr(msg, "no longer available for sending") || strstr(msg, "application error generating response"))
        log_debug("http", "libmicrohttpd: %s", msg);
    else
        log_warn("http", "libmicrohttpd: %s", msg);
}

/* cfg's numeric address and port into ss; adds MHD_USE_IPv6 to *flags
 * for an IPv6 one. Returns 0, or -1 when the host is not numeric. */
static int listen_address(const http_server_config_t *cfg, struct sockaddr_storage *ss, unsigned *flags) {
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, cfg->host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(cfg->port);
        return 0;
    }
    if (inet_pton(AF_INET6, cfg->host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(cfg->port);
        *flags |= MHD_USE_IPv6;
        return 0;
    }
    log_error("http", "listen address '%s' is not a numeric IPv4 or IPv6 address", cfg->host);
    return -1;
}

int http_server_start(const http_server_config_t *cfg, http_handler_fn handler, void *app,
                      http_server_t **out) {
    http_server_t *srv = calloc(1, sizeof *srv);
    if (!srv) return -1;
    srv->handler = handler;
    srv->app = app;
    srv->max_body = cfg->max_body;
    pthread_mutex_init(&srv->streams_mu, NULL);
    if (getrandom(&srv->id_prefix, sizeof srv->id_prefix, 0) != sizeof srv->id_prefix) srv->id_prefix = (uint32_t)getpid();

    struct sockaddr_storage ss;
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_TURBO |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (listen_address(cfg, &ss, &flags) != 0) {
        pthread_mutex_destroy(&srv->streams_mu);
        free(srv);
        return -1;
    }
    srv->daemon = MHD_start_daemon(
        flags, cfg->port, on_accept, srv, on_request, srv,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, NULL, /* first, so that it sees every message */
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->threads ? cfg->threads : 1),
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections,
        /* One client must not take every connection (event streams stay
         * open): libmicrohttpd refuses more from one address at accept. */
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)cfg->max_connections_per_address,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)cfg->idle_timeout_s,
        /* Every open connection holds this pool, idle or not: it bounds the
         * memory of many idle keep-alive clients (bodies are copied out of
         * it into the request, responses are sent from our own buffers). */
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, cfg->connection_memory ? cfg->connection_memory : (size_t)4096,
        MHD_OPTION_CONNECTION_MEMORY_INCREMENT, (size_t)1024,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)1024,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
        MHD_OPTION_UNESCAPE_CALLBACK, http_unescape_keep_nul, NULL,
        MHD_OPTION_END);
    if (!srv->daemon) {
        log_error("http", "cannot listen on %s:%u (address in use, or not allowed)", cfg->host, cfg->port);
        pthread_mutex_destroy(&srv->streams_mu);
        free(srv);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
    srv->port = info ? info->port : cfg->port;
    log_info("http", "listening on %s:%u with %u threads", cfg->host, srv->port, cfg->threads);
    *out = srv;
    return 0;
}

uint16_t http_server_port(const http_server_t *srv) { return srv->port; }

static void wait_inflight(http_server_t *srv, unsigned ms) {
    struct timespec tick = {0, 5 * 1000 * 1000};
    for (unsigned waited = 0; atomic_load(&srv->inflight) > 0 && waited < ms; waited += 5) nanosleep(&tick, NULL);
}

long http_server_drain(http_server_t *srv, unsigned grace_ms) {
    /* From here on on_accept turns new connections away, and requests on
     * open keep-alive connections get 503. Not MHD_quiesce_daemon(): with
     * epoll worker threads it races a worker for the listen socket's
     * removal from the epoll set and aborts the process when it loses
     * (libmicrohttpd 0.9.75, seen in this suite: "Failed to remove listen FD
     * from epoll set"). */
    atomic_store(&srv->stopping, true);
    /* Open streams never finish by themselves: end them (each sends what
     * is queued, then its final chunk), so that their requests complete. */
    pthread_mutex_lock(&srv->streams_mu);
    for (http_stream_t *s = srv->streams; s; s = s->next) http_stream_end(s);
    pthread_mutex_unlock(&srv->streams_mu);
    wait_inflight(srv, grace_ms);
    long left = atomic_load(&srv->inflight);
    if (left > 0) log_warn("http", "%ld requests still waiting for the store after %u ms", left, grace_ms);
    return left;
}

void http_server_destroy(http_server_t *srv) {
    if (!srv) return;
    /* Answers owed by a store that has been closed are on their way. */
    wait_inflight(srv, 5000);
    long left = atomic_load(&srv->inflight);
    if (left > 0) {
        /* Stopping MHD with suspended connections aborts the process: leak
         * the daemon rather than crash at exit. Cannot happen while every
         * store answers every operation when it is closed. */
        log_error("http", "%ld requests were never answered; not stopping libmicrohttpd", left);
        return;
    }
    MHD_stop_daemon(srv->daemon);
    pthread_mutex_destroy(&srv->streams_mu);
    free(srv);
}
