/* TransferEngine: the type, its lifecycle (creation, stop, teardown) and its properties.
 * Its methods live by concern in py_engine_memory.c, py_engine_submit.c,
 * py_engine_imm.c, py_imm_counter.c and py_watcher.c (py_engine.h). */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "py_engine.h"

PyObject *TpEngine;

static eng_state *live_engines;       /* GIL-protected */
static atomic_int async_destroys;     /* helper threads still destroying engines */

/* Without a max_msg_size from the caller, submit_send is capped only by what the
 * receiver posted (pplx-garden has no cap): the engine gets the largest value it takes. */
#define NO_SEND_CAP UINT32_MAX


static void live_remove(eng_state *st)
{
    for (eng_state **pp = &live_engines; *pp; pp = &(*pp)->next_live)
        if (*pp == st) {
            *pp = st->next_live;
            return;
        }
}

/* Frees the state's Python references and contexts. GIL held; the engine is destroyed. */
static void state_free(eng_state *st)
{
    Py_CLEAR(st->imm_cb);
    Py_CLEAR(st->peer_cb);
    Py_CLEAR(st->registry);
    while (st->exps) {
        exp_ctx *x = st->exps;
        st->exps = x->next;
        Py_XDECREF(x->cb);
        free(x);
    }
    while (st->watchers) {
        watch_ctx *x = st->watchers;
        st->watchers = x->next;
        Py_XDECREF(x->cb);
        free(x);
    }
    while (st->pools) {
        pool_ctx *p = st->pools;
        st->pools = p->next;
        Py_XDECREF(p->on_recv);
        Py_XDECREF(p->on_error);
        free(p);
    }
    free(st);
}

typedef struct async_destroy {
    eng_state *st;
    deferred *later;
} async_destroy;

static void *async_destroy_main(void *arg)
{
    async_destroy *a = arg;
    te_engine_destroy(a->st->e); /* runs the remaining callbacks (they take the GIL) */
    a->st->e = NULL;
    PyGILState_STATE g = PyGILState_Ensure();
    while (a->later) {
        deferred *d = a->later;
        a->later = d->next;
        if (d->view) {
            PyBuffer_Release(d->view);
            free(d->view);
        }
        Py_XDECREF(d->owner);
        free(d);
    }
    state_free(a->st);
    PyGILState_Release(g);
    free(a);
    atomic_fetch_sub(&async_destroys, 1);
    return NULL;
}

/* Stops and destroys the engine of st and frees st. GIL held. */
static void engine_teardown(eng_state *st)
{
    live_remove(st);
    if ((tpy_tl_in_callback == st) && !st->stopped) {
        /* Last reference dropped inside one of this engine's callbacks: the callback
         * thread cannot stop its own engine, so a helper thread does. */
        async_destroy *a = calloc(1, sizeof *a);
        pthread_t t;
        if (a) {
            a->st = st;
            tpy_detach_handles(st, false, &a->later);
            atomic_fetch_add(&async_destroys, 1);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            int r = pthread_create(&t, &attr, async_destroy_main, a);
            pthread_attr_destroy(&attr);
            if (r == 0) return;
            atomic_fetch_sub(&async_destroys, 1);
        }
        /* no thread: leak the engine (it keeps running) rather than deadlock */
        free(a);
        return;
    }
    if (!st->stopped) {
        Py_BEGIN_ALLOW_THREADS
        te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
        st->stopped = true;
    }
    tpy_detach_handles(st, true, NULL);
    te_engine_destroy(st->e);
    st->e = NULL;
    state_free(st);
}

