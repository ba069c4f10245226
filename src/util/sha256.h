/* sha256.h - SHA-256 of a short buffer, on the hot path.
 *
 * OpenSSL 3's one-shot SHA256() looks the algorithm up by name on every
 * call (a property query, locks and reference counts): 620 ns for the 72
 * bytes of a conversation id's input here, against 210 ns with the
 * algorithm fetched once, which is what this module does. Every send
 * derives a conversation id, and every authenticated request hashes its
 * token. Thread-safe; the fetched algorithm lives until the process ends.
 */
#ifndef UTIL_SHA256_H
#define UTIL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_LEN 32

void sha256(const void *data, size_t len, uint8_t out[SHA256_LEN]);

#endif
