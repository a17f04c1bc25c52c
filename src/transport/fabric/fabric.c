/* libfabric backend: one FI_EP_RDM endpoint per NIC, writes with remote CQ data.
 * Works with any provider that offers RDM + RMA + CQ data: efa, tcp;ofi_rxm, shm.
 * Features newer than libfabric 1.17 are guarded by version or #ifdef. */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/random.h>
#include <unistd.h>

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "transport/fabric/fabric.h"
#include "transport/fabric/fabric_internal.h"

#define TP_FI_VERSION FI_VERSION(1, 17)
#define FI_HDR_VERSION FI_VERSION(FI_MAJOR_VERSION, FI_MINOR_VERSION)

struct tp_nic {
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_cq *cq;
    struct fid_av *av;
    struct fid_ep *ep;
    uint64_t mr_mode;
    int wait_fd;               /* CQ wait object, -1 if the provider has none */
    uint64_t write_flags;      /* completion semantics requested for every write */
    te_addr addr;
    tp_nic_info nfo;
    bool hmem;                 /* opened with FI_HMEM: CUDA memory can be registered */
    /* shm/sm2 move device memory with CUDA IPC copies that the *target* process performs
     * while it polls (the sender's write completes only after the target copied), and
     * their CQ wait object does not fire for that work. While a device-memory region is
     * open to remote writes, the worker must keep polling (can_block false): measured
     * with fabric-debug --gpu on an H100, a sleeping target made every 64 KiB write take
     * about 1.4 ms. Real RDMA NICs (efa, verbs) need no target progress. */
    bool target_copies_device;
    _Atomic int remote_dev_mrs; /* device-memory regions registered for remote writes */
    held_arrivals *held;        /* arrivals waiting for those copies (fabric_arrivals.c) */
    /* shm/sm2 apply every incoming write (host memory too, since write ordering turns
     * off the sender's direct copy) only while the target polls, and nothing of it
     * reaches the CQ or its wait object. This counter of remote writes (FI_RMA_EVENT)
     * is the one sign the target has that a peer is streaming into it: the worker reads
     * it (fab_target_activity) after a step that found nothing and stays hot instead of
     * sleeping in slices of up to 1 ms between polls (fabric-debug: 4 KiB writes at 0.24
     * of raw without it). */
    struct fid_cntr *rcntr;
    uint64_t rcntr_seen;
    _Atomic int remote_mrs;    /* regions registered for remote writes: none, no counter read */
    char hmem_why[160];        /* why not, when !hmem and CUDA memory was wanted */
    shm_peers *shm;            /* shm: per-peer transmit endpoints (fabric_shm.c) */
    sock_probes *probes;       /* tcp: connection probes of stalled peers (fabric_probe.c) */
    uint8_t *posted_ok;        /* per AV index: a post to that peer was once accepted */
    size_t n_posted_ok;
};

static int fi_to_errno(int ret) { return ret < 0 ? ret : -ret; }

static int fab_err(int ret, const char *what, const char *prov)
{
    return tn_err(fi_to_errno(ret), "%s (%s): %s", what, prov ? prov : "libfabric",
                  fi_strerror(-fi_to_errno(ret)));
}

/* Providers whose target process copies every incoming write while it polls (shared
 * memory); with the checked writes of shm (below) that includes host memory. */
static bool target_applies_writes(const char *provider)
{
    return !strcmp(provider, "shm") || !strcmp(provider, "sm2");
}

/* hmem: ask for FI_HMEM (device memory in MRs) and accept FI_MR_HMEM. Only NICs of
 * groups that drive a GPU ask: FI_HMEM in the hints filters out every provider that
 * lacks it, and host-only engines must keep working there. */
/* The threading level asked of the provider. Every call on an endpoint, completion queue,
 * counter or address vector runs under the group's progress lock (docs/engine.md, "Who
 * drives progress"), so the provider need not lock them itself: at FI_THREAD_COMPLETION
 * libfabric's util endpoints and CQs drop the mutex they take per call under
 * FI_THREAD_SAFE. Memory registration runs on caller threads outside that lock; it only
 * touches the domain, which shm locks at every level. Only shm and sm2 are asked for it
 * (checked: libfabric 1.17 and 2.1): other providers change more than their locks at
 * that level (libfabric 2.1's tcp switches to one sub-domain per endpoint and crashes in
 * fi_cq_open), and one that needs FI_MR_ENDPOINT would bind registrations to the
 * endpoint outside the lock. TENDRIL_FI_THREADING: auto (that rule), safe (always
 * FI_THREAD_SAFE), completion (FI_THREAD_COMPLETION, to try a provider; not on tcp). */
