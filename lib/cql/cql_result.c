/* cql_result.c - reading a parsed response: the error strings, the
 * accessors, the row cursor and collections.  Every read relies on what the
 * parser validated (cql_result_internal.h) and still checks its bounds. */
#include "cql_result_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- strings ---------------------------------------------------------- */

const char *cql_strerror(int err)
{
    switch (err) {
    case CQL_OK: return "success";
    case CQL_ENOMEM: return "out of memory";
    case CQL_EINVAL: return "invalid argument";
    case CQL_EPROTO: return "malformed frame or protocol violation";
    case CQL_ETOOBIG: return "frame body exceeds the maximum length";
    case CQL_ESERVER: return "server returned an error";
    case CQL_ETIMEDOUT: return "request timed out";
    case CQL_ECONN: return "connection lost";
    case CQL_ENOHOST: return "no host available";
    case CQL_ECLOSED: return "client closed";
    case CQL_ETYPE: return "column type mismatch";
    case CQL_ERANGE: return "index out of range";
    case CQL_ENULL: return "value is null";
    case CQL_EUNSUPPORTED: return "unsupported protocol feature";
    case CQL_EAGAIN: return "more data needed";
    case CQL_ESYS: return "system call failed";
    default: return "unknown error";
    }
}

const char *cql_consistency_name(unsigned c)
{
    static const char *const names[] = {
        "ANY", "ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM",
        "EACH_QUORUM", "SERIAL", "LOCAL_SERIAL", "LOCAL_ONE",
    };
    return c < sizeof names / sizeof names[0] ? names[c] : "UNKNOWN";
}

const char *cql_server_error_name(int32_t code)
{
    switch (code) {
    case CQL_SERVER_ERROR: return "Server_error";
    case CQL_PROTOCOL_ERROR: return "Protocol_error";
    case CQL_AUTH_ERROR: return "Authentication_error";
    case CQL_UNAVAILABLE: return "Unavailable";
    case CQL_OVERLOADED: return "Overloaded";
    case CQL_IS_BOOTSTRAPPING: return "Is_bootstrapping";
    case CQL_TRUNCATE_ERROR: return "Truncate_error";
    case CQL_WRITE_TIMEOUT: return "Write_timeout";
    case CQL_READ_TIMEOUT: return "Read_timeout";
    case CQL_READ_FAILURE: return "Read_failure";
    case CQL_FUNCTION_FAILURE: return "Function_failure";
    case CQL_WRITE_FAILURE: return "Write_failure";
    case CQL_SYNTAX_ERROR: return "Syntax_error";
    case CQL_UNAUTHORIZED: return "Unauthorized";
    case CQL_INVALID: return "Invalid";
    case CQL_CONFIG_ERROR: return "Config_error";
    case CQL_ALREADY_EXISTS: return "Already_exists";
    case CQL_UNPREPARED: return "Unprepared";
    default: return "Unknown_error";
    }
}

/* snprintf accumulator: keeps the would-be length like snprintf does. */
typedef struct fmt {
    char *buf;
    size_t size;
    size_t n;
} fmt;

__attribute__((format(printf, 2, 3))) static void fmt_add(fmt *f, const char *spec, ...)
{
    va_list ap;
    va_start(ap, spec);
    size_t room = f->n < f->size ? f->size - f->n : 0;
    int k = vsnprintf(room ? f->buf + f->n : NULL, room, spec, ap);
    va_end(ap);
    if (k > 0)
        f->n += (size_t)k;
}

static int str_len_int(cql_str s) { return s.len > 65535 ? 65535 : (int)s.len; }

