/* ibverbs backend: ConnectX-style RC over libibverbs. Per NIC one PD, one CQ sized to
 * everything that can complete on it, an SRQ for user receives, an SRQ of zero-length
 * receives for WRITE_WITH_IMM, and a UD QP for the connection handshake. Per remote
 * address two RC QPs (msg: SEND/RECV, rma: WRITE/WRITE_WITH_IMM), connected lazily.
 *
 * NOT RUN ON HARDWARE: this file is compiled in CI, but no RDMA device was available to
 * its authors; only the pure logic (verbs_logic.c) is tested. docs/verbs.md. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <infiniband/verbs.h>

#include "core/env.h"
#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "transport/verbs/verbs.h"
#include "transport/verbs/verbs_logic.h"

#define UD_SLOT 128 /* GRH (40) + handshake (<= TV_HS_MAX) */
#define CHAIN_MAX 16
#define STASH_MAX 16

typedef struct pend {
    struct pend *next;
    int kind; /* TV_WR_WRITE or TV_WR_SEND */
    const void *local;
    size_t len;
    uint32_t lkey;
    uint64_t raddr;
    uint32_t rkey;
    bool has_imm;
    uint32_t imm;
    void *ctx;
} pend;

typedef struct tv_peer {
    tv_ud_addr addr;
    tv_conn conn;
    struct ibv_ah *ah;
    struct ibv_qp *msg_qp, *rma_qp;
    uint32_t msg_psn, rma_psn;
    pend *q_head, *q_tail;
} tv_peer;

typedef struct dead_qp {
    struct dead_qp *next;
    struct ibv_qp *qp;
} dead_qp;

struct tp_nic {
    struct ibv_context *ctx;
    struct ibv_pd *pd;
    struct ibv_comp_channel *ch;
    struct ibv_cq *cq;
    struct ibv_srq *msg_srq, *imm_srq;
    struct ibv_qp *ud;
    uint8_t port;
    int gid_index;
    union ibv_gid gid;
    uint16_t lid;
    enum ibv_mtu mtu;
    bool roce;
    bool compat; /* TENDRIL_VERBS_COMPAT=pplx: constant PSNs, legacy handshakes */
    tv_sizing sz;
    tv_conn_timing timing;
    uint8_t *ud_buf;
    struct ibv_mr *ud_mr;
    uint32_t *ud_free; /* free send slots (indices >= ud_rq) */
    uint32_t ud_free_n;
    uint32_t credits;      /* send WRs that may still be accepted */
    uint32_t imm_missing;  /* zero-length receives consumed and not yet re-posted */
    tv_peer **peers;
    uint32_t n_peers, cap_peers, n_connecting;
    dead_qp *dead;
    struct ibv_send_wr chain[CHAIN_MAX];
    struct ibv_sge chain_sge[CHAIN_MAX];
    int chain_n;
    struct ibv_qp *chain_qp;
    tp_event *syn; /* synthesized completions, delivered before the CQ's */
    uint32_t syn_head, syn_n, syn_cap;
    struct ibv_wc stash[STASH_MAX];
    int stash_n, stash_off;
    void **cancelled; /* receive contexts cancelled but still posted on the SRQ */
    uint32_t n_cancelled, cap_cancelled;
    te_addr addr;
    tp_nic_info nfo;
};

/* ------------------------------------------------------------- helpers ---- */

static int env_int(const char *name, int dflt, int lo, int hi)
{
    const char *s = getenv(name);
    if (!s || !*s) return dflt;
    char *end;
    long v = strtol(s, &end, 10);
    if (*end || v < lo || v > hi) {
        TN_LOGW("%s=%s ignored (expected %d..%d)", name, s, lo, hi);
        return dflt;
    }
    return (int)v;
}

static int wc_errno(enum ibv_wc_status s)
{
    switch (s) {
    case IBV_WC_SUCCESS: return 0;
    case IBV_WC_WR_FLUSH_ERR: return -ECONNRESET;
    case IBV_WC_LOC_LEN_ERR: return -EMSGSIZE;
    case IBV_WC_LOC_PROT_ERR: return -EFAULT;
    case IBV_WC_REM_ACCESS_ERR: return -EACCES;
    case IBV_WC_REM_INV_REQ_ERR: return -EINVAL;
    case IBV_WC_REM_OP_ERR: return -EREMOTEIO;
    case IBV_WC_RETRY_EXC_ERR: return -ETIMEDOUT;
    case IBV_WC_RNR_RETRY_EXC_ERR: return -ETIMEDOUT;
    default: return -EIO;
    }
}

static tp_event *syn_push(tp_nic *n)
{
    if (n->syn_n == n->syn_cap) return NULL; /* cannot happen: bounded by credits + SRQ */
    tp_event *e = &n->syn[(n->syn_head + n->syn_n++) % n->syn_cap];
    memset(e, 0, sizeof *e);
    return e;
}

/* Completes an accepted send/write that never reached the hardware. */
static void syn_fail(tp_nic *n, int kind, void *ctx, int status, const char *why)
{
    tp_event *e = syn_push(n);
    if (!e) {
        TN_LOGE("verbs %s: synthetic completion ring full; a completion is lost", n->nfo.name);
        return;
    }
    e->kind = kind == TV_WR_SEND ? TP_EV_SEND : kind == TV_WR_RECV ? TP_EV_RECV : TP_EV_WRITE;
    e->status = status;
    e->ctx = ctx;
    snprintf(e->msg, sizeof e->msg, "verbs %s: %s", n->nfo.name, why);
}

static void peer_name(const tv_peer *p, char *buf, size_t cap)
{
    snprintf(buf, cap, "gid %02x%02x:..:%02x%02x lid %u qpn %u", p->addr.gid[0], p->addr.gid[1],
             p->addr.gid[14], p->addr.gid[15], p->addr.lid, p->addr.qpn);
}

/* --------------------------------------------------------- device list ---- */

