/*
 * RDMA side of a context (docs/a2a-internode.md, "Memory" and "Errors"): which memory
 * the NICs read from (stage) and write into (rblock), their registration with the
 * caller's engine, the proxy that posts the writes, and the proxy's error report.
 *
 * GPU buffers: rblock is the shared block itself (the NVLink layout, slot = source),
 * stage is device memory of the same size; both registered with the device. Whether the
 * engine can really move GPU memory is only known once a write went through (a provider
 * may accept the registration and fail the transfer), so a loopback write from stage to
 * our own rblock decides. Host buffers: both in pinned host memory mapped for the GPU.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "a2a_internal.h"
#include "core/clock.h"
#include "core/log.h"
#include "proxy/a2a_proxy.h"

/* ------------------------------------------------------------ loopback probe ---- */

enum { PROBE_PENDING = 0, PROBE_DONE = 1, PROBE_ABANDONED = 2 };

typedef struct probe {
    int state;   /* atomic PROBE_* */
    int status;
    char msg[200];
} probe;

static void probe_done(void *arg, int status, const char *msg)
{
    probe *p = arg;
    p->status = status;
    if (status) snprintf(p->msg, sizeof p->msg, "%s", msg ? msg : "no message");
    if (__atomic_exchange_n(&p->state, PROBE_DONE, __ATOMIC_ACQ_REL) == PROBE_ABANDONED) free(p);
}


/* One write of `len` bytes from stage at src_off to dst at dst_off, waited for (at most
 * timeout_ms); `what` names it in errors. */
static int write_and_wait(a2a_ctx *c, const te_mr_desc *dst, uint64_t src_off, uint64_t dst_off,
                          uint64_t len, int timeout_ms, const char *what)
{
    probe *p = calloc(1, sizeof *p);
    if (!p) return tn_err(-ENOMEM, "a2a_connect: out of host memory");
    te_write_args a;
    memset(&a, 0, sizeof a);
    a.src = c->stage_mr;
    a.src_offset = src_off;
    a.len = len;
    a.dst = dst;
    a.dst_offset = dst_off;
    a.route.kind = TE_ROUTE_SHARDED;
    te_completion comp = {.fn = probe_done, .arg = p, .counter = NULL};
    int rc = te_write(c->cfg.engine, &a, &comp);
    if (rc) {
        free(p);
        return tn_err(rc, "%s was refused: %s", what, te_last_error());
    }
    const uint64_t deadline = tn_now_ms() + (uint64_t)timeout_ms;
    while (__atomic_load_n(&p->state, __ATOMIC_ACQUIRE) != PROBE_DONE) {
        if (tn_now_ms() >= deadline) {
            if (__atomic_exchange_n(&p->state, PROBE_ABANDONED, __ATOMIC_ACQ_REL) == PROBE_DONE) break;
            return tn_err(-ETIMEDOUT, "%s did not complete within %d ms", what,
                          timeout_ms); /* p is freed by probe_done */
        }
        tn_sleep_us(200);
    }
    rc = p->status ? tn_err(p->status, "%s failed: %s", what, p->msg) : 0;
    free(p);
    return rc;
}

/* A cnt slot: L + 1 int32 counts; slot `rank` of a receive block (rblock) holds what
 * source `rank` wrote, slot `rank` of the stage what goes to peer `rank`. */
static uint64_t cnt_len(const a2a_ctx *c) { return (uint64_t)(c->L + 1) * 4; }
static uint64_t cnt_slot(const a2a_ctx *c, int rank) { return c->kp.off_cnt + (uint64_t)rank * cnt_len(c); }

/* Writes our own cnt slot (zeros onto zeros: nothing runs yet) from stage to rblock. */
static int probe_write(a2a_ctx *c, int timeout_ms)
{
    const uint64_t off = cnt_slot(c, c->t.srank);
    return write_and_wait(c, &c->rblock_desc, off, off, cnt_len(c), timeout_ms,
                          "a loopback write of GPU memory");
}

/* GPU buffers: one write to every RDMA peer before any kernel runs (a2a_connect's last
 * all-gather follows, so every rank's first incoming writes have been taken by then).
 * On shm, the stand-in for GPUDirect RDMA, a target's first write from a peer opens the
 * peer's CUDA IPC handle and issues the first device copy; done while a receive kernel
 * spins on the same GPU, that set-up was suspected of waiting for the kernel (an H100
 * test under MPS saw its copies not finish). It also tells a rank that cannot reach a
 * peer's memory at connect, by name, instead of at the first dispatch's timeout. Zeros
 * onto zeros: our stage slot for q and q's receive slot for us are untouched until then. */
