/* cursor.c - conversation-list cursors; see cursor.h. */
#include "model/cursor.h"

#include <string.h>

void conv_cursor_format(uint64_t activity, const uuid_t *id, char out[CONV_CURSOR_LEN + 1]) {
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 16; i++) out[i] = hex[(activity >> (60 - 4 * i)) & 15];
    out[16] = '.';
    uuid_format(id, out + 17);
}

cursor_kind_t conv_cursor_parse(const char *s, size_t len, uint64_t *activity, uuid_t *id) {
    if (len == UUID_STR_LEN) return uuid_parse(id, s, len) == 0 ? CURSOR_BARE_ID : CURSOR_INVALID;
    if (len != CONV_CURSOR_LEN || s[16] != '.') return CURSOR_INVALID;
    uint64_t a = 0;
    for (int i = 0; i < 16; i++) {
        int v = uuid_hex_digit(s[i]);
        if (v < 0) return CURSOR_INVALID;
        a = a << 4 | (uint64_t)v;
    }
    if (uuid_parse(id, s + 17, UUID_STR_LEN) != 0) return CURSOR_INVALID;
    *activity = a;
    return CURSOR_POSITION;
}
