/* detect_topology(): te_topo_detect as plain dicts; python/tendril/topology.py turns them
 * into pplx-style TopologyGroup / DomainInfo objects. */
#include "tendril_py.h"
#include "tendril/te_topo.h"

static PyObject *int_list(const int *v, uint32_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (uint32_t k = 0; l && k < n; k++) {
        PyObject *x = PyLong_FromLong(v[k]);
        if (!x) {
            Py_CLEAR(l);
            break;
        }
        PyList_SetItem(l, (Py_ssize_t)k, x);
    }
    return l;
}

static PyObject *u32_list(const uint32_t *v, uint32_t n)
{
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (uint32_t k = 0; l && k < n; k++) {
        PyObject *x = PyLong_FromUnsignedLong(v[k]);
        if (!x) {
            Py_CLEAR(l);
            break;
        }
        PyList_SetItem(l, (Py_ssize_t)k, x);
    }
    return l;
}

/* Appends item (stolen; NULL = building it failed) to list. 0, or -1 with an exception. */
static int append_new(PyObject *list, PyObject *item)
{
    int r = item ? PyList_Append(list, item) : -1;
    Py_XDECREF(item);
    return r;
}

static PyObject *topo_to_dict(const te_topo *t)
{
    PyObject *nics = PyList_New(0), *groups = PyList_New(0), *numa = PyList_New(0);
    if (!nics || !groups || !numa) goto fail;
    for (uint32_t k = 0; k < t->n_nics; k++) {
        const te_topo_nic *n = &t->nics[k];
        PyObject *d = Py_BuildValue("{sssssssssisisKsisi}", "name", n->name, "netdev", n->netdev, "kind",
                                    te_topo_nic_kind_name(n->kind), "pci", n->pci, "vendor", (int)n->vendor, "device",
                                    (int)n->device, "link_speed", (unsigned long long)n->speed_bps, "numa", n->numa,
                                    "group", n->group);
        if (append_new(nics, d) < 0) goto fail;
    }
    for (uint32_t g = 0; g < t->n_groups; g++) {
        const te_topo_group *gr = &t->groups[g];
        PyObject *d = Py_BuildValue("{sssisisNsNsO}", "gpu_pci", gr->gpu_pci, "cuda_device", gr->cuda_ordinal,
                                    "numa", gr->numa, "nics", u32_list(gr->nics, gr->n_nics), "cpus",
                                    int_list(gr->cpus, gr->n_cpus), "cpus_remote",
                                    gr->cpus_remote ? Py_True : Py_False);
        if (append_new(groups, d) < 0) goto fail;
    }
    for (uint32_t k = 0; k < t->n_numa; k++) {
        PyObject *d = Py_BuildValue("{sisN}", "node", t->numa[k].node, "cpus",
                                    int_list(t->numa[k].cpus, t->numa[k].n_cpus));
        if (append_new(numa, d) < 0) goto fail;
    }
    return Py_BuildValue("{sNsNsNsNsNsO}", "groups", groups, "nics", nics, "numa", numa, "unattached",
                         u32_list(t->unattached, t->n_unattached), "cpus", int_list(t->cpus, t->n_cpus),
                         "ordinals_known", t->ordinals_known ? Py_True : Py_False);
fail:
    Py_XDECREF(nics);
    Py_XDECREF(groups);
    Py_XDECREF(numa);
    return NULL;
}

PyObject *tpy_detect_topology(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"sysfs_root", "cpuset", "cuda_visible_devices", "include_net_nics", NULL};
    te_topo_options opt;
    te_topo_options_init(&opt);
    const char *root = NULL, *cpuset = NULL, *cvd = NULL;
    int net = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|zzzp:detect_topology", kwlist, &root, &cpuset, &cvd, &net))
        return NULL;
    opt.sysfs_root = root;
    opt.cpuset = cpuset;
    opt.cuda_visible_devices = cvd;
    opt.include_net_nics = net != 0;
    te_topo *t = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = te_topo_detect(&opt, &t);
    Py_END_ALLOW_THREADS
    if (r) return tpy_raise(r, "detect_topology");
    PyObject *d = topo_to_dict(t);
    te_topo_free(t);
    return d;
}