static enum fi_threading wanted_threading(const char *provider)
{
    static const char *const names[] = {"auto", "safe", "completion"};
    switch (tn_env_choice_warn("TENDRIL_FI_THREADING", names, 3, 0)) {
    case 1: return FI_THREAD_SAFE;
    case 2:
        /* not where it is known to crash the provider */
        if (provider && strstr(provider, "tcp")) {
            static atomic_bool said;
            if (!atomic_exchange(&said, true))
                TN_LOGW("TENDRIL_FI_THREADING=completion ignored for %s: libfabric 2.1's tcp "
                        "crashes in fi_cq_open at that level; using FI_THREAD_SAFE", provider);
            return FI_THREAD_SAFE;
        }
        return FI_THREAD_COMPLETION;
    default: return provider && target_applies_writes(provider) ? FI_THREAD_COMPLETION : FI_THREAD_SAFE;
    }
}

static struct fi_info *make_hints(const char *provider, const char *domain, bool hmem,
                                  enum fi_threading threading)
{
    struct fi_info *h = fi_allocinfo();
    if (!h) return NULL;
    h->caps = FI_MSG | FI_RMA | FI_WRITE | FI_REMOTE_WRITE | FI_SEND | FI_RECV;
    if (hmem) h->caps |= FI_HMEM;
    h->mode = 0;
    h->ep_attr->type = FI_EP_RDM;
    h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY |
                              FI_MR_ENDPOINT | (hmem ? FI_MR_HMEM : 0);
    h->domain_attr->threading = threading;
    /* shm writes a plain write (no remote CQ data) straight into the target's memory from
     * the sender with process_vm_writev, checking neither the key nor the range ("fast
     * RMA", libfabric 1.17 and 2.1 alike). Asking for write-after-write ordering turns that
     * path off: every write then goes through the target, which checks key and range
     * against its registrations (docs/engine.md, trust model). */
    if (provider && !strcmp(provider, "shm")) h->tx_attr->msg_order = FI_ORDER_WAW;
    if (provider && target_applies_writes(provider)) h->caps |= FI_RMA_EVENT;
    if (provider) h->fabric_attr->prov_name = strdup(provider);
    if (domain) h->domain_attr->name = strdup(domain);
    return h;
}

/* First info whose provider offers remote CQ data wide enough for a 32-bit imm (and,
 * if given, whose domain is the one asked for: layered providers such as ofi_rxm do not
 * always filter on the domain-name hint). */
static struct fi_info *pick_info(struct fi_info *list, const char *domain)
{
    for (struct fi_info *i = list; i; i = i->next)
        if (i->domain_attr->cq_data_size >= 4 && (!domain || !strcmp(i->domain_attr->name, domain)))
            return i;
    return NULL;
}

static int query_at(const char *provider, const char *domain, bool hmem, enum fi_threading threading,
                    struct fi_info **out)
{
    struct fi_info *hints = make_hints(provider, domain, hmem, threading);
    if (!hints) return tn_err(-ENOMEM, "fi_allocinfo failed");
    int ret = fi_getinfo(TP_FI_VERSION, NULL, NULL, 0, hints, out);
    fi_freeinfo(hints);
    return ret;
}

static int query_hmem(const char *provider, const char *domain, bool hmem, struct fi_info **out)
{
    enum fi_threading t = wanted_threading(provider);
    int ret = query_at(provider, domain, hmem, t, out);
    if (ret || t == FI_THREAD_SAFE) return ret;
    /* Registration must bind to the endpoint on this provider: it would touch an endpoint
     * outside the progress lock, so the provider must lock. */
    bool mr_ep = false;
    for (struct fi_info *i = *out; i; i = i->next)
        if (i->domain_attr->mr_mode & FI_MR_ENDPOINT) mr_ep = true;
    if (!mr_ep) return 0;
    fi_freeinfo(*out);
    *out = NULL;
    return query_at(provider, domain, hmem, FI_THREAD_SAFE, out);
}

static int query(const char *provider, const char *domain, struct fi_info **out)
{
    return query_hmem(provider, domain, false, out);
}

/* "auto" is resolved above the backends (backend.h's auto choices; fabric_backend.c
 * probes "efa" and "tcp;ofi_rxm" through this function). */
int tp_fabric_pick_provider(const char *want, char *out, size_t cap)
{
    struct fi_info *list = NULL;
    /* The name as given, then layered over the RxM utility provider. */
    char layered[96];
    snprintf(layered, sizeof layered, "%s;ofi_rxm", want);
    const char *cands[2] = {want, layered};
    for (int k = 0; k < 2; k++) {
        if (k == 1 && strchr(want, ';')) break;
        if (query(cands[k], NULL, &list) == 0) {
            struct fi_info *i = pick_info(list, NULL);
            if (i) snprintf(out, cap, "%s", i->fabric_attr->prov_name);
            fi_freeinfo(list);
            if (i) return 0;
        }
    }
    return tn_err(-ENODEV, "provider '%s': not available, or offers no RDM endpoint with RMA "
                           "writes and remote CQ data (fi_info -l lists providers)", want);
}

int tp_fabric_list_domains(const char *provider, char names[][64], int max)
{
    struct fi_info *list = NULL;
    int ret = query(provider, NULL, &list);
    if (ret) return fab_err(ret, "fi_getinfo", provider);
    int n = 0;
    for (struct fi_info *i = list; i && n < max; i = i->next) {
        if (i->domain_attr->cq_data_size < 4) continue;
        int dup = 0;
        for (int k = 0; k < n; k++)
            if (!strcmp(names[k], i->domain_attr->name)) dup = 1;
        if (dup) continue;
        snprintf(names[n++], 64, "%s", i->domain_attr->name);
    }
    fi_freeinfo(list);
    return n;
}

