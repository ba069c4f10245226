/* password.c - see password.h. */
#include "auth/password.h"

#include <argon2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "model/model.h"

#define SALT_BYTES 16
#define DIGEST_BYTES 32

const char *password_check(const char *pw, size_t len) {
    if (len < PASSWORD_MIN_BYTES) return "password: must be at least 8 bytes long";
    if (len > PASSWORD_MAX_BYTES) return "password: must be at most 1024 bytes long";
    (void)pw; /* any bytes: the JSON layer has already checked UTF-8 */
    return NULL;
}

int password_hash(const password_params_t *p, const char *pw, size_t len, char *out, size_t out_size) {
    uint8_t salt[SALT_BYTES];
    if (getrandom(salt, sizeof salt, 0) != (ssize_t)sizeof salt) return -1;
    int rc = argon2id_hash_encoded(p->iterations, p->memory_kib, 1, pw, len, salt, sizeof salt, DIGEST_BYTES, out,
                                   out_size);
    return rc == ARGON2_OK ? 0 : -1;
}

bool password_verify(const char *encoded, size_t encoded_len, const char *pw, size_t len) {
    char enc[PASSWORD_HASH_MAX + 1];
    if (!encoded || encoded_len == 0 || encoded_len > PASSWORD_HASH_MAX) return false;
    memcpy(enc, encoded, encoded_len);
    enc[encoded_len] = '\0';
    return argon2id_verify(enc, pw, len) == ARGON2_OK;
}
