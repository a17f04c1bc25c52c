/*
 * Shared declarations of the _tendril CPython extension (python/ext/py_*.c).
 *
 * Files: py_module.c (module, exceptions' setup, strerror), py_errors.c (te_ error codes
 * -> exceptions), py_convert.c (integer/timeout converters),
 * py_args.c (object-type checks shared by the methods), one file per type (py_address.c,
 * py_descriptor.c, py_pages.c, py_counter.c, py_handle.c, py_imm_counter.c,
 * py_watcher.c, py_engine.c) with the engine's methods by concern (py_engine_memory.c,
 * py_engine_submit.c, py_engine_imm.c) and the callback trampolines (py_callbacks.c);
 * py_topology.c is detect_topology(); py_a2a.c is the all-to-all (submodule _a2a, where
 * CUDA is built: TENDRIL_PY_A2A).
 *
 * The extension is written against the CPython *limited* API of 3.11 (Py_LIMITED_API is
 * set by python/CMakeLists.txt), so one binary (*.abi3.so) loads in 3.11, 3.12, ...
 * 3.11 is the first version whose limited API has the buffer protocol
 * (PyObject_GetBuffer / PyBuffer_Release); threads need only PyGILState_* and
 * Py_BEGIN/END_ALLOW_THREADS, which the limited API has always had.
 *
 * Threading: every te_ callback runs on the engine's callback thread; the trampolines
 * take the GIL (PyGILState_Ensure) only around Python code. Blocking C calls
 * (registration, waits, stop) release the GIL.
 */
#ifndef TENDRIL_PY_H
#define TENDRIL_PY_H

#include "py_convert.h"

#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "tendril/te.h"

/* ---------------------------------------------------------------- types ---- */

extern PyObject *TpDomainAddress;
extern PyObject *TpMrDescriptor;
extern PyObject *TpMrHandle;
extern PyObject *TpPageIndices;
extern PyObject *TpCounter;
extern PyObject *TpImmCounter;
extern PyObject *TpWatcher;
extern PyObject *TpEngine;

/* Their specs, instantiated by py_module.c. */
extern PyType_Spec tpy_addr_spec, tpy_desc_spec, tpy_pages_spec, tpy_counter_spec, tpy_handle_spec,
    tpy_immc_spec, tpy_watcher_spec, tpy_engine_spec;

/* Exceptions (module attributes of the same names). */
extern PyObject *ExcTendrilError;   /* RuntimeError: every engine error, .errno set */
extern PyObject *ExcValueError;     /* + ValueError: bad argument, range, size, encoding */
extern PyObject *ExcTimeoutError;   /* + TimeoutError: -ETIMEDOUT */
extern PyObject *ExcStoppedError;   /* -ESHUTDOWN: the engine was stopped */

typedef struct {
    PyObject_HEAD
    te_addr addr;
} PyDomainAddress;

typedef struct {
    PyObject_HEAD
    te_mr_desc desc;
} PyMrDescriptor;

typedef struct {
    PyObject_HEAD
    te_pages *pages;
} PyPageIndices;

typedef struct {
    PyObject_HEAD
    te_counter *c;
    uint64_t submitted; /* operations accepted with this counter (GIL-protected) */
} PyCounter;

struct eng_state;

typedef struct {
    PyObject_HEAD
    te_mr *mr;              /* NULL once unregistered (or being unregistered), or the engine is gone */
    struct eng_state *st;   /* owning engine's state; NULL once detached */
    Py_buffer *view;        /* buffer export held while registered, or NULL */
    PyObject *owner;        /* object kept alive while registered, or NULL */
    uint64_t ptr, len;
    int device;
    PyObject *desc;         /* MemoryRegionDescriptor or None */
} PyMrHandle;

/* ------------------------------------------------------------- helpers ---- */

/* Sets the Python exception for a negative te_ return code (message from te_last_error,
 * prefixed with `what` if not NULL). Returns NULL. */
PyObject *tpy_raise(int err, const char *what);
/* Same with a message of our own (reference stolen). */
PyObject *tpy_raise_text(int err, PyObject *text);
/* "[ECANCELED] operation canceled (engine stopped): <msg>" for on_error callbacks. */
PyObject *tpy_error_string(int status, const char *msg);
/* Short errno name ("ECANCELED"), or NULL. */
const char *tpy_errno_name(int err);

/* A new instance of heap type tp (fields zeroed), or NULL. */
PyObject *tpy_alloc(PyObject *tp);
/* Heap-type dealloc helper: frees self through its type's tp_free and drops the type. */
void tpy_free_self(PyObject *self);
/* tp_new of the types that only the engine creates (TypeError naming `what`). */
PyObject *tpy_new_forbidden(PyTypeObject *tp, PyObject *a, PyObject *k);

/* Type checks of method arguments: a TypeError names the argument (`name`). */
int tpy_check_callable(PyObject *o, const char *name); /* callable or None; 0 / -1 */
const te_mr_desc *tpy_desc_of(PyObject *o, const char *name);
const te_addr *tpy_addr_of(PyObject *o, const char *name);
te_pages *tpy_pages_of(PyObject *o, const char *name);

/* Waits by slices of at most 100 ms with the GIL released, checking for signals between
 * slices, until fn returns something other than -ETIMEDOUT or the timeout passes.
 * INT_MIN: a signal handler raised (exception set). */
typedef int (*tpy_wait_fn)(void *obj, uint64_t n, int timeout_ms);
int tpy_wait(tpy_wait_fn fn, void *obj, uint64_t n, int64_t timeout_ms);
/* The TendrilTimeoutError of a wait: "<what>: <done> of <n> <unit> after <s> s". */
PyObject *tpy_raise_wait_timeout(const char *what, uint64_t done, uint64_t n, const char *unit, int64_t tmo_ms);

/* ------------------------------------------------------ module pieces ---- */

PyObject *tpy_detect_topology(PyObject *self, PyObject *args, PyObject *kw); /* py_topology.c */
PyObject *tpy_stop_all(PyObject *self, PyObject *unused);                   /* py_engine.c */
PyObject *tpy_set_log_bridge(PyObject *self, PyObject *logger);             /* py_log.c */
/* Adds the submodule _a2a (the all-to-all, py_a2a.c) where CUDA is built. 0 / -1. */
int tpy_add_a2a(PyObject *parent);

/* Builds a MemoryRegionDescriptor / DomainAddress object from a value. */
PyObject *tpy_desc_new(const te_mr_desc *d);
PyObject *tpy_addr_new(const te_addr *a);

#endif