int cql_error_format(const cql_error *e, char *buf, size_t size)
{
    fmt f = {buf, size, 0};
    if (size)
        buf[0] = '\0';
    fmt_add(&f, "%s (0x%04x): %.*s", cql_server_error_name(e->code), (unsigned)e->code,
            str_len_int(e->message), e->message.ptr ? e->message.ptr : "");
    const char *cl = cql_consistency_name(e->consistency);
    switch (e->code) {
    case CQL_UNAVAILABLE:
        fmt_add(&f, " [cl=%s required=%d alive=%d]", cl, e->required, e->alive);
        break;
    case CQL_WRITE_TIMEOUT:
        fmt_add(&f, " [cl=%s received=%d blockfor=%d write_type=%.*s]", cl, e->received,
                e->blockfor, str_len_int(e->write_type), e->write_type.ptr);
        break;
    case CQL_READ_TIMEOUT:
        fmt_add(&f, " [cl=%s received=%d blockfor=%d data_present=%s]", cl, e->received,
                e->blockfor, e->data_present ? "yes" : "no");
        break;
    case CQL_READ_FAILURE:
        fmt_add(&f, " [cl=%s received=%d blockfor=%d failures=%d data_present=%s]", cl,
                e->received, e->blockfor, e->numfailures, e->data_present ? "yes" : "no");
        break;
    case CQL_WRITE_FAILURE:
        fmt_add(&f, " [cl=%s received=%d blockfor=%d failures=%d write_type=%.*s]", cl,
                e->received, e->blockfor, e->numfailures, str_len_int(e->write_type),
                e->write_type.ptr);
        break;
    case CQL_FUNCTION_FAILURE: {
        fmt_add(&f, " [function=%.*s.%.*s(", str_len_int(e->keyspace), e->keyspace.ptr,
                str_len_int(e->function), e->function.ptr);
        /* arg_types_raw was validated as a [string list] by the parser. */
        cql_rd r = {(const uint8_t *)e->arg_types_raw.ptr, e->arg_types_raw.len, 0};
        uint16_t n = 0;
        cql_str s;
        if (r.p && !cql_rd_u16(&r, &n))
            for (uint16_t i = 0; i < n && !cql_rd_string(&r, &s); i++)
                fmt_add(&f, "%s%.*s", i ? ", " : "", str_len_int(s), s.ptr);
        fmt_add(&f, ")]");
        break;
    }
    case CQL_ALREADY_EXISTS:
        if (e->table.len)
            fmt_add(&f, " [table=%.*s.%.*s]", str_len_int(e->keyspace), e->keyspace.ptr,
                    str_len_int(e->table), e->table.ptr);
        else
            fmt_add(&f, " [keyspace=%.*s]", str_len_int(e->keyspace), e->keyspace.ptr);
        break;
    case CQL_UNPREPARED:
        fmt_add(&f, " [id=");
        for (size_t i = 0; i < e->unprepared_id_len; i++)
            fmt_add(&f, "%02x", e->unprepared_id[i]);
        fmt_add(&f, "]");
        break;
    default:
        break;
    }
    return f.n > INT32_MAX ? INT32_MAX : (int)f.n;
}

/* ---- accessors -------------------------------------------------------- */

int cql_result_opcode(const cql_result *r) { return r->hdr.opcode; }
int cql_result_kind(const cql_result *r) { return r->hdr.opcode == CQL_OP_RESULT ? r->kind : 0; }
const cql_error *cql_result_error(const cql_result *r) { return r->is_error ? &r->err : NULL; }
size_t cql_result_warning_count(const cql_result *r) { return r->n_warnings; }

cql_str cql_result_warning(const cql_result *r, size_t i)
{
    cql_str none = {"", 0};
    return i < r->n_warnings ? r->warnings[i] : none;
}

const uint8_t *cql_result_tracing_id(const cql_result *r) { return r->tracing_id; }

static bool has_row_metadata(const cql_result *r)
{
    return r->hdr.opcode == CQL_OP_RESULT &&
           (r->kind == CQL_RESULT_ROWS || r->kind == CQL_RESULT_PREPARED);
}

