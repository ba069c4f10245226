/* buf: appends, decimal integers, and the poisoned state. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "util/buf.h"

static void integers_as_printf_writes_them(void **state) {
    (void)state;
    const long long cases[] = {0, 1, -1, 9, 10, -10, 99, 100, 12345, -98765, 1000000007LL, LLONG_MAX, LLONG_MIN,
                               LLONG_MIN + 1};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[32];
        snprintf(want, sizeof want, "%lld", cases[i]);
        buf_t b;
        buf_init(&b);
        buf_puts(&b, "n=");
        buf_put_i64(&b, cases[i]);
        assert_true(buf_ok(&b));
        assert_string_equal(b.data + 2, want);
        assert_int_equal(b.len, 2 + strlen(want));
        buf_free(&b);
    }
    uint64_t x = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < 100000; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        long long v = (long long)(x >> (x & 63));
        if (x & 1) v = -v;
        char want[32];
        snprintf(want, sizeof want, "%lld", v);
        buf_t b;
        buf_init(&b);
        buf_put_i64(&b, v);
        assert_string_equal(b.data, want);
        buf_free(&b);
    }
}

static void appends_keep_a_terminated_string(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    for (int i = 0; i < 1000; i++) {
        buf_putc(&b, 'x');
        buf_lit(&b, "yz");
        assert_int_equal(b.len, (size_t)(i + 1) * 3);
        assert_int_equal(b.data[b.len], '\0');
    }
    size_t len;
    char *p = buf_steal(&b, &len);
    assert_int_equal(len, 3000);
    assert_memory_equal(p, "xyzxyz", 6);
    assert_null(b.data);
    free(p);
}

static void an_impossible_size_poisons_the_buffer(void **state) {
    (void)state;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "abc");
    assert_false(buf_reserve(&b, SIZE_MAX));
    assert_false(buf_ok(&b));
    buf_puts(&b, "def"); /* ignored */
    size_t len = 1;
    assert_null(buf_steal(&b, &len));
    assert_int_equal(len, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integers_as_printf_writes_them),
        cmocka_unit_test(appends_keep_a_terminated_string),
        cmocka_unit_test(an_impossible_size_poisons_the_buffer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
