/* DomainAddress: the address of one NIC of an engine (te_addr). Its bytes are Tendril's
 * wire form (docs/wire-format.md), its str() the lowercase hex of those bytes. */
#include "tendril_py.h"

PyObject *TpDomainAddress;

PyObject *tpy_addr_new(const te_addr *a)
{
    PyDomainAddress *o = (PyDomainAddress *)tpy_alloc(TpDomainAddress);
    if (o) o->addr = *a;
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

static PyObject *new_of(PyTypeObject *tp, const te_addr *a)
{
    PyDomainAddress *o = (PyDomainAddress *)tpy_alloc((PyObject *)tp);
    if (o) o->addr = *a;
    return (PyObject *)o;
}

static PyObject *from_bytes_obj(PyTypeObject *tp, PyObject *data)
{
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) return NULL;
    te_addr a;
    int r = te_addr_decode(view.buf, (size_t)view.len, &a);
    PyBuffer_Release(&view);
    if (r) return tpy_raise(r, "DomainAddress.from_bytes");
    return new_of(tp, &a);
}

static PyObject *from_str_obj(PyTypeObject *tp, PyObject *s)
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
    return new_of(tp, &a);
}

/* DomainAddress(bytes): pplx's constructor takes the bytes; Tendril also takes the str
 * form and another DomainAddress. */
static PyObject *addr_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"bytes", "value", NULL};
    PyObject *v = tpy_one_arg(args, kw, "DomainAddress", names);
    if (!v) return NULL;
    if (PyUnicode_Check(v)) return from_str_obj(tp, v);
    if (PyObject_TypeCheck(v, (PyTypeObject *)TpDomainAddress)) return new_of(tp, &((PyDomainAddress *)v)->addr);
    return from_bytes_obj(tp, v);
}

static PyObject *addr_from_bytes(PyObject *cls, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"bytes", NULL};
    PyObject *v = tpy_one_arg(args, kw, "from_bytes", names);
    return v ? from_bytes_obj((PyTypeObject *)cls, v) : NULL;
}

static PyObject *addr_from_str(PyObject *cls, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"s", NULL};
    PyObject *v = tpy_one_arg(args, kw, "from_str", names);
    return v ? from_str_obj((PyTypeObject *)cls, v) : NULL;
}

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

static void addr_dealloc(PyObject *self) { tpy_free_self(self); }

static PyMethodDef addr_methods[] = {
    {"from_bytes", (PyCFunction)(void (*)(void))addr_from_bytes, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_bytes(bytes) -> DomainAddress: decode the wire form (as_bytes())."},
    {"from_str", (PyCFunction)(void (*)(void))addr_from_str, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "from_str(s) -> DomainAddress: parse the lowercase hex form (str())."},
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
    {Py_tp_dealloc, addr_dealloc},
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

PyType_Spec tpy_addr_spec = {
    "tendril._tendril.DomainAddress", sizeof(PyDomainAddress), 0, Py_TPFLAGS_DEFAULT, addr_slots,
};
