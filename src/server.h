/* server.h - the running service: configuration, id generator, store, API
 * and HTTP server wired together. The only process-wide mutable state lives
 * in struct server. */
#ifndef MESSENGER_SERVER_H
#define MESSENGER_SERVER_H

#include <stdbool.h>

#include "api/api.h"
#include "config.h"
#include "http/http_server.h"
#include "model/uuid.h"
#include "store/store.h"
#include "store/cassandra/store_cassandra.h"

typedef struct server {
    const config_t *cfg;
    idgen_t ids;
    store_t *store;
    api_t api;
    http_server_t *http;
} server_t;

/* Opens the store named by cfg (used by `serve` and `seed`); bulk_load
 * trades per-commit durability for loading speed (the seeder). */
int server_open_store(server_t *srv, const config_t *cfg, bool bulk_load);
/* The Cassandra store's settings, from the configuration. */
store_cassandra_config_t server_cassandra_config(const config_t *cfg);
/* `messenger schema`: creates the Cassandra schema and indexes existing
 * data; returns the exit status. */
int server_schema(const config_t *cfg);
/* `messenger serve`: runs until SIGINT/SIGTERM; returns the exit status. */
int server_run(const config_t *cfg);

#endif
