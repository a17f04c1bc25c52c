/*
 * Combine kernels: send (publish the combine weights, weighted partial sums of the
 * local experts' rows to each token's rank) and recv (sum of the partials), and both in
 * one launch; one instantiation per (out dtype, partial dtype) and per R (RDMA peers or
 * not: a2a_device.cuh). See docs/a2a.md, "Protocol" 3-4 and "Combine numerics", and
 * docs/a2a-internode.md for the RDMA path.
 */
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "a2a_device.cuh"
#include "a2a_forms.cuh"

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

template <int DT, int PT, bool R> static __device__ __forceinline__ bool combine_send(const P &p, int *smem) {
    uint32_t ep;
    if (!start(p, &ep)) return false;
    const int W = p.world, L = p.L, K = p.K, E = p.E, me = p.rank;
    const int tid = threadIdx.x, lane = tid & 31;
    /* A: publish this rank's weights to the ranks that own the experts (RDMA owners: into
     * their stage slot, then the WGT doorbell with T*K weights, from the block that holds
     * every weight store) */
    {
        const int T = tokens_now(p);
        if (T * K <= 8 * A2A_THREADS) {
            /* small batch: block 0 alone, no grid-wide arrival on the critical path */
            if (blockIdx.x == 0) {
                for (int i = tid; i < T * K; i += A2A_THREADS) {
                    const uint32_t e = (uint32_t)p.indices[i];
                    if (e < (uint32_t)E) wgt_ptr<R>(p, e / L, me)[i] = p.weights[i];
                }
                if (A2A_DEV(A2A_DEV_FENCE_ALL)) fence_acq_rel_sys();
                __syncthreads(); /* the stores precede the cumulative release */
                if (tid < W && !(R && rdma_peer(p, tid))) st_release_sys(flag_ptr(p, tid, A2A_FLAG_WGT, me), ep);
                if (R) ring_doorbell(p, A2A_PX_WGT, ep, [&](int) { return T * K; });
            }
        } else {
            for (int i = blockIdx.x * A2A_THREADS + tid; i < T * K; i += gridDim.x * A2A_THREADS) {
                const uint32_t e = (uint32_t)p.indices[i];
                if (e < (uint32_t)E) wgt_ptr<R>(p, e / L, me)[i] = p.weights[i];
            }
            if (arrive_last(p, &p.ws_arrive[A2A_ARR_WGT])) {
                if (tid < W && !(R && rdma_peer(p, tid))) st_release_sys(flag_ptr(p, tid, A2A_FLAG_WGT, me), ep);
                if (R) ring_doorbell(p, A2A_PX_WGT, ep, [&](int) { return T * K; });
            }
        }
    }
    /* the receive tables are local (saved by dispatch recv): loaded while the weights
     * travel */
    int *s_base = smem, *s_rowoff = smem + W * L;
    const int nrows = load_recv_tables<R>(p, s_base, s_rowoff, false);
    /* B: every source's weights (co-resident grid: our own last block publishes too) */
    if (!block_wait_all<R>(p, A2A_FLAG_WGT, ep, A2A_PH_CSEND)) return false;
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
        const int32_t *m = meta_ptr<R>(p, me, s, j);
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
                myw = *(const volatile float *)&wgt_ptr<R>(p, me, s)[(size_t)t * K + lane];
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
        /* NVLink: part row t of s's block; RDMA: compact row j of s's stage slot, packed at
         * H * sizeof(partial) bytes (s reads it back through ws_rslot) */
        char *dstp = R && rdma_peer(p, s) ? part_rdma_ptr<R, Elt<PT>::bytes>(p, s, me, j)
                                          : (char *)part_ptr<R>(p, s, me, t);
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
     * our CMB flag. Our own block, every slot: RDMA sources' cnt rows (in rblock) are
     * overwritten whole by their next DSP write instead, so they need no clearing. */
    if (blockIdx.x == 0)
        for (int i = tid; i < W * (L + 1); i += A2A_THREADS) cnt_ptr<false>(p, me, 0)[i] = 0;
    /* D: partials delivered and our reads of cnt/meta/rows/wgt done (per block); RDMA:
     * the last block rings the CMB doorbell with the compact rows of each source */
    arrive_count<R>(p, A2A_FLAG_CMB);
    if (R && arrive_last(p, &p.ws_arrive[A2A_ARR_CSEND]))
        ring_doorbell(p, A2A_PX_CMB, ep, [&](int q) { return p.ws_nsrc[q]; });
    return true;
}

