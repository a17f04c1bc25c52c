/*
 * The launch table of the all-to-all kernels (a2a_kernels.h): which kernel serves a
 * phase, its dynamic shared memory, and the co-residency bound.
 */
#include <cuda_runtime.h>

#include "a2a_forms.cuh"

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

/* The general form of a phase (rdma: the instantiation for contexts with RDMA peers). */
static a2a_kfn pick(int phase, int dt, int pf32, bool rdma) {
    switch (phase) {
    case A2A_PH_DSEND: return a2a_dispatch_kernel(A2A_K_DSEND, rdma);
    case A2A_PH_DRECV: return a2a_dispatch_kernel(A2A_K_DRECV, rdma);
    case A2A_PH_DBOTH: return a2a_dispatch_kernel(A2A_K_DBOTH, rdma);
    default: return a2a_combine_kernel(phase, dt, pf32, rdma);
    }
}

/* The decode-size form of a dispatch phase, or nullptr where the phase has one form or
 * the general one applies. */
static a2a_kfn pick_form(int phase, const a2a_kparams *p, int nblocks, bool rdma) {
    switch (phase) {
    case A2A_PH_DSEND:
        return send_one_fits(*p, (unsigned)nblocks) ? a2a_dispatch_kernel(A2A_K_DSEND_ONE, rdma) : nullptr;
    case A2A_PH_DRECV:
        return recv_slots_fit(*p, nblocks) ? a2a_dispatch_kernel(A2A_K_DRECV_SLOTS, rdma) : nullptr;
    case A2A_PH_DBOTH:
        if (!send_one_fits(*p, (unsigned)nblocks)) return nullptr;
        return a2a_dispatch_kernel(recv_slots_fit(*p, nblocks) && A2A_DEV(A2A_DEV_FUSED_SLOTS)
                                       ? A2A_K_DBOTH_ONE_SLOTS
                                       : A2A_K_DBOTH_ONE,
                                   rdma);
    default: return nullptr;
    }
}

extern "C" int a2a_kernel_launch(int phase, const a2a_kparams *p, int nblocks, void *stream) {
    const bool rdma = p->rdma_mask != 0;
    a2a_kfn f = pick_form(phase, p, nblocks, rdma);
    if (!f) f = pick(phase, (int)p->out_dtype, (int)p->partial_f32, rdma);
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
     * forms of the dispatch phases (same shared memory as their phase), in both
     * instantiations (the bound then does not depend on whether the caller set
     * rdma_mask before asking) */
    static const int form_phase[4] = {A2A_PH_DSEND, A2A_PH_DRECV, A2A_PH_DBOTH, A2A_PH_DBOTH};
    static const int form[4] = {A2A_K_DSEND_ONE, A2A_K_DRECV_SLOTS, A2A_K_DBOTH_ONE, A2A_K_DBOTH_ONE_SLOTS};
    for (int i = 0; i < 2 * (A2A_PH_N + 4); i++) {
        const bool rdma = i >= A2A_PH_N + 4;
        const int k = i % (A2A_PH_N + 4);
        const int ph = k < A2A_PH_N ? k : form_phase[k - A2A_PH_N];
        const a2a_kfn f = k < A2A_PH_N ? pick(ph, (int)p->out_dtype, (int)p->partial_f32, rdma)
                                       : a2a_dispatch_kernel(form[k - A2A_PH_N], rdma);
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

/* Clock probe of the trace (a2a_trace.c): waits until the host sets *go (or limit_ns
 * passed), then stores %globaltimer into *out (1 on timeout: never a valid reading). The
 * timer is read after go was seen, so the reading lies between the host's store of go
 * and the host's load of the reading. */
static __global__ void k_clock_probe(const volatile uint32_t *go, volatile uint64_t *out, uint64_t limit_ns) {
    uint64_t t0, t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
    while (!*go) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
        if (t - t0 > limit_ns) {
            *out = 1;
            return;
        }
    }
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    *out = t;
    __threadfence_system();
}

extern "C" int a2a_clock_probe_launch(const uint32_t *go, uint64_t *out, uint64_t limit_ns, void *stream) {
    k_clock_probe<<<1, 1, 0, (cudaStream_t)stream>>>(go, out, limit_ns);
    return (int)cudaGetLastError();
}
