/* Submission of operations: synchronous validation (every bad argument is named in the
 * message and nothing is queued), a private copy of everything the worker will need,
 * then one lock-free push onto the owning group's queue; the submitter then posts it
 * itself when the group's progress lock is free (worker.c). At most max_queued_ops
 * operations per group may wait for their completion: past that, -EAGAIN. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "te/engine_internal.h"

/* end = off + len must not overflow and must stay within size. */
static bool in_bounds(uint64_t off, uint64_t len, uint64_t size)
{
    return off <= size && len <= size - off;
}

static int check_src(te_engine *e, const te_mr *mr, uint64_t off, uint64_t len, const char *fn)
{
    if (!mr) return tn_err(-EINVAL, "%s: src is NULL", fn);
    if (mr->e != e) return tn_err(-EINVAL, "%s: src was registered with another engine", fn);
    if (!in_bounds(off, len, mr->len))
        return tn_err(-ERANGE, "%s: source range [%llu, +%llu) outside the registered region of %zu bytes",
                      fn, (unsigned long long)off, (unsigned long long)len, mr->len);
    return 0;
}

static int check_dst(const eng_group *g, const te_mr_desc *d, uint64_t off, uint64_t len,
                     const char *fn, const char *what)
{
    if (!d) return tn_err(-EINVAL, "%s: %s is NULL", fn, what);
    if (d->n_nics == 0 || d->n_nics > TE_MAX_NICS)
        return tn_err(-EINVAL, "%s: %s has %u NICs (must be 1..%d)", fn, what, d->n_nics, TE_MAX_NICS);
    if (d->n_nics != g->n_nics)
        return tn_err(-EINVAL, "%s: %s has %u NICs but the sending group %u has %u: both sides "
                               "must use the same number of NICs per group", fn, what, d->n_nics,
                      g->idx, g->n_nics);
    for (uint32_t k = 0; k < d->n_nics; k++) {
        if (d->nic[k].addr.len == 0)
            return tn_err(-EINVAL, "%s: %s NIC %u has an empty address", fn, what, k);
        if (d->nic[k].addr.transport != g->nic[k].addr.transport)
            return tn_err(-EINVAL, "%s: %s NIC %u is an address of transport %u, but the sending "
                                   "NIC uses transport %u (a descriptor of another backend)",
                          fn, what, k, d->nic[k].addr.transport, g->nic[k].addr.transport);
    }
    if (!in_bounds(off, len, d->len))
        return tn_err(-ERANGE, "%s: destination range [%llu, +%llu) outside the remote region of %llu bytes",
                      fn, (unsigned long long)off, (unsigned long long)len,
                      (unsigned long long)d->len);
    return 0;
}

static int check_route(const eng_group *g, te_route r, const char *fn)
{
    if (r.kind == TE_ROUTE_PINNED) {
        if (r.n >= g->n_nics)
            return tn_err(-EINVAL, "%s: pinned NIC index %u out of range (group %u has %u NICs)", fn,
                          r.n, g->idx, g->n_nics);
        return 0;
    }
    if (r.kind != TE_ROUTE_SHARDED) return tn_err(-EINVAL, "%s: unknown route kind %d", fn, r.kind);
    if (r.n > g->n_nics)
        return tn_err(-EINVAL, "%s: %u shards requested but group %u has %u NICs", fn, r.n, g->idx,
                      g->n_nics);
    return 0;
}

/* An operation (recycled, op_cache.c) with every field zeroed except the destination
 * descriptor (1.1 KB for four NICs of 255-byte addresses), which op_set_dst fills for the
 * NICs in use only: zeroing and copying it whole was a visible part of a small write's cost. */
static eng_op *op_new(eng_group *g)
{
    eng_op *op = op_cache_get(g);
    if (!op) {
        tn_err(-ENOMEM, "out of memory for an operation");
        return NULL;
    }
    memset(op, 0, offsetof(eng_op, dst));
    op->dst.n_nics = 0;
    return op;
}

/* Copies what the planner reads of d: base, length, and address and key of each NIC
 * in use (check_dst guarantees n_nics is the group's). */
