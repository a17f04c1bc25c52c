/* rl_weight_transfer: N trainer processes -> M inference processes, static schedule,
 * pipelined one-sided writes, barrier, per-parameter verification.
 *
 *   rl_weight_transfer [--provider P] [--trainers N] [--inference M] [--params P]
 *                      [--mib TOTAL] [--chunk-kb K] [--steps S] [--window W]
 *                      [--write-imms 0|1]   (1: immediates on data writes; forced on shm) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rl_weight_transfer/rl_weights.h"

int main(int argc, char **argv)
{
    if (rl_is_child(argc, argv)) return rl_child_main(argc, argv);
    rl_opts o;
    rl_opts_default(&o);
    o.verbose = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--provider")) o.provider = v;
        else if (!strcmp(a, "--trainers")) o.trainers = (uint32_t)atoi(v);
        else if (!strcmp(a, "--inference")) o.inference = (uint32_t)atoi(v);
        else if (!strcmp(a, "--params")) o.params = (uint32_t)atoi(v);
        else if (!strcmp(a, "--mib")) o.total_bytes = (uint64_t)atoll(v) << 20;
        else if (!strcmp(a, "--chunk-kb")) o.chunk_max = (uint64_t)atoll(v) << 10;
        else if (!strcmp(a, "--steps")) o.steps = (uint32_t)atoi(v);
        else if (!strcmp(a, "--window")) o.window = (uint32_t)atoi(v);
        else if (!strcmp(a, "--write-imms")) o.write_imms = atoi(v) != 0;
        else {
            fprintf(stderr, "unknown option %s\n", a);
            return 2;
        }
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
