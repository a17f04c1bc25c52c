/* Topology detection on fake sysfs trees (tests/fixtures/topo, built by make_fixtures.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tendril/te.h"
#include "tendril/te_topo.h"

/* The fixtures sit next to this file: <tests>/unit/test_topology.c -> <tests>/fixtures/topo.
 * $TENDRIL_TOPO_FIXTURES overrides (for a build that moved the sources). */
static const char *fixture(const char *name)
{
    static char buf[PATH_MAX];
    const char *env = getenv("TENDRIL_TOPO_FIXTURES");
    if (env) {
        snprintf(buf, sizeof buf, "%s/%s", env, name);
        return buf;
    }
    const char *file = __FILE__;
    const char *cut = strstr(file, "unit/test_topology.c");
    int dir_len = cut ? (int)(cut - file) : 0;
    snprintf(buf, sizeof buf, "%.*sfixtures/topo/%s", dir_len, file, name);
    return buf;
}

static te_topo *detect_with(const char *name, const char *cpuset, const char *cvd)
{
    te_topo_options o;
    te_topo_options_init(&o);
    o.sysfs_root = fixture(name);
    o.cpuset = cpuset ? cpuset : "all";
    o.cuda_visible_devices = cvd ? cvd : "";
    if (!cvd)
        o.cuda_visible_devices = NULL;
    te_topo *t = NULL;
    int rc = te_topo_detect(&o, &t);
    if (rc)
        fprintf(stderr, "te_topo_detect(%s): %d %s\n", o.sysfs_root, rc, te_last_error());
    assert_int_equal(rc, 0);
    assert_non_null(t);
    return t;
}

static te_topo *detect(const char *name) { return detect_with(name, NULL, NULL); }

static const te_topo_nic *nic_of(const te_topo *t, uint32_t g, uint32_t k)
{
    assert_true(g < t->n_groups);
    assert_true(k < t->groups[g].n_nics);
    return &t->nics[t->groups[g].nics[k]];
}

static const te_topo_nic *nic_named(const te_topo *t, const char *name)
{
    for (uint32_t i = 0; i < t->n_nics; i++)
        if (strcmp(t->nics[i].name, name) == 0)
            return &t->nics[i];
    return NULL;
}

/* Every NIC is in exactly one group or in the unattached list, and the indices agree. */
static void check_accounting(const te_topo *t)
{
    uint32_t *seen = calloc(t->n_nics + 1, sizeof *seen);
    assert_non_null(seen);
    for (uint32_t g = 0; g < t->n_groups; g++)
        for (uint32_t k = 0; k < t->groups[g].n_nics; k++) {
            uint32_t i = t->groups[g].nics[k];
            assert_true(i < t->n_nics);
            assert_int_equal(t->nics[i].group, (int)g);
            seen[i]++;
        }
    for (uint32_t u = 0; u < t->n_unattached; u++) {
        uint32_t i = t->unattached[u];
        assert_true(i < t->n_nics);
        assert_int_equal(t->nics[i].group, -1);
        seen[i]++;
    }
    for (uint32_t i = 0; i < t->n_nics; i++)
        assert_int_equal(seen[i], 1);
    free(seen);
}

static bool has_cpu(const int *cpus, uint32_t n, int cpu)
{
    for (uint32_t i = 0; i < n; i++)
        if (cpus[i] == cpu)
            return true;
    return false;
}

/* Group g's CPUs are exactly `want` (any order). */
static void check_cpus(const te_topo *t, uint32_t g, const int *want, uint32_t n)
{
    const te_topo_group *gr = &t->groups[g];
    if (gr->n_cpus != n) {
        fprintf(stderr, "group %u: %u cpus, want %u:", g, gr->n_cpus, n);
        for (uint32_t i = 0; i < gr->n_cpus; i++)
            fprintf(stderr, " %d", gr->cpus[i]);
        fputc('\n', stderr);
    }
    assert_int_equal(gr->n_cpus, n);
    for (uint32_t i = 0; i < n; i++)
        assert_true(has_cpu(gr->cpus, gr->n_cpus, want[i]));
}

/* ------------------------------------------------------------ DGX H100-like ---- */

