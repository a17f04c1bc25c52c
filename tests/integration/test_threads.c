/* Many caller threads submitting at once: every operation completes exactly once, the
 * peer sees exactly one immediate per write, and every byte lands where it should; and
 * memory registered and deregistered on other threads while writes run (registration
 * runs outside the progress lock, against a domain opened FI_THREAD_COMPLETION on shm).
 * Runs under ThreadSanitizer in CI (label "threads"). */
/* ctest-labels: threads (the TSan run: many submitting threads) */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "peer.h"

#define THREADS 8
#define PER_THREAD 150
#define CHUNK 4096
#define REGION (THREADS * PER_THREAD * CHUNK)
#define TMO 60000

typedef struct shared {
    te_engine *e;
    te_mr *mr;
    te_mr_desc dst;
    te_counter *done;
    _Atomic int callbacks[THREADS];
    int submit_errors;
} shared;

typedef struct targ {
    shared *s;
    int id;
} targ;

static void on_done(void *arg, int status, const char *msg)
{
    _Atomic int *n = arg;
    atomic_fetch_add(n, status == 0 ? 1 : 1000000);
}

static void *submitter(void *arg)
{
    targ *t = arg;
    shared *s = t->s;
    for (int k = 0; k < PER_THREAD; k++) {
        uint64_t off = ((uint64_t)t->id * PER_THREAD + (uint64_t)k) * CHUNK;
        te_write_args a = {.src = s->mr, .src_offset = off, .len = CHUNK, .dst = &s->dst,
                           .dst_offset = off, .has_imm = true, .imm = 4242,
                           .route = {TE_ROUTE_SHARDED, 0}};
        /* Half the operations report through the counter, half through callbacks. */
        te_completion c = k % 2 ? (te_completion){.counter = s->done}
                                : (te_completion){.fn = on_done, .arg = &s->callbacks[t->id]};
        if (te_write(s->e, &a, &c)) __atomic_add_fetch(&s->submit_errors, 1, __ATOMIC_SEQ_CST);
    }
    return NULL;
}

typedef struct registrar {
    te_engine *e;
    _Atomic bool *stop;
    int cycles, errors;
} registrar;

/* Registers and deregisters regions of 64 KiB..1 MiB until told to stop (at least 50
 * times), while the submitters write. */
static void *register_loop(void *arg)
{
    registrar *r = arg;
    for (int k = 0; k < 50 || !atomic_load(r->stop); k++) {
        size_t len = (size_t)64 << 10 << (k % 5);
        void *buf = aligned_alloc(4096, len);
        te_mr *mr;
        if (!buf || te_mr_register(r->e, buf, len, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mr)) {
            r->errors++;
        } else {
            te_mr_desc d;
            if (te_mr_desc_get(mr, &d) || d.len != len) r->errors++;
            if (te_mr_deregister(mr)) r->errors++;
        }
        free(buf);
        r->cycles++;
    }
    return NULL;
}

static void run_submitters(void **state, bool registrars);

static void test_concurrent_submitters(void **state)
{
    run_submitters(state, false);
}

static void test_register_while_writing(void **state)
{
    run_submitters(state, true);
}

static void run_submitters(void **state, bool registrars)
{
    (void)state;
    th_proc p;
    char line[4200], size[32];
    te_addr peer_addr;
    shared s = {0};
    snprintf(size, sizeof size, "%d", REGION);
    if (th_peer_start(&p, size, &peer_addr, &s.dst, TMO, line, sizeof line)) fail_msg("%s", line);

    te_config cfg;
    th_config(&cfg);
    assert_int_equal(te_engine_create(&cfg, &s.e), 0);
    uint8_t *src = aligned_alloc(4096, REGION);
    th_fill(src, REGION, 99, 0);
    assert_int_equal(te_mr_register(s.e, src, REGION, TE_DEVICE_HOST, 0, &s.mr), 0);
    assert_int_equal(te_counter_create(&s.done), 0);
    assert_int_equal(th_ask(&p, line, sizeof line, TMO, "counter 4242"), 0);
    assert_string_equal(line, "ok");

    pthread_t th[THREADS], rt[2];
    targ ta[THREADS];
    _Atomic bool stop = false;
    registrar rg[2] = {{s.e, &stop, 0, 0}, {s.e, &stop, 0, 0}};
    for (int k = 0; registrars && k < 2; k++) pthread_create(&rt[k], NULL, register_loop, &rg[k]);
    for (int k = 0; k < THREADS; k++) {
        ta[k] = (targ){&s, k};
        pthread_create(&th[k], NULL, submitter, &ta[k]);
    }
    for (int k = 0; k < THREADS; k++) pthread_join(th[k], NULL);
    assert_int_equal(s.submit_errors, 0);
    atomic_store(&stop, true);
    for (int k = 0; registrars && k < 2; k++) {
        pthread_join(rt[k], NULL);
        assert_int_equal(rg[k].errors, 0);
        assert_true(rg[k].cycles >= 50);
    }

    uint64_t via_counter = THREADS * (PER_THREAD / 2);
    assert_int_equal(te_counter_wait(s.done, via_counter, TMO), 0);
    assert_int_equal(te_counter_errors(s.done), 0);
    for (int k = 0; k < THREADS; k++) {
        for (int w = 0; w < 2000 && atomic_load(&s.callbacks[k]) < PER_THREAD / 2; w++) usleep(5000);
        assert_int_equal(atomic_load(&s.callbacks[k]), PER_THREAD / 2); /* once each, no errors */
    }
    uint64_t imms = (uint64_t)THREADS * PER_THREAD * te_group_nics(s.e, 0);
    assert_int_equal(th_ask(&p, line, sizeof line, TMO, "wait 4242 %" PRIu64 " %d", imms, TMO), 0);
    assert_memory_equal(line, "ok", 2);
    usleep(20000);
    assert_int_equal(th_ask(&p, line, sizeof line, TMO, "value 4242"), 0);
    assert_string_equal(line, "value 0");
    assert_int_equal(th_ask(&p, line, sizeof line, TMO, "hash 0 %d", REGION), 0);
    char want[64];
    snprintf(want, sizeof want, "hash %" PRIu64, th_hash(src, REGION));
    assert_string_equal(line, want);
    /* te_counter_done never exceeds what was submitted through it. */
    usleep(20000);
    assert_int_equal(te_counter_done(s.done), via_counter);

    th_send(&p, "quit");
    assert_int_equal(th_wait(&p, TMO), 0);
    te_engine_destroy(s.e);
    te_counter_destroy(s.done);
    free(src);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return th_peer_main(argc > 3 ? argv[3] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_submitters),
        cmocka_unit_test(test_register_while_writing),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
