/* TransferEngine's peer state: peer_state(addr) and set_peer_callback(cb(addr, state)),
 * over te_peer_state / te_peer_set_callback (docs/engine.md, Peers). */
#include "py_engine.h"

const char *tpy_peer_state_name(int state)
{
    return state == TE_PEER_UP ? "up" : state == TE_PEER_DOWN ? "down" : "unknown";
}

PyObject *tpy_eng_peer_state(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"addr", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *addr = st ? tpy_one_arg(args, kw, "peer_state", names) : NULL;
    if (!addr) return NULL;
    if (!PyObject_TypeCheck(addr, (PyTypeObject *)TpDomainAddress)) {
        PyErr_Format(PyExc_TypeError, "addr must be a DomainAddress, got %R", (PyObject *)Py_TYPE(addr));
        return NULL;
    }
    int r = te_peer_state(st->e, &((PyDomainAddress *)addr)->addr);
    if (r < 0) return tpy_raise(r, "peer_state");
    return PyUnicode_FromString(tpy_peer_state_name(r));
}

PyObject *tpy_eng_set_peer_callback(PyObject *self, PyObject *args, PyObject *kw)
{
    static const char *const names[] = {"callback", NULL};
    eng_state *st = tpy_engine_state(self);
    PyObject *cb = st ? tpy_one_arg(args, kw, "set_peer_callback", names) : NULL;
    if (!cb || tpy_check_callable(cb, "callback") < 0) return NULL;
    /* with all-to-all contexts on the engine the trampoline stays (it forwards to them) */
    const bool keep = cb != Py_None || __atomic_load_n(&st->peer_forward, __ATOMIC_ACQUIRE);
    int r = te_peer_set_callback(st->e, keep ? tpy_peer_tramp : NULL, st);
    if (r) return tpy_raise(r, "set_peer_callback");
    PyObject *old = st->peer_cb;
    if (cb != Py_None) Py_INCREF(cb);
    st->peer_cb = cb == Py_None ? NULL : cb;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}
