/*
 * Tendril topology detection: which NICs and CPUs belong with which GPU.
 *
 * Everything is read from sysfs (no CUDA, no libfabric, no ibverbs calls), so the same
 * code runs on a laptop, in CI against fake sysfs trees, and on GPU servers:
 *
 *   GPUs   <sysfs>/bus/pci/devices/<addr>/{class,vendor,device,numa_node}; class 0x0302xx
 *          or 0x0300xx (also 0x0380xx, 0x1200xx) with vendor 0x10de (NVIDIA) or 0x1002 (AMD).
 *   NICs   <sysfs>/class/infiniband/<name>  -> kind TE_TOPO_NIC_EFA (driver "efa" or vendor
 *          0x1d0f) or TE_TOPO_NIC_VERBS (ConnectX: vendor 0x15b3, or any other);
 *          <sysfs>/class/net/<ifname> whose device is (or sits under) a PCI function
 *          -> kind TE_TOPO_NIC_NET (no RDMA: only libfabric tcp can use it).
 *   CPUs   <sysfs>/devices/system/node/node<N>/cpulist, threads of one physical core from
 *          <sysfs>/devices/system/cpu/cpu<N>/topology/thread_siblings_list (or core_id +
 *          physical_package_id), intersected with the process's CPU set.
 *
 * Names and libfabric: a NIC's `name` is what te_group_config.nics[] wants. For the efa
 * and verbs providers the libfabric domain name is the RDMA device name ("rdmap16s27",
 * "mlx5_0"); for the tcp provider it is the network interface name ("eth0"). RDMA
 * devices also report the interface on the same PCI function, if any, in `netdev`.
 *
 * Grouping rule (docs/topology.md has the details and examples):
 *  - each device's PCI path is the realpath of <sysfs>/bus/pci/devices/<addr>;
 *  - a NIC joins the GPU(s) with which it shares the deepest common PCI bridge (below the
 *    root complex); NICs that share a bridge with several GPUs are split among them as
 *    evenly as possible, in PCI order, remainders going to the first GPUs (none dropped);
 *  - RDMA NICs are placed first; ordinary (net) NICs only go to GPUs left without an
 *    RDMA NIC;
 *  - a NIC that shares nothing below the root complex with any GPU goes, by NUMA node, to
 *    GPUs that got no NIC by PCI proximity; otherwise it stays unattached (group -1),
 *    like the management NIC of a DGX;
 *  - a device whose numa_node reads -1 takes the node of its nearest PCI ancestor that
 *    has one, else node 0 (else the lowest node present);
 *  - every GPU is placed, including GPUs hidden by CUDA_VISIBLE_DEVICES (their
 *    cuda_ordinal is -1), so that processes with different visible sets agree on which
 *    NICs each GPU owns;
 *  - the allowed CPUs of a NUMA node are ordered physical cores first (one thread per
 *    core), then the remaining sibling threads; the node's physical cores are split among
 *    its GPUs (PCI order) in equal contiguous slices, remainders to the first GPUs, and
 *    each GPU also gets the sibling threads of its own cores.
 *
 * Thread safety: every function may be called from any thread; a te_topo is immutable
 * after te_topo_detect returns.
 */
#ifndef TENDRIL_TE_TOPO_H
#define TENDRIL_TE_TOPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; what this header declares is its API. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define TE_TOPO_NAME_MAX 64 /* NIC / interface name buffer, NUL included */
#define TE_TOPO_PCI_MAX 20  /* "dddd:bb:dd.f" (domains may have 5+ hex digits), NUL incl. */

typedef enum te_topo_nic_kind {
    TE_TOPO_NIC_VERBS = 1, /* RDMA device driven through ibverbs (ConnectX, ...) */
    TE_TOPO_NIC_EFA = 2,   /* AWS Elastic Fabric Adapter (libfabric provider "efa") */
    TE_TOPO_NIC_NET = 3,   /* ordinary network interface: not RDMA, tcp only */
} te_topo_nic_kind;

