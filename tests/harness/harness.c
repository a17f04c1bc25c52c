#include "harness.h"

#include <stdlib.h>

const char *th_provider(void)
{
    const char *p = getenv("TENDRIL_TEST_PROVIDER");
    return (p && *p) ? p : "tcp";
}

void th_config(te_config *cfg) { app_config(cfg, th_provider()); }

int th_spawn(th_proc *p, const char *role, const char *arg)
{
    const char *const args[] = {"--child", role, arg ? arg : "", NULL};
    return app_spawn_self(p, args);
}

int th_ask(th_proc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = app_vsend(p, fmt, ap);
    va_end(ap);
    if (r) return r;
    return app_recv(p, reply, cap, timeout_ms);
}

void th_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t start)
{
    for (size_t k = 0; k < len; k++) buf[k] = th_pattern(seed, start + k);
}

uint64_t th_hash(const uint8_t *buf, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < len; k++) h = (h ^ buf[k]) * 1099511628211ull;
    return h;
}
