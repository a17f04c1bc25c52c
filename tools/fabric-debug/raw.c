#include "raw.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

struct raw_ep {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_cq *cq;
    struct fid_av *av;
    struct fid_ep *ep;
    fi_addr_t peer;
    uint64_t mr_mode;
    uint64_t next_key;
    uint64_t write_flags; /* the same completion semantics the engine asks for */
};

int raw_open(const char *provider, const char *nic, bool hmem, raw_ep **out, char *err,
             size_t errcap)
{
    raw_ep *r = calloc(1, sizeof *r);
    struct fi_info *hints = fi_allocinfo(), *list = NULL;
    if (!r || !hints) return -ENOMEM;
    hints->caps = FI_MSG | FI_RMA | FI_WRITE | FI_REMOTE_WRITE | (hmem ? FI_HMEM : 0);
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                                  FI_MR_ENDPOINT | (hmem ? FI_MR_HMEM : 0);
    hints->domain_attr->threading = FI_THREAD_DOMAIN; /* one thread: the cheapest mode */
    hints->fabric_attr->prov_name = strdup(provider);
    /* The engine's shm ordering (src/transport/fabric/fabric.c): write-after-write turns
     * off shm's unchecked direct copy, so every write goes through the target, which
     * checks key and range. The raw side takes the same path; otherwise the ratio would
     * set the engine's checked writes against unchecked ones (a 64 KiB write then costs
     * about 4x on the 2-vCPU VM, measured 2026-12-07). */
    if (!strcmp(provider, "shm")) hints->tx_attr->msg_order = FI_ORDER_WAW;
    int ret = fi_getinfo(FI_VERSION(1, 17), NULL, NULL, 0, hints, &list);
    fi_freeinfo(hints);
    if (ret) {
        snprintf(err, errcap, "fi_getinfo(%s%s): %s%s", provider, hmem ? ", FI_HMEM" : "",
                 fi_strerror(-ret),
                 hmem ? " (the provider cannot register GPU memory: libfabric built without "
                        "CUDA support?)" : "");
        free(r);
        return ret;
    }
    for (struct fi_info *i = list; i; i = i->next)
        if (i->domain_attr->cq_data_size >= 4 && (!nic || !strcmp(i->domain_attr->name, nic))) {
            r->info = fi_dupinfo(i);
            break;
        }
    fi_freeinfo(list);
    if (!r->info) {
        snprintf(err, errcap, "provider %s has no domain %s", provider, nic ? nic : "(any)");
        free(r);
        return -ENODEV;
    }
    r->mr_mode = r->info->domain_attr->mr_mode;
    r->next_key = 1;
    /* Like the engine (src/transport/fabric/fabric.c): writes complete on delivery, except on shm. */
    r->write_flags = strcmp(r->info->fabric_attr->prov_name, "shm") ? FI_DELIVERY_COMPLETE : 0;
    struct fi_cq_attr cqa = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_NONE};
    struct fi_av_attr ava = {.type = FI_AV_UNSPEC};
    const char *step = "fi_fabric";
    if ((ret = fi_fabric(r->info->fabric_attr, &r->fabric, NULL))) goto fail;
    step = "fi_domain";
    if ((ret = fi_domain(r->fabric, r->info, &r->domain, NULL))) goto fail;
    step = "fi_cq_open";
    if ((ret = fi_cq_open(r->domain, &cqa, &r->cq, NULL))) goto fail;
    step = "fi_av_open";
    if ((ret = fi_av_open(r->domain, &ava, &r->av, NULL))) goto fail;
    step = "fi_endpoint";
    if ((ret = fi_endpoint(r->domain, r->info, &r->ep, NULL))) goto fail;
    step = "fi_ep_bind";
    if ((ret = fi_ep_bind(r->ep, &r->cq->fid, FI_TRANSMIT | FI_RECV))) goto fail;
    if ((ret = fi_ep_bind(r->ep, &r->av->fid, 0))) goto fail;
    step = "fi_enable";
    if ((ret = fi_enable(r->ep))) goto fail;
    *out = r;
    return 0;
fail:
    snprintf(err, errcap, "%s: %s", step, fi_strerror(-ret));
    raw_close(r);
    return ret < 0 ? ret : -ret;
}

void raw_close(raw_ep *r)
{
    if (!r) return;
    if (r->ep) fi_close(&r->ep->fid);
    if (r->av) fi_close(&r->av->fid);
    if (r->cq) fi_close(&r->cq->fid);
    if (r->domain) fi_close(&r->domain->fid);
    if (r->fabric) fi_close(&r->fabric->fid);
    if (r->info) fi_freeinfo(r->info);
    free(r);
}

