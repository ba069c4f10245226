/* test_delay.h - the delayed-completion test mode, in one place.
 *
 * Test builds (MESSENGER_TEST_HOOKS: the asan and tsan variants) read
 * MESSENGER_TEST_DELAY once: with "1", store completions (store/store.c)
 * arrive from another thread and hashing jobs (util/workq.c) start late, by
 * 0-2 ms each, as on a slow store and a busy machine, so that answers race
 * their clients' connections. Release builds compile both to nothing.
 */
#ifndef MESSENGER_UTIL_TEST_DELAY_H
#define MESSENGER_UTIL_TEST_DELAY_H

#include <stdbool.h>

#ifdef MESSENGER_TEST_HOOKS
/* Whether the mode is on (read once, any thread). */
bool test_delay_on(void);
/* Sleeps 0-2 ms, a random amount, when the mode is on. */
void test_delay_sleep(void);
#else
static inline bool test_delay_on(void) { return false; }
static inline void test_delay_sleep(void) {}
#endif

#endif
