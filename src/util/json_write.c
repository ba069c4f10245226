/* json_write.c - ASCII-safe JSON string escaping (see json_write.h). */
#include "util/json_write.h"

#include <string.h>

static const char HEX[] = "0123456789abcdef";

static char *put_u16(char *o, unsigned v) {
    o[0] = '\\';
    o[1] = 'u';
    o[2] = HEX[(v >> 12) & 15];
    o[3] = HEX[(v >> 8) & 15];
    o[4] = HEX[(v >> 4) & 15];
    o[5] = HEX[v & 15];
    return o + 6;
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

/* True when none of the 8 bytes in w needs escaping: each is in
 * [0x20, 0x7F) and is neither '"' nor '\\'. Bit tricks on a word at a time;
 * a message's content is mostly such bytes. */
static inline int plain8(uint64_t w) {
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t ctl = w - ones * 0x20;                   /* high bit set where byte < 0x20 */
    uint64_t del = (w ^ (ones * 0x7F)) - ones;        /* where byte == 0x7F */
    uint64_t quote = (w ^ (ones * '"')) - ones;       /* where byte == '"' */
    uint64_t bslash = (w ^ (ones * '\\')) - ones;     /* where byte == '\\' */
    /* A byte >= 0x80 has its own high bit set (w), which also guards the
     * borrows above, which only come from bytes below 0x20 or equal to
     * the subtracted value. */
    return ((w | ctl | del | quote | bslash) & high) == 0;
}

char *json_escape_to(char *o, const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    *o++ = '"';
    size_t i = 0;
    while (i < len) {
        while (len - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!plain8(w)) break;
            memcpy(o, &w, 8);
            o += 8;
            i += 8;
        }
        if (i == len) break;
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
        if (cp >= 0x10000) {
            unsigned v = cp - 0x10000;
            o = put_u16(o, 0xD800 | (v >> 10));
            o = put_u16(o, 0xDC00 | (v & 0x3FF));
        } else {
            o = put_u16(o, cp);
        }
        i += n;
    }
    *o++ = '"';
    return o;
}

void json_put_string(buf_t *b, const char *str, size_t len) {
    if (len > (SIZE_MAX - 2) / 6 || !buf_reserve(b, JSON_ESCAPED_MAX_LEN(len))) {
        b->oom = 1;
        return;
    }
    char *o = json_escape_to(b->data + b->len, str, len);
    b->len = (size_t)(o - b->data);
    b->data[b->len] = '\0';
}

void json_put_cstring(buf_t *b, const char *s) { json_put_string(b, s, strlen(s)); }

void json_put_key(buf_t *b, const char *key) {
    buf_putc(b, '"');
    buf_puts(b, key);
    buf_append(b, "\":", 2);
}
