/* The harness's waits in cmocka form: fail the running test with the reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "harness.h"
#include "peer.h"

void th_assert_counter(te_counter *c, uint64_t target, int timeout_ms)
{
    int r = te_counter_wait(c, target, timeout_ms);
    if (r) fail_msg("completions: %s", te_last_error());
    assert_int_equal(te_counter_errors(c), 0);
}

void th_assert_peer_imms(th_proc *p, uint32_t imm, uint64_t n, int timeout_ms, int settle_ms)
{
    char why[512];
    if (th_peer_expect_imms(p, imm, n, timeout_ms, settle_ms, why, sizeof why)) fail_msg("%s", why);
}
