/* ImmCounter: a pollable counter of one immediate value (te_imm_counter), bumped by the
 * workers with no callback thread involved; TransferEngine.imm_counter(imm) creates it. */
#include <errno.h>
#include <limits.h>

#include "py_engine.h"

PyObject *TpImmCounter;

typedef struct {
    PyObject_HEAD
    te_imm_counter *c;
    PyObject *engine; /* strong: the counter must die before the engine */
    uint32_t imm;
} PyImmCounter;

static void immc_close_impl(PyImmCounter *o)
{
    if (o->c) {
        te_imm_counter_destroy(o->c);
        o->c = NULL;
    }
    Py_CLEAR(o->engine);
}

static void immc_dealloc(PyObject *self)
{
    immc_close_impl((PyImmCounter *)self);
    tpy_free_self(self);
}

static int immc_wait_fn(void *c, uint64_t n, int ms) { return te_imm_counter_wait(c, n, ms); }

static PyObject *immc_wait(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"n", "timeout", NULL};
    PyImmCounter *o = (PyImmCounter *)self;
    uint64_t n = 1;
    int64_t tmo = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&O&:wait", kwlist, tpy_conv_u64, &n, tpy_conv_timeout, &tmo))
        return NULL;
    if (!o->c) {
        PyErr_SetString(PyExc_ValueError, "ImmCounter is closed");
        return NULL;
    }
    int r = tpy_wait(immc_wait_fn, o->c, n, tmo);
    if (r == INT_MIN) return NULL;
    if (r == -ETIMEDOUT) {
        char unit[32];
        snprintf(unit, sizeof unit, "immediates %lu", (unsigned long)o->imm);
        return tpy_raise_wait_timeout("ImmCounter.wait", te_imm_counter_value(o->c), n, unit, tmo);
    }
    if (r) return tpy_raise(r, "ImmCounter.wait");
    Py_RETURN_NONE;
}

static PyObject *immc_close(PyObject *self, PyObject *unused)
{
    immc_close_impl((PyImmCounter *)self);
    Py_RETURN_NONE;
}

static PyObject *immc_get_value(PyObject *self, void *c)
{
    PyImmCounter *o = (PyImmCounter *)self;
    return PyLong_FromUnsignedLongLong(o->c ? te_imm_counter_value(o->c) : 0);
}

static PyObject *immc_get_imm(PyObject *self, void *c) { return PyLong_FromUnsignedLong(((PyImmCounter *)self)->imm); }

static PyObject *immc_repr(PyObject *self)
{
    PyImmCounter *o = (PyImmCounter *)self;
    return PyUnicode_FromFormat("ImmCounter(imm=%lu, value=%llu%s)", (unsigned long)o->imm,
                                (unsigned long long)(o->c ? te_imm_counter_value(o->c) : 0), o->c ? "" : ", closed");
}

static PyMethodDef immc_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))immc_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(n=1, timeout=None): block (GIL released) until n immediates are available and\n"
     "consume them; surplus stays for the next wait. TendrilTimeoutError after `timeout` s\n"
     "(nothing consumed), EngineStoppedError if the engine stops."},
    {"close", immc_close, METH_NOARGS, "close(): stop counting (removes the counter from the engine)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef immc_getset[] = {
    {"value", immc_get_value, NULL, "Immediates available now.", NULL},
    {"imm", immc_get_imm, NULL, "The immediate value counted.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot immc_slots[] = {
    {Py_tp_new, tpy_new_forbidden},
    {Py_tp_dealloc, immc_dealloc},
    {Py_tp_repr, immc_repr},
    {Py_tp_methods, immc_methods},
    {Py_tp_getset, immc_getset},
    {Py_tp_doc, (void *)"Pollable immediate counter (TransferEngine.imm_counter(imm)): a counting\n"
                        "semaphore bumped by the workers, no callback thread involved."},
    {0, NULL},
};

PyType_Spec tpy_immc_spec = {
    "tendril._tendril.ImmCounter", sizeof(PyImmCounter), 0, Py_TPFLAGS_DEFAULT, immc_slots,
};


PyObject *tpy_eng_imm_counter(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"imm", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *arg = st ? tpy_one_arg(args, kw, "imm_counter", names) : NULL;
    uint32_t imm;
    if (!arg || !tpy_conv_u32(arg, &imm)) return NULL;
    te_imm_counter *c = NULL;
    int r = te_imm_counter_create(st->e, imm, &c);
    if (r) return tpy_raise(r, "imm_counter");
    tpy_exp_disarm(st, imm);
    PyImmCounter *o = (PyImmCounter *)tpy_alloc(TpImmCounter);
    if (!o) {
        te_imm_counter_destroy(c);
        return NULL;
    }
    o->c = c;
    o->imm = imm;
    Py_INCREF(self);
    o->engine = self;
    return (PyObject *)o;
}

