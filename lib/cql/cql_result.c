/* cql_result.c - response parsing (section 4.2), server errors (section 9),
 * the row cursor, and the error strings. */
#include "cql_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nesting limit for column types (list<map<..>> ...).  Cassandra has no
 * such limit, but real schemas never come close; it bounds recursion on
 * hostile input. */
#define TYPE_MAX_DEPTH 32

typedef struct supported_entry {
    cql_str key;
    uint16_t n;
    cql_str raw; /* the [string list] of values */
} supported_entry;

struct cql_result {
    cql_header hdr;
    const uint8_t *body;
    size_t body_len;
    uint8_t *owned;              /* body copy when parsed with copy_body */

    const uint8_t *tracing_id;   /* 16 bytes inside body, or NULL */
    cql_str *warnings;
    size_t n_warnings;

    int32_t kind;                /* RESULT kind, 0 otherwise */
    bool is_error;
    cql_error err;

    /* Rows metadata (Rows result, or Prepared <result_metadata>). */
    int32_t flags;
    int32_t ncols;
    cql_column *cols;            /* NULL when No_metadata or ncols == 0 */
    const uint8_t *paging_state;
    size_t paging_state_len;

    /* Rows content: [rows_off, rows_end) of body, fully validated at parse
     * time, so the cursor below cannot run out of bounds. */
    int32_t nrows;
    size_t rows_off, rows_end;
    int32_t cur;                 /* current row index, -1 before the first */
    size_t next_off;             /* body offset of row cur + 1 */
    const uint8_t **vp;          /* current row's values (ncols entries) */
    int32_t *vl;                 /* their lengths, -1 = null */

    /* Prepared */
    const uint8_t *prep_id;
    size_t prep_id_len;
    int32_t npk;                 /* partition key columns among the markers */
    const uint8_t *pk_raw;       /* their npk [short] bind indexes, in body */
    int32_t nparams;
    cql_column *params;

    cql_str keyspace;            /* Set_keyspace */
    cql_str sc_change, sc_target, sc_keyspace, sc_name; /* Schema_change */
    supported_entry *supported;  /* SUPPORTED */
    size_t n_supported;
};

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

/* ---- parsing ---------------------------------------------------------- */

static int rd_type(cql_rd *r, int depth, uint16_t *id, uint16_t sub[2], cql_str *custom)
{
    uint16_t t, dummy[2];
    cql_str s;
    if (depth > TYPE_MAX_DEPTH || cql_rd_u16(r, &t))
        return CQL_EPROTO;
    *id = t;
    switch (t) {
    case CQL_TYPE_CUSTOM:
        if (cql_rd_string(r, &s))
            return CQL_EPROTO;
        if (custom)
            *custom = s;
        return 0;
    case CQL_TYPE_ASCII: case CQL_TYPE_BIGINT: case CQL_TYPE_BLOB: case CQL_TYPE_BOOLEAN:
    case CQL_TYPE_COUNTER: case CQL_TYPE_DECIMAL: case CQL_TYPE_DOUBLE: case CQL_TYPE_FLOAT:
    case CQL_TYPE_INT: case CQL_TYPE_TIMESTAMP: case CQL_TYPE_UUID: case CQL_TYPE_VARCHAR:
    case CQL_TYPE_VARINT: case CQL_TYPE_TIMEUUID: case CQL_TYPE_INET: case CQL_TYPE_DATE:
    case CQL_TYPE_TIME: case CQL_TYPE_SMALLINT: case CQL_TYPE_TINYINT:
        return 0;
    case CQL_TYPE_LIST:
    case CQL_TYPE_SET:
        return rd_type(r, depth + 1, sub ? &sub[0] : &dummy[0], dummy, NULL);
    case CQL_TYPE_MAP:
        if (rd_type(r, depth + 1, sub ? &sub[0] : &dummy[0], dummy, NULL))
            return CQL_EPROTO;
        return rd_type(r, depth + 1, sub ? &sub[1] : &dummy[1], dummy, NULL);
    case CQL_TYPE_UDT: {
        uint16_t n;
        if (cql_rd_string(r, &s) || cql_rd_string(r, &s) || cql_rd_u16(r, &n))
            return CQL_EPROTO;
        for (uint16_t i = 0; i < n; i++)
            if (cql_rd_string(r, &s) || rd_type(r, depth + 1, &dummy[0], dummy, NULL))
                return CQL_EPROTO;
        return 0;
    }
    case CQL_TYPE_TUPLE: {
        uint16_t n;
        if (cql_rd_u16(r, &n))
            return CQL_EPROTO;
        for (uint16_t i = 0; i < n; i++)
            if (rd_type(r, depth + 1, &dummy[0], dummy, NULL))
                return CQL_EPROTO;
        return 0;
    }
    default:
        /* An unknown option id has an unknown length: nothing after it can
         * be located, so the frame cannot be decoded. */
        return CQL_EPROTO;
    }
}

