/*
 * cql_internal.h - wire-level building blocks shared by the client and the
 * unit tests: a growable writer, a bounds-checked reader, frame header
 * encoding, request builders and the response parser.  Not installed.
 */
#ifndef CQL_INTERNAL_H
#define CQL_INTERNAL_H

#include "cql.h"

#include <stdbool.h>

#define CQL_HEADER_LEN 9u
#define CQL_VERSION_REQUEST 0x04u
#define CQL_VERSION_RESPONSE 0x84u
/* Section 2.5: "currently a frame is limited to 256MB in length". */
#define CQL_MAX_BODY_DEFAULT (256u * 1024u * 1024u)
#define CQL_MAX_STREAMS 32768u

/* Frame flags (section 2.2). */
#define CQL_FLAG_COMPRESSION 0x01u
#define CQL_FLAG_TRACING 0x02u
#define CQL_FLAG_CUSTOM_PAYLOAD 0x04u
#define CQL_FLAG_WARNING 0x08u

/* QUERY / EXECUTE <flags> (section 4.1.4). */
#define CQL_QF_VALUES 0x01u
#define CQL_QF_SKIP_METADATA 0x02u
#define CQL_QF_PAGE_SIZE 0x04u
#define CQL_QF_PAGING_STATE 0x08u
#define CQL_QF_SERIAL_CONSISTENCY 0x10u
#define CQL_QF_DEFAULT_TIMESTAMP 0x20u
#define CQL_QF_NAMES 0x40u

/* Rows metadata <flags> (section 4.2.5.2). */
#define CQL_RF_GLOBAL_TABLES_SPEC 0x0001
#define CQL_RF_HAS_MORE_PAGES 0x0002
#define CQL_RF_NO_METADATA 0x0004

/* ---- writer ----------------------------------------------------------- */

/*
 * Growable byte buffer with a sticky error: after the first failure (ENOMEM,
 * or a field too long for its length prefix) every put is a no-op and err
 * keeps the first code, so builders check once at the end.
 */
typedef struct cql_buf {
    uint8_t *data;
    size_t len, cap;
    int err;
} cql_buf;

void cql_buf_init(cql_buf *b);
void cql_buf_free(cql_buf *b);
int cql_buf_reserve(cql_buf *b, size_t extra);
void cql_buf_put(cql_buf *b, const void *p, size_t n);
void cql_buf_u8(cql_buf *b, uint8_t v);
void cql_buf_u16(cql_buf *b, uint16_t v);
void cql_buf_i32(cql_buf *b, int32_t v);
void cql_buf_i64(cql_buf *b, int64_t v);
void cql_buf_string(cql_buf *b, const char *s, size_t n);      /* [string] */
void cql_buf_long_string(cql_buf *b, const char *s, size_t n); /* [long string] */
void cql_buf_bytes(cql_buf *b, const void *p, size_t n);       /* [bytes] */
void cql_buf_short_bytes(cql_buf *b, const void *p, size_t n); /* [short bytes] */
void cql_buf_value(cql_buf *b, const cql_value *v);            /* [value] */

/* Big-endian helpers. */
static inline uint16_t cql_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t cql_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint64_t cql_be64(const uint8_t *p)
{
    return ((uint64_t)cql_be32(p) << 32) | cql_be32(p + 4);
}
static inline void cql_put_be16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void cql_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void cql_put_be64(uint8_t *p, uint64_t v)
{
    cql_put_be32(p, (uint32_t)(v >> 32));
    cql_put_be32(p + 4, (uint32_t)v);
}

/* ---- reader ----------------------------------------------------------- */

/*
 * Bounds-checked cursor over a frame body.  Invariant: off <= len.  Every
 * read either consumes exactly the bytes of its item or returns CQL_EPROTO
 * and leaves off unchanged; lengths read from the wire are compared with
 * the remaining byte count before any use.
 */
typedef struct cql_rd {
    const uint8_t *p;
    size_t len, off;
} cql_rd;

static inline size_t cql_rd_left(const cql_rd *r) { return r->len - r->off; }
int cql_rd_u8(cql_rd *r, uint8_t *v);
int cql_rd_u16(cql_rd *r, uint16_t *v);
int cql_rd_i32(cql_rd *r, int32_t *v);
int cql_rd_i64(cql_rd *r, int64_t *v);
int cql_rd_raw(cql_rd *r, size_t n, const uint8_t **p);
int cql_rd_string(cql_rd *r, cql_str *s);
int cql_rd_long_string(cql_rd *r, cql_str *s);
/* [bytes]: *p NULL and *len -1 for null. */
int cql_rd_bytes(cql_rd *r, const uint8_t **p, int32_t *len);
int cql_rd_short_bytes(cql_rd *r, const uint8_t **p, size_t *len);
/* [string list]: validates it and returns its count and raw extent. */
int cql_rd_string_list(cql_rd *r, uint16_t *n, cql_str *raw);
int cql_rd_skip_bytes_map(cql_rd *r);
/* [inet]: a one-byte address size (4 or 16), the address, an [int] port. */
int cql_rd_inet(cql_rd *r, uint8_t addr[16], size_t *alen, int32_t *port);

/* ---- frame header ----------------------------------------------------- */

typedef struct cql_header {
    uint8_t version;
    uint8_t flags;
    int16_t stream;
    uint8_t opcode;
    uint32_t length;
} cql_header;

void cql_header_encode(const cql_header *h, uint8_t out[CQL_HEADER_LEN]);
/*
 * Decodes a header from n available bytes.  Returns CQL_EAGAIN if n < 9,
 * CQL_EPROTO if the version byte is not 0x84 (want_response) or 0x04, or
 * the length does not fit an [int]; CQL_ETOOBIG if length > max_body.
 */
