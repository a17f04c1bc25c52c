/* Range-checked integer, timeout and single-argument converters (py_convert.h). */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "py_convert.h"

/* PyLong value of o (an int, or an object with __index__), new reference. */
static PyObject *as_index(PyObject *o)
{
    if (PyLong_Check(o)) {
        Py_INCREF(o);
        return o;
    }
    PyObject *i = PyNumber_Index(o); /* numpy integers; not float */
    if (i) return i;
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "expected an int, got %R", (PyObject *)Py_TYPE(o));
    return NULL;
}

int tpy_conv_u64(PyObject *o, void *out)
{
    PyObject *i = as_index(o);
    if (!i) return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        /* negative values raise OverflowError too ("can't convert negative int") */
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "value %R is outside 0..2**64-1", i);
        }
        Py_DECREF(i);
        return 0;
    }
    Py_DECREF(i);
    *(uint64_t *)out = v;
    return 1;
}

int tpy_conv_u32(PyObject *o, void *out)
{
    uint64_t v;
    if (!tpy_conv_u64(o, &v)) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "value %R is outside 0..2**32-1", o);
        }
        return 0;
    }
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "value %R is outside 0..2**32-1", o);
        return 0;
    }
    *(uint32_t *)out = (uint32_t)v;
    return 1;
}

int tpy_conv_int(PyObject *o, void *out)
{
    PyObject *i = as_index(o);
    if (!i) return 0;
    int overflow = 0;
    long long v = PyLong_AsLongLongAndOverflow(i, &overflow);
    Py_DECREF(i);
    if (v == -1 && PyErr_Occurred()) return 0;
    if (overflow || v < INT_MIN || v > INT_MAX) {
        PyErr_Format(PyExc_OverflowError, "value %R is outside -2**31..2**31-1", o);
        return 0;
    }
    *(int *)out = (int)v;
    return 1;
}

int tpy_conv_opt_u32(PyObject *o, void *out)
{
    tpy_opt_u32 *r = out;
    if (o == Py_None) {
        r->has = false;
        r->v = 0;
        return 1;
    }
    r->has = true;
    return tpy_conv_u32(o, &r->v);
}

int tpy_conv_timeout(PyObject *o, void *out)
{
    if (o == Py_None) {
        *(int64_t *)out = -1;
        return 1;
    }
    double s = PyFloat_AsDouble(o);
    if (s == -1.0 && PyErr_Occurred()) return 0;
    if (isnan(s) || s < 0) {
        PyErr_SetString(PyExc_ValueError, "timeout must be >= 0 seconds (or None: no limit)");
        return 0;
    }
    double ms = ceil(s * 1000.0);
    *(int64_t *)out = ms > (double)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)ms;
    return 1;
}

PyObject *tpy_one_arg(PyObject *args, PyObject *kw, const char *fname, const char *const *names)
{
    Py_ssize_t npos = PyTuple_Size(args);
    Py_ssize_t nkw = kw ? PyDict_Size(kw) : 0;
    PyObject *found = NULL;
    if (npos == 1 && nkw == 0) return PyTuple_GetItem(args, 0);
    if (npos == 0 && nkw == 1) {
        for (const char *const *n = names; *n; n++) {
            found = PyDict_GetItemString(kw, *n);
            if (found) return found;
        }
    }
    PyErr_Format(PyExc_TypeError, "%s() takes exactly one argument (%s), %zd given", fname, names[0],
                 npos + nkw);
    return NULL;
}
