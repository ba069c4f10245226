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
