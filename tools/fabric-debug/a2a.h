/* fabric-debug's a2a workload: the client replays one rank's RDMA writes of an
 * all-to-all iteration (a2a_pattern.h) phase by phase, as the proxy posts them
 * (docs/a2a-internode.md, Signals): every write of the phase to every peer, each with an
 * immediate, then it waits until the server has counted all of the phase's immediates
 * (the server answers with one immediate), then the next phase. Once through the engine
 * (te_write, TE_ROUTE_SHARDED over the group's NICs) and once through plain libfabric
 * (fi_writemsg with FI_REMOTE_CQ_DATA, one endpoint), same sizes and offsets. */
#ifndef FABRIC_DEBUG_A2A_H
#define FABRIC_DEBUG_A2A_H

#include "a2a_pattern.h"
#include "raw.h"
#include "tendril/te.h"

/* Immediates: the writes of phase p carry A2A_IMM + p * 64 (source slot 0, as the
 * contract's imm_base + phase * A2A_MAX_RANKS + me); the server's answer to phase p is
 * A2A_ACK + p on the engine side, fabric-debug's PONG on the raw side. */
#define A2A_IMM 0x41320000u
#define A2A_ACK 0x41330000u

typedef struct a2a_io {
    te_engine *e;
    te_mr *src;
    const te_mr_desc *dst;
    te_counter *done;
    te_imm_counter *ack[A2A_PHASES];
    raw_ep *raw;
    const raw_region *rsrc;
    uint64_t raw_key, raw_base;
    int timeout_ms; /* per phase */
} a2a_io;

/* `iters` iterations; secs[it * A2A_PHASES + p] = phase p of iteration it, from the
 * first post to the server's answer (0 for a phase without writes). 0, or a negative
 * errno with a message on stderr. */
int a2a_run_engine(const a2a_io *io, const a2a_plan *p, int iters, double *secs);
int a2a_run_raw(const a2a_io *io, const a2a_plan *p, int iters, double *secs);

#endif
