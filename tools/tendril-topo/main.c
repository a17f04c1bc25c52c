/* tendril-topo: prints which NICs and CPUs Tendril associates with each GPU. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <tendril/te.h>
#include <tendril/te_topo.h>

#include "cli.h"

static const cli_tool T = {
    "tendril-topo",
    "usage: tendril-topo [--sysfs ROOT] [--cpus LIST|all] [--cuda-visible LIST]\n"
    "                    [--no-net] [--keep-rdma-netdevs] [--json] [--help] [--version]\n"
    "\n"
    "Detects GPUs, NICs, NUMA nodes and CPUs from sysfs and prints the groups\n"
    "Tendril would use: one per GPU, with the NICs nearest to it on the PCI tree and\n"
    "its share of its NUMA node's CPUs.\n"
    "\n"
    "  --sysfs ROOT          read ROOT instead of /sys (a fixture tree, for example)\n"
    "  --cpus LIST|all       CPU set to honour (cpulist such as 0-7,16); default: this\n"
    "                        process's affinity for /sys, all CPUs for another ROOT\n"
    "  --cuda-visible LIST   use LIST instead of $CUDA_VISIBLE_DEVICES\n"
    "  --no-net              leave out ordinary (non-RDMA) network interfaces\n"
    "  --keep-rdma-netdevs   also list interfaces that belong to an RDMA device\n"
    "  --json                print one JSON object instead of tables\n"
    "\n"
    "NIC names are libfabric domain names: the RDMA device name (mlx5_0, rdmap16s27)\n"
    "for the verbs and efa providers, the interface name (eth0) for tcp.\n"};

int main(int argc, char **argv)
{
    te_topo_options opt;
    te_topo_options_init(&opt);
    int format = TE_TOPO_FORMAT_TEXT;
    bool cpus_given = false;
    cli_common(&T, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--json") == 0) {
            format = TE_TOPO_FORMAT_JSON;
        } else if (strcmp(a, "--no-net") == 0) {
            opt.include_net_nics = false;
        } else if (strcmp(a, "--keep-rdma-netdevs") == 0) {
            opt.keep_rdma_netdevs = true;
        } else if (strcmp(a, "--sysfs") == 0) {
            opt.sysfs_root = cli_value(&T, argc, argv, &i);
        } else if (strcmp(a, "--cpus") == 0) {
            opt.cpuset = cli_value(&T, argc, argv, &i);
            cpus_given = true;
        } else if (strcmp(a, "--cuda-visible") == 0) {
            opt.cuda_visible_devices = cli_value(&T, argc, argv, &i);
        } else {
            cli_fail(&T, "unknown option '%s'", a);
        }
    }
    /* Another machine's tree: this process's affinity says nothing about its CPUs. */
    if (!cpus_given && opt.sysfs_root && strcmp(opt.sysfs_root, "/sys") != 0)
        opt.cpuset = "all";

    te_topo *topo;
    int rc = te_topo_detect(&opt, &topo);
    if (rc) {
        fprintf(stderr, "tendril-topo: %s: %s\n", te_strerror(rc), te_last_error());
        return 1;
    }
    if (format == TE_TOPO_FORMAT_TEXT)
        printf("sysfs: %s\n", opt.sysfs_root ? opt.sysfs_root : "/sys");
    rc = te_topo_format(topo, stdout, format);
    te_topo_free(topo);
    if (rc || fflush(stdout) != 0) {
        fprintf(stderr, "tendril-topo: writing the output failed\n");
        return 1;
    }
    return 0;
}
