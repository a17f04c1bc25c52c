/* Topology detection from sysfs: GPUs, NICs, NUMA nodes and CPUs, grouped by PCI
 * proximity. The rules are stated in include/tendril/te_topo.h and docs/topology.md. */
#include "tendril/te_topo.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "tendril/te.h"

/* ------------------------------------------------------------ small helpers ---- */

#define PATHBUF 4096

static int path_join(char *buf, const char *a, const char *b, const char *c, const char *d)
{
    int n = snprintf(buf, PATHBUF, "%s%s%s%s%s%s%s", a, b ? "/" : "", b ? b : "",
                     c ? "/" : "", c ? c : "", d ? "/" : "", d ? d : "");
    return (n < 0 || n >= PATHBUF) ? -ENAMETOOLONG : 0;
}

/* Reads a small text file, newline stripped. */
static int read_text(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    return 0;
}

static int read_long(const char *path, int base, long *out)
{
    char buf[64];
    if (read_text(path, buf, sizeof buf) != 0)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(buf, &end, base);
    if (errno || end == buf)
        return -1;
    *out = v;
    return 0;
}

static bool is_hex_run(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* "dddd:bb:dd.f" (domain of 4 or more hex digits), n characters of s. */
static bool is_pci_addr(const char *s, size_t n)
{
    if (n < 12 || n >= TE_TOPO_PCI_MAX)
        return false;
    size_t dom = n - 8; /* ":bb:dd.f" */
    return is_hex_run(s, dom) && s[dom] == ':' && is_hex_run(s + dom + 1, 2) &&
           s[dom + 3] == ':' && is_hex_run(s + dom + 4, 2) && s[dom + 6] == '.' &&
           is_hex_run(s + dom + 7, 1);
}

/* "pcidddd:bb": a PCI root complex (host bridge) directory. */
static bool is_pci_root(const char *s, size_t n)
{
    if (n < 9 || strncmp(s, "pci", 3) != 0)
        return false;
    const char *colon = memchr(s + 3, ':', n - 3);
    return colon && is_hex_run(s + 3, (size_t)(colon - s - 3)) &&
           is_hex_run(colon + 1, n - (size_t)(colon + 1 - s));
}

static int pci_cmp(const char *a, const char *b)
{
    unsigned da = 0, ba = 0, sa = 0, fa = 0, db = 0, bb = 0, sb = 0, fb = 0;
    int na = sscanf(a, "%x:%x:%x.%x", &da, &ba, &sa, &fa);
    int nb = sscanf(b, "%x:%x:%x.%x", &db, &bb, &sb, &fb);
    if (na != 4 || nb != 4) {
        if ((na == 4) != (nb == 4))
            return na == 4 ? -1 : 1; /* devices with a PCI address first */
        return strcmp(a, b);
    }
    uint64_t ka = ((uint64_t)da << 32) | (ba << 16) | (sa << 8) | fa;
    uint64_t kb = ((uint64_t)db << 32) | (bb << 16) | (sb << 8) | fb;
    return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/* Number of leading path components two chains share ("pci0000:00/0000:00:01.0/..."). */
static int common_depth(const char *a, const char *b)
{
    int d = 0;
    for (;;) {
        size_t la = strcspn(a, "/"), lb = strcspn(b, "/");
        if (la == 0 || la != lb || memcmp(a, b, la) != 0)
            return d;
        d++;
        if (a[la] == '\0' || b[lb] == '\0')
            return d;
        a += la + 1;
        b += lb + 1;
    }
}

/* Sorted names of a directory's entries (no dot entries). Missing directory: 0 names. */
typedef struct names {
    char **v;
    size_t n;
} names;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void names_free(names *ns)
{
    for (size_t i = 0; i < ns->n; i++)
        free(ns->v[i]);
    free(ns->v);
    ns->v = NULL;
    ns->n = 0;
}

static int list_dir(const char *path, names *out)
{
    out->v = NULL;
    out->n = 0;
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        if (out->n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            char **nv = realloc(out->v, nc * sizeof *nv);
            if (!nv) {
                rc = -ENOMEM;
                break;
            }
            out->v = nv;
            cap = nc;
        }
        if (!(out->v[out->n] = strdup(e->d_name))) {
            rc = -ENOMEM;
            break;
        }
        out->n++;
    }
    closedir(d);
    if (rc) {
        names_free(out);
        return rc;
    }
    if (out->n > 1)
        qsort(out->v, out->n, sizeof *out->v, name_cmp);
    return 0;
}

/* -------------------------------------------------------------- CPU masks ---- */

typedef struct cpumask {
    uint8_t *b;
    int n; /* capacity in CPUs */
} cpumask;

static int mask_set(cpumask *m, int cpu)
{
    if (cpu < 0 || cpu > (1 << 22))
        return -EINVAL;
    if (cpu >= m->n) {
        int nn = m->n ? m->n : 64;
        while (nn <= cpu)
            nn *= 2;
        uint8_t *nb = realloc(m->b, (size_t)nn);
        if (!nb)
            return -ENOMEM;
        memset(nb + m->n, 0, (size_t)(nn - m->n));
        m->b = nb;
        m->n = nn;
    }
    m->b[cpu] = 1;
    return 0;
}

static bool mask_has(const cpumask *m, int cpu) { return cpu >= 0 && cpu < m->n && m->b[cpu]; }

static void mask_free(cpumask *m)
{
    free(m->b);
    m->b = NULL;
    m->n = 0;
}

/* Parses a Linux cpulist ("0-3,8,10-11"; empty = no CPUs). -EINVAL if malformed. */
static int parse_cpulist(const char *s, cpumask *m)
{
    const char *p = s;
    while (*p == ' ' || *p == '\n')
        p++;
    while (*p) {
        char *end;
        errno = 0;
        long lo = strtol(p, &end, 10);
        if (end == p || errno || lo < 0)
            return -EINVAL;
        long hi = lo;
        p = end;
        if (*p == '-') {
            p++;
            hi = strtol(p, &end, 10);
            if (end == p || errno || hi < lo)
                return -EINVAL;
            p = end;
        }
        if (hi > (1 << 22))
            return -EINVAL;
        for (long c = lo; c <= hi; c++) {
            int rc = mask_set(m, (int)c);
            if (rc)
                return rc;
        }
        while (*p == ' ' || *p == '\n')
            p++;
        if (*p == ',')
            p++;
        else if (*p)
            return -EINVAL;
    }
    return 0;
}

static int process_cpuset(cpumask *m)
{
    for (int ncpu = 1024; ncpu <= (1 << 20); ncpu *= 2) {
        cpu_set_t *set = CPU_ALLOC((size_t)ncpu);
        if (!set)
            return -ENOMEM;
        size_t sz = CPU_ALLOC_SIZE((size_t)ncpu);
        CPU_ZERO_S(sz, set);
        if (sched_getaffinity(0, sz, set) == 0) {
            int rc = 0;
            for (int c = 0; c < ncpu && rc == 0; c++)
                if (CPU_ISSET_S((size_t)c, sz, set))
                    rc = mask_set(m, c);
            CPU_FREE(set);
            return rc;
        }
        int err = errno;
        CPU_FREE(set);
        if (err != EINVAL)
            return -err;
    }
    return -EINVAL;
}

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

static void pdev_free(pdev *d)
{
    free(d->chain);
    free(d->pcidir);
    d->chain = d->pcidir = NULL;
}

/* Resolves `link` (a sysfs device path or symlink) to its PCI function: address, chain of
 * PCI components from the root complex, and the function's directory. A device below a
 * PCI function (virtio-net's "virtio2") resolves to that function. -ENOENT if no PCI
 * function is on the path. */
static int resolve_pci(const char *link, pdev *d)
{
    char real[PATHBUF];
    if (!realpath(link, real))
        return -errno;
    char chain[PATHBUF];
    size_t clen = 0, dir_end = 0;
    chain[0] = '\0';
    d->pci[0] = '\0';
    const char *p = real;
    while (*p) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            break;
        if (is_pci_root(p, n)) {
            /* (Re)start: the chain begins at the root complex. */
            memcpy(chain, p, n);
            clen = n;
            chain[clen] = '\0';
        } else if (is_pci_addr(p, n)) {
            if (clen + n + 2 < sizeof chain) {
                if (clen)
                    chain[clen++] = '/';
                memcpy(chain + clen, p, n);
                clen += n;
                chain[clen] = '\0';
            }
            memcpy(d->pci, p, n);
            d->pci[n] = '\0';
            dir_end = (size_t)(p - real) + n;
        }
        p += n;
    }
    if (d->pci[0] == '\0')
        return -ENOENT;
    real[dir_end] = '\0';
    d->pcidir = strdup(real);
    /* Without a root complex on the path the chain cannot be compared with others. */
    d->chain = strdup(strncmp(chain, "pci", 3) == 0 ? chain : "");
    if (!d->pcidir || !d->chain) {
        pdev_free(d);
        return -ENOMEM;
    }
    char path[PATHBUF];
    long v;
    if (path_join(path, d->pcidir, "vendor", NULL, NULL) == 0 && read_long(path, 16, &v) == 0)
        d->vendor = (uint16_t)v;
    if (path_join(path, d->pcidir, "device", NULL, NULL) == 0 && read_long(path, 16, &v) == 0)
        d->device = (uint16_t)v;
    d->numa = -1;
    if (path_join(path, d->pcidir, "numa_node", NULL, NULL) == 0 && read_long(path, 10, &v) == 0)
        d->numa = (int)v;
    /* numa_node -1 (common in VMs and on some BIOSes): nearest ancestor that knows. */
    if (d->numa < 0) {
        char up[PATHBUF];
        snprintf(up, sizeof up, "%s", d->pcidir);
        for (char *slash = strrchr(up, '/'); slash && slash != up; slash = strrchr(up, '/')) {
            *slash = '\0';
            const char *base = strrchr(up, '/');
            base = base ? base + 1 : up;
            size_t bn = strlen(base);
            if (!is_pci_addr(base, bn) && !is_pci_root(base, bn))
                break;
            if (path_join(path, up, "numa_node", NULL, NULL) == 0 &&
                read_long(path, 10, &v) == 0 && v >= 0) {
                d->numa = (int)v;
                break;
            }
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ GPUs ---- */

static bool is_gpu(uint32_t cls, uint16_t vendor)
{
    if (vendor != 0x10de && vendor != 0x1002)
        return false;
    uint32_t cc = cls >> 8; /* class + subclass */
    if (cc == 0x0302 || cc == 0x0300 || cc == 0x0380)
        return true;
    return vendor == 0x1002 && cc == 0x1200; /* AMD Instinct: processing accelerator */
}

static int gpu_cmp(const void *a, const void *b)
{
    return pci_cmp(((const gpu *)a)->d.pci, ((const gpu *)b)->d.pci);
}

static int find_gpus(ctx *c)
{
    char dir[PATHBUF], path[PATHBUF];
    if (path_join(dir, c->root, "bus/pci/devices", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (list_dir(dir, &ns) != 0) {
        TE_LOGD("topology: %s unreadable: no GPUs", dir);
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        long cls, vendor;
        if (path_join(path, dir, ns.v[i], "class", NULL) || read_long(path, 16, &cls) ||
            path_join(path, dir, ns.v[i], "vendor", NULL) || read_long(path, 16, &vendor))
            continue;
        if (!is_gpu((uint32_t)cls, (uint16_t)vendor))
            continue;
        gpu g;
        memset(&g, 0, sizeof g);
        g.ordinal = -1;
        if (path_join(path, dir, ns.v[i], NULL, NULL) || resolve_pci(path, &g.d) != 0) {
            TE_LOGD("topology: GPU %s: cannot resolve its PCI path", ns.v[i]);
            continue;
        }
        gpu *nv = realloc(c->gpus, (c->n_gpus + 1) * sizeof *nv);
        if (!nv) {
            pdev_free(&g.d);
            rc = -ENOMEM;
            break;
        }
        c->gpus = nv;
        c->gpus[c->n_gpus++] = g;
    }
    names_free(&ns);
    if (rc == 0 && c->n_gpus > 1)
        qsort(c->gpus, c->n_gpus, sizeof *c->gpus, gpu_cmp);
    return rc;
}

/* CUDA ordinals: NVIDIA GPUs in PCI bus order, filtered and reordered by an integer
 * CUDA_VISIBLE_DEVICES. Like CUDA, the list ends at the first invalid entry. Returns
 * whether the ordinals can be trusted. */
static bool assign_ordinals(ctx *c, const char *cvd)
{
    size_t n_nv = 0;
    int *phys = malloc((c->n_gpus + 1) * sizeof *phys); /* physical index -> gpus[] */
    if (!phys)
        return false;
    bool same_model = true;
    for (size_t i = 0; i < c->n_gpus; i++) {
        if (c->gpus[i].d.vendor != 0x10de)
            continue;
        if (n_nv && c->gpus[i].d.device != c->gpus[phys[0]].d.device)
            same_model = false;
        phys[n_nv++] = (int)i;
    }
    bool known = true;
    const char *order = getenv("CUDA_DEVICE_ORDER");
    if (!same_model && !(order && strcmp(order, "PCI_BUS_ID") == 0)) {
        TE_LOGW("topology: mixed NVIDIA GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: "
                "CUDA ordinals may differ from PCI order");
        known = false;
    }
    if (!cvd) {
        for (size_t k = 0; k < n_nv; k++)
            c->gpus[phys[k]].ordinal = (int)k;
        free(phys);
        return known;
    }
    const char *p = cvd;
    while (*p == ' ')
        p++;
    if (*p && !isdigit((unsigned char)*p)) {
        TE_LOGW("topology: CUDA_VISIBLE_DEVICES='%s' is not an integer list: "
                "CUDA ordinals unknown", cvd);
        free(phys);
        return false;
    }
    int next = 0;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || (size_t)v >= n_nv || c->gpus[phys[v]].ordinal >= 0)
            break;
        c->gpus[phys[v]].ordinal = next++;
        p = end;
        while (*p == ' ')
            p++;
        if (*p != ',')
            break;
        p++;
        while (*p == ' ')
            p++;
    }
    free(phys);
    return known;
}

/* ------------------------------------------------------------------ NICs ---- */

static int nic_cmp(const void *a, const void *b)
{
    const nic *x = a, *y = b;
    int r = pci_cmp(x->pub.pci, y->pub.pci);
    return r ? r : strcmp(x->pub.name, y->pub.name);
}

static int add_nic(ctx *c, nic *n)
{
    nic *nv = realloc(c->nics, (c->n_nics + 1) * sizeof *nv);
    if (!nv) {
        pdev_free(&n->d);
        return -ENOMEM;
    }
    c->nics = nv;
    c->nics[c->n_nics++] = *n;
    return 0;
}

/* "400 Gb/sec (4X NDR)" -> 400e9. */
static uint64_t parse_rate(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || v <= 0)
        return 0;
    while (*end == ' ')
        end++;
    double mult = 1e9;
    if (*end == 'M')
        mult = 1e6;
    else if (*end == 'T')
        mult = 1e12;
    return (uint64_t)(v * mult + 0.5);
}

static void copy_name(char *dst, const char *src)
{
    snprintf(dst, TE_TOPO_NAME_MAX, "%s", src);
}

static int find_rdma_nics(ctx *c)
{
    char dir[PATHBUF], path[PATHBUF], buf[256];
    if (path_join(dir, c->root, "class/infiniband", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (list_dir(dir, &ns) != 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        nic n;
        memset(&n, 0, sizeof n);
        n.d.numa = -1;
        copy_name(n.pub.name, ns.v[i]);
        if (path_join(path, dir, ns.v[i], "device", NULL) == 0 && resolve_pci(path, &n.d) == 0) {
            snprintf(n.pub.pci, sizeof n.pub.pci, "%s", n.d.pci);
        } else {
            /* A software device (rxe) or a partial tree: kept, placed by NUMA only. */
            TE_LOGD("topology: RDMA device %s has no PCI function", ns.v[i]);
            if (!(n.d.chain = strdup(""))) {
                rc = -ENOMEM;
                break;
            }
        }
        n.pub.vendor = n.d.vendor;
        n.pub.device = n.d.device;
        bool efa = n.d.vendor == 0x1d0f;
        if (n.d.pcidir && path_join(path, n.d.pcidir, "driver", NULL, NULL) == 0) {
            ssize_t len = readlink(path, buf, sizeof buf - 1);
            if (len > 0) {
                buf[len] = '\0';
                const char *drv = strrchr(buf, '/');
                drv = drv ? drv + 1 : buf;
                if (strcmp(drv, "efa") == 0)
                    efa = true;
            }
        }
        n.pub.kind = efa ? TE_TOPO_NIC_EFA : TE_TOPO_NIC_VERBS;
        /* Link speed of the first port. */
        names ports;
        char pdir[PATHBUF];
        if (path_join(pdir, dir, ns.v[i], "ports", NULL) == 0 && list_dir(pdir, &ports) == 0) {
            const char *first = NULL;
            long best = LONG_MAX;
            for (size_t k = 0; k < ports.n; k++) {
                long pn = strtol(ports.v[k], NULL, 10);
                if (pn < best) {
                    best = pn;
                    first = ports.v[k];
                }
            }
            if (first && path_join(path, pdir, first, "rate", NULL) == 0 &&
                read_text(path, buf, sizeof buf) == 0)
                n.pub.speed_bps = parse_rate(buf);
            names_free(&ports);
        }
        rc = add_nic(c, &n);
    }
    names_free(&ns);
    return rc;
}

static int find_net_nics(ctx *c, const te_topo_options *o)
{
    char dir[PATHBUF], path[PATHBUF];
    if (path_join(dir, c->root, "class/net", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (list_dir(dir, &ns) != 0)
        return 0;
    size_t n_rdma = c->n_nics;
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        nic n;
        memset(&n, 0, sizeof n);
        if (path_join(path, dir, ns.v[i], "device", NULL) || resolve_pci(path, &n.d) != 0)
            continue; /* lo, bridges, veth, ...: no PCI function */
        /* The netdev of an RDMA device (RoCE, IPoIB) shares its PCI function. */
        nic *owner = NULL;
        for (size_t k = 0; k < n_rdma; k++)
            if (c->nics[k].pub.pci[0] && strcmp(c->nics[k].pub.pci, n.d.pci) == 0) {
                owner = &c->nics[k];
                break;
            }
        if (owner && owner->pub.netdev[0] == '\0')
            copy_name(owner->pub.netdev, ns.v[i]);
        if ((owner && !o->keep_rdma_netdevs) || !o->include_net_nics) {
            pdev_free(&n.d);
            continue;
        }
        copy_name(n.pub.name, ns.v[i]);
        snprintf(n.pub.pci, sizeof n.pub.pci, "%s", n.d.pci);
        n.pub.kind = TE_TOPO_NIC_NET;
        n.pub.vendor = n.d.vendor;
        n.pub.device = n.d.device;
        long mbps;
        if (path_join(path, dir, ns.v[i], "speed", NULL) == 0 && read_long(path, 10, &mbps) == 0 &&
            mbps > 0)
            n.pub.speed_bps = (uint64_t)mbps * 1000000u;
        rc = add_nic(c, &n);
    }
    names_free(&ns);
    return rc;
}

/* ------------------------------------------------------------ NUMA / CPUs ---- */

static int find_numa(ctx *c, bool *any)
{
    char dir[PATHBUF], path[PATHBUF], buf[4096];
    if (path_join(dir, c->root, "devices/system/node", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    int rc = 0;
    if (list_dir(dir, &ns) == 0) {
        *any = true;
        for (size_t i = 0; i < ns.n && rc == 0; i++) {
            const char *s = ns.v[i];
            if (strncmp(s, "node", 4) != 0 || !isdigit((unsigned char)s[4]))
                continue;
            numa_node nn = {.node = atoi(s + 4)};
            if (path_join(path, dir, s, "cpulist", NULL) == 0 &&
                read_text(path, buf, sizeof buf) == 0 && parse_cpulist(buf, &nn.cpus) != 0)
                TE_LOGW("topology: %s: unreadable cpulist '%s'", path, buf);
            numa_node *nv = realloc(c->nodes, (c->n_nodes + 1) * sizeof *nv);
            if (!nv) {
                mask_free(&nn.cpus);
                rc = -ENOMEM;
                break;
            }
            c->nodes = nv;
            c->nodes[c->n_nodes++] = nn;
        }
        names_free(&ns);
    }
    if (rc)
        return rc;
    /* Sort by node number (directory order is by name: node10 < node2). */
    for (size_t i = 1; i < c->n_nodes; i++)
        for (size_t j = i; j > 0 && c->nodes[j - 1].node > c->nodes[j].node; j--) {
            numa_node t = c->nodes[j];
            c->nodes[j] = c->nodes[j - 1];
            c->nodes[j - 1] = t;
        }
    if (c->n_nodes == 0) {
        /* No NUMA information (kernel without NUMA, or a partial tree): one node 0 with
         * the online CPUs. */
        numa_node nn = {.node = 0};
        if (path_join(path, c->root, "devices/system/cpu/online", NULL, NULL) == 0 &&
            read_text(path, buf, sizeof buf) == 0) {
            *any = true;
            if (parse_cpulist(buf, &nn.cpus) != 0)
                TE_LOGW("topology: %s: unreadable cpulist '%s'", path, buf);
        }
        if (!(c->nodes = malloc(sizeof *c->nodes))) {
            mask_free(&nn.cpus);
            return -ENOMEM;
        }
        c->nodes[0] = nn;
        c->n_nodes = 1;
    }
    c->default_node = c->nodes[0].node;
    for (size_t i = 0; i < c->n_nodes; i++)
        if (c->nodes[i].node == 0)
            c->default_node = 0;
    return 0;
}

/* Identifies the physical core of a CPU: the lowest thread of thread_siblings_list, else
 * (package, core_id), else the CPU itself. */
static long core_key(const ctx *c, int cpu)
{
    char path[PATHBUF], buf[1024], name[32];
    snprintf(name, sizeof name, "cpu%d", cpu);
    if (path_join(path, c->root, "devices/system/cpu", name, "topology/thread_siblings_list") ==
            0 &&
        read_text(path, buf, sizeof buf) == 0) {
        cpumask m = {0};
        if (parse_cpulist(buf, &m) == 0) {
            for (int i = 0; i < m.n; i++)
                if (m.b[i]) {
                    mask_free(&m);
                    return i;
                }
        }
        mask_free(&m);
    }
    long core, pkg = 0;
    if (path_join(path, c->root, "devices/system/cpu", name, "topology/core_id") == 0 &&
        read_long(path, 10, &core) == 0) {
        if (path_join(path, c->root, "devices/system/cpu", name,
                      "topology/physical_package_id") == 0)
            (void)read_long(path, 10, &pkg);
        return -1 - (pkg * 1000000L + core); /* disjoint from CPU numbers */
    }
    return cpu;
}

typedef struct cpu_order {
    int *cpu;   /* physical cores first, then siblings; ascending within each part */
    long *key;  /* core key of each entry */
    size_t n, n_primary;
} cpu_order;

static int order_cpus(const ctx *c, const cpumask *node, const cpumask *allowed, cpu_order *o)
{
    memset(o, 0, sizeof *o);
    size_t cnt = 0;
    for (int i = 0; i < node->n; i++)
        if (node->b[i] && mask_has(allowed, i))
            cnt++;
    if (cnt == 0)
        return 0;
    int *cpus = malloc(cnt * sizeof *cpus);
    long *keys = malloc(cnt * sizeof *keys);
    bool *prim = calloc(cnt, sizeof *prim);
    o->cpu = malloc(cnt * sizeof *o->cpu);
    o->key = malloc(cnt * sizeof *o->key);
    if (!cpus || !keys || !prim || !o->cpu || !o->key) {
        free(cpus);
        free(keys);
        free(prim);
        free(o->cpu);
        free(o->key);
        memset(o, 0, sizeof *o);
        return -ENOMEM;
    }
    size_t k = 0;
    for (int i = 0; i < node->n; i++)
        if (node->b[i] && mask_has(allowed, i)) {
            cpus[k] = i;
            keys[k] = core_key(c, i);
            prim[k] = true;
            for (size_t j = 0; j < k; j++)
                if (keys[j] == keys[k]) {
                    prim[k] = false;
                    break;
                }
            k++;
        }
    for (size_t i = 0; i < cnt; i++)
        if (prim[i]) {
            o->cpu[o->n] = cpus[i];
            o->key[o->n++] = keys[i];
        }
    o->n_primary = o->n;
    for (size_t i = 0; i < cnt; i++)
        if (!prim[i]) {
            o->cpu[o->n] = cpus[i];
            o->key[o->n++] = keys[i];
        }
    free(cpus);
    free(keys);
    free(prim);
    return 0;
}

static void order_free(cpu_order *o)
{
    free(o->cpu);
    free(o->key);
    memset(o, 0, sizeof *o);
}

/* ------------------------------------------------------------- placement ---- */

/* Hands nics[0..m) (PCI order) to gpus[0..k) so that load+share is as even as possible;
 * each GPU gets a contiguous run, remainders to the first GPUs. */
static void water_fill(ctx *c, const size_t *nics, size_t m, const size_t *gpus, size_t k,
                       size_t *load)
{
    size_t *share = calloc(k, sizeof *share);
    if (!share) { /* degrade to round robin rather than fail */
        for (size_t i = 0; i < m; i++) {
            c->nics[nics[i]].pub.group = (int)gpus[i % k];
            load[gpus[i % k]]++;
        }
        return;
    }
    for (size_t i = 0; i < m; i++) {
        size_t best = 0;
        for (size_t j = 1; j < k; j++)
            if (load[gpus[j]] + share[j] < load[gpus[best]] + share[best])
                best = j;
        share[best]++;
    }
    size_t next = 0;
    for (size_t j = 0; j < k; j++)
        for (size_t s = 0; s < share[j]; s++) {
            c->nics[nics[next++]].pub.group = (int)gpus[j];
            load[gpus[j]]++;
        }
    free(share);
}

static bool in_pass(const nic *n, bool rdma)
{
    return rdma ? n->pub.kind != TE_TOPO_NIC_NET : n->pub.kind == TE_TOPO_NIC_NET;
}

/* One placement pass (RDMA NICs, then ordinary NICs for GPUs that got none). */
static int place_pass(ctx *c, bool rdma, size_t *load)
{
    size_t ng = c->n_gpus, nn = c->n_nics;
    bool *elig = calloc(ng + 1, sizeof *elig);
    bool *done = calloc(nn + 1, sizeof *done);
    bool *had_pci = calloc(ng + 1, sizeof *had_pci);
    int *depth = calloc(nn + 1, sizeof *depth);
    size_t *nl = malloc((nn + 1) * sizeof *nl);
    size_t *gl = malloc((ng + 1) * sizeof *gl);
    int rc = 0;
    if (!elig || !done || !had_pci || !depth || !nl || !gl) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t g = 0; g < ng; g++)
        elig[g] = rdma || load[g] == 0;
    for (size_t i = 0; i < nn; i++) {
        done[i] = !in_pass(&c->nics[i], rdma);
        for (size_t g = 0; g < ng; g++)
            if (elig[g]) {
                int d = common_depth(c->nics[i].d.chain, c->gpus[g].d.chain);
                if (d > depth[i])
                    depth[i] = d;
            }
    }
    /* PCI proximity: a shared bridge below the root complex (depth >= 2), deepest
     * clusters first so that a GPU's private NIC counts when its switch is shared. */
    for (;;) {
        size_t pick = nn;
        for (size_t i = 0; i < nn; i++)
            if (!done[i] && depth[i] >= 2 && (pick == nn || depth[i] > depth[pick]))
                pick = i;
        if (pick == nn)
            break;
        int dp = depth[pick];
        size_t m = 0, k = 0;
        for (size_t i = 0; i < nn; i++)
            if (!done[i] && depth[i] == dp &&
                common_depth(c->nics[i].d.chain, c->nics[pick].d.chain) >= dp) {
                nl[m++] = i;
                done[i] = true;
            }
        for (size_t g = 0; g < ng; g++)
            if (elig[g] && common_depth(c->gpus[g].d.chain, c->nics[pick].d.chain) >= dp)
                gl[k++] = g;
        water_fill(c, nl, m, gl, k, load);
    }
    /* NUMA: NICs near no GPU go to same-node GPUs left without a NIC by PCI proximity. */
    for (size_t g = 0; g < ng; g++)
        had_pci[g] = load[g] > 0;
    for (size_t i = 0; i < nn; i++) {
        if (done[i])
            continue;
        int node = c->nics[i].pub.numa;
        size_t m = 0, k = 0;
        for (size_t j = i; j < nn; j++)
            if (!done[j] && c->nics[j].pub.numa == node) {
                nl[m++] = j;
                done[j] = true;
            }
        for (size_t g = 0; g < ng; g++)
            if (elig[g] && !had_pci[g] && c->gpus[g].d.numa == node)
                gl[k++] = g;
        if (k)
            water_fill(c, nl, m, gl, k, load);
    }
out:
    free(elig);
    free(done);
    free(had_pci);
    free(depth);
    free(nl);
    free(gl);
    return rc;
}

/* ---------------------------------------------------------------- result ---- */

static void ctx_free(ctx *c)
{
    for (size_t i = 0; i < c->n_gpus; i++)
        pdev_free(&c->gpus[i].d);
    for (size_t i = 0; i < c->n_nics; i++)
        pdev_free(&c->nics[i].d);
    for (size_t i = 0; i < c->n_nodes; i++)
        mask_free(&c->nodes[i].cpus);
    free(c->gpus);
    free(c->nics);
    free(c->nodes);
}

void te_topo_free(te_topo *t)
{
    if (!t)
        return;
    for (uint32_t i = 0; i < t->n_groups; i++) {
        free((void *)t->groups[i].nics);
        free((void *)t->groups[i].cpus);
    }
    for (uint32_t i = 0; i < t->n_numa; i++)
        free((void *)t->numa[i].cpus);
    free((void *)t->groups);
    free((void *)t->nics);
    free((void *)t->unattached);
    free((void *)t->numa);
    free((void *)t->cpus);
    free(t);
}

void te_topo_options_init(te_topo_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = sizeof *opt;
    opt->include_net_nics = true;
}

/* CPU lists of every group: each node's physical cores in equal contiguous slices among
 * the node's GPUs, plus the sibling threads of each slice. */
static int place_cpus(ctx *c, const cpumask *allowed, te_topo *t, te_topo_group *groups,
                      te_topo_numa *numa)
{
    int rc = 0;
    for (size_t ni = 0; ni < c->n_nodes && rc == 0; ni++) {
        cpu_order o;
        if ((rc = order_cpus(c, &c->nodes[ni].cpus, allowed, &o)) != 0)
            break;
        numa[ni].node = c->nodes[ni].node;
        numa[ni].n_cpus = (uint32_t)o.n;
        int *nc = malloc((o.n + 1) * sizeof *nc);
        if (!nc) {
            order_free(&o);
            rc = -ENOMEM;
            break;
        }
        if (o.n)
            memcpy(nc, o.cpu, o.n * sizeof *nc);
        numa[ni].cpus = nc;
        size_t k = 0, gi = 0;
        for (size_t g = 0; g < c->n_gpus; g++)
            if (c->gpus[g].d.numa == c->nodes[ni].node)
                k++;
        size_t p = o.n_primary;
        for (size_t g = 0; g < c->n_gpus && p > 0; g++) {
            if (c->gpus[g].d.numa != c->nodes[ni].node)
                continue;
            size_t lo = gi * (p / k) + (gi < p % k ? gi : p % k);
            size_t len = p / k + (gi < p % k ? 1 : 0);
            if (len == 0) { /* fewer cores than GPUs: share one */
                lo = gi % p;
                len = 1;
            }
            gi++;
            int *gc = malloc(o.n * sizeof *gc);
            if (!gc) {
                rc = -ENOMEM;
                break;
            }
            size_t n = 0;
            for (size_t s = lo; s < lo + len; s++)
                gc[n++] = o.cpu[s];
            for (size_t s = p; s < o.n; s++)
                for (size_t q = lo; q < lo + len; q++)
                    if (o.key[s] == o.key[q]) {
                        gc[n++] = o.cpu[s];
                        break;
                    }
            groups[g].cpus = gc;
            groups[g].n_cpus = (uint32_t)n;
        }
        order_free(&o);
    }
    /* GPUs whose node has no allowed CPU (or no node we know): the whole CPU set. */
    for (size_t g = 0; g < c->n_gpus && rc == 0; g++) {
        if (groups[g].cpus)
            continue;
        int *gc = malloc((t->n_cpus + 1) * sizeof *gc);
        if (!gc) {
            rc = -ENOMEM;
            break;
        }
        if (t->n_cpus)
            memcpy(gc, t->cpus, t->n_cpus * sizeof *gc);
        groups[g].cpus = gc;
        groups[g].n_cpus = t->n_cpus;
        groups[g].cpus_remote = true;
        TE_LOGI("topology: GPU %s: no allowed CPU on NUMA node %d, using the whole CPU set",
                c->gpus[g].d.pci, c->gpus[g].d.numa);
    }
    return rc;
}

static int build(ctx *c, const cpumask *allowed, bool known, te_topo **out)
{
    te_topo *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    te_topo_group *groups = calloc(c->n_gpus + 1, sizeof *groups);
    te_topo_nic *nics = calloc(c->n_nics + 1, sizeof *nics);
    uint32_t *un = calloc(c->n_nics + 1, sizeof *un);
    te_topo_numa *numa = calloc(c->n_nodes + 1, sizeof *numa);
    int *cpus = malloc(((size_t)allowed->n + 1) * sizeof *cpus);
    t->groups = groups;
    t->nics = nics;
    t->unattached = un;
    t->numa = numa;
    t->cpus = cpus;
    t->n_groups = (uint32_t)c->n_gpus; /* so te_topo_free walks the group arrays */
    t->n_numa = (uint32_t)c->n_nodes;
    t->ordinals_known = known;
    if (!groups || !nics || !un || !numa || !cpus) {
        te_topo_free(t);
        return -ENOMEM;
    }
    /* The allowed CPU set, restricted to CPUs some node lists. */
    for (int i = 0; i < allowed->n; i++) {
        if (!allowed->b[i])
            continue;
        for (size_t ni = 0; ni < c->n_nodes; ni++)
            if (mask_has(&c->nodes[ni].cpus, i)) {
                cpus[t->n_cpus++] = i;
                break;
            }
    }
    for (size_t i = 0; i < c->n_nics; i++) {
        nics[i] = c->nics[i].pub;
        if (nics[i].group < 0)
            un[t->n_unattached++] = (uint32_t)i;
    }
    t->n_nics = (uint32_t)c->n_nics;
    int rc = 0;
    for (size_t g = 0; g < c->n_gpus && rc == 0; g++) {
        te_topo_group *gr = &groups[g];
        snprintf(gr->gpu_pci, sizeof gr->gpu_pci, "%s", c->gpus[g].d.pci);
        gr->gpu_vendor = c->gpus[g].d.vendor;
        gr->gpu_device = c->gpus[g].d.device;
        gr->cuda_ordinal = c->gpus[g].ordinal;
        gr->numa = c->gpus[g].d.numa;
        uint32_t *gn = malloc((c->n_nics + 1) * sizeof *gn);
        if (!gn) {
            rc = -ENOMEM;
            break;
        }
        for (size_t i = 0; i < c->n_nics; i++)
            if (nics[i].group == (int)g)
                gn[gr->n_nics++] = (uint32_t)i;
        gr->nics = gn;
    }
    if (rc == 0)
        rc = place_cpus(c, allowed, t, groups, numa);
    if (rc) {
        te_topo_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

int te_topo_detect(const te_topo_options *opt_in, te_topo **out)
{
    te_err_clear();
    if (!out)
        return te_err(-EINVAL, "te_topo_detect: out is NULL");
    *out = NULL;
    te_topo_options opt;
    te_topo_options_init(&opt);
    if (opt_in) {
        if (opt_in->struct_size == 0 || opt_in->struct_size > sizeof opt)
            return te_err(-EINVAL, "te_topo_options.struct_size: %zu (expected 1..%zu; call "
                                   "te_topo_options_init)", opt_in->struct_size, sizeof opt);
        memcpy(&opt, opt_in, opt_in->struct_size);
    }
    const char *root = opt.sysfs_root ? opt.sysfs_root : "/sys";
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
        return te_err(-ENOENT, "te_topo_options.sysfs_root: '%s' is not a readable directory",
                      root);

    cpumask allowed = {0};
    bool restricted = true;
    int rc;
    if (opt.cpuset && strcmp(opt.cpuset, "all") == 0) {
        restricted = false;
    } else if (opt.cpuset) {
        if ((rc = parse_cpulist(opt.cpuset, &allowed)) != 0) {
            mask_free(&allowed);
            return rc == -ENOMEM ? te_err(rc, "te_topo_detect: out of memory")
                                 : te_err(-EINVAL, "te_topo_options.cpuset: '%s' is not a "
                                                   "cpulist such as \"0-3,8\"", opt.cpuset);
        }
    } else if ((rc = process_cpuset(&allowed)) != 0) {
        mask_free(&allowed);
        return te_err(rc, "te_topo_detect: sched_getaffinity failed");
    }

    ctx c;
    memset(&c, 0, sizeof c);
    c.root = root;
    bool any = false;
    char probe[PATHBUF];
    static const char *const parts[] = {"bus/pci/devices", "class/net", "class/infiniband"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (path_join(probe, root, parts[i], NULL, NULL) == 0 && access(probe, R_OK | X_OK) == 0)
            any = true;
    if ((rc = find_numa(&c, &any)) != 0)
        goto fail;
    if (!any) {
        rc = te_err(-ENOENT, "te_topo_detect: nothing readable under '%s' (no bus/pci/devices, "
                             "class/net, class/infiniband or devices/system/node)", root);
        goto fail;
    }
    if (!restricted) {
        for (size_t ni = 0; ni < c.n_nodes && rc == 0; ni++)
            for (int i = 0; i < c.nodes[ni].cpus.n && rc == 0; i++)
                if (c.nodes[ni].cpus.b[i])
                    rc = mask_set(&allowed, i);
        if (rc)
            goto fail;
    }
    if ((rc = find_gpus(&c)) != 0 || (rc = find_rdma_nics(&c)) != 0 ||
        (rc = find_net_nics(&c, &opt)) != 0)
        goto fail;
    if (c.n_nics > 1)
        qsort(c.nics, c.n_nics, sizeof *c.nics, nic_cmp);

    for (size_t g = 0; g < c.n_gpus; g++)
        if (c.gpus[g].d.numa < 0)
            c.gpus[g].d.numa = c.default_node;
    for (size_t i = 0; i < c.n_nics; i++) {
        if (c.nics[i].d.numa < 0)
            c.nics[i].d.numa = c.default_node;
        c.nics[i].pub.numa = c.nics[i].d.numa;
        c.nics[i].pub.group = -1;
    }
    const char *cvd = opt.cuda_visible_devices ? opt.cuda_visible_devices
                                               : getenv("CUDA_VISIBLE_DEVICES");
    bool known = assign_ordinals(&c, cvd);

    size_t *load = calloc(c.n_gpus + 1, sizeof *load);
    if (!load) {
        rc = -ENOMEM;
        goto fail;
    }
    rc = place_pass(&c, true, load);
    if (rc == 0)
        rc = place_pass(&c, false, load);
    free(load);
    if (rc == 0)
        rc = build(&c, &allowed, known, out);
    if (rc)
        goto fail;
    TE_LOGD("topology: %zu GPUs, %zu NICs, %zu NUMA nodes under %s", c.n_gpus, c.n_nics,
            c.n_nodes, root);
    ctx_free(&c);
    mask_free(&allowed);
    return 0;
fail:
    ctx_free(&c);
    mask_free(&allowed);
    if (rc == -ENOMEM)
        return te_err(rc, "te_topo_detect: out of memory");
    return rc;
}

/* ---------------------------------------------------------------- output ---- */

const char *te_topo_nic_kind_name(te_topo_nic_kind kind)
{
    switch (kind) {
    case TE_TOPO_NIC_VERBS: return "verbs";
    case TE_TOPO_NIC_EFA: return "efa";
    case TE_TOPO_NIC_NET: return "net";
    }
    return "unknown";
}

/* "0-13,112-125" */
static void print_cpulist(FILE *f, const int *cpus, uint32_t n, bool sorted_copy)
{
    int *s = NULL;
    if (sorted_copy && n) {
        s = malloc(n * sizeof *s);
        if (s) {
            memcpy(s, cpus, n * sizeof *s);
            for (uint32_t i = 1; i < n; i++)
                for (uint32_t j = i; j > 0 && s[j - 1] > s[j]; j--) {
                    int x = s[j];
                    s[j] = s[j - 1];
                    s[j - 1] = x;
                }
            cpus = s;
        }
    }
    if (n == 0)
        fputs("-", f);
    for (uint32_t i = 0; i < n;) {
        uint32_t j = i;
        while (j + 1 < n && cpus[j + 1] == cpus[j] + 1)
            j++;
        if (j > i)
            fprintf(f, "%s%d-%d", i ? "," : "", cpus[i], cpus[j]);
        else
            fprintf(f, "%s%d", i ? "," : "", cpus[i]);
        i = j + 1;
    }
    free(s);
}

/* "400G", "100M", "?" (unknown or down). */
static void speed_text(char *buf, size_t cap, uint64_t bps)
{
    if (bps == 0)
        snprintf(buf, cap, "?");
    else if (bps >= 1000000000u)
        snprintf(buf, cap, "%gG", (double)bps / 1e9);
    else
        snprintf(buf, cap, "%gM", (double)bps / 1e6);
}

static void format_text(const te_topo *t, FILE *f)
{
    fprintf(f, "GPU groups: %u\n", t->n_groups);
    if (t->n_groups) {
        fprintf(f, "%-5s %-4s %-13s %-9s %-4s %-24s %s\n", "group", "cuda", "gpu", "id",
                "numa", "cpus", "nics (kind, link speed)");
        for (uint32_t g = 0; g < t->n_groups; g++) {
            const te_topo_group *gr = &t->groups[g];
            char ord[16], id[16];
            snprintf(ord, sizeof ord, "%d", gr->cuda_ordinal);
            snprintf(id, sizeof id, "%04x:%04x", gr->gpu_vendor, gr->gpu_device);
            fprintf(f, "%-5u %-4s %-13s %-9s %-4d ", g, gr->cuda_ordinal >= 0 ? ord : "-",
                    gr->gpu_pci, id, gr->numa);
            /* The CPU list, padded to its column through a memory stream. */
            char *cl = NULL;
            size_t cl_len = 0;
            FILE *m = open_memstream(&cl, &cl_len);
            if (m) {
                print_cpulist(m, gr->cpus, gr->n_cpus, true);
                if (gr->cpus_remote)
                    fputs("(remote)", m);
                fclose(m);
            }
            fprintf(f, "%-24s", cl ? cl : "?");
            free(cl);
            if (gr->n_nics == 0)
                fputs(" -", f);
            for (uint32_t k = 0; k < gr->n_nics; k++) {
                const te_topo_nic *n = &t->nics[gr->nics[k]];
                char sp[32];
                speed_text(sp, sizeof sp, n->speed_bps);
                fprintf(f, " %s(%s,%s)", n->name, te_topo_nic_kind_name(n->kind), sp);
            }
            fputc('\n', f);
        }
        if (!t->ordinals_known)
            fputs("note: CUDA ordinals are not reliable (see CUDA_VISIBLE_DEVICES / "
                  "CUDA_DEVICE_ORDER)\n", f);
    }
    fprintf(f, "\nNICs: %u (%u near no GPU)\n", t->n_nics, t->n_unattached);
    if (t->n_nics) {
        fprintf(f, "%-16s %-5s %-13s %-9s %-7s %-4s %-5s %s\n", "name", "kind", "pci", "id",
                "speed", "numa", "group", "netdev");
        for (uint32_t i = 0; i < t->n_nics; i++) {
            const te_topo_nic *n = &t->nics[i];
            char id[16], grp[16];
            snprintf(id, sizeof id, "%04x:%04x", n->vendor, n->device);
            snprintf(grp, sizeof grp, "%d", n->group);
            fprintf(f, "%-16s %-5s %-13s %-9s ", n->name, te_topo_nic_kind_name(n->kind),
                    n->pci[0] ? n->pci : "-", id);
            char sp[32];
            speed_text(sp, sizeof sp, n->speed_bps);
            fprintf(f, "%-7s %-4d %-5s %s\n", sp, n->numa, n->group >= 0 ? grp : "-",
                    n->netdev[0] ? n->netdev : "-");
        }
    }
    fprintf(f, "\nNUMA nodes: %u (allowed CPUs: ", t->n_numa);
    print_cpulist(f, t->cpus, t->n_cpus, false);
    fputs(")\n", f);
    for (uint32_t i = 0; i < t->n_numa; i++) {
        const te_topo_numa *nm = &t->numa[i];
        fprintf(f, "  node %d: %u allowed CPUs: ", nm->node, nm->n_cpus);
        print_cpulist(f, nm->cpus, nm->n_cpus, true);
        fputc('\n', f);
    }
}

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_ints(FILE *f, const int *v, uint32_t n)
{
    fputc('[', f);
    for (uint32_t i = 0; i < n; i++)
        fprintf(f, "%s%d", i ? "," : "", v[i]);
    fputc(']', f);
}

static void format_json(const te_topo *t, FILE *f)
{
    fputs("{\"groups\":[", f);
    for (uint32_t g = 0; g < t->n_groups; g++) {
        const te_topo_group *gr = &t->groups[g];
        fprintf(f, "%s{\"gpu\":", g ? "," : "");
        json_str(f, gr->gpu_pci);
        fprintf(f, ",\"vendor\":\"%04x\",\"device\":\"%04x\",\"cuda_ordinal\":%d,\"numa\":%d,"
                   "\"nics\":[", gr->gpu_vendor, gr->gpu_device, gr->cuda_ordinal, gr->numa);
        for (uint32_t k = 0; k < gr->n_nics; k++) {
            fputs(k ? "," : "", f);
            json_str(f, t->nics[gr->nics[k]].name);
        }
        fputs("],\"cpus\":", f);
        json_ints(f, gr->cpus, gr->n_cpus);
        fprintf(f, ",\"cpus_remote\":%s}", gr->cpus_remote ? "true" : "false");
    }
    fputs("],\"nics\":[", f);
    for (uint32_t i = 0; i < t->n_nics; i++) {
        const te_topo_nic *n = &t->nics[i];
        fputs(i ? ",{\"name\":" : "{\"name\":", f);
        json_str(f, n->name);
        fprintf(f, ",\"kind\":\"%s\",\"pci\":", te_topo_nic_kind_name(n->kind));
        json_str(f, n->pci);
        fprintf(f, ",\"vendor\":\"%04x\",\"device\":\"%04x\",\"speed_bps\":%llu,\"numa\":%d,"
                   "\"group\":%d,\"netdev\":", n->vendor, n->device,
                (unsigned long long)n->speed_bps, n->numa, n->group);
        json_str(f, n->netdev);
        fputc('}', f);
    }
    fputs("],\"numa\":[", f);
    for (uint32_t i = 0; i < t->n_numa; i++) {
        fprintf(f, "%s{\"node\":%d,\"cpus\":", i ? "," : "", t->numa[i].node);
        json_ints(f, t->numa[i].cpus, t->numa[i].n_cpus);
        fputc('}', f);
    }
    fputs("],\"cpus\":", f);
    json_ints(f, t->cpus, t->n_cpus);
    fprintf(f, ",\"ordinals_known\":%s}\n", t->ordinals_known ? "true" : "false");
}

int te_topo_format(const te_topo *topo, FILE *f, int format)
{
    te_err_clear();
    if (!topo)
        return te_err(-EINVAL, "te_topo_format: topo is NULL");
    if (!f)
        return te_err(-EINVAL, "te_topo_format: f is NULL");
    if (format == TE_TOPO_FORMAT_JSON)
        format_json(topo, f);
    else if (format == TE_TOPO_FORMAT_TEXT)
        format_text(topo, f);
    else
        return te_err(-EINVAL, "te_topo_format: format %d (expected TE_TOPO_FORMAT_TEXT or "
                               "TE_TOPO_FORMAT_JSON)", format);
    if (ferror(f))
        return te_err(-EIO, "te_topo_format: write failed");
    return 0;
}