static void fab_close(tp_nic *n)
{
    if (!n) return;
    shm_peers_retire(n->shm); /* peers stop posting to us before the endpoint goes */
    if (n->ep) fi_close(&n->ep->fid);
    if (n->rcntr) fi_close(&n->rcntr->fid);
    shm_peers_close(n->shm);
    if (n->av) fi_close(&n->av->fid);
    if (n->cq) fi_close(&n->cq->fid);
    if (n->domain) fi_close(&n->domain->fid);
    if (n->fabric) fi_close(&n->fabric->fid);
    if (n->info) fi_freeinfo(n->info);
    sock_probes_free(n->probes);
    held_close(n->held);
    free(n->posted_ok);
    free(n);
}

static void set_ep_options(tp_nic *n)
{
    (void)n;
#if FI_HDR_VERSION >= FI_VERSION(1, 18)
    /* All traffic must cross the NIC under test; never let the provider call CUDA. */
    bool no = false;
    if (!strcmp(n->nfo.provider, "efa")) {
        int r = fi_setopt(&n->ep->fid, FI_OPT_ENDPOINT, FI_OPT_CUDA_API_PERMITTED, &no, sizeof no);
        if (r) TN_LOGI("efa: FI_OPT_CUDA_API_PERMITTED not accepted (%s)", fi_strerror(-r));
    }
#endif
#if FI_HDR_VERSION >= FI_VERSION(1, 19)
    if (!strcmp(n->nfo.provider, "efa")) {
        bool no_shm = false;
        int r = fi_setopt(&n->ep->fid, FI_OPT_ENDPOINT, FI_OPT_SHARED_MEMORY_PERMITTED, &no_shm,
                          sizeof no_shm);
        if (r) TN_LOGI("efa: FI_OPT_SHARED_MEMORY_PERMITTED not accepted (%s)", fi_strerror(-r));
    }
#endif
}

static void open_remote_counter(tp_nic *n)
{
    if (!(n->info->caps & FI_RMA_EVENT)) return;
    struct fi_cntr_attr a = {.events = FI_CNTR_EVENTS_COMP, .wait_obj = FI_WAIT_NONE};
    int r = fi_cntr_open(n->domain, &a, &n->rcntr, NULL);
    if (!r && (r = fi_ep_bind(n->ep, &n->rcntr->fid, FI_REMOTE_WRITE))) {
        fi_close(&n->rcntr->fid);
        n->rcntr = NULL;
    }
    /* Without it the worker still polls, in slices (slower, not wrong). */
    if (r) TN_LOGI("%s: no remote-write counter (%s): an idle worker sleeps between polls "
                   "while peers write into this process", n->nfo.provider, fi_strerror(-fi_to_errno(r)));
}

int fab_shm_name_endpoint(struct fid_ep *ep, char *out, size_t cap)
{
    static _Atomic uint32_t seq;
    uint64_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) rnd = (uint64_t)(uintptr_t)ep ^ (uint64_t)time(NULL);
    int len = snprintf(out, cap, "tendril-%d-%016llx-%u", (int)getpid(), (unsigned long long)rnd,
                       atomic_fetch_add(&seq, 1));
    return fi_setname(&ep->fid, out, (size_t)len + 1);
}

