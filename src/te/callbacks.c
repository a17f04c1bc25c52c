/* The engine's callback thread: user callbacks run here, never on a worker, so a slow
 * callback (Python holding the GIL, say) cannot stall posting or completion draining.
 * Workers hand over events through a lock-free queue. Operations that complete into a
 * te_counter skip this thread entirely. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "te/engine_internal.h"

enum cb_kind { CB_DONE = 1, CB_IMM, CB_REACHED, CB_RECV, CB_FENCE, CB_PEER };

/* Shared by a fence's waiter and its event; the last of the two frees it, so a waiter
 * that times out leaves nothing dangling. */
struct fence {
    _Atomic int passed;
    _Atomic int refs;
};

static void fence_put(struct fence *f)
{
    if (atomic_fetch_sub(&f->refs, 1) == 1) free(f);
}

struct eng_cb_event {
    mpsc_node qnode;
    int kind;
    int status;
    te_done_fn fn;
    void *arg;
    uint32_t imm;
    uint64_t gen;
    te_recv_pool *pool;
    struct fence *fence;
    size_t len;
    char msg[192];
    uint8_t data[]; /* CB_RECV payload copy */
};

static void push(te_engine *e, eng_cb_event *ev)
{
    mpsc_push(&e->cbq, &ev->qnode);
    tn_notify_wake(&e->cb_wake);
}

static eng_cb_event *alloc_event(size_t extra)
{
    eng_cb_event *ev = calloc(1, sizeof *ev + extra);
    if (!ev) TN_LOGE("callback event allocation failed: a completion is lost");
    return ev;
}

void cb_post_done(te_engine *e, te_done_fn fn, void *arg, int status, const char *msg)
{
    eng_cb_event *ev = alloc_event(0);
    if (!ev) return;
    ev->kind = CB_DONE;
    ev->fn = fn;
    ev->arg = arg;
    ev->status = status;
    if (msg) snprintf(ev->msg, sizeof ev->msg, "%s", msg);
    push(e, ev);
}

void cb_post_imm(te_engine *e, uint32_t imm)
{
    eng_cb_event *ev = alloc_event(0);
    if (!ev) return;
    ev->kind = CB_IMM;
    ev->imm = imm;
    push(e, ev);
}

void cb_post_reached(te_engine *e, uint32_t imm, uint64_t gen)
{
    eng_cb_event *ev = alloc_event(0);
    if (!ev) return;
    ev->kind = CB_REACHED;
    ev->imm = imm;
    ev->gen = gen;
    push(e, ev);
}

void cb_post_recv(te_engine *e, te_recv_pool *p, const void *data, size_t len, int status,
                  const char *msg)
{
    eng_cb_event *ev = alloc_event(status ? 0 : len);
    if (!ev) return;
    ev->kind = CB_RECV;
    ev->pool = p;
    ev->status = status;
    ev->len = len;
    if (!status && len) memcpy(ev->data, data, len);
    if (msg) snprintf(ev->msg, sizeof ev->msg, "%s", msg);
    push(e, ev);
}

void cb_post_peer(te_engine *e, const te_addr *addr, int state)
{
    eng_cb_event *ev = alloc_event(sizeof *addr);
    if (!ev) return;
    ev->kind = CB_PEER;
    ev->status = state;
    memcpy(ev->data, addr, sizeof *addr);
    push(e, ev);
}

static void handle(te_engine *e, eng_cb_event *ev)
{
    switch (ev->kind) {
    case CB_DONE:
        ev->fn(ev->arg, ev->status, ev->status ? ev->msg : NULL);
        break;
    case CB_IMM:
        imm_deliver_plain(e, ev->imm);
        break;
    case CB_REACHED:
        imm_handle_reached(e, ev->imm, ev->gen);
        break;
    case CB_RECV: {
        te_recv_pool *p = ev->pool;
        if (atomic_load(&p->closing)) break;
        if (ev->status == 0) {
            if (p->on_recv) p->on_recv(p->arg, ev->data, ev->len);
        } else if (p->on_error) {
            p->on_error(p->arg, ev->status, ev->msg);
        }
        break;
    }
    case CB_PEER:
        peers_deliver(e, (const te_addr *)(const void *)ev->data, ev->status);
        break;
    case CB_FENCE:
        atomic_store(&ev->fence->passed, 1);
        tn_notify_wake(&e->cb_fence);
        fence_put(ev->fence);
        break;
    }
}

static void *cb_main(void *arg)
{
    te_engine *e = arg;
    for (int idle = 0;;) {
        mpsc_node *n = mpsc_pop(&e->cbq);
        if (n) {
            eng_cb_event *ev = (eng_cb_event *)n;
            handle(e, ev);
            free(ev);
            idle = 0;
            continue;
        }
        if (atomic_load(&e->cb_stop) && mpsc_empty(&e->cbq)) break;
        if (++idle < 64) continue;
        uint32_t t = tn_notify_prepare(&e->cb_wake);
        if (!mpsc_empty(&e->cbq) || atomic_load(&e->cb_stop)) {
            tn_notify_cancel(&e->cb_wake);
            continue;
        }
        tn_notify_wait(&e->cb_wake, t, 5000000ull);
    }
    return NULL;
}

int callbacks_start(te_engine *e)
{
    mpsc_init(&e->cbq);
    tn_notify_init(&e->cb_wake);
    tn_notify_init(&e->cb_fence);
    atomic_init(&e->cb_stop, false);
    int r = pthread_create(&e->cb_thread, NULL, cb_main, e);
    if (r) return tn_err(-r, "cannot start the callback thread");
    pthread_setname_np(e->cb_thread, "tendril-cb");
    e->cb_started = true;
    return 0;
}

void callbacks_stop(te_engine *e)
{
    if (!e->cb_started) return;
    atomic_store(&e->cb_stop, true);
    tn_notify_wake(&e->cb_wake);
    pthread_join(e->cb_thread, NULL);
    e->cb_started = false;
}

int cb_fence(te_engine *e, int timeout_ms)
{
    if (!e->cb_started) return 0;
    struct fence *f = calloc(1, sizeof *f);
    eng_cb_event *ev = alloc_event(0);
    if (!f || !ev) {
        free(f);
        free(ev);
        return tn_err(-ENOMEM, "out of memory");
    }
    atomic_init(&f->refs, 2);
    ev->kind = CB_FENCE;
    ev->fence = f;
    push(e, ev);
    uint64_t deadline = tn_deadline_ms(timeout_ms);
    int ret = 0;
    while (!atomic_load(&f->passed)) {
        uint32_t t = tn_notify_prepare(&e->cb_fence);
        if (atomic_load(&f->passed)) {
            tn_notify_cancel(&e->cb_fence);
            break;
        }
        uint64_t now = tn_now_ns();
        if (now >= deadline) {
            tn_notify_cancel(&e->cb_fence);
            ret = tn_err(-ETIMEDOUT, "callback thread still busy after %d ms (a callback is blocking?)",
                         timeout_ms);
            break;
        }
        tn_notify_wait(&e->cb_fence, t, 1000000ull);
    }
    fence_put(f);
    return ret;
}
