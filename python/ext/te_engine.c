/* TransferEngine, MemoryRegionHandle and ImmCounter, and the callback trampolines.
 *
 * Lifetimes
 *  - Per-operation callbacks: an op_ctx holds on_done/on_error and is freed by its
 *    trampoline, which the engine calls exactly once per accepted operation.
 *  - Expectations (set_imm_count_expected): one exp_ctx per call. The C engine may call
 *    the reached function of an expectation that was just replaced (the reach raced with
 *    the replacement), so a replaced ctx only loses its callable (under the GIL: it is
 *    never called after set_imm_count_expected/remove_imm_count returns) and stays
 *    allocated until its trampoline runs or the engine is destroyed.
 *  - Receive pools and the plain-immediate callback live until the engine is destroyed.
 *  - Registered memory: each MemoryRegionHandle holds the buffer export (or the owner
 *    object) of its region; the engine's registry (ptr -> handles) keeps every handle
 *    alive until unregister_memory() or engine teardown.
 *  - Engine teardown: stop (GIL released, every pending callback runs with -ECANCELED),
 *    deregister, destroy. If the last reference is dropped on the engine's own callback
 *    thread, which cannot stop the engine, a helper thread does it.
 */
#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "tendril_py.h"

PyObject *TpMrHandle;
PyObject *TpImmCounter;
PyObject *TpEngine;

typedef struct op_ctx {
    eng_state *st;
    PyObject *on_done;  /* or NULL */
    PyObject *on_error; /* or NULL */
} op_ctx;

typedef struct exp_ctx {
    eng_state *st;
    PyObject *cb; /* NULL once fired, replaced or removed */
    uint32_t imm;
    bool armed;   /* the engine's current expectation for imm */
    struct exp_ctx *prev, *next;
} exp_ctx;

typedef struct pool_ctx {
    eng_state *st;
    PyObject *on_recv, *on_error;
    te_recv_pool *pool;
    struct pool_ctx *next;
} pool_ctx;

/* A scalar watcher. Owned by the engine state (freed at engine teardown) so that a
 * UvmWatcher object may be dropped while its watcher keeps running, as in pplx. */
typedef struct watch_ctx {
    eng_state *st;
    PyObject *cb;     /* NULL once released */
    te_watcher *w;    /* NULL once released (callback returned false, or free()) */
    bool freeing;     /* free() is releasing it: the trampoline must not release it too */
    uint64_t dev_ptr;
    volatile uint64_t *host_ptr;
    struct watch_ctx *next;
} watch_ctx;

typedef struct {
    PyObject_HEAD
    watch_ctx *x;
    PyObject *engine; /* strong: keeps x (owned by the engine state) alive */
} PyWatcher;

static PyObject *TpWatcher;

/* Buffer exports and owners whose release waits for an engine destroyed asynchronously. */
typedef struct deferred {
    Py_buffer *view;
    PyObject *owner;
    struct deferred *next;
} deferred;

static eng_state *live_engines;       /* GIL-protected */
static atomic_int async_destroys;     /* helper threads still destroying engines */

/* ============================================================ trampolines === */

/* The engine whose callback this thread is running (callback thread or watcher thread),
 * so that stop() and teardown know they cannot wait for that engine's threads. */
static _Thread_local eng_state *tl_in_callback;

typedef struct {
    PyGILState_STATE g;
    eng_state *outer;
} cb_scope;

static cb_scope cb_enter(eng_state *st)
{
    cb_scope s = {PyGILState_Ensure(), tl_in_callback};
    tl_in_callback = st;
    return s;
}

static void cb_leave(cb_scope s)
{
    tl_in_callback = s.outer;
    PyGILState_Release(s.g);
}

static bool on_cb_thread(const eng_state *st) { return tl_in_callback == st; }

/* Reports the pending Python exception of a callback: printed through
 * sys.unraisablehook and counted in engine.callback_errors; the engine carries on. */
static void report_cb_error(eng_state *st, PyObject *where)
{
    /* Count after the hook ran: a reader that sees the count also sees the report. */
    PyErr_WriteUnraisable(where);
    st->callback_errors++;
}

static void call_cb(eng_state *st, PyObject *fn, PyObject *arg)
{
    PyObject *r = arg ? PyObject_CallFunctionObjArgs(fn, arg, NULL) : PyObject_CallNoArgs(fn);
    if (r) Py_DECREF(r);
    else report_cb_error(st, fn);
}

static void op_ctx_free(op_ctx *c)
{
    Py_XDECREF(c->on_done);
    Py_XDECREF(c->on_error);
    free(c);
}

static void op_done_tramp(void *arg, int status, const char *msg)
{
    op_ctx *c = arg;
    eng_state *st = c->st;
    cb_scope g = cb_enter(st);
    if (status == 0) {
        if (c->on_done) call_cb(st, c->on_done, NULL);
    } else if (c->on_error) {
        PyObject *s = tpy_error_string(status, msg);
        if (s) {
            call_cb(st, c->on_error, s);
            Py_DECREF(s);
        } else {
            report_cb_error(st, c->on_error);
        }
    } else {
        st->unhandled_errors++;
    }
    op_ctx_free(c);
    cb_leave(g);
}

static void imm_plain_tramp(void *arg, uint32_t imm)
{
    eng_state *st = arg;
    cb_scope g = cb_enter(st);
    PyObject *fn = st->imm_cb;
    if (fn) {
        Py_INCREF(fn);
        PyObject *v = PyLong_FromUnsignedLong(imm);
        if (v) {
            call_cb(st, fn, v);
            Py_DECREF(v);
        } else {
            report_cb_error(st, fn);
        }
        Py_DECREF(fn);
    }
    cb_leave(g);
}

static void exp_unlink(eng_state *st, exp_ctx *x)
{
    if (x->prev) x->prev->next = x->next;
    else st->exps = x->next;
    if (x->next) x->next->prev = x->prev;
}

static bool exp_reached_tramp(void *arg, uint32_t imm)
{
    exp_ctx *x = arg;
    eng_state *st = x->st;
    cb_scope g = cb_enter(st);
    PyObject *fn = x->cb;
    x->cb = NULL;
    x->armed = false;
    exp_unlink(st, x); /* one-shot: the engine removes the expectation when we return false */
    free(x);
    if (fn) {
        call_cb(st, fn, NULL);
        Py_DECREF(fn);
    }
    cb_leave(g);
    return false;
}

static void pool_recv_tramp(void *arg, const void *data, size_t len)
{
    pool_ctx *p = arg;
    cb_scope g = cb_enter(p->st);
    if (p->on_recv) {
        PyObject *fn = p->on_recv;
        Py_INCREF(fn);
        PyObject *b = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
        if (b) {
            call_cb(p->st, fn, b);
            Py_DECREF(b);
        } else {
            report_cb_error(p->st, fn);
        }
        Py_DECREF(fn);
    }
    cb_leave(g);
}

