/* workq.h - a small pool of threads for CPU-heavy jobs (password hashing),
 * so that neither an event-loop thread nor a store's I/O thread ever spends
 * tens of milliseconds on one request.
 *
 * Jobs run in submission order across `threads` workers. workq_free() runs
 * every job already submitted, then joins the threads.
 */
#ifndef MESSENGER_UTIL_WORKQ_H
#define MESSENGER_UTIL_WORKQ_H

typedef struct workq workq_t;
typedef void (*workq_fn)(void *arg);

/* Returns NULL when threads or memory cannot be had. */
workq_t *workq_new(unsigned threads);
/* 0, or -1 (out of memory, or shutting down): the job was not queued. */
int workq_submit(workq_t *q, workq_fn fn, void *arg);
void workq_free(workq_t *q);

#endif
