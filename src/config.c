/* config.c - defaults, MESSENGER_* environment variables, and flags. */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "version.h"

static void defaults(config_t *c) {
    memset(c, 0, sizeof *c);
    c->command = CMD_SERVE;
    snprintf(c->host, sizeof c->host, "127.0.0.1");
    c->port = 8000;
    c->data_dir = "./data";
    c->store = "lmdb";
    c->log_level = LOG_INFO;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = n > 0 ? (unsigned)n : 1;
    c->max_body = 64 * 1024;
    c->max_content = 4096;
    c->map_size_mb = 16 * 1024;
    c->max_connections = 16384;
    c->idle_timeout_s = 120;
    c->connection_memory = 4096;
    c->shutdown_grace_ms = 10000;
    c->cass_keyspace = "messenger";
    c->cass_rf = 1;
    c->cass_consistency = 6; /* LOCAL_QUORUM */
    c->cass_timeout_ms = 5000;
    c->cass_schema = true;
    c->auth = true;
    c->argon2_memory_kib = 19456; /* OWASP's Argon2id minimum: 19 MiB, 2 passes */
    c->argon2_iterations = 2;
    c->token_ttl_s = 7 * 24 * 3600;
    c->login_attempts = 10;
    c->login_window_s = 300;
    c->register_attempts = 20;
    c->max_streams_per_user = 16;
    c->max_connections_per_address = 256;
    c->sse_heartbeat_s = 15;
    c->sse_max_pending = 256 * 1024;
    c->web_dir = "web";
    c->bench_concurrency = 64;
    c->bench_duration_s = 10;
}

