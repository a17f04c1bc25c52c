/* Completion counters: bumped by workers directly, waited on by anyone. */
#include <stdio.h>
#include <sched.h>
#include <stdlib.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/notify.h"
#include "core/wait.h"
#include "te/engine_internal.h"

typedef struct counter_wait {
    te_counter *c;
    uint64_t target;
} counter_wait;

/* Waking is target-aware (tn_notify_at): a worker makes the futex call only when the
 * count reaches the lowest target a sleeping waiter published.
 *
 * A waiter drives the progress of the group its operations run on (worker.c), so it
 * polls their completions itself instead of sleeping until a worker wakes it. The
 * counter is not tied to an engine, so the group pointer is used only while operations
 * of that group are pending, and the engine cannot be freed under a waiter that read it:
 * - `group` is the group of the first submission; a submission from another group makes
 *   the counter `mixed` for good (its waiters then only sleep).
 * - A waiter announces itself in `peeking`, then reads `pending`; only if operations are
 *   pending does it read `group` and enter the engine (which fails once it stops).
 * - The bump that takes `pending` to 0 waits until no waiter is peeking. An engine
 *   completes every operation before it is freed, so a waiter either entered the engine
 *   before that bump returned (stop then waits for it to leave) or sees pending == 0. */
struct te_counter {
    _Atomic uint64_t done;
    _Atomic uint64_t errors;
    _Atomic uint32_t bumping; /* workers between their increment and their wake-up */
    tn_notify_at wake;
    _Atomic(eng_group *) group;
    _Atomic bool mixed;
    _Atomic uint64_t pending;  /* submitted with this counter, not yet bumped */
    _Atomic uint32_t peeking;  /* waiters between reading `pending` and entering the engine */
};

int te_counter_create(te_counter **out)
{
    tn_err_clear();
    if (!out) return tn_err(-EINVAL, "te_counter_create: out is NULL");
    te_counter *c = calloc(1, sizeof *c);
    if (!c) return tn_err(-ENOMEM, "te_counter_create: out of memory");
    tn_notify_at_init(&c->wake);
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

void counter_bump_n(te_counter *c, uint32_t n, uint32_t failed)
{
    atomic_fetch_add_explicit(&c->bumping, 1, memory_order_seq_cst);
    /* errors first, so a waiter that sees `done` also sees the error it includes */
    if (failed) atomic_fetch_add_explicit(&c->errors, failed, memory_order_release);
    uint64_t now = atomic_fetch_add_explicit(&c->done, n, memory_order_seq_cst) + n;
    tn_notify_at_reached(&c->wake, now);
    if (atomic_fetch_sub_explicit(&c->pending, n, memory_order_seq_cst) == n)
        while (atomic_load_explicit(&c->peeking, memory_order_seq_cst)) sched_yield();
    atomic_fetch_sub_explicit(&c->bumping, 1, memory_order_release);
}

void counter_bump(te_counter *c, bool failed)
{
    counter_bump_n(c, 1, failed ? 1 : 0);
}

void counter_note_submit(te_counter *c, eng_group *g)
{
    eng_group *cur = atomic_load_explicit(&c->group, memory_order_acquire);
    if (cur != g && !atomic_load_explicit(&c->mixed, memory_order_relaxed)) {
        if (cur || !atomic_compare_exchange_strong(&c->group, &cur, g))
            if (cur != g) atomic_store(&c->mixed, true);
    }
    atomic_fetch_add_explicit(&c->pending, 1, memory_order_seq_cst);
}

/* One progress step on the group of c's pending operations: 1 if anything moved, 0 if
 * not (or another thread holds the lock), -1 if there is nothing this waiter can drive.
 * `last`: no step; the waiter stops driving, so the group's worker resumes now. */
static int counter_drive(te_counter *c, bool last)
{
    if (atomic_load_explicit(&c->mixed, memory_order_relaxed)) return -1;
    atomic_fetch_add_explicit(&c->peeking, 1, memory_order_seq_cst);
    eng_group *g = NULL;
    if (atomic_load_explicit(&c->pending, memory_order_seq_cst) > 0)
        g = atomic_load_explicit(&c->group, memory_order_acquire);
    /* (busy poll: the worker polls anyway, as in engine_drive) */
    bool entered = g && g->e->wait_drive && !g->e->busy_poll && engine_enter(g->e) == 0;
    atomic_fetch_sub_explicit(&c->peeking, 1, memory_order_seq_cst);
    if (!entered) return -1;
    int r = 0;
    if (last) group_resume_worker(g);
    else r = group_try_progress(g, STEP_WAIT);
    engine_leave(g->e);
    return r > 0 && (r & PROGRESS_MOVED) ? 1 : 0;
}

static int counter_drive_fn(void *arg, bool last)
{
    return counter_drive(((struct counter_wait *)arg)->c, last);
}


/* Awake turns: the count alone. No threshold is published: it is for the bump that must
 * wake a sleeper, and would cost the waiter a compare-exchange and the bumper a reset
 * per count. */
static bool counter_at(void *arg)
{
    counter_wait *w = arg;
    return atomic_load_explicit(&w->c->done, memory_order_seq_cst) >= w->target;
}

/* Publishes the target, then checks: tn_wait_until calls this after it announced itself
 * as a sleeper, the order tn_notify_at needs. */
static bool counter_reached(void *arg)
{
    counter_wait *w = arg;
    tn_notify_at_publish(&w->c->wake, w->target);
    return counter_at(arg);
}

int te_counter_wait(te_counter *c, uint64_t target, int timeout_ms)
{
    tn_err_clear();
    if (!c) return tn_err(-EINVAL, "te_counter_wait: counter is NULL");
    /* already there: no clock read for a deadline (a syscall where the clock source has
     * no vDSO path) */
    if (atomic_load_explicit(&c->done, memory_order_acquire) >= target) return 0;
    counter_wait cw = {c, target};
    tn_wait_spec w = {.notify = &c->wake.n, .done = counter_reached, .check = counter_at, .drive = counter_drive_fn,
                      .arg = &cw, .deadline_ns = tn_deadline_ms(timeout_ms)};
    if (tn_wait_until(&w) == 0) return 0;
    return tn_err(-ETIMEDOUT, "te_counter_wait: %llu of %llu operations done after %d ms",
                  (unsigned long long)atomic_load(&c->done), (unsigned long long)target, timeout_ms);
}
