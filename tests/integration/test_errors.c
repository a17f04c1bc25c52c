/* Errors a user relies on: bad input is rejected synchronously with a message naming the
 * problem (and nothing is queued), an engine used after stop says so, a stop completes
 * every pending operation exactly once, and a peer that dies produces errors within a
 * bounded time instead of a hang. */
/* ctest-labels: threads (the TSan run: stop racing submissions and callbacks) */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "harness.h"
#include "peer.h"

#define REGION (4u << 20)
#define TMO 20000

typedef struct fx {
    te_engine *e;
    uint8_t *buf;
    te_mr *mr;      /* remote-writable: also our own destination */
    te_mr_desc self;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    te_config cfg;
    th_config(&cfg);
    cfg.op_timeout_ms = 3000;
    assert_int_equal(te_engine_create(&cfg, &f->e), 0);
    f->buf = aligned_alloc(4096, REGION);
    memset(f->buf, 1, REGION);
    assert_int_equal(te_mr_register(f->e, f->buf, REGION, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &f->mr), 0);
    assert_int_equal(te_mr_desc_get(f->mr, &f->self), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    te_engine_destroy(f->e);
    free(f->buf);
    free(f);
    return 0;
}

#define EXPECT_ERR(call, code, needle)                                                          \
    do {                                                                                        \
        int _r = (call);                                                                        \
        if (_r != (code)) fail_msg("%s returned %d, want %d (%s)", #call, _r, code, te_last_error()); \
        if (!strstr(te_last_error(), needle))                                                   \
            fail_msg("%s: message '%s' lacks '%s'", #call, te_last_error(), needle);            \
    } while (0)

static void test_write_validation(void **state)
{
    fx *f = *state;
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    te_completion comp = {.counter = c};
    te_write_args a = {.src = f->mr, .len = 100, .dst = &f->self, .route = {TE_ROUTE_SHARDED, 0}};

    te_write_args b = a;
    b.src_offset = REGION - 99;
    EXPECT_ERR(te_write(f->e, &b, &comp), -ERANGE, "source range");
    b = a;
    b.dst_offset = REGION;
    EXPECT_ERR(te_write(f->e, &b, &comp), -ERANGE, "destination range");
    b = a;
    b.src_offset = UINT64_MAX - 10; /* overflow must not wrap into range */
    EXPECT_ERR(te_write(f->e, &b, &comp), -ERANGE, "source range");
    b = a;
    b.src = NULL;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "src is NULL");
    b = a;
    b.dst = NULL;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "dst is NULL");
    te_mr_desc two = f->self;
    two.n_nics = 2;
    two.nic[1] = two.nic[0];
    b = a;
    b.dst = &two;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "same number of NICs");
    te_mr_desc verbs_dst = f->self;
    verbs_dst.nic[0].addr.transport = TE_TRANSPORT_VERBS;
    b = a;
    b.dst = &verbs_dst;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "another backend");
    EXPECT_ERR(te_write_imm(f->e, 1, &verbs_dst, (te_route){TE_ROUTE_PINNED, 0}, &comp), -EINVAL,
               "another backend");
    assert_string_equal(te_strerror(-ENOTCONN), "not connected to the peer (connection lost)");
    te_mr_desc five = f->self;
    five.n_nics = 5;
    b.dst = &five;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "must be 1..4");
    b = a;
    b.route = (te_route){TE_ROUTE_PINNED, 1};
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "pinned NIC index 1 out of range");
    b.route = (te_route){TE_ROUTE_SHARDED, 3};
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "3 shards requested");
    b.route = (te_route){7, 0};
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "unknown route kind");
    EXPECT_ERR(te_write(f->e, NULL, &comp), -EINVAL, "args is NULL");
    /* struct_size (te.h): a size this library does not know is refused, nothing queued. */
    b = a;
    b.struct_size = sizeof b + 8;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "struct_size");
    b.struct_size = 3;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "struct_size");
    EXPECT_ERR(te_write(NULL, &a, &comp), -EINVAL, "engine is NULL");

    /* An MR of another engine is not usable here. */
    te_engine *other;
    te_config cfg;
    th_config(&cfg);
    assert_int_equal(te_engine_create(&cfg, &other), 0);
    te_mr *foreign;
    assert_int_equal(te_mr_register(other, f->buf, 4096, TE_DEVICE_HOST, 0, &foreign), 0);
    b = a;
    b.src = foreign;
    EXPECT_ERR(te_write(f->e, &b, &comp), -EINVAL, "another engine");
    te_engine_destroy(other);

    /* Paged: mismatched counts, pages beyond either region. */
    uint32_t idx[3] = {0, 1, 2}, big[1] = {5000};
    te_pages *p3, *p2, *pbig;
    assert_int_equal(te_pages_create(idx, 3, &p3), 0);
    assert_int_equal(te_pages_create(idx, 2, &p2), 0);
    assert_int_equal(te_pages_create(big, 1, &pbig), 0);
    te_paged_args pa = {.page_len = 4096, .src = f->mr, .src_pages = p3, .src_stride = 4096,
                        .dst = &f->self, .dst_pages = p2, .dst_stride = 4096};
    EXPECT_ERR(te_write_paged(f->e, &pa, &comp), -EINVAL, "3 source pages but 2");
    pa.struct_size = sizeof pa + 1;
    EXPECT_ERR(te_write_paged(f->e, &pa, &comp), -EINVAL, "struct_size");
    pa.struct_size = 0;
    pa.src_pages = pbig;
    pa.dst_pages = pbig;
    EXPECT_ERR(te_write_paged(f->e, &pa, &comp), -ERANGE, "source page 5000");
    pa.src_pages = p3;
    pa.dst_pages = p3;
    pa.dst_stride = REGION;
    EXPECT_ERR(te_write_paged(f->e, &pa, &comp), -ERANGE, "destination page 2");
    te_pages_release(p3);
    te_pages_release(p2);
    te_pages_release(pbig);

    /* Scatter and barrier. */
    te_scatter_args sa = {.src = f->mr, .targets = NULL, .n_targets = 0};
    EXPECT_ERR(te_write_scatter(f->e, &sa, &comp), -EINVAL, "no targets");
    sa.struct_size = 1;
    EXPECT_ERR(te_write_scatter(f->e, &sa, &comp), -EINVAL, "struct_size");
    sa.struct_size = sizeof sa;
    te_scatter_target t = {.dst = &f->self, .len = 10, .dst_offset = REGION - 5};
    sa.targets = &t;
    sa.n_targets = 1;
    EXPECT_ERR(te_write_scatter(f->e, &sa, &comp), -ERANGE, "destination range");
    sa.kind = TE_SCATTER_SINGLE;
    sa.nic = 2;
    t.dst_offset = 0;
    EXPECT_ERR(te_write_scatter(f->e, &sa, &comp), -EINVAL, "NIC index 2 out of range");
    EXPECT_ERR(te_barrier(f->e, 1, &f->self, 1, (te_route){TE_ROUTE_SHARDED, 2}, &comp), -EINVAL,
               "take n = 0 or 1");
    EXPECT_ERR(te_write_imm(f->e, 1, NULL, (te_route){TE_ROUTE_PINNED, 0}, &comp), -EINVAL, "dst is NULL");

    /* Sends: size limit, bad address. */
    te_addr me;
    assert_int_equal(te_main_address(f->e, &me), 0);
    static uint8_t big_msg[70000];
    EXPECT_ERR(te_send(f->e, &me, big_msg, sizeof big_msg, &comp), -EMSGSIZE, "max_msg_size");
    te_addr bogus = {0};
    EXPECT_ERR(te_send(f->e, &bogus, big_msg, 10, &comp), -EINVAL, "not an address");

    /* Registration. */
    te_mr *m;
    EXPECT_ERR(te_mr_register(f->e, NULL, 10, TE_DEVICE_HOST, 0, &m), -EINVAL, "ptr is NULL");
    EXPECT_ERR(te_mr_register(f->e, f->buf, 0, TE_DEVICE_HOST, 0, &m), -EINVAL, "len is 0");
    EXPECT_ERR(te_mr_register(f->e, f->buf, 10, 3, 0, &m), -ENODEV, "CUDA device 3");
    EXPECT_ERR(te_mr_register(f->e, f->buf, 10, TE_DEVICE_HOST, 0x80, &m), -EINVAL, "unknown flags");
    te_mr *local;
    te_mr_desc d;
    assert_int_equal(te_mr_register(f->e, f->buf, 4096, TE_DEVICE_HOST, 0, &local), 0);
    EXPECT_ERR(te_mr_desc_get(local, &d), -EPERM, "local-only");
    assert_int_equal(te_mr_deregister(local), 0);

    /* Immediates. */
    EXPECT_ERR(te_imm_expect(f->e, 5, 0, NULL, NULL, NULL), -EINVAL, "expected must be");
    EXPECT_ERR(te_imm_remove(f->e, 12345, NULL), -ENOENT, "no expectation");

    /* Nothing was queued by any of the rejected calls. */
    usleep(50000);
    assert_int_equal(te_counter_done(c), 0);
    te_counter_destroy(c);
}

