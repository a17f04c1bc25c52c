/* Doorbell -> writes. Runs on the engine's watcher thread (te_watch_fn): check the epoch,
 * read and check every RDMA peer's length, then post the phase's writes from stage slot
 * q to peer q's rblock slot `rank`. Every length is checked before anything is posted, so
 * a bad length posts nothing for that doorbell. Writes complete on the engine's callback
 * thread (px_write_done). */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>

#include "core/clock.h"
#include "px_internal.h"

typedef struct px_span {
    uint64_t src, dst, len;
} px_span;

/* Largest length value of a phase (units: see a2a_proxy.h). */
static uint64_t phase_cap(const a2a_px *px, int phase)
{
    return phase == A2A_PX_WGT ? (uint64_t)px->lay.Tmax * px->lay.K : px->lay.Tmax;
}

static px_span span(const a2a_px *px, int region, uint64_t off, int q, uint64_t len)
{
    return (px_span){off + (uint64_t)q * px->slot[region], off + (uint64_t)px->rank * px->slot[region],
                     len};
}

/* The writes of (phase, peer q) for length value v (docs/a2a-internode.md, "Signals"). */
static uint32_t phase_spans(const a2a_px *px, int phase, int q, uint64_t v, px_span out[3])
{
    const a2a_px_layout *l = &px->lay;
    switch (phase) {
    case A2A_PX_DSP:
        out[0] = span(px, 0, l->off_cnt, q, px->slot[0]);
        out[1] = span(px, 1, l->off_meta, q, v * (l->K + 1) * 4);
        out[2] = span(px, 2, l->off_rows, q, v * l->row_bytes);
        return 3;
    case A2A_PX_WGT:
        out[0] = span(px, 3, l->off_wgt, q, v * 4);
        return 1;
    default:
        out[0] = span(px, 4, l->off_part, q, v * l->part_row_bytes); /* packed rows */
        return 1;
    }
}

static void px_write_done(void *arg, int status, const char *msg)
{
    px_wctx *w = arg;
    a2a_px *px = w->px;
    if (status) {
        atomic_fetch_add(&px->write_errors, 1);
        px_fail(px, status, "a2a proxy rank %d: %s write %u of %u to rank %d failed: %s (%s)",
                px->rank, px_phase_name[w->phase], w->part + 1u, a2a_px_writes(w->phase), w->peer,
                msg ? msg : "no message", te_strerror(status));
    }
    px_timing_completed(px, w->phase);
    /* Last touch of px: a2a_px_destroy frees it once no write is in flight. */
    atomic_fetch_sub_explicit(&px->inflight, 1, memory_order_release);
}

static void pause_after(unsigned tries)
{
    if (tries < 64) {
        sched_yield();
        return;
    }
    tn_sleep_us(50);
}

/* Posts one write; retries -EAGAIN (the group is full) until `deadline_ns`. */
static int post(a2a_px *px, int phase, int q, uint32_t part, const px_span *s, uint64_t deadline_ns)
{
    te_write_args a = {.src = px->stage,
                       .src_offset = s->src,
                       .len = s->len,
                       .dst = &px->rblock[q],
                       .dst_offset = s->dst,
                       .has_imm = true,
                       .imm = a2a_px_imm(px->imm_base, phase, px->rank),
                       .route = {TE_ROUTE_SHARDED, 0}};
    te_completion c = {.fn = px_write_done, .arg = &px->wctx[phase][q][part]};
    atomic_fetch_add(&px->inflight, 1);
    for (unsigned tries = 0;; tries++) {
        int r = te_write(px->e, &a, &c);
        if (r == 0) {
            atomic_fetch_add_explicit(&px->st[phase].writes, 1, memory_order_relaxed);
            atomic_fetch_add_explicit(&px->st[phase].bytes, s->len, memory_order_relaxed);
            return 0;
        }
        if (r != -EAGAIN || atomic_load(&px->closing)) {
            char why[PX_MSG_MAX / 2];
            snprintf(why, sizeof why, "%s", te_last_error());
            atomic_fetch_sub(&px->inflight, 1);
            px_fail(px, r, "a2a proxy rank %d: %s write %u of %u to rank %d rejected: %s (%s)",
                    px->rank, px_phase_name[phase], part + 1, a2a_px_writes(phase), q, why,
                    te_strerror(r));
            return r;
        }
        atomic_fetch_add_explicit(&px->eagain_retries, 1, memory_order_relaxed);
        if (tn_now_ns() > deadline_ns) {
            atomic_fetch_sub(&px->inflight, 1);
            px_fail(px, -ENOBUFS,
                    "a2a proxy rank %d: %s write %u of %u to rank %d: the engine stayed full "
                    "(-EAGAIN) for %d ms (te_config.max_queued_ops too small, or the NICs stalled?)",
                    px->rank, px_phase_name[phase], part + 1, a2a_px_writes(phase), q, px->timeout_ms);
            return -ENOBUFS;
        }
        pause_after(tries);
    }
}