static int greet_peers(a2a_ctx *c, const te_mr_desc *desc, int timeout_ms)
{
    for (int q = 0; q < c->t.sworld; q++) {
        if (!a2a_is_rdma(&c->t, q)) continue;
        char what[96];
        snprintf(what, sizeof what, "a2a_connect: a first write into rank %d's GPU memory", q);
        int rc = write_and_wait(c, &desc[q], cnt_slot(c, q), cnt_slot(c, c->t.srank), cnt_len(c),
                                timeout_ms, what);
        if (rc) return rc;
    }
    return 0;
}

/* ------------------------------------------------------------------ buffers ---- */

/* Deregisters, waiting out operations still in flight; 0 if the memory may be freed. */
static int dereg(a2a_ctx *c, te_mr **mr)
{
    if (!*mr) return 0;
    const uint64_t deadline = tn_now_ms() + (c->kp.timeout_ns / 1000000u) + 1000u;
    int rc;
    while ((rc = te_mr_deregister(*mr)) == -EBUSY && tn_now_ms() < deadline) tn_sleep_us(1000);
    if (rc) {
        TN_LOGW("a2a: cannot deregister an RDMA buffer (%s): keeping its memory", te_last_error());
        return rc;
    }
    *mr = NULL;
    return 0;
}

static void free_buffers(a2a_ctx *c)
{
    if (dereg(c, &c->stage_mr) == 0) {
        if (c->stage_dev_alloc) tcu_dev_free(c->dev, c->stage_dev_alloc);
        if (c->stage_host) tcu_host_free_mapped(c->dev, c->stage_host);
    }
    if (dereg(c, &c->rblock_mr) == 0 && c->rblock_host) tcu_host_free_mapped(c->dev, c->rblock_host);
    c->stage_dev_alloc = c->stage_host = c->rblock_host = NULL;
    c->stage_dev = c->rblock_dev = 0;
    memset(&c->rblock_desc, 0, sizeof c->rblock_desc);
    c->rdma_kind = A2A_KIND_NONE;
}

static int setup_gpu(a2a_ctx *c, int timeout_ms)
{
    const size_t n = c->shared_bytes;
    int rc = a2a_mem_dev_alloc(c, n, &c->stage_dev_alloc, "RDMA stage");
    if (rc) return rc;
    c->stage_dev = (uint64_t)(uintptr_t)c->stage_dev_alloc;
    c->rblock_dev = c->base;
    rc = te_mr_register(c->cfg.engine, c->stage_dev_alloc, n, c->dev, TE_MR_LOCAL, &c->stage_mr);
    if (!rc)
        rc = te_mr_register(c->cfg.engine, (void *)(uintptr_t)c->base, n, c->dev, TE_MR_REMOTE_WRITE,
                            &c->rblock_mr);
    if (!rc) rc = te_mr_desc_get(c->rblock_mr, &c->rblock_desc);
    if (rc) return tn_err(rc, "registering GPU memory of device %d: %s", c->dev, te_last_error());
    c->rdma_kind = A2A_KIND_GPU;
    return probe_write(c, timeout_ms);
}

static int setup_host(a2a_ctx *c)
{
    const size_t n = c->shared_bytes;
    int rc = a2a_mem_host_alloc(c, n, &c->stage_host, &c->stage_dev, "RDMA stage");
    if (!rc) rc = a2a_mem_host_alloc(c, n, &c->rblock_host, &c->rblock_dev, "RDMA receive block");
    if (rc) return rc;
    rc = te_mr_register(c->cfg.engine, c->stage_host, n, TE_DEVICE_HOST, TE_MR_LOCAL, &c->stage_mr);
    if (!rc)
        rc = te_mr_register(c->cfg.engine, c->rblock_host, n, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE,
                            &c->rblock_mr);
    if (!rc) rc = te_mr_desc_get(c->rblock_mr, &c->rblock_desc);
    if (rc) return tn_err(rc, "a2a_connect: registering pinned host memory: %s", te_last_error());
    c->rdma_kind = A2A_KIND_HOST;
    return 0;
}