int cql_header_decode(const uint8_t *p, size_t n, uint32_t max_body, bool want_response,
                      cql_header *h);

/* ---- request builders ------------------------------------------------- */

/* <query_parameters> of QUERY and EXECUTE. */
typedef struct cql_qparams {
    uint16_t consistency;
    const cql_value *values;
    size_t n_values;
    const char *const *names;   /* optional, n_values entries: sets 0x40 */
    bool skip_metadata;
    int32_t page_size;          /* <= 0: absent */
    const uint8_t *paging_state;/* NULL: absent */
    size_t paging_state_len;
    uint16_t serial_consistency;/* 0: absent */
    int64_t timestamp_us;       /* < 0: absent */
} cql_qparams;

void cql_qparams_init(cql_qparams *p);

typedef struct cql_batch_item {
    bool prepared;
    const char *query;          /* !prepared */
    size_t query_len;
    const uint8_t *id;          /* prepared */
    size_t id_len;
    const cql_value *values;
    size_t n_values;
} cql_batch_item;

/*
 * Each builder appends one complete frame to b.  On failure it returns a
 * negative code and b->len is restored to its value on entry (b->err is
 * cleared), so a failed build never leaves half a frame in an output buffer.
 */
int cql_build_startup(cql_buf *b, int16_t stream);
int cql_build_options(cql_buf *b, int16_t stream);
/* REGISTER for the given event types ("TOPOLOGY_CHANGE", "STATUS_CHANGE"...). */
int cql_build_register(cql_buf *b, int16_t stream, const char *const *events, size_t n);
int cql_build_query(cql_buf *b, int16_t stream, const char *q, size_t qlen,
                    const cql_qparams *p);
int cql_build_prepare(cql_buf *b, int16_t stream, const char *q, size_t qlen);
int cql_build_execute(cql_buf *b, int16_t stream, const uint8_t *id, size_t idlen,
                      const cql_qparams *p);
int cql_build_batch(cql_buf *b, int16_t stream, uint8_t type, const cql_batch_item *items,
                    size_t n, uint16_t consistency, uint16_t serial_consistency,
                    int64_t timestamp_us);

/* ---- response parser -------------------------------------------------- */

/*
 * Parses one response frame.  The result references body (zero copy): body
 * must outlive the result unless copy_body is true.  Returns 0 with *out
 * set, or a negative code and *out NULL.  Allocations are bounded by the
 * body length: every count is checked against the bytes that remain.
 */
int cql_result_parse(const cql_header *h, const uint8_t *body, size_t len, bool copy_body,
                     cql_result **out);
void cql_result_free(cql_result *r);

/*
 * The body of an EVENT frame (section 4.2.6) as far as the client uses it:
 * the event type and change ([string]s), then for TOPOLOGY_CHANGE and
 * STATUS_CHANGE the node's [inet]. Returns 0, or CQL_EPROTO when the two
 * strings are not there; has_addr says whether a whole [inet] followed
 * (SCHEMA_CHANGE and unknown types have none). Fields point into body.
 */
typedef struct cql_event {
    cql_str type, change;
    bool has_addr;
    uint8_t addr[16];
    size_t addr_len;    /* 4 or 16 when has_addr */
    int32_t port;       /* as sent: the caller checks its range */
} cql_event;

int cql_event_parse(const uint8_t *body, size_t len, cql_event *ev);

/* ---- tokens and the ring (cql_token.c) ------------------------------- */

/* Cassandra's MurmurHash3_x64_128 (sign-extended tail); out[0] is h1. */
void cql_murmur3_x64_128(const void *key, size_t len, uint64_t seed, uint64_t out[2]);
/* h1 as a Java long, with Long.MIN_VALUE (the ring's minimum, which no
 * partition may have) mapped to Long.MAX_VALUE as Murmur3Partitioner does. */
int64_t cql_token_from_hash(uint64_t h1);
/*
 * Appends the routing key of a partition key made of n components to b:
 * the bytes of a single component as they are, or for n > 1 each component
 * as <2-byte big-endian length><bytes><0>.  CQL_EINVAL for a null, unset or
 * (composite) over-65535-byte component; b is unchanged on failure.
 */
int cql_routing_key(cql_buf *b, const cql_value *const *comp, size_t n);

/*
 * Token ring: tokens ascending, owners[i] owns the range
 * (tokens[i-1], tokens[i]] (the first one also owns everything above the
 * last token).  Owners are opaque numbers (the client's host indexes).
 */
typedef struct cql_ring {
    int64_t *tokens;
    uint32_t *owners;
    size_t n;
    size_t n_owners;   /* distinct owners */
} cql_ring;

void cql_ring_init(cql_ring *ring);
void cql_ring_free(cql_ring *ring);
/* Sorts copies of the n (token, owner) pairs; a duplicated token keeps the
 * lowest owner.  ring is empty (and still freeable) on failure. */
int cql_ring_build(cql_ring *ring, const int64_t *tokens, const uint32_t *owners, size_t n);
/* Index of the first token >= token, wrapping to 0; 0 for an empty ring. */
size_t cql_ring_find(const cql_ring *ring, int64_t token);
/* The owner of token, then the next distinct owners clockwise: at most max
 * of them into out.  Returns how many. */
size_t cql_ring_replicas(const cql_ring *ring, int64_t token, uint32_t *out, size_t max);

#endif /* CQL_INTERNAL_H */