static void op_set_dst(eng_op *op, const te_mr_desc *d)
{
    op->dst.base = d->base;
    op->dst.len = d->len;
    op->dst.n_nics = d->n_nics;
    for (uint32_t k = 0; k < d->n_nics; k++) {
        op->dst.nic[k].rkey = d->nic[k].rkey;
        te_addr *a = &op->dst.nic[k].addr;
        a->transport = d->nic[k].addr.transport;
        a->len = d->nic[k].addr.len;
        memcpy(a->bytes, d->nic[k].addr.bytes, a->len);
    }
}

/* Takes ownership of op; pushes it or frees it. Caller is inside engine_enter. */
static int submit(te_engine *e, eng_group *g, eng_op *op, const te_completion *c)
{
    if (atomic_fetch_add_explicit(&g->queued, 1, memory_order_acquire) >= e->max_queued_ops) {
        atomic_fetch_sub_explicit(&g->queued, 1, memory_order_relaxed);
        op->src = NULL; /* no reference was taken yet */
        op_free(g, op);
        /* A caller that retries at once should find room: complete what is done now
         * (a polling step, as a waiter's). */
        group_try_progress(g, STEP_WAIT);
        return tn_err(-EAGAIN, "group %u already has %u operations waiting for completion "
                               "(te_config.max_queued_ops): retry after some complete",
                      g->idx, e->max_queued_ops);
    }
    if (c) op->comp = *c;
    if (op->comp.counter) counter_note_submit(op->comp.counter, g);
    op->group = g->idx;
    op->deadline_ns = tn_op_deadline_ns(e->op_timeout_ms);
    if (op->src) atomic_fetch_add(&op->src->inflight, 1);
    worker_submit(g, op);
    return 0;
}

#define ENTER(e, fn)                                                                            \
    do {                                                                                        \
        tn_err_clear();                                                                         \
        if (!(e)) return tn_err(-EINVAL, "%s: engine is NULL", fn);                             \
        int _r = engine_enter(e);                                                               \
        if (_r) return _r;                                                                      \
    } while (0)
#define FAIL(r)                                                                                 \
    do {                                                                                        \
        engine_leave(e);                                                                        \
        return (r);                                                                             \
    } while (0)

/* Sizes that struct_size 0 stands for: the layouts of tendril 0.1. When a field is
 * appended to one of the structs, its entry here becomes that old size as a number. */
#define WRITE_ARGS_V0 sizeof(te_write_args)
#define PAGED_ARGS_V0 sizeof(te_paged_args)
#define SCATTER_ARGS_V0 sizeof(te_scatter_args)

/* The caller's args struct (first field: struct_size) in this library's layout: the
 * caller's own struct when its size is 0 or ours (no copy on the fast path), else a copy
 * in `copy` zero-filled past the caller's size (te.h's struct_size rule). NULL with *err
 * set for a size this library does not know. */
static const void *args_in(const void *in, void *copy, size_t cur, size_t v0, const char *fn,
                           int *err)
{
    size_t got = *(const size_t *)in;
    if (got == 0 || got == cur) return in;
    if (got < v0 || got > cur) {
        *err = tn_err(-EINVAL, "%s: args struct_size %zu is not one this library knows (0, or "
                               "%zu..%zu)", fn, got, v0, cur);
        return NULL;
    }
    memset(copy, 0, cur);
    memcpy(copy, in, got);
    *(size_t *)copy = cur;
    return copy;
}

