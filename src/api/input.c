/* input.c - request validation; see input.h. */
#include "api/input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/model.h"

int input_fail(input_err_t *err, const char *name, const char *what) {
    snprintf(err->detail, sizeof err->detail, "%s: %s", name, what);
    return -1;
}

/* ---- the fast path: flat objects ----
 *
 * Parsing a send's body (three short strings) with json_loadb took 3.3-3.8
 * us, and 0.6 us here (`make bench-json`, "parse"); building the same json_t
 * alone takes 0.3 us: jansson's lexer, not its objects, is the cost. At ~66
 * us of CPU per durable send, reading the common shape ourselves is worth it.
 * Only that shape: anything else is left to jansson, which also words
 * every error. */

static const char *skip_ws(const char *p, const char *end) {
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
    return p;
}

/* Decodes the string whose opening quote is just before p into out (room
 * for end - p bytes): returns the byte after its closing quote, or NULL for
 * what the fast path leaves to jansson (a \u escape, a control character,
 * invalid UTF-8, no closing quote). Escapes decode to ASCII, so checking the
 * decoded bytes checks the UTF-8 of the source. */
static const char *flat_string(const char *p, const char *end, char *out, size_t *len) {
    size_t n = 0;
    while (p < end) {
        unsigned char c = (unsigned char)*p++;
        if (c == '"') {
            *len = n;
            return utf8_valid(out, n) ? p : NULL;
        }
        if (c < 0x20) return NULL;
        if (c == '\\') {
            if (p == end) return NULL;
            switch (*p++) {
            case '"': c = '"'; break;
            case '\\': c = '\\'; break;
            case '/': c = '/'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            default: return NULL;
            }
        }
        out[n++] = (char)c;
    }
    return NULL;
}

json_t *input_parse_flat(const char *body, size_t len) {
    const char *p = body, *end = body + len;
    p = skip_ws(p, end);
    if (p == end || *p != '{') return NULL;
    /* A key, NUL-terminated, then a value: each at most len bytes. */
    char *key = malloc(2 * len + 2), *val = key ? key + len + 1 : NULL;
    json_t *obj = key ? json_object() : NULL;
    if (!obj) goto fail;
    p = skip_ws(p + 1, end);
    if (p < end && *p == '}') {
        p++;
    } else {
        for (;;) {
            size_t klen, vlen;
            if (p == end || *p != '"' || !(p = flat_string(p + 1, end, key, &klen))) goto fail;
            key[klen] = '\0';
            p = skip_ws(p, end);
            if (p == end || *p != ':') goto fail;
            p = skip_ws(p + 1, end);
            json_t *v;
            if (p < end && *p == '"') {
                if (!(p = flat_string(p + 1, end, val, &vlen))) goto fail;
                v = json_stringn_nocheck(val, vlen);
            } else if (end - p >= 4 && memcmp(p, "null", 4) == 0) {
                p += 4;
                v = json_null();
            } else {
                goto fail; /* numbers, booleans, arrays, objects: jansson's */
            }
            /* A repeated key is refused (by jansson, which words it). */
            if (!v || json_object_get(obj, key) || json_object_set_new_nocheck(obj, key, v) != 0) {
                json_decref(v);
                goto fail;
            }
            p = skip_ws(p, end);
            if (p < end && *p == ',') {
                p = skip_ws(p + 1, end);
                continue;
            }
            if (p < end && *p == '}') {
                p++;
                break;
            }
            goto fail;
        }
    }
    if (skip_ws(p, end) != end) goto fail;
    free(key);
    return obj;
fail:
    free(key);
    json_decref(obj);
    return NULL;
}

int input_body_object(http_request_t *req, json_t **out, input_err_t *err) {
    size_t len;
    const char *body = http_request_body(req, &len);
    return input_json_object(body, len, out, err);
}

int input_json_object(const char *body, size_t len, json_t **out, input_err_t *err) {
    json_t *v = body ? input_parse_flat(body, len) : NULL;
    if (v) {
        *out = v;
        return 0;
    }
    json_error_t jerr;
    /* JSON_ALLOW_NUL: "\u0000" is valid JSON, and content may carry it.
     * jansson also rejects invalid UTF-8 anywhere in the document. */
    v = json_loadb(body, len, JSON_ALLOW_NUL | JSON_REJECT_DUPLICATES, &jerr);
    err->status = 400;
    if (!v && json_error_code(&jerr) == json_error_duplicate_key) {
        /* Valid JSON text, but two values for one field: which one a proxy
         * or a log reads is anybody's guess, so neither is taken. */
        err->status = 422;
        snprintf(err->detail, sizeof err->detail, "request body repeats a key: %.160s", jerr.text);
        return -1;
    }
    if (!v && json_error_code(&jerr) == json_error_invalid_utf8) {
        /* Well-formed but not text: a client's mistake about the content,
         * as every other invalid UTF-8 in input is (422). */
        err->status = 422;
        snprintf(err->detail, sizeof err->detail, "request body is not valid UTF-8 (line %d, column %d)",
                 jerr.line, jerr.column);
        return -1;
    }
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
    http_respond_error(req, e.status, e.detail);
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
    return input_limit_value(s, strlen(s), limit, err);
}

int input_limit_value(const char *s, size_t n, int *limit, input_err_t *err) {
    /* Plain digits only, at most three of them (so no overflow). */
    bool digits = n >= 1 && n <= 3;
    for (size_t i = 0; digits && i < n; i++) digits = s[i] >= '0' && s[i] <= '9';
    if (!digits) return input_fail(err, "limit", "must be an integer from 1 to 100");
    int v = 0;
    for (size_t i = 0; i < n; i++) v = v * 10 + (s[i] - '0');
    if (v < 1 || v > LIMIT_MAX) return input_fail(err, "limit", "must be an integer from 1 to 100");
    *limit = v;
    return 0;
}

int input_query_timeuuid(http_request_t *req, const char *name, bool *present, uuid_t *out, input_err_t *err) {
    const char *s = http_request_query(req, name);
    *present = s != NULL;
    return s ? input_timeuuid(name, s, strlen(s), out, err) : 0;
}

int input_timeuuid(const char *name, const char *s, size_t n, uuid_t *out, input_err_t *err) {
    if (uuid_parse(out, s, n) != 0 || uuid_version(out) != 1)
        return input_fail(err, name, "not a message id (a version-1 UUID)");
    return 0;
}

int input_send(json_t *body, size_t max_content, store_send_t *s, input_err_t *err) {
    const char *bad = NULL;
    if (input_uuid(body, "receiver_id", &s->receiver_id, err) ||
        input_string(body, "content", &s->content, &s->content_len, err) ||
        input_optional_string(body, "client_message_id", &s->client_message_id, &s->client_message_id_len, err))
        return -1;
    if (uuid_cmp(&s->sender_id, &s->receiver_id) == 0) bad = "receiver_id: must differ from sender_id";
    else if (!(bad = content_check(s->content, s->content_len, max_content)) && s->client_message_id)
        bad = client_message_id_check(s->client_message_id, s->client_message_id_len);
    if (!bad) return 0;
    snprintf(err->detail, sizeof err->detail, "%s", bad);
    return -1;
}
