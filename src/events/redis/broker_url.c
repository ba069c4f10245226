/* broker_url.c - the broker's url, "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]"
 * (events/broker.h), into host, port and credentials. */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "events/redis/broker_internal.h"
#include "model/uuid.h"

static bool host_char(char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '-' || ch == '_';
}

/* Percent-decodes s[0..n) into out (AUTH_MAX bytes and a NUL). Raw spaces
 * and control characters are refused: a url is one printable word. */
static int pct_decode(const char *s, size_t n, char *out, size_t *len) {
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = n - i >= 3 ? uuid_hex_digit(s[i + 1]) : -1, lo = n - i >= 3 ? uuid_hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return -1;
            c = (char)(hi << 4 | lo);
            i += 2;
        } else if ((unsigned char)c <= ' ' || c == 0x7f) {
            return -1;
        }
        if (k == AUTH_MAX) return -1;
        out[k++] = c;
    }
    out[k] = '\0';
    *len = k;
    return 0;
}

/* "[USER]:PASSWORD@" at *p, up to the last '@' before the first '/' (an '@'
 * or '/' inside them must be percent-encoded). Absent: nothing to do. */
static int parse_userinfo(const char **p, url_t *u) {
    size_t auth_len = strcspn(*p, "/");
    const char *at = memrchr(*p, '@', auth_len);
    if (!at) return 0;
    const char *colon = memchr(*p, ':', (size_t)(at - *p));
    if (!colon || colon + 1 == at) return -EINVAL; /* a user needs a password */
    if (pct_decode(*p, (size_t)(colon - *p), u->user, &u->user_len) != 0 ||
        pct_decode(colon + 1, (size_t)(at - colon - 1), u->pass, &u->pass_len) != 0)
        return -EINVAL;
    u->has_pass = true;
    *p = at + 1;
    return 0;
}

/* "redis://[[USER]:PASSWORD@]HOST[:PORT][/[DB]]": HOST a name, an IPv4
 * address, or an IPv6 address in brackets; PORT 1-65535, default 6379. A
 * database number is accepted and ignored: pub/sub channels are not per
 * database. Query strings and other schemes (rediss, unix) are refused. */
int broker_url_parse(const char *url, url_t *u) {
    static const char scheme[] = "redis://";
    memset(u, 0, sizeof *u);
    if (strncasecmp(url, scheme, sizeof scheme - 1) != 0) return -EINVAL;
    const char *p = url + sizeof scheme - 1;
    if (parse_userinfo(&p, u) != 0) return -EINVAL;
    const char *h = p;
    size_t hlen;
    if (*p == '[') {
        h = ++p;
        while ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f') || (*p >= 'A' && *p <= 'F') ||
               *p == ':' || *p == '.')
            p++;
        if (*p != ']') return -EINVAL;
        hlen = (size_t)(p - h);
        p++;
    } else {
        while (host_char(*p)) p++;
        hlen = (size_t)(p - h);
    }
    if (hlen == 0 || hlen > HOST_MAX) return -EINVAL;
    memcpy(u->host, h, hlen);
    u->host[hlen] = '\0';
    long v = 6379;
    if (*p == ':') {
        p++;
        v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 6) {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (digits == 0 || v < 1 || v > 65535) return -EINVAL;
    }
    if (*p == '/') {
        p++;
        while (*p >= '0' && *p <= '9') p++;
    }
    if (*p != '\0') return -EINVAL;
    u->port = (int)v;
    return 0;
}
