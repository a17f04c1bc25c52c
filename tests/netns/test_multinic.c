/* Multi-NIC striping on an emulated cluster: two network namespaces ("hosts") joined by
 * k veth pairs ("NICs", one subnet each), one engine process per host, one libfabric tcp
 * domain per veth. For every operation kind and routing policy: the right bytes land,
 * the receiver sees the documented number of immediates, and the per-NIC counters (the
 * engine's and the kernel's) show the load where the policy puts it. Also: mismatched
 * NIC counts and out-of-range NIC indices are rejected, and a NIC whose link goes down
 * fails its operations in bounded time while the other NICs keep working.
 *
 *   test_multinic --nics K     (K = 1..4; needs root; exits 77 = skip otherwise) */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "harness.h"
#include "netns_util.h"
#include "peer.h"

#define REGION (68u << 20)
#define BIG (64u << 20)
#define TMO 60000

static nt_topo T;
static int K;

typedef struct fx {
    te_engine *e;
    uint8_t *src;
    te_mr *mr;
    te_counter *done;
    th_peer p;
} fx;

typedef struct snap {
    te_nic_stats local[NT_MAX_NICS];
    uint64_t tx[NT_MAX_NICS];       /* kernel tx bytes of host 0's veths */
    uint64_t peer_imms[NT_MAX_NICS];
} snap;

/* ------------------------------------------------------------------ helpers ---- */

/* The peer engine in host 1's namespace, on the NICs of `niclist`. */
static void start_peer(th_peer *p, const char *niclist)
{
    char arg[512];
    snprintf(arg, sizeof arg, "%s %s %u", T.ns[1], niclist, REGION);
    th_peer_up(p, "nspeer", arg, REGION, TMO);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    te_config cfg;
    th_config(&cfg); /* tcp; TENDRIL_NICS (host 0's veths) replaces "lo" */
    int r = te_engine_create(&cfg, &f->e);
    if (r) fail_msg("te_engine_create: %s", te_last_error());
    assert_int_equal(te_group_nics(f->e, 0), (uint32_t)K);
    f->src = aligned_alloc(4096, REGION);
    th_fill(f->src, REGION, 42, 0);
    assert_int_equal(te_mr_register(f->e, f->src, REGION, TE_DEVICE_HOST, TE_MR_LOCAL, &f->mr), 0);
    assert_int_equal(te_counter_create(&f->done), 0);
    start_peer(&f->p, T.niclist[1]);
    assert_int_equal(f->p.desc.n_nics, (uint32_t)K);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    th_peer_down(&f->p);
    te_engine_destroy(f->e);
    te_counter_destroy(f->done);
    free(f->src);
    free(f);
    return 0;
}

static void take(fx *f, snap *s)
{
    memset(s, 0, sizeof *s);
    for (int k = 0; k < K; k++) {
        assert_int_equal(te_nic_stats_get(f->e, 0, (uint32_t)k, &s->local[k]), 0);
        uint64_t rx;
        assert_int_equal(nt_ifstats(T.ifname[0][k], &rx, &s->tx[k]), 0);
        char reply[256];
        th_peer_ask(&f->p, reply, sizeof reply, "nicstats %d", k);
        if (sscanf(reply, "nicstats %" SCNu64, &s->peer_imms[k]) != 1) fail_msg("nicstats: %s", reply);
    }
}

/* Per-NIC differences between two snapshots. */
typedef struct delta {
    uint64_t ops[NT_MAX_NICS], bytes[NT_MAX_NICS], tx[NT_MAX_NICS], imms[NT_MAX_NICS];
    uint64_t errors[NT_MAX_NICS];
} delta;

static delta diff(const snap *a, const snap *b)
{
    delta d;
    memset(&d, 0, sizeof d);
    for (int k = 0; k < K; k++) {
        d.ops[k] = b->local[k].write_ops - a->local[k].write_ops;
        d.bytes[k] = b->local[k].write_bytes - a->local[k].write_bytes;
        d.errors[k] = b->local[k].errors - a->local[k].errors;
        d.tx[k] = b->tx[k] - a->tx[k];
        d.imms[k] = b->peer_imms[k] - a->peer_imms[k];
    }
    return d;
}

