/*
 * Host proxy of the MoE all-to-all across nodes (docs/a2a-internode.md, "Signals",
 * "Errors", "Proxy"). Host-only C on the engine's public API (tendril/te.h): no CUDA.
 *
 * Send side: one doorbell (te_watcher word) per phase. Whoever plays the sending kernel
 * stores the phase's lengths into tx[phase][q] for every RDMA peer q, makes them visible
 * (GPU: fence.sys; host: a release store of the doorbell orders them), then stores the
 * epoch into the doorbell. The engine's watcher thread runs the proxy, which checks the
 * epoch (exactly the previous one + 1), checks every length, and posts the phase's writes
 * from `stage` slot q to peer q's rblock slot `rank`, each with the immediate
 * a2a_px_imm(imm_base, phase, rank), sharded over every NIC of the group.
 *
 * Receive side: one te_imm_flag per (phase, RDMA source s) on the immediate
 * a2a_px_imm(imm_base, phase, s), whose epoch rises by one per complete phase from s
 * (a2a_px_expected_imms immediates). Kernels poll its device pointer; host users call
 * a2a_px_flag_wait.
 *
 * Units of tx[phase][q] (int32, host memory the GPU may write):
 *   A2A_PX_DSP: rows n sent to q, 0..Tmax. Writes: cnt slot ((L+1)*4 bytes), meta
 *               [0, n) (n*(K+1)*4 bytes), rows [0, n) (n*row_bytes bytes).
 *   A2A_PX_WGT: weights (floats, T*K), 0..Tmax*K. Write: wgt slot [0, tx) (tx*4 bytes).
 *   A2A_PX_CMB: compact part rows n (rows received from q), 0..Tmax. Write: part slot
 *               [0, n) packed at layout.part_row_bytes (n*part_row_bytes bytes: H*2
 *               when partials travel as bf16/fp16, H*4 as fp32).
 * Every write is posted even when its length is 0 (the receiver's count is fixed).
 *
 * Ranks are slice ranks (docs/a2a-internode.md, "Ranks"): rank, world, rdma_mask and the
 * index of peer_rblock are in slice space; the caller maps them to engines.
 *
 * Errors: anything that breaks the exchange (a write that fails, an RDMA peer the engine
 * reports down, a doorbell that skips an epoch, a length out of range, the engine staying
 * full) fails the proxy: the first error is kept (a2a_px_error), reported through
 * on_error, and from then on doorbells post nothing and a2a_px_flag_wait returns that
 * error for flags not yet reached. Nothing a caller or peer does makes the proxy abort
 * or write outside the slots.
 */
#ifndef TENDRIL_A2A_PROXY_H
#define TENDRIL_A2A_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tendril/a2a.h"
#include "tendril/te.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Proxied phases: the doorbell and flag index. */
enum { A2A_PX_DSP = 0, A2A_PX_WGT = 1, A2A_PX_CMB = 2, A2A_PX_N = 3 };
/* Slice ranks the proxy serves (tx row length, immediate stride). */
#define A2A_PX_MAX_RANKS 64
/* Default bound of a2a_px_config.timeout_ms. */
#define A2A_PX_DEFAULT_TIMEOUT_MS 10000

/* Immediate of phase `phase` from slice rank `src`. */
static inline uint32_t a2a_px_imm(uint32_t imm_base, int phase, int src)
{
    return imm_base + (uint32_t)phase * A2A_PX_MAX_RANKS + (uint32_t)src;
}
/* te_write requests per (phase, peer): DSP 3, WGT 1, CMB 1. */
static inline uint32_t a2a_px_writes(int phase) { return phase == A2A_PX_DSP ? 3u : 1u; }
/* Immediates a receiver counts per (phase, source) and iteration: every sharded write
 * over `nics` NICs delivers `nics` immediates, zero-length shards included (te.h). */
static inline uint64_t a2a_px_expected_imms(int phase, uint32_t nics)
{
    return (uint64_t)a2a_px_writes(phase) * nics;
}

/* Offsets of the regions in stage and rblock (the same in both, and on every rank; the
 * shared block's, src/a2a/a2a_kernels.h). Slot strides (bytes) follow from the shape:
 *   cnt (L+1)*4, meta Tmax*(K+1)*4, rows Tmax*row_bytes, wgt Tmax*K*4, part Tmax*H*4.
 * part_row_bytes: the row stride of the compact part rows inside a part slot, which is
 * what the CMB write carries per row (n*part_row_bytes bytes from the slot's start):
 * H * the partials' element size (2 for bf16/fp16, 4 for fp32), so that 2-byte
 * partials do not travel at the fp32 stride. 0 means H*4; at most H*4 (the slot stride
 * stays Tmax*H*4 whatever it is). */
