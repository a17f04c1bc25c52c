/* Helpers shared by the types and the engine's methods: allocation, argument type
 * checks, and sliced waits. */
#include <errno.h>
#include <limits.h>

#include "tendril_py.h"

PyObject *tpy_alloc(PyObject *tp)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot((PyTypeObject *)tp, Py_tp_alloc);
    return alloc((PyTypeObject *)tp, 0);
}

void tpy_free_self(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

PyObject *tpy_new_forbidden(PyTypeObject *tp, PyObject *a, PyObject *k)
{
    PyObject *name = PyType_GetName(tp);
    PyErr_Format(PyExc_TypeError, "%U objects are created by the TransferEngine, not directly", name);
    Py_XDECREF(name);
    return NULL;
}

int tpy_check_callable(PyObject *o, const char *name)
{
    if (o != Py_None && !PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None, got %R", name, (PyObject *)Py_TYPE(o));
        return -1;
    }
    return 0;
}

static bool check_type(PyObject *o, PyObject *tp, const char *name, const char *tname)
{
    if (PyObject_TypeCheck(o, (PyTypeObject *)tp)) return true;
    PyErr_Format(PyExc_TypeError, "%s must be a %s, got %R", name, tname, (PyObject *)Py_TYPE(o));
    return false;
}

const te_mr_desc *tpy_desc_of(PyObject *o, const char *name)
{
    return check_type(o, TpMrDescriptor, name, "MemoryRegionDescriptor") ? &((PyMrDescriptor *)o)->desc : NULL;
}

const te_addr *tpy_addr_of(PyObject *o, const char *name)
{
    return check_type(o, TpDomainAddress, name, "DomainAddress") ? &((PyDomainAddress *)o)->addr : NULL;
}

te_pages *tpy_pages_of(PyObject *o, const char *name)
{
    return check_type(o, TpPageIndices, name, "PageIndices") ? ((PyPageIndices *)o)->pages : NULL;
}

int tpy_wait(tpy_wait_fn fn, void *obj, uint64_t n, int64_t timeout_ms)
{
    /* Slices keep Ctrl-C working during long waits. */
    for (int64_t left = timeout_ms;;) {
        int slice = left < 0 || left > 100 ? 100 : (int)left;
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = fn(obj, n, slice);
        Py_END_ALLOW_THREADS
        if (r != -ETIMEDOUT) return r;
        if (left >= 0) {
            left -= slice;
            if (left <= 0) return r;
        }
        if (PyErr_CheckSignals() < 0) return INT_MIN; /* exception set */
    }
}
