/* router.c - see router.h. Tables are small (a dozen routes), so a linear
 * scan beats anything cleverer. */
#include "http/router.h"

#include <stdbool.h>
#include <string.h>

static bool match_pattern(const char *pat, const char *path, http_params_t *p) {
    p->count = 0;
    while (*pat) {
        if (pat[0] == '{' && pat[1] == '}') {
            size_t n = strcspn(path, "/");
            if (n == 0 || p->count == HTTP_MAX_PARAMS) return false;
            p->val[p->count] = path;
            p->len[p->count++] = n;
            path += n;
            pat += 2;
        } else {
            if (*pat != *path) return false;
            pat++;
            path++;
        }
    }
    return *path == '\0';
}

/* Appends ", method" (or "method" first) to out unless it is there. */
static void allow_add(char *out, size_t cap, const char *method) {
    size_t len = strlen(out), m = strlen(method);
    for (const char *p = out; (p = strstr(p, method)) != NULL; p += m)
        if ((p == out || p[-1] == ' ') && (p[m] == ',' || p[m] == '\0')) return;
    if (len + (len ? 2 : 0) + m + 1 > cap) return;
    if (len) memcpy(out + len, ", ", 2), len += 2;
    memcpy(out + len, method, m + 1);
}

void http_route_allow(const http_route_t *routes, size_t n, const char *path, char *out, size_t cap) {
    http_params_t params;
    if (!cap) return;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (!match_pattern(routes[i].pattern, path, &params)) continue;
        allow_add(out, cap, routes[i].method);
        if (strcmp(routes[i].method, "GET") == 0) allow_add(out, cap, "HEAD");
    }
}

const http_route_t *http_route_match(const http_route_t *routes, size_t n, const char *method,
                                     const char *path, http_params_t *params, unsigned *status) {
    if (strcmp(method, "HEAD") == 0) method = "GET";
    bool path_known = false;
    for (size_t i = 0; i < n; i++) {
        if (!match_pattern(routes[i].pattern, path, params)) continue;
        if (strcmp(routes[i].method, method) == 0) return &routes[i];
        path_known = true;
    }
    *status = path_known ? 405 : 404;
    return NULL;
}
