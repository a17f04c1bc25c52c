/* A wake-up primitive for one sleeper and many wakers, on a Linux futex. Wakers pay one
 * atomic load when nobody sleeps. The sleeper announces itself, re-checks its condition,
 * then sleeps with a timeout, so a lost wake-up costs at most the timeout. */
#ifndef TENDRIL_CORE_NOTIFY_H
#define TENDRIL_CORE_NOTIFY_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct tn_notify {
    _Atomic uint32_t seq;
    _Atomic uint32_t sleepers;
} tn_notify;

static inline void tn_notify_init(tn_notify *n)
{
    atomic_init(&n->seq, 0);
    atomic_init(&n->sleepers, 0);
}

/* Sleeper: take a ticket, announce, re-check the condition, then wait on the ticket. */
uint32_t tn_notify_prepare(tn_notify *n);
void tn_notify_wait(tn_notify *n, uint32_t ticket, uint64_t timeout_ns);
void tn_notify_cancel(tn_notify *n);
/* Waker: cheap when nobody sleeps. */
void tn_notify_wake(tn_notify *n);

/* Threshold wake-up, for a value that waiters wait to reach (operations completed,
 * immediates available). A sleeper publishes the value it waits for; wake_at holds the
 * lowest of them, and a waker makes the futex call only when its new value reaches it.
 * Waiting for the last of 1000 completions thus costs the waker one wake-up, not 1000.
 * notify.c argues why none is lost. */
typedef struct tn_notify_at {
    tn_notify n;
    _Atomic uint64_t wake_at; /* lowest value a sleeper waits for; UINT64_MAX: none */
} tn_notify_at;

static inline void tn_notify_at_init(tn_notify_at *t)
{
    tn_notify_init(&t->n);
    atomic_init(&t->wake_at, UINT64_MAX);
}
/* Sleeper: after tn_notify_prepare(&t->n), before re-reading the value. */
void tn_notify_at_publish(tn_notify_at *t, uint64_t target);
/* Waker: after the value became `value`. */
void tn_notify_at_reached(tn_notify_at *t, uint64_t value);

#endif
