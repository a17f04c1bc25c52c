/*
 * MoE all-to-all over NVLink: the four phase kernels.
 *
 * Every kernel is a plain launch of nblocks x 512 threads (one block per SM). Blocks do
 * not wait for each other except where noted ("co-resident"). Work is split in warp
 * tasks: a task is (row, segment of the row); lanes move 16-byte vectors.
 *
 * Cross-GPU ordering. DSP and CMB (data complete): data stores -> bar.sync -> one
 * red.release.sys.add per destination and block into the destination's counter for this
 * source. The blocks of one launch add A2A_ARRIVE_SPAN in total (block 0 adds the
 * remainder), so epoch e is complete when the counter reaches e * A2A_ARRIVE_SPAN (mod
 * 2^32; the source's grid size does not matter). No grid-wide "last block" step sits
 * between the data and the peer. WGT: bar.sync, then st.release.sys of the epoch. The
 * reader spins with ld.acquire.sys (wrap-safe >=), bounded by a globaltimer deadline,
 * then reads the data.
 *
 * Why one release per destination is enough: the barrier orders every thread's stores
 * before the releasing thread's operation at CTA scope, and a release is cumulative
 * (PTX memory model: causality order is transitive through the barrier's
 * synchronisation), so it covers the whole block's stores. A fence.sys in every thread
 * is not needed (it cost 2.3 µs of the decode dispatch send, docs/history/performance-log.md); the
 * same pattern is what cooperative groups' grid sync relies on at gpu scope.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../a2a_kernels.h"

typedef a2a_kparams P;

/* Development aid (cmake -DTENDRIL_A2A_TRACE=ON): thread 0 of every block records
 * %globaltimer and clock64 at numbered points of a kernel and prints them for a few
 * epochs (A2A_TRACE_EP0 .. +2), so a latency breakdown per phase can be read without a
 * profiler (ncu's replay serialises the ranks and deadlocks on the cross-GPU waits). */
#ifdef A2A_TRACE
#include <cstdio>
#ifndef A2A_TRACE_EP0
#define A2A_TRACE_EP0 40
#endif
#define TR_DECL uint64_t tr_g[12], tr_c[12]; int tr_n = 0
#define TR_MARK()                                                                     \
    do {                                                                              \
        if (threadIdx.x == 0 && tr_n < 12) {                                          \
            asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(tr_g[tr_n]));            \
            tr_c[tr_n++] = clock64();                                                 \
        }                                                                             \
    } while (0)
/* A block's marks are stashed in shared memory (thread 0 only) and printed at the end of
 * the kernel (TR_FLUSH), so that the printf of a first half does not delay the second
 * half of a fused send+recv launch. */
struct TrSet {
    const char *name;
    uint32_t ep;
    int n;
    uint64_t g[12];
    long long c[12];
};
static __device__ __forceinline__ TrSet *tr_sets(int **count) {
    __shared__ TrSet sets[2];
    __shared__ int nsets;
    *count = &nsets;
    return sets;
}
#define TR_BEGIN()                                                                    \
    do {                                                                              \
        int *n_;                                                                      \
        tr_sets(&n_);                                                                 \
        if (threadIdx.x == 0) *n_ = 0;                                                \
    } while (0)
#define TR_PRINT(nm, e)                                                               \
    do {                                                                              \
        int *n_;                                                                      \
        TrSet *S_ = tr_sets(&n_);                                                     \
        if (threadIdx.x == 0 && *n_ < 2) {                                            \
            TrSet &t_ = S_[(*n_)++];                                                  \
            t_.name = nm;                                                             \
            t_.ep = (e);                                                              \
            t_.n = tr_n;                                                              \
            for (int q = 0; q < tr_n; q++) {                                          \
                t_.g[q] = tr_g[q];                                                    \
                t_.c[q] = (long long)(tr_c[q] - tr_c[0]);                             \
            }                                                                         \
        }                                                                             \
    } while (0)
#define TR_FLUSH()                                                                    \
    do {                                                                              \
        int *n_;                                                                      \
        TrSet *S_ = tr_sets(&n_);                                                     \
        if (threadIdx.x == 0)                                                         \
            for (int k_ = 0; k_ < *n_; k_++)                                          \
                if (S_[k_].ep - A2A_TRACE_EP0 < 3u)                                   \
                    for (int q = 0; q < S_[k_].n; q++)                                \
                        printf("TR %s r%d e%u b%d q%d g%llu c%lld\n", S_[k_].name,    \
                               p.rank, S_[k_].ep, (int)blockIdx.x, q,                 \
                               (unsigned long long)S_[k_].g[q], S_[k_].c[q]);         \
    } while (0)
#else
#define TR_DECL do {} while (0)
#define TR_MARK() do {} while (0)
#define TR_PRINT(name, ep) do {} while (0)
#define TR_BEGIN() do {} while (0)
#define TR_FLUSH() do {} while (0)
#endif

#define FULL 0xffffffffu

/* ------------------------------------------------------------ primitives ---- */

