/* Value types: DomainAddress, MemoryRegionDescriptor, PageIndices, Counter. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "tendril_py.h"

PyObject *TpDomainAddress;
PyObject *TpMrDescriptor;
PyObject *TpPageIndices;
PyObject *TpCounter;

/* Borrowed bytes view of a bytes-like object (bytes, bytearray, memoryview, ...). */
typedef struct {
    Py_buffer view;
    bool held;
} bytes_arg;

static int get_bytes(PyObject *o, bytes_arg *b)
{
    b->held = false;
    if (PyObject_GetBuffer(o, &b->view, PyBUF_SIMPLE) < 0) return -1;
    b->held = true;
    return 0;
}

static void put_bytes(bytes_arg *b)
{
    if (b->held) PyBuffer_Release(&b->view);
    b->held = false;
}

/* Compares two objects of the same type by an encoded form (bytes). */
static PyObject *richcompare_bytes(PyObject *a, PyObject *b, int op, PyObject *(*enc)(PyObject *))
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, Py_TYPE(a))) Py_RETURN_NOTIMPLEMENTED;
    PyObject *x = enc(a), *y = x ? enc(b) : NULL;
    PyObject *r = y ? PyObject_RichCompare(x, y, op) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    return r;
}

/* ============================================================ DomainAddress === */

PyObject *tpy_addr_new(const te_addr *a)
{
    PyTypeObject *tp = (PyTypeObject *)TpDomainAddress;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyDomainAddress *o = (PyDomainAddress *)alloc(tp, 0);
    if (!o) return NULL;
    o->addr = *a;
    return (PyObject *)o;
}

static PyObject *addr_encode(PyObject *self)
{
    uint8_t buf[TE_ADDR_ENCODED_MAX];
    size_t n = 0;
    int r = te_addr_encode(&((PyDomainAddress *)self)->addr, buf, sizeof buf, &n);
    if (r) return tpy_raise(r, "DomainAddress");
    return PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)n);
}

static PyObject *addr_from_bytes_obj(PyTypeObject *tp, PyObject *data)
{
    bytes_arg b;
    if (get_bytes(data, &b) < 0) return NULL;
    te_addr a;
    int r = te_addr_decode(b.view.buf, (size_t)b.view.len, &a);
    put_bytes(&b);
    if (r) return tpy_raise(r, "DomainAddress.from_bytes");
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyDomainAddress *o = (PyDomainAddress *)alloc(tp, 0);
    if (!o) return NULL;
    o->addr = a;
    return (PyObject *)o;
}

static PyObject *addr_from_str_obj(PyTypeObject *tp, PyObject *s)
{
    if (!PyUnicode_Check(s)) {
        PyErr_Format(PyExc_TypeError, "DomainAddress.from_str: expected str, got %R", (PyObject *)Py_TYPE(s));
        return NULL;
    }
    const char *text = PyUnicode_AsUTF8AndSize(s, NULL);
    if (!text) return NULL;
    te_addr a;
    int r = te_addr_parse(text, &a);
    if (r) return tpy_raise(r, "DomainAddress.from_str");
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyDomainAddress *o = (PyDomainAddress *)alloc(tp, 0);
    if (!o) return NULL;
    o->addr = a;
    return (PyObject *)o;
}

static PyObject *addr_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"value", NULL};
    PyObject *v;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:DomainAddress", kwlist, &v)) return NULL;
    if (PyUnicode_Check(v)) return addr_from_str_obj(tp, v);
    if (PyObject_TypeCheck(v, (PyTypeObject *)TpDomainAddress)) {
        allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
        PyDomainAddress *o = (PyDomainAddress *)alloc(tp, 0);
        if (o) o->addr = ((PyDomainAddress *)v)->addr;
        return (PyObject *)o;
    }
    return addr_from_bytes_obj(tp, v);
}

static PyObject *addr_from_bytes(PyObject *cls, PyObject *data)
{
    return addr_from_bytes_obj((PyTypeObject *)cls, data);
}

static PyObject *addr_from_str(PyObject *cls, PyObject *s) { return addr_from_str_obj((PyTypeObject *)cls, s); }

static PyObject *addr_as_bytes(PyObject *self, PyObject *unused) { return addr_encode(self); }

static PyObject *addr_str(PyObject *self)
{
    char text[TE_ADDR_TEXT_MAX];
    int r = te_addr_format(&((PyDomainAddress *)self)->addr, text, sizeof text);
    if (r) return tpy_raise(r, "DomainAddress");
    return PyUnicode_FromString(text);
}

static PyObject *addr_repr(PyObject *self)
{
    PyObject *s = addr_str(self);
    if (!s) return NULL;
    PyObject *r = PyUnicode_FromFormat("DomainAddress('%U')", s);
    Py_DECREF(s);
    return r;
}

static PyObject *addr_richcompare(PyObject *a, PyObject *b, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, (PyTypeObject *)TpDomainAddress))
        Py_RETURN_NOTIMPLEMENTED;
    bool eq = te_addr_equal(&((PyDomainAddress *)a)->addr, &((PyDomainAddress *)b)->addr);
    if ((op == Py_EQ) == eq) Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

