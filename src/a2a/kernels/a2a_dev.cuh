/*
 * Development aids of the all-to-all kernels (docs/a2a.md, "Development aids"), both
 * chosen when the library is built, so that production builds carry neither: A/B
 * switches that bring back an earlier form of a step, and per-block timestamps.
 */
#ifndef TENDRIL_A2A_DEV_CUH
#define TENDRIL_A2A_DEV_CUH

#include <stdint.h>

/* A/B switches (cmake -DTENDRIL_A2A_DEV_FLAGS=N defines A2A_DEV_FLAGS): each brings back
 * an earlier form of a step, so that a benchmark can measure both forms with builds of
 * the same tree. 0 (the default) compiles every test below away. */
#ifndef A2A_DEV_FLAGS
#define A2A_DEV_FLAGS 0
#endif
enum {
    A2A_DEV_FENCE_ALL = 1,      /* every thread runs fence.sys before a block's arrival */
    A2A_DEV_NO_WARP_ROUTE = 2,  /* decode dispatch send routes with the block-wide path */
    A2A_DEV_OLD_RECV = 4,       /* dispatch recv: every block builds its tables before any
                                   row load, and the copy loop does not prefetch */
    A2A_DEV_NO_DIRECT_SELF = 8, /* fused dispatch stages the rows a rank sends itself
                                   instead of storing them straight to the output */
    A2A_DEV_FUSED_SLOTS = 16    /* fused decode dispatch: slot-form recv (A/B) */
};
#define A2A_DEV(bit) ((A2A_DEV_FLAGS & (bit)) != 0)

/* Per-block timestamps (cmake -DTENDRIL_A2A_TRACE=ON defines A2A_TRACE): thread 0 of
 * every block records %globaltimer and clock64 at numbered points of a kernel and prints
 * them for a few epochs (A2A_TRACE_EP0 .. +2), so a latency breakdown per phase can be
 * read without a profiler (ncu's replay serialises the ranks and deadlocks on the
 * cross-GPU waits). */
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
__device__ __forceinline__ TrSet *tr_sets(int **count) {
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

#endif