PyObject *tpy_stop_all(PyObject *self, PyObject *unused)
{
    /* atexit: stop every engine before the interpreter finalizes, so that no callback
     * thread asks for the GIL of a dying interpreter. */
    for (;;) {
        eng_state *st = live_engines;
        while (st && st->stopped) st = st->next_live;
        if (!st) break;
        st->stopped = true;
        Py_BEGIN_ALLOW_THREADS
        te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
    }
    for (int k = 0; k < 1000 && atomic_load(&async_destroys) > 0; k++) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

/* =========================================================== TransferEngine === */

eng_state *tpy_engine_state(PyObject *self)
{
    eng_state *st = ((PyEngine *)self)->st;
    if (!st) PyErr_SetString(ExcStoppedError, "TransferEngine was not initialized");
    return st;
}

static PyObject *engine_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyEngine *o = (PyEngine *)alloc(tp, 0);
    if (o) o->st = NULL;
    return (PyObject *)o;
}

/* groups: sequence of (cuda_device, nics, worker_cpu) where nics is a NIC count or a
 * sequence of names (None = chosen by the provider). `keep` collects the str objects
 * whose UTF-8 buffers the config points into. */
static int parse_groups(PyObject *groups, te_config *cfg, PyObject *keep)
{
    Py_ssize_t n = PySequence_Size(groups);
    if (n < 0) return -1;
    if (n > TE_MAX_GROUPS) {
        PyErr_Format(PyExc_ValueError, "groups: at most %d groups (got %zd)", TE_MAX_GROUPS, n);
        return -1;
    }
    cfg->n_groups = (uint32_t)n;
    for (Py_ssize_t g = 0; g < n; g++) {
        PyObject *item = PySequence_GetItem(groups, g);
        PyObject *tup = item ? PySequence_Tuple(item) : NULL;
        Py_XDECREF(item);
        if (!tup) return -1;
        int dev = TE_DEVICE_HOST, cpu = -1;
        PyObject *nics = Py_None;
        int ok = PyArg_ParseTuple(tup, "iO|i;groups[i] must be (cuda_device, nics, worker_cpu)", &dev, &nics, &cpu);
        if (ok) ok = PyList_Append(keep, tup) == 0; /* keeps `nics` alive */
        Py_DECREF(tup);
        if (!ok) return -1;
        te_group_config *gc = &cfg->groups[g];
        gc->cuda_device = dev;
        gc->worker_cpu = cpu;
        if (PyLong_Check(nics)) {
            long c = PyLong_AsLong(nics);
            if (c < 1 || c > TE_MAX_NICS) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "groups[%zd]: NIC count must be 1..%d (got %ld)", g, TE_MAX_NICS, c);
                return -1;
            }
            gc->n_nics = (uint32_t)c;
            continue;
        }
        if (nics == Py_None) {
            gc->n_nics = 1;
            continue;
        }
        if (PyUnicode_Check(nics)) {
            PyErr_Format(PyExc_TypeError, "groups[%zd]: nics must be a list of names, not a str", g);
            return -1;
        }
        Py_ssize_t m = PySequence_Size(nics);
        if (m < 0) return -1;
        if (m < 1 || m > TE_MAX_NICS) {
            PyErr_Format(PyExc_ValueError, "groups[%zd]: 1..%d NICs per group (got %zd)", g, TE_MAX_NICS, m);
            return -1;
        }
        gc->n_nics = (uint32_t)m;
        for (Py_ssize_t k = 0; k < m; k++) {
            PyObject *name = PySequence_GetItem(nics, k);
            if (!name) return -1;
            if (name == Py_None) {
                gc->nics[k] = NULL;
            } else if (PyUnicode_Check(name)) {
                gc->nics[k] = PyUnicode_AsUTF8AndSize(name, NULL);
                if (!gc->nics[k] || PyList_Append(keep, name) < 0) {
                    Py_DECREF(name);
                    return -1;
                }
            } else {
                PyErr_Format(PyExc_TypeError, "groups[%zd]: NIC names must be str or None", g);
                Py_DECREF(name);
                return -1;
            }
            Py_DECREF(name);
        }
    }
    return 0;
}