static Py_hash_t addr_hash(PyObject *self)
{
    PyObject *b = addr_encode(self);
    if (!b) return -1;
    Py_hash_t h = PyObject_Hash(b);
    Py_DECREF(b);
    return h;
}

static PyObject *addr_reduce(PyObject *self, PyObject *unused)
{
    PyObject *b = addr_encode(self);
    if (!b) return NULL;
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), b);
}

static PyObject *addr_get_transport(PyObject *self, void *c)
{
    return PyUnicode_FromString(((PyDomainAddress *)self)->addr.transport == TE_TRANSPORT_VERBS ? "verbs"
                                                                                                : "fabric");
}

static PyObject *addr_get_raw(PyObject *self, void *c)
{
    const te_addr *a = &((PyDomainAddress *)self)->addr;
    return PyBytes_FromStringAndSize((const char *)a->bytes, a->len);
}

static void plain_dealloc(PyObject *self) { tpy_free_self(self); }

static PyMethodDef addr_methods[] = {
    {"from_bytes", addr_from_bytes, METH_O | METH_CLASS,
     "from_bytes(data) -> DomainAddress: decode the wire form (as_bytes())."},
    {"from_str", addr_from_str, METH_O | METH_CLASS,
     "from_str(text) -> DomainAddress: parse the lowercase hex form (str())."},
    {"as_bytes", addr_as_bytes, METH_NOARGS, "as_bytes() -> bytes: wire form (docs/wire-format.md)."},
    {"__reduce__", addr_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef addr_getset[] = {
    {"transport", addr_get_transport, NULL, "'fabric' (libfabric endpoint name) or 'verbs'.", NULL},
    {"raw", addr_get_raw, NULL, "The transport's own address bytes (without the wire header).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot addr_slots[] = {
    {Py_tp_new, addr_new},
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_repr, addr_repr},
    {Py_tp_str, addr_str},
    {Py_tp_hash, addr_hash},
    {Py_tp_richcompare, addr_richcompare},
    {Py_tp_methods, addr_methods},
    {Py_tp_getset, addr_getset},
    {Py_tp_doc, (void *)"DomainAddress(bytes | str): address of one NIC of an engine.\n\n"
                        "Equality and hash are bytewise; str() is lowercase hex; pickles as bytes."},
    {0, NULL},
};

static PyType_Spec addr_spec = {
    "tendril._tendril.DomainAddress", sizeof(PyDomainAddress), 0, Py_TPFLAGS_DEFAULT, addr_slots,
};

/* ==================================================== MemoryRegionDescriptor === */

PyObject *tpy_desc_new(const te_mr_desc *d)
{
    PyTypeObject *tp = (PyTypeObject *)TpMrDescriptor;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyMrDescriptor *o = (PyMrDescriptor *)alloc(tp, 0);
    if (!o) return NULL;
    o->desc = *d;
    return (PyObject *)o;
}

static PyObject *desc_encode(PyObject *self)
{
    uint8_t buf[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    int r = te_mr_desc_encode(&((PyMrDescriptor *)self)->desc, buf, sizeof buf, &n);
    if (r) return tpy_raise(r, "MemoryRegionDescriptor");
    return PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)n);
}

static PyObject *desc_from_bytes_obj(PyTypeObject *tp, PyObject *data)
{
    bytes_arg b;
    if (get_bytes(data, &b) < 0) return NULL;
    te_mr_desc d;
    int r = te_mr_desc_decode(b.view.buf, (size_t)b.view.len, &d);
    put_bytes(&b);
    if (r) return tpy_raise(r, "MemoryRegionDescriptor.from_bytes");
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyMrDescriptor *o = (PyMrDescriptor *)alloc(tp, 0);
    if (!o) return NULL;
    o->desc = d;
    return (PyObject *)o;
}

static PyObject *desc_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"data", NULL};
    PyObject *v;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O:MemoryRegionDescriptor", kwlist, &v)) return NULL;
    return desc_from_bytes_obj(tp, v);
}

static PyObject *desc_from_bytes(PyObject *cls, PyObject *data)
{
    return desc_from_bytes_obj((PyTypeObject *)cls, data);
}

static PyObject *desc_as_bytes(PyObject *self, PyObject *unused) { return desc_encode(self); }

static PyObject *desc_reduce(PyObject *self, PyObject *unused)
{
    PyObject *b = desc_encode(self);
    if (!b) return NULL;
    return Py_BuildValue("(O(N))", (PyObject *)Py_TYPE(self), b);
}

static PyObject *desc_richcompare(PyObject *a, PyObject *b, int op)
{
    return richcompare_bytes(a, b, op, desc_encode);
}

static Py_hash_t desc_hash(PyObject *self)
{
    PyObject *b = desc_encode(self);
    if (!b) return -1;
    Py_hash_t h = PyObject_Hash(b);
    Py_DECREF(b);
    return h;
}

static PyObject *desc_repr(PyObject *self)
{
    const te_mr_desc *d = &((PyMrDescriptor *)self)->desc;
    char text[128];
    snprintf(text, sizeof text, "MemoryRegionDescriptor(ptr=0x%llx, len=%llu, nics=%u)",
             (unsigned long long)d->base, (unsigned long long)d->len, d->n_nics);
    return PyUnicode_FromString(text);
}

