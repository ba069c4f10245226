/* buf.c - growable byte buffer; see buf.h for the invariants. */
#include "util/buf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

void buf_init(buf_t *b) { memset(b, 0, sizeof(*b)); }

void buf_free(buf_t *b) {
    free(b->data);
    buf_init(b);
}

void buf_reset(buf_t *b) {
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

bool buf_reserve(buf_t *b, size_t n) {
    if (b->oom) return false;
    if (n > SIZE_MAX - b->len - 1) goto fail;
    size_t need = b->len + n + 1; /* +1 keeps room for the terminating NUL */
    if (need <= b->cap) return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) { cap = need; break; }
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (!p) goto fail;
    b->data = p;
    b->cap = cap;
    return true;
fail:
    b->oom = 1;
    return false;
}

void buf_append(buf_t *b, const void *p, size_t n) {
    if (!buf_reserve(b, n)) return;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void buf_puts(buf_t *b, const char *s) { buf_append(b, s, strlen(s)); }

void buf_putc(buf_t *b, char c) {
    if (!buf_reserve(b, 1)) return;
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void buf_put_i64(buf_t *b, long long v) {
    /* By hand, not snprintf: every page's "total" and "limit" go through here. */
    char tmp[24];
    char *p = tmp + sizeof tmp;
    unsigned long long u = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0) *--p = '-';
    buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

char *buf_steal(buf_t *b, size_t *len) {
    if (!b->data && !b->oom) buf_reserve(b, 0);
    char *p = b->oom ? NULL : b->data;
    if (len) *len = b->oom ? 0 : b->len;
    if (b->oom) free(b->data);
    buf_init(b);
    return p;
}
