/* TransferEngine's memory registration: register_memory / unregister_memory and the
 * registry (ptr -> handles) that keeps every registered handle alive. */
#include <stdlib.h>

#include "py_engine.h"


static int registry_add(eng_state *st, PyMrHandle *h)
{
    PyObject *key = PyLong_FromUnsignedLongLong(h->ptr);
    if (!key) return -1;
    PyObject *list = PyDict_GetItemWithError(st->registry, key);
    int r = -1;
    if (list) {
        r = PyList_Append(list, (PyObject *)h);
    } else if (!PyErr_Occurred()) {
        list = PyList_New(0);
        if (list) {
            r = PyList_Append(list, (PyObject *)h);
            if (r == 0) r = PyDict_SetItem(st->registry, key, list);
            Py_DECREF(list);
        }
    }
    Py_DECREF(key);
    return r;
}

static int registry_remove(eng_state *st, PyMrHandle *h)
{
    PyObject *key = PyLong_FromUnsignedLongLong(h->ptr);
    if (!key) return -1;
    PyObject *list = PyDict_GetItemWithError(st->registry, key);
    int r = 0;
    if (list) {
        Py_ssize_t n = PyList_Size(list);
        for (Py_ssize_t k = 0; k < n; k++)
            if (PyList_GetItem(list, k) == (PyObject *)h) {
                r = PyList_SetSlice(list, k, k + 1, NULL);
                break;
            }
        if (r == 0 && PyList_Size(list) == 0) r = PyDict_DelItem(st->registry, key);
    } else if (PyErr_Occurred()) {
        r = -1;
    }
    Py_DECREF(key);
    return r;
}

/* register_memory(ptr, len=None, device=None, *, remote=True, owner=None): `ptr` is an int
 * pointer (pplx-garden's form, with len and device) or a buffer-protocol object (host
 * memory whose export is held while registered). */
PyObject *tpy_eng_register_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"ptr", "len", "device", "remote", "owner", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *target, *len_obj = Py_None, *dev_obj = Py_None, *owner = Py_None;
    int remote = 1;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O|OO$pO:register_memory", kwlist, &target, &len_obj,
                                            &dev_obj, &remote, &owner))
        return NULL;
    int device = TE_DEVICE_HOST;
    if (dev_obj != Py_None) {
        if (!tpy_conv_int(dev_obj, &device)) return NULL;
        if (device < TE_DEVICE_HOST) {
            PyErr_Format(PyExc_ValueError, "register_memory: device must be -1 (host) or a CUDA ordinal, got %d",
                         device);
            return NULL;
        }
    }
    Py_buffer *view = NULL;
    void *ptr;
    uint64_t len = 0;
    if (PyLong_Check(target)) {
        uint64_t p;
        if (!tpy_conv_u64(target, &p)) return NULL;
        if (len_obj == Py_None) {
            PyErr_SetString(PyExc_TypeError, "register_memory(ptr, len, device): len is required with a pointer");
            return NULL;
        }
        if (!tpy_conv_u64(len_obj, &len)) return NULL;
        ptr = (void *)(uintptr_t)p;
    } else {
        if (device != TE_DEVICE_HOST) {
            PyErr_SetString(PyExc_ValueError,
                            "register_memory: a buffer object is host memory; pass (ptr, len, device) for CUDA");
            return NULL;
        }
        view = calloc(1, sizeof *view);
        if (!view) return PyErr_NoMemory();
        int flags = PyBUF_ANY_CONTIGUOUS | (remote ? PyBUF_WRITABLE : 0);
        if (PyObject_GetBuffer(target, view, flags) < 0) {
            free(view);
            if (PyErr_ExceptionMatches(PyExc_TypeError) && !PyObject_CheckBuffer(target)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError,
                             "register_memory: expected an int pointer or a buffer-protocol object, got %R",
                             (PyObject *)Py_TYPE(target));
            }
            return NULL;
        }
        ptr = view->buf;
        len = (uint64_t)view->len;
        if (len_obj != Py_None) {
            uint64_t want;
            if (!tpy_conv_u64(len_obj, &want)) goto fail_view;
            if (want > len) {
                PyErr_Format(ExcValueError, "register_memory: len %llu exceeds the buffer's %llu bytes",
                             (unsigned long long)want, (unsigned long long)len);
                goto fail_view;
            }
            len = want;
        }
    }
    te_mr *mr = NULL;
    int r;
    unsigned mflags = remote ? TE_MR_REMOTE_WRITE : TE_MR_LOCAL;
    Py_BEGIN_ALLOW_THREADS
    r = te_mr_register(st->e, ptr, (size_t)len, device, mflags, &mr);
    Py_END_ALLOW_THREADS
    if (r) {
        tpy_raise(r, NULL);
        goto fail_view;
    }
    PyObject *desc = Py_None;
    Py_INCREF(desc);
    if (remote) {
        te_mr_desc d;
        r = te_mr_desc_get(mr, &d);
        Py_DECREF(desc);
        desc = r ? tpy_raise(r, NULL) : tpy_desc_new(&d);
        if (!desc) goto fail_mr;
    }
    PyObject *h = tpy_handle_new(st, mr, view, owner, (uint64_t)(uintptr_t)ptr, len, device, desc);
    if (!h) {
        Py_DECREF(desc);
        goto fail_mr;
    }
    if (registry_add(st, (PyMrHandle *)h) < 0) {
        Py_DECREF(desc);
        Py_DECREF(h); /* dealloc deregisters and releases the view */
        return NULL;
    }
    return Py_BuildValue("(NN)", h, desc);