static void print_delta(const char *what, const delta *d)
{
    printf("  %-28s", what);
    for (int k = 0; k < K; k++)
        printf(" | nic%d ops %" PRIu64 " bytes %" PRIu64 " tx %" PRIu64 " imms %" PRIu64, k, d->ops[k],
               d->bytes[k], d->tx[k], d->imms[k]);
    printf("\n");
}

static void wait_done(fx *f, uint64_t target) { th_assert_counter(f->done, target, TMO); }

/* Exactly n immediates of imm at the peer, none left over. */
static void peer_wait_imms(th_peer *p, uint32_t imm, uint64_t n)
{
    th_assert_peer_imms(&p->proc, imm, n, TMO, 30);
}

static void check_region(th_peer *p) { th_peer_check_range(p, 0, REGION); }

static void do_write(fx *f, uint64_t soff, uint64_t doff, uint64_t len, te_route route, bool imm_on,
                     uint32_t imm)
{
    te_write_args a = {.src = f->mr, .src_offset = soff, .len = len, .dst = &f->p.desc,
                       .dst_offset = doff, .has_imm = imm_on, .imm = imm, .route = route};
    te_completion c = {.counter = f->done};
    uint64_t base = te_counter_done(f->done);
    if (te_write(f->e, &a, &c)) fail_msg("te_write: %s", te_last_error());
    memcpy(f->p.mirror + doff, f->src + soff, len);
    wait_done(f, base + 1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The per-NIC values, sorted (the round-robin cursor decides which NIC gets which). */
static void sorted(const uint64_t *v, uint64_t *out)
{
    memcpy(out, v, sizeof(uint64_t) * (size_t)K);
    qsort(out, (size_t)K, sizeof *out, cmp_u64);
}

/* Expected per-NIC work requests when `items` are split into ceil(items/K) chunks. */
static void chunk_dist(uint64_t items, uint64_t *out)
{
    memset(out, 0, sizeof(uint64_t) * NT_MAX_NICS);
    if (!items) return;
    uint64_t chunk = (items + (uint64_t)K - 1) / (uint64_t)K;
    for (int c = 0; (uint64_t)c * chunk < items; c++) {
        uint64_t left = items - (uint64_t)c * chunk;
        out[c] = left < chunk ? left : chunk;
    }
}

static void assert_same_multiset(const uint64_t *got, const uint64_t *want, const char *what)
{
    uint64_t a[NT_MAX_NICS], b[NT_MAX_NICS];
    sorted(got, a);
    sorted(want, b);
    for (int k = 0; k < K; k++)
        if (a[k] != b[k]) fail_msg("%s: per-NIC distribution differs at rank %d: %" PRIu64 " vs %" PRIu64,
                                   what, k, a[k], b[k]);
}

/* -------------------------------------------------------------------- tests ---- */

/* A 64 MiB write sharded over all K NICs puts exactly 1/K of the bytes on each: in the
 * engine's counters, in the kernel's veth counters (plus TCP/IP and RxM overhead), and
 * one immediate arrives on each receiving NIC. */
static void test_sharded_even(void **state)
{
    fx *f = *state;
    uint32_t imm = 10;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    snap a, b;
    take(f, &a);
    uint64_t t0 = tn_now_ns();
    do_write(f, 0, 4096, BIG, (te_route){TE_ROUTE_SHARDED, 0}, true, imm);
    double secs = (double)(tn_now_ns() - t0) / 1e9;
    peer_wait_imms(&f->p, imm, (uint64_t)K);
    take(f, &b);
    delta d = diff(&a, &b);
    print_delta("64 MiB sharded", &d);
    printf("  64 MiB over %d NICs: %.3f s, %.2f Gbit/s aggregate\n", K, secs, BIG * 8.0 / secs / 1e9);
    uint64_t share = BIG / (uint64_t)K;
    for (int k = 0; k < K; k++) {
        assert_int_equal(d.ops[k], 1);
        assert_int_equal(d.bytes[k], share);
        assert_int_equal(d.imms[k], 1);
        /* The veth carried this NIC's share: at least the payload, at most ~10% more. */
        if (d.tx[k] < share || d.tx[k] > share + share / 10 + (1u << 20))
            fail_msg("veth %s sent %" PRIu64 " bytes for a %" PRIu64 "-byte share", T.ifname[0][k],
                     d.tx[k], share);
    }
    th_peer_check_range(&f->p, 0, BIG + 8192);
}

/* Fewer shards than NICs, odd lengths, zero-length shards, and a cursor left anywhere by
 * earlier operations: every shard still uses its own NIC's keys and addresses (B1). */
static void test_sharded_cursor(void **state)
{
    fx *f = *state;
    uint32_t imm = 11;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    snap a, b;
    delta d;

    /* K single-shard writes: the cursor moves one NIC each, so each NIC gets one. */
    take(f, &a);
    for (int j = 0; j < K; j++) do_write(f, 100000u * (unsigned)j, 200000u * (unsigned)j, 100000,
                                         (te_route){TE_ROUTE_SHARDED, 1}, true, imm);
    peer_wait_imms(&f->p, imm, (uint64_t)K); /* arrived: the counters are final */
    take(f, &b);
    d = diff(&a, &b);
    print_delta("K x (s=1, 100000 B)", &d);
    for (int k = 0; k < K; k++) {
        assert_int_equal(d.ops[k], 1);
        assert_int_equal(d.bytes[k], 100000);
        assert_int_equal(d.imms[k], 1);
    }

    if (K >= 2) {
        /* 10000 B over 2 shards: 8192 + 1808; 1000 B over 2 shards: 1000 + a zero-length
         * shard that still carries the immediate. */
        static const uint64_t lens[2] = {10000, 1000};
        static const uint64_t parts[2][2] = {{8192, 1808}, {1000, 0}};
        for (int t = 0; t < 2; t++) {
            take(f, &a);
            do_write(f, 7777, 3000000 + 20000u * (unsigned)t, lens[t], (te_route){TE_ROUTE_SHARDED, 2},
                     true, imm);
            peer_wait_imms(&f->p, imm, 2);
            take(f, &b);
            d = diff(&a, &b);
            print_delta(t ? "1000 B, s=2" : "10000 B, s=2", &d);
            uint64_t want_b[NT_MAX_NICS] = {0}, want_o[NT_MAX_NICS] = {0};
            want_b[0] = parts[t][0];
            want_b[1] = parts[t][1];
            want_o[0] = want_o[1] = 1;
            assert_same_multiset(d.bytes, want_b, "bytes");
            assert_same_multiset(d.ops, want_o, "ops");
            assert_same_multiset(d.imms, want_o, "imms");
        }
    }

    /* Zero-length write over all NICs: K zero-length shards, K immediates. */
    take(f, &a);
    do_write(f, 0, 0, 0, (te_route){TE_ROUTE_SHARDED, 0}, true, imm);
    peer_wait_imms(&f->p, imm, (uint64_t)K);
    take(f, &b);
    d = diff(&a, &b);
    for (int k = 0; k < K; k++) {
        assert_int_equal(d.ops[k], 1);
        assert_int_equal(d.bytes[k], 0);
        assert_int_equal(d.imms[k], 1);
    }

    /* Odd length over all NICs with the cursor wherever the above left it. */
    for (int j = 0; j < 3; j++) {
        uint64_t len = 1000003 + 4099u * (unsigned)j;
        take(f, &a);
        do_write(f, 12345 + (unsigned)j, 5000000 + 1100000u * (unsigned)j, len,
                 (te_route){TE_ROUTE_SHARDED, 0}, true, imm);
        do_write(f, 0, 9000000, 0, (te_route){TE_ROUTE_SHARDED, 1}, false, 0); /* move cursor */
        peer_wait_imms(&f->p, imm, (uint64_t)K);
        take(f, &b);
        d = diff(&a, &b);
        uint64_t shard = (len + (uint64_t)K - 1) / (uint64_t)K;
        shard = (shard + 8191) / 8192 * 8192;
        uint64_t want[NT_MAX_NICS] = {0}, sum = 0;
        for (int k = 0; k < K; k++) {
            uint64_t off = shard * (uint64_t)k;
            want[k] = off < len ? (len - off < shard ? len - off : shard) : 0;
            sum += d.bytes[k];
        }
        assert_int_equal(sum, len);
        assert_same_multiset(d.bytes, want, "odd-length shards");
        for (int k = 0; k < K; k++) assert_int_equal(d.imms[k], 1);
    }
    check_region(&f->p);
}

/* Pinned writes and imm-only writes touch only the chosen NIC. */
static void test_pinned(void **state)
{
    fx *f = *state;
    uint32_t imm = 12;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    for (int nic = 0; nic < K; nic++) {
        snap a, b;
        take(f, &a);
        uint64_t len = (1u << 20) + (unsigned)nic * 3;
        do_write(f, 4096u * (unsigned)nic, (2u << 20) * (unsigned)nic, len,
                 (te_route){TE_ROUTE_PINNED, (uint32_t)nic}, true, imm);
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        assert_int_equal(te_write_imm(f->e, imm, &f->p.desc, (te_route){TE_ROUTE_PINNED, (uint32_t)nic}, &c), 0);
        wait_done(f, base + 1);
        peer_wait_imms(&f->p, imm, 2);
        take(f, &b);
        delta d = diff(&a, &b);
        print_delta("pinned", &d);
        for (int k = 0; k < K; k++) {
            assert_int_equal(d.ops[k], k == nic ? 2 : 0);
            assert_int_equal(d.bytes[k], k == nic ? len : 0);
            assert_int_equal(d.imms[k], k == nic ? 2 : 0);
            if (k != nic && d.tx[k] > 64 * 1024)
                fail_msg("veth %s carried %" PRIu64 " bytes for a write pinned to NIC %d", T.ifname[0][k],
                         d.tx[k], nic);
        }
    }
    check_region(&f->p);
}

/* Paged writes: the page list is cut into ceil(P/K) chunks, one NIC each; one immediate
 * per page; zero pages complete at once. */
static void test_paged(void **state)
{
    fx *f = *state;
    uint32_t imm = 13;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    uint64_t imms = 0;
    const size_t counts[] = {5, (size_t)(4 * K + 1), 1, 0, 3, 257};
    for (size_t it = 0; it < sizeof counts / sizeof *counts; it++) {
        size_t P = counts[it];
        uint64_t page = it == 4 ? 0 : 65536 + 17 * it, sstride = page + 512, dstride = page + 1024;
        uint32_t si[300], di[300];
        for (size_t j = 0; j < P; j++) {
            si[j] = (uint32_t)((j * 7) % 300);
            di[j] = (uint32_t)(P - 1 - j); /* distinct, reversed */
        }
        te_pages *sp, *dp;
        assert_int_equal(te_pages_create(si, P, &sp), 0);
        assert_int_equal(te_pages_create(di, P, &dp), 0);
        te_paged_args pa = {.page_len = page, .src = f->mr, .src_pages = sp, .src_stride = sstride,
                            .src_offset = 100, .dst = &f->p.desc, .dst_pages = dp,
                            .dst_stride = dstride, .dst_offset = 333, .has_imm = true, .imm = imm};
        snap a, b;
        take(f, &a);
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        if (te_write_paged(f->e, &pa, &c)) fail_msg("te_write_paged: %s", te_last_error());
        te_pages_release(sp);
        te_pages_release(dp);
        for (size_t j = 0; j < P; j++)
            memcpy(f->p.mirror + 333 + dstride * di[j], f->src + 100 + sstride * si[j], page);
        wait_done(f, base + 1); /* P = 0 must complete too */
        imms += P;
        peer_wait_imms(&f->p, imm, P);
        take(f, &b);
        delta d = diff(&a, &b);
        char what[64];
        snprintf(what, sizeof what, "paged P=%zu", P);
        print_delta(what, &d);
        uint64_t want[NT_MAX_NICS], wbytes[NT_MAX_NICS];
        chunk_dist(P, want);
        for (int k = 0; k < NT_MAX_NICS; k++) wbytes[k] = want[k] * page;
        assert_same_multiset(d.ops, want, "paged ops");
        assert_same_multiset(d.bytes, wbytes, "paged bytes");
        assert_same_multiset(d.imms, want, "paged imms");
        /* Each NIC's writes arrive on the same NIC index at the peer. */
        for (int k = 0; k < K; k++) assert_int_equal(d.imms[k], d.ops[k]);
    }
    check_region(&f->p);
}

/* Scatter by peers, by bytes (every byte, K immediates per target) and through one NIC,
 * with and without a pre-resolved peer group. Targets are ranges of the one peer. */
static void test_scatter(void **state)
{
    fx *f = *state;
    uint32_t imm = 14;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    enum { NT = 2 * NT_MAX_NICS + 1 };
    int n = 2 * K + 1;
    te_scatter_target t[NT];
    te_mr_desc descs[NT];
    for (int j = 0; j < n; j++) descs[j] = f->p.desc;
    te_peer_group *pg;
    assert_int_equal(te_peer_group_create(f->e, 0, descs, (size_t)n, &pg), 0);
    uint64_t imms = 0;
    const te_scatter_kind kinds[] = {TE_SCATTER_SHARD_PEERS, TE_SCATTER_SHARD_BYTES, TE_SCATTER_SINGLE,
                                     TE_SCATTER_SHARD_BYTES, TE_SCATTER_SHARD_PEERS};
    for (int it = 0; it < 5; it++) {
        te_scatter_kind kind = kinds[it];
        uint64_t tot = 0;
        for (int j = 0; j < n; j++) {
            uint64_t len = 300001 + 777u * (unsigned)j + (unsigned)it; /* not a multiple of K */
            if (it == 3 && j == 1) len = (uint64_t)K - 1;           /* smaller than K */
            t[j] = (te_scatter_target){.dst = &descs[j], .len = len,
                                       .src_offset = 1000u * (unsigned)j + (unsigned)it,
                                       .dst_offset = 20000000u + 400000u * (unsigned)j};
            tot += len;
        }
        uint32_t single = (uint32_t)(it % K == 0 ? K - 1 : 0);
        te_scatter_args sa = {.src = f->mr, .targets = t, .n_targets = (size_t)n,
                              .peers = it >= 3 ? pg : NULL, .has_imm = true, .imm = imm,
                              .kind = kind, .nic = single};
        snap a, b;
        take(f, &a);
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        if (te_write_scatter(f->e, &sa, &c)) fail_msg("te_write_scatter: %s", te_last_error());
        for (int j = 0; j < n; j++)
            memcpy(f->p.mirror + t[j].dst_offset, f->src + t[j].src_offset, t[j].len);
        wait_done(f, base + 1);
        uint64_t want_imms = kind == TE_SCATTER_SHARD_BYTES ? (uint64_t)n * (uint64_t)K : (uint64_t)n;
        peer_wait_imms(&f->p, imm, want_imms);
        imms += want_imms;
        take(f, &b);
        delta d = diff(&a, &b);
        static const char *names[] = {"scatter PEERS", "scatter BYTES", "scatter SINGLE"};
        print_delta(names[kind], &d);
        uint64_t sum = 0;
        for (int k = 0; k < K; k++) sum += d.bytes[k];
        assert_int_equal(sum, tot); /* every byte, once */
        for (int k = 0; k < K; k++) {
            uint64_t wops = 0, wbytes = 0;
            if (kind == TE_SCATTER_SHARD_BYTES) {
                wops = (uint64_t)n;
                for (int j = 0; j < n; j++) {
                    uint64_t slice = t[j].len / (uint64_t)K;
                    wbytes += k == K - 1 ? t[j].len - slice * (uint64_t)(K - 1) : slice;
                }
            } else if (kind == TE_SCATTER_SINGLE) {
                wops = (uint32_t)k == single ? (uint64_t)n : 0;
                wbytes = (uint32_t)k == single ? tot : 0;
            } else {
                uint64_t chunk = ((uint64_t)n + (uint64_t)K - 1) / (uint64_t)K;
                for (int j = 0; j < n; j++)
                    if ((uint64_t)j / chunk == (uint64_t)k) {
                        wops++;
                        wbytes += t[j].len;
                    }
            }
            assert_int_equal(d.ops[k], wops);
            assert_int_equal(d.bytes[k], wbytes);
            assert_int_equal(d.imms[k], wops);
        }
    }
    te_peer_group_destroy(pg);
    check_region(&f->p);
}

/* Imm-only writes round-robin over the NICs; barriers one immediate per destination,
 * pinned or chunked over the NICs. */
static void test_imm_barrier(void **state)
{
    fx *f = *state;
    uint32_t imm = 15;
    th_peer_expect_ok(&f->p, "counter %u", imm);
    snap a, b;
    delta d;
    take(f, &a);
    for (int j = 0; j < 2 * K; j++) {
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        assert_int_equal(te_write_imm(f->e, imm, &f->p.desc, (te_route){TE_ROUTE_SHARDED, 0}, &c), 0);
        wait_done(f, base + 1);
    }
    peer_wait_imms(&f->p, imm, 2 * (uint64_t)K);
    take(f, &b);
    d = diff(&a, &b);
    print_delta("2K imm round-robin", &d);
    for (int k = 0; k < K; k++) {
        assert_int_equal(d.ops[k], 2);
        assert_int_equal(d.imms[k], 2);
    }
    te_mr_desc dsts[NT_MAX_NICS + 1];
    size_t nd = (size_t)K + 1;
    for (size_t j = 0; j < nd; j++) dsts[j] = f->p.desc;
    for (int it = 0; it <= K; it++) {
        te_route r = it == K ? (te_route){TE_ROUTE_SHARDED, 0} : (te_route){TE_ROUTE_PINNED, (uint32_t)it};
        take(f, &a);
        te_completion c = {.counter = f->done};
        uint64_t base = te_counter_done(f->done);
        assert_int_equal(te_barrier(f->e, imm, dsts, nd, r, &c), 0);
        wait_done(f, base + 1);
        peer_wait_imms(&f->p, imm, nd);
        take(f, &b);
        d = diff(&a, &b);
        print_delta(it == K ? "barrier sharded" : "barrier pinned", &d);
        uint64_t want[NT_MAX_NICS] = {0};
        if (it == K) chunk_dist(nd, want);
        else want[0] = nd;
        if (it < K)
            for (int k = 0; k < K; k++) assert_int_equal(d.ops[k], k == it ? nd : 0);
        assert_same_multiset(d.ops, want, "barrier ops");
        assert_same_multiset(d.imms, want, "barrier imms");
    }
}

static void expect_einval(int r, const char *what, const char *needle)
{
    if (r != -EINVAL) fail_msg("%s: want -EINVAL, got %d (%s)", what, r, te_last_error());
    if (!strstr(te_last_error(), needle))
        fail_msg("%s: message '%s' does not mention '%s'", what, te_last_error(), needle);
    printf("  rejected %-26s: %s\n", what, te_last_error());
}

/* NIC indices out of range and peers with a different NIC count are rejected before
 * anything is posted. */
static void test_validation(void **state)
{
    fx *f = *state;
    te_completion c = {.counter = f->done};
    uint64_t before = te_counter_done(f->done);
    te_write_args w = {.src = f->mr, .len = 4096, .dst = &f->p.desc, .route = {TE_ROUTE_PINNED, (uint32_t)K}};
    expect_einval(te_write(f->e, &w, &c), "pinned NIC K", "out of range");
    w.route = (te_route){TE_ROUTE_SHARDED, (uint32_t)K + 1};
    expect_einval(te_write(f->e, &w, &c), "K+1 shards", "shards");
    expect_einval(te_write_imm(f->e, 1, &f->p.desc, (te_route){TE_ROUTE_PINNED, (uint32_t)K}, &c),
                  "imm pinned NIC K", "out of range");
    expect_einval(te_barrier(f->e, 1, &f->p.desc, 1, (te_route){TE_ROUTE_PINNED, 7}, &c),
                  "barrier pinned NIC 7", "out of range");
    te_scatter_target t = {.dst = &f->p.desc, .len = 10};
    te_scatter_args sa = {.src = f->mr, .targets = &t, .n_targets = 1, .kind = TE_SCATTER_SINGLE,
                          .nic = (uint32_t)K};
    expect_einval(te_write_scatter(f->e, &sa, &c), "scatter SINGLE NIC K", "out of range");

    /* A descriptor claiming one NIC more than we have. */
    if (K < NT_MAX_NICS) {
        te_mr_desc more = f->p.desc;
        more.nic[K] = more.nic[0];
        more.n_nics = (uint32_t)K + 1;
        w.route = (te_route){TE_ROUTE_SHARDED, 0};
        w.dst = &more;
        expect_einval(te_write(f->e, &w, &c), "descriptor with K+1 NICs", "same number of NICs");
    }
    /* A real peer in host 1 that uses only its first NIC. */
    if (K >= 2) {
        th_peer q;
        start_peer(&q, T.ifname[1][0]);
        assert_int_equal(q.desc.n_nics, 1);
        w.route = (te_route){TE_ROUTE_SHARDED, 0};
        w.dst = &q.desc;
        expect_einval(te_write(f->e, &w, &c), "write to a 1-NIC peer", "same number of NICs");
        te_paged_args pa = {.page_len = 1, .src = f->mr, .dst = &q.desc};
        te_pages *pg;
        uint32_t zero = 0;
        assert_int_equal(te_pages_create(&zero, 1, &pg), 0);
        pa.src_pages = pa.dst_pages = pg;
        expect_einval(te_write_paged(f->e, &pa, &c), "paged to a 1-NIC peer", "same number of NICs");
        te_pages_release(pg);
        t.dst = &q.desc;
        sa.kind = TE_SCATTER_SHARD_BYTES;
        expect_einval(te_write_scatter(f->e, &sa, &c), "scatter to a 1-NIC peer", "same number of NICs");
        expect_einval(te_barrier(f->e, 1, &q.desc, 1, (te_route){TE_ROUTE_SHARDED, 0}, &c),
                      "barrier to a 1-NIC peer", "same number of NICs");
        th_peer_down(&q);
    }
    usleep(50000);
    assert_int_equal(te_counter_done(f->done), before); /* nothing was queued */
}

/* --------------------------------------------------------------- NIC down ---- */

#define DOWN_TIMEOUT_MS 3000

typedef struct res {
    volatile int done;
    volatile int status;
    uint64_t t_ns;
    char msg[256];
} res;

static void on_res(void *arg, int status, const char *msg)
{
    res *r = arg;
    r->status = status;
    r->t_ns = tn_now_ns();
    if (msg) snprintf(r->msg, sizeof r->msg, "%s", msg);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
}

static void submit_res(fx *f, uint64_t off, uint64_t len, te_route route, res *r)
{
    memset(r, 0, sizeof *r);
    te_write_args a = {.src = f->mr, .src_offset = off, .len = len, .dst = &f->p.desc,
                       .dst_offset = off, .route = route};
    te_completion c = {.fn = on_res, .arg = r};
    if (te_write(f->e, &a, &c)) fail_msg("te_write: %s", te_last_error());
}

static bool wait_res(res *r, int ms)
{
    uint64_t dl = tn_deadline_ms(ms);
    while (!__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) && tn_now_ns() < dl) usleep(1000);
    return r->done;
}

static void test_nic_down(void **state)
{
    fx *f = *state;
    int bad = K - 1;
    /* Every NIC connected and working first. */
    do_write(f, 0, 0, 4u << 20, (te_route){TE_ROUTE_SHARDED, 0}, false, 0);
    assert_int_equal(nt_link(T.ns[1], T.ifname[1][bad], false), 0);
    printf("  link %s (host 1, NIC %d) down\n", T.ifname[1][bad], bad);
    uint64_t t0 = tn_now_ns();
    res r_bad, r_all, r_good[NT_MAX_NICS];
    submit_res(f, 0, 8u << 20, (te_route){TE_ROUTE_PINNED, (uint32_t)bad}, &r_bad);
    submit_res(f, 8u << 20, 8u << 20, (te_route){TE_ROUTE_SHARDED, 0}, &r_all);
    /* Writes on the healthy NICs, queued behind the stuck ones, must complete promptly,
     * and keep doing so while the bad NIC's operations are pending. */
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < bad; k++)
            submit_res(f, (16u << 20) + (4u << 20) * (unsigned)k, 4u << 20,
                       (te_route){TE_ROUTE_PINNED, (uint32_t)k}, &r_good[k]);
        for (int k = 0; k < bad; k++) {
            if (!wait_res(&r_good[k], 5000)) fail_msg("write on healthy NIC %d did not complete", k);
            if (r_good[k].status) fail_msg("write on healthy NIC %d failed: %s", k, r_good[k].msg);
            printf("  healthy NIC %d: write done after %.0f ms\n", k, (double)(r_good[k].t_ns - t0) / 1e6);
        }
        usleep(500000);
    }
    int limit = DOWN_TIMEOUT_MS + 3000;
    if (!wait_res(&r_bad, limit)) fail_msg("write on the downed NIC did not complete within %d ms", limit);
    if (!wait_res(&r_all, limit)) fail_msg("sharded write did not complete within %d ms", limit);
    printf("  downed NIC: pinned write -> %d (%s) after %.0f ms\n", r_bad.status, r_bad.msg,
           (double)(r_bad.t_ns - t0) / 1e6);
    printf("  downed NIC: sharded write -> %d (%s) after %.0f ms\n", r_all.status, r_all.msg,
           (double)(r_all.t_ns - t0) / 1e6);
    assert_true(r_bad.status < 0);
    assert_true(r_all.status < 0);
    te_nic_stats st;
    assert_int_equal(te_nic_stats_get(f->e, 0, (uint32_t)bad, &st), 0);
    printf("  downed NIC stats: write_ops %" PRIu64 " errors %" PRIu64 "\n", st.write_ops, st.errors);
    assert_true(st.errors >= 1);
    assert_non_null(strstr(r_bad.msg, T.ifname[0][bad])); /* the error names the NIC */
    /* New operations on the bad NIC fail too, in the same bounded time. */
    res r_again;
    uint64_t t1 = tn_now_ns();
    submit_res(f, 0, 4096, (te_route){TE_ROUTE_PINNED, (uint32_t)bad}, &r_again);
    if (!wait_res(&r_again, limit)) fail_msg("second write on the downed NIC did not complete");
    printf("  downed NIC: next write -> %d (%s) after %.0f ms\n", r_again.status, r_again.msg,
           (double)(r_again.t_ns - t1) / 1e6);
    assert_true(r_again.status < 0);

    /* Link back up: the NIC recovers (new operations succeed again). */
    assert_int_equal(nt_link(T.ns[1], T.ifname[1][bad], true), 0);
    uint64_t t2 = tn_now_ns();
    bool ok = false;
    for (int tries = 0; tries < 20 && !ok; tries++) {
        res r;
        submit_res(f, 0, 1u << 20, (te_route){TE_ROUTE_PINNED, (uint32_t)bad}, &r);
        if (!wait_res(&r, limit)) fail_msg("write after link up did not complete");
        ok = r.status == 0;
        if (!ok) {
            printf("  after link up: attempt %d -> %d (%s)\n", tries, r.status, r.msg);
            usleep(500000);
        }
    }
    printf("  after link up: NIC %d %s after %.0f ms\n", bad, ok ? "works again" : "still failing",
           (double)(tn_now_ns() - t2) / 1e6);
    assert_true(ok);
    /* The other NICs never noticed. */
    do_write(f, 0, 40u << 20, 1u << 20, (te_route){TE_ROUTE_SHARDED, 0}, false, 0);
}

