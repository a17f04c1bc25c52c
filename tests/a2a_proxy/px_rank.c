/* See px_rank.h. */
#include "px_rank.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define N_REGIONS 5
static const char *const phase_name[A2A_PX_N] = {"DSP", "WGT", "CMB"};

uint64_t pr_mask(int r, int world, int per_node)
{
    uint64_t m = 0;
    for (int q = 0; q < world; q++)
        if (q / per_node != r / per_node) m |= 1ull << q;
    return m;
}

static uint64_t cap_of(int phase) { return phase == A2A_PX_WGT ? (uint64_t)PR_TMAX * PR_K : PR_TMAX; }

int32_t pr_len(uint64_t e, int phase, int src, int dst)
{
    uint64_t cap = cap_of(phase);
    switch ((e + (uint64_t)phase) % 6) {
    case 0: return 0;
    case 1: return (int32_t)cap;
    default: return (int32_t)(app_mix(e * 1000003u + (uint64_t)phase * 131 + (uint64_t)src * 67 + (uint64_t)dst) %
                              (cap + 1));
    }
}

static uint64_t slot_of(int region)
{
    switch (region) {
    case 0: return (PR_L + 1) * 4;
    case 1: return (uint64_t)PR_TMAX * (PR_K + 1) * 4;
    case 2: return (uint64_t)PR_TMAX * PR_ROW;
    case 3: return (uint64_t)PR_TMAX * PR_K * 4;
    default: return (uint64_t)PR_TMAX * PR_H * 4;
    }
}

static uint64_t off_of(const a2a_px_layout *l, int region)
{
    const uint64_t o[N_REGIONS] = {l->off_cnt, l->off_meta, l->off_rows, l->off_wgt, l->off_part};
    return o[region];
}

/* Regions a phase writes and the bytes of each for length value v (part_row: bytes per
 * CMB row, packed from the start of the slot). */
static int phase_regions(int phase, uint64_t v, uint32_t part_row, int reg[3], uint64_t len[3])
{
    switch (phase) {
    case A2A_PX_DSP:
        reg[0] = 0, len[0] = slot_of(0);
        reg[1] = 1, len[1] = v * (PR_K + 1) * 4;
        reg[2] = 2, len[2] = v * PR_ROW;
        return 3;
    case A2A_PX_WGT:
        reg[0] = 3, len[0] = v * 4;
        return 1;
    default:
        reg[0] = 4, len[0] = v * part_row;
        return 1;
    }
}

/* Content of (epoch, phase, src -> dst, region). */
static uint64_t seed_of(uint64_t e, int phase, int src, int dst, int region)
{
    return app_mix((((e * 4 + (uint64_t)phase) * 64 + (uint64_t)src) * 64 + (uint64_t)dst) * 8 +
                   (uint64_t)region);
}

static void on_error(void *arg, int err, const char *msg)
{
    px_rank *r = arg;
    pthread_mutex_lock(&r->lock);
    if (!r->n_err++) {
        r->first_code = err;
        snprintf(r->first_msg, sizeof r->first_msg, "%s", msg);
    }
    pthread_mutex_unlock(&r->lock);
}

int pr_open(px_rank *r, int rank, int world, uint64_t mask, uint32_t part_row_bytes, char *why,
            size_t cap)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->lock, NULL);
    r->rank = rank;
    r->world = world;
    r->mask = mask;
    /* flags first (never written by the proxy), then the regions, 256-aligned */
    uint64_t off = 256;
    uint64_t *offs[N_REGIONS] = {&r->lay.off_cnt, &r->lay.off_meta, &r->lay.off_rows, &r->lay.off_wgt,
                                 &r->lay.off_part};
    for (int k = 0; k < N_REGIONS; k++) {
        *offs[k] = off;
        off = (off + slot_of(k) * (uint64_t)world + 255) & ~255ull;
    }
    r->lay.L = PR_L, r->lay.K = PR_K, r->lay.H = PR_H, r->lay.Tmax = PR_TMAX, r->lay.row_bytes = PR_ROW;
    r->lay.part_row_bytes = part_row_bytes;
    r->part_row = part_row_bytes ? part_row_bytes : PR_H * 4;
    r->bytes = (off + 4095) & ~4095ull;
    te_config cfg;
    th_config(&cfg);
    int rc = te_engine_create(&cfg, &r->e);
    if (rc) {
        snprintf(why, cap, "te_engine_create: %s", te_last_error());
        return rc;
    }
    r->stage = aligned_alloc(4096, r->bytes);
    r->rblock = aligned_alloc(4096, r->bytes);
    r->mirror = malloc(r->bytes);
    if (!r->stage || !r->rblock || !r->mirror) {
        snprintf(why, cap, "out of memory");
        return -ENOMEM;
    }
    th_fill(r->stage, r->bytes, 0x5a00 + (uint64_t)rank, 0);
    th_fill(r->rblock, r->bytes, 0xb000 + (uint64_t)rank, 0);
    memcpy(r->mirror, r->rblock, r->bytes);
    if ((rc = te_mr_register(r->e, r->stage, r->bytes, TE_DEVICE_HOST, TE_MR_LOCAL, &r->ms)) ||
        (rc = te_mr_register(r->e, r->rblock, r->bytes, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &r->mr)) ||
        (rc = te_mr_desc_get(r->mr, &r->desc))) {
        snprintf(why, cap, "register: %s", te_last_error());
        return rc;
    }
    return 0;
}

