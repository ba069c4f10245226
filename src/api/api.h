/* api.h - the messenger HTTP API: routing and handlers over a store_t.
 *
 * api_handle() is the http_handler_fn given to the HTTP server. Handlers
 * validate everything the client sent (answering 4xx with a {"detail"} body
 * before touching the store), call one asynchronous store operation, and
 * answer from its callback. A handler never touches the request after the
 * store call: the answer may already be on its way.
 */
#ifndef MESSENGER_API_H
#define MESSENGER_API_H

#include <stddef.h>

#include "http/server.h"
#include "store/store.h"

typedef struct api {
    store_t *store;
    size_t max_content;     /* bytes of message content */
} api_t;

void api_handle(http_request_t *req, void *app);

#endif