static void test_dgx_one_nic_per_gpu(void **state)
{
    te_topo *t = detect("dgx-h100");
    assert_int_equal(t->n_groups, 8);
    assert_int_equal(t->n_nics, 10); /* 8 CX-7, management CX-6, eno1 */
    check_accounting(t);
    for (uint32_t g = 0; g < 8; g++) {
        char want[16], netdev[16];
        snprintf(want, sizeof want, "mlx5_%u", g);
        snprintf(netdev, sizeof netdev, "ibp%us0", g);
        assert_int_equal(t->groups[g].n_nics, 1);
        const te_topo_nic *n = nic_of(t, g, 0);
        assert_string_equal(n->name, want);
        assert_int_equal(n->kind, TE_TOPO_NIC_VERBS);
        assert_int_equal(n->vendor, 0x15b3);
        assert_int_equal(n->speed_bps, 400000000000ull);
        assert_string_equal(n->netdev, netdev); /* IPoIB interface folded into the NIC */
        assert_int_equal(t->groups[g].cuda_ordinal, (int)g);
        assert_int_equal(t->groups[g].numa, g < 4 ? 0 : 1);
        assert_int_equal(n->numa, t->groups[g].numa);
        assert_int_equal(t->groups[g].gpu_vendor, 0x10de);
        assert_false(t->groups[g].cpus_remote);
    }
    /* The NVSwitch (vendor NVIDIA, bridge class) is not a GPU. The management NIC shares
     * only the root complex with GPU 0 and is left out; so is the onboard eno1. */
    assert_int_equal(t->n_unattached, 2);
    const te_topo_nic *mgmt = nic_named(t, "mlx5_8");
    assert_non_null(mgmt);
    assert_int_equal(mgmt->group, -1);
    assert_int_equal(mgmt->speed_bps, 100000000000ull);
    const te_topo_nic *eno = nic_named(t, "eno1");
    assert_non_null(eno);
    assert_int_equal(eno->kind, TE_TOPO_NIC_NET);
    assert_int_equal(eno->group, -1);
    assert_int_equal(eno->speed_bps, 1000000000ull);
    assert_null(nic_named(t, "lo"));
    assert_null(nic_named(t, "ibp0s0")); /* folded into mlx5_0 */
    assert_true(t->ordinals_known);
    assert_int_equal(t->n_numa, 2);
    assert_int_equal(t->n_cpus, 224);
    te_topo_free(t);
}

static void test_dgx_cpus_split_by_numa(void **state)
{
    te_topo *t = detect("dgx-h100");
    /* 56 cores per node, 4 GPUs per node: 14 cores each plus their sibling threads. */
    for (uint32_t g = 0; g < 8; g++) {
        const te_topo_group *gr = &t->groups[g];
        assert_int_equal(gr->n_cpus, 28);
        int first = (int)g * 14;
        for (int c = 0; c < 14; c++) {
            assert_int_equal(gr->cpus[c], first + c);           /* physical cores first */
            assert_int_equal(gr->cpus[14 + c], first + c + 112); /* then their siblings */
        }
    }
    /* The node lists: physical cores first. */
    assert_int_equal(t->numa[1].node, 1);
    assert_int_equal(t->numa[1].n_cpus, 112);
    assert_int_equal(t->numa[1].cpus[0], 56);
    assert_int_equal(t->numa[1].cpus[56], 168);
    te_topo_free(t);
}

