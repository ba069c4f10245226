/* json_write.c - ASCII-safe JSON string escaping (see json_write.h). */
#include "util/json_write.h"

#include <string.h>

static const char HEX[] = "0123456789abcdef";

static void put_u16(buf_t *b, unsigned v) {
    char e[6] = {'\\', 'u', HEX[(v >> 12) & 15], HEX[(v >> 8) & 15], HEX[(v >> 4) & 15], HEX[v & 15]};
    buf_append(b, e, 6);
}

/* Decodes one UTF-8 sequence at s[0..len); returns its length, or 0 when the
 * bytes there are not a well-formed sequence. */
static size_t decode_utf8(const unsigned char *s, size_t len, unsigned *cp) {
    unsigned c = s[0];
    size_t n;
    unsigned v;
    if (c >= 0xC2 && c <= 0xDF) { n = 1; v = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { n = 2; v = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { n = 3; v = c & 0x07; }
    else return 0;
    if (len <= n) return 0;
    for (size_t i = 1; i <= n; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3F);
    }
    if ((n == 2 && v < 0x800) || (n == 3 && (v < 0x10000 || v > 0x10FFFF))) return 0;
    if (v >= 0xD800 && v <= 0xDFFF) return 0;
    *cp = v;
    return n + 1;
}

void json_put_string(buf_t *b, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    /* Worst case is 12 output bytes per input byte (a lone byte -> \ufffd is
     * 6; a 4-byte sequence -> two \u escapes is 12, i.e. 3 per byte), plus
     * quotes; reserving len*6+2 covers every case, so the loop needs no
     * per-character growth checks. */
    if (len > (SIZE_MAX - 2) / 6 || !buf_reserve(b, len * 6 + 2)) { b->oom = 1; return; }
    char *o = b->data + b->len;
    *o++ = '"';
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        if (c >= 0x20 && c < 0x7F && c != '"' && c != '\\') { *o++ = (char)c; i++; continue; }
        if (c < 0x80) {
            *o++ = '\\';
            switch (c) {
            case '"': *o++ = '"'; break;
            case '\\': *o++ = '\\'; break;
            case '\n': *o++ = 'n'; break;
            case '\r': *o++ = 'r'; break;
            case '\t': *o++ = 't'; break;
            case '\b': *o++ = 'b'; break;
            case '\f': *o++ = 'f'; break;
            default:
                *o++ = 'u'; *o++ = '0'; *o++ = '0';
                *o++ = HEX[c >> 4]; *o++ = HEX[c & 15];
            }
            i++;
            continue;
        }
        unsigned cp;
        size_t n = decode_utf8(s + i, len - i, &cp);
        if (n == 0) { cp = 0xFFFD; n = 1; }
        b->len = (size_t)(o - b->data);
        if (cp >= 0x10000) {
            unsigned v = cp - 0x10000;
            put_u16(b, 0xD800 | (v >> 10));
            put_u16(b, 0xDC00 | (v & 0x3FF));
        } else {
            put_u16(b, cp);
        }
        o = b->data + b->len;
        i += n;
    }
    *o++ = '"';
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

void json_put_cstring(buf_t *b, const char *s) { json_put_string(b, s, strlen(s)); }

void json_put_key(buf_t *b, const char *key) {
    buf_putc(b, '"');
    buf_puts(b, key);
    buf_append(b, "\":", 2);
}
