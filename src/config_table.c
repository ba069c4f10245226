/* config_table.c - every setting of the server, once (config.h says how the
 * table is read). To add a setting: a field in config_t, a row here, a row
 * in the README's configuration table (a test compares the two). */
#include "config.h"

#include <string.h>
#include <strings.h>

/* ---- values that are more than a number or a word ---- */

/* "host:port", "[v6]:port", ":port" or "port". */
static int parse_listen(void *target, const char *s) {
    config_t *c = target;
    const char *colon = strrchr(s, ':');
    const char *port = colon ? colon + 1 : s;
    char host[64] = "";
    if (colon) {
        const char *h = s;
        size_t n = (size_t)(colon - s);
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']') { h++; n -= 2; }
        if (n >= sizeof host) return -1;
        memcpy(host, h, n);
        host[n] = '\0';
    }
    long p;
    if (config_parse_long(port, 0, 65535, &p)) return -1;
    if (host[0]) snprintf(c->host, sizeof c->host, "%s", host);
    c->port = (uint16_t)p;
    return 0;
}

static void show_listen(const void *target, char *out, size_t size) {
    const config_t *c = target;
    bool v6 = strchr(c->host, ':') != NULL;
    snprintf(out, size, "%s%s%s:%u", v6 ? "[" : "", c->host, v6 ? "]" : "", (unsigned)c->port);
}

static int parse_log_level(void *target, const char *s) {
    return log_level_parse(s, &((config_t *)target)->log_level);
}

static void show_log_level(const void *target, char *out, size_t size) {
    snprintf(out, size, "%s", log_level_name(((const config_t *)target)->log_level));
}

/* Splits a comma-separated host list into c->cass_hosts. */
static int parse_hosts(void *target, const char *list) {
    config_t *c = target;
    if (strlen(list) >= sizeof c->cass_hosts_buf) return -1;
    snprintf(c->cass_hosts_buf, sizeof c->cass_hosts_buf, "%s", list);
    c->n_cass_hosts = 0;
    char *save = NULL;
    for (char *h = strtok_r(c->cass_hosts_buf, ", ", &save); h; h = strtok_r(NULL, ", ", &save)) {
        if (c->n_cass_hosts == CONFIG_MAX_HOSTS) return -1;
        c->cass_hosts[c->n_cass_hosts++] = h;
    }
    return c->n_cass_hosts ? 0 : -1;
}

static void show_hosts(const void *target, char *out, size_t size) {
    const config_t *c = target;
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < c->n_cass_hosts && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? "," : "", c->cass_hosts[i]);
}

/* The FastAPI app's CASSANDRA_HOST: one host, its port from CASSANDRA_PORT
 * (read after it) or 9042. */
static int parse_fastapi_host(void *target, const char *v) {
    if (strlen(v) >= 256) return -1;
    return parse_hosts(target, v);
}

static int parse_fastapi_port(void *target, const char *v) {
    config_t *c = target;
    long n;
    if (config_parse_long(v, 1, 65535, &n)) return -1;
    const char *host = c->n_cass_hosts ? c->cass_hosts[0] : "127.0.0.1";
    if (strchr(host, ':')) host = "127.0.0.1";
    char h[300];
    snprintf(h, sizeof h, "%.255s:%ld", host, n);
    return parse_hosts(target, h);
}

static const struct { const char *name; uint16_t value; } CONSISTENCIES[] = {
    {"any", 0}, {"one", 1}, {"two", 2}, {"three", 3}, {"quorum", 4}, {"all", 5},
    {"local_quorum", 6}, {"each_quorum", 7}, {"local_one", 10},
};
#define N_CONSISTENCIES (sizeof CONSISTENCIES / sizeof CONSISTENCIES[0])

static int parse_consistency(void *target, const char *v) {
    for (size_t i = 0; i < N_CONSISTENCIES; i++)
        if (strcasecmp(v, CONSISTENCIES[i].name) == 0) {
            ((config_t *)target)->cass_consistency = CONSISTENCIES[i].value;
            return 0;
        }
    return -1;
}

static void show_consistency(const void *target, char *out, size_t size) {
    uint16_t v = ((const config_t *)target)->cass_consistency;
    snprintf(out, size, "%u", (unsigned)v);
    for (size_t i = 0; i < N_CONSISTENCIES; i++)
        if (CONSISTENCIES[i].value == v) snprintf(out, size, "%s", CONSISTENCIES[i].name);
}

static int parse_broker(void *target, const char *v) {
    if (strncmp(v, "redis://", 8) != 0) return -1;
    ((config_t *)target)->broker = v;
    return 0;
}

/* The URL without its credentials: a dump of the configuration ends up in
 * tickets and chat. */
static void show_broker(const void *target, char *out, size_t size) {
    const char *b = ((const config_t *)target)->broker;
    const char *at = b ? strrchr(b, '@') : NULL;
    if (!b) snprintf(out, size, "none");
    else if (at) snprintf(out, size, "redis://***%s", at);
    else snprintf(out, size, "%s", b);
}

