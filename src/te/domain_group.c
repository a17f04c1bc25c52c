/* A DomainGroup applies the sharding rule (sharding.c, over plain inputs) to a live
 * group: it turns an operation into portions, resolves the peers the portions need, and
 * builds each work request.
 *
 * Every work request a NIC posts uses that NIC's local descriptor, that NIC's resolved
 * peer (the destination descriptor's entry of the same index) and that entry's remote
 * key — the original's B1/B4 mix-ups cannot happen because there is one index, `nic`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/engine_internal.h"

static unsigned addr_hash(const te_addr *a)
{
    uint32_t h = 2166136261u ^ a->transport;
    for (unsigned k = 0; k < a->len; k++) h = (h ^ a->bytes[k]) * 16777619u;
    return h % PEER_CACHE_BUCKETS;
}

int dg_resolve(eng_group *g, uint32_t nic, const te_addr *addr, tp_peer *out)
{
    eng_nic *n = &g->nic[nic];
    /* Runs on the worker for every portion; streams to one peer skip the hash (2 % of a
     * 4 KiB write's worker time in a profile). */
    eng_peer_cache_entry *hit = NULL;
    if (n->last_peer && te_addr_equal(&n->last_peer->addr, addr)) hit = n->last_peer;
    unsigned b = 0;
    if (!hit) {
        b = addr_hash(addr); /* a byte loop over the address: not on the repeat path */
        for (eng_peer_cache_entry *x = n->peers[b]; x; x = x->next)
            if (te_addr_equal(&x->addr, addr)) {
                n->last_peer = hit = x;
                break;
            }
    }
    if (hit) {
        if (hit->final)
            return tn_err(-ECONNRESET, "the peer is gone (te_peer_state: TE_PEER_DOWN)");
        *out = hit->peer;
        return 0;
    }
    tp_peer p;
    int r = n->ops->resolve(n->tp, addr, &p);
    if (r) {
        if (peers_status_is_gone(r)) peers_note(g->e, addr, TE_PEER_DOWN);
        return r;
    }
    eng_peer_cache_entry *x = malloc(sizeof *x);
    if (!x) return tn_err(-ENOMEM, "out of memory");
    x->addr = *addr;
    x->peer = p;
    x->down = x->final = x->no_probe = false;
    peers_note(g->e, addr, TE_PEER_UP);
    x->next = n->peers[b];
    n->peers[b] = x;
    n->last_peer = x;
    *out = p;
    return 0;
}

/* The plain inputs of the sharding rule for one operation of group g. */
static shard_input shard_input_of(const eng_group *g, const eng_op *op)
{
    shard_input in = {.kind = op->kind, .n_nics = g->n_nics, .rr = g->rr};
    switch (op->kind) {
    case OP_WRITE:
    case OP_IMM:
        in.route = op->u.w.route;
        in.items = op->u.w.shards;
        break;
    case OP_PAGED:
        in.items = op->u.p.sp->n;
        break;
    case OP_SCATTER:
        in.scatter = op->u.s.kind;
        in.nic = op->u.s.nic;
        in.items = op->u.s.n;
        break;
    case OP_BARRIER:
        in.route = op->u.b.route;
        in.items = op->u.b.n;
        break;
    default:
        break;
    }
    return in;
}

static int resolve_dst(eng_group *g, eng_op *op, const te_mr_desc *d, uint32_t nic, tp_peer *out,
                       char *msg, size_t cap)
{
    int r = dg_resolve(g, nic, &d->nic[nic].addr, out);
    if (r) snprintf(msg, cap, "NIC %u: cannot reach peer: %s", nic, te_last_error());
    return r;
}

