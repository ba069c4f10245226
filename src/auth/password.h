/* password.h - Argon2id password hashes (libargon2), in the encoded form
 * that carries its own parameters and salt, so that a change of the
 * parameters never invalidates stored hashes. Both calls are CPU- and
 * memory-heavy by design: run them on a worker (util/workq.h). */
#ifndef MESSENGER_AUTH_PASSWORD_H
#define MESSENGER_AUTH_PASSWORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PASSWORD_MIN_BYTES 8
#define PASSWORD_MAX_BYTES 1024

typedef struct password_params {
    uint32_t memory_kib;
    uint32_t iterations;
} password_params_t;

/* NULL when the password is acceptable, else the 422 detail. */
const char *password_check(const char *pw, size_t len);
/* Writes the NUL-terminated encoded hash to out. 0, or -1 (no randomness,
 * out of memory). */
int password_hash(const password_params_t *p, const char *pw, size_t len, char *out, size_t out_size);
/* Constant-time in the password (libargon2 compares the digests so). */
bool password_verify(const char *encoded, size_t encoded_len, const char *pw, size_t len);

#endif
