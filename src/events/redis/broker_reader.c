/* broker_reader.c - what one reply from Redis may cost (events/broker.h,
 * trust boundary): the reply builder of both threads' readers and of
 * broker_feed_subscriber's, and the cap on the bytes a reader holds. */
#include <pthread.h>

#include "events/redis/broker_internal.h"

/* hiredis 0.14 builds replies through the reader's redisReplyObjectFunctions
 * and allocates an array's element pointers as soon as its header arrives,
 * for whatever count the header announces. Ours are hiredis's own functions
 * except createArray, which first refuses what we never receive: a count
 * below 0 or above REPLY_ARRAY_MAX, or an array inside an array. A NULL from
 * createArray makes the reader fail (it reports "out of memory"; the reason
 * is kept in reader_refused), and the connection is dropped. Bulk strings
 * are allocated only once all their bytes are in; the reader's buffer, which
 * holds them until then, is capped by reader_too_full(). */

static redisReplyObjectFunctions guarded_fns;
static void *(*default_create_array)(const redisReadTask *, int);
static pthread_once_t guarded_once = PTHREAD_ONCE_INIT;
/* Why the reader refused the last reply on this thread, or NULL. */
static _Thread_local const char *reader_refused;

static void *guarded_create_array(const redisReadTask *task, int elements) {
    if (task->parent) reader_refused = "a nested array";
    else if (elements < 0 || elements > REPLY_ARRAY_MAX) reader_refused = "an array of a hostile size";
    else return default_create_array(task, elements);
    return NULL;
}

static void guarded_init(void) {
    /* hiredis's default functions are static: a fresh reader points to them. */
    redisReader *r = redisReaderCreate();
    if (!r) return;
    guarded_fns = *r->fn;
    default_create_array = guarded_fns.createArray;
    guarded_fns.createArray = guarded_create_array;
    redisReaderFree(r);
}

/* The guarded functions, or NULL when they could not be set up. */
redisReplyObjectFunctions *reader_guarded_functions(void) {
    pthread_once(&guarded_once, guarded_init);
    return default_create_array ? &guarded_fns : NULL;
}

void reader_refusal_clear(void) {
    reader_refused = NULL;
}

/* True when the reader holds more unparsed bytes than any reply of ours can
 * take: reading more would only grow its buffer. */
bool reader_too_full(const redisReader *r) {
    return r->len - r->pos > READER_MAX;
}

/* After a reader failure: the refusal's reason, or the reader's own error
 * (a protocol error; on a non-blocking context redisGetReply does no I/O). */
void link_set_reader_err(link_t *l, const char *what, const redisReader *r) {
    if (reader_refused) link_set_err(l, "reply refused", reader_refused);
    else link_set_err(l, what, r->errstr[0] ? r->errstr : "malformed reply");
    reader_refused = NULL;
}