int32_t cql_result_row_count(const cql_result *r)
{
    return r->hdr.opcode == CQL_OP_RESULT && r->kind == CQL_RESULT_ROWS ? r->nrows : 0;
}

int32_t cql_result_column_count(const cql_result *r) { return has_row_metadata(r) ? r->ncols : 0; }

int cql_result_column(const cql_result *r, int32_t idx, cql_column *out)
{
    if (!has_row_metadata(r) || idx < 0 || idx >= r->ncols)
        return CQL_ERANGE;
    if (!r->cols) { /* No_metadata: only the count is known */
        memset(out, 0, sizeof *out);
        out->type = CQL_TYPE_UNKNOWN;
        return 0;
    }
    *out = r->cols[idx];
    return 0;
}

int cql_result_has_more_pages(const cql_result *r)
{
    return has_row_metadata(r) && (r->flags & CQL_RF_HAS_MORE_PAGES) && r->paging_state;
}

void cql_result_paging_state(const cql_result *r, const uint8_t **p, size_t *len)
{
    if (cql_result_has_more_pages(r)) {
        *p = r->paging_state;
        *len = r->paging_state_len;
    } else {
        *p = NULL;
        *len = 0;
    }
}

int cql_result_next_row(cql_result *r)
{
    if (r->hdr.opcode != CQL_OP_RESULT || r->kind != CQL_RESULT_ROWS)
        return CQL_EINVAL;
    if (r->cur + 1 >= r->nrows) {
        r->cur = r->nrows; /* stays at the end */
        return 0;
    }
    r->cur++;
    if (r->ncols > 0) {
        /* The rows region was validated by rd_rows(): these reads cannot
         * fail, but check anyway rather than trust a distant invariant. */
        cql_rd rd = {r->body, r->rows_end, r->next_off};
        for (int32_t i = 0; i < r->ncols; i++)
            if (cql_rd_bytes(&rd, &r->vp[i], &r->vl[i]))
                return CQL_EPROTO;
        r->next_off = rd.off;
    }
    return 1;
}

void cql_result_rewind(cql_result *r)
{
    r->cur = -1;
    r->next_off = r->rows_off;
}

static int cell(const cql_result *r, int32_t col, const uint8_t **p, int32_t *len)
{
    if (r->hdr.opcode != CQL_OP_RESULT || r->kind != CQL_RESULT_ROWS || r->cur < 0 ||
        r->cur >= r->nrows || col < 0 || col >= r->ncols)
        return CQL_ERANGE;
    *p = r->vp[col];
    *len = r->vl[col];
    return 0;
}

/* 0 when the column may be read as one of the listed types.  Without
 * metadata (Skip_metadata) the type is unknown and the value's length check
 * in the decoder is the only guard. */
static int check_type(const cql_result *r, int32_t col, uint16_t a, uint16_t b)
{
    if (!r->cols)
        return 0;
    uint16_t t = r->cols[col].type;
    return t == a || t == b ? 0 : CQL_ETYPE;
}

static int typed_cell(const cql_result *r, int32_t col, uint16_t a, uint16_t b,
                      const uint8_t **p, int32_t *len)
{
    int rc = cell(r, col, p, len);
    if (rc)
        return rc;
    if ((rc = check_type(r, col, a, b)))
        return rc;
    return *len < 0 ? CQL_ENULL : 0;
}

int cql_row_is_null(const cql_result *r, int32_t col)
{
    const uint8_t *p;
    int32_t len;
    int rc = cell(r, col, &p, &len);
    return rc ? rc : len < 0;
}

int cql_row_get_raw(const cql_result *r, int32_t col, const uint8_t **p, size_t *len)
{
    int32_t l;
    int rc = cell(r, col, p, &l);
    if (rc)
        return rc;
    if (l < 0)
        return CQL_ENULL;
    *len = (size_t)l;
    return 0;
}

int cql_row_get_int(const cql_result *r, int32_t col, int32_t *out)
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_INT, CQL_TYPE_INT, &p, &len);
    return rc ? rc : cql_decode_int(p, (size_t)len, out);
}

