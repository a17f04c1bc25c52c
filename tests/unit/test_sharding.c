/* The sharding rule (src/te/sharding.c) on plain inputs, for 1..4 NICs, every cursor
 * position, every op kind and every size edge the rule distinguishes. Expectations are
 * written from the table in docs/multi-nic.md and te.h, not from the code: NIC choice,
 * cursor advance, work requests and immediates per request, and for byte-splitting
 * requests that every byte is moved exactly once. Which keys a work request carries (the
 * posting NIC's, by one index) is checked end to end by tests/netns/test_multinic.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "te/sharding.h"

#define A SHARD_ALIGN

static shard_plan plan(uint8_t kind, uint32_t N, uint32_t rr, te_route route, uint64_t items)
{
    shard_input in = {.kind = kind, .n_nics = N, .rr = rr, .route = route, .items = items};
    shard_plan p;
    memset(&p, 0xa5, sizeof p); /* nothing may be left over from before */
    shard_plan_compute(&in, &p);
    return p;
}

static shard_plan plan_scatter(uint32_t N, uint32_t rr, te_scatter_kind k, uint32_t nic, uint64_t T)
{
    shard_input in = {.kind = OP_SCATTER, .n_nics = N, .rr = rr, .scatter = k, .nic = nic, .items = T};
    shard_plan p;
    shard_plan_compute(&in, &p);
    return p;
}

/* Invariants of every plan: at most one span per NIC (a portion per NIC), NICs in range,
 * wrs = the sum of the spans. */
static void check_shape(const shard_plan *p, uint32_t N)
{
    assert_true(p->n_spans <= N);
    assert_true(p->rr_next < N);
    uint32_t used = 0;
    uint64_t wrs = 0;
    for (uint32_t k = 0; k < p->n_spans; k++) {
        assert_true(p->span[k].nic < N);
        assert_false(used & (1u << p->span[k].nic));
        used |= 1u << p->span[k].nic;
        wrs += p->span[k].count;
    }
    assert_int_equal(p->wrs, wrs);
}

/* Spans of a chunked split of `items`: chunk c = [c*ceil(items/N), ...) on NIC (start+c)%N,
 * every item exactly once, in order. Returns the chunk count. */
static uint32_t check_chunks(const shard_plan *p, uint32_t N, uint32_t start, uint64_t items)
{
    if (items == 0) {
        assert_int_equal(p->n_spans, 0);
        return 0;
    }
    uint64_t chunk = (items + N - 1) / N;
    uint64_t next = 0;
    for (uint32_t c = 0; c < p->n_spans; c++) {
        assert_int_equal(p->span[c].nic, (start + c) % N);
        assert_int_equal(p->span[c].first, next);
        uint64_t want = items - next < chunk ? items - next : chunk;
        assert_int_equal(p->span[c].count, want);
        next += p->span[c].count;
    }
    assert_int_equal(next, items);
    return p->n_spans;
}

/* Lengths around every multiple of the alignment up to 4N+1 of them, plus the examples
 * of docs/multi-nic.md and lengths past 4 GiB. */
static size_t write_lengths(uint64_t *out)
{
    size_t n = 0;
    out[n++] = 0;
    out[n++] = 1;
    out[n++] = 1000;
    out[n++] = 4096;
    out[n++] = 10000;
    for (uint64_t m = 1; m <= 4 * TE_MAX_NICS + 1; m++) {
        out[n++] = m * A - 1;
        out[n++] = m * A;
        out[n++] = m * A + 1;
    }
    out[n++] = 1 << 20;
    out[n++] = (1 << 20) + 7;
    out[n++] = 64ull << 20;
    out[n++] = (5ull << 30) + 3;
    return n;
}

