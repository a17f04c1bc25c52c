/* Topology detection from sysfs: finds the GPUs, NICs (RDMA and ordinary), NUMA nodes
 * and CPUs, then hands them to placement (topo_place.c). te_topo_detect is the entry.
 * The rules are stated in include/tendril/te_topo.h and docs/topology.md. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "te/topo_internal.h"

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
    return topo_pci_cmp(((const gpu *)a)->d.pci, ((const gpu *)b)->d.pci);
}

static int find_gpus(ctx *c)
{
    char dir[PATHBUF], path[PATHBUF];
    if (topo_path_join(dir, c->root, "bus/pci/devices", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (topo_list_dir(dir, &ns) != 0) {
        TN_LOGD("topology: %s unreadable: no GPUs", dir);
        return 0;
    }
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        long cls, vendor;
        if (topo_path_join(path, dir, ns.v[i], "class", NULL) || topo_read_long(path, 16, &cls) ||
            topo_path_join(path, dir, ns.v[i], "vendor", NULL) || topo_read_long(path, 16, &vendor))
            continue;
        if (!is_gpu((uint32_t)cls, (uint16_t)vendor))
            continue;
        gpu g;
        memset(&g, 0, sizeof g);
        g.ordinal = -1;
        if (topo_path_join(path, dir, ns.v[i], NULL, NULL) || topo_resolve_pci(path, &g.d) != 0) {
            TN_LOGD("topology: GPU %s: cannot resolve its PCI path", ns.v[i]);
            continue;
        }
        gpu *nv = realloc(c->gpus, (c->n_gpus + 1) * sizeof *nv);
        if (!nv) {
            topo_pdev_free(&g.d);
            rc = -ENOMEM;
            break;
        }
        c->gpus = nv;
        c->gpus[c->n_gpus++] = g;
    }
    topo_names_free(&ns);
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
        TN_LOGW("topology: mixed NVIDIA GPU models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: "
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
        TN_LOGW("topology: CUDA_VISIBLE_DEVICES='%s' is not an integer list: "
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
    int r = topo_pci_cmp(x->pub.pci, y->pub.pci);
    return r ? r : strcmp(x->pub.name, y->pub.name);
}

static int add_nic(ctx *c, nic *n)
{
    nic *nv = realloc(c->nics, (c->n_nics + 1) * sizeof *nv);
    if (!nv) {
        topo_pdev_free(&n->d);
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
    if (topo_path_join(dir, c->root, "class/infiniband", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (topo_list_dir(dir, &ns) != 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        nic n;
        memset(&n, 0, sizeof n);
        n.d.numa = -1;
        copy_name(n.pub.name, ns.v[i]);
        if (topo_path_join(path, dir, ns.v[i], "device", NULL) == 0 && topo_resolve_pci(path, &n.d) == 0) {
            snprintf(n.pub.pci, sizeof n.pub.pci, "%s", n.d.pci);
        } else {
            /* A software device (rxe) or a partial tree: kept, placed by NUMA only. */
            TN_LOGD("topology: RDMA device %s has no PCI function", ns.v[i]);
            if (!(n.d.chain = strdup(""))) {
                rc = -ENOMEM;
                break;
            }
        }
        n.pub.vendor = n.d.vendor;
        n.pub.device = n.d.device;
        bool efa = n.d.vendor == 0x1d0f;
        if (n.d.pcidir && topo_path_join(path, n.d.pcidir, "driver", NULL, NULL) == 0) {
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
        if (topo_path_join(pdir, dir, ns.v[i], "ports", NULL) == 0 && topo_list_dir(pdir, &ports) == 0) {
            const char *first = NULL;
            long best = LONG_MAX;
            for (size_t k = 0; k < ports.n; k++) {
                long pn = strtol(ports.v[k], NULL, 10);
                if (pn < best) {
                    best = pn;
                    first = ports.v[k];
                }
            }
            if (first && topo_path_join(path, pdir, first, "rate", NULL) == 0 &&
                topo_read_text(path, buf, sizeof buf) == 0)
                n.pub.speed_bps = parse_rate(buf);
            topo_names_free(&ports);
        }
        rc = add_nic(c, &n);
    }
    topo_names_free(&ns);
    return rc;
}