int raw_name(raw_ep *r, uint8_t *addr, size_t *len) { return fi_getname(&r->ep->fid, addr, len); }

int raw_register(raw_ep *r, void *ptr, size_t len, bool remote, int gpu, raw_region *out)
{
    uint64_t access = FI_WRITE | FI_READ | FI_SEND | FI_RECV;
    if (remote) access |= FI_REMOTE_WRITE | FI_REMOTE_READ;
    struct fid_mr *mr;
    uint64_t key = (r->mr_mode & FI_MR_PROV_KEY) ? 0 : r->next_key++;
    struct iovec iov = {.iov_base = ptr, .iov_len = len};
    struct fi_mr_attr attr = {.mr_iov = &iov, .iov_count = 1, .access = access,
                              .requested_key = key,
                              .iface = gpu >= 0 ? FI_HMEM_CUDA : FI_HMEM_SYSTEM};
    attr.device.cuda = gpu >= 0 ? gpu : 0;
    /* As the engine registers device memory (fab_mr_reg_cuda): the same shm protocol
     * (CUDA IPC) on both sides of the comparison. */
    int ret = fi_mr_regattr(r->domain, &attr, gpu >= 0 ? FI_HMEM_DEVICE_ONLY : 0, &mr);
    if (ret == -FI_EBADFLAGS && gpu >= 0) ret = fi_mr_regattr(r->domain, &attr, 0, &mr);
    if (ret) return ret;
    if (r->mr_mode & FI_MR_ENDPOINT) {
        fi_mr_bind(mr, &r->ep->fid, 0);
        fi_mr_enable(mr);
    }
    out->ptr = ptr;
    out->len = len;
    out->mr = mr;
    out->desc = fi_mr_desc(mr);
    out->key = fi_mr_key(mr);
    return 0;
}

void raw_deregister(raw_region *reg)
{
    if (reg->mr) fi_close(&((struct fid_mr *)reg->mr)->fid);
    reg->mr = NULL;
}

int raw_connect(raw_ep *r, const uint8_t *addr, size_t len)
{
    (void)len;
    return fi_av_insert(r->av, addr, 1, &r->peer, 0, NULL) == 1 ? 0 : -EHOSTUNREACH;
}

uint64_t raw_remote_addr(raw_ep *r, uint64_t base, uint64_t off)
{
    return (r->mr_mode & FI_MR_VIRT_ADDR) ? base + off : off;
}

int raw_write(raw_ep *r, const raw_region *src, uint64_t src_off, size_t len, uint64_t raddr,
              uint64_t rkey, bool has_imm, uint32_t imm, bool more)
{
    struct iovec iov = {.iov_base = (uint8_t *)src->ptr + src_off, .iov_len = len};
    void *desc = src->desc;
    struct fi_rma_iov rma = {.addr = raddr, .len = len, .key = rkey};
    struct fi_msg_rma msg = {.msg_iov = len ? &iov : NULL, .desc = len ? &desc : NULL,
                             .iov_count = len ? 1 : 0, .addr = r->peer, .rma_iov = &rma,
                             .rma_iov_count = 1, .context = r, .data = imm};
    ssize_t ret = fi_writemsg(r->ep, &msg,
                              r->write_flags | (has_imm ? FI_REMOTE_CQ_DATA : 0) | (more ? FI_MORE : 0));
    if (ret == -FI_EAGAIN) return -EAGAIN;
    return (int)ret;
}

int raw_poll(raw_ep *r, uint64_t *writes, uint64_t *imms, uint32_t *last_imm)
{
    struct fi_cq_data_entry e[32];
    for (;;) {
        ssize_t n = fi_cq_read(r->cq, e, 32);
        if (n == -FI_EAGAIN) return 0;
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            fi_cq_readerr(r->cq, &err, 0);
            fprintf(stderr, "raw: completion error: %s\n", fi_strerror((int)err.err));
            return -EIO;
        }
        if (n < 0) return (int)n;
        for (ssize_t k = 0; k < n; k++) {
            /* as the engine: libfabric 2.x's shm sets only FI_REMOTE_CQ_DATA */
            if (e[k].flags & (FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA)) {
                (*imms)++;
                *last_imm = (uint32_t)e[k].data;
            } else {
                (*writes)++;
            }
        }
        if (n < 32) return 0;
    }
}
