/*
 * Device primitives shared by the all-to-all kernels (a2a_dispatch.cu, a2a_combine.cu):
 * loads and stores, fences, the shared-block address helpers, the error word, bounded
 * flag waits, block arrivals, scans and the receive tables.
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
 *
 * RDMA peers (docs/a2a-internode.md). Every function that touches a peer's memory or
 * flags takes a template argument R: whether the context has any RDMA peer
 * (p.rdma_mask != 0, the same on every rank of a slice). With R = false the RDMA tests
 * fold away and the code is the NVLink code; with R = true the address helpers apply the
 * address rule (slot_base), sends skip RDMA destinations' counters, and the last block
 * of a proxied phase rings the proxy's doorbell (ring_doorbell):
 *
 *   every block:  its stores (stage included) -> bar.sync -> thread 0: fence.acq_rel.sys,
 *                 atomicAdd(arrival counter)                          (arrive_last)
 *   last block:   thread 0: fence.acq_rel.sys (acquire: the counter's RMW chain reads
 *                 every block's release) -> bar.sync -> lengths into px_tx (and, for
 *                 DSP, the stage cnt rows) -> bar.sync -> thread 0: fence.sc.sys
 *                 (__threadfence_system) -> st.release.sys.u64 epoch into the doorbell
 *   proxy:        reads the doorbell (acquire), reads px_tx, posts the writes; the NIC
 *                 reads stage by DMA
 *
 * Each block's release (bar.sync, then a fence by the arriving thread: cumulative, as
 * above) is acquired by the last block through the counter, and the last block's fence
 * then releases everything at system scope to the doorbell, so a host thread that sees
 * the epoch also sees every block's stage stores and the lengths. The NIC is not a PTX
 * thread: we rely on what GPUDirect RDMA (and NVSHMEM/DeepEP's proxies) rely on, that
 * stores visible at system scope are at the point of coherence (the GPU's L2 for GPU
 * memory, host memory for pinned host memory) where a later PCIe read by the NIC,
 * issued after the host thread observed the doorbell, finds them. Arrival flags: the
 * engine raises the epoch word with a release store after the provider reported the
 * write placed; one thread per source acquires it (ld.acquire.sys) and bar.sync hands
 * that on to the block, as for the NVLink counters.
 */
#ifndef TENDRIL_A2A_DEVICE_CUH
#define TENDRIL_A2A_DEVICE_CUH

#include <cuda_runtime.h>
#include <stdint.h>

#include "../a2a_kernels.h"
#include "a2a_dev.cuh"

typedef a2a_kparams P;

#define FULL 0xffffffffu

/* ------------------------------------------------------------ primitives ---- */

