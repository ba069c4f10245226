/* fuzz_common.h - what every harness shares: the libFuzzer entry points'
 * declarations and a check that aborts (a libFuzzer crash, with the input
 * saved) when a property the harness asserts does not hold. */
#ifndef MESSENGER_FUZZ_COMMON_H
#define MESSENGER_FUZZ_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Not assert(): it must hold in every build, NDEBUG or not. */
#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* Splits the input at the first occurrence of byte `sep`: the part before
 * it in *a, the rest in *b (empty when there is no separator). Lets one
 * input feed two fields without a length prefix the mutator would break. */
static inline void fuzz_split(const uint8_t *data, size_t size, uint8_t sep, const uint8_t **a, size_t *alen,
                              const uint8_t **b, size_t *blen) {
    size_t i = 0;
    while (i < size && data[i] != sep) i++;
    *a = data;
    *alen = i;
    *b = i < size ? data + i + 1 : data + size;
    *blen = i < size ? size - i - 1 : 0;
}

/* An exact-size heap copy, so that ASan sees a read one byte past the end
 * (libFuzzer's own buffer is exact-size too, but split parts are not).
 * With `nul`, a NUL is appended (not counted in len). */
static inline char *fuzz_dup(const uint8_t *p, size_t len, int nul) {
    char *c = malloc(len + (nul ? 1 : 0) + (len == 0 && !nul));
    if (!c) abort();
    for (size_t i = 0; i < len; i++) c[i] = (char)p[i];
    if (nul) c[len] = '\0';
    return c;
}

#endif
