/* Error reporting: negative errno codes plus a per-thread message (te_last_error). */
#ifndef TENDRIL_CORE_ERROR_H
#define TENDRIL_CORE_ERROR_H

#include <errno.h>

/* Records a formatted message as this thread's last error and returns `code` (a
 * negative errno), so call sites read: return tn_err(-EINVAL, "len: %zu > ...", len); */
int tn_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Clears this thread's last error (every public entry point calls it first). */
void tn_err_clear(void);

#endif
