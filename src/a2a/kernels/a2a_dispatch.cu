/*
 * Dispatch kernels: send (route tokens, store rows, metadata and counts at the
 * destinations), recv (expert-major output) and both in one launch. See docs/a2a.md,
 * "Protocol" 1-2.
 */
#include "a2a_device.cuh"
#include "a2a_forms.cuh"

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
           p.T <= (uint32_t)A2A_CHUNK * gridDim.x && !A2A_DEV(A2A_DEV_NO_DIRECT_SELF);
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
    const bool pipe = !A2A_DEV(A2A_DEV_OLD_RECV);
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
a2a_kfn a2a_dispatch_kernel(int form) {
    switch (form) {
    case A2A_K_DSEND: return k_dispatch_send;
    case A2A_K_DSEND_ONE: return k_dispatch_send_one;
    case A2A_K_DRECV: return k_dispatch_recv;
    case A2A_K_DRECV_SLOTS: return k_dispatch_recv_slots;
    case A2A_K_DBOTH: return k_dispatch_both;
    case A2A_K_DBOTH_ONE: return k_dispatch_both_one;
    case A2A_K_DBOTH_ONE_SLOTS: return k_dispatch_both_one_slots;
    default: return nullptr;
    }
}
