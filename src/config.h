/* config.h - everything a user can set, from defaults, then environment
 * variables, then command-line flags (each overriding the one before).
 * The one struct is filled once in main() and read-only afterwards. */
#ifndef MESSENGER_CONFIG_H
#define MESSENGER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/log.h"

typedef enum { CMD_SERVE, CMD_SEED, CMD_SCHEMA, CMD_BENCH_STORE, CMD_HELP, CMD_VERSION } command_t;

#define CONFIG_MAX_HOSTS 16

typedef struct config {
    command_t command;
    char host[64];
    uint16_t port;
    const char *data_dir;
    const char *store;          /* "lmdb" */
    log_level_t log_level;
    unsigned threads;
    size_t max_body;
    size_t max_content;
    size_t map_size_mb;
    unsigned max_connections;
    unsigned max_connections_per_address;
    unsigned idle_timeout_s;
    size_t connection_memory;   /* bytes per connection for headers */
    unsigned shutdown_grace_ms;
    /* cassandra */
    const char *cass_hosts[CONFIG_MAX_HOSTS]; /* "host" or "host:port" */
    size_t n_cass_hosts;
    char cass_hosts_buf[1024];
    const char *cass_keyspace;
    int cass_rf;                /* replication factor of a keyspace we create */
    uint16_t cass_consistency;  /* protocol value: ONE = 1, LOCAL_QUORUM = 6, ... */
    unsigned cass_timeout_ms;
    bool cass_schema;           /* create keyspace and tables at start-up */
    /* accounts (auth on: bearer tokens and access control; off: the open
     * FastAPI-compatible API, for deployments behind a trusted gateway) */
    bool auth;
    unsigned argon2_memory_kib;
    unsigned argon2_iterations;
    unsigned token_ttl_s;
    unsigned login_attempts;    /* failed logins per username per window */
    unsigned login_window_s;
    unsigned register_attempts; /* registrations per client address per login window */
    /* real-time events */
    unsigned sse_heartbeat_s;
    size_t sse_max_pending;     /* bytes queued for one stream before it is dropped */
    unsigned max_streams_per_user; /* a further stream ends the user's oldest */
    const char *broker;         /* "redis://host:port", or NULL: this instance only */
    const char *web_dir;        /* static files of the web client */
    /* bench-store */
    unsigned bench_concurrency;
    unsigned bench_duration_s;
    const char *bench_scenario; /* NULL: all; "page" or "send" */
    const char *bench_requests; /* NULL: the built-in set-up; else a request file */
    /* seed */
    long seed_users, seed_conversations, seed_messages;
    long seed_hub;              /* conversations of user0000000 (benchmarks) */
    long seed_long;             /* messages between user0000000 and user0000001 */
} config_t;

/* Fills cfg from defaults, the environment and argv. Returns 0, or -1 with
 * the problem printed to stderr (the caller exits with status 2). */
int config_load(config_t *cfg, int argc, char **argv);
void config_print_help(const char *prog);

#endif
