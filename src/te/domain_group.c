/* The sharding rules of a DomainGroup: how one operation is split over the NICs of a
 * group, and what each work request looks like. This is the only file that knows them.
 *
 * Every work request a NIC posts uses that NIC's local descriptor, that NIC's resolved
 * peer (the destination descriptor's entry of the same index) and that entry's remote
 * key — the original's B1/B4 mix-ups cannot happen because there is one index, `nic`.
 *
 *   op          portions (NIC, work requests)                     cursor advance
 *   write s     shard k on NIC (rr+k)%N, 1 WR each                 s
 *   write pin d NIC d, 1 WR                                        0
 *   paged P     chunk=ceil(P/N); chunk c on NIC (rr+c)%N           #chunks
 *   scatter PEERS  targets in N contiguous ranges, range k on NIC k   0
 *   scatter BYTES  every NIC k writes slice k of every target       0
 *               (slice = floor(L/N), the last NIC also takes the remainder: every byte
 *                is sent, and the immediate count stays N per target)
 *   scatter SINGLE all on NIC d                                    0
 *   imm         NIC d (pinned) or NIC rr (sharded)                 1 if sharded
 *   barrier n   pinned: all on NIC d; sharded: chunk=ceil(n/N), chunk c on NIC (rr+c)%N
 *   send        NIC 0                                              0
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

int dg_resolve(te_group *g, uint32_t nic, const te_addr *addr, tp_peer *out)
{
    te_nic_state *n = &g->nic[nic];
    /* Runs on the worker for every portion; streams to one peer skip the hash (2 % of a
     * 4 KiB write's worker time in a profile). */
    if (n->last_peer && te_addr_equal(&n->last_peer->addr, addr)) {
        *out = n->last_peer->peer;
        return 0;
    }
    unsigned b = addr_hash(addr);
    for (te_peer_cache_entry *x = n->peers[b]; x; x = x->next)
        if (te_addr_equal(&x->addr, addr)) {
            n->last_peer = x;
            *out = x->peer;
            return 0;
        }
    tp_peer p;
    int r = n->ops->resolve(n->tp, addr, &p);
    if (r) return r;
    te_peer_cache_entry *x = malloc(sizeof *x);
    if (!x) return te_err(-ENOMEM, "out of memory");
    x->addr = *addr;
    x->peer = p;
    x->next = n->peers[b];
    n->peers[b] = x;
    n->last_peer = x;
    *out = p;
    return 0;
}

static void add_portion(te_op *op, uint32_t nic, uint32_t first, uint32_t count)
{
    te_portion *p = &op->portion[op->n_portions++];
    memset(p, 0, sizeof *p);
    p->op = op;
    p->nic = nic;
    p->first = first;
    p->count = count;
}

static uint32_t ceil_div(uint64_t a, uint64_t b) { return (uint32_t)((a + b - 1) / b); }

/* Splits `items` into chunks of ceil(items/N) and assigns chunk c to NIC (start+c)%N. */
static uint32_t plan_chunks(te_op *op, uint32_t n_nics, uint32_t start, uint64_t items)
{
    if (items == 0) return 0;
    uint32_t chunk = ceil_div(items, n_nics);
    uint32_t chunks = ceil_div(items, chunk);
    for (uint32_t c = 0; c < chunks; c++) {
        uint64_t first = (uint64_t)c * chunk;
        uint64_t cnt = items - first < chunk ? items - first : chunk;
        add_portion(op, (start + c) % n_nics, (uint32_t)first, (uint32_t)cnt);
    }
    return chunks;
}

static int resolve_dst(te_group *g, te_op *op, const te_mr_desc *d, uint32_t nic, tp_peer *out,
                       char *msg, size_t cap)
{
    int r = dg_resolve(g, nic, &d->nic[nic].addr, out);
    if (r) snprintf(msg, cap, "NIC %u: cannot reach peer: %s", nic, te_last_error());
    return r;
}

