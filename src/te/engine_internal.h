/* Internal structures of the TransferEngine, shared by the files of src/te/.
 *
 * Ownership in one picture:
 *   te_engine ── groups[g] ── nic[k] (one transport NIC each, worker-owned state)
 *             ├─ callback thread + event queue (user callbacks never run on a worker)
 *             ├─ imm table (imm.c)
 *             └─ lists of MRs, pools, counters for teardown
 * An operation (eng_op) is built and validated by the submitting thread and pushed on its
 * group's lock-free queue. From then on it is touched only under the group's progress
 * lock, by whichever thread runs a progress step (worker.c): the worker, the submitter
 * itself when the lock is free, or a thread waiting for a completion. */
#ifndef TENDRIL_TE_ENGINE_INTERNAL_H
#define TENDRIL_TE_ENGINE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/mpsc.h"
#include "core/notify.h"
#include "te/imm.h"
#include "te/sharding.h"
#include "tendril/te.h"
#include "transport/backend.h"

/* Context tags in the low bits of a work request's context pointer, so completions
 * (including error completions) are classified without trusting provider opcodes. */
enum ctx_tag { CTX_PORTION = 0, CTX_RECV = 1, CTX_MASK = 3 };

struct eng_op;

/* The part of an operation that one NIC executes: work requests [0, count) of the
 * operation's index space for this NIC (domain_group.c defines the index spaces). */
typedef struct eng_portion {
    struct eng_op *op;
    uint32_t nic;
    uint32_t first;   /* first index in the operation's index space */
    uint32_t count;   /* work requests to post; lowered to `posted` on error/timeout */
    uint32_t posted;
    uint32_t done;
    bool queued;      /* on the NIC's active list */
    struct eng_portion *next_active;
} eng_portion;

typedef struct eng_target {
    te_mr_desc dst;
    uint64_t len, src_offset, dst_offset;
} eng_target;

typedef struct eng_op {
    mpsc_node qnode;
    uint8_t kind;
    bool has_imm;
    bool finished;      /* user completion delivered */
    bool started;       /* worker has planned it */
    uint32_t imm;
    int status;         /* first error */
    char msg[192];
    te_completion comp;
    uint64_t deadline_ns;
    uint32_t group;
    te_mr *src;         /* reference held while in flight */
    uint32_t n_portions;
    eng_portion portion[TE_MAX_NICS];
    tp_peer peer[TE_MAX_NICS];  /* resolved destination per NIC (single-destination ops) */
    struct eng_op *prev, *next;  /* worker's in-flight list */
    union {
        struct { uint64_t src_off, dst_off, len, shard; uint32_t shards; te_route route; } w;
        struct { te_pages *sp, *dp; uint64_t len, s_stride, s_off, d_stride, d_off; uint32_t chunk; } p;
        struct { eng_target *t; size_t n; te_peer_group *pg; te_scatter_kind kind; uint32_t nic;
                 tp_peer *peers; /* n x N resolved, worker-filled */ } s;
        struct { te_mr_desc *dsts; size_t n; te_route route; tp_peer *peers; } b;
        struct { void *buf; size_t len; te_addr to; tp_mr mr; bool mr_held; } send;
    } u;
    te_mr_desc dst; /* OP_WRITE, OP_PAGED, OP_IMM */
} eng_op;

typedef struct eng_peer_cache_entry {
    te_addr addr;
    tp_peer peer;
    bool down;      /* the transport reported the peer gone or its connection broken */
    bool final;     /* ... for good (shm: its process is gone): operations fail at once */
    bool no_probe;  /* its connection broke with an error: not probed until it works again */
    struct eng_peer_cache_entry *next;
} eng_peer_cache_entry;

#define PEER_CACHE_BUCKETS 256

/* Statistics have one writer (the worker): a relaxed load+store avoids a locked RMW. */
#define STAT_ADD(field, v)                                                                     \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (v), \
                          memory_order_relaxed)
