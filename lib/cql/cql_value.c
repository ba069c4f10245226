/* cql_value.c - encoding and decoding of the supported value types
 * (section 6).  Encodings are big-endian two's complement. */
#include "cql_internal.h"

#include <string.h>

static cql_value inline_value(uint16_t type, const uint8_t *p, int32_t len)
{
    cql_value v;
    memset(&v, 0, sizeof v);
    v.type = type;
    v.len = len;
    if (len > 0)
        memcpy(v.inl, p, (size_t)len);
    return v;
}

static cql_value ext_value(uint16_t type, const void *p, size_t len)
{
    cql_value v;
    memset(&v, 0, sizeof v);
    /* [value] lengths are [int]: longer inputs cannot be sent, and a NULL
     * pointer with a nonzero length is a caller bug.  Both poison the
     * value so that the builder rejects it with CQL_EINVAL. */
    if (len > INT32_MAX || (!p && len)) {
        v.type = CQL_TYPE_INVALID;
        return v;
    }
    v.type = type;
    v.len = (int32_t)len;
    /* Never leave ext NULL for an external value: NULL means "inline". */
    v.ext = p ? p : (const uint8_t *)"";
    return v;
}

cql_value cql_value_null(void) { return inline_value(0, NULL, -1); }
cql_value cql_value_unset(void) { return inline_value(0, NULL, -2); }

cql_value cql_value_int(int32_t x)
{
    uint8_t t[4];
    cql_put_be32(t, (uint32_t)x);
    return inline_value(CQL_TYPE_INT, t, 4);
}

cql_value cql_value_bigint(int64_t x)
{
    uint8_t t[8];
    cql_put_be64(t, (uint64_t)x);
    return inline_value(CQL_TYPE_BIGINT, t, 8);
}

cql_value cql_value_timestamp(int64_t ms)
{
    cql_value v = cql_value_bigint(ms);
    v.type = CQL_TYPE_TIMESTAMP;
    return v;
}

cql_value cql_value_bool(int x)
{
    uint8_t t = x ? 1 : 0;
    return inline_value(CQL_TYPE_BOOLEAN, &t, 1);
}

cql_value cql_value_uuid(const uint8_t uuid[16])
{
    if (!uuid)
        return inline_value(CQL_TYPE_INVALID, NULL, 0);
    return inline_value(CQL_TYPE_UUID, uuid, 16);
}

cql_value cql_value_timeuuid(const uint8_t uuid[16])
{
    /* Section 6.18: a timeuuid is a version 1 UUID; the server rejects
     * anything else, so reject it here where the error is clearer. */
    if (!uuid || (uuid[6] >> 4) != 1)
        return inline_value(CQL_TYPE_INVALID, NULL, 0);
    return inline_value(CQL_TYPE_TIMEUUID, uuid, 16);
}

cql_value cql_value_text(const char *s)
{
    return ext_value(CQL_TYPE_VARCHAR, s, s ? strlen(s) : 0);
}

cql_value cql_value_textn(const char *s, size_t len) { return ext_value(CQL_TYPE_VARCHAR, s, len); }

cql_value cql_value_ascii(const char *s, size_t len)
{
    for (size_t i = 0; s && i < len; i++)
        if ((unsigned char)s[i] > 127)
            return inline_value(CQL_TYPE_INVALID, NULL, 0);
    return ext_value(CQL_TYPE_ASCII, s, len);
}

cql_value cql_value_blob(const void *p, size_t len) { return ext_value(CQL_TYPE_BLOB, p, len); }

int cql_decode_int(const uint8_t *p, size_t len, int32_t *out)
{
    if (len != 4 || !p)
        return CQL_EPROTO;
    *out = (int32_t)cql_be32(p);
    return 0;
}

int cql_decode_bigint(const uint8_t *p, size_t len, int64_t *out)
{
    if (len != 8 || !p)
        return CQL_EPROTO;
    *out = (int64_t)cql_be64(p);
    return 0;
}

int cql_decode_bool(const uint8_t *p, size_t len, int *out)
{
    if (len != 1 || !p)
        return CQL_EPROTO;
    *out = p[0] != 0; /* section 6.4: any nonzero byte is true */
    return 0;
}

int cql_decode_uuid(const uint8_t *p, size_t len, uint8_t out[16])
{
    if (len != 16 || !p)
        return CQL_EPROTO;
    memcpy(out, p, 16);
    return 0;
}
