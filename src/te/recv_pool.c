/* Persistent receive buffers for control messages (the "rotating pool"). A received
 * message is copied out and its buffer re-posted by the worker at once, before the
 * user's callback runs, so the window in which a sender finds no posted buffer is as
 * short as the worker loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "te/engine_internal.h"

static void *slot_ctx(eng_recv_slot *s) { return (void *)((uintptr_t)s | CTX_RECV); }

static void post_slot(eng_group *g, eng_recv_slot *s)
{
    te_recv_pool *p = s->pool;
    eng_nic *n = &g->nic[0];
    int r = n->ops->post_recv(n->tp, s->buf, p->msg_size, p->mr.desc, slot_ctx(s));
    if (r) {
        TN_LOGW("receive pool: posting a buffer failed (%s); the pool has one buffer less",
                r == -EAGAIN ? "receive queue full" : te_last_error());
        return;
    }
    s->posted = true;
    atomic_fetch_add(&p->posted, 1);
}

void recv_pool_worker_post(eng_group *g, te_recv_pool *p)
{
    for (uint32_t k = 0; k < p->count; k++) post_slot(g, &p->slots[k]);
}

void recv_pool_worker_cancel(eng_group *g, te_recv_pool *p)
{
    atomic_store(&p->closing, true);
    eng_nic *n = &g->nic[0];
    for (uint32_t k = 0; k < p->count; k++)
        if (p->slots[k].posted && n->ops->cancel_recv(n->tp, slot_ctx(&p->slots[k])))
            TN_LOGD("receive pool: cancel failed: %s", te_last_error());
}

void recv_pool_on_event(eng_group *g, eng_nic *n, const tp_event *ev)
{
    eng_recv_slot *s = (eng_recv_slot *)((uintptr_t)ev->ctx & ~(uintptr_t)CTX_MASK);
    te_recv_pool *p = s->pool;
    s->posted = false;
    if (atomic_load(&p->closing)) {
        /* Cancelled, or arrived while closing. `closing` is set on this thread, so it
         * cannot change under us; the decrement is our last access: the destroying
         * thread frees the pool once it sees zero. */
        atomic_fetch_sub(&p->posted, 1);
        return;
    }
    atomic_fetch_sub(&p->posted, 1);
    if (ev->status) {
        STAT_ADD(n->st_errors, 1);
        cb_post_recv(g->e, p, NULL, 0, ev->status, ev->msg);
    } else {
        STAT_ADD(n->st_recv_ops, 1);
        STAT_ADD(n->st_recv_bytes, ev->len);
        cb_post_recv(g->e, p, s->buf, ev->len, 0, NULL); /* copies the payload */
    }
    post_slot(g, s);
}

int te_recv_pool_create(te_engine *e, size_t msg_size, uint32_t count, te_recv_fn on_recv,
                        te_done_fn on_error, void *arg, te_recv_pool **out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_recv_pool_create: %s is NULL", e ? "out" : "engine");
    if (!on_recv) return tn_err(-EINVAL, "te_recv_pool_create: on_recv is NULL");
    if (msg_size == 0 || count == 0)
        return tn_err(-EINVAL, "te_recv_pool_create: msg_size and count must be > 0");
    if (msg_size > (1u << 30) || count > 65536 || msg_size * count > (1ull << 32))
        return tn_err(-EINVAL, "te_recv_pool_create: %u buffers of %zu bytes is too much", count, msg_size);
    int r = engine_enter(e);
    if (r) return r;
    eng_group *g = e->groups[0];
    te_recv_pool *p = calloc(1, sizeof *p);
    uint8_t *mem = NULL;
    eng_recv_slot *slots = calloc(count, sizeof *slots);
    size_t stride = (msg_size + 63) & ~(size_t)63;
    if (p && slots) mem = aligned_alloc(64, stride * count);
    if (!p || !slots || !mem) {
        free(p);
        free(slots);
        free(mem);
        engine_leave(e);
        return tn_err(-ENOMEM, "te_recv_pool_create: out of memory");
    }
    p->e = e;
    p->msg_size = msg_size;
    p->count = count;
    p->on_recv = on_recv;
    p->on_error = on_error;
    p->arg = arg;
    p->mem = mem;
    p->slots = slots;
    atomic_init(&p->posted, 0);
    atomic_init(&p->closing, false);
    for (uint32_t k = 0; k < count; k++) {
        slots[k].pool = p;
        slots[k].buf = mem + (size_t)k * stride;
    }
    eng_nic *n = &g->nic[0];
    r = n->ops->mr_reg(n->tp, mem, stride * count, TE_DEVICE_HOST, false, &p->mr);
    if (r) {
        free(p);
        free(slots);
        free(mem);
        engine_leave(e);
        return r;
    }
    pthread_mutex_lock(&e->lists_lock);
    p->next = e->pools;
    e->pools = p;
    pthread_mutex_unlock(&e->lists_lock);
    r = worker_control(g, CTL_POOL_POST, p, 10000);
    engine_leave(e);
    if (r) return r; /* the pool stays in the engine list and is freed with it */
    *out = p;
    return 0;
}

static void pool_free(te_engine *e, te_recv_pool *p, bool dereg)
{
    if (dereg) e->groups[0]->nic[0].ops->mr_dereg(e->groups[0]->nic[0].tp, &p->mr);
    free(p->mem);
    free(p->slots);
    free(p);
}

int te_recv_pool_destroy(te_recv_pool *p)
{
    tn_err_clear();
    if (!p) return tn_err(-EINVAL, "te_recv_pool_destroy: pool is NULL");
    te_engine *e = p->e;
    if (engine_on_callback_thread(e))
        return tn_err(-EDEADLK, "te_recv_pool_destroy: called from an engine callback (it must "
                                "wait until callbacks of the pool are over); call it from another thread");
    if (engine_enter(e)) return 0; /* stopped: the engine frees it with everything else */
    eng_group *g = e->groups[0];
    int r = worker_control(g, CTL_POOL_CANCEL, p, 5000);
    uint64_t deadline = tn_deadline_ms(2000);
    while (!r && atomic_load(&p->posted) > 0 && tn_now_ns() < deadline) {
        tn_sleep_us(200);
    }
    bool drained = !r && atomic_load(&p->posted) == 0;
    cb_fence(e, 5000); /* no callback of this pool runs after we return */
    engine_leave(e);
    if (!drained) {
        /* The provider did not confirm the cancellations: its buffers may still be
         * written, so they stay allocated until the engine is destroyed. */
        TN_LOGW("receive pool: %u buffers still posted; released at engine destroy",
                atomic_load(&p->posted));
        return 0;
    }
    pthread_mutex_lock(&e->lists_lock);
    te_recv_pool **pp = &e->pools;
    while (*pp && *pp != p) pp = &(*pp)->next;
    if (*pp) *pp = p->next;
    pthread_mutex_unlock(&e->lists_lock);
    pool_free(e, p, true);
    return 0;
}

void recv_pool_free_all(te_engine *e)
{
    te_recv_pool *p = e->pools;
    while (p) {
        te_recv_pool *nx = p->next;
        pool_free(e, p, false);
        p = nx;
    }
    e->pools = NULL;
}

void recv_pool_close_mrs(te_engine *e)
{
    for (te_recv_pool *p = e->pools; p; p = p->next)
        e->groups[0]->nic[0].ops->mr_dereg(e->groups[0]->nic[0].tp, &p->mr);
}