int tp_verbs_list_devices(char names[][64], int max)
{
    int num = 0;
    struct ibv_device **l = ibv_get_device_list(&num);
    if (!l) return num < 0 ? num : 0; /* no driver / no device */
    for (int k = 0; k < num && k < max; k++) snprintf(names[k], 64, "%s", ibv_get_device_name(l[k]));
    ibv_free_device_list(l);
    return num;
}

/* --------------------------------------------------------------- close ---- */

static void destroy_qp(struct ibv_qp *qp)
{
    if (qp && ibv_destroy_qp(qp)) TN_LOGW("verbs: ibv_destroy_qp failed");
}

static void vb_close(tp_nic *n)
{
    if (!n) return;
    for (uint32_t k = 0; k < n->n_peers; k++) {
        tv_peer *p = n->peers[k];
        destroy_qp(p->msg_qp);
        destroy_qp(p->rma_qp);
        if (p->ah) ibv_destroy_ah(p->ah);
        for (pend *q = p->q_head, *nx; q; q = nx) {
            nx = q->next;
            free(q);
        }
        free(p);
    }
    for (dead_qp *d = n->dead, *nx; d; d = nx) {
        nx = d->next;
        destroy_qp(d->qp);
        free(d);
    }
    destroy_qp(n->ud);
    if (n->msg_srq) ibv_destroy_srq(n->msg_srq);
    if (n->imm_srq) ibv_destroy_srq(n->imm_srq);
    if (n->cq) ibv_destroy_cq(n->cq);
    if (n->ch) ibv_destroy_comp_channel(n->ch);
    if (n->ud_mr) ibv_dereg_mr(n->ud_mr);
    if (n->pd) ibv_dealloc_pd(n->pd);
    if (n->ctx) ibv_close_device(n->ctx);
    free(n->ud_buf);
    free(n->ud_free);
    free(n->peers);
    free(n->syn);
    free(n->cancelled);
    free(n);
}

/* ---------------------------------------------------------------- open ---- */

static uint64_t port_rate_bps(const char *dev, int port)
{
    char path[256], line[128];
    snprintf(path, sizeof path, "/sys/class/infiniband/%s/ports/%d/rate", dev, port);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    uint64_t r = 0;
    if (fgets(line, sizeof line, f)) r = strtoull(line, NULL, 10) * 1000000000ull;
    fclose(f);
    return r;
}

static int pick_gid(tp_nic *n, int tbl_len)
{
    int cnt = tbl_len > 256 ? 256 : tbl_len;
    tv_gid_entry *g = calloc((size_t)(cnt > 0 ? cnt : 1), sizeof *g);
    if (!g) return tn_err(-ENOMEM, "out of memory");
    for (int k = 0; k < cnt; k++) {
        struct ibv_gid_entry e;
        if (ibv_query_gid_ex(n->ctx, n->port, (uint32_t)k, &e, 0)) continue;
        memcpy(g[k].gid, e.gid.raw, 16);
        g[k].type = e.gid_type == IBV_GID_TYPE_ROCE_V2   ? TV_GID_ROCE_V2
                    : e.gid_type == IBV_GID_TYPE_ROCE_V1 ? TV_GID_ROCE_V1
                                                         : TV_GID_IB;
        static const uint8_t zero[16];
        g[k].valid = memcmp(e.gid.raw, zero, 16) != 0;
    }
    int r = tv_gid_pick(g, cnt, n->roce, env_int("TENDRIL_VERBS_GID_INDEX", -1, 0, 255));
    free(g);
    return r;
}

static int ud_post_recv(tp_nic *n, uint32_t slot)
{
    struct ibv_sge sge = {.addr = (uintptr_t)(n->ud_buf + (size_t)slot * UD_SLOT),
                          .length = UD_SLOT, .lkey = n->ud_mr->lkey};
    struct ibv_recv_wr wr = {.wr_id = tv_wr_tag(TV_WR_UD_RECV, slot), .sg_list = &sge, .num_sge = 1};
    struct ibv_recv_wr *bad;
    return -ibv_post_recv(n->ud, &wr, &bad);
}

/* Posts `count` zero-length receives on the imm SRQ in one chained call. */
static int imm_post(tp_nic *n, uint32_t count)
{
    struct ibv_recv_wr wr[64], *bad;
    while (count) {
        uint32_t c = count < 64 ? count : 64;
        for (uint32_t k = 0; k < c; k++)
            wr[k] = (struct ibv_recv_wr){.wr_id = tv_wr_tag(TV_WR_IMM, 0), .sg_list = NULL,
                                         .num_sge = 0, .next = k + 1 < c ? &wr[k + 1] : NULL};
        int r = ibv_post_srq_recv(n->imm_srq, wr, &bad);
        if (r) {
            uint32_t posted = (uint32_t)(bad - wr);
            n->imm_missing -= posted < n->imm_missing ? posted : n->imm_missing;
            return -r;
        }
        count -= c;
        if (n->imm_missing >= c) n->imm_missing -= c;
        else n->imm_missing = 0;
    }
    return 0;
}

static int ud_to_rts(tp_nic *n)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = n->port,
                            .qkey = TV_QKEY};
    if (ibv_modify_qp(n->ud, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_QKEY))
        return -1;
    a = (struct ibv_qp_attr){.qp_state = IBV_QPS_RTR};
    if (ibv_modify_qp(n->ud, &a, IBV_QP_STATE)) return -1;
    a = (struct ibv_qp_attr){.qp_state = IBV_QPS_RTS, .sq_psn = 0};
    return ibv_modify_qp(n->ud, &a, IBV_QP_STATE | IBV_QP_SQ_PSN) ? -1 : 0;
}

