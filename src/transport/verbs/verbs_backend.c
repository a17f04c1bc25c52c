/* The ibverbs backend's descriptor: it claims the provider string "verbs", and for
 * "auto" it is chosen after efa and before tcp, only where an RDMA device is present
 * (elsewhere auto is exactly the libfabric choice). Compiled in every build: without
 * libibverbs it only explains why "verbs" is unavailable. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "transport/verbs/verbs.h"

static bool verbs_claims(const char *want) { return !strcmp(want, "verbs"); }

#ifdef TENDRIL_HAVE_VERBS
static int verbs_resolve(const char *want, char *out, size_t cap)
{
    (void)want;
    snprintf(out, cap, "verbs");
    return 0;
}

static int verbs_list_nics(const char *provider, char names[][64], int max)
{
    (void)provider;
    int n = tp_verbs_list_devices(names, max);
    if (n == 0)
        return tn_err(-ENODEV, "provider verbs: no RDMA device (ibv_get_device_list found "
                               "none; name one, e.g. mlx5_0, in te_group_config.nics)");
    return n > max ? max : n;
}

static int probe_verbs(char *out, size_t cap)
{
    if (tp_verbs_list_devices(NULL, 0) <= 0) return tn_err(-ENODEV, "verbs: no RDMA device");
    return verbs_resolve("verbs", out, cap);
}

static const tp_auto_choice verbs_auto[] = {{20, "verbs", probe_verbs}};

const tp_backend tp_verbs_backend = {
    .name = "ibverbs",
    .ops = &tp_verbs_ops,
    .claims = verbs_claims,
    .resolve = verbs_resolve,
    .list_nics = verbs_list_nics,
    .auto_choices = verbs_auto,
    .n_auto_choices = 1,
};
#else
static int verbs_unavailable(const char *want, char *out, size_t cap)
{
    (void)want;
    (void)out;
    (void)cap;
    return tn_err(-ENODEV, "provider verbs: this build of tendril has no ibverbs support "
                           "(libibverbs headers were not found at build time)");
}

const tp_backend tp_verbs_backend = {
    .name = "ibverbs",
    .claims = verbs_claims,
    .resolve = verbs_unavailable,
};
#endif
