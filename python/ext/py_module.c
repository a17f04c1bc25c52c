/* _tendril: the module object, its exceptions, constants and types, and strerror(). */
#include <string.h>

#include "tendril_py.h"

#ifndef TENDRIL_VERSION_STRING
#error "TENDRIL_VERSION_STRING is set by python/CMakeLists.txt (the project version)"
#endif

static PyObject *py_strerror(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"errno", NULL};
    PyObject *o = tpy_one_arg(args, kw, "strerror", names);
    int v;
    if (!o || !tpy_conv_int(o, &v)) return NULL;
    if (v > 0) v = -v; /* accepts errno (5) and te_ codes (-5) */
    return PyUnicode_FromString(te_strerror(v));
}

static PyMethodDef module_methods[] = {
    {"detect_topology", (PyCFunction)(void (*)(void))tpy_detect_topology, METH_VARARGS | METH_KEYWORDS,
     "detect_topology(sysfs_root=None, cpuset=None, cuda_visible_devices=None) -> dict\n"
     "Raw topology as plain dicts (te_topo_detect); tendril.detect_topology wraps it."},
    {"strerror", (PyCFunction)(void (*)(void))py_strerror, METH_VARARGS | METH_KEYWORDS,
     "strerror(errno) -> str: the engine's text for an error code."},
    {"_stop_all", tpy_stop_all, METH_NOARGS, "Stops every live engine (registered with atexit)."},
    {"_set_log_bridge", tpy_set_log_bridge, METH_O,
     "_set_log_bridge(logger or None) -> bool: the library's messages go to logger.log() "
     "(False: not installed because TENDRIL_LOG_FILE is set)."},
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

static int add_exceptions(PyObject *m)
{
    int r = -1;
    PyObject *b = NULL;
    if (add_exc(m, "TendrilError", PyExc_RuntimeError, &ExcTendrilError) < 0) goto out;
    b = PyTuple_Pack(2, ExcTendrilError, PyExc_ValueError);
    if (!b || add_exc(m, "TendrilValueError", b, &ExcValueError) < 0) goto out;
    Py_CLEAR(b);
    b = PyTuple_Pack(2, ExcTendrilError, PyExc_TimeoutError);
    if (!b || add_exc(m, "TendrilTimeoutError", b, &ExcTimeoutError) < 0) goto out;
    if (add_exc(m, "EngineStoppedError", ExcTendrilError, &ExcStoppedError) < 0) goto out;
    r = 0;
out:
    Py_XDECREF(b);
    return r;
}

static int add_types(PyObject *m)
{
    struct {
        PyType_Spec *spec;
        PyObject **out;
    } types[] = {
        {&tpy_addr_spec, &TpDomainAddress}, {&tpy_desc_spec, &TpMrDescriptor}, {&tpy_pages_spec, &TpPageIndices},
        {&tpy_counter_spec, &TpCounter},    {&tpy_handle_spec, &TpMrHandle},   {&tpy_immc_spec, &TpImmCounter},
        {&tpy_watcher_spec, &TpWatcher},    {&tpy_engine_spec, &TpEngine},
    };
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        PyObject *t = PyType_FromSpec(types[k].spec);
        if (!t) return -1;
        *types[k].out = t;
        Py_INCREF(t);
        if (PyModule_AddObject(m, strrchr(types[k].spec->name, '.') + 1, t) < 0) {
            Py_DECREF(t);
            return -1;
        }
    }
    return 0;
}

PyMODINIT_FUNC PyInit__tendril(void);

PyMODINIT_FUNC PyInit__tendril(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (add_exceptions(m) < 0 || add_types(m) < 0 ||
        PyModule_AddStringConstant(m, "__version__", TENDRIL_VERSION_STRING) < 0 ||
        PyModule_AddIntConstant(m, "DEVICE_HOST", TE_DEVICE_HOST) < 0 ||
        PyModule_AddIntConstant(m, "MAX_NICS", TE_MAX_NICS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_GROUPS", TE_MAX_GROUPS) < 0
#ifdef TENDRIL_PY_A2A
        || tpy_add_a2a(m) < 0
#endif
    ) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