static int vb_open(const tp_open_args *a, tp_nic **out)
{
    int num = 0;
    struct ibv_device **list = ibv_get_device_list(&num);
    struct ibv_device *dev = NULL;
    for (int k = 0; list && k < num && !dev; k++)
        if (!a->nic || !strcmp(a->nic, ibv_get_device_name(list[k]))) dev = list[k];
    if (!dev) {
        int r = tn_err(-ENODEV, "verbs: no RDMA device '%s' (ibv_get_device_list found %d device%s)",
                       a->nic ? a->nic : "(any)", list ? num : 0, (list ? num : 0) == 1 ? "" : "s");
        if (list) ibv_free_device_list(list);
        return r;
    }
    tp_nic *n = calloc(1, sizeof *n);
    if (!n) {
        ibv_free_device_list(list);
        return tn_err(-ENOMEM, "out of memory");
    }
    snprintf(n->nfo.provider, sizeof n->nfo.provider, "verbs");
    snprintf(n->nfo.name, sizeof n->nfo.name, "%s", ibv_get_device_name(dev));
    n->ctx = ibv_open_device(dev);
    ibv_free_device_list(list);
    const char *nm = n->nfo.name;
    int r = 0;
#define FAIL(code, ...)                                                                         \
    do {                                                                                        \
        r = tn_err((code), __VA_ARGS__);                                                        \
        goto fail;                                                                              \
    } while (0)
    if (!n->ctx) FAIL(-errno ? -errno : -EIO, "verbs %s: ibv_open_device: %s", nm, strerror(errno));
    n->port = (uint8_t)env_int("TENDRIL_VERBS_PORT", 1, 1, 255);
    static const char *const compat[] = {"tendril", "pplx"};
    n->compat = tn_env_choice_warn("TENDRIL_VERBS_COMPAT", compat, 2, 0) == 1;
    struct ibv_device_attr da;
    if ((r = ibv_query_device(n->ctx, &da))) FAIL(-r, "verbs %s: ibv_query_device: %s", nm, strerror(r));
    struct ibv_port_attr pa;
    if ((r = ibv_query_port(n->ctx, n->port, &pa)))
        FAIL(-r, "verbs %s: ibv_query_port(%u): %s", nm, n->port, strerror(r));
    if (pa.state != IBV_PORT_ACTIVE)
        TN_LOGW("verbs %s: port %u is not active (state %d)", nm, n->port, (int)pa.state);
    n->roce = pa.link_layer == IBV_LINK_LAYER_ETHERNET;
    n->lid = pa.lid;
    n->mtu = pa.active_mtu;
    n->nfo.max_msg = pa.max_msg_sz < UINT32_MAX ? pa.max_msg_sz : UINT32_MAX;
    n->nfo.cq_data_size = 4;
    n->nfo.mr_local = true;
    n->nfo.link_speed = port_rate_bps(nm, n->port);
    if ((r = pick_gid(n, pa.gid_tbl_len)) < 0) goto fail;
    n->gid_index = r;
    if ((r = ibv_query_gid(n->ctx, n->port, n->gid_index, &n->gid)))
        FAIL(-EIO, "verbs %s: ibv_query_gid(port %u, index %d) failed", nm, n->port, n->gid_index);
    tv_caps caps = {.max_cqe = (uint32_t)da.max_cqe, .max_qp_wr = (uint32_t)da.max_qp_wr,
                    .max_srq_wr = (uint32_t)da.max_srq_wr};
    if ((r = tv_size(&caps, &n->sz))) goto fail;
    uint64_t ms = (uint64_t)env_int("TENDRIL_VERBS_CONNECT_TIMEOUT_MS", 10000, 10, 3600000);
    n->timing = (tv_conn_timing){.first_retry_ns = 50000000ull, .max_retry_ns = 1000000000ull,
                                 .timeout_ns = ms * 1000000ull};
    n->credits = n->sz.send_credits;
    n->syn_cap = n->sz.send_credits + n->sz.msg_srq + 16;
    n->syn = calloc(n->syn_cap, sizeof *n->syn);
    if (!n->syn) FAIL(-ENOMEM, "out of memory");

    if (!(n->pd = ibv_alloc_pd(n->ctx))) FAIL(-EIO, "verbs %s: ibv_alloc_pd failed", nm);
    if (!tn_env_flag_warn("TENDRIL_NO_WAIT_FD", false)) {
        n->ch = ibv_create_comp_channel(n->ctx);
        if (n->ch) {
            int fl = fcntl(n->ch->fd, F_GETFL);
            if (fl < 0 || fcntl(n->ch->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
                ibv_destroy_comp_channel(n->ch);
                n->ch = NULL;
            }
        }
    }
    if (!(n->cq = ibv_create_cq(n->ctx, (int)n->sz.cq, NULL, n->ch, 0)))
        FAIL(-EIO, "verbs %s: ibv_create_cq(%u): %s", nm, n->sz.cq, strerror(errno));
    if (n->ch && ibv_req_notify_cq(n->cq, 0)) FAIL(-EIO, "verbs %s: ibv_req_notify_cq failed", nm);
    struct ibv_srq_init_attr sa = {.attr = {.max_wr = n->sz.msg_srq, .max_sge = 1}};
    if (!(n->msg_srq = ibv_create_srq(n->pd, &sa)))
        FAIL(-EIO, "verbs %s: ibv_create_srq(%u): %s", nm, n->sz.msg_srq, strerror(errno));
    sa = (struct ibv_srq_init_attr){.attr = {.max_wr = n->sz.imm_srq, .max_sge = 1}};
    if (!(n->imm_srq = ibv_create_srq(n->pd, &sa)))
        FAIL(-EIO, "verbs %s: ibv_create_srq(%u): %s", nm, n->sz.imm_srq, strerror(errno));
    struct ibv_qp_init_attr qa = {
        .send_cq = n->cq, .recv_cq = n->cq, .qp_type = IBV_QPT_UD, .sq_sig_all = 1,
        .cap = {.max_send_wr = n->sz.ud_sq, .max_recv_wr = n->sz.ud_rq, .max_send_sge = 1,
                .max_recv_sge = 1}};
    if (!(n->ud = ibv_create_qp(n->pd, &qa)))
        FAIL(-EIO, "verbs %s: ibv_create_qp(UD): %s", nm, strerror(errno));
    if (ud_to_rts(n)) FAIL(-EIO, "verbs %s: UD QP to RTS: %s", nm, strerror(errno));

    uint32_t slots = n->sz.ud_rq + n->sz.ud_sq;
    n->ud_buf = calloc(slots, UD_SLOT);
    n->ud_free = calloc(n->sz.ud_sq, sizeof *n->ud_free);
    if (!n->ud_buf || !n->ud_free) FAIL(-ENOMEM, "out of memory");
    if (!(n->ud_mr = ibv_reg_mr(n->pd, n->ud_buf, (size_t)slots * UD_SLOT, IBV_ACCESS_LOCAL_WRITE)))
        FAIL(-EIO, "verbs %s: ibv_reg_mr(handshake buffers): %s", nm, strerror(errno));
    for (uint32_t k = 0; k < n->sz.ud_sq; k++) n->ud_free[n->ud_free_n++] = n->sz.ud_rq + k;
    for (uint32_t k = 0; k < n->sz.ud_rq; k++)
        if ((r = ud_post_recv(n, k))) FAIL(r, "verbs %s: posting UD receives: %s", nm, strerror(-r));
    n->imm_missing = n->sz.imm_srq;
    if ((r = imm_post(n, n->sz.imm_srq)))
        FAIL(r, "verbs %s: posting zero-length receives: %s", nm, strerror(-r));

    tv_ud_addr ua = {.lid = n->lid, .qpn = n->ud->qp_num, .qkey = TV_QKEY};
    memcpy(ua.gid, n->gid.raw, 16);
    tv_addr_encode(&ua, &n->addr);
    TN_LOGI("verbs %s: port %u (%s), GID index %d, CQ %u, credits %u, imm SRQ %u", nm, n->port,
            n->roce ? "RoCE" : "InfiniBand", n->gid_index, n->sz.cq, n->sz.send_credits, n->sz.imm_srq);
    *out = n;
    return 0;
fail:
    vb_close(n);
    return r;
#undef FAIL
}

static void vb_info(const tp_nic *n, tp_nic_info *out) { *out = n->nfo; }

static int vb_address(const tp_nic *n, te_addr *out)
{
    *out = n->addr;
    return 0;
}

/* ------------------------------------------------------------------ MR ---- */

static int vb_mr_reg(tp_nic *n, void *ptr, size_t len, int device, bool remote, tp_mr *out)
{
    int access = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_RELAXED_ORDERING;
    if (remote) access |= IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ;
    size_t l = len ? len : 1; /* zero-length regions still need keys for imm-only writes */
    struct ibv_mr *mr = NULL;
    if (device == TE_DEVICE_HOST) {
        mr = ibv_reg_mr(n->pd, ptr, l, access);
        if (!mr) return tn_err(errno ? -errno : -EIO, "verbs %s: ibv_reg_mr(%p, %zu): %s",
                               n->nfo.name, ptr, l, strerror(errno));
    } else {
        int r = tcu_check_device_memory(ptr, l, device);
        if (r) return r;
        int fd = -1;
        uint64_t off = 0;
        char why[200];
        r = tcu_dmabuf_export(ptr, l, device, &fd, &off);
        if (!r) {
            mr = ibv_reg_dmabuf_mr(n->pd, off, l, (uintptr_t)ptr, fd, access);
            if (!mr) /* older kernels reject the optional relaxed-ordering bit here */
                mr = ibv_reg_dmabuf_mr(n->pd, off, l, (uintptr_t)ptr, fd,
                                       access & ~IBV_ACCESS_RELAXED_ORDERING);
            int e = errno;
            close(fd);
            snprintf(why, sizeof why, "ibv_reg_dmabuf_mr: %s", strerror(e));
        } else {
            snprintf(why, sizeof why, "dma-buf export: %s", te_last_error());
        }
        if (!mr) { /* nvidia-peermem lets plain ibv_reg_mr pin GPU memory */
            mr = ibv_reg_mr(n->pd, ptr, l, access);
            if (!mr)
                return tn_err(-EOPNOTSUPP, "verbs %s: CUDA memory of device %d cannot be registered "
                              "(%s; ibv_reg_mr without dma-buf: %s, is nvidia-peermem loaded?)",
                              n->nfo.name, device, why, strerror(errno));
        }
    }
    out->handle = mr;
    out->desc = mr;
    out->rkey = mr->rkey;
    return 0;
}

static void vb_mr_dereg(tp_nic *n, tp_mr *mr)
{
    if (mr->handle && ibv_dereg_mr(mr->handle)) TN_LOGW("verbs %s: ibv_dereg_mr failed", n->nfo.name);
    mr->handle = NULL;
}

/* --------------------------------------------------------------- peers ---- */

static int find_peer(tp_nic *n, const tv_ud_addr *a)
{
    for (uint32_t k = 0; k < n->n_peers; k++) {
        const tv_ud_addr *b = &n->peers[k]->addr;
        if (b->qpn == a->qpn && b->lid == a->lid && !memcmp(b->gid, a->gid, 16)) return (int)k;
    }
    return -1;
}

static int new_peer(tp_nic *n, const tv_ud_addr *a)
{
    if (n->n_peers == n->cap_peers) {
        uint32_t cap = n->cap_peers ? n->cap_peers * 2 : 16;
        tv_peer **np = realloc(n->peers, cap * sizeof *np);
        if (!np) return tn_err(-ENOMEM, "out of memory");
        n->peers = np;
        n->cap_peers = cap;
    }
    tv_peer *p = calloc(1, sizeof *p);
    if (!p) return tn_err(-ENOMEM, "out of memory");
    p->addr = *a;
    struct ibv_ah_attr aa = {.dlid = a->lid, .port_num = n->port};
    if (n->roce) {
        aa.is_global = 1;
        memcpy(aa.grh.dgid.raw, a->gid, 16);
        aa.grh.sgid_index = (uint8_t)n->gid_index;
        aa.grh.hop_limit = 64;
    }
    if (!(p->ah = ibv_create_ah(n->pd, &aa))) {
        int e = errno;
        free(p);
        return tn_err(-EHOSTUNREACH, "verbs %s: ibv_create_ah: %s", n->nfo.name, strerror(e));
    }
    n->peers[n->n_peers] = p;
    return (int)n->n_peers++;
}

static struct ibv_qp *rc_qp(tp_nic *n, struct ibv_srq *srq)
{
    struct ibv_qp_init_attr qa = {
        .send_cq = n->cq, .recv_cq = n->cq, .srq = srq, .qp_type = IBV_QPT_RC, .sq_sig_all = 0,
        .cap = {.max_send_wr = n->sz.send_credits, .max_send_sge = 1}};
    struct ibv_qp *qp = ibv_create_qp(n->pd, &qa);
    if (!qp) return NULL;
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_INIT, .pkey_index = 0, .port_num = n->port,
                            .qp_access_flags = IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
                                               IBV_ACCESS_REMOTE_WRITE};
    if (ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS)) {
        destroy_qp(qp);
        return NULL;
    }
    return qp;
}