static int fab_open(const tp_open_args *a, tp_nic **out)
{
    tp_nic *n = calloc(1, sizeof *n);
    if (!n) return tn_err(-ENOMEM, "out of memory");
    struct fi_info *list = NULL;
    int ret = -FI_ENODATA;
    bool hmem_tried = false;
    if (a->hmem) {
        /* A GPU group: prefer a domain that can register device memory; without one,
         * open the plain domain so host memory still works, and remember why. */
        hmem_tried = true;
        ret = query_hmem(a->provider, a->nic, true, &list);
        if (!ret && !pick_info(list, a->nic)) {
            fi_freeinfo(list);
            list = NULL;
            ret = -FI_ENODATA;
        }
        if (ret) {
            snprintf(n->hmem_why, sizeof n->hmem_why,
                     "provider '%s' offers no FI_HMEM capability on NIC '%s' (fi_getinfo: %s)",
                     a->provider, a->nic ? a->nic : "(any)", fi_strerror(-fi_to_errno(ret)));
            TN_LOGI("%s: CUDA memory cannot be registered on this NIC", n->hmem_why);
        }
    }
    if (ret) ret = query(a->provider, a->nic, &list);
    if (ret) {
        free(n);
        return tn_err(ret == -FI_ENODATA ? -ENODEV : fi_to_errno(ret),
                      "provider '%s' has no NIC '%s' with RDM+RMA (%s)", a->provider,
                      a->nic ? a->nic : "(any)", fi_strerror(-fi_to_errno(ret)));
    }
    struct fi_info *pick = pick_info(list, a->nic);
    if (!pick) {
        fi_freeinfo(list);
        free(n);
        return tn_err(-ENODEV, "provider '%s' has no NIC '%s' with remote CQ data of 4+ bytes",
                      a->provider, a->nic ? a->nic : "(any)");
    }
    n->info = fi_dupinfo(pick);
    fi_freeinfo(list);
    if (!n->info) {
        free(n);
        return tn_err(-ENOMEM, "fi_dupinfo failed");
    }
    snprintf(n->nfo.provider, sizeof n->nfo.provider, "%s", n->info->fabric_attr->prov_name);
    snprintf(n->nfo.name, sizeof n->nfo.name, "%s", n->info->domain_attr->name);
    n->nfo.max_msg = n->info->ep_attr->max_msg_size;
    n->nfo.cq_data_size = n->info->domain_attr->cq_data_size;
    if (n->info->nic && n->info->nic->link_attr) n->nfo.link_speed = n->info->nic->link_attr->speed;
    n->mr_mode = n->info->domain_attr->mr_mode;
    /* FI_DELIVERY_COMPLETE: a local completion means the bytes are in the target's memory,
     * not merely handed to the transport, so "write completed" is something a user can
     * build on (plain writes of RL weights carry no immediate). Not on shm: its 1.17
     * release never completes zero-length writes flagged this way, and with the flag its
     * receivers crash more often when a sender goes away (docs/engine.md, known limits);
     * there, as everywhere, the immediate seen by the receiver is the arrival signal. */
    n->write_flags = strcmp(n->info->fabric_attr->prov_name, "shm") ? FI_DELIVERY_COMPLETE : 0;
    n->hmem = (n->info->caps & FI_HMEM) != 0;
    n->target_copies_device = n->hmem && target_applies_writes(n->info->fabric_attr->prov_name);
    if (!n->hmem && !hmem_tried)
        snprintf(n->hmem_why, sizeof n->hmem_why,
                 "the NIC belongs to a host-memory group (cuda_device = TE_DEVICE_HOST), opened "
                 "without FI_HMEM");
    n->nfo.mr_local = (n->mr_mode & FI_MR_LOCAL) != 0;

    const char *prov = n->nfo.provider;
    if ((ret = fi_fabric(n->info->fabric_attr, &n->fabric, NULL))) goto fail_fi_fabric;
    if ((ret = fi_domain(n->fabric, n->info, &n->domain, NULL))) goto fail_fi_domain;
    /* A CQ with a file-descriptor wait object lets an idle worker block in the kernel
     * and still wake the moment data arrives: with manual-progress providers (tcp) an
     * incoming write moves only while the target polls, so a blind sleep would stall it. */
    n->wait_fd = -1;
    struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_FD, .size = 0};
    if (tn_env_flag_warn("TENDRIL_NO_WAIT_FD", false) || fi_cq_open(n->domain, &cq_attr, &n->cq, NULL)) {
        cq_attr.wait_obj = FI_WAIT_NONE;
        if ((ret = fi_cq_open(n->domain, &cq_attr, &n->cq, NULL))) goto fail_cq;
    } else if (fi_control(&n->cq->fid, FI_GETWAIT, &n->wait_fd)) {
        n->wait_fd = -1;
    }
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC};
    if ((ret = fi_av_open(n->domain, &av_attr, &n->av, NULL))) goto fail_av;
    if ((ret = fi_endpoint(n->domain, n->info, &n->ep, NULL))) goto fail_ep;
    if ((ret = fi_ep_bind(n->ep, &n->cq->fid, FI_TRANSMIT | FI_RECV))) goto fail_bind;
    if ((ret = fi_ep_bind(n->ep, &n->av->fid, 0))) goto fail_bind;
    open_remote_counter(n);
    set_ep_options(n);
    bool shm = !strcmp(prov, "shm");
    char shm_name[96];
    if (shm && (ret = fab_shm_name_endpoint(n->ep, shm_name, sizeof shm_name))) goto fail_name;
    if ((ret = fi_enable(n->ep))) goto fail_enable;
    if (shm && (ret = shm_peers_open(n->domain, n->info, shm_name, &n->shm))) {
        fab_close(n);
        return ret;
    }
    size_t alen = sizeof n->addr.bytes;
    if ((ret = fi_getname(&n->ep->fid, n->addr.bytes, &alen))) goto fail_name;
    if (alen == 0 || alen > TE_ADDR_MAX) {
        ret = -FI_ETOOSMALL;
        goto fail_name;
    }
    n->addr.transport = TE_TRANSPORT_FABRIC;
    n->addr.len = (uint8_t)alen;
    *out = n;
    return 0;

#define FAIL(label, what)                                                                       \
    label:                                                                                      \
    ret = fab_err(ret, what, prov);                                                            \
    fab_close(n);                                                                              \
    return ret;
    FAIL(fail_fi_fabric, "fi_fabric")
    FAIL(fail_fi_domain, "fi_domain")
    FAIL(fail_cq, "fi_cq_open")
    FAIL(fail_av, "fi_av_open")
    FAIL(fail_ep, "fi_endpoint")
    FAIL(fail_bind, "fi_ep_bind")
    FAIL(fail_enable, "fi_enable")
    FAIL(fail_name, "fi_getname")