int pr_connect(px_rank *r, const te_mr_desc *descs, bool app_forwards, char *why, size_t cap)
{
    a2a_px_config c = {.engine = r->e,
                       .rank = r->rank,
                       .world = r->world,
                       .rdma_mask = r->mask,
                       .stage = r->ms,
                       .peer_rblock = descs,
                       .layout = r->lay,
                       .imm_base = PR_IMM_BASE,
                       .timeout_ms = 20000,
                       .tx = &r->tx[0][0],
                       .on_error = on_error,
                       .err_arg = r,
                       .app_forwards_peer_events = app_forwards};
    int rc = a2a_px_create(&c, &r->px);
    if (rc) snprintf(why, cap, "a2a_px_create: %s", te_last_error());
    return rc;
}

void pr_ring(px_rank *r, int phase, uint64_t e)
{
    __atomic_store_n(a2a_px_doorbell_host_ptr(r->px, phase), e, __ATOMIC_RELEASE);
}

void pr_send_phase(px_rank *r, int phase, uint64_t e)
{
    for (int q = 0; q < r->world; q++) {
        if (!(r->mask >> q & 1)) continue;
        int reg[3];
        uint64_t len[3];
        int n = phase_regions(phase, 0, r->part_row, reg, len);
        /* the whole slot: bytes past the length must not travel */
        for (int k = 0; k < n; k++)
            th_fill(r->stage + off_of(&r->lay, reg[k]) + (uint64_t)q * slot_of(reg[k]), slot_of(reg[k]),
                    seed_of(e, phase, r->rank, q, reg[k]), 0);
        __atomic_store_n(&r->tx[phase][q], pr_len(e, phase, r->rank, q), __ATOMIC_RELAXED);
    }
    pr_ring(r, phase, e);
}

void pr_send(px_rank *r, uint64_t e)
{
    for (int p = 0; p < A2A_PX_N; p++) pr_send_phase(r, p, e);
}

int pr_check(px_rank *r, char *why, size_t cap)
{
    if (!memcmp(r->rblock, r->mirror, r->bytes)) return 0;
    size_t k = 0;
    while (r->rblock[k] == r->mirror[k]) k++;
    const char *where = "flags";
    for (int g = 0; g < N_REGIONS; g++)
        if (k >= off_of(&r->lay, g)) where = (const char *[]){"cnt", "meta", "rows", "wgt", "part"}[g];
    snprintf(why, cap, "err rank %d: rblock byte %zu (%s) is %u, expected %u", r->rank, k, where,
             r->rblock[k], r->mirror[k]);
    return -EIO;
}

int pr_recv(px_rank *r, uint64_t e, int timeout_ms, char *why, size_t cap)
{
    for (int p = 0; p < A2A_PX_N; p++)
        for (int s = 0; s < r->world; s++) {
            if (!(r->mask >> s & 1)) continue;
            uint64_t t0 = tn_now_ns();
            int rc = a2a_px_flag_wait(r->px, p, s, e, timeout_ms);
            if (rc) {
                snprintf(why, cap, "fail %s %d %d %llu %s", phase_name[p], s, rc,
                         (unsigned long long)((tn_now_ns() - t0) / 1000000), te_last_error());
                return rc;
            }
        }
    for (int p = 0; p < A2A_PX_N; p++)
        for (int s = 0; s < r->world; s++) {
            if (!(r->mask >> s & 1)) continue;
            int reg[3];
            uint64_t len[3];
            int n = phase_regions(p, (uint64_t)pr_len(e, p, s, r->rank), r->part_row, reg, len);
            for (int k = 0; k < n; k++)
                th_fill(r->mirror + off_of(&r->lay, reg[k]) + (uint64_t)s * slot_of(reg[k]), len[k],
                        seed_of(e, p, s, r->rank, reg[k]), 0);
        }
    return pr_check(r, why, cap);
}

