/* The shm target's only sign of incoming writes (target_activity, src/transport/fabric/
 * fabric.c): shm applies every incoming write in the target's poll, yet a write without
 * an immediate leaves no completion there and does not fire the CQ's wait object. The
 * backend reports the target's remote-write counter moving, so the worker keeps polling
 * while a peer streams into it. Checked here on the real shm provider, two NICs of this
 * process: the writes land, the target reports each of them once, and the sender (no
 * region open to remote writes) reports nothing of the kind. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/clock.h"
#include "transport/fabric/fabric.h"

#define LEN 4096
#define WRITES 8

typedef struct {
    tp_nic *a, *b; /* a writes into b */
    tp_mr amr, bmr;
    uint8_t *src, *dst;
    tp_peer peer;
} pair;

static int setup(void **state)
{
    pair *p = calloc(1, sizeof *p);
    tp_open_args args = {.provider = "shm"};
    if (tp_fabric_ops.open(&args, &p->a) || tp_fabric_ops.open(&args, &p->b)) {
        if (p->a) tp_fabric_ops.close(p->a);
        free(p);
        *state = NULL;
        return 0; /* no shm here: the tests skip */
    }
    p->src = aligned_alloc(4096, LEN);
    p->dst = aligned_alloc(4096, LEN * WRITES);
    memset(p->dst, 0, LEN * WRITES);
    assert_int_equal(tp_fabric_ops.mr_reg(p->a, p->src, LEN, TE_DEVICE_HOST, false, &p->amr), 0);
    assert_int_equal(tp_fabric_ops.mr_reg(p->b, p->dst, LEN * WRITES, TE_DEVICE_HOST, true, &p->bmr), 0);
    te_addr addr;
    assert_int_equal(tp_fabric_ops.address(p->b, &addr), 0);
    assert_int_equal(tp_fabric_ops.resolve(p->a, &addr, &p->peer), 0);
    *state = p;
    return 0;
}

static int teardown(void **state)
{
    pair *p = *state;
    if (!p) return 0;
    if (p->bmr.handle) tp_fabric_ops.mr_dereg(p->b, &p->bmr);
    tp_fabric_ops.mr_dereg(p->a, &p->amr);
    tp_fabric_ops.close(p->a);
    tp_fabric_ops.close(p->b);
    free(p->src);
    free(p->dst);
    free(p);
    return 0;
}

/* Polls a NIC once, as the worker does (poll, then its target activity); adds its
 * local write completions and the peers' writes it reports applied. */
static void poll_nic(tp_nic *n, int *writes, size_t *remote)
{
    tp_event ev[16];
    int got = tp_fabric_ops.poll(n, ev, 16);
    assert_true(got >= 0);
    for (int k = 0; k < got; k++) {
        if (ev[k].kind != TP_EV_WRITE) fail_msg("unexpected event kind %d", ev[k].kind);
        assert_int_equal(ev[k].status, 0);
        (*writes)++;
    }
    *remote += tp_fabric_ops.target_activity(n);
}

/* Posts `n` plain writes from a into b (slot k gets byte value tag + k) and polls both
 * NICs until every write completed locally, or 10 s pass. */
static void stream(pair *p, int n, uint8_t tag, size_t *a_remote, size_t *b_remote)
{
    int done = 0, posted = 0;
    uint64_t deadline = tn_now_ns() + 10000000000ull;
    while (done < n && tn_now_ns() < deadline) {
        if (posted < n && posted == done) { /* one in flight: the source buffer is reused */
            memset(p->src, tag + posted, LEN);
            tp_write w = {.local = p->src, .len = LEN, .local_desc = p->amr.desc, .peer = p->peer,
                          .remote_base = (uint64_t)(uintptr_t)p->dst, .remote_off = (uint64_t)posted * LEN,
                          .rkey = p->bmr.rkey, .ctx = (void *)(uintptr_t)(0x100 + posted)};
            int r = tp_fabric_ops.post_write(p->a, &w, false);
            if (r == 0) posted++;
            else assert_int_equal(r, -EAGAIN);
        }
        poll_nic(p->a, &done, a_remote);
        int none = 0;
        poll_nic(p->b, &none, b_remote);
        assert_int_equal(none, 0); /* the target completes nothing of a plain write */
    }
    assert_int_equal(done, n);
}

static void target_reports_incoming_writes(void **state)
{
    pair *p = *state;
    if (!p) skip();
    size_t a_remote = 0, b_remote = 0;
    stream(p, WRITES, 0x40, &a_remote, &b_remote);
    /* the bytes are there (applied by the target's polls) */
    for (int k = 0; k < WRITES; k++)
        for (int i = 0; i < LEN; i++)
            if (p->dst[(size_t)k * LEN + (size_t)i] != (uint8_t)(0x40 + k))
                fail_msg("slot %d byte %d: 0x%02x, wanted 0x%02x", k, i, p->dst[(size_t)k * LEN + (size_t)i],
                         0x40 + k);
    /* The target saw them as remote writes: every write, counted once, in the polls
     * that applied them (a last poll collects any count not read yet). */
    int none = 0;
    poll_nic(p->b, &none, &b_remote);
    assert_int_equal(b_remote, WRITES);
    /* the sender has no region open to remote writes: it reports nothing of the kind */
    assert_int_equal(a_remote, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(target_reports_incoming_writes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
