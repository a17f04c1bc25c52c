/* Progress of one group: taking submitted operations off a lock-free queue, posting
 * their work requests, draining completions, enforcing deadlines. All of it happens in a
 * *progress step* run under the group's progress lock by whichever thread gets it: the
 * group's worker thread, a submitter that finds the lock free (it posts its own operation
 * at once, no hand-off to another thread), or a thread waiting for a completion (it
 * polls the completion queue itself instead of sleeping until the worker wakes it). The
 * worker backs off while waiting threads drive, and takes over when they stop.
 *
 * Posting is round-robin over the operations that still have work requests to post,
 * with a small budget each per round, so a 10 000-page transfer never holds back an
 * immediate or a small write queued behind it (no head-of-line blocking). Work requests
 * of one round go out with FI_MORE except the last, so providers can batch doorbells. */
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "te/engine_internal.h"

#define SUBMIT_BATCH 64      /* operations taken off the queue per loop iteration */
#define POST_BUDGET 16       /* work requests per operation per round */
#define POLL_BATCH 64        /* completions drained per NIC per iteration */
#define SUBMIT_POLL_EVERY 4  /* a submitter's step polls the NICs once in this many */
#define IDLE_SPINS 2000      /* empty iterations before the worker starts to sleep */
#define SLEEP_MIN_NS 20000ull
#define SLEEP_MAX_NS 1000000ull
#define STOP_DRAIN_NS 1000000000ull /* posted work may finish this long at stop */
#define ACTIVE_WINDOW_NS 2000000ull /* keep polling this long after the last progress */
#define STALL_NS 300000000ull       /* an operation this old makes its peer worth a check */
#define STALL_CHECK_NS 50000000ull  /* how often stalled operations are looked at */
#define BACKOFF_MIN_NS 50000ull  /* a worker that saw waiters drive sleeps this long, then looks */
#define BACKOFF_MAX_NS 200000ull /* again, doubling while they keep driving */

static void after_caller_step(eng_group *g, int r);

/* ------------------------------------------------------------- op lifecycle --- */

void op_free(eng_group *g, eng_op *op)
{
    if (op->src) atomic_fetch_sub(&op->src->inflight, 1);
    switch (op->kind) {
    case OP_PAGED:
        if (op->u.p.sp) te_pages_release(op->u.p.sp);
        if (op->u.p.dp) te_pages_release(op->u.p.dp);
        break;
    case OP_SCATTER:
        if (!op->u.s.pg) free(op->u.s.peers);
        free(op->u.s.t);
        break;
    case OP_BARRIER:
        free(op->u.b.peers);
        free(op->u.b.dsts);
        break;
    case OP_SEND:
        free(op->u.send.buf);
        break;
    default:
        break;
    }
    op_cache_put(g, op);
}

static void inflight_add(eng_group *g, eng_op *op)
{
    op->prev = NULL;
    op->next = g->inflight_head;
    if (g->inflight_head) g->inflight_head->prev = op;
    g->inflight_head = op;
}

