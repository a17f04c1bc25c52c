/*
 * Shared declarations of the _tendril CPython extension (python/ext/te_*.c).
 *
 * The extension is written against the CPython *limited* API of 3.11 (Py_LIMITED_API is
 * set by python/CMakeLists.txt), so one binary (*.abi3.so) loads in 3.11, 3.12, ...
 * 3.11 is the first version whose limited API has the buffer protocol
 * (PyObject_GetBuffer / PyBuffer_Release); threads need only PyGILState_* and
 * Py_BEGIN/END_ALLOW_THREADS, which the limited API has always had.
 *
 * Threading: every te_ callback runs on the engine's callback thread; the trampolines
 * here take the GIL (PyGILState_Ensure) only around Python code. Blocking C calls
 * (registration, waits, stop) release the GIL.
 */
#ifndef TENDRIL_PY_H
#define TENDRIL_PY_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdbool.h>
#include <stdint.h>

#include "tendril/te.h"

/* ---------------------------------------------------------------- types ---- */

extern PyObject *TpDomainAddress;
extern PyObject *TpMrDescriptor;
extern PyObject *TpMrHandle;
extern PyObject *TpPageIndices;
extern PyObject *TpCounter;
extern PyObject *TpImmCounter;
extern PyObject *TpEngine;

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
    te_mr *mr;              /* NULL once unregistered or the engine is gone */
    struct eng_state *st;   /* owning engine's state; NULL once detached */
    Py_buffer *view;        /* buffer export held while registered, or NULL */
    PyObject *owner;        /* object kept alive while registered, or NULL */
    uint64_t ptr, len;
    int device;
    PyObject *desc;         /* MemoryRegionDescriptor or None */
} PyMrHandle;

/* Engine state shared with the callback trampolines. Lives in C memory (not in the
 * Python object) so that it can outlive the object when the last reference is dropped on
 * the callback thread itself (the engine is then destroyed from a helper thread). Every
 * PyObject field is protected by the GIL. */
typedef struct eng_state {
    te_engine *e;
    uint64_t callback_errors;
    uint64_t unhandled_errors;   /* failed operations that had no on_error */
    PyObject *imm_cb;            /* set_imm_callback target, or NULL */
    PyObject *registry;          /* dict: ptr -> list of MemoryRegionHandle */
    struct exp_ctx *exps;        /* expectations (armed, and replaced ones) */
    struct pool_ctx *pools;      /* bouncing receive pools */
    struct watch_ctx *watchers;  /* scalar watchers (freed with the engine) */
    bool stopped;
    struct eng_state *next_live; /* module list of live engines (atexit stop) */
} eng_state;

typedef struct {
    PyObject_HEAD
    eng_state *st;
} PyEngine;

typedef struct {
    PyObject_HEAD
    te_imm_counter *c;
    PyObject *engine; /* strong: the counter must die before the engine */
    uint32_t imm;
} PyImmCounter;

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

/* Converters for PyArg_Parse "O&". */
int tpy_conv_u64(PyObject *o, void *out);
int tpy_conv_u32(PyObject *o, void *out);
/* Optional u32: None -> has=false. out points at tpy_opt_u32. */
typedef struct {
    bool has;
    uint32_t v;
} tpy_opt_u32;
int tpy_conv_opt_u32(PyObject *o, void *out);
/* Timeout in seconds (None = no limit) -> milliseconds (-1 = no limit). out is int64_t. */
int tpy_conv_timeout(PyObject *o, void *out);

/* Waits by slices of at most 100 ms with the GIL released, checking for signals between
 * slices, until fn returns something other than -ETIMEDOUT or the timeout passes. */
typedef int (*tpy_wait_fn)(void *obj, uint64_t n, int timeout_ms);
int tpy_wait(tpy_wait_fn fn, void *obj, uint64_t n, int64_t timeout_ms);

/* Heap-type dealloc helper: frees self through its type's tp_free and drops the type. */
void tpy_free_self(PyObject *self);

/* ------------------------------------------------------ module pieces ---- */

int tpy_types_init(PyObject *m);   /* te_types.c */
int tpy_engine_init(PyObject *m);  /* te_engine.c */
PyObject *tpy_detect_topology(PyObject *self, PyObject *args, PyObject *kw); /* te_topo.c */
PyObject *tpy_stop_all(PyObject *self, PyObject *unused);                   /* te_engine.c */

/* Builds a MemoryRegionDescriptor / DomainAddress object from a value. */
PyObject *tpy_desc_new(const te_mr_desc *d);
PyObject *tpy_addr_new(const te_addr *a);

#endif