static void test_write_sharded(void **state)
{
    (void)state;
    uint64_t lens[64];
    size_t nl = write_lengths(lens);
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t n = 0; n <= N; n++) {
            te_route route = {TE_ROUTE_SHARDED, n};
            uint32_t s = shard_write_count(route, N);
            assert_int_equal(s, n ? n : N); /* n = 0 means every NIC */
            for (size_t li = 0; li < nl; li++) {
                uint64_t len = lens[li];
                uint64_t size = shard_write_size(len, s);
                uint64_t need = (len + s - 1) / s; /* ceil: the tail is never dropped */
                assert_int_equal(size % A, 0);
                assert_true(size >= need && size < need + A);
                for (uint32_t rr = 0; rr < N; rr++) {
                    shard_plan p = plan(OP_WRITE, N, rr, route, s);
                    check_shape(&p, N);
                    assert_int_equal(p.n_spans, s);
                    assert_int_equal(p.wrs, s); /* zero-length shards included */
                    assert_int_equal(p.imms, s);
                    assert_int_equal(p.rr_next, (rr + s) % N);
                    uint64_t covered = 0;
                    for (uint32_t k = 0; k < s; k++) {
                        assert_int_equal(p.span[k].nic, (rr + k) % N);
                        assert_int_equal(p.span[k].first, k);
                        assert_int_equal(p.span[k].count, 1);
                    }
                    for (uint32_t k = 0; k < s; k++) {
                        shard_range r = shard_write_range(len, size, k);
                        if (r.len == 0) {
                            assert_int_equal(r.off, 0); /* empty: at the request's offsets */
                            continue;
                        }
                        assert_int_equal(r.off, covered); /* shards in order, no gap or overlap */
                        assert_int_equal(r.off, (uint64_t)k * size);
                        assert_true(r.len <= size);
                        covered += r.len;
                    }
                    assert_int_equal(covered, len); /* every byte exactly once */
                }
            }
        }
}

static void test_write_examples(void **state)
{
    (void)state;
    /* docs/multi-nic.md: 64 MiB over 4, 10 000 B over 2, 1000 B over 2, 4 KiB over 2. */
    assert_int_equal(shard_write_size(64ull << 20, 4), 16ull << 20);
    assert_int_equal(shard_write_range(10000, shard_write_size(10000, 2), 0).len, 8192);
    assert_int_equal(shard_write_range(10000, shard_write_size(10000, 2), 1).len, 1808);
    assert_int_equal(shard_write_range(1000, shard_write_size(1000, 2), 0).len, 1000);
    assert_int_equal(shard_write_range(1000, shard_write_size(1000, 2), 1).len, 0);
    assert_int_equal(shard_write_range(4096, shard_write_size(4096, 2), 1).len, 0);
    /* The original's floor division dropped the tail here: 16385 over 2. */
    uint64_t sz = shard_write_size(16385, 2);
    assert_int_equal(shard_write_range(16385, sz, 0).len + shard_write_range(16385, sz, 1).len, 16385);
}

static void test_write_pinned_and_imm(void **state)
{
    (void)state;
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t rr = 0; rr < N; rr++) {
            for (uint32_t d = 0; d < N; d++) {
                te_route pin = {TE_ROUTE_PINNED, d};
                assert_int_equal(shard_write_count(pin, N), 1);
                static const uint8_t kinds[] = {OP_WRITE, OP_IMM};
                for (size_t ki = 0; ki < 2; ki++) {
                    shard_plan p = plan(kinds[ki], N, rr, pin, 1);
                    check_shape(&p, N);
                    assert_int_equal(p.n_spans, 1);
                    assert_int_equal(p.span[0].nic, d);
                    assert_int_equal(p.span[0].count, 1);
                    assert_int_equal(p.imms, 1);
                    assert_int_equal(p.rr_next, rr); /* pinned: cursor untouched */
                }
            }
            shard_plan p = plan(OP_IMM, N, rr, (te_route){TE_ROUTE_SHARDED, 0}, 0);
            check_shape(&p, N);
            assert_int_equal(p.n_spans, 1);
            assert_int_equal(p.span[0].nic, rr); /* sharded imm: NIC rr, cursor + 1 */
            assert_int_equal(p.imms, 1);
            assert_int_equal(p.rr_next, (rr + 1) % N);
        }
}

static void test_paged(void **state)
{
    (void)state;
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t rr = 0; rr < N; rr++)
            for (uint64_t P = 0; P <= 4 * TE_MAX_NICS + 3; P++) {
                shard_plan p = plan(OP_PAGED, N, rr, (te_route){0, 0}, P);
                check_shape(&p, N);
                uint32_t chunks = check_chunks(&p, N, rr, P);
                assert_int_equal(p.wrs, P);
                assert_int_equal(p.imms, P); /* one per page; zero pages: none, completes */
                assert_int_equal(p.rr_next, (rr + chunks) % N);
            }
}