typedef struct a2a_px_layout {
    uint64_t off_cnt, off_meta, off_rows, off_wgt, off_part;
    uint32_t L, K, H, Tmax, row_bytes;
    uint32_t part_row_bytes;
} a2a_px_layout;

/* Bytes a region must have to hold `world` slots of every region. */
uint64_t a2a_px_layout_bytes(const a2a_px_layout *l, int world);

/* Called with every error the proxy reports: err a negative errno, msg names the phase
 * and the peer's slice rank. Runs on the engine's watcher thread (doorbell errors) or
 * callback thread (write completions, peer down); never twice at once for one proxy;
 * not after a2a_px_destroy has begun. It must not block for long and must not call
 * a2a_px_destroy or te_engine_stop. At most A2A_PX_MAX_REPORTS calls per proxy. */
typedef void (*a2a_px_error_fn)(void *arg, int err, const char *msg);
#define A2A_PX_MAX_REPORTS 16

typedef struct a2a_px_config {
    te_engine *engine;
    int rank, world;              /* slice rank and world, world 1..A2A_PX_MAX_RANKS */
    uint64_t rdma_mask;           /* bit q: slice peer q is reached over RDMA (not self) */
    te_mr *stage;                 /* the local source region (slot q: what goes to q) */
    /* [world]: every slice rank's rblock descriptor. Read: the RDMA peers' (where the
     * writes go) and the own one (its NIC count is what each source shards over, and
     * so the expected immediates); other entries are ignored. Copied at create. */
    const te_mr_desc *peer_rblock;
    /* optional [world]: peers' main addresses, matched on peer-down events in addition
     * to every NIC address in the peer's rblock descriptor. Copied at create. */
    const te_addr *peer_addr;
    a2a_px_layout layout;
    uint32_t imm_base;            /* immediates imm_base .. imm_base + 3*64 - 1 */
    /* How long a doorbell may wait for the engine to accept writes (-EAGAIN: the group
     * has te_config.max_queued_ops operations pending) before that fails the proxy.
     * 0: A2A_PX_DEFAULT_TIMEOUT_MS. */
    int timeout_ms;
    int32_t *tx;                  /* host address of [A2A_PX_N][A2A_PX_MAX_RANKS] */
    a2a_px_error_fn on_error;     /* optional */
    void *err_arg;
    /* The engine has one peer callback (te_peer_set_callback). By default the proxy
     * installs its own, shared by every proxy of the engine and removed with the last
     * one: it replaces an application's callback. An application that needs its own sets
     * this and calls a2a_px_peer_event from it. */
    bool app_forwards_peer_events;
} a2a_px_config;

typedef struct a2a_px a2a_px;

/* Validates cfg (-EINVAL with the reason in te_last_error(): NULL pointers, world or
 * rank out of range, a mask bit for self or beyond world, part_row_bytes above H*4, a
 * region that does not fit stage or a peer's rblock, overlapping regions, NIC counts
 * that differ, immediates past 2^32), creates the arrival flags and the doorbells. Create the proxy on every
 * rank before any rank rings a doorbell: immediates that arrive before the flags exist
 * are not counted (the caller's all-gather after create is that barrier). */
int a2a_px_create(const a2a_px_config *cfg, a2a_px **out);

/* Device address of phase's doorbell (te_watcher_device_ptr; in the no-CUDA fallback
 * the host address), and its host address for CPU-side drivers and tests (write it with
 * a 64-bit release store). 0 / NULL for a bad phase. */
uint64_t a2a_px_doorbell_device_ptr(const a2a_px *px, int phase);
volatile uint64_t *a2a_px_doorbell_host_ptr(const a2a_px *px, int phase);

/* Device address of the epoch word of (phase, src) (te_imm_flag_device_ptr); 0 when
 * src is not an RDMA peer or phase is out of range. */
uint64_t a2a_px_flag_device_ptr(const a2a_px *px, int phase, int src);
/* Its current epoch (0 as above). */
uint64_t a2a_px_flag_value(const a2a_px *px, int phase, int src);
/* Host-side wait until epoch(phase, src) >= epoch. 0; -ETIMEDOUT; the proxy's error
 * (a2a_px_error) if it failed before the epoch came; -ESHUTDOWN (engine stopped);
 * -EINVAL (src not an RDMA peer, bad phase). timeout_ms < 0: no limit. Thread-safe. */