/* [<global_table_spec>?<col_spec_1>...<col_spec_n>]; n already read. */
static int rd_col_specs(cql_rd *r, int32_t flags, int32_t n, cql_column **out)
{
    cql_str gks = {0}, gtable = {0};
    bool global = flags & CQL_RF_GLOBAL_TABLES_SPEC;
    *out = NULL;
    if (global && (cql_rd_string(r, &gks) || cql_rd_string(r, &gtable)))
        return CQL_EPROTO;
    if (n == 0)
        return 0;
    /* Each spec is at least a [string] name and a [short] type id (4
     * bytes), plus two [string]s without a global spec: so n is bounded by
     * the bytes left before anything is allocated. */
    size_t min = global ? 4 : 8;
    if (n < 0 || (size_t)n > cql_rd_left(r) / min)
        return CQL_EPROTO;
    cql_column *cols = calloc((size_t)n, sizeof *cols);
    if (!cols)
        return CQL_ENOMEM;
    for (int32_t i = 0; i < n; i++) {
        cql_column *c = &cols[i];
        if (global) {
            c->keyspace = gks;
            c->table = gtable;
        } else if (cql_rd_string(r, &c->keyspace) || cql_rd_string(r, &c->table)) {
            goto bad;
        }
        if (cql_rd_string(r, &c->name) || rd_type(r, 0, &c->type, c->subtype, &c->custom_class))
            goto bad;
    }
    *out = cols;
    return 0;
bad:
    free(cols);
    return CQL_EPROTO;
}

/* Rows <metadata> (also Prepared <result_metadata>). */
static int rd_rows_metadata(cql_rd *r, cql_result *res)
{
    int rc;
    /* With No_metadata the column count is the only thing a node sends
     * about its columns, and it costs no bytes: cap it (cql.h), so that a
     * caller looping over the columns does bounded work. */
    if (cql_rd_i32(r, &res->flags) || cql_rd_i32(r, &res->ncols) || res->ncols < 0 ||
        res->ncols > CQL_MAX_COLUMNS)
        return CQL_EPROTO;
    if (res->flags & CQL_RF_HAS_MORE_PAGES) {
        int32_t len;
        if (cql_rd_bytes(r, &res->paging_state, &len))
            return CQL_EPROTO;
        res->paging_state_len = len > 0 ? (size_t)len : 0;
        if (len < 0)
            res->paging_state = NULL;
    }
    if (!(res->flags & CQL_RF_NO_METADATA) &&
        (rc = rd_col_specs(r, res->flags, res->ncols, &res->cols)))
        return rc;
    return 0;
}

static int rd_rows(cql_rd *r, cql_result *res)
{
    int rc = rd_rows_metadata(r, res);
    if (rc)
        return rc;
    if (cql_rd_i32(r, &res->nrows) || res->nrows < 0)
        return CQL_EPROTO;
    /* A row of no columns has no bytes, so nothing in the body bounds how
     * many of them a node may announce, and every caller's row loop would
     * spin that many times (2^31-1 froze the I/O thread for seconds). No
     * CQL statement selects zero columns: such a count is malformed. */
    if (res->nrows > 0 && res->ncols == 0)
        return CQL_EPROTO;
    res->rows_off = r->off;
    if (res->nrows > 0) {
        /* Every value is at least a 4-byte length: reject impossible
         * counts before walking (and before allocating ncols entries). */
        uint64_t cells = (uint64_t)res->nrows * (uint64_t)res->ncols;
        if (cells > cql_rd_left(r) / 4)
            return CQL_EPROTO;
        const uint8_t *p;
        int32_t len;
        for (uint64_t i = 0; i < cells; i++)
            if (cql_rd_bytes(r, &p, &len))
                return CQL_EPROTO;
        res->vp = calloc((size_t)res->ncols, sizeof *res->vp);
        res->vl = calloc((size_t)res->ncols, sizeof *res->vl);
        if (!res->vp || !res->vl)
            return CQL_ENOMEM;
    }
    res->rows_end = r->off;
    res->next_off = res->rows_off;
    return 0;
}

