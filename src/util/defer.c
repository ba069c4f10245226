/* defer.c - see defer.h. One queue per thread, with no lock: only its own
 * thread posts to it and runs it. */
#include "util/defer.h"

#include <assert.h>
#include <stddef.h>

static _Thread_local struct {
    int depth;
    defer_item_t *head, *tail;
} tl;

void defer_scope_enter(void) { tl.depth++; }

bool defer_in_scope(void) { return tl.depth > 0; }

void defer_post(defer_item_t *item) {
    assert(tl.depth > 0);
    item->next = NULL;
    if (tl.tail) tl.tail->next = item;
    else tl.head = item;
    tl.tail = item;
}

void defer_scope_leave(void) {
    assert(tl.depth > 0);
    /* The outermost scope drains with depth still 1, so that what a queued
     * item posts joins the queue instead of running inside that item. */
    if (tl.depth == 1) {
        while (tl.head) {
            defer_item_t *it = tl.head;
            tl.head = it->next;
            if (!tl.head) tl.tail = NULL;
            it->run(it);
        }
    }
    tl.depth--;
}