/* Same, publishing what the worker did before it (read with acquire). */
#define STAT_ADD_RELEASE(field, v)                                                             \
    atomic_store_explicit(&(field), atomic_load_explicit(&(field), memory_order_relaxed) + (v), \
                          memory_order_release)

typedef struct eng_nic {
    const tp_ops *ops;
    tp_nic *tp;
    tp_nic_info info;
    te_addr addr;
    eng_portion *active_head, *active_tail; /* portions with work requests left to post */
    eng_peer_cache_entry *peers[PEER_CACHE_BUCKETS];
    eng_peer_cache_entry *last_peer;        /* the last one resolved: most ops repeat it */
    uint64_t outstanding;                  /* posted, not completed */
    uint32_t peers_down;                   /* cache entries down but not final */
    bool failed;                           /* poll reported the NIC unusable */
    _Atomic uint64_t st_write_ops, st_write_bytes, st_send_ops, st_send_bytes;
    _Atomic uint64_t st_recv_ops, st_recv_bytes, st_imms, st_errors;
} eng_nic;

typedef struct eng_recv_slot {
    struct te_recv_pool *pool;
    uint8_t *buf;
    bool posted;
} eng_recv_slot;

struct te_recv_pool {
    te_engine *e;
    size_t msg_size;
    uint32_t count;
    te_recv_fn on_recv;
    te_done_fn on_error;
    void *arg;
    uint8_t *mem;
    tp_mr mr;
    eng_recv_slot *slots;
    _Atomic uint32_t posted;   /* slots currently posted */
    _Atomic bool closing;
    struct te_recv_pool *next; /* engine list */
};

enum ctl_kind { CTL_POOL_POST = 1, CTL_POOL_CANCEL, CTL_PEER_GROUP };

typedef struct eng_ctl {
    mpsc_node qnode;
    int kind;
    void *obj;
    _Atomic int done;     /* set by the worker; 1 + result code stored in `result` */
    int result;
    tn_notify *wake;      /* notified when done */
} eng_ctl;

typedef struct eng_group {
    te_engine *e;
    /* Held by whoever runs a progress step; every field below marked (P) is owned by it. */
    pthread_mutex_t plock;
    _Atomic uint64_t drive_seq; /* steps run by driving callers: the worker backs off */
    _Atomic uint64_t drive_seen; /* the last drive_seq the worker acted on (written by it) */
    _Atomic bool resume;        /* a waiter stopped driving: the worker takes over now */
    _Atomic uint32_t queued;    /* operations submitted, completion not yet delivered */
    tn_notify backoff;          /* a backed-off worker sleeps here (woken at stop) */
    _Atomic(struct eng_op *) op_cache; /* freed operations for reuse (op_cache.c) */
    _Atomic uint32_t op_cache_n;
    uint32_t turns;             /* (P) steps run, for reading the clock every 32nd */
    uint32_t submit_steps;      /* (P) submitters' steps, for polling every SUBMIT_POLL_EVERY-th */
    /* (P) Completions delivered during the current step, applied once at its end
     * (worker.c, bump_flush): consecutive completions on one counter become one bump, and
     * `queued` drops once per step, so a step that completes k operations does a few
     * atomic operations instead of about 5k. */
    bool in_step;
    struct te_counter *bump_c;
    uint32_t bump_n, bump_err, unqueued;
    struct te_mr *unref_mr;     /* source region of the gathered completions, and how */
    uint32_t unref_n;           /* many of its in-flight references they drop */
    uint32_t idx;
    int cuda_device;
    int worker_cpu;
    uint32_t n_nics;
    eng_nic nic[TE_MAX_NICS];
    pthread_t thread;
    bool thread_started;
    mpsc_queue subq;
    mpsc_queue ctlq;
    tn_notify wake;      /* submitters wake a sleeping worker */
    int event_fd;        /* ... or one blocked in poll() on the NICs' wait objects */
    tn_notify ctl_done;  /* the worker wakes control callers */
    _Atomic bool stop;
    uint32_t rr;         /* (P) round-robin NIC cursor */
    eng_op *inflight_head; /* (P) */
    uint64_t next_timeout_check; /* (P) */
    uint64_t next_stall_check;   /* (P) */
} eng_group;