static void test_dgx_restricted_cpuset(void **state)
{
    /* 8 cores of each node plus the siblings of node 0's cores. */
    te_topo *t = detect_with("dgx-h100", "0-7,56-63,112-119", NULL);
    int g0[] = {0, 1, 112, 113}, g3[] = {6, 7, 118, 119}, g4[] = {56, 57}, g7[] = {62, 63};
    check_cpus(t, 0, g0, 4);
    check_cpus(t, 3, g3, 4);
    check_cpus(t, 4, g4, 2);
    check_cpus(t, 7, g7, 2);
    for (uint32_t g = 0; g < 8; g++)
        for (uint32_t i = 0; i < t->groups[g].n_cpus; i++) {
            int c = t->groups[g].cpus[i];
            bool node0 = (c >= 0 && c < 56) || (c >= 112 && c < 168);
            assert_true(node0 == (g < 4)); /* CPUs from the GPU's own node */
        }
    assert_int_equal(t->n_cpus, 24);
    te_topo_free(t);

    /* Only second threads allowed: they stand in for their cores. */
    t = detect_with("dgx-h100", "112-115", NULL);
    for (uint32_t g = 0; g < 4; g++) {
        int want = 112 + (int)g;
        check_cpus(t, g, &want, 1);
    }
    /* Node 1 has no allowed CPU: its GPUs get the whole set, flagged. */
    assert_true(t->groups[5].cpus_remote);
    int all[] = {112, 113, 114, 115};
    check_cpus(t, 5, all, 4);
    te_topo_free(t);

    /* Fewer cores than GPUs on a node: GPUs share, none is left without a CPU. */
    t = detect_with("dgx-h100", "0-1,56-111", NULL);
    int c0 = 0, c1 = 1;
    check_cpus(t, 0, &c0, 1);
    check_cpus(t, 1, &c1, 1);
    check_cpus(t, 2, &c0, 1);
    check_cpus(t, 3, &c1, 1);
    te_topo_free(t);
}

static void test_dgx_cuda_visible_devices(void **state)
{
    te_topo *t = detect_with("dgx-h100", NULL, "3,1");
    for (uint32_t g = 0; g < 8; g++)
        assert_int_equal(t->groups[g].cuda_ordinal, g == 3 ? 0 : g == 1 ? 1 : -1);
    /* Hidden GPUs keep their NICs: placement does not depend on visibility. */
    assert_string_equal(nic_of(t, 0, 0)->name, "mlx5_0");
    assert_true(t->ordinals_known);
    te_topo_free(t);

    /* Like CUDA, the list ends at the first invalid entry. */
    t = detect_with("dgx-h100", NULL, "0, 2,9,5");
    assert_int_equal(t->groups[0].cuda_ordinal, 0);
    assert_int_equal(t->groups[2].cuda_ordinal, 1);
    assert_int_equal(t->groups[5].cuda_ordinal, -1);
    te_topo_free(t);

    t = detect_with("dgx-h100", NULL, "");
    for (uint32_t g = 0; g < 8; g++)
        assert_int_equal(t->groups[g].cuda_ordinal, -1);
    te_topo_free(t);

    /* UUID form: ordinals unknown. */
    t = detect_with("dgx-h100", NULL, "GPU-8f6c1a2e-0000-0000-0000-000000000000");
    assert_false(t->ordinals_known);
    for (uint32_t g = 0; g < 8; g++)
        assert_int_equal(t->groups[g].cuda_ordinal, -1);
    te_topo_free(t);

    /* From the environment when the option is NULL. */
    char *saved = getenv("CUDA_VISIBLE_DEVICES") ? strdup(getenv("CUDA_VISIBLE_DEVICES"))
                                                 : NULL;
    setenv("CUDA_VISIBLE_DEVICES", "7", 1);
    t = detect_with("dgx-h100", NULL, NULL);
    assert_int_equal(t->groups[7].cuda_ordinal, 0);
    assert_int_equal(t->groups[0].cuda_ordinal, -1);
    te_topo_free(t);
    if (saved) {
        setenv("CUDA_VISIBLE_DEVICES", saved, 1);
        free(saved);
    } else {
        unsetenv("CUDA_VISIBLE_DEVICES");
    }
}

static void test_dgx_keep_rdma_netdevs(void **state)
{
    te_topo_options o;
    te_topo_options_init(&o);
    o.sysfs_root = fixture("dgx-h100");
    o.cpuset = "all";
    o.keep_rdma_netdevs = true;
    te_topo *t;
    assert_int_equal(te_topo_detect(&o, &t), 0);
    assert_int_equal(t->n_nics, 19); /* + 8 IPoIB + the management NIC's netdev */
    const te_topo_nic *ib = nic_named(t, "ibp0s0");
    assert_non_null(ib);
    assert_int_equal(ib->kind, TE_TOPO_NIC_NET);
    assert_int_equal(ib->group, -1); /* GPUs with an RDMA NIC take no net NIC */
    for (uint32_t g = 0; g < 8; g++)
        assert_int_equal(t->groups[g].n_nics, 1);
    check_accounting(t);
    te_topo_free(t);

    o.keep_rdma_netdevs = false;
    o.include_net_nics = false;
    assert_int_equal(te_topo_detect(&o, &t), 0);
    assert_int_equal(t->n_nics, 9);
    assert_null(nic_named(t, "eno1"));
    te_topo_free(t);
}

