/* TransferEngine's immediate handling: the plain-immediate callback and the one-shot
 * expectations (set_imm_count_expected / remove_imm_count). */
#include <errno.h>
#include <stdlib.h>

#include "py_engine.h"

static PyObject *prev_tuple(const te_imm_prev *p)
{
    if (!p->existed) Py_RETURN_NONE;
    if (p->expected) return Py_BuildValue("(KK)", (unsigned long long)p->count, (unsigned long long)p->expected);
    return Py_BuildValue("(KO)", (unsigned long long)p->count, Py_None);
}

void tpy_exp_disarm(eng_state *st, uint32_t imm)
{
    for (exp_ctx *x = st->exps; x; x = x->next)
        if (x->armed && x->imm == imm) {
            x->armed = false;
            Py_CLEAR(x->cb);
        }
}

PyObject *tpy_eng_set_imm_callback(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"callback", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *cb = st ? tpy_one_arg(args, kw, "set_imm_callback", names) : NULL;
    if (!cb || tpy_check_callable(cb, "callback") < 0) return NULL;
    int r = cb == Py_None ? te_imm_set_callback(st->e, NULL, NULL)
                          : te_imm_set_callback(st->e, tpy_imm_plain_tramp, st);
    if (r) return tpy_raise(r, "set_imm_callback");
    PyObject *old = st->imm_cb;
    if (cb != Py_None) Py_INCREF(cb);
    st->imm_cb = cb == Py_None ? NULL : cb;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

PyObject *tpy_eng_set_imm_count_expected(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm", "expected_count", "on_reached", NULL};
    eng_state *st = tpy_engine_state(self);
    uint32_t imm = 0;
    uint64_t count = 0;
    PyObject *cb;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O&O:set_imm_count_expected", kwlist, tpy_conv_u32, &imm,
                                            tpy_conv_u64, &count, &cb))
        return NULL;
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError, "on_reached must be callable, got %R", (PyObject *)Py_TYPE(cb));
        return NULL;
    }
    exp_ctx *x = calloc(1, sizeof *x);
    if (!x) return PyErr_NoMemory();
    x->st = st;
    x->imm = imm;
    Py_INCREF(cb);
    x->cb = cb;
    /* The trampoline needs the GIL, which we hold: linking after arming is safe. */
    te_imm_prev prev;
    int r = te_imm_expect(st->e, imm, count, tpy_exp_reached_tramp, x, &prev);
    if (r) {
        Py_DECREF(cb);
        free(x);
        return tpy_raise(r, "set_imm_count_expected");
    }
    tpy_exp_disarm(st, imm);
    x->armed = true;
    x->next = st->exps;
    if (st->exps) st->exps->prev = x;
    st->exps = x;
    return prev_tuple(&prev);
}

PyObject *tpy_eng_remove_imm_count(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"imm", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *arg = st ? tpy_one_arg(args, kw, "remove_imm_count", names) : NULL;
    uint32_t imm;
    if (!arg || !tpy_conv_u32(arg, &imm)) return NULL;
    te_imm_prev prev;
    int r = te_imm_remove(st->e, imm, &prev);
    if (r == -ENOENT) Py_RETURN_NONE;
    if (r) return tpy_raise(r, "remove_imm_count");
    tpy_exp_disarm(st, imm);
    return prev_tuple(&prev);
}

