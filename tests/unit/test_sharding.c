/* The sharding rules of domain_group.c for 1..4 NICs, checked exhaustively: every byte is
 * written exactly once, each work request uses the local descriptor, remote key and peer
 * of the NIC that posts it, and the immediate counts match te.h's table. The transport
 * here is a stub that only resolves addresses; the real one is exercised by the
 * integration tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "te/engine_internal.h"

/* Peer handle = 1000 * (address's first byte) + NIC index encoded in its second byte. */
static int stub_resolve(tp_nic *n, const te_addr *a, tp_peer *out)
{
    *out = 1000u * a->bytes[0] + a->bytes[1];
    return 0;
}

static const tp_ops stub_ops = {.backend = "stub", .resolve = stub_resolve};

static te_group *make_group(uint32_t N)
{
    te_group *g = calloc(1, sizeof *g);
    g->n_nics = N;
    for (uint32_t k = 0; k < N; k++) g->nic[k].ops = &stub_ops;
    return g;
}

static void free_group(te_group *g)
{
    for (uint32_t k = 0; k < g->n_nics; k++)
        for (int b = 0; b < PEER_CACHE_BUCKETS; b++) {
            te_peer_cache_entry *x = g->nic[k].peers[b];
            while (x) {
                te_peer_cache_entry *nx = x->next;
                free(x);
                x = nx;
            }
        }
    free(g);
}

/* Remote descriptor of peer `id` with N NICs: NIC k has address {id, k} and rkey 500+k. */
static te_mr_desc desc_of(uint8_t id, uint32_t N, uint64_t len)
{
    te_mr_desc d = {.base = 0x100000, .len = len, .n_nics = N};
    for (uint32_t k = 0; k < N; k++) {
        d.nic[k].addr.transport = TE_TRANSPORT_FABRIC;
        d.nic[k].addr.len = 2;
        d.nic[k].addr.bytes[0] = id;
        d.nic[k].addr.bytes[1] = (uint8_t)k;
        d.nic[k].rkey = 500 + k;
    }
    return d;
}

static te_mr *make_mr(uint8_t *buf, size_t len, uint32_t N)
{
    te_mr *m = calloc(1, sizeof *m);
    m->ptr = buf;
    m->len = len;
    m->n_nics = N;
    for (uint32_t k = 0; k < N; k++) m->nic[k].desc = (void *)(uintptr_t)(0x7000 + k);
    return m;
}

/* Checks that a work request built on `nic` uses only that NIC's keys. */
static void check_wr_nic(const tp_write *w, uint32_t nic, uint8_t peer_id)
{
    if (w->len) assert_ptr_equal(w->local_desc, (void *)(uintptr_t)(0x7000 + nic));
    assert_int_equal(w->rkey, 500 + nic);
    assert_int_equal(w->peer, 1000u * peer_id + nic);
}

