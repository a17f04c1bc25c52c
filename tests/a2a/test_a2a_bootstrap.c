/* The all-to-all's bootstrap through the caller's all-gather (docs/a2a-internode.md,
 * "Bootstrap"), without a GPU: W threads play the ranks, each with a context built from
 * its own configuration the way a2a_create loads it (a2a_config_load, a2a_topo_of,
 * a2a_config_hash), and exchange the real records through an in-process all-gather.
 * Checked: agreement gives every rank rank 0's rendezvous name; a rank whose topology or
 * layout differs, a record out of order, a rank that reports a failure, and a failing
 * callback are errors that name the rank; the final round reports another rank's
 * failure as -ECONNABORTED naming it. */
/* Label threads (tests/a2a/CMakeLists.txt): the ranks are threads meeting in the all-gather. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <tendril/a2a.h>

#include "a2a_internal.h"
#include "a2a_test_config.h"

#define MAXW 4

/* In-process all-gather of W threads: two barrier rounds per call. */
typedef struct gather_hub {
    pthread_barrier_t bar;
    int world;
    unsigned char *slots; /* [world][len] */
    size_t cap;
    int swap01;           /* hand ranks 0 and 1 their records swapped (a bad callback) */
    int fail_all;         /* every rank's callback reports a failure */
} gather_hub;

typedef struct rank_arg {
    gather_hub *hub;
    int rank;
    a2a_config cfg;
    int status;           /* passed to a2a_boot_exchange: this rank's own failure */
    int finish_rc;        /* passed to a2a_boot_finish */
    /* results */
    int rc_exchange, rc_finish, gather_failed;
    char msg[512];
    char rdv[96];
} rank_arg;

static int hub_gather(void *ctx, const void *in, void *out, size_t len)
{
    rank_arg *a = ctx;
    gather_hub *h = a->hub;
    if (len * (size_t)h->world > h->cap) return -EMSGSIZE; /* the test's own limit */
    memcpy(h->slots + (size_t)a->rank * len, in, len);
    pthread_barrier_wait(&h->bar);
    memcpy(out, h->slots, len * (size_t)h->world);
    if (h->swap01 && h->world > 1) {
        memcpy(out, h->slots + len, len);
        memcpy((char *)out + len, h->slots, len);
    }
    pthread_barrier_wait(&h->bar);
    return h->fail_all ? -EIO : 0;
}


static void *rank_main(void *p)
{
    rank_arg *a = p;
    a->cfg.allgather = hub_gather;
    a->cfg.allgather_ctx = a;
    a2a_ctx *c = calloc(1, sizeof *c);
    assert_non_null(c);
    int rc = a2a_config_load(&a->cfg, &c->cfg);
    if (rc) {
        snprintf(a->msg, sizeof a->msg, "config: %s", a2a_last_error());
        a->rc_exchange = rc;
        free(c);
        return NULL;
    }
    a2a_topo_of(&c->cfg, &c->t);
    c->layout_hash = a2a_config_hash(&c->cfg);
    c->rdma_kind = A2A_KIND_NONE; /* no engine here: no RDMA records (a2a_rdma_prepare's part) */
    te_addr addr[MAXW];
    te_mr_desc desc[MAXW];
    memset(addr, 0, sizeof addr);
    memset(desc, 0, sizeof desc);
    if (a->status) tn_err(a->status, "rank %d: its RDMA buffers failed (test)", a->rank);
    a->rc_exchange = a2a_boot_exchange(c, a->status, addr, desc, &a->gather_failed);
    if (a->rc_exchange) snprintf(a->msg, sizeof a->msg, "%s", a2a_last_error());
    snprintf(a->rdv, sizeof a->rdv, "%s", c->rdv);
    if (!a->gather_failed) {
        int in = a->rc_exchange ? a->rc_exchange : a->finish_rc;
        if (in && !a->rc_exchange) tn_err(in, "rank %d: its NVLink exchange failed (test)", a->rank);
        a->rc_finish = a2a_boot_finish(c, in);
        if (a->rc_finish && !a->rc_exchange) snprintf(a->msg, sizeof a->msg, "%s", a2a_last_error());
    }
    free(c);
    return NULL;
}

/* Runs W ranks with the configurations in ra[]. */
static void run(int world, rank_arg *ra, gather_hub *hub)
{
    hub->world = world;
    hub->cap = 64 * 1024;
    hub->slots = calloc(1, hub->cap);
    assert_non_null(hub->slots);
    assert_int_equal(pthread_barrier_init(&hub->bar, NULL, (unsigned)world), 0);
    pthread_t th[MAXW];
    for (int r = 0; r < world; r++) {
        ra[r].hub = hub;
        ra[r].rank = r;
        assert_int_equal(pthread_create(&th[r], NULL, rank_main, &ra[r]), 0);
    }
    for (int r = 0; r < world; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&hub->bar);
    free(hub->slots);
}

