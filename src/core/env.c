/* The one list of TENDRIL_* environment variables the library reads, and their checked
 * readers (env.h). tendril-info prints this table with the effective values, and
 * docs/configuration.md documents the same names (a test compares the three: the code's
 * getenv calls, this table and the document). */
#include "core/env.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "tendril/te.h"

static const te_env_var vars[] = {
    {"TENDRIL_LOG", "error|warn|info|debug", "warn",
     "log level of the library's messages"},
    {"TENDRIL_LOG_FILE", "a file path", "(stderr)",
     "append log lines to this file instead of stderr"},
    {"TENDRIL_PROVIDER", "auto|efa|verbs|tcp|shm|<libfabric provider>", "auto",
     "transport; overrides te_config.provider"},
    {"TENDRIL_NICS", "1-4 comma-separated NIC names", "(provider's first)",
     "NICs of group 0; overrides te_config.groups[0].nics"},
    {"TENDRIL_OP_TIMEOUT_MS", "0..4294967295 (0: the default)", "30000",
     "per-operation deadline; overrides te_config.op_timeout_ms"},
    {"TENDRIL_BUSY_POLL", "0|1", "0",
     "workers never sleep; overrides te_config.busy_poll"},
    {"TENDRIL_MAX_QUEUED_OPS", "0..4294967295 (0: the default)", "65536",
     "per group: operations in flight before submission returns -EAGAIN; overrides "
     "te_config.max_queued_ops"},
    {"TENDRIL_WAIT_DRIVE", "0|1", "1",
     "0: te_counter_wait / te_imm_counter_wait only sleep (1: the waiting thread polls "
     "the NICs itself)"},
    {"TENDRIL_WAIT_SPIN_NS", "0..10000000000", "50000 with 4+ CPUs, else 0",
     "how long a waiting thread spins before it sleeps"},
    {"TENDRIL_NO_WAIT_FD", "0|1", "0",
     "1: poll completion queues without a wait fd (debugging providers)"},
    {"TENDRIL_FI_THREADING", "auto|safe|completion", "auto",
     "libfabric threading level asked of the provider (auto: FI_THREAD_COMPLETION on shm "
     "and sm2, FI_THREAD_SAFE elsewhere)"},
    {"TENDRIL_CUDA", "0|1", "1",
     "0: never load the CUDA driver (host memory only)"},
    {"TENDRIL_GDRCOPY", "0|1", "1",
     "0: never load GDRCopy (watchers poll GPU memory through the driver)"},
    {"TENDRIL_VERBS_PORT", "1..255", "1",
     "ibverbs port of every RDMA device"},
    {"TENDRIL_VERBS_GID_INDEX", "0..255", "(RoCE v2 IPv4 GID, else 0)",
     "ibverbs GID index"},
    {"TENDRIL_VERBS_CONNECT_TIMEOUT_MS", "10..3600000", "10000",
     "deadline of the verbs connection handshake"},
    {"TENDRIL_VERBS_COMPAT", "pplx|tendril", "tendril",
     "pplx: use pplx-garden's immediate layout on verbs"},
};

const te_env_var *te_env_vars(size_t *n)
{
    if (n) *n = sizeof vars / sizeof vars[0];
    return vars;
}

static const te_env_var *find(const char *name)
{
    for (size_t k = 0; k < sizeof vars / sizeof vars[0]; k++)
        if (!strcmp(vars[k].name, name)) return &vars[k];
    return NULL;
}

static const char *accepted(const char *name)
{
    const te_env_var *v = find(name);
    return v ? v->values : "?";
}

const char *tn_env_get(const char *name)
{
    const char *s = getenv(name);
    return s && *s ? s : NULL;
}

static void warn_bad(const char *name, const char *s, const char *using)
{
    TN_LOGW("%s=%s is not valid (accepted: %s); using %s", name, s, accepted(name), using);
}

int tn_env_choice_warn(const char *name, const char *const *choices, int n, int dflt)
{
    const char *s = tn_env_get(name);
    if (!s) return dflt;
    for (int k = 0; k < n; k++)
        if (!strcmp(s, choices[k])) return k;
    warn_bad(name, s, choices[dflt]);
    return dflt;
}

/* 1 and *out on a valid flag, 0 unset, -1 malformed. */
static int parse_flag(const char *s, bool *out)
{
    if (!s) return 0;
    if (!strcmp(s, "0") || !strcmp(s, "1")) {
        *out = s[0] == '1';
        return 1;
    }
    return -1;
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    if (!s) return 0;
    if (*s == '-' || *s == '+' || *s == ' ') return -1;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 1;
}

bool tn_env_flag_warn(const char *name, bool dflt)
{
    const char *s = tn_env_get(name);
    bool v = dflt;
    if (parse_flag(s, &v) < 0) warn_bad(name, s, dflt ? "1" : "0");
    return v;
}

uint64_t tn_env_u64_warn(const char *name, uint64_t lo, uint64_t hi, uint64_t dflt)
{
    const char *s = tn_env_get(name);
    uint64_t v = dflt;
    if (parse_u64(s, lo, hi, &v) < 0) {
        char d[32];
        snprintf(d, sizeof d, "%llu", (unsigned long long)dflt);
        warn_bad(name, s, d);
        return dflt;
    }
    return v;
}

int tn_env_flag_strict(const char *name, bool *out)
{
    const char *s = tn_env_get(name);
    int r = parse_flag(s, out);
    if (r < 0) return tn_err(-EINVAL, "%s=%s is not valid (accepted: %s)", name, s, accepted(name));
    return r;
}

int tn_env_u64_strict(const char *name, uint64_t lo, uint64_t hi, uint64_t *out)
{
    const char *s = tn_env_get(name);
    int r = parse_u64(s, lo, hi, out);
    if (r < 0) return tn_err(-EINVAL, "%s=%s is not valid (accepted: %s)", name, s, accepted(name));
    return r;
}
