/* Topology placement: which NICs and CPUs go with which GPU (the grouping rule of
 * include/tendril/te_topo.h), and the te_topo result built from it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "te/topo_internal.h"

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
int topo_place_pass(ctx *c, bool rdma, size_t *load)
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
                int d = topo_common_depth(c->nics[i].d.chain, c->gpus[g].d.chain);
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
                topo_common_depth(c->nics[i].d.chain, c->nics[pick].d.chain) >= dp) {
                nl[m++] = i;
                done[i] = true;
            }
        for (size_t g = 0; g < ng; g++)
            if (elig[g] && topo_common_depth(c->gpus[g].d.chain, c->nics[pick].d.chain) >= dp)
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

/* CPU lists of every group: each node's physical cores in equal contiguous slices among
 * the node's GPUs, plus the sibling threads of each slice. */
static int place_cpus(ctx *c, const cpumask *allowed, te_topo *t, te_topo_group *groups,
                      te_topo_numa *numa)
{
    int rc = 0;
    for (size_t ni = 0; ni < c->n_nodes && rc == 0; ni++) {
        cpu_order o;
        if ((rc = topo_order_cpus(c, &c->nodes[ni].cpus, allowed, &o)) != 0)
            break;
        numa[ni].node = c->nodes[ni].node;
        numa[ni].n_cpus = (uint32_t)o.n;
        int *nc = malloc((o.n + 1) * sizeof *nc);
        if (!nc) {
            topo_order_free(&o);
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
        topo_order_free(&o);
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
        TN_LOGI("topology: GPU %s: no allowed CPU on NUMA node %d, using the whole CPU set",
                c->gpus[g].d.pci, c->gpus[g].d.numa);
    }
    return rc;
}

int topo_build(ctx *c, const cpumask *allowed, bool known, te_topo **out)
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
            if (topo_mask_has(&c->nodes[ni].cpus, i)) {
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
