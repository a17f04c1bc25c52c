#include "rl_weights.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/app_util.h"
#include "tendril/te.h"

#define RL_IMM 0x524c0001u      /* barrier immediate: one per trainer per update */
#define RL_DATA_IMM 0x524c0002u /* write_imms mode: one per shard of every write */

void rl_opts_default(rl_opts *o)
{
    *o = (rl_opts){.provider = "", .trainers = 4, .inference = 2, .params = 48,
                   .total_bytes = 128ull << 20, .chunk_max = 1ull << 20, .steps = 5,
                   .window = 16, .step_timeout_ms = 5000, .die_trainer = -1};
}

uint64_t rl_value(uint32_t p, uint32_t s, uint64_t w)
{
    return app_mix(app_mix(((uint64_t)p << 32) ^ s) + w);
}

/* ------------------------------------------------------------------ layout ---- */

int rl_layout_make(const rl_opts *o, rl_layout *l)
{
    memset(l, 0, sizeof *l);
    uint32_t P = o->params, M = o->inference;
    if (!P || !M || !o->trainers) return -EINVAL;
    l->params = P;
    l->inference = M;
    l->param_len = calloc(P, 8);
    l->param_off = calloc(P, 8);
    l->shard_start = calloc((size_t)P * (M + 1), 8);
    l->inf_off = calloc((size_t)M * P, 8);
    l->inf_len = calloc(M, 8);
    if (!l->param_len || !l->param_off || !l->shard_start || !l->inf_off || !l->inf_len) {
        rl_layout_free(l);
        return -ENOMEM;
    }
    /* Uneven sizes (like embeddings vs norms): weights 1..13, two big ones. */
    uint64_t wsum = 0;
    for (uint32_t p = 0; p < P; p++) wsum += p % 17 == 3 ? 40 : 1 + (p * 37u) % 13;
    for (uint32_t p = 0; p < P; p++) {
        uint64_t w = p % 17 == 3 ? 40 : 1 + (p * 37u) % 13;
        uint64_t len = o->total_bytes / wsum * w / 8 * 8 + 8 * (p % 3); /* odd tails */
        l->param_len[p] = len ? len : 8;
        l->param_off[p] = l->total;
        l->total += l->param_len[p];
        for (uint32_t m = 0; m <= M; m++)
            l->shard_start[(size_t)p * (M + 1) + m] = l->param_len[p] / 8 * m / M * 8;
    }
    for (uint32_t m = 0; m < M; m++)
        for (uint32_t p = 0; p < P; p++) {
            l->inf_off[(size_t)m * P + p] = l->inf_len[m];
            l->inf_len[m] += l->shard_start[(size_t)p * (M + 1) + m + 1] -
                             l->shard_start[(size_t)p * (M + 1) + m];
        }
    return 0;
}

void rl_layout_free(rl_layout *l)
{
    free(l->param_len);
    free(l->param_off);
    free(l->shard_start);
    free(l->inf_off);
    free(l->inf_len);
    memset(l, 0, sizeof *l);
}

/* ---------------------------------------------------------------- schedule ---- */

static int by_len_desc(const void *a, const void *b)
{
    const rl_task *x = a, *y = b;
    if (x->len != y->len) return x->len < y->len ? 1 : -1;
    if (x->param != y->param) return x->param < y->param ? -1 : 1;
    if (x->dst != y->dst) return x->dst < y->dst ? -1 : 1;
    return x->dst_off < y->dst_off ? -1 : x->dst_off > y->dst_off;
}

/* Replay order: by trainer; within a trainer, round-robin over receivers starting at a
 * trainer-specific one, so that at any moment the trainers hit different receivers. */
typedef struct keyed {
    uint64_t rank, idx;
    rl_task t;
} keyed;

