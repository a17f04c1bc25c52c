/* The proxy's life: configuration checks, arrival flags and doorbells, accessors, host
 * waits, destroy. What a doorbell does is px_post.c's. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "px_internal.h"

static const char *const region_name[5] = {"cnt", "meta", "rows", "wgt", "part"};

static void slot_strides(const a2a_px_layout *l, uint64_t s[5])
{
    s[0] = ((uint64_t)l->L + 1) * 4;
    s[1] = (uint64_t)l->Tmax * ((uint64_t)l->K + 1) * 4;
    s[2] = (uint64_t)l->Tmax * l->row_bytes;
    s[3] = (uint64_t)l->Tmax * l->K * 4;
    s[4] = (uint64_t)l->Tmax * l->H * 4;
}

static void region_offsets(const a2a_px_layout *l, uint64_t o[5])
{
    o[0] = l->off_cnt;
    o[1] = l->off_meta;
    o[2] = l->off_rows;
    o[3] = l->off_wgt;
    o[4] = l->off_part;
}

uint64_t a2a_px_layout_bytes(const a2a_px_layout *l, int world)
{
    if (!l || world <= 0) return 0;
    uint64_t s[5], o[5], end = 0;
    slot_strides(l, s);
    region_offsets(l, o);
    for (int k = 0; k < 5; k++)
        if (o[k] + s[k] * (uint64_t)world > end) end = o[k] + s[k] * (uint64_t)world;
    return end;
}

/* Shape, regions inside `bytes`, regions disjoint. 0 or -EINVAL with the reason. */
static int check_layout(const a2a_px_layout *l, int world, uint64_t stage_len)
{
    if (!l->L || !l->K || !l->H || !l->Tmax || !l->row_bytes)
        return tn_err(-EINVAL, "a2a_px_create: layout L=%u K=%u H=%u Tmax=%u row_bytes=%u: all "
                      "must be > 0", l->L, l->K, l->H, l->Tmax, l->row_bytes);
    /* packed part rows live inside the fp32-sized slot (its stride is Tmax*H*4) */
    if ((uint64_t)l->part_row_bytes > (uint64_t)l->H * 4)
        return tn_err(-EINVAL, "a2a_px_create: layout part_row_bytes=%u exceeds H*4 = %" PRIu64
                      " (the part slot's row stride)", l->part_row_bytes, (uint64_t)l->H * 4);
    uint64_t s[5], o[5];
    slot_strides(l, s);
    region_offsets(l, o);
    for (int a = 0; a < 5; a++) {
        uint64_t end_a = o[a] + s[a] * (uint64_t)world;
        if (end_a > stage_len)
            return tn_err(-EINVAL, "a2a_px_create: region %s [%" PRIu64 ", %" PRIu64 ") does not fit "
                          "the stage region (%" PRIu64 " bytes)", region_name[a], o[a], end_a, stage_len);
        for (int b = a + 1; b < 5; b++) {
            uint64_t end_b = o[b] + s[b] * (uint64_t)world;
            if (o[a] < end_b && o[b] < end_a)
                return tn_err(-EINVAL, "a2a_px_create: regions %s [%" PRIu64 ", %" PRIu64 ") and %s "
                              "[%" PRIu64 ", %" PRIu64 ") overlap", region_name[a], o[a], end_a,
                              region_name[b], o[b], end_b);
        }
    }
    return 0;
}

static int check_config(const a2a_px_config *c)
{
    if (!c->engine) return tn_err(-EINVAL, "a2a_px_create: engine is NULL");
    if (!c->stage) return tn_err(-EINVAL, "a2a_px_create: stage is NULL");
    if (!c->peer_rblock) return tn_err(-EINVAL, "a2a_px_create: peer_rblock is NULL");
    if (!c->tx) return tn_err(-EINVAL, "a2a_px_create: tx is NULL");
    if (c->world < 1 || c->world > A2A_PX_MAX_RANKS)
        return tn_err(-EINVAL, "a2a_px_create: world %d outside 1..%d", c->world, A2A_PX_MAX_RANKS);
    if (c->rank < 0 || c->rank >= c->world)
        return tn_err(-EINVAL, "a2a_px_create: rank %d outside 0..%d", c->rank, c->world - 1);
    if (c->rdma_mask >> c->rank & 1)
        return tn_err(-EINVAL, "a2a_px_create: rdma_mask 0x%" PRIx64 " has the bit of rank %d itself",
                      c->rdma_mask, c->rank);
    if (c->world < 64 && c->rdma_mask >> c->world)
        return tn_err(-EINVAL, "a2a_px_create: rdma_mask 0x%" PRIx64 " has bits past world %d",
                      c->rdma_mask, c->world);
    if (c->timeout_ms < 0)
        return tn_err(-EINVAL, "a2a_px_create: timeout_ms %d is negative", c->timeout_ms);
    if ((uint64_t)c->imm_base + A2A_PX_N * A2A_PX_MAX_RANKS > (1ull << 32))
        return tn_err(-EINVAL, "a2a_px_create: imm_base %u: immediates up to imm_base + %d must fit "
                      "32 bits", c->imm_base, A2A_PX_N * A2A_PX_MAX_RANKS - 1);
    int r = check_layout(&c->layout, c->world, te_mr_len(c->stage));
    if (r) return r;
    if (!c->rdma_mask) return 0;
    const te_mr_desc *own = &c->peer_rblock[c->rank];
    if (own->n_nics < 1 || own->n_nics > TE_MAX_NICS)
        return tn_err(-EINVAL, "a2a_px_create: peer_rblock[%d] (own rblock) has %u NICs: its NIC "
                      "count sets the expected immediates", c->rank, own->n_nics);
    uint64_t need = a2a_px_layout_bytes(&c->layout, c->world);
    for (int q = 0; q < c->world; q++) {
        if (!(c->rdma_mask >> q & 1)) continue;
        const te_mr_desc *d = &c->peer_rblock[q];
        if (d->n_nics != own->n_nics)
            return tn_err(-EINVAL, "a2a_px_create: rank %d's rblock has %u NICs, rank %d's %u: writes "
                          "are sharded over the same NICs on both sides", q, d->n_nics, c->rank,
                          own->n_nics);
        if (d->len < need)
            return tn_err(-EINVAL, "a2a_px_create: rank %d's rblock is %" PRIu64 " bytes, the layout "
                          "needs %" PRIu64, q, d->len, need);
    }
    return 0;
}

