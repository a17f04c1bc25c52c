/* UvmWatcher: a scalar watcher (te_watcher): a CPU thread calls back when a GPU- or
 * host-written u64 word changes. TransferEngine.alloc_scalar_watcher creates it. */
#include <stdlib.h>

#include "py_engine.h"

PyObject *TpWatcher;

typedef struct {
    PyObject_HEAD
    watch_ctx *x;
    PyObject *engine; /* strong: keeps x (owned by the engine state) alive */
} PyWatcher;

static bool watch_tramp(void *arg, uint64_t old_value, uint64_t new_value)
{
    watch_ctx *x = arg;
    cb_scope g = tpy_cb_enter(x->st);
    bool keep = false;
    if (x->freeing) {
        keep = true; /* free() releases it */
    } else if (x->cb) {
        PyObject *fn = x->cb;
        Py_INCREF(fn);
        PyObject *r = PyObject_CallFunction(fn, "KK", (unsigned long long)old_value, (unsigned long long)new_value);
        if (r) {
            int t = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (t < 0) tpy_report_cb_error(x->st, fn);
            keep = t > 0;
        } else {
            tpy_report_cb_error(x->st, fn); /* an exception releases the watcher, as in pplx */
        }
        Py_DECREF(fn);
        if (x->freeing) keep = true; /* the callback called free() on it */
    }
    if (!keep) {
        x->w = NULL; /* the engine releases it when we return false */
        Py_CLEAR(x->cb);
    }
    tpy_cb_leave(g);
    return keep;
}


static void watcher_dealloc(PyObject *self)
{
    Py_CLEAR(((PyWatcher *)self)->engine); /* the watcher itself keeps running */
    tpy_free_self(self);
}

static watch_ctx *live_watch(PyObject *self)
{
    watch_ctx *x = ((PyWatcher *)self)->x;
    if (!x->w) PyErr_SetString(ExcValueError, "UvmWatcher was released");
    return x->w ? x : NULL;
}

static PyObject *watcher_free(PyObject *self, PyObject *unused)
{
    watch_ctx *x = ((PyWatcher *)self)->x;
    if (!x->w || x->freeing) Py_RETURN_NONE;
    te_watcher *w = x->w;
    x->freeing = true;
    if (tpy_tl_in_callback == x->st) {
        te_watcher_free(w); /* from a callback of this engine: no wait on ourselves */
    } else {
        Py_BEGIN_ALLOW_THREADS
        te_watcher_free(w); /* waits for a running callback, which needs the GIL */
        Py_END_ALLOW_THREADS
    }
    x->w = NULL;
    x->freeing = false;
    Py_CLEAR(x->cb);
    Py_RETURN_NONE;
}

static PyObject *watcher_set(PyObject *self, PyObject *arg)
{
    uint64_t v;
    watch_ctx *x = live_watch(self);
    if (!x || !tpy_conv_u64(arg, &v)) return NULL;
    *x->host_ptr = v;
    Py_RETURN_NONE;
}

static PyObject *watcher_get_ptr(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyWatcher *)self)->x->dev_ptr);
}

static PyObject *watcher_get_host_ptr(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong((uint64_t)(uintptr_t)((PyWatcher *)self)->x->host_ptr);
}

static PyObject *watcher_get_value(PyObject *self, void *c)
{
    watch_ctx *x = live_watch(self);
    return x ? PyLong_FromUnsignedLongLong(*x->host_ptr) : NULL;
}

static PyObject *watcher_get_active(PyObject *self, void *c)
{
    return PyBool_FromLong(((PyWatcher *)self)->x->w != NULL);
}

static PyMethodDef watcher_methods[] = {
    {"free", watcher_free, METH_NOARGS,
     "free(): release the watcher; its callback is not running and will not run again\n"
     "after this returns. No-op if already released."},
    {"set", watcher_set, METH_O, "set(value): 64-bit store into the watched word from the host."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef watcher_getset[] = {
    {"ptr", watcher_get_ptr, NULL, "Device address of the watched u64 word (for kernels / CUDA graphs).", NULL},
    {"host_ptr", watcher_get_host_ptr, NULL, "Host address of the same word.", NULL},
    {"value", watcher_get_value, NULL, "Current value of the word.", NULL},
    {"active", watcher_get_active, NULL, "False once released.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot watcher_slots[] = {
    {Py_tp_new, tpy_new_forbidden},
    {Py_tp_dealloc, watcher_dealloc},
    {Py_tp_methods, watcher_methods},
    {Py_tp_getset, watcher_getset},
    {Py_tp_doc, (void *)"Scalar (UVM) watcher from TransferEngine.alloc_scalar_watcher(callback).\n"
                        "callback(old, new) -> bool runs on the engine's watcher thread each time the\n"
                        "word at `ptr` changes; returning False (or raising) releases the watcher.\n"
                        "Dropping this object does not release it; free() does."},
    {0, NULL},
};

PyType_Spec tpy_watcher_spec = {
    "tendril._tendril.UvmWatcher", sizeof(PyWatcher), 0, Py_TPFLAGS_DEFAULT, watcher_slots,
};


PyObject *tpy_eng_alloc_scalar_watcher(PyObject *self, PyObject *args, PyObject *kw)
{
    /* pplx-garden's stub says `callback`, its runtime `on_changed`: both work. */
    static const char *const names[] = {"callback", "on_changed", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *cb = st ? tpy_one_arg(args, kw, "alloc_scalar_watcher", names) : NULL;
    if (!cb) return NULL;
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError, "callback must be callable, got %R", (PyObject *)Py_TYPE(cb));
        return NULL;
    }
    watch_ctx *x = calloc(1, sizeof *x);
    PyWatcher *o = x ? (PyWatcher *)tpy_alloc(TpWatcher) : NULL;
    if (!o) {
        free(x);
        return x ? NULL : PyErr_NoMemory();
    }
    x->st = st;
    Py_INCREF(cb);
    x->cb = cb;
    /* The trampoline needs the GIL (held here): x is complete before it can run. */
    te_watcher *w = NULL;
    int r = te_watcher_alloc(st->e, watch_tramp, x, &w);
    if (r) {
        Py_DECREF(cb);
        free(x);
        Py_DECREF(o);
        return tpy_raise(r, "alloc_scalar_watcher");
    }
    x->w = w;
    x->dev_ptr = te_watcher_device_ptr(w);
    x->host_ptr = te_watcher_ptr(w);
    x->next = st->watchers;
    st->watchers = x;
    o->x = x;
    Py_INCREF(self);
    o->engine = self;
    return (PyObject *)o;
}

