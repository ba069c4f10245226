/* server.h - the running service: configuration, id generator, store, API
 * and HTTP server wired together. The only process-wide mutable state lives
 * in struct server. */
#ifndef MESSENGER_SERVER_H
#define MESSENGER_SERVER_H

#include <stdbool.h>

#include "api/api.h"
#include "config.h"
#include "http/server.h"
#include "model/uuid.h"
#include "store/store.h"

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
/* `messenger serve`: runs until SIGINT/SIGTERM; returns the exit status. */
int server_run(const config_t *cfg);

#endif