int a2a_rdma_prepare(a2a_ctx *c, int timeout_ms)
{
    if (c->t.n_rdma == 0) return 0;
    /* doorbells and arrival flags live in the engine's memory: kernels must see it */
    const char *wk = te_watcher_memory_kind(c->cfg.engine);
    if (!wk || strcmp(wk, "host") == 0)
        return tn_err(-EOPNOTSUPP, "a2a_connect: the engine's doorbells and arrival flags are in "
                                   "plain host memory (%s), which kernels cannot read: the engine "
                                   "was built or started without CUDA",
                      wk ? wk : "unknown");
    int rc;
    /* "auto" over a shared-memory provider (shm, sm2: one machine standing in for the
     * NICs) takes host buffers. Their CUDA IPC path moved the bytes on an H100, but the
     * RDMA suite with GPU buffers then timed out in its second case's dispatch recv
     * (docs/a2a-internode.md, "Memory"; cause not established), while host buffers pass
     * the whole suite there. rdma_buffers = GPU still asks for GPU buffers. */
    const char *prov = te_provider_name(c->cfg.engine);
    const bool shm_like = prov && (!strncmp(prov, "shm", 3) || !strncmp(prov, "sm2", 3));
    if (c->cfg.rdma_buffers == A2A_RDMA_AUTO && shm_like)
        TN_LOGI("a2a rank %d: RDMA buffers in pinned host memory: provider %s stands in for NICs "
                "on one machine, where GPU buffers are not established (ask rdma_buffers=gpu to try)",
                c->t.rank, prov);
    else if (c->cfg.rdma_buffers != A2A_RDMA_HOST) {
        rc = setup_gpu(c, timeout_ms);
        if (rc == 0) goto tables;
        char why[300];
        snprintf(why, sizeof why, "%s", te_last_error());
        free_buffers(c);
        if (c->cfg.rdma_buffers == A2A_RDMA_GPU)
            return tn_err(rc == -ETIMEDOUT ? rc : -EOPNOTSUPP,
                          "a2a_connect: rdma_buffers is GPU but the engine (provider %s) cannot move "
                          "GPU memory: %s", te_provider_name(c->cfg.engine), why);
        TN_LOGI("a2a rank %d: RDMA buffers in pinned host memory: the engine (provider %s) cannot "
                "move GPU memory: %s", c->t.rank, te_provider_name(c->cfg.engine), why);
    }
    rc = setup_host(c);
    if (rc) {
        free_buffers(c);
        return rc;
    }
tables:
    rc = a2a_mem_host_alloc(c, sizeof(int32_t) * A2A_PX_N * A2A_MAX_RANKS, (void **)&c->px_tx_host,
                            &c->px_tx_dev, "proxy lengths");
    if (!rc)
        rc = a2a_mem_dev_alloc(c, sizeof(uint64_t) * A2A_PX_N * A2A_MAX_RANKS, &c->px_flag_table,
                               "proxy flag table");
    if (rc) a2a_rdma_teardown(c);
    return rc;
}

/* -------------------------------------------------------------------- proxy ---- */

/* The proxy's report (an engine thread): the first one wins; the kernels stop waiting. */
static void on_px_error(void *arg, int err, const char *msg)
{
    a2a_ctx *c = arg;
    if (__atomic_exchange_n(&c->px_err_claimed, 1, __ATOMIC_ACQ_REL)) return;
    snprintf(c->px_msg, sizeof c->px_msg, "a2a rank %d: RDMA: %s", c->t.rank, msg ? msg : "error");
    __atomic_store_n(&c->px_err, err < 0 ? err : -EIO, __ATOMIC_RELEASE);
    __atomic_store_n(&c->host_words[1], 1u, __ATOMIC_RELEASE); /* the abort word */
}

int a2a_rdma_error(a2a_ctx *c)
{
    const int err = __atomic_load_n(&c->px_err, __ATOMIC_ACQUIRE);
    return err ? tn_err(err, "%s", c->px_msg) : 0;
}

/* ------------------------------------------------------------ proxy timing ---- */

_Static_assert((int)A2A_PHASE_DISPATCH == (int)A2A_PX_DSP && (int)A2A_PHASE_WEIGHTS == (int)A2A_PX_WGT &&
                   (int)A2A_PHASE_COMBINE == (int)A2A_PX_CMB && (int)A2A_PHASES == (int)A2A_PX_N,
               "public phase numbers are the proxy's");

int a2a_proxy_timing_get(const a2a_ctx *c, int phase, a2a_proxy_timing *out)
{
    if (!c || !out) return tn_err(-EINVAL, "a2a_proxy_timing_get: %s is NULL", c ? "out" : "context");
    if (phase < 0 || phase >= A2A_PHASES)
        return tn_err(-EINVAL, "a2a_proxy_timing_get: phase %d outside 0..%d", phase, A2A_PHASES - 1);
    if (!c->px)
        return tn_err(-ENOENT, "a2a_proxy_timing_get: rank %d has no RDMA proxy (no RDMA peer, or "
                      "not connected)", c->t.rank);
    return a2a_px_timing_get(c->px, phase, out); /* the same type (proxy/a2a_proxy.h) */
}

int a2a_proxy_timing_reset(a2a_ctx *c)
{
    if (!c) return tn_err(-EINVAL, "a2a_proxy_timing_reset: context is NULL");
    if (!c->px)
        return tn_err(-ENOENT, "a2a_proxy_timing_reset: rank %d has no RDMA proxy (no RDMA peer, "
                      "or not connected)", c->t.rank);
    return a2a_px_timing_reset(c->px);
}

_Static_assert(A2A_PX_MAX_RANKS == A2A_MAX_RANKS, "px_tx and px_flag rows are A2A_MAX_RANKS long");

int a2a_rdma_start(a2a_ctx *c, te_addr *addr, te_mr_desc *desc)
{
    if (c->rdma_kind == A2A_KIND_NONE) return 0;
    /* the proxy reads our own entry too: its NIC count is what the sources shard over */
    desc[c->t.srank] = c->rblock_desc;
    if (te_main_address(c->cfg.engine, &addr[c->t.srank]) != 0)
        memset(&addr[c->t.srank], 0, sizeof addr[c->t.srank]);
    a2a_px_config pc;
    memset(&pc, 0, sizeof pc);
    pc.engine = c->cfg.engine;
    pc.rank = c->t.srank;
    pc.world = c->t.sworld;
    pc.rdma_mask = c->t.rdma_mask;
    pc.stage = c->stage_mr;
    pc.peer_rblock = desc;
    pc.peer_addr = addr;
    pc.layout.off_cnt = c->kp.off_cnt;
    pc.layout.off_meta = c->kp.off_meta;
    pc.layout.off_rows = c->kp.off_rows;
    pc.layout.off_wgt = c->kp.off_wgt;
    pc.layout.off_part = c->kp.off_part;
    pc.layout.L = c->L;
    pc.layout.K = c->kp.K;
    pc.layout.H = c->kp.H;
    pc.layout.Tmax = c->kp.Tmax;
    pc.layout.row_bytes = c->kp.row_bytes;
    pc.layout.part_row_bytes = a2a_part_row_bytes(&c->kp); /* packed CMB rows */
    pc.imm_base = c->cfg.imm_base;
    pc.timeout_ms = (int)(c->kp.timeout_ns / 1000000u);
    pc.tx = c->px_tx_host;
    pc.on_error = on_px_error;
    pc.err_arg = c;
    pc.app_forwards_peer_events = c->cfg.app_forwards_peer_events != 0;
    int rc = a2a_px_create(&pc, &c->px);
    if (rc) return tn_err(rc, "a2a_connect: starting the RDMA proxy: %s", te_last_error());

    uint64_t tbl[A2A_PX_N][A2A_MAX_RANKS];
    memset(tbl, 0, sizeof tbl);
    for (int ph = 0; ph < A2A_PX_N; ph++) {
        c->kp.px_doorbell[ph] = (uint64_t *)(uintptr_t)a2a_px_doorbell_device_ptr(c->px, ph);
        if (!c->kp.px_doorbell[ph]) return tn_err(-EPROTO, "a2a_connect: the proxy has no doorbell");
        for (int q = 0; q < c->t.sworld; q++) {
            if (!a2a_is_rdma(&c->t, q)) continue;
            tbl[ph][q] = a2a_px_flag_device_ptr(c->px, ph, q);
            if (!tbl[ph][q]) return tn_err(-EPROTO, "a2a_connect: the proxy has no flag for rank %d", q);
        }
    }
    rc = tcu_copy_to_dev(c->dev, c->px_flag_table, tbl, sizeof tbl);
    if (rc) return tn_err(rc, "a2a_connect: proxy flag table: %s", te_last_error());
    c->kp.rdma_mask = c->t.rdma_mask;
    c->kp.stage = (char *)(uintptr_t)c->stage_dev;
    c->kp.rblock = (char *)(uintptr_t)c->rblock_dev;
    c->kp.px_tx = (int32_t *)(uintptr_t)c->px_tx_dev;
    c->kp.px_flag = (const uint64_t *const *)c->px_flag_table;
    if (c->rdma_kind == A2A_KIND_GPU && (rc = greet_peers(c, desc, pc.timeout_ms)) != 0) return rc;
    return a2a_trace_setup(c);
}

void a2a_rdma_teardown(a2a_ctx *c)
{
    if (c->px) {
        a2a_px_destroy(c->px); /* no write is posted and no report made after this */
        c->px = NULL;
    }
    free_buffers(c);
    a2a_trace_teardown(c);
    if (c->px_tx_host) tcu_host_free_mapped(c->dev, c->px_tx_host);
    if (c->px_flag_table) tcu_dev_free(c->dev, c->px_flag_table);
    c->px_tx_host = NULL;
    c->px_flag_table = NULL;
    c->px_tx_dev = 0;
    c->kp.rdma_mask = 0;
    c->kp.stage = c->kp.rblock = NULL;
    c->kp.px_tx = NULL;
    c->kp.px_flag = NULL;
    memset(c->kp.px_doorbell, 0, sizeof c->kp.px_doorbell);
}

void a2a_peer_event(struct te_engine *e, const struct te_addr *addr, int state)
{
    if (e && addr) a2a_px_peer_event(e, addr, state);
}