static int find_net_nics(ctx *c, const te_topo_options *o)
{
    char dir[PATHBUF], path[PATHBUF];
    if (topo_path_join(dir, c->root, "class/net", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    if (topo_list_dir(dir, &ns) != 0)
        return 0;
    size_t n_rdma = c->n_nics;
    int rc = 0;
    for (size_t i = 0; i < ns.n && rc == 0; i++) {
        nic n;
        memset(&n, 0, sizeof n);
        if (topo_path_join(path, dir, ns.v[i], "device", NULL) || topo_resolve_pci(path, &n.d) != 0)
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
            topo_pdev_free(&n.d);
            continue;
        }
        copy_name(n.pub.name, ns.v[i]);
        snprintf(n.pub.pci, sizeof n.pub.pci, "%s", n.d.pci);
        n.pub.kind = TE_TOPO_NIC_NET;
        n.pub.vendor = n.d.vendor;
        n.pub.device = n.d.device;
        long mbps;
        if (topo_path_join(path, dir, ns.v[i], "speed", NULL) == 0 && topo_read_long(path, 10, &mbps) == 0 &&
            mbps > 0)
            n.pub.speed_bps = (uint64_t)mbps * 1000000u;
        rc = add_nic(c, &n);
    }
    topo_names_free(&ns);
    return rc;
}

/* ------------------------------------------------------------ NUMA / CPUs ---- */

static int find_numa(ctx *c, bool *any)
{
    char dir[PATHBUF], path[PATHBUF], buf[4096];
    if (topo_path_join(dir, c->root, "devices/system/node", NULL, NULL))
        return -ENAMETOOLONG;
    names ns;
    int rc = 0;
    if (topo_list_dir(dir, &ns) == 0) {
        *any = true;
        for (size_t i = 0; i < ns.n && rc == 0; i++) {
            const char *s = ns.v[i];
            if (strncmp(s, "node", 4) != 0 || !isdigit((unsigned char)s[4]))
                continue;
            numa_node nn = {.node = atoi(s + 4)};
            if (topo_path_join(path, dir, s, "cpulist", NULL) == 0 &&
                topo_read_text(path, buf, sizeof buf) == 0 && topo_parse_cpulist(buf, &nn.cpus) != 0)
                TN_LOGW("topology: %s: unreadable cpulist '%s'", path, buf);
            numa_node *nv = realloc(c->nodes, (c->n_nodes + 1) * sizeof *nv);
            if (!nv) {
                topo_mask_free(&nn.cpus);
                rc = -ENOMEM;
                break;
            }
            c->nodes = nv;
            c->nodes[c->n_nodes++] = nn;
        }
        topo_names_free(&ns);
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
        if (topo_path_join(path, c->root, "devices/system/cpu/online", NULL, NULL) == 0 &&
            topo_read_text(path, buf, sizeof buf) == 0) {
            *any = true;
            if (topo_parse_cpulist(buf, &nn.cpus) != 0)
                TN_LOGW("topology: %s: unreadable cpulist '%s'", path, buf);
        }
        if (!(c->nodes = malloc(sizeof *c->nodes))) {
            topo_mask_free(&nn.cpus);
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
/* ---------------------------------------------------------------- result ---- */

static void ctx_free(ctx *c)
{
    for (size_t i = 0; i < c->n_gpus; i++)
        topo_pdev_free(&c->gpus[i].d);
    for (size_t i = 0; i < c->n_nics; i++)
        topo_pdev_free(&c->nics[i].d);
    for (size_t i = 0; i < c->n_nodes; i++)
        topo_mask_free(&c->nodes[i].cpus);
    free(c->gpus);
    free(c->nics);
    free(c->nodes);
}

void te_topo_options_init(te_topo_options *opt)
{
    if (!opt)
        return;
    memset(opt, 0, sizeof *opt);
    opt->struct_size = sizeof *opt;
    opt->include_net_nics = true;
}

int te_topo_detect(const te_topo_options *opt_in, te_topo **out)
{
    tn_err_clear();
    if (!out)
        return tn_err(-EINVAL, "te_topo_detect: out is NULL");
    *out = NULL;
    te_topo_options opt;
    te_topo_options_init(&opt);
    if (opt_in) {
        if (opt_in->struct_size == 0 || opt_in->struct_size > sizeof opt)
            return tn_err(-EINVAL, "te_topo_options.struct_size: %zu (expected 1..%zu; call "
                                   "te_topo_options_init)", opt_in->struct_size, sizeof opt);
        memcpy(&opt, opt_in, opt_in->struct_size);
    }
    const char *root = opt.sysfs_root ? opt.sysfs_root : "/sys";
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
        return tn_err(-ENOENT, "te_topo_options.sysfs_root: '%s' is not a readable directory",
                      root);

    cpumask allowed = {0};
    bool restricted = true;
    int rc;
    if (opt.cpuset && strcmp(opt.cpuset, "all") == 0) {
        restricted = false;
    } else if (opt.cpuset) {
        if ((rc = topo_parse_cpulist(opt.cpuset, &allowed)) != 0) {
            topo_mask_free(&allowed);
            return rc == -ENOMEM ? tn_err(rc, "te_topo_detect: out of memory")
                                 : tn_err(-EINVAL, "te_topo_options.cpuset: '%s' is not a "
                                                   "cpulist such as \"0-3,8\"", opt.cpuset);
        }
    } else if ((rc = topo_process_cpuset(&allowed)) != 0) {
        topo_mask_free(&allowed);
        return tn_err(rc, "te_topo_detect: sched_getaffinity failed");
    }

    ctx c;
    memset(&c, 0, sizeof c);
    c.root = root;
    bool any = false;
    char probe[PATHBUF];
    static const char *const parts[] = {"bus/pci/devices", "class/net", "class/infiniband"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (topo_path_join(probe, root, parts[i], NULL, NULL) == 0 && access(probe, R_OK | X_OK) == 0)
            any = true;
    if ((rc = find_numa(&c, &any)) != 0)
        goto fail;
    if (!any) {
        rc = tn_err(-ENOENT, "te_topo_detect: nothing readable under '%s' (no bus/pci/devices, "
                             "class/net, class/infiniband or devices/system/node)", root);
        goto fail;
    }
    if (!restricted) {
        for (size_t ni = 0; ni < c.n_nodes && rc == 0; ni++)
            for (int i = 0; i < c.nodes[ni].cpus.n && rc == 0; i++)
                if (c.nodes[ni].cpus.b[i])
                    rc = topo_mask_set(&allowed, i);
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
    rc = topo_place_pass(&c, true, load);
    if (rc == 0)
        rc = topo_place_pass(&c, false, load);
    free(load);
    if (rc == 0)
        rc = topo_build(&c, &allowed, known, out);
    if (rc)
        goto fail;
    TN_LOGD("topology: %zu GPUs, %zu NICs, %zu NUMA nodes under %s", c.n_gpus, c.n_nics,
            c.n_nodes, root);
    ctx_free(&c);
    topo_mask_free(&allowed);
    return 0;
fail:
    ctx_free(&c);
    topo_mask_free(&allowed);
    if (rc == -ENOMEM)
        return tn_err(rc, "te_topo_detect: out of memory");
    return rc;
}