static __device__ __forceinline__ uint64_t gtimer(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
static __device__ __forceinline__ uint32_t ld_acquire_sys(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
static __device__ __forceinline__ void st_release_sys(uint32_t *p, uint32_t v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
static __device__ __forceinline__ void fence_acq_rel_sys(void) {
    asm volatile("fence.acq_rel.sys;" ::: "memory");
}
static __device__ __forceinline__ void fence_acq_rel_gpu(void) {
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
}
/* fire-and-forget add with release semantics (no value comes back) */
static __device__ __forceinline__ void red_release_sys_add(uint32_t *p, uint32_t v) {
    asm volatile("red.release.sys.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
static __device__ __forceinline__ uint32_t ld_vol(const uint32_t *p) {
    return *(const volatile uint32_t *)p;
}
static __device__ __forceinline__ int32_t ld_vol_i(const int32_t *p) {
    return *(const volatile int32_t *)p;
}
/* streaming read of caller input (read-only for the kernel's lifetime) */
static __device__ __forceinline__ uint4 ld_in(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
/* read of data a peer wrote (after the acquire of its flag) */
static __device__ __forceinline__ uint4 ld_peer(const void *p) {
    uint4 v;
    asm volatile("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
    return v;
}
static __device__ __forceinline__ void st_v4(void *p, uint4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
                 "r"(v.w)
                 : "memory");
}

static __device__ __forceinline__ uint32_t *flag_ptr(const P &p, int owner, int kind, int src) {
    return (uint32_t *)(p.peer[owner] + p.off_flags) + ((size_t)kind * p.world + src) * 32;
}
static __device__ __forceinline__ int32_t *cnt_ptr(const P &p, int owner, int src) {
    return (int32_t *)(p.peer[owner] + p.off_cnt) + (size_t)src * (p.L + 1);
}
static __device__ __forceinline__ int32_t *meta_ptr(const P &p, int owner, int src, int j) {
    return (int32_t *)(p.peer[owner] + p.off_meta) + ((size_t)src * p.Tmax + j) * (p.K + 1);
}
static __device__ __forceinline__ char *row_ptr(const P &p, int owner, int src, int j) {
    return p.peer[owner] + p.off_rows + ((size_t)src * p.Tmax + j) * p.row_bytes;
}
static __device__ __forceinline__ float *wgt_ptr(const P &p, int owner, int src) {
    return (float *)(p.peer[owner] + p.off_wgt) + (size_t)src * p.Tmax * p.K;
}
static __device__ __forceinline__ float *part_ptr(const P &p, int owner, int src, int t) {
    return (float *)(p.peer[owner] + p.off_part) + ((size_t)src * p.Tmax + t) * p.H;
}

static __device__ __forceinline__ bool failed(const P &p) { return ld_vol(p.ws_err) != 0; }

static __device__ void set_error(const P &p, uint32_t code, uint32_t phase, uint32_t peer) {
    uint32_t w = (code << 24) | (phase << 16) | (peer & 0xffff);
    if (atomicCAS(p.ws_err, 0u, w) == 0u) {
        *(volatile uint32_t *)p.host_err = w;
        __threadfence_system();
    }
}

/* One thread waits until *flag >= target (wrap-safe), a deadline passes, or the context
 * failed / was aborted. */
static __device__ bool wait_flag(const P &p, const uint32_t *flag, uint32_t target, uint32_t phase,
                                 uint32_t peer) {
    if ((int32_t)(ld_acquire_sys(flag) - target) >= 0) return true;
    const uint64_t t0 = gtimer();
    for (uint32_t n = 1;; n++) {
        if ((int32_t)(ld_acquire_sys(flag) - target) >= 0) return true;
        if (failed(p)) return false;
        if ((n & 255) == 0) {
            if (ld_vol(p.host_abort)) {
                set_error(p, A2A_ERR_ABORT, phase, peer);
                return false;
            }
            if (gtimer() - t0 > p.timeout_ns) {
                set_error(p, A2A_ERR_TIMEOUT, phase, peer);
                return false;
            }
        }
    }
}

/* Whole block: wait for flag `kind` of every source in the own block. Uniform result. */
static __device__ bool block_wait_all(const P &p, int kind, uint32_t target, uint32_t phase) {
    __shared__ int s_fail;
    if (threadIdx.x == 0) s_fail = 0;
    __syncthreads();
    if ((int)threadIdx.x < p.world) {
        if (!wait_flag(p, flag_ptr(p, p.rank, kind, threadIdx.x), target, phase, threadIdx.x))
            s_fail = 1;
    }
    __syncthreads();
    const int f = s_fail;
    __syncthreads();
    return f == 0;
}

/* Every block calls it once at its end. Returns true in the last block to arrive (whole
 * block, uniform). All stores of all blocks made before are visible system-wide to what
 * the last block does after. The counter is reset for the next launch. */
static __device__ bool arrive_last(const P &p, uint32_t *counter, bool sys = true) {
    __shared__ int s_last;
    /* the block's stores (NVLink included) before the arrival: bar.sync, then one
     * cumulative fence in the arriving thread (see the header comment); gpu scope where
     * the block stored nothing a peer reads */
    if (p.dev_flags & A2A_DEV_FENCE_ALL) {
        if (sys) fence_acq_rel_sys();
        else fence_acq_rel_gpu();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        if (sys) fence_acq_rel_sys();
        else fence_acq_rel_gpu();
        const uint32_t old = atomicAdd(counter, 1u);
        s_last = (old == gridDim.x - 1);
        if (s_last) {
            if (sys) fence_acq_rel_sys();
            else fence_acq_rel_gpu();
            *(volatile uint32_t *)counter = 0;
        }
    }
    __syncthreads();
    return s_last != 0;
}

/* Error word and epoch in one round trip (both loads issued before either is used).
 * Returns false if the context already failed. */
static __device__ __forceinline__ bool start(const P &p, uint32_t *ep) {
    const uint32_t err = ld_vol(p.ws_err);
    const uint32_t it = ld_vol(p.ws_iter);
    *ep = it + 1;
    return err == 0;
}

/* Target of a DSP/CMB counter for epoch ep (see the header comment). */
static __device__ __forceinline__ uint32_t arrive_target(uint32_t ep) { return ep * A2A_ARRIVE_SPAN; }

/* Every block calls it once at its end: its stores (NVLink included) are released to
 * every destination's counter `kind` for this source. Whole block. */
static __device__ void arrive_count(const P &p, int kind) {
    if (p.dev_flags & A2A_DEV_FENCE_ALL) fence_acq_rel_sys();
    __syncthreads(); /* every thread's stores precede the cumulative releases below */
    if ((int)threadIdx.x < p.world) {
        const uint32_t add = blockIdx.x == 0 ? A2A_ARRIVE_SPAN - (gridDim.x - 1) : 1u;
        red_release_sys_add(flag_ptr(p, threadIdx.x, kind, p.rank), add);
    }
}

static __device__ __forceinline__ int tokens_now(const P &p) {
    int T = (int)p.T;
    if (p.bound_m) {
        const int b = *(const volatile int32_t *)p.bound_m;
        T = b < 0 ? 0 : (b < T ? b : T);
    }
    return T;
}

/* a[0..n) becomes its exclusive prefix; returns the total. One thread. */
static __device__ __forceinline__ int excl_prefix_serial(int *a, int n) {
    int run = 0;
    for (int i = 0; i < n; i++) {
        const int c = a[i];
        a[i] = run;
        run += c;
    }
    return run;
}

/* exclusive prefix over the block of one value per thread; *total = sum */
static __device__ int block_excl_scan(int v, int *total) {
    __shared__ int s_warp[A2A_WARPS + 1];
    const int lane = threadIdx.x & 31, wid = threadIdx.x >> 5;
    int x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(FULL, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) s_warp[wid] = x;
    __syncthreads();
    if (threadIdx.x == 0) s_warp[A2A_WARPS] = excl_prefix_serial(s_warp, A2A_WARPS);
    __syncthreads();
    const int r = s_warp[wid] + x - v;
    *total = s_warp[A2A_WARPS];
    __syncthreads();
    return r;
}

/* Segments per row so that tasks cover the warps of the grid without a second round
 * (rows x segments <= warps when rows <= warps); each segment >= minv. */
static __device__ __forceinline__ int pick_nseg(int nrows, int nvec, int minv) {
    if (nrows <= 0) return 1;
    const int warps = gridDim.x * A2A_WARPS;
    int nseg = warps / nrows;
    int maxseg = nvec / minv;
    if (maxseg < 1) maxseg = 1;
    if (nseg > maxseg) nseg = maxseg;
    return nseg < 1 ? 1 : nseg;
}

/* Shared routing tables of the receiving side: first output row of (source, local
 * expert), rows per source and their prefix. Loaded from the cnt region (dispatch recv)
 * or from the workspace (combine send). */
struct RecvTables {
    int *base;   /* [W][L] */
    int *rowoff; /* [W+1] */
};

/* ------------------------------------------------------------ dispatch send ---- */

/* One token held in registers (two 16-byte vectors and one scale per thread) stored to
 * its nd destination rows (s_dl: rank << 24 | slot). Whole block. */
static __device__ __forceinline__ void store_token_rows(const P &p, const int *s_dl, int nd, uint4 pv0,
                                                        uint4 pv1, float psc) {
    const int tid = threadIdx.x;
    const int nvec = (int)(p.payload_bytes / 16);
    char *dst[8];
#pragma unroll
    for (int q = 0; q < 8; q++) {
        dst[q] = nullptr;
        if (q < nd) {
            const int d = s_dl[q];
            dst[q] = row_ptr(p, d >> 24, p.rank, d & 0xffffff);
        }
    }
#pragma unroll
    for (int q = 0; q < 8; q++) {
        if (dst[q]) {
            if (tid < nvec) st_v4(dst[q] + (size_t)tid * 16, pv0);
            if (tid + A2A_THREADS < nvec) st_v4(dst[q] + (size_t)(tid + A2A_THREADS) * 16, pv1);
            if (tid < (int)p.S) ((float *)(dst[q] + p.payload_bytes))[tid] = psc;
        }
    }
}

/* Shared-memory ints a dispatch send uses (the chunked path's tables; the one-token path
 * needs fewer). A fused launch keeps its receive tables after them. */
static __host__ __device__ __forceinline__ size_t send_smem_ints(const P &p) {
    return 2 * (size_t)p.E + 2 * (size_t)p.world + A2A_CHUNK * (size_t)p.K + A2A_CHUNK * (size_t)p.world +
           A2A_CHUNK * 8 + A2A_CHUNK;
}

/* Whether this context raises and uses CNT (the counts-complete counter): decided from
 * the context's configuration alone (max tokens), so that every rank agrees whatever
 * batch it brings to a launch. Decode-sized contexts do without: the extra release cost
 * 1.3 µs of the decode dispatch send and 3.6 µs back to back (docs/history/performance-log.md), and
 * the direct path it enables only pays at prefill sizes. */
static __device__ __forceinline__ bool cnt_on(const P &p) { return p.Tmax > A2A_CNT_MIN_TOKENS; }

/* A block's arrival on CNT at every destination: its count reductions (made before the
 * caller's bar.sync) are released. Issued by the last warp, which has no payload vector
 * at the common shapes, so the release's wait does not hold up data stores. */
static __device__ __forceinline__ void arrive_cnt(const P &p) {
    if (!cnt_on(p)) return;
    const int lane = threadIdx.x & 31;
    if ((int)(threadIdx.x >> 5) == A2A_WARPS - 1 && lane < p.world) {
        const uint32_t add = blockIdx.x == 0 ? A2A_ARRIVE_SPAN - (gridDim.x - 1) : 1u;
        red_release_sys_add(flag_ptr(p, lane, A2A_FLAG_CNT, p.rank), add);
    }
}

static __device__ void warp_recv_tables(const P &p, int *s_base);

/* Fused dispatch: waits for every source's CNT counter and builds the receive tables in
 * s_base (last warp), then joins the block. Returns false (uniform) on timeout/abort. */
static __device__ bool fused_tables(const P &p, int *s_base, uint32_t ep) {
    __shared__ int s_ok;
    const int lane = threadIdx.x & 31;
    if ((int)(threadIdx.x >> 5) == A2A_WARPS - 1) {
        int ok = 1;
        if (lane < p.world)
            ok = wait_flag(p, flag_ptr(p, p.rank, A2A_FLAG_CNT, lane), arrive_target(ep), A2A_PH_DRECV, lane);
        ok = __all_sync(FULL, ok);
        if (ok) warp_recv_tables(p, s_base);
        if (lane == 0) s_ok = ok;
    }
    __syncthreads();
    return s_ok != 0;
}

/* Output row of a (local expert, index) entry (l << A2A_IDX_BITS | index) from source
 * src, or -1 (recorded as overflow) past the output's capacity. */
static __device__ __forceinline__ int out_row(const P &p, const int *s_base, int src, int ent) {
    if (ent < 0) return -1;
    const int row = s_base[src * (int)p.L + (ent >> A2A_IDX_BITS)] + (ent & ((1 << A2A_IDX_BITS) - 1));
    if (row >= (int)p.out_capacity) {
        set_error(p, A2A_ERR_OVERFLOW, A2A_PH_DRECV, src);
        return -1;
    }
    return row;
}

/* Whether a fused dispatch (send+recv in one launch) stores the rows a rank sends itself
 * straight to its expert-major output (prefill sizes): more tokens than blocks (the
 * chunked routing), every block routes at most one chunk, and the receive tables fit
 * one warp's registers. At decode sizes the wait for every source's counts in the
 * middle of the send costs more than the copies it saves (docs/history/performance-log.md). */
static __device__ __forceinline__ bool fused_direct_fits(const P &p) {
    const int per = ((int)p.L + 31) / 32;
    return cnt_on(p) && p.world <= 32 && p.world * per <= 16 && p.T > gridDim.x &&
           p.T <= (uint32_t)A2A_CHUNK * gridDim.x && !(p.dev_flags & A2A_DEV_NO_DIRECT_SELF);
}

/* Whether dispatch send may take the one-token-per-block path: at most one token per
 * block whatever bound_m says (T is the host's upper bound), and the token fits in the
 * registers of the block (two 16-byte vectors and one scale per thread). */
static __host__ __device__ __forceinline__ bool send_one_fits(const P &p, unsigned nblocks) {
    return p.T <= nblocks && p.payload_bytes / 16 <= 2 * A2A_THREADS && p.S <= A2A_THREADS &&
           !(p.dev_flags & A2A_DEV_NO_WARP_ROUTE);
}

/* Dispatch send, one token per block (the decode case). Everything the block needs from
 * memory is requested at once at kernel start (error word, epoch, bound_m, the token's K
 * expert ids, its payload and scales); warp 0 then routes the token alone, with warp
 * votes instead of shared tables and block barriers: lanes 0..K-1 hold one (token,
 * expert) pair each; the first lane of each expert reserves the positions of its group
 * in (me, expert) and the first lane of each destination rank the token's slot there,
 * both with one returning atomic in the same round trip. One barrier hands the
 * destination list to the other warps, which store the prefetched token. */
static __device__ __forceinline__ bool dispatch_send_one(const P &p, int *smem) {
    TR_DECL;
    TR_MARK();
    const int W = p.world, K = p.K, E = p.E, L = p.L, me = p.rank;
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;
    const int t = blockIdx.x;
    const uint32_t nvec = p.payload_bytes / 16;
    const uint32_t err = ld_vol(p.ws_err);
    const uint32_t it = ld_vol(p.ws_iter);
    const bool have = t < (int)p.T; /* rows of the caller's tensors that exist */
    uint32_t e = 0xffffffffu;
    if (wid == 0 && have && lane < K) e = (uint32_t)p.indices[(size_t)t * K + lane];
    uint4 pv0 = make_uint4(0, 0, 0, 0), pv1 = pv0;
    float psc = 0.f;
    if (have) {
        const char *src = (const char *)p.x + (size_t)t * p.x_stride;
        if (tid < (int)nvec) pv0 = ld_in(src + (size_t)tid * 16);
        if (tid + A2A_THREADS < (int)nvec) pv1 = ld_in(src + (size_t)(tid + A2A_THREADS) * 16);
        if (tid < (int)p.S) psc = p.x_scale[(size_t)t * p.xs0 + (size_t)tid * p.xs1];
    }
    const int T = tokens_now(p);
    if (err != 0) return false;
    const uint32_t ep = it + 1;
    const int par = ep & 1;
    if (blockIdx.x == 0) {
        /* parity ep+1's totals were last used by dispatch send (ep-1), which has finished */
        int32_t *nxt_cnt = p.ws_total_cnt + (size_t)(par ^ 1) * E;
        int32_t *nxt_rcnt = p.ws_total_rcnt + (size_t)(par ^ 1) * W;
        for (int i = tid; i < E; i += A2A_THREADS) nxt_cnt[i] = 0;
        for (int i = tid; i < W; i += A2A_THREADS) nxt_rcnt[i] = 0;
    }
    int *s_dl = smem;     /* [8] destination r << 24 | slot */
    int *s_nd = smem + 8; /* [1] */
    if (wid == 0) {
        int nd = 0;
        if (t < T) {
            const bool valid = lane < K && e < (uint32_t)E;
            const int r = valid ? (int)(e / L) : -1;
            const uint32_t vmask = __ballot_sync(FULL, valid);
            const uint32_t same_e = __match_any_sync(FULL, e) & vmask;
            const uint32_t same_r = __match_any_sync(FULL, (uint32_t)r) & vmask;
            const uint32_t below = (1u << lane) - 1;
            const bool lead_e = valid && (same_e & below) == 0;
            const bool lead_r = valid && (same_r & below) == 0;
            int ebase = 0, slot = 0;
            if (lead_e) {
                ebase = atomicAdd(p.ws_total_cnt + (size_t)par * E + e, __popc(same_e));
                /* the destination's count of (me, expert): a fire-and-forget reduction */
                atomicAdd(cnt_ptr(p, r, me) + (e - r * L), __popc(same_e));
            }
            if (lead_r) {
                slot = atomicAdd(p.ws_total_rcnt + (size_t)par * W + r, 1);
                atomicAdd(cnt_ptr(p, r, me) + L, 1);
            }
            const int src_e = valid ? __ffs(same_e) - 1 : lane;
            const int src_r = valid ? __ffs(same_r) - 1 : lane;
            const int pos = __shfl_sync(FULL, ebase, src_e) + __popc(same_e & below);
            slot = __shfl_sync(FULL, slot, src_r);
            const uint32_t leaders = __ballot_sync(FULL, lead_r);
            nd = __popc(leaders);
            if (lead_r) s_dl[__popc(leaders & below)] = (r << 24) | slot;
            /* the slot's metadata at each destination: token id, then per k the local
             * expert and index, or -1 where the pair goes elsewhere */
            uint32_t lm = leaders;
            for (int q = 0; q < nd; q++) {
                const int ld = __ffs(lm) - 1;
                lm &= lm - 1;
                const int rq = __shfl_sync(FULL, r, ld);
                const int jq = __shfl_sync(FULL, slot, ld);
                int32_t *m = meta_ptr(p, rq, me, jq);
                if (lane < K)
                    m[1 + lane] = r == rq ? (int)(((e - (uint32_t)(rq * L)) << A2A_IDX_BITS) | (uint32_t)pos)
                                          : -1;
                if (lane == K) m[0] = t;
            }
        }
        if (lane == 0) *s_nd = nd;
    }
    __syncthreads();
    arrive_cnt(p);
    TR_MARK(); /* 1: routed */
    store_token_rows(p, s_dl, *s_nd, pv0, pv1, psc);
    TR_MARK(); /* 2: data stores issued */
    arrive_count(p, A2A_FLAG_DSP);
    TR_MARK(); /* 3: released */
    TR_PRINT("dsend1", ep);
    return true;
}

/* Segment `seg` of token t of the caller's input (payload, and the scales with the last
 * segment), loaded once and stored to up to 8 staging rows dst (nullptr: none; scales
 * follow the payload) and, with dso, to up to 8 output rows dso / orow (scales go to
 * out_scale). Whole warp. */
static __device__ __forceinline__ void copy_token_seg(const P &p, int t, int seg, int nseg, int vps,
                                                      char *const dst[8], char *const *dso, const int *orow) {
    const int lane = threadIdx.x & 31;
    const int nvec = (int)(p.payload_bytes / 16);
    const char *src = (const char *)p.x + (size_t)t * p.x_stride;
    const int v0 = seg * vps, v1 = min(nvec, v0 + vps);
    for (int v = v0 + lane; v < v1; v += 32 * 4) {
        uint4 val[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            if (v + 32 * u < v1) val[u] = ld_in(src + (size_t)(v + 32 * u) * 16);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (v + 32 * u < v1) {
#pragma unroll
                for (int q = 0; q < 8; q++) {
                    if (dst[q]) st_v4(dst[q] + (size_t)(v + 32 * u) * 16, val[u]);
                    if (dso && dso[q]) st_v4(dso[q] + (size_t)(v + 32 * u) * 16, val[u]);
                }
            }
        }
    }
    if (seg == nseg - 1) {
        for (int i = lane; i < (int)p.S; i += 32) {
            const float f = p.x_scale[(size_t)t * p.xs0 + (size_t)i * p.xs1];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                if (dst[q]) ((float *)(dst[q] + p.payload_bytes))[i] = f;
                if (dso && dso[q]) p.out_scale[(size_t)orow[q] * p.os0 + (size_t)i * p.os1] = f;
            }
        }
    }
}

static __device__ __forceinline__ bool dispatch_send(const P &p, int *smem, int *s_tab, bool direct) {
    TR_DECL;
    TR_MARK();
    uint32_t ep;
    if (!start(p, &ep)) return false;
    const int par = ep & 1;
    const int W = p.world, K = p.K, E = p.E, L = p.L, me = p.rank;
    int *s_ecnt = smem;                  /* [E] count per expert within the chunk */
    int *s_ebase = s_ecnt + E;           /* [E] global base of the chunk per expert */
    int *s_rcnt = s_ebase + E;           /* [W] */
    int *s_rbase = s_rcnt + W;           /* [W] */
    int *s_pos = s_rbase + W;            /* [CHUNK*K] index within (me, expert) */
    int *s_slot = s_pos + A2A_CHUNK * K; /* [CHUNK*W] slot at destination or -1 */
    int *s_dl = s_slot + A2A_CHUNK * W;  /* [CHUNK*8] destination list: r << 24 | slot */
    int *s_nd = s_dl + A2A_CHUNK * 8;    /* [CHUNK] */
    int32_t *tot_cnt = p.ws_total_cnt + (size_t)par * E;
    int32_t *tot_rcnt = p.ws_total_rcnt + (size_t)par * W;
    const int tid = threadIdx.x, lane = tid & 31, wid = tid >> 5;

    const int T = tokens_now(p);
    int chunk = (T + gridDim.x - 1) / gridDim.x;
    if (chunk > A2A_CHUNK) chunk = A2A_CHUNK;
    if (chunk < 1) chunk = 1;
    const int nchunks = (T + chunk - 1) / chunk;
    const uint32_t nvec = p.payload_bytes / 16;
    /* One token per block (T <= blocks, the decode case): the block's token is loaded
     * into registers now (one 16-byte vector per thread, two at most, and one scale), so
     * that the load overlaps the routing below instead of following it. */
    const bool pre = !direct && chunk == 1 && nvec <= 2 * A2A_THREADS && p.S <= A2A_THREADS;
    uint4 pv0 = make_uint4(0, 0, 0, 0), pv1 = pv0;
    float psc = 0.f;
    if (pre && (int)blockIdx.x < nchunks) {
        const int t = blockIdx.x;
        const char *src = (const char *)p.x + (size_t)t * p.x_stride;
        if (tid < (int)nvec) pv0 = ld_in(src + (size_t)tid * 16);
        if (tid + A2A_THREADS < (int)nvec) pv1 = ld_in(src + (size_t)(tid + A2A_THREADS) * 16);
        if (tid < (int)p.S) psc = p.x_scale[(size_t)t * p.xs0 + (size_t)tid * p.xs1];
    }
    /* parity e+1's totals were last used by dispatch send (e-1), which has finished */
    if (blockIdx.x == 0) {
        int32_t *nxt_cnt = p.ws_total_cnt + (size_t)(par ^ 1) * E;
        int32_t *nxt_rcnt = p.ws_total_rcnt + (size_t)(par ^ 1) * W;
        for (int i = tid; i < E; i += A2A_THREADS) nxt_cnt[i] = 0;
        for (int i = tid; i < W; i += A2A_THREADS) nxt_rcnt[i] = 0;
    }
    for (int i = tid; i < E; i += A2A_THREADS) s_ecnt[i] = 0;
    for (int i = tid; i < W; i += A2A_THREADS) s_rcnt[i] = 0;
    __syncthreads();
    TR_MARK(); /* 1: started, tables cleared */

    bool cnt_done = false;    /* this block's CNT arrival, after its last chunk's counts */
    bool tables_done = false; /* direct: receive tables built */
    for (int c = blockIdx.x; c < nchunks; c += gridDim.x) {
        const int t0 = c * chunk;
        const int nt = min(chunk, T - t0);
        const int npairs = nt * K;
        for (int i = tid; i < nt * W; i += A2A_THREADS) s_slot[i] = -1;
        __syncthreads();
        /* 1: positions inside the chunk */
        for (int i = tid; i < npairs; i += A2A_THREADS) {
            const int t = t0 + i / K, k = i % K;
            const uint32_t e = (uint32_t)p.indices[(size_t)t * K + k];
            if (e >= (uint32_t)E) {
                s_pos[i] = -1; /* dropped route */
                continue;
            }
            const int r = e / L;
            bool first = true;
            for (int k2 = 0; k2 < k; k2++) {
                const uint32_t e2 = (uint32_t)p.indices[(size_t)t * K + k2];
                if (e2 < (uint32_t)E && (int)(e2 / L) == r) first = false;
            }
            s_pos[i] = atomicAdd(&s_ecnt[e], 1);
            if (first) s_slot[(i / K) * W + r] = atomicAdd(&s_rcnt[r], 1);
        }
        __syncthreads();
        TR_MARK(); /* 2: positions in the chunk */
        /* 2: reserve global ranges (one atomic per touched expert / rank) */
        for (int i = tid; i < npairs; i += A2A_THREADS) {
            if (s_pos[i] == 0) {
                const int e = p.indices[(size_t)(t0 + i / K) * K + i % K];
                s_ebase[e] = atomicAdd(&tot_cnt[e], s_ecnt[e]);
                /* the destination's count of (me, expert): a fire-and-forget reduction */
                const int r = e / L;
                atomicAdd(cnt_ptr(p, r, me) + (e - r * L), s_ecnt[e]);
            }
        }
        for (int r = tid; r < W; r += A2A_THREADS)
            if (s_rcnt[r] > 0) {
                s_rbase[r] = atomicAdd(&tot_rcnt[r], s_rcnt[r]);
                atomicAdd(cnt_ptr(p, r, me) + L, s_rcnt[r]);
            }
        __syncthreads();
        if (c + (int)gridDim.x >= nchunks) {
            arrive_cnt(p);
            cnt_done = true;
        }
        TR_MARK(); /* 3: global ranges reserved */
        /* 3: final positions; reset the per-chunk counters */
        for (int i = tid; i < npairs; i += A2A_THREADS) {
            if (s_pos[i] >= 0) {
                const int e = p.indices[(size_t)(t0 + i / K) * K + i % K];
                s_pos[i] += s_ebase[e];
            }
        }
        for (int i = tid; i < nt * W; i += A2A_THREADS)
            if (s_slot[i] >= 0) s_slot[i] += s_rbase[i % W];
        __syncthreads();
        for (int i = tid; i < npairs; i += A2A_THREADS) {
            const uint32_t e = (uint32_t)p.indices[(size_t)(t0 + i / K) * K + i % K];
            if (e < (uint32_t)E) s_ecnt[e] = 0;
        }
        for (int r = tid; r < W; r += A2A_THREADS) s_rcnt[r] = 0;
        /* destination list per token, and the slot metadata at each destination */
        for (int ti = tid; ti < nt; ti += A2A_THREADS) {
            int nd = 0;
            for (int r = 0; r < W; r++) {
                const int j = s_slot[ti * W + r];
                if (j >= 0) s_dl[ti * 8 + nd++] = (r << 24) | j;
            }
            s_nd[ti] = nd;
        }
        for (int i = tid; i < nt * W; i += A2A_THREADS) {
            const int ti = i / W, r = i % W, j = s_slot[i];
            if (j < 0) continue;
            int32_t *m = meta_ptr(p, r, me, j);
            const int t = t0 + ti;
            m[0] = t;
            for (int k = 0; k < K; k++) {
                const uint32_t e = (uint32_t)p.indices[(size_t)t * K + k];
                int v = -1;
                if (e < (uint32_t)E && (int)(e / L) == r)
                    v = (int)(((e - r * L) << A2A_IDX_BITS) | (uint32_t)s_pos[ti * K + k]);
                m[1 + k] = v;
            }
        }
        __syncthreads();
        TR_MARK(); /* 4: metadata stored */
        if (direct) {
            /* the block's only chunk (fused_direct_fits): once every source's counts are
             * in, the tokens for our own experts go from the input straight to the
             * output rows, in the same pass as the stores to the peers */
            if (!fused_tables(p, s_tab, ep)) return false;
            tables_done = true;
            TR_MARK(); /* 5: every source's counts in, tables built */
        }
        if (pre) {
            /* 4 (one token, prefetched): each thread stores its vectors to every
             * destination row */
            store_token_rows(p, s_dl, s_nd[0], pv0, pv1, psc);
            continue; /* T <= blocks: this was the block's only chunk */
        }
        /* 4: data. task = (token, segment); one warp per task */
        int nseg = (A2A_WARPS + nt - 1) / nt;
        if (nseg > (int)nvec / 32) nseg = (int)nvec / 32;
        if (nseg < 1) nseg = 1;
        const int vps = (nvec + nseg - 1) / nseg;
        for (int task = wid; task < nt * nseg; task += A2A_WARPS) {
            const int ti = task / nseg, seg = task % nseg;
            const int t = t0 + ti;
            const int nd = s_nd[ti];
            char *dst[8];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                dst[q] = nullptr;
                if (q < nd) {
                    const int d = s_dl[ti * 8 + q];
                    if (!direct || (d >> 24) != me) dst[q] = row_ptr(p, d >> 24, me, d & 0xffffff);
                }
            }
            if (!direct) {
                copy_token_seg(p, t, seg, nseg, vps, dst, nullptr, nullptr);
                continue;
            }
            int row = -1;
            if (lane < K) {
                const uint32_t e = (uint32_t)p.indices[(size_t)t * K + lane];
                if (e < (uint32_t)E && (int)(e / L) == me)
                    row = out_row(p, s_tab, me,
                                  (int)(((e - (uint32_t)(me * L)) << A2A_IDX_BITS) | (uint32_t)s_pos[ti * K + lane]));
            }
            char *dso[8];
            int orow[8];
#pragma unroll
            for (int q = 0; q < 8; q++) {
                orow[q] = __shfl_sync(FULL, row, q);
                dso[q] = orow[q] >= 0 ? (char *)p.out_x + (size_t)orow[q] * p.out_x_stride : nullptr;
            }
            copy_token_seg(p, t, seg, nseg, vps, dst, dso, orow);
        }
        __syncthreads();
    }
    if (!cnt_done) { /* no chunk: nothing counted, arrive all the same */
        __syncthreads();
        arrive_cnt(p);
    }

    TR_MARK(); /* 5: data stores issued */
    /* this block's data, metadata and count reductions, released to every destination */
    arrive_count(p, A2A_FLAG_DSP);
    TR_MARK(); /* 6: fenced and released */
    if (direct && !tables_done) { /* no chunk: the recv half needs the tables all the same */
        if (!fused_tables(p, s_tab, ep)) return false;
    }
    TR_PRINT("dsend", ep);
    return true;
}

/* Each form of a phase is a kernel of its own, picked by the host (a2a_kernel_launch):
 * the decode form of the fused dispatch measured 5 µs faster alone than as a branch of
 * one kernel that also held the chunked send (docs/history/performance-log.md). */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_send(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    dispatch_send(p, smem, nullptr, false);
    TR_FLUSH();
}

/* the decode form (send_one_fits) */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_send_one(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    dispatch_send_one(p, smem);
    TR_FLUSH();
}

/* ------------------------------------------------------------ recv tables ---- */

/* Number of experts this rank owns. */
static __device__ __forceinline__ int local_experts(const P &p) {
    const int n = (int)p.E - p.rank * (int)p.L;
    return n < 0 ? 0 : (n > (int)p.L ? (int)p.L : n);
}

/* Fills s_base[W][L] (first output row of each (source, local expert)) and
 * s_rowoff[W+1] (prefix of rows per source). from_counts: computed from the cnt region
 * (dispatch recv; block 0 also writes out_num_tokens and saves the tables for combine);
 * otherwise loaded from the workspace (combine send). Returns the rows received. */
static __device__ int load_recv_tables(const P &p, int *s_base, int *s_rowoff, bool from_counts) {
    const int W = p.world, L = p.L, me = p.rank, tid = threadIdx.x;
    const int nloc = local_experts(p);
    if (from_counts) {
        for (int i = tid; i < W * L; i += A2A_THREADS) {
            const int s = i / L, l = i % L;
            s_base[i] = l < nloc ? ld_vol_i(cnt_ptr(p, me, s) + l) : 0;
        }
        if (tid < W) s_rowoff[tid] = ld_vol_i(cnt_ptr(p, me, tid) + L);
    } else {
        for (int i = tid; i < W * L; i += A2A_THREADS) s_base[i] = p.ws_src_base[i];
        if (tid < W) s_rowoff[tid] = p.ws_nsrc[tid];
    }
    __syncthreads();
    if (from_counts) {
        if (blockIdx.x == 0 && tid < W) p.ws_nsrc[tid] = s_rowoff[tid];
        const int per = (L + A2A_THREADS - 1) / A2A_THREADS; /* <= 8 */
        int tl[8];
        int mysum = 0;
#pragma unroll
        for (int q = 0; q < 8; q++) {
            tl[q] = 0;
            const int l = tid * per + q;
            if (q < per && l < L) {
                int run = 0;
                for (int s = 0; s < W; s++) {
                    const int c = s_base[s * L + l];
                    s_base[s * L + l] = run;
                    run += c;
                }
                tl[q] = run;
                mysum += (run + (int)p.pad - 1) / (int)p.pad * (int)p.pad;
            }
        }
        int total;
        int off = block_excl_scan(mysum, &total);
#pragma unroll
        for (int q = 0; q < 8; q++) {
            const int l = tid * per + q;
            if (q < per && l < L) {
                for (int s = 0; s < W; s++) s_base[s * L + l] += off;
                if (blockIdx.x == 0 && l < nloc) p.out_num_tokens[l] = tl[q];
                off += (tl[q] + (int)p.pad - 1) / (int)p.pad * (int)p.pad;
            }
        }
        if (blockIdx.x == 0 && tid == 0 && total > (int)p.out_capacity)
            set_error(p, A2A_ERR_OVERFLOW, A2A_PH_DRECV, 0);
        __syncthreads();
        if (blockIdx.x == 0)
            for (int i = tid; i < W * L; i += A2A_THREADS) p.ws_src_base[i] = s_base[i];
    }
    if (tid == 0) s_rowoff[W] = excl_prefix_serial(s_rowoff, W);
    __syncthreads();
    return s_rowoff[W];
}

static __device__ __forceinline__ void row_to_src(const int *s_rowoff, int W, int r, int *s, int *j) {
    int k = 0;
    while (k < W - 1 && s_rowoff[k + 1] <= r) k++;
    *s = k;
    *j = r - s_rowoff[k];
}

/* ------------------------------------------------------------ dispatch recv ---- */

/* What a copy task has in flight before it knows its destination rows: the first
 * 4 x 32 vectors of its segment, the first 64 scales (last segment only) and the row's
 * metadata entry for k = lane. */
struct RowLoad {
    uint4 val[4];
    float sc0, sc1;
    int ent;
};

static __device__ __forceinline__ void row_load_first(const P &p, const char *src, int s, int j, int v0,
                                                      int v1, bool last_seg, RowLoad &rl) {
    const int lane = threadIdx.x & 31;
#pragma unroll
    for (int u = 0; u < 4; u++)
        if (v0 + lane + 32 * u < v1) rl.val[u] = ld_peer(src + (size_t)(v0 + lane + 32 * u) * 16);
    const float *ssrc = (const float *)(src + p.payload_bytes);
    rl.sc0 = rl.sc1 = 0.f;
    if (last_seg) {
        if (lane < (int)p.S) rl.sc0 = *(const volatile float *)&ssrc[lane];
        if (lane + 32 < (int)p.S) rl.sc1 = *(const volatile float *)&ssrc[lane + 32];
    }
    rl.ent = lane < (int)p.K ? ld_vol_i(meta_ptr(p, p.rank, s, j) + 1 + lane) : -1;
}

/* Maps the row's entries to output rows (s_base: first output row of (source, local
 * expert)) and stores the segment there, loading the rest of it; with `pipe` the next
 * 4 x 32 vectors are requested before the current ones are stored. Whole warp. */
static __device__ __forceinline__ void row_store(const P &p, const int *s_base, const char *src, int s, int v0,
                                                 int v1, bool last_seg, const RowLoad &rl, bool pipe) {
    const int lane = threadIdx.x & 31;
    const int my = out_row(p, s_base, s, rl.ent);
    int dr[8];
    char *dst[8];
#pragma unroll
    for (int q = 0; q < 8; q++) {
        dr[q] = __shfl_sync(FULL, my, q);
        dst[q] = dr[q] >= 0 ? (char *)p.out_x + (size_t)dr[q] * p.out_x_stride : nullptr;
    }
    uint4 cur[4];
#pragma unroll
    for (int u = 0; u < 4; u++) cur[u] = rl.val[u];
    for (int v = v0 + lane; v < v1; v += 32 * 4) {
        uint4 nxt[4];
        if (pipe) {
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (v + 128 + 32 * u < v1) nxt[u] = ld_peer(src + (size_t)(v + 128 + 32 * u) * 16);
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (v + 32 * u < v1) {
#pragma unroll
                for (int q = 0; q < 8; q++)
                    if (dst[q]) st_v4(dst[q] + (size_t)(v + 32 * u) * 16, cur[u]);
            }
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            if (pipe) cur[u] = nxt[u];
            else if (v + 128 + 32 * u < v1) cur[u] = ld_peer(src + (size_t)(v + 128 + 32 * u) * 16);
        }
    }
    if (last_seg) {
        const float *ssrc = (const float *)(src + p.payload_bytes);
#pragma unroll
        for (int q = 0; q < 8; q++) {
            if (dr[q] < 0) continue;
            float *o = p.out_scale + (size_t)dr[q] * p.os0;
            if (lane < (int)p.S) o[(size_t)lane * p.os1] = rl.sc0;
            if (lane + 32 < (int)p.S) o[(size_t)(lane + 32) * p.os1] = rl.sc1;
        }
        for (int i = lane + 64; i < (int)p.S; i += 32) {
            const float f = *(const volatile float *)&ssrc[i];
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (dr[q] >= 0) p.out_scale[(size_t)dr[q] * p.os0 + (size_t)i * p.os1] = f;
        }
    }
}

/* Dispatch recv, general form: every block waits for every source, builds the receive
 * tables, then copies rows (row r of the concatenation over sources) in warp tasks.
 * skip >= 0 (fused launch that stored its own rows directly): the tables are already in
 * s_base and source `skip` has no rows to copy. */
static __device__ __forceinline__ void dispatch_recv_rows(const P &p, int *s_base, int skip) {
    TR_DECL;
    TR_MARK();
    uint32_t ep;
    if (!start(p, &ep)) return;
    if (!block_wait_all(p, A2A_FLAG_DSP, arrive_target(ep), A2A_PH_DRECV)) return;
    TR_MARK(); /* 1: every source's data is here */
    const int W = p.world, L = p.L, me = p.rank;
    int *s_rowoff = s_base + W * L;
    int nrows;
    if (skip < 0) {
        nrows = load_recv_tables(p, s_base, s_rowoff, true);
    } else {
        if ((int)threadIdx.x < W)
            s_rowoff[threadIdx.x] = (int)threadIdx.x == skip ? 0 : ld_vol_i(cnt_ptr(p, me, threadIdx.x) + L);
        __syncthreads();
        if (threadIdx.x == 0) s_rowoff[W] = excl_prefix_serial(s_rowoff, W);
        __syncthreads();
        nrows = s_rowoff[W];
    }
    TR_MARK(); /* 2: tables built */
    const int nvec = p.payload_bytes / 16;
    const int nseg = pick_nseg(nrows, nvec, 32);
    const int vps = (nvec + nseg - 1) / nseg;
    const int nwarps = gridDim.x * A2A_WARPS;
    const bool pipe = !(p.dev_flags & A2A_DEV_OLD_RECV);
    for (int task = blockIdx.x * A2A_WARPS + (threadIdx.x >> 5); task < nrows * nseg; task += nwarps) {
        const int r = task / nseg, seg = task % nseg;
        int s, j;
        row_to_src(s_rowoff, W, r, &s, &j);
        const char *src = row_ptr(p, me, s, j);
        const int v0 = seg * vps, v1 = min(nvec, v0 + vps);
        const bool last_seg = seg == nseg - 1;
        RowLoad rl;
        row_load_first(p, src, s, j, v0, v1, last_seg, rl);
        row_store(p, s_base, src, s, v0, v1, last_seg, rl, pipe);
    }
#ifdef A2A_TRACE
    __syncthreads();
#endif
    TR_MARK(); /* 3: every warp of the block done */
    TR_PRINT("drecv", ep);
}

/* Whether dispatch recv may take the slot path: one round of tasks over every staging
 * slot (W x Tmax rows, filled or not), and receive tables that one warp builds from at
 * most 16 counts per lane. */
static __host__ __device__ __forceinline__ bool recv_slots_fit(const P &p, int nblocks) {
    const int per = ((int)p.L + 31) / 32;
    return p.world <= 32 && p.world * (int)p.Tmax <= nblocks * A2A_WARPS && p.world * per <= 16 &&
           !(p.dev_flags & A2A_DEV_OLD_RECV);
}

/* One warp builds s_base[W][L] from the counts every source reduced into our cnt region
 * (the first output row of each (source, local expert): experts in order, each padded,
 * sources in order inside an expert). Lane x owns experts x*per .. x*per+per-1 and holds
 * their W counts in registers; one warp scan gives each lane its experts' offset. Block
 * 0 also publishes out_num_tokens, the tables for combine (ws_src_base, ws_nsrc) and the
 * overflow check. Called after every source's DSP counter was acquired by this warp. */
static __device__ void warp_recv_tables(const P &p, int *s_base) {
    const int W = p.world, L = p.L, me = p.rank, lane = threadIdx.x & 31;
    const int per = (L + 31) / 32, n = W * per, nloc = local_experts(p), pad = (int)p.pad;
    int c[16];
#pragma unroll
    for (int i = 0; i < 16; i++) { /* i = q * W + s: expert lane*per+q, source s */
        c[i] = 0;
        if (i < n) {
            const int q = i / W, s = i - q * W, l = lane * per + q;
            if (l < nloc) c[i] = ld_vol_i(cnt_ptr(p, me, s) + l);
        }
    }
    if (blockIdx.x == 0 && lane < W) p.ws_nsrc[lane] = ld_vol_i(cnt_ptr(p, me, lane) + L);
    int mysum = 0, run = 0;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (i < n) {
            const int s = i % W;
            if (s == 0) run = 0;
            run += c[i];
            if (s == W - 1) mysum += (run + pad - 1) / pad * pad;
        }
    }
    int x = mysum;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const int y = __shfl_up_sync(FULL, x, o);
        if (lane >= o) x += y;
    }
    const int total = __shfl_sync(FULL, x, 31);
    int off = x - mysum;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        if (i < n) {
            const int q = i / W, s = i - q * W, l = lane * per + q;
            if (s == 0) run = 0;
            if (l < L) {
                s_base[s * L + l] = off + run;
                if (blockIdx.x == 0) p.ws_src_base[s * L + l] = off + run;
            }
            run += c[i];
            if (s == W - 1) {
                if (blockIdx.x == 0 && l < nloc) p.out_num_tokens[l] = run;
                off += (run + pad - 1) / pad * pad;
            }
        }
    }
    if (blockIdx.x == 0 && lane == 0 && total > (int)p.out_capacity)
        set_error(p, A2A_ERR_OVERFLOW, A2A_PH_DRECV, 0);
}

/* Dispatch recv, slot form (decode: W x Tmax <= warps). Task = (source s, staging slot j,
 * segment), so a warp needs no table to find its row: once the block has acquired every
 * source's counter (W threads poll, as in the row form: one poller per warp instead put
 * 16x more strong loads on the flag lines and cost 4.6 µs, docs/history/performance-log.md), each
 * warp requests its segment, the row's metadata and the source's row count while the
 * last warp builds the receive tables. One barrier joins the two; tasks past the
 * source's row count store nothing. Used by the split recv launch. */
static __device__ __forceinline__ void dispatch_recv_slots(const P &p, int *s_base) {
    TR_DECL;
    TR_MARK();
    uint32_t ep;
    if (!start(p, &ep)) return;
    const uint32_t target = arrive_target(ep);
    const int W = p.world, me = p.rank, wid = threadIdx.x >> 5;
    const int Tmax = (int)p.Tmax, nvec = p.payload_bytes / 16;
    const int nseg = pick_nseg(W * Tmax, nvec, 32);
    const int vps = (nvec + nseg - 1) / nseg;
    const int task = blockIdx.x * A2A_WARPS + wid;
    const int r = task / nseg, seg = task % nseg;
    const int s = r / Tmax, j = r % Tmax;
    const int v0 = seg * vps, v1 = min(nvec, v0 + vps);
    const bool last_seg = seg == nseg - 1;
    const char *src = row_ptr(p, me, s < W ? s : 0, j);
    const bool mine = r < W * Tmax; /* this warp has a slot */
    if (!block_wait_all(p, A2A_FLAG_DSP, target, A2A_PH_DRECV)) return;
    RowLoad rl;
    int nsrc = 0;
    if (mine) {
        row_load_first(p, src, s, j, v0, v1, last_seg, rl);
        nsrc = ld_vol_i(cnt_ptr(p, me, s) + p.L);
    }
    TR_MARK(); /* 1: every source acquired, row loads issued */
    if (wid == A2A_WARPS - 1) warp_recv_tables(p, s_base);
    __syncthreads();
    TR_MARK(); /* 2: tables built */
    if (mine && j < nsrc) row_store(p, s_base, src, s, v0, v1, last_seg, rl, true);
#ifdef A2A_TRACE
    __syncthreads();
#endif
    TR_MARK(); /* 3: every warp of the block done */
    TR_PRINT("drecv2", ep);
}

/* Split recv launch: the row form, and the slot form where it fits (recv_slots_fit,
 * picked by the host). */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_recv(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    dispatch_recv_rows(p, smem, -1);
    TR_FLUSH();
}

__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_recv_slots(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    dispatch_recv_slots(p, smem);
    TR_FLUSH();
}

/* send and recv in one launch (co-resident grid: our own counter is raised by our own
 * blocks, each before it starts waiting) */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_both(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    /* receive tables after the send's shared memory: with `direct` the send half builds
     * them (to store the rows for our own experts straight to the output) and the recv
     * half reuses them and copies only the peers' rows */
    int *s_tab = smem + send_smem_ints(p);
    const bool direct = fused_direct_fits(p);
    if (!dispatch_send(p, smem, s_tab, direct)) return;
    __syncthreads();
    /* the row form: decode sizes, where the slot form could pay, launch
     * k_dispatch_both_one instead */
    dispatch_recv_rows(p, s_tab, direct ? p.rank : -1);
    TR_FLUSH();
}

/* send and recv in one launch at decode sizes (send_one_fits): the one-token send and
 * the row-form recv. */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_both_one(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    if (!dispatch_send_one(p, smem)) return;
    __syncthreads();
    dispatch_recv_rows(p, smem, -1); /* the send's few shared ints are dead by now */
    TR_FLUSH();
}

/* the same with the slot-form recv (where recv_slots_fit) */
__global__ void __launch_bounds__(A2A_THREADS, 1) k_dispatch_both_one_slots(P p) {
    extern __shared__ int smem[];
    TR_BEGIN();
    if (!dispatch_send_one(p, smem)) return;
    __syncthreads();
    dispatch_recv_slots(p, smem);
    TR_FLUSH();
}

/* ------------------------------------------------------------ element access ---- */

template <int DT> struct Elt;
template <> struct Elt<A2A_DTYPE_BF16> { static constexpr int bytes = 2; };
template <> struct Elt<A2A_DTYPE_F16> { static constexpr int bytes = 2; };
template <> struct Elt<A2A_DTYPE_F32> { static constexpr int bytes = 4; };

static __device__ __forceinline__ void u4_to_f(uint4 u, float *f, int dt) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (dt == A2A_DTYPE_BF16) {
            f[2 * i] = __uint_as_float(w[i] << 16);
            f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
        } else {
            __half2 h = *(const __half2 *)&w[i];
            const float2 ff = __half22float2(h);
            f[2 * i] = ff.x;
            f[2 * i + 1] = ff.y;
        }
    }
}

