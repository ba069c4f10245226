/* config.h - everything a user can set: defaults, then environment
 * variables, then command-line flags (each overriding the one before).
 *
 * Every setting is one row of one table (config_table.c): its flag, its
 * environment variable, its type and bounds, its default (written as a user
 * would write it, and parsed by the same code as their value), and its help
 * text. Parsing, validation, `--help` and `messenger config` all read that
 * table, and tests/http/test_tools.py checks the README's table against it,
 * so a setting cannot mean one thing in one place and another elsewhere.
 *
 * The one config_t is filled once in main() and read-only afterwards. */
#ifndef MESSENGER_CONFIG_H
#define MESSENGER_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "util/log.h"

typedef enum { CMD_SERVE, CMD_SEED, CMD_SCHEMA, CMD_CONFIG, CMD_HELP, CMD_VERSION } command_t;

#define CONFIG_MAX_HOSTS 16
#define CONFIG_MAX_SETTINGS 64

/* Where a setting's value came from (`messenger config` prints it). */
typedef enum { ORIGIN_DEFAULT, ORIGIN_ENV, ORIGIN_FLAG } config_origin_t;

typedef struct config {
    command_t command;
    char host[64];
    uint16_t port;
    const char *data_dir;
    const char *store;          /* "lmdb" or "cassandra" */
    log_level_t log_level;
    const char *log_format;     /* "text" or "json" */
    unsigned threads;
    size_t max_body;
    size_t max_content;
    size_t map_size_mb;
    unsigned max_connections;
    unsigned max_connections_per_address;
    unsigned idle_timeout_s;
    size_t connection_memory;   /* bytes per connection for headers */
    unsigned shutdown_grace_ms; /* not a setting: 10 s */
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
    /* seed */
    long seed_users, seed_conversations, seed_messages;
    long seed_hub;              /* conversations of user0000000 (benchmarks) */
    long seed_long;             /* messages between user0000000 and user0000001 */
    /* where each row of the table got its value (indexed like the table) */
    config_origin_t origin[CONFIG_MAX_SETTINGS];
} config_t;

/* ---- the table's row type (also for the tools beside the server) ---- */

typedef enum {
    SET_STRING,   /* const char *, pointing into argv, environ or the table */
    SET_UNSIGNED, /* unsigned, within [min, max] */
    SET_SIZE,     /* size_t, within [min, max] */
    SET_LONG,     /* long, within [min, max] */
    SET_INT,      /* int, within [min, max] */
    SET_BOOL,     /* bool: on/off, 1/0, true/false */
    SET_CHOICE,   /* const char *: one of the words of `choices` */
    SET_FUNC,     /* parsed by `parse`, shown by `show` */
} config_type_t;

/* The type of a field, found by the compiler: a row cannot say SET_UNSIGNED
 * for a size_t field. */
#define CONFIG_TYPE_OF(T, field) _Generic(((T *)0)->field, \
    unsigned: SET_UNSIGNED, size_t: SET_SIZE, long: SET_LONG, int: SET_INT, bool: SET_BOOL, \
    const char *: SET_STRING)
/* .type before .offset: a row's positional min and max follow .offset. */
#define CONFIG_FIELD(T, field) .type = CONFIG_TYPE_OF(T, field), .offset = offsetof(T, field)

typedef struct config_setting {
    const char *name;     /* the flag without "--"; also the setting's name */
    const char *env;      /* environment variable, or NULL */
    const char *metavar;  /* what the flag takes ("N", "SECONDS") */
    config_type_t type;
    size_t offset;        /* of the field in the struct the table fills */
    long min, max;        /* numbers: the accepted range, inclusive */
    const char *const *choices; /* SET_CHOICE: the words, NULL-terminated */
    const char *def;      /* the default as a user writes it; NULL: none */
    const char *def_note; /* the default in words, where code computes it */
    const char *negation; /* a flag without value that sets a bool off */
    bool env_only;        /* no flag of its own (an alias read from the environment) */
    int section;          /* the heading it is listed under in --help */
    int (*parse)(void *target, const char *value);            /* SET_FUNC */
    void (*show)(const void *target, char *out, size_t size); /* SET_FUNC */
    const char *help;
} config_setting_t;

/* The server's table (config_table.c) and its --help headings. */
extern const config_setting_t config_settings[];
extern const size_t config_n_settings;
extern const char *const config_sections[];

/* A tool's own settings, parsed with the server's (bench/bench_store.c). */
typedef struct config_extra {
    const config_setting_t *settings;
    size_t n;
    void *target;
} config_extra_t;

/* Fills cfg from the table's defaults, the environment and argv (a command
 * word first, then flags). Returns 0, or -1 with the problem printed to
 * stderr (the caller exits with status 2). */
int config_load(config_t *cfg, int argc, char **argv);
/* The same for a tool: no command word; `extra`'s rows (flags only) are
 * accepted beside the server's, and their defaults applied first. */
int config_load_tool(config_t *cfg, const config_extra_t *extra, int argc, char **argv);

/* A whole decimal number within [min, max] (the numeric rows', and the
 * table's own parsers'); 0, or -1 with *out untouched. */
int config_parse_long(const char *s, long min, long max, long *out);

/* `messenger --help`. */
void config_print_help(const char *prog);
/* The options part of it for a table (a tool's help lists its own too). */
void config_print_options(FILE *out, const config_setting_t *table, size_t n);
/* `messenger config`: every setting's value after defaults, environment and
 * flags, tab-separated: setting, value, origin, environment variable,
 * default. A broker password is shown as "***". */
void config_dump(FILE *out, const config_t *cfg);

#endif
