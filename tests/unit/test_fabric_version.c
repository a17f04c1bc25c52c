/* Which libfabric this build really runs: prints the runtime fi_version() next to the
 * headers it was compiled against, and fails when their major.minor differ. `make test`
 * runs the suites against Debian's 1.17 and a 2.x build (scripts/libfabric2.sh); a 2.x
 * run that silently loaded the system's 1.17 (a missing RUNPATH or LD_LIBRARY_PATH)
 * would otherwise pass while testing the wrong library. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <rdma/fabric.h>

static void runtime_matches_headers(void **state)
{
    (void)state;
    uint32_t v = fi_version();
    printf("libfabric: runtime %u.%u, headers %d.%d\n", FI_MAJOR(v), FI_MINOR(v),
           FI_MAJOR_VERSION, FI_MINOR_VERSION);
    assert_int_equal(FI_MAJOR(v), FI_MAJOR_VERSION);
    assert_int_equal(FI_MINOR(v), FI_MINOR_VERSION);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(runtime_matches_headers)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