static int by_replay(const void *a, const void *b)
{
    const keyed *x = a, *y = b;
    if (x->t.trainer != y->t.trainer) return x->t.trainer < y->t.trainer ? -1 : 1;
    if (x->rank != y->rank) return x->rank < y->rank ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int rl_schedule(const rl_layout *l, uint32_t trainers, uint64_t chunk_max, rl_task **tasks,
                size_t *n)
{
    uint32_t P = l->params, M = l->inference;
    if (!trainers || chunk_max < 8 || chunk_max % 8) return -EINVAL;
    size_t cap = 0;
    for (uint32_t p = 0; p < P; p++)
        for (uint32_t m = 0; m < M; m++) {
            uint64_t s = l->shard_start[(size_t)p * (M + 1) + m + 1] - l->shard_start[(size_t)p * (M + 1) + m];
            cap += s ? (s + chunk_max - 1) / chunk_max : 0;
        }
    rl_task *t = calloc(cap ? cap : 1, sizeof *t);
    uint64_t *load = calloc(trainers, 8);
    keyed *key = calloc(cap ? cap : 1, sizeof *key);
    uint32_t *per = calloc((size_t)trainers * M, 4);
    if (!t || !load || !key || !per) {
        free(t), free(load), free(key), free(per);
        return -ENOMEM;
    }
    size_t k = 0;
    for (uint32_t p = 0; p < P; p++)
        for (uint32_t m = 0; m < M; m++) {
            uint64_t a = l->shard_start[(size_t)p * (M + 1) + m], b = l->shard_start[(size_t)p * (M + 1) + m + 1];
            for (uint64_t o = a; o < b; o += chunk_max) {
                uint64_t len = b - o < chunk_max ? b - o : chunk_max;
                t[k++] = (rl_task){.param = p, .dst = m, .len = len,
                                   .src_off = l->param_off[p] + o,
                                   .dst_off = l->inf_off[(size_t)m * P + p] + (o - a)};
            }
        }
    /* Longest-processing-time first: each piece to the least loaded trainer. */
    qsort(t, k, sizeof *t, by_len_desc);
    for (size_t i = 0; i < k; i++) {
        uint32_t best = 0;
        for (uint32_t j = 1; j < trainers; j++)
            if (load[j] < load[best]) best = j;
        t[i].trainer = best;
        load[best] += t[i].len;
    }
    for (size_t i = 0; i < k; i++) {
        uint32_t *c = &per[(size_t)t[i].trainer * M + t[i].dst];
        key[i].t = t[i];
        key[i].idx = i;
        key[i].rank = (uint64_t)(*c)++ * M + (t[i].dst + M - t[i].trainer % M) % M;
    }
    qsort(key, k, sizeof *key, by_replay);
    for (size_t i = 0; i < k; i++) t[i] = key[i].t;
    free(load);
    free(key);
    free(per);
    *tasks = t;
    *n = k;
    return 0;
}

static int by_dst(const void *a, const void *b)
{
    const rl_task *x = a, *y = b;
    if (x->dst != y->dst) return x->dst < y->dst ? -1 : 1;
    return x->dst_off < y->dst_off ? -1 : x->dst_off > y->dst_off;
}

int rl_schedule_check(const rl_layout *l, uint32_t trainers, const rl_task *tasks, size_t n,
                      char *err, size_t cap)
{
    uint32_t P = l->params, M = l->inference;
    rl_task *t = malloc((n ? n : 1) * sizeof *t);
    if (!t) return -ENOMEM;
    memcpy(t, tasks, n * sizeof *t);
    int rc = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        const rl_task *x = &t[i];
        uint64_t a = l->shard_start[(size_t)x->param * (M + 1) + x->dst];
        uint64_t b = l->shard_start[(size_t)x->param * (M + 1) + x->dst + 1];
        uint64_t in_param = x->src_off - l->param_off[x->param];
        uint64_t want_dst = l->inf_off[(size_t)x->dst * P + x->param] + (in_param - a);
        if (x->trainer >= trainers || x->param >= P || x->dst >= M || !x->len ||
            x->src_off < l->param_off[x->param] || in_param < a || in_param + x->len > b ||
            x->dst_off != want_dst || x->dst_off + x->len > l->inf_len[x->dst]) {
            snprintf(err, cap, "task %zu (param %u -> inference %u) is out of place", i, x->param, x->dst);
            rc = -EINVAL;
        }
    }
    /* Exactly once: sorted by destination, the pieces tile every receiver buffer. */
    qsort(t, n, sizeof *t, by_dst);
    for (uint32_t m = 0, i = 0; m < M && !rc; m++) {
        uint64_t pos = 0;
        for (; i < n && t[i].dst == m; i++) {
            if (t[i].dst_off != pos) {
                snprintf(err, cap, "inference %u: %s at byte %" PRIu64, m,
                         t[i].dst_off < pos ? "bytes written twice" : "bytes never written", pos);
                rc = -EINVAL;
                break;
            }
            pos += t[i].len;
        }
        if (!rc && pos != l->inf_len[m]) {
            snprintf(err, cap, "inference %u: covered %" PRIu64 " of %" PRIu64 " bytes", m, pos,
                     l->inf_len[m]);
            rc = -EINVAL;
        }
    }
    free(t);
    return rc;
}

