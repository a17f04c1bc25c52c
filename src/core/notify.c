#include "core/notify.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint32_t tn_notify_prepare(tn_notify *n)
{
    atomic_fetch_add_explicit(&n->sleepers, 1, memory_order_seq_cst);
    return atomic_load_explicit(&n->seq, memory_order_seq_cst);
}

void tn_notify_cancel(tn_notify *n) { atomic_fetch_sub_explicit(&n->sleepers, 1, memory_order_seq_cst); }

void tn_notify_wait(tn_notify *n, uint32_t ticket, uint64_t timeout_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000ull),
                          .tv_nsec = (long)(timeout_ns % 1000000000ull)};
    syscall(SYS_futex, &n->seq, FUTEX_WAIT_PRIVATE, ticket, &ts, NULL, 0);
    atomic_fetch_sub_explicit(&n->sleepers, 1, memory_order_seq_cst);
}

/* Why the threshold wake-up loses nothing (every access seq_cst). A sleeper announces
 * itself (sleepers, ticket), publishes its target, then re-reads the value before it
 * sleeps on the ticket.
 * - If the waker read wake_at before the sleeper published, the sleeper's re-read comes
 *   after the waker's update of the value and sees it.
 * - A waker that decides to wake resets wake_at to UINT64_MAX before it bumps the ticket.
 *   A sleeper whose publication (even one that changed nothing because a lower target
 *   was there) preceded the reset took its ticket before the bump, so its futex wait
 *   returns at once; it then publishes again.
 * - Every sleeper is woken, not one, and each publishes its own target again. */
void tn_notify_at_publish(tn_notify_at *t, uint64_t target)
{
    uint64_t cur = atomic_load_explicit(&t->wake_at, memory_order_seq_cst);
    while (target < cur && !atomic_compare_exchange_weak_explicit(&t->wake_at, &cur, target,
                                                                  memory_order_seq_cst,
                                                                  memory_order_seq_cst)) {
    }
}

void tn_notify_at_reached(tn_notify_at *t, uint64_t value)
{
    if (value < atomic_load_explicit(&t->wake_at, memory_order_seq_cst)) return;
    atomic_store_explicit(&t->wake_at, UINT64_MAX, memory_order_seq_cst);
    tn_notify_wake(&t->n);
}

void tn_notify_wake(tn_notify *n)
{
    /* The condition was made true before this call; a sleeper that announced itself
     * after our load of `sleepers` re-checks the condition and does not sleep. */
    if (atomic_load_explicit(&n->sleepers, memory_order_seq_cst) == 0) return;
    atomic_fetch_add_explicit(&n->seq, 1, memory_order_seq_cst);
    syscall(SYS_futex, &n->seq, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
}
