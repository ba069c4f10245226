/* thread.c - thread priorities (thread.h). */
#include "util/thread.h"

#include <dirent.h>
#include <errno.h>
#include <linux/ioprio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "util/log.h"

int thread_background(bool idle_io) {
    pid_t tid = gettid();
    int rc = 0;
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, (id_t)tid); /* -1 is a valid value: errno tells */
    if (errno) rc = -errno;
    else if (nice < 19 && setpriority(PRIO_PROCESS, (id_t)tid, nice + 10 > 19 ? 19 : nice + 10) != 0) rc = -errno;
    /* No glibc wrapper for ioprio_set. */
    if (idle_io && syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)) != 0 &&
        !rc)
        rc = -errno;
    if (rc) log_debug("thread", "cannot lower this thread's priority: %s", strerror(-rc));
    return rc;
}

int thread_io_default_by_name(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -errno;
    int changed = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long tid = strtol(e->d_name, &end, 10);
        if (end == e->d_name || *end || tid <= 0) continue; /* "." and ".." */
        char path[64], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%ld/comm", tid);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* the thread has just ended */
        if (!fgets(comm, sizeof comm, f)) comm[0] = '\0';
        fclose(f);
        comm[strcspn(comm, "\n")] = '\0';
        if (strcmp(comm, name) != 0) continue;
        if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, (int)tid, IOPRIO_PRIO_VALUE(IOPRIO_CLASS_NONE, 0)) == 0)
            changed++;
        else if (errno != ESRCH)
            rc = -errno;
    }
    closedir(d);
    return changed ? changed : rc;
}
