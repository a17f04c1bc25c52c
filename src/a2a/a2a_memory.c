/*
 * CUDA memory of a context, through the shared driver loader (src/cuda/cuda_loader.h):
 * the shared block (cuMemCreate with a POSIX fd handle, so node peers can import it
 * without privileges), the peers' blocks mapped here, device and host-mapped buffers.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "a2a_internal.h"

static size_t up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static int cu_fail(tcu_result r, const char *what)
{
    return tn_err(r == TCU_ERROR_OUT_OF_MEMORY ? -ENOMEM : -ENODEV, "a2a: %s: %s", what,
                  tcu_strerror(r));
}

static int vmm_api(const tcu_api **cu)
{
    int rc = tcu_load(cu);
    if (rc) return tn_err(rc, "a2a: CUDA driver unavailable: %s", te_last_error());
    if (!(*cu)->cuMemCreate || !(*cu)->cuMemMap || !(*cu)->cuMemSetAccess ||
        !(*cu)->cuMemExportToShareableHandle || !(*cu)->cuMemImportFromShareableHandle ||
        !(*cu)->cuMemAddressReserve || !(*cu)->cuMemGetAllocationGranularity)
        return tn_err(-ENOSYS, "a2a: the CUDA driver lacks virtual memory management (cuMemCreate "
                               "and friends: driver older than CUDA 10.2)");
    return 0;
}

/* Maps an allocation handle read/write for our device. */
static int map_handle(const a2a_ctx *c, tcu_mem_handle h, size_t size, uint64_t *out)
{
    const tcu_api *cu;
    int rc = vmm_api(&cu);
    if (rc) return rc;
    tcu_deviceptr p = 0;
    tcu_result r = cu->cuMemAddressReserve(&p, size, 0, 0, 0);
    if (r) return cu_fail(r, "cuMemAddressReserve");
    r = cu->cuMemMap(p, size, 0, h, 0);
    if (r) {
        cu->cuMemAddressFree(p, size);
        return cu_fail(r, "cuMemMap");
    }
    tcu_mem_access_desc ad;
    memset(&ad, 0, sizeof(ad));
    ad.location.type = TCU_MEM_LOCATION_TYPE_DEVICE;
    ad.location.id = c->dev;
    ad.flags = TCU_MEM_ACCESS_FLAGS_PROT_READWRITE;
    r = cu->cuMemSetAccess(p, size, &ad, 1);
    if (r) {
        cu->cuMemUnmap(p, size);
        cu->cuMemAddressFree(p, size);
        return cu_fail(r, "cuMemSetAccess (is peer access between these GPUs possible?)");
    }
    *out = p;
    return 0;
}

int a2a_mem_shared_create(a2a_ctx *c, size_t bytes, int rdma_capable)
{
    const tcu_api *cu;
    int rc = vmm_api(&cu);
    if (rc) return rc;
    tcu_device d;
    tcu_result r = cu->cuDeviceGet(&d, c->dev);
    if (r) return cu_fail(r, "cuDeviceGet");
    tcu_mem_prop prop;
    memset(&prop, 0, sizeof(prop));
    prop.type = TCU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = TCU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = c->dev;
    prop.requested_handle_types = TCU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
    if (rdma_capable) {
        /* NICs may read and write the block (GPU buffers for RDMA peers) */
        int ok = 0;
        if (!cu->cuDeviceGetAttribute(&ok, TCU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED, d) && ok)
            prop.alloc_flags.gpu_direct_rdma_capable = 1;
    }
    size_t gran = 0;
    r = cu->cuMemGetAllocationGranularity(&gran, &prop, TCU_MEM_ALLOC_GRANULARITY_RECOMMENDED);
    if (r || gran == 0) return cu_fail(r, "cuMemGetAllocationGranularity");
    c->shared_bytes = up(bytes, gran);
    r = cu->cuMemCreate(&c->handle, c->shared_bytes, &prop, 0);
    if (r) {
        c->handle = 0;
        return r == TCU_ERROR_OUT_OF_MEMORY
                   ? tn_err(-ENOMEM, "a2a_create: cuMemCreate of %zu bytes: out of GPU memory",
                            c->shared_bytes)
                   : cu_fail(r, "cuMemCreate");
    }
    rc = map_handle(c, c->handle, c->shared_bytes, &c->base);
    if (rc) return rc;
    r = cu->cuMemsetD8(c->base, 0, c->shared_bytes);
    if (!r) r = cu->cuCtxSynchronize();
    if (r) return cu_fail(r, "zeroing the shared block");
    r = cu->cuMemExportToShareableHandle(&c->fd, c->handle, TCU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0);
    if (r) {
        c->fd = -1;
        return cu_fail(r, "cuMemExportToShareableHandle (POSIX fd)");
    }
    return 0;
}

int a2a_mem_peer_map(a2a_ctx *c, int q, int fd, size_t size)
{
    const tcu_api *cu;
    int rc = vmm_api(&cu);
    if (rc) return rc;
    tcu_result r = cu->cuMemImportFromShareableHandle(&c->peer_handle[q], (void *)(uintptr_t)fd,
                                                      TCU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR);
    if (r) {
        c->peer_handle[q] = 0;
        return cu_fail(r, "cuMemImportFromShareableHandle");
    }
    c->peer_size[q] = size;
    return map_handle(c, c->peer_handle[q], size, &c->peer_base[q]);
}

void a2a_mem_peers_unmap(a2a_ctx *c)
{
    const tcu_api *cu;
    if (tcu_load(&cu) || !cu->cuMemUnmap) return;
    for (int q = 0; q < A2A_MAX_RANKS; q++) {
        if (q == c->t.srank) continue;
        if (c->peer_base[q]) {
            cu->cuMemUnmap(c->peer_base[q], c->peer_size[q]);
            cu->cuMemAddressFree(c->peer_base[q], c->peer_size[q]);
            c->peer_base[q] = 0;
        }
        if (c->peer_handle[q]) {
            cu->cuMemRelease(c->peer_handle[q]);
            c->peer_handle[q] = 0;
        }
    }
}

void a2a_mem_shared_free(a2a_ctx *c)
{
    a2a_mem_peers_unmap(c);
    const tcu_api *cu;
    if (tcu_load(&cu) || !cu->cuMemUnmap) return;
    if (c->base) {
        cu->cuMemUnmap(c->base, c->shared_bytes);
        cu->cuMemAddressFree(c->base, c->shared_bytes);
        c->base = 0;
    }
    if (c->handle) {
        cu->cuMemRelease(c->handle);
        c->handle = 0;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

int a2a_mem_dev_alloc(a2a_ctx *c, size_t bytes, void **out, const char *what)
{
    int rc = tcu_dev_alloc(c->dev, bytes, out);
    if (rc) return tn_err(rc, "a2a: %s (%zu bytes of GPU memory): %s", what, bytes, te_last_error());
    return 0;
}

int a2a_mem_host_alloc(a2a_ctx *c, size_t bytes, void **host, uint64_t *dev, const char *what)
{
    int rc = tcu_host_alloc_mapped(c->dev, bytes, host, dev);
    if (rc)
        return tn_err(rc, "a2a: %s (%zu bytes of pinned host memory): %s", what, bytes,
                      te_last_error());
    return 0;
}
