/* Route matching: literal paths, {} segments, 404 versus 405, HEAD. */
#include <string.h>

#include "http/router.h"
#include "unit.h"

static void h1(http_request_t *r, void *a, const http_params_t *p) { (void)r; (void)a; (void)p; }
static void h2(http_request_t *r, void *a, const http_params_t *p) { (void)r; (void)a; (void)p; }

static const http_route_t ROUTES[] = {
    {"GET", "/api/things/{}", h1},
    {"GET", "/api/things/{}/before", h2},
    {"POST", "/api/things", h1},
    {"POST", "/api/things/", h2},
    {"GET", "/a/{}/b/{}", h1},
};
#define N (sizeof ROUTES / sizeof ROUTES[0])

static void matches(void **state) {
    (void)state;
    http_params_t p;
    unsigned st = 0;
    const http_route_t *r = http_route_match(ROUTES, N, "GET", "/api/things/abc", &p, &st);
    assert_ptr_equal(r, &ROUTES[0]);
    assert_int_equal(p.count, 1);
    assert_int_equal(p.len[0], 3);
    assert_memory_equal(p.val[0], "abc", 3);
    r = http_route_match(ROUTES, N, "GET", "/api/things/abc/before", &p, &st);
    assert_ptr_equal(r, &ROUTES[1]);
    r = http_route_match(ROUTES, N, "POST", "/api/things/", &p, &st);
    assert_ptr_equal(r, &ROUTES[3]);
    r = http_route_match(ROUTES, N, "GET", "/a/x/b/yy", &p, &st);
    assert_ptr_equal(r, &ROUTES[4]);
    assert_int_equal(p.count, 2);
    assert_int_equal(p.len[1], 2);
    r = http_route_match(ROUTES, N, "HEAD", "/api/things/abc", &p, &st);
    assert_ptr_equal(r, &ROUTES[0]);
}

static void misses(void **state) {
    (void)state;
    http_params_t p;
    unsigned st = 0;
    assert_null(http_route_match(ROUTES, N, "GET", "/api/things/", &p, &st)); /* empty segment */
    assert_int_equal(st, 405); /* POST /api/things/ exists */
    assert_null(http_route_match(ROUTES, N, "GET", "/api/things/a/b", &p, &st));
    assert_int_equal(st, 404);
    assert_null(http_route_match(ROUTES, N, "DELETE", "/api/things/a", &p, &st));
    assert_int_equal(st, 405);
    assert_null(http_route_match(ROUTES, N, "GET", "/api/thingsx", &p, &st));
    assert_int_equal(st, 404);
    assert_null(http_route_match(ROUTES, N, "GET", "", &p, &st));
    assert_int_equal(st, 404);
}

/* A 405's Allow header: every method of the path, HEAD with GET, once. */
static void allow(void **state) {
    (void)state;
    static const http_route_t more[] = {
        {"GET", "/x/{}", h1}, {"POST", "/x/{}", h2}, {"GET", "/x/y", h1}, {"DELETE", "/x/{}", h1},
    };
    char out[64];
    http_route_allow(more, 4, "/x/y", out, sizeof out);
    assert_string_equal(out, "GET, HEAD, POST, DELETE");
    http_route_allow(more, 4, "/x/z", out, sizeof out);
    assert_string_equal(out, "GET, HEAD, POST, DELETE");
    http_route_allow(ROUTES, N, "/api/things/", out, sizeof out);
    assert_string_equal(out, "POST");
    http_route_allow(ROUTES, N, "/nothing", out, sizeof out);
    assert_string_equal(out, "");
    http_route_allow(more, 4, "/x/y", out, 10); /* what fits, whole methods only */
    assert_string_equal(out, "GET, HEAD");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(matches),
        cmocka_unit_test(misses),
        cmocka_unit_test(allow),
    };
    return cmocka_run_group_tests_name("router", tests, NULL, NULL);
}