int a2a_px_flag_wait(a2a_px *px, int phase, int src, uint64_t epoch, int timeout_ms);

/* The first error: 0 if none, else its code, with its message copied to msg (if cap >
 * 0). Thread-safe. */
int a2a_px_error(const a2a_px *px, char *msg, size_t cap);

typedef struct a2a_px_stats {
    uint64_t doorbells[A2A_PX_N]; /* doorbells that posted their writes */
    uint64_t writes[A2A_PX_N];    /* te_write requests accepted */
    uint64_t bytes[A2A_PX_N];     /* their payload bytes */
    uint64_t write_errors;        /* completions with an error */
    uint64_t eagain_retries;      /* te_write calls answered -EAGAIN and retried */
    uint64_t ignored_doorbells;   /* rung after the proxy failed */
} a2a_px_stats;
/* A snapshot of the counters (exact once the writes have completed). Thread-safe. */
int a2a_px_stats_get(const a2a_px *px, a2a_px_stats *out);

/* Host-side latency of the doorbells, per phase (the host part of issue 14's per-decode
 * breakdown; the kernel-side parts and the receive side are not measured here: an imm
 * flag counts its immediates inside the engine, with no per-immediate hook).
 * Times are CLOCK_MONOTONIC (tn_now_ns), durations in nanoseconds:
 *   seen_first  the watcher callback entered for the doorbell -> its first te_write was
 *               accepted (epoch and length checks, the first te_write call with any
 *               -EAGAIN retries);
 *   first_last  first -> last te_write accepted (the other writes' te_write calls, their
 *               retries included; 0 when the doorbell posts one write);
 *   last_done   last te_write accepted -> the phase's completed-write count reached the
 *               total posted through this doorbell (its writes' local completions, and
 *               any earlier doorbell's still pending: they complete in order in practice;
 *               0 when the last completion ran before te_write returned);
 *   seen_done   watcher callback -> that completion (the sum of the three, per sample).
 * Each is over the same doorbells. A doorbell is timed once it posted its writes and
 * they all completed; doorbells that post nothing (an error, no RDMA peer) are not.
 * p50/p99 are nearest-rank over the last min(count, A2A_PX_TIMING_WINDOW) samples, max
 * over the same window. Recording is lock-free and allocation-free: three clock reads
 * on the watcher thread and one on the completion of a doorbell's last write. */
#define A2A_PX_TIMING_WINDOW 1024
/* The public types (tendril/a2a.h), so that a context hands the proxy's figures out as
 * they are: count = doorbells timed since create or a2a_px_timing_reset, window = samples
 * the percentiles are over, dropped = not timed (64 earlier doorbells of the phase still
 * incomplete); spans in ns. */
typedef a2a_span_ns a2a_px_span;
typedef a2a_proxy_timing a2a_px_timing;
/* A snapshot for phase (exact once the writes have completed). 0, or -EINVAL (NULL,
 * bad phase). Thread-safe. */
int a2a_px_timing_get(const a2a_px *px, int phase, a2a_px_timing *out);
/* Starts every phase's count and window afresh (e.g. after warm-up). Samples recorded
 * while it runs may land on either side. 0 or -EINVAL. Thread-safe. */
int a2a_px_timing_reset(a2a_px *px);

/* The absolute host times (CLOCK_MONOTONIC ns) of the doorbell of `epoch` in phase:
 * out = {watcher saw it, first te_write accepted, last accepted, writes locally
 * complete}. Kept for the last 16 timed doorbells of each phase. 0; -ENOENT when that
 * doorbell is not (or no longer) recorded; -EINVAL. Thread-safe. */
int a2a_px_trace_get(const a2a_px *px, int phase, uint64_t epoch, uint64_t out[4]);

/* For applications that own the engine's peer callback (app_forwards_peer_events):
 * forwards one peer state change to every proxy of engine e. Any thread. */
void a2a_px_peer_event(te_engine *e, const te_addr *addr, int state);

/* Stops the doorbells, waits until every write posted has completed (the engine's
 * operation timeout bounds that; after A2A_PX_DRAIN_MS the proxy's memory is left
 * allocated, and logged, rather than freed under a pending completion), removes the
 * flags. NULL is ignored. Call before te_engine_destroy (the flags and watchers belong
 * to the engine); after te_engine_stop is fine. Not from an engine callback. */
void a2a_px_destroy(a2a_px *px);
#define A2A_PX_DRAIN_MS 120000

#ifdef __cplusplus
}
#endif
#endif