#undef FAIL
}

static void fab_info(const tp_nic *n, tp_nic_info *out) { *out = n->nfo; }

static int fab_address(const tp_nic *n, te_addr *out)
{
    *out = n->addr;
    return 0;
}

/* fi_mr_regattr with `flags`; where the provider refuses FI_HMEM_DEVICE_ONLY (a hint it
 * need not know), once more without it. */
static int reg_cuda_attr(tp_nic *n, const struct fi_mr_attr *attr, uint64_t flags,
                         struct fid_mr **mr)
{
    int ret = fi_mr_regattr(n->domain, attr, flags, mr);
    if (ret == -FI_EBADFLAGS && (flags & FI_HMEM_DEVICE_ONLY)) {
        TN_LOGD("%s NIC %s refuses FI_HMEM_DEVICE_ONLY: registering without it",
                n->nfo.provider, n->nfo.name);
        ret = fi_mr_regattr(n->domain, attr, flags & ~FI_HMEM_DEVICE_ONLY, mr);
    }
    return ret;
}

/* Registers CUDA device memory of GPU `device`: dma-buf first (FI_MR_DMABUF, libfabric
 * >= 1.18 headers, kernel and driver permitting), then FI_HMEM_CUDA with iface/device
 * (the provider resolves the pages itself, through nvidia-peermem or CUDA IPC). Never
 * falls back to treating the pointer as host memory: a provider would then read GPU
 * addresses with the CPU. */
static int fab_mr_reg_cuda(tp_nic *n, void *ptr, size_t len, int device, uint64_t access,
                           uint64_t key, struct fid_mr **mr)
{
    int r = tcu_check_device_memory(ptr, len, device);
    if (r) return r;
    if (!n->hmem)
        return tn_err(-EOPNOTSUPP, "CUDA memory cannot be registered on %s NIC %s: %s",
                      n->nfo.provider, n->nfo.name,
                      n->hmem_why[0] ? n->hmem_why : "the domain lacks FI_HMEM");
    struct iovec iov = {.iov_base = ptr, .iov_len = len};
    struct fi_mr_attr attr = {
        .iov_count = 1,
        .access = access,
        .requested_key = key,
        .iface = FI_HMEM_CUDA,
    };
    attr.device.cuda = device;
    /* The pointer is cudaMalloc'ed device memory (checked above: not managed, not host),
     * which is what FI_HMEM_DEVICE_ONLY states. shm needs it to move such memory by CUDA
     * IPC (the target maps the source allocation and copies device to device in one
     * cudaMemcpy); without it shm stages every write through its host bounce buffers in
     * chunks that need both processes' progress (libfabric 2.1 smr_select_proto: measured
     * ~1.8 GB/s). Other providers take the flag as a hint; one that refuses it gets the
     * registration again without it (reg_cuda_attr). */
    uint64_t flags = FI_HMEM_DEVICE_ONLY;
    int ret;
    char dmabuf_why[200] = "libfabric headers older than 1.18 (no FI_MR_DMABUF)";
#ifdef FI_MR_DMABUF
    /* Only where the domain addresses regions by virtual address. With offset addressing
     * (shm once write ordering turns its unchecked "fast RMA" off) libfabric 2.1's shared
     * MR map records each region's base from attr->mr_iov, which for a dma-buf
     * registration is the same union member as attr->dmabuf: the base becomes the file
     * descriptor, and every write into the region is refused as out of range (measured:
     * "target region (0x29 - 0x100029) out of registered range" on an H100). The iov form
     * below registers the same memory with the right base. */
    if (!(n->mr_mode & FI_MR_VIRT_ADDR))
        snprintf(dmabuf_why, sizeof dmabuf_why, "not used: the domain uses offset addressing "
                 "(no FI_MR_VIRT_ADDR)");
    else {
        int fd = -1;
        uint64_t off = 0;
        r = tcu_dmabuf_export(ptr, len, device, &fd, &off);
        if (!r) {
            struct fi_mr_dmabuf dmabuf = {
                .fd = fd, .offset = off, .len = len, .base_addr = (void *)((uintptr_t)ptr - off)};
            attr.dmabuf = &dmabuf;
            ret = reg_cuda_attr(n, &attr, FI_MR_DMABUF | flags, mr);
            close(fd);
            if (!ret) {
                TN_LOGD("CUDA memory %p+%zu of device %d registered on %s via dma-buf", ptr, len,
                        device, n->nfo.name);
                return 0;
            }
            snprintf(dmabuf_why, sizeof dmabuf_why, "fi_mr_regattr(FI_MR_DMABUF): %s",
                     fi_strerror(-fi_to_errno(ret)));
        } else {
            snprintf(dmabuf_why, sizeof dmabuf_why, "%s", te_last_error());
        }
    }
#endif
    attr.mr_iov = &iov; /* (replaces attr.dmabuf: the same union member in 1.18+) */
    ret = reg_cuda_attr(n, &attr, flags, mr);
    if (ret)
        return tn_err(fi_to_errno(ret) == -FI_ENOSYS ? -EOPNOTSUPP : fi_to_errno(ret),
                      "CUDA memory of device %d on %s NIC %s: dma-buf path unavailable (%s); "
                      "fi_mr_regattr(FI_HMEM_CUDA) failed: %s (libfabric built without CUDA "
                      "support, or no GPUDirect RDMA peer-memory driver)",
                      device, n->nfo.provider, n->nfo.name, dmabuf_why,
                      fi_strerror(-fi_to_errno(ret)));
    TN_LOGD("CUDA memory %p+%zu of device %d registered on %s via FI_HMEM_CUDA (%s)", ptr, len,
            device, n->nfo.name, dmabuf_why);
    return 0;
}