/* Splits a comma-separated host list into c->cass_hosts. */
static int parse_hosts(config_t *c, const char *list) {
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

static const struct { const char *name; uint16_t value; } CONSISTENCIES[] = {
    {"any", 0}, {"one", 1}, {"two", 2}, {"three", 3}, {"quorum", 4}, {"all", 5},
    {"local_quorum", 6}, {"each_quorum", 7}, {"local_one", 10},
};

/* "host:port", "[v6]:port", ":port" or "port". */
static int parse_listen(config_t *c, const char *s) {
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
    char *end;
    errno = 0;
    long p = strtol(port, &end, 10);
    if (errno || end == port || *end || p < 0 || p > 65535) return -1;
    if (host[0]) snprintf(c->host, sizeof c->host, "%s", host);
    c->port = (uint16_t)p;
    return 0;
}

static int parse_size(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return -1;
    *out = v;
    return 0;
}

/* "on"/"off", "1"/"0", "true"/"false". */
static int parse_bool(const char *s, bool *out) {
    if (strcmp(s, "0") == 0 || strcasecmp(s, "off") == 0 || strcasecmp(s, "false") == 0) *out = false;
    else if (strcmp(s, "1") == 0 || strcasecmp(s, "on") == 0 || strcasecmp(s, "true") == 0) *out = true;
    else return -1;
    return 0;
}

enum opt_id { O_LISTEN = 1, O_DATA_DIR, O_STORE, O_LOG_LEVEL, O_THREADS, O_MAX_BODY, O_MAX_CONTENT,
              O_MAP_SIZE, O_MAX_CONN, O_IDLE, O_CONN_MEM, O_USERS, O_CONVS, O_MSGS, O_HUB, O_LONG,
              O_CASS_HOSTS, O_CASS_HOST, O_CASS_PORT, O_CASS_KS, O_CASS_CL, O_CASS_TIMEOUT, O_CASS_RF,
              O_CASS_SCHEMA, O_NO_SCHEMA, O_AUTH, O_ARGON_MEM, O_ARGON_IT, O_TOKEN_TTL,
              O_LOGIN_ATTEMPTS, O_LOGIN_WINDOW, O_REGISTER_ATTEMPTS, O_STREAMS_PER_USER, O_CONN_PER_ADDR, O_SSE_HB, O_SSE_PENDING, O_BROKER, O_WEB_DIR, O_B_CONC, O_B_DUR, O_B_SCEN, O_B_REQ, O_HELP, O_VERSION };

/* One table for flags and environment variables, so they cannot drift. */
static const struct setting {
    enum opt_id id;
    const char *flag;
    const char *env;
} SETTINGS[] = {
    {O_LISTEN, "listen", "MESSENGER_LISTEN"},
    {O_DATA_DIR, "data-dir", "MESSENGER_DATA_DIR"},
    {O_STORE, "store", "MESSENGER_STORE"},
    {O_LOG_LEVEL, "log-level", "MESSENGER_LOG_LEVEL"},
    {O_THREADS, "threads", "MESSENGER_THREADS"},
    {O_MAX_BODY, "max-body-bytes", "MESSENGER_MAX_BODY_BYTES"},
    {O_MAX_CONTENT, "max-content-bytes", "MESSENGER_MAX_CONTENT_BYTES"},
    {O_MAP_SIZE, "map-size-mb", "MESSENGER_MAP_SIZE_MB"},
    {O_MAX_CONN, "max-connections", "MESSENGER_MAX_CONNECTIONS"},
    {O_IDLE, "idle-timeout", "MESSENGER_IDLE_TIMEOUT"},
    {O_CONN_MEM, "connection-memory", "MESSENGER_CONNECTION_MEMORY"},
    {O_CASS_HOST, NULL, "CASSANDRA_HOST"},   /* the FastAPI app's variables, */
    {O_CASS_PORT, NULL, "CASSANDRA_PORT"},   /* read before CASSANDRA_HOSTS */
    {O_CASS_HOSTS, "cassandra-hosts", "CASSANDRA_HOSTS"},
    {O_CASS_KS, "cassandra-keyspace", "CASSANDRA_KEYSPACE"},
    {O_CASS_CL, "cassandra-consistency", "MESSENGER_CASSANDRA_CONSISTENCY"},
    {O_CASS_TIMEOUT, "cassandra-timeout-ms", "MESSENGER_CASSANDRA_TIMEOUT_MS"},
    {O_CASS_RF, "cassandra-replication", "MESSENGER_CASSANDRA_REPLICATION"},
    {O_CASS_SCHEMA, NULL, "MESSENGER_CASSANDRA_SCHEMA"},
    {O_NO_SCHEMA, "no-schema", NULL},
    {O_AUTH, "auth", "MESSENGER_AUTH"},
    {O_ARGON_MEM, "argon2-memory-kib", "MESSENGER_ARGON2_MEMORY_KIB"},
    {O_ARGON_IT, "argon2-iterations", "MESSENGER_ARGON2_ITERATIONS"},
    {O_TOKEN_TTL, "token-ttl", "MESSENGER_TOKEN_TTL"},
    {O_LOGIN_ATTEMPTS, "login-attempts", "MESSENGER_LOGIN_ATTEMPTS"},
    {O_LOGIN_WINDOW, "login-window", "MESSENGER_LOGIN_WINDOW"},
    {O_REGISTER_ATTEMPTS, "register-attempts", "MESSENGER_REGISTER_ATTEMPTS"},
    {O_STREAMS_PER_USER, "max-streams-per-user", "MESSENGER_MAX_STREAMS_PER_USER"},
    {O_CONN_PER_ADDR, "max-connections-per-address", "MESSENGER_MAX_CONNECTIONS_PER_ADDRESS"},
    {O_SSE_HB, "sse-heartbeat", "MESSENGER_SSE_HEARTBEAT"},
    {O_SSE_PENDING, "sse-max-pending", "MESSENGER_SSE_MAX_PENDING"},
    {O_BROKER, "broker", "MESSENGER_BROKER"},
    {O_WEB_DIR, "web-dir", "MESSENGER_WEB_DIR"},
    {O_B_CONC, "concurrency", NULL},
    {O_B_DUR, "duration", NULL},
    {O_B_SCEN, "scenario", NULL},
    {O_B_REQ, "requests", NULL},
    {O_USERS, "users", NULL},
    {O_CONVS, "conversations", NULL},
    {O_MSGS, "messages", NULL},
    {O_HUB, "hub-conversations", NULL},
    {O_LONG, "long-conversation", NULL},
};
#define N_SETTINGS (sizeof SETTINGS / sizeof SETTINGS[0])

static int apply(config_t *c, enum opt_id id, const char *v, const char *name) {
    long n;
    switch (id) {
    case O_LISTEN:
        if (parse_listen(c, v)) goto bad;
        return 0;
    case O_DATA_DIR: c->data_dir = v; return 0;
    case O_STORE:
        if (strcmp(v, "lmdb") != 0 && strcmp(v, "cassandra") != 0) {
            fprintf(stderr, "messenger: %s: unknown store '%s' (lmdb or cassandra)\n", name, v);
            return -1;
        }
        c->store = v;
        return 0;
    case O_CASS_HOST: {
        char h[300];
        if (strlen(v) >= 256) goto bad;
        snprintf(h, sizeof h, "%s", v);
        return parse_hosts(c, h) ? -1 : 0;
    }
    case O_CASS_PORT: {
        if (parse_size(v, 1, 65535, &n)) goto bad;
        char h[300];
        const char *host = c->n_cass_hosts ? c->cass_hosts[0] : "127.0.0.1";
        if (strchr(host, ':')) host = "127.0.0.1";
        snprintf(h, sizeof h, "%.255s:%ld", host, n);
        return parse_hosts(c, h) ? -1 : 0;
    }
    case O_CASS_HOSTS: if (parse_hosts(c, v)) goto bad; return 0;
    case O_CASS_KS: c->cass_keyspace = v; return 0;
    case O_CASS_CL:
        for (size_t i = 0; i < sizeof CONSISTENCIES / sizeof CONSISTENCIES[0]; i++)
            if (strcasecmp(v, CONSISTENCIES[i].name) == 0) { c->cass_consistency = CONSISTENCIES[i].value; return 0; }
        goto bad;
    case O_CASS_TIMEOUT: if (parse_size(v, 10, 600000, &n)) goto bad; c->cass_timeout_ms = (unsigned)n; return 0;
    case O_CASS_RF: if (parse_size(v, 1, 32, &n)) goto bad; c->cass_rf = (int)n; return 0;
    case O_CASS_SCHEMA:
        if (parse_bool(v, &c->cass_schema)) goto bad;
        return 0;
    case O_NO_SCHEMA: c->cass_schema = false; return 0;
    case O_AUTH:
        if (parse_bool(v, &c->auth)) goto bad;
        return 0;
    case O_ARGON_MEM: if (parse_size(v, 8, 4L << 20, &n)) goto bad; c->argon2_memory_kib = (unsigned)n; return 0;
    case O_ARGON_IT: if (parse_size(v, 1, 100, &n)) goto bad; c->argon2_iterations = (unsigned)n; return 0;
    case O_TOKEN_TTL: if (parse_size(v, 1, 365L * 86400, &n)) goto bad; c->token_ttl_s = (unsigned)n; return 0;
    case O_LOGIN_ATTEMPTS: if (parse_size(v, 1, 1000000, &n)) goto bad; c->login_attempts = (unsigned)n; return 0;
    case O_LOGIN_WINDOW: if (parse_size(v, 1, 86400, &n)) goto bad; c->login_window_s = (unsigned)n; return 0;
    case O_REGISTER_ATTEMPTS: if (parse_size(v, 1, 1000000, &n)) goto bad; c->register_attempts = (unsigned)n; return 0;
    case O_STREAMS_PER_USER: if (parse_size(v, 1, 100000, &n)) goto bad; c->max_streams_per_user = (unsigned)n; return 0;
    case O_CONN_PER_ADDR: if (parse_size(v, 1, 1000000, &n)) goto bad; c->max_connections_per_address = (unsigned)n; return 0;
    case O_SSE_HB: if (parse_size(v, 1, 3600, &n)) goto bad; c->sse_heartbeat_s = (unsigned)n; return 0;
    case O_SSE_PENDING: if (parse_size(v, 1024, 1L << 30, &n)) goto bad; c->sse_max_pending = (size_t)n; return 0;
    case O_BROKER:
        if (strncmp(v, "redis://", 8) != 0) goto bad;
        c->broker = v;
        return 0;
    case O_WEB_DIR: c->web_dir = v; return 0;
    case O_B_CONC: if (parse_size(v, 1, 100000, &n)) goto bad; c->bench_concurrency = (unsigned)n; return 0;
    case O_B_DUR: if (parse_size(v, 1, 3600, &n)) goto bad; c->bench_duration_s = (unsigned)n; return 0;
    case O_B_SCEN:
        if (strcmp(v, "page") != 0 && strcmp(v, "send") != 0) goto bad;
        c->bench_scenario = v;
        return 0;
    case O_B_REQ:
        if (!*v) goto bad;
        c->bench_requests = v;
        return 0;
    case O_LOG_LEVEL:
        if (log_level_parse(v, &c->log_level)) goto bad;
        return 0;
    case O_THREADS: if (parse_size(v, 1, 256, &n)) goto bad; c->threads = (unsigned)n; return 0;
    case O_MAX_BODY: if (parse_size(v, 1024, 64L << 20, &n)) goto bad; c->max_body = (size_t)n; return 0;
    case O_MAX_CONTENT: if (parse_size(v, 1, 1L << 20, &n)) goto bad; c->max_content = (size_t)n; return 0;
    case O_MAP_SIZE: if (parse_size(v, 16, 1L << 24, &n)) goto bad; c->map_size_mb = (size_t)n; return 0;
    case O_MAX_CONN: if (parse_size(v, 1, 1000000, &n)) goto bad; c->max_connections = (unsigned)n; return 0;
    case O_IDLE: if (parse_size(v, 1, 86400, &n)) goto bad; c->idle_timeout_s = (unsigned)n; return 0;
    case O_CONN_MEM: if (parse_size(v, 2048, 1L << 20, &n)) goto bad; c->connection_memory = (size_t)n; return 0;
    case O_USERS: if (parse_size(v, 0, 100000000, &n)) goto bad; c->seed_users = n; return 0;
    case O_CONVS: if (parse_size(v, 0, 100000000, &n)) goto bad; c->seed_conversations = n; return 0;
    case O_MSGS: if (parse_size(v, 0, 1000000000, &n)) goto bad; c->seed_messages = n; return 0;
    case O_HUB: if (parse_size(v, 0, 100000000, &n)) goto bad; c->seed_hub = n; return 0;
    case O_LONG: if (parse_size(v, 0, 1000000000, &n)) goto bad; c->seed_long = n; return 0;
    default: return -1;
    }
bad:
    fprintf(stderr, "messenger: %s: invalid value '%s' (see --help)\n", name, v);
    return -1;
}

void config_print_help(const char *prog) {
    printf("messenger %s - a fast, dependable messaging backend\n\n"
           "Usage:\n"
           "  %s [serve] [options]      serve the HTTP/JSON API (the default)\n"
           "  %s seed [options]         write the test data set into the store\n"
           "  %s schema [options]       create the Cassandra keyspace and tables, and index\n"
           "                            an existing (FastAPI) keyspace's data\n"
           "  %s bench-store [options]  the store alone (no HTTP): page reads and sends from\n"
           "                            --concurrency N (64) in flight for --duration S (10)\n"
           "                            [--scenario page|send]; one JSON line per scenario\n"
           "                            [--requests FILE]: each operation is a random line of\n"
           "                            a bench/mix.lua request file instead of its own two\n"
           "                            users: GET /api/messages/conversation/ID?limit=N\n"
           "                            [&before_message_id=ID] lines for page, POST\n"
           "                            /api/messages/ {JSON} lines for send; the scenario is\n"
           "                            the file's kind (a --scenario must match it)\n"
           "  %s --help | --version\n\n"
           "Options (environment variable in brackets; flags win):\n"
           "  --listen HOST:PORT        address to serve on [MESSENGER_LISTEN] (127.0.0.1:8000)\n"
           "  --data-dir DIR            embedded store directory [MESSENGER_DATA_DIR] (./data)\n"
           "  --store NAME              lmdb (embedded) or cassandra [MESSENGER_STORE] (lmdb)\n"
           "  --log-level LEVEL         debug|info|warn|error|off [MESSENGER_LOG_LEVEL] (info)\n"
           "  --threads N               HTTP event-loop threads [MESSENGER_THREADS] (CPU count)\n"
           "  --max-body-bytes N        largest request body, else 413 [MESSENGER_MAX_BODY_BYTES] (65536)\n"
           "  --max-content-bytes N     largest message content, else 422 [MESSENGER_MAX_CONTENT_BYTES] (4096)\n"
           "  --map-size-mb N           largest embedded database [MESSENGER_MAP_SIZE_MB] (16384)\n"
           "  --max-connections N       open connections at most [MESSENGER_MAX_CONNECTIONS] (16384)\n"
           "  --max-connections-per-address N  open connections from one client address at most\n"
           "                            [MESSENGER_MAX_CONNECTIONS_PER_ADDRESS] (256)\n"
           "  --idle-timeout SECONDS    close idle keep-alive connections [MESSENGER_IDLE_TIMEOUT] (120)\n"
           "  --connection-memory N     bytes per connection for request headers; larger\n"
           "                            headers get 431 [MESSENGER_CONNECTION_MEMORY] (4096)\n"
           "  --web-dir DIR             the web client's files, served at / [MESSENGER_WEB_DIR] (web)\n\n"
           "Accounts:\n"
           "  --auth on|off             bearer tokens and access control [MESSENGER_AUTH] (on);\n"
           "                            off: the open FastAPI-compatible API, for use behind a\n"
           "                            trusted gateway only (anyone can read anything)\n"
           "  --argon2-memory-kib N     Argon2id memory per password hash [MESSENGER_ARGON2_MEMORY_KIB] (19456)\n"
           "  --argon2-iterations N     Argon2id passes [MESSENGER_ARGON2_ITERATIONS] (2)\n"
           "  --token-ttl SECONDS       lifetime of a login token [MESSENGER_TOKEN_TTL] (604800)\n"
           "  --login-attempts N        failed logins per username per window, 5N per address\n"
           "                            [MESSENGER_LOGIN_ATTEMPTS] (10)\n"
           "  --login-window SECONDS    [MESSENGER_LOGIN_WINDOW] (300)\n"
           "  --register-attempts N     registrations per client address per login window\n"
           "                            [MESSENGER_REGISTER_ATTEMPTS] (20)\n\n"
           "Real-time events (GET /api/events):\n"
           "  --sse-heartbeat SECONDS   keep-alive comment interval [MESSENGER_SSE_HEARTBEAT] (15)\n"
           "  --sse-max-pending N       bytes queued for a stream before its client is dropped\n"
           "                            [MESSENGER_SSE_MAX_PENDING] (262144)\n"
           "  --max-streams-per-user N  open event streams of one user; a new one ends the oldest\n"
           "                            [MESSENGER_MAX_STREAMS_PER_USER] (16)\n"
           "  --broker redis://[[USER]:PASSWORD@]H:P  share events between API instances through\n"
           "                            Redis pub/sub (a password: AUTH first)\n"
           "                            [MESSENGER_BROKER] (none: this instance only)\n\n"
           "Cassandra store (--store cassandra):\n"
           "  --cassandra-hosts H[:P],...  contact points [CASSANDRA_HOSTS, or CASSANDRA_HOST and\n"
           "                            CASSANDRA_PORT] (127.0.0.1:9042)\n"
           "  --cassandra-keyspace KS   keyspace [CASSANDRA_KEYSPACE] (messenger)\n"
           "  --cassandra-consistency C one|local_one|quorum|local_quorum|all...\n"
           "                            [MESSENGER_CASSANDRA_CONSISTENCY] (local_quorum)\n"
           "  --cassandra-timeout-ms N  per request [MESSENGER_CASSANDRA_TIMEOUT_MS] (5000)\n"
           "  --cassandra-replication N SimpleStrategy factor of a keyspace we create\n"
           "                            [MESSENGER_CASSANDRA_REPLICATION] (1)\n"
           "  --no-schema               do not create keyspace and tables at start-up\n"
           "                            [MESSENGER_CASSANDRA_SCHEMA=0]\n\n"
           "Seed options (without them: the fixed edge-case data set):\n"
           "  --users N --conversations M --messages K\n"
           "                            generate a data set of that size (deterministic)\n"
           "  --hub-conversations N     also give user0000000 conversations with N others\n"
           "  --long-conversation N     also write N messages between user0000000 and user0000001\n\n"
           "SIGINT or SIGTERM stops the server gracefully: requests in flight finish and\n"
           "pending commits are flushed.\n",
           MESSENGER_VERSION, prog, prog, prog, prog, prog);
}

int config_load(config_t *c, int argc, char **argv) {
    defaults(c);
    for (size_t i = 0; i < N_SETTINGS; i++) {
        const char *v = SETTINGS[i].env ? getenv(SETTINGS[i].env) : NULL;
        if (v && *v && apply(c, SETTINGS[i].id, v, SETTINGS[i].env)) return -1;
    }
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        if (strcmp(argv[1], "serve") == 0) c->command = CMD_SERVE;
        else if (strcmp(argv[1], "seed") == 0) c->command = CMD_SEED;
        else if (strcmp(argv[1], "schema") == 0) c->command = CMD_SCHEMA;
        else if (strcmp(argv[1], "bench-store") == 0) c->command = CMD_BENCH_STORE;
        else {
            fprintf(stderr, "messenger: unknown command '%s' (see --help)\n", argv[1]);
            return -1;
        }
        first = 2;
    }
    struct option opts[N_SETTINGS + 3];
    size_t n_opts = 0;
    for (size_t i = 0; i < N_SETTINGS; i++)
        if (SETTINGS[i].flag)
            opts[n_opts++] = (struct option){SETTINGS[i].flag, SETTINGS[i].id == O_NO_SCHEMA ? no_argument : required_argument,
                                             NULL, SETTINGS[i].id};
    opts[n_opts++] = (struct option){"help", no_argument, NULL, O_HELP};
    opts[n_opts++] = (struct option){"version", no_argument, NULL, O_VERSION};
    opts[n_opts] = (struct option){0, 0, 0, 0};
    optind = first;
    opterr = 0;
    int ch;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (ch == 'h' || ch == O_HELP) { c->command = CMD_HELP; return 0; }
        if (ch == O_VERSION) { c->command = CMD_VERSION; return 0; }
        if (ch == '?' || ch == ':') {
            fprintf(stderr, "messenger: unknown option or missing value: %s (see --help)\n", argv[optind - 1]);
            return -1;
        }
        const char *name = "option";
        for (size_t i = 0; i < N_SETTINGS; i++)
            if ((int)SETTINGS[i].id == ch && SETTINGS[i].flag) name = SETTINGS[i].flag;
        if (apply(c, (enum opt_id)ch, optarg, name)) return -1;
    }
    if (optind < argc) {
        fprintf(stderr, "messenger: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    return 0;
}
