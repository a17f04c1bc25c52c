/* _tendril: module object, exceptions and argument helpers. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "tendril_py.h"

PyObject *ExcTendrilError;
PyObject *ExcValueError;
PyObject *ExcTimeoutError;
PyObject *ExcStoppedError;

const char *tpy_errno_name(int err)
{
    switch (-err) {
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    case ETIMEDOUT: return "ETIMEDOUT";
    case ECANCELED: return "ECANCELED";
    case ECONNRESET: return "ECONNRESET";
    case ECONNREFUSED: return "ECONNREFUSED";
    case EHOSTUNREACH: return "EHOSTUNREACH";
    case ESHUTDOWN: return "ESHUTDOWN";
    case EBADMSG: return "EBADMSG";
    case ENOSPC: return "ENOSPC";
    case ERANGE: return "ERANGE";
    case ENODEV: return "ENODEV";
    case ENOENT: return "ENOENT";
    case EBUSY: return "EBUSY";
    case EPERM: return "EPERM";
    case EIO: return "EIO";
    case ENOSYS: return "ENOSYS";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EMSGSIZE: return "EMSGSIZE";
    case EAGAIN: return "EAGAIN";
    default: return NULL;
    }
}

static PyObject *exc_type_for(int err)
{
    switch (-err) {
    case EINVAL:
    case ERANGE:
    case EMSGSIZE:
    case EBADMSG:
    case ENOSPC:
        return ExcValueError;
    case ETIMEDOUT:
        return ExcTimeoutError;
    case ESHUTDOWN:
        return ExcStoppedError;
    default:
        return ExcTendrilError;
    }
}

PyObject *tpy_raise(int err, const char *what)
{
    const char *msg = te_last_error();
    if (!msg || !*msg) msg = te_strerror(err);
    PyObject *text = what ? PyUnicode_FromFormat("%s: %s", what, msg) : PyUnicode_FromString(msg);
    if (!text) return NULL;
    return tpy_raise_text(err, text);
}

PyObject *tpy_raise_text(int err, PyObject *text)
{
    if (!text) return NULL;
    PyObject *type = exc_type_for(err);
    PyObject *exc = PyObject_CallFunctionObjArgs(type, text, NULL);
    Py_DECREF(text);
    if (!exc) return NULL;
    PyObject *code = PyLong_FromLong(-err);
    if (!code || PyObject_SetAttrString(exc, "errno", code) < 0) {
        Py_XDECREF(code);
        Py_DECREF(exc);
        return NULL;
    }
    Py_DECREF(code);
    PyErr_SetObject(type, exc);
    Py_DECREF(exc);
    return NULL;
}

PyObject *tpy_error_string(int status, const char *msg)
{
    const char *name = tpy_errno_name(status);
    char head[64];
    if (name) snprintf(head, sizeof head, "[%s]", name);
    else snprintf(head, sizeof head, "[errno %d]", -status);
    if (msg && *msg) return PyUnicode_FromFormat("%s %s: %s", head, te_strerror(status), msg);
    return PyUnicode_FromFormat("%s %s", head, te_strerror(status));
}

int tpy_conv_u64(PyObject *o, void *out)
{
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %R", (PyObject *)Py_TYPE(o));
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(o);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "value %R is outside 0..2**64-1", o);
        }
        return 0;
    }
    *(uint64_t *)out = v;
    return 1;
}

int tpy_conv_u32(PyObject *o, void *out)
{
    uint64_t v;
    if (!tpy_conv_u64(o, &v)) return 0;
    if (v > UINT32_MAX) {
        PyErr_Format(PyExc_OverflowError, "value %R is outside 0..2**32-1", o);
        return 0;
    }
    *(uint32_t *)out = (uint32_t)v;
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

void tpy_free_self(PyObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    freefunc f = (freefunc)PyType_GetSlot(tp, Py_tp_free);
    f(self);
    Py_DECREF(tp);
}

static PyObject *py_strerror(PyObject *self, PyObject *arg)
{
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v > 0) v = -v;
    if (v < INT_MIN) v = INT_MIN;
    return PyUnicode_FromString(te_strerror((int)v));
}

static PyMethodDef module_methods[] = {
    {"detect_topology", (PyCFunction)(void (*)(void))tpy_detect_topology, METH_VARARGS | METH_KEYWORDS,
     "detect_topology(sysfs_root=None, cpuset=None, cuda_visible_devices=None) -> dict\n"
     "Raw topology as plain dicts (te_topo_detect); tendril.detect_topology wraps it."},
    {"strerror", py_strerror, METH_O, "strerror(errno) -> str: the engine's text for an error code."},
    {"_stop_all", tpy_stop_all, METH_NOARGS, "Stops every live engine (registered with atexit)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_tendril",
    "Tendril TransferEngine: CPython binding of the C API (include/tendril/te.h).",
    -1,
    module_methods,
    NULL, NULL, NULL, NULL,
};

static int add_exc(PyObject *m, const char *name, PyObject *bases, PyObject **out)
{
    char full[128];
    snprintf(full, sizeof full, "tendril._tendril.%s", name);
    *out = PyErr_NewException(full, bases, NULL);
    if (!*out) return -1;
    Py_INCREF(*out);
    if (PyModule_AddObject(m, name, *out) < 0) {
        Py_DECREF(*out);
        return -1;
    }
    return 0;
}

PyMODINIT_FUNC PyInit__tendril(void);

PyMODINIT_FUNC PyInit__tendril(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    PyObject *b = NULL;
    if (add_exc(m, "TendrilError", PyExc_RuntimeError, &ExcTendrilError) < 0) goto fail;
    b = PyTuple_Pack(2, ExcTendrilError, PyExc_ValueError);
    if (!b || add_exc(m, "TendrilValueError", b, &ExcValueError) < 0) goto fail;
    Py_CLEAR(b);
    b = PyTuple_Pack(2, ExcTendrilError, PyExc_TimeoutError);
    if (!b || add_exc(m, "TendrilTimeoutError", b, &ExcTimeoutError) < 0) goto fail;
    Py_CLEAR(b);
    if (add_exc(m, "EngineStoppedError", ExcTendrilError, &ExcStoppedError) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "DEVICE_HOST", TE_DEVICE_HOST) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "MAX_NICS", TE_MAX_NICS) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "MAX_GROUPS", TE_MAX_GROUPS) < 0) goto fail;
    if (tpy_types_init(m) < 0 || tpy_engine_init(m) < 0) goto fail;
    return m;
fail:
    Py_XDECREF(b);
    Py_DECREF(m);
    return NULL;
}
