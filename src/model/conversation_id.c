/* conversation_id.c - the deterministic conversation id (see model.h). */
#include <string.h>

#include "model/model.h"
#include "util/sha256.h"

void conversation_id_derive(const uuid_t *a, const uuid_t *b, uuid_t *out) {
    char sa[UUID_STR_LEN + 1], sb[UUID_STR_LEN + 1];
    uuid_format(a, sa);
    uuid_format(b, sb);
    /* Sorting the lowercase strings is what the FastAPI implementation does;
     * for canonical lowercase hex it equals sorting the bytes. */
    const char *lo = sa, *hi = sb;
    if (strcmp(sa, sb) > 0) { lo = sb; hi = sa; }
    char input[2 * UUID_STR_LEN];
    memcpy(input, lo, UUID_STR_LEN);
    memcpy(input + UUID_STR_LEN, hi, UUID_STR_LEN);
    uint8_t digest[SHA256_LEN];
    sha256(input, sizeof input, digest);
    memcpy(out->b, digest, 16);
}
