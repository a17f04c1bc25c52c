/*
 * Per-iteration trace of the RDMA phases (a2a_phase_trace_get; docs/a2a-internode.md,
 * "Trace"): the kernels' stamps (a host-mapped ring, a2a_stamp_rec) joined with the
 * proxy's host times of the same epoch (a2a_px_trace_get), and the clock sync that maps
 * the GPU's %globaltimer onto CLOCK_MONOTONIC.
 *
 * Clock sync: a one-thread kernel spins on a host-mapped word; the host notes its clock
 * (t0), sets the word, waits for the kernel's timer reading and notes its clock again
 * (t1). The kernel reads its timer after it saw the word, so the reading lies in
 * [t0, t1] of host time: offset = reading - (t0 + t1) / 2, uncertain by (t1 - t0) / 2.
 * The narrowest of 16 rounds wins. A kernel that starts late only widens that round's
 * interval, never makes it wrong.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "a2a_internal.h"
#include "core/clock.h"
#include "core/log.h"
#include "proxy/a2a_proxy.h"

#define SYNC_ROUNDS 16
#define PROBE_LIMIT_NS 1000000000ull /* the probe kernel gives up after 1 s without go */

_Static_assert(A2A_TRACE_DEPTH == A2A_STAMP_DEPTH, "the public depth is the stamp ring's");

int a2a_trace_setup(a2a_ctx *c)
{
    int rc = a2a_mem_host_alloc(c, sizeof(a2a_stamp_rec) * A2A_STAMP_DEPTH, (void **)&c->stamp_host,
                                &c->stamp_dev, "trace stamps");
    if (!rc) rc = a2a_mem_host_alloc(c, 2 * sizeof(uint64_t), (void **)&c->probe_host, &c->probe_dev,
                                     "clock probe");
    if (rc) {
        a2a_trace_teardown(c);
        return rc;
    }
    memset(c->stamp_host, 0, sizeof(a2a_stamp_rec) * A2A_STAMP_DEPTH);
    c->kp.px_stamp = (a2a_stamp_rec *)(uintptr_t)c->stamp_dev;
    uint64_t err = 0;
    rc = a2a_clock_sync(c, &err);
    /* the trace is a measurement aid: a failed sync leaves its GPU times unmapped (0),
     * the all-to-all itself works */
    if (rc) TN_LOGW("a2a rank %d: GPU clock sync failed (%s): trace times of the kernels stay 0",
                    c->t.rank, te_last_error());
    else TN_LOGD("a2a rank %d: GPU clock synced, +/- %llu ns", c->t.rank, (unsigned long long)err);
    return 0;
}

void a2a_trace_teardown(a2a_ctx *c)
{
    if (c->stamp_host) tcu_host_free_mapped(c->dev, c->stamp_host);
    if (c->probe_host) tcu_host_free_mapped(c->dev, c->probe_host);
    c->stamp_host = NULL;
    c->probe_host = NULL;
    c->stamp_dev = c->probe_dev = 0;
    c->kp.px_stamp = NULL;
    c->clock_synced = 0;
}

/* One round: *off and *half (the interval's half width), or a negative errno. */
static int probe_round(a2a_ctx *c, cudaStream_t s, int64_t *off, uint64_t *half)
{
    volatile uint64_t *reading = &c->probe_host[0];
    volatile uint64_t *go = &c->probe_host[1];
    *reading = 0;
    *go = 0;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    int e = a2a_clock_probe_launch((const uint32_t *)(uintptr_t)(c->probe_dev + sizeof(uint64_t)),
                                   (uint64_t *)(uintptr_t)c->probe_dev, PROBE_LIMIT_NS, s);
    if (e) return a2a_rt_fail((cudaError_t)e, "a2a_clock_sync: probe launch");
    tn_sleep_us(100); /* most rounds: the kernel already spins when go is set */
    const uint64_t t0 = tn_now_ns();
    __atomic_store_n(go, 1, __ATOMIC_RELEASE);
    uint64_t g;
    while ((g = __atomic_load_n(reading, __ATOMIC_ACQUIRE)) == 0) {
        if (tn_now_ns() - t0 > 2 * PROBE_LIMIT_NS) break;
    }
    const uint64_t t1 = tn_now_ns();
    cudaError_t se = cudaStreamSynchronize(s);
    if (se != cudaSuccess) return a2a_rt_fail(se, "a2a_clock_sync: probe");
    if (g <= 1)
        return tn_err(-ETIMEDOUT, "a2a_clock_sync: the probe kernel did not run within %llu ms (GPU busy?)",
                      (unsigned long long)(PROBE_LIMIT_NS / 1000000u));
    *off = (int64_t)(g - (t0 / 2 + t1 / 2));
    *half = (t1 - t0) / 2;
    return 0;
}

