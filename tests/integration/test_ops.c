/* Every operation between real processes over the provider under test: the right bytes
 * land at the right places, immediate counts match the documented table, completions
 * and callbacks fire exactly once. */
/* ctest-labels: threads (the TSan run: callbacks, worker and the submitting thread) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "peer.h"

#define REGION (8u << 20)
#define TMO 20000

typedef struct fx {
    te_engine *e;
    uint8_t *src;
    te_mr *mr;
    te_counter *done;
    th_peer p[2];
    int n_peers;
} fx;

static int setup_n(void **state, int n)
{
    fx *f = calloc(1, sizeof *f);
    te_config cfg;
    th_config(&cfg);
    assert_int_equal(te_engine_create(&cfg, &f->e), 0);
    f->src = aligned_alloc(4096, REGION);
    th_fill(f->src, REGION, 42, 0);
    assert_int_equal(te_mr_register(f->e, f->src, REGION, TE_DEVICE_HOST, TE_MR_LOCAL, &f->mr), 0);
    assert_int_equal(te_counter_create(&f->done), 0);
    f->n_peers = n;
    for (int k = 0; k < n; k++) th_peer_up(&f->p[k], NULL, NULL, REGION, TMO);
    *state = f;
    return 0;
}

static int setup1(void **state) { return setup_n(state, 1); }
static int setup2(void **state) { return setup_n(state, 2); }

static int teardown(void **state)
{
    fx *f = *state;
    for (int k = 0; k < f->n_peers; k++) th_peer_down(&f->p[k]);
    te_engine_destroy(f->e);
    te_counter_destroy(f->done);
    free(f->src);
    free(f);
    return 0;
}

/* The peer's whole region must equal our mirror of it. */
static void check_region(th_peer *p) { th_peer_check_range(p, 0, REGION); }

static void wait_done(fx *f, uint64_t target) { th_assert_counter(f->done, target, TMO); }

/* Exactly n immediates of imm at the peer, none left over. */
static void peer_wait_imms(th_peer *p, uint32_t imm, uint64_t n)
{
    th_assert_peer_imms(&p->proc, imm, n, TMO, 20);
}

static void test_single_writes(void **state)
{
    fx *f = *state;
    th_peer *p = &f->p[0];
    uint32_t imm = 1001;
    th_peer_expect_ok(p, "counter %u", imm);
    srand(7);
    uint64_t submitted = 0, imms = 0;
    for (int it = 0; it < 60; it++) {
        uint64_t len;
        switch (it % 6) {
        case 0: len = 0; break;                       /* zero-length write */
        case 1: len = 1 + (uint64_t)rand() % 64; break;
        case 2: len = 8192 * 2 + 1; break;            /* odd tail over shards */
        case 3: len = (1u << 20) + (uint64_t)rand() % 4096; break;
        default: len = (uint64_t)rand() % 200000; break;
        }
        uint64_t soff = (uint64_t)rand() % (REGION - len + 1);
        uint64_t doff = it % 5 == 4 ? REGION - len /* ends exactly at the region end */
                                    : (uint64_t)rand() % (REGION - len + 1);
        te_write_args a = {.src = f->mr, .src_offset = soff, .len = len, .dst = &p->desc,
                           /* the last carries one too: on shm, where a local completion
                            * does not mean placed, the final bytes are then known to be in */
                           .dst_offset = doff, .has_imm = it % 2 == 0 || it == 59, .imm = imm,
                           .route = {TE_ROUTE_SHARDED, 0},
                           /* both spellings of the current layout (te.h) */
                           .struct_size = it % 3 ? 0 : sizeof(te_write_args)};
        te_completion c = {.counter = f->done};
        int r = te_write(f->e, &a, &c);
        if (r) fail_msg("te_write: %s", te_last_error());
        submitted++;
        if (a.has_imm) imms += te_group_nics(f->e, 0); /* one per shard */
        memcpy(p->mirror + doff, f->src + soff, len);
        wait_done(f, submitted); /* sequential: overlapping ranges stay deterministic */
    }
    peer_wait_imms(p, imm, imms);
    check_region(p);
}

static void shuffle(uint32_t *v, size_t n)
{
    for (size_t k = n; k > 1; k--) {
        size_t j = (size_t)rand() % k;
        uint32_t t = v[k - 1];
        v[k - 1] = v[j];
        v[j] = t;
    }
}