static int engine_init(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"provider", "groups", "op_timeout_ms", "max_msg_size", "busy_poll", NULL};
    PyEngine *o = (PyEngine *)self;
    const char *provider = NULL;
    PyObject *groups = Py_None, *max_msg_obj = Py_None;
    uint32_t op_timeout = 0, max_msg = NO_SEND_CAP;
    int busy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$zOO&Op:TransferEngine", kwlist, &provider, &groups, tpy_conv_u32,
                                     &op_timeout, &max_msg_obj, &busy))
        return -1;
    if (max_msg_obj != Py_None && !tpy_conv_u32(max_msg_obj, &max_msg)) return -1;
    if (o->st) {
        PyErr_SetString(PyExc_RuntimeError, "TransferEngine is already initialized");
        return -1;
    }
    te_config cfg;
    te_config_init(&cfg);
    if (provider) cfg.provider = provider;
    cfg.op_timeout_ms = op_timeout;
    cfg.max_msg_size = max_msg;
    cfg.busy_poll = busy != 0;
    PyObject *keep = PyList_New(0);
    if (!keep) return -1;
    if (groups != Py_None && parse_groups(groups, &cfg, keep) < 0) {
        Py_DECREF(keep);
        return -1;
    }
    te_engine *e = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = te_engine_create(&cfg, &e);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (r) {
        tpy_raise(r, "TransferEngine");
        return -1;
    }
    eng_state *st = calloc(1, sizeof *st);
    PyObject *reg = st ? PyDict_New() : NULL;
    if (!reg) {
        free(st);
        Py_BEGIN_ALLOW_THREADS
        te_engine_destroy(e);
        Py_END_ALLOW_THREADS
        PyErr_NoMemory();
        return -1;
    }
    st->e = e;
    st->registry = reg;
    st->next_live = live_engines;
    live_engines = st;
    o->st = st;
    return 0;
}

static int engine_traverse(PyObject *self, visitproc visit, void *arg)
{
    eng_state *st = ((PyEngine *)self)->st;
    Py_VISIT(Py_TYPE(self));
    if (!st) return 0;
    Py_VISIT(st->imm_cb);
    Py_VISIT(st->peer_cb);
    for (exp_ctx *x = st->exps; x; x = x->next) Py_VISIT(x->cb);
    for (watch_ctx *x = st->watchers; x; x = x->next) Py_VISIT(x->cb);
    for (pool_ctx *p = st->pools; p; p = p->next) {
        Py_VISIT(p->on_recv);
        Py_VISIT(p->on_error);
    }
    return 0;
}

static int engine_clear(PyObject *self)
{
    /* Only reached for an unreachable engine (a cycle through its callbacks): drop the
     * callables; the engine itself is torn down by dealloc. */
    eng_state *st = ((PyEngine *)self)->st;
    if (!st) return 0;
    if (st->imm_cb && !st->stopped) te_imm_set_callback(st->e, NULL, NULL);
    if (st->peer_cb && !st->stopped) te_peer_set_callback(st->e, NULL, NULL);
    Py_CLEAR(st->imm_cb);
    Py_CLEAR(st->peer_cb);
    for (exp_ctx *x = st->exps; x; x = x->next) Py_CLEAR(x->cb);
    for (watch_ctx *x = st->watchers; x; x = x->next) Py_CLEAR(x->cb);
    for (pool_ctx *p = st->pools; p; p = p->next) {
        Py_CLEAR(p->on_recv);
        Py_CLEAR(p->on_error);
    }
    return 0;
}

static void engine_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    PyEngine *o = (PyEngine *)self;
    eng_state *st = o->st;
    o->st = NULL;
    if (st) engine_teardown(st);
    tpy_free_self(self);
}

/* ---------------------------------------------------------------- props --- */

static PyObject *eng_main_address(PyObject *self, void *c)
{
    eng_state *st = tpy_engine_state(self);
    if (!st) return NULL;
    te_addr a;
    int r = te_main_address(st->e, &a);
    if (r) return tpy_raise(r, "main_address");
    return tpy_addr_new(&a);
}