static void pool_error_tramp(void *arg, int status, const char *msg)
{
    pool_ctx *p = arg;
    cb_scope g = cb_enter(p->st);
    if (p->on_error) {
        PyObject *fn = p->on_error;
        Py_INCREF(fn);
        PyObject *s = tpy_error_string(status, msg);
        if (s) {
            call_cb(p->st, fn, s);
            Py_DECREF(s);
        } else {
            report_cb_error(p->st, fn);
        }
        Py_DECREF(fn);
    } else {
        p->st->unhandled_errors++;
    }
    cb_leave(g);
}

static bool watch_tramp(void *arg, uint64_t old_value, uint64_t new_value)
{
    watch_ctx *x = arg;
    cb_scope g = cb_enter(x->st);
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
            if (t < 0) report_cb_error(x->st, fn);
            keep = t > 0;
        } else {
            report_cb_error(x->st, fn); /* an exception releases the watcher, as in pplx */
        }
        Py_DECREF(fn);
        if (x->freeing) keep = true; /* the callback called free() on it */
    }
    if (!keep) {
        x->w = NULL; /* the engine releases it when we return false */
        Py_CLEAR(x->cb);
    }
    cb_leave(g);
    return keep;
}

/* ===================================================== MemoryRegionHandle === */

/* Releases what a handle keeps alive (GIL held). */
static void handle_release_owner(PyMrHandle *h)
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
            handle_release_owner(h);
        } else {
            /* still in use: leak the export rather than free memory under the NIC */
            Py_CLEAR(h->owner);
        }
    } else {
        handle_release_owner(h);
    }
    Py_CLEAR(h->desc);
    tpy_free_self(self);
}

static PyObject *handle_get_ptr(PyObject *self, void *c) { return PyLong_FromUnsignedLongLong(((PyMrHandle *)self)->ptr); }
static PyObject *handle_get_len(PyObject *self, void *c) { return PyLong_FromUnsignedLongLong(((PyMrHandle *)self)->len); }
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

static PyObject *handle_new_forbidden(PyTypeObject *tp, PyObject *a, PyObject *k)
{
    PyErr_SetString(PyExc_TypeError, "MemoryRegionHandle is returned by TransferEngine.register_memory()");
    return NULL;
}

static PyGetSetDef handle_getset[] = {
    {"ptr", handle_get_ptr, NULL, "Registered base address.", NULL},
    {"len", handle_get_len, NULL, "Registered length in bytes.", NULL},
    {"device", handle_get_device, NULL, "-1 for host memory, else the CUDA ordinal.", NULL},
    {"registered", handle_get_registered, NULL, "False after unregister_memory() or engine teardown.", NULL},
    {"descriptor", handle_get_desc, NULL, "MemoryRegionDescriptor to give peers (None if local-only).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot handle_slots[] = {
    {Py_tp_new, handle_new_forbidden},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_repr, handle_repr},
    {Py_tp_getset, handle_getset},
    {Py_tp_doc, (void *)"Local handle of a registered region (source of writes). Keeps the memory's\n"
                        "owner alive until unregister_memory()."},
    {0, NULL},
};

static PyType_Spec handle_spec = {
    "tendril._tendril.MemoryRegionHandle", sizeof(PyMrHandle), 0, Py_TPFLAGS_DEFAULT, handle_slots,
};

/* ============================================================== ImmCounter === */

static void immc_close_impl(PyImmCounter *o)
{
    if (o->c) {
        te_imm_counter_destroy(o->c);
        o->c = NULL;
    }
    Py_CLEAR(o->engine);
}

static void immc_dealloc(PyObject *self)
{
    immc_close_impl((PyImmCounter *)self);
    tpy_free_self(self);
}

static int immc_wait_fn(void *c, uint64_t n, int ms) { return te_imm_counter_wait(c, n, ms); }

static PyObject *immc_wait(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"n", "timeout", NULL};
    PyImmCounter *o = (PyImmCounter *)self;
    uint64_t n = 1;
    int64_t tmo = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&O&:wait", kwlist, tpy_conv_u64, &n, tpy_conv_timeout, &tmo))
        return NULL;
    if (!o->c) {
        PyErr_SetString(PyExc_ValueError, "ImmCounter is closed");
        return NULL;
    }
    int r = tpy_wait(immc_wait_fn, o->c, n, tmo);
    if (r == INT_MIN) return NULL;
    if (r == -ETIMEDOUT) {
        char t[32];
        snprintf(t, sizeof t, "%.3f", (double)tmo / 1000.0);
        return tpy_raise_text(r, PyUnicode_FromFormat("ImmCounter.wait: %llu of %llu immediates %lu after %s s",
                                                      (unsigned long long)te_imm_counter_value(o->c),
                                                      (unsigned long long)n, (unsigned long)o->imm, t));
    }
    if (r) return tpy_raise(r, "ImmCounter.wait");
    Py_RETURN_NONE;
}

static PyObject *immc_close(PyObject *self, PyObject *unused)
{
    immc_close_impl((PyImmCounter *)self);
    Py_RETURN_NONE;
}

static PyObject *immc_get_value(PyObject *self, void *c)
{
    PyImmCounter *o = (PyImmCounter *)self;
    return PyLong_FromUnsignedLongLong(o->c ? te_imm_counter_value(o->c) : 0);
}

static PyObject *immc_get_imm(PyObject *self, void *c) { return PyLong_FromUnsignedLong(((PyImmCounter *)self)->imm); }

static PyObject *immc_repr(PyObject *self)
{
    PyImmCounter *o = (PyImmCounter *)self;
    return PyUnicode_FromFormat("ImmCounter(imm=%lu, value=%llu%s)", (unsigned long)o->imm,
                                (unsigned long long)(o->c ? te_imm_counter_value(o->c) : 0), o->c ? "" : ", closed");
}