__device__ __forceinline__ uint64_t gtimer(void) {
    uint64_t t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
__device__ __forceinline__ uint32_t ld_acquire_sys(const uint32_t *p) {
    uint32_t v;
    asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_release_sys(uint32_t *p, uint32_t v) {
    asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ void st_release_sys_u64(uint64_t *p, uint64_t v) {
    asm volatile("st.release.sys.global.u64 [%0], %1;" ::"l"(p), "l"(v) : "memory");
}
__device__ __forceinline__ void fence_acq_rel_sys(void) {
    asm volatile("fence.acq_rel.sys;" ::: "memory");
}
__device__ __forceinline__ void fence_acq_rel_gpu(void) {
    asm volatile("fence.acq_rel.gpu;" ::: "memory");
}
/* fire-and-forget add with release semantics (no value comes back) */
__device__ __forceinline__ void red_release_sys_add(uint32_t *p, uint32_t v) {
    asm volatile("red.release.sys.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t ld_vol(const uint32_t *p) {
    return *(const volatile uint32_t *)p;
}
__device__ __forceinline__ int32_t ld_vol_i(const int32_t *p) {
    return *(const volatile int32_t *)p;
}
/* streaming read of caller input (read-only for the kernel's lifetime) */
__device__ __forceinline__ uint4 ld_in(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p));
    return v;
}
/* read of data a peer wrote (after the acquire of its flag) */
__device__ __forceinline__ uint4 ld_peer(const void *p) {
    uint4 v;
    asm volatile("ld.global.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "l"(p) : "memory");
    return v;
}
__device__ __forceinline__ void st_v4(void *p, uint4 v) {
    asm volatile("st.global.v4.u32 [%0], {%1,%2,%3,%4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z),
                 "r"(v.w)
                 : "memory");
}

/* An NVLink flag line (RDMA peers have none: src_flag, ring_doorbell). */
__device__ __forceinline__ uint32_t *flag_ptr(const P &p, int owner, int kind, int src) {
    return (uint32_t *)(p.peer[owner] + p.off_flags) + ((size_t)kind * p.world + src) * 32;
}
/* Whether slice peer q is reached over RDMA. */
__device__ __forceinline__ bool rdma_peer(const P &p, int q) { return ((p.rdma_mask >> q) & 1) != 0; }

/* The address rule (docs/a2a-internode.md, "Memory"): the block and slot where what
 * `src` sends `owner` lives, as seen from this rank. Data of an RDMA source for us is in
 * rblock (slot = source); data for an RDMA owner is staged locally (slot = owner, src is
 * then always us); everything else is in the owner's shared block (slot = source). */
template <bool R> __device__ __forceinline__ char *slot_base(const P &p, int owner, int src, int *slot) {
    if (R) {
        if (owner == p.rank) {
            if (rdma_peer(p, src)) {
                *slot = src;
                return p.rblock;
            }
        } else if (rdma_peer(p, owner)) {
            *slot = owner;
            return p.stage;
        }
    }
    *slot = src;
    return p.peer[owner];
}

template <bool R> __device__ __forceinline__ int32_t *cnt_ptr(const P &p, int owner, int src) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return (int32_t *)(b + p.off_cnt) + (size_t)s * (p.L + 1);
}
template <bool R> __device__ __forceinline__ int32_t *meta_ptr(const P &p, int owner, int src, int j) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return (int32_t *)(b + p.off_meta) + ((size_t)s * p.Tmax + j) * (p.K + 1);
}
template <bool R> __device__ __forceinline__ char *row_ptr(const P &p, int owner, int src, int j) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return b + p.off_rows + ((size_t)s * p.Tmax + j) * p.row_bytes;
}
template <bool R> __device__ __forceinline__ float *wgt_ptr(const P &p, int owner, int src) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return (float *)(b + p.off_wgt) + (size_t)s * p.Tmax * p.K;
}
/* Row t (token id) of an NVLink part slot: row stride H*4 whatever the partials' type. */
template <bool R> __device__ __forceinline__ float *part_ptr(const P &p, int owner, int src, int row) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return (float *)(b + p.off_part) + ((size_t)s * p.Tmax + row) * p.H;
}
/* Compact row j (the source's dispatch row) of a part slot of an RDMA peer (stage slot
 * of an RDMA owner, rblock slot of an RDMA source): rows packed at H * PB bytes, PB the
 * partials' element size, so that the CMB write carries n * H * PB bytes (the proxy's
 * layout.part_row_bytes, filled by the host with the same value); the slot stride stays
 * Tmax*H*4 (docs/a2a-internode.md, "Signals", CMB). */
template <bool R, int PB> __device__ __forceinline__ char *part_rdma_ptr(const P &p, int owner, int src, int j) {
    int s;
    char *b = slot_base<R>(p, owner, src, &s);
    return b + p.off_part + (size_t)s * p.Tmax * p.H * 4 + (size_t)j * p.H * PB;
}

__device__ __forceinline__ bool failed(const P &p) { return ld_vol(p.ws_err) != 0; }

__device__ inline void set_error(const P &p, uint32_t code, uint32_t phase, uint32_t peer) {
    uint32_t w = (code << 24) | (phase << 16) | (peer & 0xffff);
    if (atomicCAS(p.ws_err, 0u, w) == 0u) {
        *(volatile uint32_t *)p.host_err = w;
        __threadfence_system();
    }
}

/* One thread waits until *flag >= target (wrap-safe), a deadline passes, or the context
 * failed / was aborted. */