static void test_config_validation(void **state)
{
    (void)state;
    te_engine *e;
    te_config cfg;
    th_config(&cfg);
    cfg.groups[0].n_nics = 5;
    EXPECT_ERR(te_engine_create(&cfg, &e), -EINVAL, "5 NICs requested");
    th_config(&cfg);
    cfg.provider = "no-such-provider";
    EXPECT_ERR(te_engine_create(&cfg, &e), -ENODEV, "no-such-provider");
    th_config(&cfg);
    cfg.groups[0].nics[0] = "no-such-nic0";
    assert_true(te_engine_create(&cfg, &e) < 0);
    assert_non_null(strstr(te_last_error(), "no-such-nic0"));
    EXPECT_ERR(te_engine_create(NULL, &e), -EINVAL, "cfg is NULL");
    th_config(&cfg);
    cfg.struct_size = 3;
    EXPECT_ERR(te_engine_create(&cfg, &e), -EINVAL, "struct_size");
    th_config(&cfg);
    cfg.n_groups = 2;
    cfg.groups[1] = cfg.groups[0];
    EXPECT_ERR(te_engine_create(&cfg, &e), -EINVAL, "both drive device");
}

typedef struct stop_from_cb {
    te_engine *e;
    _Atomic int rc;
    _Atomic int called;
} stop_from_cb;

