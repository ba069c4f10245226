/* workq.h - a small pool of threads for CPU-heavy jobs (password hashing),
 * so that neither an event-loop thread nor a store's I/O thread ever spends
 * tens of milliseconds on one request.
 *
 * Jobs run in submission order across `threads` workers, each inside a
 * defer scope (util/defer.h): what a job starts begins once it returned.
 * The queue is bounded: a job costs its submitter nothing, so without a
 * bound one client could queue minutes of work; a full queue refuses at
 * once and the caller answers "busy". workq_free() runs every job already
 * submitted, then joins the threads.
 */
#ifndef MESSENGER_UTIL_WORKQ_H
#define MESSENGER_UTIL_WORKQ_H

#include <stddef.h>

typedef struct workq workq_t;
typedef void (*workq_fn)(void *arg);

/* At most max_waiting jobs wait (not counting those running); NULL when
 * threads or memory cannot be had. */
workq_t *workq_new(unsigned threads, size_t max_waiting);
/* 0; -EAGAIN when max_waiting jobs are waiting already; -ESHUTDOWN while
 * closing; -ENOMEM. The job was queued only on 0. */
int workq_submit(workq_t *q, workq_fn fn, void *arg);
void workq_free(workq_t *q);

#endif
