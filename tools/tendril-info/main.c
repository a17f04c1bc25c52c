/* tendril-info: what Tendril will do on this machine, before running anything.
 *
 * Three sections, all by default: the configuration (every TENDRIL_* variable the
 * library reads, its value here and where it came from, te_env_vars()), the libfabric
 * providers and their NICs (fi_getinfo, RDM endpoints with RMA, as the engine asks for
 * them), and the engine an application would get (provider, groups, NICs, address), by
 * creating one. Creating the engine is also what checks the variables: a malformed value
 * or an override of --provider is reported on stderr the way an application sees it. */
#include <rdma/fabric.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tendril/te.h"

static const cli_tool T = {
    "tendril-info",
    "usage: tendril-info [--config] [--providers] [--engine] [--provider P]\n"
    "Prints the effective configuration (every TENDRIL_* variable: value, source,\n"
    "accepted values), the libfabric providers and NICs present, and the engine an\n"
    "application would get here. With no section option, prints all three.\n"
    "  --config        only the TENDRIL_* variables (docs/configuration.md)\n"
    "  --providers     only the libfabric providers and their NICs\n"
    "  --engine        only the engine: creates one and prints its provider, groups, NICs\n"
    "  --provider P    the provider the engine is asked for (default auto), as an\n"
    "                  application's te_config.provider\n"
    "  --help, --version\n"
    "Exit status: 0, 1 when the engine cannot be created (the reason on stderr), 2 for a\n"
    "bad option.\n"};

static void print_config(void)
{
    size_t n = 0;
    const te_env_var *v = te_env_vars(&n);
    printf("configuration (environment; docs/configuration.md):\n");
    for (size_t k = 0; k < n; k++) {
        const char *s = getenv(v[k].name);
        bool set = s && *s;
        printf("  %-34s %-22s %s\n", v[k].name, set ? s : v[k].dflt,
               set ? "(environment)" : "(default)");
        printf("  %-34s accepted: %s; %s\n", "", v[k].values, v[k].what);
    }
}

/* One line per (provider, domain) pair of the RDM endpoints with RMA. */
static void print_providers(void)
{
    printf("libfabric providers (RDM endpoints with RMA; libfabric %u.%u):\n",
           FI_MAJOR(fi_version()), FI_MINOR(fi_version()));
    struct fi_info *hints = fi_allocinfo(), *list = NULL;
    if (!hints) return;
    hints->caps = FI_MSG | FI_RMA;
    hints->ep_attr->type = FI_EP_RDM;
    int r = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &list);
    fi_freeinfo(hints);
    if (r) {
        printf("  none: fi_getinfo: %s\n", fi_strerror(-r));
        return;
    }
    char seen[64][160];
    int n_seen = 0;
    for (struct fi_info *i = list; i; i = i->next) {
        char key[160];
        snprintf(key, sizeof key, "%-14s %s", i->fabric_attr->prov_name, i->domain_attr->name);
        bool dup = false;
        for (int k = 0; k < n_seen && !dup; k++) dup = !strcmp(seen[k], key);
        if (dup) continue;
        if (n_seen < 64) snprintf(seen[n_seen++], sizeof seen[0], "%s", key);
        printf("  %s\n", key);
    }
    fi_freeinfo(list);
}

static int print_engine(const char *provider)
{
    te_config cfg;
    te_config_init(&cfg);
    if (provider) cfg.provider = provider;
    printf("engine (te_engine_create, provider %s):\n", cfg.provider);
    fflush(stdout);
    te_engine *e;
    int r = te_engine_create(&cfg, &e);
    if (r) {
        fprintf(stderr, "tendril-info: no engine: %s (%s)\n", te_strerror(r), te_last_error());
        return 1;
    }
    printf("  provider: %s\n", te_provider_name(e));
    for (uint32_t g = 0; g < te_num_groups(e); g++)
        for (uint32_t k = 0; k < te_group_nics(e, g); k++)
            printf("  group %u NIC %u: %s\n", g, k, te_nic_name(e, g, k));
    te_addr a;
    char text[TE_ADDR_TEXT_MAX];
    if (te_main_address(e, &a) == 0 && te_addr_format(&a, text, sizeof text) == 0)
        printf("  main address: %s\n", text);
    te_engine_destroy(e);
    return 0;
}

int main(int argc, char **argv)
{
    cli_common(&T, argc, argv);
    bool config = false, providers = false, engine = false;
    const char *provider = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--config")) config = true;
        else if (!strcmp(a, "--providers")) providers = true;
        else if (!strcmp(a, "--engine")) engine = true;
        else if (!strcmp(a, "--provider")) provider = cli_value(&T, argc, argv, &i);
        else cli_fail(&T, "unknown option '%s'", a);
    }
    if (!config && !providers && !engine) config = providers = engine = true;
    printf("tendril %s\n", te_version());
    if (config) print_config();
    if (providers) print_providers();
    int rc = engine ? print_engine(provider) : 0;
    fflush(stdout);
    return rc;
}
