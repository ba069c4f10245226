/* cql_buf.c - the growable writer and the bounds-checked reader. */
#include "cql_internal.h"

#include <stdlib.h>
#include <string.h>

void cql_buf_init(cql_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->err = 0;
}

void cql_buf_free(cql_buf *b)
{
    free(b->data);
    cql_buf_init(b);
}

int cql_buf_reserve(cql_buf *b, size_t extra)
{
    if (b->err)
        return b->err;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->err = CQL_ENOMEM;
        return b->err;
    }
    size_t need = b->len + extra;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
        b->err = CQL_ENOMEM;
        return b->err;
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

void cql_buf_put(cql_buf *b, const void *p, size_t n)
{
    if (n == 0 || cql_buf_reserve(b, n))
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cql_buf_u8(cql_buf *b, uint8_t v) { cql_buf_put(b, &v, 1); }

void cql_buf_u16(cql_buf *b, uint16_t v)
{
    uint8_t t[2];
    cql_put_be16(t, v);
    cql_buf_put(b, t, 2);
}

void cql_buf_i32(cql_buf *b, int32_t v)
{
    uint8_t t[4];
    cql_put_be32(t, (uint32_t)v);
    cql_buf_put(b, t, 4);
}

void cql_buf_i64(cql_buf *b, int64_t v)
{
    uint8_t t[8];
    cql_put_be64(t, (uint64_t)v);
    cql_buf_put(b, t, 8);
}

static void set_err(cql_buf *b, int err)
{
    if (!b->err)
        b->err = err;
}

void cql_buf_string(cql_buf *b, const char *s, size_t n)
{
    if (n > UINT16_MAX) {
        set_err(b, CQL_EINVAL);
        return;
    }
    cql_buf_u16(b, (uint16_t)n);
    cql_buf_put(b, s, n);
}

void cql_buf_long_string(cql_buf *b, const char *s, size_t n)
{
    if (n > INT32_MAX) {
        set_err(b, CQL_EINVAL);
        return;
    }
    cql_buf_i32(b, (int32_t)n);
    cql_buf_put(b, s, n);
}

void cql_buf_bytes(cql_buf *b, const void *p, size_t n)
{
    cql_buf_long_string(b, p, n);
}

void cql_buf_short_bytes(cql_buf *b, const void *p, size_t n)
{
    cql_buf_string(b, p, n);
}

void cql_buf_value(cql_buf *b, const cql_value *v)
{
    if (v->type == CQL_TYPE_INVALID || v->len < -2 || (v->len > 0 && !v->ext && v->len > 16)) {
        set_err(b, CQL_EINVAL);
        return;
    }
    cql_buf_i32(b, v->len);
    if (v->len > 0)
        cql_buf_put(b, v->ext ? v->ext : v->inl, (size_t)v->len);
}

/* ---- reader ----------------------------------------------------------- */

int cql_rd_raw(cql_rd *r, size_t n, const uint8_t **p)
{
    if (n > cql_rd_left(r))
        return CQL_EPROTO;
    *p = r->p + r->off;
    r->off += n;
    return 0;
}

int cql_rd_u8(cql_rd *r, uint8_t *v)
{
    const uint8_t *p;
    if (cql_rd_raw(r, 1, &p))
        return CQL_EPROTO;
    *v = p[0];
    return 0;
}

int cql_rd_u16(cql_rd *r, uint16_t *v)
{
    const uint8_t *p;
    if (cql_rd_raw(r, 2, &p))
        return CQL_EPROTO;
    *v = cql_be16(p);
    return 0;
}

int cql_rd_i32(cql_rd *r, int32_t *v)
{
    const uint8_t *p;
    if (cql_rd_raw(r, 4, &p))
        return CQL_EPROTO;
    *v = (int32_t)cql_be32(p);
    return 0;
}

int cql_rd_i64(cql_rd *r, int64_t *v)
{
    const uint8_t *p;
    if (cql_rd_raw(r, 8, &p))
        return CQL_EPROTO;
    *v = (int64_t)cql_be64(p);
    return 0;
}

int cql_rd_string(cql_rd *r, cql_str *s)
{
    size_t save = r->off;
    uint16_t n;
    const uint8_t *p;
    if (cql_rd_u16(r, &n) || cql_rd_raw(r, n, &p)) {
        r->off = save;
        return CQL_EPROTO;
    }
    s->ptr = (const char *)p;
    s->len = n;
    return 0;
}

int cql_rd_long_string(cql_rd *r, cql_str *s)
{
    size_t save = r->off;
    int32_t n;
    const uint8_t *p;
    if (cql_rd_i32(r, &n) || n < 0 || cql_rd_raw(r, (size_t)n, &p)) {
        r->off = save;
        return CQL_EPROTO;
    }
    s->ptr = (const char *)p;
    s->len = (size_t)n;
    return 0;
}

int cql_rd_bytes(cql_rd *r, const uint8_t **p, int32_t *len)
{
    size_t save = r->off;
    int32_t n;
    if (cql_rd_i32(r, &n))
        return CQL_EPROTO;
    if (n < 0) { /* [bytes]: any negative length is null */
        *p = NULL;
        *len = -1;
        return 0;
    }
    if (cql_rd_raw(r, (size_t)n, p)) {
        r->off = save;
        return CQL_EPROTO;
    }
    *len = n;
    return 0;
}

int cql_rd_short_bytes(cql_rd *r, const uint8_t **p, size_t *len)
{
    cql_str s;
    if (cql_rd_string(r, &s))
        return CQL_EPROTO;
    *p = (const uint8_t *)s.ptr;
    *len = s.len;
    return 0;
}

int cql_rd_string_list(cql_rd *r, uint16_t *n, cql_str *raw)
{
    size_t save = r->off;
    uint16_t count;
    cql_str s;
    if (cql_rd_u16(r, &count))
        return CQL_EPROTO;
    for (uint16_t i = 0; i < count; i++) {
        if (cql_rd_string(r, &s)) {
            r->off = save;
            return CQL_EPROTO;
        }
    }
    *n = count;
    raw->ptr = (const char *)r->p + save;
    raw->len = r->off - save;
    return 0;
}

int cql_rd_skip_bytes_map(cql_rd *r)
{
    size_t save = r->off;
    uint16_t count;
    cql_str k;
    const uint8_t *p;
    int32_t len;
    if (cql_rd_u16(r, &count))
        return CQL_EPROTO;
    for (uint16_t i = 0; i < count; i++) {
        if (cql_rd_string(r, &k) || cql_rd_bytes(r, &p, &len)) {
            r->off = save;
            return CQL_EPROTO;
        }
    }
    return 0;
}

int cql_rd_inet(cql_rd *r, uint8_t addr[16], size_t *alen, int32_t *port)
{
    size_t save = r->off;
    uint8_t n;
    const uint8_t *a;
    if (cql_rd_u8(r, &n) || (n != 4 && n != 16) || cql_rd_raw(r, n, &a) || cql_rd_i32(r, port)) {
        r->off = save;
        return CQL_EPROTO;
    }
    memcpy(addr, a, n);
    *alen = n;
    return 0;
}