static void test_paged_writes(void **state)
{
    fx *f = *state;
    th_peer *p = &f->p[0];
    uint32_t imm = 2002;
    th_peer_expect_ok(p, "counter %u", imm);
    srand(11);
    uint64_t imms = 0, submitted = 0;
    static const size_t counts[] = {0, 1, 5, 17, 300, 1000};
    for (size_t it = 0; it < sizeof counts / sizeof *counts; it++) {
        size_t P = counts[it];
        uint64_t page = it == 1 ? 0 : 1 + (uint64_t)rand() % 4096;
        uint64_t sstride = page + (uint64_t)rand() % 128, dstride = page + 128;
        uint64_t soff = (uint64_t)rand() % 1024, doff = 1024;
        size_t slots = (REGION - doff - page) / dstride;
        uint32_t *si = malloc((P + 1) * sizeof *si), *di = malloc(slots * sizeof *di);
        for (size_t k = 0; k < slots; k++) di[k] = (uint32_t)k;
        shuffle(di, slots); /* distinct destination pages: the result is order-independent */
        for (size_t k = 0; k < P; k++) si[k] = (uint32_t)((uint64_t)rand() % ((REGION - soff - page) / sstride));
        te_pages *sp, *dp;
        assert_int_equal(te_pages_create(si, P, &sp), 0);
        assert_int_equal(te_pages_create(di, P, &dp), 0);
        te_paged_args a = {.page_len = page, .src = f->mr, .src_pages = sp, .src_stride = sstride,
                           .src_offset = soff, .dst = &p->desc, .dst_pages = dp,
                           .dst_stride = dstride, .dst_offset = doff, .has_imm = true, .imm = imm};
        te_completion c = {.counter = f->done};
        if (te_write_paged(f->e, &a, &c)) fail_msg("te_write_paged: %s", te_last_error());
        te_pages_release(sp); /* the operation holds its own references */
        te_pages_release(dp);
        submitted++;
        imms += P;
        for (size_t k = 0; k < P; k++)
            memcpy(p->mirror + doff + dstride * di[k], f->src + soff + sstride * si[k], page);
        wait_done(f, submitted);
        free(si);
        free(di);
    }
    peer_wait_imms(p, imm, imms);
    check_region(p);
}

static void send_imms(fx *f, th_peer *p, uint32_t imm, int n)
{
    uint64_t base = te_counter_done(f->done);
    for (int k = 0; k < n; k++) {
        te_completion c = {.counter = f->done};
        assert_int_equal(te_write_imm(f->e, imm, &p->desc, (te_route){TE_ROUTE_PINNED, 0}, &c), 0);
    }
    wait_done(f, base + (uint64_t)n);
}

static void peer_imms(th_peer *p, uint32_t imm, uint64_t reached, uint64_t plain)
{
    char reply[128], want[128];
    snprintf(want, sizeof want, "imms %" PRIu64 " %" PRIu64, reached, plain);
    for (int k = 0; k < 500; k++) { /* callbacks run asynchronously: poll up to 5 s */
        th_peer_ask(p, reply, sizeof reply, "imms %u", imm);
        if (!strcmp(reply, want)) return;
        usleep(10000);
    }
    fail_msg("imm %u: got '%s', want '%s'", imm, reply, want);
}

static void test_imm_expectations(void **state)
{
    fx *f = *state;
    th_peer *p = &f->p[0];
    /* One-shot: 13 arrivals against 10 expected -> 1 reach, 3 replayed as plain. */
    th_peer_expect_ok(p, "expect 77 10 0");
    send_imms(f, p, 77, 13);
    peer_imms(p, 77, 1, 3);
    /* Keep: 25 arrivals against 10 -> 2 reaches, 5 still counted (none plain). */
    th_peer_expect_ok(p, "expect 78 10 1");
    send_imms(f, p, 78, 25);
    peer_imms(p, 78, 2, 0);
    send_imms(f, p, 78, 5); /* the 5 left over plus 5 more make a third reach */
    peer_imms(p, 78, 3, 0);
    /* Unarmed value: every arrival is plain. */
    send_imms(f, p, 79, 4);
    peer_imms(p, 79, 0, 4);
}

static void test_send_recv(void **state)
{
    fx *f = *state;
    th_peer *p = &f->p[0];
    uint64_t sum = 0;
    srand(3);
    for (int k = 0; k < 40; k++) {
        size_t len = k == 0 ? 0 : (size_t)rand() % 4097;
        uint8_t buf[4096];
        th_fill(buf, len, (uint64_t)k, 0);
        sum += th_hash(buf, len) ^ len;
        te_completion c = {.counter = f->done};
        assert_int_equal(te_send(f->e, &p->addr, buf, len, &c), 0);
    }
    wait_done(f, te_counter_done(f->done) < 40 ? 40 : te_counter_done(f->done));
    char reply[128], want[128];
    snprintf(want, sizeof want, "msgs 40 %" PRIu64, sum);
    for (int k = 0; k < 500; k++) {
        th_peer_ask(p, reply, sizeof reply, "msgs");
        if (!strcmp(reply, want)) break;
        usleep(10000);
    }
    assert_string_equal(reply, want);
}

