/* server.c - start-up, the wait for a signal, and graceful shutdown. */
#include "server.h"

#include <signal.h>
#include <sys/resource.h>
#include <string.h>

#include "events/events.h"
#include "store/cassandra/store_cassandra.h"
#include "store/lmdb/store_lmdb.h"
#include "util/log.h"
#include "version.h"

int server_open_store(server_t *srv, const config_t *cfg, bool bulk_load) {
    memset(srv, 0, sizeof *srv);
    srv->cfg = cfg;
    if (idgen_init(&srv->ids) != 0) {
        log_error("server", "no OS randomness for the id generator");
        return -1;
    }
    if (strcmp(cfg->store, "cassandra") == 0) {
        store_cassandra_config_t cc = server_cassandra_config(cfg);
        return store_cassandra_open(&cc, &srv->ids, &srv->store) == STORE_OK ? 0 : -1;
    }
    /* Bulk loads commit in large batches; serving keeps batches small enough
     * that one commit's latency stays low under load. */
    store_lmdb_config_t lc = {.dir = cfg->data_dir, .map_size_mb = cfg->map_size_mb,
                              .max_batch = bulk_load ? 65536 : 1024, .bulk_load = bulk_load};
    if (store_lmdb_open(&lc, &srv->ids, &srv->store) != STORE_OK) return -1;
    return 0;
}

store_cassandra_config_t server_cassandra_config(const config_t *cfg) {
    return (store_cassandra_config_t){
        .hosts = cfg->cass_hosts, /* at least one: the setting's default */
        .n_hosts = cfg->n_cass_hosts,
        .keyspace = cfg->cass_keyspace,
        .replication_factor = cfg->cass_rf,
        .consistency = cfg->cass_consistency,
        .timeout_ms = cfg->cass_timeout_ms,
        .connect_wait_ms = 30000,
        .create_schema = cfg->cass_schema,
    };
}

int server_schema(const config_t *cfg) {
    store_cassandra_config_t cc = server_cassandra_config(cfg);
    return store_cassandra_migrate(&cc) == STORE_OK ? 0 : 1;
}

/* Each connection is a file descriptor: raise the soft limit as far as the
 * hard limit allows, so that max_connections is reachable. */
static void raise_fd_limit(unsigned max_connections) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
    rlim_t want = (rlim_t)max_connections + 64;
    if (rl.rlim_cur >= want) return;
    rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < want)
        log_warn("server", "open-file limit is %llu: fewer than --max-connections %u can be served",
                 (unsigned long long)rl.rlim_cur, max_connections);
}

/* The API on an open store: its settings, the event hub, its own state.
 * Returns 0, or -1 with nothing left open but the store. */
static int server_open_api(server_t *srv, const config_t *cfg) {
    srv->api = (api_t){
        .store = srv->store,
        .max_content = cfg->max_content,
        .auth = cfg->auth,
        .password = {.memory_kib = cfg->argon2_memory_kib, .iterations = cfg->argon2_iterations},
        .token_ttl_s = cfg->token_ttl_s,
        .sse_max_pending = cfg->sse_max_pending,
    };
    events_config_t ec = {.broker_url = cfg->broker, .heartbeat_s = cfg->sse_heartbeat_s,
                          .max_per_user = cfg->max_streams_per_user, .accept = events_accept_message};
    if (events_open(&ec, &srv->api.events) != 0) return -1;
    api_limits_t lim = {.web_dir = cfg->web_dir, .login_attempts = cfg->login_attempts,
                        .login_window_s = cfg->login_window_s, .register_attempts = cfg->register_attempts};
    if (api_init(&srv->api, &lim) != 0) {
        events_close(srv->api.events);
        return -1;
    }
    if (!cfg->auth)
        log_warn("server", "authentication is OFF: anyone who can reach this server can read and send as anyone "
                           "(use only behind a gateway that authenticates)");
    return 0;
}

static int server_start_http(server_t *srv, const config_t *cfg) {
    http_server_config_t hc = {
        .host = cfg->host,
        .port = cfg->port,
        .threads = cfg->threads,
        .max_body = cfg->max_body,
        .max_connections = cfg->max_connections,
        .max_connections_per_address = cfg->max_connections_per_address,
        .idle_timeout_s = cfg->idle_timeout_s,
        .connection_memory = cfg->connection_memory,
    };
    return http_server_start(&hc, api_handle, &srv->api, &srv->http);
}

int server_run(const config_t *cfg) {
    /* Block the stop signals in every thread (threads inherit the mask), and
     * take them synchronously below with sigwait: no handler, no globals. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);
    signal(SIGPIPE, SIG_IGN);

    raise_fd_limit(cfg->max_connections);
    server_t srv;
    if (server_open_store(&srv, cfg, false) != 0) return 1;
    if (server_open_api(&srv, cfg) != 0) {
        store_close(srv.store);
        return 1;
    }
    if (server_start_http(&srv, cfg) != 0) {
        api_fini(&srv.api);
        events_close(srv.api.events);
        store_close(srv.store);
        return 1;
    }
    log_info("server", "messenger %s serving on http://%s:%u (store: %s, data: %s)", MESSENGER_VERSION,
             cfg->host, http_server_port(srv.http), store_name(srv.store), cfg->data_dir);
    int sig = 0;
    sigwait(&stop, &sig);
    log_info("server", "%s received: finishing requests in flight", sig == SIGINT ? "SIGINT" : "SIGTERM");
    /* Answer what is in flight, then close the store, which flushes pending
     * commits and answers (or fails) whatever still waits on it, and only
     * then stop HTTP: no connection may be left suspended. */
    http_server_drain(srv.http, cfg->shutdown_grace_ms); /* also ends every event stream */
    api_drain(&srv.api);
    store_close(srv.store);
    http_server_destroy(srv.http);
    api_fini(&srv.api);
    events_close(srv.api.events); /* every stream has left the hub with its connection */
    log_info("server", "stopped cleanly");
    return 0;
}
