/* The backend table (src/transport/backends.c) with the real libraries: which backend
 * serves a provider string, what "auto" picks on this machine, and that the table is
 * well formed (a name, ops where the library is built in, distinct auto ranks). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "transport/backend.h"
#include "transport/verbs/verbs.h"

static void test_table_well_formed(void **state)
{
    (void)state;
    int n = 0, fallbacks = 0;
    for (const tp_backend *const *b = tp_backends; *b; b++, n++) {
        assert_non_null((*b)->name);
        assert_non_null((*b)->claims);
        assert_non_null((*b)->resolve);
        if ((*b)->claims("no-such-provider-name")) fallbacks++;
        for (size_t k = 0; k < (*b)->n_auto_choices; k++) {
            const tp_auto_choice *c = &(*b)->auto_choices[k];
            assert_non_null(c->probe);
            assert_non_null((*b)->ops); /* a backend offered for auto can open NICs */
            assert_non_null((*b)->list_nics);
            for (const tp_backend *const *o = tp_backends; *o; o++)
                for (size_t j = 0; j < (*o)->n_auto_choices; j++)
                    if (&(*o)->auto_choices[j] != c) assert_int_not_equal((*o)->auto_choices[j].rank, c->rank);
        }
    }
    assert_true(n >= 2);
    assert_int_equal(fallbacks, 1); /* exactly one backend takes names nobody else claims */
}

static void test_select(void **state)
{
    (void)state;
    const tp_backend *b = NULL;
    char prov[64];
    assert_int_equal(tp_backend_select("tcp", &b, prov, sizeof prov), 0);
    assert_string_equal(b->name, "libfabric");
    /* libfabric 1.x offers RDM over tcp only layered on RxM; 2.x's tcp is RDM itself. */
    if (strcmp(prov, "tcp;ofi_rxm") && strcmp(prov, "tcp")) fail_msg("tcp resolved to '%s'", prov);
    assert_int_equal(tp_backend_select("shm", &b, prov, sizeof prov), 0);
    assert_string_equal(b->name, "libfabric");

    /* auto: the lowest-ranked choice whose probe succeeds on this machine (with no EFA
     * and no RDMA device, libfabric's tcp). */
    b = NULL;
    assert_int_equal(tp_backend_select("auto", &b, prov, sizeof prov), 0);
    int chosen_rank = -1;
    for (size_t k = 0; k < b->n_auto_choices; k++) {
        char out[64];
        if (b->auto_choices[k].probe(out, sizeof out) == 0 && !strcmp(out, prov))
            chosen_rank = b->auto_choices[k].rank;
    }
    assert_true(chosen_rank >= 0);
    for (const tp_backend *const *o = tp_backends; *o; o++)
        for (size_t k = 0; k < (*o)->n_auto_choices; k++)
            if ((*o)->auto_choices[k].rank < chosen_rank) {
                char out[64];
                assert_int_not_equal((*o)->auto_choices[k].probe(out, sizeof out), 0);
            }
    const tp_backend *b2 = NULL;
    char prov2[64];
    assert_int_equal(tp_backend_select(NULL, &b2, prov2, sizeof prov2), 0);
    assert_ptr_equal(b, b2);
    assert_string_equal(prov, prov2);

    b = NULL;
    assert_int_equal(tp_backend_select("no-such-provider", &b, prov, sizeof prov), -ENODEV);
    assert_null(b);

    /* "verbs" is the ibverbs backend's, never libfabric's verbs provider. */
    int r = tp_backend_select("verbs", &b, prov, sizeof prov);
#ifdef TENDRIL_HAVE_VERBS
    assert_int_equal(r, 0);
    assert_ptr_equal(b, &tp_verbs_backend);
    assert_string_equal(prov, "verbs");
#else
    assert_int_equal(r, -ENODEV);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_well_formed),
        cmocka_unit_test(test_select),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
