/* rl_weight_transfer: N trainer processes -> M inference processes, static schedule,
 * pipelined one-sided writes, barrier, per-parameter verification.
 * Usage in the T.usage text below. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "rl_weight_transfer/rl_weights.h"

static const cli_tool T = {
    "rl_weight_transfer",
    "usage: rl_weight_transfer [opts]\n"
    "RL weight update: N trainer processes write their shards into M inference processes (default 2)\n"
    "with a static schedule, pipelined one-sided writes and a barrier; every parameter is\n"
    "verified on the receivers (docs/applications.md).\n"
    "options:\n"
    "  --provider P       tcp, shm, efa, verbs, ... (default $TENDRIL_PROVIDER or tcp)\n"
    "  --trainers N       trainer processes (default 4)\n"
    "  --inference M      inference processes (default 2)\n"
    "  --params P         parameters (tensors) in the model (default 48)\n"
    "  --mib TOTAL        model size in MiB (default 128)\n"
    "  --chunk-kb K       largest write in KiB (default 1024)\n"
    "  --steps S          updates to run and verify (default 5)\n"
    "  --window W         writes in flight per trainer (default 16)\n"
    "  --write-imms 0|1   1: an immediate on every data write (forced on shm)\n"
    "  --help, --version\n"};

int main(int argc, char **argv)
{
    if (rl_is_child(argc, argv)) return rl_child_main(argc, argv);
    rl_opts o;
    rl_opts_default(&o);
    o.verbose = true;
    cli_common(&T, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--provider") && strcmp(a, "--trainers") && strcmp(a, "--inference") &&
            strcmp(a, "--params") && strcmp(a, "--mib") && strcmp(a, "--chunk-kb") &&
            strcmp(a, "--steps") && strcmp(a, "--window") && strcmp(a, "--write-imms"))
            cli_fail(&T, "unknown option '%s'", a);
        const char *v = cli_value(&T, argc, argv, &i);
        if (!strcmp(a, "--provider")) o.provider = v;
        else if (!strcmp(a, "--trainers")) o.trainers = (uint32_t)cli_u64(&T, a, v, 1, 64);
        else if (!strcmp(a, "--inference")) o.inference = (uint32_t)cli_u64(&T, a, v, 1, 64);
        else if (!strcmp(a, "--params")) o.params = (uint32_t)cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--mib")) o.total_bytes = cli_u64(&T, a, v, 1, 1u << 20) << 20;
        else if (!strcmp(a, "--chunk-kb")) o.chunk_max = cli_u64(&T, a, v, 1, 1u << 20) << 10;
        else if (!strcmp(a, "--steps")) o.steps = (uint32_t)cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--window")) o.window = (uint32_t)cli_u64(&T, a, v, 1, 1u << 16);
        else o.write_imms = cli_u64(&T, a, v, 0, 1) != 0;
    }
    printf("rl_weight_transfer: %u trainers -> %u inference, %u parameters, %.1f MiB per update\n",
           o.trainers, o.inference, o.params, (double)o.total_bytes / 1048576.0);
    fflush(stdout);
    rl_result r;
    int rc = rl_run(&o, &r);
    if (r.tasks)
        printf("static schedule: %zu writes; bytes per trainer %.2f..%.2f MiB (max/min %.3f); "
               "per receiver %.2f..%.2f MiB\n",
               r.tasks, (double)r.trainer_bytes_min / 1048576.0, (double)r.trainer_bytes_max / 1048576.0,
               r.trainer_bytes_min ? (double)r.trainer_bytes_max / (double)r.trainer_bytes_min : 0.0,
               (double)r.recv_bytes_min / 1048576.0, (double)r.recv_bytes_max / 1048576.0);
    if (rc) {
        printf("FAILED: %s\n", r.error);
        return 1;
    }
    printf("completion signal: %s\n", r.write_imms ? "immediate on every write + barrier"
                                                   : "plain writes + barrier immediate");
    printf("%u updates verified: best %.3f ms (%.2f GB/s), mean %.3f ms\n", r.steps_ok,
           r.update_ms_best, r.gbps_best, r.update_ms_avg);
    return 0;
}
