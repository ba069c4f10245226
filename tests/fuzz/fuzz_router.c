/* fuzz_router.c - http_route_match (src/http/router.c) against a reference
 * matcher, over the route table of src/api/routes.c (extracted at build time
 * into routes_table.h, so the harness follows the real table).
 *
 * Input: the method, a NUL byte, then the path (as libmicrohttpd hands it
 * over: a NUL-terminated string, so a NUL inside the path ends it).
 *
 * The reference splits pattern and path into '/'-separated segments: a "{}"
 * segment matches any non-empty segment; every other segment must be equal;
 * the segment counts must agree. HEAD is GET. The first route in table order
 * that matches path and method wins; 405 when only other methods match the
 * path, else 404. Parameters must point into the path, in order. */
#include <stdbool.h>
#include <string.h>

#include "fuzz_common.h"
#include "http/router.h"

static void handler(http_request_t *req, void *app, const http_params_t *p) {
    (void)req;
    (void)app;
    (void)p;
}

static const http_route_t table[] = {
#define FUZZ_HANDLER handler
#include "routes_table.h"
#undef FUZZ_HANDLER
};
#define N_ROUTES (sizeof table / sizeof table[0])

/* Segment-wise matching; params collected like the router's. */
static bool ref_match(const char *pat, const char *path, http_params_t *p) {
    p->count = 0;
    if (*pat != '/' || *path != '/') return *pat == *path && *pat == '\0';
    for (;;) {
        pat++;
        path++;
        size_t pl = strcspn(pat, "/"), sl = strcspn(path, "/");
        if (pl == 2 && pat[0] == '{' && pat[1] == '}') {
            if (sl == 0 || p->count == HTTP_MAX_PARAMS) return false;
            p->val[p->count] = path;
            p->len[p->count++] = sl;
        } else if (pl != sl || memcmp(pat, path, pl) != 0) {
            return false;
        }
        pat += pl;
        path += sl;
        if (*pat == '\0' || *path == '\0') return *pat == *path;
    }
}

static const http_route_t *ref_route(const char *method, const char *path, http_params_t *p, unsigned *status) {
    if (strcmp(method, "HEAD") == 0) method = "GET";
    bool known = false;
    for (size_t i = 0; i < N_ROUTES; i++) {
        if (!ref_match(table[i].pattern, path, p)) continue;
        if (strcmp(table[i].method, method) == 0) return &table[i];
        known = true;
    }
    *status = known ? 405 : 404;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *m, *p;
    size_t mlen, plen;
    fuzz_split(data, size, 0, &m, &mlen, &p, &plen);
    char *method = fuzz_dup(m, mlen, 1), *path = fuzz_dup(p, plen, 1);
    size_t path_len = strlen(path);

    http_params_t got, want;
    memset(&got, 0xA5, sizeof got);
    unsigned got_status = 0, want_status = 0;
    const http_route_t *r = http_route_match(table, N_ROUTES, method, path, &got, &got_status);
    const http_route_t *w = ref_route(method, path, &want, &want_status);
    FUZZ_CHECK(r == w);
    if (!r) {
        FUZZ_CHECK(got_status == want_status);
    } else {
        FUZZ_CHECK(got.count == want.count && got.count >= 0 && got.count <= HTTP_MAX_PARAMS);
        const char *prev_end = path;
        for (int i = 0; i < got.count; i++) {
            FUZZ_CHECK(got.val[i] == want.val[i] && got.len[i] == want.len[i]);
            FUZZ_CHECK(got.val[i] >= prev_end && got.val[i] + got.len[i] <= path + path_len);
            FUZZ_CHECK(got.len[i] > 0 && memchr(got.val[i], '/', got.len[i]) == NULL);
            prev_end = got.val[i] + got.len[i];
        }
    }
    free(method);
    free(path);
    return 0;
}
