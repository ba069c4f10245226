/*
 * cql_token.c - partition tokens and the token ring.
 *
 * Cassandra's default partitioner (Murmur3Partitioner) places a partition
 * at token = h1 of MurmurHash3_x64_128(routing key, seed 0), where h1 is the
 * first 64-bit half of the 128-bit hash.  Cassandra's implementation
 * (org.apache.cassandra.utils.MurmurHash.hash3_x64_128) differs from the
 * reference C++ code in one detail that matters: the 1..15 tail bytes are
 * read as Java `byte`s and therefore SIGN-extended before being shifted
 * into k1/k2, so every key whose tail has a byte >= 0x80 hashes differently
 * from the reference.  We reproduce Cassandra's variant, since the point is
 * to agree with the server.  The 16-byte blocks are little-endian 64-bit
 * words in both.  Finally the partitioner never hands out Long.MIN_VALUE
 * (it is the ring's minimum token, owned by nobody), mapping it to
 * Long.MAX_VALUE.
 *
 * All arithmetic is on uint64_t: signed overflow would be undefined in C,
 * whereas Java's long arithmetic wraps, which is exactly what unsigned
 * arithmetic does.
 */
#include "cql_internal.h"

#include <stdlib.h>
#include <string.h>

static inline uint64_t rotl64(uint64_t x, unsigned r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t fmix64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

static inline uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

/* A Java byte widened to long: 0x80..0xff become 0xffffffffffffff80.. */
static inline uint64_t sx(uint8_t b) { return (uint64_t)(int64_t)(int8_t)b; }

void cql_murmur3_x64_128(const void *key, size_t len, uint64_t seed, uint64_t out[2])
{
    const uint8_t *data = key;
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    uint64_t h1 = seed, h2 = seed;
    size_t nblocks = len / 16;

    for (size_t i = 0; i < nblocks; i++) {
        uint64_t k1 = le64(data + i * 16), k2 = le64(data + i * 16 + 8);
        k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        h1 = rotl64(h1, 27); h1 += h2; h1 = h1 * 5 + 0x52dce729;
        k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        h2 = rotl64(h2, 31); h2 += h1; h2 = h2 * 5 + 0x38495ab5;
    }

    const uint8_t *tail = data + nblocks * 16;
    uint64_t k1 = 0, k2 = 0;
    switch (len & 15) {
    case 15: k2 ^= sx(tail[14]) << 48; /* fall through */
    case 14: k2 ^= sx(tail[13]) << 40; /* fall through */
    case 13: k2 ^= sx(tail[12]) << 32; /* fall through */
    case 12: k2 ^= sx(tail[11]) << 24; /* fall through */
    case 11: k2 ^= sx(tail[10]) << 16; /* fall through */
    case 10: k2 ^= sx(tail[9]) << 8;   /* fall through */
    case 9:
        k2 ^= sx(tail[8]);
        k2 *= c2; k2 = rotl64(k2, 33); k2 *= c1; h2 ^= k2;
        /* fall through */
    case 8: k1 ^= sx(tail[7]) << 56; /* fall through */
    case 7: k1 ^= sx(tail[6]) << 48; /* fall through */
    case 6: k1 ^= sx(tail[5]) << 40; /* fall through */
    case 5: k1 ^= sx(tail[4]) << 32; /* fall through */
    case 4: k1 ^= sx(tail[3]) << 24; /* fall through */
    case 3: k1 ^= sx(tail[2]) << 16; /* fall through */
    case 2: k1 ^= sx(tail[1]) << 8;  /* fall through */
    case 1:
        k1 ^= sx(tail[0]);
        k1 *= c1; k1 = rotl64(k1, 31); k1 *= c2; h1 ^= k1;
        break;
    default:
        break;
    }

    h1 ^= (uint64_t)len;
    h2 ^= (uint64_t)len;
    h1 += h2;
    h2 += h1;
    h1 = fmix64(h1);
    h2 = fmix64(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

int64_t cql_token_from_hash(uint64_t h1)
{
    /* Two's complement reinterpretation, spelled out to stay defined. */
    int64_t t = h1 <= (uint64_t)INT64_MAX ? (int64_t)h1 : -(int64_t)(~h1) - 1;
    return t == INT64_MIN ? INT64_MAX : t;
}

int64_t cql_murmur3_token(const void *key, size_t len)
{
    uint64_t h[2];
    cql_murmur3_x64_128(key ? key : "", key ? len : 0, 0, h);
    return cql_token_from_hash(h[0]);
}

/* ---- routing keys ----------------------------------------------------- */

static const uint8_t *value_bytes(const cql_value *v)
{
    return v->ext ? v->ext : v->inl;
}

int cql_routing_key(cql_buf *b, const cql_value *const *comp, size_t n)
{
    if (n == 0 || !comp)
        return CQL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        /* null / unset components have no token; a composite component
         * is framed by a 2-byte length, so longer ones cannot be encoded */
        if (!comp[i] || comp[i]->len < 0 || comp[i]->type == CQL_TYPE_INVALID ||
            (n > 1 && comp[i]->len > UINT16_MAX) ||
            (!comp[i]->ext && comp[i]->len > (int32_t)sizeof comp[i]->inl))
            return CQL_EINVAL;
    }
    size_t save = b->len;
    if (n == 1) {
        /* A single-column key is hashed as the value's bytes. */
        cql_buf_put(b, value_bytes(comp[0]), (size_t)comp[0]->len);
    } else {
        /* CompositeType: per component <len:2 BE><bytes><end-of-component 0>. */
        for (size_t i = 0; i < n; i++) {
            cql_buf_u16(b, (uint16_t)comp[i]->len);
            cql_buf_put(b, value_bytes(comp[i]), (size_t)comp[i]->len);
            cql_buf_u8(b, 0);
        }
    }
    if (b->err) {
        int rc = b->err;
        b->len = save;
        b->err = 0;
        return rc;
    }
    return 0;
}

int cql_partition_token(const cql_value *components, size_t n, int64_t *token)
{
    if (!components || !token || n == 0 || n > 64)
        return CQL_EINVAL;
    const cql_value *ptrs[64];
    for (size_t i = 0; i < n; i++)
        ptrs[i] = &components[i];
    cql_buf b;
    cql_buf_init(&b);
    int rc = cql_routing_key(&b, ptrs, n);
    if (!rc)
        *token = cql_murmur3_token(b.data, b.len);
    cql_buf_free(&b);
    return rc;
}

/* ---- the ring --------------------------------------------------------- */

typedef struct tok_owner {
    int64_t token;
    uint32_t owner;
} tok_owner;

static int cmp_tok(const void *a, const void *b)
{
    const tok_owner *x = a, *y = b;
    if (x->token != y->token)
        return x->token < y->token ? -1 : 1;
    /* Equal tokens (a cluster in an inconsistent state): order by owner so
     * that the one kept below does not depend on qsort's whims. */
    return x->owner < y->owner ? -1 : x->owner > y->owner;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

void cql_ring_init(cql_ring *ring) { memset(ring, 0, sizeof *ring); }

void cql_ring_free(cql_ring *ring)
{
    free(ring->tokens);
    free(ring->owners);
    cql_ring_init(ring);
}

int cql_ring_build(cql_ring *ring, const int64_t *tokens, const uint32_t *owners, size_t n)
{
    cql_ring_init(ring);
    if (n == 0)
        return 0;
    if (!tokens || !owners || n > SIZE_MAX / sizeof(tok_owner))
        return CQL_EINVAL;
    tok_owner *v = malloc(n * sizeof *v);
    uint32_t *distinct = malloc(n * sizeof *distinct);
    ring->tokens = malloc(n * sizeof *ring->tokens);
    ring->owners = malloc(n * sizeof *ring->owners);
    if (!v || !distinct || !ring->tokens || !ring->owners) {
        free(v);
        free(distinct);
        cql_ring_free(ring);
        return CQL_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        v[i].token = tokens[i];
        v[i].owner = owners[i];
    }
    qsort(v, n, sizeof *v, cmp_tok);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (k && ring->tokens[k - 1] == v[i].token)
            continue; /* a token has one owner: keep the first */
        ring->tokens[k] = v[i].token;
        ring->owners[k] = v[i].owner;
        distinct[k] = v[i].owner;
        k++;
    }
    ring->n = k;
    qsort(distinct, k, sizeof *distinct, cmp_u32);
    size_t d = 0;
    for (size_t i = 0; i < k; i++)
        if (i == 0 || distinct[i] != distinct[i - 1])
            d++;
    ring->n_owners = d;
    free(v);
    free(distinct);
    return 0;
}

size_t cql_ring_find(const cql_ring *ring, int64_t token)
{
    /* A node owns the range (previous token, its token]: the owner of t is
     * the first ring token >= t, wrapping to the first one past the end. */
    size_t lo = 0, hi = ring->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ring->tokens[mid] < token)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == ring->n ? 0 : lo;
}

size_t cql_ring_replicas(const cql_ring *ring, int64_t token, uint32_t *out, size_t max)
{
    size_t got = 0;
    if (ring->n == 0 || max == 0)
        return 0;
    /* SimpleStrategy's replicas: the owner, then the next distinct owners
     * walking the ring clockwise.  At most one full turn. */
    size_t start = cql_ring_find(ring, token);
    for (size_t step = 0; step < ring->n && got < max && got < ring->n_owners; step++) {
        uint32_t o = ring->owners[(start + step) % ring->n];
        bool seen = false;
        for (size_t j = 0; j < got && !seen; j++)
            seen = out[j] == o;
        if (!seen)
            out[got++] = o;
    }
    return got;
}
