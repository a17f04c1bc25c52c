/* Internal to the topology code (topo_*.c): the detection state and the helpers the
 * files share. The rules themselves are stated in include/tendril/te_topo.h and
 * docs/topology.md. */
#ifndef TENDRIL_TE_TOPO_INTERNAL_H
#define TENDRIL_TE_TOPO_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tendril/te_topo.h"

#define PATHBUF 4096

/* Sorted names of a directory's entries (no dot entries). Missing directory: 0 names. */
typedef struct names {
    char **v;
    size_t n;
} names;

typedef struct cpumask {
    uint8_t *b;
    int n; /* capacity in CPUs */
} cpumask;

/* --------------------------------------------------------- detection state ---- */

typedef struct pdev {
    char pci[TE_TOPO_PCI_MAX];
    char *chain;  /* "pci0000:00/0000:00:01.0/0000:01:00.0", "" if unknown */
    char *pcidir; /* absolute sysfs directory of the PCI function, NULL if unknown */
    uint16_t vendor, device;
    int numa;
} pdev;

typedef struct gpu {
    pdev d;
    int ordinal;
} gpu;

typedef struct nic {
    pdev d;
    te_topo_nic pub;
} nic;

typedef struct numa_node {
    int node;
    cpumask cpus; /* from cpulist, unrestricted */
} numa_node;

typedef struct ctx {
    const char *root;
    gpu *gpus;
    size_t n_gpus;
    nic *nics;
    size_t n_nics;
    numa_node *nodes;
    size_t n_nodes;
    int default_node;
} ctx;

typedef struct cpu_order {
    int *cpu;   /* physical cores first, then siblings; ascending within each part */
    long *key;  /* core key of each entry */
    size_t n, n_primary;
} cpu_order;

/* ---- topo_sysfs.c: sysfs paths and files, PCI addresses and chains ---- */
int topo_common_depth(const char *a, const char *b);
int topo_list_dir(const char *path, names *out);
void topo_names_free(names *ns);
int topo_path_join(char *buf, const char *a, const char *b, const char *c, const char *d);
int topo_pci_cmp(const char *a, const char *b);
void topo_pdev_free(pdev *d);
int topo_read_long(const char *path, int base, long *out);
int topo_read_text(const char *path, char *buf, size_t cap);
int topo_resolve_pci(const char *link, pdev *d);

/* ---- topo_cpus.c: CPU masks, cpulists, the process's CPU set, core order ---- */
void topo_mask_free(cpumask *m);
bool topo_mask_has(const cpumask *m, int cpu);
int topo_mask_set(cpumask *m, int cpu);
int topo_order_cpus(const ctx *c, const cpumask *node, const cpumask *allowed, cpu_order *o);
void topo_order_free(cpu_order *o);
int topo_parse_cpulist(const char *s, cpumask *m);
int topo_process_cpuset(cpumask *m);

/* ---- topo_place.c: NICs and CPUs to GPUs, and the te_topo result ---- */
int topo_build(ctx *c, const cpumask *allowed, bool known, te_topo **out);
int topo_place_pass(ctx *c, bool rdma, size_t *load);

#endif