static int peer_make_qps(tp_nic *n, tv_peer *p)
{
    if (p->msg_qp) return 0;
    p->msg_qp = rc_qp(n, n->msg_srq);
    p->rma_qp = p->msg_qp ? rc_qp(n, n->imm_srq) : NULL;
    if (!p->rma_qp) {
        int e = errno;
        destroy_qp(p->msg_qp);
        p->msg_qp = NULL;
        return tn_err(-EIO, "verbs %s: creating RC QPs: %s", n->nfo.name, strerror(e));
    }
    p->msg_psn = n->compat ? 123 : tv_random_psn();
    p->rma_psn = n->compat ? 456 : tv_random_psn();
    return 0;
}

static int rc_connect(tp_nic *n, struct ibv_qp *qp, uint32_t my_psn, uint32_t qpn, uint32_t psn,
                      const tv_handshake *h)
{
    struct ibv_qp_attr a = {.qp_state = IBV_QPS_RTR, .path_mtu = n->mtu, .dest_qp_num = qpn,
                            .rq_psn = psn, .max_dest_rd_atomic = 1, .min_rnr_timer = 12};
    a.ah_attr.dlid = h->lid;
    a.ah_attr.port_num = n->port;
    if (n->roce) {
        a.ah_attr.is_global = 1;
        memcpy(a.ah_attr.grh.dgid.raw, h->gid, 16);
        a.ah_attr.grh.sgid_index = (uint8_t)n->gid_index;
        a.ah_attr.grh.hop_limit = 64;
    }
    int r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                                      IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
    if (r) return -r;
    a = (struct ibv_qp_attr){.qp_state = IBV_QPS_RTS, .timeout = 14, .retry_cnt = 7, .rnr_retry = 7,
                             .sq_psn = my_psn, .max_rd_atomic = 1};
    r = ibv_modify_qp(qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                                  IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
    return -r;
}

static void send_handshake(tp_nic *n, tv_peer *p, int kind)
{
    if (!n->ud_free_n) {
        TN_LOGD("verbs %s: no free handshake buffer; the retry will send it", n->nfo.name);
        return;
    }
    uint32_t slot = n->ud_free[--n->ud_free_n];
    uint8_t *buf = n->ud_buf + (size_t)slot * UD_SLOT;
    tv_handshake h = {.lid = n->lid, .msg_qpn = p->msg_qp->qp_num, .msg_psn = p->msg_psn,
                      .rma_qpn = p->rma_qp->qp_num, .rma_psn = p->rma_psn,
                      .kind = n->compat ? TV_HS_LEGACY : kind};
    h.ud = (tv_ud_addr){.lid = n->lid, .qpn = n->ud->qp_num, .qkey = TV_QKEY};
    memcpy(h.ud.gid, n->gid.raw, 16);
    memcpy(h.gid, n->gid.raw, 16);
    size_t len = tv_hs_encode(&h, buf, UD_SLOT);
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = n->ud_mr->lkey};
    struct ibv_send_wr wr = {.wr_id = tv_wr_tag(TV_WR_UD_SEND, slot), .sg_list = &sge, .num_sge = 1,
                             .opcode = IBV_WR_SEND, .send_flags = IBV_SEND_SIGNALED};
    wr.wr.ud.ah = p->ah;
    wr.wr.ud.remote_qpn = p->addr.qpn;
    wr.wr.ud.remote_qkey = p->addr.qkey;
    struct ibv_send_wr *bad;
    int r = ibv_post_send(n->ud, &wr, &bad);
    if (r) {
        n->ud_free[n->ud_free_n++] = slot;
        TN_LOGW("verbs %s: handshake send failed: %s (will retry)", n->nfo.name, strerror(r));
    }
}