typedef struct te_topo_options {
    size_t struct_size;     /* sizeof(te_topo_options) */
    const char *sysfs_root; /* NULL = "/sys"; tests point it at a fixture tree */
    /* Allowed CPUs as a Linux cpulist ("0-13,112-125"). NULL = the calling thread's
     * sched_getaffinity() set; "all" = no restriction. */
    const char *cpuset;
    /* CUDA_VISIBLE_DEVICES value to honour (integer list form, e.g. "2,3"). NULL = read
     * the environment variable; unset means all NVIDIA GPUs visible. */
    const char *cuda_visible_devices;
    bool include_net_nics;  /* report ordinary interfaces (kind NET); default true */
    /* Also report an interface whose PCI function already has an RDMA device (a RoCE
     * or IPoIB netdev of a ConnectX). Default false: its name goes to `netdev`. */
    bool keep_rdma_netdevs;
} te_topo_options;

typedef struct te_topo_nic {
    char name[TE_TOPO_NAME_MAX];   /* libfabric domain name (see above) */
    char netdev[TE_TOPO_NAME_MAX]; /* RDMA NIC: interface on the same PCI function, or "" */
    te_topo_nic_kind kind;
    char pci[TE_TOPO_PCI_MAX];     /* PCI function ("0000:18:00.0") */
    uint16_t vendor, device;       /* PCI ids, 0 if unreadable */
    uint64_t speed_bps;            /* link speed in bits/s, 0 if unknown or down */
    int numa;                      /* NUMA node after the -1 fallback */
    int group;                     /* index in te_topo.groups, -1 if near no GPU */
} te_topo_nic;

typedef struct te_topo_group {
    char gpu_pci[TE_TOPO_PCI_MAX]; /* GPU PCI function */
    uint16_t gpu_vendor, gpu_device;
    int cuda_ordinal;     /* CUDA ordinal under CUDA_VISIBLE_DEVICES, -1 if hidden/unknown */
    int numa;             /* after the -1 fallback */
    uint32_t n_nics;
    const uint32_t *nics; /* indices into te_topo.nics, PCI order */
    uint32_t n_cpus;
    const int *cpus;      /* this GPU's share of its node: physical cores, then siblings */
    bool cpus_remote;     /* its node had no allowed CPU: cpus are the whole CPU set */
} te_topo_group;

typedef struct te_topo_numa {
    int node;
    uint32_t n_cpus;
    const int *cpus;      /* allowed CPUs of the node: physical cores first */
} te_topo_numa;

typedef struct te_topo {
    uint32_t n_groups;          /* one per GPU, PCI order */
    const te_topo_group *groups;
    uint32_t n_nics;            /* every NIC found, PCI order (NICs without PCI last) */
    const te_topo_nic *nics;
    uint32_t n_unattached;      /* NICs near no GPU */
    const uint32_t *unattached; /* indices into nics */
    uint32_t n_numa;
    const te_topo_numa *numa;   /* NUMA nodes, ascending */
    uint32_t n_cpus;            /* the allowed CPU set (restricted to present CPUs) */
    const int *cpus;
    bool ordinals_known;        /* false if CUDA_VISIBLE_DEVICES was not an integer list */
} te_topo;

/* Fills defaults (sysfs "/sys", process CPU set, environment CUDA_VISIBLE_DEVICES,
 * include_net_nics true). */
void te_topo_options_init(te_topo_options *opt);

/* Detects the topology. opt may be NULL (defaults). Files missing from the tree are
 * tolerated (a partial tree yields a partial answer); fails only with -EINVAL for a bad
 * option (message names it), -ENOENT when nothing under sysfs_root can be read, -ENOMEM,
 * or the error of sched_getaffinity() when opt->cpuset is NULL.
 * On success *out must be released with te_topo_free. */
int te_topo_detect(const te_topo_options *opt, te_topo **out);

/* Frees a topology. NULL is ignored. */
void te_topo_free(te_topo *topo);

/* Text names of a kind: "verbs", "efa", "net". */
const char *te_topo_nic_kind_name(te_topo_nic_kind kind);

enum { TE_TOPO_FORMAT_TEXT = 0, TE_TOPO_FORMAT_JSON = 1 };

/* Prints the topology as a table (TEXT) or one JSON object (JSON) to f. Returns 0 or
 * -EIO if writing failed. For a buffer, pass open_memstream()/fmemopen(). */
int te_topo_format(const te_topo *topo, FILE *f, int format);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif
