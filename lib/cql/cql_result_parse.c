/* cql_result_parse.c - response parsing (section 4.2): a frame's body,
 * whatever its opcode, into a cql_result (cql_result_internal.h says what
 * the result then guarantees its readers), server errors (section 9), and
 * the body of an EVENT. */
#include "cql_result_internal.h"

#include <stdlib.h>
#include <string.h>

/* Nesting limit for column types (list<map<..>> ...).  Cassandra has no
 * such limit, but real schemas never come close; it bounds recursion on
 * hostile input. */
#define TYPE_MAX_DEPTH 32

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

/* A result for header h over body (copied when copy_body), before any
 * parsing; NULL when out of memory. */
static cql_result *result_new(const cql_header *h, const uint8_t *body, size_t len, bool copy_body)
{
    cql_result *res = calloc(1, sizeof *res);
    if (!res)
        return NULL;
    res->hdr = *h;
    res->cur = -1;
    if (copy_body && len) {
        res->owned = malloc(len);
        if (!res->owned) {
            free(res);
            return NULL;
        }
        memcpy(res->owned, body, len);
        body = res->owned;
    }
    res->body = body;
    res->body_len = len;
    return res;
}

/* What the header's flags put before the body proper. */
static int rd_prefix(cql_rd *r, const cql_header *h, cql_result *res)
{
    /* Section 2.2 order: tracing id, then warnings, then custom payload. */
    if ((h->flags & CQL_FLAG_TRACING) && cql_rd_raw(r, 16, &res->tracing_id))
        return CQL_EPROTO;
    if (h->flags & CQL_FLAG_WARNING) {
        uint16_t n;
        cql_str raw;
        if (cql_rd_string_list(r, &n, &raw))
            return CQL_EPROTO;
        if (n) {
            res->warnings = calloc(n, sizeof *res->warnings);
            if (!res->warnings)
                return CQL_ENOMEM;
            cql_rd w = {(const uint8_t *)raw.ptr, raw.len, 2};
            for (uint16_t i = 0; i < n; i++)
                (void)cql_rd_string(&w, &res->warnings[i]); /* validated above */
            res->n_warnings = n;
        }
    }
    if ((h->flags & CQL_FLAG_CUSTOM_PAYLOAD) && cql_rd_skip_bytes_map(r))
        return CQL_EPROTO;
    return 0;
}

/* The body proper, by opcode. */
static int rd_body(cql_rd *r, uint8_t opcode, cql_result *res)
{
    const uint8_t *p;
    int32_t blen;
    cql_str s;
    switch (opcode) {
    case CQL_OP_ERROR: return rd_error(r, res);
    case CQL_OP_READY: return 0;
    case CQL_OP_AUTHENTICATE: return cql_rd_string(r, &s);
    case CQL_OP_SUPPORTED: return rd_supported(r, res);
    case CQL_OP_RESULT: return rd_result(r, res);
    case CQL_OP_EVENT: return cql_rd_string(r, &s);
    case CQL_OP_AUTH_CHALLENGE:
    case CQL_OP_AUTH_SUCCESS: return cql_rd_bytes(r, &p, &blen);
    default: return CQL_EPROTO; /* a request opcode or unknown */
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
    cql_result *res = result_new(h, body, len, copy_body);
    if (!res)
        return CQL_ENOMEM;
    cql_rd r = {res->body, len, 0};
    int rc = rd_prefix(&r, h, res);
    if (!rc)
        rc = rd_body(&r, h->opcode, res);
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