/* ------------------------------------------------------------- posting ---- */

/* Posts the pending chain. WRs that do not reach the hardware were already accepted,
 * so they complete through synthesized error events (each exactly once). */
static int chain_post(tp_nic *n, bool own_last)
{
    if (!n->chain_n) return 0;
    struct ibv_send_wr *bad = NULL, *last = &n->chain[n->chain_n - 1];
    int r = ibv_post_send(n->chain_qp, &n->chain[0], &bad);
    n->chain_n = 0;
    n->chain_qp = NULL;
    if (!r) return 0;
    char why[96];
    snprintf(why, sizeof why, "ibv_post_send: %s", strerror(r));
    for (struct ibv_send_wr *w = bad; w; w = w->next)
        if (!own_last || w != last)
            syn_fail(n, tv_wr_kind(w->wr_id), (void *)(uintptr_t)tv_wr_value(w->wr_id),
                     r == ENOMEM ? -ENOBUFS : -r, why);
    if (!own_last) return 0;
    n->credits++; /* the caller's own WR was not accepted: it gets the error directly */
    if (r == ENOMEM) return -EAGAIN;
    return tn_err(-r, "verbs %s: %s", n->nfo.name, why);
}

static void chain_flush(tp_nic *n) { (void)chain_post(n, false); }

/* Appends one accepted WR; with !more the chain is posted. own_last: a refusal of this
 * WR is returned (-EAGAIN for ENOMEM) instead of completing it with an error event. */