typedef struct rx { int n; uint64_t sum; } rx;
static void on_rx(void *arg, const void *d, size_t len)
{
    rx *x = arg;
    x->sum += th_hash(d, len) ^ len;
    __atomic_add_fetch(&x->n, 1, __ATOMIC_SEQ_CST);
}

static void test_recv_from_peer(void **state)
{
    fx *f = *state;
    th_peer *p = &f->p[0];
    rx x = {0};
    te_recv_pool *pool;
    assert_int_equal(te_recv_pool_create(f->e, 2048, 8, on_rx, NULL, &x, &pool), 0);
    te_addr me;
    char hex[TE_ADDR_TEXT_MAX], reply[128];
    te_main_address(f->e, &me);
    te_addr_format(&me, hex, sizeof hex);
    uint64_t sum = 0;
    for (int k = 0; k < 20; k++) {
        size_t len = (size_t)k * 100;
        uint8_t buf[2048];
        th_fill(buf, len, 500 + (uint64_t)k, 0);
        sum += th_hash(buf, len) ^ len;
        th_peer_ask(p, reply, sizeof reply, "send %s %zu %d", hex, len, 500 + k);
        assert_string_equal(reply, "ok 1");
    }
    for (int k = 0; k < 500 && __atomic_load_n(&x.n, __ATOMIC_SEQ_CST) < 20; k++) usleep(10000);
    assert_int_equal(te_recv_pool_destroy(pool), 0);
    assert_int_equal(x.n, 20);
    assert_true(x.sum == sum);
}

static void test_scatter_and_barrier(void **state)
{
    fx *f = *state;
    uint32_t N = te_group_nics(f->e, 0);
    for (int k = 0; k < 2; k++) {
        th_peer_expect_ok(&f->p[k], "counter 300");
        th_peer_expect_ok(&f->p[k], "counter 301");
    }
    static const te_scatter_kind kinds[] = {TE_SCATTER_SHARD_PEERS, TE_SCATTER_SHARD_BYTES,
                                            TE_SCATTER_SINGLE};
    uint64_t imms_per_peer = 0;
    te_mr_desc descs[2] = {f->p[0].desc, f->p[1].desc};
    te_peer_group *pg;
    assert_int_equal(te_peer_group_create(f->e, 0, descs, 2, &pg), 0);
    srand(5);
    for (int it = 0; it < 6; it++) {
        te_scatter_target t[2];
        for (int k = 0; k < 2; k++) {
            t[k].dst = &f->p[k].desc;
            t[k].len = it == 0 ? 0 : 1 + (uint64_t)rand() % 300000;
            t[k].src_offset = (uint64_t)rand() % (REGION - t[k].len);
            t[k].dst_offset = (uint64_t)rand() % (REGION - t[k].len);
            memcpy(f->p[k].mirror + t[k].dst_offset, f->src + t[k].src_offset, t[k].len);
        }
        te_scatter_args a = {.src = f->mr, .targets = t, .n_targets = 2, .peers = it % 2 ? pg : NULL,
                             .has_imm = true, .imm = 300, .kind = kinds[it % 3], .nic = 0};
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        if (te_write_scatter(f->e, &a, &c)) fail_msg("scatter: %s", te_last_error());
        wait_done(f, base + 1);
        imms_per_peer += a.kind == TE_SCATTER_SHARD_BYTES ? N : 1;
    }
    for (int k = 0; k < 2; k++) {
        peer_wait_imms(&f->p[k], 300, imms_per_peer);
        check_region(&f->p[k]);
    }
    /* Barrier: exactly one immediate per destination, pinned and round-robin. */
    for (int it = 0; it < 4; it++) {
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        te_route r = it % 2 ? (te_route){TE_ROUTE_PINNED, 0} : (te_route){TE_ROUTE_SHARDED, 0};
        assert_int_equal(te_barrier(f->e, 301, descs, 2, r, &c), 0);
        wait_done(f, base + 1);
    }
    for (int k = 0; k < 2; k++) peer_wait_imms(&f->p[k], 301, 4);
    te_peer_group_destroy(pg);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return th_peer_main(argc > 3 ? argv[3] : NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_single_writes, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_paged_writes, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_imm_expectations, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_send_recv, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_recv_from_peer, setup1, teardown),
        cmocka_unit_test_setup_teardown(test_scatter_and_barrier, setup2, teardown),
    };
    return cmocka_run_group_tests_name(th_provider(), tests, NULL, NULL);
}