/* --------------------------------------------------------------- processes ---- */

static void fill_range(uint8_t *buf, const rl_layout *l, uint32_t p, uint64_t in_param,
                       uint64_t len, uint32_t step)
{
    for (uint64_t w = in_param / 8; w < (in_param + len) / 8; w++) {
        uint64_t v = rl_value(p, step, w);
        memcpy(buf + l->param_off[p] + w * 8, &v, 8);
    }
}

static int child_engine(const char *provider, te_engine **e)
{
    te_config cfg;
    app_config(&cfg, provider);
    return te_engine_create(&cfg, e);
}

/* Trainer: holds every parameter in full (as after full_tensor()). */
static int trainer_main(const rl_opts *o, const rl_layout *l, uint32_t me)
{
    te_engine *e = NULL;
    te_mr *mr = NULL;
    te_counter *done = NULL;
    uint8_t *buf = aligned_alloc(4096, (l->total + 4095) / 4096 * 4096);
    te_mr_desc *dsts = calloc(l->inference, sizeof *dsts);
    rl_task *plan = NULL;
    size_t n = 0, cap = 0;
    int r = buf && dsts ? child_engine(o->provider, &e) : -ENOMEM;
    /* GPU: the trainer's parameters (or the quantized staging buffer) are CUDA memory. */
    if (!r) r = te_mr_register(e, buf, l->total, TE_DEVICE_HOST, TE_MR_LOCAL, &mr);
    if (!r) r = te_counter_create(&done);
    if (r) {
        app_reply("error %s", te_last_error());
        te_engine_destroy(e);
        te_counter_destroy(done);
        free(buf);
        free(dsts);
        return 1;
    }
    app_reply("ready %u", te_group_nics(e, 0));
    char line[8192];
    uint64_t submitted = 0;
    while (app_read_line(line, sizeof line, -1) == 0) {
        unsigned a, b;
        uint64_t x, y, z;
        char hex[4096];
        if (sscanf(line, "dst %u %4095s", &a, hex) == 2 && a < l->inference) {
            if (te_mr_desc_parse(hex, &dsts[a])) app_reply("error bad descriptor");
        } else if (sscanf(line, "task %u %u %" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &x, &y, &z) == 5) {
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                plan = realloc(plan, cap * sizeof *plan);
            }
            plan[n++] = (rl_task){.trainer = me, .param = a, .dst = b, .src_off = x, .dst_off = y, .len = z};
        } else if (!strcmp(line, "plan_end")) {
            uint64_t bytes = 0;
            for (size_t i = 0; i < n; i++) bytes += plan[i].len;
            app_reply("planned %zu %" PRIu64, n, bytes);
        } else if (sscanf(line, "prep %u", &a) == 1) {
            /* "GPU prep" (full_tensor, quantization): produce this step's values. */
            uint64_t t0 = app_now_us();
            for (size_t i = 0; i < n; i++)
                fill_range(buf, l, plan[i].param, plan[i].src_off - l->param_off[plan[i].param],
                           plan[i].len, a);
            app_reply("prepped %" PRIu64, app_now_us() - t0);
        } else if (sscanf(line, "go %u", &a) == 1) {
            bool die = strstr(line, "die") != NULL;
            uint64_t t0 = app_now_us(), base = submitted, bytes = 0;
            int err = 0;
            for (size_t i = 0; i < n && !err; i++) {
                if (die && i == n / 2) _exit(3); /* simulated crash mid-update */
                /* bounded window: at most o->window writes in flight */
                if (submitted - base >= o->window &&
                    te_counter_wait(done, submitted - o->window + 1, o->step_timeout_ms))
                    err = -ETIMEDOUT;
                te_write_args w = {.src = mr, .src_offset = plan[i].src_off, .len = plan[i].len,
                                   .dst = &dsts[plan[i].dst], .dst_offset = plan[i].dst_off,
                                   .has_imm = o->write_imms, .imm = RL_DATA_IMM,
                                   .route = {TE_ROUTE_SHARDED, 0}};
                te_completion c = {.counter = done};
                if (!err) err = te_write(e, &w, &c);
                if (!err) submitted++, bytes += plan[i].len;
            }
            if (!err && te_counter_wait(done, submitted, o->step_timeout_ms)) err = -ETIMEDOUT;
            if (!err && te_counter_errors(done)) err = -EIO;
            /* Every write completed: tell every receiver with one immediate each. */
            if (!err) {
                te_completion c = {.counter = done};
                err = te_barrier(e, RL_IMM, dsts, l->inference, (te_route){TE_ROUTE_SHARDED, 0}, &c);
                if (!err) submitted++;
                if (!err && te_counter_wait(done, submitted, o->step_timeout_ms)) err = -ETIMEDOUT;
                if (!err && te_counter_errors(done)) err = -EIO;
            }
            if (err) app_reply("failed %u %s", a, te_strerror(err));
            else app_reply("done %u %" PRIu64 " %" PRIu64, a, app_now_us() - t0, bytes);
        } else if (!strcmp(line, "quit")) {
            break;
        }
    }
    te_engine_destroy(e);
    te_counter_destroy(done);
    free(buf);
    free(dsts);
    free(plan);
    return 0;
}

