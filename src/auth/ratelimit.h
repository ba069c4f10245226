/* ratelimit.h - counting attempts per key (a username, an address) in a
 * fixed window, to slow down password guessing and the creation of
 * accounts (each costs a password hash).
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

/* limit attempts per window_s seconds; NULL when out of memory. */
ratelimit_t *ratelimit_new(unsigned limit, unsigned window_s);
void ratelimit_free(ratelimit_t *rl);
/* Takes one attempt for key: 0 when it may go ahead, else the seconds until
 * one may. The attempt counts from the moment it is taken, before the work
 * it guards (a password hash) is done, so that concurrent attempts cannot
 * all pass the check before the first one is counted. */
unsigned ratelimit_take(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms);
/* Gives back an attempt taken earlier that should not count: it was never
 * evaluated (the server was busy), or it succeeded. A window that started
 * meanwhile is left alone. */
void ratelimit_give_back(ratelimit_t *rl, const char *key, size_t len, int64_t now_ms);
/* Forgets key's attempts (after a successful login). */
void ratelimit_clear(ratelimit_t *rl, const char *key, size_t len);

/* The key for a client address: an IPv4 address whole, an IPv6 address by
 * its /64 (one host is given a /64 and can use every address in it), an
 * IPv4-mapped IPv6 address as its IPv4 address. */
#define RATELIMIT_ADDR_KEY_MAX 64
void ratelimit_addr_key(const char *peer, char out[RATELIMIT_ADDR_KEY_MAX]);

#endif
