/*
 * Host side of the all-to-all: context lifecycle (create, connect, destroy), queries,
 * phase bookkeeping and kernel launches. Configuration checks live in a2a_config.c,
 * CUDA memory in a2a_memory.c, the bootstrap records in a2a_bootstrap.c, the RDMA side
 * in a2a_rdma.c.
 *
 * CUDA: allocation goes through the shared driver loader (src/cuda/cuda_loader.h); the
 * launch path uses the CUDA runtime, because the runtime is what launches the kernels
 * (kernels/, compiled by nvcc): its current device must be the context's when it does.
 */
#include <cuda_runtime_api.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "a2a_internal.h"
#include "a2a_share.h"
#include "core/env.h"

int a2a_rt_fail(cudaError_t e, const char *what)
{
    return tn_err(e == cudaErrorMemoryAllocation ? -ENOMEM : -ENODEV, "%s: %s", what,
                  cudaGetErrorString(e));
}

static size_t up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* The runtime's current device becomes the context's for a launch; returns the previous. */
int a2a_enter_dev(const a2a_ctx *c, int *prev)
{
    if (cudaGetDevice(prev) != cudaSuccess) *prev = -1;
    if (*prev != c->dev) {
        cudaError_t e = cudaSetDevice(c->dev);
        if (e != cudaSuccess) return a2a_rt_fail(e, "cudaSetDevice");
    }
    return 0;
}
void a2a_leave_dev(const a2a_ctx *c, int prev)
{
    if (prev >= 0 && prev != c->dev) cudaSetDevice(prev);
}

/* Frees what a2a_create allocated; the device's context is current. */
static void free_all(a2a_ctx *c)
{
    a2a_rdma_teardown(c);
    a2a_mem_shared_free(c);
    if (c->ws) tcu_dev_free(c->dev, c->ws);
    if (c->host_words) tcu_host_free_mapped(c->dev, c->host_words);
    c->ws = NULL;
    c->host_words = NULL;
}