static void inflight_del(eng_group *g, eng_op *op)
{
    if (op->prev) op->prev->next = op->next;
    else g->inflight_head = op->next;
    if (op->next) op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

/* Applies the completions a step has gathered (engine_internal.h, in_step). Runs before
 * the step ends, so a waiter that sees its count also sees every completion the step
 * made before it, as when each was applied at once. */
static void bump_flush(eng_group *g)
{
    /* the source regions first: a region is free before its user hears of completion */
    if (g->unref_mr) atomic_fetch_sub(&g->unref_mr->inflight, g->unref_n);
    g->unref_mr = NULL;
    g->unref_n = 0;
    /* then the operations' slots, right before their count, as when each completion was
     * applied alone: a caller whose wait saw the count finds the slots free */
    if (g->unqueued) atomic_fetch_sub_explicit(&g->queued, g->unqueued, memory_order_release);
    g->unqueued = 0;
    if (g->bump_c) counter_bump_n(g->bump_c, g->bump_n, g->bump_err);
    g->bump_c = NULL;
    g->bump_n = g->bump_err = 0;
}

/* Delivers the user's completion once: inside a step, a counted completion is gathered
 * for bump_flush (consecutive completions on one counter, the common case of a window
 * of writes, cost one bump); a callback's slot is released at once (its callback may
 * submit again), and outside a step (stop) everything is applied at once. */
static void op_complete_user(eng_group *g, eng_op *op)
{
    if (op->finished) return;
    op->finished = true;
    te_completion *c = &op->comp;
    if (op->status) TN_LOGD("op %p failed: %s", (void *)op, op->msg);
    if (!g->in_step || !c->counter || c->fn) {
        atomic_fetch_sub_explicit(&g->queued, 1, memory_order_release);
        if (c->counter) counter_bump(c->counter, op->status != 0);
    } else {
        /* Flush another counter's run first: this operation's slot is released with its
         * own count (bump_flush), not a step earlier, so a submitter sees no more than
         * max_queued_ops submitted and not counted (but for the instant between the two
         * updates, as when each completion was applied alone). */
        if (g->bump_c != c->counter) {
            bump_flush(g);
            g->bump_c = c->counter;
        }
        g->unqueued++;
        g->bump_n++;
        if (op->status) g->bump_err++;
    }
    if (c->fn) cb_post_done(g->e, c->fn, c->arg, op->status, op->status ? op->msg : NULL);
    if (!c->counter && !c->fn && op->status)
        TN_LOGW("operation failed with no completion to report to: %s", op->msg);
}

static void op_fail(eng_op *op, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void op_fail(eng_op *op, int status, const char *fmt, ...)
{
    if (op->status) return; /* report the first error only */
    op->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->msg, sizeof op->msg, fmt, ap);
    va_end(ap);
    for (uint32_t k = 0; k < op->n_portions; k++) op->portion[k].count = op->portion[k].posted;
}

/* Completes and frees the operation once nothing is left to post or to complete. */
static void op_check(eng_group *g, eng_op *op)
{
    for (uint32_t k = 0; k < op->n_portions; k++) {
        eng_portion *p = &op->portion[k];
        /* A portion still on a NIC's active list is freed only after the poster has
         * dropped it (nic_post_round re-checks the operation then). */
        if (p->posted < p->count || p->done < p->posted || p->queued) return;
    }
    /* The source is free before the user hears of completion: a deregistration right
     * after the completion must not see it busy. Inside a step, an operation that
     * reports through a counter only gathers the release for bump_flush, which applies
     * it before the counter moves; a callback (delivered at once) needs it now. */
    if (op->src) {
        if (g->in_step && !op->comp.fn && (!g->unref_mr || g->unref_mr == op->src)) {
            g->unref_mr = op->src;
            g->unref_n++;
        } else {
            atomic_fetch_sub(&op->src->inflight, 1);
        }
    }
    op->src = NULL;
    op_complete_user(g, op);
    inflight_del(g, op);
    if (op->kind == OP_SEND && op->u.send.mr_held) g->nic[0].ops->mr_dereg(g->nic[0].tp, &op->u.send.mr);
    op_free(g, op);
}

/* ----------------------------------------------------------------- posting ---- */

static void nic_enqueue(eng_nic *n, eng_portion *p)
{
    p->queued = true;
    p->next_active = NULL;
    if (n->active_tail) n->active_tail->next_active = p;
    else n->active_head = p;
    n->active_tail = p;
}

static eng_portion *nic_dequeue(eng_nic *n)
{
    eng_portion *p = n->active_head;
    if (!p) return NULL;
    n->active_head = p->next_active;
    if (!n->active_head) n->active_tail = NULL;
    p->queued = false;
    p->next_active = NULL;
    return p;
}

static int post_one(eng_group *g, eng_nic *n, eng_portion *p, bool more)
{
    eng_op *op = p->op;
    if (op->kind == OP_SEND) {
        return n->ops->post_send(n->tp, op->peer[0], op->u.send.buf, op->u.send.len,
                                 op->u.send.mr_held ? op->u.send.mr.desc : NULL, p);
    }
    tp_write w;
    dg_build(g, p, p->posted, &w);
    int r = n->ops->post_write(n->tp, &w, more);
    if (r == 0) {
        STAT_ADD(n->st_write_ops, 1);
        STAT_ADD(n->st_write_bytes, w.len);
    }
    return r;
}

/* One round on one NIC: every active portion posts up to POST_BUDGET work requests. */
static bool nic_post_round(eng_group *g, eng_nic *n)
{
    bool progressed = false;
    eng_portion *stop_at = n->active_tail;
    while (n->active_head && !n->failed) {
        eng_portion *p = nic_dequeue(n);
        bool last_of_round = (p == stop_at);
        uint32_t budget = POST_BUDGET;
        int r = 0;
        while (p->posted < p->count && budget > 0) {
            bool more = budget > 1 && p->posted + 1 < p->count;
            more = more || (!last_of_round && n->active_head != NULL);
            r = post_one(g, n, p, more);
            if (r == -EAGAIN) break;
            if (r) {
                op_fail(p->op, r, "NIC %u (%s): posting failed: %s", p->nic, n->info.name,
                        te_last_error());
                break;
            }
            p->posted++;
            n->outstanding++;
            budget--;
            progressed = true;
        }
        if (p->posted < p->count) nic_enqueue(n, p); /* back of the line */
        else op_check(g, p->op); /* off the list: free it if it already finished (failed) */
        if (r == -EAGAIN) break; /* the NIC is full: poll completions first */
        if (last_of_round) break;
    }
    return progressed;
}

/* ------------------------------------------------------------- completions ---- */

static void peer_back(eng_group *g, uint32_t nic, tp_peer peer);

static void on_portion_event(eng_group *g, eng_nic *n, eng_portion *p, const tp_event *ev)
{
    eng_op *op = p->op;
    p->done++;
    if (n->outstanding) n->outstanding--;
    if (ev->status) {
        STAT_ADD(n->st_errors, 1);
        op_fail(op, ev->status, "NIC %u (%s): work request failed: %s", p->nic, n->info.name,
                ev->msg[0] ? ev->msg : te_strerror(ev->status));
        /* The connection to a single destination broke: every other operation to that
         * peer fails now rather than at its deadline. The engine never cancels transmits
         * itself, so a provider's -ECANCELED on one means its connection was torn down
         * (tcp;ofi_rxm cancels what was queued on a connection the peer reset). */
        bool gone = peers_status_is_gone(ev->status) || ev->status == -ECANCELED;
        if (gone && op->kind != OP_SCATTER && op->kind != OP_BARRIER)
            worker_peer_gone(g, p->nic, op->peer[p->nic], ev->status, op->msg, false);
    } else {
        if (op->kind == OP_SEND) {
            STAT_ADD(n->st_send_ops, 1);
            STAT_ADD(n->st_send_bytes, op->u.send.len);
        }
        if (n->peers_down && op->kind != OP_SCATTER && op->kind != OP_BARRIER)
            peer_back(g, p->nic, op->peer[p->nic]);
    }
    op_check(g, op);
}

static bool nic_poll(eng_group *g, eng_nic *n)
{
    tp_event ev[POLL_BATCH];
    int got = n->ops->poll(n->tp, ev, POLL_BATCH);
    if (got < 0) {
        if (!n->failed) TN_LOGE("NIC %s unusable: %s", n->info.name, te_last_error());
        n->failed = true;
        return false;
    }
    for (int k = 0; k < got; k++) {
        tp_event *x = &ev[k];
        if (x->kind == TP_EV_PEER) {
            worker_peer_gone(g, (uint32_t)(n - g->nic), x->peer, x->status, x->msg, true);
            continue;
        }
        if (x->kind == TP_EV_IMM) {
            if (x->status) {
                STAT_ADD(n->st_errors, 1);
                TN_LOGW("NIC %s: incoming write failed: %s", n->info.name, x->msg);
                continue;
            }
            imm_arrived(g->e, x->imm);
            /* After: a reader that sees the count knows the immediate has been handled. */
            STAT_ADD_RELEASE(n->st_imms, 1);
            continue;
        }
        uintptr_t c = (uintptr_t)x->ctx;
        if (!c) {
            STAT_ADD(n->st_errors, 1);
            TN_LOGW("NIC %s: completion without context (status %d: %s)", n->info.name, x->status,
                    x->msg);
            continue;
        }
        if ((c & CTX_MASK) == CTX_RECV) recv_pool_on_event(g, n, x);
        else on_portion_event(g, n, (eng_portion *)c, x);
    }
    return got > 0;
}

/* ---------------------------------------------------------------- planning ---- */

static void start_op(eng_group *g, eng_op *op)
{
    op->started = true;
    inflight_add(g, op);
    int r = dg_plan(g, op, op->msg, sizeof op->msg);
    if (r) {
        op->status = r;
        op->n_portions = 0; /* nothing was posted */
        op_check(g, op);
        return;
    }
    for (uint32_t k = 0; k < op->n_portions; k++) {
        eng_portion *p = &op->portion[k];
        eng_nic *n = &g->nic[p->nic];
        if (n->failed) {
            op_fail(op, -EIO, "NIC %u (%s) has failed", p->nic, n->info.name);
            break;
        }
        if (p->count) nic_enqueue(n, p);
    }
    if (op->kind == OP_SEND && g->nic[0].info.mr_local && !op->status) {
        int rr = g->nic[0].ops->mr_reg(g->nic[0].tp, op->u.send.buf, op->u.send.len, TE_DEVICE_HOST,
                                       false, &op->u.send.mr);
        if (rr) op_fail(op, rr, "send: registering the payload failed: %s", te_last_error());
        else op->u.send.mr_held = true;
    }
    op_check(g, op); /* zero work requests (e.g. no pages) completes at once */
}

/* An operation to a single peer that could not post anything for STALL_NS, with nothing
 * of it in flight on that NIC: ask the transport whether that peer is still there
 * (tcp;ofi_rxm hides a refused connection and answers -EAGAIN forever, fabric_probe.c).
 * A slow transfer whose work requests are posted is not a reason to ask: the probe costs
 * the peer's provider an accepted connection. */
static eng_peer_cache_entry *cache_entry(eng_nic *n, tp_peer peer);

static void check_stalled(eng_group *g, eng_op *op, uint64_t now)
{
    uint64_t started = op->deadline_ns - (uint64_t)g->e->op_timeout_ms * 1000000ull;
    if (now - started < STALL_NS || op->kind == OP_SCATTER || op->kind == OP_BARRIER) return;
    for (uint32_t k = 0; k < op->n_portions && !op->finished; k++) {
        eng_portion *p = &op->portion[k];
        eng_nic *n = &g->nic[p->nic];
        if (p->posted == p->count || p->done < p->posted || !n->ops->peer_check) continue;
        /* A connection that broke with an error (a reset, or a write the peer rejected)
         * is not probed: the peer may be alive and reconnecting, and each probe costs a
         * live peer's provider an accepted connection (libfabric 1.17 leaks it). */
        eng_peer_cache_entry *pe = cache_entry(n, op->peer[p->nic]);
        if (pe && pe->no_probe) {
            /* Down since its connection broke, and this operation (started after that,
             * or it would have failed with the others) could not post anything since:
             * fail it now rather than at its deadline. Seen once under load in
             * python.tcp (libfabric 2.1): a write queued behind the reset waited the full
             * operation timeout. */
            if (pe->down)
                worker_peer_gone(g, p->nic, op->peer[p->nic], -ECONNRESET,
                                 "its connection broke and nothing could be sent to it since", false);
            continue;
        }
        if (n->ops->peer_check(n->tp, op->peer[p->nic]) == 0)
            worker_peer_gone(g, p->nic, op->peer[p->nic], -ECONNREFUSED,
                             "connection refused: no engine listens at its address any more", false);
    }
}

static void check_deadlines(eng_group *g, uint64_t now)
{
    bool stall_round = now >= g->next_stall_check;
    if (stall_round) g->next_stall_check = now + STALL_CHECK_NS;
    for (eng_op *op = g->inflight_head, *nx; op; op = nx) {
        nx = op->next;
        if (!op->finished && stall_round && op->started) check_stalled(g, op, now);
        if (op->finished || now < op->deadline_ns) continue;
        /* Name the NIC that holds it up, and count its work requests that never completed
         * as that NIC's errors: a dead link (tcp retransmits silently, no provider error)
         * then shows up in te_nic_stats of that NIC only. */
        int stuck = -1;
        uint32_t pending = 0;
        for (uint32_t k = 0; k < op->n_portions; k++) {
            eng_portion *p = &op->portion[k];
            if (p->posted > p->done) STAT_ADD(g->nic[p->nic].st_errors, p->posted - p->done);
            if (stuck < 0 && (p->posted > p->done || p->posted < p->count)) {
                stuck = (int)p->nic;
                pending = p->count - p->done;
            }
        }
        if (stuck >= 0)
            op_fail(op, -ETIMEDOUT, "operation timed out after %u ms: NIC %d (%s) still has %u work "
                    "request(s) without completion (peer dead or link down?)", g->e->op_timeout_ms,
                    stuck, g->nic[stuck].info.name, pending);
        else
            op_fail(op, -ETIMEDOUT, "operation timed out after %u ms (peer dead or unreachable?)",
                    g->e->op_timeout_ms);
        /* Work requests already posted may still complete; the operation stays (as a
         * zombie holding its buffers) until they do or the NIC is closed. */
        op_complete_user(g, op);
        op_check(g, op);
    }
}

static void fail_nic_ops(eng_group *g, uint32_t nic)
{
    for (eng_op *op = g->inflight_head, *nx; op; op = nx) {
        nx = op->next;
        for (uint32_t k = 0; k < op->n_portions; k++)
            if (op->portion[k].nic == nic && !op->finished) {
                op_fail(op, -EIO, "NIC %u (%s) failed", nic, g->nic[nic].info.name);
                op_complete_user(g, op);
                break;
            }
    }
}

/* True if one of op's work requests on NIC `nic` goes to `peer`. */
static bool op_targets(const eng_group *g, const eng_op *op, uint32_t nic, tp_peer peer)
{
    for (uint32_t k = 0; k < op->n_portions; k++) {
        const eng_portion *p = &op->portion[k];
        if (p->nic != nic) continue;
        const tp_peer *per_target = op->kind == OP_SCATTER   ? op->u.s.peers
                                    : op->kind == OP_BARRIER ? op->u.b.peers
                                                             : NULL;
        if (!per_target) return op->peer[nic] == peer;
        for (uint32_t j = 0; j < p->count; j++)
            if (per_target[(size_t)(p->first + j) * g->n_nics + nic] == peer) return true;
    }
    return false;
}

static eng_peer_cache_entry *cache_entry(eng_nic *n, tp_peer peer)
{
    for (int b = 0; b < PEER_CACHE_BUCKETS; b++)
        for (eng_peer_cache_entry *x = n->peers[b]; x; x = x->next)
            if (x->peer == peer) return x;
    return NULL;
}

void worker_peer_gone(eng_group *g, uint32_t nic, tp_peer peer, int status, const char *why,
                      bool final)
{
    eng_nic *n = &g->nic[nic];
    eng_peer_cache_entry *pe = cache_entry(n, peer);
    if (!pe) return;
    /* Already down: operations posted since (tcp retries a peer that is down) fail
     * too, but the news is not repeated. */
    bool news = !pe->down || (final && !pe->final);
    if (!pe->down && !final) n->peers_down++;
    if (pe->down && !pe->final && final) n->peers_down--;
    pe->down = true;
    pe->final |= final;
    if (status != -ECONNREFUSED) pe->no_probe = true;
    final = pe->final;
    if (news) {
        char addr[TE_ADDR_TEXT_MAX];
        if (te_addr_format(&pe->addr, addr, sizeof addr)) snprintf(addr, sizeof addr, "?");
        TN_LOGW("NIC %u (%s): peer %.40s... is gone: %s", nic, n->info.name, addr, why);
    }
    /* Nothing more is posted for them. shm has just returned every work request to the
     * peer (fabric_shm.c reports them before the peer), so its operations are complete,
     * regions free, when the user hears. tcp;ofi_rxm returns most with the connection but
     * may keep some: those operations complete to the user now and stay as zombies
     * holding their regions until the work requests come back (as after a timeout). */
    for (eng_op *op = g->inflight_head; op; op = op->next) {
        if (op->finished || !op_targets(g, op, nic, peer)) continue;
        op_fail(op, status, "NIC %u (%s): peer is gone (%s)", nic, n->info.name, why);
        bool outstanding = false;
        for (uint32_t k = 0; k < op->n_portions; k++)
            outstanding |= op->portion[k].done < op->portion[k].posted;
        if (!outstanding || !final) op_complete_user(g, op);
    }
    if (news) peers_note(g->e, &pe->addr, TE_PEER_DOWN);
}

/* An operation to a peer whose connection had broken succeeded: it is back (tcp
 * reconnects on the next operation). */
static void peer_back(eng_group *g, uint32_t nic, tp_peer peer)
{
    eng_nic *n = &g->nic[nic];
    eng_peer_cache_entry *pe = cache_entry(n, peer);
    if (!pe || !pe->down || pe->final) return;
    pe->down = false;
    pe->no_probe = false;
    n->peers_down--;
    peers_note(g->e, &pe->addr, TE_PEER_UP);
}

/* ------------------------------------------------------------------ control --- */

static void handle_ctl(eng_group *g, eng_ctl *c)
{
    int r = 0;
    switch (c->kind) {
    case CTL_POOL_POST: recv_pool_worker_post(g, c->obj); break;
    case CTL_POOL_CANCEL: recv_pool_worker_cancel(g, c->obj); break;
    case CTL_PEER_GROUP: r = peer_group_worker_resolve(g, c->obj); break;
    default: r = -EINVAL;
    }
    c->result = r;
    atomic_store(&c->done, 1);
    tn_notify_wake(&g->ctl_done);
}

int worker_control(eng_group *g, int kind, void *obj, int timeout_ms)
{
    eng_ctl *c = calloc(1, sizeof *c);
    if (!c) return tn_err(-ENOMEM, "out of memory");
    c->kind = kind;
    c->obj = obj;
    mpsc_push(&g->ctlq, &c->qnode);
    after_caller_step(g, group_try_progress(g, STEP_CONTROL)); /* handled here if nobody is in a step */
    uint64_t deadline = tn_deadline_ms(timeout_ms);
    while (!atomic_load(&c->done)) {
        uint32_t t = tn_notify_prepare(&g->ctl_done);
        if (atomic_load(&c->done)) {
            tn_notify_cancel(&g->ctl_done);
            break;
        }
        if (tn_now_ns() >= deadline) {
            tn_notify_cancel(&g->ctl_done);
            /* The worker still owns c; it will be freed when the worker exits (drain). */
            return tn_err(-ETIMEDOUT, "worker of group %u did not answer within %d ms", g->idx,
                          timeout_ms);
        }
        tn_notify_wait(&g->ctl_done, t, 1000000ull);
    }
    int r = c->result;
    free(c);
    return r;
}

void worker_wake(eng_group *g)
{
    if (!atomic_load_explicit(&g->wake.sleepers, memory_order_seq_cst)) return; /* it is polling */
    tn_notify_wake(&g->wake);
    uint64_t one = 1;
    if (g->event_fd >= 0 && write(g->event_fd, &one, sizeof one) < 0) { /* counter full: awake anyway */ }
}

static int try_step(eng_group *g, enum step_kind kind, eng_op *op);

void worker_submit(eng_group *g, eng_op *op)
{
    /* Busy poll: the worker owns a core and never sleeps, so it takes the operation from
     * the queue within a turn; the caller returns at once and its next submission
     * overlaps this one's post (a pipeline of two threads, where posting here would
     * serialise the caller's work and the provider's). */
    if (g->e->busy_poll) {
        mpsc_push(&g->subq, &op->qnode);
        return;
    }
    /* Post it from this thread when nobody else is in a step (the common case for one
     * submitting thread); otherwise the lock holder or the worker takes it from the queue.
     * The worker is woken only if it sleeps: it must poll what was posted here. The step
     * counts as driving: while a caller keeps submitting (and usually waits next), the
     * worker backs off instead of taking the lock between its steps. On two cores a
     * worker preempted while holding the lock stalled the submitter: 64 KiB writes over
     * shm at 0.3-0.4 of raw before, 0.7-0.95 after (fabric-debug, docs/performance.md). */
    after_caller_step(g, try_step(g, STEP_SUBMIT, op));
}

/* ------------------------------------------------------------------- step ---- */

static bool take_submissions(eng_group *g)
{
    mpsc_node *qn;
    bool progressed = false;
    for (int k = 0; k < SUBMIT_BATCH && (qn = mpsc_pop(&g->subq)); k++) {
        start_op(g, (eng_op *)qn);
        progressed = true;
    }
    return progressed;
}

static bool post_all(eng_group *g)
{
    bool progressed = false;
    for (uint32_t k = 0; k < g->n_nics; k++)
        if (!g->nic[k].failed) progressed |= nic_post_round(g, &g->nic[k]);
    return progressed;
}

/* One turn of progress. Caller holds g->plock. `poll`: drain the NICs' completions;
 * without it they are drained only if some NIC could not post everything (it is full). */
static bool step_locked(eng_group *g, bool poll, eng_op *direct)
{
    g->in_step = true;
    bool progressed = false, polled = false;
    mpsc_node *qn;
    while ((qn = mpsc_pop(&g->ctlq))) {
        handle_ctl(g, (eng_ctl *)qn);
        progressed = true;
    }
    if (direct) {
        start_op(g, direct);
        progressed = true;
    }
    progressed |= take_submissions(g);
    progressed |= post_all(g);
    for (uint32_t k = 0; k < g->n_nics && !poll; k++)
        if (g->nic[k].active_head) poll = true;
    for (uint32_t k = 0; k < g->n_nics && poll; k++) {
        eng_nic *n = &g->nic[k];
        if (n->failed) continue;
        polled |= nic_poll(g, n);
        if (n->failed) fail_nic_ops(g, k);
    }
    /* Immediates delivered inline may have submitted answers (a pong): post them in this
     * same step rather than one turn later. */
    if (polled && !mpsc_empty(&g->subq)) {
        take_submissions(g);
        post_all(g);
    }
    /* The clock is read every 32nd step only: on a VM clock_gettime costs about as much
     * as posting a small write (4 % of the worker in a 4 KiB profile), and deadlines are
     * checked once a millisecond anyway. */
    if (g->inflight_head && (++g->turns & 31) == 0) {
        uint64_t now = tn_now_ns();
        if (now >= g->next_timeout_check) {
            check_deadlines(g, now);
            g->next_timeout_check = now + 1000000ull;
        }
    }
    bump_flush(g);
    g->in_step = false;
    return progressed || polled;
}

/* A submitter's step posts its operation and polls completions only every
 * SUBMIT_POLL_EVERY-th time (or when a NIC is full, or its operation is alone): each poll of a provider runs its
 * progress engine (shm: two of them, the receiving endpoint and the peers' transmit
 * endpoints), which cost more than the post itself, and a caller that submits a window
 * of writes and then waits polls in its wait anyway. A raw libfabric loop posts a batch
 * and polls once; polling after every post held 4 KiB writes over libfabric 2.1's shm
 * at about half of raw. Completions nobody waits for are drained by the next such step
 * or by the worker. */
int group_try_progress(eng_group *g, enum step_kind kind)
{
    return try_step(g, kind, NULL);
}

/* `op`: a submitter's new operation. With the lock taken and nothing queued before it, it
 * is started in the step without passing through the queue (a push and a pop, two atomic
 * exchanges, per write); otherwise it is queued behind what is there, or left for the
 * lock holder. */
static int try_step(eng_group *g, enum step_kind kind, eng_op *op)
{
    /* A driving caller announces itself even when the lock is busy: the worker then
     * backs off at its next turn instead of winning the lock again. Only if the worker
     * has seen the last announcement: one pending is enough, and an atomic add on every
     * step would move the line between the caller's core and a worker polling it. */
    if (kind != STEP_CONTROL &&
        atomic_load_explicit(&g->drive_seq, memory_order_relaxed) ==
            atomic_load_explicit(&g->drive_seen, memory_order_relaxed))
        atomic_fetch_add_explicit(&g->drive_seq, 1, memory_order_relaxed);
    if (pthread_mutex_trylock(&g->plock)) {
        if (op) mpsc_push(&g->subq, &op->qnode);
        return -EBUSY;
    }
    if (op && !mpsc_empty(&g->subq)) { /* others' operations first: they came earlier */
        mpsc_push(&g->subq, &op->qnode);
        op = NULL;
    }
    /* A lone operation (nothing else submitted and not yet completed) is polled at once:
     * that is the latency case (one write in flight, a ping), where its completion is
     * often ready right after the post (shm inject) and the caller's wait then needs no
     * step of its own. */
    bool poll = kind != STEP_SUBMIT || ++g->submit_steps % SUBMIT_POLL_EVERY == 0 ||
                atomic_load_explicit(&g->queued, memory_order_relaxed) <= 1;
    int r = step_locked(g, poll, op) ? PROGRESS_MOVED : 0;
    if (g->inflight_head || !mpsc_empty(&g->subq) || !mpsc_empty(&g->ctlq)) r |= PROGRESS_PENDING;
    pthread_mutex_unlock(&g->plock);
    return r;
}

/* After a caller's step: the worker must poll what is still in flight unless a waiter
 * will; it is woken only if it sleeps (one load otherwise). An operation that completed
 * within the caller's own step needs nobody. A caller that found the lock taken left its
 * operation in the queue, and the holder may have finished its step before the push was
 * visible: the worker resumes now even if it is backing off from driving callers. */
static void after_caller_step(eng_group *g, int r)
{
    if (r == -EBUSY) group_resume_worker(g);
    if (r < 0 || (r & PROGRESS_PENDING)) worker_wake(g);
}

void group_resume_worker(eng_group *g)
{
    atomic_store_explicit(&g->resume, true, memory_order_release);
    tn_notify_wake(&g->backoff);
}

int engine_drive(te_engine *e, bool last)
{
    /* busy poll: the worker polls anyway; a waiter that drove would only contend for
     * its lock (and make it back off) */
    if (!e->wait_drive || e->busy_poll || engine_enter(e)) return -1;
    int moved = 0;
    for (uint32_t k = 0; k < e->n_groups; k++) {
        if (last) group_resume_worker(e->groups[k]);
        else {
            int r = group_try_progress(e->groups[k], STEP_WAIT);
            if (r > 0 && (r & PROGRESS_MOVED)) moved = 1;
        }
    }
    engine_leave(e);
    return moved;
}

/* ------------------------------------------------------------------- loop ---- */

static void drain_at_exit(eng_group *g)
{
    /* No other thread can step any more (stop waited for every caller to leave), but
     * the lock keeps that visible to a race detector. */
    pthread_mutex_lock(&g->plock);
    mpsc_node *qn;
    while ((qn = mpsc_pop(&g->ctlq))) handle_ctl(g, (eng_ctl *)qn);
    while ((qn = mpsc_pop(&g->subq))) {
        eng_op *op = (eng_op *)qn;
        op->status = -ECANCELED;
        snprintf(op->msg, sizeof op->msg, "engine stopped before the operation started");
        inflight_add(g, op);
        op_complete_user(g, op);
        inflight_del(g, op);
        op_free(g, op);
    }
    for (eng_op *op = g->inflight_head; op; op = op->next) {
        op_fail(op, -ECANCELED, "engine stopped with the operation in flight");
        op_complete_user(g, op);
    }
    /* Work requests already posted cannot be recalled. Let them finish for a bounded
     * time before the endpoints close: tearing an endpoint down under in-flight writes
     * has crashed the receiving process with libfabric 1.17's shm provider. */
    for (uint32_t k = 0; k < g->n_nics; k++)
        while (nic_dequeue(&g->nic[k])) {}
    for (eng_op *op = g->inflight_head, *nx; op; op = nx) {
        nx = op->next;
        op_check(g, op);
    }
    uint64_t deadline = tn_now_ns() + STOP_DRAIN_NS;
    while (g->inflight_head && tn_now_ns() < deadline)
        for (uint32_t k = 0; k < g->n_nics; k++)
            if (!g->nic[k].failed) nic_poll(g, &g->nic[k]);
    pthread_mutex_unlock(&g->plock);
    /* What is left is freed by worker_free_remaining once the NICs are closed. */
}

enum idle_result { IDLE_BLOCKED, IDLE_NIC_ACTIVITY, IDLE_RETRY, IDLE_NO_WAIT_OBJECT };

/* The NICs' wait objects, or why the worker cannot block on them. Under the lock: the
 * provider's trywait must not race a step's poll on a backend that is not thread-safe. */
static int idle_fds(eng_group *g, struct pollfd *pf)
{
    if (g->event_fd < 0) return IDLE_NO_WAIT_OBJECT;
    int r = IDLE_BLOCKED;
    pthread_mutex_lock(&g->plock);
    for (uint32_t k = 0; k < g->n_nics && r == IDLE_BLOCKED; k++) {
        eng_nic *n = &g->nic[k];
        int fd = n->failed ? -1 : n->ops->wait_fd(n->tp);
        if (!n->failed && fd < 0) r = IDLE_NO_WAIT_OBJECT;
        pf[k] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    for (uint32_t k = 0; k < g->n_nics && r == IDLE_BLOCKED; k++)
        if (!g->nic[k].failed && !g->nic[k].ops->can_block(g->nic[k].tp)) r = IDLE_RETRY;
    pthread_mutex_unlock(&g->plock);
    return r;
}

/* Blocks for at most timeout_ns until a NIC or a submitter has something for us.
 * IDLE_RETRY: a provider has work pending that only polling progresses (poll again);
 * IDLE_NO_WAIT_OBJECT: some NIC offers no wait object (the caller sleeps instead).
 * The timeout bounds the delay even where a provider's wait object does not fire for
 * everything that needs progress. */
static int idle_block(eng_group *g, uint64_t timeout_ns)
{
    struct pollfd pf[TE_MAX_NICS + 1];
    int r = idle_fds(g, pf);
    if (r != IDLE_BLOCKED) return r;
    pf[g->n_nics] = (struct pollfd){.fd = g->event_fd, .events = POLLIN};
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)timeout_ns};
    if (ppoll(pf, g->n_nics + 1, &ts, NULL) <= 0) return IDLE_BLOCKED;
    if (pf[g->n_nics].revents & POLLIN) {
        uint64_t v;
        if (read(g->event_fd, &v, sizeof v) < 0) { /* nothing to drain: fine */ }
    }
    /* Data arriving for us: incoming writes without immediates complete nothing here, so
     * this is the only sign that a peer is streaming into our memory. */
    for (uint32_t k = 0; k < g->n_nics; k++)
        if (pf[k].revents) return IDLE_NIC_ACTIVITY;
    return IDLE_BLOCKED;
}