int te_write(te_engine *e, const te_write_args *a, const te_completion *c)
{
    static const char fn[] = "te_write";
    ENTER(e, fn);
    if (!a) FAIL(tn_err(-EINVAL, "te_write: args is NULL"));
    int r;
    te_write_args copy;
    if (!(a = args_in(a, &copy, sizeof copy, WRITE_ARGS_V0, fn, &r))) FAIL(r);
    if ((r = check_src(e, a->src, a->src_offset, a->len, fn))) FAIL(r);
    eng_group *g = e->groups[a->src->group];
    if ((r = check_dst(g, a->dst, a->dst_offset, a->len, fn, "dst"))) FAIL(r);
    if ((r = check_route(g, a->route, fn))) FAIL(r);
    uint32_t shards = shard_write_count(a->route, g->n_nics);
    uint64_t shard = a->route.kind == TE_ROUTE_PINNED ? a->len : shard_write_size(a->len, shards);
    for (uint32_t k = 0; k < g->n_nics; k++)
        if (shard > g->nic[k].info.max_msg)
            FAIL(tn_err(-EMSGSIZE, "te_write: shard of %llu bytes exceeds NIC %s's largest message "
                                   "(%zu); use more shards or several writes",
                        (unsigned long long)shard, g->nic[k].info.name, g->nic[k].info.max_msg));
    eng_op *op = op_new(g);
    if (!op) FAIL(-ENOMEM);
    op->kind = OP_WRITE;
    op->src = a->src;
    op_set_dst(op, a->dst);
    op->has_imm = a->has_imm;
    op->imm = a->imm;
    op->u.w.src_off = a->src_offset;
    op->u.w.dst_off = a->dst_offset;
    op->u.w.len = a->len;
    op->u.w.shard = shard;
    op->u.w.shards = shards;
    op->u.w.route = a->route;
    r = submit(e, g, op, c);
    engine_leave(e);
    return r;
}

static uint32_t pages_max(const te_pages *p)
{
    uint32_t m = 0;
    for (size_t k = 0; k < p->n; k++)
        if (p->idx[k] > m) m = p->idx[k];
    return m;
}

/* off + stride*idx + len <= size, computed without overflow. */
static bool page_in_bounds(uint64_t off, uint64_t stride, uint32_t idx, uint64_t len, uint64_t size)
{
    unsigned __int128 end = (unsigned __int128)off + (unsigned __int128)stride * idx + len;
    return end <= size;
}

int te_write_paged(te_engine *e, const te_paged_args *a, const te_completion *c)
{
    static const char fn[] = "te_write_paged";
    ENTER(e, fn);
    if (!a) FAIL(tn_err(-EINVAL, "te_write_paged: args is NULL"));
    te_paged_args copy;
    int ar;
    if (!(a = args_in(a, &copy, sizeof copy, PAGED_ARGS_V0, fn, &ar))) FAIL(ar);
    if (!a->src_pages || !a->dst_pages)
        FAIL(tn_err(-EINVAL, "te_write_paged: %s is NULL", a->src_pages ? "dst_pages" : "src_pages"));
    if (a->src_pages->n != a->dst_pages->n)
        FAIL(tn_err(-EINVAL, "te_write_paged: %zu source pages but %zu destination pages",
                    a->src_pages->n, a->dst_pages->n));
    int r;
    if ((r = check_src(e, a->src, 0, 0, fn))) FAIL(r);
    eng_group *g = e->groups[a->src->group];
    if ((r = check_dst(g, a->dst, 0, 0, fn, "dst"))) FAIL(r);
    for (uint32_t k = 0; k < g->n_nics; k++)
        if (a->page_len > g->nic[k].info.max_msg)
            FAIL(tn_err(-EMSGSIZE, "te_write_paged: page_len %llu exceeds NIC %s's largest message",
                        (unsigned long long)a->page_len, g->nic[k].info.name));
    if (a->src_pages->n) {
        uint32_t sm = pages_max(a->src_pages), dm = pages_max(a->dst_pages);
        if (!page_in_bounds(a->src_offset, a->src_stride, sm, a->page_len, a->src->len))
            FAIL(tn_err(-ERANGE, "te_write_paged: source page %u (offset %llu + stride %llu * %u + %llu) "
                                 "ends beyond the registered region of %zu bytes", sm,
                        (unsigned long long)a->src_offset, (unsigned long long)a->src_stride, sm,
                        (unsigned long long)a->page_len, a->src->len));
        if (!page_in_bounds(a->dst_offset, a->dst_stride, dm, a->page_len, a->dst->len))
            FAIL(tn_err(-ERANGE, "te_write_paged: destination page %u ends beyond the remote region "
                                 "of %llu bytes", dm, (unsigned long long)a->dst->len));
    }
    eng_op *op = op_new(g);
    if (!op) FAIL(-ENOMEM);
    op->kind = OP_PAGED;
    op->src = a->src;
    op_set_dst(op, a->dst);
    op->has_imm = a->has_imm;
    op->imm = a->imm;
    pages_retain(a->src_pages);
    pages_retain(a->dst_pages);
    op->u.p.sp = a->src_pages;
    op->u.p.dp = a->dst_pages;
    op->u.p.len = a->page_len;
    op->u.p.s_stride = a->src_stride;
    op->u.p.s_off = a->src_offset;
    op->u.p.d_stride = a->dst_stride;
    op->u.p.d_off = a->dst_offset;
    r = submit(e, g, op, c);
    engine_leave(e);
    return r;
}