/* ------------------------------------------------------------------ EFA boxes ---- */

static void check_efa_box(const char *name, uint32_t per_gpu)
{
    te_topo *t = detect(name);
    assert_int_equal(t->n_groups, 8);
    assert_int_equal(t->n_nics, 8 * per_gpu + 1);
    check_accounting(t);
    for (uint32_t g = 0; g < 8; g++) {
        const te_topo_group *gr = &t->groups[g];
        assert_int_equal(gr->n_nics, per_gpu);
        for (uint32_t k = 0; k < per_gpu; k++) {
            const te_topo_nic *n = nic_of(t, g, k);
            assert_int_equal(n->kind, TE_TOPO_NIC_EFA);
            assert_int_equal(n->vendor, 0x1d0f);
            assert_true(strncmp(n->name, "rdmap", 5) == 0);
            /* numa_node -1 on the EFA function: taken from its bridges. */
            assert_int_equal(n->numa, gr->numa);
            /* Contiguous PCI runs: each NIC sits after the GPU on the switch. */
            assert_true(strcmp(n->pci, gr->gpu_pci) > 0);
            if (g + 1 < 8 && g % 2 == 0)
                assert_true(strcmp(n->pci, t->groups[g + 1].gpu_pci) < 0);
        }
        assert_int_equal(gr->numa, g < 4 ? 0 : 1);
        assert_int_equal(gr->n_cpus, 24); /* 48 cores / 4 GPUs, plus siblings */
    }
    const te_topo_nic *ena = nic_named(t, "enp39s0");
    assert_non_null(ena);
    assert_int_equal(ena->kind, TE_TOPO_NIC_NET);
    assert_int_equal(ena->group, -1);
    assert_int_equal(ena->speed_bps, 100000000000ull);
    assert_int_equal(t->n_unattached, 1);
    te_topo_free(t);
}

static void test_p5en_two_efa_per_gpu(void **state) { check_efa_box("p5en", 2); }
static void test_p5_four_efa_per_gpu(void **state) { check_efa_box("p5", 4); }

static void test_p5en_odd_remainder_not_dropped(void **state)
{
    /* One EFA missing on the first switch: 3 NICs for 2 GPUs -> 2 and 1. */
    te_topo *t = detect("p5en-odd");
    check_accounting(t);
    assert_int_equal(t->groups[0].n_nics, 2);
    assert_int_equal(t->groups[1].n_nics, 1);
    for (uint32_t g = 2; g < 8; g++)
        assert_int_equal(t->groups[g].n_nics, 2);
    assert_int_equal(t->n_unattached, 1); /* only the ENA */
    te_topo_free(t);
}

/* ---------------------------------------------------------- boxes without RDMA ---- */

static void test_plain_box_no_gpus(void **state)
{
    te_topo *t = detect("plain");
    assert_int_equal(t->n_groups, 0);
    assert_int_equal(t->n_nics, 2);
    check_accounting(t);
    assert_int_equal(t->n_unattached, 2);
    const te_topo_nic *e1 = nic_named(t, "eno1"), *e2 = nic_named(t, "eno2");
    assert_non_null(e1);
    assert_non_null(e2);
    assert_int_equal(e1->kind, TE_TOPO_NIC_NET);
    assert_int_equal(e2->kind, TE_TOPO_NIC_NET);
    assert_string_equal(e2->pci, "0000:01:00.1");
    assert_int_equal(e1->speed_bps, 10000000000ull);
    assert_int_equal(e2->speed_bps, 0); /* speed -1: link down */
    assert_null(nic_named(t, "docker0"));
    assert_int_equal(t->n_numa, 1);
    assert_int_equal(t->numa[0].n_cpus, 8);
    assert_int_equal(t->numa[0].cpus[0], 0);
    assert_int_equal(t->numa[0].cpus[1], 1);
    assert_int_equal(t->numa[0].cpus[4], 4); /* siblings of 0..3 after the cores */
    te_topo_free(t);
}

