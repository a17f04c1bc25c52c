/* Progress driven by callers (docs/engine.md, "Who drives progress"): submitters post
 * their own operations, waiters poll completions themselves, immediates can be answered
 * inline, and the queue of operations per group is bounded. Each test checks what a user
 * relies on: every operation completes exactly once, nothing is lost or written twice,
 * and stop still cancels what is pending. Runs under ThreadSanitizer (label "threads"). */
/* ctest-labels: threads (the TSan run: submitters, waiters and inline callbacks drive progress) */
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

#define TMO 60000
#define IMM_DATA 5151u

typedef struct fixture {
    th_proc p;
    te_addr peer_addr;
    te_mr_desc dst;
    te_engine *e;
    uint8_t *src;
    size_t len;
    te_mr *mr;
} fixture;

static void setup(fixture *f, size_t len, uint32_t max_queued)
{
    char line[4200], size[32];
    memset(f, 0, sizeof *f);
    f->len = len;
    snprintf(size, sizeof size, "%zu", len);
    if (th_peer_start(&f->p, size, &f->peer_addr, &f->dst, TMO, line, sizeof line)) fail_msg("%s", line);
    te_config cfg;
    th_config(&cfg);
    cfg.max_queued_ops = max_queued;
    assert_int_equal(te_engine_create(&cfg, &f->e), 0);
    f->src = aligned_alloc(4096, len);
    th_fill(f->src, len, 7, 0);
    assert_int_equal(te_mr_register(f->e, f->src, len, TE_DEVICE_HOST, 0, &f->mr), 0);
    assert_int_equal(th_ask(&f->p, line, sizeof line, TMO, "counter %u", IMM_DATA), 0);
    assert_string_equal(line, "ok");
}

static void check_peer_bytes(fixture *f, size_t len)
{
    char line[256], want[64];
    assert_int_equal(th_ask(&f->p, line, sizeof line, TMO, "hash 0 %zu", len), 0);
    snprintf(want, sizeof want, "hash %" PRIu64, th_hash(f->src, len));
    assert_string_equal(line, want);
}

static void teardown(fixture *f)
{
    th_send(&f->p, "quit");
    assert_int_equal(th_wait(&f->p, TMO), 0);
    te_engine_destroy(f->e);
    free(f->src);
}

/* ---- back-pressure: -EAGAIN past max_queued_ops, and nothing accepted is lost ---- */

#define BIG (1u << 20)
#define TRIES 200

static void test_queue_limit(void **state)
{
    (void)state;
    fixture f;
    setup(&f, 4 * BIG, 4);
    te_counter *done;
    assert_int_equal(te_counter_create(&done), 0);
    uint64_t accepted = 0, refused = 0;
    for (int k = 0; k < TRIES; k++) {
        uint64_t off = (uint64_t)(k % 4) * BIG;
        te_write_args a = {.src = f.mr, .src_offset = off, .len = BIG, .dst = &f.dst,
                           .dst_offset = off, .has_imm = true, .imm = IMM_DATA,
                           .route = {TE_ROUTE_SHARDED, 0}};
        te_completion c = {.counter = done};
        int r = te_write(f.e, &a, &c);
        if (r == -EAGAIN) {
            refused++;
            assert_non_null(strstr(te_last_error(), "max_queued_ops"));
            continue;
        }
        assert_int_equal(r, 0);
        accepted++;
        /* At most 4 submitted and not completed, whatever the completions' timing. */
        assert_true(accepted - te_counter_done(done) <= 4);
    }
    /* 200 one-MiB writes cannot all complete between back-to-back submissions. */
    assert_true(refused > 0);
    th_assert_counter(done, accepted, TMO);
    /* The slots came back: a new submission is accepted. */
    te_write_args a = {.src = f.mr, .len = 4096, .dst = &f.dst, .route = {TE_ROUTE_SHARDED, 0}};
    te_completion c = {.counter = done};
    assert_int_equal(te_write(f.e, &a, &c), 0);
    th_assert_counter(done, accepted + 1, TMO);
    /* Exactly one immediate per accepted write reached the peer: none lost, none extra. */
    th_assert_peer_imms(&f.p, IMM_DATA, accepted * te_group_nics(f.e, 0), TMO, 50);
    check_peer_bytes(&f, 4 * BIG);
    teardown(&f);
    te_counter_destroy(done);
}

