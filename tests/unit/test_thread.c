/* Thread settings: thread_background() lowers the calling thread's CPU and
 * I/O priority, and only that thread's. */
#include <linux/ioprio.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "unit.h"
#include "util/thread.h"

typedef struct seen {
    int rc;
    int nice;
    long ioprio;
    long child_ioprio;      /* of a thread it started afterwards */
} seen_t;

static long my_ioprio(void) { return syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, gettid()); }

static void *child_main(void *arg) {
    *(long *)arg = my_ioprio();
    return NULL;
}

static void *background_main(void *arg) {
    seen_t *s = arg;
    s->rc = thread_background();
    s->nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    s->ioprio = my_ioprio();
    pthread_t t;
    if (pthread_create(&t, NULL, child_main, &s->child_ioprio) == 0) pthread_join(t, NULL);
    return NULL;
}

static void background_lowers_cpu_and_io_priority_of_that_thread(void **state) {
    (void)state;
    int nice_before = getpriority(PRIO_PROCESS, (id_t)gettid());
    long io_before = my_ioprio();
    seen_t s = {.rc = -1, .child_ioprio = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, background_main, &s), 0);
    pthread_join(t, NULL);
    assert_int_equal(s.rc, 0);
    assert_int_equal(s.nice, 10);
    assert_int_equal(IOPRIO_PRIO_CLASS(s.ioprio), IOPRIO_CLASS_IDLE);
    /* Threads it starts (LMDB's copy thread) inherit the class. */
    assert_int_equal(IOPRIO_PRIO_CLASS(s.child_ioprio), IOPRIO_CLASS_IDLE);
    /* The caller's own thread is untouched. */
    assert_int_equal(getpriority(PRIO_PROCESS, (id_t)gettid()), nice_before);
    assert_true(my_ioprio() == io_before);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(background_lowers_cpu_and_io_priority_of_that_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