static uint64_t sum64(const uint8_t *p, uint64_t len, uint64_t h)
{
    for (uint64_t w = 0; w < len / 8; w++) {
        uint64_t v;
        memcpy(&v, p + 8 * w, 8);
        h = app_mix(h ^ v);
    }
    return h;
}

/* Inference: holds shard `me` of every parameter in one registered buffer. */
static int inference_main(const rl_opts *o, const rl_layout *l, uint32_t me)
{
    uint32_t P = l->params, M = l->inference;
    te_engine *e = NULL;
    te_mr *mr = NULL;
    te_imm_counter *ic = NULL;
    te_mr_desc d;
    uint64_t len = l->inf_len[me];
    /* GPU: the inference engine's weight tensors (CUDA memory, device = its ordinal). */
    uint8_t *buf = aligned_alloc(4096, (len + 4095) / 4096 * 4096 + 4096);
    uint8_t *want = malloc(o->chunk_max > 4096 ? o->chunk_max : 4096);
    int r = buf && want ? child_engine(o->provider, &e) : -ENOMEM;
    if (!r) memset(buf, 0, len);
    if (!r) r = te_mr_register(e, buf, len ? len : 8, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mr);
    if (!r) r = te_mr_desc_get(mr, &d);
    te_imm_counter *dc = NULL;
    if (!r) r = te_imm_counter_create(e, RL_IMM, &ic);
    if (!r) r = te_imm_counter_create(e, RL_DATA_IMM, &dc);
    char hex[TE_MR_DESC_TEXT_MAX];
    if (!r) r = te_mr_desc_format(&d, hex, sizeof hex);
    if (r) {
        app_reply("error %s", te_last_error());
        te_engine_destroy(e);
        free(buf);
        free(want);
        return 1;
    }
    app_reply("ready %s", hex);
    char line[256];
    unsigned s;
    while (app_read_line(line, sizeof line, -1) == 0) {
        uint64_t data_imms = 0;
        if (sscanf(line, "expect %u %" SCNu64, &s, &data_imms) >= 1) {
            /* No notification per write: one barrier immediate per trainer. In write_imms
             * mode the data immediates are counted first (placement proof on providers
             * whose local write completion does not imply placement, e.g. shm). */
            r = data_imms ? te_imm_counter_wait(dc, data_imms, o->step_timeout_ms) : 0;
            if (!r) r = te_imm_counter_wait(ic, o->trainers, o->step_timeout_ms);
            if (r) {
                app_reply("timeout %u %" PRIu64, s, te_imm_counter_value(ic));
                continue;
            }
            app_reply("arrived %u %" PRIu64, s, app_now_us());
            uint32_t bad = 0, first_bad = 0;
            for (uint32_t p = 0; p < P; p++) {
                uint64_t a = l->shard_start[(size_t)p * (M + 1) + me];
                uint64_t b = l->shard_start[(size_t)p * (M + 1) + me + 1];
                const uint8_t *got = buf + l->inf_off[(size_t)me * P + p];
                uint64_t hg = 0, hw = 0;
                for (uint64_t o2 = a; o2 < b; o2 += 4096) { /* checksum of what it must be */
                    uint64_t c = b - o2 < 4096 ? b - o2 : 4096;
                    for (uint64_t w = 0; w < c / 8; w++) {
                        uint64_t v = rl_value(p, s, (o2 - a + a) / 8 + w);
                        memcpy(want + 8 * w, &v, 8);
                    }
                    hw = sum64(want, c, hw);
                    hg = sum64(got + (o2 - a), c, hg);
                }
                if (hg != hw) {
                    if (!bad) first_bad = p;
                    bad++;
                }
            }
            if (bad) app_reply("bad %u %u %u", s, bad, first_bad);
            else app_reply("ok %u %u", s, P);
        } else if (!strcmp(line, "quit")) {
            break;
        }
    }
    te_engine_destroy(e);
    free(buf);
    free(want);
    return 0;
}

