/* The all-to-all's configuration checks (a2a_create rejects bad input with a message
 * naming the field, before it touches any GPU, so this runs on machines without one),
 * the struct_size growth rule, and the slice/node topology of docs/a2a-internode.md
 * ("Ranks"). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <tendril/a2a.h>

#include "a2a_internal.h"
#include "a2a_test_config.h"

static int fake_allgather(void *ctx, const void *in, void *out, size_t len)
{
    (void)ctx;
    (void)in;
    (void)out;
    (void)len;
    return -ENOSYS; /* never called by a2a_create */
}

static char engine_stub; /* a2a_create keeps the pointer; only a2a_connect uses it */

static a2a_config base_cfg(void)
{
    a2a_config c = a2a_test_config(0, 2, 0);
    c.rendezvous = "unit-a2a";
    return c;
}

/* a2a_create fails with -EINVAL and a message containing `what`. */
static void expect_invalid(const a2a_config *c, const char *what)
{
    a2a_ctx *ctx = (a2a_ctx *)&engine_stub;
    int rc = a2a_create(c, &ctx);
    if (rc != -EINVAL || !strstr(a2a_last_error(), what))
        fail_msg("expected -EINVAL naming '%s', got %d: '%s'", what, rc, a2a_last_error());
    assert_null(ctx);
}

/* The checks pass: a2a_create then either builds a context (a GPU is here) or fails on
 * the CUDA side with a message saying so (no driver, no device), never with -EINVAL. */
static void expect_valid(const a2a_config *c)
{
    a2a_ctx *ctx = NULL;
    int rc = a2a_create(c, &ctx);
    if (rc == 0) {
        assert_non_null(ctx);
        a2a_destroy(ctx);
        return;
    }
    if (rc == -EINVAL || !strstr(a2a_last_error(), "CUDA"))
        fail_msg("expected the checks to pass, got %d: '%s'", rc, a2a_last_error());
}

static void test_struct_size(void **s)
{
    (void)s;
    expect_invalid(NULL, "cfg is NULL");
    a2a_config c = base_cfg();
    c.struct_size = 8;
    expect_invalid(&c, "struct_size");
    c.struct_size = sizeof c + 8; /* from a newer header */
    expect_invalid(&c, "struct_size");
    /* a caller built against the first layout: the new fields read as zero (one node) */
    c = base_cfg();
    c.struct_size = A2A_CONFIG_SIZE_V1;
    c.ranks_per_node = 1; /* beyond struct_size: ignored */
    expect_valid(&c);
    assert_int_equal(a2a_create(&c, NULL), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "out is NULL"));
}

/* The proxy timing accessors refuse bad arguments with a message; a context that is not
 * connected has no proxy (-ENOENT). The context half needs a GPU (a2a_create); without
 * one only the NULL checks run, and the test says so. */
static void test_proxy_timing_errors(void **s)
{
    (void)s;
    a2a_proxy_timing t;
    assert_int_equal(a2a_proxy_timing_get(NULL, A2A_PHASE_DISPATCH, &t), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "context is NULL"));
    assert_int_equal(a2a_proxy_timing_reset(NULL), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "context is NULL"));
    a2a_config c = base_cfg();
    a2a_ctx *ctx = NULL;
    if (a2a_create(&c, &ctx) != 0) {
        print_message("context checks not run: %s\n", a2a_last_error());
        return;
    }
    assert_int_equal(a2a_proxy_timing_get(ctx, A2A_PHASE_DISPATCH, NULL), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "out is NULL"));
    assert_int_equal(a2a_proxy_timing_get(ctx, A2A_PHASES, &t), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "phase 3 outside"));
    assert_int_equal(a2a_proxy_timing_get(ctx, -1, &t), -EINVAL);
    assert_int_equal(a2a_proxy_timing_get(ctx, A2A_PHASE_COMBINE, &t), -ENOENT);
    assert_non_null(strstr(a2a_last_error(), "no RDMA proxy"));
    assert_int_equal(a2a_proxy_timing_reset(ctx), -ENOENT);
    a2a_destroy(ctx);
}