static PyMethodDef immc_methods[] = {
    {"wait", (PyCFunction)(void (*)(void))immc_wait, METH_VARARGS | METH_KEYWORDS,
     "wait(n=1, timeout=None): block (GIL released) until n immediates are available and\n"
     "consume them; surplus stays for the next wait. TendrilTimeoutError after `timeout` s\n"
     "(nothing consumed), EngineStoppedError if the engine stops."},
    {"close", immc_close, METH_NOARGS, "close(): stop counting (removes the counter from the engine)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef immc_getset[] = {
    {"value", immc_get_value, NULL, "Immediates available now.", NULL},
    {"imm", immc_get_imm, NULL, "The immediate value counted.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot immc_slots[] = {
    {Py_tp_new, handle_new_forbidden},
    {Py_tp_dealloc, immc_dealloc},
    {Py_tp_repr, immc_repr},
    {Py_tp_methods, immc_methods},
    {Py_tp_getset, immc_getset},
    {Py_tp_doc, (void *)"Pollable immediate counter (TransferEngine.imm_counter(imm)): a counting\n"
                        "semaphore bumped by the workers, no callback thread involved."},
    {0, NULL},
};

static PyType_Spec immc_spec = {
    "tendril._tendril.ImmCounter", sizeof(PyImmCounter), 0, Py_TPFLAGS_DEFAULT, immc_slots,
};

/* ================================================================ UvmWatcher === */

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
    if (tl_in_callback == x->st) {
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
    {Py_tp_new, handle_new_forbidden},
    {Py_tp_dealloc, watcher_dealloc},
    {Py_tp_methods, watcher_methods},
    {Py_tp_getset, watcher_getset},
    {Py_tp_doc, (void *)"Scalar (UVM) watcher from TransferEngine.alloc_scalar_watcher(callback).\n"
                        "callback(old, new) -> bool runs on the engine's watcher thread each time the\n"
                        "word at `ptr` changes; returning False (or raising) releases the watcher.\n"
                        "Dropping this object does not release it; free() does."},
    {0, NULL},
};

static PyType_Spec watcher_spec = {
    "tendril._tendril.UvmWatcher", sizeof(PyWatcher), 0, Py_TPFLAGS_DEFAULT, watcher_slots,
};

/* ========================================================== engine state === */

static void live_remove(eng_state *st)
{
    for (eng_state **pp = &live_engines; *pp; pp = &(*pp)->next_live)
        if (*pp == st) {
            *pp = st->next_live;
            return;
        }
}

/* Frees the state's Python references and contexts. GIL held; the engine is destroyed. */
static void state_free(eng_state *st)
{
    Py_CLEAR(st->imm_cb);
    Py_CLEAR(st->registry);
    while (st->exps) {
        exp_ctx *x = st->exps;
        st->exps = x->next;
        Py_XDECREF(x->cb);
        free(x);
    }
    while (st->watchers) {
        watch_ctx *x = st->watchers;
        st->watchers = x->next;
        Py_XDECREF(x->cb);
        free(x);
    }
    while (st->pools) {
        pool_ctx *p = st->pools;
        st->pools = p->next;
        Py_XDECREF(p->on_recv);
        Py_XDECREF(p->on_error);
        free(p);
    }
    free(st);
}

/* Detaches every registered handle from the engine. With `dereg` the regions are
 * deregistered and their owners released now (engine stopped); otherwise the exports
 * move to *later, to be released once the engine is destroyed. GIL held. */
static void detach_handles(eng_state *st, bool dereg, deferred **later)
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
                handle_release_owner(h);
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

typedef struct async_destroy {
    eng_state *st;
    deferred *later;
} async_destroy;

static void *async_destroy_main(void *arg)
{
    async_destroy *a = arg;
    te_engine_destroy(a->st->e); /* runs the remaining callbacks (they take the GIL) */
    a->st->e = NULL;
    PyGILState_STATE g = PyGILState_Ensure();
    while (a->later) {
        deferred *d = a->later;
        a->later = d->next;
        if (d->view) {
            PyBuffer_Release(d->view);
            free(d->view);
        }
        Py_XDECREF(d->owner);
        free(d);
    }
    state_free(a->st);
    PyGILState_Release(g);
    free(a);
    atomic_fetch_sub(&async_destroys, 1);
    return NULL;
}

/* Stops and destroys the engine of st and frees st. GIL held. */
static void engine_teardown(eng_state *st)
{
    live_remove(st);
    if (on_cb_thread(st) && !st->stopped) {
        /* Last reference dropped inside one of this engine's callbacks: the callback
         * thread cannot stop its own engine, so a helper thread does. */
        async_destroy *a = calloc(1, sizeof *a);
        pthread_t t;
        if (a) {
            a->st = st;
            detach_handles(st, false, &a->later);
            atomic_fetch_add(&async_destroys, 1);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            int r = pthread_create(&t, &attr, async_destroy_main, a);
            pthread_attr_destroy(&attr);
            if (r == 0) return;
            atomic_fetch_sub(&async_destroys, 1);
        }
        /* no thread: leak the engine (it keeps running) rather than deadlock */
        free(a);
        return;
    }
    if (!st->stopped) {
        Py_BEGIN_ALLOW_THREADS
        te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
        st->stopped = true;
    }
    detach_handles(st, true, NULL);
    te_engine_destroy(st->e);
    st->e = NULL;
    state_free(st);
}

PyObject *tpy_stop_all(PyObject *self, PyObject *unused)
{
    /* atexit: stop every engine before the interpreter finalizes, so that no callback
     * thread asks for the GIL of a dying interpreter. */
    for (;;) {
        eng_state *st = live_engines;
        while (st && st->stopped) st = st->next_live;
        if (!st) break;
        st->stopped = true;
        Py_BEGIN_ALLOW_THREADS
        te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
    }
    for (int k = 0; k < 1000 && atomic_load(&async_destroys) > 0; k++) {
        Py_BEGIN_ALLOW_THREADS
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
        Py_END_ALLOW_THREADS
    }
    Py_RETURN_NONE;
}

/* =========================================================== TransferEngine === */

static eng_state *engine_state(PyObject *self)
{
    eng_state *st = ((PyEngine *)self)->st;
    if (!st) PyErr_SetString(ExcStoppedError, "TransferEngine was not initialized");
    return st;
}

static PyObject *engine_new(PyTypeObject *tp, PyObject *args, PyObject *kw)
{
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyEngine *o = (PyEngine *)alloc(tp, 0);
    if (o) o->st = NULL;
    return (PyObject *)o;
}

/* groups: sequence of (cuda_device, nics, worker_cpu) where nics is a NIC count or a
 * sequence of names (None = chosen by the provider). `keep` collects the str objects
 * whose UTF-8 buffers the config points into. */
static int parse_groups(PyObject *groups, te_config *cfg, PyObject *keep)
{
    Py_ssize_t n = PySequence_Size(groups);
    if (n < 0) return -1;
    if (n > TE_MAX_GROUPS) {
        PyErr_Format(PyExc_ValueError, "groups: at most %d groups (got %zd)", TE_MAX_GROUPS, n);
        return -1;
    }
    cfg->n_groups = (uint32_t)n;
    for (Py_ssize_t g = 0; g < n; g++) {
        PyObject *item = PySequence_GetItem(groups, g);
        PyObject *tup = item ? PySequence_Tuple(item) : NULL;
        Py_XDECREF(item);
        if (!tup) return -1;
        int dev = TE_DEVICE_HOST, cpu = -1;
        PyObject *nics = Py_None;
        int ok = PyArg_ParseTuple(tup, "iO|i;groups[i] must be (cuda_device, nics, worker_cpu)", &dev, &nics, &cpu);
        if (ok) ok = PyList_Append(keep, tup) == 0; /* keeps `nics` alive */
        Py_DECREF(tup);
        if (!ok) return -1;
        te_group_config *gc = &cfg->groups[g];
        gc->cuda_device = dev;
        gc->worker_cpu = cpu;
        if (PyLong_Check(nics)) {
            long c = PyLong_AsLong(nics);
            if (c < 1 || c > TE_MAX_NICS) {
                if (!PyErr_Occurred())
                    PyErr_Format(PyExc_ValueError, "groups[%zd]: NIC count must be 1..%d (got %ld)", g, TE_MAX_NICS, c);
                return -1;
            }
            gc->n_nics = (uint32_t)c;
            continue;
        }
        if (nics == Py_None) {
            gc->n_nics = 1;
            continue;
        }
        if (PyUnicode_Check(nics)) {
            PyErr_Format(PyExc_TypeError, "groups[%zd]: nics must be a list of names, not a str", g);
            return -1;
        }
        Py_ssize_t m = PySequence_Size(nics);
        if (m < 0) return -1;
        if (m < 1 || m > TE_MAX_NICS) {
            PyErr_Format(PyExc_ValueError, "groups[%zd]: 1..%d NICs per group (got %zd)", g, TE_MAX_NICS, m);
            return -1;
        }
        gc->n_nics = (uint32_t)m;
        for (Py_ssize_t k = 0; k < m; k++) {
            PyObject *name = PySequence_GetItem(nics, k);
            if (!name) return -1;
            if (name == Py_None) {
                gc->nics[k] = NULL;
            } else if (PyUnicode_Check(name)) {
                gc->nics[k] = PyUnicode_AsUTF8AndSize(name, NULL);
                if (!gc->nics[k] || PyList_Append(keep, name) < 0) {
                    Py_DECREF(name);
                    return -1;
                }
            } else {
                PyErr_Format(PyExc_TypeError, "groups[%zd]: NIC names must be str or None", g);
                Py_DECREF(name);
                return -1;
            }
            Py_DECREF(name);
        }
    }
    return 0;
}

static int engine_init(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"provider", "groups", "op_timeout_ms", "max_msg_size", "busy_poll", NULL};
    PyEngine *o = (PyEngine *)self;
    const char *provider = NULL;
    PyObject *groups = Py_None;
    unsigned int op_timeout = 0, max_msg = 0;
    int busy = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|$zOIIp:TransferEngine", kwlist, &provider, &groups, &op_timeout,
                                     &max_msg, &busy))
        return -1;
    if (o->st) {
        PyErr_SetString(PyExc_RuntimeError, "TransferEngine is already initialized");
        return -1;
    }
    te_config cfg;
    te_config_init(&cfg);
    if (provider) cfg.provider = provider;
    cfg.op_timeout_ms = op_timeout;
    cfg.max_msg_size = max_msg;
    cfg.busy_poll = busy != 0;
    PyObject *keep = PyList_New(0);
    if (!keep) return -1;
    if (groups != Py_None && parse_groups(groups, &cfg, keep) < 0) {
        Py_DECREF(keep);
        return -1;
    }
    te_engine *e = NULL;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = te_engine_create(&cfg, &e);
    Py_END_ALLOW_THREADS
    Py_DECREF(keep);
    if (r) {
        tpy_raise(r, "TransferEngine");
        return -1;
    }
    eng_state *st = calloc(1, sizeof *st);
    PyObject *reg = st ? PyDict_New() : NULL;
    if (!reg) {
        free(st);
        Py_BEGIN_ALLOW_THREADS
        te_engine_destroy(e);
        Py_END_ALLOW_THREADS
        PyErr_NoMemory();
        return -1;
    }
    st->e = e;
    st->registry = reg;
    st->next_live = live_engines;
    live_engines = st;
    o->st = st;
    return 0;
}

