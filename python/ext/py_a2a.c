/*
 * tendril._a2a: CPython binding of the MoE all-to-all (include/tendril/a2a.h). Part of
 * the _tendril extension (python/CMakeLists.txt), so that an all-to-all and the
 * TransferEngine object it is given run on one copy of the engine; PyInit__tendril adds
 * the submodule (tpy_add_a2a). Tensors come in as integers (data_ptr(), byte strides,
 * stream handles) from the pure-Python wrapper tendril.p2p_all_to_all; no torch headers
 * are needed here. Integers go through py_convert.h: out-of-range values raise
 * OverflowError, never wrap.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <tendril/a2a.h>

#include "py_engine.h"

#define CAPSULE "tendril.a2a_ctx"

/* What the capsule holds: the context, and the Python objects it uses, which must live
 * as long as it does (the engine, the all-gather callable). */
typedef struct a2a_py {
    a2a_ctx *c;
    PyObject *engine;     /* TransferEngine, or NULL */
    PyObject *allgather;  /* callable(bytes) -> sequence of world bytes, or NULL */
    int world;
    PyObject *exc[3];     /* exception the all-gather raised during a2a_connect */
} a2a_py;

static PyObject *raise_rc(int rc) {
    const char *msg = a2a_last_error();
    PyObject *exc = rc == -ETIMEDOUT ? PyExc_TimeoutError : PyExc_RuntimeError;
    if (rc == -EINVAL) exc = PyExc_ValueError;
    PyErr_Format(exc, "%s (%s, errno %d)", msg && msg[0] ? msg : a2a_strerror(rc), a2a_strerror(rc), -rc);
    return NULL;
}

static void holder_free(a2a_py *h) {
    if (h->c) {
        Py_BEGIN_ALLOW_THREADS a2a_destroy(h->c);
        Py_END_ALLOW_THREADS h->c = NULL;
    }
    Py_CLEAR(h->engine); /* after the context: its proxy used the engine until now */
    Py_CLEAR(h->allgather);
    for (int i = 0; i < 3; i++) Py_CLEAR(h->exc[i]);
    PyMem_Free(h);
}

static void capsule_free(PyObject *cap) {
    a2a_py *h = PyCapsule_GetPointer(cap, CAPSULE);
    if (h) holder_free(h);
    else PyErr_Clear();
}

static a2a_py *get_holder(PyObject *cap) {
    a2a_py *h = PyCapsule_GetPointer(cap, CAPSULE); /* wrong name (destroyed): ValueError */
    if (!h) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "a2a context already destroyed");
    }
    return h;
}

static a2a_ctx *get_ctx(PyObject *cap) {
    a2a_py *h = get_holder(cap);
    return h ? h->c : NULL;
}

/* cfg.allgather: runs the Python callable on the thread inside a2a_connect (which gave up
 * the GIL). The callable gets this rank's bytes and returns every rank's, in rank order. */
static int allgather_tramp(void *arg, const void *in, void *out, size_t len) {
    a2a_py *h = arg;
    PyGILState_STATE g = PyGILState_Ensure();
    int rc = -EIO;
    PyObject *res = NULL, *b = PyBytes_FromStringAndSize(in, (Py_ssize_t)len);
    if (b) res = PyObject_CallFunctionObjArgs(h->allgather, b, NULL);
    if (res) {
        Py_ssize_t n = PySequence_Size(res);
        if (n != h->world) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_ValueError, "a2a allgather returned %zd items, expected %d (one per rank)", n,
                             h->world);
        } else {
            rc = 0;
            for (Py_ssize_t i = 0; i < n && rc == 0; i++) {
                PyObject *it = PySequence_GetItem(res, i);
                char *p = NULL;
                Py_ssize_t l = 0;
                if (!it || PyBytes_AsStringAndSize(it, &p, &l) < 0) {
                    rc = -EIO;
                } else if ((size_t)l != len) {
                    PyErr_Format(PyExc_ValueError, "a2a allgather item %zd has %zd bytes, expected %zu", i, l, len);
                    rc = -EIO;
                } else {
                    memcpy((char *)out + (size_t)i * len, p, len);
                }
                Py_XDECREF(it);
            }
        }
    }
    if (rc && PyErr_Occurred() && !h->exc[0]) PyErr_Fetch(&h->exc[0], &h->exc[1], &h->exc[2]);
    PyErr_Clear();
    Py_XDECREF(b);
    Py_XDECREF(res);
    PyGILState_Release(g);
    return rc;
}

