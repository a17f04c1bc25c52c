/* Unit test of the arrival hold of the libfabric backend (src/transport/fabric/
 * fabric_arrivals.c), the part that runs without a GPU: a poll's completions and failures
 * go out at once and in order, its successful arrivals follow in their own order, and
 * where no device copy can be marked (no CUDA here: TENDRIL_CUDA=0) nothing stays held.
 * The held path proper (an event still pending) needs a GPU: tests/gpu/test_a2a_rdma.py
 * *_gpu_buffers over shm. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "transport/fabric/fabric_internal.h"

static tp_event ev_of(int kind, int status, uintptr_t ctx, uint32_t imm)
{
    tp_event e = {.kind = kind, .status = status, .ctx = (void *)ctx, .imm = imm, .len = ctx};
    return e;
}

static void completions_first_then_arrivals_in_order(void **state)
{
    (void)state;
    held_arrivals *h = NULL;
    assert_int_equal(held_open("shm", "shm0", &h), 0);
    tp_event ev[8] = {
        ev_of(TP_EV_WRITE, 0, 1, 0),   ev_of(TP_EV_IMM, 0, 0, 7),  ev_of(TP_EV_SEND, 0, 2, 0),
        ev_of(TP_EV_RECV, 0, 3, 0),    ev_of(TP_EV_IMM, -EIO, 0, 9), ev_of(TP_EV_IMM, 0, 0, 8),
    };
    int n = held_take(h, ev, 6);
    assert_int_equal(n, 6);
    /* completions and the failed arrival, as read */
    assert_int_equal(ev[0].kind, TP_EV_WRITE);
    assert_ptr_equal(ev[0].ctx, (void *)1);
    assert_int_equal(ev[1].kind, TP_EV_SEND);
    assert_ptr_equal(ev[1].ctx, (void *)2);
    assert_int_equal(ev[2].kind, TP_EV_IMM);
    assert_int_equal(ev[2].status, -EIO);
    /* then the successful arrivals, in arrival order, with their data intact */
    assert_int_equal(ev[3].kind, TP_EV_IMM);
    assert_int_equal(ev[3].imm, 7);
    assert_int_equal(ev[3].status, 0);
    assert_int_equal(ev[4].kind, TP_EV_RECV);
    assert_ptr_equal(ev[4].ctx, (void *)3);
    assert_int_equal(ev[4].len, 3);
    assert_int_equal(ev[5].kind, TP_EV_IMM);
    assert_int_equal(ev[5].imm, 8);
    assert_int_equal(held_count(h), 0);
    assert_int_equal(held_release(h, ev, 8), 0);
    held_close(h);
}

static void room_bounds_a_poll(void **state)
{
    (void)state;
    held_arrivals *h = NULL;
    assert_int_equal(held_open("shm", "shm0", &h), 0);
    int room = held_room(h);
    assert_true(room >= 64); /* a poll batch fits an empty hold */
    /* many polls of arrivals: each is marked and (no CUDA) handed straight back; the
     * marks are recycled, so the room never shrinks */
    for (int k = 0; k < 1000; k++) {
        tp_event ev[2] = {ev_of(TP_EV_IMM, 0, 0, (uint32_t)k), ev_of(TP_EV_IMM, 0, 0, (uint32_t)k + 1)};
        assert_int_equal(held_take(h, ev, 2), 2);
        assert_int_equal(ev[0].imm, (uint32_t)k);
        assert_int_equal(ev[1].imm, (uint32_t)k + 1);
    }
    assert_int_equal(held_room(h), room);
    assert_int_equal(held_count(NULL), 0);
    held_close(h);
    held_close(NULL);
}

int main(void)
{
    setenv("TENDRIL_CUDA", "0", 1); /* the same result on a GPU machine as in CI */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(completions_first_then_arrivals_in_order),
        cmocka_unit_test(room_bounds_a_poll),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
