/*
 * Tendril MoE all-to-all (a2a): expert-parallel dispatch and combine between GPUs, over
 * NVLink inside a node and over RDMA (the TransferEngine, include/tendril/te.h) between
 * nodes.
 *
 * Each rank owns one context. A context allocates one block of GPU memory with
 * cuMemCreate (POSIX file-descriptor handle type), hands the descriptor to every peer of
 * its node over a Unix socket (SCM_RIGHTS) and maps every such peer's block into its own
 * address space. Counts, flags and data between the GPUs of one node then travel over
 * NVLink as plain loads/stores from the kernels. Peers on other nodes are reached through
 * a staging block and one-sided RDMA writes that a host proxy posts when a kernel rings
 * its doorbell (docs/a2a-internode.md).
 *
 * Ranks are node-major: rank r is on node r / ranks_per_node. With dp_size D > 1 (TP
 * replicas) the ranks form D independent all-to-alls ("slices" {g*D + d}): a token of
 * rank r whose expert is e goes to rank (e / L) * D + r % D.
 *
 * An iteration is four phases, run by every rank exactly once and in this order:
 *   dispatch send -> dispatch recv -> combine send -> combine recv
 * Send and recv halves may be issued separately (other work in between) or together.
 * Everything is stream-ordered and CUDA-graph capturable: per-iteration state (epoch,
 * counters) lives in device memory and the variable batch size may be given as a
 * device-side int32 (`bound_m`).
 *
 * Routing: experts are split in contiguous blocks over the Ws = world_size / dp_size
 * ranks of a slice: slice rank s = rank / dp_size owns experts [s*L, min((s+1)*L, E))
 * with L = ceil(E / Ws).
 *
 * Dispatch output (per rank), "expert-major padded":
 *   out_expert_num_tokens[l] = rows received for local expert l (unpadded)
 *   rows of local expert l occupy [off_l, off_l + cnt_l), off_l = sum_{k<l} roundup(cnt_k, pad)
 *   the order of rows inside one expert is unspecified; padding rows are not written.
 * Combine: out[t] = (accumulate ? out[t] : 0) + sum_k w[t,k] * y(t,k), with fp32
 *   accumulation. The expert rank forms the fp32 partial sum of its own experts' rows for
 *   a token (k ascending) and the token's rank adds the partials of all ranks (rank
 *   ascending): the result is deterministic. Partials travel as out_dtype, or as fp32
 *   with a2a_config.partial_f32.
 *
 * Conventions (as the rest of Tendril): every fallible call returns 0 or a negative errno;
 * a2a_last_error() describes the last failure of the calling thread (the same per-thread
 * message as te_last_error()). A spin-wait on a peer inside a kernel is bounded by a
 * deadline (a2a_config.timeout_ms); when it expires the kernel records the error, every
 * later kernel of the context returns at once, and the next host call (or
 * a2a_poll_error) returns -ETIMEDOUT. An RDMA failure the proxy sees (a write that
 * fails, a peer the engine reports gone) does the same with its own error.
 *
 * Thread-safety: a context is used by one thread at a time (calls on one context must
 * be serialized by the caller); distinct contexts are independent.
 */
#ifndef TENDRIL_A2A_H
#define TENDRIL_A2A_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define A2A_MAX_RANKS 64 /* ranks of one slice (world_size / dp_size) */
#define A2A_MAX_TOPK 8   /* experts per token */

typedef struct a2a_ctx a2a_ctx;
struct te_engine;
struct te_addr;

/* Where the blocks that RDMA writes read from and land in live (a2a_config.rdma_buffers). */
typedef enum a2a_rdma_buffers {
    A2A_RDMA_AUTO = 0, /* GPU memory if the engine can register it, else pinned host memory */
    A2A_RDMA_GPU = 1,  /* GPU memory or fail (a2a_connect: -EOPNOTSUPP with the reason) */
    A2A_RDMA_HOST = 2, /* pinned host memory mapped for the GPU */
} a2a_rdma_buffers;

/* Out-of-band all-gather the caller already has (MPI, torch.distributed, a file): every
 * rank passes `len` bytes in `in`; on return `out` holds every rank's `len` bytes in rank
 * order (world_size * len bytes). Called by a2a_connect on the calling thread, the same
 * number of times on every rank; return 0, or a negative errno to fail the connect. */