/* While threads that wait for completions drive the group themselves, the worker stays
 * off the lock and the CPU: it sleeps in slices (growing while the waiters keep driving,
 * so a long wait costs few wake-ups) and resumes once a slice passed with no such step
 * (the waiters found what they waited for, or stopped driving after 1 ms of nothing). */
static bool backed_off(eng_group *g, uint64_t *seen, uint64_t *slice_ns)
{
    uint64_t s = atomic_load_explicit(&g->drive_seq, memory_order_relaxed);
    if (atomic_load_explicit(&g->resume, memory_order_relaxed) &&
        atomic_exchange_explicit(&g->resume, false, memory_order_acquire)) { /* handed back */
        *seen = s;
        atomic_store_explicit(&g->drive_seen, s, memory_order_relaxed);
    }
    if (s == *seen) {
        *slice_ns = BACKOFF_MIN_NS;
        return false;
    }
    *seen = s;
    atomic_store_explicit(&g->drive_seen, s, memory_order_relaxed);
    if (g->e->busy_poll) return true; /* never sleeps: looks again at once */
    uint32_t t = tn_notify_prepare(&g->backoff);
    if (atomic_load(&g->stop)) tn_notify_cancel(&g->backoff);
    else tn_notify_wait(&g->backoff, t, *slice_ns);
    if (*slice_ns < BACKOFF_MAX_NS) *slice_ns *= 2;
    return true;
}