int te_write_scatter(te_engine *e, const te_scatter_args *a, const te_completion *c)
{
    static const char fn[] = "te_write_scatter";
    ENTER(e, fn);
    if (!a) FAIL(tn_err(-EINVAL, "te_write_scatter: args is NULL"));
    te_scatter_args copy;
    int ar;
    if (!(a = args_in(a, &copy, sizeof copy, SCATTER_ARGS_V0, fn, &ar))) FAIL(ar);
    if (!a->targets || a->n_targets == 0)
        FAIL(tn_err(-EINVAL, "te_write_scatter: no targets (targets NULL or n_targets 0)"));
    if (a->n_targets > UINT32_MAX) FAIL(tn_err(-EINVAL, "te_write_scatter: too many targets"));
    int r;
    if ((r = check_src(e, a->src, 0, 0, fn))) FAIL(r);
    eng_group *g = e->groups[a->src->group];
    if (a->kind != TE_SCATTER_SHARD_PEERS && a->kind != TE_SCATTER_SHARD_BYTES &&
        a->kind != TE_SCATTER_SINGLE)
        FAIL(tn_err(-EINVAL, "te_write_scatter: unknown kind %d", a->kind));
    if (a->kind == TE_SCATTER_SINGLE && a->nic >= g->n_nics)
        FAIL(tn_err(-EINVAL, "te_write_scatter: NIC index %u out of range (group has %u NICs)", a->nic,
                    g->n_nics));
    if (a->peers) {
        if (a->peers->e != e || a->peers->group != g->idx)
            FAIL(tn_err(-EINVAL, "te_write_scatter: peer group belongs to another engine or group"));
        if (a->peers->n != a->n_targets)
            FAIL(tn_err(-EINVAL, "te_write_scatter: peer group has %zu peers but %zu targets given",
                        a->peers->n, a->n_targets));
    }
    for (size_t t = 0; t < a->n_targets; t++) {
        const te_scatter_target *x = &a->targets[t];
        char what[48];
        snprintf(what, sizeof what, "targets[%zu].dst", t);
        if ((r = check_src(e, a->src, x->src_offset, x->len, fn))) FAIL(r);
        if ((r = check_dst(g, x->dst, x->dst_offset, x->len, fn, what))) FAIL(r);
        if (a->peers)
            for (uint32_t k = 0; k < g->n_nics; k++)
                if (!te_addr_equal(&x->dst->nic[k].addr, &a->peers->peers[t].nic[k].addr))
                    FAIL(tn_err(-EINVAL, "te_write_scatter: targets[%zu] is not peer %zu of the peer "
                                         "group (targets must follow the group's order)", t, t));
        uint64_t piece = a->kind == TE_SCATTER_SHARD_BYTES ? x->len - x->len / g->n_nics * (g->n_nics - 1)
                                                           : x->len;
        for (uint32_t k = 0; k < g->n_nics; k++)
            if (piece > g->nic[k].info.max_msg)
                FAIL(tn_err(-EMSGSIZE, "te_write_scatter: targets[%zu] needs a %llu-byte write, above "
                                       "NIC %s's largest message", t, (unsigned long long)piece,
                            g->nic[k].info.name));
    }
    eng_op *op = op_new(g);
    eng_target *ts = calloc(a->n_targets, sizeof *ts);
    if (!op || !ts) {
        free(op);
        free(ts);
        FAIL(tn_err(-ENOMEM, "te_write_scatter: out of memory"));
    }
    for (size_t t = 0; t < a->n_targets; t++) {
        ts[t].dst = *a->targets[t].dst;
        ts[t].len = a->targets[t].len;
        ts[t].src_offset = a->targets[t].src_offset;
        ts[t].dst_offset = a->targets[t].dst_offset;
    }
    op->kind = OP_SCATTER;
    op->src = a->src;
    op->has_imm = a->has_imm;
    op->imm = a->imm;
    op->u.s.t = ts;
    op->u.s.n = a->n_targets;
    op->u.s.pg = a->peers;
    op->u.s.kind = a->kind;
    op->u.s.nic = a->nic;
    r = submit(e, g, op, c);
    engine_leave(e);
    return r;
}