static void test_single_write_shards(void **state)
{
    static const uint64_t lens[] = {0, 1, 1000, 8191, 8192, 8193, 10000, 16385, 65536, 1 << 20, (1 << 20) + 7};
    uint8_t *buf = malloc(2 << 20);
    for (uint32_t N = 1; N <= 4; N++)
        for (uint32_t s = 1; s <= N; s++)
            for (size_t li = 0; li < sizeof lens / sizeof *lens; li++)
                for (uint32_t rr0 = 0; rr0 < N; rr0++) {
                    te_group *g = make_group(N);
                    g->rr = rr0;
                    te_mr *m = make_mr(buf, 2 << 20, N);
                    te_op op = {.kind = OP_WRITE, .src = m, .has_imm = true, .imm = 9};
                    op.dst = desc_of(7, N, 4 << 20);
                    uint64_t len = lens[li];
                    uint64_t shard = (len + s - 1) / s;
                    shard = (shard + 8191) / 8192 * 8192;
                    op.u.w = (typeof(op.u.w)){.src_off = 16, .dst_off = 32, .len = len, .shard = shard,
                                              .shards = s, .route = {TE_ROUTE_SHARDED, s}};
                    char msg[128];
                    assert_int_equal(dg_plan(g, &op, msg, sizeof msg), 0);
                    assert_int_equal(op.n_portions, s); /* s immediates, zero-length shards included */
                    assert_int_equal(g->rr, (rr0 + s) % N);
                    uint8_t *seen = calloc(len + 1, 1);
                    uint32_t used = 0;
                    for (uint32_t p = 0; p < op.n_portions; p++) {
                        te_portion *pt = &op.portion[p];
                        assert_int_equal(pt->count, 1);
                        assert_int_equal(pt->nic, (rr0 + p) % N);
                        assert_false(used & (1u << pt->nic)); /* one shard per NIC */
                        used |= 1u << pt->nic;
                        tp_write w;
                        dg_build(g, pt, 0, &w);
                        check_wr_nic(&w, pt->nic, 7);
                        assert_true(w.has_imm);
                        uint64_t off = w.remote_off - 32;
                        assert_true(off + w.len <= len || (w.len == 0 && off == 0));
                        if (w.len) assert_ptr_equal(w.local, buf + 16 + off);
                        for (uint64_t b = 0; b < w.len; b++) seen[off + b]++;
                    }
                    for (uint64_t b = 0; b < len; b++) assert_int_equal(seen[b], 1); /* every byte once */
                    free(seen);
                    free(m);
                    free_group(g);
                }
    free(buf);
}

static void test_paged_chunks(void **state)
{
    uint8_t buf[64];
    for (uint32_t N = 1; N <= 4; N++)
        for (uint32_t P = 0; P <= 13; P++) {
            te_group *g = make_group(N);
            g->rr = N - 1;
            te_mr *m = make_mr(buf, sizeof buf, N);
            uint32_t idx[13];
            for (uint32_t k = 0; k < P; k++) idx[k] = k;
            te_pages *pages;
            assert_int_equal(te_pages_create(idx, P, &pages), 0);
            te_op op = {.kind = OP_PAGED, .src = m, .has_imm = true};
            op.dst = desc_of(3, N, 1 << 20);
            op.u.p = (typeof(op.u.p)){.sp = pages, .dp = pages, .len = 4, .s_stride = 4, .d_stride = 8};
            char msg[128];
            assert_int_equal(dg_plan(g, &op, msg, sizeof msg), 0);
            uint32_t chunk = P ? (P + N - 1) / N : 0;
            uint32_t chunks = P ? (P + chunk - 1) / chunk : 0;
            assert_int_equal(op.n_portions, chunks); /* zero pages: nothing to post, completes */
            assert_int_equal(g->rr, (N - 1 + chunks) % N);
            uint32_t total = 0;
            for (uint32_t p = 0; p < op.n_portions; p++) {
                te_portion *pt = &op.portion[p];
                assert_int_equal(pt->nic, (N - 1 + p) % N);
                for (uint32_t j = 0; j < pt->count; j++) {
                    tp_write w;
                    dg_build(g, pt, j, &w);
                    check_wr_nic(&w, pt->nic, 3);
                    assert_int_equal(w.remote_off, 8ull * (pt->first + j)); /* page order kept */
                    total++;
                }
            }
            assert_int_equal(total, P); /* one write and one immediate per page */
            te_pages_release(pages);
            free(m);
            free_group(g);
        }
}