/* The engine's scalar properties, one getter: closure = which. */
enum { P_NUM_DOMAINS, P_NETS_PER_GPU, P_NUM_GROUPS, P_LINK_SPEED, P_CALLBACK_ERRORS, P_UNHANDLED_ERRORS };

static PyObject *eng_get_count(PyObject *self, void *which)
{
    eng_state *st = tpy_engine_state(self);
    if (!st) return NULL;
    unsigned long long v = 0;
    switch ((int)(intptr_t)which) {
    case P_NUM_DOMAINS: v = te_num_nics(st->e); break;
    case P_NETS_PER_GPU: v = te_group_nics(st->e, 0); break;
    case P_NUM_GROUPS: v = te_num_groups(st->e); break;
    case P_LINK_SPEED: v = te_link_speed(st->e); break;
    case P_CALLBACK_ERRORS: v = st->callback_errors; break;
    case P_UNHANDLED_ERRORS: v = st->unhandled_errors; break;
    }
    return PyLong_FromUnsignedLongLong(v);
}

static PyObject *eng_provider(PyObject *self, void *c)
{
    eng_state *st = tpy_engine_state(self);
    return st ? PyUnicode_FromString(te_provider_name(st->e)) : NULL;
}

static PyObject *eng_stopped(PyObject *self, void *c)
{
    eng_state *st = ((PyEngine *)self)->st;
    return PyBool_FromLong(!st || st->stopped);
}

static PyObject *eng_nic_names(PyObject *self, void *c)
{
    eng_state *st = tpy_engine_state(self);
    if (!st) return NULL;
    uint32_t ng = te_num_groups(st->e);
    PyObject *out = PyList_New(0);
    for (uint32_t g = 0; out && g < ng; g++) {
        PyObject *l = PyList_New(0);
        for (uint32_t k = 0; l && k < te_group_nics(st->e, g); k++) {
            const char *name = te_nic_name(st->e, g, k);
            PyObject *s = PyUnicode_FromString(name ? name : "");
            if (!s || PyList_Append(l, s) < 0) Py_CLEAR(l);
            Py_XDECREF(s);
        }
        if (!l || PyList_Append(out, l) < 0) Py_CLEAR(out);
        Py_XDECREF(l);
    }
    return out;
}

static PyObject *eng_nic_address(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"group", "nic", NULL};
    uint32_t g = 0, n = 0;
    eng_state *st = tpy_engine_state(self);
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "|O&O&:nic_address", kwlist, tpy_conv_u32, &g, tpy_conv_u32, &n))
        return NULL;
    te_addr a;
    int r = te_nic_address(st->e, g, n, &a);
    if (r) return tpy_raise(r, NULL);
    return tpy_addr_new(&a);
}

static PyObject *eng_nic_stats(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"group", "nic", NULL};
    uint32_t g = 0, n = 0;
    eng_state *st = tpy_engine_state(self);
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "|O&O&:nic_stats", kwlist, tpy_conv_u32, &g, tpy_conv_u32, &n))
        return NULL;
    te_nic_stats s;
    int r = te_nic_stats_get(st->e, g, n, &s);
    if (r) return tpy_raise(r, NULL);
    return Py_BuildValue("{sKsKsKsKsKsKsKsK}", "write_ops", (unsigned long long)s.write_ops, "write_bytes",
                         (unsigned long long)s.write_bytes, "send_ops", (unsigned long long)s.send_ops,
                         "send_bytes", (unsigned long long)s.send_bytes, "recv_ops", (unsigned long long)s.recv_ops,
                         "recv_bytes", (unsigned long long)s.recv_bytes, "imms_received",
                         (unsigned long long)s.imms_received, "errors", (unsigned long long)s.errors);
}

static PyObject *eng_stop(PyObject *self, PyObject *unused)
{
    eng_state *st = tpy_engine_state(self);
    if (!st) return NULL;
    if ((tpy_tl_in_callback == st)) {
        PyErr_SetString(PyExc_RuntimeError, "stop() cannot be called from one of this engine's callbacks");
        return NULL;
    }
    if (!st->stopped) {
        int r;
        st->stopped = true;
        Py_BEGIN_ALLOW_THREADS
        r = te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
        if (r) return tpy_raise(r, "stop");
    }
    Py_RETURN_NONE;
}