int te_write_imm(te_engine *e, uint32_t imm, const te_mr_desc *dst, te_route route,
                 const te_completion *c)
{
    static const char fn[] = "te_write_imm";
    ENTER(e, fn);
    eng_group *g = e->groups[0];
    int r;
    if ((r = check_dst(g, dst, 0, 0, fn, "dst"))) FAIL(r);
    if ((r = check_route(g, route, fn))) FAIL(r);
    eng_op *op = op_new(g);
    if (!op) FAIL(-ENOMEM);
    op->kind = OP_IMM;
    op_set_dst(op, dst);
    op->has_imm = true;
    op->imm = imm;
    op->u.w.route = route;
    r = submit(e, g, op, c);
    engine_leave(e);
    return r;
}

int te_barrier(te_engine *e, uint32_t imm, const te_mr_desc *dsts, size_t n, te_route route,
               const te_completion *c)
{
    static const char fn[] = "te_barrier";
    ENTER(e, fn);
    if (n && !dsts) FAIL(tn_err(-EINVAL, "te_barrier: dsts is NULL with n = %zu", n));
    eng_group *g = e->groups[0];
    int r;
    if (route.kind == TE_ROUTE_SHARDED && route.n > 1)
        FAIL(tn_err(-EINVAL, "te_barrier: sharded barriers take n = 0 or 1 (each destination gets "
                             "exactly one immediate)"));
    if ((r = check_route(g, route, fn))) FAIL(r);
    for (size_t k = 0; k < n; k++) {
        char what[32];
        snprintf(what, sizeof what, "dsts[%zu]", k);
        if ((r = check_dst(g, &dsts[k], 0, 0, fn, what))) FAIL(r);
    }
    eng_op *op = op_new(g);
    te_mr_desc *copy = malloc((n ? n : 1) * sizeof *copy);
    if (!op || !copy) {
        free(op);
        free(copy);
        FAIL(tn_err(-ENOMEM, "te_barrier: out of memory"));
    }
    if (n) memcpy(copy, dsts, n * sizeof *copy);
    op->kind = OP_BARRIER;
    op->has_imm = true;
    op->imm = imm;
    op->u.b.dsts = copy;
    op->u.b.n = n;
    op->u.b.route = route;
    r = submit(e, g, op, c);
    engine_leave(e);
    return r;
}

int te_send(te_engine *e, const te_addr *dst, const void *buf, size_t len, const te_completion *c)
{
    static const char fn[] = "te_send";
    ENTER(e, fn);
    if (!dst) FAIL(tn_err(-EINVAL, "te_send: dst is NULL"));
    if (dst->len == 0 || dst->transport != e->groups[0]->nic[0].addr.transport)
        FAIL(tn_err(-EINVAL, "te_send: dst is not an address of this transport"));
    if (len && !buf) FAIL(tn_err(-EINVAL, "te_send: buf is NULL with len %zu", len));
    if (len > e->max_msg_size)
        FAIL(tn_err(-EMSGSIZE, "te_send: %zu bytes exceed max_msg_size %u", len, e->max_msg_size));
    eng_op *op = op_new(e->groups[0]);
    void *copy = malloc(len ? len : 1);
    if (!op || !copy) {
        free(op);
        free(copy);
        FAIL(tn_err(-ENOMEM, "te_send: out of memory"));
    }
    if (len) memcpy(copy, buf, len);
    op->kind = OP_SEND;
    op->u.send.buf = copy;
    op->u.send.len = len;
    op->u.send.to = *dst;
    int r = submit(e, e->groups[0], op, c);
    engine_leave(e);
    return r;
}
