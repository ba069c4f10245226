/* uuid.c - uuid parsing/formatting and the monotonic timeuuid generator. */
#include "model/uuid.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

/* Offset in the 8-4-4-4-12 form of each byte's two hex digits. */
static const unsigned char DIGITS_AT[16] = {0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34};

/* A hex digit's value plus one; 0 for every other byte. A table, not a
 * chain of comparisons: ids on the hot paths (two per send, one or two per
 * page read) are random hex, on which the comparisons' branches were
 * mispredicted about once a digit (uuid_parse was 4% of an HTTP thread's
 * time per send). */
static const unsigned char HEX_PLUS_ONE[256] = {
    ['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6, ['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
    ['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
    ['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

int uuid_hex_digit(char c) { return (int)HEX_PLUS_ONE[(unsigned char)c] - 1; }

int uuid_parse(uuid_t *out, const char *s, size_t len) {
    if (len != UUID_STR_LEN || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') return -1;
    const unsigned char *u = (const unsigned char *)s;
    unsigned bad = 0;
    uint8_t b[16];
    for (int i = 0; i < 16; i++) {
        unsigned hi = HEX_PLUS_ONE[u[DIGITS_AT[i]]] - 1u, lo = HEX_PLUS_ONE[u[DIGITS_AT[i] + 1]] - 1u;
        bad |= hi | lo; /* a non-digit wraps to all bits set */
        b[i] = (uint8_t)(hi << 4 | lo);
    }
    if (bad > 15) return -1;
    memcpy(out->b, b, 16); /* out is left alone on failure */
    return 0;
}

/* "00".."ff": formatting is on the hot path (four ids per message of every
 * page), so each byte is one 2-byte copy, with the dashes at fixed places. */
static const char HEX_PAIRS[513] =
    "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
    "404142434445464748494a4b4c4d4e4f505152535455565758595a5b5c5d5e5f"
    "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
    "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
    "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
    "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf"
    "e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff";

void uuid_format(const uuid_t *u, char out[UUID_STR_LEN + 1]) {
    for (int i = 0; i < 16; i++) memcpy(out + DIGITS_AT[i], HEX_PAIRS + 2 * u->b[i], 2);
    out[8] = out[13] = out[18] = out[23] = '-';
    out[UUID_STR_LEN] = '\0';
}

bool uuid_is_nil(const uuid_t *u) {
    static const uuid_t nil;
    return memcmp(u, &nil, sizeof nil) == 0;
}

int uuid_cmp(const uuid_t *a, const uuid_t *b) { return memcmp(a->b, b->b, 16); }

uint64_t uuid_time_ticks(const uuid_t *u) {
    const uint8_t *b = u->b;
    uint64_t low = (uint64_t)b[0] << 24 | (uint64_t)b[1] << 16 | (uint64_t)b[2] << 8 | b[3];
    uint64_t mid = (uint64_t)b[4] << 8 | b[5];
    uint64_t hi = (uint64_t)(b[6] & 0x0f) << 8 | b[7];
    return hi << 48 | mid << 32 | low;
}

int64_t ticks_to_unix_ms(uint64_t ticks) {
    return ((int64_t)ticks - (int64_t)UUID_TICKS_UNIX_EPOCH) / 10000;
}

uint64_t unix_ms_to_ticks(int64_t ms) {
    if (ms < 0) ms = 0;
    if (ms > TIME_MS_MAX) ms = TIME_MS_MAX;
    return (uint64_t)ms * 10000 + UUID_TICKS_UNIX_EPOCH;
}

void uuid_make_v1(uuid_t *out, uint64_t ticks, uint16_t clock_seq, uint64_t node) {
    uint8_t *b = out->b;
    uint32_t low = (uint32_t)ticks;
    uint16_t mid = (uint16_t)(ticks >> 32);
    uint16_t hi = (uint16_t)((ticks >> 48) & 0x0fff) | 0x1000; /* version 1 */
    b[0] = (uint8_t)(low >> 24); b[1] = (uint8_t)(low >> 16);
    b[2] = (uint8_t)(low >> 8);  b[3] = (uint8_t)low;
    b[4] = (uint8_t)(mid >> 8);  b[5] = (uint8_t)mid;
    b[6] = (uint8_t)(hi >> 8);   b[7] = (uint8_t)hi;
    b[8] = (uint8_t)(((clock_seq >> 8) & 0x3f) | 0x80); /* RFC 4122 variant */
    b[9] = (uint8_t)clock_seq;
    for (int i = 0; i < 6; i++) b[10 + i] = (uint8_t)(node >> (40 - 8 * i));
}

void uuid_sort_key(const uuid_t *u, uint8_t key[16]) {
    uint64_t t = uuid_time_ticks(u);
    for (int i = 0; i < 8; i++) key[i] = (uint8_t)(t >> (56 - 8 * i));
    memcpy(key + 8, u->b + 8, 8);
}

void uuid_from_sort_key(uuid_t *u, const uint8_t key[16]) {
    uint64_t t = 0;
    for (int i = 0; i < 8; i++) t = t << 8 | key[i];
    uuid_make_v1(u, t, 0, 0);
    memcpy(u->b + 8, key + 8, 8); /* clock sequence and node, as stored */
}

static int fill_random(void *p, size_t n) {
    uint8_t *q = p;
    while (n) {
        ssize_t r = getrandom(q, n, 0);
        if (r < 0) return -1;
        q += r;
        n -= (size_t)r;
    }
    return 0;
}

int uuid_random(uuid_t *out) {
    if (fill_random(out->b, 16) < 0) return -1;
    out->b[6] = (uint8_t)((out->b[6] & 0x0f) | 0x40);
    out->b[8] = (uint8_t)((out->b[8] & 0x3f) | 0x80);
    return 0;
}

int idgen_init(idgen_t *g) {
    uint8_t r[8];
    if (fill_random(r, sizeof r) < 0) return -1;
    atomic_init(&g->last_ticks, 0);
    g->clock_seq = (uint16_t)((r[0] << 8 | r[1]) & 0x3fff);
    uint64_t node = 0;
    for (int i = 2; i < 8; i++) node = node << 8 | r[i];
    g->node = node | 0x010000000000ULL; /* multicast bit: a random node id */
    return 0;
}

static uint64_t now_ticks(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 10000000ULL + (uint64_t)ts.tv_nsec / 100 + UUID_TICKS_UNIX_EPOCH;
}

void idgen_next_after(idgen_t *g, uint64_t min_ticks, uuid_t *out) {
    uint64_t now = now_ticks();
    if (now < min_ticks && min_ticks - now <= (uint64_t)IDGEN_MAX_AHEAD_MS * 10000) now = min_ticks;
    uint64_t last = atomic_load_explicit(&g->last_ticks, memory_order_relaxed);
    uint64_t next;
    do {
        next = now > last ? now : last + 1;
    } while (!atomic_compare_exchange_weak_explicit(&g->last_ticks, &last, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    uuid_make_v1(out, next, g->clock_seq, g->node);
}

void idgen_next(idgen_t *g, uuid_t *out) { idgen_next_after(g, 0, out); }
