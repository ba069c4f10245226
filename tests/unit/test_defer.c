/* defer (the completion rule's queue) and workq (its bound, its scopes). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "unit.h"
#include "util/defer.h"
#include "util/workq.h"

typedef struct item {
    defer_item_t base;
    int id;
    int *log;
    int *n;
    int spawn;              /* posts this many children when it runs */
} item_t;

static void run_item(defer_item_t *it) {
    item_t *x = (item_t *)it;
    x->log[(*x->n)++] = x->id;
    for (int i = 0; i < x->spawn; i++) {
        item_t *c = calloc(1, sizeof *c);
        *c = (item_t){.base.run = run_item, .id = x->id * 10 + i, .log = x->log, .n = x->n};
        defer_post(&c->base);
    }
    free(x);
}

static item_t *new_item(int id, int *log, int *n, int spawn) {
    item_t *x = calloc(1, sizeof *x);
    *x = (item_t){.base.run = run_item, .id = id, .log = log, .n = n, .spawn = spawn};
    return x;
}

/* Nothing runs inside the scope that posted it; everything runs, in order,
 * when the outermost scope is left, what that posts included. */
static void runs_after_the_outermost_scope(void **state) {
    (void)state;
    int log[16], n = 0;
    assert_false(defer_in_scope());
    defer_scope_enter();
    assert_true(defer_in_scope());
    defer_post(&new_item(1, log, &n, 2)->base);
    defer_scope_enter();
    defer_post(&new_item(2, log, &n, 0)->base);
    defer_scope_leave();
    assert_int_equal(n, 0); /* an inner scope does not run the queue */
    defer_scope_leave();
    assert_false(defer_in_scope());
    assert_int_equal(n, 4);
    int want[] = {1, 2, 10, 11};
    for (int i = 0; i < 4; i++) assert_int_equal(log[i], want[i]);
}

static void *other_thread(void *arg) {
    /* Each thread has its own queue: this one sees none of the main's. */
    *(bool *)arg = defer_in_scope();
    return NULL;
}

static void queues_are_per_thread(void **state) {
    (void)state;
    defer_scope_enter();
    bool seen = true;
    pthread_t t;
    pthread_create(&t, NULL, other_thread, &seen);
    pthread_join(t, NULL);
    assert_false(seen);
    defer_scope_leave();
}

/* ---- workq ---- */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    atomic_int started, ran;
} gate_t;

static void blocked_job(void *arg) {
    gate_t *g = arg;
    atomic_fetch_add(&g->started, 1);
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
    atomic_fetch_add(&g->ran, 1);
}

/* One worker busy, two jobs waiting: the next is refused at once. */
static void bounded_queue_refuses_at_once(void **state) {
    (void)state;
    gate_t g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0};
    workq_t *q = workq_new(1, 2);
    assert_non_null(q);
    assert_int_equal(workq_submit(q, blocked_job, &g), 0);
    for (int i = 0; i < 5000 && atomic_load(&g.started) == 0; i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    assert_int_equal(atomic_load(&g.started), 1);
    assert_int_equal(workq_submit(q, blocked_job, &g), 0);
    assert_int_equal(workq_submit(q, blocked_job, &g), 0);
    assert_int_equal(workq_submit(q, blocked_job, &g), -EAGAIN);
    pthread_mutex_lock(&g.mu);
    g.open = true;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    workq_free(q); /* runs what was queued */
    assert_int_equal(atomic_load(&g.ran), 3);
}

static void job_in_scope(void *arg) { *(bool *)arg = defer_in_scope(); }

static void jobs_run_in_a_scope(void **state) {
    (void)state;
    bool in = false;
    workq_t *q = workq_new(1, 4);
    assert_int_equal(workq_submit(q, job_in_scope, &in), 0);
    workq_free(q);
    assert_true(in);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runs_after_the_outermost_scope),
        cmocka_unit_test(queues_are_per_thread),
        cmocka_unit_test(bounded_queue_refuses_at_once),
        cmocka_unit_test(jobs_run_in_a_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
