/* thread.h - settings of the calling thread. */
#ifndef MESSENGER_THREAD_H
#define MESSENGER_THREAD_H

/* Makes the calling thread background work: CPU nice 10, so that the HTTP
 * threads and the store's writer go first, and the "idle" I/O class, so
 * that the I/O scheduler (mq-deadline, bfq) serves its reads and writes
 * only when nothing else waits for the disk: a base copy or a segment's
 * zero-fill then does not queue ahead of the log's fdatasync, which every
 * durable write waits for. Returns 0, or a negative errno when either could
 * not be set (the thread runs on either way). */
int thread_background(void);

#endif
