/* ratelimit: attempts taken before the work they guard, so that concurrency
 * cannot outrun the limit; given back; windows; address keys. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "unit.h"
#include "auth/ratelimit.h"

static void take_until_the_limit_then_wait(void **state) {
    (void)state;
    ratelimit_t *rl = ratelimit_new(3, 10);
    assert_non_null(rl);
    int64_t t = 1000000;
    for (int i = 0; i < 3; i++) assert_int_equal(ratelimit_take(rl, "u:alice", 7, t), 0);
    unsigned wait = ratelimit_take(rl, "u:alice", 7, t + 2500);
    assert_int_equal(wait, 8); /* 7.5 s left, rounded up */
    assert_int_equal(ratelimit_take(rl, "u:bob", 5, t), 0); /* keys are apart */
    /* A new window starts afresh. */
    assert_int_equal(ratelimit_take(rl, "u:alice", 7, t + 10000), 0);
    ratelimit_free(rl);
}

static void give_back_and_clear(void **state) {
    (void)state;
    ratelimit_t *rl = ratelimit_new(2, 60);
    int64_t t = 5000;
    assert_int_equal(ratelimit_take(rl, "k", 1, t), 0);
    assert_int_equal(ratelimit_take(rl, "k", 1, t), 0);
    assert_true(ratelimit_take(rl, "k", 1, t) > 0);
    ratelimit_give_back(rl, "k", 1, t);
    assert_int_equal(ratelimit_take(rl, "k", 1, t), 0);
    assert_true(ratelimit_take(rl, "k", 1, t) > 0);
    ratelimit_clear(rl, "k", 1);
    assert_int_equal(ratelimit_take(rl, "k", 1, t), 0);
    /* Giving back what was never taken changes nothing. */
    ratelimit_give_back(rl, "other", 5, t);
    ratelimit_give_back(rl, "other", 5, t);
    assert_int_equal(ratelimit_take(rl, "other", 5, t), 0);
    assert_int_equal(ratelimit_take(rl, "other", 5, t), 0);
    assert_true(ratelimit_take(rl, "other", 5, t) > 0);
    ratelimit_free(rl);
}

typedef struct {
    ratelimit_t *rl;
    pthread_barrier_t *go;
    atomic_int *granted;
} racer_t;

static void *race(void *arg) {
    racer_t *r = arg;
    pthread_barrier_wait(r->go);
    for (int i = 0; i < 50; i++)
        if (ratelimit_take(r->rl, "u:victim", 8, 42000) == 0) atomic_fetch_add(r->granted, 1);
    return NULL;
}

/* 8 threads x 50 attempts at once: exactly `limit` are granted. */
static void concurrent_takes_never_exceed_the_limit(void **state) {
    (void)state;
    ratelimit_t *rl = ratelimit_new(10, 300);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 8);
    atomic_int granted = 0;
    pthread_t th[8];
    racer_t r = {rl, &go, &granted};
    for (int i = 0; i < 8; i++) pthread_create(&th[i], NULL, race, &r);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    assert_int_equal(atomic_load(&granted), 10);
    pthread_barrier_destroy(&go);
    ratelimit_free(rl);
}

static void address_keys(void **state) {
    (void)state;
    char a[RATELIMIT_ADDR_KEY_MAX], b[RATELIMIT_ADDR_KEY_MAX];
    ratelimit_addr_key("192.0.2.7", a);
    assert_string_equal(a, "a4:192.0.2.7");
    /* One /64 is one client, whatever its interface id. */
    ratelimit_addr_key("2001:db8:1:2:aaaa:bbbb:cccc:dddd", a);
    ratelimit_addr_key("2001:db8:1:2::1", b);
    assert_string_equal(a, b);
    assert_string_equal(a, "a6:2001:db8:1:2::/64");
    ratelimit_addr_key("2001:db8:1:3::1", b);
    assert_string_not_equal(a, b);
    /* An IPv4-mapped address is its IPv4 address. */
    ratelimit_addr_key("::ffff:192.0.2.7", b);
    assert_string_equal(b, "a4:192.0.2.7");
    ratelimit_addr_key("", b);
    assert_string_equal(b, "a4:");
}

/* A full table still limits: the oldest entries are replaced, never a
 * live one while an expired one is there. */
static void many_keys_fit_in_fixed_memory(void **state) {
    (void)state;
    ratelimit_t *rl = ratelimit_new(1, 60);
    char k[32];
    for (int i = 0; i < 100000; i++) {
        int n = snprintf(k, sizeof k, "u:%d", i);
        ratelimit_take(rl, k, (size_t)n, 1000 + i);
    }
    /* The newest key is still counted. */
    int n = snprintf(k, sizeof k, "u:%d", 99999);
    assert_true(ratelimit_take(rl, k, (size_t)n, 1000 + 99999) > 0);
    ratelimit_free(rl);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(take_until_the_limit_then_wait),
        cmocka_unit_test(give_back_and_clear),
        cmocka_unit_test(concurrent_takes_never_exceed_the_limit),
        cmocka_unit_test(address_keys),
        cmocka_unit_test(many_keys_fit_in_fixed_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
