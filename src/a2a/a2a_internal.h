/* Internal helpers of the all-to-all host side. */
#ifndef TENDRIL_A2A_INTERNAL_H
#define TENDRIL_A2A_INTERNAL_H

/* Records a message as this thread's last error and returns `code` (a negative errno). */
int a2a_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void a2a_err_clear(void);

#endif
