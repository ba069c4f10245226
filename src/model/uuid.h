/* uuid.h - 16-byte identifiers: parsing, formatting, and the version-1
 * (time-based) generator behind message ids.
 *
 * Message ids are Cassandra `timeuuid`s (RFC 4122 version 1): a 60-bit count
 * of 100-nanosecond ticks since 1582-10-15, a 14-bit clock sequence and a
 * 48-bit node. The generator promises ids that are strictly increasing (by
 * timestamp) across all threads of one process; the clock sequence and node
 * are random per generator, so two processes do not collide.
 */
#ifndef MESSENGER_UUID_H
#define MESSENGER_UUID_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct uuid {
    uint8_t b[16];
} uuid_t;

#define UUID_STR_LEN 36 /* without the terminating NUL */

/* Parses the canonical 8-4-4-4-12 hex form, in either case. Exactly len
 * bytes are read (s need not be NUL-terminated). Returns 0, or -1 and
 * leaves *out as it was. */
int uuid_parse(uuid_t *out, const char *s, size_t len);
/* The value of hex digit c (either case), or -1 if it is none. */
int uuid_hex_digit(char c);
/* Writes the lowercase canonical form plus a NUL into out[37]. */
void uuid_format(const uuid_t *u, char out[UUID_STR_LEN + 1]);
bool uuid_is_nil(const uuid_t *u);
int uuid_cmp(const uuid_t *a, const uuid_t *b);
static inline int uuid_version(const uuid_t *u) { return u->b[6] >> 4; }

/* Ticks are 100 ns units since 1582-10-15T00:00:00Z (the Gregorian epoch). */
#define UUID_TICKS_UNIX_EPOCH 0x01B21DD213814000ULL /* ticks at 1970-01-01 */
uint64_t uuid_time_ticks(const uuid_t *u); /* timestamp field of a v1 uuid */
int64_t ticks_to_unix_ms(uint64_t ticks);
/* ms is clamped to [0, TIME_MS_MAX] first: never an overflow. */
uint64_t unix_ms_to_ticks(int64_t ms);

/* The times this system stores: 1970-01-01 to 2200-01-01 (Unix ms). A time
 * read back from a store outside this range is damage, never trusted (the
 * arithmetic on it could overflow, and a far-future value would pin the id
 * generator). */
#define TIME_MS_MAX INT64_C(7258118400000)
static inline bool time_ms_valid(int64_t ms) { return ms >= 0 && ms <= TIME_MS_MAX; }

/* A v1 uuid from explicit fields (clock_seq: 14 bits, node: 48 bits). */
void uuid_make_v1(uuid_t *out, uint64_t ticks, uint16_t clock_seq, uint64_t node);

/* A 16-byte key whose memcmp order is the timeuuid order Cassandra uses
 * (Cassandra breaks timestamp ties with a signed compare; our generator never
 * makes ties, so the unsigned order here is equivalent for our ids):
 * timestamp first, then the remaining bytes. Inverse: uuid_from_sort_key. */
void uuid_sort_key(const uuid_t *u, uint8_t key[16]);
void uuid_from_sort_key(uuid_t *u, const uint8_t key[16]);

/* Random (version 4) uuid from the OS random source. Returns 0 or -1. */
int uuid_random(uuid_t *out);

/* The timeuuid generator. One per process, owned by the server. */
typedef struct idgen {
    _Atomic uint64_t last_ticks;
    uint16_t clock_seq;
    uint64_t node;
} idgen_t;

/* Seeds clock sequence and node from the OS random source. Returns 0 or -1. */
int idgen_init(idgen_t *g);
/* Next id: timestamp = max(now, last + 1), so ids never repeat or go back. */
void idgen_next(idgen_t *g, uuid_t *out);
/* Same, but never earlier than min_ticks (used to keep a conversation's
 * messages ordered if the wall clock steps back). A floor more than
 * IDGEN_MAX_AHEAD_MS ahead of the clock is ignored: no clock is that
 * wrong, so it is damage, and taking it would make every later id of the
 * process (and created_at) as far in the future. */
#define IDGEN_MAX_AHEAD_MS (24 * 3600 * 1000)
void idgen_next_after(idgen_t *g, uint64_t min_ticks, uuid_t *out);

#endif
