#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "tendril/te.h"

static _Thread_local char last_error[512];

int tn_err(int code, const char *fmt, ...)
{
    /* Format into a scratch buffer first: callers often pass te_last_error() itself as
     * an argument, to wrap the message of a lower layer, and the buffers must not overlap. */
    char tmp[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(last_error, tmp, sizeof tmp);
    return code;
}

void tn_err_clear(void) { last_error[0] = '\0'; }

const char *te_last_error(void) { return last_error; }

const char *te_strerror(int err)
{
    switch (err) {
    case 0: return "success";
    case -EINVAL: return "invalid argument";
    case -ENOMEM: return "out of memory";
    case -ETIMEDOUT: return "timed out";
    case -ECANCELED: return "operation canceled (engine stopped, or the transport canceled it: te_last_error / the completion message says which)";
    case -ECONNRESET: return "connection reset by peer";
    case -ECONNREFUSED: return "connection refused by peer";
    case -ENOTCONN: return "not connected to the peer (connection lost)";
    case -EPIPE: return "connection to the peer broken";
    case -ECONNABORTED: return "connection to the peer aborted";
    case -EHOSTUNREACH: return "peer unreachable";
    case -ESHUTDOWN: return "engine is stopped";
    case -EBADMSG: return "malformed encoded data";
    case -ENOSPC: return "buffer too small";
    case -ERANGE: return "offset or length outside the registered region";
    case -ENODEV: return "no such device or NIC";
    case -ENOENT: return "no such entry";
    case -EBUSY: return "resource busy (operations in flight)";
    case -EPERM: return "operation not permitted on this memory region";
    case -EIO: return "transport error";
    case -ENOSYS: return "not supported by this build or provider";
    case -EOPNOTSUPP: return "operation not supported by this provider";
    case -EMSGSIZE: return "message too long";
    case -EAGAIN: return "resource temporarily unavailable";
    case -EDEADLK: return "would deadlock (called from an engine callback)";
    default: break;
    }
    if (err < 0) {
        /* strerror() is not thread-safe; name the rest by number. */
        static _Thread_local char buf[64];
        snprintf(buf, sizeof buf, "error %d (errno %d)", err, -err);
        return buf;
    }
    return "unknown status (positive)";
}
