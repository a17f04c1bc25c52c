/* Run-time loading of the CUDA driver API (see cuda_loader.h). */
#include "cuda/cuda_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/env.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"

#define CUDA_LIB "libcuda.so.1"

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static tcu_api g_api;
static int g_status;       /* 0 or negative errno, fixed after the once */
static char g_why[256];    /* message for a failed load */
static int g_ndev;

static void load_once(void)
{
    if (!tn_env_flag_warn("TENDRIL_CUDA", true)) {
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "CUDA disabled by TENDRIL_CUDA=0");
        return;
    }
    void *h = dlopen(CUDA_LIB, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *d = dlerror();
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "CUDA driver library %s not loadable (%s)", CUDA_LIB,
                 d ? d : "no detail");
        return;
    }
    struct { const char *name; void **slot; int optional; } syms[] = {
        {"cuInit", (void **)&g_api.cuInit, 0},
        {"cuGetErrorString", (void **)&g_api.cuGetErrorString, 0},
        {"cuDeviceGetCount", (void **)&g_api.cuDeviceGetCount, 0},
        {"cuDeviceGet", (void **)&g_api.cuDeviceGet, 0},
        {"cuDeviceGetAttribute", (void **)&g_api.cuDeviceGetAttribute, 0},
        {"cuDevicePrimaryCtxRetain", (void **)&g_api.cuDevicePrimaryCtxRetain, 0},
        {"cuDevicePrimaryCtxRelease_v2", (void **)&g_api.cuDevicePrimaryCtxRelease, 0},
        {"cuCtxPushCurrent_v2", (void **)&g_api.cuCtxPushCurrent, 0},
        {"cuCtxPopCurrent_v2", (void **)&g_api.cuCtxPopCurrent, 0},
        {"cuPointerGetAttribute", (void **)&g_api.cuPointerGetAttribute, 0},
        {"cuPointerSetAttribute", (void **)&g_api.cuPointerSetAttribute, 0},
        {"cuMemHostAlloc", (void **)&g_api.cuMemHostAlloc, 0},
        {"cuMemFreeHost", (void **)&g_api.cuMemFreeHost, 0},
        {"cuMemHostGetDevicePointer_v2", (void **)&g_api.cuMemHostGetDevicePointer, 0},
        {"cuMemGetAddressRange_v2", (void **)&g_api.cuMemGetAddressRange, 0},
        {"cuMemAlloc_v2", (void **)&g_api.cuMemAlloc, 0},
        {"cuMemFree_v2", (void **)&g_api.cuMemFree, 0},
        {"cuMemsetD8_v2", (void **)&g_api.cuMemsetD8, 0},
        {"cuCtxSynchronize", (void **)&g_api.cuCtxSynchronize, 0},
        {"cuEventCreate", (void **)&g_api.cuEventCreate, 0},
        {"cuEventRecord", (void **)&g_api.cuEventRecord, 0},
        {"cuEventQuery", (void **)&g_api.cuEventQuery, 0},
        {"cuEventDestroy_v2", (void **)&g_api.cuEventDestroy, 0},
        {"cuMemcpyHtoD_v2", (void **)&g_api.cuMemcpyHtoD, 0},
        {"cuMemcpyDtoH_v2", (void **)&g_api.cuMemcpyDtoH, 0},
        {"cuMemGetHandleForAddressRange", (void **)&g_api.cuMemGetHandleForAddressRange, 1},
        {"cuMemCreate", (void **)&g_api.cuMemCreate, 1},
        {"cuMemRelease", (void **)&g_api.cuMemRelease, 1},
        {"cuMemAddressReserve", (void **)&g_api.cuMemAddressReserve, 1},
        {"cuMemAddressFree", (void **)&g_api.cuMemAddressFree, 1},
        {"cuMemMap", (void **)&g_api.cuMemMap, 1},
        {"cuMemUnmap", (void **)&g_api.cuMemUnmap, 1},
        {"cuMemSetAccess", (void **)&g_api.cuMemSetAccess, 1},
        {"cuMemGetAllocationGranularity", (void **)&g_api.cuMemGetAllocationGranularity, 1},
        {"cuMemExportToShareableHandle", (void **)&g_api.cuMemExportToShareableHandle, 1},
        {"cuMemImportFromShareableHandle", (void **)&g_api.cuMemImportFromShareableHandle, 1},
    };
    for (size_t k = 0; k < sizeof syms / sizeof *syms; k++) {
        *syms[k].slot = dlsym(h, syms[k].name);
        if (!*syms[k].slot && !syms[k].optional) {
            g_status = -ENOSYS;
            snprintf(g_why, sizeof g_why, "%s lacks symbol %s (driver too old?)", CUDA_LIB,
                     syms[k].name);
            dlclose(h);
            memset(&g_api, 0, sizeof g_api);
            return;
        }
    }
    tcu_result r = g_api.cuInit(0);
    if (r) {
        g_status = -ENODEV;
        const char *s = NULL;
        g_api.cuGetErrorString(r, &s);
        snprintf(g_why, sizeof g_why, "cuInit failed: error %d (%s)", r, s ? s : "unknown");
        return; /* keep the library loaded: cuInit may have started driver threads */
    }
    if (g_api.cuDeviceGetCount(&g_ndev)) g_ndev = 0;
    TN_LOGI("CUDA driver loaded from %s: %d device(s)%s", CUDA_LIB, g_ndev,
            g_api.cuMemGetHandleForAddressRange ? "" : ", no dma-buf export");
}

