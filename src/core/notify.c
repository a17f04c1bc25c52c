#include "core/notify.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

uint32_t te_notify_prepare(te_notify *n)
{
    atomic_fetch_add_explicit(&n->sleepers, 1, memory_order_seq_cst);
    return atomic_load_explicit(&n->seq, memory_order_seq_cst);
}

void te_notify_cancel(te_notify *n) { atomic_fetch_sub_explicit(&n->sleepers, 1, memory_order_seq_cst); }

void te_notify_wait(te_notify *n, uint32_t ticket, uint64_t timeout_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(timeout_ns / 1000000000ull),
                          .tv_nsec = (long)(timeout_ns % 1000000000ull)};
    syscall(SYS_futex, &n->seq, FUTEX_WAIT_PRIVATE, ticket, &ts, NULL, 0);
    atomic_fetch_sub_explicit(&n->sleepers, 1, memory_order_seq_cst);
}

void te_notify_wake(te_notify *n)
{
    /* The condition was made true before this call; a sleeper that announced itself
     * after our load of `sleepers` re-checks the condition and does not sleep. */
    if (atomic_load_explicit(&n->sleepers, memory_order_seq_cst) == 0) return;
    atomic_fetch_add_explicit(&n->seq, 1, memory_order_seq_cst);
    syscall(SYS_futex, &n->seq, FUTEX_WAKE_PRIVATE, 1 << 30, NULL, NULL, 0);
}
