/* Shared helpers of the codec fuzz targets. A failed property aborts, which libFuzzer
 * reports as a crash and the replay driver as a failed test. */
#ifndef TENDRIL_FUZZ_CHECK_H
#define TENDRIL_FUZZ_CHECK_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tendril/te.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: property failed: %s (last error: \"%s\")\n", __FILE__,  \
                    __LINE__, #cond, te_last_error());                                     \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

#define FUZZ_GUARD 32
#define FUZZ_GUARD_BYTE 0xa5

/* A heap buffer of exactly `cap` bytes followed by a guard zone: under ASan a write past
 * cap is reported at once; without it the guard zone catches it. */
static inline uint8_t *fuzz_buf_new(size_t cap)
{
    uint8_t *b = malloc(cap + FUZZ_GUARD);
    FUZZ_CHECK(b != NULL);
    memset(b, FUZZ_GUARD_BYTE, cap + FUZZ_GUARD);
    return b;
}

/* Checks that nothing at or after `from` was written, then frees. */
static inline void fuzz_buf_free(uint8_t *b, size_t cap, size_t from)
{
    for (size_t i = from; i < cap + FUZZ_GUARD; i++)
        FUZZ_CHECK(b[i] == FUZZ_GUARD_BYTE);
    free(b);
}

#endif
