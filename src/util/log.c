/* log.c - see log.h. */
#include "util/log.h"

#include "util/json_write.h"
#include "util/timefmt.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Written once by log_set_level() and log_set_format() before threads
 * start; read-only after. */
static log_level_t min_level = LOG_INFO;
static log_format_t format = LOG_FORMAT_TEXT;

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

void log_set_format(log_format_t f) { format = f; }

bool log_enabled(log_level_t level) { return level >= min_level && level < LOG_OFF; }

#define MSG_MAX 2048 /* a longer message is cut */

static void write_line(const char *line, size_t len) {
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w; /* nothing sensible to do if stderr is gone */
}

/* One JSON object: every string escaped by json_escape_to, so a message
 * holding a client's bytes (a path, a name) cannot break the line or add
 * a field. */
static void write_json(const char *when, log_level_t level, const char *component, const char *msg, size_t len) {
    const char *id = NULL, *end = msg + len;
    size_t id_len = 0;
    if (len > 4 && memcmp(msg, "req=", 4) == 0) {
        id = msg + 4;
        const char *space = memchr(id, ' ', (size_t)(end - id));
        id_len = (size_t)((space ? space : end) - id);
        msg = space ? space + 1 : end;
        len = (size_t)(end - msg);
    }
    size_t clen = strlen(component);
    char line[64 + TIME_STR_LEN + JSON_ESCAPED_MAX_LEN(64) + JSON_ESCAPED_MAX_LEN(64) + JSON_ESCAPED_MAX_LEN(MSG_MAX)];
    if (clen > 64) clen = 64;
    if (id_len > 64) id_len = 64;
    char *o = line;
    o += sprintf(o, "{\"time\":\"%s\",\"level\":\"%s\",\"layer\":", when, WORDS[level]);
    o = json_escape_to(o, component, clen);
    if (id) {
        memcpy(o, ",\"request_id\":", 14);
        o = json_escape_to(o + 14, id, id_len);
    }
    memcpy(o, ",\"msg\":", 7);
    o = json_escape_to(o + 7, msg, len);
    memcpy(o, "}\n", 2);
    write_line(line, (size_t)(o + 2 - line));
}

void log_msg(log_level_t level, const char *component, const char *fmt, ...) {
    if (!log_enabled(level)) return;
    char when[TIME_STR_LEN + 1], msg[MSG_MAX];
    time_format_ms(time_now_ms(), when);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    size_t len = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1; /* cut */
    if (format == LOG_FORMAT_JSON) {
        write_json(when, level, component, msg, len);
        return;
    }
    char line[TIME_STR_LEN + 80 + 4 * MSG_MAX];
    int n = snprintf(line, sizeof line, "%s %s %.64s: ", when, NAMES[level], component);
    if (n < 0) return;
    /* A control character (a client's %0a in a logged path) is written as
     * \xNN: one event stays one line, and nobody can forge another. */
    size_t o = (size_t)n;
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch < 0x20 || ch == 0x7f) o += (size_t)sprintf(line + o, "\\x%02x", ch);
        else line[o++] = (char)ch;
    }
    line[o++] = '\n';
    write_line(line, o);
}
