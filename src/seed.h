/* seed.h - `messenger seed`: deterministic test data through the store. */
#ifndef MESSENGER_SEED_H
#define MESSENGER_SEED_H

#include "config.h"

/* Returns the process exit status. */
int seed_run(const config_t *cfg);

#endif
