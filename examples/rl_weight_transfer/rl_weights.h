/* RL weight transfer (paper §"RL weight transfer"): N trainer processes push updated
 * weights straight into M inference processes with one-sided writes.
 *
 * Model: P parameters of varying sizes. Every trainer can produce the full value of any
 * parameter (after FSDP's full_tensor() in the paper); inference process m holds shard m
 * of every parameter (a tensor-parallel split by bytes) in one registered buffer. A
 * controller (the parent process) gathers the inference descriptors, computes a static
 * schedule once (which trainer writes which piece of which shard, in which order),
 * distributes it, then per training step only says "go": every trainer replays its plan
 * with pipelined te_write (no immediates, bounded in-flight window) and then issues a
 * te_barrier to every inference process, which waits for N barrier immediates and
 * verifies a checksum per parameter. */
#ifndef TENDRIL_RL_WEIGHTS_H
#define TENDRIL_RL_WEIGHTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct rl_opts {
    const char *provider;   /* NULL/"": $TENDRIL_PROVIDER or tcp */
    uint32_t trainers, inference, params;
    uint64_t total_bytes;   /* sum of all parameter sizes */
    uint64_t chunk_max;     /* largest single write (multiple of 8) */
    uint32_t steps;         /* training steps (updates) */
    uint32_t window;        /* writes in flight per trainer */
    int step_timeout_ms;    /* inference side: barrier wait per update */
    int die_trainer;        /* >= 0: this trainer exits in the middle of update die_step */
    uint32_t die_step;
    bool write_imms;        /* every write carries an immediate and the receivers count
                               them before the barrier: needed where a local write
                               completion does not imply placement (libfabric shm) */
    bool verbose;
} rl_opts;

/* Defaults. rl_run turns write_imms on for the shm provider (docs/applications.md). */
void rl_opts_default(rl_opts *o);

/* Where every byte lives. */
typedef struct rl_layout {
    uint32_t params, inference;
    uint64_t total;
    uint64_t *param_len;   /* [params] */
    uint64_t *param_off;   /* [params]: offset in a trainer's buffer */
    uint64_t *shard_start; /* [params][inference+1]: byte ranges of the shards in a param */
    uint64_t *inf_off;     /* [inference][params]: offset of param's shard at inference m */
    uint64_t *inf_len;     /* [inference]: buffer size of inference m */
} rl_layout;

int rl_layout_make(const rl_opts *o, rl_layout *l);
void rl_layout_free(rl_layout *l);

typedef struct rl_task {
    uint32_t trainer, param, dst;
    uint64_t src_off, dst_off, len;
} rl_task;

/* Static schedule: tasks grouped by trainer (in replay order). */
int rl_schedule(const rl_layout *l, uint32_t trainers, uint64_t chunk_max, rl_task **tasks,
                size_t *n);
/* 0 if every byte of every shard is written exactly once and every write stays inside
 * both buffers; otherwise -EINVAL with a description in err. */
int rl_schedule_check(const rl_layout *l, uint32_t trainers, const rl_task *tasks, size_t n,
                      char *err, size_t cap);

/* Value of 8-byte word w of parameter p after training step s. */
uint64_t rl_value(uint32_t p, uint32_t s, uint64_t w);

typedef struct rl_result {
    bool write_imms;             /* the mode that ran */
    int status;
    char error[256];
    uint32_t steps_ok;
    size_t tasks;
    uint64_t bytes_per_step;
    uint64_t trainer_bytes_min, trainer_bytes_max, recv_bytes_min, recv_bytes_max;
    double update_ms_best, update_ms_avg, gbps_best;
    uint32_t inference_timeouts; /* inference processes that reported a timed-out update */
    double fail_detect_ms;       /* go -> error reported, when an update failed */
    uint32_t child_failures;     /* processes that exited abnormally (the crash of
                                    die_trainer excepted) */
    uint32_t children_killed;    /* processes that did not quit in time at shutdown */
} rl_result;

/* Controller: spawns the processes (this executable with "--rl-child ..."), runs the
 * steps, reports. The host program's main must start with
 *     if (rl_is_child(argc, argv)) return rl_child_main(argc, argv);            */
int rl_run(const rl_opts *o, rl_result *res);
bool rl_is_child(int argc, char **argv);
int rl_child_main(int argc, char **argv);

#endif