static void test_scatter(void **state)
{
    (void)state;
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t rr = 0; rr < N; rr++)
            for (uint64_t T = 1; T <= 4 * TE_MAX_NICS + 3; T++) {
                shard_plan p = plan_scatter(N, rr, TE_SCATTER_SHARD_PEERS, 0, T);
                check_shape(&p, N);
                check_chunks(&p, N, 0, T); /* chunk k on NIC k, whatever the cursor */
                assert_int_equal(p.imms, T);
                assert_int_equal(p.rr_next, rr);

                p = plan_scatter(N, rr, TE_SCATTER_SHARD_BYTES, 0, T);
                check_shape(&p, N);
                assert_int_equal(p.n_spans, N);
                for (uint32_t k = 0; k < N; k++) {
                    assert_int_equal(p.span[k].nic, k);
                    assert_int_equal(p.span[k].first, 0);
                    assert_int_equal(p.span[k].count, T); /* every NIC writes every target */
                }
                assert_int_equal(p.imms, N * T);
                assert_int_equal(p.rr_next, rr);

                for (uint32_t d = 0; d < N; d++) {
                    p = plan_scatter(N, rr, TE_SCATTER_SINGLE, d, T);
                    check_shape(&p, N);
                    assert_int_equal(p.n_spans, 1);
                    assert_int_equal(p.span[0].nic, d);
                    assert_int_equal(p.span[0].count, T);
                    assert_int_equal(p.imms, T);
                    assert_int_equal(p.rr_next, rr);
                }
            }
}

static void test_scatter_slices(void **state)
{
    (void)state;
    static const uint64_t lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 4096, 100003, (4ull << 30) + 5};
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (size_t li = 0; li < sizeof lens / sizeof *lens; li++) {
            uint64_t L = lens[li], covered = 0;
            for (uint32_t k = 0; k < N; k++) {
                shard_range r = shard_scatter_slice(L, N, k);
                assert_int_equal(r.off, covered); /* contiguous slices */
                assert_int_equal(r.len, k == N - 1 ? L - (N - 1) * (L / N) : L / N);
                covered += r.len;
            }
            assert_int_equal(covered, L); /* the remainder is sent, > 4 GiB included */
        }
}

static void test_barrier(void **state)
{
    (void)state;
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t rr = 0; rr < N; rr++)
            for (uint64_t n = 0; n <= 4 * TE_MAX_NICS + 3; n++) {
                shard_plan p = plan(OP_BARRIER, N, rr, (te_route){TE_ROUTE_SHARDED, 0}, n);
                check_shape(&p, N);
                uint32_t chunks = check_chunks(&p, N, rr, n);
                assert_int_equal(p.imms, n); /* one per destination */
                assert_int_equal(p.rr_next, (rr + chunks) % N);
                for (uint32_t d = 0; d < N; d++) {
                    p = plan(OP_BARRIER, N, rr, (te_route){TE_ROUTE_PINNED, d}, n);
                    check_shape(&p, N);
                    assert_int_equal(p.n_spans, n ? 1 : 0);
                    if (n) assert_int_equal(p.span[0].nic, d);
                    assert_int_equal(p.imms, n);
                    assert_int_equal(p.rr_next, rr);
                }
            }
}

static void test_send(void **state)
{
    (void)state;
    for (uint32_t N = 1; N <= TE_MAX_NICS; N++)
        for (uint32_t rr = 0; rr < N; rr++) {
            shard_plan p = plan(OP_SEND, N, rr, (te_route){0, 0}, 0);
            check_shape(&p, N);
            assert_int_equal(p.n_spans, 1);
            assert_int_equal(p.span[0].nic, 0); /* control messages: NIC 0 */
            assert_int_equal(p.wrs, 1);
            assert_int_equal(p.imms, 0);
            assert_int_equal(p.rr_next, rr);
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_sharded),   cmocka_unit_test(test_write_examples),
        cmocka_unit_test(test_write_pinned_and_imm), cmocka_unit_test(test_paged),
        cmocka_unit_test(test_scatter),         cmocka_unit_test(test_scatter_slices),
        cmocka_unit_test(test_barrier),         cmocka_unit_test(test_send),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
