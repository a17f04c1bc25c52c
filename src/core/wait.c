#include "core/wait.h"

#include <errno.h>

#include "core/clock.h"

#define SPIN_NS 50000ull          /* spin this long before sleeping */
#define SLEEP_SLICE_NS 10000000ull /* re-check at least this often while asleep */

int te_wait_until(const te_wait_spec *w)
{
    uint64_t spin_until = 0;
    for (bool first = true;; first = false) {
        if (w->done(w->arg)) return 0;
        if (w->give_up && w->give_up(w->arg)) return -ESHUTDOWN;
        uint64_t now = te_now_ns();
        if (now >= w->deadline_ns) return -ETIMEDOUT;
        if (first) spin_until = now + SPIN_NS;
        if (now < spin_until) continue;
        uint32_t t = te_notify_prepare(w->notify);
        if (w->done(w->arg)) {
            te_notify_cancel(w->notify);
            return 0;
        }
        uint64_t left = w->deadline_ns - now;
        te_notify_wait(w->notify, t, left < SLEEP_SLICE_NS ? left : SLEEP_SLICE_NS);
    }
}
