/* TransferEngine's submit_* methods: argument parsing, the completion (callbacks and/or
 * a Counter) and the te_ call. Bad arguments raise at once; an accepted operation
 * completes exactly once through its callbacks or counter. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "py_engine.h"

/* Completion for a submission: a ctx (callbacks) and/or a counter. */
typedef struct {
    te_completion c;
    op_ctx *ctx;
    PyCounter *counter;
} completion;

static int completion_make(eng_state *st, PyObject *on_done, PyObject *on_error, PyObject *counter, completion *out)
{
    memset(out, 0, sizeof *out);
    if (tpy_check_callable(on_done, "on_done") < 0 || tpy_check_callable(on_error, "on_error") < 0) return -1;
    if (counter != Py_None) {
        if (!PyObject_TypeCheck(counter, (PyTypeObject *)TpCounter)) {
            PyErr_Format(PyExc_TypeError, "counter must be a tendril.Counter, got %R", (PyObject *)Py_TYPE(counter));
            return -1;
        }
        out->counter = (PyCounter *)counter;
        out->c.counter = out->counter->c;
    }
    if (on_done != Py_None || on_error != Py_None) {
        op_ctx *x = calloc(1, sizeof *x);
        if (!x) {
            PyErr_NoMemory();
            return -1;
        }
        x->st = st;
        if (on_done != Py_None) {
            Py_INCREF(on_done);
            x->on_done = on_done;
        }
        if (on_error != Py_None) {
            Py_INCREF(on_error);
            x->on_error = on_error;
        }
        out->ctx = x;
        out->c.fn = tpy_op_done_tramp;
        out->c.arg = x;
    }
    return 0;
}

/* After the submission call: r == 0 hands the ctx to the engine. */
static PyObject *completion_finish(completion *cp, int r, const char *what)
{
    if (r) {
        if (cp->ctx) tpy_op_ctx_free(cp->ctx);
        return tpy_raise(r, what);
    }
    if (cp->counter) cp->counter->submitted++;
    Py_RETURN_NONE;
}

PyObject *tpy_eng_submit_write(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src_mr", "offset", "length", "imm_data", "dst_mr", "dst_offset", "on_done",
                             "on_error", "num_shards", "counter", "nic", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *src, *dst, *on_done = Py_None, *on_error = Py_None, *shards = Py_None, *counter = Py_None,
                         *nic = Py_None;
    te_write_args a;
    memset(&a, 0, sizeof a);
    tpy_opt_u32 imm;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "OO&O&O&OO&|OOO$OO:submit_write", kwlist, &src, tpy_conv_u64,
                                            &a.src_offset, tpy_conv_u64, &a.len, tpy_conv_opt_u32, &imm, &dst,
                                            tpy_conv_u64, &a.dst_offset, &on_done, &on_error, &shards, &counter,
                                            &nic))
        return NULL;
    if (!(a.src = tpy_src_mr_of(src, st, "src_mr")) || !(a.dst = tpy_desc_of(dst, "dst_mr"))) return NULL;
    a.has_imm = imm.has;
    a.imm = imm.v;
    if (nic != Py_None && shards != Py_None) {
        PyErr_SetString(PyExc_TypeError, "submit_write: give num_shards or nic, not both");
        return NULL;
    }
    if (nic != Py_None) {
        a.route.kind = TE_ROUTE_PINNED;
        if (!tpy_conv_u32(nic, &a.route.n)) return NULL;
    } else {
        a.route.kind = TE_ROUTE_SHARDED;
        if (shards != Py_None) {
            if (!tpy_conv_u32(shards, &a.route.n)) return NULL;
            if (a.route.n == 0) {
                PyErr_SetString(ExcValueError, "submit_write: num_shards must be >= 1 (None: one per NIC)");
                return NULL;
            }
        }
    }
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write(st->e, &a, &cp.c), NULL);
}

PyObject *tpy_eng_submit_paged_writes(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"length", "src_mr", "src_page_indices", "src_stride", "src_offset", "dst_mr",
                             "dst_page_indices",
                             "dst_stride", "dst_offset", "imm_data", "on_done", "on_error", "counter", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *src, *sp, *dst, *dp, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    te_paged_args a;
    memset(&a, 0, sizeof a);
    tpy_opt_u32 imm;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&OOO&O&OOO&O&O&|OO$O:submit_paged_writes", kwlist,
                                            tpy_conv_u64, &a.page_len, &src, &sp, tpy_conv_u64, &a.src_stride,
                                            tpy_conv_u64, &a.src_offset, &dst, &dp, tpy_conv_u64, &a.dst_stride,
                                            tpy_conv_u64, &a.dst_offset, tpy_conv_opt_u32, &imm, &on_done,
                                            &on_error, &counter))
        return NULL;
    if (!(a.src = tpy_src_mr_of(src, st, "src_mr")) || !(a.dst = tpy_desc_of(dst, "dst_mr")) ||
        !(a.src_pages = tpy_pages_of(sp, "src_page_indices")) || !(a.dst_pages = tpy_pages_of(dp, "dst_page_indices")))
        return NULL;
    a.has_imm = imm.has;
    a.imm = imm.v;
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write_paged(st->e, &a, &cp.c), NULL);
}

