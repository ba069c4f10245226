/* store_cassandra.h - the scale-out storage backend: Apache Cassandra
 * through our own CQL client (lib/cql).
 *
 * Every operation is a few pipelined CQL requests; callbacks run on the CQL
 * client's I/O thread. API nodes keep no state: any number of them can serve
 * the same keyspace. The keyspace of the FastAPI implementation works as is
 * (its four tables are read and written in its format); we only add tables.
 *
 * This header and store.h are the only doors in: the rest of this folder
 * shares cass_internal.h, which maps its files.
 */
#ifndef MESSENGER_STORE_CASSANDRA_H
#define MESSENGER_STORE_CASSANDRA_H

#include <stdbool.h>
#include <stdint.h>

#include "model/uuid.h"
#include "store/store.h"

typedef struct store_cassandra_config {
    const char *const *hosts;   /* "host" or "host:port" */
    size_t n_hosts;
    const char *keyspace;       /* [A-Za-z0-9_]{1,48} */
    int replication_factor;     /* SimpleStrategy RF when creating the keyspace */
    uint16_t consistency;       /* enum cql_consistency */
    uint32_t timeout_ms;        /* per request */
    uint32_t connect_wait_ms;   /* how long open() waits for a first connection */
    bool create_schema;         /* CREATE ... IF NOT EXISTS on open */
} store_cassandra_config_t;

/* Connects, creates the schema when asked, prepares the statements. Returns
 * 0 or a negative STORE_E* code with the reason logged. */
int store_cassandra_open(const store_cassandra_config_t *cfg, idgen_t *ids, store_t **out);

/* Creates the keyspace and tables (IF NOT EXISTS) and fills our index
 * tables from the FastAPI implementation's tables (users_by_name from
 * users, conversation_recency from conversations_by_user): what
 * `messenger schema` runs once when adopting an existing keyspace. */
int store_cassandra_migrate(const store_cassandra_config_t *cfg);

#endif
