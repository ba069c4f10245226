/* checks.c - what libmicrohttpd lets through and we do not: a decoded
 * %00, header names that are not tokens, both framings at once, and a
 * Content-Length over the limit (answered before the body is read).
 */
#include <errno.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <strings.h>

#include "http/http_internal.h"

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* libmicrohttpd's percent-decoding of the path and the query (in place;
 * returns the new length), except that %00 is left as it is: every value
 * is read as a C string, and a decoded NUL would cut it short
 * (/api/users/<id>%00junk read as <id>). Left literal, it fails whatever
 * check its value meets (an id, a name, a file name). A malformed escape
 * is kept as it came, as libmicrohttpd does. */
size_t http_unescape_keep_nul(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls;
    (void)c;
    char *w = s;
    for (const char *r = s; *r;) {
        int hi, lo;
        if (r[0] == '%' && (hi = hex_value(r[1])) >= 0 && (lo = hex_value(r[2])) >= 0 && (hi | lo)) {
            *w++ = (char)(hi << 4 | lo);
            r += 3;
        } else {
            *w++ = *r++;
        }
    }
    *w = '\0';
    return (size_t)(w - s);
}

/* tchar of RFC 9110, 5.6.2: the bytes a header name (a token) is made of,
 * one bit per byte value. A table: this runs for every header of every
 * request (strchr over the delimiters was 0.5% of a send's CPU). */
static const uint64_t TCHAR[4] = {
    0x03ff6cfa00000000ull, /* 0-63: ! # $ % & ' * + - . 0-9 */
    0x57ffffffc7fffffeull, /* 64-127: A-Z ^ _ ` a-z | ~ */
    0, 0,
};

static bool is_token(const char *s) {
    if (!*s) return false;
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (!(TCHAR[ch >> 6] >> (ch & 63) & 1)) return false;
    }
    return true;
}

typedef struct header_check {
    bool bad_name, has_length, has_encoding;
} header_check_t;

static enum MHD_Result check_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    (void)kind;
    (void)value;
    header_check_t *hc = cls;
    if (!is_token(key)) {
        hc->bad_name = true;
        return MHD_NO;
    }
    if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) hc->has_length = true;
    else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) hc->has_encoding = true;
    return MHD_YES;
}

/* Why a request is refused before anything else looks at it, or NULL. A
 * header name that is not a token, or both framings at once (RFC 9112,
 * 6.1): either is how a request is smuggled past a proxy that reads it
 * another way. */
const char *http_request_malformed(struct MHD_Connection *c) {
    header_check_t hc = {false, false, false};
    MHD_get_connection_values(c, MHD_HEADER_KIND, check_header, &hc);
    if (hc.bad_name) return "malformed header name";
    if (hc.has_length && hc.has_encoding) return "both Content-Length and Transfer-Encoding";
    return NULL;
}

bool http_content_length_too_large(struct MHD_Connection *c, size_t max) {
    const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl) return false;
    errno = 0;
    char *end;
    unsigned long long n = strtoull(cl, &end, 10);
    if (errno || end == cl) return false; /* MHD itself rejects a malformed length */
    return n > max;
}

