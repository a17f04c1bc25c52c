/* KV-cache streaming (examples/kv_cache_streaming) between real processes over the
 * provider under test: every page of every layer arrives with the right bytes and the
 * decoder's counter fires exactly once; a cancelled request stops its writes, is
 * confirmed, and its pages are not written after the confirmation; a dead prefiller
 * gives the decoder a timeout, not a hang. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "common/app_util.h"
#include "kv_cache_streaming/kv_cache.h"

#define TMO 20000

typedef struct fx {
    th_proc pf;
    te_addr addr;
    uint32_t nics;
    kv_decoder *d;
    kv_shape shape;
} fx;

/* Child: a prefiller with "layers pages page_len ctx_len compute_us". */
static int prefiller_child(const char *arg)
{
    kv_prefiller_opts o = {0};
    unsigned long long pl, cl;
    if (sscanf(arg, "%u %u %llu %llu %u", &o.shape.layers, &o.shape.pages, &pl, &cl,
               &o.compute_us) != 5)
        return 2;
    o.shape.page_len = pl;
    o.shape.ctx_len = cl;
    te_config cfg;
    th_config(&cfg);
    kv_prefiller *pf;
    int r = kv_prefiller_create(&cfg, &o, &pf);
    if (r) {
        th_child_reply("error %s", te_last_error());
        return 1;
    }
    te_addr a;
    char hex[TE_ADDR_TEXT_MAX];
    kv_prefiller_address(pf, &a);
    te_addr_format(&a, hex, sizeof hex);
    th_child_reply("ready %s %u", hex, kv_prefiller_nics(pf));
    char line[256];
    while (th_child_read(line, sizeof line, -1) == 0) {
        if (!strcmp(line, "quit")) break;
        if (!strcmp(line, "stats")) {
            kv_prefiller_stats s;
            kv_prefiller_get_stats(pf, &s);
            th_child_reply("stats %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
                           s.requests, s.completed, s.cancelled, s.layers_issued, s.write_errors);
        }
    }
    kv_prefiller_destroy(pf);
    return 0;
}

static void start(fx *f, uint32_t layers, uint32_t pages, uint64_t page_len, uint64_t ctx,
                  uint32_t compute_us, uint32_t slots)
{
    char arg[128], line[1024], hex[TE_ADDR_TEXT_MAX];
    snprintf(arg, sizeof arg, "%u %u %" PRIu64 " %" PRIu64 " %u", layers, pages, page_len, ctx,
             compute_us);
    /* A startup error is retried with a new process (new pid): libfabric shm fails in
     * fi_enable with EBUSY when a crashed process with the same pid left its region. */
    for (int attempt = 0;; attempt++) {
        assert_int_equal(th_spawn(&f->pf, "prefiller", arg), 0);
        assert_int_equal(th_recv(&f->pf, line, sizeof line, TMO), 0);
        if (strncmp(line, "error", 5) || attempt == 2) break;
        print_message("prefiller failed to start (%s), starting it again\n", line);
        th_wait(&f->pf, TMO);
    }
    if (sscanf(line, "ready %511s %u", hex, &f->nics) != 2) fail_msg("prefiller: %s", line);
    assert_int_equal(te_addr_parse(hex, &f->addr), 0);
    f->shape = (kv_shape){.layers = layers, .pages = pages, .page_len = page_len, .ctx_len = ctx};
    te_config cfg;
    th_config(&cfg);
    kv_decoder_opts o = {.shape = f->shape, .slots = slots};
    int r = kv_decoder_create(&cfg, &o, &f->d);
    if (r) fail_msg("decoder: %s", te_last_error());
}

static void stats(fx *f, uint64_t v[5])
{
    char line[256];
    assert_int_equal(th_ask(&f->pf, line, sizeof line, TMO, "stats"), 0);
    assert_int_equal(sscanf(line, "stats %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64,
                            &v[0], &v[1], &v[2], &v[3], &v[4]), 5);
}

static void stop(fx *f, bool killed)
{
    if (!killed) {
        th_send(&f->pf, "quit");
        assert_int_equal(th_wait(&f->pf, TMO), 0);
    }
    kv_decoder_destroy(f->d);
}

static void test_all_pages_arrive(void **state)
{
    fx f;
    start(&f, 12, 24, 4096, 3000 / 8 * 8, 1000, 100);
    uint32_t pages[24];
    for (uint32_t q = 0; q < 3; q++) {
        for (uint32_t k = 0; k < 24; k++) pages[k] = (k * 13 + q * 5) % 100; /* scattered */
        kv_result res;
        int r = kv_decoder_run(f.d, &f.addr, f.nics, pages, 24 - q, 77 + q, 15000, 5000, &res);
        if (r) fail_msg("request %u: %s", q, te_strerror(r));
        assert_int_equal(res.expected, 12u * (24 - q) + f.nics);
        assert_int_equal(res.fires, 1);
        assert_int_equal(res.bad_bytes, 0);
    }
    /* The prefiller counts a request as completed after its own completions arrived,
     * which can be after the decoder saw the last immediate. */
    uint64_t v[5];
    uint64_t t0 = app_now_us();
    for (;;) {
        stats(&f, v);
        if (v[1] >= 3 || app_now_us() - t0 > 10000000u) break;
        usleep(10000);
    }
    assert_int_equal(v[1], 3); /* completed */
    usleep(100000); /* a surplus immediate would show up as a stray now */
    assert_int_equal(v[4], 0); /* write errors */
    assert_int_equal(kv_decoder_late_imms(f.d), 0);
    stop(&f, false);
    (void)state;
}

