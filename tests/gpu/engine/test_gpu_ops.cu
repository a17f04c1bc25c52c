/* Every engine operation with CUDA memory, between two real processes on one GPU:
 * single, paged, scatter, imm-only, barrier and send/recv, each with a GPU source and a
 * GPU destination and mixed (host->GPU, GPU->host). The parent sends; the child (this
 * binary re-executed with --child) owns the destination regions, counts immediates and
 * checks the bytes: GPU regions by a kernel on the device (mismatch count and first
 * offset), host regions on the CPU. Every check also covers guard bytes around the
 * written ranges, which must still be zero.
 *
 * Provider: $TENDRIL_TEST_PROVIDER (default shm; libfabric >= 2 moves device memory
 * between processes through CUDA IPC). Where the provider cannot register GPU memory
 * (no FI_HMEM, e.g. libfabric 1.17) the test prints the reason and exits 77, unless
 * TENDRIL_GPU_REQUIRE_HMEM=1, which makes that a failure (the GPU machine's 2.x run). */
#include <pthread.h>
#include <stdarg.h>
#include <unistd.h>

#include "gpu_common.h"

extern "C" {
#include "harness.h"
}

#define REGION (4u << 20)
#define GUARD 4096u
#define T_MS 20000

/* Content of stream `seed` at byte position i, the same on host and device. */
__host__ __device__ static inline unsigned char gpat(unsigned long long seed, unsigned long long i)
{
    unsigned long long x = (seed + 1) * 0x9e3779b97f4a7c15ull ^ (i * 0xbf58476d1ce4e5b9ull);
    x ^= x >> 31;
    return (unsigned char)(x * 0x94d049bb133111ebull >> 56);
}

__global__ void k_fill(unsigned char *p, unsigned long long len, unsigned long long seed)
{
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < len;
         i += (unsigned long long)blockDim.x * gridDim.x)
        p[i] = gpat(seed, i);
}

/* seed == ~0ull: the range must be zero (guard bytes). Otherwise byte i must equal
 * gpat(seed, pos + i). */
struct mism {
    unsigned long long bad, first;
};

__global__ void k_check(const unsigned char *p, unsigned long long len, unsigned long long seed,
                        unsigned long long pos, struct mism *m)
{
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < len;
         i += (unsigned long long)blockDim.x * gridDim.x) {
        unsigned char want = seed == ~0ull ? 0 : gpat(seed, pos + i);
        if (p[i] != want) {
            atomicAdd(&m->bad, 1ull);
            atomicMin(&m->first, i);
        }
    }
}

static bool require_hmem(void)
{
    const char *v = getenv("TENDRIL_GPU_REQUIRE_HMEM");
    return v && *v == '1';
}

static const char *ops_provider(void)
{
    const char *p = getenv("TENDRIL_TEST_PROVIDER");
    return p && *p ? p : "shm";
}

/* ------------------------------------------------------------------ child ---- */

#define MAX_MSGS 16
struct child {
    te_engine *e;
    unsigned char *dev, *host;
    struct mism *m;
    pthread_mutex_t mu;
    unsigned char *msg[MAX_MSGS];
    size_t msg_len[MAX_MSGS];
    unsigned n_msgs;
    te_imm_counter *ctr[64];
    uint32_t ctr_imm[64];
    unsigned n_ctr;
};

static void on_msg(void *arg, const void *data, size_t len)
{
    struct child *c = (struct child *)arg;
    pthread_mutex_lock(&c->mu);
    if (c->n_msgs < MAX_MSGS) {
        c->msg[c->n_msgs] = (unsigned char *)malloc(len ? len : 1);
        memcpy(c->msg[c->n_msgs], data, len);
        c->msg_len[c->n_msgs++] = len;
    }
    pthread_mutex_unlock(&c->mu);
}

static te_imm_counter *counter_of(struct child *c, uint32_t imm)
{
    for (unsigned k = 0; k < c->n_ctr; k++)
        if (c->ctr_imm[k] == imm) return c->ctr[k];
    return NULL;
}

static void child_check(struct child *c, const char *where, unsigned long long off,
                        unsigned long long len, unsigned long long seed, unsigned long long pos)
{
    if (off > REGION || len > REGION - off) {
        th_child_reply("err range");
        return;
    }
    struct mism h = {0, ~0ull};
    if (!strcmp(where, "dev")) {
        CK(cudaMemcpy(c->m, &h, sizeof h, cudaMemcpyHostToDevice));
        if (len) k_check<<<128, 256>>>(c->dev + off, len, seed, pos, c->m);
        CK(cudaGetLastError());
        CK(cudaMemcpy(&h, c->m, sizeof h, cudaMemcpyDeviceToHost));
    } else {
        for (unsigned long long i = 0; i < len; i++) {
            unsigned char want = seed == ~0ull ? 0 : gpat(seed, pos + i);
            if (c->host[off + i] != want) {
                if (!h.bad) h.first = i;
                h.bad++;
            }
        }
    }
    th_child_reply("bad %llu %llu", h.bad, h.bad ? h.first : 0ull);
}

static int child_main(void)
{
    /* stdout is the pipe to the parent: nothing else may be printed on it */
    CK(cudaSetDevice(0));
    struct child c;
    memset(&c, 0, sizeof c);
    pthread_mutex_init(&c.mu, NULL);
    te_config cfg;
    engine_config(&cfg, ops_provider(), 0);
    if (te_engine_create(&cfg, &c.e)) {
        th_child_reply("fail engine on %s: %s", ops_provider(), te_last_error());
        return 1;
    }
    CK(cudaMalloc(&c.dev, REGION));
    CK(cudaMalloc(&c.m, sizeof *c.m));
    CK(cudaMemset(c.dev, 0, REGION));
    c.host = (unsigned char *)aligned_alloc(4096, REGION);
    memset(c.host, 0, REGION);
    te_mr *mdev = NULL, *mhost = NULL;
    te_mr_desc ddev, dhost;
    int r = te_mr_register(c.e, c.dev, REGION, 0, TE_MR_REMOTE_WRITE, &mdev);
    if (r == -EOPNOTSUPP) { /* the documented refusal of a provider without FI_HMEM */
        th_child_reply("nogpu %d %s", r, te_last_error());
        return SKIP;
    }
    if (r) {
        th_child_reply("fail GPU registration: %s (%s)", te_strerror(r), te_last_error());
        return 1;
    }
    REQUIRE(te_mr_register(c.e, c.host, REGION, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mhost) == 0,
            "%s", te_last_error());
    REQUIRE(te_mr_desc_get(mdev, &ddev) == 0 && te_mr_desc_get(mhost, &dhost) == 0, "desc");
    te_recv_pool *pool = NULL;
    REQUIRE(te_recv_pool_create(c.e, 65536, 8, on_msg, NULL, &c, &pool) == 0, "%s", te_last_error());
    te_addr self;
    REQUIRE(te_main_address(c.e, &self) == 0, "address");
    char a[TE_ADDR_TEXT_MAX], hd[TE_MR_DESC_TEXT_MAX], hh[TE_MR_DESC_TEXT_MAX];
    te_addr_format(&self, a, sizeof a);
    te_mr_desc_format(&ddev, hd, sizeof hd);
    te_mr_desc_format(&dhost, hh, sizeof hh);
    th_child_reply("ready %s %s %s", a, hd, hh);

    char line[512], where[8];
    unsigned long long off, len, seed, pos;
    unsigned imm, n, k;
    int ms;
    while (th_child_read(line, sizeof line, 120000) == 0) {
        if (!strcmp(line, "quit")) break;
        if (!strcmp(line, "zero")) {
            CK(cudaMemset(c.dev, 0, REGION));
            CK(cudaDeviceSynchronize());
            memset(c.host, 0, REGION);
            th_child_reply("ok");
        } else if (sscanf(line, "check %7s %llu %llu %llu %llu", where, &off, &len, &seed, &pos) == 5) {
            child_check(&c, where, off, len, seed, pos);
        } else if (sscanf(line, "counter %u", &imm) == 1) {
            REQUIRE(c.n_ctr < 64 && !counter_of(&c, imm), "counter %u", imm);
            REQUIRE(te_imm_counter_create(c.e, imm, &c.ctr[c.n_ctr]) == 0, "%s", te_last_error());
            c.ctr_imm[c.n_ctr++] = imm;
            th_child_reply("ok");
        } else if (sscanf(line, "wait %u %u %d", &imm, &n, &ms) == 3) {
            te_imm_counter *ct = counter_of(&c, imm);
            int w = ct ? te_imm_counter_wait(ct, n, ms) : -ENOENT;
            th_child_reply("wait %d %llu", w, ct ? (unsigned long long)te_imm_counter_value(ct) : 0ull);
        } else if (sscanf(line, "msg2dev %u %llu", &k, &off) == 2) {
            /* The received message of k bytes into device memory (the receiver's staging
             * step: te_send carries host bytes, see docs/gpu-memory.md). Messages are
             * found by length, so arrival order does not matter. */
            int found = -1;
            for (int t = 0; t < T_MS / 10 && found < 0; t++) {
                pthread_mutex_lock(&c.mu);
                for (unsigned i = 0; i < c.n_msgs; i++)
                    if (c.msg_len[i] == k) found = (int)i;
                pthread_mutex_unlock(&c.mu);
                if (found < 0) usleep(10000);
            }
            bool ok = found >= 0 && off <= REGION && k <= REGION - off;
            pthread_mutex_lock(&c.mu);
            if (ok) CK(cudaMemcpy(c.dev + off, c.msg[found], k, cudaMemcpyHostToDevice));
            unsigned total = c.n_msgs;
            pthread_mutex_unlock(&c.mu);
            if (ok) th_child_reply("ok %u of %u", k, total);
            else th_child_reply("err no message of %u bytes (%u received)", k, total);
        } else {
            th_child_reply("err unknown command");
        }
    }
    for (unsigned i = 0; i < c.n_ctr; i++) te_imm_counter_destroy(c.ctr[i]);
    te_recv_pool_destroy(pool);
    te_mr_deregister(mdev);
    te_mr_deregister(mhost);
    te_engine_destroy(c.e);
    for (unsigned i = 0; i < c.n_msgs; i++) free(c.msg[i]);
    CK(cudaFree(c.dev));
    CK(cudaFree(c.m));
    free(c.host);
    return 0;
}

/* ----------------------------------------------------------------- parent ---- */

static th_proc g_child;
static int g_fail;
static te_engine *g_e;
static te_counter *g_done;
static uint64_t g_submitted;
static te_mr_desc g_ddev, g_dhost;
static te_mr *g_sdev, *g_shost; /* sources: same content stream in both */
static unsigned char *g_src_dev, *g_src_host;
static uint32_t g_imm = 0x7000;

#define SRC_SEED 41ull

static void fail(const char *op, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(const char *op, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL %s: ", op);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    g_fail++;
}

static void ask(char *reply, size_t cap, const char *cmd)
{
    int r = th_ask(&g_child, reply, cap, 60000, "%s", cmd);
    REQUIRE(r == 0, "child did not answer '%s': %s", cmd, te_strerror(r));
}

static const char *kind(bool dev) { return dev ? "dev" : "host"; }

/* Destination [off, off+len) must hold the source stream from `pos`; `guard` bytes on
 * each side must be zero. */
static void expect_bytes(const char *op, bool dev, uint64_t off, uint64_t len, uint64_t pos,
                         uint64_t guard)
{
    char cmd[160], rep[128];
    unsigned long long bad = 0, first = 0;
    snprintf(cmd, sizeof cmd, "check %s %llu %llu %llu %llu", kind(dev), (unsigned long long)off,
             (unsigned long long)len, SRC_SEED, (unsigned long long)pos);
    ask(rep, sizeof rep, cmd);
    if (sscanf(rep, "bad %llu %llu", &bad, &first) != 2) fail(op, "check: %s", rep);
    else if (bad)
        fail(op, "%llu of %llu bytes wrong in %s region, first at offset %llu (region offset %llu)",
             bad, (unsigned long long)len, kind(dev), first, (unsigned long long)(off + first));
    uint64_t lo = off < guard ? off : guard;
    uint64_t hi = REGION - (off + len) < guard ? REGION - (off + len) : guard;
    for (int side = 0; side < 2; side++) {
        uint64_t goff = side ? off + len : off - lo, glen = side ? hi : lo;
        if (!glen) continue;
        snprintf(cmd, sizeof cmd, "check %s %llu %llu %llu 0", kind(dev), (unsigned long long)goff,
                 (unsigned long long)glen, ~0ull);
        ask(rep, sizeof rep, cmd);
        if (sscanf(rep, "bad %llu %llu", &bad, &first) != 2 || bad)
            fail(op, "%s guard %s the range written: %s (bytes outside the write changed)",
                 kind(dev), side ? "after" : "before", rep);
    }
}

static uint32_t arm(void)
{
    char cmd[64], rep[64];
    uint32_t imm = ++g_imm;
    snprintf(cmd, sizeof cmd, "counter %u", imm);
    ask(rep, sizeof rep, cmd);
    REQUIRE(!strcmp(rep, "ok"), "counter: %s", rep);
    return imm;
}

/* Local completion of everything submitted, then exactly `n` immediates at the child:
 * n arrive within the deadline, and none more within a short grace period. */
static void expect_done(const char *op, uint32_t imm, unsigned n)
{
    int r = te_counter_wait(g_done, g_submitted, T_MS);
    if (r) fail(op, "local completion: %s (%llu of %llu)", te_strerror(r),
                (unsigned long long)te_counter_done(g_done), (unsigned long long)g_submitted);
    if (te_counter_errors(g_done)) {
        fail(op, "%llu operation(s) completed with an error", (unsigned long long)te_counter_errors(g_done));
        /* report each failure once: start a fresh counter */
        te_counter_destroy(g_done);
        REQUIRE(te_counter_create(&g_done) == 0, "counter");
        g_submitted = 0;
    }
    char cmd[64], rep[64];
    int w = 0;
    unsigned long long v = 0;
    snprintf(cmd, sizeof cmd, "wait %u %u %d", imm, n, T_MS);
    ask(rep, sizeof rep, cmd);
    if (sscanf(rep, "wait %d %llu", &w, &v) != 2 || w)
        fail(op, "waiting for %u immediates 0x%x: %s (%llu had arrived)", n, imm, te_strerror(w), v);
    usleep(50000);
    snprintf(cmd, sizeof cmd, "wait %u 1 0", imm);
    ask(rep, sizeof rep, cmd);
    if (sscanf(rep, "wait %d %llu", &w, &v) == 2 && w == 0)
        fail(op, "more than %u immediates 0x%x arrived", n, imm);
}

static void zero_child(void)
{
    char rep[32];
    ask(rep, sizeof rep, "zero");
    REQUIRE(!strcmp(rep, "ok"), "zero: %s", rep);
}

static te_completion comp(void)
{
    g_submitted++;
    te_completion c = {NULL, NULL, g_done};
    return c;
}

static void submit_check(const char *op, int r)
{
    if (r) {
        fail(op, "submission: %s (%s)", te_strerror(r), te_last_error());
        g_submitted--;
    }
}

static void op_single(bool sdev, bool ddev)
{
    char op[48];
    snprintf(op, sizeof op, "single %s->%s", kind(sdev), kind(ddev));
    zero_child();
    uint32_t imm = arm();
    te_write_args w;
    memset(&w, 0, sizeof w);
    w.src = sdev ? g_sdev : g_shost;
    w.src_offset = 4096 + 40; /* unaligned on purpose */
    w.len = (1u << 20) + 123;
    w.dst = ddev ? &g_ddev : &g_dhost;
    w.dst_offset = 65536 + 8;
    w.has_imm = true;
    w.imm = imm;
    te_completion c = comp();
    submit_check(op, te_write(g_e, &w, &c));
    expect_done(op, imm, 1); /* one NIC: one shard */
    expect_bytes(op, ddev, w.dst_offset, w.len, w.src_offset, GUARD);
    printf("  %-22s ok\n", op);
}

static void op_paged(bool sdev, bool ddev)
{
    char op[48];
    snprintf(op, sizeof op, "paged %s->%s", kind(sdev), kind(ddev));
    zero_child();
    uint32_t imm = arm();
    enum { P = 16 };
    const uint64_t page = 64 * 1024, sstride = page + 4096, dstride = 2 * page;
    uint32_t si[P], di[P];
    for (uint32_t k = 0; k < P; k++) {
        si[k] = (k * 5 + 3) % P;  /* permutations: pages land out of order */
        di[k] = (k * 7 + 1) % P;
    }
    te_pages *sp = NULL, *dp = NULL;
    REQUIRE(te_pages_create(si, P, &sp) == 0 && te_pages_create(di, P, &dp) == 0, "pages");
    te_paged_args a;
    memset(&a, 0, sizeof a);
    a.page_len = page;
    a.src = sdev ? g_sdev : g_shost;
    a.src_pages = sp;
    a.src_stride = sstride;
    a.src_offset = 512;
    a.dst = ddev ? &g_ddev : &g_dhost;
    a.dst_pages = dp;
    a.dst_stride = dstride;
    a.dst_offset = 8;
    a.has_imm = true;
    a.imm = imm;
    te_completion c = comp();
    submit_check(op, te_write_paged(g_e, &a, &c));
    te_pages_release(sp);
    te_pages_release(dp);
    expect_done(op, imm, P); /* one immediate per page */
    /* each page, and the gap of a page's size after it, which nothing writes */
    for (uint32_t k = 0; k < P; k++)
        expect_bytes(op, ddev, a.dst_offset + di[k] * dstride, page, a.src_offset + si[k] * sstride,
                     page);
    printf("  %-22s ok (%u pages)\n", op, (unsigned)P);
}

/* Three targets: two in the GPU region, one in the host region (mixed in one call). */
static void op_scatter(bool sdev)
{
    char op[48];
    snprintf(op, sizeof op, "scatter %s->dev+host", kind(sdev));
    zero_child();
    uint32_t imm = arm();
    te_scatter_target t[3];
    memset(t, 0, sizeof t);
    t[0].dst = &g_ddev, t[0].len = 200000, t[0].src_offset = 0, t[0].dst_offset = 1 << 20;
    t[1].dst = &g_ddev, t[1].len = 65536, t[1].src_offset = 300000, t[1].dst_offset = 16;
    t[2].dst = &g_dhost, t[2].len = 123457, t[2].src_offset = 777, t[2].dst_offset = 2 << 20;
    te_scatter_args a;
    memset(&a, 0, sizeof a);
    a.src = sdev ? g_sdev : g_shost;
    a.targets = t;
    a.n_targets = 3;
    a.has_imm = true;
    a.imm = imm;
    a.kind = TE_SCATTER_SHARD_PEERS;
    te_completion c = comp();
    submit_check(op, te_write_scatter(g_e, &a, &c));
    expect_done(op, imm, 3); /* one NIC: one immediate per target */
    for (int k = 0; k < 3; k++)
        expect_bytes(op, t[k].dst == &g_ddev, t[k].dst_offset, t[k].len, t[k].src_offset, 16);
    printf("  %-22s ok\n", op);
}

static void op_imm_only(void)
{
    const char *op = "imm-only ->dev";
    zero_child();
    uint32_t imm = arm();
    te_route rt = {TE_ROUTE_PINNED, 0};
    for (int k = 0; k < 3; k++) {
        te_completion c = comp();
        submit_check(op, te_write_imm(g_e, imm, &g_ddev, rt, &c));
    }
    expect_done(op, imm, 3);
    /* zero-length writes: the region stays untouched */
    char rep[64];
    ask(rep, sizeof rep, "check dev 0 4194304 18446744073709551615 0");
    if (strcmp(rep, "bad 0 0")) fail(op, "region changed: %s", rep);
    printf("  %-22s ok\n", op);
}

static void op_barrier(void)
{
    const char *op = "barrier ->dev,host";
    zero_child();
    uint32_t imm = arm();
    te_mr_desc d[2] = {g_ddev, g_dhost};
    te_route rt = {TE_ROUTE_SHARDED, 0};
    te_completion c = comp();
    submit_check(op, te_barrier(g_e, imm, d, 2, rt, &c));
    expect_done(op, imm, 2); /* one per destination */
    printf("  %-22s ok\n", op);
}

/* te_send copies host bytes: the GPU source is staged to the host (cudaMemcpy), the
 * receiver stages the message into its GPU region, where it is checked. Two messages
 * with a GPU write in flight between them (control and data on one engine). */
static void op_send_recv(te_addr *peer)
{
    const char *op = "send/recv dev->dev";
    zero_child();
    const unsigned len[2] = {60000, 50000};
    const uint64_t pos[2] = {1000, 61000};
    unsigned char *stage = (unsigned char *)malloc(len[0]);
    uint32_t imm = arm();
    for (unsigned k = 0; k < 2; k++) {
        CK(cudaMemcpy(stage, g_src_dev + pos[k], len[k], cudaMemcpyDeviceToHost));
        te_completion c = comp();
        submit_check(op, te_send(g_e, peer, stage, len[k], &c));
        te_write_args w;
        memset(&w, 0, sizeof w);
        w.src = g_sdev, w.src_offset = 3 << 20, w.len = 256 * 1024, w.dst = &g_ddev;
        w.dst_offset = 3 << 20, w.has_imm = true, w.imm = imm;
        te_completion c2 = comp();
        submit_check(op, te_write(g_e, &w, &c2));
    }
    expect_done(op, imm, 2);
    char cmd[64], rep[64];
    for (unsigned k = 0; k < 2; k++) {
        snprintf(cmd, sizeof cmd, "msg2dev %u %u", len[k], k * 65536u);
        ask(rep, sizeof rep, cmd);
        unsigned got = 0, total = 0;
        if (sscanf(rep, "ok %u of %u", &got, &total) != 2 || total != 2)
            fail(op, "message of %u bytes: %s (2 expected in all)", len[k], rep);
        else expect_bytes(op, true, k * 65536u, len[k], pos[k], 0);
    }
    expect_bytes(op, true, 3 << 20, 256 * 1024, 3 << 20, 16);
    free(stage);
    printf("  %-22s ok\n", op);
}

static int parent_main(void)
{
    const char *prov = ops_provider();
    if (!gpu_or_skip()) return SKIP;
    /* (fork + exec at once: the CUDA context above does not reach the child) */
    int r = th_spawn(&g_child, "receiver", "");
    REQUIRE(r == 0, "spawn: %s", te_strerror(r));
    static char line[8192], a[TE_ADDR_TEXT_MAX + 1], hd[2 * TE_MR_DESC_ENCODED_MAX + 2],
        hh[2 * TE_MR_DESC_ENCODED_MAX + 2];
    r = th_recv(&g_child, line, sizeof line, 60000);
    REQUIRE(r == 0, "child did not start: %s", te_strerror(r));
    if (!strncmp(line, "nogpu ", 6)) {
        th_wait(&g_child, 10000);
        if (require_hmem()) {
            printf("FAIL: provider %s cannot register GPU memory but TENDRIL_GPU_REQUIRE_HMEM=1: %s\n",
                   prov, line + 6);
            return 1;
        }
        printf("SKIP: provider %s cannot register GPU memory (needs FI_HMEM: libfabric built with "
               "CUDA): %s\n", prov, line + 6);
        return SKIP;
    }
    REQUIRE(sscanf(line, "ready %517s %2189s %2189s", a, hd, hh) == 3, "child: %s", line);
    te_addr peer;
    REQUIRE(te_addr_parse(a, &peer) == 0 && te_mr_desc_parse(hd, &g_ddev) == 0 &&
                te_mr_desc_parse(hh, &g_dhost) == 0, "child's address/descriptors");

    te_config cfg;
    engine_config(&cfg, prov, 0);
    REQUIRE(te_engine_create(&cfg, &g_e) == 0, "%s", te_last_error());
    printf("provider %s, two processes on GPU 0\n", te_provider_name(g_e));
    CK(cudaMalloc(&g_src_dev, REGION));
    k_fill<<<256, 256>>>(g_src_dev, REGION, SRC_SEED);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    g_src_host = (unsigned char *)aligned_alloc(4096, REGION);
    for (uint64_t i = 0; i < REGION; i++) g_src_host[i] = gpat(SRC_SEED, i);
    r = te_mr_register(g_e, g_src_dev, REGION, 0, TE_MR_LOCAL, &g_sdev);
    REQUIRE(r == 0, "GPU source registration failed although the child registered GPU memory: %s",
            te_last_error());
    REQUIRE(te_mr_register(g_e, g_src_host, REGION, TE_DEVICE_HOST, TE_MR_LOCAL, &g_shost) == 0, "%s",
            te_last_error());
    REQUIRE(te_counter_create(&g_done) == 0, "counter");

    const bool pairs[3][2] = {{true, true}, {false, true}, {true, false}};
    for (int k = 0; k < 3; k++) op_single(pairs[k][0], pairs[k][1]);
    for (int k = 0; k < 3; k++) op_paged(pairs[k][0], pairs[k][1]);
    op_scatter(true);
    op_scatter(false);
    op_imm_only();
    op_barrier();
    op_send_recv(&peer);

    th_send(&g_child, "quit");
    int st = th_wait(&g_child, 20000);
    if (st) fail("child", "exit status %d", st);
    te_mr_deregister(g_sdev);
    te_mr_deregister(g_shost);
    te_engine_destroy(g_e);
    te_counter_destroy(g_done);
    CK(cudaFree(g_src_dev));
    free(g_src_host);
    if (g_fail) {
        printf("FAIL: %d check(s) failed\n", g_fail);
        return 1;
    }
    printf("RESULT provider=%s gpu-ops=ok (single, paged, scatter, imm-only, barrier, send/recv; "
           "gpu->gpu, host->gpu, gpu->host)\nPASS\n", prov);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "--child")) return child_main();
    /* No CUDA call before the child is spawned: it starts with a clean process. */
    return parent_main();
}
