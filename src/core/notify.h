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

/* Threshold wake-up, for a value that waiters wait to reach (operations completed,
 * immediates available). A sleeper publishes the value it waits for; wake_at holds the
 * lowest of them, and a waker makes the futex call only when its new value reaches it.
 * Waiting for the last of 1000 completions thus costs the waker one wake-up, not 1000.
 * notify.c argues why none is lost. */
typedef struct te_notify_at {
    te_notify n;
    _Atomic uint64_t wake_at; /* lowest value a sleeper waits for; UINT64_MAX: none */
} te_notify_at;

static inline void te_notify_at_init(te_notify_at *t)
{
    te_notify_init(&t->n);
    atomic_init(&t->wake_at, UINT64_MAX);
}
/* Sleeper: after te_notify_prepare(&t->n), before re-reading the value. */
void te_notify_at_publish(te_notify_at *t, uint64_t target);
/* Waker: after the value became `value`. */
void te_notify_at_reached(te_notify_at *t, uint64_t value);

#endif
