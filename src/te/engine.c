/* Engine lifecycle: configuration (with environment overrides), opening the NICs of
 * every group, starting the worker and callback threads, and an orderly stop in which
 * every pending operation completes with -ECANCELED. */
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "te/engine_internal.h"

#define DEFAULT_OP_TIMEOUT_MS 30000u
#define DEFAULT_MAX_MSG 65536u
#define DEFAULT_MAX_QUEUED_OPS 65536u

void te_config_init(te_config *cfg)
{
    if (!cfg) return;
    memset(cfg, 0, sizeof *cfg);
    cfg->struct_size = sizeof *cfg;
    cfg->provider = "auto";
    for (int g = 0; g < TE_MAX_GROUPS; g++) {
        cfg->groups[g].cuda_device = TE_DEVICE_HOST;
        cfg->groups[g].worker_cpu = -1;
    }
}

/* Engine-owned copies of the strings the config points at. */
typedef struct cfg_strings {
    char provider[64];
    char nics[TE_MAX_GROUPS][TE_MAX_NICS][64];
} cfg_strings;

/* Environment settings override the config (they are how a deployment changes an
 * application it cannot rebuild). Where the caller had set the field explicitly, a
 * warning names both; a malformed value fails engine creation, naming the variable and
 * what it accepts (core/env.c holds the list). */
static int apply_env(te_config *c, cfg_strings *st)
{
    const char *s = tn_env_get("TENDRIL_PROVIDER");
    if (s) {
        if (c->provider && *c->provider && strcmp(c->provider, "auto") && strcmp(c->provider, s))
            TN_LOGW("TENDRIL_PROVIDER=%s overrides the provider \"%s\" set by the caller "
                    "(te_config.provider, a tool's --provider)", s, c->provider);
        c->provider = s;
    }
    if ((s = tn_env_get("TENDRIL_NICS"))) {
        char given[TE_MAX_NICS * 65] = "";
        for (uint32_t k = 0; k < TE_MAX_NICS && c->groups[0].nics[k]; k++) {
            size_t l = strlen(given);
            snprintf(given + l, sizeof given - l, "%s%s", k ? "," : "", c->groups[0].nics[k]);
        }
        if (given[0] && strcmp(given, s))
            TN_LOGW("TENDRIL_NICS=%s overrides the NICs \"%s\" set by the caller "
                    "(te_config.groups[0].nics, a tool's --nic-names)", s, given);
        if (c->n_groups == 0) c->n_groups = 1;
        uint32_t n = 0;
        const char *p = s;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t len = comma ? (size_t)(comma - p) : strlen(p);
            if (n == TE_MAX_NICS || len == 0 || len >= 64)
                return tn_err(-EINVAL, "TENDRIL_NICS=%s is not valid (accepted: 1..%d "
                              "comma-separated NIC names)", s, TE_MAX_NICS);
            memcpy(st->nics[0][n], p, len);
            st->nics[0][n][len] = '\0';
            c->groups[0].nics[n] = st->nics[0][n];
            n++;
            p = comma ? comma + 1 : p + len;
        }
        for (uint32_t k = n; k < TE_MAX_NICS; k++) c->groups[0].nics[k] = NULL;
        c->groups[0].n_nics = n;
    }
    uint64_t v = 0;
    int r;
    if ((r = tn_env_u64_strict("TENDRIL_OP_TIMEOUT_MS", 0, UINT32_MAX, &v)) < 0) return r;
    if (r) {
        if (c->op_timeout_ms && c->op_timeout_ms != v)
            TN_LOGW("TENDRIL_OP_TIMEOUT_MS=%llu overrides op_timeout_ms %u set by the caller "
                    "(te_config.op_timeout_ms)", (unsigned long long)v, c->op_timeout_ms);
        c->op_timeout_ms = (uint32_t)v;
    }
    bool busy = false;
    if ((r = tn_env_flag_strict("TENDRIL_BUSY_POLL", &busy)) < 0) return r;
    if (r) {
        if (c->busy_poll && !busy)
            TN_LOGW("TENDRIL_BUSY_POLL=0 overrides busy_poll set by the caller "
                    "(te_config.busy_poll)");
        c->busy_poll = busy;
    }
    if ((r = tn_env_u64_strict("TENDRIL_MAX_QUEUED_OPS", 0, UINT32_MAX, &v)) < 0) return r;
    if (r) {
        if (c->max_queued_ops && c->max_queued_ops != v)
            TN_LOGW("TENDRIL_MAX_QUEUED_OPS=%llu overrides max_queued_ops %u set by the caller "
                    "(te_config.max_queued_ops)", (unsigned long long)v, c->max_queued_ops);
        c->max_queued_ops = (uint32_t)v;
    }
    return 0;
}

