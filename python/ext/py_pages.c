/* PageIndices: an immutable, shared list of u32 page indices (te_pages) for paged writes. */
#include <stdlib.h>
#include <string.h>

#include "tendril_py.h"

PyObject *TpPageIndices;

static bool is_u32_format(const char *f)
{
    if (!f) return false;
    if (*f == '@' || *f == '=' || *f == '<') f++;
    return (f[0] == 'I' || (f[0] == 'L' && sizeof(unsigned long) == 4)) && f[1] == '\0';
}

static PyObject *pages_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"indices", NULL};
    PyObject *src;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:PageIndices", kwlist, &src)) return NULL;
    uint32_t *idx = NULL;
    size_t n = 0;
    Py_buffer view;
    if (PyObject_CheckBuffer(src) && PyObject_GetBuffer(src, &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) == 0) {
        /* Fast path: a contiguous uint32 array (numpy.uint32, array('I')). */
        if (view.itemsize == 4 && is_u32_format(view.format)) {
            n = (size_t)(view.len / 4);
            idx = malloc(n ? n * 4 : 4);
            if (idx) memcpy(idx, view.buf, n * 4);
            PyBuffer_Release(&view);
            if (!idx) return PyErr_NoMemory();
            goto make;
        }
        PyBuffer_Release(&view);
    }
    PyErr_Clear();
    PyObject *it = PyObject_GetIter(src);
    if (!it) return NULL;
    size_t cap = 64;
    idx = malloc(cap * sizeof *idx);
    if (!idx) {
        Py_DECREF(it);
        return PyErr_NoMemory();
    }
    PyObject *item;
    while ((item = PyIter_Next(it))) {
        uint32_t v = 0;
        int ok = tpy_conv_u32(item, &v);
        if (!ok && PyErr_ExceptionMatches(PyExc_OverflowError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_OverflowError, "PageIndices: index %zu (%R) is outside 0..2**32-1", n, item);
        }
        Py_DECREF(item);
        if (!ok) goto fail;
        if (n == cap) {
            uint32_t *nx = realloc(idx, 2 * cap * sizeof *idx);
            if (!nx) {
                PyErr_NoMemory();
                goto fail;
            }
            idx = nx;
            cap *= 2;
        }
        idx[n++] = v;
    }
    Py_DECREF(it);
    it = NULL;
    if (PyErr_Occurred()) goto fail_noit;
make:;
    te_pages *p = NULL;
    int r = te_pages_create(idx, n, &p);
    free(idx);
    if (r) return tpy_raise(r, "PageIndices");
    PyPageIndices *o = (PyPageIndices *)tpy_alloc((PyObject *)tp);
    if (!o) {
        te_pages_release(p);
        return NULL;
    }
    o->pages = p;
    return (PyObject *)o;
fail:
    Py_XDECREF(it);
fail_noit:
    free(idx);
    return NULL;
}

static void pages_dealloc(PyObject *self)
{
    te_pages_release(((PyPageIndices *)self)->pages); /* operations in flight hold their own ref */
    tpy_free_self(self);
}

static Py_ssize_t pages_len(PyObject *self) { return (Py_ssize_t)te_pages_count(((PyPageIndices *)self)->pages); }

static PyObject *pages_tolist(PyObject *self, PyObject *unused)
{
    te_pages *p = ((PyPageIndices *)self)->pages;
    size_t n = te_pages_count(p);
    const uint32_t *d = te_pages_data(p);
    PyObject *l = PyList_New((Py_ssize_t)n);
    for (size_t k = 0; l && k < n; k++) {
        PyObject *v = PyLong_FromUnsignedLong(d[k]);
        if (!v) {
            Py_CLEAR(l);
            break;
        }
        PyList_SetItem(l, (Py_ssize_t)k, v);
    }
    return l;
}

static PyObject *pages_reduce(PyObject *self, PyObject *unused)
{
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), pages_tolist(self, NULL));
}

static PyObject *pages_repr(PyObject *self)
{
    return PyUnicode_FromFormat("PageIndices(<%zd pages>)", pages_len(self));
}

static PyMethodDef pages_methods[] = {
    {"tolist", pages_tolist, METH_NOARGS, "tolist() -> list[int]"},
    {"__reduce__", pages_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot pages_slots[] = {
    {Py_tp_new, pages_new},
    {Py_tp_dealloc, pages_dealloc},
    {Py_tp_repr, pages_repr},
    {Py_sq_length, pages_len},
    {Py_tp_methods, pages_methods},
    {Py_tp_doc, (void *)"PageIndices(indices): immutable shared list of u32 page indices for\n"
                        "submit_paged_writes. Build once, reuse; accepts any iterable of ints or a\n"
                        "contiguous uint32 buffer (numpy.uint32 array, array('I'))."},
    {0, NULL},
};

PyType_Spec tpy_pages_spec = {
    "tendril._tendril.PageIndices", sizeof(PyPageIndices), 0, Py_TPFLAGS_DEFAULT, pages_slots,
};