/* ---- many threads submitting and waiting (driving progress) at once ---- */

#define THREADS 6
#define PER_THREAD 300
#define CHUNK 4096
#define WINDOW 8

typedef struct shared {
    fixture *f;
    _Atomic int callbacks;
    _Atomic int failures;
} shared;

typedef struct targ {
    shared *s;
    int id;
} targ;

static void on_done(void *arg, int status, const char *msg)
{
    (void)msg;
    shared *s = arg;
    atomic_fetch_add(&s->callbacks, 1);
    if (status) atomic_fetch_add(&s->failures, 1);
}

/* Each thread keeps WINDOW writes of its own slice in flight on its own counter and waits
 * on it (so every thread is in turn submitter, poster, and poller of everyone's
 * completions); every 4th write also has a callback. */
static void *submit_and_wait(void *arg)
{
    targ *t = arg;
    fixture *f = t->s->f;
    te_counter *c;
    if (te_counter_create(&c)) return (void *)1;
    intptr_t bad = 0;
    for (uint64_t k = 0; k < PER_THREAD && !bad; k++) {
        if (k >= WINDOW && te_counter_wait(c, k - WINDOW + 1, TMO)) bad = 2;
        uint64_t off = ((uint64_t)t->id * PER_THREAD + k) * CHUNK;
        te_write_args a = {.src = f->mr, .src_offset = off, .len = CHUNK, .dst = &f->dst,
                           .dst_offset = off, .has_imm = true, .imm = IMM_DATA,
                           .route = {TE_ROUTE_SHARDED, 0}};
        te_completion comp = {.counter = c};
        if (k % 4 == 0) comp.fn = on_done, comp.arg = t->s;
        int r;
        while ((r = te_write(f->e, &a, &comp)) == -EAGAIN) {}
        if (r) bad = 3;
    }
    if (!bad && te_counter_wait(c, PER_THREAD, TMO)) bad = 4;
    if (!bad && te_counter_errors(c)) bad = 5;
    usleep(10000);
    if (!bad && te_counter_done(c) != PER_THREAD) bad = 6; /* never more than submitted */
    te_counter_destroy(c);
    return (void *)bad;
}

static void test_submitters_and_waiters(void **state)
{
    (void)state;
    fixture f;
    setup(&f, (size_t)THREADS * PER_THREAD * CHUNK, 0);
    shared s = {.f = &f};
    pthread_t th[THREADS];
    targ ta[THREADS];
    for (int k = 0; k < THREADS; k++) {
        ta[k] = (targ){&s, k};
        assert_int_equal(pthread_create(&th[k], NULL, submit_and_wait, &ta[k]), 0);
    }
    for (int k = 0; k < THREADS; k++) {
        void *rv;
        pthread_join(th[k], &rv);
        assert_int_equal((intptr_t)rv, 0);
    }
    int want_cb = THREADS * ((PER_THREAD + 3) / 4);
    for (int w = 0; w < 2000 && atomic_load(&s.callbacks) < want_cb; w++) usleep(5000);
    usleep(20000);
    assert_int_equal(atomic_load(&s.callbacks), want_cb); /* each exactly once */
    assert_int_equal(atomic_load(&s.failures), 0);
    th_assert_peer_imms(&f.p, IMM_DATA, (uint64_t)THREADS * PER_THREAD * te_group_nics(f.e, 0), TMO, 50);
    check_peer_bytes(&f, f.len);
    teardown(&f);
}

/* ---- stop while threads wait on pending operations ---- */

typedef struct stop_arg {
    te_counter *c;
    uint64_t target;
    int result;
} stop_arg;

static void *wait_all(void *arg)
{
    stop_arg *a = arg;
    a->result = te_counter_wait(a->c, a->target, TMO);
    return NULL;
}

