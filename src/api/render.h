/* render.h - the JSON shapes of the API (field names as in the FastAPI
 * implementation of the seed design). */
#ifndef MESSENGER_API_RENDER_H
#define MESSENGER_API_RENDER_H

#include <stdbool.h>

#include "model/model.h"
#include "util/buf.h"

void render_uuid(buf_t *b, const uuid_t *u);   /* "lowercase-canonical" */
void render_time(buf_t *b, int64_t unix_ms);   /* "2024-05-01T12:34:56.789Z" */
void render_user(buf_t *b, const user_t *u);
void render_message(buf_t *b, const message_t *m);
/* A page of messages: {"total":count,"limit":limit,"data":[...],
 * "next_cursor":cursor-or-null}, in one allocation. */
void render_message_page(buf_t *b, const message_t *items, size_t count, int limit, const char *next_cursor);
/* A conversation as listed for one user (user1 = that user). */
void render_conversation_item(buf_t *b, const conversation_t *c);
/* A conversation on its own: participants, created_at, last message. */
void render_conversation_detail(buf_t *b, const conversation_t *c);
/* {"total":count,"limit":limit,"data":[ -- the caller appends the items
 * separated by commas, then closes with render_page_end(). */
void render_page_begin(buf_t *b, size_t count, int limit);
/* ],"next_cursor":cursor-or-null} */
void render_page_end(buf_t *b, const char *next_cursor);

#endif