/* 8 elements of type DT at p (16 or 32 bytes) as floats. M: 0 caller input (read-only),
 * 1 written by a peer, 2 plain. */
template <int M> static __device__ __forceinline__ uint4 ld16(const char *p) {
    if (M == 0) return ld_in(p);
    if (M == 1) return ld_peer(p);
    return *(const uint4 *)p;
}
template <int DT, int M> static __device__ __forceinline__ void load8(const char *p, float *f) {
    if (DT == A2A_DTYPE_F32) {
        const uint4 a = ld16<M>(p);
        const uint4 b = ld16<M>(p + 16);
        f[0] = __uint_as_float(a.x); f[1] = __uint_as_float(a.y);
        f[2] = __uint_as_float(a.z); f[3] = __uint_as_float(a.w);
        f[4] = __uint_as_float(b.x); f[5] = __uint_as_float(b.y);
        f[6] = __uint_as_float(b.z); f[7] = __uint_as_float(b.w);
    } else {
        u4_to_f(ld16<M>(p), f, DT);
    }
}

template <int DT> static __device__ __forceinline__ void store8(char *p, const float *f) {
    if (DT == A2A_DTYPE_F32) {
        st_v4(p, make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                            __float_as_uint(f[3])));
        st_v4(p + 16, make_uint4(__float_as_uint(f[4]), __float_as_uint(f[5]),
                                 __float_as_uint(f[6]), __float_as_uint(f[7])));
    } else {
        uint32_t w[4];
#pragma unroll
        for (int i = 0; i < 4; i++) {
            if (DT == A2A_DTYPE_BF16) {
                __nv_bfloat162 b = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
                w[i] = *(uint32_t *)&b;
            } else {
                __half2 h = __floats2half2_rn(f[2 * i], f[2 * i + 1]);
                w[i] = *(uint32_t *)&h;
            }
        }
        st_v4(p, make_uint4(w[0], w[1], w[2], w[3]));
    }
}

