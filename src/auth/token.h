/* token.h - bearer tokens: 256 random bits from the OS, written as 43
 * characters of unpadded base64url. The store keeps only their SHA-256. */
#ifndef MESSENGER_AUTH_TOKEN_H
#define MESSENGER_AUTH_TOKEN_H

#include <stddef.h>
#include <stdint.h>

#define TOKEN_CHARS 43
#define TOKEN_HASH_BYTES 32

/* 0, or -1 when the OS has no randomness to give. */
int token_generate(char out[TOKEN_CHARS + 1], uint8_t hash[TOKEN_HASH_BYTES]);
/* Checks the form of a presented token and hashes it: 0, or -1 when it
 * cannot be one of ours (then it needs no look-up). */
int token_digest(const char *token, size_t len, uint8_t hash[TOKEN_HASH_BYTES]);

#endif