int dg_plan(te_group *g, te_op *op, char *msg, size_t cap)
{
    uint32_t N = g->n_nics;
    op->n_portions = 0;
    switch (op->kind) {
    case OP_WRITE: {
        if (op->u.w.route.kind == TE_ROUTE_PINNED) {
            add_portion(op, op->u.w.route.n, 0, 1);
        } else {
            uint32_t s = op->u.w.shards;
            for (uint32_t k = 0; k < s; k++) add_portion(op, (g->rr + k) % N, k, 1);
            g->rr = (g->rr + s) % N;
        }
        break;
    }
    case OP_PAGED: {
        uint64_t P = op->u.p.sp->n;
        uint32_t chunks = plan_chunks(op, N, g->rr, P);
        g->rr = (g->rr + chunks) % N;
        break;
    }
    case OP_SCATTER: {
        size_t T = op->u.s.n;
        if (op->u.s.kind == TE_SCATTER_SHARD_PEERS) plan_chunks(op, N, 0, T);
        else if (op->u.s.kind == TE_SCATTER_SHARD_BYTES)
            for (uint32_t k = 0; k < N; k++) add_portion(op, k, 0, (uint32_t)T);
        else add_portion(op, op->u.s.nic, 0, (uint32_t)T);
        if (op->u.s.pg) {
            op->u.s.peers = op->u.s.pg->resolved; /* borrowed, pre-resolved */
            return 0;
        }
        op->u.s.peers = calloc(T * N, sizeof(tp_peer));
        if (!op->u.s.peers) return snprintf(msg, cap, "out of memory"), -ENOMEM;
        for (uint32_t pi = 0; pi < op->n_portions; pi++) {
            te_portion *p = &op->portion[pi];
            for (uint32_t j = 0; j < p->count; j++) {
                size_t t = p->first + j;
                int r = resolve_dst(g, op, &op->u.s.t[t].dst, p->nic, &op->u.s.peers[t * N + p->nic],
                                    msg, cap);
                if (r) return r;
            }
        }
        return 0;
    }
    case OP_IMM: {
        te_route r = op->u.w.route;
        uint32_t nic = r.kind == TE_ROUTE_PINNED ? r.n : g->rr;
        if (r.kind != TE_ROUTE_PINNED) g->rr = (g->rr + 1) % N;
        add_portion(op, nic, 0, 1);
        break;
    }
    case OP_BARRIER: {
        size_t n = op->u.b.n;
        if (op->u.b.route.kind == TE_ROUTE_PINNED) {
            if (n) add_portion(op, op->u.b.route.n, 0, (uint32_t)n);
        } else {
            uint32_t chunks = plan_chunks(op, N, g->rr, n);
            g->rr = (g->rr + chunks) % N;
        }
        op->u.b.peers = calloc(n ? n * N : 1, sizeof(tp_peer));
        if (!op->u.b.peers) return snprintf(msg, cap, "out of memory"), -ENOMEM;
        for (uint32_t pi = 0; pi < op->n_portions; pi++) {
            te_portion *p = &op->portion[pi];
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
        add_portion(op, 0, 0, 1);
        int r = dg_resolve(g, 0, &op->u.send.to, &op->peer[0]);
        if (r) snprintf(msg, cap, "send: cannot reach peer: %s", te_last_error());
        return r;
    }
    default:
        return snprintf(msg, cap, "internal: unknown op kind %d", op->kind), -EINVAL;
    }
    /* Single-destination operations: resolve the destination once per NIC used. */
    for (uint32_t pi = 0; pi < op->n_portions; pi++) {
        uint32_t nic = op->portion[pi].nic;
        int r = resolve_dst(g, op, &op->dst, nic, &op->peer[nic], msg, cap);
        if (r) return r;
    }
    return 0;
}

void dg_build(te_group *g, te_portion *p, uint32_t j, tp_write *w)
{
    te_op *op = p->op;
    uint32_t nic = p->nic, N = g->n_nics;
    uint32_t i = p->first + j;
    memset(w, 0, sizeof *w);
    w->has_imm = op->has_imm;
    w->imm = op->imm;
    w->ctx = p; /* CTX_PORTION tag is 0 */
    switch (op->kind) {
    case OP_WRITE: {
        uint64_t off = (uint64_t)i * op->u.w.shard;
        uint64_t len = 0;
        if (op->u.w.route.kind == TE_ROUTE_PINNED) {
            off = 0;
            len = op->u.w.len;
        } else if (off < op->u.w.len) {
            len = op->u.w.len - off < op->u.w.shard ? op->u.w.len - off : op->u.w.shard;
        } else {
            off = 0; /* empty shard: zero-length write at the request's offsets */
        }
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
        te_target *t = &op->u.s.t[i];
        uint64_t off = 0, len = t->len;
        if (op->u.s.kind == TE_SCATTER_SHARD_BYTES) {
            uint64_t slice = t->len / N;
            off = slice * nic;
            len = nic == N - 1 ? t->len - off : slice;
        }
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
