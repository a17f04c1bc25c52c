/* Completion counters: bumped by workers directly, waited on by anyone. */
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/notify.h"
#include "core/wait.h"
#include "te/engine_internal.h"


/* Waking is target-aware (te_notify_at): a worker makes the futex call only when the
 * count reaches the lowest target a sleeping waiter published. */
struct te_counter {
    _Atomic uint64_t done;
    _Atomic uint64_t errors;
    _Atomic uint32_t bumping; /* workers between their increment and their wake-up */
    te_notify_at wake;
};

int te_counter_create(te_counter **out)
{
    te_err_clear();
    if (!out) return te_err(-EINVAL, "te_counter_create: out is NULL");
    te_counter *c = calloc(1, sizeof *c);
    if (!c) return te_err(-ENOMEM, "te_counter_create: out of memory");
    te_notify_at_init(&c->wake);
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
    te_notify_at_reached(&c->wake, now);
    atomic_fetch_sub_explicit(&c->bumping, 1, memory_order_release);
}

typedef struct counter_wait {
    te_counter *c;
    uint64_t target;
} counter_wait;

/* Publishes the target, then checks: te_wait_until calls this after it announced itself
 * as a sleeper, the order te_notify_at needs. */
static bool counter_reached(void *arg)
{
    counter_wait *w = arg;
    te_notify_at_publish(&w->c->wake, w->target);
    return atomic_load_explicit(&w->c->done, memory_order_seq_cst) >= w->target;
}

int te_counter_wait(te_counter *c, uint64_t target, int timeout_ms)
{
    te_err_clear();
    if (!c) return te_err(-EINVAL, "te_counter_wait: counter is NULL");
    counter_wait cw = {c, target};
    te_wait_spec w = {.notify = &c->wake.n, .done = counter_reached, .arg = &cw,
                      .deadline_ns = te_deadline_ms(timeout_ms)};
    if (te_wait_until(&w) == 0) return 0;
    return te_err(-ETIMEDOUT, "te_counter_wait: %llu of %llu operations done after %d ms",
                  (unsigned long long)atomic_load(&c->done), (unsigned long long)target, timeout_ms);
}
