/* Ids: parsing/formatting, the timeuuid generator, sort keys. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model/uuid.h"
#include "util/timefmt.h"
#include "unit.h"

static void parse_format_round_trip(void **state) {
    (void)state;
    uuid_t u;
    char out[UUID_STR_LEN + 1];
    assert_int_equal(uuid_parse(&u, "70030948-BB89-9933-eaf8-AC47C88CBAFF", 36), 0);
    uuid_format(&u, out);
    assert_string_equal(out, "70030948-bb89-9933-eaf8-ac47c88cbaff");
    assert_int_equal(u.b[0], 0x70);
    assert_int_equal(u.b[15], 0xff);
}

static void parse_rejects_malformed(void **state) {
    (void)state;
    uuid_t u;
    const char *bad[] = {
        "", "70030948-bb89-9933-eaf8-ac47c88cbaf", "70030948-bb89-9933-eaf8-ac47c88cbafff",
        "70030948bb89-9933-eaf8-ac47c88cbaff0", "7003094g-bb89-9933-eaf8-ac47c88cbaff",
        "70030948-bb89-9933-eaf8_ac47c88cbaff", "{0030948-bb89-9933-eaf8-ac47c88cbaff",
        "70030948-bb89-9933-eaf8-ac47c88cba f", "70030948-bb8-99933-eaf8-ac47c88cbaff",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(uuid_parse(&u, bad[i], strlen(bad[i])), -1);
    /* Exactly len bytes are read: a valid prefix of a longer buffer counts. */
    assert_int_equal(uuid_parse(&u, "70030948-bb89-9933-eaf8-ac47c88cbaffXYZ", 36), 0);
}

/* Every byte value at every position: accepted exactly when it is a hex
 * digit (or the dash where one belongs), and each digit read at its value. */
static void parse_every_byte_at_every_position(void **state) {
    (void)state;
    const char *good = "0123abcd-ef45-6789-ABCD-ef0123456789";
    for (int pos = 0; pos < UUID_STR_LEN; pos++) {
        bool dash = pos == 8 || pos == 13 || pos == 18 || pos == 23;
        for (int c = 0; c < 256; c++) {
            char s[UUID_STR_LEN];
            memcpy(s, good, UUID_STR_LEN);
            s[pos] = (char)c;
            bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
            uuid_t u;
            memset(&u, 0x5a, sizeof u);
            int rc = uuid_parse(&u, s, UUID_STR_LEN);
            if (dash ? c != '-' : !hex) {
                assert_int_equal(rc, -1);
                for (int i = 0; i < 16; i++) assert_int_equal(u.b[i], 0x5a); /* left as it was */
                if (!dash) assert_int_equal(uuid_hex_digit((char)c), -1);
                continue;
            }
            assert_int_equal(rc, 0);
            if (dash) continue;
            /* Byte index and nibble of position pos. */
            int digit = pos - (pos > 8) - (pos > 13) - (pos > 18) - (pos > 23);
            int want = c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
            assert_int_equal(uuid_hex_digit((char)c), want);
            int got = digit % 2 ? u.b[digit / 2] & 15 : u.b[digit / 2] >> 4;
            assert_int_equal(got, want);
        }
    }
}

static void v1_fields(void **state) {
    (void)state;
    uuid_t u;
    uint64_t ticks = 0x0123456789abcdefULL & 0x0fffffffffffffffULL;
    uuid_make_v1(&u, ticks, 0x3fff, 0xa1b2c3d4e5f6ULL);
    assert_int_equal(uuid_version(&u), 1);
    assert_int_equal(u.b[8] & 0xc0, 0x80); /* RFC 4122 variant */
    assert_true(uuid_time_ticks(&u) == ticks);
    assert_int_equal(u.b[15], 0xf6);
    uint8_t key[16];
    uuid_sort_key(&u, key);
    uuid_t back;
    uuid_from_sort_key(&back, key);
    assert_memory_equal(&u, &back, 16);
}

static void ms_ticks_conversion(void **state) {
    (void)state;
    assert_true(unix_ms_to_ticks(0) == UUID_TICKS_UNIX_EPOCH);
    assert_true(ticks_to_unix_ms(unix_ms_to_ticks(1704067200123LL)) == 1704067200123LL);
}

static void sort_key_orders_by_time(void **state) {
    (void)state;
    /* time_low is the first field of a v1 uuid, so byte order of the uuid
     * is NOT time order; the sort key must be. */
    uuid_t a, b;
    uuid_make_v1(&a, 0x00000001ffffffffULL, 1, 1);
    uuid_make_v1(&b, 0x0000000200000000ULL, 0, 0);
    assert_true(memcmp(a.b, b.b, 16) > 0);
    uint8_t ka[16], kb[16];
    uuid_sort_key(&a, ka);
    uuid_sort_key(&b, kb);
    assert_true(memcmp(ka, kb, 16) < 0);
}

