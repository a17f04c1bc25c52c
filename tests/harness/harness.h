/* Test harness: provider selection and child processes for integration tests. */
#ifndef TENDRIL_TEST_HARNESS_H
#define TENDRIL_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tendril/te.h"

/* Provider under test: $TENDRIL_TEST_PROVIDER, default "tcp". */
const char *th_provider(void);
/* te_config for the provider under test (tcp runs on "lo"). */
void th_config(te_config *cfg);

#endif
