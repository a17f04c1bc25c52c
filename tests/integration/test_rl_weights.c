/* RL weight transfer (examples/rl_weight_transfer) between real processes over the
 * provider under test: the static schedule covers every byte exactly once and balances
 * the trainers; every parameter shard arrives intact over several steps with changing
 * values; a trainer that dies mid-update makes the controller and the inference side
 * report an error within a bounded time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "common/app_util.h"
#include "rl_weight_transfer/rl_weights.h"

static void small_opts(rl_opts *o)
{
    rl_opts_default(o);
    o->provider = th_provider();
    o->trainers = 4;
    o->inference = 2;
    o->params = 23;
    o->total_bytes = 6u << 20;
    o->chunk_max = 256u << 10;
    o->steps = 4;
    o->window = 8;
    /* A failure detector, not a speed check: the first update also pays for connection
     * setup and first touches, on a loaded 2-core machine under sanitizers. */
    o->step_timeout_ms = 15000;
}

static void test_schedule_exact_cover(void **state)
{
    static const uint32_t T[] = {1, 3, 4, 7}, M[] = {1, 2, 3, 5};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 4; j++) {
            rl_opts o;
            small_opts(&o);
            o.trainers = T[i];
            o.inference = M[j];
            o.params = 17 + (uint32_t)i;
            o.total_bytes = (1u << 20) + 8 * j;
            o.chunk_max = 40960;
            rl_layout l;
            assert_int_equal(rl_layout_make(&o, &l), 0);
            rl_task *t;
            size_t n;
            assert_int_equal(rl_schedule(&l, o.trainers, o.chunk_max, &t, &n), 0);
            char err[256] = "";
            if (rl_schedule_check(&l, o.trainers, t, n, err, sizeof err)) fail_msg("%s", err);
            /* byte map: every destination byte exactly once */
            for (uint32_t m = 0; m < o.inference; m++) {
                uint8_t *seen = calloc(l.inf_len[m] + 1, 1);
                for (size_t k = 0; k < n; k++)
                    if (t[k].dst == m)
                        for (uint64_t b = 0; b < t[k].len; b++) seen[t[k].dst_off + b]++;
                for (uint64_t b = 0; b < l.inf_len[m]; b++)
                    if (seen[b] != 1) fail_msg("T=%u M=%u: byte %lu of %u seen %u times", T[i], M[j],
                                               (unsigned long)b, m, seen[b]);
                free(seen);
            }
            /* balance: LPT keeps every trainer within one chunk of the mean */
            uint64_t *load = calloc(o.trainers, 8), mx = 0, mn = UINT64_MAX;
            for (size_t k = 0; k < n; k++) load[t[k].trainer] += t[k].len;
            for (uint32_t k = 0; k < o.trainers; k++) {
                if (load[k] > mx) mx = load[k];
                if (load[k] < mn) mn = load[k];
            }
            assert_true(mx - mn <= o.chunk_max);
            /* a broken schedule is caught */
            if (n > 1) {
                t[1].len += 8;
                assert_int_not_equal(rl_schedule_check(&l, o.trainers, t, n, err, sizeof err), 0);
            }
            free(load);
            free(t);
            rl_layout_free(&l);
        }
    (void)state;
}

static void test_updates_arrive_intact(void **state)
{
    rl_opts o;
    small_opts(&o);
    rl_result r;
    int rc = rl_run(&o, &r);
    if (rc) fail_msg("rl_run: %s", r.error);
    assert_int_equal(r.steps_ok, o.steps);
    assert_int_equal(r.child_failures, 0);
    assert_int_equal(r.children_killed, 0);
    assert_true(r.tasks > 0);
    assert_true(r.trainer_bytes_max - r.trainer_bytes_min <= o.chunk_max);
    print_message("%u updates of %.1f MiB: best %.2f ms (%.2f GB/s)\n", r.steps_ok,
                  (double)r.bytes_per_step / 1048576.0, r.update_ms_best, r.gbps_best);
    (void)state;
}

static void test_updates_with_write_imms(void **state)
{
    rl_opts o;
    small_opts(&o);
    o.write_imms = true; /* every write carries an immediate; receivers count them */
    o.trainers = 3;
    o.inference = 3;
    o.steps = 3;
    rl_result r;
    int rc = rl_run(&o, &r);
    if (rc) fail_msg("rl_run: %s", r.error);
    assert_true(r.write_imms);
    assert_int_equal(r.steps_ok, o.steps);
    assert_int_equal(r.child_failures, 0);
    (void)state;
}

static void test_dead_trainer_is_reported(void **state)
{
    rl_opts o;
    small_opts(&o);
    o.die_trainer = 2;
    o.die_step = 2;
    o.step_timeout_ms = 4000; /* update 1 must still succeed under load */
    rl_result r;
    uint64_t t0 = app_now_us();
    int rc = rl_run(&o, &r);
    uint64_t el = app_now_us() - t0;
    assert_int_not_equal(rc, 0);
    assert_int_equal(r.steps_ok, 1);
    print_message("reported: %s (after %.0f ms); inference timeouts %u; killed at shutdown %u; "
                  "total %.1f s\n", r.error, r.fail_detect_ms, r.inference_timeouts,
                  r.children_killed, (double)el / 1e6);
    assert_non_null(strstr(r.error, "trainer 2"));
    assert_int_equal(r.inference_timeouts, o.inference); /* the receivers noticed too */
    assert_true(r.fail_detect_ms < 10000.0);
    assert_true(el < 30000000u);
    assert_int_equal(r.child_failures, 0);
    (void)state;
}

int main(int argc, char **argv)
{
    if (rl_is_child(argc, argv)) return rl_child_main(argc, argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule_exact_cover),
        cmocka_unit_test(test_updates_arrive_intact),
        cmocka_unit_test(test_updates_with_write_imms),
        cmocka_unit_test(test_dead_trainer_is_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