int tcu_load(const tcu_api **out)
{
    pthread_once(&g_once, load_once);
    if (g_status) return tn_err(g_status, "%s", g_why);
    if (out) *out = &g_api;
    return 0;
}

const char *tcu_strerror(tcu_result r)
{
    static __thread char buf[160];
    const char *s = NULL;
    if (g_api.cuGetErrorString) g_api.cuGetErrorString(r, &s);
    snprintf(buf, sizeof buf, "CUDA error %d (%s)", r, s ? s : "unknown");
    return buf;
}

int tcu_mark_legacy_stream(void **mark)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    /* An event recorded on CU_STREAM_LEGACY covers every copy queued there before it; it
     * is queried, never synchronised on, so a copy that cannot run stalls nobody. A
     * thread without a current context issued nothing to wait for. */
    if (!*mark) {
        tcu_result cr = cu->cuEventCreate(mark, 0x2 /* CU_EVENT_DISABLE_TIMING */);
        if (cr == 201 /* CUDA_ERROR_INVALID_CONTEXT */) {
            *mark = NULL;
            return 1;
        }
        if (cr) {
            *mark = NULL;
            return tn_err(-EIO, "cuEventCreate: %s", tcu_strerror(cr));
        }
    }
    tcu_result cr = cu->cuEventRecord(*mark, (void *)(uintptr_t)1 /* CU_STREAM_LEGACY */);
    if (cr == 201) return 1;
    return cr ? tn_err(-EIO, "cuEventRecord on the legacy stream: %s", tcu_strerror(cr)) : 0;
}

int tcu_mark_done(void *mark)
{
    const tcu_api *cu;
    if (tcu_load(&cu)) return 1;
    tcu_result cr = cu->cuEventQuery(mark);
    if (cr == 600 /* CUDA_ERROR_NOT_READY */) return 0;
    return cr ? tn_err(-EIO, "cuEventQuery: %s", tcu_strerror(cr)) : 1;
}

void tcu_mark_free(void *mark)
{
    const tcu_api *cu;
    if (mark && !tcu_load(&cu)) cu->cuEventDestroy(mark);
}

int tcu_device_count(void)
{
    return tcu_load(NULL) ? 0 : g_ndev;
}

int tcu_ctx_enter(int dev)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    if (dev < 0 || dev >= g_ndev)
        return tn_err(-ENODEV, "CUDA device %d does not exist (%d device(s))", dev, g_ndev);
    tcu_device d;
    tcu_context ctx;
    tcu_result cr = cu->cuDeviceGet(&d, dev);
    if (!cr) cr = cu->cuDevicePrimaryCtxRetain(&ctx, d);
    if (cr) return tn_err(-ENODEV, "CUDA device %d: primary context: %s", dev, tcu_strerror(cr));
    if ((cr = cu->cuCtxPushCurrent(ctx))) {
        cu->cuDevicePrimaryCtxRelease(d);
        return tn_err(-ENODEV, "CUDA device %d: cuCtxPushCurrent: %s", dev, tcu_strerror(cr));
    }
    return 0;
}

