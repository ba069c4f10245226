/* test_delay.c - see test_delay.h. Empty in release builds. */
#include "util/test_delay.h"

#ifdef MESSENGER_TEST_HOOKS
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "util/log.h"

/* Written once under pthread_once, read-only afterwards. */
static bool delay_on;
static pthread_once_t delay_once = PTHREAD_ONCE_INIT;

static void delay_init(void) {
    const char *v = getenv("MESSENGER_TEST_DELAY");
    delay_on = v && strcmp(v, "1") == 0;
    if (delay_on) log_warn("test", "test mode: completions delayed and delivered from other threads");
}

bool test_delay_on(void) {
    pthread_once(&delay_once, delay_init);
    return delay_on;
}

void test_delay_sleep(void) {
    if (!test_delay_on()) return;
    unsigned r = 0;
    if (getrandom(&r, sizeof r, 0) != sizeof r) r = 0;
    struct timespec ts = {0, (long)(r % 2000) * 1000};
    nanosleep(&ts, NULL);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int test_delay_unused;
#endif
