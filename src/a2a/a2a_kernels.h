/*
 * Interface between the host side of the all-to-all (C) and its kernels (CUDA C).
 *
 * Shared block of every rank (mapped by every peer), offsets identical on all ranks:
 *   flags  [4][W] uint32, one 128-byte line each: DSP (dispatch data from src complete),
 *          WGT (src's combine weights published), CMB (src's combine partials complete
 *          and src done reading what we sent it), CNT (src's dispatch counts complete,
 *          raised before its data; only when Tmax > A2A_CNT_MIN_TOKENS). Written only
 *          by src, monotonic: WGT holds the epoch; DSP, CMB and CNT count block
 *          arrivals (red.release.sys.add), each launch adding A2A_ARRIVE_SPAN in total,
 *          so epoch e is complete at e * A2A_ARRIVE_SPAN.
 *   cnt    [W][L+1] int32: per source, tokens per local expert, then rows sent; summed
 *          by the source with remote reductions, cleared by the owner in combine send.
 *   meta   [W][Tmax][K+1] int32: per source slot: token id, then per k
 *          (local_expert << 21 | index within (source, expert)) or -1.
 *   rows   [W][Tmax][row_bytes]: per source slot: payload then fp32 scales.
 *   wgt    [W][Tmax][K] fp32: per source, its combine weights (only entries routed here).
 *   part   [W][Tmax][H] (row stride H*4): per expert rank, its weighted partial sum for our
 *          token t, as fp32 or as out_dtype. Slots of RDMA peers (stage, rblock) hold
 *          compact rows instead, packed at a2a_part_row_bytes (H*2 for 2-byte partials).
 * See docs/a2a.md for the protocol and why no write-after-read hazard exists.
 *
 * RDMA peers (docs/a2a-internode.md): `stage` (what we send them, slot = peer) and
 * `rblock` (what they sent us, slot = source) have the same layout and offsets; flags
 * are replaced by the proxy's doorbells (send) and arrival epochs (receive).
 */
#ifndef TENDRIL_A2A_KERNELS_H
#define TENDRIL_A2A_KERNELS_H

#include <stdint.h>
#include <tendril/a2a.h>

#include "proxy/a2a_proxy.h" /* A2A_PX_*: the phases the RDMA proxy carries */