typedef struct eng_cb_event eng_cb_event;

enum engine_state { ENGINE_RUNNING = 0, ENGINE_STOPPING, ENGINE_STOPPED };

struct te_engine {
    const tp_backend *backend; /* serves every NIC of the engine */
    char provider[64];
    uint32_t op_timeout_ms;
    uint32_t max_msg_size;
    bool busy_poll;
    bool wait_drive;          /* waiting threads drive progress (TENDRIL_WAIT_DRIVE=0: no) */
    uint32_t max_queued_ops;  /* per group; -EAGAIN past it */
    uint32_t n_groups;
    eng_group *groups[TE_MAX_GROUPS];
    _Atomic int state;
    _Atomic int submitters;   /* threads inside a submission call */

    /* callback thread */
    pthread_t cb_thread;
    bool cb_started;
    mpsc_queue cbq;
    tn_notify cb_wake;
    _Atomic bool cb_stop;
    _Atomic uint64_t cb_seq_done; /* events fully handled, for fences */
    _Atomic uint64_t cb_seq_sent;
    tn_notify cb_fence;

    imm_table imm;

    struct watcher_pool *watchers; /* watcher.c: created at the first te_watcher_alloc */

    pthread_mutex_t lists_lock; /* mrs, pools, peer groups */
    struct te_mr *mrs;
    struct te_recv_pool *pools;
    struct te_peer_group *peer_groups;

    struct te_peer_states *peer_states; /* peers.c: what is known of each peer NIC */
};

struct te_mr {
    te_engine *e;
    uint32_t group;
    void *ptr;
    size_t len;
    int device;
    unsigned flags;
    uint32_t n_nics;
    tp_mr nic[TE_MAX_NICS];
    _Atomic int64_t inflight;
    bool dead;             /* engine stopped: transport MRs already closed */
    struct te_mr *prev, *next;
};

struct te_pages {
    _Atomic uint32_t refs;
    size_t n;
    uint32_t idx[];
};

struct te_peer_group {
    te_engine *e;
    uint32_t group;
    size_t n;
    te_mr_desc *peers;
    tp_peer *resolved;  /* n x N, filled by the worker */
    struct te_peer_group *next;
};

/* ---- engine.c ---- */
int engine_enter(te_engine *e);   /* 0 or -ESHUTDOWN; pairs with engine_leave */
void engine_leave(te_engine *e);
bool engine_on_callback_thread(const te_engine *e);
eng_group *engine_group_for_device(te_engine *e, int device, int *err);
/* The GPU that the engine's GPU-visible memory (watcher words, imm flags) belongs to: the
 * first GPU group's device, else device 0 when CUDA has devices, else -1 (plain host
 * memory). */
int engine_gpu_device(const te_engine *e);

/* ---- worker.c ---- */
int worker_start(eng_group *g);
void worker_join(eng_group *g);
void worker_submit(eng_group *g, eng_op *op);
void worker_wake(eng_group *g);
/* Runs one progress step on g if its lock is free: -EBUSY if another thread holds it,
 * else PROGRESS_MOVED if anything moved, | PROGRESS_PENDING if operations are still
 * queued or in flight after it. STEP_SUBMIT and STEP_WAIT: the caller submits or waits
 * for a completion and will step again soon (the worker then backs off while such steps
 * keep coming); a submitter's step posts but polls only now and then (worker.c).
 * Caller is inside engine_enter. */
enum { PROGRESS_MOVED = 1, PROGRESS_PENDING = 2 };
enum step_kind { STEP_CONTROL, STEP_SUBMIT, STEP_WAIT };
int group_try_progress(eng_group *g, enum step_kind kind);
/* A waiter that drove g and now goes to sleep: the backed-off worker resumes at once. */
void group_resume_worker(eng_group *g);
/* For waits: one step on every group of e (or, `last`, resume their workers). 1 if
 * anything moved, 0 if not, -1 if the engine is stopping or waits do not drive
 * (tn_wait_spec.drive's convention). */