int cql_row_get_bigint(const cql_result *r, int32_t col, int64_t *out)
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_BIGINT, CQL_TYPE_COUNTER, &p, &len);
    return rc ? rc : cql_decode_bigint(p, (size_t)len, out);
}

int cql_row_get_timestamp(const cql_result *r, int32_t col, int64_t *ms)
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_TIMESTAMP, CQL_TYPE_TIMESTAMP, &p, &len);
    return rc ? rc : cql_decode_bigint(p, (size_t)len, ms);
}

int cql_row_get_bool(const cql_result *r, int32_t col, int *out)
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_BOOLEAN, CQL_TYPE_BOOLEAN, &p, &len);
    return rc ? rc : cql_decode_bool(p, (size_t)len, out);
}

int cql_row_get_uuid(const cql_result *r, int32_t col, uint8_t out[16])
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_UUID, CQL_TYPE_TIMEUUID, &p, &len);
    return rc ? rc : cql_decode_uuid(p, (size_t)len, out);
}

int cql_row_get_text(const cql_result *r, int32_t col, cql_str *out)
{
    const uint8_t *p;
    int32_t len;
    int rc = typed_cell(r, col, CQL_TYPE_VARCHAR, CQL_TYPE_ASCII, &p, &len);
    if (rc)
        return rc;
    out->ptr = (const char *)p;
    out->len = (size_t)len;
    return 0;
}

int cql_row_get_blob(const cql_result *r, int32_t col, const uint8_t **p, size_t *len)
{
    int32_t l;
    int rc = typed_cell(r, col, CQL_TYPE_BLOB, CQL_TYPE_BLOB, p, &l);
    if (rc)
        return rc;
    *len = (size_t)l;
    return 0;
}

int cql_result_prepared_id(const cql_result *r, const uint8_t **id, size_t *len)
{
    if (cql_result_kind(r) != CQL_RESULT_PREPARED)
        return CQL_EINVAL;
    *id = r->prep_id;
    *len = r->prep_id_len;
    return 0;
}

int32_t cql_result_pk_count(const cql_result *r)
{
    return cql_result_kind(r) == CQL_RESULT_PREPARED ? r->npk : 0;
}

int cql_result_pk_index(const cql_result *r, int32_t i)
{
    if (cql_result_kind(r) != CQL_RESULT_PREPARED || i < 0 || i >= r->npk)
        return CQL_ERANGE;
    /* rd_prepared() checked that all npk indexes are in the body and
     * below the marker count. */
    return cql_be16(r->pk_raw + 2 * (size_t)i);
}

int32_t cql_result_param_count(const cql_result *r)
{
    return cql_result_kind(r) == CQL_RESULT_PREPARED ? r->nparams : 0;
}

int cql_result_param(const cql_result *r, int32_t idx, cql_column *out)
{
    if (cql_result_kind(r) != CQL_RESULT_PREPARED || idx < 0 || idx >= r->nparams)
        return CQL_ERANGE;
    *out = r->params[idx];
    return 0;
}

cql_str cql_result_keyspace(const cql_result *r)
{
    cql_str none = {"", 0};
    return cql_result_kind(r) == CQL_RESULT_SET_KEYSPACE ? r->keyspace : none;
}

int cql_result_schema_change(const cql_result *r, cql_str *change, cql_str *target,
                             cql_str *keyspace, cql_str *name)
{
    if (cql_result_kind(r) != CQL_RESULT_SCHEMA_CHANGE)
        return CQL_EINVAL;
    *change = r->sc_change;
    *target = r->sc_target;
    *keyspace = r->sc_keyspace;
    *name = r->sc_name;
    return 0;
}

size_t cql_result_supported_count(const cql_result *r) { return r->n_supported; }