/* ------------------------------------------------------------ combine send ---- */

template <int DT, int PT> static __device__ __forceinline__ bool combine_send(const P &p, int *smem) {
    uint32_t ep;
    if (!start(p, &ep)) return false;
    const int W = p.world, L = p.L, K = p.K, E = p.E, me = p.rank;
    const int tid = threadIdx.x, lane = tid & 31;
    /* A: publish this rank's weights to the ranks that own the experts */
    {
        const int T = tokens_now(p);
        if (T * K <= 8 * A2A_THREADS) {
            /* small batch: block 0 alone, no grid-wide arrival on the critical path */
            if (blockIdx.x == 0) {
                for (int i = tid; i < T * K; i += A2A_THREADS) {
                    const uint32_t e = (uint32_t)p.indices[i];
                    if (e < (uint32_t)E) wgt_ptr(p, e / L, me)[i] = p.weights[i];
                }
                if (p.dev_flags & A2A_DEV_FENCE_ALL) fence_acq_rel_sys();
                __syncthreads(); /* the stores precede the cumulative release */
                if (tid < W) st_release_sys(flag_ptr(p, tid, A2A_FLAG_WGT, me), ep);
            }
        } else {
            for (int i = blockIdx.x * A2A_THREADS + tid; i < T * K; i += gridDim.x * A2A_THREADS) {
                const uint32_t e = (uint32_t)p.indices[i];
                if (e < (uint32_t)E) wgt_ptr(p, e / L, me)[i] = p.weights[i];
            }
            if (arrive_last(p, &p.ws_arrive[A2A_ARR_WGT]))
                if (tid < W) st_release_sys(flag_ptr(p, tid, A2A_FLAG_WGT, me), ep);
        }
    }
    /* the receive tables are local (saved by dispatch recv): loaded while the weights
     * travel */
    int *s_base = smem, *s_rowoff = smem + W * L;
    const int nrows = load_recv_tables(p, s_base, s_rowoff, false);
    /* B: every source's weights (co-resident grid: our own last block publishes too) */
    if (!block_wait_all(p, A2A_FLAG_WGT, ep, A2A_PH_CSEND)) return false;
    /* C: weighted partial sum of the local experts' rows of each received token */
    const int nchunk = p.H / 8;
    const int nseg = pick_nseg(nrows, nchunk, 32);
    const int cps = (nchunk + nseg - 1) / nseg;
    const int nwarps = gridDim.x * A2A_WARPS;
    const uint32_t idx_mask = (1u << A2A_IDX_BITS) - 1;
    constexpr int EB = Elt<DT>::bytes;
    for (int task = blockIdx.x * A2A_WARPS + (tid >> 5); task < nrows * nseg; task += nwarps) {
        const int r = task / nseg, seg = task % nseg;
        int s, j;
        row_to_src(s_rowoff, W, r, &s, &j);
        const int32_t *m = meta_ptr(p, me, s, j);
        const int t = ld_vol_i(m);
        int my = -1;
        float myw = 0.f;
        if (lane < K) {
            const int ent = ld_vol_i(m + 1 + lane);
            if (ent >= 0) {
                my = s_base[s * L + (ent >> A2A_IDX_BITS)] + (int)((uint32_t)ent & idx_mask);
                if (my >= (int)p.y_rows) {
                    set_error(p, A2A_ERR_OVERFLOW, A2A_PH_CSEND, s);
                    my = -1;
                }
                myw = *(const volatile float *)&wgt_ptr(p, me, s)[(size_t)t * K + lane];
            }
        }
        const char *yr[8];
        float w[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
            const int row = __shfl_sync(FULL, my, q);
            w[q] = __shfl_sync(FULL, myw, q);
            yr[q] = row >= 0 ? (const char *)p.y + (size_t)row * p.y_stride : nullptr;
        }
        char *dstp = (char *)part_ptr(p, s, me, t);
        const int c0 = seg * cps, c1 = min(nchunk, c0 + cps);
        for (int c = c0 + lane; c < c1; c += 32) {
            float acc[8];
#pragma unroll
            for (int i = 0; i < 8; i++) acc[i] = 0.f;
            float v[8][8];
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (yr[q]) load8<DT, 0>(yr[q] + (size_t)c * 8 * EB, v[q]);
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (yr[q]) {
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[i] = fmaf(w[q], v[q][i], acc[i]);
                }
            store8<PT>(dstp + (size_t)c * 8 * Elt<PT>::bytes, acc);
        }
    }
    /* the count region was consumed by dispatch recv (tables are in the workspace): clear
     * it for the senders' reductions of the next iteration, which start after they see
     * our CMB flag */
    if (blockIdx.x == 0)
        for (int i = tid; i < W * (L + 1); i += A2A_THREADS) cnt_ptr(p, me, 0)[i] = 0;
    /* D: partials delivered and our reads of cnt/meta/rows/wgt done (per block) */
    arrive_count(p, A2A_FLAG_CMB);
    return true;
}

