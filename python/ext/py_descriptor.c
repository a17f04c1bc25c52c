/* MemoryRegionDescriptor: what a peer needs to write into a registered region (te_mr_desc:
 * base, length, per NIC its address and remote key), in Tendril's wire form. */
#include "tendril_py.h"

PyObject *TpMrDescriptor;

PyObject *tpy_desc_new(const te_mr_desc *d)
{
    PyMrDescriptor *o = (PyMrDescriptor *)tpy_alloc(TpMrDescriptor);
    if (o) o->desc = *d;
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

static PyObject *from_bytes_obj(PyTypeObject *tp, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    te_mr_desc d;
    int r = te_mr_desc_decode(view.buf, (size_t)view.len, &d);
    PyBuffer_Release(&view);
    if (r) return tpy_raise(r, "MemoryRegionDescriptor.from_bytes");
    PyMrDescriptor *o = (PyMrDescriptor *)tpy_alloc((PyObject *)tp);
    if (o) o->desc = d;
    return (PyObject *)o;
}

/* pplx-garden's runtime spells the argument `bytes`, its stub `bytes_`: both work. */
static const char *const bytes_names[] = {"bytes_", "bytes", "data", NULL};

static PyObject *desc_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    PyObject *v = tpy_one_arg(args, kw, "MemoryRegionDescriptor", bytes_names + 1);
    return v ? from_bytes_obj(tp, v) : NULL;
}

static PyObject *desc_from_bytes(PyObject *cls, PyObject *args, PyObject *kw)
{
    PyObject *v = tpy_one_arg(args, kw, "from_bytes", bytes_names);
    return v ? from_bytes_obj((PyTypeObject *)cls, v) : NULL;
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
    if ((op != Py_EQ && op != Py_NE) || !PyObject_TypeCheck(b, Py_TYPE(a))) Py_RETURN_NOTIMPLEMENTED;
    PyObject *x = desc_encode(a), *y = x ? desc_encode(b) : NULL;
    PyObject *r = y ? PyObject_RichCompare(x, y, op) : NULL;
    Py_XDECREF(x);
    Py_XDECREF(y);
    return r;
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

/* One line per NIC, for logs: "[{addr: <hex>, ptr: 0x..., len: N, rkey: 0x...}, ...]". */
static PyObject *desc_debug_str(PyObject *self, PyObject *unused)
{
    const te_mr_desc *d = &((PyMrDescriptor *)self)->desc;
    PyObject *parts = PyList_New(0);
    for (uint32_t k = 0; parts && k < d->n_nics; k++) {
        char addr[TE_ADDR_TEXT_MAX];
        if (te_addr_format(&d->nic[k].addr, addr, sizeof addr)) snprintf(addr, sizeof addr, "?");
        char one[TE_ADDR_TEXT_MAX + 96];
        snprintf(one, sizeof one, "{addr: %s, ptr: 0x%llx, len: %llu, rkey: 0x%llx}", addr,
                 (unsigned long long)d->base, (unsigned long long)d->len, (unsigned long long)d->nic[k].rkey);
        PyObject *s = PyUnicode_FromString(one);
        if (!s || PyList_Append(parts, s) < 0) Py_CLEAR(parts);
        Py_XDECREF(s);
    }
    if (!parts) return NULL;
    PyObject *sep = PyUnicode_FromString(", ");
    PyObject *body = sep ? PyUnicode_Join(sep, parts) : NULL;
    Py_XDECREF(sep);
    Py_DECREF(parts);
    if (!body) return NULL;
    PyObject *r = PyUnicode_FromFormat("[%U]", body);
    Py_DECREF(body);
    return r;
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

static void desc_dealloc(PyObject *self) { tpy_free_self(self); }

static PyMethodDef desc_methods[] = {
    {"from_bytes", (PyCFunction)(void (*)(void))desc_from_bytes, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_bytes(bytes_) -> MemoryRegionDescriptor: decode the wire form."},
    {"as_bytes", desc_as_bytes, METH_NOARGS, "as_bytes() -> bytes: wire form (docs/wire-format.md)."},
    {"debug_str", desc_debug_str, METH_NOARGS, "debug_str() -> str: address, base, length and key per NIC."},
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
    {Py_tp_dealloc, desc_dealloc},
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

PyType_Spec tpy_desc_spec = {
    "tendril._tendril.MemoryRegionDescriptor", sizeof(PyMrDescriptor), 0, Py_TPFLAGS_DEFAULT, desc_slots,
};
