/*
 * Host side of the NVLink all-to-all: configuration checks, buffer layout, allocation
 * and sharing of the peer-visible block, phase bookkeeping and kernel launches.
 */
#include <cuda.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tendril/a2a.h>

#include "a2a_internal.h"
#include "a2a_kernels.h"
#include "a2a_share.h"

/* ------------------------------------------------------------------ errors ---- */

static __thread char g_err[512];

int a2a_err(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof(g_err), fmt, ap);
    va_end(ap);
    return code;
}

void a2a_err_clear(void) { g_err[0] = 0; }

const char *a2a_last_error(void) { return g_err; }

const char *a2a_strerror(int err) {
    switch (err) {
    case 0: return "success";
    case -ETIMEDOUT: return "timed out waiting for a peer";
    case -EOVERFLOW: return "more rows than the output holds";
    case -ECANCELED: return "aborted";
    case -EPROTO: return "protocol violation (phase order or peer configuration)";
    case -EINVAL: return "invalid argument";
    case -ENOMEM: return "out of memory";
    case -ENODEV: return "CUDA error";
    default: return err < 0 ? strerror(-err) : "unknown error";
    }
}

/* ------------------------------------------------------------------ context ---- */

struct a2a_ctx {
    a2a_config cfg;
    char rdv[96];
    int W, rank, dev, nblocks;
    uint32_t L, nloc;
    /* shared block */
    size_t shared_bytes;
    CUmemGenericAllocationHandle handle;
    CUdeviceptr base;
    int fd;
    CUmemGenericAllocationHandle peer_handle[A2A_MAX_RANKS];
    CUdeviceptr peer_base[A2A_MAX_RANKS];
    size_t peer_size[A2A_MAX_RANKS];
    int connected;
    /* private */
    void *ws;
    size_t ws_bytes;
    uint32_t *host_words; /* [0] error, [1] abort, host-mapped */
    int next_phase;
    uint64_t layout_hash;
    a2a_kparams kp;
};

static int cu_fail(CUresult r, const char *what) {
    const char *s = NULL;
    cuGetErrorString(r, &s);
    return a2a_err(-ENODEV, "%s: %s", what, s ? s : "unknown CUDA driver error");
}

static int rt_fail(cudaError_t e, const char *what) {
    if (e == cudaErrorMemoryAllocation) return a2a_err(-ENOMEM, "%s: %s", what, cudaGetErrorString(e));
    return a2a_err(-ENODEV, "%s: %s", what, cudaGetErrorString(e));
}

static size_t up(size_t x, size_t a) { return (x + a - 1) / a * a; }

/* Switches to the context's device and returns the previous one. */
static int enter_dev(const a2a_ctx *c, int *prev) {
    if (cudaGetDevice(prev) != cudaSuccess) *prev = -1;
    if (*prev != c->dev) {
        cudaError_t e = cudaSetDevice(c->dev);
        if (e != cudaSuccess) return rt_fail(e, "cudaSetDevice");
    }
    return 0;
}
static void leave_dev(const a2a_ctx *c, int prev) {
    if (prev >= 0 && prev != c->dev) cudaSetDevice(prev);
}