template <int DT, int PT> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_send(P p) {
    extern __shared__ int smem[];
    combine_send<DT, PT>(p, smem);
}

/* ------------------------------------------------------------ combine recv ---- */

template <int DT, int PT> static __device__ __forceinline__ void combine_recv(const P &p) {
    uint32_t ep;
    if (!start(p, &ep)) return;
    if (!block_wait_all(p, A2A_FLAG_CMB, arrive_target(ep), A2A_PH_CRECV)) return;
    const int K = p.K, E = p.E, L = p.L, me = p.rank;
    const int lane = threadIdx.x & 31;
    const int T = tokens_now(p);
    const int nchunk = p.H / 8;
    const int nseg = pick_nseg(T, nchunk, 32);
    const int cps = (nchunk + nseg - 1) / nseg;
    const int nwarps = gridDim.x * A2A_WARPS;
    constexpr int EB = Elt<DT>::bytes;
    for (int task = blockIdx.x * A2A_WARPS + (threadIdx.x >> 5); task < T * nseg; task += nwarps) {
        const int t = task / nseg, seg = task % nseg;
        uint32_t bit = 0;
        if (lane < K) {
            const uint32_t e = (uint32_t)p.indices[(size_t)t * K + lane];
            if (e < (uint32_t)E) bit = 1u << (e / L);
        }
        uint32_t mask = __reduce_or_sync(FULL, bit);
        const float *src[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
            src[q] = nullptr;
            if (mask) {
                const int r = __ffs(mask) - 1;
                mask &= mask - 1;
                src[q] = part_ptr(p, me, r, t);
            }
        }
        char *outp = (char *)p.out + (size_t)t * p.out_stride;
        const int c0 = seg * cps, c1 = min(nchunk, c0 + cps);
        for (int c = c0 + lane; c < c1; c += 32) {
            float acc[8];
            if (p.accumulate) {
                load8<DT, 2>(outp + (size_t)c * 8 * EB, acc);
            } else {
#pragma unroll
                for (int i = 0; i < 8; i++) acc[i] = 0.f;
            }
            float v[8][8];
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (src[q]) load8<PT, 1>((const char *)src[q] + (size_t)c * 8 * Elt<PT>::bytes, v[q]);
#pragma unroll
            for (int q = 0; q < 8; q++)
                if (src[q]) {
#pragma unroll
                    for (int i = 0; i < 8; i++) acc[i] += v[q][i];
                }
            store8<DT>(outp + (size_t)c * 8 * EB, acc);
        }
    }
    /* only local stores here: gpu scope (the next kernels run on this GPU, stream order) */
    if (arrive_last(p, &p.ws_arrive[A2A_ARR_CRECV], false))
        if (threadIdx.x == 0) {
            *(volatile uint32_t *)p.ws_iter = ep;
            __threadfence();
        }
}

