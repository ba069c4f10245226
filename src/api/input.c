/* input.c - request validation; see input.h. */
#include "api/input.h"

#include <stdio.h>
#include <string.h>

int input_fail(input_err_t *err, const char *name, const char *what) {
    snprintf(err->detail, sizeof err->detail, "%s: %s", name, what);
    return -1;
}

int input_body_object(http_request_t *req, json_t **out, input_err_t *err) {
    size_t len;
    const char *body = http_request_body(req, &len);
    json_error_t jerr;
    /* JSON_ALLOW_NUL: "\u0000" is valid JSON, and content may carry it.
     * jansson also rejects invalid UTF-8 anywhere in the document. */
    json_t *v = json_loadb(body, len, JSON_ALLOW_NUL, &jerr);
    if (!v) {
        /* jansson's text is at most 160 bytes; cut it to fit, on purpose. */
        snprintf(err->detail, sizeof err->detail, "request body is not valid JSON: %.160s (line %d, column %d)",
                 jerr.text, jerr.line, jerr.column);
        return -1;
    }
    if (!json_is_object(v)) {
        json_decref(v);
        snprintf(err->detail, sizeof err->detail, "request body must be a JSON object");
        return -1;
    }
    *out = v;
    return 0;
}

json_t *input_body_or_400(http_request_t *req) {
    input_err_t e;
    json_t *body;
    if (input_body_object(req, &body, &e) == 0) return body;
    http_respond_error(req, 400, e.detail);
    return NULL;
}

int input_string(json_t *obj, const char *key, const char **s, size_t *len, input_err_t *err) {
    json_t *v = json_object_get(obj, key);
    if (!v) return input_fail(err, key, "field required");
    if (!json_is_string(v)) return input_fail(err, key, "must be a string");
    *s = json_string_value(v);
    *len = json_string_length(v);
    return 0;
}

int input_optional_string(json_t *obj, const char *key, const char **s, size_t *len, input_err_t *err) {
    *s = NULL;
    *len = 0;
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) return 0;
    return input_string(obj, key, s, len, err);
}

int input_uuid(json_t *obj, const char *key, uuid_t *out, input_err_t *err) {
    const char *s;
    size_t len;
    if (input_string(obj, key, &s, &len, err)) return -1;
    if (uuid_parse(out, s, len) != 0) return input_fail(err, key, "not a valid UUID");
    return 0;
}

int input_path_uuid(const http_params_t *p, int i, const char *name, uuid_t *out, input_err_t *err) {
    if (i >= p->count || uuid_parse(out, p->val[i], p->len[i]) != 0)
        return input_fail(err, name, "not a valid UUID");
    return 0;
}

int input_limit(http_request_t *req, int *limit, input_err_t *err) {
    const char *s = http_request_query(req, "limit");
    if (!s) {
        *limit = LIMIT_DEFAULT;
        return 0;
    }
    /* Plain digits only, at most three of them (so no overflow). */
    size_t n = strlen(s);
    if (n == 0 || n > 3 || strspn(s, "0123456789") != n)
        return input_fail(err, "limit", "must be an integer from 1 to 100");
    int v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    if (v < 1 || v > LIMIT_MAX) return input_fail(err, "limit", "must be an integer from 1 to 100");
    *limit = v;
    return 0;
}

int input_query_timeuuid(http_request_t *req, const char *name, bool *present, uuid_t *out, input_err_t *err) {
    const char *s = http_request_query(req, name);
    *present = s != NULL;
    if (!s) return 0;
    if (uuid_parse(out, s, strlen(s)) != 0 || uuid_version(out) != 1)
        return input_fail(err, name, "not a message id (a version-1 UUID)");
    return 0;
}
