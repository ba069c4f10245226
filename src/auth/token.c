/* token.c - see token.h. */
#include "auth/token.h"

#include <sys/random.h>

#include "util/sha256.h"

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int token_generate(char out[TOKEN_CHARS + 1], uint8_t hash[TOKEN_HASH_BYTES]) {
    uint8_t raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw) return -1;
    /* 32 bytes = 256 bits = 42 full sextets + 4 bits: 43 characters. */
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < sizeof raw; i++) {
        acc = (acc << 8) | raw[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = B64URL[(acc >> bits) & 63];
        }
    }
    if (bits) out[o++] = B64URL[(acc << (6 - bits)) & 63];
    out[o] = '\0';
    return token_digest(out, o, hash);
}

int token_digest(const char *token, size_t len, uint8_t hash[TOKEN_HASH_BYTES]) {
    if (len != TOKEN_CHARS) return -1;
    for (size_t i = 0; i < len; i++) {
        char c = token[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'))
            return -1;
    }
    sha256(token, len, hash);
    return 0;
}
