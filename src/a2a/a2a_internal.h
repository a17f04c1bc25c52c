/*
 * Host side of the all-to-all, shared by its files:
 *   a2a_config.c     configuration checks, slice/node topology, error texts
 *   a2a_memory.c     CUDA allocations (through src/cuda's loader): shared block, workspace,
 *                    host-mapped words, RDMA stage/rblock
 *   a2a_bootstrap.c  what the ranks exchange through the caller's all-gather
 *   a2a_rdma.c       RDMA side of connect: buffer kind, registration, proxy
 *   a2a_trace.c      per-iteration trace: kernel stamps, proxy times, clock sync
 *   a2a_share.c      NVLink side of connect: fd exchange over Unix sockets
 *   a2a_context.c    create / connect / destroy, queries, launches
 * Errors follow the core convention (src/core/error.h): tn_err() records the calling
 * thread's message and returns the negative errno; a2a_last_error() reads it.
 */
#ifndef TENDRIL_A2A_INTERNAL_H
#define TENDRIL_A2A_INTERNAL_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include <tendril/a2a.h>
#include <tendril/te.h>

#include "a2a_kernels.h"
#include "core/error.h"
#include "cuda/cuda_loader.h"

struct a2a_px;

/* Where this rank sits: physical rank/world, node, slice (docs/a2a-internode.md "Ranks"). */
typedef struct a2a_topo {
    int rank, world;      /* physical */
    int rpn;              /* ranks per node N */
    int dp;               /* dp_size D */
    int node;             /* rank / N */
    int srank, sworld;    /* slice rank rank / D, slice world W / D */
    int dp_rank;          /* rank % D */
    uint64_t rdma_mask;   /* bit q: slice peer q is on another node */
    int n_nvl, n_rdma;    /* slice peers (not self) over NVLink / RDMA */
} a2a_topo;

enum { A2A_KIND_NONE = 0, A2A_KIND_GPU = 1, A2A_KIND_HOST = 2 };

struct a2a_ctx {
    a2a_config cfg;       /* copy; cfg.rendezvous points at rdv */
    char rdv[96];
    a2a_topo t;
    int dev, nblocks;
    uint32_t L, nloc;
    uint64_t layout_hash;
    /* shared block (cuMemCreate, exported as a POSIX fd) */
    size_t shared_bytes;
    tcu_mem_handle handle;
    uint64_t base;
    int fd;
    tcu_mem_handle peer_handle[A2A_MAX_RANKS]; /* by slice peer */
    uint64_t peer_base[A2A_MAX_RANKS];
    size_t peer_size[A2A_MAX_RANKS];
    int connected;
    /* private */
    void *ws;
    size_t ws_bytes;
    uint32_t *host_words;     /* [0] error, [1] abort: host-mapped */
    uint64_t host_words_dev;
    int next_phase;
    /* RDMA (a2a_rdma.c); all zero/NULL without RDMA peers */
    int rdma_kind;            /* A2A_KIND_* */
    void *stage_host;         /* host mode: pinned host memory; gpu mode: NULL */
    void *stage_dev_alloc;    /* gpu mode: tcu_dev_alloc'ed stage */
    uint64_t stage_dev;       /* stage as kernels see it */
    void *rblock_host;        /* host mode: pinned host memory */
    uint64_t rblock_dev;      /* rblock as kernels see it (gpu mode: base) */
    te_mr *stage_mr, *rblock_mr;
    te_mr_desc rblock_desc;
    int32_t *px_tx_host;
    uint64_t px_tx_dev;
    void *px_flag_table;      /* device [A2A_PX_N][A2A_MAX_RANKS] pointers */
    struct a2a_px *px;
    /* first error the proxy reported (set once, read by a2a_poll_error) */
    int px_err_claimed;       /* atomic: a report owns px_msg */
    int px_err;               /* atomic, release after px_msg is written */
    char px_msg[400];
    /* trace (a2a_trace.c) */
    a2a_stamp_rec *stamp_host;  /* host-mapped ring the kernels stamp */
    uint64_t stamp_dev;
    uint64_t *probe_host;       /* [0]: the probe's reading, [1]: go */
    uint64_t probe_dev;
    int64_t clock_off;          /* globaltimer - CLOCK_MONOTONIC, ns (0 until synced) */
    uint64_t clock_err;         /* its uncertainty, +/- ns */
    int clock_synced;
    a2a_kparams kp;
};

/* ---- a2a_config.c */
/* Copies the caller's config (struct_size growth rules) into *out and checks it: 0 or
 * -EINVAL with a message naming the field. Touches no GPU. */