typedef int (*a2a_allgather_fn)(void *ctx, const void *in, void *out, size_t len);

/* Element type of the combine (expert output and combined output). */
typedef enum a2a_dtype {
    A2A_DTYPE_BF16 = 1,
    A2A_DTYPE_F16 = 2,
    A2A_DTYPE_F32 = 3,
} a2a_dtype;

/* Growth: a2a_create accepts struct_size from the first layout (up to partial_f32,
 * A2A_CONFIG_SIZE_V1) to sizeof(a2a_config); fields beyond struct_size read as zero, and
 * zero is always the previous behaviour. Larger sizes (a newer header) are rejected. */
typedef struct a2a_config {
    size_t struct_size;          /* sizeof(a2a_config): set it, for ABI growth */
    int rank;                    /* this rank, 0 <= rank < world_size */
    int world_size;              /* ranks in all (EP size x dp_size): world_size / dp_size
                                    in 1..A2A_MAX_RANKS */
    int device;                  /* CUDA device ordinal of this rank */
    uint32_t max_num_tokens;     /* tokens per rank per call (sizes the buffers) */
    uint32_t num_experts;        /* global expert count E */
    uint32_t experts_per_token;  /* top-k K, 1..A2A_MAX_TOPK */
    uint32_t expert_padding;     /* each local expert's run is padded to a multiple (>=1) */
    uint32_t hidden_dim;         /* H */
    uint32_t hidden_dim_scale;   /* S fp32 scales per token (0 = none) */
    uint32_t in_elem_size;       /* bytes per dispatched element: 1 (fp8), 2, 4 */
    a2a_dtype out_dtype;         /* combine dtype */
    uint32_t num_sms;            /* blocks per kernel (one per SM); 0 = every SM */
    uint32_t timeout_ms;         /* bound of every in-kernel wait on a peer; 0 = 10000 */
    const char *rendezvous;      /* job-unique name of the socket exchange (<= 80 chars);
                                    NULL with an allgather: rank 0 draws one */
    int partial_f32;             /* combine: expert ranks send their partial sums as fp32
                                    (fp32 end to end) instead of out_dtype (half the bytes
                                    for bf16/f16; one rounding of each rank's partial) */
    /* ---- since issue 14 (across nodes) ---- */
    int ranks_per_node;          /* ranks of one NVLink domain; 0 = world_size (one node).
                                    world_size must be a multiple of it */
    int dp_size;                 /* TP replicas D (0 or 1 = none); world_size must be a
                                    multiple of it */
    struct te_engine *engine;    /* engine for the RDMA peers (the caller's; it must outlive
                                    the context); NULL only when every peer shares the node */
    a2a_rdma_buffers rdma_buffers;
    a2a_allgather_fn allgather;  /* required with RDMA peers; optional otherwise */
    void *allgather_ctx;
    uint32_t imm_base;           /* immediates imm_base .. imm_base + 3 * A2A_MAX_RANKS - 1
                                    of the engine are the context's */
    /* The engine has one peer callback (te_peer_set_callback). 0: the context's proxy
     * installs its own (shared by the engine's contexts, removed with the last one),
     * replacing the caller's. 1: the caller keeps its callback and calls
     * a2a_peer_event from it, so the contexts still learn of peers that go down. */
    int app_forwards_peer_events;
} a2a_config;
#define A2A_CONFIG_SIZE_V1 (offsetof(a2a_config, partial_f32) + sizeof(int))

/* Tensors of one dispatch. Strides are in bytes unless noted. Pointers are device
 * pointers of the context's device. Rows of x and out_x must be 16-byte aligned. */
typedef struct a2a_dispatch_args {
    size_t struct_size;
    uint32_t num_tokens;          /* T (static upper bound of this call) */
    const int32_t *bound_m;       /* optional device int32: actual tokens (<= T) */
    const void *x;                /* [T, H] in_elem_size */
    size_t x_stride;
    const float *x_scale;         /* [T, S] fp32 (NULL when S == 0) */
    size_t x_scale_stride0, x_scale_stride1; /* in elements */
    const int32_t *indices;       /* [T, K] expert ids (int32 or uint32), contiguous */
    int32_t *out_num_tokens;      /* [L] int32 */
    void *out_x;                  /* [capacity, H] */
    size_t out_x_stride;
    float *out_x_scale;           /* [capacity, S] */
    size_t out_scale_stride0, out_scale_stride1; /* in elements */
    uint32_t out_capacity;        /* rows of out_x / out_x_scale */
} a2a_dispatch_args;

