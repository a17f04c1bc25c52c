/* Completion counters: bumped by workers directly, waited on by anyone. */
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/notify.h"
#include "core/wait.h"
#include "te/engine_internal.h"


/* Waking is target-aware: a sleeping waiter publishes its target in wake_at (the lowest
 * target of all sleepers), and a worker makes the futex call only when the count reaches
 * it. A waiter for the last of 1000 operations therefore costs the worker one wake-up,
 * not 1000 system calls on its completion path.
 *
 * Why no wake-up is lost (all accesses seq_cst): a sleeper announces itself (sleepers,
 * ticket), publishes its target, then re-reads done before it sleeps on the ticket.
 * - If the worker read wake_at before the sleeper published, the sleeper's re-read comes
 *   after the worker's increment and sees it.
 * - The worker that decides to wake resets wake_at to UINT64_MAX before it bumps the
 *   ticket. A target published before the reset is wiped, but that sleeper's ticket was
 *   taken before the bump, so its futex wait returns at once; it then re-publishes.
 * - Every sleeper is woken (not one), and each re-publishes its own target. */
struct te_counter {
    _Atomic uint64_t done;
    _Atomic uint64_t errors;
    _Atomic uint64_t wake_at; /* lowest target of the sleepers; UINT64_MAX: none */
    _Atomic uint32_t bumping; /* workers between their increment and their wake-up */
    te_notify wake;
};

int te_counter_create(te_counter **out)
{
    te_err_clear();
    if (!out) return te_err(-EINVAL, "te_counter_create: out is NULL");
    te_counter *c = calloc(1, sizeof *c);
    if (!c) return te_err(-ENOMEM, "te_counter_create: out of memory");
    te_notify_init(&c->wake);
    atomic_init(&c->wake_at, UINT64_MAX);
    *out = c;
    return 0;
}

void te_counter_destroy(te_counter *c)
{
    if (!c) return;
    /* A waiter may see the final count while the worker that produced it is still
     * inside its wake-up call on this counter: let it leave first. */
    while (atomic_load_explicit(&c->bumping, memory_order_seq_cst)) sched_yield();
    free(c);
}

uint64_t te_counter_done(const te_counter *c)
{
    return c ? atomic_load(&((te_counter *)c)->done) : 0;
}

uint64_t te_counter_errors(const te_counter *c)
{
    return c ? atomic_load(&((te_counter *)c)->errors) : 0;
}

void te_counter_bump_internal(te_counter *c, bool failed)
{
    atomic_fetch_add_explicit(&c->bumping, 1, memory_order_seq_cst);
    /* errors first, so a waiter that sees `done` also sees the error it includes */
    if (failed) atomic_fetch_add_explicit(&c->errors, 1, memory_order_release);
    uint64_t now = atomic_fetch_add_explicit(&c->done, 1, memory_order_seq_cst) + 1;
    if (now >= atomic_load_explicit(&c->wake_at, memory_order_seq_cst)) {
        atomic_store_explicit(&c->wake_at, UINT64_MAX, memory_order_seq_cst);
        te_notify_wake(&c->wake);
    }
    atomic_fetch_sub_explicit(&c->bumping, 1, memory_order_release);
}

typedef struct counter_wait {
    te_counter *c;
    uint64_t target;
} counter_wait;

/* Publishes the target (lowering wake_at), then checks: te_wait_until calls this after
 * it announced itself as a sleeper, which is the order the argument above needs. */
static bool counter_reached(void *arg)
{
    counter_wait *w = arg;
    uint64_t cur = atomic_load_explicit(&w->c->wake_at, memory_order_seq_cst);
    while (w->target < cur &&
           !atomic_compare_exchange_weak_explicit(&w->c->wake_at, &cur, w->target,
                                                  memory_order_seq_cst, memory_order_seq_cst)) {
    }
    return atomic_load_explicit(&w->c->done, memory_order_seq_cst) >= w->target;
}

int te_counter_wait(te_counter *c, uint64_t target, int timeout_ms)
{
    te_err_clear();
    if (!c) return te_err(-EINVAL, "te_counter_wait: counter is NULL");
    counter_wait cw = {c, target};
    te_wait_spec w = {.notify = &c->wake, .done = counter_reached, .arg = &cw,
                      .deadline_ns = te_deadline_ms(timeout_ms)};
    if (te_wait_until(&w) == 0) return 0;
    return te_err(-ETIMEDOUT, "te_counter_wait: %llu of %llu operations done after %d ms",
                  (unsigned long long)atomic_load(&c->done), (unsigned long long)target, timeout_ms);
}
