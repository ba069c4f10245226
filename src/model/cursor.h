/* cursor.h - the conversation-list cursor.
 *
 * A conversation list is ordered by (activity, conversation id), newest
 * first, where activity is the 100-ns timestamp of the conversation's newest
 * message (its creation time while it has none). A cursor names a position
 * in that order; the next page holds what comes strictly after it. Because
 * positions only move up (activity never decreases), a walk never sees a
 * conversation twice, and skips one only if it moved to the top meanwhile.
 *
 * Text form: 16 lowercase hex digits of activity, '.', the conversation id:
 *   "0e3f5b2c6a1d7000.70030948-bb89-9933-eaf8-ac47c88cbaff"
 * A bare conversation id is accepted too (what FastAPI clients send): it
 * means "after that conversation's current position".
 */
#ifndef MESSENGER_CURSOR_H
#define MESSENGER_CURSOR_H

#include <stddef.h>
#include <stdint.h>

#include "model/uuid.h"

#define CONV_CURSOR_LEN (16 + 1 + UUID_STR_LEN)

typedef enum { CURSOR_INVALID = -1, CURSOR_POSITION = 0, CURSOR_BARE_ID = 1 } cursor_kind_t;

void conv_cursor_format(uint64_t activity, const uuid_t *id, char out[CONV_CURSOR_LEN + 1]);
cursor_kind_t conv_cursor_parse(const char *s, size_t len, uint64_t *activity, uuid_t *id);

#endif