static PyObject *desc_get_ptr(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyMrDescriptor *)self)->desc.base);
}

static PyObject *desc_get_len(PyObject *self, void *c)
{
    return PyLong_FromUnsignedLongLong(((PyMrDescriptor *)self)->desc.len);
}

static PyObject *desc_get_addrs(PyObject *self, void *c)
{
    const te_mr_desc *d = &((PyMrDescriptor *)self)->desc;
    PyObject *l = PyList_New(0);
    for (uint32_t k = 0; l && k < d->n_nics; k++) {
        PyObject *a = tpy_addr_new(&d->nic[k].addr);
        PyObject *t = a ? Py_BuildValue("(NK)", a, (unsigned long long)d->nic[k].rkey) : NULL;
        if (!t || PyList_Append(l, t) < 0) {
            Py_XDECREF(t);
            Py_CLEAR(l);
            break;
        }
        Py_DECREF(t);
    }
    return l;
}

static PyMethodDef desc_methods[] = {
    {"from_bytes", desc_from_bytes, METH_O | METH_CLASS,
     "from_bytes(data) -> MemoryRegionDescriptor: decode the wire form."},
    {"as_bytes", desc_as_bytes, METH_NOARGS, "as_bytes() -> bytes: wire form (docs/wire-format.md)."},
    {"__reduce__", desc_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef desc_getset[] = {
    {"ptr", desc_get_ptr, NULL, "Registered base virtual address in the owner's process.", NULL},
    {"len", desc_get_len, NULL, "Registered length in bytes.", NULL},
    {"addr_rkey_list", desc_get_addrs, NULL, "[(DomainAddress, rkey)] per NIC of the owning group.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot desc_slots[] = {
    {Py_tp_new, desc_new},
    {Py_tp_dealloc, plain_dealloc},
    {Py_tp_repr, desc_repr},
    {Py_tp_hash, desc_hash},
    {Py_tp_richcompare, desc_richcompare},
    {Py_tp_methods, desc_methods},
    {Py_tp_getset, desc_getset},
    {Py_tp_doc, (void *)"MemoryRegionDescriptor(bytes): what a peer needs to write into a registered\n"
                        "region (base address, length, per NIC its address and remote key).\n"
                        "as_bytes()/from_bytes() round trip; pickles as its bytes."},
    {0, NULL},
};

static PyType_Spec desc_spec = {
    "tendril._tendril.MemoryRegionDescriptor", sizeof(PyMrDescriptor), 0, Py_TPFLAGS_DEFAULT, desc_slots,
};

/* ================================================================ PageIndices === */

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
        PyObject *i = PyNumber_Index(item);
        Py_DECREF(item);
        uint32_t v = 0;
        if (!i || !tpy_conv_u32(i, &v)) {
            Py_XDECREF(i);
            if (PyErr_ExceptionMatches(PyExc_OverflowError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "PageIndices: index %zu is outside 0..2**32-1", n);
            }
            goto fail;
        }
        Py_DECREF(i);
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
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyPageIndices *o = (PyPageIndices *)alloc(tp, 0);
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

static PyType_Spec pages_spec = {
    "tendril._tendril.PageIndices", sizeof(PyPageIndices), 0, Py_TPFLAGS_DEFAULT, pages_slots,
};

/* ==================================================================== Counter === */

static PyObject *counter_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, ":Counter", kwlist)) return NULL;
    te_counter *c = NULL;
    int r = te_counter_create(&c);
    if (r) return tpy_raise(r, "Counter");
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyCounter *o = (PyCounter *)alloc(tp, 0);
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
    if (r == -ETIMEDOUT) {
        char t[32];
        snprintf(t, sizeof t, "%.3f", (double)tmo / 1000.0);
        return tpy_raise_text(r, PyUnicode_FromFormat("Counter.wait: %llu of %llu operations done after %s s",
                                                      (unsigned long long)te_counter_done(o->c),
                                                      (unsigned long long)n, t));
    }
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

static PyType_Spec counter_spec = {
    "tendril._tendril.Counter", sizeof(PyCounter), 0, Py_TPFLAGS_DEFAULT, counter_slots,
};

/* ====================================================================== init === */

static int add_type(PyObject *m, PyType_Spec *spec, PyObject **out)
{
    *out = PyType_FromSpec(spec);
    if (!*out) return -1;
    const char *dot = strrchr(spec->name, '.');
    Py_INCREF(*out);
    if (PyModule_AddObject(m, dot + 1, *out) < 0) {
        Py_DECREF(*out);
        return -1;
    }
    return 0;
}

int tpy_types_init(PyObject *m)
{
    if (add_type(m, &addr_spec, &TpDomainAddress) < 0) return -1;
    if (add_type(m, &desc_spec, &TpMrDescriptor) < 0) return -1;
    if (add_type(m, &pages_spec, &TpPageIndices) < 0) return -1;
    if (add_type(m, &counter_spec, &TpCounter) < 0) return -1;
    return 0;
}