int dg_plan(eng_group *g, eng_op *op, char *msg, size_t cap)
{
    uint32_t N = g->n_nics;
    if (op->kind < OP_WRITE || op->kind > OP_SEND)
        return snprintf(msg, cap, "internal: unknown op kind %d", op->kind), -EINVAL;
    shard_input in = shard_input_of(g, op);
    shard_plan plan;
    shard_plan_compute(&in, &plan);
    g->rr = plan.rr_next;
    op->n_portions = plan.n_spans;
    for (uint32_t k = 0; k < plan.n_spans; k++) {
        eng_portion *p = &op->portion[k];
        memset(p, 0, sizeof *p);
        p->op = op;
        p->nic = plan.span[k].nic;
        p->first = plan.span[k].first;
        p->count = plan.span[k].count;
    }
    switch (op->kind) {
    case OP_SCATTER: {
        size_t T = op->u.s.n;
        if (op->u.s.pg) {
            op->u.s.peers = op->u.s.pg->resolved; /* borrowed, pre-resolved */
            return 0;
        }
        op->u.s.peers = calloc(T * N, sizeof(tp_peer));
        if (!op->u.s.peers) return snprintf(msg, cap, "out of memory"), -ENOMEM;
        for (uint32_t pi = 0; pi < op->n_portions; pi++) {
            eng_portion *p = &op->portion[pi];
            for (uint32_t j = 0; j < p->count; j++) {
                size_t t = p->first + j;
                int r = resolve_dst(g, op, &op->u.s.t[t].dst, p->nic, &op->u.s.peers[t * N + p->nic],
                                    msg, cap);
                if (r) return r;
            }
        }
        return 0;
    }
    case OP_BARRIER: {
        size_t n = op->u.b.n;
        op->u.b.peers = calloc(n ? n * N : 1, sizeof(tp_peer));
        if (!op->u.b.peers) return snprintf(msg, cap, "out of memory"), -ENOMEM;
        for (uint32_t pi = 0; pi < op->n_portions; pi++) {
            eng_portion *p = &op->portion[pi];
            for (uint32_t j = 0; j < p->count; j++) {
                size_t d = p->first + j;
                int r = resolve_dst(g, op, &op->u.b.dsts[d], p->nic, &op->u.b.peers[d * N + p->nic],
                                    msg, cap);
                if (r) return r;
            }
        }
        return 0;
    }
    case OP_SEND: {
        int r = dg_resolve(g, 0, &op->u.send.to, &op->peer[0]);
        if (r) snprintf(msg, cap, "send: cannot reach peer: %s", te_last_error());
        return r;
    }
    default:
        break;
    }
    /* Single-destination operations: resolve the destination once per NIC used. */
    for (uint32_t pi = 0; pi < op->n_portions; pi++) {
        uint32_t nic = op->portion[pi].nic;
        int r = resolve_dst(g, op, &op->dst, nic, &op->peer[nic], msg, cap);
        if (r) return r;
    }
    return 0;
}

void dg_build(eng_group *g, eng_portion *p, uint32_t j, tp_write *w)
{
    eng_op *op = p->op;
    uint32_t nic = p->nic, N = g->n_nics;
    uint32_t i = p->first + j;
    memset(w, 0, sizeof *w);
    w->has_imm = op->has_imm;
    w->imm = op->imm;
    w->ctx = p; /* CTX_PORTION tag is 0 */
    switch (op->kind) {
    case OP_WRITE: {
        shard_range sr = op->u.w.route.kind == TE_ROUTE_PINNED
                             ? (shard_range){0, op->u.w.len}
                             : shard_write_range(op->u.w.len, op->u.w.shard, i);
        uint64_t off = sr.off, len = sr.len;
        w->local = (uint8_t *)op->src->ptr + op->u.w.src_off + off;
        w->len = len;
        w->local_desc = op->src->nic[nic].desc;
        w->peer = op->peer[nic];
        w->remote_base = op->dst.base;
        w->remote_off = op->u.w.dst_off + off;
        w->rkey = op->dst.nic[nic].rkey;
        break;
    }
    case OP_PAGED: {
        uint32_t si = op->u.p.sp->idx[i], di = op->u.p.dp->idx[i];
        w->local = (uint8_t *)op->src->ptr + op->u.p.s_off + op->u.p.s_stride * si;
        w->len = op->u.p.len;
        w->local_desc = op->src->nic[nic].desc;
        w->peer = op->peer[nic];
        w->remote_base = op->dst.base;
        w->remote_off = op->u.p.d_off + op->u.p.d_stride * di;
        w->rkey = op->dst.nic[nic].rkey;
        break;
    }
    case OP_SCATTER: {
        eng_target *t = &op->u.s.t[i];
        shard_range sr = op->u.s.kind == TE_SCATTER_SHARD_BYTES ? shard_scatter_slice(t->len, N, nic)
                                                                : (shard_range){0, t->len};
        uint64_t off = sr.off, len = sr.len;
        w->local = (uint8_t *)op->src->ptr + t->src_offset + off;
        w->len = len;
        w->local_desc = op->src->nic[nic].desc;
        w->peer = op->u.s.peers[(size_t)i * N + nic];
        w->remote_base = t->dst.base;
        w->remote_off = t->dst_offset + off;
        w->rkey = t->dst.nic[nic].rkey;
        break;
    }
    case OP_IMM:
        w->peer = op->peer[nic];
        w->remote_base = op->dst.base;
        w->rkey = op->dst.nic[nic].rkey;
        break;
    case OP_BARRIER:
        w->peer = op->u.b.peers[(size_t)i * N + nic];
        w->remote_base = op->u.b.dsts[i].base;
        w->rkey = op->u.b.dsts[i].nic[nic].rkey;
        break;
    default:
        break;
    }
    if (w->len == 0) w->local = NULL;
}