template <int DT, int PT> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_recv(P p) {
    combine_recv<DT, PT>(p);
}

template <int DT, int PT> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_both(P p) {
    extern __shared__ int smem[];
    if (!combine_send<DT, PT>(p, smem)) return;
    combine_recv<DT, PT>(p);
}

/* ------------------------------------------------------------ launch ---- */

extern "C" size_t a2a_kernel_smem(int phase, const a2a_kparams *p) {
    switch (phase) {
    case A2A_PH_DSEND:
        return sizeof(int) * send_smem_ints(*p);
    case A2A_PH_DRECV:
    case A2A_PH_CSEND:
    case A2A_PH_CBOTH:
        return sizeof(int) * ((size_t)p->world * p->L + p->world + 1);
    case A2A_PH_DBOTH: /* the receive tables follow the send's area (k_dispatch_both) */
        return a2a_kernel_smem(A2A_PH_DSEND, p) + a2a_kernel_smem(A2A_PH_DRECV, p);
    default:
        return 0;
    }
}

typedef void (*kfn)(P);

#define A2A_BF A2A_DTYPE_BF16
#define A2A_HF A2A_DTYPE_F16
#define A2A_FF A2A_DTYPE_F32

static kfn pick(int phase, int dt, int pf32) {
    switch (phase) {
    case A2A_PH_DSEND: return k_dispatch_send;
    case A2A_PH_DRECV: return k_dispatch_recv;
    case A2A_PH_DBOTH: return k_dispatch_both;
    case A2A_PH_CBOTH:
        if (dt == A2A_BF) return pf32 ? k_combine_both<A2A_BF, A2A_FF> : k_combine_both<A2A_BF, A2A_BF>;
        if (dt == A2A_HF) return pf32 ? k_combine_both<A2A_HF, A2A_FF> : k_combine_both<A2A_HF, A2A_HF>;
        return k_combine_both<A2A_FF, A2A_FF>;
    case A2A_PH_CSEND:
        if (dt == A2A_BF) return pf32 ? k_combine_send<A2A_BF, A2A_FF> : k_combine_send<A2A_BF, A2A_BF>;
        if (dt == A2A_HF) return pf32 ? k_combine_send<A2A_HF, A2A_FF> : k_combine_send<A2A_HF, A2A_HF>;
        return k_combine_send<A2A_FF, A2A_FF>;
    default:
        if (dt == A2A_BF) return pf32 ? k_combine_recv<A2A_BF, A2A_FF> : k_combine_recv<A2A_BF, A2A_BF>;
        if (dt == A2A_HF) return pf32 ? k_combine_recv<A2A_HF, A2A_FF> : k_combine_recv<A2A_HF, A2A_HF>;
        return k_combine_recv<A2A_FF, A2A_FF>;
    }
}