typedef struct a2a_combine_args {
    size_t struct_size;
    uint32_t num_tokens;          /* T, as in the matching dispatch */
    const int32_t *bound_m;
    const int32_t *indices;       /* [T, K], as in the matching dispatch */
    const float *weights;         /* [T, K] fp32, contiguous */
    const void *expert_y;         /* [rows, H] out_dtype, same layout as dispatch out_x */
    size_t expert_y_stride;
    uint32_t expert_y_rows;
    void *out;                    /* [T, H] out_dtype */
    size_t out_stride;
    int accumulate;               /* add onto out instead of overwriting */
} a2a_combine_args;

#define A2A_SEND 1u
#define A2A_RECV 2u

/* Text for a negative errno returned by an a2a_ call. Thread-safe. */
const char *a2a_strerror(int err);
/* Message of the last failed a2a_ call of this thread ("" if none). */
const char *a2a_last_error(void);

/* Allocates the shared buffers on cfg->device and exports them. Any thread. */
int a2a_create(const a2a_config *cfg, a2a_ctx **out);
/* Connects to every peer. Every rank calls it. With cfg->allgather, the ranks first
 * exchange (through it) their configuration, node identity, the rendezvous name, engine
 * addresses and RDMA buffer descriptors (-EPROTO naming the rank that disagrees). Then
 * the ranks of one node exchange buffers over Unix sockets named after the rendezvous
 * and map each other's; RDMA buffers are registered and the proxy started. With an
 * allgather, a last all-gather makes every rank learn whether all connected (a peer's
 * failure gives -ECONNABORTED naming it). -ETIMEDOUT if a node peer does not show up
 * within timeout_ms. */
int a2a_connect(a2a_ctx *ctx, int timeout_ms);
/* Frees everything. Peers must have finished using this rank (a barrier first). */
void a2a_destroy(a2a_ctx *ctx);

/* Rows a rank may receive in the worst case (capacity of out_x / expert_y). */
uint32_t a2a_max_recv_tokens(const a2a_ctx *ctx);
/* Local experts of this rank, and the first global expert id it owns. */
uint32_t a2a_num_local_experts(const a2a_ctx *ctx);
uint32_t a2a_first_expert(const a2a_ctx *ctx);
/* Bytes of GPU memory the context allocated (shared + private + GPU staging). */
size_t a2a_memory_bytes(const a2a_ctx *ctx);
/* Where the RDMA buffers live: "gpu", "host", or "none" (no RDMA peer, or not connected
 * yet). Never NULL. */
const char *a2a_rdma_buffer_kind(const a2a_ctx *ctx);
/* Peers of this rank's slice reached over RDMA (0 when every peer shares the node). */
int a2a_num_rdma_peers(const a2a_ctx *ctx);

/* Host side of this rank's RDMA proxy, per phase (docs/a2a-internode.md, "Proxy"): for
 * each doorbell that posted writes, four spans in ns, nearest-rank p50/p99 and max over
 * the last min(count, window) doorbells:
 *   seen_first  watcher saw the kernel's doorbell -> first te_write accepted
 *   first_last  first -> last te_write accepted
 *   last_done   last accepted -> the phase's writes locally complete
 *   seen_done   watcher saw the doorbell -> local completion */
enum { A2A_PHASE_DISPATCH = 0, A2A_PHASE_WEIGHTS = 1, A2A_PHASE_COMBINE = 2, A2A_PHASES = 3 };
typedef struct a2a_span_ns {
    uint64_t p50, p99, max;
} a2a_span_ns;
typedef struct a2a_proxy_timing {
    uint64_t count;   /* doorbells timed since connect or a2a_proxy_timing_reset */
    uint64_t window;  /* samples the percentiles are over */
    uint64_t dropped; /* doorbells not timed (too many incomplete at once) */
    a2a_span_ns seen_first, first_last, last_done, seen_done;
} a2a_proxy_timing;
/* 0 and *out filled; -EINVAL (NULL, phase outside 0..A2A_PHASES-1); -ENOENT when the
 * context has no proxy (no RDMA peer, or not connected). Thread-safe. */