static int engine_traverse(PyObject *self, visitproc visit, void *arg)
{
    eng_state *st = ((PyEngine *)self)->st;
    Py_VISIT(Py_TYPE(self));
    if (!st) return 0;
    Py_VISIT(st->imm_cb);
    for (exp_ctx *x = st->exps; x; x = x->next) Py_VISIT(x->cb);
    for (watch_ctx *x = st->watchers; x; x = x->next) Py_VISIT(x->cb);
    for (pool_ctx *p = st->pools; p; p = p->next) {
        Py_VISIT(p->on_recv);
        Py_VISIT(p->on_error);
    }
    return 0;
}

static int engine_clear(PyObject *self)
{
    /* Only reached for an unreachable engine (a cycle through its callbacks): drop the
     * callables; the engine itself is torn down by dealloc. */
    eng_state *st = ((PyEngine *)self)->st;
    if (!st) return 0;
    if (st->imm_cb && !st->stopped) te_imm_set_callback(st->e, NULL, NULL);
    Py_CLEAR(st->imm_cb);
    for (exp_ctx *x = st->exps; x; x = x->next) Py_CLEAR(x->cb);
    for (watch_ctx *x = st->watchers; x; x = x->next) Py_CLEAR(x->cb);
    for (pool_ctx *p = st->pools; p; p = p->next) {
        Py_CLEAR(p->on_recv);
        Py_CLEAR(p->on_error);
    }
    return 0;
}

static void engine_dealloc(PyObject *self)
{
    PyObject_GC_UnTrack(self);
    PyEngine *o = (PyEngine *)self;
    eng_state *st = o->st;
    o->st = NULL;
    if (st) engine_teardown(st);
    tpy_free_self(self);
}

/* ---------------------------------------------------------------- props --- */

static PyObject *eng_main_address(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
    te_addr a;
    int r = te_main_address(st->e, &a);
    if (r) return tpy_raise(r, "main_address");
    return tpy_addr_new(&a);
}

static PyObject *eng_num_domains(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLong(te_num_nics(st->e)) : NULL;
}

static PyObject *eng_nets_per_gpu(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLong(te_group_nics(st->e, 0)) : NULL;
}

static PyObject *eng_num_groups(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLong(te_num_groups(st->e)) : NULL;
}

static PyObject *eng_link_speed(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLongLong(te_link_speed(st->e)) : NULL;
}

static PyObject *eng_provider(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyUnicode_FromString(te_provider_name(st->e)) : NULL;
}

static PyObject *eng_callback_errors(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLongLong(st->callback_errors) : NULL;
}

static PyObject *eng_unhandled_errors(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyLong_FromUnsignedLongLong(st->unhandled_errors) : NULL;
}

static PyObject *eng_stopped(PyObject *self, void *c)
{
    eng_state *st = ((PyEngine *)self)->st;
    return PyBool_FromLong(!st || st->stopped);
}

static PyObject *eng_nic_names(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
    uint32_t ng = te_num_groups(st->e);
    PyObject *out = PyList_New(0);
    for (uint32_t g = 0; out && g < ng; g++) {
        PyObject *l = PyList_New(0);
        for (uint32_t k = 0; l && k < te_group_nics(st->e, g); k++) {
            const char *name = te_nic_name(st->e, g, k);
            PyObject *s = PyUnicode_FromString(name ? name : "");
            if (!s || PyList_Append(l, s) < 0) Py_CLEAR(l);
            Py_XDECREF(s);
        }
        if (!l || PyList_Append(out, l) < 0) Py_CLEAR(out);
        Py_XDECREF(l);
    }
    return out;
}

