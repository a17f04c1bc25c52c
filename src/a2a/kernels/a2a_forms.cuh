/*
 * Which kernel serves a launch: the conditions under which each form of a phase may run
 * (shared by the kernels and the launch table, a2a_launch.cu) and the kernel tables of
 * a2a_dispatch.cu and a2a_combine.cu. Each form of a phase is a kernel of its own: the
 * decode form of the fused dispatch measured 5 µs faster alone than as a branch of one
 * kernel that also held the chunked send (docs/history/performance-log.md).
 */
#ifndef TENDRIL_A2A_FORMS_CUH
#define TENDRIL_A2A_FORMS_CUH

#include <stddef.h>
#include <stdint.h>

#include "../a2a_kernels.h"
#include "a2a_dev.cuh"

typedef void (*a2a_kfn)(a2a_kparams);

/* kernels of a2a_dispatch.cu */
enum {
    A2A_K_DSEND = 0,         /* k_dispatch_send: chunked routing */
    A2A_K_DSEND_ONE,         /* k_dispatch_send_one: one token per block (send_one_fits) */
    A2A_K_DRECV,             /* k_dispatch_recv: row form */
    A2A_K_DRECV_SLOTS,       /* k_dispatch_recv_slots: slot form (recv_slots_fit) */
    A2A_K_DBOTH,             /* k_dispatch_both: chunked send, row-form recv */
    A2A_K_DBOTH_ONE,         /* k_dispatch_both_one: one-token send, row-form recv */
    A2A_K_DBOTH_ONE_SLOTS,   /* k_dispatch_both_one_slots: one-token send, slot-form recv */
    A2A_K_N
};
a2a_kfn a2a_dispatch_kernel(int form);
/* the combine kernel of phase A2A_PH_CSEND / CRECV / CBOTH for out dtype dt (partials
 * as fp32 when pf32) */
a2a_kfn a2a_combine_kernel(int phase, int dt, int pf32);

/* Shared-memory ints a dispatch send uses (the chunked path's tables; the one-token path
 * needs fewer). A fused launch keeps its receive tables after them. */
__host__ __device__ __forceinline__ size_t send_smem_ints(const a2a_kparams &p) {
    return 2 * (size_t)p.E + 2 * (size_t)p.world + A2A_CHUNK * (size_t)p.K + A2A_CHUNK * (size_t)p.world +
           A2A_CHUNK * 8 + A2A_CHUNK;
}

/* Whether dispatch send may take the one-token-per-block path: at most one token per
 * block whatever bound_m says (T is the host's upper bound), and the token fits in the
 * registers of the block (two 16-byte vectors and one scale per thread). */
__host__ __device__ __forceinline__ bool send_one_fits(const a2a_kparams &p, unsigned nblocks) {
    return p.T <= nblocks && p.payload_bytes / 16 <= 2 * A2A_THREADS && p.S <= A2A_THREADS &&
           !A2A_DEV(A2A_DEV_NO_WARP_ROUTE);
}

/* Whether dispatch recv may take the slot path: one round of tasks over every staging
 * slot (W x Tmax rows, filled or not), and receive tables that one warp builds from at
 * most 16 counts per lane. */
__host__ __device__ __forceinline__ bool recv_slots_fit(const a2a_kparams &p, int nblocks) {
    const int per = ((int)p.L + 31) / 32;
    return p.world <= 32 && p.world * (int)p.Tmax <= nblocks * A2A_WARPS && p.world * per <= 16 &&
           !A2A_DEV(A2A_DEV_OLD_RECV);
}

#endif