static void test_gpu_vm_net_only(void **state)
{
    te_topo *t = detect("gpu-vm");
    assert_int_equal(t->n_groups, 2);
    assert_int_equal(t->n_nics, 1);
    check_accounting(t);
    const te_topo_nic *eth = nic_named(t, "eth0");
    assert_non_null(eth);
    assert_int_equal(eth->kind, TE_TOPO_NIC_NET);
    assert_string_equal(eth->pci, "0000:00:03.0"); /* via its virtio device */
    assert_int_equal(eth->speed_bps, 0);
    /* numa_node -1 everywhere: node 0. The only NIC goes to the first GPU by NUMA. */
    assert_int_equal(t->groups[0].numa, 0);
    assert_int_equal(t->groups[1].numa, 0);
    assert_int_equal(eth->group, 0);
    assert_int_equal(t->groups[1].n_nics, 0);
    assert_string_equal(t->groups[0].gpu_pci, "0000:00:06.0");
    /* core_id only (no SMT): 8 CPUs each. */
    int g0[] = {0, 1, 2, 3, 4, 5, 6, 7}, g1[] = {8, 9, 10, 11, 12, 13, 14, 15};
    check_cpus(t, 0, g0, 8);
    check_cpus(t, 1, g1, 8);
    te_topo_free(t);

    /* Restricted to 4 CPUs, like a container. */
    t = detect_with("gpu-vm", "2,3,9,10", NULL);
    int r0[] = {2, 3}, r1[] = {9, 10};
    check_cpus(t, 0, r0, 2);
    check_cpus(t, 1, r1, 2);
    te_topo_free(t);
}

static void test_mixed_switch_and_numa(void **state)
{
    char *saved = getenv("CUDA_DEVICE_ORDER") ? strdup(getenv("CUDA_DEVICE_ORDER")) : NULL;
    unsetenv("CUDA_DEVICE_ORDER");
    te_topo *t = detect("mixed");
    check_accounting(t);
    assert_int_equal(t->n_groups, 3);
    /* GPU0 has a private NIC behind a leaf switch; the two NICs on the shared switch are
     * balanced against it: GPU0 2, GPU1 1. */
    assert_int_equal(t->groups[0].n_nics, 2);
    assert_string_equal(nic_of(t, 0, 0)->name, "mlx5_0");
    assert_string_equal(nic_of(t, 0, 1)->name, "mlx5_1");
    assert_int_equal(t->groups[1].n_nics, 1);
    assert_string_equal(nic_of(t, 1, 0)->name, "mlx5_2");
    /* The L40S (VGA class) on node 1 gets node 1's NIC from another root complex. */
    assert_int_equal(t->groups[2].gpu_device, 0x26b9);
    assert_int_equal(t->groups[2].n_nics, 1);
    assert_string_equal(nic_of(t, 2, 0)->name, "mlx5_3");
    assert_int_equal(nic_named(t, "eno1")->group, -1);
    /* Two GPU models without CUDA_DEVICE_ORDER=PCI_BUS_ID: ordinals are a guess. */
    assert_false(t->ordinals_known);
    te_topo_free(t);

    setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", 1);
    t = detect("mixed");
    assert_true(t->ordinals_known);
    assert_int_equal(t->groups[2].cuda_ordinal, 2);
    te_topo_free(t);
    if (saved) {
        setenv("CUDA_DEVICE_ORDER", saved, 1);
        free(saved);
    } else {
        unsetenv("CUDA_DEVICE_ORDER");
    }
}

/* ------------------------------------------------------------------- errors ---- */

