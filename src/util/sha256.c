/* sha256.c - SHA-256 with the algorithm fetched once (see sha256.h). */
#include "util/sha256.h"

#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>

static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
/* Written once under fetch_once, then only read: not mutable state. */
static EVP_MD *fetched;

static void fetch(void) { fetched = EVP_MD_fetch(NULL, "SHA256", NULL); }

void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]) {
    pthread_once(&fetch_once, fetch);
    /* EVP_Digest fails only without memory; SHA256() then takes its own
     * (slower) path, which also never fails for want of an algorithm. */
    if (!fetched || !EVP_Digest(data, len, out, NULL, fetched, NULL)) SHA256(data, len, out);
}
