/* json_write.h - appending JSON tokens to a buf.
 *
 * Responses are written by hand rather than built as jansson trees: it saves
 * an allocation per value and a second pass. `make bench-json` renders a
 * 20-message page both ways: 3.3 us by hand against 58 us with json_pack +
 * json_dumps (17x), on the page read, the hottest path there is.
 * Strings are always emitted as pure ASCII: every control character, DEL,
 * every non-ASCII code point (as \uXXXX, with surrogate pairs above U+FFFF)
 * and the two JSON specials are escaped, so the output is valid JSON for any
 * input. Bytes that are not well-formed UTF-8 become U+FFFD.
 */
#ifndef MESSENGER_JSON_WRITE_H
#define MESSENGER_JSON_WRITE_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"

void json_put_string(buf_t *b, const char *s, size_t len);
void json_put_cstring(buf_t *b, const char *s);
/* Appends "key": (the key must be a plain ASCII literal, not escaped). */
void json_put_key(buf_t *b, const char *key);

#endif