static PyObject *eng_nic_address(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"group", "nic", NULL};
    unsigned int g = 0, n = 0;
    eng_state *st = engine_state(self);
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "|II:nic_address", kwlist, &g, &n)) return NULL;
    te_addr a;
    int r = te_nic_address(st->e, g, n, &a);
    if (r) return tpy_raise(r, NULL);
    return tpy_addr_new(&a);
}

static PyObject *eng_nic_stats(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"group", "nic", NULL};
    unsigned int g = 0, n = 0;
    eng_state *st = engine_state(self);
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "|II:nic_stats", kwlist, &g, &n)) return NULL;
    te_nic_stats s;
    int r = te_nic_stats_get(st->e, g, n, &s);
    if (r) return tpy_raise(r, NULL);
    return Py_BuildValue("{sKsKsKsKsKsKsKsK}", "write_ops", (unsigned long long)s.write_ops, "write_bytes",
                         (unsigned long long)s.write_bytes, "send_ops", (unsigned long long)s.send_ops,
                         "send_bytes", (unsigned long long)s.send_bytes, "recv_ops", (unsigned long long)s.recv_ops,
                         "recv_bytes", (unsigned long long)s.recv_bytes, "imms_received",
                         (unsigned long long)s.imms_received, "errors", (unsigned long long)s.errors);
}

static PyObject *eng_stop(PyObject *self, PyObject *unused)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
    if (on_cb_thread(st)) {
        PyErr_SetString(PyExc_RuntimeError, "stop() cannot be called from one of this engine's callbacks");
        return NULL;
    }
    if (!st->stopped) {
        int r;
        st->stopped = true;
        Py_BEGIN_ALLOW_THREADS
        r = te_engine_stop(st->e);
        Py_END_ALLOW_THREADS
        if (r) return tpy_raise(r, "stop");
    }
    Py_RETURN_NONE;
}

/* --------------------------------------------------------- registration --- */

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

static PyObject *eng_register_memory(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"target", "length", "device", "remote", "owner", NULL};
    eng_state *st = engine_state(self);
    PyObject *target, *len_obj = Py_None, *dev_obj = Py_None, *owner = Py_None;
    int remote = 1;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O|OO$pO:register_memory", kwlist, &target, &len_obj,
                                            &dev_obj, &remote, &owner))
        return NULL;
    int device = TE_DEVICE_HOST;
    if (dev_obj != Py_None) {
        long d = PyLong_AsLong(dev_obj);
        if (d == -1 && PyErr_Occurred()) return NULL;
        if (d < -1 || d > INT_MAX) {
            PyErr_Format(PyExc_ValueError, "register_memory: device must be -1 (host) or a CUDA ordinal, got %ld", d);
            return NULL;
        }
        device = (int)d;
    }
    Py_buffer *view = NULL;
    void *ptr;
    uint64_t len = 0;
    if (PyLong_Check(target)) {
        uint64_t p;
        if (!tpy_conv_u64(target, &p)) return NULL;
        if (len_obj == Py_None) {
            PyErr_SetString(PyExc_TypeError, "register_memory(ptr, length, device): length is required with a pointer");
            return NULL;
        }
        if (!tpy_conv_u64(len_obj, &len)) return NULL;
        ptr = (void *)(uintptr_t)p;
    } else {
        if (device != TE_DEVICE_HOST) {
            PyErr_SetString(PyExc_ValueError,
                            "register_memory: a buffer object is host memory; pass (ptr, length, device) for CUDA");
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
                PyErr_Format(ExcValueError, "register_memory: length %llu exceeds the buffer's %llu bytes",
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
    PyTypeObject *tp = (PyTypeObject *)TpMrHandle;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyMrHandle *h = (PyMrHandle *)alloc(tp, 0);
    if (!h) {
        Py_DECREF(desc);
        goto fail_mr;
    }
    h->mr = mr;
    h->st = st;
    h->view = view;
    h->owner = NULL;
    if (owner != Py_None) {
        Py_INCREF(owner);
        h->owner = owner;
    }
    h->ptr = (uint64_t)(uintptr_t)ptr;
    h->len = len;
    h->device = device;
    h->desc = desc;
    Py_INCREF(desc);
    if (registry_add(st, h) < 0) {
        Py_DECREF(desc);
        Py_DECREF(h); /* dealloc deregisters and releases the view */
        return NULL;
    }
    return Py_BuildValue("(NN)", (PyObject *)h, desc);
fail_mr:
    te_mr_deregister(mr);
fail_view:
    if (view) {
        PyBuffer_Release(view);
        free(view);
    }
    return NULL;
}

static int unregister_one(eng_state *st, PyMrHandle *h)
{
    if (!h->mr) return 0;
    int r;
    Py_BEGIN_ALLOW_THREADS
    r = te_mr_deregister(h->mr);
    Py_END_ALLOW_THREADS
    if (r) {
        tpy_raise(r, "unregister_memory");
        return -1;
    }
    h->mr = NULL;
    handle_release_owner(h);
    PyObject *hold = (PyObject *)h;
    Py_INCREF(hold); /* the registry may hold the last reference */
    int rr = registry_remove(st, h);
    h->st = NULL;
    Py_DECREF(hold);
    return rr;
}

static PyObject *eng_unregister_memory(PyObject *self, PyObject *target)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
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
    if (!PyLong_Check(target)) {
        PyErr_Format(PyExc_TypeError, "unregister_memory: expected a pointer (int) or a MemoryRegionHandle, got %R",
                     (PyObject *)Py_TYPE(target));
        return NULL;
    }
    PyObject *list = PyDict_GetItemWithError(st->registry, target);
    if (!list) {
        if (!PyErr_Occurred())
            PyErr_Format(ExcValueError, "unregister_memory: no region registered at 0x%llx",
                         (unsigned long long)PyLong_AsUnsignedLongLong(target));
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

/* ----------------------------------------------------------- submission --- */

static int check_callable(PyObject *o, const char *name)
{
    if (o != Py_None && !PyCallable_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be callable or None, got %R", name, (PyObject *)Py_TYPE(o));
        return -1;
    }
    return 0;
}

/* Completion for a submission: a ctx (callbacks) and/or a counter. */
typedef struct {
    te_completion c;
    op_ctx *ctx;
    PyCounter *counter;
} completion;

static int completion_make(eng_state *st, PyObject *on_done, PyObject *on_error, PyObject *counter, completion *out)
{
    memset(out, 0, sizeof *out);
    if (check_callable(on_done, "on_done") < 0 || check_callable(on_error, "on_error") < 0) return -1;
    if (counter != Py_None) {
        if (!PyObject_TypeCheck(counter, (PyTypeObject *)TpCounter)) {
            PyErr_Format(PyExc_TypeError, "counter must be a tendril.Counter, got %R", (PyObject *)Py_TYPE(counter));
            return -1;
        }
        out->counter = (PyCounter *)counter;
        out->c.counter = out->counter->c;
    }
    if (on_done != Py_None || on_error != Py_None) {
        op_ctx *x = calloc(1, sizeof *x);
        if (!x) {
            PyErr_NoMemory();
            return -1;
        }
        x->st = st;
        if (on_done != Py_None) {
            Py_INCREF(on_done);
            x->on_done = on_done;
        }
        if (on_error != Py_None) {
            Py_INCREF(on_error);
            x->on_error = on_error;
        }
        out->ctx = x;
        out->c.fn = op_done_tramp;
        out->c.arg = x;
    }
    return 0;
}

/* After the submission call: r == 0 hands the ctx to the engine. */
static PyObject *completion_finish(completion *cp, int r, const char *what)
{
    if (r) {
        if (cp->ctx) op_ctx_free(cp->ctx);
        return tpy_raise(r, what);
    }
    if (cp->counter) cp->counter->submitted++;
    Py_RETURN_NONE;
}

static te_mr *src_mr_of(PyObject *o, eng_state *st, const char *name)
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

static const te_mr_desc *desc_of(PyObject *o, const char *name)
{
    if (!PyObject_TypeCheck(o, (PyTypeObject *)TpMrDescriptor)) {
        PyErr_Format(PyExc_TypeError, "%s must be a MemoryRegionDescriptor, got %R", name, (PyObject *)Py_TYPE(o));
        return NULL;
    }
    return &((PyMrDescriptor *)o)->desc;
}

static te_pages *pages_of(PyObject *o, const char *name)
{
    if (!PyObject_TypeCheck(o, (PyTypeObject *)TpPageIndices)) {
        PyErr_Format(PyExc_TypeError, "%s must be a PageIndices, got %R", name, (PyObject *)Py_TYPE(o));
        return NULL;
    }
    return ((PyPageIndices *)o)->pages;
}

static PyObject *eng_submit_write(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"src_mr", "offset", "length", "imm_data", "dst_mr", "dst_offset", "on_done",
                             "on_error", "num_shards", "counter", "nic", NULL};
    eng_state *st = engine_state(self);
    PyObject *src, *dst, *on_done = Py_None, *on_error = Py_None, *shards = Py_None, *counter = Py_None,
                         *nic = Py_None;
    te_write_args a;
    memset(&a, 0, sizeof a);
    tpy_opt_u32 imm;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "OO&O&O&OO&|OOO$OO:submit_write", kwlist, &src, tpy_conv_u64,
                                            &a.src_offset, tpy_conv_u64, &a.len, tpy_conv_opt_u32, &imm, &dst,
                                            tpy_conv_u64, &a.dst_offset, &on_done, &on_error, &shards, &counter,
                                            &nic))
        return NULL;
    if (!(a.src = src_mr_of(src, st, "src_mr")) || !(a.dst = desc_of(dst, "dst_mr"))) return NULL;
    a.has_imm = imm.has;
    a.imm = imm.v;
    if (nic != Py_None && shards != Py_None) {
        PyErr_SetString(PyExc_TypeError, "submit_write: give num_shards or nic, not both");
        return NULL;
    }
    if (nic != Py_None) {
        a.route.kind = TE_ROUTE_PINNED;
        if (!tpy_conv_u32(nic, &a.route.n)) return NULL;
    } else {
        a.route.kind = TE_ROUTE_SHARDED;
        if (shards != Py_None) {
            if (!tpy_conv_u32(shards, &a.route.n)) return NULL;
            if (a.route.n == 0) {
                PyErr_SetString(ExcValueError, "submit_write: num_shards must be >= 1 (None: one per NIC)");
                return NULL;
            }
        }
    }
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write(st->e, &a, &cp.c), NULL);
}