static void random_v4(void **state) {
    (void)state;
    uuid_t a, b;
    assert_int_equal(uuid_random(&a), 0);
    assert_int_equal(uuid_random(&b), 0);
    assert_int_equal(uuid_version(&a), 4);
    assert_int_equal(a.b[8] & 0xc0, 0x80);
    assert_memory_not_equal(&a, &b, 16);
}

#define THREADS 4
#define PER_THREAD 50000

struct gen_arg {
    idgen_t *g;
    uint64_t ticks[PER_THREAD];
};

static void *gen_thread(void *p) {
    struct gen_arg *a = p;
    for (int i = 0; i < PER_THREAD; i++) {
        uuid_t u;
        idgen_next(a->g, &u);
        a->ticks[i] = uuid_time_ticks(&u);
    }
    return NULL;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void generator_monotonic_under_threads(void **state) {
    (void)state;
    idgen_t g;
    assert_int_equal(idgen_init(&g), 0);
    struct gen_arg *args = calloc(THREADS, sizeof *args);
    assert_non_null(args);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        args[i].g = &g;
        assert_int_equal(pthread_create(&t[i], NULL, gen_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    /* Strictly increasing within each thread... */
    for (int i = 0; i < THREADS; i++)
        for (int j = 1; j < PER_THREAD; j++) assert_true(args[i].ticks[j] > args[i].ticks[j - 1]);
    /* ...and never repeated across threads. */
    uint64_t *all = malloc(sizeof(uint64_t) * THREADS * PER_THREAD);
    assert_non_null(all);
    for (int i = 0; i < THREADS; i++) memcpy(all + i * PER_THREAD, args[i].ticks, sizeof args[i].ticks);
    qsort(all, THREADS * PER_THREAD, sizeof *all, cmp_u64);
    for (int j = 1; j < THREADS * PER_THREAD; j++) assert_true(all[j] != all[j - 1]);
    free(all);
    free(args);
}

static void generator_bits_and_floor(void **state) {
    (void)state;
    idgen_t g;
    assert_int_equal(idgen_init(&g), 0);
    uuid_t u;
    idgen_next(&g, &u);
    assert_int_equal(uuid_version(&u), 1);
    assert_int_equal(u.b[8] & 0xc0, 0x80);
    assert_int_equal(u.b[10] & 0x01, 0x01); /* random node: multicast bit set */
    /* A floor in the future wins over the clock. */
    uint64_t floor = uuid_time_ticks(&u) + 10000000ULL * 3600;
    idgen_next_after(&g, floor, &u);
    assert_true(uuid_time_ticks(&u) >= floor);
    idgen_next(&g, &u);
    assert_true(uuid_time_ticks(&u) > floor); /* and the generator never goes back */
}

/* Times read back from a store are input: no value makes the conversion
 * overflow, and a far-future floor does not pin the generator (fuzz finding:
 * 10979320782827102 ms from conversations_by_user). */
static void hostile_times_are_contained(void **state) {
    (void)state;
    assert_false(time_ms_valid(-1));
    assert_false(time_ms_valid(INT64_C(10979320782827102)));
    assert_true(time_ms_valid(0));
    assert_true(time_ms_valid(TIME_MS_MAX));
    assert_int_equal(unix_ms_to_ticks(INT64_MIN), UUID_TICKS_UNIX_EPOCH);
    assert_int_equal(unix_ms_to_ticks(-5), UUID_TICKS_UNIX_EPOCH);
    assert_int_equal(unix_ms_to_ticks(INT64_MAX), unix_ms_to_ticks(TIME_MS_MAX));
    assert_int_equal(ticks_to_unix_ms(unix_ms_to_ticks(TIME_MS_MAX)), TIME_MS_MAX);

    idgen_t g;
    assert_int_equal(idgen_init(&g), 0);
    uuid_t a, b;
    /* A year ahead: ignored. */
    idgen_next_after(&g, unix_ms_to_ticks(time_now_ms() + INT64_C(365) * 86400 * 1000), &a);
    int64_t at = ticks_to_unix_ms(uuid_time_ticks(&a));
    assert_true(at <= time_now_ms() + 1000);
    /* A minute ahead: a clock that is behind another node's; honoured. */
    int64_t minute = time_now_ms() + 60 * 1000;
    idgen_next_after(&g, unix_ms_to_ticks(minute), &b);
    assert_true(ticks_to_unix_ms(uuid_time_ticks(&b)) >= minute);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_format_round_trip),
        cmocka_unit_test(parse_rejects_malformed),
        cmocka_unit_test(parse_every_byte_at_every_position),
        cmocka_unit_test(v1_fields),
        cmocka_unit_test(ms_ticks_conversion),
        cmocka_unit_test(sort_key_orders_by_time),
        cmocka_unit_test(random_v4),
        cmocka_unit_test(generator_monotonic_under_threads),
        cmocka_unit_test(generator_bits_and_floor),
        cmocka_unit_test(hostile_times_are_contained),
    };
    return cmocka_run_group_tests_name("uuid", tests, NULL, NULL);
}