int engine_enter(te_engine *e)
{
    atomic_fetch_add_explicit(&e->submitters, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&e->state, memory_order_seq_cst) != ENGINE_RUNNING) {
        atomic_fetch_sub_explicit(&e->submitters, 1, memory_order_seq_cst);
        return tn_err(-ESHUTDOWN, "engine is stopped");
    }
    return 0;
}

bool engine_on_callback_thread(const te_engine *e)
{
    return e->cb_started && pthread_equal(pthread_self(), e->cb_thread);
}

void engine_leave(te_engine *e) { atomic_fetch_sub_explicit(&e->submitters, 1, memory_order_release); }

eng_group *engine_group_for_device(te_engine *e, int device, int *err)
{
    for (uint32_t g = 0; g < e->n_groups; g++)
        if (e->groups[g]->cuda_device == device) return e->groups[g];
    if (device == TE_DEVICE_HOST) return e->groups[0]; /* host memory: the main group */
    *err = tn_err(-ENODEV, "no group of this engine drives CUDA device %d", device);
    return NULL;
}

int engine_gpu_device(const te_engine *e)
{
    int n = tcu_device_count();
    if (n <= 0) return -1;
    for (uint32_t g = 0; g < e->n_groups; g++)
        if (e->groups[g]->cuda_device >= 0 && e->groups[g]->cuda_device < n)
            return e->groups[g]->cuda_device;
    return 0;
}

static int open_group(te_engine *e, uint32_t gi, const te_group_config *gc)
{
    eng_group *g = calloc(1, sizeof *g);
    if (!g) return tn_err(-ENOMEM, "out of memory");
    e->groups[gi] = g;
    g->e = e;
    g->idx = gi;
    g->cuda_device = gc->cuda_device;
    g->worker_cpu = gc->worker_cpu;
    g->event_fd = -1;
    uint32_t want = gc->n_nics ? gc->n_nics : 1;
    if (want > TE_MAX_NICS)
        return tn_err(-EINVAL, "group %u: %u NICs requested (1..%d)", gi, want, TE_MAX_NICS);
    g->n_nics = want;
    if (gc->cuda_device < TE_DEVICE_HOST)
        return tn_err(-EINVAL, "group %u: cuda_device %d is invalid", gi, gc->cuda_device);

    char listed[TE_MAX_NICS * 4][64];
    int n_listed = -1;
    const char *names[TE_MAX_NICS];
    for (uint32_t k = 0; k < g->n_nics; k++) {
        names[k] = gc->nics[k];
        if (!names[k]) {
            if (n_listed < 0) {
                n_listed = e->backend->list_nics(e->provider, listed, TE_MAX_NICS * 4);
                if (n_listed < 0) return n_listed;
            }
            if ((int)k >= n_listed)
                return tn_err(-ENODEV, "group %u: %u NICs requested but provider %s offers only %d",
                              gi, g->n_nics, e->provider, n_listed);
            names[k] = listed[k];
        }
        for (uint32_t j = 0; j < k; j++)
            if (!strcmp(names[j], names[k]))
                return tn_err(-EINVAL, "group %u: NIC '%s' listed twice", gi, names[k]);
    }
    for (uint32_t k = 0; k < g->n_nics; k++) {
        eng_nic *n = &g->nic[k];
        n->ops = e->backend->ops;
        tp_open_args a = {.provider = e->provider, .nic = names[k], .hmem = g->cuda_device >= 0};
        int r = n->ops->open(&a, &n->tp);
        if (r) return tn_err(r, "group %u NIC %u: %s", gi, k, te_last_error());
        n->ops->info(n->tp, &n->info);
        n->ops->address(n->tp, &n->addr);
        TN_LOGI("group %u NIC %u: %s on %s", gi, k, n->info.provider, n->info.name);
    }
    return 0;
}

static void close_nics(te_engine *e)
{
    recv_pool_close_mrs(e);
    mr_close_all(e);
    for (uint32_t gi = 0; gi < TE_MAX_GROUPS; gi++) {
        eng_group *g = e->groups[gi];
        if (!g) continue;
        for (uint32_t k = 0; k < g->n_nics; k++) {
            eng_nic *n = &g->nic[k];
            if (n->tp) n->ops->close(n->tp);
            n->tp = NULL;
            for (int b = 0; b < PEER_CACHE_BUCKETS; b++) {
                eng_peer_cache_entry *x = n->peers[b];
                while (x) {
                    eng_peer_cache_entry *nx = x->next;
                    free(x);
                    x = nx;
                }
                n->peers[b] = NULL;
            }
            n->last_peer = NULL;
        }
        worker_free_remaining(g);
    }
}