template <int DT, int PT, bool R> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_send(P p) {
    extern __shared__ int smem[];
    combine_send<DT, PT, R>(p, smem);
}

/* ------------------------------------------------------------ combine recv ---- */

template <int DT, int PT, bool R> static __device__ __forceinline__ void combine_recv(const P &p) {
    uint32_t ep;
    if (!start(p, &ep)) return;
    if (!block_wait_all<R>(p, A2A_FLAG_CMB, ep, A2A_PH_CRECV)) return;
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
        /* the token's expert ranks, ascending (up to 64: two 32-bit halves) */
        uint32_t blo = 0, bhi = 0;
        if (lane < K) {
            const uint32_t e = (uint32_t)p.indices[(size_t)t * K + lane];
            if (e < (uint32_t)E) {
                const uint32_t r = e / L;
                if (r < 32) blo = 1u << r;
                else bhi = 1u << (r - 32);
            }
        }
        uint64_t mask = __reduce_or_sync(FULL, blo) | (uint64_t)__reduce_or_sync(FULL, bhi) << 32;
        const float *src[8];
#pragma unroll
        for (int q = 0; q < 8; q++) {
            src[q] = nullptr;
            if (mask) {
                const int r = __ffsll((long long)mask) - 1;
                mask &= mask - 1;
                if (R && rdma_peer(p, r)) {
                    /* compact row: the dispatch row this token got at r (-1: none),
                     * packed at H * sizeof(partial) bytes */
                    const int j = p.ws_rslot[(size_t)t * A2A_PX_MAX_RANKS + r];
                    if ((uint32_t)j < p.Tmax)
                        src[q] = (const float *)part_rdma_ptr<R, Elt<PT>::bytes>(p, me, r, j);
                } else {
                    src[q] = part_ptr<false>(p, me, r, t);
                }
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

template <int DT, int PT, bool R> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_recv(P p) {
    combine_recv<DT, PT, R>(p);
}

template <int DT, int PT, bool R> __global__ void __launch_bounds__(A2A_THREADS, 1) k_combine_both(P p) {
    extern __shared__ int smem[];
    if (!combine_send<DT, PT, R>(p, smem)) return;
    combine_recv<DT, PT, R>(p);
}

#define A2A_BF A2A_DTYPE_BF16
#define A2A_HF A2A_DTYPE_F16
#define A2A_FF A2A_DTYPE_F32

/* The kernel K of (out dtype, partial dtype, R) */
#define A2A_PICK(K, R)                                                                    \
    do {                                                                                  \
        if (dt == A2A_BF) return pf32 ? K<A2A_BF, A2A_FF, R> : K<A2A_BF, A2A_BF, R>;      \
        if (dt == A2A_HF) return pf32 ? K<A2A_HF, A2A_FF, R> : K<A2A_HF, A2A_HF, R>;      \
        return K<A2A_FF, A2A_FF, R>;                                                      \
    } while (0)

a2a_kfn a2a_combine_kernel(int phase, int dt, int pf32, bool rdma) {
    switch (phase) {
    case A2A_PH_CBOTH:
        if (rdma) A2A_PICK(k_combine_both, true);
        A2A_PICK(k_combine_both, false);
    case A2A_PH_CSEND:
        if (rdma) A2A_PICK(k_combine_send, true);
        A2A_PICK(k_combine_send, false);
    case A2A_PH_CRECV:
        if (rdma) A2A_PICK(k_combine_recv, true);
        A2A_PICK(k_combine_recv, false);
    default:
        return nullptr;
    }
}