/* The decode-size form of a dispatch phase, or nullptr where the phase has one form or
 * the general one applies. */
static kfn pick_form(int phase, const a2a_kparams *p, int nblocks) {
    switch (phase) {
    case A2A_PH_DSEND: return send_one_fits(*p, (unsigned)nblocks) ? k_dispatch_send_one : nullptr;
    case A2A_PH_DRECV: return recv_slots_fit(*p, nblocks) ? k_dispatch_recv_slots : nullptr;
    case A2A_PH_DBOTH:
        if (!send_one_fits(*p, (unsigned)nblocks)) return nullptr;
        return recv_slots_fit(*p, nblocks) && (p->dev_flags & A2A_DEV_FUSED_SLOTS) ? k_dispatch_both_one_slots
                                                                                  : k_dispatch_both_one;
    default: return nullptr;
    }
}

extern "C" int a2a_kernel_launch(int phase, const a2a_kparams *p, int nblocks, void *stream) {
    kfn f = pick_form(phase, p, nblocks);
    if (!f) f = pick(phase, (int)p->out_dtype, (int)p->partial_f32);
    const size_t smem = a2a_kernel_smem(phase, p);
    cudaError_t err = cudaSuccess;
    if (smem > 48 * 1024)
        err = cudaFuncSetAttribute((const void *)f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   (int)smem);
    if (err != cudaSuccess) return (int)err;
    f<<<nblocks, A2A_THREADS, smem, (cudaStream_t)stream>>>(*p);
    return (int)cudaGetLastError();
}

