/* json_write.h - appending JSON tokens to a buf.
 *
 * Responses are written by hand rather than built as jansson trees: it saves
 * an allocation per value and a second pass. `make bench-json` renders a
 * 20-message page both ways: 2.0-3.2 us by hand against 88-132 us with
 * json_pack + json_dumps, on the page read, the hottest path there is.
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
/* The most bytes json_escape_to() writes for len input bytes: 6 per byte
 * (a lone byte becomes \ufffd; a 4-byte sequence two \u escapes, 3 per
 * byte), plus the quotes. */
#define JSON_ESCAPED_MAX_LEN(len) ((len) * 6 + 2)
/* Writes s as a quoted JSON string at o, which must have room for
 * JSON_ESCAPED_MAX_LEN(len) bytes; returns the end of what it wrote (no NUL
 * is added). For renderers that reserve a whole record's room at once. */
char *json_escape_to(char *o, const char *s, size_t len);
void json_put_cstring(buf_t *b, const char *s);
/* Appends "key": (the key must be a plain ASCII literal, not escaped). */
void json_put_key(buf_t *b, const char *key);

#endif