int a2a_create(const a2a_config *cfg_in, a2a_ctx **out)
{
    tn_err_clear();
    if (!out) return tn_err(-EINVAL, "a2a_create: out is NULL");
    *out = NULL;
    a2a_config cfg;
    int rc = a2a_config_load(cfg_in, &cfg); /* every check before any GPU is touched */
    if (rc) return rc;
    a2a_ctx *c = calloc(1, sizeof(*c));
    if (!c) return tn_err(-ENOMEM, "a2a_create: out of host memory");
    c->cfg = cfg;
    if (cfg.rendezvous) snprintf(c->rdv, sizeof(c->rdv), "%s", cfg.rendezvous);
    c->cfg.rendezvous = cfg.rendezvous ? c->rdv : NULL;
    c->fd = -1;
    a2a_topo_of(&c->cfg, &c->t);
    c->dev = cfg.device;
    const a2a_topo *t = &c->t;
    c->L = (cfg.num_experts + (uint32_t)t->sworld - 1) / (uint32_t)t->sworld;
    {
        long n = (long)cfg.num_experts - (long)t->srank * c->L;
        c->nloc = n < 0 ? 0 : (n > (long)c->L ? c->L : (uint32_t)n);
    }
    rc = tcu_ctx_enter(c->dev);
    if (rc) {
        rc = tn_err(rc, "a2a_create: CUDA device %d: %s", c->dev, te_last_error());
        free(c);
        return rc;
    }

    /* layout of the shared block (slots indexed by slice rank) */
    const size_t W = (size_t)t->sworld, T = cfg.max_num_tokens, K = cfg.experts_per_token,
                 H = cfg.hidden_dim;
    const size_t payload = H * cfg.in_elem_size;
    const size_t row = payload + up((size_t)cfg.hidden_dim_scale * 4, 16);
    size_t off = 0;
    a2a_kparams *kp = &c->kp;
    kp->off_flags = off;
    off = up(off + A2A_FLAG_N * W * 128, 256);
    kp->off_cnt = off;
    off = up(off + W * (c->L + 1) * 4, 256);
    kp->off_meta = off;
    off = up(off + W * T * (K + 1) * 4, 256);
    kp->off_rows = off;
    off = up(off + W * T * row, 256);
    kp->off_wgt = off;
    off = up(off + W * T * K * 4, 256);
    kp->off_part = off;
    off = up(off + W * T * H * 4, 256);

    rc = a2a_mem_shared_create(c, off, t->n_rdma > 0 && cfg.rdma_buffers != A2A_RDMA_HOST);
    if (rc) goto fail;
    c->peer_base[t->srank] = c->base;
    c->peer_size[t->srank] = c->shared_bytes;

    /* private workspace */
    const size_t E = cfg.num_experts;
    size_t ws = 0, o_iter = ws;
    ws += 4;
    size_t o_err = ws;
    ws += 4;
    size_t o_arr = ws;
    ws += 4 * A2A_ARR_N;
    ws = up(ws, 16);
    size_t o_tc = ws;
    ws += 2 * E * 4;
    size_t o_trc = ws;
    ws += 2 * W * 4;
    size_t o_base = ws;
    ws += W * c->L * 4;
    size_t o_nsrc = ws;
    ws += W * 4;
    ws = up(ws, 16);
    /* dispatch row of each (token, RDMA peer), read back by combine recv (compact CMB
     * rows over RDMA, docs/a2a-internode.md "Signals"); -1 = none */
    size_t o_rslot = ws;
    const size_t rslot_bytes = T * A2A_MAX_RANKS * 4;
    ws += rslot_bytes;
    c->ws_bytes = up(ws, 256);
    rc = a2a_mem_dev_alloc(c, c->ws_bytes, &c->ws, "workspace");
    if (!rc) rc = a2a_mem_host_alloc(c, 64, (void **)&c->host_words, &c->host_words_dev, "error words");
    if (rc) goto fail;
    {
        const tcu_api *cu;
        tcu_result r = 1;
        if (tcu_load(&cu) == 0) {
            r = cu->cuMemsetD8((tcu_deviceptr)(uintptr_t)((char *)c->ws + o_rslot), 0xff, rslot_bytes);
            if (!r) r = cu->cuCtxSynchronize();
        }
        if (r) {
            rc = tn_err(-EIO, "a2a_create: initialising the workspace on device %d failed (CUDA error %d)",
                        c->dev, (int)r);
            goto fail;
        }
    }

    char *w8 = c->ws;
    uint32_t *hw_dev = (uint32_t *)(uintptr_t)c->host_words_dev;
    kp->ws_iter = (uint32_t *)(w8 + o_iter);
    kp->ws_err = (uint32_t *)(w8 + o_err);
    kp->ws_arrive = (uint32_t *)(w8 + o_arr);
    kp->ws_total_cnt = (int32_t *)(w8 + o_tc);
    kp->ws_total_rcnt = (int32_t *)(w8 + o_trc);
    kp->ws_src_base = (int32_t *)(w8 + o_base);
    kp->ws_nsrc = (int32_t *)(w8 + o_nsrc);
    kp->ws_rslot = (int32_t *)(w8 + o_rslot);
    kp->host_err = hw_dev;
    kp->host_abort = hw_dev + 1;
    kp->timeout_ns = (uint64_t)(cfg.timeout_ms ? cfg.timeout_ms : 10000) * 1000000ull;
    kp->rank = t->srank;
    kp->world = t->sworld;
    kp->E = cfg.num_experts;
    kp->L = c->L;
    kp->K = cfg.experts_per_token;
    kp->H = cfg.hidden_dim;
    kp->S = cfg.hidden_dim_scale;
    kp->Tmax = cfg.max_num_tokens;
    kp->pad = cfg.expert_padding;
    kp->payload_bytes = (uint32_t)payload;
    kp->row_bytes = (uint32_t)row;
    kp->out_dtype = cfg.out_dtype;
    kp->partial_f32 = cfg.partial_f32 || cfg.out_dtype == A2A_DTYPE_F32;

    /* the runtime sees the device's primary context, which tcu_ctx_enter made current */
    int maxb = a2a_kernel_max_blocks(kp, c->dev);
    if (maxb <= 0) {
        rc = tn_err(-ENODEV, "a2a_create: cannot query kernel occupancy (%s)",
                    cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    int sms = 0;
    {
        const tcu_api *cu;
        tcu_device d;
        if (tcu_load(&cu) == 0 && cu->cuDeviceGet(&d, c->dev) == 0)
            cu->cuDeviceGetAttribute(&sms, TCU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d);
    }
    c->nblocks = cfg.num_sms ? (int)cfg.num_sms : sms;
    if (c->nblocks <= 0 || c->nblocks > maxb) {
        rc = tn_err(-EINVAL, "a2a_create: num_sms %d not in [1, %d co-resident blocks on device %d]",
                    c->nblocks, maxb, c->dev);
        goto fail;
    }

    c->layout_hash = a2a_config_hash(&cfg);
    tcu_ctx_leave(c->dev);
    *out = c;
    return 0;
fail:
    free_all(c);
    tcu_ctx_leave(c->dev);
    free(c);
    return rc;
}

/* Imports the shared blocks of the slice peers on our node (Unix sockets, SCM_RIGHTS). */
static int nvlink_exchange(a2a_ctx *c, int timeout_ms)
{
    const a2a_topo *t = &c->t;
    int peers[A2A_MAX_RANKS], slot[A2A_MAX_RANKS], n = 0;
    for (int q = 0; q < t->sworld; q++) {
        if (q == t->srank || a2a_is_rdma(t, q)) continue;
        slot[n] = q;
        peers[n++] = a2a_phys(t, q);
    }
    if (n == 0) return 0;
    int fds[A2A_MAX_RANKS];
    uint64_t sizes[A2A_MAX_RANKS];
    a2a_share_offer offer = {t->rank, t->world, c->fd, c->shared_bytes, c->layout_hash};
    int rc = a2a_share_exchange(c->rdv, &offer, timeout_ms, n, peers, fds, sizes);
    if (rc) {
        if (!te_last_error()[0]) tn_err(rc, "a2a_connect: exchange with the node's peers failed");
        return rc;
    }
    for (int i = 0; i < n && rc == 0; i++) {
        if (sizes[i] != c->shared_bytes)
            rc = tn_err(-EPROTO, "a2a_connect: rank %d shares %llu bytes, we expect %zu", peers[i],
                        (unsigned long long)sizes[i], c->shared_bytes);
        else rc = a2a_mem_peer_map(c, slot[i], fds[i], sizes[i]);
    }
    for (int i = 0; i < n; i++)
        if (fds[i] >= 0) close(fds[i]);
    return rc;
}

int a2a_connect(a2a_ctx *c, int timeout_ms)
{
    tn_err_clear();
    if (!c) return tn_err(-EINVAL, "a2a_connect: ctx is NULL");
    if (c->connected) return tn_err(-EINVAL, "a2a_connect: already connected");
    const int tmo = timeout_ms > 0 ? timeout_ms : 60000;
    const a2a_topo *t = &c->t;
    te_addr *addr = calloc((size_t)t->sworld, sizeof *addr);
    te_mr_desc *desc = calloc((size_t)t->sworld, sizeof *desc);
    if (!addr || !desc) {
        free(addr);
        free(desc);
        return tn_err(-ENOMEM, "a2a_connect: out of host memory");
    }
    int rc = tcu_ctx_enter(c->dev);
    if (rc) {
        free(addr);
        free(desc);
        return tn_err(rc, "a2a_connect: CUDA device %d: %s", c->dev, te_last_error());
    }
    rc = a2a_rdma_prepare(c, tmo);
    if (c->cfg.allgather) {
        /* every rank takes part in every all-gather, a failed one with its error */
        int grc = 0;
        int brc = a2a_boot_exchange(c, rc, addr, desc, &grc);
        if (!rc) rc = brc;
        if (!rc) rc = nvlink_exchange(c, tmo);
        if (!rc) rc = a2a_rdma_start(c, addr, desc);
        if (!grc) rc = a2a_boot_finish(c, rc);
    } else {
        if (!rc) rc = nvlink_exchange(c, tmo);
    }
    if (rc == 0) {
        for (int q = 0; q < t->sworld; q++) c->kp.peer[q] = (char *)(uintptr_t)c->peer_base[q];
        c->connected = 1;
    } else {
        a2a_rdma_teardown(c); /* back to the state a2a_create left */
        a2a_mem_peers_unmap(c);
    }
    tcu_ctx_leave(c->dev);
    free(addr);
    free(desc);
    return rc;
}

void a2a_destroy(a2a_ctx *c)
{
    if (!c) return;
    if (tcu_ctx_enter(c->dev) == 0) {
        const tcu_api *cu;
        if (tcu_load(&cu) == 0) cu->cuCtxSynchronize(); /* no kernel uses the buffers any more */
        free_all(c);
        tcu_ctx_leave(c->dev);
    }
    free(c);
}

uint32_t a2a_max_recv_tokens(const a2a_ctx *c)
{
    if (!c) return 0;
    const uint32_t K = c->cfg.experts_per_token;
    const uint64_t per = K < c->nloc ? K : c->nloc;
    uint64_t n = (uint64_t)c->t.sworld * c->cfg.max_num_tokens * per +
                 (uint64_t)c->nloc * (c->cfg.expert_padding - 1);
    return n > 0xffffffffu ? 0xffffffffu : (uint32_t)(n ? n : 1);
}
uint32_t a2a_num_local_experts(const a2a_ctx *c) { return c ? c->nloc : 0; }
uint32_t a2a_first_expert(const a2a_ctx *c) { return c ? (uint32_t)c->t.srank * c->L : 0; }
size_t a2a_memory_bytes(const a2a_ctx *c)
{
    if (!c) return 0;
    return c->shared_bytes + c->ws_bytes + (c->rdma_kind == A2A_KIND_GPU ? c->shared_bytes : 0);
}
const char *a2a_rdma_buffer_kind(const a2a_ctx *c)
{
    if (!c) return "none";
    return c->rdma_kind == A2A_KIND_GPU ? "gpu" : c->rdma_kind == A2A_KIND_HOST ? "host" : "none";
}
int a2a_num_rdma_peers(const a2a_ctx *c) { return c ? c->t.n_rdma : 0; }

int a2a_poll_error(a2a_ctx *c)
{
    if (!c) return tn_err(-EINVAL, "a2a_poll_error: ctx is NULL");
    int rc = a2a_rdma_error(c); /* the root cause when the proxy stopped the kernels */
    if (rc) return rc;
    const uint32_t w = __atomic_load_n(&c->host_words[0], __ATOMIC_ACQUIRE);
    if (!w) return 0;
    static const char *ph[] = {"dispatch send", "dispatch recv", "combine send", "combine recv"};
    const uint32_t code = w >> 24, phase = (w >> 16) & 0xff, peer = w & 0xffff;
    const char *pn = phase < 4 ? ph[phase] : "?";
    const int prank = (int)peer * c->t.dp + c->t.dp_rank; /* kernels name slice ranks */
    switch (code) {
    case A2A_ERR_TIMEOUT:
        return tn_err(-ETIMEDOUT, "a2a %s on rank %d: rank %d did not answer within %llu ms", pn,
                      c->t.rank, prank, (unsigned long long)(c->kp.timeout_ns / 1000000));
    case A2A_ERR_OVERFLOW:
        return tn_err(-EOVERFLOW, "a2a %s on rank %d: rows from rank %d exceed the output capacity",
                      pn, c->t.rank, prank);
    default:
        return tn_err(-ECANCELED, "a2a %s on rank %d: aborted", pn, c->t.rank);
    }
}

void a2a_abort(a2a_ctx *c)
{
    if (!c) return;
    __atomic_store_n(&c->host_words[1], 1u, __ATOMIC_RELEASE);
}

static int begin(a2a_ctx *c, unsigned flags, int first_phase, const char *fn)
{
    if (!c) return tn_err(-EINVAL, "%s: ctx is NULL", fn);
    if (!c->connected) return tn_err(-EINVAL, "%s: call a2a_connect first", fn);
    if (flags == 0 || (flags & ~(A2A_SEND | A2A_RECV)))
        return tn_err(-EINVAL, "%s: flags 0x%x must be A2A_SEND, A2A_RECV or both", fn, flags);
    int rc = a2a_poll_error(c);
    if (rc) return rc;
    static const char *names[] = {"dispatch send", "dispatch recv", "combine send", "combine recv"};
    const int want = (flags & A2A_SEND) ? first_phase : first_phase + 1;
    if (c->next_phase != want)
        return tn_err(-EPROTO, "%s: %s called, but the next phase of this iteration is %s", fn,
                      names[want], names[c->next_phase]);
    return 0;
}

static int launch_phases(a2a_ctx *c, unsigned flags, int first_phase, void *stream)
{
    int prev;
    int rc = a2a_enter_dev(c, &prev);
    if (rc) return rc;
    if (flags == (A2A_SEND | A2A_RECV)) { /* one launch for both halves */
        int e = a2a_kernel_launch(first_phase == A2A_PH_DSEND ? A2A_PH_DBOTH : A2A_PH_CBOTH, &c->kp,
                                  c->nblocks, stream);
        if (e != 0) rc = a2a_rt_fail((cudaError_t)e, "a2a kernel launch");
        else c->next_phase = (first_phase + 2) % 4;
    } else {
        const int ph = (flags & A2A_SEND) ? first_phase : first_phase + 1;
        int e = a2a_kernel_launch(ph, &c->kp, c->nblocks, stream);
        if (e != 0) rc = a2a_rt_fail((cudaError_t)e, "a2a kernel launch");
        else c->next_phase = (ph + 1) % 4;
    }
    a2a_leave_dev(c, prev);
    return rc;
}

#define ALIGNED16(x) ((((uintptr_t)(x)) & 15) == 0)

int a2a_dispatch(a2a_ctx *c, const a2a_dispatch_args *a, unsigned flags, void *stream)
{
    tn_err_clear();
    int rc = begin(c, flags, A2A_PH_DSEND, "a2a_dispatch");
    if (rc) return rc;
    if (!a || a->struct_size < sizeof(*a))
        return tn_err(-EINVAL, "a2a_dispatch: args NULL or args->struct_size too small");
    if (a->num_tokens > c->cfg.max_num_tokens)
        return tn_err(-EINVAL, "a2a_dispatch: num_tokens %u > max_num_tokens %u", a->num_tokens,
                      c->cfg.max_num_tokens);
    if (flags & A2A_SEND) {
        if (a->num_tokens && (!a->x || !a->indices))
            return tn_err(-EINVAL, "a2a_dispatch: x and indices are required");
        if (!ALIGNED16(a->x) || a->x_stride % 16 || (a->num_tokens > 1 && a->x_stride < c->kp.payload_bytes))
            return tn_err(-EINVAL, "a2a_dispatch: x must be 16-byte aligned with a row stride (%zu) that is a "
                          "multiple of 16 and >= %u bytes", a->x_stride, c->kp.payload_bytes);
        if (c->kp.S && a->num_tokens && !a->x_scale)
            return tn_err(-EINVAL, "a2a_dispatch: x_scale is required (hidden_dim_scale = %u)", c->kp.S);
    }
    if (flags & A2A_RECV) {
        if (!a->out_x || !a->out_num_tokens)
            return tn_err(-EINVAL, "a2a_dispatch: out_x and out_num_tokens are required");
        if (!ALIGNED16(a->out_x) || a->out_x_stride % 16 || a->out_x_stride < c->kp.payload_bytes)
            return tn_err(-EINVAL, "a2a_dispatch: out_x must be 16-byte aligned with a row stride (%zu) that is "
                          "a multiple of 16 and >= %u bytes", a->out_x_stride, c->kp.payload_bytes);
        if (c->kp.S && !a->out_x_scale)
            return tn_err(-EINVAL, "a2a_dispatch: out_x_scale is required (hidden_dim_scale = %u)", c->kp.S);
    }
    a2a_kparams *k = &c->kp;
    k->T = a->num_tokens;
    k->bound_m = a->bound_m;
    if (flags & A2A_SEND) {
        k->x = a->x;
        k->x_stride = a->x_stride;
        k->x_scale = a->x_scale;
        k->xs0 = a->x_scale_stride0;
        k->xs1 = a->x_scale_stride1;
        k->indices = a->indices;
    }
    if (flags & A2A_RECV) {
        k->out_num_tokens = a->out_num_tokens;
        k->out_x = a->out_x;
        k->out_x_stride = a->out_x_stride;
        k->out_scale = a->out_x_scale;
        k->os0 = a->out_scale_stride0;
        k->os1 = a->out_scale_stride1;
        k->out_capacity = a->out_capacity;
    }
    return launch_phases(c, flags, A2A_PH_DSEND, stream);
}

int a2a_combine(a2a_ctx *c, const a2a_combine_args *a, unsigned flags, void *stream)
{
    tn_err_clear();
    int rc = begin(c, flags, A2A_PH_CSEND, "a2a_combine");
    if (rc) return rc;
    if (!a || a->struct_size < sizeof(*a))
        return tn_err(-EINVAL, "a2a_combine: args NULL or args->struct_size too small");
    if (a->num_tokens > c->cfg.max_num_tokens)
        return tn_err(-EINVAL, "a2a_combine: num_tokens %u > max_num_tokens %u", a->num_tokens,
                      c->cfg.max_num_tokens);
    const size_t eb = c->cfg.out_dtype == A2A_DTYPE_F32 ? 4 : 2;
    if (a->num_tokens && !a->indices) return tn_err(-EINVAL, "a2a_combine: indices is required");
    if (flags & A2A_SEND) {
        if (a->num_tokens && !a->weights) return tn_err(-EINVAL, "a2a_combine: weights is required");
        if (!a->expert_y || !ALIGNED16(a->expert_y) || a->expert_y_stride % 16 ||
            a->expert_y_stride < eb * c->cfg.hidden_dim)
            return tn_err(-EINVAL, "a2a_combine: expert_y must be 16-byte aligned with a row stride (%zu) that is "
                          "a multiple of 16 and >= %zu bytes", a->expert_y_stride, eb * c->cfg.hidden_dim);
    }
    if (flags & A2A_RECV) {
        if (a->num_tokens && (!a->out || !ALIGNED16(a->out) || a->out_stride % 16 ||
                              a->out_stride < eb * c->cfg.hidden_dim))
            return tn_err(-EINVAL, "a2a_combine: out must be 16-byte aligned with a row stride (%zu) that is a "
                          "multiple of 16 and >= %zu bytes", a->out_stride, eb * c->cfg.hidden_dim);
    }
    a2a_kparams *k = &c->kp;
    k->T = a->num_tokens;
    k->bound_m = a->bound_m;
    k->indices = a->indices;
    if (flags & A2A_SEND) {
        k->weights = a->weights;
        k->y = a->expert_y;
        k->y_stride = a->expert_y_stride;
        k->y_rows = a->expert_y_rows;
    }
    if (flags & A2A_RECV) {
        k->out = a->out;
        k->out_stride = a->out_stride;
        k->accumulate = a->accumulate ? 1 : 0;
    }
    return launch_phases(c, flags, A2A_PH_CSEND, stream);
}
