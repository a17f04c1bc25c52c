/* PLACEHOLDER (see a2a_proxy.h): fails cleanly until the proxy piece lands. */
#include "a2a_proxy.h"

#include <errno.h>
#include <stddef.h>

#include "core/error.h"

int a2a_px_create(const a2a_px_config *cfg, a2a_px **out)
{
    (void)cfg;
    *out = NULL;
    return tn_err(-ENOSYS, "a2a proxy: not part of this build (placeholder)");
}
void a2a_px_destroy(a2a_px *px) { (void)px; }
uint64_t a2a_px_doorbell_device_ptr(const a2a_px *px, int phase)
{
    (void)px;
    (void)phase;
    return 0;
}
uint64_t a2a_px_flag_device_ptr(const a2a_px *px, int phase, int src)
{
    (void)px;
    (void)phase;
    (void)src;
    return 0;
}