static int setup_down(void **state)
{
    char v[16];
    snprintf(v, sizeof v, "%d", DOWN_TIMEOUT_MS);
    setenv("TENDRIL_OP_TIMEOUT_MS", v, 1); /* no engine threads exist between tests */
    int r = setup(state);
    unsetenv("TENDRIL_OP_TIMEOUT_MS");
    return r;
}

static int teardown_down(void **state)
{
    uint64_t t0 = tn_now_ns();
    int r = teardown(state);
    printf("  teardown after NIC-down test: %.0f ms\n", (double)(tn_now_ns() - t0) / 1e6);
    return r;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) {
        if (!strcmp(argv[2], "nspeer")) return nt_peer_child(argc > 3 ? argv[3] : NULL);
        return th_peer_main(argc > 3 ? argv[3] : NULL);
    }
    K = 2;
    for (int i = 1; i + 1 < argc; i++)
        if (!strcmp(argv[i], "--nics")) K = atoi(argv[i + 1]);
    if (K < 1 || K > NT_MAX_NICS) {
        fprintf(stderr, "usage: %s [--nics 1..%d]\n", argv[0], NT_MAX_NICS);
        return 2;
    }
    int skip = nt_can_run();
    if (skip) return skip;
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (nt_up(&T, K)) return 1;
    if (nt_enter(T.ns[0])) return 1;
    setenv("TENDRIL_NICS", T.niclist[0], 1);
    setenv("TENDRIL_TEST_PROVIDER", "tcp", 1);
    printf("topology %s: 2 hosts x %d NICs (%s <-> %s)\n", T.prefix, K, T.niclist[0], T.niclist[1]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sharded_even, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sharded_cursor, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pinned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scatter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_imm_barrier, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nic_down, setup_down, teardown_down),
    };
    char name[32];
    snprintf(name, sizeof name, "netns-2x%d", K);
    int r = cmocka_run_group_tests_name(name, tests, NULL, NULL);
    nt_down(&T);
    return r;
}