bool rl_is_child(int argc, char **argv) { return argc >= 2 && !strcmp(argv[1], "--rl-child"); }

static void opts_to_args(const rl_opts *o, char *out, size_t cap)
{
    snprintf(out, cap, "%s %u %u %u %" PRIu64 " %" PRIu64 " %u %d %d",
             o->provider && *o->provider ? o->provider : "-", o->trainers, o->inference, o->params,
             o->total_bytes, o->chunk_max, o->window, o->step_timeout_ms, o->write_imms ? 1 : 0);
}

int rl_child_main(int argc, char **argv)
{
    /* argv: --rl-child ROLE INDEX "OPTS" */
    if (argc < 5) return 2;
    rl_opts o;
    rl_opts_default(&o);
    char prov[64];
    int wi = 0;
    if (sscanf(argv[4], "%63s %u %u %u %" SCNu64 " %" SCNu64 " %u %d %d", prov, &o.trainers,
               &o.inference, &o.params, &o.total_bytes, &o.chunk_max, &o.window,
               &o.step_timeout_ms, &wi) != 9)
        return 2;
    o.write_imms = wi != 0;
    o.provider = strcmp(prov, "-") ? prov : "";
    rl_layout l;
    if (rl_layout_make(&o, &l)) return 2;
    uint32_t me = (uint32_t)atoi(argv[3]);
    int rc = !strcmp(argv[2], "trainer") ? trainer_main(&o, &l, me) : inference_main(&o, &l, me);
    rl_layout_free(&l);
    return rc;
}

/* --------------------------------------------------------------- controller ---- */

#define CTL_TMO 30000

static int spawn_child(app_proc *p, const char *role, uint32_t idx, const char *optstr)
{
    char ix[16];
    snprintf(ix, sizeof ix, "%u", idx);
    const char *args[] = {"--rl-child", role, ix, optstr, NULL};
    return app_spawn_self(p, args);
}

/* Starts a child and reads its "ready" line. A child that reports an error at startup
 * is started again (at most 3 times, each with a new pid): libfabric shm fails in
 * fi_enable with EBUSY when a crashed process with the same pid left its region behind. */
static int start_child(app_proc *p, const char *role, uint32_t idx, const char *optstr,
                       char *line, size_t cap)
{
    int r = 0;
    for (int attempt = 0; attempt < 3; attempt++) {
        r = spawn_child(p, role, idx, optstr);
        if (!r) r = app_recv(p, line, cap, CTL_TMO);
        if (!r && !strncmp(line, "ready", 5)) return 0;
        if (p->pid > 0) app_wait(p, 5000);
        if (r || strncmp(line, "error", 5)) break; /* only startup errors are retried */
        fprintf(stderr, "rl: %s %u failed to start (%s), starting it again\n", role, idx, line);
    }
    return r ? r : -EPROTO;
}

static int fail(rl_result *res, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(rl_result *res, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->error, sizeof res->error, fmt, ap);
    va_end(ap);
    res->status = status;
    return status;
}

