/* CUDA driver API loaded at run time (dlopen "libcuda.so.1"), so one libtendril binary
 * runs on machines with and without CUDA. Only the entry points Tendril uses are
 * resolved; the types and constants below are the driver ABI's (values from the CUDA
 * documentation), declared here so that no CUDA header is needed to build.
 *
 * Thread safety: tcu_load() initialises once (pthread_once) and may be called from any
 * thread; the returned table is immutable afterwards. Set TENDRIL_CUDA=0 in the
 * environment to behave as if no driver were installed (tests, debugging). */
#ifndef TENDRIL_CUDA_LOADER_H
#define TENDRIL_CUDA_LOADER_H

#include <stddef.h>
#include <stdint.h>

typedef int tcu_result;          /* CUresult: 0 = CUDA_SUCCESS */
typedef int tcu_device;          /* CUdevice */
typedef void *tcu_context;       /* CUcontext */
typedef uint64_t tcu_deviceptr;  /* CUdeviceptr */

enum {
    TCU_POINTER_ATTRIBUTE_MEMORY_TYPE = 2,
    TCU_POINTER_ATTRIBUTE_SYNC_MEMOPS = 6,
    TCU_POINTER_ATTRIBUTE_IS_MANAGED = 8,
    TCU_POINTER_ATTRIBUTE_DEVICE_ORDINAL = 9,
    TCU_MEMORYTYPE_HOST = 1,
    TCU_MEMORYTYPE_DEVICE = 2,
    TCU_MEMORYTYPE_ARRAY = 3,
    TCU_MEMORYTYPE_UNIFIED = 4,
    TCU_MEMHOSTALLOC_PORTABLE = 1,
    TCU_MEMHOSTALLOC_DEVICEMAP = 2,
    TCU_MEM_RANGE_HANDLE_TYPE_DMA_BUF_FD = 1,
    TCU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED = 124,
    TCU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16,
    TCU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED = 110,
    TCU_ERROR_OUT_OF_MEMORY = 2,
    /* virtual memory management (cuMemCreate and friends) */
    TCU_MEM_ALLOCATION_TYPE_PINNED = 1,
    TCU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR = 1,
    TCU_MEM_LOCATION_TYPE_DEVICE = 1,
    TCU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3,
    TCU_MEM_ALLOC_GRANULARITY_RECOMMENDED = 1,
};

/* CUmemAllocationProp and CUmemAccessDesc (driver ABI, 32 and 12 bytes). */
typedef struct tcu_mem_location {
    int type; /* TCU_MEM_LOCATION_TYPE_* */
    int id;
} tcu_mem_location;
typedef struct tcu_mem_prop {
    int type;                   /* TCU_MEM_ALLOCATION_TYPE_* */
    int requested_handle_types; /* TCU_MEM_HANDLE_TYPE_* */
    tcu_mem_location location;
    void *win32_handle_meta_data;
    struct {
        unsigned char compression_type;
        unsigned char gpu_direct_rdma_capable;
        unsigned short usage;
        unsigned char reserved[4];
    } alloc_flags;
} tcu_mem_prop;
typedef struct tcu_mem_access_desc {
    tcu_mem_location location;
    int flags; /* TCU_MEM_ACCESS_FLAGS_* */
} tcu_mem_access_desc;
typedef uint64_t tcu_mem_handle; /* CUmemGenericAllocationHandle */

typedef struct tcu_api {
    tcu_result (*cuInit)(unsigned flags);
    tcu_result (*cuGetErrorString)(tcu_result r, const char **s);
    tcu_result (*cuDeviceGetCount)(int *n);
    tcu_result (*cuDeviceGet)(tcu_device *d, int ordinal);
    tcu_result (*cuDeviceGetAttribute)(int *v, int attr, tcu_device d);
    tcu_result (*cuDevicePrimaryCtxRetain)(tcu_context *ctx, tcu_device d);
    tcu_result (*cuDevicePrimaryCtxRelease)(tcu_device d);  /* _v2 */
    tcu_result (*cuCtxPushCurrent)(tcu_context ctx);        /* _v2 */
    tcu_result (*cuCtxPopCurrent)(tcu_context *ctx);        /* _v2 */
    tcu_result (*cuPointerGetAttribute)(void *data, int attr, tcu_deviceptr p);
    tcu_result (*cuPointerSetAttribute)(const void *value, int attr, tcu_deviceptr p);
    tcu_result (*cuMemHostAlloc)(void **p, size_t len, unsigned flags);
    tcu_result (*cuMemFreeHost)(void *p);
    tcu_result (*cuMemHostGetDevicePointer)(tcu_deviceptr *d, void *p, unsigned flags); /* _v2 */
    tcu_result (*cuMemGetAddressRange)(tcu_deviceptr *base, size_t *len, tcu_deviceptr p); /* _v2 */
    tcu_result (*cuMemAlloc)(tcu_deviceptr *d, size_t len);  /* _v2 */
    tcu_result (*cuMemFree)(tcu_deviceptr d);                /* _v2 */
    tcu_result (*cuMemsetD8)(tcu_deviceptr d, unsigned char v, size_t n);        /* _v2 */
    tcu_result (*cuCtxSynchronize)(void);
    tcu_result (*cuEventCreate)(void **ev, unsigned flags);
    tcu_result (*cuEventRecord)(void *ev, void *stream);
    tcu_result (*cuEventQuery)(void *ev);
    tcu_result (*cuEventDestroy)(void *ev); /* _v2 */
    tcu_result (*cuMemcpyHtoD)(tcu_deviceptr dst, const void *src, size_t n);    /* _v2 */
    tcu_result (*cuMemcpyDtoH)(void *dst, tcu_deviceptr src, size_t n);          /* _v2 */
    /* Optional (NULL if the driver predates CUDA 11.7): dma-buf export. */
    tcu_result (*cuMemGetHandleForAddressRange)(void *handle, tcu_deviceptr p, size_t len,
                                                int type, unsigned long long flags);
    /* Optional (NULL if the driver predates CUDA 10.2): virtual memory management, with
     * which the all-to-all shares GPU memory between processes (POSIX fd handles). */
    tcu_result (*cuMemCreate)(tcu_mem_handle *h, size_t len, const tcu_mem_prop *prop,
                              unsigned long long flags);
    tcu_result (*cuMemRelease)(tcu_mem_handle h);
    tcu_result (*cuMemAddressReserve)(tcu_deviceptr *p, size_t len, size_t align,
                                      tcu_deviceptr addr, unsigned long long flags);
    tcu_result (*cuMemAddressFree)(tcu_deviceptr p, size_t len);
    tcu_result (*cuMemMap)(tcu_deviceptr p, size_t len, size_t offset, tcu_mem_handle h,
                           unsigned long long flags);
    tcu_result (*cuMemUnmap)(tcu_deviceptr p, size_t len);
    tcu_result (*cuMemSetAccess)(tcu_deviceptr p, size_t len, const tcu_mem_access_desc *desc,
                                 size_t count);
    tcu_result (*cuMemGetAllocationGranularity)(size_t *gran, const tcu_mem_prop *prop, int option);
    tcu_result (*cuMemExportToShareableHandle)(void *os_handle, tcu_mem_handle h, int type,
                                               unsigned long long flags);
    tcu_result (*cuMemImportFromShareableHandle)(tcu_mem_handle *h, void *os_handle, int type);
} tcu_api;