static void test_cancel_is_confirmed(void **state)
{
    fx f;
    const uint32_t L = 24;
    start(&f, L, 16, 8192, 1024, 40000, 64); /* ~1 s of prefill */
    uint32_t pages[16];
    for (uint32_t k = 0; k < 16; k++) pages[k] = 3 * k + 1;
    kv_result res;
    uint64_t t0 = app_now_us();
    int r = kv_decoder_run(f.d, &f.addr, f.nics, pages, 16, 5, 200, 5000, &res);
    assert_int_equal(r, -ETIMEDOUT);
    assert_true(res.confirmed);
    assert_int_equal(res.fires, 0);
    assert_true(app_now_us() - t0 < 4500000u); /* the confirmation, not the 5 s wait */
    assert_int_equal(kv_decoder_quarantined(f.d), 0);
    /* After the confirmation nothing of the request lands any more. */
    uint64_t h = kv_decoder_hash_pages(f.d, pages, 16);
    usleep((useconds_t)(L * 40000 + 200000));
    assert_true(h == kv_decoder_hash_pages(f.d, pages, 16));
    assert_int_equal(kv_decoder_late_imms(f.d), 0);
    uint64_t v[5];
    stats(&f, v);
    assert_int_equal(v[2], 1);  /* cancelled */
    assert_int_equal(v[1], 0);  /* never completed */
    assert_true(v[3] < L);      /* stopped issuing layers */
    /* The same pages are reusable for the next request, which completes. */
    stop(&f, false);
    (void)state;
}

static void test_reuse_after_cancel(void **state)
{
    fx f;
    start(&f, 6, 8, 4096, 512, 30000, 16);
    uint32_t pages[8] = {1, 3, 5, 7, 9, 11, 13, 15};
    kv_result res;
    assert_int_equal(kv_decoder_run(f.d, &f.addr, f.nics, pages, 8, 9, 40, 5000, &res), -ETIMEDOUT);
    assert_true(res.confirmed);
    int r = kv_decoder_run(f.d, &f.addr, f.nics, pages, 8, 10, 15000, 5000, &res);
    if (r) fail_msg("request after cancel: %s", te_strerror(r));
    assert_int_equal(res.fires, 1);
    assert_int_equal(res.bad_bytes, 0);
    stop(&f, false);
    (void)state;
}

static void test_mismatched_shape_rejected(void **state)
{
    fx f;
    start(&f, 4, 8, 4096, 512, 1000, 16);
    kv_decoder_destroy(f.d);
    te_config cfg;
    th_config(&cfg);
    kv_decoder_opts o = {.shape = f.shape, .slots = 16};
    o.shape.page_len = 8192; /* the prefiller serves 4096-byte pages */
    assert_int_equal(kv_decoder_create(&cfg, &o, &f.d), 0);
    uint32_t pages[2] = {4, 5};
    kv_result res;
    assert_int_equal(kv_decoder_run(f.d, &f.addr, f.nics, pages, 2, 1, 10000, 5000, &res), -EREMOTEIO);
    assert_true(res.confirmed);
    assert_int_equal(kv_decoder_quarantined(f.d), 0);
    stop(&f, false);
    (void)state;
}

typedef struct killer {
    th_proc *p;
    int delay_ms;
} killer;

static void *kill_later(void *arg)
{
    killer *k = arg;
    usleep((useconds_t)k->delay_ms * 1000u);
    th_kill(k->p, SIGKILL);
    return NULL;
}

static void teardown_hung(int sig)
{
    (void)sig;
    static const char m[] = "note: shm teardown hung after the prefiller was killed "
                            "(known libfabric 1.17 shm problem); exiting\n";
    ssize_t w = write(2, m, sizeof m - 1);
    (void)w;
    _exit(0);
}

static void test_dead_prefiller_times_out(void **state)
{
    fx f;
    start(&f, 20, 8, 4096, 512, 50000, 32); /* 1 s of prefill; killed after 150 ms */
    uint32_t pages[8] = {0, 2, 4, 6, 8, 10, 12, 14};
    killer k = {&f.pf, 150};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, kill_later, &k), 0);
    kv_result res;
    uint64_t t0 = app_now_us();
    int r = kv_decoder_run(f.d, &f.addr, f.nics, pages, 8, 3, 1500, 1000, &res);
    uint64_t el = app_now_us() - t0;
    pthread_join(t, NULL);
    assert_int_equal(r, -ETIMEDOUT);
    assert_false(res.confirmed);
    assert_true(el < 6000000u); /* deadline + cancel wait, not a hang */
    assert_int_equal(kv_decoder_quarantined(f.d), 8);
    /* quarantined pages are not handed out again */
    assert_int_equal(kv_decoder_run(f.d, &f.addr, f.nics, pages, 8, 4, 100, 100, &res), -EBUSY);
    /* The killed prefiller cannot remove its shm region; do it while it is a zombie. */
    if (app_wait_exited(f.pf.pid, TMO) == 0) app_shm_cleanup_dead(f.pf.pid);
    th_wait(&f.pf, TMO);
    /* libfabric 1.17's shm was seen to hang in teardown after a peer crashed mid-transfer
     * (docs/applications.md); everything this test checks has passed by now, so on shm a
     * hang is reported as a note. On tcp a hang is ours and ctest's timeout fails it. */
    if (!strcmp(th_provider(), "shm")) {
        signal(SIGALRM, teardown_hung);
        alarm(60);
    }
    stop(&f, true);
    alarm(0);
    (void)state;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child"))
        return !strcmp(argv[2], "prefiller") ? prefiller_child(argc > 3 ? argv[3] : "") : 2;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_pages_arrive),
        cmocka_unit_test(test_cancel_is_confirmed),
        cmocka_unit_test(test_reuse_after_cancel),
        cmocka_unit_test(test_mismatched_shape_rejected),
        cmocka_unit_test(test_dead_prefiller_times_out), /* last: its teardown watchdog may exit */
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