/* Everything create may have made; safe on a partly built proxy. */
static void px_free(a2a_px *px)
{
    for (int p = 0; p < A2A_PX_N; p++)
        for (int s = 0; s < A2A_PX_MAX_RANKS; s++) te_imm_flag_destroy(px->flag[p][s]);
    pthread_mutex_destroy(&px->err_lock);
    free(px);
}

int a2a_px_create(const a2a_px_config *cfg, a2a_px **out)
{
    tn_err_clear();
    if (!cfg || !out) return tn_err(-EINVAL, "a2a_px_create: %s is NULL", cfg ? "out" : "cfg");
    int r = check_config(cfg);
    if (r) return r;
    a2a_px *px = calloc(1, sizeof *px);
    if (!px) return tn_err(-ENOMEM, "a2a_px_create: out of memory");
    pthread_mutex_init(&px->err_lock, NULL);
    px->e = cfg->engine;
    px->rank = cfg->rank;
    px->world = cfg->world;
    px->rdma_mask = cfg->rdma_mask;
    px->stage = cfg->stage;
    px->lay = cfg->layout;
    if (!px->lay.part_row_bytes) px->lay.part_row_bytes = px->lay.H * 4; /* 0: fp32 stride */
    slot_strides(&px->lay, px->slot);
    px->imm_base = cfg->imm_base;
    px->timeout_ms = cfg->timeout_ms ? cfg->timeout_ms : A2A_PX_DEFAULT_TIMEOUT_MS;
    px->tx = cfg->tx;
    px->on_error = cfg->on_error;
    px->err_arg = cfg->err_arg;
    px->have_addr = cfg->peer_addr != NULL;
    for (int q = 0; q < px->world; q++) {
        if (!(px->rdma_mask >> q & 1) && q != px->rank) continue;
        px->rblock[q] = cfg->peer_rblock[q];
        if (px->have_addr) px->addr[q] = cfg->peer_addr[q];
    }
    px->nics = px->rdma_mask ? px->rblock[px->rank].n_nics : 0;
    px_timing_init(px);
    for (int p = 0; p < A2A_PX_N; p++)
        for (int q = 0; q < A2A_PX_MAX_RANKS; q++)
            for (int k = 0; k < 3; k++)
                px->wctx[p][q][k] = (px_wctx){px, (uint8_t)p, (uint8_t)k, (uint16_t)q};

    /* Flags before doorbells: nothing is posted before every flag exists here. */
    for (int p = 0; p < A2A_PX_N; p++)
        for (int s = 0; s < px->world; s++) {
            if (!(px->rdma_mask >> s & 1)) continue;
            r = te_imm_flag_create(px->e, a2a_px_imm(px->imm_base, p, s),
                                   a2a_px_expected_imms(p, px->nics), &px->flag[p][s]);
            if (r) goto fail;
        }
    r = px_peers_add(px, !cfg->app_forwards_peer_events);
    if (r) goto fail;
    for (int p = 0; p < A2A_PX_N; p++) {
        px->bell[p] = (px_bell){.px = px, .phase = p};
        r = te_watcher_alloc(px->e, px_on_doorbell, &px->bell[p], &px->bell[p].w);
        if (r) {
            atomic_store(&px->closing, true);
            for (int k = 0; k < p; k++) te_watcher_free(px->bell[k].w);
            px_peers_remove(px);
            goto fail;
        }
    }
    *out = px;
    return 0;
fail:;
    char why[PX_MSG_MAX];
    snprintf(why, sizeof why, "%s", te_last_error());
    px_free(px);
    return tn_err(r, "a2a_px_create: %s", why);
}

static bool bad_phase(int phase) { return phase < 0 || phase >= A2A_PX_N; }