/* Peers' writes applied to our memory since the last look (shm: docs/engine.md, idle
 * handling): counts as progress, so the worker stays hot while peers stream into us. */
static bool targets_active(eng_group *g)
{
    bool active = false;
    for (uint32_t k = 0; k < g->n_nics; k++) {
        eng_nic *n = &g->nic[k];
        if (!n->failed && n->ops->target_activity && n->ops->target_activity(n->tp) > 0) active = true;
    }
    return active;
}

static void *worker_main(void *arg)
{
    eng_group *g = arg;
    if (g->worker_cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(g->worker_cpu, &set);
        if (pthread_setaffinity_np(pthread_self(), sizeof set, &set))
            TN_LOGW("group %u: cannot pin worker to CPU %d (not in this process's CPU set?)",
                    g->idx, g->worker_cpu);
    }
    uint64_t sleep_ns = SLEEP_MIN_NS, last_progress = tn_now_ns();
    uint64_t seen_drive = atomic_load(&g->drive_seq), backoff_ns = BACKOFF_MIN_NS;
    atomic_store_explicit(&g->drive_seen, seen_drive, memory_order_relaxed);
    unsigned idle = 0, looks = 0;
    while (!atomic_load_explicit(&g->stop, memory_order_acquire)) {
        if (backed_off(g, &seen_drive, &backoff_ns)) {
            idle = 0;
            continue;
        }
        pthread_mutex_lock(&g->plock);
        bool progressed = step_locked(g, true, NULL);
        /* Not every empty turn: the read is a provider progress of its own, and
         * activity only has to be seen within the active window (ms), not at once. */
        if (!progressed && (++looks & 7) == 0) progressed = targets_active(g);
        bool inflight = g->inflight_head != NULL;
        pthread_mutex_unlock(&g->plock);
        if (progressed || g->e->busy_poll) {
            idle = 0;
            sleep_ns = SLEEP_MIN_NS;
            continue;
        }
        /* With operations in flight the worker keeps polling (completions and the
         * provider's own progress need it), yielding now and then to other threads. */
        if (inflight) {
            if ((++idle & 63) == 0) sched_yield();
            continue;
        }
        if (idle++ == 0) last_progress = tn_now_ns(); /* first idle turn after progress */
        if (idle < IDLE_SPINS) continue;
        if (tn_now_ns() - last_progress < ACTIVE_WINDOW_NS) continue; /* recently busy: stay hot */
        /* Idle. Block in the kernel on the NICs' completion wait objects plus our own
         * event fd, so incoming data (which manual-progress providers such as tcp move only
         * while we poll) wakes us at once; the timeout grows from 20 us to 1 ms while
         * nothing happens. Without wait objects, sleep for that long instead. */
        uint32_t t = tn_notify_prepare(&g->wake);
        pthread_mutex_lock(&g->plock); /* the queues' consumer side belongs to the lock holder */
        bool queued = !mpsc_empty(&g->subq) || !mpsc_empty(&g->ctlq);
        pthread_mutex_unlock(&g->plock);
        if (queued || atomic_load(&g->stop)) {
            tn_notify_cancel(&g->wake);
            continue;
        }
        int ib = idle_block(g, sleep_ns);
        if (ib != IDLE_NO_WAIT_OBJECT) tn_notify_cancel(&g->wake);
        else tn_notify_wait(&g->wake, t, sleep_ns);
        if (ib == IDLE_NIC_ACTIVITY) { /* a peer is active: stay hot as after progress */
            idle = 0;
            sleep_ns = SLEEP_MIN_NS;
        } else if (ib != IDLE_RETRY && sleep_ns < SLEEP_MAX_NS) {
            sleep_ns *= 2;
        }
    }
    drain_at_exit(g);
    return NULL;
}