static void free_engine(te_engine *e)
{
    recv_pool_free_all(e);
    peer_group_free_all(e);
    mr_free_all(e);
    watchers_free(e);
    imm_table_destroy(&e->imm);
    peers_free(e);
    for (uint32_t gi = 0; gi < TE_MAX_GROUPS; gi++) free(e->groups[gi]);
    pthread_mutex_destroy(&e->lists_lock);
    free(e);
}

int te_engine_create(const te_config *user_cfg, te_engine **out)
{
    tn_err_clear();
    if (!out) return tn_err(-EINVAL, "te_engine_create: out is NULL");
    *out = NULL;
    /* Config structs are explicit (DESIGN.md §3): defaults come from te_config_init. */
    if (!user_cfg)
        return tn_err(-EINVAL, "te_engine_create: cfg is NULL (fill one with te_config_init for "
                               "the defaults)");
    te_config cfg;
    te_config_init(&cfg);
    {
        if (user_cfg->struct_size < offsetof(te_config, groups) || user_cfg->struct_size > sizeof cfg)
            return tn_err(-EINVAL, "te_engine_create: config struct_size %zu is not one this "
                                   "library knows (expected %zu; call te_config_init first)",
                          user_cfg->struct_size, sizeof cfg);
        memcpy(&cfg, user_cfg, user_cfg->struct_size);
    }
    cfg_strings *st = calloc(1, sizeof *st);
    if (!st) return tn_err(-ENOMEM, "out of memory");
    int r = apply_env(&cfg, st);
    if (r) {
        free(st);
        return r;
    }
    if (cfg.n_groups > TE_MAX_GROUPS) {
        free(st);
        return tn_err(-EINVAL, "te_engine_create: %u groups (at most %d)", cfg.n_groups, TE_MAX_GROUPS);
    }
    if (cfg.n_groups == 0) {
        cfg.n_groups = 1;
        cfg.groups[0].cuda_device = TE_DEVICE_HOST;
        cfg.groups[0].worker_cpu = -1;
    }
    for (uint32_t a = 0; a < cfg.n_groups; a++)
        for (uint32_t b = 0; b < a; b++)
            if (cfg.groups[a].cuda_device == cfg.groups[b].cuda_device) {
                free(st);
                return tn_err(-EINVAL, "te_engine_create: groups %u and %u both drive device %d", b, a,
                              cfg.groups[a].cuda_device);
            }

    te_engine *e = calloc(1, sizeof *e);
    if (!e) {
        free(st);
        return tn_err(-ENOMEM, "out of memory");
    }
    pthread_mutex_init(&e->lists_lock, NULL);
    if ((r = imm_table_init(&e->imm))) {
        pthread_mutex_destroy(&e->lists_lock);
        free(e);
        free(st);
        return tn_err(r, "cannot initialise the immediate table");
    }
    if ((r = peers_init(e))) {
        imm_table_destroy(&e->imm);
        pthread_mutex_destroy(&e->lists_lock);
        free(e);
        free(st);
        return r;
    }
    atomic_init(&e->state, ENGINE_RUNNING);
    atomic_init(&e->submitters, 0);
    e->op_timeout_ms = cfg.op_timeout_ms ? cfg.op_timeout_ms : DEFAULT_OP_TIMEOUT_MS;
    e->max_msg_size = cfg.max_msg_size ? cfg.max_msg_size : DEFAULT_MAX_MSG;
    e->busy_poll = cfg.busy_poll;
    e->max_queued_ops = cfg.max_queued_ops ? cfg.max_queued_ops : DEFAULT_MAX_QUEUED_OPS;
    e->wait_drive = tn_env_flag_warn("TENDRIL_WAIT_DRIVE", true);
    e->n_groups = cfg.n_groups;

    /* The backend table (src/transport/backends.c) resolves the provider name. */
    r = tp_backend_select(cfg.provider, &e->backend, e->provider, sizeof e->provider);
    for (uint32_t gi = 0; !r && gi < cfg.n_groups; gi++) r = open_group(e, gi, &cfg.groups[gi]);
    free(st);
    if (!r) r = callbacks_start(e);
    for (uint32_t gi = 0; !r && gi < cfg.n_groups; gi++) r = worker_start(e->groups[gi]);
    if (r) {
        char why[512];
        snprintf(why, sizeof why, "%s", te_last_error());
        atomic_store(&e->state, ENGINE_STOPPING);
        for (uint32_t gi = 0; gi < cfg.n_groups; gi++)
            if (e->groups[gi]) worker_join(e->groups[gi]);
        callbacks_stop(e);
        close_nics(e);
        free_engine(e);
        return tn_err(r, "te_engine_create: %s", why);
    }
    *out = e;
    return 0;
}

