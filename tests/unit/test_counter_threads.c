/* Completion counters with several waiters and a bumping thread (the worker's role):
 * every waiter returns once its own target is reached, never before, whatever the
 * interleaving of targets, publications and bumps (counter.c explains the target-aware
 * wake-up). Sleeps re-check every 10 ms, so a lost wake-up shows here only as slowness;
 * what this asserts is that no waiter returns early, hangs, or miscounts. */
/* ctest-labels: threads (the TSan run: waiters and a bumping thread) */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "te/engine_internal.h"

typedef struct waiter {
    te_counter *c;
    uint64_t target;
    int rc;
    uint64_t seen; /* done when the wait returned */
    _Atomic int started;
} waiter;

static void *wait_main(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->started, 1);
    w->rc = te_counter_wait(w->c, w->target, 20000);
    w->seen = te_counter_done(w->c);
    return NULL;
}

typedef struct bumper {
    te_counter *c;
    uint64_t n;
    unsigned yield_every; /* 0: never */
} bumper;

static void *bump_main(void *arg)
{
    bumper *b = arg;
    for (uint64_t k = 0; k < b->n; k++) {
        counter_bump(b->c, k % 7 == 3);
        if (b->yield_every && k % b->yield_every == 0) sched_yield();
    }
    return NULL;
}

static void run_round(uint64_t n, const uint64_t *targets, int nw, unsigned yield_every, bool late)
{
    te_counter *c = NULL;
    assert_int_equal(te_counter_create(&c), 0);
    waiter w[8];
    pthread_t wt[8], bt;
    assert_true(nw <= 8);
    for (int i = 0; i < nw; i++) {
        w[i] = (waiter){.c = c, .target = targets[i]};
        assert_int_equal(pthread_create(&wt[i], NULL, wait_main, &w[i]), 0);
    }
    if (late) /* waiters asleep first: the wake-up path, not the first check */
        for (int i = 0; i < nw; i++)
            while (!atomic_load(&w[i].started)) sched_yield();
    if (late) usleep(2000);
    bumper b = {c, n, yield_every};
    assert_int_equal(pthread_create(&bt, NULL, bump_main, &b), 0);
    uint64_t t0 = tn_now_ns();
    for (int i = 0; i < nw; i++) {
        pthread_join(wt[i], NULL);
        assert_int_equal(w[i].rc, 0);
        assert_true(w[i].seen >= w[i].target);
    }
    pthread_join(bt, NULL);
    /* Generous: a lost wake-up costs a 10 ms re-check slice per sleep, far below this,
     * so this only catches a waiter that never comes back. */
    assert_true(tn_now_ns() - t0 < 15000000000ull);
    assert_int_equal(te_counter_done(c), n);
    uint64_t fails = 0;
    for (uint64_t k = 0; k < n; k++) fails += k % 7 == 3;
    assert_int_equal(te_counter_errors(c), fails);
    te_counter_destroy(c);
}

static void test_waiters_at_their_targets(void **state)
{
    (void)state;
    static const uint64_t t[] = {250, 500, 750, 1000, 1, 999};
    run_round(1000, t, 6, 16, true);
    run_round(1000, t, 6, 0, false);
}

static void test_random_interleavings(void **state)
{
    (void)state;
    srand(11);
    for (int round = 0; round < 150; round++) {
        uint64_t t[4];
        for (int i = 0; i < 4; i++) t[i] = 1 + (uint64_t)rand() % 64;
        run_round(64, t, 4, (unsigned)(round % 4), round % 3 == 0);
    }
}

static void test_reached_and_timeout(void **state)
{
    (void)state;
    te_counter *c = NULL;
    assert_int_equal(te_counter_create(&c), 0);
    assert_int_equal(te_counter_wait(c, 0, 0), 0); /* nothing asked: at once */
    uint64_t t0 = tn_now_ns();
    assert_int_equal(te_counter_wait(c, 1, 50), -ETIMEDOUT);
    assert_true(tn_now_ns() - t0 >= 45000000ull);
    assert_non_null(strstr(te_last_error(), "0 of 1"));
    counter_bump(c, false);
    assert_int_equal(te_counter_wait(c, 1, 0), 0);
    /* A waiter that timed out leaves its target behind; later waits still work. */
    assert_int_equal(te_counter_wait(c, 3, 20), -ETIMEDOUT);
    counter_bump(c, true);
    counter_bump(c, false);
    assert_int_equal(te_counter_wait(c, 3, 1000), 0);
    assert_int_equal(te_counter_errors(c), 1);
    assert_int_equal(te_counter_wait(NULL, 1, 0), -EINVAL);
    te_counter_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_waiters_at_their_targets),
        cmocka_unit_test(test_random_interleavings),
        cmocka_unit_test(test_reached_and_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
