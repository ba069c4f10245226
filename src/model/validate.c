/* validate.c - what a valid username, content and idempotency key are. */
#include "model/model.h"

bool utf8_valid(const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    while (p < end) {
        unsigned c = *p;
        if (c < 0x80) { p++; continue; }
        size_t n;
        unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) { n = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { n = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { n = 3; cp = c & 0x07; }
        else return false;
        if ((size_t)(end - p) <= n) return false;
        for (size_t i = 1; i <= n; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = cp << 6 | (p[i] & 0x3F);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
        if (cp >= 0xD800 && cp <= 0xDFFF) return false;
        p += n + 1;
    }
    return true;
}

/* Decodes one code point of valid UTF-8 at *p, advancing *p. */
static unsigned utf8_next(const unsigned char **p) {
    unsigned c = *(*p)++;
    if (c < 0x80) return c;
    int n = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : 1;
    unsigned cp = c & (0x3F >> n);
    while (n--) cp = cp << 6 | (*(*p)++ & 0x3F);
    return cp;
}

const char *username_check(const char *s, size_t len) {
    if (len == 0) return "username must not be empty";
    if (!utf8_valid(s, len)) return "username must be valid UTF-8";
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    size_t chars = 0;
    while (p < end) {
        unsigned cp = utf8_next(&p);
        if (cp < 0x20 || cp == 0x7F || (cp >= 0x80 && cp <= 0x9F))
            return "username must not contain control characters";
        chars++;
    }
    if (chars > USERNAME_MAX) return "username must be at most 64 characters";
    return NULL;
}

void username_fold(const char *s, size_t len, char *out) {
    for (size_t i = 0; i < len; i++) out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
}

const char *content_check(const char *s, size_t len, size_t max_bytes) {
    if (len > max_bytes) return "content is longer than the configured maximum (max_content_bytes)";
    if (!utf8_valid(s, len)) return "content must be valid UTF-8";
    return NULL;
}

const char *client_message_id_check(const char *s, size_t len) {
    if (len == 0) return "client_message_id must not be empty";
    if (len > CLIENT_MESSAGE_ID_MAX) return "client_message_id must be at most 128 bytes";
    if (!utf8_valid(s, len)) return "client_message_id must be valid UTF-8";
    return NULL;
}