static void try_stop(void *arg, int status, const char *msg)
{
    stop_from_cb *s = arg;
    atomic_store(&s->rc, te_engine_stop(s->e));
    atomic_store(&s->called, 1);
}

static void test_use_after_stop(void **state)
{
    fx *f = *state;
    /* Stopping from inside a callback would wait for itself: refused, nothing breaks. */
    stop_from_cb s = {.e = f->e};
    te_completion sc = {.fn = try_stop, .arg = &s};
    assert_int_equal(te_write_imm(f->e, 3, &f->self, (te_route){TE_ROUTE_PINNED, 0}, &sc), 0);
    for (int k = 0; k < 1000 && !atomic_load(&s.called); k++) usleep(5000);
    assert_int_equal(atomic_load(&s.rc), -EDEADLK);

    te_imm_counter *ic;
    assert_int_equal(te_imm_counter_create(f->e, 9, &ic), 0);
    assert_int_equal(te_engine_stop(f->e), 0);
    assert_int_equal(te_engine_stop(f->e), 0); /* idempotent */
    te_write_args a = {.src = f->mr, .len = 1, .dst = &f->self};
    EXPECT_ERR(te_write(f->e, &a, NULL), -ESHUTDOWN, "stopped");
    te_mr *m;
    EXPECT_ERR(te_mr_register(f->e, f->buf, 10, TE_DEVICE_HOST, 0, &m), -ESHUTDOWN, "stopped");
    te_addr me;
    assert_int_equal(te_main_address(f->e, &me), 0);
    EXPECT_ERR(te_send(f->e, &me, "x", 1, NULL), -ESHUTDOWN, "stopped");
    EXPECT_ERR(te_imm_counter_wait(ic, 1, 1000), -ESHUTDOWN, "stopped");
    EXPECT_ERR(te_imm_expect(f->e, 1, 1, NULL, NULL, NULL), -ESHUTDOWN, "stopped");
}

typedef struct tally {
    int ok, canceled, other;
    atomic_int calls; /* also read by the test thread before stop */
} tally;

static void on_done(void *arg, int status, const char *msg)
{
    tally *t = arg;
    t->calls++; /* the callback thread is the only writer */
    if (status == 0) t->ok++;
    else if (status == -ECANCELED) t->canceled++;
    else t->other++;
    if (status && !msg) t->other += 1000; /* errors must carry a message */
}

static void start_peer(th_proc *p, te_addr *addr, te_mr_desc *d)
{
    char why[4200];
    if (th_peer_start(p, "67108864", addr, d, TMO, why, sizeof why)) fail_msg("%s", why);
}

