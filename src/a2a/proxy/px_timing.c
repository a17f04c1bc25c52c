/* Host-side timing of the doorbells (a2a_px_timing_get). Per phase, each doorbell that
 * posts its writes takes a slot of a small ring (its index k modulo PX_TM_SLOTS) holding
 * when the watcher saw it and when its first and last te_write were accepted; the write
 * completion that brings the phase's completed count to (k+1) * writes-per-doorbell
 * stamps the slot's local-completion time. Whichever of the two sides finishes second
 * turns the slot into one sample of four durations in a window of the last
 * A2A_PX_TIMING_WINDOW samples. No lock, no allocation: the doorbell side is the
 * watcher thread, the completion side any thread that runs completions. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "px_internal.h"

/* A slot is free again once its sample is recorded (or it was never used). */
#define SLOT_FREE 3u

void px_timing_init(struct a2a_px *px)
{
    for (int p = 0; p < A2A_PX_N; p++) {
        px_phase_timing *t = &px->tm[p];
        t->per_bell = (uint64_t)__builtin_popcountll(px->rdma_mask) * a2a_px_writes(p);
        for (int s = 0; s < PX_TM_SLOTS; s++) {
            atomic_init(&t->slot[s].seq, UINT64_MAX);
            atomic_init(&t->slot[s].ready, SLOT_FREE);
        }
    }
}

/* The doorbell's absolute times under its epoch: doorbell k carries epoch k + 1 (the
 * proxy acts only on exactly the previous epoch + 1, from 1). A reader that finds the
 * tag changed while it copied retries (a2a_px_trace_get). */