static int chain_add(tp_nic *n, struct ibv_qp *qp, const pend *o, bool more, bool own_last)
{
    if (n->chain_n && (n->chain_qp != qp || n->chain_n == CHAIN_MAX)) chain_flush(n);
    int i = n->chain_n++;
    struct ibv_send_wr *w = &n->chain[i];
    struct ibv_sge *s = &n->chain_sge[i];
    *s = (struct ibv_sge){.addr = (uintptr_t)o->local, .length = (uint32_t)o->len, .lkey = o->lkey};
    *w = (struct ibv_send_wr){.wr_id = tv_wr_tag(o->kind, (uintptr_t)o->ctx), .sg_list = s,
                              .num_sge = o->len ? 1 : 0, .send_flags = IBV_SEND_SIGNALED};
    if (o->kind == TV_WR_SEND) {
        w->opcode = IBV_WR_SEND;
    } else {
        w->opcode = o->has_imm ? IBV_WR_RDMA_WRITE_WITH_IMM : IBV_WR_RDMA_WRITE;
        w->imm_data = o->imm; /* raw, as the original: no byte swapping */
        w->wr.rdma.remote_addr = o->raddr;
        w->wr.rdma.rkey = o->rkey;
    }
    if (i > 0) n->chain[i - 1].next = w;
    n->chain_qp = qp;
    return more ? 0 : chain_post(n, own_last);
}

static void fail_queue(tp_nic *n, tv_peer *p, int status, const char *why)
{
    for (pend *q = p->q_head, *nx; q; q = nx) {
        nx = q->next;
        syn_fail(n, q->kind, q->ctx, status, why);
        free(q);
    }
    p->q_head = p->q_tail = NULL;
}

static void flush_queue(tp_nic *n, tv_peer *p)
{
    for (pend *q = p->q_head, *nx; q; q = nx) {
        nx = q->next;
        (void)chain_add(n, q->kind == TV_WR_SEND ? p->msg_qp : p->rma_qp, q, nx != NULL, false);
        free(q);
    }
    p->q_head = p->q_tail = NULL;
}

static void peer_give_up(tp_nic *n, tv_peer *p, int status, const char *why)
{
    bool used = p->conn.state == TV_ESTABLISHED;
    if (p->conn.state == TV_CONNECTING && n->n_connecting) n->n_connecting--;
    tv_conn_reset(&p->conn);
    fail_queue(n, p, status, why);
    /* QPs that never carried work are destroyed; used ones park (in the error state)
     * until close, so that the flushed completions of their work still arrive. */
    struct ibv_qp *qps[2] = {p->msg_qp, p->rma_qp};
    for (int k = 0; k < 2; k++) {
        if (!qps[k]) continue;
        dead_qp *d = used ? malloc(sizeof *d) : NULL;
        if (!d) {
            destroy_qp(qps[k]);
            continue;
        }
        struct ibv_qp_attr a = {.qp_state = IBV_QPS_ERR};
        ibv_modify_qp(qps[k], &a, IBV_QP_STATE);
        d->qp = qps[k];
        d->next = n->dead;
        n->dead = d;
    }
    p->msg_qp = p->rma_qp = NULL;
}

static int submit(tp_nic *n, tp_peer peer, pend *o, bool more)
{
    if (peer >= n->n_peers) return tn_err(-EINVAL, "verbs %s: unknown peer %" PRIu64, n->nfo.name, peer);
    if (!tv_wr_fits((uintptr_t)o->ctx)) return tn_err(-EINVAL, "verbs: context pointer too large");
    if (o->len > n->nfo.max_msg)
        return tn_err(-EMSGSIZE, "verbs %s: %zu bytes exceed the port's max_msg_sz %zu", n->nfo.name,
                      o->len, n->nfo.max_msg);
    if (!n->credits) {
        chain_flush(n);
        return -EAGAIN;
    }
    tv_peer *p = n->peers[peer];
    if (p->conn.state == TV_ESTABLISHED) {
        n->credits--;
        return chain_add(n, o->kind == TV_WR_SEND ? p->msg_qp : p->rma_qp, o, more, true);
    }
    pend *q = malloc(sizeof *q);
    if (!q) return tn_err(-ENOMEM, "out of memory");
    *q = *o;
    q->next = NULL;
    if (p->conn.state == TV_IDLE) {
        int r = peer_make_qps(n, p);
        if (r) {
            free(q);
            return r;
        }
        if (tv_conn_start(&p->conn, &n->timing, tn_now_ns()) & TV_ACT_SEND_REQUEST)
            send_handshake(n, p, TV_HS_REQUEST);
        n->n_connecting++;
    }
    n->credits--;
    if (p->q_tail) p->q_tail->next = q;
    else p->q_head = q;
    p->q_tail = q;
    return 0;
}

static uint32_t lkey_of(void *desc) { return desc ? ((struct ibv_mr *)desc)->lkey : 0; }

static int vb_post_write(tp_nic *n, const tp_write *w, bool more)
{
    if (w->len && !w->local_desc)
        return tn_err(-EINVAL, "verbs %s: write source is not registered", n->nfo.name);
    pend o = {.kind = TV_WR_WRITE, .local = w->local, .len = w->len, .lkey = lkey_of(w->local_desc),
              .raddr = w->remote_base + w->remote_off, .rkey = (uint32_t)w->rkey,
              .has_imm = w->has_imm, .imm = w->imm, .ctx = w->ctx};
    return submit(n, w->peer, &o, more);
}

static int vb_post_send(tp_nic *n, tp_peer peer, const void *buf, size_t len, void *desc, void *ctx)
{
    if (len && !desc) return tn_err(-EINVAL, "verbs %s: send buffer is not registered", n->nfo.name);
    pend o = {.kind = TV_WR_SEND, .local = buf, .len = len, .lkey = lkey_of(desc), .ctx = ctx};
    return submit(n, peer, &o, false);
}