#ifdef __cplusplus
extern "C" {
#endif

#define A2A_THREADS 512
#define A2A_WARPS (A2A_THREADS / 32)
#define A2A_CHUNK 64          /* tokens routed per block step in dispatch send */
#define A2A_MAX_EXPERTS 4096
#define A2A_IDX_BITS 21       /* meta entry: expert << 21 | index */
#define A2A_MAX_TOKENS (1u << A2A_IDX_BITS)
/* contexts with more max tokens than this raise CNT in dispatch send, and their fused
 * dispatch may store a rank's rows for its own experts straight to the output */
#define A2A_CNT_MIN_TOKENS 256
/* DSP / CMB counters: the blocks of one launch add this much in total (>= grid size) */
#define A2A_ARRIVE_SPAN 65536u

enum { A2A_FLAG_DSP = 0, A2A_FLAG_WGT = 1, A2A_FLAG_CMB = 2, A2A_FLAG_CNT = 3, A2A_FLAG_N = 4 };
enum { A2A_PH_DSEND = 0, A2A_PH_DRECV = 1, A2A_PH_CSEND = 2, A2A_PH_CRECV = 3,
       A2A_PH_DBOTH = 4, A2A_PH_CBOTH = 5, A2A_PH_N = 6 }; /* BOTH: send+recv in one launch */
/* error word: code << 24 | phase << 16 | peer */
enum { A2A_ERR_TIMEOUT = 1, A2A_ERR_OVERFLOW = 2, A2A_ERR_ABORT = 3 };
/* arrival counters in the workspace */
enum { A2A_ARR_DSEND = 0, A2A_ARR_WGT = 1, A2A_ARR_CSEND = 2, A2A_ARR_CRECV = 3, A2A_ARR_N = 8 };

/* The RDMA arrays below (px_tx, px_flag, ws_rslot) have rows of A2A_PX_MAX_RANKS (64)
 * entries whatever the world size: the proxy's tx rows have that length. */
#if A2A_MAX_RANKS > A2A_PX_MAX_RANKS
#error "A2A_MAX_RANKS exceeds the proxy's A2A_PX_MAX_RANKS"
#endif

/* GPU half of the per-iteration trace (a2a_phase_trace_get; docs/a2a-internode.md,
 * "Trace"): host-mapped, a ring of A2A_STAMP_DEPTH records indexed by epoch. The last
 * block of a proxied phase stamps %globaltimer just before it rings the doorbell; block 0
 * of a recv stamps it when it has seen an RDMA source's arrival flag. Each time is
 * written before its epoch tag; the host reads both after the kernels finished. */
#define A2A_STAMP_DEPTH 16
typedef struct a2a_stamp_rec {
    uint64_t bell_ep[A2A_PX_N], bell_t[A2A_PX_N];
    uint64_t seen_ep[A2A_PX_N][A2A_PX_MAX_RANKS], seen_t[A2A_PX_N][A2A_PX_MAX_RANKS];
} a2a_stamp_rec;

typedef struct a2a_kparams {
    char *peer[A2A_MAX_RANKS]; /* base of each slice peer's shared block, mapped here
                                  (NULL for RDMA peers) */
    /* RDMA peers (docs/a2a-internode.md); all 0 / NULL when every peer shares the node.
     * rdma_mask != 0 selects the kernels' RDMA instantiations (a2a_launch.cu). */
    uint64_t rdma_mask;        /* bit q: slice peer q is reached over RDMA (bit of self 0) */
    char *stage;               /* what we send to RDMA peers (slot = peer), or NULL; same
                                  layout and offsets as the shared block */
    char *rblock;              /* where RDMA sources' data lands (slot = source), or NULL;
                                  same layout and offsets (may be the shared block itself) */
    int32_t *px_tx;            /* host-mapped [A2A_PX_N][A2A_PX_MAX_RANKS] lengths for the
                                  proxy (units: a2a_proxy.h), written before each doorbell */
    uint64_t *px_doorbell[A2A_PX_N];   /* watcher words the proxy polls (te_watcher) */
    const uint64_t *const *px_flag;    /* device [A2A_PX_N][A2A_PX_MAX_RANKS] epoch-word
                                          pointers (te_imm_flag); non-NULL for every RDMA
                                          source, NULL elsewhere */
    a2a_stamp_rec *px_stamp;   /* host-mapped [A2A_STAMP_DEPTH] trace records, or NULL */
    int32_t *ws_rslot;         /* workspace [Tmax][A2A_PX_MAX_RANKS]: dispatch row j our token t
                                  got at RDMA peer q (-1: none), rewritten by every dispatch
                                  send for t < T; combine recv reads its compact part row.
                                  Any initial content in [-1, Tmax) (zeroed is fine) */
    uint64_t off_flags, off_cnt, off_meta, off_rows, off_wgt, off_part;
    uint32_t *ws_iter;         /* completed iterations (epoch of the next = +1) */
    uint32_t *ws_err;          /* first error (device copy) */
    uint32_t *ws_arrive;       /* [A2A_ARR_N] block arrival counters */
    int32_t *ws_total_cnt;     /* [2][E] tokens per expert, by epoch parity */
    int32_t *ws_total_rcnt;    /* [2][W] rows per destination rank, by parity */
    int32_t *ws_src_base;      /* [W][L] first output row of (source, local expert) */
    int32_t *ws_nsrc;          /* [W] rows received per source */
    uint32_t *host_err;        /* host-mapped: first error */
    const uint32_t *host_abort;/* host-mapped: abort request */
    uint64_t timeout_ns;
    int32_t rank, world;
    uint32_t E, L, K, H, S, Tmax, pad;
    uint32_t payload_bytes;    /* H * in_elem_size (multiple of 16) */
    uint32_t row_bytes;        /* staging row stride */
    uint32_t out_dtype;        /* a2a_dtype */
    uint32_t partial_f32;      /* partial sums travel as fp32 (else as out_dtype) */
    /* per call */
    uint32_t T;
    const int32_t *bound_m;
    const int32_t *indices;
    const void *x;
    uint64_t x_stride;
    const float *x_scale;
    uint64_t xs0, xs1;
    int32_t *out_num_tokens;
    void *out_x;
    uint64_t out_x_stride;
    float *out_scale;
    uint64_t os0, os1;
    uint32_t out_capacity;
    const float *weights;
    const void *y;
    uint64_t y_stride;
    uint32_t y_rows;
    void *out;
    uint64_t out_stride;
    int32_t accumulate;
} a2a_kparams;

/* Row stride of the compact part rows in RDMA peers' part slots, and so the bytes per row
 * of the CMB write (the proxy's layout.part_row_bytes): H * the partials' element size.
 * The kernels compute the same from their partial type (part_rdma_ptr<R, PB>, PB the
 * size of PT, which a2a_combine_kernel picks from partial_f32: fp32, else out_dtype,
 * a 2-byte type since partial_f32 is set for fp32 output). */
static inline uint32_t a2a_part_row_bytes(const a2a_kparams *p)
{
    return p->H * (p->partial_f32 ? 4u : 2u);
}

/* Dynamic shared memory a phase needs. */
size_t a2a_kernel_smem(int phase, const a2a_kparams *p);
/* Launches phase `phase` with `nblocks` blocks on `stream`. Returns a cudaError_t. */
int a2a_kernel_launch(int phase, const a2a_kparams *p, int nblocks, void *stream);
/* Largest number of co-resident blocks of the heaviest kernel on this device. */
int a2a_kernel_max_blocks(const a2a_kparams *p, int device);
/* One clock probe on stream (a2a_trace.c): a single thread spins until *go (device
 * address of host-mapped memory) is non-zero, then writes %globaltimer into *out; 1
 * after limit_ns without go. A cudaError_t. */
int a2a_clock_probe_launch(const uint32_t *go, uint64_t *out, uint64_t limit_ns, void *stream);

#ifdef __cplusplus
}
#endif
#endif