int rl_run(const rl_opts *o, rl_result *res)
{
    memset(res, 0, sizeof *res);
    rl_opts eff = *o;
    const char *prov = o->provider && *o->provider ? o->provider : getenv("TENDRIL_PROVIDER");
    if (prov && !strcmp(prov, "shm")) eff.write_imms = true;
    o = &eff;
    uint32_t T = o->trainers, M = o->inference;
    rl_layout l;
    int r = rl_layout_make(o, &l);
    if (r) return fail(res, r, "bad layout options");
    app_proc *tr = calloc(T, sizeof *tr), *inf = calloc(M, sizeof *inf);
    te_mr_desc *descs = calloc(M, sizeof *descs);
    char **dhex = calloc(M, sizeof *dhex);
    rl_task *tasks = NULL;
    size_t n = 0;
    double sum_ms = 0;
    char optstr[256], line[8192];
    opts_to_args(o, optstr, sizeof optstr);
    for (uint32_t i = 0; i < M + T; i++) (i < M ? &inf[i] : &tr[i - M])->pid = -1;

    /* 1. processes come up and publish their metadata */
    for (uint32_t m = 0; m < M && !res->status; m++) {
        r = start_child(&inf[m], "inference", m, optstr, line, sizeof line);
        dhex[m] = calloc(1, TE_MR_DESC_TEXT_MAX);
        if (r || sscanf(line, "ready %1000s", dhex[m]) != 1 || te_mr_desc_parse(dhex[m], &descs[m]))
            fail(res, r ? r : -EPROTO, "inference %u did not start: %s", m, r ? te_strerror(r) : line);
    }
    uint32_t *nics = calloc(T, 4);
    uint64_t *data_imms = calloc(M, 8);
    for (uint32_t t = 0; t < T && !res->status; t++) {
        r = start_child(&tr[t], "trainer", t, optstr, line, sizeof line);
        if (r || sscanf(line, "ready %u", &nics[t]) != 1)
            fail(res, r ? r : -EPROTO, "trainer %u did not start: %s", t, r ? te_strerror(r) : line);
    }
    /* 2. static schedule, computed once */
    if (!res->status && (r = rl_schedule(&l, T, o->chunk_max, &tasks, &n)))
        fail(res, r, "schedule: %s", te_strerror(r));
    if (!res->status && (r = rl_schedule_check(&l, T, tasks, n, res->error, sizeof res->error)))
        res->status = r;
    if (!res->status) {
        res->tasks = n;
        res->write_imms = o->write_imms;
        /* write_imms: a sharded te_write carries one immediate per NIC of the sender. */
        for (size_t i = 0; i < n && o->write_imms; i++) data_imms[tasks[i].dst] += nics[tasks[i].trainer];
        res->bytes_per_step = l.total;
        uint64_t *tb = calloc(T, 8);
        for (size_t i = 0; i < n; i++) tb[tasks[i].trainer] += tasks[i].len;
        res->trainer_bytes_min = UINT64_MAX;
        res->recv_bytes_min = UINT64_MAX;
        for (uint32_t t = 0; t < T; t++) {
            if (tb[t] < res->trainer_bytes_min) res->trainer_bytes_min = tb[t];
            if (tb[t] > res->trainer_bytes_max) res->trainer_bytes_max = tb[t];
        }
        for (uint32_t m = 0; m < M; m++) {
            if (l.inf_len[m] < res->recv_bytes_min) res->recv_bytes_min = l.inf_len[m];
            if (l.inf_len[m] > res->recv_bytes_max) res->recv_bytes_max = l.inf_len[m];
        }
        free(tb);
    }
    /* 3. distribute the plans */
    for (uint32_t t = 0; t < T && !res->status; t++) {
        for (uint32_t m = 0; m < M; m++) app_send(&tr[t], "dst %u %s", m, dhex[m]);
        for (size_t i = 0; i < n; i++)
            if (tasks[i].trainer == t)
                app_send(&tr[t], "task %u %u %" PRIu64 " %" PRIu64 " %" PRIu64, tasks[i].param,
                         tasks[i].dst, tasks[i].src_off, tasks[i].dst_off, tasks[i].len);
        app_send(&tr[t], "plan_end");
        r = app_recv(&tr[t], line, sizeof line, CTL_TMO);
        if (r || strncmp(line, "planned", 7))
            fail(res, r ? r : -EPROTO, "trainer %u: plan not accepted: %s", t, r ? te_strerror(r) : line);
    }
    /* 4. training steps: prep, go, barrier, verify */
    for (uint32_t s = 1; s <= o->steps && !res->status; s++) {
        for (uint32_t t = 0; t < T; t++) app_send(&tr[t], "prep %u", s);
        for (uint32_t t = 0; t < T && !res->status; t++)
            if ((r = app_recv(&tr[t], line, sizeof line, CTL_TMO)) || strncmp(line, "prepped", 7))
                fail(res, r ? r : -EPROTO, "trainer %u: prep %u: %s", t, s, r ? te_strerror(r) : line);
        if (res->status) break;
        for (uint32_t m = 0; m < M; m++) app_send(&inf[m], "expect %u %" PRIu64, s, data_imms[m]);
        uint64_t t_go = app_now_us();
        bool die_now = o->die_trainer >= 0 && s == o->die_step;
        for (uint32_t t = 0; t < T; t++)
            app_send(&tr[t], "go %u%s", s, die_now && (int)t == o->die_trainer ? " die" : "");
        /* trainers report their local completion; a dead one closes its pipe */
        int tmo = o->step_timeout_ms + 5000;
        int died = -1, failed = -1, n_failed = 0;
        char why[200] = "";
        for (uint32_t t = 0; t < T; t++) {
            r = app_recv(&tr[t], line, sizeof line, tmo);
            if (!r && !strncmp(line, "done", 4)) continue;
            if (died < 0 && failed < 0) res->fail_detect_ms = (double)(app_now_us() - t_go) / 1e3;
            n_failed++;
            if (r == -EPIPE && died < 0) {
                died = (int)t;
            } else if (failed < 0) {
                failed = (int)t;
                snprintf(why, sizeof why, "%.150s", r ? te_strerror(r) : line);
            }
        }
        /* A dead trainer is the root cause; the others may fail because of it (their
         * receivers' endpoints saw a peer vanish mid-write). */
        if (died >= 0)
            fail(res, -ECONNRESET, "trainer %d died during update %u (%d trainer(s) failed)", died,
                 s, n_failed);
        else if (failed >= 0)
            fail(res, -EIO, "trainer %d: update %u: %s (%d trainer(s) failed)", failed, s, why,
                 n_failed);
        /* inference side: barrier arrival, then per-parameter checksums */
        uint64_t last = 0;
        for (uint32_t m = 0; m < M; m++) {
            unsigned ss;
            uint64_t at = 0;
            r = app_recv(&inf[m], line, sizeof line, tmo);
            if (!r && sscanf(line, "arrived %u %" SCNu64, &ss, &at) == 2) {
                if (at > last) last = at;
                r = app_recv(&inf[m], line, sizeof line, CTL_TMO);
                if (!r && !strncmp(line, "ok", 2)) continue;
            }
            if (!r && !strncmp(line, "timeout", 7)) res->inference_timeouts++;
            if (!res->status) {
                fail(res, r ? r : -EIO, "inference %u: update %u: %s", m, s, r ? te_strerror(r) : line);
                res->fail_detect_ms = (double)(app_now_us() - t_go) / 1e3;
            }
        }
        if (res->status) break;
        double ms = (double)(last - t_go) / 1e3;
        sum_ms += ms;
        if (!res->update_ms_best || ms < res->update_ms_best) res->update_ms_best = ms;
        res->steps_ok++;
        if (o->verbose)
            printf("update %u: %.3f ms, %.2f GB/s, %u parameters verified on %u receivers\n", s, ms,
                   (double)l.total / (ms * 1e6), l.params, M);
    }
    if (res->steps_ok) {
        res->update_ms_avg = sum_ms / res->steps_ok;
        res->gbps_best = (double)l.total / (res->update_ms_best * 1e6);
    }
    /* 5. shut down */
    /* One shared deadline: after a failure a child may hang in its provider's teardown
     * (seen with shm); it is killed then, so the whole run stays bounded. */
    for (uint32_t i = 0; i < M + T; i++) {
        app_proc *p = i < M ? &inf[i] : &tr[i - M];
        if (p->pid > 0) app_send(p, "quit");
    }
    uint64_t quit_deadline = app_now_us() + (res->status ? 3000000u : 10000000u);
    for (uint32_t i = 0; i < M + T; i++) {
        app_proc *p = i < M ? &inf[i] : &tr[i - M];
        if (p->pid <= 0) continue;
        uint64_t now = app_now_us();
        int left = now < quit_deadline ? (int)((quit_deadline - now) / 1000u) : 0;
        int st = app_wait(p, left > 100 ? left : 100);
        if (st == -ETIMEDOUT) res->children_killed++;
        bool expected_death = i >= M && (int)(i - M) == o->die_trainer && st == 3;
        if (st != 0 && st != -ETIMEDOUT && !expected_death) res->child_failures++;
    }
    for (uint32_t m = 0; m < M; m++) free(dhex[m]);
    free(dhex);
    free(descs);
    free(tasks);
    free(nics);
    free(data_imms);
    free(tr);
    free(inf);
    rl_layout_free(&l);
    return res->status;
}