static void setup(int world, int rpn, rank_arg *ra, gather_hub *hub)
{
    memset(hub, 0, sizeof *hub);
    memset(ra, 0, sizeof(rank_arg) * MAXW);
    for (int r = 0; r < world; r++) ra[r].cfg = a2a_test_config(r, world, rpn);
}

static void expect(const rank_arg *a, int rc, const char *what)
{
    if (a->rc_exchange != rc || !strstr(a->msg, what))
        fail_msg("rank %d: expected %d with '%s', got %d: '%s'", a->rank, rc, what, a->rc_exchange, a->msg);
}

static void test_agreement_shares_rank0_rendezvous(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(4, 4, ra, &hub);
    run(4, ra, &hub);
    for (int r = 0; r < 4; r++) {
        assert_int_equal(ra[r].rc_exchange, 0);
        assert_int_equal(ra[r].rc_finish, 0);
        assert_true(strncmp(ra[r].rdv, "a2a-", 4) == 0);
        assert_string_equal(ra[r].rdv, ra[0].rdv);
    }
}

static void test_layout_disagreement_names_rank(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(3, 3, ra, &hub);
    ra[2].cfg.hidden_dim = 256;
    run(3, ra, &hub);
    expect(&ra[0], -EPROTO, "rank 2 has a different configuration");
    expect(&ra[1], -EPROTO, "rank 2 has a different configuration");
    expect(&ra[2], -EPROTO, "rank 0 has a different configuration");
    /* every rank still took part in the final round: nobody waits for another */
    for (int r = 0; r < 3; r++) assert_int_equal(ra[r].rc_finish, ra[r].rc_exchange);
}

static void test_topology_disagreement_names_rank(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(2, 2, ra, &hub);
    ra[1].cfg.dp_size = 2; /* rank 1 thinks it is a TP replica of rank 0 */
    run(2, ra, &hub);
    expect(&ra[0], -EPROTO, "rank 1 has world_size 2, ranks_per_node 2, dp_size 2");
    expect(&ra[1], -EPROTO, "rank 0 has world_size 2, ranks_per_node 2, dp_size 1");
}

static void test_imm_base_disagreement(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(2, 2, ra, &hub);
    ra[0].cfg.imm_base = 192;
    run(2, ra, &hub);
    expect(&ra[1], -EPROTO, "rank 0 has a different configuration");
}

static void test_records_out_of_order(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(2, 2, ra, &hub);
    hub.swap01 = 1;
    run(2, ra, &hub);
    expect(&ra[0], -EPROTO, "record 0 is not rank 0's");
    expect(&ra[1], -EPROTO, "record 0 is not rank 0's");
}

static void test_failed_rank_is_named(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(3, 3, ra, &hub);
    ra[1].status = -ENOMEM;
    run(3, ra, &hub);
    expect(&ra[0], -ECONNABORTED, "rank 1 cannot connect");
    expect(&ra[0], -ECONNABORTED, "its RDMA buffers failed");
    expect(&ra[1], -ENOMEM, "its RDMA buffers failed"); /* its own story */
    expect(&ra[2], -ECONNABORTED, "rank 1 cannot connect");
}

static void test_finish_reports_other_rank(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(3, 3, ra, &hub);
    ra[2].finish_rc = -ETIMEDOUT;
    run(3, ra, &hub);
    for (int r = 0; r < 3; r++) assert_int_equal(ra[r].rc_exchange, 0);
    assert_int_equal(ra[0].rc_finish, -ECONNABORTED);
    assert_non_null(strstr(ra[0].msg, "rank 2 failed to connect"));
    assert_non_null(strstr(ra[0].msg, "NVLink exchange failed"));
    assert_int_equal(ra[1].rc_finish, -ECONNABORTED);
    assert_int_equal(ra[2].rc_finish, -ETIMEDOUT);
}

static void test_callback_failure(void **state)
{
    (void)state;
    rank_arg ra[MAXW];
    gather_hub hub;
    setup(2, 2, ra, &hub);
    hub.fail_all = 1; /* a collective fails everywhere: no rank attempts the final round */
    run(2, ra, &hub);
    for (int r = 0; r < 2; r++) {
        expect(&ra[r], -EIO, "allgather callback failed");
        expect(&ra[r], -EIO, "exchanging configurations");
        assert_true(ra[r].gather_failed);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_agreement_shares_rank0_rendezvous),
        cmocka_unit_test(test_layout_disagreement_names_rank),
        cmocka_unit_test(test_topology_disagreement_names_rank),
        cmocka_unit_test(test_imm_base_disagreement),
        cmocka_unit_test(test_records_out_of_order),
        cmocka_unit_test(test_failed_rank_is_named),
        cmocka_unit_test(test_finish_reports_other_rank),
        cmocka_unit_test(test_callback_failure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