static PyObject *eng_submit_paged_writes(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"length", "src_mr", "src_pages", "src_stride", "src_offset", "dst_mr", "dst_pages",
                             "dst_stride", "dst_offset", "imm_data", "on_done", "on_error", "counter", NULL};
    eng_state *st = engine_state(self);
    PyObject *src, *sp, *dst, *dp, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    te_paged_args a;
    memset(&a, 0, sizeof a);
    tpy_opt_u32 imm;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&OOO&O&OOO&O&O&|OO$O:submit_paged_writes", kwlist,
                                            tpy_conv_u64, &a.page_len, &src, &sp, tpy_conv_u64, &a.src_stride,
                                            tpy_conv_u64, &a.src_offset, &dst, &dp, tpy_conv_u64, &a.dst_stride,
                                            tpy_conv_u64, &a.dst_offset, tpy_conv_opt_u32, &imm, &on_done,
                                            &on_error, &counter))
        return NULL;
    if (!(a.src = src_mr_of(src, st, "src_mr")) || !(a.dst = desc_of(dst, "dst_mr")) ||
        !(a.src_pages = pages_of(sp, "src_pages")) || !(a.dst_pages = pages_of(dp, "dst_pages")))
        return NULL;
    a.has_imm = imm.has;
    a.imm = imm.v;
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write_paged(st->e, &a, &cp.c), NULL);
}

static PyObject *eng_submit_imm(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm_data", "dst_mr", "on_done", "on_error", "counter", "nic", NULL};
    eng_state *st = engine_state(self);
    PyObject *dst, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    uint32_t imm = 0, nic = 0;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O|OO$OO&:submit_imm", kwlist, tpy_conv_u32, &imm, &dst,
                                            &on_done, &on_error, &counter, tpy_conv_u32, &nic))
        return NULL;
    const te_mr_desc *d = desc_of(dst, "dst_mr");
    if (!d) return NULL;
    te_route route = {TE_ROUTE_PINNED, nic};
    completion cp;
    if (completion_make(st, on_done, on_error, counter, &cp) < 0) return NULL;
    return completion_finish(&cp, te_write_imm(st->e, imm, d, route, &cp.c), NULL);
}

static PyObject *eng_submit_barrier(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm_data", "dst_mrs", "on_done", "on_error", "counter", "nic", NULL};
    eng_state *st = engine_state(self);
    PyObject *dsts, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    uint32_t imm = 0, nic = 0;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O|OO$OO&:submit_barrier", kwlist, tpy_conv_u32, &imm,
                                            &dsts, &on_done, &on_error, &counter, tpy_conv_u32, &nic))
        return NULL;
    PyObject *seq = PySequence_List(dsts);
    if (!seq) return NULL;
    Py_ssize_t n = PyList_Size(seq);
    te_mr_desc *arr = calloc(n ? (size_t)n : 1, sizeof *arr);
    if (!arr) {
        Py_DECREF(seq);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        const te_mr_desc *d = desc_of(PyList_GetItem(seq, k), "dst_mrs[i]");
        if (!d) {
            free(arr);
            Py_DECREF(seq);
            return NULL;
        }
        arr[k] = *d;
    }
    Py_DECREF(seq);
    te_route route = {TE_ROUTE_PINNED, nic};
    completion cp;
    PyObject *res = NULL;
    if (completion_make(st, on_done, on_error, counter, &cp) == 0)
        res = completion_finish(&cp, te_barrier(st->e, imm, arr, (size_t)n, route, &cp.c), NULL);
    free(arr);
    return res;
}