static int fab_mr_reg(tp_nic *n, void *ptr, size_t len, int device, bool remote, tp_mr *out)
{
    uint64_t access = FI_SEND | FI_RECV | FI_WRITE | FI_READ;
    if (remote) access |= FI_REMOTE_WRITE | FI_REMOTE_READ;
    struct fid_mr *mr = NULL;
    int ret;
    /* Where the provider takes the key we ask for, ask for 64 random bits: keys handed out
     * in order (1, 2, 3...) let any peer guess every region's key. A collision with a key
     * in use (FI_ENOKEY) draws again. */
    for (int attempt = 0;; attempt++) {
        uint64_t key = 0;
        if (!(n->mr_mode & FI_MR_PROV_KEY) &&
            getrandom(&key, sizeof key, 0) != (ssize_t)sizeof key)
            return tn_err(-EIO, "getrandom failed: no random key for the registration");
        if (device != TE_DEVICE_HOST) {
            ret = fab_mr_reg_cuda(n, ptr, len, device, access, key, &mr);
        } else {
            /* A zero-length region still needs a key for imm-only writes: register one byte. */
            ret = fi_mr_reg(n->domain, ptr, len ? len : 1, access, 0, key, 0, &mr, NULL);
            if (ret) ret = fab_err(ret, "fi_mr_reg", n->nfo.provider);
        }
        if (ret != -FI_ENOKEY || attempt == 8 || (n->mr_mode & FI_MR_PROV_KEY)) break;
    }
    if (ret) return ret;
    if (n->mr_mode & FI_MR_ENDPOINT) {
        if ((ret = fi_mr_bind(mr, &n->ep->fid, 0)) || (ret = fi_mr_enable(mr))) {
            fi_close(&mr->fid);
            return fab_err(ret, "fi_mr_bind/enable", n->nfo.provider);
        }
    }
    out->handle = mr;
    out->desc = fi_mr_desc(mr);
    out->rkey = fi_mr_key(mr);
    out->target_polled = device != TE_DEVICE_HOST && remote && n->target_copies_device;
    if (out->target_polled) atomic_fetch_add(&n->remote_dev_mrs, 1);
    out->remote = remote;
    if (remote) atomic_fetch_add(&n->remote_mrs, 1);
    return 0;
}

static void fab_mr_dereg(tp_nic *n, tp_mr *mr)
{
    if (mr->handle) fi_close(&((struct fid_mr *)mr->handle)->fid);
    if (mr->handle && mr->target_polled) atomic_fetch_sub(&n->remote_dev_mrs, 1);
    if (mr->handle && mr->remote) atomic_fetch_sub(&n->remote_mrs, 1);
    mr->handle = NULL;
}

static int fab_resolve(tp_nic *n, const te_addr *addr, tp_peer *out)
{
    if (addr->transport != TE_TRANSPORT_FABRIC)
        return tn_err(-EINVAL, "peer address is not a libfabric address (transport %u)",
                      addr->transport);
    if (n->shm) return shm_peers_resolve(n->shm, addr, out);
    fi_addr_t fa = FI_ADDR_UNSPEC;
    int ret = fi_av_insert(n->av, addr->bytes, 1, &fa, 0, NULL);
    if (ret != 1)
        return tn_err(-EHOSTUNREACH, "fi_av_insert (%s): peer address rejected (%s)",
                      n->nfo.provider, ret < 0 ? fi_strerror(-ret) : "not inserted");
    *out = fa;
    return 0;
}

static int post_status(int ret)
{
    if (ret == 0) return 0;
    if (ret == -FI_EAGAIN) return -EAGAIN;
    return fi_to_errno(ret);
}

/* Remembers that a post to this peer was accepted: with rxm that means a connection to
 * it was up, the precondition for probing it later (fab_peer_check). One byte per AV
 * index; a failed allocation only loses the remembering. */
