/* Engine configuration from the environment, as a deployment relies on it: a malformed
 * TENDRIL_* engine setting fails te_engine_create with a message naming the variable and
 * the accepted values (nothing is silently ignored), a variable that overrides a
 * value the caller set explicitly is reported in a warning naming both, and the backend's
 * TENDRIL_FI_THREADING never yields a crashing provider. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "tendril/te.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char warnings[8192];

static void collect(void *arg, int level, const char *msg)
{
    (void)arg;
    if (level != TE_LOG_WARN) return;
    pthread_mutex_lock(&lock);
    size_t l = strlen(warnings);
    snprintf(warnings + l, sizeof warnings - l, "%s\n", msg);
    pthread_mutex_unlock(&lock);
}

static int setup(void **state)
{
    (void)state;
    warnings[0] = '\0';
    return te_log_set_handler(collect, NULL);
}

static int teardown(void **state)
{
    (void)state;
    unsetenv("TENDRIL_PROVIDER");
    unsetenv("TENDRIL_NICS");
    unsetenv("TENDRIL_OP_TIMEOUT_MS");
    unsetenv("TENDRIL_BUSY_POLL");
    return te_log_set_handler(NULL, NULL);
}

static void assert_contains(const char *text, const char *needle)
{
    if (!strstr(text, needle)) fail_msg("\"%s\" does not mention \"%s\"", text, needle);
}

/* te_engine_create with the variable set to a bad value: -EINVAL naming both. */
static void expect_rejected(const char *var, const char *value, const char *accepted)
{
    setenv(var, value, 1);
    te_config cfg;
    th_config(&cfg);
    te_engine *e = NULL;
    assert_int_equal(te_engine_create(&cfg, &e), -EINVAL);
    assert_null(e);
    char want[128];
    snprintf(want, sizeof want, "%s=%s", var, value);
    assert_contains(te_last_error(), want);
    assert_contains(te_last_error(), accepted);
    unsetenv(var);
}

static void test_bad_values_are_errors(void **state)
{
    (void)state;
    expect_rejected("TENDRIL_BUSY_POLL", "yes", "0|1");
    expect_rejected("TENDRIL_BUSY_POLL", "2", "0|1");
    expect_rejected("TENDRIL_OP_TIMEOUT_MS", "10s", "0..4294967295");
    expect_rejected("TENDRIL_OP_TIMEOUT_MS", "-1", "0..4294967295");
    expect_rejected("TENDRIL_OP_TIMEOUT_MS", "4294967296", "0..4294967295");
    expect_rejected("TENDRIL_NICS", "a,b,c,d,e", "1..4 comma-separated NIC names");
    expect_rejected("TENDRIL_NICS", "lo,,lo", "1..4 comma-separated NIC names");
}

static void test_good_values_apply(void **state)
{
    (void)state;
    setenv("TENDRIL_BUSY_POLL", "1", 1);
    setenv("TENDRIL_OP_TIMEOUT_MS", "0x3e8", 1);
    te_config cfg;
    th_config(&cfg);
    te_engine *e = NULL;
    assert_int_equal(te_engine_create(&cfg, &e), 0);
    te_engine_destroy(e);
    assert_string_equal(warnings, ""); /* nothing the caller set was overridden */
}

static void test_override_of_explicit_setting_is_reported(void **state)
{
    (void)state;
    te_config cfg;
    th_config(&cfg);
    setenv("TENDRIL_PROVIDER", cfg.provider, 1);
    cfg.provider = "efa"; /* explicit, and overridden by the environment */
    cfg.op_timeout_ms = 5000;
    setenv("TENDRIL_OP_TIMEOUT_MS", "7000", 1);
    te_engine *e = NULL;
    assert_int_equal(te_engine_create(&cfg, &e), 0);
    assert_non_null(strstr(te_provider_name(e), th_provider())); /* "tcp;ofi_rxm" for tcp */
    te_engine_destroy(e);
    char want[128];
    snprintf(want, sizeof want, "TENDRIL_PROVIDER=%s overrides the provider \"efa\"", th_provider());
    assert_contains(warnings, want);
    assert_contains(warnings, "te_config.provider");
    assert_contains(warnings, "TENDRIL_OP_TIMEOUT_MS=7000 overrides op_timeout_ms 5000");
}

/* TENDRIL_FI_THREADING: every value gives a working engine on this provider. A value it
 * does not know is reported and the default used; `completion` on tcp, where libfabric
 * 2.1's provider crashes in fi_cq_open at that level, is refused with a warning. */
static void test_fi_threading(void **state)
{
    (void)state;
    const char *values[] = {"auto", "safe", "completion", "lockless"};
    for (size_t k = 0; k < sizeof values / sizeof *values; k++) {
        warnings[0] = '\0';
        setenv("TENDRIL_FI_THREADING", values[k], 1);
        te_config cfg;
        th_config(&cfg);
        te_engine *e = NULL;
        assert_int_equal(te_engine_create(&cfg, &e), 0);
        te_engine_destroy(e);
        if (!strcmp(values[k], "lockless")) {
            assert_contains(warnings, "TENDRIL_FI_THREADING=lockless");
        } else if (!strcmp(values[k], "completion") && strstr(th_provider(), "tcp")) {
            assert_contains(warnings, "TENDRIL_FI_THREADING=completion ignored for tcp");
        } else {
            assert_string_equal(warnings, "");
        }
    }
    unsetenv("TENDRIL_FI_THREADING");
}

int main(void)
{
    unsetenv("TENDRIL_PROVIDER");
    unsetenv("TENDRIL_NICS");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_bad_values_are_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_good_values_apply, setup, teardown),
        cmocka_unit_test_setup_teardown(test_override_of_explicit_setting_is_reported, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fi_threading, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
