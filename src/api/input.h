/* input.h - turning what a client sent into validated values.
 *
 * Every function returns 0 on success, or -1 with err->detail set to an
 * English sentence for the {"detail"} of a 4xx answer. The status is the
 * caller's choice: 400 for a body that is not a JSON object, 422 for
 * everything else (a missing or wrong-typed field, a malformed id, a limit
 * out of range).
 */
#ifndef MESSENGER_API_INPUT_H
#define MESSENGER_API_INPUT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "http/router.h"
#include "http/http_server.h"
#include "model/uuid.h"
#include "store/store.h"

#define LIMIT_DEFAULT 20
#define LIMIT_MAX 100

typedef struct input_err {
    char detail[256];
    unsigned status;    /* of a body that is not a JSON object: 400, or 422 for invalid UTF-8 or a repeated key */
} input_err_t;

/* The fast path of input_body_object(): a JSON object whose members are
 * strings (without \u escapes) or null, each key once, as
 * json_loadb(JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES) would parse it (equal
 * value); NULL for anything else, which is then jansson's to parse or
 * refuse. */
json_t *input_parse_flat(const char *body, size_t len);
/* Parses the request body as a JSON object; *out must be json_decref'd. */
int input_body_object(http_request_t *req, json_t **out, input_err_t *err);
/* The same for any text (bench-store's request files): the fast path above,
 * else jansson, whose message a refusal carries. */
int input_json_object(const char *body, size_t len, json_t **out, input_err_t *err);
/* The body as a JSON object, or NULL after answering 400 with the reason;
 * a non-NULL result must be json_decref'd. */
json_t *input_body_or_400(http_request_t *req);
/* A required string member (any UTF-8, NUL allowed). */
int input_string(json_t *obj, const char *key, const char **s, size_t *len, input_err_t *err);
/* An optional string member: *s = NULL when absent or null. */
int input_optional_string(json_t *obj, const char *key, const char **s, size_t *len, input_err_t *err);
/* A required member holding a UUID string (any case). */
int input_uuid(json_t *obj, const char *key, uuid_t *out, input_err_t *err);
/* Path parameter i as a UUID; `name` names it in the detail. */
int input_path_uuid(const http_params_t *p, int i, const char *name, uuid_t *out, input_err_t *err);
/* Query parameter `limit`: absent -> 20; otherwise an integer in 1..100. */
int input_limit(http_request_t *req, int *limit, input_err_t *err);
/* A `limit` value s[0..n): plain digits, 1..100. */
int input_limit_value(const char *s, size_t n, int *limit, input_err_t *err);
/* Optional query parameter holding a message id (a version-1 UUID). */
int input_query_timeuuid(http_request_t *req, const char *name, bool *present, uuid_t *out, input_err_t *err);
/* A message id (a version-1 UUID) in s[0..n); `name` names it in the detail. */
int input_timeuuid(const char *name, const char *s, size_t n, uuid_t *out, input_err_t *err);
/* What a send's body asks besides its sender (already in s->sender_id):
 * receiver_id, content and client_message_id, checked as POST
 * /api/messages/ checks them. The strings point into body. */
int input_send(json_t *body, size_t max_content, store_send_t *s, input_err_t *err);
/* Sets err->detail to "<name>: <what>" and returns -1. */
int input_fail(input_err_t *err, const char *name, const char *what);

#endif