int engine_drive(te_engine *e, bool last);
int worker_control(eng_group *g, int kind, void *obj, int timeout_ms);
void op_free(eng_group *g, eng_op *op); /* releases what it holds; recycles it (op_cache.c) */
void worker_free_remaining(eng_group *g);

/* ---- op_cache.c: recycled operation objects ---- */
eng_op *op_cache_get(eng_group *g);          /* any thread; uninitialised, or NULL */
void op_cache_put(eng_group *g, eng_op *op); /* under g's progress lock */
void op_cache_drain(eng_group *g);          /* at stop, the worker joined */

/* ---- pages.c ---- */
void pages_retain(te_pages *p);

/* ---- counter.c ---- */
void counter_bump(te_counter *c, bool failed);
void counter_bump_n(te_counter *c, uint32_t n, uint32_t failed); /* n completions, `failed` of them errors */
/* At submission, before the operation is queued: lets waiters on c drive g's progress. */
void counter_note_submit(te_counter *c, eng_group *g);

/* ---- domain_group.c: the sharding rule (sharding.c) applied to a live group ---- */
int dg_plan(eng_group *g, eng_op *op, char *msg, size_t msg_cap);
void dg_build(eng_group *g, eng_portion *p, uint32_t j, tp_write *w);
int dg_resolve(eng_group *g, uint32_t nic, const te_addr *addr, tp_peer *out);

/* ---- callbacks.c ---- */
int callbacks_start(te_engine *e);
void callbacks_stop(te_engine *e);
void cb_post_done(te_engine *e, te_done_fn fn, void *arg, int status, const char *msg);
void cb_post_imm(te_engine *e, uint32_t imm);
void cb_post_reached(te_engine *e, uint32_t imm, uint64_t gen);
void cb_post_peer(te_engine *e, const te_addr *addr, int state);
void cb_post_recv(te_engine *e, te_recv_pool *p, const void *data, size_t len, int status,
                  const char *msg);
/* Waits until every event queued before this call has been handled. */
int cb_fence(te_engine *e, int timeout_ms);

/* ---- mr.c ---- */
void mr_close_all(te_engine *e);  /* at stop: close transport MRs */
void mr_free_all(te_engine *e);   /* at destroy */

/* ---- watcher.c ---- */
void watchers_stop(te_engine *e);  /* at stop: joins the watcher thread */
void watchers_free(te_engine *e);  /* at destroy: frees watchers and their memory */

/* ---- recv_pool.c ---- */
void recv_pool_on_event(eng_group *g, eng_nic *n, const tp_event *ev);
void recv_pool_worker_post(eng_group *g, te_recv_pool *p);
void recv_pool_worker_cancel(eng_group *g, te_recv_pool *p);
void recv_pool_free_all(te_engine *e);
void recv_pool_close_mrs(te_engine *e);

/* ---- peers.c: peer state (te_peer_state) ---- */
int peers_init(te_engine *e);
void peers_free(te_engine *e);
/* Records a state change of the peer NIC at addr; a change reaches the callback. */
void peers_note(te_engine *e, const te_addr *addr, int state);
/* Callback thread: runs the user's peer callback. */
void peers_deliver(te_engine *e, const te_addr *addr, int state);
/* True for a status that says the peer itself is gone (not merely one failed request). */
bool peers_status_is_gone(int status);

/* ---- worker.c ---- */
/* The transport found the peer gone: mark it, fail every operation to it at once. */
void worker_peer_gone(eng_group *g, uint32_t nic, tp_peer peer, int status, const char *why,
                      bool final);

/* ---- peer_group.c ---- */
int peer_group_worker_resolve(eng_group *g, te_peer_group *pg);
void peer_group_free_all(te_engine *e);

#endif