fail_mr:
    te_mr_deregister(mr);
fail_view:
    if (view) {
        PyBuffer_Release(view);
        free(view);
    }
    return NULL;
}

/* Deregisters one handle. The handle gives up its te_mr *before* the GIL is released, so
 * that another thread unregistering (or writing from) the same handle meanwhile sees it
 * unregistered instead of using a te_mr that is being freed; if deregistration fails
 * (-EBUSY: operations in flight) the handle gets it back. */
static int unregister_one(eng_state *st, PyMrHandle *h)
{
    te_mr *mr = h->mr;
    if (!mr) return 0;
    h->mr = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = te_mr_deregister(mr);
    Py_END_ALLOW_THREADS
    if (r) {
        h->mr = mr;
        tpy_raise(r, "unregister_memory");
        return -1;
    }
    tpy_handle_release_owner(h);
    PyObject *hold = (PyObject *)h;
    Py_INCREF(hold); /* the registry may hold the last reference */
    int rr = h->st ? registry_remove(st, h) : 0;
    h->st = NULL;
    Py_DECREF(hold);
    return rr;
}

/* unregister_memory(ptr): every region registered at ptr; also takes a handle. */
PyObject *tpy_eng_unregister_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"ptr", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *target = st ? tpy_one_arg(args, kw, "unregister_memory", names) : NULL;
    if (!target) return NULL;
    if (PyObject_TypeCheck(target, (PyTypeObject *)TpMrHandle)) {
        PyMrHandle *h = (PyMrHandle *)target;
        if (!h->mr) {
            PyErr_SetString(ExcValueError, "unregister_memory: region is not registered");
            return NULL;
        }
        if (h->st != st) {
            PyErr_SetString(ExcValueError, "unregister_memory: region belongs to another engine");
            return NULL;
        }
        if (unregister_one(st, h) < 0) return NULL;
        Py_RETURN_NONE;
    }
    uint64_t ptr;
    if (!PyLong_Check(target)) {
        PyErr_Format(PyExc_TypeError, "unregister_memory: expected a pointer (int) or a MemoryRegionHandle, got %R",
                     (PyObject *)Py_TYPE(target));
        return NULL;
    }
    if (!tpy_conv_u64(target, &ptr)) return NULL;
    PyObject *list = PyDict_GetItemWithError(st->registry, target);
    if (!list) {
        if (!PyErr_Occurred())
            PyErr_Format(ExcValueError, "unregister_memory: no region registered at 0x%llx", (unsigned long long)ptr);
        return NULL;
    }
    PyObject *copy = PySequence_List(list); /* unregister_one edits the registry */
    if (!copy) return NULL;
    Py_ssize_t n = PyList_Size(copy);
    for (Py_ssize_t k = n - 1; k >= 0; k--)
        if (unregister_one(st, (PyMrHandle *)PyList_GetItem(copy, k)) < 0) {
            Py_DECREF(copy);
            return NULL;
        }
    Py_DECREF(copy);
    Py_RETURN_NONE;
}

/* Detaches every registered handle from the engine. With `dereg` the regions are
 * deregistered and their owners released now (engine stopped); otherwise the exports
 * move to *later, to be released once the engine is destroyed. GIL held. */
void tpy_detach_handles(eng_state *st, bool dereg, deferred **later)
{
    if (!st->registry) return;
    PyObject *key, *list;
    Py_ssize_t pos = 0;
    while (PyDict_Next(st->registry, &pos, &key, &list)) {
        Py_ssize_t n = PyList_Size(list);
        for (Py_ssize_t k = 0; k < n; k++) {
            PyMrHandle *h = (PyMrHandle *)PyList_GetItem(list, k);
            if (dereg) {
                if (h->mr) te_mr_deregister(h->mr); /* stopped: nothing is in flight */
                h->mr = NULL;
                tpy_handle_release_owner(h);
            } else {
                h->mr = NULL; /* freed with the engine */
                deferred *d = calloc(1, sizeof *d);
                if (d) {
                    d->view = h->view;
                    d->owner = h->owner;
                    d->next = *later;
                    *later = d;
                } /* else: leak the export (never free memory a NIC may still use) */
                h->view = NULL;
                h->owner = NULL;
            }
            h->st = NULL;
        }
    }
    PyDict_Clear(st->registry);
}