static void test_stop_with_waiters(void **state)
{
    (void)state;
    fixture f;
    /* 64 KiB writes: what is already posted at stop drains well within the engine's
     * grace period (closing shm 1.17 endpoints under large in-flight writes can crash
     * the receiving peer, docs/engine.md). */
    const uint64_t piece = 64 << 10, slots = 64;
    setup(&f, slots * piece, 0);
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    shared s = {.f = &f};
    const uint64_t n = 2000;
    uint64_t with_cb = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t off = (k % slots) * piece;
        te_write_args a = {.src = f.mr, .src_offset = off, .len = piece, .dst = &f.dst,
                           .dst_offset = off, .route = {TE_ROUTE_SHARDED, 0}};
        te_completion comp = {.counter = c};
        if (k % 2) comp.fn = on_done, comp.arg = &s, with_cb++;
        assert_int_equal(te_write(f.e, &a, &comp), 0);
    }
    stop_arg w[3];
    pthread_t th[3];
    for (int k = 0; k < 3; k++) {
        w[k] = (stop_arg){c, n, -1};
        assert_int_equal(pthread_create(&th[k], NULL, wait_all, &w[k]), 0);
    }
    usleep(1000); /* the waiters are driving progress now */
    assert_int_equal(te_engine_stop(f.e), 0);
    /* Every operation completed exactly once (some with -ECANCELED), before stop returned. */
    assert_int_equal(te_counter_done(c), n);
    assert_int_equal(atomic_load(&s.callbacks), (int)with_cb);
    print_message("stop: %" PRIu64 " of %" PRIu64 " writes canceled or failed\n", te_counter_errors(c), n);
    for (int k = 0; k < 3; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(w[k].result, 0);
    }
    te_write_args a = {.src = f.mr, .len = 4096, .dst = &f.dst, .route = {TE_ROUTE_SHARDED, 0}};
    assert_int_equal(te_write(f.e, &a, NULL), -ESHUTDOWN);
    th_send(&f.p, "quit");
    assert_int_equal(th_wait(&f.p, TMO), 0);
    te_engine_destroy(f.e);
    /* The counter outlives the engine: waiting on it must not touch the freed engine. */
    assert_int_equal(te_counter_wait(c, n, 10), 0);
    assert_int_equal(te_counter_wait(c, n + 1, 10), -ETIMEDOUT);
    te_counter_destroy(c);
    free(f.src);
}

/* ---- immediates answered inline: ping-pong between two engines of this process ---- */

#define PING 71u
#define PONG 72u
#define ROUNDS 500

typedef struct ponger {
    te_engine *e;
    te_mr_desc back;
    _Atomic int pings;
    _Atomic int submit_errors;
} ponger;

static void on_ping(void *arg, uint32_t imm)
{
    ponger *p = arg;
    if (imm != PING) return;
    atomic_fetch_add(&p->pings, 1);
    if (te_write_imm(p->e, PONG, &p->back, (te_route){TE_ROUTE_PINNED, 0}, NULL))
        atomic_fetch_add(&p->submit_errors, 1);
}

static void test_inline_pong(void **state)
{
    (void)state;
    te_config cfg;
    th_config(&cfg);
    te_engine *a, *b;
    assert_int_equal(te_engine_create(&cfg, &a), 0);
    assert_int_equal(te_engine_create(&cfg, &b), 0);
    static uint8_t ma[4096], mb[4096];
    te_mr *ra, *rb;
    assert_int_equal(te_mr_register(a, ma, sizeof ma, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &ra), 0);
    assert_int_equal(te_mr_register(b, mb, sizeof mb, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &rb), 0);
    te_mr_desc da, db;
    assert_int_equal(te_mr_desc_get(ra, &da), 0);
    assert_int_equal(te_mr_desc_get(rb, &db), 0);
    ponger p = {.e = b, .back = da};
    assert_int_equal(te_imm_set_callback_inline(b, on_ping, &p), 0);
    te_imm_counter *pongs;
    assert_int_equal(te_imm_counter_create(a, PONG, &pongs), 0);
    for (int k = 0; k < ROUNDS; k++) {
        assert_int_equal(te_write_imm(a, PING, &db, (te_route){TE_ROUTE_PINNED, 0}, NULL), 0);
        int r = te_imm_counter_wait(pongs, 1, TMO);
        if (r) fail_msg("round %d: %s", k, te_last_error());
    }
    usleep(20000);
    assert_int_equal(atomic_load(&p.pings), ROUNDS);       /* one call per ping */
    assert_int_equal(te_imm_counter_value(pongs), 0);      /* and no pong extra */
    assert_int_equal(atomic_load(&p.submit_errors), 0);
    te_engine_destroy(a);
    te_engine_destroy(b);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return th_peer_main(argc > 3 ? argv[3] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_limit),
        cmocka_unit_test(test_submitters_and_waiters),
        cmocka_unit_test(test_stop_with_waiters),
        cmocka_unit_test(test_inline_pong),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
