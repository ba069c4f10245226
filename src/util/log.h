/* log.h - levelled logging to stderr, one line per event:
 *   2026-11-25T02:13:12.123Z INFO  http: req=1a2b GET /health 200 0.08ms
 * or, in the json format, one object per line:
 *   {"time":"2026-11-25T02:13:12.123Z","level":"info","layer":"http",
 *    "request_id":"1a2b","msg":"GET /health 200 0.08ms"}
 * A message about one request starts with "req=<id> " (every layer writes
 * it so); the json format lifts that into request_id.
 *
 * The level is set once at start-up (before any thread starts) and only
 * read afterwards. Each line is written with a single write(2), so lines
 * from different threads never interleave.
 */
#ifndef MESSENGER_LOG_H
#define MESSENGER_LOG_H

#include <stdbool.h>

typedef enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level_t;

/* Parses debug|info|warn|error|off; returns 0 or -1. */
int log_level_parse(const char *s, log_level_t *out);
/* The word log_level_parse() reads for a level ("info"). */
const char *log_level_name(log_level_t level);
void log_set_level(log_level_t level);
typedef enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON } log_format_t;
/* Set once at start-up, like the level. */
void log_set_format(log_format_t format);
bool log_enabled(log_level_t level);
/* component: the layer speaking ("http", "api", "store", "seed", ...). */
void log_msg(log_level_t level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(comp, ...) do { if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, comp, __VA_ARGS__); } while (0)
#define log_info(comp, ...) do { if (log_enabled(LOG_INFO)) log_msg(LOG_INFO, comp, __VA_ARGS__); } while (0)
#define log_warn(comp, ...) log_msg(LOG_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_ERROR, comp, __VA_ARGS__)

#endif
