/* timefmt.h - ISO-8601 UTC timestamps with millisecond precision. */
#ifndef MESSENGER_TIMEFMT_H
#define MESSENGER_TIMEFMT_H

#include <stdint.h>

#define TIME_STR_LEN 24 /* "2024-05-01T12:34:56.789Z" */

/* Formats Unix milliseconds; out must hold TIME_STR_LEN + 1 bytes. Years
 * outside 0000-9999 are clamped to that range. */
void time_format_ms(int64_t ms, char *out);
int64_t time_now_ms(void);    /* wall clock, Unix ms */
int64_t time_mono_ms(void);   /* CLOCK_MONOTONIC ms: for intervals */

#endif
