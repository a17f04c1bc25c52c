/* Counter: a completion counter bumped by the engine's workers (te_counter), passed as
 * counter= to any submit_* method. */
#include <errno.h>
#include <limits.h>

#include "tendril_py.h"

PyObject *TpCounter;

static PyObject *counter_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, ":Counter", kwlist)) return NULL;
    te_counter *c = NULL;
    int r = te_counter_create(&c);
    if (r) return tpy_raise(r, "Counter");
    PyCounter *o = (PyCounter *)tpy_alloc((PyObject *)tp);
    if (!o) {
        te_counter_destroy(c);
        return NULL;
    }
    o->c = c;
    o->submitted = 0;
    return (PyObject *)o;
}

static void counter_dealloc(PyObject *self)
{
    PyCounter *o = (PyCounter *)self;
    if (o->c) {
        /* Workers bump the counter directly: it must outlive every operation that uses
         * it. Every accepted operation completes (op timeout or engine stop at the
         * latest), so this wait ends; if it does not within 2 minutes, leak rather than
         * free memory a worker may still write. */
        bool idle = te_counter_done(o->c) >= o->submitted;
        if (!idle) {
            int r;
            Py_BEGIN_ALLOW_THREADS
            r = te_counter_wait(o->c, o->submitted, 120000);
            Py_END_ALLOW_THREADS
            idle = r == 0;
        }
        if (idle) te_counter_destroy(o->c);
    }
    tpy_free_self(self);
}

static int counter_wait_fn(void *c, uint64_t n, int ms) { return te_counter_wait(c, n, ms); }

static PyObject *counter_wait(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"n", "timeout", NULL};
    PyCounter *o = (PyCounter *)self;
    PyObject *nobj = Py_None;
    int64_t tmo = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO&:wait", kwlist, &nobj, tpy_conv_timeout, &tmo)) return NULL;
    uint64_t n = o->submitted;
    if (nobj != Py_None && !tpy_conv_u64(nobj, &n)) return NULL;
    int r = tpy_wait(counter_wait_fn, o->c, n, tmo);
    if (r == INT_MIN) return NULL;
    if (r == -ETIMEDOUT)
        return tpy_raise_wait_timeout("Counter.wait", te_counter_done(o->c), n, "operations done", tmo);
    if (r) return tpy_raise(r, "Counter.wait");
    Py_RETURN_NONE;
}

static PyObject *counter_get_done(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(te_counter_done(((PyCounter *)self)->c));
}

static PyObject *counter_get_errors(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(te_counter_errors(((PyCounter *)self)->c));
}

static PyObject *counter_get_submitted(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyCounter *)self)->submitted);
}

static PyObject *counter_repr(PyObject *self)
{
    PyCounter *o = (PyCounter *)self;
    return PyUnicode_FromFormat("Counter(submitted=%llu, done=%llu, errors=%llu)",
                                (unsigned long long)o->submitted, (unsigned long long)te_counter_done(o->c),
                                (unsigned long long)te_counter_errors(o->c));
}

static PyMethodDef counter_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))counter_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(n=None, timeout=None): block (GIL released) until `n` operations have completed\n"
     "(default: all submitted so far). Raises TendrilTimeoutError after `timeout` seconds."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef counter_getset[] = {
    {"done", counter_get_done, NULL, "Operations completed (successfully or not).", NULL},
    {"errors", counter_get_errors, NULL, "Of which failed.", NULL},
    {"submitted", counter_get_submitted, NULL, "Operations accepted with this counter.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot counter_slots[] = {
    {Py_tp_new, counter_new},
    {Py_tp_dealloc, counter_dealloc},
    {Py_tp_repr, counter_repr},
    {Py_tp_methods, counter_methods},
    {Py_tp_getset, counter_getset},
    {Py_tp_doc, (void *)"Counter(): completion counter bumped by the engine's workers (no callback\n"
                        "thread, no GIL). Pass it as counter= to any submit_* method."},
    {0, NULL},
};

PyType_Spec tpy_counter_spec = {
    "tendril._tendril.Counter", sizeof(PyCounter), 0, Py_TPFLAGS_DEFAULT, counter_slots,
};

