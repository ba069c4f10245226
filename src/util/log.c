/* log.c - see log.h. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* Written once by log_set_level() before threads start; read-only after. */
static log_level_t min_level = LOG_INFO;

static const char *const NAMES[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

/* The words of --log-level, indexed by level. */
static const char *const WORDS[] = {"debug", "info", "warn", "error", "off"};

int log_level_parse(const char *s, log_level_t *out) {
    for (int i = 0; i <= LOG_OFF; i++) {
        if (strcasecmp(s, WORDS[i]) == 0) { *out = (log_level_t)i; return 0; }
    }
    if (strcasecmp(s, "warning") == 0) { *out = LOG_WARN; return 0; }
    return -1;
}

const char *log_level_name(log_level_t level) {
    return level >= LOG_DEBUG && level <= LOG_OFF ? WORDS[level] : "?";
}

void log_set_level(log_level_t level) { min_level = level; }

bool log_enabled(log_level_t level) { return level >= min_level && level < LOG_OFF; }

void log_msg(log_level_t level, const char *component, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char line[2048];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, NAMES[level], component);
    if (n < 0) return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = (size_t)n + (size_t)m;
    if (len > sizeof line - 2) len = sizeof line - 2; /* truncated message */
    line[len++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nothing sensible to do if stderr is gone */
}