int a2a_config_load(const a2a_config *in, a2a_config *out);
/* Hash of what every rank must agree on (compared at connect). cfg as loaded. */
uint64_t a2a_config_hash(const a2a_config *cfg);
/* Topology of cfg->rank (cfg already checked). */
void a2a_topo_of(const a2a_config *cfg, a2a_topo *t);
/* Physical rank of slice peer q. */
static inline int a2a_phys(const a2a_topo *t, int q) { return q * t->dp + t->dp_rank; }
static inline int a2a_is_rdma(const a2a_topo *t, int q) { return (int)((t->rdma_mask >> q) & 1u); }

/* ---- a2a_memory.c */
/* Shared block of `bytes` (rounded up to the granularity) on c->dev, mapped and zeroed,
 * exported as a POSIX fd; `rdma_capable` asks for GPUDirect RDMA capability where the
 * device offers it. Fills handle, base, fd, shared_bytes. The device's context must be
 * current (tcu_ctx_enter). */
int a2a_mem_shared_create(a2a_ctx *c, size_t bytes, int rdma_capable);
/* Imports a peer's fd and maps it for our device (c->peer_handle/base/size[q]). */
int a2a_mem_peer_map(a2a_ctx *c, int q, int fd, size_t size);
/* Unmaps every peer block (not ours). */
void a2a_mem_peers_unmap(a2a_ctx *c);
/* Unmaps every peer block and frees the shared block. */
void a2a_mem_shared_free(a2a_ctx *c);
/* Device memory, zeroed (tcu_dev_alloc) / pinned host memory mapped for the device,
 * zeroed. Both hold a reference to the device's primary context until freed. */
int a2a_mem_dev_alloc(a2a_ctx *c, size_t bytes, void **out, const char *what);
int a2a_mem_host_alloc(a2a_ctx *c, size_t bytes, void **host, uint64_t *dev, const char *what);

/* ---- a2a_bootstrap.c */
/* Exchanges every rank's record through cfg->allgather and checks them against ours:
 * configuration, node identity (ranks the config puts on one node run on one host), the
 * rendezvous name (rank 0's when cfg->rendezvous is NULL: copied into c->rdv), and
 * every rank's `status` (a rank that already failed still takes part, with its error,
 * so that no rank waits for it). With RDMA peers, fills addr[q] and desc[q] for every
 * RDMA slice peer q. *gather_failed is set when the callback itself failed (no further
 * all-gather is attempted then). */
int a2a_boot_exchange(a2a_ctx *c, int status, te_addr *addr, te_mr_desc *desc, int *gather_failed);
/* Last step of an all-gather connect: every rank contributes its result; returns rc, or
 * -ECONNABORTED naming the first rank that failed. */
int a2a_boot_finish(a2a_ctx *c, int rc);

/* ---- a2a_context.c: the runtime's device around launches */
/* Makes the context's device the runtime's current one; *prev: the one before. */
int a2a_enter_dev(const a2a_ctx *c, int *prev);
void a2a_leave_dev(const a2a_ctx *c, int prev);
/* A CUDA runtime error as the core convention's negative errno, with its text. */
int a2a_rt_fail(cudaError_t e, const char *what);

/* ---- a2a_trace.c: the per-iteration trace (a2a_phase_trace_get) */
/* Host-mapped stamp ring for the kernels (c->kp.px_stamp) and the clock probe's words;
 * then one clock sync. With RDMA peers only; 0 or a negative errno. */
int a2a_trace_setup(a2a_ctx *c);
void a2a_trace_teardown(a2a_ctx *c);

/* ---- a2a_rdma.c */
/* With RDMA peers: chooses the buffer kind (a loopback write of at most timeout_ms
 * decides whether GPU memory works), allocates and registers stage and rblock
 * (c->rblock_desc) and the proxy's tables. Nothing to do (0) without RDMA peers. */
int a2a_rdma_prepare(a2a_ctx *c, int timeout_ms);
/* Starts the proxy for the peers' rblocks and fills the kernels' RDMA fields. */
int a2a_rdma_start(a2a_ctx *c, te_addr *addr, te_mr_desc *desc);
/* Stops the proxy and frees stage, rblock and the tables (idempotent). */
void a2a_rdma_teardown(a2a_ctx *c);
/* The proxy's first error (0 if none); a2a_poll_error reports it. */
int a2a_rdma_error(a2a_ctx *c);

/* ---- a2a_share.c: see a2a_share.h */

#endif