static PyObject *eng_submit_send(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"addr", "data", "on_done", "on_error", "counter", NULL};
    eng_state *st = engine_state(self);
    PyObject *addr, *data, *on_done = Py_None, *on_error = Py_None, *counter = Py_None;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "OO|OO$O:submit_send", kwlist, &addr, &data, &on_done,
                                            &on_error, &counter))
        return NULL;
    if (!PyObject_TypeCheck(addr, (PyTypeObject *)TpDomainAddress)) {
        PyErr_Format(PyExc_TypeError, "addr must be a DomainAddress, got %R", (PyObject *)Py_TYPE(addr));
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_ANY_CONTIGUOUS) < 0) return NULL;
    completion cp;
    PyObject *res = NULL;
    if (completion_make(st, on_done, on_error, counter, &cp) == 0)
        res = completion_finish(&cp,
                                te_send(st->e, &((PyDomainAddress *)addr)->addr, view.buf, (size_t)view.len, &cp.c),
                                NULL);
    PyBuffer_Release(&view);
    return res;
}

static PyObject *eng_submit_bouncing_recvs(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"count", "len", "on_recv", "on_error", NULL};
    eng_state *st = engine_state(self);
    uint32_t count = 0;
    uint64_t len = 0;
    PyObject *on_recv, *on_error = Py_None;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O&O|O:submit_bouncing_recvs", kwlist, tpy_conv_u32, &count,
                                            tpy_conv_u64, &len, &on_recv, &on_error))
        return NULL;
    if (!PyCallable_Check(on_recv)) {
        PyErr_Format(PyExc_TypeError, "on_recv must be callable, got %R", (PyObject *)Py_TYPE(on_recv));
        return NULL;
    }
    if (check_callable(on_error, "on_error") < 0) return NULL;
    pool_ctx *p = calloc(1, sizeof *p);
    if (!p) return PyErr_NoMemory();
    p->st = st;
    Py_INCREF(on_recv);
    p->on_recv = on_recv;
    if (on_error != Py_None) {
        Py_INCREF(on_error);
        p->on_error = on_error;
    }
    /* Link first: the engine may call the trampolines before create returns. */
    p->next = st->pools;
    st->pools = p;
    int r;
    te_recv_pool *pool = NULL;
    Py_BEGIN_ALLOW_THREADS
    r = te_recv_pool_create(st->e, (size_t)len, count, pool_recv_tramp, pool_error_tramp, p, &pool);
    Py_END_ALLOW_THREADS
    if (r) {
        /* The pool may exist in the engine's list (freed with the engine) and be able to
         * call back: keep the ctx linked, drop only the callables. */
        Py_CLEAR(p->on_recv);
        Py_CLEAR(p->on_error);
        return tpy_raise(r, "submit_bouncing_recvs");
    }
    p->pool = pool;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ immediates --- */

static PyObject *prev_tuple(const te_imm_prev *p)
{
    if (!p->existed) Py_RETURN_NONE;
    if (p->expected) return Py_BuildValue("(KK)", (unsigned long long)p->count, (unsigned long long)p->expected);
    return Py_BuildValue("(KO)", (unsigned long long)p->count, Py_None);
}

/* The armed expectation for imm loses its callable (it will never be called). */
static void exp_disarm(eng_state *st, uint32_t imm)
{
    for (exp_ctx *x = st->exps; x; x = x->next)
        if (x->armed && x->imm == imm) {
            x->armed = false;
            Py_CLEAR(x->cb);
        }
}

static PyObject *eng_set_imm_callback(PyObject *self, PyObject *cb)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
    if (check_callable(cb, "callback") < 0) return NULL;
    int r = cb == Py_None ? te_imm_set_callback(st->e, NULL, NULL) : te_imm_set_callback(st->e, imm_plain_tramp, st);
    if (r) return tpy_raise(r, "set_imm_callback");
    PyObject *old = st->imm_cb;
    if (cb != Py_None) Py_INCREF(cb);
    st->imm_cb = cb == Py_None ? NULL : cb;
    Py_XDECREF(old);
    Py_RETURN_NONE;
}

static PyObject *eng_set_imm_count_expected(PyObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"imm", "count", "on_reached", NULL};
    eng_state *st = engine_state(self);
    uint32_t imm = 0;
    uint64_t count = 0;
    PyObject *cb;
    if (!st || !PyArg_ParseTupleAndKeywords(args, kw, "O&O&O:set_imm_count_expected", kwlist, tpy_conv_u32, &imm,
                                            tpy_conv_u64, &count, &cb))
        return NULL;
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError, "on_reached must be callable, got %R", (PyObject *)Py_TYPE(cb));
        return NULL;
    }
    exp_ctx *x = calloc(1, sizeof *x);
    if (!x) return PyErr_NoMemory();
    x->st = st;
    x->imm = imm;
    Py_INCREF(cb);
    x->cb = cb;
    /* The trampoline needs the GIL, which we hold: linking after arming is safe. */
    te_imm_prev prev;
    int r = te_imm_expect(st->e, imm, count, exp_reached_tramp, x, &prev);
    if (r) {
        Py_DECREF(cb);
        free(x);
        return tpy_raise(r, "set_imm_count_expected");
    }
    exp_disarm(st, imm);
    x->armed = true;
    x->next = st->exps;
    if (st->exps) st->exps->prev = x;
    st->exps = x;
    return prev_tuple(&prev);
}

static PyObject *eng_remove_imm_count(PyObject *self, PyObject *arg)
{
    eng_state *st = engine_state(self);
    uint32_t imm;
    if (!st || !tpy_conv_u32(arg, &imm)) return NULL;
    te_imm_prev prev;
    int r = te_imm_remove(st->e, imm, &prev);
    if (r == -ENOENT) Py_RETURN_NONE;
    if (r) return tpy_raise(r, "remove_imm_count");
    exp_disarm(st, imm);
    return prev_tuple(&prev);
}

static PyObject *eng_imm_counter(PyObject *self, PyObject *arg)
{
    eng_state *st = engine_state(self);
    uint32_t imm;
    if (!st || !tpy_conv_u32(arg, &imm)) return NULL;
    te_imm_counter *c = NULL;
    int r = te_imm_counter_create(st->e, imm, &c);
    if (r) return tpy_raise(r, "imm_counter");
    exp_disarm(st, imm);
    PyTypeObject *tp = (PyTypeObject *)TpImmCounter;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyImmCounter *o = (PyImmCounter *)alloc(tp, 0);
    if (!o) {
        te_imm_counter_destroy(c);
        return NULL;
    }
    o->c = c;
    o->imm = imm;
    Py_INCREF(self);
    o->engine = self;
    return (PyObject *)o;
}

