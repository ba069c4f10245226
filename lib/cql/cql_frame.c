/* cql_frame.c - frame header and request builders (sections 2 and 4.1). */
#include "cql_internal.h"

#include <string.h>

void cql_header_encode(const cql_header *h, uint8_t out[CQL_HEADER_LEN])
{
    out[0] = h->version;
    out[1] = h->flags;
    cql_put_be16(out + 2, (uint16_t)h->stream);
    out[4] = h->opcode;
    cql_put_be32(out + 5, h->length);
}

int cql_header_decode(const uint8_t *p, size_t n, uint32_t max_body, bool want_response,
                      cql_header *h)
{
    if (n < CQL_HEADER_LEN)
        return CQL_EAGAIN;
    h->version = p[0];
    h->flags = p[1];
    h->stream = (int16_t)cql_be16(p + 2);
    h->opcode = p[4];
    h->length = cql_be32(p + 5);
    if (h->version != (want_response ? CQL_VERSION_RESPONSE : CQL_VERSION_REQUEST))
        return CQL_EPROTO;
    /* The length is an [int]: a "negative" length is malformed, not big. */
    if (h->length > INT32_MAX)
        return CQL_EPROTO;
    if (h->length > max_body)
        return CQL_ETOOBIG;
    return 0;
}

void cql_qparams_init(cql_qparams *p)
{
    memset(p, 0, sizeof *p);
    p->consistency = CQL_ONE;
    p->timestamp_us = -1;
}

/* Frame scaffolding: reserve the header, let the caller append the body,
 * then patch the length.  `start` is the buffer length on entry, used both
 * to find the header and to roll back on failure. */
static size_t frame_begin(cql_buf *b, int16_t stream, uint8_t opcode)
{
    size_t start = b->len;
    cql_header h = {CQL_VERSION_REQUEST, 0, stream, opcode, 0};
    uint8_t hdr[CQL_HEADER_LEN];
    cql_header_encode(&h, hdr);
    cql_buf_put(b, hdr, sizeof hdr);
    return start;
}

static int frame_end(cql_buf *b, size_t start)
{
    int err = b->err;
    if (!err && b->len - start - CQL_HEADER_LEN > CQL_MAX_BODY_DEFAULT)
        err = CQL_ETOOBIG;
    if (err) {
        /* Roll back: the buffer may hold earlier complete frames. */
        b->len = start;
        b->err = 0;
        return err;
    }
    cql_put_be32(b->data + start + 5, (uint32_t)(b->len - start - CQL_HEADER_LEN));
    return 0;
}

static bool valid_consistency(uint16_t c) { return c <= CQL_LOCAL_ONE; }

int cql_build_startup(cql_buf *b, int16_t stream)
{
    if (stream < 0)
        return CQL_EINVAL;
    size_t start = frame_begin(b, stream, CQL_OP_STARTUP);
    cql_buf_u16(b, 1); /* [string map] with one entry */
    cql_buf_string(b, "CQL_VERSION", 11);
    cql_buf_string(b, "3.0.0", 5);
    return frame_end(b, start);
}

int cql_build_options(cql_buf *b, int16_t stream)
{
    if (stream < 0)
        return CQL_EINVAL;
    return frame_end(b, frame_begin(b, stream, CQL_OP_OPTIONS));
}

int cql_build_register(cql_buf *b, int16_t stream, const char *const *events, size_t n)
{
    if (stream < 0 || n == 0 || n > UINT16_MAX || !events)
        return CQL_EINVAL;
    size_t start = frame_begin(b, stream, CQL_OP_REGISTER);
    cql_buf_u16(b, (uint16_t)n); /* [string list] */
    for (size_t i = 0; i < n; i++) {
        if (!events[i]) {
            b->err = CQL_EINVAL;
            break;
        }
        cql_buf_string(b, events[i], strlen(events[i]));
    }
    return frame_end(b, start);
}

static int check_qparams(const cql_qparams *p)
{
    if (!valid_consistency(p->consistency) || p->n_values > UINT16_MAX ||
        (p->n_values && !p->values))
        return CQL_EINVAL;
    if (p->serial_consistency && p->serial_consistency != CQL_SERIAL &&
        p->serial_consistency != CQL_LOCAL_SERIAL)
        return CQL_EINVAL;
    if (p->paging_state && p->paging_state_len > INT32_MAX)
        return CQL_EINVAL;
    return 0;
}

/* <consistency><flags>[<n>[name_1]<value_1>...][<page_size>][<paging_state>]
 * [<serial_consistency>][<timestamp>] */