static int vb_post_recv(tp_nic *n, void *buf, size_t len, void *desc, void *ctx)
{
    if (!tv_wr_fits((uintptr_t)ctx)) return tn_err(-EINVAL, "verbs: context pointer too large");
    if (len > UINT32_MAX) len = UINT32_MAX;
    struct ibv_sge sge = {.addr = (uintptr_t)buf, .length = (uint32_t)len, .lkey = lkey_of(desc)};
    struct ibv_recv_wr wr = {.wr_id = tv_wr_tag(TV_WR_RECV, (uintptr_t)ctx), .sg_list = &sge,
                             .num_sge = len ? 1 : 0};
    struct ibv_recv_wr *bad;
    int r = ibv_post_srq_recv(n->msg_srq, &wr, &bad);
    if (r == ENOMEM) return -EAGAIN;
    if (r) return tn_err(-r, "verbs %s: ibv_post_srq_recv: %s", n->nfo.name, strerror(r));
    return 0;
}

/* SRQ receives cannot be withdrawn from the hardware: the cancellation completes at
 * once (-ECANCELED) and the receive's later real completion, if any, is dropped. */
static int vb_cancel_recv(tp_nic *n, void *ctx)
{
    if (n->n_cancelled == n->cap_cancelled) {
        uint32_t cap = n->cap_cancelled ? n->cap_cancelled * 2 : 64;
        void **nc = realloc(n->cancelled, cap * sizeof *nc);
        if (!nc) return tn_err(-ENOMEM, "out of memory");
        n->cancelled = nc;
        n->cap_cancelled = cap;
    }
    n->cancelled[n->n_cancelled++] = ctx;
    syn_fail(n, TV_WR_RECV, ctx, -ECANCELED, "receive cancelled");
    return 0;
}

static bool take_cancelled(tp_nic *n, void *ctx)
{
    for (uint32_t k = 0; k < n->n_cancelled; k++)
        if (n->cancelled[k] == ctx) {
            n->cancelled[k] = n->cancelled[--n->n_cancelled];
            return true;
        }
    return false;
}

/* ------------------------------------------------------------- polling ---- */

static void on_handshake(tp_nic *n, const uint8_t *buf, size_t len)
{
    tv_handshake h;
    if (tv_hs_decode(buf, len, &h)) {
        TN_LOGW("verbs %s: dropped a malformed handshake: %s", n->nfo.name, te_last_error());
        return;
    }
    int idx = find_peer(n, &h.ud);
    if (idx < 0 && h.kind == TV_HS_REPLY) return; /* a reply nobody asked for */
    if (idx < 0 && (idx = new_peer(n, &h.ud)) < 0) {
        TN_LOGW("verbs %s: cannot accept a connection: %s", n->nfo.name, te_last_error());
        return;
    }
    tv_peer *p = n->peers[idx];
    bool was_connecting = p->conn.state == TV_CONNECTING;
    if (p->conn.state == TV_IDLE && h.kind != TV_HS_REPLY && peer_make_qps(n, p)) {
        TN_LOGW("verbs %s: cannot accept a connection: %s", n->nfo.name, te_last_error());
        return;
    }
    int act = tv_conn_on_handshake(&p->conn, &h);
    char who[96];
    peer_name(p, who, sizeof who);
    if (act & TV_ACT_RESTART) {
        TN_LOGW("verbs %s: %s reconnects; its old connection is dropped", n->nfo.name, who);
        peer_give_up(n, p, -ECONNRESET, "the peer re-established the connection");
        if (peer_make_qps(n, p)) {
            TN_LOGW("verbs %s: cannot accept a connection: %s", n->nfo.name, te_last_error());
            return;
        }
        was_connecting = false;
        act = tv_conn_on_handshake(&p->conn, &h);
    }
    if (act & TV_ACT_IGNORE) {
        TN_LOGD("verbs %s: ignored a stale handshake from %s", n->nfo.name, who);
        return;
    }
    if (act & TV_ACT_CONNECT) {
        int r = rc_connect(n, p->msg_qp, p->msg_psn, h.msg_qpn, h.msg_psn, &h);
        if (!r) r = rc_connect(n, p->rma_qp, p->rma_psn, h.rma_qpn, h.rma_psn, &h);
        if (r) {
            char why[160];
            snprintf(why, sizeof why, "connecting RC QPs to %s failed: %s", who, strerror(-r));
            TN_LOGW("verbs %s: %s", n->nfo.name, why);
            p->conn.state = was_connecting ? TV_CONNECTING : TV_IDLE;
            peer_give_up(n, p, -ECONNREFUSED, why);
            return;
        }
        if (was_connecting && n->n_connecting) n->n_connecting--;
        TN_LOGD("verbs %s: connected to %s", n->nfo.name, who);
    }
    if (act & TV_ACT_SEND_REPLY) send_handshake(n, p, TV_HS_REPLY);
    if (act & TV_ACT_FLUSH) flush_queue(n, p);
}

static void tick_peers(tp_nic *n)
{
    uint64_t now = tn_now_ns();
    for (uint32_t k = 0; k < n->n_peers && n->n_connecting; k++) {
        tv_peer *p = n->peers[k];
        if (p->conn.state != TV_CONNECTING) continue;
        int act = tv_conn_tick(&p->conn, &n->timing, now);
        if (act & TV_ACT_SEND_REQUEST) send_handshake(n, p, TV_HS_REQUEST);
        if (act & TV_ACT_FAIL) {
            char who[96], why[160];
            peer_name(p, who, sizeof who);
            snprintf(why, sizeof why, "no handshake answer from %s within %" PRIu64 " ms (%u tries)",
                     who, n->timing.timeout_ns / 1000000, p->conn.tries);
            TN_LOGW("verbs %s: %s", n->nfo.name, why);
            p->conn.state = TV_CONNECTING; /* let peer_give_up count it */
            peer_give_up(n, p, -ETIMEDOUT, why);
        }
    }
}

static void on_qp_error(tp_nic *n, uint32_t qp_num, const char *why)
{
    for (uint32_t k = 0; k < n->n_peers; k++) {
        tv_peer *p = n->peers[k];
        if ((p->msg_qp && p->msg_qp->qp_num == qp_num) || (p->rma_qp && p->rma_qp->qp_num == qp_num)) {
            TN_LOGW("verbs %s: connection broken (%s); reconnecting on next use", n->nfo.name, why);
            peer_give_up(n, p, -ECONNRESET, why);
            return;
        }
    }
}