int te_engine_stop(te_engine *e)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_engine_stop: engine is NULL");
    if (engine_on_callback_thread(e))
        return tn_err(-EDEADLK, "te_engine_stop: called from an engine callback (it would wait "
                                "for itself); stop the engine from another thread");
    int running = ENGINE_RUNNING;
    if (!atomic_compare_exchange_strong(&e->state, &running, ENGINE_STOPPING)) {
        while (atomic_load(&e->state) != ENGINE_STOPPED) sched_yield(); /* a concurrent stop */
        return 0;
    }
    while (atomic_load(&e->submitters) > 0) sched_yield(); /* submissions are short */
    watchers_stop(e);
    imm_wake_all(&e->imm);
    for (uint32_t gi = 0; gi < e->n_groups; gi++) worker_join(e->groups[gi]);
    close_nics(e);
    callbacks_stop(e); /* runs every queued callback, the -ECANCELED ones included */
    atomic_store(&e->state, ENGINE_STOPPED);
    return 0;
}

void te_engine_destroy(te_engine *e)
{
    if (!e) return;
    if (te_engine_stop(e) == -EDEADLK) {
        TN_LOGE("te_engine_destroy called from an engine callback: ignored (the engine leaks)");
        return;
    }
    free_engine(e);
}

/* ---------------------------------------------------------------- accessors --- */

int te_nic_address(const te_engine *e, uint32_t group, uint32_t nic, te_addr *out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_nic_address: %s is NULL", e ? "out" : "engine");
    if (group >= e->n_groups) return tn_err(-EINVAL, "te_nic_address: no group %u", group);
    if (nic >= e->groups[group]->n_nics)
        return tn_err(-EINVAL, "te_nic_address: group %u has no NIC %u", group, nic);
    *out = e->groups[group]->nic[nic].addr;
    return 0;
}

int te_main_address(const te_engine *e, te_addr *out) { return te_nic_address(e, 0, 0, out); }

uint32_t te_num_groups(const te_engine *e) { return e ? e->n_groups : 0; }

uint32_t te_group_nics(const te_engine *e, uint32_t group)
{
    return e && group < e->n_groups ? e->groups[group]->n_nics : 0;
}

uint32_t te_num_nics(const te_engine *e)
{
    uint32_t n = 0;
    for (uint32_t g = 0; e && g < e->n_groups; g++) n += e->groups[g]->n_nics;
    return n;
}

const char *te_provider_name(const te_engine *e)
{
    return e && e->groups[0] ? e->groups[0]->nic[0].info.provider : "";
}

const char *te_nic_name(const te_engine *e, uint32_t group, uint32_t nic)
{
    if (!e || group >= e->n_groups || nic >= e->groups[group]->n_nics) return NULL;
    return e->groups[group]->nic[nic].info.name;
}

uint64_t te_link_speed(const te_engine *e)
{
    uint64_t s = 0;
    for (uint32_t g = 0; e && g < e->n_groups; g++)
        for (uint32_t k = 0; k < e->groups[g]->n_nics; k++) s += e->groups[g]->nic[k].info.link_speed;
    return s;
}

int te_nic_stats_get(const te_engine *e, uint32_t group, uint32_t nic, te_nic_stats *out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_nic_stats_get: %s is NULL", e ? "out" : "engine");
    if (group >= e->n_groups || nic >= e->groups[group]->n_nics)
        return tn_err(-EINVAL, "te_nic_stats_get: no NIC %u in group %u", nic, group);
    eng_nic *n = &((te_engine *)e)->groups[group]->nic[nic];
#define LD(f) atomic_load_explicit(&n->f, memory_order_relaxed)
    out->write_ops = LD(st_write_ops);
    out->write_bytes = LD(st_write_bytes);
    out->send_ops = LD(st_send_ops);
    out->send_bytes = LD(st_send_bytes);
    out->recv_ops = LD(st_recv_ops);
    out->recv_bytes = LD(st_recv_bytes);
    out->imms_received = atomic_load_explicit(&n->st_imms, memory_order_acquire);
    out->errors = LD(st_errors);
#undef LD
    return 0;
}