static void test_errors(void **state)
{
    te_topo *t = (te_topo *)0x1;
    te_topo_options o;
    te_topo_options_init(&o);
    o.sysfs_root = "/nonexistent/tendril-topo-test";
    assert_int_equal(te_topo_detect(&o, &t), -ENOENT);
    assert_null(t);
    assert_non_null(strstr(te_last_error(), "/nonexistent/tendril-topo-test"));

    /* An existing directory with nothing in it. */
    char dir[] = "/tmp/tendril-topo-XXXXXX";
    assert_non_null(mkdtemp(dir));
    o.sysfs_root = dir;
    assert_int_equal(te_topo_detect(&o, &t), -ENOENT);
    assert_non_null(strstr(te_last_error(), "nothing readable"));

    /* A partial tree: one node with a garbled cpulist, a dangling PCI link. Tolerated. */
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/devices", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/devices/system", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/devices/system/node", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/devices/system/node/node0", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(path, sizeof path, "%s/devices/system/node/node0/cpulist", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("zz-\n", f);
    fclose(f);
    o.cpuset = "all";
    assert_int_equal(te_topo_detect(&o, &t), 0);
    assert_int_equal(t->n_groups, 0);
    assert_int_equal(t->n_numa, 1);
    te_topo_free(t);
    unlink(path);
    snprintf(path, sizeof path, "%s/devices/system/node/node0", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/devices/system/node", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/devices/system", dir);
    rmdir(path);
    snprintf(path, sizeof path, "%s/devices", dir);
    rmdir(path);
    rmdir(dir);

    te_topo_options_init(&o);
    o.sysfs_root = fixture("plain");
    o.cpuset = "1-x";
    assert_int_equal(te_topo_detect(&o, &t), -EINVAL);
    assert_non_null(strstr(te_last_error(), "cpuset"));

    te_topo_options_init(&o);
    o.struct_size = 0;
    assert_int_equal(te_topo_detect(&o, &t), -EINVAL);
    assert_non_null(strstr(te_last_error(), "struct_size"));
    assert_int_equal(te_topo_detect(NULL, NULL), -EINVAL);

    te_topo_free(NULL);
}

static void test_format(void **state)
{
    te_topo *t = detect("p5en");
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    assert_non_null(m);
    assert_int_equal(te_topo_format(t, m, TE_TOPO_FORMAT_TEXT), 0);
    fclose(m);
    assert_non_null(strstr(buf, "rdmap20s0(efa,200G)"));
    assert_non_null(strstr(buf, "0-11,96-107"));
    free(buf);

    m = open_memstream(&buf, &len);
    assert_int_equal(te_topo_format(t, m, TE_TOPO_FORMAT_JSON), 0);
    fclose(m);
    assert_true(len > 2 && buf[0] == '{' && buf[len - 2] == '}');
    assert_non_null(strstr(buf, "\"kind\":\"efa\""));
    assert_non_null(strstr(buf, "\"nics\":[\"rdmap20s0\",\"rdmap21s0\"]"));
    free(buf);

    assert_int_equal(te_topo_format(t, stdout, 7), -EINVAL);
    assert_int_equal(te_topo_format(NULL, stdout, 0), -EINVAL);
    assert_string_equal(te_topo_nic_kind_name(TE_TOPO_NIC_NET), "net");
    te_topo_free(t);
}

/* The machine running the tests: whatever it has, detection succeeds. */
static void test_this_machine(void **state)
{
    te_topo *t = NULL;
    int rc = te_topo_detect(NULL, &t);
    if (rc == -ENOENT)
        skip(); /* no sysfs (an unusual container) */
    assert_int_equal(rc, 0);
    check_accounting(t);
    for (uint32_t g = 0; g < t->n_groups; g++)
        assert_true(t->groups[g].n_cpus > 0);
    te_topo_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dgx_one_nic_per_gpu),
        cmocka_unit_test(test_dgx_cpus_split_by_numa),
        cmocka_unit_test(test_dgx_restricted_cpuset),
        cmocka_unit_test(test_dgx_cuda_visible_devices),
        cmocka_unit_test(test_dgx_keep_rdma_netdevs),
        cmocka_unit_test(test_p5en_two_efa_per_gpu),
        cmocka_unit_test(test_p5_four_efa_per_gpu),
        cmocka_unit_test(test_p5en_odd_remainder_not_dropped),
        cmocka_unit_test(test_plain_box_no_gpus),
        cmocka_unit_test(test_gpu_vm_net_only),
        cmocka_unit_test(test_mixed_switch_and_numa),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_this_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