static PyObject *py_create(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwl[] = {"rank", "world_size", "device", "max_num_tokens", "num_experts",
                          "experts_per_token", "expert_padding", "hidden_dim", "hidden_dim_scale",
                          "in_elem_size", "out_dtype", "num_sms", "timeout_ms", "rendezvous", "partial_f32",
                          "ranks_per_node", "dp_size", "engine", "rdma_buffers", "allgather", "imm_base", NULL};
    int rank, world, device, out_dtype, partial_f32 = 0, rpn = 0, dp = 0, rdma_buffers = A2A_RDMA_AUTO;
    unsigned int T, E, K, pad, H, S, in_size, num_sms, timeout_ms, imm_base = 0;
    PyObject *rdv_o = Py_None, *engine = Py_None, *allgather = Py_None;
    (void)self;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiO&O&O&O&O&O&O&iO&O&|OiiiOiOO&", kwl, &rank, &world, &device,
                                     tpy_conv_u32, &T, tpy_conv_u32, &E, tpy_conv_u32, &K, tpy_conv_u32, &pad,
                                     tpy_conv_u32, &H, tpy_conv_u32, &S, tpy_conv_u32, &in_size, &out_dtype,
                                     tpy_conv_u32, &num_sms, tpy_conv_u32, &timeout_ms, &rdv_o, &partial_f32,
                                     &rpn, &dp, &engine, &rdma_buffers, &allgather, tpy_conv_u32, &imm_base))
        return NULL;
    const char *rdv = NULL;
    if (rdv_o != Py_None && !(rdv = PyUnicode_AsUTF8AndSize(rdv_o, NULL))) return NULL;
    if (allgather != Py_None && !PyCallable_Check(allgather)) {
        PyErr_SetString(PyExc_TypeError, "allgather must be a callable or None");
        return NULL;
    }
    te_engine *eng = NULL;
    if (engine != Py_None) {
        if (!PyObject_TypeCheck(engine, (PyTypeObject *)TpEngine)) {
            PyErr_SetString(PyExc_TypeError, "engine must be a tendril.TransferEngine (or None)");
            return NULL;
        }
        eng_state *st = tpy_engine_state(engine);
        if (!st) return NULL;
        if (st->stopped) {
            PyErr_SetString(ExcStoppedError, "engine: the TransferEngine is stopped");
            return NULL;
        }
        eng = st->e;
        if (!st->peer_forward) {
            /* the engine's one peer callback stays the binding's; it forwards to the
             * contexts (cfg.app_forwards_peer_events), so set_peer_callback keeps working */
            int prc = te_peer_set_callback(eng, tpy_peer_tramp, st);
            if (prc) return tpy_raise(prc, "P2PAllToAll: installing the engine's peer callback");
            __atomic_store_n(&st->peer_forward, true, __ATOMIC_RELEASE);
        }
    }
    a2a_py *h = PyMem_Calloc(1, sizeof(*h));
    if (!h) return PyErr_NoMemory();
    h->world = world;
    if (engine != Py_None) {
        Py_INCREF(engine);
        h->engine = engine;
    }
    if (allgather != Py_None) {
        Py_INCREF(allgather);
        h->allgather = allgather;
    }
    a2a_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.struct_size = sizeof(cfg);
    cfg.rank = rank;
    cfg.world_size = world;
    cfg.device = device;
    cfg.max_num_tokens = T;
    cfg.num_experts = E;
    cfg.experts_per_token = K;
    cfg.expert_padding = pad;
    cfg.hidden_dim = H;
    cfg.hidden_dim_scale = S;
    cfg.in_elem_size = in_size;
    cfg.out_dtype = (a2a_dtype)out_dtype;
    cfg.num_sms = num_sms;
    cfg.timeout_ms = timeout_ms;
    cfg.rendezvous = rdv;
    cfg.partial_f32 = partial_f32;
    cfg.ranks_per_node = rpn;
    cfg.dp_size = dp;
    cfg.engine = eng;
    cfg.rdma_buffers = (a2a_rdma_buffers)rdma_buffers;
    cfg.allgather = h->allgather ? allgather_tramp : NULL;
    cfg.allgather_ctx = h;
    cfg.imm_base = imm_base;
    cfg.app_forwards_peer_events = eng != NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = a2a_create(&cfg, &h->c);
    Py_END_ALLOW_THREADS if (rc) {
        holder_free(h);
        return raise_rc(rc);
    }
    PyObject *cap = PyCapsule_New(h, CAPSULE, capsule_free);
    if (!cap) holder_free(h);
    return cap;
}