static int rd_prepared(cql_rd *r, cql_result *res)
{
    int32_t flags, npk;
    int rc;
    if (cql_rd_short_bytes(r, &res->prep_id, &res->prep_id_len) || res->prep_id_len == 0)
        return CQL_EPROTO;
    if (cql_rd_i32(r, &flags) || cql_rd_i32(r, &res->nparams) || res->nparams < 0 ||
        cql_rd_i32(r, &npk) || npk < 0 || (size_t)npk > cql_rd_left(r) / 2)
        return CQL_EPROTO;
    res->npk = npk;
    res->pk_raw = r->p + r->off;
    for (int32_t i = 0; i < npk; i++) {
        uint16_t idx;
        if (cql_rd_u16(r, &idx) || idx >= res->nparams)
            return CQL_EPROTO;
    }
    if ((rc = rd_col_specs(r, flags, res->nparams, &res->params)))
        return rc;
    return rd_rows_metadata(r, res);
}

static int rd_error(cql_rd *r, cql_result *res)
{
    cql_error *e = &res->err;
    res->is_error = true;
    if (cql_rd_i32(r, &e->code) || cql_rd_string(r, &e->message))
        return CQL_EPROTO;
    uint8_t b;
    switch (e->code) {
    case CQL_UNAVAILABLE:
        if (cql_rd_u16(r, &e->consistency) || cql_rd_i32(r, &e->required) ||
            cql_rd_i32(r, &e->alive))
            return CQL_EPROTO;
        break;
    case CQL_WRITE_TIMEOUT:
        if (cql_rd_u16(r, &e->consistency) || cql_rd_i32(r, &e->received) ||
            cql_rd_i32(r, &e->blockfor) || cql_rd_string(r, &e->write_type))
            return CQL_EPROTO;
        break;
    case CQL_READ_TIMEOUT:
        if (cql_rd_u16(r, &e->consistency) || cql_rd_i32(r, &e->received) ||
            cql_rd_i32(r, &e->blockfor) || cql_rd_u8(r, &b))
            return CQL_EPROTO;
        e->data_present = b != 0;
        break;
    case CQL_READ_FAILURE:
        if (cql_rd_u16(r, &e->consistency) || cql_rd_i32(r, &e->received) ||
            cql_rd_i32(r, &e->blockfor) || cql_rd_i32(r, &e->numfailures) || cql_rd_u8(r, &b))
            return CQL_EPROTO;
        e->data_present = b != 0;
        break;
    case CQL_WRITE_FAILURE:
        if (cql_rd_u16(r, &e->consistency) || cql_rd_i32(r, &e->received) ||
            cql_rd_i32(r, &e->blockfor) || cql_rd_i32(r, &e->numfailures) ||
            cql_rd_string(r, &e->write_type))
            return CQL_EPROTO;
        break;
    case CQL_FUNCTION_FAILURE:
        if (cql_rd_string(r, &e->keyspace) || cql_rd_string(r, &e->function) ||
            cql_rd_string_list(r, &e->n_arg_types, &e->arg_types_raw))
            return CQL_EPROTO;
        break;
    case CQL_ALREADY_EXISTS:
        if (cql_rd_string(r, &e->keyspace) || cql_rd_string(r, &e->table))
            return CQL_EPROTO;
        break;
    case CQL_UNPREPARED:
        if (cql_rd_short_bytes(r, &e->unprepared_id, &e->unprepared_id_len))
            return CQL_EPROTO;
        break;
    default:
        /* Other codes carry no extra fields in v4; codes added by later
         * versions are reported by number with their message. */
        break;
    }
    return 0;
}

static int rd_supported(cql_rd *r, cql_result *res)
{
    uint16_t n;
    if (cql_rd_u16(r, &n) || (size_t)n > cql_rd_left(r) / 4)
        return CQL_EPROTO;
    if (n == 0)
        return 0;
    res->supported = calloc(n, sizeof *res->supported);
    if (!res->supported)
        return CQL_ENOMEM;
    for (uint16_t i = 0; i < n; i++) {
        supported_entry *s = &res->supported[i];
        if (cql_rd_string(r, &s->key) || cql_rd_string_list(r, &s->n, &s->raw))
            return CQL_EPROTO;
    }
    res->n_supported = n;
    return 0;
}

static int rd_result(cql_rd *r, cql_result *res)
{
    if (cql_rd_i32(r, &res->kind))
        return CQL_EPROTO;
    switch (res->kind) {
    case CQL_RESULT_VOID:
        return 0;
    case CQL_RESULT_ROWS:
        return rd_rows(r, res);
    case CQL_RESULT_SET_KEYSPACE:
        return cql_rd_string(r, &res->keyspace);
    case CQL_RESULT_PREPARED:
        return rd_prepared(r, res);
    case CQL_RESULT_SCHEMA_CHANGE: {
        uint16_t n;
        cql_str raw;
        res->sc_name.ptr = ""; /* KEYSPACE targets have no name */
        if (cql_rd_string(r, &res->sc_change) || cql_rd_string(r, &res->sc_target) ||
            cql_rd_string(r, &res->sc_keyspace))
            return CQL_EPROTO;
        const cql_str *t = &res->sc_target;
        bool is_ks = t->len == 8 && !memcmp(t->ptr, "KEYSPACE", 8);
        bool is_fn = (t->len == 8 && !memcmp(t->ptr, "FUNCTION", 8)) ||
                     (t->len == 9 && !memcmp(t->ptr, "AGGREGATE", 9));
        if (!is_ks && cql_rd_string(r, &res->sc_name))
            return CQL_EPROTO;
        if (is_fn && cql_rd_string_list(r, &n, &raw))
            return CQL_EPROTO;
        return 0;
    }
    default:
        return CQL_EPROTO;
    }
}