uint64_t pr_sent_bytes(int rank, int world, uint64_t mask, uint32_t part_row, uint64_t from, uint64_t to)
{
    uint64_t sum = 0;
    for (uint64_t e = from; e <= to; e++)
        for (int p = 0; p < A2A_PX_N; p++)
            for (int q = 0; q < world; q++) {
                if (!(mask >> q & 1)) continue;
                int reg[3];
                uint64_t len[3];
                int n = phase_regions(p, (uint64_t)pr_len(e, p, rank, q), part_row, reg, len);
                for (int k = 0; k < n; k++) sum += len[k];
            }
    return sum;
}

int pr_errors(px_rank *r, int timeout_ms, int *code, char *msg, size_t cap)
{
    uint64_t deadline = tn_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        pthread_mutex_lock(&r->lock);
        int n = r->n_err;
        if (n) {
            *code = r->first_code;
            snprintf(msg, cap, "%s", r->first_msg);
        }
        pthread_mutex_unlock(&r->lock);
        if (n || tn_now_ns() >= deadline) return n;
        app_sleep_us(2000);
    }
}

void pr_close(px_rank *r)
{
    a2a_px_destroy(r->px);
    r->px = NULL;
}

void pr_free(px_rank *r)
{
    pr_close(r);
    te_engine_destroy(r->e);
    free(r->stage);
    free(r->rblock);
    free(r->mirror);
    pthread_mutex_destroy(&r->lock);
}

/* ------------------------------------------------------------------ child ---- */

/* Commands, one reply line each:
 *   peers D0 .. D(W-1) [fwd]  -> ok | err ...     (proxy; fwd: app forwards peer events)
 *   send E                    -> ok               (all phases of epoch E)
 *   recv E MS                 -> ok | fail ... | err ...
 *   ring PHASE E              -> ok               (doorbell only)
 *   badtx PHASE Q V E         -> ok               (stage and tx of PHASE, tx[Q] = V, ring)
 *   wait PHASE SRC E MS       -> wait RC MS
 *   errors MS                 -> errors N CODE MSG (waits up to MS for the first)
 *   check                     -> ok | err ...
 *   stats                     -> stats WRITES BYTES DOORBELLS IGNORED WRITE_ERRORS
 *   timing PHASE N MS         -> timing COUNT DROPPED then p50 p99 max (ns) of seen_first,
 *                                first_last, last_done, seen_done (waits up to MS for
 *                                COUNT >= N: a doorbell is timed once its writes completed)
 *   timing-reset              -> ok               (a2a_px_timing_reset)
 *   trace PHASE EPOCH         -> trace SEEN FIRST LAST DONE (ns, a2a_px_trace_get), or
 *                                "none" for -ENOENT
 *   close                     -> ok               (proxy destroyed)
 *   quit                      -> (exits 0) */