/* Turns one work completion into at most one engine event; returns 1 if it did. */
static int on_wc(tp_nic *n, const struct ibv_wc *wc, tp_event *x)
{
    int kind = tv_wr_kind(wc->wr_id);
    void *ctx = (void *)(uintptr_t)tv_wr_value(wc->wr_id);
    memset(x, 0, sizeof *x);
    x->status = wc_errno(wc->status);
    if (wc->status != IBV_WC_SUCCESS)
        snprintf(x->msg, sizeof x->msg, "verbs %s: %s (vendor error 0x%x)", n->nfo.name,
                 ibv_wc_status_str(wc->status), wc->vendor_err);
    switch (kind) {
    case TV_WR_WRITE:
    case TV_WR_SEND:
        n->credits++;
        if (wc->status != IBV_WC_SUCCESS && wc->status != IBV_WC_WR_FLUSH_ERR)
            on_qp_error(n, wc->qp_num, ibv_wc_status_str(wc->status));
        x->kind = kind == TV_WR_SEND ? TP_EV_SEND : TP_EV_WRITE;
        x->ctx = ctx;
        return 1;
    case TV_WR_RECV:
        if (take_cancelled(n, ctx)) return 0;
        x->kind = TP_EV_RECV;
        x->ctx = ctx;
        x->len = wc->byte_len;
        return 1;
    case TV_WR_IMM:
        if (++n->imm_missing >= n->sz.imm_batch) {
            int r = imm_post(n, n->imm_missing);
            if (r) TN_LOGW("verbs %s: re-posting zero-length receives: %s", n->nfo.name, strerror(-r));
        }
        x->kind = TP_EV_IMM;
        x->imm = wc->imm_data; /* raw */
        return 1;
    case TV_WR_UD_SEND:
        if (n->ud_free_n < n->sz.ud_sq) n->ud_free[n->ud_free_n++] = (uint32_t)tv_wr_value(wc->wr_id);
        if (wc->status != IBV_WC_SUCCESS)
            TN_LOGW("verbs %s: handshake send: %s", n->nfo.name, ibv_wc_status_str(wc->status));
        return 0;
    case TV_WR_UD_RECV: {
        uint32_t slot = (uint32_t)tv_wr_value(wc->wr_id);
        if (wc->status == IBV_WC_SUCCESS && wc->byte_len >= TV_GRH_LEN)
            on_handshake(n, n->ud_buf + (size_t)slot * UD_SLOT + TV_GRH_LEN,
                         wc->byte_len - TV_GRH_LEN);
        else if (wc->status != IBV_WC_SUCCESS)
            TN_LOGW("verbs %s: handshake receive: %s", n->nfo.name, ibv_wc_status_str(wc->status));
        if (wc->status != IBV_WC_WR_FLUSH_ERR) {
            int r = ud_post_recv(n, slot);
            if (r) TN_LOGW("verbs %s: re-posting a handshake receive: %s", n->nfo.name, strerror(-r));
        }
        return 0;
    }
    default:
        TN_LOGW("verbs %s: completion with unknown wr_id tag %d dropped", n->nfo.name, kind);
        return 0;
    }
}

static int vb_poll(tp_nic *n, tp_event *ev, int max)
{
    chain_flush(n);
    if (n->n_connecting) tick_peers(n);
    int got = 0;
    while (got < max && n->syn_n) {
        ev[got] = n->syn[n->syn_head];
        if (ev[got].kind == TP_EV_WRITE || ev[got].kind == TP_EV_SEND) n->credits++;
        got++;
        n->syn_head = (n->syn_head + 1) % n->syn_cap;
        n->syn_n--;
    }
    while (got < max && n->stash_off < n->stash_n) got += on_wc(n, &n->stash[n->stash_off++], &ev[got]);
    if (n->stash_off == n->stash_n) n->stash_off = n->stash_n = 0;
    struct ibv_wc wc[16];
    while (got < max && !n->stash_n) {
        int want = max - got < 16 ? max - got : 16;
        int r = ibv_poll_cq(n->cq, want, wc);
        if (r < 0) return tn_err(-EIO, "verbs %s: ibv_poll_cq failed (CQ in error)", n->nfo.name);
        for (int k = 0; k < r; k++) got += on_wc(n, &wc[k], &ev[got]);
        if (r < want) break;
    }
    return got;
}

static int vb_wait_fd(tp_nic *n) { return n->ch ? n->ch->fd : -1; }

static bool vb_can_block(tp_nic *n)
{
    chain_flush(n);
    if (!n->ch || n->syn_n || n->stash_n || n->n_connecting) return false;
    struct ibv_cq *cq;
    void *cctx;
    while (ibv_get_cq_event(n->ch, &cq, &cctx) == 0) ibv_ack_cq_events(cq, 1);
    if (ibv_req_notify_cq(n->cq, 0)) return false;
    /* Completions that arrived before the re-arm raise no event: look once more. */
    int r = ibv_poll_cq(n->cq, STASH_MAX, n->stash);
    if (r > 0) {
        n->stash_n = r;
        n->stash_off = 0;
        return false;
    }
    return r == 0;
}

static int vb_resolve(tp_nic *n, const te_addr *addr, tp_peer *out)
{
    tv_ud_addr a;
    int r = tv_addr_decode(addr, &a);
    if (r) return r;
    int idx = find_peer(n, &a);
    if (idx < 0 && (idx = new_peer(n, &a)) < 0) return idx;
    *out = (tp_peer)idx;
    return 0;
}

const tp_ops tp_verbs_ops = {
    .backend = "ibverbs",
    .open = vb_open,
    .close = vb_close,
    .info = vb_info,
    .address = vb_address,
    .mr_reg = vb_mr_reg,
    .mr_dereg = vb_mr_dereg,
    .resolve = vb_resolve,
    .post_write = vb_post_write,
    .post_send = vb_post_send,
    .post_recv = vb_post_recv,
    .cancel_recv = vb_cancel_recv,
    .wait_fd = vb_wait_fd,
    .can_block = vb_can_block,
    .poll = vb_poll,
};
