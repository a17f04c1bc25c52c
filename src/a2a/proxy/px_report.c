/* Errors of the proxy: the first one is kept (a2a_px_error) and fails the proxy; each is
 * logged and handed to on_error, one call at a time, within a budget, so that a peer
 * that dies with hundreds of writes in flight does not flood the application. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "core/log.h"
#include "px_internal.h"

const char *const px_phase_name[A2A_PX_N] = {"DSP", "WGT", "CMB"};

void px_fail(struct a2a_px *px, int err, const char *fmt, ...)
{
    char msg[PX_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (atomic_load(&px->closing)) return;
    if (err >= 0) err = -EIO; /* a failure always has a code */
    /* The first error claims err_msg, writes it, then publishes the code (release), so a
     * reader that sees the code sees the whole message without a lock. */
    if (!atomic_exchange(&px->err_claimed, true)) {
        snprintf(px->err_msg, sizeof px->err_msg, "%s", msg);
        atomic_store_explicit(&px->err, err, memory_order_release);
    }
    pthread_mutex_lock(&px->err_lock);
    bool report = px->reports < A2A_PX_MAX_REPORTS;
    px->reports += report;
    if (report) {
        TN_LOGE("%s", msg);
        if (px->reports == A2A_PX_MAX_REPORTS)
            TN_LOGE("a2a proxy rank %d: %d errors reported, further ones are not", px->rank,
                    A2A_PX_MAX_REPORTS);
        if (px->on_error) px->on_error(px->err_arg, err, msg);
    }
    pthread_mutex_unlock(&px->err_lock);
}
