/* Thread settings: thread_background() lowers the calling thread's CPU
 * priority and, when asked, its I/O class; only that thread's (and the
 * threads it starts). */
#include <linux/ioprio.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "unit.h"
#include "util/thread.h"

typedef struct seen {
    bool idle_io;           /* the argument */
    int rc;
    int nice;
    long ioprio;
    int child_started;
    long child_ioprio;      /* of a thread it started afterwards */
} seen_t;

static long my_ioprio(void) { return syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, gettid()); }

static void *child_main(void *arg) {
    *(long *)arg = my_ioprio();
    return NULL;
}

static void *background_main(void *arg) {
    seen_t *s = arg;
    s->rc = thread_background(s->idle_io);
    s->nice = getpriority(PRIO_PROCESS, (id_t)gettid());
    s->ioprio = my_ioprio();
    pthread_t t;
    s->child_started = pthread_create(&t, NULL, child_main, &s->child_ioprio);
    if (s->child_started == 0) pthread_join(t, NULL);
    return NULL;
}

static seen_t run_background(bool idle_io) {
    seen_t s = {.idle_io = idle_io, .rc = -1, .child_ioprio = -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, background_main, &s), 0);
    pthread_join(t, NULL);
    assert_int_equal(s.child_started, 0);
    return s;
}

static void background_lowers_priority_of_that_thread(void **state) {
    (void)state;
    long io_before = my_ioprio();
    if (io_before < 0) skip(); /* ioprio_get filtered out (a sandbox): nothing to check against */
    int nice_before = getpriority(PRIO_PROCESS, (id_t)gettid());
    int nice_want = nice_before + 10 > 19 ? 19 : nice_before + 10;

    seen_t cpu_only = run_background(false);
    assert_int_equal(cpu_only.rc, 0);
    assert_int_equal(cpu_only.nice, nice_want);
    assert_true(cpu_only.ioprio == io_before);

    seen_t idle = run_background(true);
    assert_int_equal(idle.rc, 0);
    assert_int_equal(idle.nice, nice_want);
    assert_int_equal(IOPRIO_PRIO_CLASS(idle.ioprio), IOPRIO_CLASS_IDLE);
    /* Threads it starts inherit the class. */
    assert_int_equal(IOPRIO_PRIO_CLASS(idle.child_ioprio), IOPRIO_CLASS_IDLE);

    /* The caller's own thread is untouched. */
    assert_int_equal(getpriority(PRIO_PROCESS, (id_t)gettid()), nice_before);
    assert_true(my_ioprio() == io_before);
}

/* A named thread in the idle class, and a thread it started, both waiting
 * until the test has looked at them. */
typedef struct named {
    pthread_barrier_t ready, done;
    int tid[2];
} named_t;

static void *named_child(void *arg) {
    named_t *n = arg;
    n->tid[1] = gettid();
    pthread_barrier_wait(&n->ready);
    pthread_barrier_wait(&n->done);
    return NULL;
}

static void *named_main(void *arg) {
    named_t *n = arg;
    pthread_setname_np(pthread_self(), "t-hurry");
    thread_background(true);
    n->tid[0] = gettid();
    pthread_t t;
    if (pthread_create(&t, NULL, named_child, n) != 0) abort(); /* else the barriers would never open */
    pthread_barrier_wait(&n->ready);
    pthread_barrier_wait(&n->done);
    pthread_join(t, NULL);
    return NULL;
}

static long ioprio_of(int tid) { return syscall(SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid); }

static void io_default_by_name_finds_the_thread_and_its_children(void **state) {
    (void)state;
    if (my_ioprio() < 0) skip();
    named_t n;
    pthread_barrier_init(&n.ready, NULL, 3);
    pthread_barrier_init(&n.done, NULL, 3);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, named_main, &n), 0);
    pthread_barrier_wait(&n.ready); /* both tids are set past it */
    assert_int_equal(IOPRIO_PRIO_CLASS(ioprio_of(n.tid[0])), IOPRIO_CLASS_IDLE);
    assert_int_equal(IOPRIO_PRIO_CLASS(ioprio_of(n.tid[1])), IOPRIO_CLASS_IDLE);
    long mine = my_ioprio();

    assert_int_equal(thread_io_default_by_name("t-hurry"), 2);
    assert_int_not_equal(IOPRIO_PRIO_CLASS(ioprio_of(n.tid[0])), IOPRIO_CLASS_IDLE);
    assert_int_not_equal(IOPRIO_PRIO_CLASS(ioprio_of(n.tid[1])), IOPRIO_CLASS_IDLE);
    assert_true(my_ioprio() == mine); /* other names are left alone */
    assert_int_equal(thread_io_default_by_name("no-such-thread"), 0);

    pthread_barrier_wait(&n.done);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&n.ready);
    pthread_barrier_destroy(&n.done);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(background_lowers_priority_of_that_thread),
        cmocka_unit_test(io_default_by_name_finds_the_thread_and_its_children),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