static void mark_posted(tp_nic *n, tp_peer peer)
{
    if (peer < n->n_posted_ok) {
        n->posted_ok[peer] = 1;
        return;
    }
    if (peer >= (1u << 24)) return; /* not an AV index: nothing to remember */
    size_t cap = n->n_posted_ok ? n->n_posted_ok : 64;
    while (cap <= peer) cap *= 2;
    uint8_t *v = realloc(n->posted_ok, cap);
    if (!v) return;
    memset(v + n->n_posted_ok, 0, cap - n->n_posted_ok);
    n->posted_ok = v;
    n->n_posted_ok = cap;
    n->posted_ok[peer] = 1;
}

static int fab_post_write(tp_nic *n, const tp_write *w, bool more)
{
    struct iovec iov = {.iov_base = (void *)w->local, .iov_len = w->len};
    void *desc = w->local_desc;
    uint64_t raddr = (n->mr_mode & FI_MR_VIRT_ADDR) ? w->remote_base + w->remote_off : w->remote_off;
    struct fi_rma_iov rma = {.addr = raddr, .len = w->len, .key = w->rkey};
    struct fi_msg_rma msg = {
        .msg_iov = w->len ? &iov : NULL,
        .desc = w->len ? &desc : NULL,
        .iov_count = w->len ? 1 : 0,
        .addr = w->peer,
        .rma_iov = &rma, /* valid even for zero-length writes: EFA requires it */
        .rma_iov_count = 1,
        .context = w->ctx,
        .data = w->imm,
    };
    uint64_t flags = n->write_flags | (w->has_imm ? FI_REMOTE_CQ_DATA : 0) | (more ? FI_MORE : 0);
    if (n->shm) return shm_peers_write(n->shm, w->peer, &msg, flags);
    int ret = (int)fi_writemsg(n->ep, &msg, flags);
    if (ret == 0) mark_posted(n, w->peer);
    if (ret && ret != -FI_EAGAIN)
        tn_err(fi_to_errno(ret), "fi_writemsg (%s): %s", n->nfo.provider, fi_strerror(-ret));
    return post_status(ret);
}

static int fab_post_send(tp_nic *n, tp_peer peer, const void *buf, size_t len, void *desc, void *ctx)
{
    if (n->shm) return shm_peers_send(n->shm, peer, buf, len, desc, ctx);
    int ret = (int)fi_send(n->ep, buf, len, desc, peer, ctx);
    if (ret == 0) mark_posted(n, peer);
    if (ret && ret != -FI_EAGAIN)
        tn_err(fi_to_errno(ret), "fi_send (%s): %s", n->nfo.provider, fi_strerror(-ret));
    return post_status(ret);
}

static int fab_post_recv(tp_nic *n, void *buf, size_t len, void *desc, void *ctx)
{
    int ret = (int)fi_recv(n->ep, buf, len, desc, FI_ADDR_UNSPEC, ctx);
    if (ret && ret != -FI_EAGAIN)
        tn_err(fi_to_errno(ret), "fi_recv (%s): %s", n->nfo.provider, fi_strerror(-ret));
    return post_status(ret);
}

static int fab_cancel_recv(tp_nic *n, void *ctx)
{
    int ret = (int)fi_cancel(&n->ep->fid, ctx);
    return ret ? tn_err(fi_to_errno(ret), "fi_cancel (%s): %s", n->nfo.provider, fi_strerror(-ret)) : 0;
}

/* While shm copies into device memory of ours, arrivals wait for those copies
 * (fabric_arrivals.c); once held, later arrivals queue behind them even after the last
 * such region is gone, so none overtakes another. */
static bool holds_arrivals(tp_nic *n)
{
    return (n->target_copies_device && atomic_load_explicit(&n->remote_dev_mrs, memory_order_relaxed) > 0) ||
           held_count(n->held) > 0;
}

static int fab_wait_fd(tp_nic *n) { return n->wait_fd; }

static bool fab_can_block(tp_nic *n)
{
    struct fid *f = &n->cq->fid;
    if (holds_arrivals(n)) return false;
    return n->wait_fd >= 0 && fi_trywait(n->fabric, &f, 1) == FI_SUCCESS;
}

/* Completion kinds by flags. A remote write's CQ-data entry is the only completion that
 * carries FI_REMOTE_CQ_DATA without FI_RECV (the engine never sends with CQ data), and
 * providers disagree on the rest of its flags (measured, tests/unit/test_fabric_flags.c):
 * shm 1.17 sets FI_RMA | FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA, tcp;ofi_rxm 1.17 and tcp 2.1
 * FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA, but shm 2.1 FI_REMOTE_CQ_DATA alone. Keying on
 * FI_REMOTE_WRITE alone turned every shm 2.1 immediate into a local write completion
 * without a context, i.e. dropped it. */
int tp_fabric_classify(uint64_t flags)
{
    if (flags & FI_REMOTE_WRITE) return TP_EV_IMM;
    if (flags & FI_RECV) return TP_EV_RECV;
    if (flags & FI_REMOTE_CQ_DATA) return TP_EV_IMM;
    if (flags & FI_SEND) return TP_EV_SEND;
    return TP_EV_WRITE;
}