/* The trace accessors (a2a_trace.c) refuse bad arguments with a message; a context that
 * is not connected has no trace (-ENOENT, newest epoch 0). As above, the context half
 * needs a GPU. */
static void test_trace_errors(void **s)
{
    (void)s;
    a2a_phase_trace t;
    assert_int_equal(a2a_phase_trace_get(NULL, A2A_PHASE_DISPATCH, 1, &t), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "ctx is NULL"));
    assert_int_equal(a2a_clock_sync(NULL, NULL), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "ctx is NULL"));
    assert_int_equal(a2a_trace_newest_epoch(NULL), 0);
    a2a_config c = base_cfg();
    a2a_ctx *ctx = NULL;
    if (a2a_create(&c, &ctx) != 0) {
        print_message("context checks not run: %s\n", a2a_last_error());
        return;
    }
    assert_int_equal(a2a_phase_trace_get(ctx, A2A_PHASE_DISPATCH, 1, NULL), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "out is NULL"));
    assert_int_equal(a2a_phase_trace_get(ctx, A2A_PHASES, 1, &t), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "phase 3 outside"));
    assert_int_equal(a2a_phase_trace_get(ctx, A2A_PHASE_DISPATCH, 0, &t), -EINVAL);
    assert_non_null(strstr(a2a_last_error(), "epochs start at 1"));
    assert_int_equal(a2a_phase_trace_get(ctx, A2A_PHASE_COMBINE, 1, &t), -ENOENT);
    assert_non_null(strstr(a2a_last_error(), "no trace"));
    uint64_t err = 1;
    assert_int_equal(a2a_clock_sync(ctx, &err), -ENOENT);
    assert_int_equal(err, 1); /* untouched on failure */
    assert_int_equal(a2a_trace_newest_epoch(ctx), 0);
    a2a_destroy(ctx);
}

static void test_topology_checks(void **s)
{
    (void)s;
    a2a_config c = base_cfg();
    c.world_size = 6;
    c.ranks_per_node = 4;
    expect_invalid(&c, "not a multiple of ranks_per_node 4");
    c.ranks_per_node = 7;
    expect_invalid(&c, "ranks_per_node 7 not in [1, world_size 6]");
    c.ranks_per_node = -1;
    expect_invalid(&c, "ranks_per_node -1");
    c.ranks_per_node = 0;
    c.dp_size = 4;
    expect_invalid(&c, "world_size 6 is not a multiple of dp_size 4");
    c.dp_size = 8;
    expect_invalid(&c, "dp_size 8 not in [1, world_size 6]");
    c.dp_size = -2;
    expect_invalid(&c, "dp_size -2");
    c.dp_size = 0;
    c.world_size = 2 * A2A_MAX_RANKS;
    expect_invalid(&c, "A2A_MAX_RANKS");
    c.dp_size = 2; /* 64 ranks per slice: fine */
    expect_valid(&c);
    c.world_size = 0;
    expect_invalid(&c, "world_size 0");
    c.world_size = 4;
    c.dp_size = 0;
    c.rank = 4;
    expect_invalid(&c, "rank 4 not in [0, 4)");
}

