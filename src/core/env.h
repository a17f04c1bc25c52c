/* Readers of the TENDRIL_* environment variables. Every variable the library reads is
 * listed once, in env.c (te_env_vars(), docs/configuration.md); these readers check the
 * value against what the table accepts. A malformed value is never silently ignored:
 * the *_warn readers log a warning naming the variable and its accepted values and use
 * the default; the *_strict readers return -EINVAL with that message (te_last_error()),
 * for settings the caller of te_engine_create must see fail. */
#ifndef TENDRIL_CORE_ENV_H
#define TENDRIL_CORE_ENV_H

#include <stdbool.h>
#include <stdint.h>

/* The value of a listed variable, NULL when unset or empty. */
const char *tn_env_get(const char *name);

/* Index of the value in choices[0..n), or dflt (unset) / dflt with a warning (other). */
int tn_env_choice_warn(const char *name, const char *const *choices, int n, int dflt);
/* 0 or 1; dflt when unset; dflt with a warning for anything else. */
bool tn_env_flag_warn(const char *name, bool dflt);
/* Decimal (or 0x hex) integer in [lo, hi]; dflt when unset; dflt with a warning otherwise. */
uint64_t tn_env_u64_warn(const char *name, uint64_t lo, uint64_t hi, uint64_t dflt);

/* Same checks, as errors: 0 unset (*out untouched), 1 set and valid, -EINVAL otherwise. */
int tn_env_flag_strict(const char *name, bool *out);
int tn_env_u64_strict(const char *name, uint64_t lo, uint64_t hi, uint64_t *out);

#endif