int fab_read_cq(struct fid_cq *cq, const char *prov, tp_event *ev, int max, fab_unwrap_fn unwrap,
                void *state)
{
    struct fi_cq_data_entry ent[16];
    int got = 0;
    while (got < max) {
        int want = max - got < 16 ? max - got : 16;
        ssize_t r = fi_cq_read(cq, ent, (size_t)want);
        if (r == -FI_EAGAIN) break;
        if (r == -FI_EAVAIL) {
            struct fi_cq_err_entry e = {0};
            ssize_t er = fi_cq_readerr(cq, &e, 0);
            if (er == -FI_EAGAIN) break;
            if (er < 0) return tn_err(-EIO, "fi_cq_readerr (%s): %s", prov, fi_strerror((int)-er));
            tp_event *x = &ev[got];
            memset(x, 0, sizeof *x);
            x->kind = tp_fabric_classify(e.flags);
            x->ctx = unwrap ? unwrap(state, e.op_context) : e.op_context;
            if (unwrap && !x->ctx) continue;
            got++;
            x->status = e.err ? -(int)e.err : -EIO;
            if (x->status == -FI_ECANCELED) x->status = -ECANCELED;
            const char *why = fi_cq_strerror(cq, e.prov_errno, e.err_data, NULL, 0);
            snprintf(x->msg, sizeof x->msg, "%s: %s (%s)", prov,
                     fi_strerror((int)(e.err ? e.err : FI_EIO)), why ? why : "no detail");
            continue;
        }
        if (r < 0) return tn_err(-EIO, "fi_cq_read (%s): %s", prov, fi_strerror((int)-r));
        for (ssize_t k = 0; k < r; k++) {
            tp_event *x = &ev[got];
            x->kind = tp_fabric_classify(ent[k].flags);
            x->status = 0;
            x->ctx = unwrap ? unwrap(state, ent[k].op_context) : ent[k].op_context;
            if (unwrap && !x->ctx) continue;
            got++;
            x->len = ent[k].len;
            x->imm = (uint32_t)ent[k].data;
            x->msg[0] = '\0';
        }
        if (r < want) break;
    }
    return got;
}

/* Reading the counter runs the provider's progress once more, so only the worker asks,
 * and only after a step that found nothing: waiting and submitting callers keep polling
 * anyway. A NIC with no region open to remote writes (a pure sender) has nothing to count. */
static uint64_t fab_target_activity(tp_nic *n)
{
    if (!n->rcntr || atomic_load_explicit(&n->remote_mrs, memory_order_relaxed) == 0) return 0;
    uint64_t v = fi_cntr_read(n->rcntr), d = v - n->rcntr_seen;
    n->rcntr_seen = v;
    return d;
}

static int fab_poll(tp_nic *n, tp_event *ev, int max)
{
    int got = 0, room = max;
    bool hold = holds_arrivals(n);
    if (hold && !n->held && held_open(n->nfo.provider, n->nfo.name, &n->held) != 0) {
        TN_LOGW("%s NIC %s: %s: immediates may precede their bytes", n->nfo.provider, n->nfo.name,
                te_last_error());
        hold = false; /* out of memory: delivered as read rather than the NIC failed */
    }
    if (hold) {
        got = held_release(n->held, ev, max);
        room = max - got;
        if (room > held_room(n->held)) room = held_room(n->held);
    }
    if (room > 0) {
        int r = fab_read_cq(n->cq, n->nfo.provider, ev + got, room, NULL, NULL);
        if (r < 0) return got > 0 ? got : r; /* released arrivals first; the error stays */
        if (r > 0 && hold) r = held_take(n->held, ev + got, r);
        got += r;
    }
    if (!n->shm || got == max) return got;
    int r = shm_peers_poll(n->shm, ev + got, max - got);
    return r < 0 ? r : got + r;
}

static int fab_peer_check(tp_nic *n, tp_peer peer)
{
    /* shm watches its peers itself (fabric_shm.c); tcp addresses are socket addresses.
     * Only a peer that was once connected is probed: a first connection that is merely
     * slow must not cost the live peer's provider an accepted probe (libfabric 1.17's
     * tcp leaks one, seen under ASan); a peer dead at first contact waits for the
     * operation timeout. */
    if (n->shm || !strstr(n->nfo.provider, "tcp")) return 1;
    if (peer >= n->n_posted_ok || !n->posted_ok[peer]) return 1;
    return sock_probe_peer(&n->probes, n->av, peer);
}

const tp_ops tp_fabric_ops = {
    .backend = "libfabric",
    .open = fab_open,
    .close = fab_close,
    .info = fab_info,
    .address = fab_address,
    .mr_reg = fab_mr_reg,
    .mr_dereg = fab_mr_dereg,
    .resolve = fab_resolve,
    .post_write = fab_post_write,
    .post_send = fab_post_send,
    .post_recv = fab_post_recv,
    .cancel_recv = fab_cancel_recv,
    .wait_fd = fab_wait_fd,
    .can_block = fab_can_block,
    .poll = fab_poll,
    .target_activity = fab_target_activity,
    .peer_check = fab_peer_check,
};
