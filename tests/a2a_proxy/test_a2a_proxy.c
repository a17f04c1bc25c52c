/* The all-to-all's host proxy between real processes on a real provider (runs once per
 * provider, no GPU): W processes play the kernels (px_rank.c), the proxies move the
 * bytes, and every rank checks that exactly the right bytes arrived in its rblock, and
 * nothing else changed, over many epochs with lengths from 0 to the maximum, for W = 2
 * and 4, every peer RDMA or half of them "NVLink" (skipped), part rows at the fp32
 * stride (the layout's default) or packed (2-byte partials). Faults: a killed peer is
 * reported naming it and ends the survivors' waits with an error before their timeout; a
 * stalled peer makes waits time out; lengths out of range, and a doorbell that skips an
 * epoch, are reported and post nothing. In-process: configuration errors, peer events
 * forwarded by the application, destroy after the engine stopped. */
/* ctest-labels: threads (the TSan run: the watcher thread posts, the callback thread completes, test threads wait) */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/clock.h"
#include "px_rank.h"

#define TMO 30000
#define MAXW 4

typedef struct world {
    int W;
    th_proc p[MAXW];
    bool alive[MAXW];
} world;

static void ask(world *w, int r, char *reply, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void ask(world *w, int r, char *reply, size_t cap, const char *fmt, ...)
{
    char cmd[65536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (th_ask(&w->p[r], reply, cap, TMO, "%s", cmd)) fail_msg("rank %d did not answer '%.40s'", r, cmd);
}

static void ask_ok(world *w, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ask_ok(world *w, int r, const char *fmt, ...)
{
    char cmd[65536], reply[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    ask(w, r, reply, sizeof reply, "%s", cmd);
    if (strcmp(reply, "ok")) fail_msg("rank %d, '%.40s': %s", r, cmd, reply);
}

/* W ranks, per_node of them per "node" (NVLink among them), proxies connected; part_row:
 * the layout's part_row_bytes (0: default). */
static void world_up_packed(world *w, int W, int per_node, uint32_t part_row)
{
    memset(w, 0, sizeof *w);
    w->W = W;
    static char peers[65536];
    int n = snprintf(peers, sizeof peers, "peers");
    for (int r = 0; r < W; r++) {
        char arg[64], line[4096];
        snprintf(arg, sizeof arg, "%d %d %d %u", r, W, per_node, part_row);
        assert_int_equal(th_spawn(&w->p[r], "rank", arg), 0);
        w->alive[r] = true;
        if (th_recv(&w->p[r], line, sizeof line, TMO) || strncmp(line, "ready ", 6))
            fail_msg("rank %d did not start: %s", r, line);
        n += snprintf(peers + n, sizeof peers - (size_t)n, " %s", line + 6);
    }
    /* every proxy exists (its flags armed) before any rank rings */
    for (int r = 0; r < W; r++) ask_ok(w, r, "%s", peers);
}

static void world_up(world *w, int W, int per_node) { world_up_packed(w, W, per_node, 0); }

static void world_down(world *w)
{
    for (int r = 0; r < w->W; r++)
        if (w->alive[r]) ask_ok(w, r, "close");
    for (int r = 0; r < w->W; r++)
        if (w->alive[r]) {
            th_send(&w->p[r], "quit");
            assert_int_equal(th_wait(&w->p[r], TMO), 0);
        }
}

/* Epochs [from, to]: every rank sends, then every rank receives and checks. */
static void world_run(world *w, uint64_t from, uint64_t to)
{
    for (uint64_t e = from; e <= to; e++) {
        for (int r = 0; r < w->W; r++) ask_ok(w, r, "send %llu", (unsigned long long)e);
        for (int r = 0; r < w->W; r++) ask_ok(w, r, "recv %llu %d", (unsigned long long)e, TMO);
    }
}

static int errors_of(world *w, int r, int wait_ms, int *code, char *msg, size_t cap)
{
    char reply[2048];
    int n = 0, off = 0;
    ask(w, r, reply, sizeof reply, "errors %d", wait_ms);
    if (sscanf(reply, "errors %d %d %n", &n, code, &off) < 2) fail_msg("errors: %s", reply);
    snprintf(msg, cap, "%s", reply + off);
    return n;
}

static void no_errors(world *w)
{
    for (int r = 0; r < w->W; r++) {
        int code = 0;
        char msg[1024];
        if (w->alive[r] && errors_of(w, r, 0, &code, msg, sizeof msg))
            fail_msg("rank %d reported %d: %s", r, code, msg);
    }
}

/* ---------------------------------------------------------- exchanges ---- */

/* Every doorbell of every phase was timed, and each interval's p50 <= p99 <= max; what
 * the durations are is the machine's, so only printed (print: the breakdown, us). */
static void check_timing(world *w, int per_node, uint64_t epochs, bool print)
{
    static const char *const names[A2A_PX_N] = {"DSP", "WGT", "CMB"};
    for (int r = 0; r < w->W; r++) {
        if (!pr_mask(r, w->W, per_node)) continue;
        for (int p = 0; p < A2A_PX_N; p++) {
            char reply[512];
            unsigned long long count, dropped, v[4][3];
            ask(w, r, reply, sizeof reply, "timing %d %llu %d", p, (unsigned long long)epochs, TMO);
            int n = sscanf(reply, "timing %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu",
                           &count, &dropped, &v[0][0], &v[0][1], &v[0][2], &v[1][0], &v[1][1], &v[1][2],
                           &v[2][0], &v[2][1], &v[2][2], &v[3][0], &v[3][1], &v[3][2]);
            if (n != 14) fail_msg("rank %d timing %d: %s", r, p, reply);
            assert_int_equal(count, epochs);
            assert_int_equal(dropped, 0);
            for (int k = 0; k < 4; k++) {
                assert_true(v[k][0] <= v[k][1]);
                assert_true(v[k][1] <= v[k][2]);
            }
            /* per sample seen_done is the sum of its parts: its max bounds every part's max */
            for (int k = 0; k < 3; k++) assert_true(v[3][2] >= v[k][2]);
            if (print)
                print_message("rank %d %s host timing, us p50/p99/max: seen->first post %.1f/%.1f/%.1f, "
                              "first->last post %.1f/%.1f/%.1f, last post->local completion "
                              "%.1f/%.1f/%.1f, seen->completion %.1f/%.1f/%.1f\n",
                              r, names[p], v[0][0] / 1e3, v[0][1] / 1e3, v[0][2] / 1e3, v[1][0] / 1e3,
                              v[1][1] / 1e3, v[1][2] / 1e3, v[2][0] / 1e3, v[2][1] / 1e3, v[2][2] / 1e3,
                              v[3][0] / 1e3, v[3][1] / 1e3, v[3][2] / 1e3);
        }
        /* the per-epoch trace: the last 16 doorbells of each phase, their times in order;
         * older epochs, epoch 0 and epochs not rung yet are not there */
        for (int p = 0; p < A2A_PX_N; p++) {
            char reply[512];
            for (uint64_t ep = epochs > 16 ? epochs - 15 : 1; ep <= epochs; ep++) {
                unsigned long long t[4];
                ask(w, r, reply, sizeof reply, "trace %d %llu", p, (unsigned long long)ep);
                if (sscanf(reply, "trace %llu %llu %llu %llu", &t[0], &t[1], &t[2], &t[3]) != 4)
                    fail_msg("rank %d trace %d epoch %llu: %s", r, p, (unsigned long long)ep, reply);
                assert_true(t[0] > 0 && t[0] <= t[1] && t[1] <= t[2] && t[2] <= t[3]);
            }
            ask(w, r, reply, sizeof reply, "trace %d %llu", p, (unsigned long long)epochs + 1);
            assert_string_equal(reply, "none");
            if (epochs > 16) {
                ask(w, r, reply, sizeof reply, "trace %d %llu", p, (unsigned long long)epochs - 16);
                assert_string_equal(reply, "none");
            }
            ask(w, r, reply, sizeof reply, "trace %d 0", p);
            assert_true(!strncmp(reply, "err ", 4));
        }
        /* reset starts every phase's count afresh (no doorbell rings meanwhile) */
        ask_ok(w, r, "timing-reset");
        for (int p = 0; p < A2A_PX_N; p++) {
            char reply[512];
            unsigned long long count = 1, dropped = 1;
            ask(w, r, reply, sizeof reply, "timing %d 0 0", p);
            assert_int_equal(sscanf(reply, "timing %llu %llu", &count, &dropped), 2);
            assert_int_equal(count, 0);
            assert_int_equal(dropped, 0);
        }
    }
}

static void exchange(int W, int per_node, uint64_t epochs, uint32_t part_row)
{
    world w;
    world_up_packed(&w, W, per_node, part_row);
    world_run(&w, 1, epochs);
    no_errors(&w);
    /* every doorbell posted: 3 phases per epoch, and (3+1+1) writes per RDMA peer, each
     * of exactly its length (CMB: rows at part_row bytes) */
    for (int r = 0; r < W; r++) {
        char reply[256];
        unsigned long long writes, bytes, bells, ignored, errs;
        /* The receivers' flags can reach the last epoch before the sender's watcher thread,
         * back from its last te_write, has counted that doorbell: look again for a while. */
        for (int k = 0; k < 2500; k++) {
            ask(&w, r, reply, sizeof reply, "stats");
            assert_int_equal(sscanf(reply, "stats %llu %llu %llu %llu %llu", &writes, &bytes, &bells,
                                    &ignored, &errs), 5);
            if (bells >= 3 * epochs) break;
            app_sleep_us(2000);
        }
        int peers = __builtin_popcountll(pr_mask(r, W, per_node));
        assert_int_equal(bells, 3 * epochs);
        assert_int_equal(writes, 5ull * (unsigned long long)peers * epochs);
        assert_int_equal(bytes, pr_sent_bytes(r, W, pr_mask(r, W, per_node), part_row ? part_row : PR_H * 4,
                                              1, epochs));
        assert_int_equal(ignored, 0);
        assert_int_equal(errs, 0);
    }
    check_timing(&w, per_node, epochs, W == 4 && per_node == 1 && !part_row);
    world_down(&w);
    print_message("W=%d, %d per node, part rows of %u bytes: %llu epochs, every rblock byte checked\n", W,
                  per_node, part_row ? part_row : PR_H * 4, (unsigned long long)epochs);
}

static void test_w2(void **state) { (void)state; exchange(2, 1, 90, 0); }
static void test_w4(void **state) { (void)state; exchange(4, 1, 36, 0); }
/* two "nodes" of two: each rank has one NVLink peer, whose slots must stay untouched */
static void test_w4_hybrid(void **state) { (void)state; exchange(4, 2, 36, 0); }
/* part rows packed at H*2 (bf16/fp16 partials): the CMB write carries n*H*2 bytes, the
 * rest of each part slot (the fp32-sized stride) stays untouched */
static void test_w4_packed(void **state) { (void)state; exchange(4, 1, 36, PR_PART_PACKED); }

/* -------------------------------------------------------------- faults ---- */

static void expect_fail_line(const char *reply, const char *phase, int src, bool timeout, int limit_ms)
{
    char ph[8];
    int s = -1, rc = 0;
    unsigned long long ms = 0;
    if (sscanf(reply, "fail %7s %d %d %llu", ph, &s, &rc, &ms) != 4) fail_msg("expected a failed wait: %s", reply);
    if (phase && strcmp(ph, phase)) fail_msg("expected a %s wait to fail: %s", phase, reply);
    if (src >= 0) assert_int_equal(s, src);
    if (timeout) assert_int_equal(rc, -ETIMEDOUT);
    else if (rc == -ETIMEDOUT || rc >= 0) fail_msg("expected an error before the timeout: %s", reply);
    assert_true(ms <= (unsigned long long)limit_ms + 2000);
}

static void test_killed_peer(void **state)
{
    (void)state;
    world w;
    /* The survivors' leak check is off (ASan builds): libfabric 1.17's ofi_rxm leaks the
     * connection state of a peer that vanished (calloc inside libfabric.so, 376 bytes,
     * seen in the ASan run); our own leaks are checked by every other test. */
    const char *asan = getenv("ASAN_OPTIONS");
    char *saved = asan ? strdup(asan) : NULL;
    char relaxed[1024];
    snprintf(relaxed, sizeof relaxed, "%s%sdetect_leaks=0", asan ? asan : "", asan && *asan ? ":" : "");
    setenv("ASAN_OPTIONS", relaxed, 1);
    world_up(&w, 3, 1);
    if (saved) setenv("ASAN_OPTIONS", saved, 1);
    else unsetenv("ASAN_OPTIONS");
    free(saved);
    world_run(&w, 1, 4);
    th_kill(&w.p[2], SIGKILL);
    assert_int_equal(th_wait(&w.p[2], TMO), 128 + SIGKILL);
    w.alive[2] = false;
    const int wait_ms = 15000;
    for (int r = 0; r < 2; r++) ask_ok(&w, r, "send 5");
    for (int r = 0; r < 2; r++) {
        char reply[2048];
        uint64_t t0 = tn_now_ns();
        ask(&w, r, reply, sizeof reply, "recv 5 %d", wait_ms);
        print_message("rank %d after rank 2 died (%.2f s): %s\n", r, (double)(tn_now_ns() - t0) / 1e9, reply);
        /* A wait ended with the proxy's error, well before the timeout. Which source's
         * wait that is depends on timing: the failure is sticky (docs/a2a-internode.md),
         * so if this rank's proxy saw rank 2 die before rank 1's epoch-5 writes landed,
         * the wait for rank 1 fails too (seen under load). */
        expect_fail_line(reply, NULL, -1, false, wait_ms);
        int code = 0;
        char msg[1024];
        assert_true(errors_of(&w, r, TMO, &code, msg, sizeof msg) > 0);
        print_message("rank %d on_error: %d %s\n", r, code, msg);
        if (!strstr(msg, "rank 2")) fail_msg("the error does not name rank 2: %s", msg);
        assert_true(code < 0);
    }
    world_down(&w);
}

static void test_stalled_peer(void **state)
{
    (void)state;
    world w;
    world_up(&w, 3, 1);
    world_run(&w, 1, 3);
    /* rank 2 never rings epoch 4 */
    for (int r = 0; r < 2; r++) ask_ok(&w, r, "send 4");
    for (int r = 0; r < 2; r++) {
        char reply[2048];
        ask(&w, r, reply, sizeof reply, "recv 4 600");
        expect_fail_line(reply, "DSP", 2, true, 600);
        /* what the live peer sent did arrive */
        ask(&w, r, reply, sizeof reply, "wait 2 %d 4 %d", 1 - r, TMO);
        assert_int_equal(strncmp(reply, "wait 0 ", 7), 0);
    }
    /* and rank 2, which only stalled its sends, got everything */
    ask_ok(&w, 2, "recv 4 %d", TMO);
    no_errors(&w);
    world_down(&w);
}

static void test_bad_lengths(void **state)
{
    (void)state;
    world w;
    world_up(&w, 2, 1);
    world_run(&w, 1, 2);
    char reply[2048], msg[1024];
    int code = 0;
    /* rank 0: one row past Tmax. Nothing reaches rank 1 (still healthy): its wait times
     * out and its rblock is unchanged. */
    ask_ok(&w, 0, "badtx %d 1 %d 3", A2A_PX_DSP, PR_TMAX + 1);
    assert_int_equal(errors_of(&w, 0, TMO, &code, msg, sizeof msg), 1);
    print_message("rank 0: %s\n", msg);
    assert_int_equal(code, -ERANGE);
    assert_non_null(strstr(msg, "DSP length for rank 1"));
    ask(&w, 1, reply, sizeof reply, "wait %d 0 3 300", A2A_PX_DSP);
    assert_int_equal(strncmp(reply, "wait -110 ", 10), 0);
    /* rank 1: a negative part row count */
    ask_ok(&w, 1, "badtx %d 0 -1 3", A2A_PX_CMB);
    assert_int_equal(errors_of(&w, 1, TMO, &code, msg, sizeof msg), 1);
    assert_int_equal(code, -ERANGE);
    assert_non_null(strstr(msg, "CMB length for rank 0"));
    for (int r = 0; r < 2; r++) ask_ok(&w, r, "check");
    /* a failed proxy ignores later doorbells, and waits return its error at once */
    ask_ok(&w, 0, "ring %d 3", A2A_PX_WGT);
    ask(&w, 0, reply, sizeof reply, "wait %d 1 3 5000", A2A_PX_WGT);
    assert_int_equal(strncmp(reply, "wait -34 ", 9), 0);
    /* (the watcher thread sees the ring soon, not before "ring" returns) */
    unsigned long long writes, bytes, bells, ignored = 0, errs;
    for (int k = 0; k < 2500 && ignored == 0; k++) {
        ask(&w, 0, reply, sizeof reply, "stats");
        assert_int_equal(sscanf(reply, "stats %llu %llu %llu %llu %llu", &writes, &bytes, &bells, &ignored,
                                &errs), 5);
        if (!ignored) app_sleep_us(2000);
    }
    assert_int_equal(bells, 3 * 2);
    assert_int_equal(ignored, 1);
    for (int r = 0; r < 2; r++) ask_ok(&w, r, "check");
    world_down(&w);
}

static void test_epoch_skip(void **state)
{
    (void)state;
    world w;
    world_up(&w, 2, 1);
    world_run(&w, 1, 2);
    char reply[2048], msg[1024];
    int code = 0;
    ask_ok(&w, 0, "ring %d 4", A2A_PX_DSP);
    assert_int_equal(errors_of(&w, 0, TMO, &code, msg, sizeof msg), 1);
    print_message("rank 0: %s\n", msg);
    assert_int_equal(code, -EPROTO);
    assert_non_null(strstr(msg, "DSP doorbell went from epoch 2 to 4"));
    ask(&w, 1, reply, sizeof reply, "wait %d 0 3 300", A2A_PX_DSP);
    assert_int_equal(strncmp(reply, "wait -110 ", 10), 0);
    for (int r = 0; r < 2; r++) ask_ok(&w, r, "check");
    world_down(&w);
}

/* ----------------------------------------------------------- in-process ---- */

typedef struct pair {
    px_rank r[2];
    te_mr_desc d[2];
} pair;

static void pair_up(pair *p, bool fwd)
{
    char why[1024];
    for (int k = 0; k < 2; k++) {
        if (pr_open(&p->r[k], k, 2, 1ull << (1 - k), 0, why, sizeof why)) fail_msg("%s", why);
        p->d[k] = p->r[k].desc;
    }
    for (int k = 0; k < 2; k++)
        if (pr_connect(&p->r[k], p->d, fwd, why, sizeof why)) fail_msg("%s", why);
}

static void pair_run(pair *p, uint64_t from, uint64_t to)
{
    char why[1024];
    for (uint64_t e = from; e <= to; e++) {
        for (int k = 0; k < 2; k++) pr_send(&p->r[k], e);
        for (int k = 0; k < 2; k++)
            if (pr_recv(&p->r[k], e, TMO, why, sizeof why)) fail_msg("epoch %llu: %s", (unsigned long long)e, why);
    }
}

/* Both proxies first (each waits for its writes' completions), then the engines: with
 * libfabric 1.17's shm, an engine that closes while a peer *in the same process* still
 * has a transfer with it makes that peer's fi_cq_read touch the closed endpoint's freed
 * region (SIGSEGV under gdb, about 1 run in 8 under load; docs/engine.md, known limits). */
static void pair_down(pair *p)
{
    for (int k = 0; k < 2; k++) pr_close(&p->r[k]);
    for (int k = 0; k < 2; k++) assert_int_equal(te_engine_stop(p->r[k].e), 0);
    for (int k = 0; k < 2; k++) pr_free(&p->r[k]);
}

static void expect_einval(const a2a_px_config *c, const char *words)
{
    a2a_px *px = (a2a_px *)1;
    assert_int_equal(a2a_px_create(c, &px), -EINVAL);
    if (!strstr(te_last_error(), words)) fail_msg("'%s' does not say '%s'", te_last_error(), words);
}

static void test_config_errors(void **state)
{
    (void)state;
    pair p;
    pair_up(&p, false);
    px_rank *r = &p.r[0];
    a2a_px_config good = {.engine = r->e, .rank = 0, .world = 2, .rdma_mask = 2, .stage = r->ms,
                          .peer_rblock = p.d, .layout = r->lay, .imm_base = 7, .tx = &r->tx[0][0]};
    a2a_px_config c = good;
    c.engine = NULL;
    expect_einval(&c, "engine is NULL");
    c = good, c.tx = NULL;
    expect_einval(&c, "tx is NULL");
    c = good, c.world = 65;
    expect_einval(&c, "world 65");
    c = good, c.rank = 2;
    expect_einval(&c, "rank 2");
    c = good, c.rdma_mask = 3;
    expect_einval(&c, "bit of rank 0 itself");
    c = good, c.rdma_mask = 6;
    expect_einval(&c, "bits past world 2");
    c = good, c.layout.Tmax = 0;
    expect_einval(&c, "must be > 0");
    c = good, c.layout.part_row_bytes = PR_H * 4 + 2;
    expect_einval(&c, "part_row_bytes=146 exceeds H*4 = 144");
    c = good, c.layout.off_part = r->bytes;
    expect_einval(&c, "does not fit the stage");
    c = good, c.layout.off_wgt = c.layout.off_rows + 16;
    expect_einval(&c, "overlap");
    c = good, c.imm_base = 0xffffff80u;
    expect_einval(&c, "32 bits");
    te_mr_desc d2[2] = {p.d[0], p.d[1]};
    d2[1].len = 4096;
    c = good, c.peer_rblock = d2;
    expect_einval(&c, "rank 1's rblock is 4096 bytes");
    d2[1] = p.d[1], d2[1].n_nics = 2, d2[1].nic[1] = d2[1].nic[0];
    expect_einval(&c, "rank 1's rblock has 2 NICs");
    assert_int_equal(a2a_px_create(NULL, NULL), -EINVAL);
    /* accessors reject what does not exist */
    assert_int_equal(a2a_px_flag_device_ptr(r->px, A2A_PX_DSP, 0), 0); /* self */
    assert_int_not_equal(a2a_px_flag_device_ptr(r->px, A2A_PX_DSP, 1), 0);
    assert_int_equal(a2a_px_flag_device_ptr(r->px, 3, 1), 0);
    assert_null(a2a_px_doorbell_host_ptr(r->px, -1));
    assert_int_equal(a2a_px_doorbell_device_ptr(r->px, 1), (uint64_t)(uintptr_t)a2a_px_doorbell_host_ptr(r->px, 1));
    assert_int_equal(a2a_px_flag_wait(r->px, A2A_PX_CMB, 0, 1, 10), -EINVAL);
    assert_int_equal(a2a_px_flag_wait(r->px, A2A_PX_CMB, 1, 1, 10), -ETIMEDOUT);
    assert_int_equal(a2a_px_error(r->px, NULL, 0), 0);
    /* timing: bad arguments are refused with a message, nothing is touched */
    a2a_px_timing tm;
    assert_int_equal(a2a_px_timing_get(NULL, A2A_PX_DSP, &tm), -EINVAL);
    assert_int_equal(a2a_px_timing_get(r->px, A2A_PX_DSP, NULL), -EINVAL);
    assert_int_equal(a2a_px_timing_get(r->px, A2A_PX_N, &tm), -EINVAL);
    assert_non_null(strstr(te_last_error(), "phase 3 outside"));
    assert_int_equal(a2a_px_timing_get(r->px, -1, &tm), -EINVAL);
    assert_int_equal(a2a_px_timing_reset(NULL), -EINVAL);
    assert_int_equal(a2a_px_timing_get(r->px, A2A_PX_CMB, &tm), 0);
    a2a_px_destroy(NULL);
    /* a proxy without RDMA peers (all NVLink) is valid and idle */
    c = good, c.rdma_mask = 0;
    a2a_px *idle = NULL;
    assert_int_equal(a2a_px_create(&c, &idle), 0);
    __atomic_store_n(a2a_px_doorbell_host_ptr(idle, A2A_PX_DSP), 1, __ATOMIC_RELEASE);
    a2a_px_destroy(idle);
    pair_run(&p, 1, 6);
    pair_down(&p);
}

static void test_forwarded_peer_events(void **state)
{
    (void)state;
    pair p;
    pair_up(&p, true);
    pair_run(&p, 1, 3);
    /* the application owns the peer callback and forwards: UP is ignored, DOWN of a NIC
     * of rank 1 fails rank 0's proxy */
    a2a_px_peer_event(p.r[0].e, &p.d[1].nic[0].addr, TE_PEER_UP);
    assert_int_equal(a2a_px_error(p.r[0].px, NULL, 0), 0);
    a2a_px_peer_event(p.r[0].e, &p.d[1].nic[0].addr, TE_PEER_DOWN);
    char msg[512];
    int code = 0;
    assert_int_equal(pr_errors(&p.r[0], 0, &code, msg, sizeof msg), 1);
    assert_int_equal(code, -ECONNRESET);
    assert_non_null(strstr(msg, "rank 1 is down"));
    assert_int_equal(a2a_px_error(p.r[0].px, msg, sizeof msg), -ECONNRESET);
    assert_non_null(strstr(msg, "rank 1 is down"));
    /* data already there still counts; what is not there fails at once */
    assert_int_equal(a2a_px_flag_wait(p.r[0].px, A2A_PX_CMB, 1, 3, 10), 0);
    uint64_t t0 = tn_now_ns();
    assert_int_equal(a2a_px_flag_wait(p.r[0].px, A2A_PX_CMB, 1, 4, TMO), -ECONNRESET);
    assert_true(tn_now_ns() - t0 < 5000000000ull);
    assert_non_null(strstr(te_last_error(), "rank 1 is down"));
    /* rank 1 is unaffected */
    assert_int_equal(a2a_px_error(p.r[1].px, NULL, 0), 0);
    pair_down(&p);
}

static void test_destroy_after_stop(void **state)
{
    (void)state;
    pair p;
    pair_up(&p, false);
    pair_run(&p, 1, 2);
    /* writes in flight when the engine stops complete (-ECANCELED); destroy after stop */
    pr_send(&p.r[0], 3);
    /* Not over shm: there rank 1 takes epoch 3 first, so that the stop meets no transfer
     * with a peer in this process (see pair_down). */
    if (!strcmp(th_provider(), "shm")) {
        char why[1024];
        if (pr_recv(&p.r[1], 3, TMO, why, sizeof why)) fail_msg("epoch 3: %s", why);
    }
    assert_int_equal(te_engine_stop(p.r[0].e), 0);
    pr_close(&p.r[0]);
    assert_int_equal(te_engine_stop(p.r[1].e), 0);
    /* -ESHUTDOWN; or the peer-down of rank 0 if it was seen before the stop; or
     * -ECANCELED when rank 1's own epoch-2 writes had not completed at its stop (their
     * completions are canceled, which fails its proxy first: seen over tcp under load) */
    int rc = a2a_px_flag_wait(p.r[1].px, A2A_PX_WGT, 0, 9, 1000);
    if (rc != -ESHUTDOWN && rc != -ECONNRESET && rc != -ECANCELED)
        fail_msg("wait after stop: %d %s", rc, te_last_error());
    for (int k = 0; k < 2; k++) pr_free(&p.r[k]);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return pr_child_main(argc > 3 ? argv[3] : NULL);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_forwarded_peer_events),
        cmocka_unit_test(test_destroy_after_stop),
        cmocka_unit_test(test_w2),
        cmocka_unit_test(test_w4),
        cmocka_unit_test(test_w4_hybrid),
        cmocka_unit_test(test_w4_packed),
        cmocka_unit_test(test_bad_lengths),
        cmocka_unit_test(test_epoch_skip),
        cmocka_unit_test(test_stalled_peer),
        cmocka_unit_test(test_killed_peer),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
