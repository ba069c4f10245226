/* buf.h - a growable byte buffer.
 *
 * Invariant: data[0..len) holds the bytes written so far and, whenever
 * data != NULL, data[len] == '\0', so a buffer of text is always a valid C
 * string. A buffer whose allocation failed is "poisoned" (oom == 1): every
 * later append is a no-op, so callers can append freely and check once at
 * the end with buf_ok().
 */
#ifndef MESSENGER_BUF_H
#define MESSENGER_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct buf {
    char *data;
    size_t len;
    size_t cap;
    int oom;
} buf_t;

void buf_init(buf_t *b);
void buf_free(buf_t *b);
/* Makes room for n more bytes; returns false (and poisons b) on failure. */
bool buf_reserve(buf_t *b, size_t n);
void buf_append(buf_t *b, const void *p, size_t n);
void buf_puts(buf_t *b, const char *s);
/* Appends a string literal (its length known at compile time). */
#define buf_lit(b, lit) buf_append((b), "" lit, sizeof(lit) - 1)
void buf_putc(buf_t *b, char c);
/* Appends the decimal form of v. */
void buf_put_i64(buf_t *b, long long v);
void buf_reset(buf_t *b);
static inline bool buf_ok(const buf_t *b) { return !b->oom; }
/* Hands the bytes to the caller (who must free() them) and empties b. */
char *buf_steal(buf_t *b, size_t *len);

#endif
