/* MemoryRegionHandle: the local handle of a registered region (source of writes). It
 * keeps the memory's buffer export (or owner object) alive while registered. */
#include <stdlib.h>

#include "py_engine.h"

PyObject *TpMrHandle;

/* Releases what a handle keeps alive (GIL held). */
void tpy_handle_release_owner(PyMrHandle *h)
{
    if (h->view) {
        PyBuffer_Release(h->view);
        free(h->view);
        h->view = NULL;
    }
    Py_CLEAR(h->owner);
}

static void handle_dealloc(PyObject *self)
{
    PyMrHandle *h = (PyMrHandle *)self;
    if (h->mr) {
        /* Only reachable if the registry let go of a registered handle. */
        if (te_mr_deregister(h->mr) == 0) {
            h->mr = NULL;
            tpy_handle_release_owner(h);
        } else {
            /* still in use: leak the export rather than free memory under the NIC */
            Py_CLEAR(h->owner);
        }
    } else {
        tpy_handle_release_owner(h);
    }
    Py_CLEAR(h->desc);
    tpy_free_self(self);
}

static PyObject *handle_get_ptr(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyMrHandle *)self)->ptr);
}

static PyObject *handle_get_len(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyMrHandle *)self)->len);
}
static PyObject *handle_get_device(PyObject *self, void *c) { return PyLong_FromLong(((PyMrHandle *)self)->device); }

static PyObject *handle_get_registered(PyObject *self, void *c)
{
    return PyBool_FromLong(((PyMrHandle *)self)->mr != NULL);
}

static PyObject *handle_get_desc(PyObject *self, void *c)
{
    PyMrHandle *h = (PyMrHandle *)self;
    PyObject *d = h->desc ? h->desc : Py_None;
    Py_INCREF(d);
    return d;
}

static PyObject *handle_repr(PyObject *self)
{
    PyMrHandle *h = (PyMrHandle *)self;
    char text[160];
    snprintf(text, sizeof text, "MemoryRegionHandle(ptr=0x%llx, len=%llu, device=%d%s)", (unsigned long long)h->ptr,
             (unsigned long long)h->len, h->device, h->mr ? "" : ", unregistered");
    return PyUnicode_FromString(text);
}

/* "{ptr: 0x..., len: N, device: D}" (pplx-garden's debug_str names the pointer). */
static PyObject *handle_debug_str(PyObject *self, PyObject *unused)
{
    PyMrHandle *h = (PyMrHandle *)self;
    char text[128];
    snprintf(text, sizeof text, "{ptr: 0x%llx, len: %llu, device: %d%s}", (unsigned long long)h->ptr,
             (unsigned long long)h->len, h->device, h->mr ? "" : ", unregistered");
    return PyUnicode_FromString(text);
}

/* A PyCapsule named "tendril.te_mr" holding the region's te_mr *, for C extensions that
 * call the C API with it (pplx-garden hands its handle to its Rust code the same way).
 * Valid while the region stays registered. */
static PyObject *handle_capsule(PyObject *self, PyObject *unused)
{
    PyMrHandle *h = (PyMrHandle *)self;
    if (!h->mr) {
        PyErr_SetString(ExcValueError, "capsule: region is not registered");
        return NULL;
    }
    return PyCapsule_New(h->mr, "tendril.te_mr", NULL);
}

static PyMethodDef handle_methods[] = {
    {"debug_str", handle_debug_str, METH_NOARGS, "debug_str() -> str: pointer, length and device."},
    {"capsule", handle_capsule, METH_NOARGS, "capsule() -> PyCapsule('tendril.te_mr') of the registered region."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef handle_getset[] = {
    {"ptr", handle_get_ptr, NULL, "Registered base address.", NULL},
    {"len", handle_get_len, NULL, "Registered length in bytes.", NULL},
    {"device", handle_get_device, NULL, "-1 for host memory, else the CUDA ordinal.", NULL},
    {"registered", handle_get_registered, NULL, "False after unregister_memory() or engine teardown.", NULL},
    {"descriptor", handle_get_desc, NULL, "MemoryRegionDescriptor to give peers (None if local-only).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_new, tpy_new_forbidden},
    {Py_tp_methods, handle_methods},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_repr, handle_repr},
    {Py_tp_getset, handle_getset},
    {Py_tp_doc, (void *)"Local handle of a registered region (source of writes). Keeps the memory's\n"
                        "owner alive until unregister_memory()."},
    {0, NULL},
};

PyType_Spec tpy_handle_spec = {
    "tendril._tendril.MemoryRegionHandle", sizeof(PyMrHandle), 0, Py_TPFLAGS_DEFAULT, handle_slots,
};


PyObject *tpy_handle_new(eng_state *st, te_mr *mr, Py_buffer *view, PyObject *owner, uint64_t ptr, uint64_t len,
                         int device, PyObject *desc)
{
    PyMrHandle *h = (PyMrHandle *)tpy_alloc(TpMrHandle);
    if (!h) return NULL;
    h->mr = mr;
    h->st = st;
    h->view = view;
    h->owner = NULL;
    if (owner != Py_None) {
        Py_INCREF(owner);
        h->owner = owner;
    }
    h->ptr = ptr;
    h->len = len;
    h->device = device;
    Py_INCREF(desc);
    h->desc = desc;
    return (PyObject *)h;
}

te_mr *tpy_src_mr_of(PyObject *o, eng_state *st, const char *name)
{
    if (!PyObject_TypeCheck(o, (PyTypeObject *)TpMrHandle)) {
        PyErr_Format(PyExc_TypeError, "%s must be a MemoryRegionHandle, got %R", name, (PyObject *)Py_TYPE(o));
        return NULL;
    }
    PyMrHandle *h = (PyMrHandle *)o;
    if (!h->mr) {
        PyErr_Format(ExcValueError, "%s: region is not registered (unregistered or engine gone)", name);
        return NULL;
    }
    if (h->st != st) {
        PyErr_Format(ExcValueError, "%s: region was registered with another engine", name);
        return NULL;
    }
    return h->mr;
}