static int check_config(const a2a_config *cfg) {
    if (!cfg) return a2a_err(-EINVAL, "a2a_create: cfg is NULL");
    if (cfg->struct_size < sizeof(a2a_config))
        return a2a_err(-EINVAL, "a2a_create: cfg->struct_size %zu < %zu (set it to sizeof(a2a_config))",
                       cfg->struct_size, sizeof(a2a_config));
    if (cfg->world_size < 1 || cfg->world_size > A2A_MAX_RANKS)
        return a2a_err(-EINVAL, "a2a_create: world_size %d not in [1, %d]", cfg->world_size, A2A_MAX_RANKS);
    if (cfg->rank < 0 || cfg->rank >= cfg->world_size)
        return a2a_err(-EINVAL, "a2a_create: rank %d not in [0, %d)", cfg->rank, cfg->world_size);
    if (cfg->max_num_tokens < 1 || cfg->max_num_tokens > A2A_MAX_TOKENS)
        return a2a_err(-EINVAL, "a2a_create: max_num_tokens %u not in [1, %u]", cfg->max_num_tokens,
                       A2A_MAX_TOKENS);
    if (cfg->num_experts < 1 || cfg->num_experts > A2A_MAX_EXPERTS)
        return a2a_err(-EINVAL, "a2a_create: num_experts %u not in [1, %d]", cfg->num_experts,
                       A2A_MAX_EXPERTS);
    if (cfg->experts_per_token < 1 || cfg->experts_per_token > A2A_MAX_TOPK)
        return a2a_err(-EINVAL, "a2a_create: experts_per_token %u not in [1, %d]",
                       cfg->experts_per_token, A2A_MAX_TOPK);
    if (cfg->expert_padding < 1 || cfg->expert_padding > 65536)
        return a2a_err(-EINVAL, "a2a_create: expert_padding %u not in [1, 65536]", cfg->expert_padding);
    if (cfg->hidden_dim < 8 || cfg->hidden_dim % 8)
        return a2a_err(-EINVAL, "a2a_create: hidden_dim %u must be a positive multiple of 8",
                       cfg->hidden_dim);
    if (cfg->in_elem_size != 1 && cfg->in_elem_size != 2 && cfg->in_elem_size != 4)
        return a2a_err(-EINVAL, "a2a_create: in_elem_size %u must be 1, 2 or 4", cfg->in_elem_size);
    if ((size_t)cfg->hidden_dim * cfg->in_elem_size % 16)
        return a2a_err(-EINVAL, "a2a_create: hidden_dim * in_elem_size = %zu must be a multiple of 16",
                       (size_t)cfg->hidden_dim * cfg->in_elem_size);
    if (cfg->hidden_dim_scale > 4096)
        return a2a_err(-EINVAL, "a2a_create: hidden_dim_scale %u > 4096", cfg->hidden_dim_scale);
    if (cfg->out_dtype != A2A_DTYPE_BF16 && cfg->out_dtype != A2A_DTYPE_F16 && cfg->out_dtype != A2A_DTYPE_F32)
        return a2a_err(-EINVAL, "a2a_create: out_dtype %d is not bf16, f16 or f32", (int)cfg->out_dtype);
    if (!cfg->rendezvous || !cfg->rendezvous[0] || strlen(cfg->rendezvous) > 80)
        return a2a_err(-EINVAL, "a2a_create: rendezvous must be a name of 1..80 characters");
    return 0;
}

