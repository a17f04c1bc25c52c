/* Topology: CPU sets. Masks, cpulist parsing ("0-3,8"), the process's affinity set, and
 * the order in which a node's CPUs are handed out (physical cores first). */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/topo_internal.h"

/* -------------------------------------------------------------- CPU masks ---- */

int topo_mask_set(cpumask *m, int cpu)
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

bool topo_mask_has(const cpumask *m, int cpu) { return cpu >= 0 && cpu < m->n && m->b[cpu]; }

void topo_mask_free(cpumask *m)
{
    free(m->b);
    m->b = NULL;
    m->n = 0;
}

/* Parses a Linux cpulist ("0-3,8,10-11"; empty = no CPUs). -EINVAL if malformed. */
int topo_parse_cpulist(const char *s, cpumask *m)
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
            int rc = topo_mask_set(m, (int)c);
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

int topo_process_cpuset(cpumask *m)
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
                    rc = topo_mask_set(m, c);
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
/* Identifies the physical core of a CPU: the lowest thread of thread_siblings_list, else
 * (package, core_id), else the CPU itself. */
static long core_key(const ctx *c, int cpu)
{
    char path[PATHBUF], buf[1024], name[32];
    snprintf(name, sizeof name, "cpu%d", cpu);
    if (topo_path_join(path, c->root, "devices/system/cpu", name, "topology/thread_siblings_list") ==
            0 &&
        topo_read_text(path, buf, sizeof buf) == 0) {
        cpumask m = {0};
        if (topo_parse_cpulist(buf, &m) == 0) {
            for (int i = 0; i < m.n; i++)
                if (m.b[i]) {
                    topo_mask_free(&m);
                    return i;
                }
        }
        topo_mask_free(&m);
    }
    long core, pkg = 0;
    if (topo_path_join(path, c->root, "devices/system/cpu", name, "topology/core_id") == 0 &&
        topo_read_long(path, 10, &core) == 0) {
        if (topo_path_join(path, c->root, "devices/system/cpu", name,
                      "topology/physical_package_id") == 0)
            (void)topo_read_long(path, 10, &pkg);
        return -1 - (pkg * 1000000L + core); /* disjoint from CPU numbers */
    }
    return cpu;
}

int topo_order_cpus(const ctx *c, const cpumask *node, const cpumask *allowed, cpu_order *o)
{
    memset(o, 0, sizeof *o);
    size_t cnt = 0;
    for (int i = 0; i < node->n; i++)
        if (node->b[i] && topo_mask_has(allowed, i))
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
        if (node->b[i] && topo_mask_has(allowed, i)) {
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

void topo_order_free(cpu_order *o)
{
    free(o->cpu);
    free(o->key);
    memset(o, 0, sizeof *o);
}
