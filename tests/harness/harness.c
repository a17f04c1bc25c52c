#include "harness.h"

#include <stdlib.h>
#include <string.h>

const char *th_provider(void)
{
    const char *p = getenv("TENDRIL_TEST_PROVIDER");
    return (p && *p) ? p : "tcp";
}

void th_config(te_config *cfg)
{
    te_config_init(cfg);
    cfg->provider = th_provider();
    cfg->n_groups = 1;
    cfg->groups[0].cuda_device = TE_DEVICE_HOST;
    cfg->groups[0].n_nics = 1;
    cfg->groups[0].worker_cpu = -1;
    if (strstr(cfg->provider, "tcp")) cfg->groups[0].nics[0] = "lo";
}
