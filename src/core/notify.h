/* A wake-up primitive for one sleeper and many wakers, on a Linux futex. Wakers pay one
 * atomic load when nobody sleeps. The sleeper announces itself, re-checks its condition,
 * then sleeps with a timeout, so a lost wake-up costs at most the timeout. */
#ifndef TENDRIL_CORE_NOTIFY_H
#define TENDRIL_CORE_NOTIFY_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct te_notify {
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
} te_notify;

static inline void te_notify_init(te_notify *n)
{
    atomic_init(&n->seq, 0);
    atomic_init(&n->sleepers, 0);
}

/* Sleeper: take a ticket, announce, re-check the condition, then wait on the ticket. */
uint32_t te_notify_prepare(te_notify *n);
void te_notify_wait(te_notify *n, uint32_t ticket, uint64_t timeout_ns);
void te_notify_cancel(te_notify *n);
/* Waker: cheap when nobody sleeps. */
void te_notify_wake(te_notify *n);

#endif
