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

/* The general form of a phase. */
static a2a_kfn pick(int phase, int dt, int pf32) {
    switch (phase) {
    case A2A_PH_DSEND: return a2a_dispatch_kernel(A2A_K_DSEND);
    case A2A_PH_DRECV: return a2a_dispatch_kernel(A2A_K_DRECV);
    case A2A_PH_DBOTH: return a2a_dispatch_kernel(A2A_K_DBOTH);
    default: return a2a_combine_kernel(phase, dt, pf32);
    }
}

/* The decode-size form of a dispatch phase, or nullptr where the phase has one form or
 * the general one applies. */
static a2a_kfn pick_form(int phase, const a2a_kparams *p, int nblocks) {
    switch (phase) {
    case A2A_PH_DSEND:
        return send_one_fits(*p, (unsigned)nblocks) ? a2a_dispatch_kernel(A2A_K_DSEND_ONE) : nullptr;
    case A2A_PH_DRECV:
        return recv_slots_fit(*p, nblocks) ? a2a_dispatch_kernel(A2A_K_DRECV_SLOTS) : nullptr;
    case A2A_PH_DBOTH:
        if (!send_one_fits(*p, (unsigned)nblocks)) return nullptr;
        return a2a_dispatch_kernel(recv_slots_fit(*p, nblocks) && A2A_DEV(A2A_DEV_FUSED_SLOTS)
                                       ? A2A_K_DBOTH_ONE_SLOTS
                                       : A2A_K_DBOTH_ONE);
    default: return nullptr;
    }
}

extern "C" int a2a_kernel_launch(int phase, const a2a_kparams *p, int nblocks, void *stream) {
    a2a_kfn f = pick_form(phase, p, nblocks);
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
    static const int form[4] = {A2A_K_DSEND_ONE, A2A_K_DRECV_SLOTS, A2A_K_DBOTH_ONE, A2A_K_DBOTH_ONE_SLOTS};
    for (int i = 0; i < A2A_PH_N + 4; i++) {
        const int ph = i < A2A_PH_N ? i : form_phase[i - A2A_PH_N];
        const a2a_kfn f = i < A2A_PH_N ? pick(ph, (int)p->out_dtype, (int)p->partial_f32)
                                       : a2a_dispatch_kernel(form[i - A2A_PH_N]);
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