extern "C" int a2a_kernel_max_blocks(const a2a_kparams *p, int device) {
    int sms = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) return -1;
    int best = 1 << 30;
    /* every kernel a launch may pick: each phase's general form, and the decode-size
     * forms of the dispatch phases (same shared memory as their phase) */
    static const int form_phase[4] = {A2A_PH_DSEND, A2A_PH_DRECV, A2A_PH_DBOTH, A2A_PH_DBOTH};
    const kfn form[4] = {k_dispatch_send_one, k_dispatch_recv_slots, k_dispatch_both_one, k_dispatch_both_one_slots};
    for (int i = 0; i < A2A_PH_N + 4; i++) {
        const int ph = i < A2A_PH_N ? i : form_phase[i - A2A_PH_N];
        const kfn f = i < A2A_PH_N ? pick(ph, (int)p->out_dtype, (int)p->partial_f32) : form[i - A2A_PH_N];
        const size_t smem = a2a_kernel_smem(ph, p);
        if (smem > 48 * 1024 &&
            cudaFuncSetAttribute((const void *)f, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 (int)smem) != cudaSuccess)
            return -1;
        int nb = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&nb, f, A2A_THREADS, smem) != cudaSuccess)
            return -1;
        if (nb * sms < best) best = nb * sms;
    }
    return best;
}