void tcu_ctx_keep(int dev)
{
    tcu_device d;
    tcu_context ctx;
    if (!g_api.cuDeviceGet(&d, dev)) g_api.cuDevicePrimaryCtxRetain(&ctx, d);
}

void tcu_ctx_unkeep(int dev)
{
    tcu_device d;
    if (!g_api.cuDeviceGet(&d, dev)) g_api.cuDevicePrimaryCtxRelease(d);
}

void tcu_ctx_leave(int dev)
{
    tcu_context ctx;
    tcu_device d;
    g_api.cuCtxPopCurrent(&ctx);
    if (!g_api.cuDeviceGet(&d, dev)) g_api.cuDevicePrimaryCtxRelease(d);
}

int tcu_check_device_memory(const void *ptr, size_t len, int dev)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return tn_err(r, "device %d memory cannot be registered: %s", dev, g_why);
    tcu_deviceptr p = (tcu_deviceptr)(uintptr_t)ptr;
    unsigned mtype = 0;
    tcu_result cr = cu->cuPointerGetAttribute(&mtype, TCU_POINTER_ATTRIBUTE_MEMORY_TYPE, p);
    if (cr)
        return tn_err(-EINVAL, "pointer %p is not memory CUDA knows (plain host memory? register "
                               "it with device TE_DEVICE_HOST): %s", ptr, tcu_strerror(cr));
    unsigned managed = 0;
    cu->cuPointerGetAttribute(&managed, TCU_POINTER_ATTRIBUTE_IS_MANAGED, p);
    if (managed)
        return tn_err(-EINVAL, "pointer %p is CUDA managed (unified) memory, which NICs cannot "
                               "register: use cudaMalloc'ed device memory", ptr);
    if (mtype != TCU_MEMORYTYPE_DEVICE)
        return tn_err(-EINVAL, "pointer %p is CUDA %s memory, not device memory: register pinned "
                               "host memory with device TE_DEVICE_HOST", ptr,
                      mtype == TCU_MEMORYTYPE_HOST ? "host (pinned)" : "non-device");
    int ord = -1;
    cu->cuPointerGetAttribute(&ord, TCU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, p);
    if (ord != dev)
        return tn_err(-EINVAL, "pointer %p is memory of CUDA device %d, not of device %d", ptr, ord,
                      dev);
    tcu_deviceptr base = 0;
    size_t alen = 0;
    if (!cu->cuMemGetAddressRange(&base, &alen, p) && p + len > base + alen)
        return tn_err(-EINVAL, "range %p+%zu runs past the end of its CUDA allocation (%zu bytes "
                               "from 0x%llx)", ptr, len, alen, (unsigned long long)base);
    return 0;
}

int tcu_dmabuf_export(const void *ptr, size_t len, int dev, int *fd, uint64_t *offset)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    if (!cu->cuMemGetHandleForAddressRange)
        return tn_err(-EOPNOTSUPP, "the CUDA driver has no cuMemGetHandleForAddressRange");
    tcu_device d;
    int ok = 0;
    if (cu->cuDeviceGet(&d, dev) ||
        cu->cuDeviceGetAttribute(&ok, TCU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, d) || !ok)
        return tn_err(-EOPNOTSUPP, "CUDA device %d does not support dma-buf export", dev);
    /* The exported range must be host-page aligned; widen it, but stay inside the
     * allocation (cudaMalloc allocations are at least 2 MiB aligned in practice). */
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    tcu_deviceptr p = (tcu_deviceptr)(uintptr_t)ptr, base = 0;
    size_t alen = 0;
    if (cu->cuMemGetAddressRange(&base, &alen, p))
        return tn_err(-EOPNOTSUPP, "cuMemGetAddressRange failed for %p", ptr);
    tcu_deviceptr lo = p & ~(page - 1), hi = (p + len + page - 1) & ~(page - 1);
    if (lo < base || hi > base + alen)
        return tn_err(-EOPNOTSUPP, "page-aligned range around %p+%zu leaves its allocation", ptr, len);
    int h = -1;
    tcu_result cr;
    if ((r = tcu_ctx_enter(dev))) return r;
    cr = cu->cuMemGetHandleForAddressRange(&h, lo, (size_t)(hi - lo),
                                           TCU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD, 0);
    tcu_ctx_leave(dev);
    if (cr || h < 0)
        return tn_err(-EOPNOTSUPP, "cuMemGetHandleForAddressRange(DMA_BUF_FD): %s (kernel without "
                                   "dma-buf support for GPU memory?)", tcu_strerror(cr));
    *fd = h;
    *offset = p - lo;
    return 0;
}