int cql_result_supported(const cql_result *r, size_t i, cql_str *key, char *values, size_t size)
{
    if (i >= r->n_supported)
        return CQL_ERANGE;
    const supported_entry *s = &r->supported[i];
    *key = s->key;
    fmt f = {values, size, 0};
    if (size)
        values[0] = '\0';
    cql_rd rd = {(const uint8_t *)s->raw.ptr, s->raw.len, 2};
    cql_str v;
    for (uint16_t k = 0; k < s->n && !cql_rd_string(&rd, &v); k++)
        fmt_add(&f, "%s%.*s", k ? "," : "", str_len_int(v), v.ptr);
    return f.n > INT32_MAX ? INT32_MAX : (int)f.n;
}

int cql_row_get_inet(const cql_result *r, int32_t col, uint8_t out[16], size_t *len)
{
    const uint8_t *p;
    int32_t l;
    int rc = typed_cell(r, col, CQL_TYPE_INET, CQL_TYPE_INET, &p, &l);
    if (rc)
        return rc;
    if (l != 4 && l != 16)
        return CQL_EPROTO;
    memcpy(out, p, (size_t)l);
    *len = (size_t)l;
    return 0;
}

/* ---- collections ------------------------------------------------------ */

int cql_collection_begin(cql_iter *it, const uint8_t *p, size_t len)
{
    memset(it, 0, sizeof *it);
    if (!p && len)
        return CQL_EINVAL;
    /* Walk the whole value once, so that a truncated or padded encoding
     * is an error here rather than half-way through the caller's loop. */
    cql_rd rd = {p, len, 0};
    int32_t n, elen;
    const uint8_t *e;
    if (cql_rd_i32(&rd, &n) || n < 0 || (size_t)n > cql_rd_left(&rd) / 4)
        return CQL_EPROTO;
    for (int32_t i = 0; i < n; i++)
        if (cql_rd_bytes(&rd, &e, &elen))
            return CQL_EPROTO;
    if (cql_rd_left(&rd) != 0)
        return CQL_EPROTO;
    it->p = p;
    it->len = len;
    it->off = 4;
    it->left = n;
    return 0;
}

int cql_iter_next(cql_iter *it, const uint8_t **p, int32_t *len)
{
    if (it->left <= 0)
        return 0;
    /* Validated by cql_collection_begin(); still bounds-checked, since an
     * iterator is a plain struct the caller could have damaged. */
    cql_rd rd = {it->p, it->len, it->off <= it->len ? it->off : it->len};
    if (cql_rd_bytes(&rd, p, len)) {
        it->left = 0;
        return CQL_EPROTO;
    }
    it->off = rd.off;
    it->left--;
    return 1;
}

int cql_iter_next_text(cql_iter *it, cql_str *out)
{
    const uint8_t *p;
    int32_t len;
    int rc = cql_iter_next(it, &p, &len);
    if (rc <= 0)
        return rc;
    if (len < 0)
        return CQL_ENULL;
    out->ptr = (const char *)p;
    out->len = (size_t)len;
    return 1;
}

int cql_row_get_collection(const cql_result *r, int32_t col, cql_iter *it)
{
    const uint8_t *p;
    int32_t len;
    memset(it, 0, sizeof *it);
    int rc = typed_cell(r, col, CQL_TYPE_LIST, CQL_TYPE_SET, &p, &len);
    return rc ? rc : cql_collection_begin(it, p, (size_t)len);
}

int cql_row_get_text_set(const cql_result *r, int32_t col, cql_iter *it)
{
    memset(it, 0, sizeof *it);
    if (r->cols && col >= 0 && col < r->ncols && r->cols[col].subtype[0] != CQL_TYPE_VARCHAR &&
        r->cols[col].subtype[0] != CQL_TYPE_ASCII &&
        (r->cols[col].type == CQL_TYPE_LIST || r->cols[col].type == CQL_TYPE_SET))
        return CQL_ETYPE;
    return cql_row_get_collection(r, col, it);
}