/* Loads and initialises the driver once. 0 and *out set, or a negative errno with
 * te_last_error() naming what is missing: -ENOSYS (libcuda.so.1 or a symbol not
 * found, or TENDRIL_CUDA=0), -ENODEV (cuInit failed: no device or driver mismatch). */
int tcu_load(const tcu_api **out);
/* "CUDA_ERROR_...: text" for a driver result. Never NULL. */
const char *tcu_strerror(tcu_result r);
/* Marks the work this thread's current context has queued so far on its legacy default
 * stream (copies a library issued with cudaMemcpy). *mark: NULL the first time (an event
 * is created), then the same mark again once tcu_mark_done said 1. 0: marked; 1: the
 * thread has no context, so nothing was queued (nothing to wait for); negative errno when
 * CUDA is unavailable or the record failed. */
int tcu_mark_legacy_stream(void **mark);
/* 1: the marked work has finished, 0: not yet, negative errno: the query failed. Never
 * blocks. */
int tcu_mark_done(void *mark);
void tcu_mark_free(void *mark);
/* Number of CUDA devices; 0 when CUDA is unavailable (never an error). */
int tcu_device_count(void);

/* Makes device `dev`'s primary context current on this thread (retaining it). Pair
 * with tcu_ctx_leave(dev). */
int tcu_ctx_enter(int dev);
void tcu_ctx_leave(int dev);
/* One more / one less reference to device `dev`'s primary context (the device must have
 * been entered once before). Memory allocated in a context dies with it: allocations
 * that outlive the call keep a reference until they are freed. */
void tcu_ctx_keep(int dev);
void tcu_ctx_unkeep(int dev);

/* Registration check: [ptr, ptr+len) must be device memory (not managed, not host)
 * of CUDA device `dev`. 0, or -EINVAL with a message saying what the memory is. */
int tcu_check_device_memory(const void *ptr, size_t len, int dev);

/* Exports [ptr, ptr+len) of device memory as a dma-buf. The exported range is widened to
 * host-page alignment inside the allocation; *offset is ptr's offset inside the dma-buf.
 * The caller closes *fd. -EOPNOTSUPP (with message) when the driver, the device or the
 * kernel cannot. */
int tcu_dmabuf_export(const void *ptr, size_t len, int dev, int *fd, uint64_t *offset);

/* Pinned host memory mapped into the device address space (cuMemHostAlloc with
 * PORTABLE|DEVICEMAP), zeroed. *dptr is the address kernels use. */
int tcu_host_alloc_mapped(int dev, size_t len, void **host, uint64_t *dptr);
void tcu_host_free_mapped(int dev, void *host);

/* Device memory for tools, examples and tests that use no CUDA runtime (fabric-debug
 * --gpu, the KV-cache example): cuMemAlloc in device `dev`'s primary context, zeroed;
 * the allocation holds a context reference until tcu_dev_free; the zeroing has finished
 * when tcu_dev_alloc returns (other processes may read the memory through CUDA IPC right
 * after). Copies are synchronous
 * (cuMemcpy on the legacy stream) and enter the context themselves. */
int tcu_dev_alloc(int dev, size_t len, void **out);
void tcu_dev_free(int dev, void *p);
int tcu_copy_to_dev(int dev, void *dst, const void *src, size_t len);
int tcu_copy_to_host(int dev, void *dst, const void *src, size_t len);

#endif