static PyObject *eng_alloc_scalar_watcher(PyObject *self, PyObject *cb)
{
    eng_state *st = engine_state(self);
    if (!st) return NULL;
    if (!PyCallable_Check(cb)) {
        PyErr_Format(PyExc_TypeError, "callback must be callable, got %R", (PyObject *)Py_TYPE(cb));
        return NULL;
    }
    watch_ctx *x = calloc(1, sizeof *x);
    PyTypeObject *tp = (PyTypeObject *)TpWatcher;
    allocfunc alloc = (allocfunc)PyType_GetSlot(tp, Py_tp_alloc);
    PyWatcher *o = x ? (PyWatcher *)alloc(tp, 0) : NULL;
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

static PyObject *eng_watcher_memory_kind(PyObject *self, void *c)
{
    eng_state *st = engine_state(self);
    return st ? PyUnicode_FromString(te_watcher_memory_kind(st->e)) : NULL;
}

static PyMethodDef engine_methods[] = {
    {"alloc_scalar_watcher", eng_alloc_scalar_watcher, METH_O,
     "alloc_scalar_watcher(callback) -> UvmWatcher: callback(old, new) -> bool on the\n"
     "engine's watcher thread when the u64 word at watcher.ptr changes."},
    {"stop", eng_stop, METH_NOARGS,
     "stop(): stop the engine; every pending operation completes with [ECANCELED] (its\n"
     "callback runs before stop returns). Idempotent. Not from a callback."},
    {"nic_address", (PyCFunction)(void (*)(void))eng_nic_address, METH_VARARGS | METH_KEYWORDS,
     "nic_address(group=0, nic=0) -> DomainAddress"},
    {"nic_stats", (PyCFunction)(void (*)(void))eng_nic_stats, METH_VARARGS | METH_KEYWORDS,
     "nic_stats(group=0, nic=0) -> dict of counters"},
    {"register_memory", (PyCFunction)(void (*)(void))eng_register_memory, METH_VARARGS | METH_KEYWORDS,
     "register_memory(target, length=None, device=None, *, remote=True, owner=None)\n"
     "    -> (MemoryRegionHandle, MemoryRegionDescriptor | None)\n"
     "target: a buffer-protocol object (host memory) or an int pointer with length and\n"
     "device (None/-1 host, else CUDA ordinal). The buffer (or `owner`) stays alive while\n"
     "registered. Releases the GIL while registering."},
    {"unregister_memory", eng_unregister_memory, METH_O,
     "unregister_memory(ptr | handle): deregister (every region registered at ptr)."},
    {"submit_write", (PyCFunction)(void (*)(void))eng_submit_write, METH_VARARGS | METH_KEYWORDS,
     "submit_write(src_mr, offset, length, imm_data, dst_mr, dst_offset, on_done=None,\n"
     "             on_error=None, num_shards=None, *, counter=None, nic=None)"},
    {"submit_paged_writes", (PyCFunction)(void (*)(void))eng_submit_paged_writes, METH_VARARGS | METH_KEYWORDS,
     "submit_paged_writes(length, src_mr, src_pages, src_stride, src_offset, dst_mr, dst_pages,\n"
     "                    dst_stride, dst_offset, imm_data, on_done=None, on_error=None, *,\n"
     "                    counter=None)"},
    {"submit_imm", (PyCFunction)(void (*)(void))eng_submit_imm, METH_VARARGS | METH_KEYWORDS,
     "submit_imm(imm_data, dst_mr, on_done=None, on_error=None, *, counter=None, nic=0)"},
    {"submit_barrier", (PyCFunction)(void (*)(void))eng_submit_barrier, METH_VARARGS | METH_KEYWORDS,
     "submit_barrier(imm_data, dst_mrs, on_done=None, on_error=None, *, counter=None, nic=0)"},
    {"submit_send", (PyCFunction)(void (*)(void))eng_submit_send, METH_VARARGS | METH_KEYWORDS,
     "submit_send(addr, data, on_done=None, on_error=None, *, counter=None): data is copied."},
    {"submit_bouncing_recvs", (PyCFunction)(void (*)(void))eng_submit_bouncing_recvs, METH_VARARGS | METH_KEYWORDS,
     "submit_bouncing_recvs(count, len, on_recv, on_error=None): on_recv(bytes) per message."},
    {"set_imm_callback", eng_set_imm_callback, METH_O,
     "set_imm_callback(callback | None): callback(imm) for immediates nobody expects."},
    {"set_imm_count_expected", (PyCFunction)(void (*)(void))eng_set_imm_count_expected,
     METH_VARARGS | METH_KEYWORDS,
     "set_imm_count_expected(imm, count, on_reached) -> previous (count, expected) | None\n"
     "One-shot: on_reached() runs once when `count` immediates arrived; surplus goes to the\n"
     "imm callback."},
    {"remove_imm_count", eng_remove_imm_count, METH_O,
     "remove_imm_count(imm) -> previous (count, expected) | None"},
    {"imm_counter", eng_imm_counter, METH_O, "imm_counter(imm) -> ImmCounter (pollable, no callback thread)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef engine_getset[] = {
    {"main_address", eng_main_address, NULL, "DomainAddress of NIC 0 of group 0 (send target).", NULL},
    {"num_domains", eng_num_domains, NULL, "NICs over all groups.", NULL},
    {"nets_per_gpu", eng_nets_per_gpu, NULL, "NICs of the main group.", NULL},
    {"num_groups", eng_num_groups, NULL, "Groups (GPUs or host groups).", NULL},
    {"aggregated_link_speed", eng_link_speed, NULL, "Sum of the NICs' link speeds in bits/s (0 unknown).", NULL},
    {"provider", eng_provider, NULL, "libfabric provider in use (e.g. 'tcp;ofi_rxm').", NULL},
    {"nic_names", eng_nic_names, NULL, "NIC names per group.", NULL},
    {"callback_errors", eng_callback_errors, NULL, "Python exceptions raised by callbacks so far.", NULL},
    {"unhandled_errors", eng_unhandled_errors, NULL, "Failed operations that had no on_error.", NULL},
    {"stopped", eng_stopped, NULL, "True after stop().", NULL},
    {"watcher_memory_kind", eng_watcher_memory_kind, NULL, "'mapped-host' (GPU-visible) or 'host'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot engine_slots[] = {
    {Py_tp_new, engine_new},
    {Py_tp_init, engine_init},
    {Py_tp_dealloc, engine_dealloc},
    {Py_tp_traverse, engine_traverse},
    {Py_tp_clear, engine_clear},
    {Py_tp_methods, engine_methods},
    {Py_tp_getset, engine_getset},
    {Py_tp_doc, (void *)"Low-level engine: TransferEngine(*, provider=None, groups=None, op_timeout_ms=0,\n"
                        "max_msg_size=0, busy_poll=False). Use tendril.TransferEngine."},
    {0, NULL},
};

static PyType_Spec engine_spec = {
    "tendril._tendril.TransferEngine", sizeof(PyEngine), 0,
    Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC, engine_slots,
};

int tpy_engine_init(PyObject *m)
{
    struct {
        PyType_Spec *spec;
        PyObject **out;
    } types[] = {{&handle_spec, &TpMrHandle},
                 {&immc_spec, &TpImmCounter},
                 {&watcher_spec, &TpWatcher},
                 {&engine_spec, &TpEngine}};
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