int cql_result_parse(const cql_header *h, const uint8_t *body, size_t len, bool copy_body,
                     cql_result **out)
{
    *out = NULL;
    if (!h || (!body && len) || len != h->length)
        return CQL_EINVAL;
    /* We never negotiate compression, so a compressed body is a protocol
     * violation we cannot decode. */
    if (h->flags & CQL_FLAG_COMPRESSION)
        return CQL_EUNSUPPORTED;
    cql_result *res = calloc(1, sizeof *res);
    if (!res)
        return CQL_ENOMEM;
    res->hdr = *h;
    res->cur = -1;
    if (copy_body && len) {
        res->owned = malloc(len);
        if (!res->owned) {
            free(res);
            return CQL_ENOMEM;
        }
        memcpy(res->owned, body, len);
        body = res->owned;
    }
    res->body = body;
    res->body_len = len;

    cql_rd r = {body, len, 0};
    int rc = 0;
    /* Section 2.2 order: tracing id, then warnings, then custom payload. */
    if ((h->flags & CQL_FLAG_TRACING) && cql_rd_raw(&r, 16, &res->tracing_id))
        rc = CQL_EPROTO;
    if (!rc && (h->flags & CQL_FLAG_WARNING)) {
        uint16_t n;
        cql_str raw;
        if (cql_rd_string_list(&r, &n, &raw)) {
            rc = CQL_EPROTO;
        } else if (n) {
            res->warnings = calloc(n, sizeof *res->warnings);
            if (!res->warnings) {
                rc = CQL_ENOMEM;
            } else {
                cql_rd w = {(const uint8_t *)raw.ptr, raw.len, 2};
                for (uint16_t i = 0; i < n; i++)
                    (void)cql_rd_string(&w, &res->warnings[i]); /* validated above */
                res->n_warnings = n;
            }
        }
    }
    if (!rc && (h->flags & CQL_FLAG_CUSTOM_PAYLOAD) && cql_rd_skip_bytes_map(&r))
        rc = CQL_EPROTO;
    if (!rc) {
        const uint8_t *p;
        int32_t blen;
        cql_str s;
        switch (h->opcode) {
        case CQL_OP_ERROR: rc = rd_error(&r, res); break;
        case CQL_OP_READY: break;
        case CQL_OP_AUTHENTICATE: rc = cql_rd_string(&r, &s); break;
        case CQL_OP_SUPPORTED: rc = rd_supported(&r, res); break;
        case CQL_OP_RESULT: rc = rd_result(&r, res); break;
        case CQL_OP_EVENT: rc = cql_rd_string(&r, &s); break;
        case CQL_OP_AUTH_CHALLENGE:
        case CQL_OP_AUTH_SUCCESS: rc = cql_rd_bytes(&r, &p, &blen); break;
        default: rc = CQL_EPROTO; break; /* a request opcode or unknown */
        }
    }
    /* Trailing bytes are allowed: section 1 says extensions may append. */
    if (rc) {
        cql_result_free(res);
        return rc;
    }
    *out = res;
    return 0;
}

int cql_event_parse(const uint8_t *body, size_t len, cql_event *ev)
{
    memset(ev, 0, sizeof *ev);
    if (!body && len)
        return CQL_EINVAL;
    cql_rd r = {body, len, 0};
    if (cql_rd_string(&r, &ev->type) || cql_rd_string(&r, &ev->change))
        return CQL_EPROTO;
    bool topo = ev->type.len == 15 && !memcmp(ev->type.ptr, "TOPOLOGY_CHANGE", 15);
    bool status = ev->type.len == 13 && !memcmp(ev->type.ptr, "STATUS_CHANGE", 13);
    if (topo || status)
        ev->has_addr = cql_rd_inet(&r, ev->addr, &ev->addr_len, &ev->port) == 0;
    return 0;
}

void cql_result_free(cql_result *r)
{
    if (!r)
        return;
    free(r->warnings);
    free(r->cols);
    free(r->params);
    free(r->vp);
    free(r->vl);
    free(r->supported);
    free(r->owned);
    free(r);
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