int tcu_host_alloc_mapped(int dev, size_t len, void **host, uint64_t *dptr)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    if ((r = tcu_ctx_enter(dev))) return r;
    void *p = NULL;
    tcu_deviceptr d = 0;
    tcu_result cr = cu->cuMemHostAlloc(&p, len, TCU_MEMHOSTALLOC_PORTABLE | TCU_MEMHOSTALLOC_DEVICEMAP);
    if (!cr) {
        cr = cu->cuMemHostGetDevicePointer(&d, p, 0);
        if (cr) cu->cuMemFreeHost(p);
    }
    /* Keep one reference to the primary context per allocation: releasing the last
     * reference destroys the context and frees the memory with it (a process without
     * the CUDA runtime holds no other reference). tcu_host_free_mapped drops it. */
    if (!cr) tcu_ctx_keep(dev);
    tcu_ctx_leave(dev);
    if (cr) return tn_err(-ENOMEM, "cuMemHostAlloc(%zu, PORTABLE|DEVICEMAP) on device %d: %s", len,
                          dev, tcu_strerror(cr));
    memset(p, 0, len);
    *host = p;
    *dptr = d;
    return 0;
}

void tcu_host_free_mapped(int dev, void *host)
{
    if (!host || tcu_load(NULL)) return;
    if (tcu_ctx_enter(dev)) return;
    g_api.cuMemFreeHost(host);
    tcu_ctx_leave(dev);
    tcu_ctx_unkeep(dev);
}

int tcu_dev_alloc(int dev, size_t len, void **out)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    if ((r = tcu_ctx_enter(dev))) return r;
    tcu_deviceptr d = 0;
    tcu_result cr = cu->cuMemAlloc(&d, len ? len : 1);
    if (!cr) {
        cr = cu->cuMemsetD8(d, 0, len); /* asynchronous for device memory: wait for it */
        if (!cr) cr = cu->cuCtxSynchronize();
        if (cr) cu->cuMemFree(d);
    }
    if (!cr) tcu_ctx_keep(dev); /* as tcu_host_alloc_mapped: the memory lives in the context */
    tcu_ctx_leave(dev);
    if (cr) return tn_err(-ENOMEM, "cuMemAlloc(%zu) on device %d: %s", len, dev, tcu_strerror(cr));
    *out = (void *)(uintptr_t)d;
    return 0;
}

void tcu_dev_free(int dev, void *p)
{
    if (!p || tcu_load(NULL)) return;
    if (tcu_ctx_enter(dev)) return;
    g_api.cuMemFree((tcu_deviceptr)(uintptr_t)p);
    tcu_ctx_leave(dev);
    tcu_ctx_unkeep(dev);
}

static int copy(int dev, void *dst, const void *src, size_t len, int to_dev)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    if ((r = tcu_ctx_enter(dev))) return r;
    tcu_result cr = to_dev ? cu->cuMemcpyHtoD((tcu_deviceptr)(uintptr_t)dst, src, len)
                           : cu->cuMemcpyDtoH(dst, (tcu_deviceptr)(uintptr_t)src, len);
    tcu_ctx_leave(dev);
    if (cr) return tn_err(-EIO, "cuMemcpy%s(%zu bytes, device %d): %s", to_dev ? "HtoD" : "DtoH", len,
                          dev, tcu_strerror(cr));
    return 0;
}

int tcu_copy_to_dev(int dev, void *dst, const void *src, size_t len) { return copy(dev, dst, src, len, 1); }
int tcu_copy_to_host(int dev, void *dst, const void *src, size_t len) { return copy(dev, dst, src, len, 0); }
