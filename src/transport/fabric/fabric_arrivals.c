/* Arrivals held back until this process's device copies have finished.
 *
 * shm moves a write into device memory by CUDA IPC: the target maps the source and copies
 * with cudaMemcpy in its own progress call, on the polling thread's legacy stream, and
 * reports the write done when that call returns. A device-to-device cudaMemcpy returns
 * before the copy ends (libfabric 2.1 hmem_cuda.c does not wait), so an immediate would
 * announce bytes a GPU reader does not see yet (measured on an H100: the all-to-all's
 * recv kernel read the counts of the previous iteration).
 *
 * Each poll that read arrivals records an event on the legacy stream behind the copies
 * that poll issued; its arrivals are handed over, in order, once the event has completed.
 * Nothing here waits: a copy that cannot run only keeps its arrivals back, while the
 * NIC's other completions flow, and whoever waits for those arrivals times out with its
 * own error (letting an arrival go ahead of its bytes instead hands a reader stale
 * data). A warning says why once a batch has been held for a second. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "transport/fabric/fabric_internal.h"

#define HELD_MAX 1024u  /* arrivals held at most; a full ring stops reading the CQ */
#define MARKS_MAX 64u   /* polls with arrivals in flight at most (one event each) */
#define SLOW_NS 1000000000ull

typedef struct {
    int kind;
    void *ctx;
    size_t len;
    uint32_t imm;
} held_ev;

typedef struct {
    void *event;      /* tcu mark, reused; NULL until first needed */
    bool pending;     /* recorded and not yet seen complete */
    unsigned end;     /* ring position after this poll's last arrival */
    uint64_t since;   /* when recorded */
} held_mark;

struct held_arrivals {
    held_ev ev[HELD_MAX];
    unsigned head, tail;          /* arrivals: monotonic positions, tail - head held */
    held_mark marks[MARKS_MAX];
    unsigned mhead, mtail;        /* marks: same */
    char who[96];                 /* "provider NIC name" for messages */
    bool warned_slow, warned_err;
};

int held_open(const char *provider, const char *nic, held_arrivals **out)
{
    held_arrivals *h = calloc(1, sizeof *h);
    if (!h) return tn_err(-ENOMEM, "out of memory (held arrivals)");
    snprintf(h->who, sizeof h->who, "%s NIC %s", provider, nic);
    *out = h;
    return 0;
}

void held_close(held_arrivals *h)
{
    if (!h) return;
    for (unsigned k = 0; k < MARKS_MAX; k++) tcu_mark_free(h->marks[k].event);
    free(h);
}

unsigned held_count(const held_arrivals *h) { return h ? h->tail - h->head : 0; }

int held_room(const held_arrivals *h)
{
    if (h->mtail - h->mhead == MARKS_MAX) return 0;
    return (int)(HELD_MAX - (h->tail - h->head));
}

/* Is the oldest mark's work done? Warns once about a batch held long or a failed query
 * (which releases: a broken CUDA context will not complete anything later either). */
static bool mark_done(held_arrivals *h, held_mark *m)
{
    if (!m->pending) return true;
    int r = tcu_mark_done(m->event);
    if (r == 0) {
        uint64_t held = tn_now_ns() - m->since;
        if (held >= SLOW_NS && !h->warned_slow) {
            h->warned_slow = true;
            TN_LOGW("%s: incoming writes held for %llu ms: this process's device copies of them "
                    "(shm's CUDA IPC cudaMemcpy on the legacy stream) have not finished; a kernel "
                    "on a blocking stream, or kernels filling every SM, keep them from running",
                    h->who, (unsigned long long)(held / 1000000u));
        }
        return false;
    }
    if (r < 0 && !h->warned_err) {
        h->warned_err = true;
        TN_LOGW("%s: cannot tell whether device copies finished (%s): immediates may precede "
                "their bytes", h->who, te_last_error());
    }
    m->pending = false;
    return true;
}

int held_release(held_arrivals *h, tp_event *ev, int max)
{
    int got = 0;
    while (h->mhead != h->mtail && got < max) {
        held_mark *m = &h->marks[h->mhead % MARKS_MAX];
        if (!mark_done(h, m)) break;
        while (h->head != m->end && got < max) {
            const held_ev *x = &h->ev[h->head++ % HELD_MAX];
            tp_event *o = &ev[got++];
            o->kind = x->kind;
            o->status = 0;
            o->ctx = x->ctx;
            o->len = x->len;
            o->imm = x->imm;
            o->msg[0] = '\0';
        }
        if (h->head == m->end) h->mhead++;
    }
    return got;
}

int held_take(held_arrivals *h, tp_event *ev, int got)
{
    int kept = 0;
    unsigned taken = 0;
    for (int k = 0; k < got; k++) {
        tp_event *x = &ev[k];
        bool arrival = x->status == 0 && (x->kind == TP_EV_IMM || x->kind == TP_EV_RECV);
        if (!arrival) { /* completions and failures carry no bytes of ours: at once */
            if (kept != k) ev[kept] = *x;
            kept++;
            continue;
        }
        h->ev[h->tail++ % HELD_MAX] = (held_ev){x->kind, x->ctx, x->len, x->imm};
        taken++;
    }
    if (!taken) return kept;
    /* held_room() left a mark free and room for every entry read. */
    held_mark *m = &h->marks[h->mtail++ % MARKS_MAX];
    m->end = h->tail;
    m->since = tn_now_ns();
    int r = tcu_mark_legacy_stream(&m->event);
    m->pending = r == 0;
    if (r < 0 && !h->warned_err) {
        h->warned_err = true;
        TN_LOGW("%s: cannot mark this process's device copies (%s): immediates may precede "
                "their bytes", h->who, te_last_error());
    }
    /* Hand over at once what is ready already (always so without a CUDA context). */
    return kept + held_release(h, ev + kept, got - kept);
}