static PyObject *py_connect(PyObject *self, PyObject *args) {
    PyObject *cap;
    int timeout_ms;
    (void)self;
    if (!PyArg_ParseTuple(args, "Oi", &cap, &timeout_ms)) return NULL;
    a2a_py *h = get_holder(cap);
    if (!h) return NULL;
    int rc;
    Py_BEGIN_ALLOW_THREADS rc = a2a_connect(h->c, timeout_ms);
    Py_END_ALLOW_THREADS if (rc) {
        if (h->exc[0]) { /* the all-gather raised: that exception is the story */
            PyErr_Restore(h->exc[0], h->exc[1], h->exc[2]);
            h->exc[0] = h->exc[1] = h->exc[2] = NULL;
            return NULL;
        }
        return raise_rc(rc);
    }
    Py_RETURN_NONE;
}

static PyObject *py_destroy(PyObject *self, PyObject *args) {
    PyObject *cap;
    (void)self;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_py *h = PyCapsule_GetPointer(cap, CAPSULE);
    if (h) {
        PyCapsule_SetDestructor(cap, NULL);
        PyCapsule_SetPointer(cap, (void *)1); /* placeholder: a capsule pointer cannot be NULL */
        PyCapsule_SetName(cap, "tendril.a2a_ctx.destroyed");
        holder_free(h);
    } else {
        PyErr_Clear();
    }
    Py_RETURN_NONE;
}

static PyObject *py_info(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    return Py_BuildValue("{s:I,s:I,s:I,s:n,s:s,s:i}", "max_recv_tokens", a2a_max_recv_tokens(c),
                         "num_local_experts", a2a_num_local_experts(c), "first_expert", a2a_first_expert(c),
                         "memory_bytes", (Py_ssize_t)a2a_memory_bytes(c), "rdma_buffer_kind",
                         a2a_rdma_buffer_kind(c), "num_rdma_peers", a2a_num_rdma_peers(c));
}

static PyObject *span_dict(const a2a_span_ns *s) {
    return Py_BuildValue("{s:K,s:K,s:K}", "p50_ns", (unsigned long long)s->p50, "p99_ns",
                         (unsigned long long)s->p99, "max_ns", (unsigned long long)s->max);
}

/* proxy_timing(ctx, reset) -> {"dispatch"|"weights"|"combine": {count, window, dropped,
 * seen_first, first_last, last_done, seen_done}} or None without an RDMA proxy; reset=True
 * starts the samples afresh instead and returns None. */
