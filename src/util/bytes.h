/* bytes.h - big-endian integer packing, so that memcmp order of packed keys
 * equals numeric order. */
#ifndef MESSENGER_BYTES_H
#define MESSENGER_BYTES_H

#include <stdint.h>

static inline void be64_put(uint8_t *p, uint64_t v) {
    for (int i = 7; i >= 0; i--) { p[i] = (uint8_t)v; v >>= 8; }
}

static inline uint64_t be64_get(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | p[i];
    return v;
}

#endif
