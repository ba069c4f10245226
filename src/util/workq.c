/* workq.c - see workq.h. A mutex-guarded FIFO and a condition variable. */
#include "util/workq.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "util/defer.h"
#include "util/test_delay.h"

typedef struct job {
    struct job *next;
    workq_fn fn;
    void *arg;
} job_t;

struct workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    size_t waiting, max_waiting;
    bool closing;
    unsigned n_threads;
    pthread_t threads[];
};

static void *worker(void *arg) {
    workq_t *q = arg;
    pthread_setname_np(pthread_self(), "workq"); /* as top -H and perf show it */
    for (;;) {
        pthread_mutex_lock(&q->mu);
        while (!q->head && !q->closing) pthread_cond_wait(&q->cv, &q->mu);
        job_t *j = q->head;
        if (!j) { /* closing and drained */
            pthread_mutex_unlock(&q->mu);
            return NULL;
        }
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        q->waiting--;
        pthread_mutex_unlock(&q->mu);
        test_delay_sleep(); /* test builds: a job starts late, as on a busy machine */
        defer_scope_enter();
        j->fn(j->arg);
        defer_scope_leave();
        free(j);
    }
}

workq_t *workq_new(unsigned threads, size_t max_waiting) {
    if (threads == 0) threads = 1;
    workq_t *q = calloc(1, sizeof *q + threads * sizeof(pthread_t));
    if (!q) return NULL;
    q->max_waiting = max_waiting;
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    for (; q->n_threads < threads; q->n_threads++) {
        if (pthread_create(&q->threads[q->n_threads], NULL, worker, q) != 0) {
            workq_free(q);
            return NULL;
        }
    }
    return q;
}

int workq_submit(workq_t *q, workq_fn fn, void *arg) {
    job_t *j = malloc(sizeof *j);
    if (!j) return -ENOMEM;
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&q->mu);
    if (q->closing || q->waiting >= q->max_waiting) {
        int rc = q->closing ? -ESHUTDOWN : -EAGAIN;
        pthread_mutex_unlock(&q->mu);
        free(j);
        return rc;
    }
    q->waiting++;
    if (q->tail) q->tail->next = j; else q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void workq_free(workq_t *q) {
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->closing = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->n_threads; i++) pthread_join(q->threads[i], NULL);
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->cv);
    free(q);
}