static PyObject *py_proxy_timing(PyObject *self, PyObject *args) {
    PyObject *cap;
    int reset = 0;
    if (!PyArg_ParseTuple(args, "O|p", &cap, &reset)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    if (a2a_num_rdma_peers(c) == 0) Py_RETURN_NONE;
    if (reset) {
        int rc = a2a_proxy_timing_reset(c);
        if (rc == -ENOENT) Py_RETURN_NONE;
        if (rc) return raise_rc(rc);
        Py_RETURN_NONE;
    }
    static const char *const names[A2A_PHASES] = {"dispatch", "weights", "combine"};
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (int ph = 0; ph < A2A_PHASES; ph++) {
        a2a_proxy_timing t;
        int rc = a2a_proxy_timing_get(c, ph, &t);
        if (rc == -ENOENT) {
            Py_DECREF(out);
            Py_RETURN_NONE;
        }
        if (rc) {
            Py_DECREF(out);
            return raise_rc(rc);
        }
        PyObject *sf = span_dict(&t.seen_first), *fl = span_dict(&t.first_last), *ld = span_dict(&t.last_done),
                 *sd = span_dict(&t.seen_done);
        PyObject *d = (sf && fl && ld && sd)
                          ? Py_BuildValue("{s:K,s:K,s:K,s:O,s:O,s:O,s:O}", "count", (unsigned long long)t.count,
                                          "window", (unsigned long long)t.window, "dropped",
                                          (unsigned long long)t.dropped, "seen_first", sf, "first_last", fl,
                                          "last_done", ld, "seen_done", sd)
                          : NULL;
        Py_XDECREF(sf);
        Py_XDECREF(fl);
        Py_XDECREF(ld);
        Py_XDECREF(sd);
        if (!d || PyDict_SetItemString(out, names[ph], d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(d);
    }
    return out;
}

static PyObject *py_poll_error(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    int rc = a2a_poll_error(c);
    if (rc) return raise_rc(rc);
    Py_RETURN_NONE;
}

static PyObject *py_abort(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    a2a_abort(c);
    Py_RETURN_NONE;
}

/* dispatch(ctx, flags, T, bound_m, x, x_stride, x_scale, xs0, xs1, indices,
 *          out_num, out_x, out_x_stride, out_scale, os0, os1, out_capacity, stream) */
static PyObject *py_dispatch(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned int flags, T, cap_rows;
    unsigned long long bound_m, x, xst, xs, xs0, xs1, idx, onum, ox, oxst, os, os0, os1, stream;
    if (!PyArg_ParseTuple(args, "OO&O&O&O&O&O&O&O&O&O&O&O&O&O&O&O&O&", &cap, tpy_conv_u32, &flags,
                          tpy_conv_u32, &T, tpy_conv_u64, &bound_m, tpy_conv_u64, &x, tpy_conv_u64, &xst,
                          tpy_conv_u64, &xs, tpy_conv_u64, &xs0, tpy_conv_u64, &xs1, tpy_conv_u64, &idx,
                          tpy_conv_u64, &onum, tpy_conv_u64, &ox, tpy_conv_u64, &oxst, tpy_conv_u64, &os,
                          tpy_conv_u64, &os0, tpy_conv_u64, &os1, tpy_conv_u32, &cap_rows, tpy_conv_u64,
                          &stream))
        return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    a2a_dispatch_args a;
    memset(&a, 0, sizeof(a));
    a.struct_size = sizeof(a);
    a.num_tokens = T;
    a.bound_m = (const int32_t *)(uintptr_t)bound_m;
    a.x = (const void *)(uintptr_t)x;
    a.x_stride = xst;
    a.x_scale = (const float *)(uintptr_t)xs;
    a.x_scale_stride0 = xs0;
    a.x_scale_stride1 = xs1;
    a.indices = (const int32_t *)(uintptr_t)idx;
    a.out_num_tokens = (int32_t *)(uintptr_t)onum;
    a.out_x = (void *)(uintptr_t)ox;
    a.out_x_stride = oxst;
    a.out_x_scale = (float *)(uintptr_t)os;
    a.out_scale_stride0 = os0;
    a.out_scale_stride1 = os1;
    a.out_capacity = cap_rows;
    int rc = a2a_dispatch(c, &a, flags, (void *)(uintptr_t)stream);
    if (rc) return raise_rc(rc);
    Py_RETURN_NONE;
}

/* combine(ctx, flags, T, bound_m, indices, weights, y, y_stride, y_rows, out, out_stride,
 *         accumulate, stream) */
static PyObject *py_combine(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned int flags, T, y_rows;
    int acc;
    unsigned long long bound_m, idx, w, y, yst, out, ost, stream;
    if (!PyArg_ParseTuple(args, "OO&O&O&O&O&O&O&O&O&O&pO&", &cap, tpy_conv_u32, &flags, tpy_conv_u32, &T,
                          tpy_conv_u64, &bound_m, tpy_conv_u64, &idx, tpy_conv_u64, &w, tpy_conv_u64, &y,
                          tpy_conv_u64, &yst, tpy_conv_u32, &y_rows, tpy_conv_u64, &out, tpy_conv_u64, &ost,
                          &acc, tpy_conv_u64, &stream))
        return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    a2a_combine_args a;
    memset(&a, 0, sizeof(a));
    a.struct_size = sizeof(a);
    a.num_tokens = T;
    a.bound_m = (const int32_t *)(uintptr_t)bound_m;
    a.indices = (const int32_t *)(uintptr_t)idx;
    a.weights = (const float *)(uintptr_t)w;
    a.expert_y = (const void *)(uintptr_t)y;
    a.expert_y_stride = yst;
    a.expert_y_rows = y_rows;
    a.out = (void *)(uintptr_t)out;
    a.out_stride = ost;
    a.accumulate = acc;
    int rc = a2a_combine(c, &a, flags, (void *)(uintptr_t)stream);
    if (rc) return raise_rc(rc);
    Py_RETURN_NONE;
}

/* phase_trace(ctx, epoch) -> {"dispatch"|"weights"|"combine": {bell_ns, seen_ns, first_ns,
 * last_ns, done_ns, flag_ns: {slice rank: ns}}} for one iteration, phases with nothing
 * recorded left out; None without an RDMA peer or when nothing of epoch is recorded. */
static PyObject *py_phase_trace(PyObject *self, PyObject *args) {
    PyObject *cap;
    unsigned long long epoch;
    if (!PyArg_ParseTuple(args, "OK", &cap, &epoch)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    if (a2a_num_rdma_peers(c) == 0) Py_RETURN_NONE;
    if (epoch == 0) {
        PyErr_SetString(PyExc_ValueError, "phase_trace: epochs start at 1");
        return NULL;
    }
    static const char *const names[A2A_PHASES] = {"dispatch", "weights", "combine"};
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (int ph = 0; ph < A2A_PHASES; ph++) {
        a2a_phase_trace t;
        int rc = a2a_phase_trace_get(c, ph, epoch, &t);
        if (rc == -ENOENT) continue;
        if (rc) {
            Py_DECREF(out);
            return raise_rc(rc);
        }
        PyObject *flags = PyDict_New();
        for (int q = 0; flags && q < A2A_MAX_RANKS; q++) {
            if (!t.flag_ns[q]) continue;
            PyObject *k = PyLong_FromLong(q), *v = PyLong_FromUnsignedLongLong(t.flag_ns[q]);
            int bad = !k || !v || PyDict_SetItem(flags, k, v) < 0;
            Py_XDECREF(k);
            Py_XDECREF(v);
            if (bad) Py_CLEAR(flags);
        }
        PyObject *d = flags ? Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:O}", "bell_ns", (unsigned long long)t.bell_ns,
                                            "seen_ns", (unsigned long long)t.seen_ns, "first_ns",
                                            (unsigned long long)t.first_ns, "last_ns", (unsigned long long)t.last_ns,
                                            "done_ns", (unsigned long long)t.done_ns, "flag_ns", flags)
                            : NULL;
        Py_XDECREF(flags);
        if (!d || PyDict_SetItemString(out, names[ph], d) < 0) {
            Py_XDECREF(d);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(d);
    }
    if (PyDict_Size(out) == 0) {
        Py_DECREF(out);
        Py_RETURN_NONE;
    }
    return out;
}

/* trace_newest_epoch(ctx) -> the newest iteration the kernels stamped (0: none). */
static PyObject *py_trace_newest_epoch(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    return PyLong_FromUnsignedLongLong(a2a_trace_newest_epoch(c));
}

/* clock_sync(ctx) -> the uncertainty in ns, or None without an RDMA peer. Releases the
 * GIL: the probe rounds wait for a kernel. */
static PyObject *py_clock_sync(PyObject *self, PyObject *args) {
    PyObject *cap;
    if (!PyArg_ParseTuple(args, "O", &cap)) return NULL;
    a2a_ctx *c = get_ctx(cap);
    if (!c) return NULL;
    if (a2a_num_rdma_peers(c) == 0) Py_RETURN_NONE;
    uint64_t err = 0;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = a2a_clock_sync(c, &err);
    Py_END_ALLOW_THREADS
    if (rc) return raise_rc(rc);
    return PyLong_FromUnsignedLongLong(err);
}

static PyMethodDef methods[] = {
    {"create", (PyCFunction)(void (*)(void))py_create, METH_VARARGS | METH_KEYWORDS,
     "create(**config) -> context capsule"},
    {"connect", py_connect, METH_VARARGS, "connect(ctx, timeout_ms): exchange buffers with the peers"},
    {"destroy", py_destroy, METH_VARARGS, "destroy(ctx)"},
    {"info", py_info, METH_VARARGS, "info(ctx) -> dict of sizes"},
    {"poll_error", py_poll_error, METH_VARARGS, "poll_error(ctx): raise the error a kernel recorded"},
    {"proxy_timing", py_proxy_timing, METH_VARARGS,
     "proxy_timing(ctx, reset=False) -> per-phase host timing of the RDMA proxy, or None"},
    {"phase_trace", py_phase_trace, METH_VARARGS,
     "phase_trace(ctx, epoch) -> per-phase trace of one iteration, or None"},
    {"trace_newest_epoch", py_trace_newest_epoch, METH_VARARGS,
     "trace_newest_epoch(ctx) -> newest iteration the kernels stamped"},
    {"clock_sync", py_clock_sync, METH_VARARGS, "clock_sync(ctx) -> uncertainty in ns, or None"},
    {"abort", py_abort, METH_VARARGS, "abort(ctx): make every kernel of the context return"},
    {"dispatch", py_dispatch, METH_VARARGS, "dispatch(ctx, flags, ...)"},
    {"combine", py_combine, METH_VARARGS, "combine(ctx, flags, ...)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tendril._a2a",
                                    "Tendril MoE all-to-all (part of the _tendril extension)", -1, methods,
                                    NULL, NULL, NULL, NULL};

int tpy_add_a2a(PyObject *parent) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return -1;
    if (PyModule_AddIntConstant(m, "SEND", A2A_SEND) < 0 || PyModule_AddIntConstant(m, "RECV", A2A_RECV) < 0 ||
        PyModule_AddIntConstant(m, "DTYPE_BF16", A2A_DTYPE_BF16) < 0 ||
        PyModule_AddIntConstant(m, "DTYPE_F16", A2A_DTYPE_F16) < 0 ||
        PyModule_AddIntConstant(m, "DTYPE_F32", A2A_DTYPE_F32) < 0 ||
        PyModule_AddIntConstant(m, "RDMA_AUTO", A2A_RDMA_AUTO) < 0 ||
        PyModule_AddIntConstant(m, "RDMA_GPU", A2A_RDMA_GPU) < 0 ||
        PyModule_AddIntConstant(m, "RDMA_HOST", A2A_RDMA_HOST) < 0 ||
        PyModule_AddIntConstant(m, "MAX_RANKS", A2A_MAX_RANKS) < 0 ||
        PyModule_AddObject(parent, "_a2a", m) < 0) {
        Py_DECREF(m);
        return -1;
    }
    return 0;
}
