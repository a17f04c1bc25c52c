#include "a2a.h"

#include <errno.h>
#include <stdio.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int fail(int r, const char *side, const char *what, int it, int phase)
{
    fprintf(stderr, "fabric-debug: a2a (%s), iteration %d, phase %s: %s: %s (%s)\n", side, it,
            a2a_phase_name[phase], what, te_strerror(r), side[0] == 'e' ? te_last_error() : "libfabric");
    return r;
}

int a2a_run_engine(const a2a_io *io, const a2a_plan *p, int iters, double *secs)
{
    uint64_t base = te_counter_done(io->done), posted = 0;
    for (int it = 0; it < iters; it++)
        for (int ph = 0; ph < A2A_PHASES; ph++) {
            secs[it * A2A_PHASES + ph] = 0;
            if (p->first[ph] == p->first[ph + 1]) continue;
            double t0 = now_s(), limit = t0 + io->timeout_ms / 1e3;
            for (size_t k = p->first[ph]; k < p->first[ph + 1]; k++) {
                const a2a_write *w = &p->w[k];
                te_write_args a = {.src = io->src, .src_offset = w->off, .len = w->len, .dst = io->dst,
                                   .dst_offset = w->off, .has_imm = true,
                                   .imm = A2A_IMM + (uint32_t)ph * 64u, .route = {TE_ROUTE_SHARDED, 0}};
                te_completion c = {.counter = io->done};
                int r;
                /* -EAGAIN: the group's queue is full; the writes ahead of us complete on
                 * their own (workers), so retrying is enough */
                while ((r = te_write(io->e, &a, &c)) == -EAGAIN)
                    if (now_s() > limit) return fail(-ETIMEDOUT, "engine", "posting", it, ph);
                if (r) return fail(r, "engine", "te_write", it, ph);
                posted++;
            }
            int r = te_imm_counter_wait(io->ack[ph], 1, io->timeout_ms);
            if (r) return fail(r, "engine", "waiting for the server's count of the immediates", it, ph);
            secs[it * A2A_PHASES + ph] = now_s() - t0;
        }
    int r = te_counter_wait(io->done, base + posted, io->timeout_ms);
    return r ? fail(r, "engine", "waiting for the local completions", iters - 1, A2A_CMB) : 0;
}

int a2a_run_raw(const a2a_io *io, const a2a_plan *p, int iters, double *secs)
{
    uint64_t done = 0, imms = 0, posted = 0;
    uint32_t last = 0;
    for (int it = 0; it < iters; it++)
        for (int ph = 0; ph < A2A_PHASES; ph++) {
            secs[it * A2A_PHASES + ph] = 0;
            if (p->first[ph] == p->first[ph + 1]) continue;
            double t0 = now_s(), limit = t0 + io->timeout_ms / 1e3;
            const uint64_t want = imms + 1;
            for (size_t k = p->first[ph]; k < p->first[ph + 1]; k++) {
                const a2a_write *w = &p->w[k];
                /* No FI_MORE: the engine posts each write as it is submitted (its last
                 * work request goes without FI_MORE), and tcp;ofi_rxm 1.17 held a phase
                 * posted with FI_MORE on all but its last write for about 2.6 ms. */
                int r;
                while ((r = raw_write(io->raw, io->rsrc, w->off, w->len,
                                      raw_remote_addr(io->raw, io->raw_base, w->off), io->raw_key, true,
                                      A2A_IMM + (uint32_t)ph * 64u, false)) == -EAGAIN) {
                    if (raw_poll(io->raw, &done, &imms, &last) < 0)
                        return fail(-EIO, "raw", "completion error", it, ph);
                    if (now_s() > limit) return fail(-ETIMEDOUT, "raw", "posting", it, ph);
                }
                if (r) return fail(r, "raw", "fi_writemsg", it, ph);
                posted++;
            }
            while (imms < want) {
                if (raw_poll(io->raw, &done, &imms, &last) < 0) return fail(-EIO, "raw", "completion error", it, ph);
                if (now_s() > limit)
                    return fail(-ETIMEDOUT, "raw", "waiting for the server's count of the immediates", it, ph);
            }
            secs[it * A2A_PHASES + ph] = now_s() - t0;
        }
    double limit = now_s() + io->timeout_ms / 1e3;
    while (done < posted) {
        if (raw_poll(io->raw, &done, &imms, &last) < 0) return fail(-EIO, "raw", "completion error", iters - 1, A2A_CMB);
        if (now_s() > limit) return fail(-ETIMEDOUT, "raw", "waiting for the local completions", iters - 1, A2A_CMB);
    }
    return 0;
}