uint64_t a2a_px_doorbell_device_ptr(const a2a_px *px, int phase)
{
    return px && !bad_phase(phase) ? te_watcher_device_ptr(px->bell[phase].w) : 0;
}

volatile uint64_t *a2a_px_doorbell_host_ptr(const a2a_px *px, int phase)
{
    return px && !bad_phase(phase) ? te_watcher_ptr(px->bell[phase].w) : NULL;
}

static te_imm_flag *flag_of(const a2a_px *px, int phase, int src)
{
    if (!px || bad_phase(phase) || src < 0 || src >= px->world) return NULL;
    return px->flag[phase][src];
}

uint64_t a2a_px_flag_device_ptr(const a2a_px *px, int phase, int src)
{
    te_imm_flag *f = flag_of(px, phase, src);
    return f ? te_imm_flag_device_ptr(f) : 0;
}

uint64_t a2a_px_flag_value(const a2a_px *px, int phase, int src)
{
    te_imm_flag *f = flag_of(px, phase, src);
    return f ? te_imm_flag_value(f) : 0;
}

/* Slice of a flag wait between looks at the proxy's error. */
#define WAIT_SLICE_MS 10

int a2a_px_flag_wait(a2a_px *px, int phase, int src, uint64_t epoch, int timeout_ms)
{
    tn_err_clear();
    te_imm_flag *f = flag_of(px, phase, src);
    if (!f)
        return tn_err(-EINVAL, "a2a_px_flag_wait: %s", !px ? "proxy is NULL"
                      : bad_phase(phase) ? "phase out of range" : "src is not an RDMA peer");
    uint64_t deadline = tn_deadline_ms(timeout_ms);
    for (;;) {
        if (te_imm_flag_value(f) >= epoch) return 0;
        int err = atomic_load_explicit(&px->err, memory_order_acquire);
        if (err)
            return tn_err(err, "a2a_px_flag_wait: %s from rank %d at epoch %" PRIu64 " (flag at %" PRIu64
                          "): the proxy failed: %s", px_phase_name[phase], src, epoch,
                          te_imm_flag_value(f), px->err_msg);
        uint64_t now = tn_now_ns();
        if (now >= deadline)
            return tn_err(-ETIMEDOUT, "a2a_px_flag_wait: %s from rank %d: epoch %" PRIu64 " not reached "
                          "in %d ms (flag at %" PRIu64 ")", px_phase_name[phase], src, epoch, timeout_ms,
                          te_imm_flag_value(f));
        uint64_t left_ms = (deadline - now + 999999) / 1000000;
        int r = te_imm_flag_wait(f, epoch, left_ms < WAIT_SLICE_MS ? (int)left_ms : WAIT_SLICE_MS);
        if (r == 0) return 0;
        if (r != -ETIMEDOUT) return r; /* -ESHUTDOWN, message set */
    }
}

int a2a_px_error(const a2a_px *px, char *msg, size_t cap)
{
    if (!px) return -EINVAL;
    int err = atomic_load_explicit(&((a2a_px *)px)->err, memory_order_acquire);
    if (msg && cap) {
        size_t n = err ? strnlen(px->err_msg, cap - 1) : 0;
        memcpy(msg, px->err_msg, n);
        msg[n] = '\0';
    }
    return err;
}

int a2a_px_stats_get(const a2a_px *cpx, a2a_px_stats *out)
{
    tn_err_clear();
    if (!cpx || !out) return tn_err(-EINVAL, "a2a_px_stats_get: %s is NULL", cpx ? "out" : "proxy");
    a2a_px *px = (a2a_px *)cpx; /* atomics are read through a non-const lvalue */
    memset(out, 0, sizeof *out);
    for (int p = 0; p < A2A_PX_N; p++) {
        out->doorbells[p] = atomic_load(&px->st[p].doorbells);
        out->writes[p] = atomic_load(&px->st[p].writes);
        out->bytes[p] = atomic_load(&px->st[p].bytes);
    }
    out->write_errors = atomic_load(&px->write_errors);
    out->eagain_retries = atomic_load(&px->eagain_retries);
    out->ignored_doorbells = atomic_load(&px->ignored);
    return 0;
}

void a2a_px_destroy(a2a_px *px)
{
    if (!px) return;
    atomic_store(&px->closing, true);
    /* After te_watcher_free no doorbell callback runs: nothing new is posted. */
    for (int p = 0; p < A2A_PX_N; p++) te_watcher_free(px->bell[p].w);
    px_peers_remove(px);
    /* Writes in flight hold &px->wctx: each completes exactly once (te.h), at the latest
     * at the engine's operation timeout or stop. */
    uint64_t t0 = tn_now_ns();
    while (atomic_load_explicit(&px->inflight, memory_order_acquire)) {
        if (tn_now_ns() - t0 > (uint64_t)A2A_PX_DRAIN_MS * 1000000ull) {
            TN_LOGE("a2a proxy rank %d: %" PRIu64 " writes still without completion after %d ms; "
                    "the proxy's memory is left allocated", px->rank, atomic_load(&px->inflight),
                    A2A_PX_DRAIN_MS);
            return;
        }
        tn_sleep_us(200);
    }
    px_free(px);
}