static void put_qparams(cql_buf *b, const cql_qparams *p)
{
    uint8_t flags = 0;
    if (p->n_values)
        flags |= CQL_QF_VALUES;
    if (p->n_values && p->names)
        flags |= CQL_QF_NAMES;
    if (p->skip_metadata)
        flags |= CQL_QF_SKIP_METADATA;
    if (p->page_size > 0)
        flags |= CQL_QF_PAGE_SIZE;
    if (p->paging_state)
        flags |= CQL_QF_PAGING_STATE;
    if (p->serial_consistency)
        flags |= CQL_QF_SERIAL_CONSISTENCY;
    if (p->timestamp_us >= 0)
        flags |= CQL_QF_DEFAULT_TIMESTAMP;
    cql_buf_u16(b, p->consistency);
    cql_buf_u8(b, flags);
    if (flags & CQL_QF_VALUES) {
        cql_buf_u16(b, (uint16_t)p->n_values);
        for (size_t i = 0; i < p->n_values; i++) {
            if (flags & CQL_QF_NAMES)
                cql_buf_string(b, p->names[i], strlen(p->names[i]));
            cql_buf_value(b, &p->values[i]);
        }
    }
    if (flags & CQL_QF_PAGE_SIZE)
        cql_buf_i32(b, p->page_size);
    if (flags & CQL_QF_PAGING_STATE)
        cql_buf_bytes(b, p->paging_state, p->paging_state_len);
    if (flags & CQL_QF_SERIAL_CONSISTENCY)
        cql_buf_u16(b, p->serial_consistency);
    if (flags & CQL_QF_DEFAULT_TIMESTAMP)
        cql_buf_i64(b, p->timestamp_us);
}

int cql_build_query(cql_buf *b, int16_t stream, const char *q, size_t qlen,
                    const cql_qparams *p)
{
    int rc;
    if (stream < 0 || !q)
        return CQL_EINVAL;
    if ((rc = check_qparams(p)))
        return rc;
    size_t start = frame_begin(b, stream, CQL_OP_QUERY);
    cql_buf_long_string(b, q, qlen);
    put_qparams(b, p);
    return frame_end(b, start);
}

int cql_build_prepare(cql_buf *b, int16_t stream, const char *q, size_t qlen)
{
    if (stream < 0 || !q)
        return CQL_EINVAL;
    size_t start = frame_begin(b, stream, CQL_OP_PREPARE);
    cql_buf_long_string(b, q, qlen);
    return frame_end(b, start);
}

int cql_build_execute(cql_buf *b, int16_t stream, const uint8_t *id, size_t idlen,
                      const cql_qparams *p)
{
    int rc;
    if (stream < 0 || !id || idlen == 0)
        return CQL_EINVAL;
    if ((rc = check_qparams(p)))
        return rc;
    size_t start = frame_begin(b, stream, CQL_OP_EXECUTE);
    cql_buf_short_bytes(b, id, idlen);
    put_qparams(b, p);
    return frame_end(b, start);
}

int cql_build_batch(cql_buf *b, int16_t stream, uint8_t type, const cql_batch_item *items,
                    size_t n, uint16_t consistency, uint16_t serial_consistency,
                    int64_t timestamp_us)
{
    if (stream < 0 || type > CQL_BATCH_COUNTER || n > UINT16_MAX || (n && !items) ||
        !valid_consistency(consistency))
        return CQL_EINVAL;
    if (serial_consistency && serial_consistency != CQL_SERIAL &&
        serial_consistency != CQL_LOCAL_SERIAL)
        return CQL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const cql_batch_item *it = &items[i];
        if (it->n_values > UINT16_MAX || (it->n_values && !it->values) ||
            (it->prepared ? (!it->id || !it->id_len) : !it->query))
            return CQL_EINVAL;
    }
    size_t start = frame_begin(b, stream, CQL_OP_BATCH);
    cql_buf_u8(b, type);
    cql_buf_u16(b, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        const cql_batch_item *it = &items[i];
        cql_buf_u8(b, it->prepared ? 1 : 0);
        if (it->prepared)
            cql_buf_short_bytes(b, it->id, it->id_len);
        else
            cql_buf_long_string(b, it->query, it->query_len);
        cql_buf_u16(b, (uint16_t)it->n_values);
        for (size_t j = 0; j < it->n_values; j++)
            cql_buf_value(b, &it->values[j]);
    }
    uint8_t flags = 0;
    if (serial_consistency)
        flags |= CQL_QF_SERIAL_CONSISTENCY;
    if (timestamp_us >= 0)
        flags |= CQL_QF_DEFAULT_TIMESTAMP;
    cql_buf_u16(b, consistency);
    cql_buf_u8(b, flags);
    if (serial_consistency)
        cql_buf_u16(b, serial_consistency);
    if (timestamp_us >= 0)
        cql_buf_i64(b, timestamp_us);
    return frame_end(b, start);
}
