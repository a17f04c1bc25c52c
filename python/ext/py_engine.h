/*
 * The TransferEngine type's private state, shared by the files that implement it:
 * py_engine.c (type, lifecycle, properties), py_engine_memory.c (registration),
 * py_engine_submit.c (submit_*), py_engine_imm.c (immediates), py_imm_counter.c and
 * py_watcher.c (the objects the engine hands out), py_callbacks.c (trampolines).
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
#ifndef TENDRIL_PY_ENGINE_H
#define TENDRIL_PY_ENGINE_H

#include "tendril_py.h"

/* Engine state shared with the callback trampolines. Lives in C memory (not in the
 * Python object) so that it can outlive the object when the last reference is dropped on
 * the callback thread itself (the engine is then destroyed from a helper thread). Every
 * PyObject field is protected by the GIL. */
typedef struct eng_state {
    te_engine *e;
    uint64_t callback_errors;
    uint64_t unhandled_errors;   /* failed operations that had no on_error */
    PyObject *imm_cb;            /* set_imm_callback target, or NULL */
    PyObject *peer_cb;           /* set_peer_callback target, or NULL */
    bool peer_forward;           /* the peer trampoline stays installed and forwards every
                                    event to the all-to-all contexts (py_a2a.c) */
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

/* ----------------------------------------------------- py_callbacks.c ---- */

/* The engine whose callback this thread is running (callback thread or watcher thread),
 * so that stop() and teardown know they cannot wait for that engine's threads. */
extern _Thread_local eng_state *tpy_tl_in_callback;

typedef struct {
    PyGILState_STATE g;
    eng_state *outer;
} cb_scope;

cb_scope tpy_cb_enter(eng_state *st); /* takes the GIL */
void tpy_cb_leave(cb_scope s);
/* Reports the pending exception of a callback (unraisable hook, callback_errors). */
void tpy_report_cb_error(eng_state *st, PyObject *where);

void tpy_op_ctx_free(op_ctx *c);
void tpy_op_done_tramp(void *arg, int status, const char *msg);
void tpy_imm_plain_tramp(void *arg, uint32_t imm);
bool tpy_exp_reached_tramp(void *arg, uint32_t imm);
void tpy_pool_recv_tramp(void *arg, const void *data, size_t len);
void tpy_pool_error_tramp(void *arg, int status, const char *msg);

/* ---------------------------------------------------------- py_engine.c ---- */

/* The state of an engine object; EngineStoppedError if it was never initialized. */
eng_state *tpy_engine_state(PyObject *self);

/* ------------------------------------------------ methods by concern ---- */

/* py_engine_memory.c */
PyObject *tpy_eng_register_memory(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_unregister_memory(PyObject *self, PyObject *args, PyObject *kw);
/* Detaches every registered handle (engine teardown); see py_engine.c. */
typedef struct deferred {
    Py_buffer *view;
    PyObject *owner;
    struct deferred *next;
} deferred;
void tpy_detach_handles(eng_state *st, bool dereg, deferred **later);

/* py_handle.c */
PyObject *tpy_handle_new(eng_state *st, te_mr *mr, Py_buffer *view, PyObject *owner, uint64_t ptr, uint64_t len,
                         int device, PyObject *desc);
void tpy_handle_release_owner(PyMrHandle *h);
/* te_mr of a source argument registered with st, or NULL with TypeError/ValueError. */
te_mr *tpy_src_mr_of(PyObject *o, eng_state *st, const char *name);

/* py_engine_submit.c */
PyObject *tpy_eng_submit_write(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_submit_paged_writes(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_submit_imm(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_submit_barrier(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_submit_send(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_submit_bouncing_recvs(PyObject *self, PyObject *args, PyObject *kw);

/* py_engine_imm.c */
PyObject *tpy_eng_set_imm_callback(PyObject *self, PyObject *args, PyObject *kw);
/* py_engine_peers.c */
PyObject *tpy_eng_peer_state(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_set_peer_callback(PyObject *self, PyObject *args, PyObject *kw);
void tpy_peer_tramp(void *arg, const te_addr *addr, int state); /* py_callbacks.c */
const char *tpy_peer_state_name(int state);                    /* py_engine_peers.c */
PyObject *tpy_eng_set_imm_count_expected(PyObject *self, PyObject *args, PyObject *kw);
PyObject *tpy_eng_remove_imm_count(PyObject *self, PyObject *args, PyObject *kw);
/* The armed expectation for imm loses its callable (it will never be called). */
void tpy_exp_disarm(eng_state *st, uint32_t imm);

/* py_imm_counter.c */
PyObject *tpy_eng_imm_counter(PyObject *self, PyObject *args, PyObject *kw);

/* py_watcher.c */
PyObject *tpy_eng_alloc_scalar_watcher(PyObject *self, PyObject *args, PyObject *kw);

#endif
