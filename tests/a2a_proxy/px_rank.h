/* One rank of the proxy tests: an engine, a stage and an rblock in host memory laid out
 * like the all-to-all's shared block, and a proxy. The test plays the kernels: it fills
 * stage slots with content that every rank can recompute, writes the lengths into tx,
 * rings the doorbells, waits on the arrival flags and compares the whole rblock against a
 * mirror of what must be there (so bytes outside the written ranges are checked too).
 * Used in-process and by the child processes (pr_child_main). */
#ifndef TENDRIL_TEST_PX_RANK_H
#define TENDRIL_TEST_PX_RANK_H

#include <pthread.h>
#include <stdatomic.h>

#include "a2a_proxy.h"
#include "harness.h"

/* The test's shape: rows slots above 8 KiB (a sharded write then really splits over
 * two NICs), everything else small. */
#define PR_L 5
#define PR_K 3
#define PR_H 36
#define PR_TMAX 48
#define PR_ROW 208
#define PR_IMM_BASE 0x40000000u
/* Packed part rows (2-byte partials: H*2 instead of the fp32 stride H*4). */
#define PR_PART_PACKED (PR_H * 2)

typedef struct px_rank {
    int rank, world;
    uint64_t mask;
    te_engine *e;
    a2a_px_layout lay;
    uint32_t part_row; /* bytes per CMB row (lay.part_row_bytes, or H*4 when that is 0) */
    size_t bytes;
    uint8_t *stage, *rblock, *mirror;
    te_mr *ms, *mr;
    te_mr_desc desc; /* own rblock */
    int32_t tx[A2A_PX_N][A2A_PX_MAX_RANKS];
    a2a_px *px;
    pthread_mutex_t lock; /* errors seen through on_error */
    int n_err, first_code;
    char first_msg[512];
} px_rank;

/* rdma_mask of rank r when `per_node` consecutive ranks share a node (NVLink). */
uint64_t pr_mask(int r, int world, int per_node);
/* Length value of (epoch, phase, src -> dst): 0 and the maximum come up regularly. */
int32_t pr_len(uint64_t e, int phase, int src, int dst);
/* Engine and regions; part_row_bytes goes into the layout as is (0: the proxy's default,
 * H*4). 0, or -errno with the reason in why. */
int pr_open(px_rank *r, int rank, int world, uint64_t mask, uint32_t part_row_bytes, char *why,
            size_t cap);
/* The proxy, given every rank's rblock descriptor. */
int pr_connect(px_rank *r, const te_mr_desc *descs, bool app_forwards, char *why, size_t cap);
/* Fills the stage slots of `phase` for epoch e, writes tx (pr_len), rings. pr_ring only
 * rings. */
void pr_send_phase(px_rank *r, int phase, uint64_t e);
void pr_send(px_rank *r, uint64_t e);
void pr_ring(px_rank *r, int phase, uint64_t e);
/* Waits for every flag of epoch e (every phase, every RDMA source), updates the mirror
 * and compares the whole rblock. 0; else -errno and a reply line in why:
 * "fail PHASE SRC RC MS message" (a wait failed) or "err message" (bytes differ). */
int pr_recv(px_rank *r, uint64_t e, int timeout_ms, char *why, size_t cap);
/* rblock == mirror. */
int pr_check(px_rank *r, char *why, size_t cap);
/* Errors seen (n), waiting up to timeout_ms for the first one. */
int pr_errors(px_rank *r, int timeout_ms, int *code, char *msg, size_t cap);
void pr_close(px_rank *r);
void pr_free(px_rank *r);

/* Payload bytes `rank` sends over epochs [from, to] (what the proxy's stats must count):
 * every write of every phase to every RDMA peer, at part_row bytes per CMB row. */
uint64_t pr_sent_bytes(int rank, int world, uint64_t mask, uint32_t part_row, uint64_t from, uint64_t to);

/* The child: "--child rank 'R W PER_NODE [PART_ROW_BYTES]'" (commands in px_rank.c). */
int pr_child_main(const char *arg);

#endif