static void test_rdma_requirements(void **s)
{
    (void)s;
    a2a_config c = base_cfg();
    c.world_size = 4;
    c.rank = 1;
    c.ranks_per_node = 2;
    expect_invalid(&c, "cfg->engine is NULL");
    c.engine = (struct te_engine *)(void *)&engine_stub;
    expect_invalid(&c, "cfg->allgather is NULL");
    c.allgather = fake_allgather;
    expect_valid(&c);
    c.rdma_buffers = (a2a_rdma_buffers)7;
    expect_invalid(&c, "rdma_buffers 7");
    c.rdma_buffers = A2A_RDMA_HOST;
    c.imm_base = 0xffffffffu;
    expect_invalid(&c, "imm_base");
    c.imm_base = 0;
    /* with dp_size 2 and 2 ranks per node, every slice peer is on another node */
    c.dp_size = 2;
    c.engine = NULL;
    expect_invalid(&c, "cfg->engine is NULL");
    /* one node: no engine and no allgather needed, as before issue 14 */
    c.ranks_per_node = 4;
    c.allgather = NULL;
    expect_valid(&c);
    /* no rendezvous: only with an allgather to agree on one */
    c.rendezvous = NULL;
    expect_invalid(&c, "rendezvous is NULL");
    c.allgather = fake_allgather;
    expect_valid(&c);
    c.rendezvous = "";
    expect_invalid(&c, "rendezvous must be");
}

static void test_field_checks(void **s)
{
    (void)s;
    a2a_config c = base_cfg();
    c.hidden_dim = 12;
    expect_invalid(&c, "hidden_dim 12");
    c = base_cfg();
    c.experts_per_token = 9;
    expect_invalid(&c, "experts_per_token 9");
    c = base_cfg();
    c.out_dtype = (a2a_dtype)9;
    expect_invalid(&c, "out_dtype 9");
    c = base_cfg();
    c.in_elem_size = 3;
    expect_invalid(&c, "in_elem_size 3");
}

static void topo(int world, int rpn, int dp, int rank, a2a_topo *t)
{
    a2a_config c = base_cfg();
    c.world_size = world;
    c.ranks_per_node = rpn;
    c.dp_size = dp;
    c.rank = rank;
    a2a_topo_of(&c, t);
}

static void test_slices(void **s)
{
    (void)s;
    a2a_topo t;
    /* 4 nodes of 2, dp 2: rank 5 is slice rank 2 of slice {1,3,5,7}, all on other nodes */
    topo(8, 2, 2, 5, &t);
    assert_int_equal(t.node, 2);
    assert_int_equal(t.srank, 2);
    assert_int_equal(t.sworld, 4);
    assert_int_equal(t.dp_rank, 1);
    assert_int_equal(a2a_phys(&t, 3), 7);
    assert_int_equal(t.rdma_mask, 0xb);
    assert_int_equal(t.n_rdma, 3);
    assert_int_equal(t.n_nvl, 0);
    /* 2 nodes of 4, dp 2: rank 1's slice {1,3,5,7}: 3 shares its node, 5 and 7 do not */
    topo(8, 4, 2, 1, &t);
    assert_int_equal(t.srank, 0);
    assert_int_equal(t.rdma_mask, 0xc);
    assert_int_equal(t.n_nvl, 1);
    assert_int_equal(t.n_rdma, 2);
    /* one node (0 = world): no RDMA peer */
    topo(8, 0, 1, 3, &t);
    assert_int_equal(t.rdma_mask, 0);
    assert_int_equal(t.n_nvl, 7);
    /* one rank per node: RDMA between every pair */
    topo(4, 1, 0, 2, &t);
    assert_int_equal(t.rdma_mask, 0xb);
    assert_int_equal(t.n_rdma, 3);
    /* 64 ranks per slice: bit 63 */
    topo(64, 1, 1, 0, &t);
    assert_true(t.rdma_mask == ~1ull);
}

static void test_strerror(void **s)
{
    (void)s;
    assert_string_equal(a2a_strerror(-ETIMEDOUT), "timed out waiting for a peer");
    assert_string_equal(a2a_strerror(-ENOMEM), te_strerror(-ENOMEM));
    assert_non_null(a2a_strerror(-12345));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_struct_size),   cmocka_unit_test(test_topology_checks),
        cmocka_unit_test(test_rdma_requirements), cmocka_unit_test(test_field_checks),
        cmocka_unit_test(test_slices),        cmocka_unit_test(test_strerror),
        cmocka_unit_test(test_proxy_timing_errors),
        cmocka_unit_test(test_trace_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
