/* thread.c - settings of the calling thread (thread.h). */
#include "util/thread.h"

#include <errno.h>
#include <linux/ioprio.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int thread_background(void) {
    pid_t tid = gettid();
    int rc = setpriority(PRIO_PROCESS, (id_t)tid, 10) == 0 ? 0 : -errno;
    /* No glibc wrapper. A thread's I/O priority is its own: threads it
     * starts (LMDB's copy starts one) inherit it. */
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)) != 0 && !rc)
        rc = -errno;
    return rc;
}
