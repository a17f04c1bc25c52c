/* The sharding rule over plain inputs (see sharding.h; the table is in docs/multi-nic.md).
 *
 *   op          spans (NIC, work requests)                        cursor advance
 *   write s     shard k on NIC (rr+k)%N, 1 WR each                 s
 *   write pin d NIC d, 1 WR                                        0
 *   paged P     chunk=ceil(P/N); chunk c on NIC (rr+c)%N           #chunks
 *   scatter PEERS  targets in chunks of ceil(T/N), chunk k on NIC k   0
 *   scatter BYTES  every NIC k writes slice k of every target       0
 *   scatter SINGLE all on NIC d                                    0
 *   imm         NIC d (pinned) or NIC rr (sharded)                 1 if sharded
 *   barrier n   pinned: all on NIC d; sharded: chunk=ceil(n/N), chunk c on NIC (rr+c)%N
 *   send        NIC 0                                              0
 */
#include "te/sharding.h"

static uint64_t ceil_div(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

static void add_span(shard_plan *p, uint32_t nic, uint64_t first, uint64_t count)
{
    p->span[p->n_spans++] = (shard_span){nic, (uint32_t)first, (uint32_t)count};
    p->wrs += count;
}

/* Splits `items` into chunks of ceil(items/N); chunk c goes to NIC (start+c)%N. Returns
 * the number of chunks. */
static uint32_t add_chunks(shard_plan *p, uint32_t n_nics, uint32_t start, uint64_t items)
{
    if (items == 0) return 0;
    uint64_t chunk = ceil_div(items, n_nics);
    uint32_t chunks = (uint32_t)ceil_div(items, chunk);
    for (uint32_t c = 0; c < chunks; c++) {
        uint64_t first = (uint64_t)c * chunk;
        add_span(p, (start + c) % n_nics, first, items - first < chunk ? items - first : chunk);
    }
    return chunks;
}

void shard_plan_compute(const shard_input *in, shard_plan *p)
{
    uint32_t N = in->n_nics, rr = in->rr;
    bool pinned = in->route.kind == TE_ROUTE_PINNED;
    p->n_spans = 0; /* spans past n_spans are left as they are */
    p->rr_next = rr;
    p->wrs = p->imms = 0;
    switch (in->kind) {
    case OP_WRITE:
        if (pinned) {
            add_span(p, in->route.n, 0, 1);
        } else {
            for (uint32_t k = 0; k < in->items; k++) add_span(p, (rr + k) % N, k, 1);
            p->rr_next = (uint32_t)((rr + in->items) % N);
        }
        break;
    case OP_PAGED:
        p->rr_next = (rr + add_chunks(p, N, rr, in->items)) % N;
        break;
    case OP_SCATTER:
        if (in->scatter == TE_SCATTER_SHARD_PEERS) add_chunks(p, N, 0, in->items);
        else if (in->scatter == TE_SCATTER_SHARD_BYTES)
            for (uint32_t k = 0; k < N; k++) add_span(p, k, 0, in->items);
        else add_span(p, in->nic, 0, in->items);
        break;
    case OP_IMM:
        add_span(p, pinned ? in->route.n : rr, 0, 1);
        if (!pinned) p->rr_next = (rr + 1) % N;
        break;
    case OP_BARRIER:
        if (pinned) {
            if (in->items) add_span(p, in->route.n, 0, in->items);
        } else {
            p->rr_next = (rr + add_chunks(p, N, rr, in->items)) % N;
        }
        break;
    case OP_SEND:
        add_span(p, 0, 0, 1);
        return; /* a send carries no immediate */
    default:
        return;
    }
    p->imms = p->wrs; /* every work request of a one-sided op carries the immediate */
}