__device__ inline bool wait_flag(const P &p, const uint32_t *flag, uint32_t target, uint32_t phase,
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

/* Target of a DSP/CMB/CNT counter for epoch ep (see the header comment); WGT holds the
 * epoch itself. */
__device__ __forceinline__ uint32_t arrive_target(uint32_t ep) { return ep * A2A_ARRIVE_SPAN; }

/* The word that says source s's flag `kind` of epoch ep is complete here, and the value
 * it must reach (wrap-safe >=): our own block's flag line and nvl_target (the NVLink
 * value, see below) for NVLink sources and self; for an RDMA source the low 32 bits of
 * the proxy's arrival epoch word of the phase that carries `kind` (DSP and CNT: DSP),
 * which reaches ep when every write of that phase has landed. */
template <bool R>
__device__ __forceinline__ const uint32_t *src_flag(const P &p, int kind, int s, uint32_t ep, uint32_t nvl_target,
                                                    uint32_t *target) {
    if (R && rdma_peer(p, s)) {
        const int ph = kind == A2A_FLAG_WGT ? A2A_PX_WGT : kind == A2A_FLAG_CMB ? A2A_PX_CMB : A2A_PX_DSP;
        *target = ep;
        return (const uint32_t *)p.px_flag[ph * A2A_PX_MAX_RANKS + s];
    }
    *target = nvl_target;
    return flag_ptr(p, p.rank, kind, s);
}
/* What an NVLink flag `kind` holds once epoch ep is complete. */
__device__ __forceinline__ uint32_t nvl_target(int kind, uint32_t ep) {
    return kind == A2A_FLAG_WGT ? ep : arrive_target(ep);
}

/* Whole block: wait for flag `kind` of epoch ep from every source. Uniform result. */
template <bool R> __device__ inline bool block_wait_all(const P &p, int kind, uint32_t ep, uint32_t phase) {
    const uint32_t nvl = nvl_target(kind, ep);
    __shared__ int s_fail;
    if (threadIdx.x == 0) s_fail = 0;
    __syncthreads();
    if ((int)threadIdx.x < p.world) {
        uint32_t target;
        const uint32_t *f = src_flag<R>(p, kind, threadIdx.x, ep, nvl, &target);
        if (!wait_flag(p, f, target, phase, threadIdx.x)) s_fail = 1;
        else if (R && blockIdx.x == 0 && p.px_stamp && rdma_peer(p, threadIdx.x)) {
            /* the trace: when this recv saw the source's RDMA arrival flag */
            const int ph = kind == A2A_FLAG_WGT ? A2A_PX_WGT : kind == A2A_FLAG_CMB ? A2A_PX_CMB : A2A_PX_DSP;
            a2a_stamp_rec *r = &p.px_stamp[ep % A2A_STAMP_DEPTH];
            *(volatile uint64_t *)&r->seen_t[ph][threadIdx.x] = gtimer();
            *(volatile uint64_t *)&r->seen_ep[ph][threadIdx.x] = ep;
        }
    }
    __syncthreads();
    const int f = s_fail;
    __syncthreads();
    return f == 0;
}

/* Every block calls it once at its end. Returns true in the last block to arrive (whole
 * block, uniform). All stores of all blocks made before are visible system-wide to what
 * the last block does after. The counter is reset for the next launch. */
__device__ inline bool arrive_last(const P &p, uint32_t *counter, bool sys = true) {
    __shared__ int s_last;
    /* the block's stores (NVLink included) before the arrival: bar.sync, then one
     * cumulative fence in the arriving thread (see the header comment); gpu scope where
     * the block stored nothing a peer reads */
    if (A2A_DEV(A2A_DEV_FENCE_ALL)) {
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
__device__ __forceinline__ bool start(const P &p, uint32_t *ep) {
    const uint32_t err = ld_vol(p.ws_err);
    const uint32_t it = ld_vol(p.ws_iter);
    *ep = it + 1;
    return err == 0;
}

/* Every block calls it once at its end: its stores (NVLink included) are released to
 * every NVLink destination's counter `kind` for this source (RDMA destinations learn of
 * the phase from the doorbell, ring_doorbell). Whole block. */
template <bool R> __device__ inline void arrive_count(const P &p, int kind) {
    if (A2A_DEV(A2A_DEV_FENCE_ALL)) fence_acq_rel_sys();
    __syncthreads(); /* every thread's stores precede the cumulative releases below */
    if ((int)threadIdx.x < p.world && !(R && rdma_peer(p, threadIdx.x))) {
        const uint32_t add = blockIdx.x == 0 ? A2A_ARRIVE_SPAN - (gridDim.x - 1) : 1u;
        red_release_sys_add(flag_ptr(p, threadIdx.x, kind, p.rank), add);
    }
}

/* Rings the proxy's doorbell of `phase` (A2A_PX_*) for epoch ep: len(q) into
 * px_tx[phase][q] for every RDMA peer q, then fence.sys, then the epoch into the
 * doorbell (64-bit; the proxy wants exactly the previous epoch + 1, and ep rises by one
 * per iteration from 1). Whole block, once per launch and phase, by a block that every
 * store of the phase happens-before: the last block to arrive (arrive_last) or the only
 * block that stored; see the header comment for why that covers the NIC's reads. */
template <class LenFn> __device__ inline void ring_doorbell(const P &p, int phase, uint32_t ep, LenFn len) {
    for (int q = threadIdx.x; q < p.world; q += A2A_THREADS)
        if (rdma_peer(p, q)) *(volatile int32_t *)&p.px_tx[phase * A2A_PX_MAX_RANKS + q] = len(q);
    __syncthreads(); /* every thread's lengths (and the caller's stores) before the fence */
    if (threadIdx.x == 0) {
        if (p.px_stamp) { /* the trace: the kernel's stage ends here */
            a2a_stamp_rec *r = &p.px_stamp[ep % A2A_STAMP_DEPTH];
            *(volatile uint64_t *)&r->bell_t[phase] = gtimer();
            *(volatile uint64_t *)&r->bell_ep[phase] = ep;
        }
        __threadfence_system();
        st_release_sys_u64(p.px_doorbell[phase], (uint64_t)ep);
    }
}

__device__ __forceinline__ int tokens_now(const P &p) {
    int T = (int)p.T;
    if (p.bound_m) {
        const int b = *(const volatile int32_t *)p.bound_m;
        T = b < 0 ? 0 : (b < T ? b : T);
    }
    return T;
}

/* a[0..n) becomes its exclusive prefix; returns the total. One thread. */
__device__ __forceinline__ int excl_prefix_serial(int *a, int n) {
    int run = 0;
    for (int i = 0; i < n; i++) {
        const int c = a[i];
        a[i] = run;
        run += c;
    }
    return run;
}

/* exclusive prefix over the block of one value per thread; *total = sum */
__device__ inline int block_excl_scan(int v, int *total) {
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
__device__ __forceinline__ int pick_nseg(int nrows, int nvec, int minv) {
    if (nrows <= 0) return 1;
    const int warps = gridDim.x * A2A_WARPS;
    int nseg = warps / nrows;
    int maxseg = nvec / minv;
    if (maxseg < 1) maxseg = 1;
    if (nseg > maxseg) nseg = maxseg;
    return nseg < 1 ? 1 : nseg;
}

/* ------------------------------------------------------------ recv tables ---- */

/* Number of experts this rank owns. */
__device__ __forceinline__ int local_experts(const P &p) {
    const int n = (int)p.E - p.rank * (int)p.L;
    return n < 0 ? 0 : (n > (int)p.L ? (int)p.L : n);
}

/* Fills s_base[W][L] (first output row of each (source, local expert)) and
 * s_rowoff[W+1] (prefix of rows per source). from_counts: computed from the cnt region
 * (dispatch recv; block 0 also writes out_num_tokens and saves the tables for combine);
 * otherwise loaded from the workspace (combine send). Returns the rows received. */
template <bool R> __device__ inline int load_recv_tables(const P &p, int *s_base, int *s_rowoff, bool from_counts) {
    const int W = p.world, L = p.L, me = p.rank, tid = threadIdx.x;
    const int nloc = local_experts(p);
    if (from_counts) {
        for (int i = tid; i < W * L; i += A2A_THREADS) {
            const int s = i / L, l = i % L;
            s_base[i] = l < nloc ? ld_vol_i(cnt_ptr<R>(p, me, s) + l) : 0;
        }
        if (tid < W) s_rowoff[tid] = ld_vol_i(cnt_ptr<R>(p, me, tid) + L);
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

__device__ __forceinline__ void row_to_src(const int *s_rowoff, int W, int r, int *s, int *j) {
    int k = 0;
    while (k < W - 1 && s_rowoff[k + 1] <= r) k++;
    *s = k;
    *j = r - s_rowoff[k];
}
#endif