PyObject *tpy_eng_submit_imm(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm_data", "dst_mr", "on_done", "on_error", "counter", "nic", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *dst, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    uint32_t imm = 0, nic = 0;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O|OO$OO&:submit_imm", kwlist, tpy_conv_u32, &imm, &dst,
                                            &on_done, &on_error, &counter, tpy_conv_u32, &nic))
        return NULL;
    const te_mr_desc *d = tpy_desc_of(dst, "dst_mr");
    if (!d) return NULL;
    te_route route = {TE_ROUTE_PINNED, nic};
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write_imm(st->e, imm, d, route, &cp.c), NULL);
}

PyObject *tpy_eng_submit_barrier(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm_data", "dst_mrs", "on_done", "on_error", "counter", "nic", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *dsts, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    uint32_t imm = 0, nic = 0;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O|OO$OO&:submit_barrier", kwlist, tpy_conv_u32, &imm,
                                            &dsts, &on_done, &on_error, &counter, tpy_conv_u32, &nic))
        return NULL;
    PyObject *seq = PySequence_List(dsts);
    if (!seq) return NULL;
    Py_ssize_t n = PyList_Size(seq);
    te_mr_desc *arr = calloc(n ? (size_t)n : 1, sizeof *arr);
    if (!arr) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const te_mr_desc *d = tpy_desc_of(PyList_GetItem(seq, k), "dst_mrs[i]");
        if (!d) {
            free(arr);
            Py_DECREF(seq);
            return NULL;
        }
        arr[k] = *d;
    }
    Py_DECREF(seq);
    te_route route = {TE_ROUTE_PINNED, nic};
    completion cp;
    PyObject *res = NULL;
    if (completion_make(st, on_done, on_error, counter, &cp) == 0)
        res = completion_finish(&cp, te_barrier(st->e, imm, arr, (size_t)n, route, &cp.c), NULL);
    free(arr);
    return res;
}

/* No size cap of its own: unless the caller asked for one, the engine is created with
 * the largest max_msg_size (py_engine.c), so the receiver's buffer size is the limit. */
PyObject *tpy_eng_submit_send(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"addr", "data", "on_done", "on_error", "counter", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *addr, *data, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "OO|OO$O:submit_send", kwlist, &addr, &data, &on_done,
                                            &on_error, &counter))
        return NULL;
    const te_addr *to = tpy_addr_of(addr, "addr");
    if (!to) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_ANY_CONTIGUOUS) < 0) return NULL;
    completion cp;
    PyObject *res = NULL;
    if (completion_make(st, on_done, on_error, counter, &cp) == 0)
        res = completion_finish(&cp,
                                te_send(st->e, to, view.buf, (size_t)view.len, &cp.c),
                                NULL);
    PyBuffer_Release(&view);
    return res;
}

PyObject *tpy_eng_submit_bouncing_recvs(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"count", "len", "on_recv", "on_error", NULL};
    eng_state *st = tpy_engine_state(self);
    uint32_t count = 0;
    uint64_t len = 0;
    PyObject *on_recv, *on_error = Py_None;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O&O|O:submit_bouncing_recvs", kwlist, tpy_conv_u32, &count,
                                            tpy_conv_u64, &len, &on_recv, &on_error))
        return NULL;
    if (!PyCallable_Check(on_recv)) {
        PyErr_Format(PyExc_TypeError, "on_recv must be callable, got %R", (PyObject *)Py_TYPE(on_recv));
        return NULL;
    }
    if (tpy_check_callable(on_error, "on_error") < 0) return NULL;
    pool_ctx *p = calloc(1, sizeof *p);
    if (!p) return PyErr_NoMemory();
    p->st = st;
    Py_INCREF(on_recv);
    p->on_recv = on_recv;
    if (on_error != Py_None) {
        Py_INCREF(on_error);
        p->on_error = on_error;
    }
    /* Link first: the engine may call the trampolines before create returns. */
    p->next = st->pools;
    st->pools = p;
    int r;
    te_recv_pool *pool = NULL;
    Py_BEGIN_ALLOW_THREADS
    r = te_recv_pool_create(st->e, (size_t)len, count, tpy_pool_recv_tramp, tpy_pool_error_tramp, p, &pool);
    Py_END_ALLOW_THREADS
    if (r) {
        /* The pool may exist in the engine's list (freed with the engine) and be able to
         * call back: keep the ctx linked, drop only the callables. */
        Py_CLEAR(p->on_recv);
        Py_CLEAR(p->on_error);
        return tpy_raise(r, "submit_bouncing_recvs");
    }
    p->pool = pool;
    Py_RETURN_NONE;
}