static int child_loop(px_rank *r)
{
    static char line[65536];
    char why[1024];
    for (;;) {
        if (th_child_read(line, sizeof line, 600000)) return 1;
        unsigned long long e = 0, ms = 0;
        int p = 0, q = 0, v = 0;
        if (!strncmp(line, "peers ", 6)) {
            te_mr_desc d[A2A_PX_MAX_RANKS];
            char *save = NULL, *tok = strtok_r(line + 6, " ", &save);
            int n = 0;
            bool fwd = false;
            for (; tok; tok = strtok_r(NULL, " ", &save)) {
                if (!strcmp(tok, "fwd")) fwd = true;
                else if (n < A2A_PX_MAX_RANKS && te_mr_desc_parse(tok, &d[n]) == 0) n++;
            }
            if (n != r->world) th_child_reply("err %d descriptors for world %d", n, r->world);
            else if (pr_connect(r, d, fwd, why, sizeof why)) th_child_reply("err %s", why);
            else th_child_reply("ok");
        } else if (sscanf(line, "send %llu", &e) == 1) {
            pr_send(r, e);
            th_child_reply("ok");
        } else if (sscanf(line, "recv %llu %llu", &e, &ms) == 2) {
            if (pr_recv(r, e, (int)ms, why, sizeof why)) th_child_reply("%s", why);
            else th_child_reply("ok");
        } else if (sscanf(line, "ring %d %llu", &p, &e) == 2) {
            pr_ring(r, p, e);
            th_child_reply("ok");
        } else if (sscanf(line, "badtx %d %d %d %llu", &p, &q, &v, &e) == 4) {
            for (int k = 0; k < r->world; k++)
                if (r->mask >> k & 1) __atomic_store_n(&r->tx[p][k], pr_len(e, p, r->rank, k), __ATOMIC_RELAXED);
            __atomic_store_n(&r->tx[p][q], v, __ATOMIC_RELAXED);
            pr_ring(r, p, e);
            th_child_reply("ok");
        } else if (sscanf(line, "wait %d %d %llu %llu", &p, &q, &e, &ms) == 4) {
            uint64_t t0 = tn_now_ns();
            int rc = a2a_px_flag_wait(r->px, p, q, e, (int)ms);
            th_child_reply("wait %d %llu", rc, (unsigned long long)((tn_now_ns() - t0) / 1000000));
        } else if (sscanf(line, "errors %llu", &ms) == 1) {
            int code = 0;
            char msg[512] = "";
            int n = pr_errors(r, (int)ms, &code, msg, sizeof msg);
            th_child_reply("errors %d %d %s", n, code, msg);
        } else if (!strcmp(line, "check")) {
            if (pr_check(r, why, sizeof why)) th_child_reply("%s", why);
            else th_child_reply("ok");
        } else if (!strcmp(line, "stats")) {
            a2a_px_stats st;
            a2a_px_stats_get(r->px, &st);
            th_child_reply("stats %llu %llu %llu %llu %llu",
                           (unsigned long long)(st.writes[0] + st.writes[1] + st.writes[2]),
                           (unsigned long long)(st.bytes[0] + st.bytes[1] + st.bytes[2]),
                           (unsigned long long)(st.doorbells[0] + st.doorbells[1] + st.doorbells[2]),
                           (unsigned long long)st.ignored_doorbells, (unsigned long long)st.write_errors);
        } else if (sscanf(line, "timing %d %llu %llu", &p, &e, &ms) == 3) {
            a2a_px_timing t;
            uint64_t deadline = tn_now_ns() + ms * 1000000ull;
            int rc;
            while ((rc = a2a_px_timing_get(r->px, p, &t)) == 0 && t.count < e && tn_now_ns() < deadline) {
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
            if (rc) {
                th_child_reply("err %s", te_last_error());
                continue;
            }
            const a2a_px_span *sp[4] = {&t.seen_first, &t.first_last, &t.last_done, &t.seen_done};
            char text[512];
            int off = snprintf(text, sizeof text, "timing %llu %llu", (unsigned long long)t.count,
                               (unsigned long long)t.dropped);
            for (int k = 0; k < 4; k++)
                off += snprintf(text + off, sizeof text - (size_t)off, " %llu %llu %llu",
                                (unsigned long long)sp[k]->p50, (unsigned long long)sp[k]->p99,
                                (unsigned long long)sp[k]->max);
            th_child_reply("%s", text);
        } else if (sscanf(line, "trace %d %llu", &p, &e) == 2) {
            uint64_t t[4];
            int rc = a2a_px_trace_get(r->px, p, e, t);
            if (rc == -ENOENT) th_child_reply("none");
            else if (rc) th_child_reply("err %s", te_last_error());
            else
                th_child_reply("trace %llu %llu %llu %llu", (unsigned long long)t[0], (unsigned long long)t[1],
                               (unsigned long long)t[2], (unsigned long long)t[3]);
        } else if (!strcmp(line, "timing-reset")) {
            if (a2a_px_timing_reset(r->px)) th_child_reply("err %s", te_last_error());
            else th_child_reply("ok");
        } else if (!strcmp(line, "close")) {
            pr_close(r);
            th_child_reply("ok");
        } else if (!strcmp(line, "quit")) {
            return 0;
        } else {
            th_child_reply("err unknown command: %.64s", line);
        }
    }
}

int pr_child_main(const char *arg)
{
    int rank, world, per_node;
    unsigned part_row = 0;
    if (!arg || sscanf(arg, "%d %d %d %u", &rank, &world, &per_node, &part_row) < 3) {
        th_child_reply("err bad child argument");
        return 2;
    }
    px_rank *r = malloc(sizeof *r);
    char why[1024];
    if (!r || pr_open(r, rank, world, pr_mask(rank, world, per_node), part_row, why, sizeof why)) {
        th_child_reply("err %s", r ? why : "out of memory");
        return 1;
    }
    char text[TE_MR_DESC_TEXT_MAX];
    te_mr_desc_format(&r->desc, text, sizeof text);
    th_child_reply("ready %s", text);
    int rc = child_loop(r);
    pr_free(r);
    free(r);
    return rc;
}