static void trace(px_phase_timing *t, const px_tm_slot *s)
{
    const uint64_t epoch = atomic_load_explicit(&s->seq, memory_order_relaxed) + 1;
    px_trace_rec *r = &t->trace[epoch % PX_TRACE_DEPTH];
    atomic_store_explicit(&r->tag, 0, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    const uint64_t v[4] = {s->t_seen, s->t_first, s->t_last, s->t_done};
    for (int k = 0; k < 4; k++) atomic_store_explicit(&r->t[k], v[k], memory_order_relaxed);
    atomic_store_explicit(&r->tag, epoch, memory_order_release);
}

static void record(px_phase_timing *t, const px_tm_slot *s)
{
    trace(t, s);
    const uint64_t d[PX_TM_N] = {s->t_first - s->t_seen, s->t_last - s->t_first, s->t_done - s->t_last,
                                 s->t_done - s->t_seen};
    uint64_t i = atomic_fetch_add_explicit(&t->next, 1, memory_order_relaxed) % A2A_PX_TIMING_WINDOW;
    for (int k = 0; k < PX_TM_N; k++) atomic_store_explicit(&t->win[k][i], d[k], memory_order_relaxed);
    atomic_fetch_add_explicit(&t->recorded, 1, memory_order_release);
}

/* The second of the two sides records the sample, then frees the slot. */
static void finish(px_phase_timing *t, px_tm_slot *s)
{
    if (atomic_fetch_add_explicit(&s->ready, 1, memory_order_acq_rel) != 1) return;
    /* t_done can precede t_last: the completion that stamps it may run before the
     * watcher returns from the last te_write. Such a doorbell's write-to-completion part
     * is 0; the sample stays consistent (each part >= 0). */
    if (s->t_done < s->t_last) s->t_done = s->t_last;
    record(t, s);
    atomic_store_explicit(&s->ready, SLOT_FREE, memory_order_release);
}

px_tm_slot *px_timing_begin(struct a2a_px *px, int phase, uint64_t t_seen)
{
    px_phase_timing *t = &px->tm[phase];
    if (!t->per_bell) return NULL; /* no RDMA peer: no write to time */
    const uint64_t k = t->bells++;
    px_tm_slot *s = &t->slot[k % PX_TM_SLOTS];
    if (atomic_load_explicit(&s->ready, memory_order_acquire) != SLOT_FREE) {
        /* PX_TM_SLOTS doorbells of this phase still wait for completions: not timed */
        atomic_fetch_add_explicit(&t->dropped, 1, memory_order_relaxed);
        return NULL;
    }
    s->t_seen = t_seen;
    s->t_first = s->t_last = s->t_done = 0;
    atomic_store_explicit(&s->ready, 0, memory_order_relaxed);
    /* Publishes the fields above to the completion side, which matches on seq. */
    atomic_store_explicit(&s->seq, k, memory_order_release);
    return s;
}

void px_timing_posted(struct a2a_px *px, int phase, px_tm_slot *s)
{
    if (!s) return;
    s->t_last = tn_now_ns();
    finish(&px->tm[phase], s);
}

void px_timing_completed(struct a2a_px *px, int phase)
{
    px_phase_timing *t = &px->tm[phase];
    if (!t->per_bell) return;
    const uint64_t done = atomic_fetch_add_explicit(&t->completed, 1, memory_order_relaxed) + 1;
    if (done % t->per_bell) return; /* not a doorbell's last completion */
    const uint64_t k = done / t->per_bell - 1;
    px_tm_slot *s = &t->slot[k % PX_TM_SLOTS];
    if (atomic_load_explicit(&s->seq, memory_order_acquire) != k) return; /* not timed */
    s->t_done = tn_now_ns();
    finish(t, s);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest rank: the smallest value with at least q% of the n sorted values at or below. */
static uint64_t pct(const uint64_t *v, uint64_t n, unsigned q)
{
    uint64_t r = (n * q + 99) / 100;
    return v[r ? r - 1 : 0];
}

int a2a_px_timing_get(const a2a_px *cpx, int phase, a2a_px_timing *out)
{
    tn_err_clear();
    if (!cpx || !out) return tn_err(-EINVAL, "a2a_px_timing_get: %s is NULL", cpx ? "out" : "proxy");
    if (phase < 0 || phase >= A2A_PX_N)
        return tn_err(-EINVAL, "a2a_px_timing_get: phase %d outside 0..%d", phase, A2A_PX_N - 1);
    px_phase_timing *t = &((a2a_px *)cpx)->tm[phase]; /* atomics: non-const lvalue */
    memset(out, 0, sizeof *out);
    const uint64_t end = atomic_load_explicit(&t->recorded, memory_order_acquire);
    const uint64_t base = atomic_load_explicit(&t->base, memory_order_relaxed);
    out->count = end > base ? end - base : 0;
    out->dropped = atomic_load_explicit(&t->dropped, memory_order_relaxed);
    const uint64_t n = out->count < A2A_PX_TIMING_WINDOW ? out->count : A2A_PX_TIMING_WINDOW;
    out->window = n;
    if (!n) return 0;
    uint64_t v[A2A_PX_TIMING_WINDOW];
    a2a_px_span *span[PX_TM_N] = {&out->seen_first, &out->first_last, &out->last_done, &out->seen_done};
    for (int k = 0; k < PX_TM_N; k++) {
        for (uint64_t j = 0; j < n; j++)
            v[j] = atomic_load_explicit(&t->win[k][(end - 1 - j) % A2A_PX_TIMING_WINDOW],
                                        memory_order_relaxed);
        qsort(v, n, sizeof v[0], cmp_u64);
        *span[k] = (a2a_px_span){pct(v, n, 50), pct(v, n, 99), v[n - 1]};
    }
    return 0;
}

int a2a_px_timing_reset(a2a_px *px)
{
    tn_err_clear();
    if (!px) return tn_err(-EINVAL, "a2a_px_timing_reset: proxy is NULL");
    for (int p = 0; p < A2A_PX_N; p++) {
        px_phase_timing *t = &px->tm[p];
        atomic_store_explicit(&t->base, atomic_load_explicit(&t->recorded, memory_order_acquire),
                              memory_order_relaxed);
        atomic_store_explicit(&t->dropped, 0, memory_order_relaxed);
    }
    return 0;
}

int a2a_px_trace_get(const a2a_px *cpx, int phase, uint64_t epoch, uint64_t out[4])
{
    tn_err_clear();
    if (!cpx || !out) return tn_err(-EINVAL, "a2a_px_trace_get: %s is NULL", cpx ? "out" : "proxy");
    if (phase < 0 || phase >= A2A_PX_N)
        return tn_err(-EINVAL, "a2a_px_trace_get: phase %d outside 0..%d", phase, A2A_PX_N - 1);
    if (epoch == 0) return tn_err(-EINVAL, "a2a_px_trace_get: epochs start at 1");
    px_trace_rec *r = &((a2a_px *)cpx)->tm[phase].trace[epoch % PX_TRACE_DEPTH];
    /* seqlock-style: the tag before and after the copy must both be this epoch */
    for (int tries = 0; tries < 100; tries++) {
        if (atomic_load_explicit(&r->tag, memory_order_acquire) != epoch) break;
        for (int k = 0; k < 4; k++) out[k] = atomic_load_explicit(&r->t[k], memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&r->tag, memory_order_relaxed) == epoch) return 0;
    }
    return tn_err(-ENOENT, "a2a_px_trace_get: the %s doorbell of epoch %llu is not timed (not "
                  "rung yet, its writes not complete, or older than the last %d)",
                  px_phase_name[phase], (unsigned long long)epoch, PX_TRACE_DEPTH);
}
