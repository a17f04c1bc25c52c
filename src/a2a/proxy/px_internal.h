/* The proxy's state, shared by its files: a2a_proxy.c (create, accessors, destroy),
 * px_post.c (doorbell -> writes, completions), px_report.c (errors), px_peers.c (peer
 * down events). */
#ifndef TENDRIL_A2A_PX_INTERNAL_H
#define TENDRIL_A2A_PX_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "a2a_proxy.h"

#define PX_MSG_MAX 512

/* Completion argument of one write: which proxy, phase, peer and part (DSP has 3). */
typedef struct px_wctx {
    struct a2a_px *px;
    uint8_t phase, part;
    uint16_t peer;
} px_wctx;

/* Timing of one doorbell in flight (px_timing.c). t_seen, t_first, t_last: written by
 * the watcher thread; t_done: by the completion that finishes the doorbell's writes.
 * ready counts the two sides (the second records the sample); SLOT_FREE once recorded. */
typedef struct px_tm_slot {
    _Atomic uint64_t seq; /* doorbell index k this slot times */
    _Atomic unsigned ready;
    uint64_t t_seen, t_first, t_last, t_done;
} px_tm_slot;

/* Doorbells of one phase whose completions may still be pending and be timed. */
#define PX_TM_SLOTS 64
enum { PX_TM_N = 4 }; /* seen->first, first->last, last->done, seen->done */

/* The absolute host times of the last PX_TRACE_DEPTH timed doorbells of a phase, by
 * epoch (a2a_px_trace_get): the host half of a per-iteration trace. tag is the epoch
 * the times belong to, stored last (release); 0 while never written. */
#define PX_TRACE_DEPTH 16
typedef struct px_trace_rec {
    _Atomic uint64_t tag;
    _Atomic uint64_t t[4]; /* seen, first, last, done */
} px_trace_rec;

typedef struct px_phase_timing {
    uint64_t per_bell;         /* writes per doorbell: RDMA peers * a2a_px_writes */
    uint64_t bells;            /* doorbells that began posting (watcher thread only) */
    _Atomic uint64_t completed; /* write completions of this phase */
    _Atomic uint64_t next, recorded, base, dropped;
    px_tm_slot slot[PX_TM_SLOTS];
    _Atomic uint64_t win[PX_TM_N][A2A_PX_TIMING_WINDOW]; /* durations, ns */
    px_trace_rec trace[PX_TRACE_DEPTH];
} px_phase_timing;

/* Watcher argument of one phase's doorbell. */
typedef struct px_bell {
    struct a2a_px *px;
    int phase;
    te_watcher *w;
    uint64_t epoch; /* last epoch acted on (watcher thread only) */
} px_bell;

struct a2a_px {
    te_engine *e;
    int rank, world;
    uint64_t rdma_mask;
    te_mr *stage;
    a2a_px_layout lay;
    uint64_t slot[5]; /* slot strides: cnt, meta, rows, wgt, part */
    uint32_t imm_base;
    uint32_t nics;    /* shards per write = NICs of the rblock group */
    int timeout_ms;
    const int32_t *tx;
    a2a_px_error_fn on_error;
    void *err_arg;
    te_mr_desc rblock[A2A_PX_MAX_RANKS];
    te_addr addr[A2A_PX_MAX_RANKS];
    bool have_addr;

    px_bell bell[A2A_PX_N];
    te_imm_flag *flag[A2A_PX_N][A2A_PX_MAX_RANKS];
    px_wctx wctx[A2A_PX_N][A2A_PX_MAX_RANKS][3];

    _Atomic bool closing;       /* destroy has begun: report nothing, post nothing */
    _Atomic bool err_claimed;   /* the first error has taken err_msg */
    _Atomic int err;            /* first error (sticky), 0 if none; set after err_msg */
    char err_msg[PX_MSG_MAX];
    pthread_mutex_t err_lock;   /* reports: serialises on_error */
    int reports;

    _Atomic uint64_t inflight;  /* writes accepted and not completed */
    struct {
        _Atomic uint64_t doorbells, writes, bytes;
    } st[A2A_PX_N];
    _Atomic uint64_t write_errors, eagain_retries, ignored;
    px_phase_timing tm[A2A_PX_N];

    /* px_peers.c registry (its lock) */
    struct a2a_px *next;
    bool wants_peer_cb, owns_peer_cb;
    int refs;
};

extern const char *const px_phase_name[A2A_PX_N];

/* Records err as the proxy's error if it is the first, and reports msg through on_error
 * (unless destroy has begun or the report budget is spent). */
void px_fail(struct a2a_px *px, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* te_watch_fn of a phase's doorbell (arg: px_bell). */
bool px_on_doorbell(void *arg, uint64_t old_value, uint64_t new_value);

/* Timing (px_timing.c). init: at create. begin: the watcher saw a doorbell that will
 * post its writes (NULL: not timed); posted: its last write was accepted; completed:
 * one write of the phase completed (any thread). */
void px_timing_init(struct a2a_px *px);
px_tm_slot *px_timing_begin(struct a2a_px *px, int phase, uint64_t t_seen);
void px_timing_posted(struct a2a_px *px, int phase, px_tm_slot *s);
void px_timing_completed(struct a2a_px *px, int phase);

/* Peer-down registry: add installs the engine's peer callback when needed; remove waits
 * until no peer event is being delivered to px. */
int px_peers_add(struct a2a_px *px, bool wants_cb);
void px_peers_remove(struct a2a_px *px);

#endif
