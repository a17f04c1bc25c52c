/* Monotonic time helpers. */
#ifndef TENDRIL_CORE_CLOCK_H
#define TENDRIL_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t te_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Deadline for a timeout in ms; negative means none (UINT64_MAX). */
static inline uint64_t te_deadline_ms(int timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : te_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

#endif
