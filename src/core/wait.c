#include "core/wait.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "core/env.h"
#include "core/clock.h"

#define SLEEP_SLICE_NS 10000000ull /* re-check at least this often while asleep */
#define DRIVE_IDLE_NS 1000000ull    /* keep driving this long after the last movement */

static uint64_t spin_ns;
static pthread_once_t spin_once = PTHREAD_ONCE_INIT;

/* A waiter spins 50 us before sleeping only when the process has CPUs to spare (4 or
 * more in its affinity set): on two CPUs the spinning waiter takes the core the worker
 * and the peer need, which measured slower (fabric-debug, docs/history/performance-log.md).
 * TENDRIL_WAIT_SPIN_NS overrides. */
static void pick_spin(void)
{
    cpu_set_t set;
    int cpus = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
    spin_ns = tn_env_u64_warn("TENDRIL_WAIT_SPIN_NS", 0, 10000000000ull, cpus >= 4 ? 50000ull : 0);
}

int tn_wait_until(const tn_wait_spec *w)
{
    pthread_once(&spin_once, pick_spin);
    uint64_t spin_until = 0, drive_until = 0;
    bool moved_lately = true, driving = w->drive != NULL;
    bool (*check)(void *) = w->check ? w->check : w->done;
    for (unsigned turn = 0;; turn++) {
        if (check(w->arg)) return 0;
        if (w->give_up && w->give_up(w->arg)) return -ESHUTDOWN;
        int moved = driving ? w->drive(w->arg, false) : -1;
        if (moved > 0) {
            if (check(w->arg)) return 0;
            moved_lately = true;
        }
        /* While driving, the clock (as costly as a post on a VM) is read every 16th turn. */
        if (moved >= 0 && (turn & 15)) continue;
        uint64_t now = tn_now_ns();
        if (now >= w->deadline_ns) return -ETIMEDOUT;
        if (turn == 0) spin_until = now + spin_ns;
        if (moved >= 0) {
            if (moved_lately) drive_until = now + DRIVE_IDLE_NS;
            moved_lately = false;
            if (now < drive_until) {
                if ((turn & 63) == 0) sched_yield(); /* others may need this CPU */
                continue;
            }
            /* Nothing moved for a while: stop driving (a wake-up, or a slice that ends
             * with the count still short, starts it again). */
            w->drive(w->arg, true);
            driving = false;
        }
        if (now < spin_until) continue;
        uint32_t t = tn_notify_prepare(w->notify);
        if (w->done(w->arg)) {
            tn_notify_cancel(w->notify);
            return 0;
        }
        uint64_t left = w->deadline_ns - now;
        tn_notify_wait(w->notify, t, left < SLEEP_SLICE_NS ? left : SLEEP_SLICE_NS);
        if (w->drive && !driving) {
            driving = true;
            moved_lately = true;
            turn = UINT_MAX; /* the next turn is 0: it reads the clock */
        }
    }
}
