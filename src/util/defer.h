/* defer.h - the rule on when completion callbacks run, and the per-thread
 * queue that keeps it.
 *
 * THE RULE (as in libuv): a completion callback never runs inside the call
 * that started its operation. A caller may therefore touch its own state
 * after starting an operation, and never has to expect re-entry.
 *
 * How: code that runs on behalf of an event (an HTTP handler, a store
 * completion, a worker's job) runs inside a *scope*. An operation started
 * inside a scope is not started at once but queued on this thread; when the
 * outermost scope is left, the queue is run, in order, until it is empty
 * (what the queued work queues in turn runs too). So an operation whose
 * backend answers at once (an LMDB read) answers after its caller returned,
 * on the same thread and without a context switch: the rule costs one
 * queue hop, not a thread hop.
 *
 * Outside any scope (a command-line tool on its main thread) there is no
 * loop to return to: operations start at once, and a backend that answers
 * from memory answers inside the call. Only tools run there.
 */
#ifndef MESSENGER_UTIL_DEFER_H
#define MESSENGER_UTIL_DEFER_H

#include <stdbool.h>

/* Embedded in whatever is deferred; run() owns it once it is called. */
typedef struct defer_item {
    struct defer_item *next;
    void (*run)(struct defer_item *item);
} defer_item_t;

/* Scopes nest; leaving the outermost one runs the queue. */
void defer_scope_enter(void);
void defer_scope_leave(void);
bool defer_in_scope(void);

/* Queues item on this thread, to run when its outermost scope is left.
 * Only inside a scope. */
void defer_post(defer_item_t *item);

#endif