bool px_on_doorbell(void *arg, uint64_t old_value, uint64_t v)
{
    (void)old_value; /* the watcher's last value; the proxy keeps its own (b->epoch) */
    const uint64_t t_seen = tn_now_ns();
    px_bell *b = arg;
    a2a_px *px = b->px;
    const int ph = b->phase;
    if (atomic_load(&px->closing)) return true;
    const uint64_t prev = b->epoch, want = prev + 1;
    b->epoch = v;
    if (atomic_load_explicit(&px->err, memory_order_acquire)) {
        atomic_fetch_add(&px->ignored, 1);
        return true;
    }
    /* Epochs are compared in 32 bits: kernels count iterations in a uint32. */
    if ((uint32_t)v != (uint32_t)want) {
        px_fail(px, -EPROTO,
                "a2a proxy rank %d: %s doorbell went from epoch %" PRIu64 " to %" PRIu64
                " (expected %" PRIu64 "): a ring was missed or the word was overwritten; "
                "nothing posted",
                px->rank, px_phase_name[ph], prev, v, want);
        return true;
    }
    /* The doorbell was read with acquire (the watcher), and the ringer made tx visible
     * before it (GPU: fence.sys; host: release store): tx is this epoch's. */
    int32_t len[A2A_PX_MAX_RANKS];
    const uint64_t cap = phase_cap(px, ph);
    for (int q = 0; q < px->world; q++) {
        if (!(px->rdma_mask >> q & 1)) continue;
        len[q] = __atomic_load_n(&px->tx[ph * A2A_PX_MAX_RANKS + q], __ATOMIC_RELAXED);
        if (len[q] < 0 || (uint64_t)len[q] > cap) {
            px_fail(px, -ERANGE,
                    "a2a proxy rank %d: %s length for rank %d at epoch %" PRIu64
                    " is %d, outside [0, %" PRIu64 "]; nothing posted for this doorbell",
                    px->rank, px_phase_name[ph], q, v, (int)len[q], cap);
            return true;
        }
    }
    const uint64_t deadline = tn_now_ns() + (uint64_t)px->timeout_ms * 1000000ull;
    px_tm_slot *tm = px_timing_begin(px, ph, t_seen);
    for (int q = 0; q < px->world; q++) {
        if (!(px->rdma_mask >> q & 1)) continue;
        px_span s[3];
        uint32_t n = phase_spans(px, ph, q, (uint64_t)len[q], s);
        for (uint32_t k = 0; k < n; k++) {
            if (post(px, ph, q, k, &s[k], deadline)) return true;
            if (tm && !tm->t_first) tm->t_first = tn_now_ns();
        }
    }
    px_timing_posted(px, ph, tm);
    atomic_fetch_add_explicit(&px->st[ph].doorbells, 1, memory_order_release); /* after its writes, bytes */
    return true;
}
