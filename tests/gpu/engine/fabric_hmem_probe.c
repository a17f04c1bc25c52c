/* Evidence for docs/gpu-memory.md: what this machine's libfabric can do with CUDA device
 * memory. Plain libfabric calls (no engine): which providers offer FI_HMEM, whether
 * fi_mr_regattr(FI_HMEM_CUDA) accepts a cuMemAlloc pointer, whether the CUDA driver
 * exports dma-buf, whether GDRCopy / nvidia-peermem are present. Prints facts; exits 0
 * (77 without a GPU). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_errno.h>

#include "cuda/cuda_loader.h"
#include "tendril/te.h"

static void try_provider(const char *prov, uint64_t dptr, size_t len)
{
    struct fi_info *h = fi_allocinfo(), *list = NULL;
    h->caps = FI_MSG | FI_RMA | FI_HMEM;
    h->ep_attr->type = FI_EP_RDM;
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT | FI_MR_HMEM;
    h->fabric_attr->prov_name = strdup(prov);
    int ret = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, h, &list);
    fi_freeinfo(h);
    if (ret) {
        printf("PROBE provider=%-12s FI_HMEM=no   (fi_getinfo with FI_HMEM: %s)\n", prov, fi_strerror(-ret));
        return;
    }
    struct fi_info *i = list;
    printf("PROBE provider=%-12s FI_HMEM=yes  domain=%s mr_mode=0x%llx\n", i->fabric_attr->prov_name,
           i->domain_attr->name, (unsigned long long)i->domain_attr->mr_mode);
    struct fid_fabric *fab = NULL;
    struct fid_domain *dom = NULL;
    if ((ret = fi_fabric(i->fabric_attr, &fab, NULL)) || (ret = fi_domain(fab, i, &dom, NULL))) {
        printf("PROBE provider=%-12s open failed: %s\n", prov, fi_strerror(-ret));
    } else {
        struct iovec iov = {.iov_base = (void *)(uintptr_t)dptr, .iov_len = len};
        struct fi_mr_attr attr;
        memset(&attr, 0, sizeof attr);
        attr.mr_iov = &iov;
        attr.iov_count = 1;
        attr.access = FI_SEND | FI_RECV | FI_WRITE | FI_READ | FI_REMOTE_WRITE | FI_REMOTE_READ;
        attr.iface = FI_HMEM_CUDA;
        attr.device.cuda = 0;
        struct fid_mr *mr = NULL;
        ret = fi_mr_regattr(dom, &attr, 0, &mr);
        printf("PROBE provider=%-12s fi_mr_regattr(FI_HMEM_CUDA, cuMemAlloc ptr) = %d (%s)\n", prov,
               ret, ret ? fi_strerror(-ret) : "registered");
        if (mr) fi_close(&mr->fid);
    }
    if (dom) fi_close(&dom->fid);
    if (fab) fi_close(&fab->fid);
    fi_freeinfo(list);
}

int main(void)
{
    const tcu_api *cu;
    if (tcu_load(&cu) || tcu_device_count() == 0) {
        printf("SKIP: no CUDA device (%s)\n", te_last_error());
        return 77;
    }
    uint32_t v = fi_version();
    printf("PROBE libfabric runtime %u.%u, headers %d.%d\n", FI_MAJOR(v), FI_MINOR(v),
           FI_MAJOR_VERSION, FI_MINOR_VERSION);
    int ok = 0;
    tcu_device d;
    cu->cuDeviceGet(&d, 0);
    cu->cuDeviceGetAttribute(&ok, TCU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED, d);
    printf("PROBE CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED=%d\n", ok);
    if (tcu_ctx_enter(0)) return 1;
    tcu_deviceptr p = 0;
    size_t len = 4u << 20;
    if (cu->cuMemAlloc(&p, len)) {
        printf("cuMemAlloc failed\n");
        return 1;
    }
    int fd = -1;
    uint64_t off = 0;
    int r = tcu_dmabuf_export((void *)(uintptr_t)p, len, 0, &fd, &off);
    printf("PROBE dma-buf export of cuMemAlloc memory: %s\n", r ? te_last_error() : "ok (fd obtained)");
    if (fd >= 0) close(fd);
    printf("PROBE /dev/gdrdrv %s; libgdrapi.so.2 %s; nvidia_peermem module %s; kernel dma-buf "
           "importer for NICs: no RDMA NIC present\n",
           access("/dev/gdrdrv", F_OK) ? "absent" : "present",
           dlopen("libgdrapi.so.2", RTLD_NOW) ? "loadable" : "absent",
           access("/sys/module/nvidia_peermem", F_OK) ? "not loaded" : "loaded");
    const char *provs[] = {"tcp", "shm", "tcp;ofi_rxm", "udp;ofi_rxd", "sockets"};
    for (size_t k = 0; k < sizeof provs / sizeof *provs; k++) try_provider(provs[k], p, len);
    cu->cuMemFree(p);
    tcu_ctx_leave(0);
    return 0;
}