/* ---- the table ---- */

const char *const config_sections[] = {
    "Options (environment variable in brackets; flags win):",
    "Accounts:",
    "Real-time events (GET /api/events):",
    "Cassandra store (--store cassandra):",
    "Seed options (without them: the fixed edge-case data set):",
    NULL,
};

enum { S_SERVER, S_ACCOUNTS, S_EVENTS, S_CASSANDRA, S_SEED };

#define F(field) CONFIG_FIELD(config_t, field)
#define FUNC(p, s) .type = SET_FUNC, .parse = p, .show = s

/* The order is the order of --help and of the environment's application
 * (CASSANDRA_HOST and CASSANDRA_PORT before CASSANDRA_HOSTS, which wins).
 * An env_only row is an alias that feeds the row after it (config.c marks
 * that row's origin when the alias is set). */
const config_setting_t config_settings[] = {
    {"listen", "MESSENGER_LISTEN", "HOST:PORT", FUNC(parse_listen, show_listen), .def = "127.0.0.1:8000",
     .help = "address to serve on (numeric IPv4 or IPv6, [::1]:8000)"},
    {"data-dir", "MESSENGER_DATA_DIR", "DIR", F(data_dir), .def = "./data",
     .help = "embedded store directory (created)"},
    {"store", "MESSENGER_STORE", "NAME", .type = SET_CHOICE, .offset = offsetof(config_t, store),
     .choices = (const char *const[]){"lmdb", "cassandra", NULL}, .def = "lmdb", .help = "lmdb (embedded) or cassandra"},
    {"log-level", "MESSENGER_LOG_LEVEL", "LEVEL", FUNC(parse_log_level, show_log_level), .def = "info",
     .help = "debug|info|warn|error|off"},
    {"log-format", "MESSENGER_LOG_FORMAT", "FORMAT", .type = SET_CHOICE, .offset = offsetof(config_t, log_format),
     .choices = (const char *const[]){"text", "json", NULL}, .def = "text",
     .help = "text (one line per event) or json (one object per line)"},
    {"threads", "MESSENGER_THREADS", "N", F(threads), 1, 256, .def_note = "CPU count",
     .help = "HTTP event-loop threads"},
    {"max-body-bytes", "MESSENGER_MAX_BODY_BYTES", "N", F(max_body), 1024, 64L << 20, .def = "65536",
     .help = "largest request body, else 413"},
    {"max-content-bytes", "MESSENGER_MAX_CONTENT_BYTES", "N", F(max_content), 1, 1L << 20, .def = "4096",
     .help = "largest message content, else 422"},
    {"map-size-mb", "MESSENGER_MAP_SIZE_MB", "N", F(map_size_mb), 16, 1L << 24, .def = "16384",
     .help = "largest embedded database (the file is sparse)"},
    {"max-connections", "MESSENGER_MAX_CONNECTIONS", "N", F(max_connections), 1, 1000000, .def = "16384",
     .help = "open connections at most"},
    {"max-connections-per-address", "MESSENGER_MAX_CONNECTIONS_PER_ADDRESS", "N",
     F(max_connections_per_address), 1, 1000000, .def = "256",
     .help = "open connections from one client address at most"},
    {"idle-timeout", "MESSENGER_IDLE_TIMEOUT", "SECONDS", F(idle_timeout_s), 1, 86400, .def = "120",
     .help = "close idle keep-alive connections"},
    {"connection-memory", "MESSENGER_CONNECTION_MEMORY", "N", F(connection_memory), 2048, 1L << 20,
     .def = "4096", .help = "bytes per connection for request headers; larger headers get 431"},
    {"web-dir", "MESSENGER_WEB_DIR", "DIR", F(web_dir), .def = "web",
     .help = "the web client's files, served at /"},

    {"auth", "MESSENGER_AUTH", "on|off", F(auth), .def = "on", .section = S_ACCOUNTS,
     .help = "bearer tokens and access control; off: the open FastAPI-compatible API, for use "
             "behind a trusted gateway only (anyone can read anything)"},
    {"argon2-memory-kib", "MESSENGER_ARGON2_MEMORY_KIB", "N", F(argon2_memory_kib), 8, 4L << 20,
     .def = "19456", .section = S_ACCOUNTS, .help = "Argon2id memory per password hash"},
    {"argon2-iterations", "MESSENGER_ARGON2_ITERATIONS", "N", F(argon2_iterations), 1, 100, .def = "2",
     .section = S_ACCOUNTS, .help = "Argon2id passes"},
    {"token-ttl", "MESSENGER_TOKEN_TTL", "SECONDS", F(token_ttl_s), 1, 365L * 86400, .def = "604800",
     .section = S_ACCOUNTS, .help = "lifetime of a login token"},
    {"login-attempts", "MESSENGER_LOGIN_ATTEMPTS", "N", F(login_attempts), 1, 1000000, .def = "10",
     .section = S_ACCOUNTS, .help = "failed logins per username per window, 5N per address"},
    {"login-window", "MESSENGER_LOGIN_WINDOW", "SECONDS", F(login_window_s), 1, 86400, .def = "300",
     .section = S_ACCOUNTS, .help = "the window of --login-attempts and --register-attempts"},
    {"register-attempts", "MESSENGER_REGISTER_ATTEMPTS", "N", F(register_attempts), 1, 1000000,
     .def = "20", .section = S_ACCOUNTS, .help = "registrations per client address per login window"},

    {"sse-heartbeat", "MESSENGER_SSE_HEARTBEAT", "SECONDS", F(sse_heartbeat_s), 1, 3600, .def = "15",
     .section = S_EVENTS, .help = "keep-alive comment interval"},
    {"sse-max-pending", "MESSENGER_SSE_MAX_PENDING", "N", F(sse_max_pending), 1024, 1L << 30,
     .def = "262144", .section = S_EVENTS, .help = "bytes queued for a stream before its client is dropped"},
    {"max-streams-per-user", "MESSENGER_MAX_STREAMS_PER_USER", "N", F(max_streams_per_user), 1, 100000,
     .def = "16", .section = S_EVENTS, .help = "open event streams of one user; a new one ends the oldest"},
    {"broker", "MESSENGER_BROKER", "redis://[[USER]:PASSWORD@]H:P", FUNC(parse_broker, show_broker),
     .def_note = "none", .section = S_EVENTS,
     .help = "share events between API instances through Redis pub/sub (a password: AUTH first); "
             "none: this instance only"},

    {"cassandra-host", "CASSANDRA_HOST", NULL, FUNC(parse_fastapi_host, show_hosts), .env_only = true,
     .section = S_CASSANDRA, .help = "the FastAPI app's variable: one contact point"},
    {"cassandra-port", "CASSANDRA_PORT", NULL, FUNC(parse_fastapi_port, show_hosts), .env_only = true,
     .section = S_CASSANDRA, .help = "the FastAPI app's variable: CASSANDRA_HOST's port"},
    {"cassandra-hosts", "CASSANDRA_HOSTS", "H[:P],...", FUNC(parse_hosts, show_hosts),
     .def = "127.0.0.1:9042", .section = S_CASSANDRA,
     .help = "contact points (or the FastAPI app's CASSANDRA_HOST and CASSANDRA_PORT)"},
    {"cassandra-keyspace", "CASSANDRA_KEYSPACE", "KS", F(cass_keyspace), .def = "messenger",
     .section = S_CASSANDRA, .help = "keyspace"},
    {"cassandra-consistency", "MESSENGER_CASSANDRA_CONSISTENCY", "C",
     FUNC(parse_consistency, show_consistency), .def = "local_quorum", .section = S_CASSANDRA,
     .help = "one|local_one|quorum|local_quorum|all|..."},
    {"cassandra-timeout-ms", "MESSENGER_CASSANDRA_TIMEOUT_MS", "N", F(cass_timeout_ms), 10, 600000,
     .def = "5000", .section = S_CASSANDRA, .help = "per CQL request; then 503"},
    {"cassandra-replication", "MESSENGER_CASSANDRA_REPLICATION", "N", F(cass_rf), 1, 32, .def = "1",
     .section = S_CASSANDRA, .help = "SimpleStrategy factor of a keyspace we create"},
    {"cassandra-schema", "MESSENGER_CASSANDRA_SCHEMA", "on|off", F(cass_schema), .def = "on",
     .negation = "no-schema", .section = S_CASSANDRA,
     .help = "create keyspace and tables at start-up (--no-schema: off)"},

    {"users", NULL, "N", F(seed_users), 0, 100000000, .def = "0", .section = S_SEED,
     .help = "generate a data set of N users (deterministic) ..."},
    {"conversations", NULL, "M", F(seed_conversations), 0, 100000000, .def = "0", .section = S_SEED,
     .help = "... M conversations ..."},
    {"messages", NULL, "K", F(seed_messages), 0, 1000000000, .def = "0", .section = S_SEED,
     .help = "... and K messages"},
    {"hub-conversations", NULL, "N", F(seed_hub), 0, 100000000, .def = "0", .section = S_SEED,
     .help = "also give user0000000 conversations with N others"},
    {"long-conversation", NULL, "N", F(seed_long), 0, 1000000000, .def = "0", .section = S_SEED,
     .help = "also write N messages between user0000000 and user0000001"},
};
const size_t config_n_settings = sizeof config_settings / sizeof config_settings[0];

_Static_assert(sizeof config_settings / sizeof config_settings[0] <= CONFIG_MAX_SETTINGS,
               "config_t.origin has a slot for each row");
