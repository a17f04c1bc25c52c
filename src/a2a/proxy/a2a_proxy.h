/*
 * PLACEHOLDER written by the host-context piece of issue 14 so that it compiles before
 * the proxy piece lands: the interface as docs/a2a-internode.md and the split
 * describe it. The proxy piece's own header replaces this file.
 *
 * The RDMA proxy of one all-to-all context: watches the kernels' doorbells, posts the
 * phase's writes from `stage` to the peers' rblocks, counts arrivals into GPU-visible
 * flags, and reports failures through on_error.
 */
#ifndef TENDRIL_A2A_PROXY_H
#define TENDRIL_A2A_PROXY_H

#include <stdint.h>

#include <tendril/te.h>

typedef struct a2a_px a2a_px;

/* Offsets and sizes of the shared-block layout (identical in stage and rblock). */
typedef struct a2a_px_layout {
    uint64_t off_cnt, off_meta, off_rows, off_wgt, off_part;
    uint32_t L, K, H, Tmax, row_bytes;
} a2a_px_layout;

typedef struct a2a_px_config {
    te_engine *engine;
    int rank, world;                /* slice rank and slice world */
    uint64_t rdma_mask;             /* bit q: slice peer q is an RDMA peer */
    te_mr *stage;                   /* local source block (registered) */
    const te_mr_desc *peer_rblock;  /* [world]: each RDMA peer's rblock (others unused) */
    const te_addr *peer_addr;       /* [world]: each RDMA peer's engine main address */
    a2a_px_layout layout;
    uint32_t imm_base;
    uint32_t timeout_ms;
    int32_t *tx;                    /* host pointer, [A2A_PX_N][A2A_MAX_RANKS] lengths */
    /* called at most once per failure, from an engine thread: must not block */
    void (*on_error)(void *arg, int err, const char *msg);
    void *err_arg;
} a2a_px_config;

int a2a_px_create(const a2a_px_config *cfg, a2a_px **out);
void a2a_px_destroy(a2a_px *px);
/* Device address of the doorbell word of phase (A2A_PX_*). */
uint64_t a2a_px_doorbell_device_ptr(const a2a_px *px, int phase);
/* Device address of the arrival epoch word of (phase, slice source), 0 if src is not an
 * RDMA peer. */
uint64_t a2a_px_flag_device_ptr(const a2a_px *px, int phase, int src);

#endif
