/* thread.h - thread priorities: background work that yields the CPU and
 * the disk, and a way to hand a starving background thread its disk share
 * back. */
#ifndef MESSENGER_THREAD_H
#define MESSENGER_THREAD_H

#include <stdbool.h>

/* Makes the calling thread background work: its nice value 10 above the
 * process's (at most 19), so that the HTTP threads and the store's writer
 * go first. With idle_io it also joins the "idle" I/O class: schedulers
 * that know classes (mq-deadline, bfq; not `none`) serve its reads and
 * writes only when no other request waits, or after their aging limit
 * (10 s in mq-deadline), so that it does not queue ahead of the log's
 * fdatasync, which every durable write waits for. On a disk that never
 * idles such work crawls: it must either tolerate that or be given the
 * default class back (thread_io_default_by_name). Threads it starts
 * afterwards inherit both. Returns 0, or a negative errno when
 * either could not be set (the thread runs on either way). */
int thread_background(bool idle_io);

/* Puts every thread of this process named `name` (its name as
 * pthread_setname_np gave it; a thread started by a named thread carries
 * that name too) back into the default I/O class: for background work in
 * the idle class that has waited too long. Returns how many threads it
 * changed, or a negative errno. */
int thread_io_default_by_name(const char *name);

#endif