int worker_start(eng_group *g)
{
    pthread_mutex_init(&g->plock, NULL);
    tn_notify_init(&g->backoff);
    atomic_init(&g->drive_seq, 0);
    atomic_init(&g->drive_seen, 0);
    atomic_init(&g->resume, false);
    atomic_init(&g->queued, 0);
    mpsc_init(&g->subq);
    mpsc_init(&g->ctlq);
    tn_notify_init(&g->wake);
    tn_notify_init(&g->ctl_done);
    atomic_init(&g->stop, false);
    g->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    int r = pthread_create(&g->thread, NULL, worker_main, g);
    if (r) return tn_err(-r, "cannot start the worker thread of group %u", g->idx);
    char name[16];
    snprintf(name, sizeof name, "tendril-w%u", g->idx);
    pthread_setname_np(g->thread, name);
    g->thread_started = true;
    return 0;
}

void worker_join(eng_group *g)
{
    if (!g->thread_started) return;
    atomic_store_explicit(&g->stop, true, memory_order_release);
    worker_wake(g);
    tn_notify_wake(&g->backoff);
    pthread_join(g->thread, NULL);
    g->thread_started = false;
    if (g->event_fd >= 0) close(g->event_fd);
    g->event_fd = -1;
}

/* After the NICs are closed nothing can complete any more: free what is left. */
void worker_free_remaining(eng_group *g)
{
    while (g->inflight_head) {
        eng_op *op = g->inflight_head;
        inflight_del(g, op);
        if (op->kind == OP_SEND && op->u.send.mr_held) op->u.send.mr_held = false;
        op_free(g, op);
    }
    op_cache_drain(g);
}