static uint64_t fnv(uint64_t h, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

static void free_shared(a2a_ctx *c) {
    for (int q = 0; q < c->W; q++) {
        if (q == c->rank) continue;
        if (c->peer_base[q]) {
            cuMemUnmap(c->peer_base[q], c->peer_size[q]);
            cuMemAddressFree(c->peer_base[q], c->peer_size[q]);
            c->peer_base[q] = 0;
        }
        if (c->peer_handle[q]) {
            cuMemRelease(c->peer_handle[q]);
            c->peer_handle[q] = 0;
        }
    }
    if (c->base) {
        cuMemUnmap(c->base, c->shared_bytes);
        cuMemAddressFree(c->base, c->shared_bytes);
        c->base = 0;
    }
    if (c->handle) {
        cuMemRelease(c->handle);
        c->handle = 0;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Maps an allocation handle read/write for our device. */
static int map_handle(const a2a_ctx *c, CUmemGenericAllocationHandle h, size_t size, CUdeviceptr *out) {
    CUdeviceptr p = 0;
    CUresult r = cuMemAddressReserve(&p, size, 0, 0, 0);
    if (r != CUDA_SUCCESS) return cu_fail(r, "cuMemAddressReserve");
    r = cuMemMap(p, size, 0, h, 0);
    if (r != CUDA_SUCCESS) {
        cuMemAddressFree(p, size);
        return cu_fail(r, "cuMemMap");
    }
    CUmemAccessDesc ad;
    memset(&ad, 0, sizeof(ad));
    ad.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    ad.location.id = c->dev;
    ad.flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = cuMemSetAccess(p, size, &ad, 1);
    if (r != CUDA_SUCCESS) {
        cuMemUnmap(p, size);
        cuMemAddressFree(p, size);
        return cu_fail(r, "cuMemSetAccess (is peer access between these GPUs possible?)");
    }
    *out = p;
    return 0;
}

int a2a_create(const a2a_config *cfg, a2a_ctx **out) {
    a2a_err_clear();
    if (!out) return a2a_err(-EINVAL, "a2a_create: out is NULL");
    *out = NULL;
    int rc = check_config(cfg);
    if (rc) return rc;
    a2a_ctx *c = calloc(1, sizeof(*c));
    if (!c) return a2a_err(-ENOMEM, "a2a_create: out of host memory");
    c->cfg = *cfg;
    snprintf(c->rdv, sizeof(c->rdv), "%s", cfg->rendezvous);
    c->cfg.rendezvous = c->rdv;
    c->fd = -1;
    c->W = cfg->world_size;
    c->rank = cfg->rank;
    c->dev = cfg->device;
    c->L = (cfg->num_experts + c->W - 1) / c->W;
    {
        long n = (long)cfg->num_experts - (long)c->rank * c->L;
        c->nloc = n < 0 ? 0 : (n > (long)c->L ? c->L : (uint32_t)n);
    }
    int prev;
    rc = enter_dev(c, &prev);
    if (rc) {
        free(c);
        return rc;
    }
    cudaError_t ce = cudaFree(0); /* make the primary context current */
    if (ce != cudaSuccess) {
        rc = rt_fail(ce, "a2a_create: CUDA init");
        goto fail;
    }

    /* layout of the shared block */
    const size_t W = c->W, T = cfg->max_num_tokens, K = cfg->experts_per_token, H = cfg->hidden_dim;
    const size_t payload = H * cfg->in_elem_size;
    const size_t row = payload + up((size_t)cfg->hidden_dim_scale * 4, 16);
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

    CUdevice cudev;
    CUresult r = cuDeviceGet(&cudev, c->dev);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(r, "cuDeviceGet");
        goto fail;
    }
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof(prop));
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = c->dev;
    prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    size_t gran = 0;
    r = cuMemGetAllocationGranularity(&gran, &prop, CU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
    if (r != CUDA_SUCCESS || gran == 0) {
        rc = cu_fail(r, "cuMemGetAllocationGranularity");
        goto fail;
    }
    c->shared_bytes = up(off, gran);
    r = cuMemCreate(&c->handle, c->shared_bytes, &prop, 0);
    if (r != CUDA_SUCCESS) {
        rc = r == CUDA_ERROR_OUT_OF_MEMORY
                 ? a2a_err(-ENOMEM, "a2a_create: cuMemCreate of %zu bytes: out of GPU memory", c->shared_bytes)
                 : cu_fail(r, "cuMemCreate");
        goto fail;
    }
    rc = map_handle(c, c->handle, c->shared_bytes, &c->base);
    if (rc) goto fail;
    r = cuMemsetD8(c->base, 0, c->shared_bytes);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(r, "cuMemsetD8");
        goto fail;
    }
    r = cuMemExportToShareableHandle(&c->fd, c->handle, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    if (r != CUDA_SUCCESS) {
        rc = cu_fail(r, "cuMemExportToShareableHandle (POSIX fd)");
        goto fail;
    }
    c->peer_base[c->rank] = c->base;
    c->peer_size[c->rank] = c->shared_bytes;

    /* private workspace */
    const size_t E = cfg->num_experts;
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
    c->ws_bytes = up(ws, 256);
    ce = cudaMalloc(&c->ws, c->ws_bytes);
    if (ce != cudaSuccess) {
        rc = rt_fail(ce, "a2a_create: workspace");
        goto fail;
    }
    ce = cudaMemset(c->ws, 0, c->ws_bytes);
    if (ce == cudaSuccess) ce = cudaHostAlloc((void **)&c->host_words, 64, cudaHostAllocMapped);
    if (ce != cudaSuccess) {
        rc = rt_fail(ce, "a2a_create: host-mapped words");
        goto fail;
    }
    memset(c->host_words, 0, 64);
    uint32_t *hw_dev = NULL;
    ce = cudaHostGetDevicePointer((void **)&hw_dev, c->host_words, 0);
    if (ce != cudaSuccess) {
        rc = rt_fail(ce, "cudaHostGetDevicePointer");
        goto fail;
    }
    ce = cudaDeviceSynchronize();
    if (ce != cudaSuccess) {
        rc = rt_fail(ce, "a2a_create: zeroing");
        goto fail;
    }

    char *w8 = c->ws;
    kp->ws_iter = (uint32_t *)(w8 + o_iter);
    kp->ws_err = (uint32_t *)(w8 + o_err);
    kp->ws_arrive = (uint32_t *)(w8 + o_arr);
    kp->ws_total_cnt = (int32_t *)(w8 + o_tc);
    kp->ws_total_rcnt = (int32_t *)(w8 + o_trc);
    kp->ws_src_base = (int32_t *)(w8 + o_base);
    kp->ws_nsrc = (int32_t *)(w8 + o_nsrc);
    kp->host_err = hw_dev;
    kp->host_abort = hw_dev + 1;
    kp->timeout_ns = (uint64_t)(cfg->timeout_ms ? cfg->timeout_ms : 10000) * 1000000ull;
    kp->rank = c->rank;
    kp->world = c->W;
    kp->E = cfg->num_experts;
    kp->L = c->L;
    kp->K = cfg->experts_per_token;
    kp->H = cfg->hidden_dim;
    kp->S = cfg->hidden_dim_scale;
    kp->Tmax = cfg->max_num_tokens;
    kp->pad = cfg->expert_padding;
    kp->payload_bytes = (uint32_t)payload;
    kp->row_bytes = (uint32_t)row;
    kp->out_dtype = cfg->out_dtype;
    kp->partial_f32 = cfg->partial_f32 || cfg->out_dtype == A2A_DTYPE_F32;

    int maxb = a2a_kernel_max_blocks(kp, c->dev);
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c->dev);
    if (maxb <= 0) {
        rc = a2a_err(-ENODEV, "a2a_create: cannot query kernel occupancy (%s)", cudaGetErrorString(cudaGetLastError()));
        goto fail;
    }
    c->nblocks = cfg->num_sms ? (int)cfg->num_sms : sms;
    if (c->nblocks > maxb) {
        rc = a2a_err(-EINVAL, "a2a_create: num_sms %d > %d co-resident blocks on device %d", c->nblocks,
                     maxb, c->dev);
        goto fail;
    }

    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv(h, c->W);
    h = fnv(h, cfg->max_num_tokens);
    h = fnv(h, cfg->num_experts);
    h = fnv(h, cfg->experts_per_token);
    h = fnv(h, cfg->expert_padding);
    h = fnv(h, cfg->hidden_dim);
    h = fnv(h, cfg->hidden_dim_scale);
    h = fnv(h, cfg->in_elem_size);
    h = fnv(h, (uint64_t)cfg->out_dtype);
    h = fnv(h, kp->partial_f32);
    h = fnv(h, c->shared_bytes);
    c->layout_hash = h;
    leave_dev(c, prev);
    *out = c;
    return 0;
fail:
    free_shared(c);
    if (c->ws) cudaFree(c->ws);
    if (c->host_words) cudaFreeHost(c->host_words);
    leave_dev(c, prev);
    free(c);
    return rc;
}

int a2a_connect(a2a_ctx *c, int timeout_ms) {
    a2a_err_clear();
    if (!c) return a2a_err(-EINVAL, "a2a_connect: ctx is NULL");
    if (c->connected) return a2a_err(-EINVAL, "a2a_connect: already connected");
    int fds[A2A_MAX_RANKS];
    uint64_t sizes[A2A_MAX_RANKS];
    a2a_share_offer offer = {c->rank, c->W, c->fd, c->shared_bytes, c->layout_hash};
    int rc = a2a_share_exchange(c->rdv, &offer, timeout_ms, fds, sizes);
    if (rc) return rc;
    int prev;
    rc = enter_dev(c, &prev);
    for (int q = 0; q < c->W && rc == 0; q++) {
        if (q == c->rank) continue;
        if (sizes[q] != c->shared_bytes) {
            rc = a2a_err(-EPROTO, "a2a_connect: rank %d shares %llu bytes, we expect %zu", q,
                         (unsigned long long)sizes[q], c->shared_bytes);
            break;
        }
        CUresult r = cuMemImportFromShareableHandle(&c->peer_handle[q], (void *)(uintptr_t)fds[q],
                                                    CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
        if (r != CUDA_SUCCESS) {
            rc = cu_fail(r, "cuMemImportFromShareableHandle");
            break;
        }
        c->peer_size[q] = sizes[q];
        rc = map_handle(c, c->peer_handle[q], sizes[q], &c->peer_base[q]);
    }
    for (int q = 0; q < c->W; q++)
        if (fds[q] >= 0) close(fds[q]);
    if (rc == 0) {
        for (int q = 0; q < c->W; q++) c->kp.peer[q] = (char *)(uintptr_t)c->peer_base[q];
        c->connected = 1;
    }
    leave_dev(c, prev);
    return rc;
}

void a2a_destroy(a2a_ctx *c) {
    if (!c) return;
    int prev;
    if (enter_dev(c, &prev) == 0) {
        cudaDeviceSynchronize();
        free_shared(c);
        if (c->ws) cudaFree(c->ws);
        if (c->host_words) cudaFreeHost(c->host_words);
        leave_dev(c, prev);
    }
    free(c);
}

uint32_t a2a_max_recv_tokens(const a2a_ctx *c) {
    if (!c) return 0;
    const uint32_t K = c->cfg.experts_per_token;
    const uint64_t per = K < c->nloc ? K : c->nloc;
    uint64_t n = (uint64_t)c->W * c->cfg.max_num_tokens * per + (uint64_t)c->nloc * (c->cfg.expert_padding - 1);
    return n > 0xffffffffu ? 0xffffffffu : (uint32_t)(n ? n : 1);
}
uint32_t a2a_num_local_experts(const a2a_ctx *c) { return c ? c->nloc : 0; }
uint32_t a2a_first_expert(const a2a_ctx *c) { return c ? (uint32_t)c->rank * c->L : 0; }
size_t a2a_memory_bytes(const a2a_ctx *c) { return c ? c->shared_bytes + c->ws_bytes : 0; }

int a2a_poll_error(a2a_ctx *c) {
    if (!c) return a2a_err(-EINVAL, "a2a_poll_error: ctx is NULL");
    const uint32_t w = *(volatile uint32_t *)&c->host_words[0];
    if (!w) return 0;
    static const char *ph[] = {"dispatch send", "dispatch recv", "combine send", "combine recv"};
    const uint32_t code = w >> 24, phase = (w >> 16) & 0xff, peer = w & 0xffff;
    const char *pn = phase < 4 ? ph[phase] : "?";
    switch (code) {
    case A2A_ERR_TIMEOUT:
        return a2a_err(-ETIMEDOUT, "a2a %s on rank %d: rank %u did not answer within %llu ms", pn, c->rank,
                       peer, (unsigned long long)(c->kp.timeout_ns / 1000000));
    case A2A_ERR_OVERFLOW:
        return a2a_err(-EOVERFLOW, "a2a %s on rank %d: rows from rank %u exceed the output capacity", pn,
                       c->rank, peer);
    default:
        return a2a_err(-ECANCELED, "a2a %s on rank %d: aborted", pn, c->rank);
    }
}

void a2a_abort(a2a_ctx *c) {
    if (!c) return;
    *(volatile uint32_t *)&c->host_words[1] = 1;
    __sync_synchronize();
}

static int begin(a2a_ctx *c, unsigned flags, int first_phase, const char *fn) {
    if (!c) return a2a_err(-EINVAL, "%s: ctx is NULL", fn);
    if (!c->connected) return a2a_err(-EINVAL, "%s: call a2a_connect first", fn);
    if (flags == 0 || (flags & ~(A2A_SEND | A2A_RECV)))
        return a2a_err(-EINVAL, "%s: flags 0x%x must be A2A_SEND, A2A_RECV or both", fn, flags);
    int rc = a2a_poll_error(c);
    if (rc) return rc;
    static const char *names[] = {"dispatch send", "dispatch recv", "combine send", "combine recv"};
    const int want = (flags & A2A_SEND) ? first_phase : first_phase + 1;
    if (c->next_phase != want)
        return a2a_err(-EPROTO, "%s: %s called, but the next phase of this iteration is %s", fn,
                       names[want], names[c->next_phase]);
    return 0;
}

static int launch_phases(a2a_ctx *c, unsigned flags, int first_phase, void *stream) {
    int prev;
    int rc = enter_dev(c, &prev);
    if (rc) return rc;
    if (flags == (A2A_SEND | A2A_RECV)) { /* one launch for both halves */
        int e = a2a_kernel_launch(first_phase == A2A_PH_DSEND ? A2A_PH_DBOTH : A2A_PH_CBOTH, &c->kp,
                                  c->nblocks, stream);
        if (e != 0) rc = rt_fail((cudaError_t)e, "a2a kernel launch");
        else c->next_phase = (first_phase + 2) % 4;
    } else {
        const int ph = (flags & A2A_SEND) ? first_phase : first_phase + 1;
        int e = a2a_kernel_launch(ph, &c->kp, c->nblocks, stream);
        if (e != 0) rc = rt_fail((cudaError_t)e, "a2a kernel launch");
        else c->next_phase = (ph + 1) % 4;
    }
    leave_dev(c, prev);
    return rc;
}

#define ALIGNED16(x) ((((uintptr_t)(x)) & 15) == 0)

int a2a_dispatch(a2a_ctx *c, const a2a_dispatch_args *a, unsigned flags, void *stream) {
    a2a_err_clear();
    int rc = begin(c, flags, A2A_PH_DSEND, "a2a_dispatch");
    if (rc) return rc;
    if (!a || a->struct_size < sizeof(*a))
        return a2a_err(-EINVAL, "a2a_dispatch: args NULL or args->struct_size too small");
    if (a->num_tokens > c->cfg.max_num_tokens)
        return a2a_err(-EINVAL, "a2a_dispatch: num_tokens %u > max_num_tokens %u", a->num_tokens,
                       c->cfg.max_num_tokens);
    if (flags & A2A_SEND) {
        if (a->num_tokens && (!a->x || !a->indices))
            return a2a_err(-EINVAL, "a2a_dispatch: x and indices are required");
        if (!ALIGNED16(a->x) || a->x_stride % 16 || (a->num_tokens > 1 && a->x_stride < c->kp.payload_bytes))
            return a2a_err(-EINVAL, "a2a_dispatch: x must be 16-byte aligned with a row stride (%zu) that is a "
                           "multiple of 16 and >= %u bytes", a->x_stride, c->kp.payload_bytes);
        if (c->kp.S && a->num_tokens && !a->x_scale)
            return a2a_err(-EINVAL, "a2a_dispatch: x_scale is required (hidden_dim_scale = %u)", c->kp.S);
    }
    if (flags & A2A_RECV) {
        if (!a->out_x || !a->out_num_tokens)
            return a2a_err(-EINVAL, "a2a_dispatch: out_x and out_num_tokens are required");
        if (!ALIGNED16(a->out_x) || a->out_x_stride % 16 || a->out_x_stride < c->kp.payload_bytes)
            return a2a_err(-EINVAL, "a2a_dispatch: out_x must be 16-byte aligned with a row stride (%zu) that is "
                           "a multiple of 16 and >= %u bytes", a->out_x_stride, c->kp.payload_bytes);
        if (c->kp.S && !a->out_x_scale)
            return a2a_err(-EINVAL, "a2a_dispatch: out_x_scale is required (hidden_dim_scale = %u)", c->kp.S);
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

int a2a_combine(a2a_ctx *c, const a2a_combine_args *a, unsigned flags, void *stream) {
    a2a_err_clear();
    int rc = begin(c, flags, A2A_PH_CSEND, "a2a_combine");
    if (rc) return rc;
    if (!a || a->struct_size < sizeof(*a))
        return a2a_err(-EINVAL, "a2a_combine: args NULL or args->struct_size too small");
    if (a->num_tokens > c->cfg.max_num_tokens)
        return a2a_err(-EINVAL, "a2a_combine: num_tokens %u > max_num_tokens %u", a->num_tokens,
                       c->cfg.max_num_tokens);
    const size_t eb = c->cfg.out_dtype == A2A_DTYPE_F32 ? 4 : 2;
    if (a->num_tokens && !a->indices) return a2a_err(-EINVAL, "a2a_combine: indices is required");
    if (flags & A2A_SEND) {
        if (a->num_tokens && !a->weights) return a2a_err(-EINVAL, "a2a_combine: weights is required");
        if (!a->expert_y || !ALIGNED16(a->expert_y) || a->expert_y_stride % 16 ||
            a->expert_y_stride < eb * c->cfg.hidden_dim)
            return a2a_err(-EINVAL, "a2a_combine: expert_y must be 16-byte aligned with a row stride (%zu) that is "
                           "a multiple of 16 and >= %zu bytes", a->expert_y_stride, eb * c->cfg.hidden_dim);
    }
    if (flags & A2A_RECV) {
        if (a->num_tokens && (!a->out || !ALIGNED16(a->out) || a->out_stride % 16 ||
                              a->out_stride < eb * c->cfg.hidden_dim))
            return a2a_err(-EINVAL, "a2a_combine: out must be 16-byte aligned with a row stride (%zu) that is a "
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
