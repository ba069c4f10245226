/* bench_store.h - `messenger bench-store`: the store alone, as the ceiling
 * for the HTTP benchmarks (see bench_store.c). */
#ifndef MESSENGER_BENCH_STORE_H
#define MESSENGER_BENCH_STORE_H

#include "config.h"

/* Returns the process exit status. */
int bench_store_run(const config_t *cfg);

#endif