int a2a_proxy_timing_get(const a2a_ctx *ctx, int phase, a2a_proxy_timing *out);
/* Starts every phase's samples afresh (after warm-up). 0, -EINVAL, -ENOENT as above. */
int a2a_proxy_timing_reset(a2a_ctx *ctx);
/* Per-iteration trace of the RDMA phases (docs/a2a-internode.md, "Trace"): where one
 * iteration's time goes, from the send kernel's stage to the receiver's recv kernel.
 * Times are CLOCK_MONOTONIC ns of this process's host; the kernels' stamps (GPU
 * %globaltimer) are mapped onto it by the last a2a_clock_sync. Kept for the last
 * A2A_TRACE_DEPTH iterations. Comparing one rank's times with another rank's needs
 * their hosts' clocks to agree (one machine: they do; across machines: PTP or similar). */
#define A2A_TRACE_DEPTH 16
typedef struct a2a_phase_trace {
    uint64_t epoch;     /* the iteration (1 for the first after connect) */
    uint64_t bell_ns;   /* the send kernel's last block rang the phase's doorbell */
    uint64_t seen_ns;   /* this rank's proxy saw the doorbell */
    uint64_t first_ns;  /* its first write accepted by the engine */
    uint64_t last_ns;   /* its last write accepted */
    uint64_t done_ns;   /* the phase's writes completed locally */
    /* the recv kernel (block 0) saw the arrival flag of RDMA source q (slice rank q) for
     * this phase: for DSP and CMB the dispatch / combine recv, for WGT the combine send */
    uint64_t flag_ns[A2A_MAX_RANKS];
    /* each field is 0 where not recorded: not an RDMA source, a phase without RDMA peers,
     * a recv not run yet, or an epoch older than the last A2A_TRACE_DEPTH */
} a2a_phase_trace;
/* Fills *out for phase (A2A_PHASE_*) of iteration `epoch`. Read after the kernels of
 * that iteration finished (a stream synchronize). 0; -EINVAL; -ENOENT when the context
 * has no RDMA peer or nothing of that epoch is recorded. */
int a2a_phase_trace_get(const a2a_ctx *ctx, int phase, uint64_t epoch, a2a_phase_trace *out);
/* The newest iteration whose dispatch doorbell the kernels stamped (0: none yet). */
uint64_t a2a_trace_newest_epoch(const a2a_ctx *ctx);
/* Measures the GPU clock against CLOCK_MONOTONIC again (a probe kernel on a private
 * stream, 16 rounds; connect runs it once). *err_ns (may be NULL): the uncertainty, +/-.
 * Call it shortly before a traced run: the two clocks drift apart slowly. 0, -EINVAL,
 * -ENOENT (no RDMA peer), -ETIMEDOUT (the probe kernel did not start within 1 s: the
 * GPU is busy), or a CUDA error. */
int a2a_clock_sync(a2a_ctx *ctx, uint64_t *err_ns);

/* For callers that own the engine's peer callback (a2a_config.app_forwards_peer_events):
 * forwards one peer state change (te_peer_fn's arguments) to every context of engine e.
 * Any thread. */
void a2a_peer_event(struct te_engine *e, const struct te_addr *addr, int state);

/* Enqueue the send and/or recv half (flags A2A_SEND | A2A_RECV) on `stream` (a
 * cudaStream_t; NULL = legacy default stream). The phase order per iteration is checked
 * on the host: -EPROTO if a half is called out of order. -ETIMEDOUT / -EOVERFLOW if a
 * kernel reported an error earlier (the context is then unusable). */
int a2a_dispatch(a2a_ctx *ctx, const a2a_dispatch_args *args, unsigned flags, void *stream);
int a2a_combine(a2a_ctx *ctx, const a2a_combine_args *args, unsigned flags, void *stream);

/* 0, or the error a kernel recorded (-ETIMEDOUT: a peer did not answer in time;
 * -EOVERFLOW: more rows than out_capacity; -ECANCELED: aborted), or the error the RDMA
 * proxy reported (its code, e.g. -ECONNRESET for a peer gone, with its message). Reads
 * host memory, no synchronization. Any thread. */
int a2a_poll_error(a2a_ctx *ctx);
/* Makes every running and future kernel of this context return at once (kernels poll
 * the flag while they wait). Any thread. */
void a2a_abort(a2a_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif
