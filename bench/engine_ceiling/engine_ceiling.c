/* The engine's own ceiling: how many single writes per second one submitting thread gets
 * through the engine when the NIC costs nothing. The backend below completes every
 * posted work request at the next poll, so what is measured is the engine alone:
 * validation, queueing, the progress step (planning, posting, completion), counting and
 * waiting. It lives in this benchmark only; the library has no such backend.
 *
 *   engine_ceiling [--ops N] [--window W] [--reps R]
 *
 * Prints the median of R runs in Mops/s and ns per operation, after a calibration line
 * (cost of an atomic add and of a multiply-add step on this machine). Under callgrind it gives
 * the instructions per operation:
 *   valgrind --tool=callgrind engine_ceiling --ops 200000 --reps 1 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "te/engine_internal.h"

/* ------------------------------------------------------ the null backend ---- */

#define RING 4096

struct tp_nic {
    void *done[RING]; /* contexts posted, completed at the next poll */
    unsigned head, tail;
};

static int null_open(const tp_open_args *a, tp_nic **out)
{
    (void)a;
    *out = calloc(1, sizeof **out);
    return *out ? 0 : -ENOMEM;
}
static void null_close(tp_nic *n) { free(n); }
static void null_info(const tp_nic *n, tp_nic_info *out)
{
    (void)n;
    memset(out, 0, sizeof *out);
    snprintf(out->provider, sizeof out->provider, "null");
    snprintf(out->name, sizeof out->name, "null0");
    out->max_msg = (size_t)1 << 30;
    out->cq_data_size = 4;
}
static int null_address(const tp_nic *n, te_addr *out)
{
    (void)n;
    memset(out, 0, sizeof *out);
    out->transport = TE_TRANSPORT_FABRIC;
    out->len = 1;
    return 0;
}
static int null_mr_reg(tp_nic *n, void *ptr, size_t len, int device, bool remote, tp_mr *out)
{
    (void)n, (void)ptr, (void)len, (void)device, (void)remote;
    *out = (tp_mr){.handle = out, .rkey = 1};
    return 0;
}
static void null_mr_dereg(tp_nic *n, tp_mr *mr) { (void)n, mr->handle = NULL; }
static int null_resolve(tp_nic *n, const te_addr *addr, tp_peer *out)
{
    (void)n, (void)addr;
    *out = 0;
    return 0;
}
static int null_post_write(tp_nic *n, const tp_write *w, bool more)
{
    (void)more;
    if (n->head - n->tail == RING) return -EAGAIN;
    n->done[n->head++ % RING] = w->ctx;
    return 0;
}
static int null_post_send(tp_nic *n, tp_peer p, const void *b, size_t l, void *d, void *ctx)
{
    (void)p, (void)b, (void)l, (void)d;
    if (n->head - n->tail == RING) return -EAGAIN;
    n->done[n->head++ % RING] = ctx;
    return 0;
}
static int null_post_recv(tp_nic *n, void *b, size_t l, void *d, void *ctx)
{
    (void)n, (void)b, (void)l, (void)d, (void)ctx;
    return 0; /* never filled */
}
static int null_cancel_recv(tp_nic *n, void *ctx) { (void)n, (void)ctx; return 0; }
static int null_wait_fd(tp_nic *n) { (void)n; return -1; }
static bool null_can_block(tp_nic *n) { (void)n; return true; }
static int null_poll(tp_nic *n, tp_event *ev, int max)
{
    int got = 0;
    for (; got < max && n->tail != n->head; got++)
        ev[got] = (tp_event){.kind = TP_EV_WRITE, .ctx = n->done[n->tail++ % RING]};
    return got;
}

static const tp_ops null_ops = {
    .backend = "null", .open = null_open, .close = null_close, .info = null_info,
    .address = null_address, .mr_reg = null_mr_reg, .mr_dereg = null_mr_dereg,
    .resolve = null_resolve, .post_write = null_post_write, .post_send = null_post_send,
    .post_recv = null_post_recv, .cancel_recv = null_cancel_recv, .wait_fd = null_wait_fd,
    .can_block = null_can_block, .poll = null_poll,
};

/* An engine of one group with one null NIC, assembled as te_engine_create would. */
static te_engine *null_engine(void)
{
    te_engine *e = calloc(1, sizeof *e);
    eng_group *g = calloc(1, sizeof *g);
    if (!e || !g || imm_table_init(&e->imm) || peers_init(e)) return NULL;
    pthread_mutex_init(&e->lists_lock, NULL);
    atomic_init(&e->state, ENGINE_RUNNING);
    snprintf(e->provider, sizeof e->provider, "null");
    e->op_timeout_ms = 30000;
    e->max_msg_size = 65536;
    e->max_queued_ops = 65536;
    e->wait_drive = !(getenv("TENDRIL_WAIT_DRIVE") && !strcmp(getenv("TENDRIL_WAIT_DRIVE"), "0"));
    e->busy_poll = getenv("TENDRIL_BUSY_POLL") && !strcmp(getenv("TENDRIL_BUSY_POLL"), "1");
    e->n_groups = 1;
    e->groups[0] = g;
    g->e = e;
    g->cuda_device = TE_DEVICE_HOST;
    g->worker_cpu = -1;
    g->event_fd = -1;
    g->n_nics = 1;
    eng_nic *n = &g->nic[0];
    n->ops = &null_ops;
    tp_open_args a = {.provider = "null"};
    if (n->ops->open(&a, &n->tp)) return NULL;
    n->ops->info(n->tp, &n->info);
    n->ops->address(n->tp, &n->addr);
    if (callbacks_start(e) || worker_start(g)) return NULL;
    return e;
}

/* ------------------------------------------------------------ calibration ---- */

/* What the machine charges for the two things the engine's per-operation path is made
 * of: an uncontended atomic read-modify-write (about twenty per write: engine entry,
 * queue, lock, counters) and plain dependent arithmetic (a multiply-add chain, about
 * four cycles a step on current x86 cores, so it gives the clock). Two machines whose
 * ceilings differ more than their clocks do differ in the first. */
static void calibrate(void)
{
    enum { N = 20000000 };
    static _Atomic uint64_t x;
    uint64_t t0 = tn_now_ns();
    for (int k = 0; k < N; k++) atomic_fetch_add_explicit(&x, 1, memory_order_seq_cst);
    double ns_atomic = (double)(tn_now_ns() - t0) / N;
    volatile uint64_t seed = 1;
    uint64_t v = seed;
    t0 = tn_now_ns();
    for (int k = 0; k < N; k++) {
        v = v * 6364136223846793005ull + 1442695040888963407ull;
        __asm__ volatile("" : "+r"(v)); /* keeps the chain a chain */
    }
    double ns_madd = (double)(tn_now_ns() - t0) / N;
    seed = v;
    printf("engine_ceiling: calibration: atomic fetch_add %.1f ns, dependent multiply-add "
           "%.2f ns (about %.1f GHz if a step takes 4 cycles)\n",
           ns_atomic, ns_madd, 4.0 / ns_madd);
}

/* ------------------------------------------------------------------ bench ---- */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    uint64_t ops = 1000000, window = 64;
    int reps = 5;
    for (int k = 1; k + 1 < argc; k += 2) {
        if (!strcmp(argv[k], "--ops")) ops = strtoull(argv[k + 1], NULL, 10);
        else if (!strcmp(argv[k], "--window")) window = strtoull(argv[k + 1], NULL, 10);
        else if (!strcmp(argv[k], "--reps")) reps = atoi(argv[k + 1]);
        else {
            fprintf(stderr, "usage: engine_ceiling [--ops N] [--window W] [--reps R]\n");
            return 2;
        }
    }
    if (reps < 1 || reps > 99 || window < 1 || ops < window) return 2;
    calibrate();
    te_engine *e = null_engine();
    if (!e) {
        fprintf(stderr, "engine_ceiling: cannot assemble the engine\n");
        return 1;
    }
    static uint8_t buf[4096];
    te_mr *mr;
    te_counter *done;
    if (te_mr_register(e, buf, sizeof buf, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mr) ||
        te_counter_create(&done)) {
        fprintf(stderr, "engine_ceiling: %s\n", te_last_error());
        return 1;
    }
    te_mr_desc dst;
    te_mr_desc_get(mr, &dst);
    double secs[99];
    for (int r = 0; r < reps; r++) {
        uint64_t base = te_counter_done(done);
        uint64_t t0 = tn_now_ns();
        for (uint64_t k = 0; k < ops; k++) {
            if (k >= window && te_counter_wait(done, base + k - window + 1, 60000)) return 1;
            te_write_args a = {.src = mr, .len = sizeof buf, .dst = &dst, .route = {TE_ROUTE_SHARDED, 0}};
            te_completion c = {.counter = done};
            int rc;
            while ((rc = te_write(e, &a, &c)) == -EAGAIN) {}
            if (rc) {
                fprintf(stderr, "engine_ceiling: te_write: %s\n", te_last_error());
                return 1;
            }
        }
        if (te_counter_wait(done, base + ops, 60000)) return 1;
        if (te_counter_done(done) != base + ops || te_counter_errors(done)) {
            fprintf(stderr, "engine_ceiling: %llu writes completed of %llu, %llu with errors\n",
                    (unsigned long long)(te_counter_done(done) - base), (unsigned long long)ops,
                    (unsigned long long)te_counter_errors(done));
            return 1;
        }
        secs[r] = (double)(tn_now_ns() - t0) / 1e9;
    }
    qsort(secs, (size_t)reps, sizeof *secs, cmp_d);
    double med = secs[reps / 2];
    printf("engine_ceiling: %llu writes of 4 KiB, window %llu, median of %d: %.3f Mops/s, %.0f ns/op "
           "(null backend: every work request completes at the next poll)\n",
           (unsigned long long)ops, (unsigned long long)window, reps, (double)ops / med / 1e6,
           med / (double)ops * 1e9);
    te_counter_destroy(done);
    te_engine_destroy(e);
    return 0;
}
