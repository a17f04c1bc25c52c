/* Callback trampolines: the engine calls these on its callback thread; each takes the GIL
 * only around the Python call (py_engine.h describes the contexts' lifetimes). */
#include <stdlib.h>

#include "py_engine.h"
#ifdef TENDRIL_PY_A2A
#include <tendril/a2a.h>
#endif

_Thread_local eng_state *tpy_tl_in_callback;

cb_scope tpy_cb_enter(eng_state *st)
{
    cb_scope s = {PyGILState_Ensure(), tpy_tl_in_callback};
    tpy_tl_in_callback = st;
    return s;
}

void tpy_cb_leave(cb_scope s)
{
    tpy_tl_in_callback = s.outer;
    PyGILState_Release(s.g);
}

/* Reports the pending Python exception of a callback: printed through
 * sys.unraisablehook and counted in engine.callback_errors; the engine carries on. */
void tpy_report_cb_error(eng_state *st, PyObject *where)
{
    /* Count after the hook ran: a reader that sees the count also sees the report. */
    PyErr_WriteUnraisable(where);
    st->callback_errors++;
}

/* Calls fn(*args) and reports an exception. fn is held for the call: the callable may
 * replace itself (set_imm_callback from inside the callback). args is stolen; NULL means
 * building the arguments failed (exception set), reported as the callback's error. */
static void call_cb(eng_state *st, PyObject *fn, PyObject *args)
{
    Py_INCREF(fn);
    PyObject *r = args ? PyObject_CallObject(fn, args) : NULL;
    if (r) Py_DECREF(r);
    else tpy_report_cb_error(st, fn);
    Py_XDECREF(args);
    Py_DECREF(fn);
}

/* A 1-tuple holding `v` (stolen; NULL passes through). */
static PyObject *one(PyObject *v)
{
    if (!v) return NULL;
    PyObject *t = PyTuple_Pack(1, v);
    Py_DECREF(v);
    return t;
}

void tpy_op_ctx_free(op_ctx *c)
{
    Py_XDECREF(c->on_done);
    Py_XDECREF(c->on_error);
    free(c);
}

void tpy_op_done_tramp(void *arg, int status, const char *msg)
{
    op_ctx *c = arg;
    eng_state *st = c->st;
    cb_scope g = tpy_cb_enter(st);
    if (status == 0) {
        if (c->on_done) call_cb(st, c->on_done, PyTuple_New(0));
    } else if (c->on_error) {
        call_cb(st, c->on_error, one(tpy_error_string(status, msg)));
    } else {
        st->unhandled_errors++;
    }
    tpy_op_ctx_free(c);
    tpy_cb_leave(g);
}

void tpy_imm_plain_tramp(void *arg, uint32_t imm)
{
    eng_state *st = arg;
    cb_scope g = tpy_cb_enter(st);
    if (st->imm_cb) call_cb(st, st->imm_cb, one(PyLong_FromUnsignedLong(imm)));
    tpy_cb_leave(g);
}

void tpy_peer_tramp(void *arg, const te_addr *addr, int state)
{
    eng_state *st = arg;
#ifdef TENDRIL_PY_A2A
    /* the all-to-all contexts on this engine do not own its peer callback (py_a2a.c) */
    if (__atomic_load_n(&st->peer_forward, __ATOMIC_ACQUIRE)) a2a_peer_event(st->e, addr, state);
#endif
    cb_scope g = tpy_cb_enter(st);
    if (st->peer_cb) {
        PyObject *a = tpy_addr_new(addr);
        call_cb(st, st->peer_cb, a ? Py_BuildValue("(Ns)", a, tpy_peer_state_name(state)) : NULL);
    }
    tpy_cb_leave(g);
}

static void exp_unlink(eng_state *st, exp_ctx *x)
{
    if (x->prev) x->prev->next = x->next;
    else st->exps = x->next;
    if (x->next) x->next->prev = x->prev;
}

bool tpy_exp_reached_tramp(void *arg, uint32_t imm)
{
    exp_ctx *x = arg;
    eng_state *st = x->st;
    cb_scope g = tpy_cb_enter(st);
    PyObject *fn = x->cb;
    x->cb = NULL;
    x->armed = false;
    exp_unlink(st, x); /* one-shot: the engine removes the expectation when we return false */
    free(x);
    if (fn) {
        call_cb(st, fn, PyTuple_New(0));
        Py_DECREF(fn);
    }
    tpy_cb_leave(g);
    return false;
}

void tpy_pool_recv_tramp(void *arg, const void *data, size_t len)
{
    pool_ctx *p = arg;
    cb_scope g = tpy_cb_enter(p->st);
    if (p->on_recv) call_cb(p->st, p->on_recv, one(PyBytes_FromStringAndSize(data, (Py_ssize_t)len)));
    tpy_cb_leave(g);
}

void tpy_pool_error_tramp(void *arg, int status, const char *msg)
{
    pool_ctx *p = arg;
    cb_scope g = tpy_cb_enter(p->st);
    if (p->on_error) call_cb(p->st, p->on_error, one(tpy_error_string(status, msg)));
    else p->st->unhandled_errors++;
    tpy_cb_leave(g);
}
