/* Monotonic time helpers. */
#ifndef TENDRIL_CORE_CLOCK_H
#define TENDRIL_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t tn_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The kernel's tick-granular clock: a quarter of the cost of tn_now_ns on a VM, and up to
 * one tick (1-10 ms) behind it. */
static inline uint64_t tn_now_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An operation's deadline, taken on the submission path with the coarse clock and moved
 * one longest tick later, so it never comes early against tn_now_ns (at most 10 ms late). */
static inline uint64_t tn_op_deadline_ns(uint32_t timeout_ms)
{
    return tn_now_coarse_ns() + 10000000ull + (uint64_t)timeout_ms * 1000000ull;
}

/* Deadline for a timeout in ms; negative means none (UINT64_MAX). */
static inline uint64_t tn_deadline_ms(int timeout_ms)
{
    return timeout_ms < 0 ? UINT64_MAX : tn_now_ns() + (uint64_t)timeout_ms * 1000000ull;
}

/* Sleeps for about `us` microseconds (the bounded polls that wait for completions). */
static inline void tn_sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000};
    nanosleep(&ts, NULL);
}

/* Milliseconds on the monotonic clock (deadlines kept in ms). */
static inline uint64_t tn_now_ms(void) { return tn_now_ns() / 1000000u; }

#endif