static void test_scatter_shard_bytes(void **state)
{
    uint8_t *buf = malloc(1 << 20);
    static const uint64_t lens[] = {0, 1, 3, 5, 4096, 100003};
    for (uint32_t N = 1; N <= 4; N++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            te_group *g = make_group(N);
            te_mr *m = make_mr(buf, 1 << 20, N);
            te_target t[3];
            for (int k = 0; k < 3; k++) {
                t[k].dst = desc_of((uint8_t)(10 + k), N, 1 << 20);
                t[k].len = lens[li];
                t[k].src_offset = 100u * (unsigned)k;
                t[k].dst_offset = 7;
            }
            te_op op = {.kind = OP_SCATTER, .src = m, .has_imm = true};
            op.u.s = (typeof(op.u.s)){.t = t, .n = 3, .kind = TE_SCATTER_SHARD_BYTES};
            char msg[128];
            assert_int_equal(dg_plan(g, &op, msg, sizeof msg), 0);
            assert_int_equal(op.n_portions, N);
            for (int k = 0; k < 3; k++) {
                uint64_t covered = 0, writes = 0;
                for (uint32_t p = 0; p < N; p++) {
                    tp_write w;
                    dg_build(g, &op.portion[p], (uint32_t)k, &w);
                    check_wr_nic(&w, op.portion[p].nic, (uint8_t)(10 + k));
                    assert_int_equal(w.remote_off, 7 + covered); /* contiguous slices */
                    covered += w.len;
                    writes++;
                }
                assert_int_equal(covered, lens[li]); /* the remainder is sent too */
                assert_int_equal(writes, N);        /* N immediates per target */
            }
            free(op.u.s.peers);
            free(m);
            free_group(g);
        }
    free(buf);
}

static void test_scatter_shard_peers_and_barrier(void **state)
{
    uint8_t buf[64];
    for (uint32_t N = 1; N <= 4; N++)
        for (uint32_t T = 1; T <= 9; T++) {
            te_group *g = make_group(N);
            te_mr *m = make_mr(buf, sizeof buf, N);
            te_target t[9];
            te_mr_desc d[9];
            for (uint32_t k = 0; k < T; k++) {
                t[k] = (te_target){.dst = desc_of((uint8_t)(20 + k), N, 64), .len = 8};
                d[k] = desc_of((uint8_t)(20 + k), N, 64);
            }
            te_op op = {.kind = OP_SCATTER, .src = m, .has_imm = true};
            op.u.s = (typeof(op.u.s)){.t = t, .n = T, .kind = TE_SCATTER_SHARD_PEERS};
            char msg[128];
            assert_int_equal(dg_plan(g, &op, msg, sizeof msg), 0);
            uint32_t seen = 0;
            for (uint32_t p = 0; p < op.n_portions; p++)
                for (uint32_t j = 0; j < op.portion[p].count; j++) {
                    tp_write w;
                    dg_build(g, &op.portion[p], j, &w);
                    check_wr_nic(&w, op.portion[p].nic, (uint8_t)(20 + op.portion[p].first + j));
                    seen++;
                }
            assert_int_equal(seen, T); /* one write per target */
            free(op.u.s.peers);

            /* Round-robin barrier: one imm-only write per destination, keys of the posting NIC. */
            te_op b = {.kind = OP_BARRIER, .has_imm = true};
            b.u.b = (typeof(b.u.b)){.dsts = d, .n = T, .route = {TE_ROUTE_SHARDED, 0}};
            g->rr = 1 % N;
            assert_int_equal(dg_plan(g, &b, msg, sizeof msg), 0);
            seen = 0;
            for (uint32_t p = 0; p < b.n_portions; p++)
                for (uint32_t j = 0; j < b.portion[p].count; j++) {
                    tp_write w;
                    dg_build(g, &b.portion[p], j, &w);
                    assert_int_equal(w.len, 0);
                    check_wr_nic(&w, b.portion[p].nic, (uint8_t)(20 + b.portion[p].first + j));
                    seen++;
                }
            assert_int_equal(seen, T);
            free(b.u.b.peers);
            free(m);
            free_group(g);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single_write_shards),
        cmocka_unit_test(test_paged_chunks),
        cmocka_unit_test(test_scatter_shard_bytes),
        cmocka_unit_test(test_scatter_shard_peers_and_barrier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
