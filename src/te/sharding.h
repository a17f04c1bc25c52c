/* The sharding rule of a DomainGroup as plain functions: which NIC of a group posts which
 * work requests of an operation, which bytes each request moves, how far the group's
 * round-robin cursor advances, and how many immediates the receiver sees. No engine
 * state: domain_group.c feeds it from a live group, tests/unit/test_sharding.c from
 * plain numbers. The table it implements is in docs/multi-nic.md and te.h. */
#ifndef TENDRIL_TE_SHARDING_H
#define TENDRIL_TE_SHARDING_H

#include <stdbool.h>
#include <stdint.h>

#include "tendril/te.h"

/* Operation kinds of the engine (eng_op.kind). */
enum op_kind { OP_WRITE = 1, OP_PAGED, OP_SCATTER, OP_IMM, OP_BARRIER, OP_SEND };

/* Shards of a sharded single write are multiples of this (the last one excepted). */
#define SHARD_ALIGN 8192u

typedef struct shard_input {
    uint8_t kind;            /* enum op_kind */
    uint32_t n_nics;         /* N, 1..TE_MAX_NICS */
    uint32_t rr;             /* the group's round-robin cursor, < N */
    te_route route;          /* OP_WRITE, OP_IMM, OP_BARRIER */
    te_scatter_kind scatter; /* OP_SCATTER */
    uint32_t nic;            /* OP_SCATTER with TE_SCATTER_SINGLE */
    uint64_t items;          /* OP_WRITE: shards (shard_write_count); OP_PAGED: pages;
                                OP_SCATTER: targets; OP_BARRIER: destinations */
} shard_input;

/* Work requests [first, first+count) of the operation's index space, posted by `nic`.
 * Index spaces: write: shard; paged: page; scatter: target (every NIC of SHARD_BYTES
 * spans all targets); barrier: destination; imm and send: 0. */
typedef struct shard_span {
    uint32_t nic, first, count;
} shard_span;

typedef struct shard_plan {
    uint32_t n_spans;               /* at most one span per NIC */
    shard_span span[TE_MAX_NICS];
    uint32_t rr_next;               /* the cursor after this operation */
    uint64_t wrs;                   /* work requests posted, zero-length ones included */
    uint64_t imms;                  /* immediates the receiver sees, when the op has one */
} shard_plan;

/* Plans an operation whose inputs were validated (NIC indices < N, N >= 1). */
void shard_plan_compute(const shard_input *in, shard_plan *out);

/* The byte rules are inline: they run per work request on the worker. */

/* Shards of a single write: 1 if pinned, route.n, or every NIC for route.n == 0. */
static inline uint32_t shard_write_count(te_route route, uint32_t n_nics)
{
    if (route.kind == TE_ROUTE_PINNED) return 1;
    return route.n ? route.n : n_nics;
}

/* Bytes per shard of a sharded write: ceil(len / shards) rounded up to SHARD_ALIGN.
 * (ceil, not the original's floor: floor could drop the tail, e.g. 16385 bytes over 2
 * shards. Sizes are identical whenever the original covered every byte.) */
static inline uint64_t shard_write_size(uint64_t len, uint32_t shards)
{
    uint64_t per = (len + shards - 1) / shards;
    return (per + SHARD_ALIGN - 1) / SHARD_ALIGN * SHARD_ALIGN;
}

typedef struct shard_range {
    uint64_t off, len;  /* relative to the request's (or target's) offsets */
} shard_range;

/* Shard k of a sharded write of `len` bytes in shards of `size`: [k*size, min(..., len));
 * an empty shard is {0, 0} (a zero-length write at the request's offsets). */
static inline shard_range shard_write_range(uint64_t len, uint64_t size, uint32_t k)
{
    uint64_t off = (uint64_t)k * size;
    if (off >= len) return (shard_range){0, 0};
    return (shard_range){off, len - off < size ? len - off : size};
}

/* Slice of NIC `nic` of one SHARD_BYTES scatter target: floor(len/N) each, the last NIC
 * also takes the remainder. */
static inline shard_range shard_scatter_slice(uint64_t len, uint32_t n_nics, uint32_t nic)
{
    uint64_t slice = len / n_nics;
    uint64_t off = slice * nic;
    return (shard_range){off, nic == n_nics - 1 ? len - off : slice};
}

#endif
