/* Unit test of the libfabric completion classification (tp_fabric_classify in
 * src/transport/fabric/fabric.c) on the flag sets the providers were measured to produce:
 * a remote write's CQ-data entry must count as an immediate whatever else the provider
 * sets, and the engine's own completions must keep their kinds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <rdma/fabric.h>

#include "transport/fabric/fabric.h"

static void remote_write_with_data_is_imm(void **state)
{
    (void)state;
    /* shm 1.17 */
    assert_int_equal(tp_fabric_classify(FI_RMA | FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA), TP_EV_IMM);
    /* tcp;ofi_rxm 1.17, tcp 2.1 */
    assert_int_equal(tp_fabric_classify(FI_REMOTE_WRITE | FI_REMOTE_CQ_DATA), TP_EV_IMM);
    /* shm 2.1: the CQ data flag alone */
    assert_int_equal(tp_fabric_classify(FI_REMOTE_CQ_DATA), TP_EV_IMM);
    /* a provider that reports the remote write without the data flag */
    assert_int_equal(tp_fabric_classify(FI_RMA | FI_REMOTE_WRITE), TP_EV_IMM);
}

static void local_completions_keep_their_kind(void **state)
{
    (void)state;
    /* fi_writemsg completion: FI_RMA | FI_WRITE on every provider measured */
    assert_int_equal(tp_fabric_classify(FI_RMA | FI_WRITE), TP_EV_WRITE);
    assert_int_equal(tp_fabric_classify(FI_MSG | FI_SEND), TP_EV_SEND);
    assert_int_equal(tp_fabric_classify(FI_MSG | FI_RECV), TP_EV_RECV);
    /* a receive that carries CQ data (a peer's fi_senddata) is still a receive: its
     * buffer belongs to the receive pool and must go back there */
    assert_int_equal(tp_fabric_classify(FI_MSG | FI_RECV | FI_REMOTE_CQ_DATA), TP_EV_RECV);
    /* error entries may carry no flags at all: a local write is the only kind that
     * then still has a context to complete */
    assert_int_equal(tp_fabric_classify(0), TP_EV_WRITE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(remote_write_with_data_is_imm),
        cmocka_unit_test(local_completions_keep_their_kind),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