static void test_stop_with_pending(void **state)
{
    fx *f = *state;
    th_proc p;
    te_addr pa;
    te_mr_desc pd;
    start_peer(&p, &pa, &pd);
    /* One write first, so that the stop below meets operations in flight on an established
     * connection (a connection request the stopped peer never answered would be another
     * case, and libfabric 1.17's rxm leaks its info in the peer). */
    te_counter *warm;
    assert_int_equal(te_counter_create(&warm), 0);
    te_write_args wa = {.src = f->mr, .len = 4096, .dst = &pd, .route = {TE_ROUTE_SHARDED, 0}};
    te_completion wc = {.counter = warm};
    assert_int_equal(te_write(f->e, &wa, &wc), 0);
    assert_int_equal(te_counter_wait(warm, 1, TMO), 0);
    assert_int_equal(te_counter_errors(warm), 0);
    te_counter_destroy(warm);
    /* Then, over tcp, the peer is stopped (SIGSTOP), so its provider makes no progress:
     * the writes cannot complete (200 x 4 MiB fit in no socket buffer), and they are
     * still pending when te_engine_stop begins however fast this thread submits and
     * posts them. Not over shm: libfabric 1.17's shm guards each peer's shared region
     * with a spin lock that the peer's own fi_cq_read takes, so a peer stopped while it
     * holds it leaves our fi_writemsg spinning inside the provider forever (seen under
     * load in CI and here with gdb; docs/engine.md, known limits). Over shm the live
     * peer copies about as fast as this thread submits under TSan (up to 190 of 200
     * writes were done before the stop), so it gets 1000 writes (4 GiB of copies). */
    bool stop_peer = strcmp(th_provider(), "shm") != 0;
    if (stop_peer) th_kill(&p, SIGSTOP);
    tally t = {0};
    const int n = stop_peer ? 200 : 1000;
    for (int k = 0; k < n; k++) {
        te_write_args a = {.src = f->mr, .len = REGION, .dst = &pd, .dst_offset = (uint64_t)(k % 8) * REGION,
                           .route = {TE_ROUTE_SHARDED, 0}};
        te_completion c = {.fn = on_done, .arg = &t};
        assert_int_equal(te_write(f->e, &a, &c), 0);
    }
    int done_before_stop = atomic_load(&t.calls);
    if (done_before_stop >= n) {
        th_kill(&p, SIGKILL);
        th_wait(&p, TMO);
        fail_msg("all %d writes completed with the peer stopped: nothing was pending at stop", n);
    }
    assert_int_equal(te_engine_stop(f->e), 0);
    /* Every callback has run before stop returned, exactly once each; the pending ones
     * with -ECANCELED. */
    assert_int_equal(atomic_load(&t.calls), n);
    assert_int_equal(t.ok + t.canceled, n);
    assert_int_equal(t.other, 0);
    assert_true(t.canceled > 0);
    print_message("stop with pending: %d of %d writes done before stop, %d canceled\n",
                  done_before_stop, n, t.canceled);
    if (stop_peer) th_kill(&p, SIGCONT);
    th_send(&p, "quit");
    int rc = th_wait(&p, TMO);
    /* libfabric 1.17's shm provider sometimes crashes the *receiving* process inside
     * fi_cq_read after a sender stopped mid-transfer (docs/engine.md, known limits). That
     * is the provider's bug, not what this test checks; say so instead of failing. */
    if (rc != 0 && !strcmp(th_provider(), "shm"))
        print_message("note: shm peer exited with %d after the sender stopped mid-transfer "
                      "(known libfabric 1.17 shm crash)\n", rc);
    else
        assert_int_equal(rc, 0);
}

static void test_peer_death(void **state)
{
    fx *f = *state;
    th_proc p;
    te_addr pa;
    te_mr_desc pd;
    start_peer(&p, &pa, &pd);
    te_counter *c;
    assert_int_equal(te_counter_create(&c), 0);
    te_completion comp = {.counter = c};
    uint64_t submitted = 0;
    /* Traffic flows, then the peer is killed mid-stream. */
    for (int k = 0; k < 16; k++) {
        te_write_args a = {.src = f->mr, .len = REGION, .dst = &pd, .route = {TE_ROUTE_SHARDED, 0}};
        assert_int_equal(te_write(f->e, &a, &comp), 0);
        submitted++;
    }
    assert_int_equal(te_counter_wait(c, 4, TMO), 0);
    th_kill(&p, SIGKILL);
    uint64_t t0 = tn_now_ns();
    for (int k = 0; k < 50; k++) {
        te_write_args a = {.src = f->mr, .len = REGION, .dst = &pd, .route = {TE_ROUTE_SHARDED, 0}};
        assert_int_equal(te_write(f->e, &a, &comp), 0);
        submitted++;
        te_completion sc = {.counter = c};
        assert_int_equal(te_send(f->e, &pa, "ping", 4, &sc), 0);
        submitted++;
        usleep(2000);
    }
    /* Everything completes — with errors — within the op timeout plus slack. */
    int r = te_counter_wait(c, submitted, 15000);
    if (r) fail_msg("pending operations did not complete after the peer died: %s", te_last_error());
    double secs = (double)(tn_now_ns() - t0) / 1e9;
    print_message("peer death: %llu ops completed, %llu errors, %.2f s after the kill\n",
                  (unsigned long long)submitted, (unsigned long long)te_counter_errors(c), secs);
    assert_true(te_counter_errors(c) > 0);
    th_wait(&p, TMO);
    te_counter_destroy(c);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return th_peer_main(argc > 3 ? argv[3] : NULL);
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_write_validation, setup, teardown),
        cmocka_unit_test(test_config_validation),
        cmocka_unit_test_setup_teardown(test_use_after_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_with_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_death, setup, teardown),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