int a2a_clock_sync(a2a_ctx *c, uint64_t *err_ns)
{
    if (!c) return tn_err(-EINVAL, "a2a_clock_sync: ctx is NULL");
    if (!c->probe_host)
        return tn_err(-ENOENT, "a2a_clock_sync: rank %d has no trace (no RDMA peer, or not connected)",
                      c->t.rank);
    int prev;
    int rc = a2a_enter_dev(c, &prev);
    if (rc) return rc;
    cudaStream_t s;
    cudaError_t e = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (e != cudaSuccess) {
        a2a_leave_dev(c, prev);
        return a2a_rt_fail(e, "a2a_clock_sync: stream");
    }
    int64_t best_off = 0;
    uint64_t best_half = UINT64_MAX;
    for (int r = 0; r < SYNC_ROUNDS && !rc; r++) {
        int64_t off = 0;
        uint64_t half = UINT64_MAX;
        rc = probe_round(c, s, &off, &half);
        if (!rc && half < best_half) {
            best_half = half;
            best_off = off;
        }
    }
    cudaStreamDestroy(s);
    a2a_leave_dev(c, prev);
    if (rc) return rc;
    c->clock_off = best_off;
    c->clock_err = best_half;
    c->clock_synced = 1;
    if (err_ns) *err_ns = best_half;
    return 0;
}

/* A kernel stamp in host time, or 0 (not stamped, or the clocks never synced). */
static uint64_t host_time(const a2a_ctx *c, uint64_t gpu_ns)
{
    if (!gpu_ns || !c->clock_synced) return 0;
    return (uint64_t)((int64_t)gpu_ns - c->clock_off);
}

int a2a_phase_trace_get(const a2a_ctx *c, int phase, uint64_t epoch, a2a_phase_trace *out)
{
    if (!c || !out) return tn_err(-EINVAL, "a2a_phase_trace_get: %s is NULL", c ? "out" : "ctx");
    if (phase < 0 || phase >= A2A_PHASES)
        return tn_err(-EINVAL, "a2a_phase_trace_get: phase %d outside 0..%d", phase, A2A_PHASES - 1);
    if (epoch == 0) return tn_err(-EINVAL, "a2a_phase_trace_get: epochs start at 1");
    if (!c->stamp_host)
        return tn_err(-ENOENT, "a2a_phase_trace_get: rank %d has no trace (no RDMA peer, or not "
                      "connected)", c->t.rank);
    memset(out, 0, sizeof *out);
    out->epoch = epoch;
    const volatile a2a_stamp_rec *r = &c->stamp_host[epoch % A2A_STAMP_DEPTH];
    bool any = false;
    if (r->bell_ep[phase] == epoch) {
        out->bell_ns = host_time(c, r->bell_t[phase]);
        any = true;
    }
    for (int q = 0; q < c->t.sworld && q < A2A_MAX_RANKS; q++) {
        if (r->seen_ep[phase][q] != epoch) continue;
        out->flag_ns[q] = host_time(c, r->seen_t[phase][q]);
        any = true;
    }
    uint64_t t[4];
    if (c->px && a2a_px_trace_get(c->px, phase, epoch, t) == 0) {
        out->seen_ns = t[0];
        out->first_ns = t[1];
        out->last_ns = t[2];
        out->done_ns = t[3];
        any = true;
    }
    if (!any)
        return tn_err(-ENOENT, "a2a_phase_trace_get: nothing of epoch %llu is recorded (not run yet, "
                      "or older than the last %d)", (unsigned long long)epoch, A2A_TRACE_DEPTH);
    return 0;
}

uint64_t a2a_trace_newest_epoch(const a2a_ctx *c)
{
    if (!c || !c->stamp_host) return 0;
    uint64_t newest = 0;
    for (int k = 0; k < A2A_STAMP_DEPTH; k++) {
        const uint64_t e = ((const volatile a2a_stamp_rec *)&c->stamp_host[k])->bell_ep[A2A_PX_DSP];
        if (e > newest) newest = e;
    }
    return newest;
}
