/* timefmt.c - see timefmt.h. Formatting is done by hand (no gmtime_r and
 * snprintf): it runs once per message in every page we render. */
#include "util/timefmt.h"

#include <time.h>

/* Days since 1970-01-01 -> proleptic Gregorian date (the "civil from days"
 * computation over 400-year eras). */
static void civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;                                  /* [0, 146096] */
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);            /* [0, 365] */
    int64_t mp = (5 * doy + 2) / 153;                                 /* [0, 11] */
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static void digits(char *p, int v, int n) {
    while (n--) { p[n] = (char)('0' + v % 10); v /= 10; }
}

void time_format_ms(int64_t ms, char *out) {
    const int64_t min = -62167219200000LL;   /* 0000-01-01T00:00:00.000Z */
    const int64_t max = 253402300799999LL;   /* 9999-12-31T23:59:59.999Z */
    if (ms < min) ms = min;
    if (ms > max) ms = max;
    int64_t days = (ms >= 0 ? ms : ms - 86399999) / 86400000;
    int64_t rem = ms - days * 86400000; /* [0, 86399999] */
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    int msec = (int)(rem % 1000), s = (int)(rem / 1000);
    digits(out, y, 4);
    out[4] = '-';
    digits(out + 5, mo, 2);
    out[7] = '-';
    digits(out + 8, d, 2);
    out[10] = 'T';
    digits(out + 11, s / 3600, 2);
    out[13] = ':';
    digits(out + 14, s / 60 % 60, 2);
    out[16] = ':';
    digits(out + 17, s % 60, 2);
    out[19] = '.';
    digits(out + 20, msec, 3);
    out[23] = 'Z';
    out[24] = '\0';
}

static int64_t clock_ms(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t time_now_ms(void) { return clock_ms(CLOCK_REALTIME); }
int64_t time_mono_ms(void) { return clock_ms(CLOCK_MONOTONIC); }