static PyObject *eng_watcher_memory_kind(PyObject *self, void *c)
{
    eng_state *st = tpy_engine_state(self);
    return st ? PyUnicode_FromString(te_watcher_memory_kind(st->e)) : NULL;
}

static PyMethodDef engine_methods[] = {
    {"alloc_scalar_watcher", (PyCFunction)(void (*)(void))tpy_eng_alloc_scalar_watcher, METH_VARARGS | METH_KEYWORDS,
     "alloc_scalar_watcher(callback) -> UvmWatcher: callback(old, new) -> bool on the\n"
     "engine's watcher thread when the u64 word at watcher.ptr changes."},
    {"stop", eng_stop, METH_NOARGS,
     "stop(): stop the engine; every pending operation completes with [ECANCELED] (its\n"
     "callback runs before stop returns). Idempotent. Not from a callback."},
    {"nic_address", (PyCFunction)(void (*)(void))eng_nic_address, METH_VARARGS | METH_KEYWORDS,
     "nic_address(group=0, nic=0) -> DomainAddress"},
    {"nic_stats", (PyCFunction)(void (*)(void))eng_nic_stats, METH_VARARGS | METH_KEYWORDS,
     "nic_stats(group=0, nic=0) -> dict of counters"},
    {"register_memory", (PyCFunction)(void (*)(void))tpy_eng_register_memory, METH_VARARGS | METH_KEYWORDS,
     "register_memory(ptr, len=None, device=None, *, remote=True, owner=None)\n"
     "    -> (MemoryRegionHandle, MemoryRegionDescriptor | None)\n"
     "ptr: an int pointer with len and device, or a buffer-protocol object (host memory),\n"
     "device: None/-1 host, else CUDA ordinal. The buffer (or `owner`) stays alive while\n"
     "registered. Releases the GIL while registering."},
    {"unregister_memory", (PyCFunction)(void (*)(void))tpy_eng_unregister_memory, METH_VARARGS | METH_KEYWORDS,
     "unregister_memory(ptr | handle): deregister (every region registered at ptr)."},
    {"submit_write", (PyCFunction)(void (*)(void))tpy_eng_submit_write, METH_VARARGS | METH_KEYWORDS,
     "submit_write(src_mr, offset, length, imm_data, dst_mr, dst_offset, on_done=None,\n"
     "             on_error=None, num_shards=None, *, counter=None, nic=None)"},
    {"submit_paged_writes", (PyCFunction)(void (*)(void))tpy_eng_submit_paged_writes, METH_VARARGS | METH_KEYWORDS,
     "submit_paged_writes(length, src_mr, src_page_indices, src_stride, src_offset, dst_mr,\n"
     "                    dst_page_indices, dst_stride, dst_offset, imm_data, on_done=None, on_error=None, *,\n"
     "                    counter=None)"},
    {"submit_imm", (PyCFunction)(void (*)(void))tpy_eng_submit_imm, METH_VARARGS | METH_KEYWORDS,
     "submit_imm(imm_data, dst_mr, on_done=None, on_error=None, *, counter=None, nic=0)"},
    {"submit_barrier", (PyCFunction)(void (*)(void))tpy_eng_submit_barrier, METH_VARARGS | METH_KEYWORDS,
     "submit_barrier(imm_data, dst_mrs, on_done=None, on_error=None, *, counter=None, nic=0)"},
    {"submit_send", (PyCFunction)(void (*)(void))tpy_eng_submit_send, METH_VARARGS | METH_KEYWORDS,
     "submit_send(addr, data, on_done=None, on_error=None, *, counter=None): data is copied."},
    {"submit_bouncing_recvs", (PyCFunction)(void (*)(void))tpy_eng_submit_bouncing_recvs, METH_VARARGS | METH_KEYWORDS,
     "submit_bouncing_recvs(count, len, on_recv, on_error=None): on_recv(bytes) per message."},
    {"peer_state", (PyCFunction)(void (*)(void))tpy_eng_peer_state, METH_VARARGS | METH_KEYWORDS,
     "peer_state(addr) -> 'unknown' | 'up' | 'down': what this engine knows of that peer NIC."},
    {"set_peer_callback", (PyCFunction)(void (*)(void))tpy_eng_set_peer_callback, METH_VARARGS | METH_KEYWORDS,
     "set_peer_callback(callback | None): callback(addr, state) when a peer NIC comes up or goes down."},
    {"set_imm_callback", (PyCFunction)(void (*)(void))tpy_eng_set_imm_callback, METH_VARARGS | METH_KEYWORDS,
     "set_imm_callback(callback | None): callback(imm) for immediates nobody expects."},
    {"set_imm_count_expected", (PyCFunction)(void (*)(void))tpy_eng_set_imm_count_expected,
     METH_VARARGS | METH_KEYWORDS,
     "set_imm_count_expected(imm, expected_count, on_reached) -> previous (count, expected) | None\n"
     "One-shot: on_reached() runs once when `expected_count` immediates arrived; surplus goes to the\n"
     "imm callback."},
    {"remove_imm_count", (PyCFunction)(void (*)(void))tpy_eng_remove_imm_count, METH_VARARGS | METH_KEYWORDS,
     "remove_imm_count(imm) -> previous (count, expected) | None"},
    {"imm_counter", (PyCFunction)(void (*)(void))tpy_eng_imm_counter, METH_VARARGS | METH_KEYWORDS,
     "imm_counter(imm) -> ImmCounter (pollable, no callback thread)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef engine_getset[] = {
    {"main_address", eng_main_address, NULL, "DomainAddress of NIC 0 of group 0 (send target).", NULL},
    {"num_domains", eng_get_count, NULL, "NICs over all groups.", (void *)P_NUM_DOMAINS},
    {"nets_per_gpu", eng_get_count, NULL, "NICs of the main group.", (void *)P_NETS_PER_GPU},
    {"num_groups", eng_get_count, NULL, "Groups (GPUs or host groups).", (void *)P_NUM_GROUPS},
    {"aggregated_link_speed", eng_get_count, NULL, "Sum of the NICs' link speeds in bits/s (0 unknown).",
     (void *)P_LINK_SPEED},
    {"provider", eng_provider, NULL, "libfabric provider in use (e.g. 'tcp;ofi_rxm').", NULL},
    {"nic_names", eng_nic_names, NULL, "NIC names per group.", NULL},
    {"callback_errors", eng_get_count, NULL, "Python exceptions raised by callbacks so far.",
     (void *)P_CALLBACK_ERRORS},
    {"unhandled_errors", eng_get_count, NULL, "Failed operations that had no on_error.", (void *)P_UNHANDLED_ERRORS},
    {"stopped", eng_stopped, NULL, "True after stop().", NULL},
    {"watcher_memory_kind", eng_watcher_memory_kind, NULL, "'mapped-host' (GPU-visible) or 'host'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot engine_slots[] = {
    {Py_tp_new, engine_new},
    {Py_tp_init, engine_init},
    {Py_tp_dealloc, engine_dealloc},
    {Py_tp_traverse, engine_traverse},
    {Py_tp_clear, engine_clear},
    {Py_tp_methods, engine_methods},
    {Py_tp_getset, engine_getset},
    {Py_tp_doc, (void *)"Low-level engine: TransferEngine(*, provider=None, groups=None, op_timeout_ms=0,\n"
                        "max_msg_size=None, busy_poll=False). Use tendril.TransferEngine."},
    {0, NULL},
};

PyType_Spec tpy_engine_spec = {
    "tendril._tendril.TransferEngine", sizeof(PyEngine), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, engine_slots,
};
