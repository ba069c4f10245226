/* ratelimit.h - counting failures per key (a username, an address) in a
 * fixed window, to slow down password guessing.
 *
 * Memory is fixed at creation: keys are kept by a keyed hash (a secret drawn
 * at start-up, so that nobody can aim collisions) in a set-associative
 * table; when a set is full, an expired entry or else the oldest one is
 * replaced. Counts live in this process only: with N API instances an
 * attacker gets N times the attempts (README, "Accounts").
 */
#ifndef MESSENGER_AUTH_RATELIMIT_H
#define MESSENGER_AUTH_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

typedef struct ratelimit ratelimit_t;

/* limit failures per window_s seconds; NULL when out of memory. */
ratelimit_t *ratelimit_new(unsigned limit, unsigned window_s);
void ratelimit_free(ratelimit_t *rl);
/* 0 when key may try now, else the seconds until it may. */
unsigned ratelimit_check(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms);
void ratelimit_fail(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms);
/* Forgets key's failures (after a successful login). */
void ratelimit_clear(ratelimit_t *rl, const char *key, size_t len);

#endif
