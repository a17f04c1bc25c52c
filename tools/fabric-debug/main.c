/* fabric-debug: point-to-point benchmark of the TransferEngine against the raw provider.
 *
 *   fabric-debug server [opts]           prints a connect token, serves until told to stop
 *   fabric-debug client TOKEN [opts]     runs the workloads against that server
 *   fabric-debug local [opts]            starts a server process here, then the client
 *
 * The client writes into the server's memory; every workload runs twice, through the
 * engine and through plain libfabric calls on one thread (raw.c), and the table shows
 * both and their ratio. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "a2a.h"
#include "cli.h"
#include "devbuf.h"
#include "raw.h"
#include "tendril/te.h"

#define REGION (80ull << 20) /* at least; more when an a2a pattern needs it (g_region) */
#define PING 0x50494e47u
#define PONG 0x504f4e47u
#define MSG 4096
#define MAX_REPS 15

typedef struct opts {
    const char *provider;
    const char *nic_names;
    uint32_t nics;
    bool quick, verify;
    const char *json;
    int modes; /* bit 0 engine, bit 1 raw */
    int reps;  /* throughput rows: engine and raw runs, alternated, median of each */
    const char *only; /* run only these workloads: comma list of single, paged, latency */
    uint64_t sizes[16]; /* --sizes: only rows of these sizes (single) or page sizes (paged) */
    int n_sizes;
    int gpu; /* --gpu N: buffers in device memory of CUDA device N; -1 = host memory */
    const char *a2a_pattern; /* --a2a-pattern FILE: the a2a workload's writes */
    a2a_plan plan;           /* ... read at start-up */
    int a2a_iters;           /* --a2a-iters N: 0 = from the pattern's bytes */
} opts;

/* Bytes of the measured regions (server targets, client source): REGION, or the a2a
 * pattern's layout when larger (server and client compute it from the same file). */
static uint64_t g_region = REGION;

static bool size_selected(const opts *o, uint64_t size)
{
    if (!o->n_sizes) return true;
    for (int k = 0; k < o->n_sizes; k++)
        if (o->sizes[k] == size) return true;
    return false;
}

/* "4K,64K,1M" -> bytes; returns the count, or -1 on a malformed list. */
static int parse_sizes(const char *arg, uint64_t *out, int cap)
{
    int n = 0;
    const char *p = arg;
    while (*p) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (end == p || n == cap) return -1;
        if (*end == 'K' || *end == 'k') v <<= 10, end++;
        else if (*end == 'M' || *end == 'm') v <<= 20, end++;
        if (*end == ',') end++;
        else if (*end) return -1;
        if (v == 0) return -1;
        out[n++] = v;
        p = end;
    }
    return n;
}

/* --only: is `what` selected (all are when the list is empty)? */
static bool selected(const opts *o, const char *what)
{
    if (!o->only || !*o->only) return true;
    size_t n = strlen(what);
    for (const char *p = o->only; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, what, n)) return true;
        if (!end) break;
        p = end + 1;
    }
    return false;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, int r)
{
    fprintf(stderr, "fabric-debug: %s: %s (%s)\n", what, te_strerror(r), te_last_error());
    exit(1);
}

/* Registration device of the measured buffers. */
static int mem_device(const opts *o) { return o->gpu >= 0 ? o->gpu : TE_DEVICE_HOST; }

/* Text of a raw (libfabric) return code. */
static const char *fi_msg(int r) { return r ? strerror(r < 0 ? -r : r) : "ok"; }

/* The raw endpoint's libfabric name travels in the token as a te_addr text form (it is
 * what a te_addr of a libfabric NIC holds), so the token needs no hex code of its own. */
static int raw_name_format(const uint8_t *name, size_t n, char *out, size_t cap)
{
    if (n == 0 || n > TE_ADDR_MAX) return -EINVAL;
    te_addr a = {.transport = TE_TRANSPORT_FABRIC, .len = (uint8_t)n};
    memcpy(a.bytes, name, n);
    return te_addr_format(&a, out, cap);
}

static int raw_name_parse(const char *text, uint8_t *name, size_t *n)
{
    te_addr a;
    int r = te_addr_parse(text, &a);
    if (r) return r;
    memcpy(name, a.bytes, a.len);
    *n = a.len;
    return 0;
}

static uint64_t fnv(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < n; k++) h = (h ^ p[k]) * 1099511628211ull;
    return h;
}

static te_engine *make_engine(const opts *o, bool busy)
{
    te_config cfg;
    te_config_init(&cfg);
    cfg.provider = o->provider;
    cfg.n_groups = 1;
    cfg.groups[0].n_nics = o->nics;
    cfg.groups[0].cuda_device = o->gpu >= 0 ? o->gpu : TE_DEVICE_HOST;
    cfg.busy_poll = busy;
    char *names = o->nic_names ? strdup(o->nic_names) : NULL, *save = NULL;
    uint32_t k = 0;
    for (char *t = names ? strtok_r(names, ",", &save) : NULL; t && k < TE_MAX_NICS;
         t = strtok_r(NULL, ",", &save))
        cfg.groups[0].nics[k++] = t;
    if (k && k != o->nics) {
        fprintf(stderr, "fabric-debug: --nic-names lists %u NICs but --nics is %u\n", k, o->nics);
        exit(2);
    }
    te_engine *e;
    int r = te_engine_create(&cfg, &e);
    if (r) die("engine", r);
    /* names stays allocated: the engine copied what it needs, but keep it simple */
    return e;
}

/* ------------------------------------------------------------------ server --- */

typedef struct server {
    te_engine *e;
    int gpu;
    uint8_t *mem, *raw_mem;
    te_mr *mr;
    raw_ep *raw;
    raw_region rr;
    te_mr_desc client_pong;
    te_addr client;
    bool have_client;
    uint8_t client_raw[256];
    size_t client_raw_len;
    uint64_t client_raw_key, client_raw_base;
    _Atomic bool stop;
    _Atomic bool raw_pending;   /* hello stored client_raw*: the raw thread connects */
    _Atomic bool raw_connected; /* ... and has: the raw endpoint is used by that thread only */
    _Atomic bool raw_active; /* the client is running a raw workload: poll without pause */
    _Atomic bool client_ready; /* hello received: client_pong is valid */
    /* a2a workload: immediates expected per phase (0 = not armed), engine and raw side;
     * the engine side is counted in server_on_imm, the raw side in server_raw_thread */
    _Atomic uint64_t a2a_want[A2A_PHASES], a2a_got[A2A_PHASES], a2a_raw_want[A2A_PHASES];
    _Atomic uint64_t a2a_gen;      /* bumped by every arm: the raw thread restarts its count */
    _Atomic uint64_t a2a_raw_left; /* raw immediates counted but not yet answered */
    _Atomic uint64_t a2a_stray;    /* a2a immediates of a phase nobody armed */
} server;

static server S;

static void reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void reply(const char *fmt, ...)
{
    char buf[MSG];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (S.have_client) te_send(S.e, &S.client, buf, (size_t)n + 1, NULL);
}

static void server_on_msg(void *arg, const void *data, size_t len)
{
    char m[MSG];
    snprintf(m, sizeof m, "%.*s", (int)len, (const char *)data);
    if (!strncmp(m, "hello ", 6)) {
        char a[600], d[2400], ra[600];
        unsigned long long key, base;
        if (sscanf(m, "hello %599s %2399s %599s %llx %llx", a, d, ra, &key, &base) != 5) return;
        if (te_addr_parse(a, &S.client) || te_mr_desc_parse(d, &S.client_pong) ||
            raw_name_parse(ra, S.client_raw, &S.client_raw_len)) {
            fprintf(stderr, "server: bad hello: %s\n", te_last_error());
            return;
        }
        S.have_client = true;
        atomic_store(&S.client_ready, true);
        S.client_raw_key = key;
        S.client_raw_base = base;
        atomic_store(&S.raw_pending, true); /* before the reply: see server_raw_thread */
        reply("hello-ok");
    } else if (!strncmp(m, "hash ", 5)) {
        char which;
        unsigned long long off, n;
        if (sscanf(m, "hash %c %llu %llu", &which, &off, &n) != 3 || off > g_region || n > g_region - off)
            return reply("hash-err");
        /* GPU buffers: the bytes are copied back from the device and hashed here */
        uint8_t *h = malloc(n ? n : 1);
        int r = h ? devbuf_get(S.gpu, h, (which == 'r' ? S.raw_mem : S.mem) + off, n) : -ENOMEM;
        if (r) {
            free(h);
            return reply("hash-err %s", te_last_error());
        }
        reply("hash %" PRIu64, fnv(h, n));
        free(h);
    } else if (!strncmp(m, "mode ", 5)) {
        atomic_store(&S.raw_active, !strcmp(m + 5, "raw"));
        reply("mode-ok");
    } else if (!strncmp(m, "a2a-arm ", 8)) {
        unsigned long long v[2 * A2A_PHASES];
        if (sscanf(m, "a2a-arm %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]) != 6)
            return reply("a2a-err");
        for (int p = 0; p < A2A_PHASES; p++) {
            atomic_store(&S.a2a_got[p], 0);
            atomic_store(&S.a2a_want[p], v[p]);
            atomic_store(&S.a2a_raw_want[p], v[A2A_PHASES + p]);
        }
        atomic_store(&S.a2a_stray, 0);
        atomic_store(&S.a2a_raw_left, 0);
        atomic_fetch_add(&S.a2a_gen, 1);
        reply("a2a-ok");
    } else if (!strncmp(m, "a2a-disarm", 10)) {
        uint64_t left = 0;
        for (int p = 0; p < A2A_PHASES; p++) {
            atomic_store(&S.a2a_want[p], 0);
            atomic_store(&S.a2a_raw_want[p], 0);
            left += atomic_load(&S.a2a_got[p]);
        }
        atomic_fetch_add(&S.a2a_gen, 1);
        reply("a2a-left %" PRIu64 " %" PRIu64 " %" PRIu64, left, (uint64_t)atomic_load(&S.a2a_raw_left),
              (uint64_t)atomic_load(&S.a2a_stray));
    } else if (!strncmp(m, "bye", 3)) {
        atomic_store(&S.stop, true);
    }
}

static void server_on_imm(void *arg, uint32_t imm)
{
    if (imm == PING && atomic_load(&S.client_ready))
        te_write_imm(S.e, PONG, &S.client_pong, (te_route){TE_ROUTE_PINNED, 0}, NULL);
    if (imm >= A2A_IMM && imm < A2A_IMM + A2A_PHASES * 64u) {
        /* One server stands in for every peer: it counts the phase's immediates from all
         * of them and answers once the last one is in (where the proxy's te_imm_flag of
         * each peer would move). Inline, like the raw side's answer from its own thread. */
        uint32_t p = (imm - A2A_IMM) / 64u;
        uint64_t want = atomic_load(&S.a2a_want[p]);
        if (!want || !atomic_load(&S.client_ready)) {
            atomic_fetch_add(&S.a2a_stray, 1);
        } else if (atomic_fetch_add(&S.a2a_got[p], 1) + 1 == want) {
            atomic_fetch_sub(&S.a2a_got[p], want);
            te_write_imm(S.e, A2A_ACK + p, &S.client_pong, (te_route){TE_ROUTE_PINNED, 0}, NULL);
        }
    }
}

/* The raw side of the a2a count: `fresh` immediates arrived; answers (raw PONG) each phase
 * whose count is complete. *phase and *got are the raw thread's own state. */
static void raw_a2a_count(uint64_t fresh, int *phase, uint64_t *got, uint64_t *writes, uint64_t *imms,
                          uint32_t *last)
{
    *got += fresh;
    for (int guard = 0; guard < A2A_PHASES; guard++) {
        uint64_t want = atomic_load(&S.a2a_raw_want[*phase]);
        if (!want) { /* a phase without writes: the client skips it too */
            *phase = (*phase + 1) % A2A_PHASES;
            continue;
        }
        if (*got < want) break;
        *got -= want;
        *phase = (*phase + 1) % A2A_PHASES;
        guard = -1; /* a full phase answered: look again from the next one */
        while (raw_write(S.raw, &S.rr, 0, 0, raw_remote_addr(S.raw, S.client_raw_base, 0), S.client_raw_key,
                         true, PONG, false) == -EAGAIN)
            raw_poll(S.raw, writes, imms, last);
    }
    atomic_store(&S.a2a_raw_left, *got);
}

static bool raw_a2a_armed(void)
{
    for (int p = 0; p < A2A_PHASES; p++)
        if (atomic_load(&S.a2a_raw_want[p])) return true;
    return false;
}

/* Progress for the raw endpoint (tcp needs the target to poll) and raw pongs. */
static void *server_raw_thread(void *arg)
{
    uint64_t writes = 0, imms = 0, seen = 0, a2a_gen = 0, a2a_got = 0;
    uint32_t last = 0;
    int idle = 0, a2a_phase = 0;
    while (!atomic_load(&S.stop)) {
        raw_poll(S.raw, &writes, &imms, &last);
        /* After the poll: a raw immediate from the client comes after hello-ok, which
         * comes after raw_pending was set, so it is never answered unconnected. */
        if (!atomic_load(&S.raw_connected) && atomic_load(&S.raw_pending)) {
            if (raw_connect(S.raw, S.client_raw, S.client_raw_len) == 0) {
                atomic_store(&S.raw_connected, true);
            } else {
                fprintf(stderr, "fabric-debug: server: the client's raw endpoint address was refused\n");
                atomic_store(&S.raw_pending, false);
            }
        }
        uint64_t gen = atomic_load(&S.a2a_gen); /* read after the poll: see a2a-arm */
        if (gen != a2a_gen) a2a_gen = gen, a2a_phase = 0, a2a_got = 0;
        if (imms != seen && raw_a2a_armed()) {
            uint64_t fresh = imms - seen;
            seen = imms;
            raw_a2a_count(fresh, &a2a_phase, &a2a_got, &writes, &imms, &last);
            idle = 0;
        } else if (imms != seen) {
            for (; seen < imms; seen++)
                if (atomic_load(&S.raw_connected))
                    while (raw_write(S.raw, &S.rr, 0, 0, raw_remote_addr(S.raw, S.client_raw_base, 0),
                                     S.client_raw_key, true, PONG, false) == -EAGAIN)
                        raw_poll(S.raw, &writes, &seen, &last);
            idle = 0;
        } else if (!atomic_load(&S.raw_active) && ++idle > 1000) {
            /* Parked while the engine is measured, so it does not steal the CPU. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static int run_server(const opts *o)
{
    S.e = make_engine(o, false);
    S.gpu = o->gpu;
    int r;
    if ((r = devbuf_alloc(o->gpu, g_region, &S.mem)) || (r = devbuf_alloc(o->gpu, g_region, &S.raw_mem)))
        die("buffer", r);
    if ((r = te_mr_register(S.e, S.mem, g_region, mem_device(o), TE_MR_REMOTE_WRITE, &S.mr)))
        die("register", r);
    char err[256];
    if (raw_open(te_provider_name(S.e), te_nic_name(S.e, 0, 0), o->gpu >= 0, &S.raw, err, sizeof err)) {
        fprintf(stderr, "fabric-debug: raw endpoint: %s\n", err);
        return 1;
    }
    if ((r = raw_register(S.raw, S.raw_mem, g_region, true, o->gpu, &S.rr))) {
        fprintf(stderr, "fabric-debug: raw registration of the server buffer: %s\n", fi_msg(r));
        return 1;
    }
    /* The message and immediate handlers only now, after S.raw and S.rr are set: they
     * run on engine threads that already exist. */
    te_recv_pool *pool;
    if ((r = te_recv_pool_create(S.e, MSG, 16, server_on_msg, NULL, NULL, &pool))) die("recv pool", r);
    /* Inline: the pong leaves from the thread that polled the ping (no callback-thread hop). */
    te_imm_set_callback_inline(S.e, server_on_imm, NULL);
    uint8_t rawname[256];
    size_t rawlen = sizeof rawname;
    raw_name(S.raw, rawname, &rawlen);
    te_mr_desc d;
    char dh[TE_MR_DESC_TEXT_MAX], rh[TE_ADDR_TEXT_MAX];
    if ((r = te_mr_desc_get(S.mr, &d)) || (r = te_mr_desc_format(&d, dh, sizeof dh))) die("descriptor", r);
    if ((r = raw_name_format(rawname, rawlen, rh, sizeof rh))) die("raw endpoint name", r);
    printf("fabric-debug server: provider %s, %u NIC(s)\n", te_provider_name(S.e), te_group_nics(S.e, 0));
    printf("token %s:%s:%" PRIx64 ":%" PRIx64 "\n", dh, rh, S.rr.key, (uint64_t)(uintptr_t)S.raw_mem);
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, server_raw_thread, NULL);
    for (int k = 0; k < 3600 * 100 && !atomic_load(&S.stop); k++) usleep(10000);
    atomic_store(&S.stop, true);
    pthread_join(t, NULL);
    te_engine_destroy(S.e);
    raw_deregister(&S.rr);
    raw_close(S.raw);
    devbuf_free(o->gpu, S.mem);
    devbuf_free(o->gpu, S.raw_mem);
    return 0;
}

/* ------------------------------------------------------------------ client --- */

typedef struct client {
    te_engine *e;
    uint8_t *src, *pong_mem;
    uint8_t *src_host; /* the source pattern on the host (C.src may be GPU memory) */
    te_mr *mr, *pong_mr;
    te_mr_desc dst;
    te_imm_counter *pongs;
    te_imm_counter *a2a_ack[A2A_PHASES];
    te_counter *done;
    raw_ep *raw;
    raw_region rsrc, rpong;
    uint64_t raw_key, raw_base;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char last_reply[MSG];
    int replies;
    FILE *json;
    int json_rows;
} client;

static client C = {.lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER};

static void client_on_msg(void *arg, const void *data, size_t len)
{
    pthread_mutex_lock(&C.lock);
    snprintf(C.last_reply, sizeof C.last_reply, "%.*s", (int)len, (const char *)data);
    C.replies++;
    pthread_cond_broadcast(&C.cond);
    pthread_mutex_unlock(&C.lock);
}

static int ask(const te_addr *srv, char *out, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int ask(const te_addr *srv, char *out, size_t cap, const char *fmt, ...)
{
    char m[MSG];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&C.lock);
    int before = C.replies;
    pthread_mutex_unlock(&C.lock);
    int r = te_send(C.e, srv, m, (size_t)n + 1, NULL);
    if (r) return r;
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 30;
    pthread_mutex_lock(&C.lock);
    while (C.replies == before && r == 0) r = pthread_cond_timedwait(&C.cond, &C.lock, &dl);
    snprintf(out, cap, "%s", C.last_reply);
    pthread_mutex_unlock(&C.lock);
    return r ? -ETIMEDOUT : 0;
}

/* Tells the server which side is being measured (its raw thread polls only then). */
static void set_mode(const te_addr *srv, const char *mode)
{
    char buf[64];
    if (ask(srv, buf, sizeof buf, "mode %s", mode) || strcmp(buf, "mode-ok")) {
        fprintf(stderr, "fabric-debug: server did not acknowledge mode %s\n", mode);
        exit(1);
    }
}

typedef struct result {
    double secs;
    uint64_t ops, bytes, wrs;
} result;

/* Single writes of `size`: `count` operations, at most `window` in flight. */
static result engine_single(uint64_t size, uint64_t count, uint64_t window)
{
    uint64_t base = te_counter_done(C.done);
    double t0 = now_s();
    for (uint64_t k = 0; k < count; k++) {
        if (k >= window) te_counter_wait(C.done, base + k - window + 1, 60000);
        te_write_args a = {.src = C.mr, .len = size, .dst = &C.dst, .route = {TE_ROUTE_SHARDED, 0}};
        te_completion c = {.counter = C.done};
        int r;
        while ((r = te_write(C.e, &a, &c)) == -EAGAIN) {}
        if (r) die("te_write", r);
    }
    if (te_counter_wait(C.done, base + count, 120000)) die("waiting for writes", -ETIMEDOUT);
    double t1 = now_s();
    uint32_t shards = te_group_nics(C.e, 0);
    return (result){t1 - t0, count, count * size, count * shards};
}

static result raw_single(uint64_t size, uint64_t count, uint64_t window)
{
    uint64_t posted = 0, done = 0, imms = 0;
    uint32_t last;
    uint64_t raddr = raw_remote_addr(C.raw, C.raw_base, 0);
    double t0 = now_s();
    while (done < count) {
        while (posted < count && posted - done < window) {
            int r = raw_write(C.raw, &C.rsrc, 0, size, raddr, C.raw_key, false, 0, false);
            if (r == -EAGAIN) break;
            if (r) die("raw write", r);
            posted++;
        }
        if (raw_poll(C.raw, &done, &imms, &last) < 0) die("raw poll", -EIO);
    }
    return (result){now_s() - t0, count, count * size, count};
}

static uint32_t *make_pages(uint64_t n, uint64_t slots, uint32_t seed)
{
    uint32_t *v = malloc(n * sizeof *v);
    uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
    for (uint64_t k = 0; k < n; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v[k] = (uint32_t)(x % slots);
    }
    return v;
}

#define PAGE_OFF 1024ull

static result engine_paged(uint64_t page, uint64_t pages, uint64_t count, uint64_t window, te_pages *idx)
{
    uint64_t stride = page + 128;
    uint64_t base = te_counter_done(C.done);
    double t0 = now_s();
    for (uint64_t k = 0; k < count; k++) {
        if (k >= window) te_counter_wait(C.done, base + k - window + 1, 60000);
        te_paged_args a = {.page_len = page, .src = C.mr, .src_pages = idx, .src_stride = stride,
                           .src_offset = PAGE_OFF, .dst = &C.dst, .dst_pages = idx,
                           .dst_stride = stride, .dst_offset = PAGE_OFF};
        te_completion c = {.counter = C.done};
        int r = te_write_paged(C.e, &a, &c);
        if (r) die("te_write_paged", r);
    }
    if (te_counter_wait(C.done, base + count, 120000)) die("waiting for paged writes", -ETIMEDOUT);
    return (result){now_s() - t0, count, count * pages * page, count * pages};
}

static result raw_paged(uint64_t page, uint64_t pages, uint64_t count, uint64_t window, const uint32_t *idx)
{
    uint64_t stride = page + 128, total = count * pages, posted = 0, done = 0, imms = 0;
    uint32_t last;
    uint64_t wwin = window * pages;
    double t0 = now_s();
    while (done < total) {
        while (posted < total && posted - done < wwin) {
            uint64_t i = idx[posted % pages];
            uint64_t off = PAGE_OFF + stride * i;
            bool more = (posted + 1) % pages != 0;
            int r = raw_write(C.raw, &C.rsrc, off, page, raw_remote_addr(C.raw, C.raw_base, off),
                              C.raw_key, false, 0, more);
            if (r == -EAGAIN) break;
            if (r) die("raw write", r);
            posted++;
        }
        if (raw_poll(C.raw, &done, &imms, &last) < 0) die("raw poll", -EIO);
    }
    return (result){now_s() - t0, count, total * page, total};
}

/* One throughput row's workload, runnable on either side. */
typedef struct workload {
    bool paged;
    uint64_t size, pages, count, window;
    te_pages *tp;        /* paged: the engine's page list */
    const uint32_t *idx; /* paged: the same list for the raw loop */
} workload;

static result run_side(const workload *w, bool engine)
{
    if (w->paged)
        return engine ? engine_paged(w->size, w->pages, w->count, w->window, w->tp)
                      : raw_paged(w->size, w->pages, w->count, w->window, w->idx);
    return engine ? engine_single(w->size, w->count, w->window) : raw_single(w->size, w->count, w->window);
}

static int cmp_secs(const void *a, const void *b)
{
    double x = ((const result *)a)->secs, y = ((const result *)b)->secs;
    return x < y ? -1 : x > y;
}

/* The median run of n (all move the same bytes, so the median time is the median rate). */
static result median_run(result *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_secs);
    return v[n / 2];
}

/* --reps N: N runs of each selected side, alternating which goes first so that slow drift
 * of the machine favours neither; the median run of each side, and the engine's total
 * time (for the per-NIC line, whose byte counts span all runs). */
static void run_alternated(const opts *o, const te_addr *srv, const workload *w, result *e, result *r,
                           double *e_secs)
{
    result es[MAX_REPS] = {{0}}, rs[MAX_REPS] = {{0}};
    *e_secs = 0;
    for (int k = 0; k < o->reps; k++)
        for (int half = 0; half < 2; half++) {
            bool eng = (half == 0) == (k % 2 == 0);
            if (!(o->modes & (eng ? 1 : 2))) continue;
            set_mode(srv, eng ? "engine" : "raw");
            result x = run_side(w, eng);
            if (eng) es[k] = x, *e_secs += x.secs;
            else rs[k] = x;
        }
    *e = median_run(es, o->reps);
    *r = median_run(rs, o->reps);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void percentiles(double *lat, int n, double *p50, double *p99, double *p999)
{
    qsort(lat, (size_t)n, sizeof *lat, cmp_d);
    *p50 = lat[n / 2];
    *p99 = lat[(int)(n * 0.99)];
    *p999 = lat[n - 1 - (n / 1000)];
}

/* One operation, from submit to its completion: a write of `size` (local completion;
 * delivery on tcp) or, with `ping`, an immediate that the peer answers with a pong. */
static void one_op(bool raw, bool ping, uint64_t size, uint64_t *done, uint64_t *imms, uint32_t *last)
{
    if (raw) {
        const uint64_t want = (ping ? *imms : *done) + 1;
        while (raw_write(C.raw, &C.rsrc, 0, ping ? 0 : size, raw_remote_addr(C.raw, C.raw_base, 0), C.raw_key,
                         ping, ping ? PING : 0, false) == -EAGAIN)
            raw_poll(C.raw, done, imms, last);
        while ((ping ? *imms : *done) < want)
            if (raw_poll(C.raw, done, imms, last) < 0) die("raw poll", -EIO);
    } else if (ping) {
        int r = te_write_imm(C.e, PING, &C.dst, (te_route){TE_ROUTE_PINNED, 0}, NULL);
        if (r) die("te_write_imm", r);
        if ((r = te_imm_counter_wait(C.pongs, 1, 10000))) die("waiting for pong", r);
    } else {
        uint64_t base = te_counter_done(C.done);
        te_write_args a = {.src = C.mr, .len = size, .dst = &C.dst, .route = {TE_ROUTE_SHARDED, 0}};
        te_completion c = {.counter = C.done};
        int r = te_write(C.e, &a, &c);
        if (r) die("te_write", r);
        if ((r = te_counter_wait(C.done, base + 1, 10000))) die("waiting for a write", r);
    }
}

/* n operations one at a time; percentiles of their latencies in µs. */
static void op_latency(bool raw, bool ping, uint64_t size, int n, double *p50, double *p99, double *p999)
{
    double *lat = malloc((size_t)n * sizeof *lat);
    if (!lat) die("latency samples", -ENOMEM);
    uint64_t done = 0, imms = 0;
    uint32_t last;
    for (int k = 0; k < n; k++) {
        double t0 = now_s();
        one_op(raw, ping, size, &done, &imms, &last);
        lat[k] = (now_s() - t0) * 1e6;
    }
    percentiles(lat, n, p50, p99, p999);
    free(lat);
}

static void json_row(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void json_row(const char *fmt, ...)
{
    if (!C.json) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(C.json, "%s\n  ", C.json_rows++ ? "," : "");
    vfprintf(C.json, fmt, ap);
    va_end(ap);
}

static void size_str(uint64_t b, char *out)
{
    if (b >= (1 << 20) && b % (1 << 20) == 0) sprintf(out, "%" PRIu64 " MiB", b >> 20);
    else if (b >= 1024 && b % 1024 == 0) sprintf(out, "%" PRIu64 " KiB", b >> 10);
    else sprintf(out, "%" PRIu64 " B", b);
}

static void print_row(const char *kind, uint64_t size, uint64_t pages, const result *e, const result *r,
                      int modes)
{
    char s[32];
    size_str(size, s);
    double egb = e ? (double)e->bytes / e->secs / 1e9 : 0, rgb = r ? (double)r->bytes / r->secs / 1e9 : 0;
    double emo = e ? (double)e->wrs / e->secs / 1e6 : 0, rmo = r ? (double)r->wrs / r->secs / 1e6 : 0;
    printf("%-7s %9s %6" PRIu64 " | %8.3f %8.3f %6.3f | %8.3f %8.3f %6.3f\n", kind, s, pages,
           egb, rgb, (modes == 3 && rgb > 0) ? egb / rgb : NAN, emo, rmo,
           (modes == 3 && rmo > 0) ? emo / rmo : NAN);
    json_row("{\"workload\":\"%s\",\"bytes\":%" PRIu64 ",\"pages\":%" PRIu64
             ",\"engine_gbps\":%.4f,\"raw_gbps\":%.4f,\"engine_mops\":%.4f,\"raw_mops\":%.4f}",
             kind, size, pages, egb, rgb, emo, rmo);
    fflush(stdout);
}

/* Per-NIC engine write bytes, for the per-NIC throughput line under multi-NIC rows. */
static void nic_bytes(uint64_t *out)
{
    for (uint32_t k = 0; k < te_group_nics(C.e, 0) && k < TE_MAX_NICS; k++) {
        te_nic_stats st;
        out[k] = te_nic_stats_get(C.e, 0, k, &st) ? 0 : st.write_bytes;
    }
}

/* With several NICs: each NIC's share of an engine row, in GB/s (aggregate = the row). */
static void print_per_nic(const char *kind, uint64_t size, const uint64_t *before, double secs)
{
    uint32_t n = te_group_nics(C.e, 0);
    if (n < 2 || secs <= 0) return;
    uint64_t after[TE_MAX_NICS] = {0};
    nic_bytes(after);
    char line[256] = "", js[256] = "";
    for (uint32_t k = 0; k < n && k < TE_MAX_NICS; k++) {
        double gb = (double)(after[k] - before[k]) / secs / 1e9;
        size_t l = strlen(line), j = strlen(js);
        snprintf(line + l, sizeof line - l, "%s%.3f", k ? " / " : "", gb);
        snprintf(js + j, sizeof js - j, "%s%.4f", k ? "," : "", gb);
    }
    printf("        per NIC (engine) GB/s: %s\n", line);
    json_row("{\"workload\":\"%s_per_nic\",\"bytes\":%" PRIu64 ",\"engine_gbps_per_nic\":[%s]}", kind,
             size, js);
}

/* Sorted copy's percentile q (0..1) of n samples. */
static double pct(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, cmp_d);
    int k = (int)(q * n);
    return v[k < n ? k : n - 1];
}

/* a2a: the pattern's writes, phase by phase, engine and raw (docs/performance.md, "MoE
 * all-to-all across nodes"). Returns 0, or 1 / 3 (verification) like run_client. */
static int run_a2a(const opts *o, const te_addr *srv)
{
    const a2a_plan *pl = &o->plan;
    uint64_t total = pl->bytes[0] + pl->bytes[1] + pl->bytes[2];
    if (C.dst.len < pl->footprint) {
        fprintf(stderr, "fabric-debug: the server's region is %" PRIu64 " bytes, the a2a pattern needs %" PRIu64
                ": start the server with the same --a2a-pattern\n", C.dst.len, pl->footprint);
        return 1;
    }
    int iters = o->a2a_iters;
    if (!iters) {
        uint64_t budget = o->quick ? (64ull << 20) : (4ull << 30);
        uint64_t it = total ? budget / total : 1000;
        iters = it < (o->quick ? 5u : 10u) ? (o->quick ? 5 : 10) : it > 1000 ? 1000 : (int)it;
    }
    int warm = o->quick ? 1 : 2, n = iters * o->reps;
    uint32_t nics = te_group_nics(C.e, 0);
    uint64_t ew[A2A_PHASES], rw[A2A_PHASES];
    for (int p = 0; p < A2A_PHASES; p++) {
        rw[p] = pl->first[p + 1] - pl->first[p];
        ew[p] = rw[p] * nics; /* a sharded write: one immediate per NIC (docs/multi-nic.md) */
    }
    char buf[MSG];
    if (ask(srv, buf, sizeof buf, "a2a-arm %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64,
            ew[0], ew[1], ew[2], rw[0], rw[1], rw[2]) || strcmp(buf, "a2a-ok")) {
        fprintf(stderr, "fabric-debug: the server did not arm the a2a count ('%s')\n", buf);
        return 1;
    }
    a2a_io io = {.e = C.e, .src = C.mr, .dst = &C.dst, .done = C.done, .raw = C.raw, .rsrc = &C.rsrc,
                 .raw_key = C.raw_key, .raw_base = C.raw_base, .timeout_ms = 60000};
    memcpy(io.ack, C.a2a_ack, sizeof io.ack);
    double *es = calloc((size_t)(n + warm) * A2A_PHASES, sizeof *es);
    double *rs = calloc((size_t)(n + warm) * A2A_PHASES, sizeof *rs);
    double *tmp = calloc((size_t)n, sizeof *tmp);
    if (!es || !rs || !tmp) die("a2a samples", -ENOMEM);
    printf("\na2a pattern %s: %u peer(s), one server process standing in for every peer (each peer a\n"
           "slot range of its region); per iteration %zu writes (dsp %zu, wgt %zu, cmb %zu), %.3f MB;\n"
           "phase by phase: all writes of the phase posted with an immediate, then the server's count\n"
           "of all of them (answered with one immediate) before the next phase. The engine shards\n"
           "each write over %u NIC(s). %d iterations per side%s (+%d warm-up each run).\n",
           o->a2a_pattern, pl->peers, pl->n, (size_t)rw[0], (size_t)rw[1], (size_t)rw[2], total / 1e6, nics,
           n, o->reps > 1 ? ", in alternated runs" : "", warm);
    int rc = 0;
    for (int k = 0; k < o->reps && !rc; k++)
        for (int half = 0; half < 2 && !rc; half++) {
            bool eng = (half == 0) == (k % 2 == 0);
            if (!(o->modes & (eng ? 1 : 2))) continue;
            set_mode(srv, eng ? "engine" : "raw");
            double *dst = (eng ? es : rs) + (size_t)k * iters * A2A_PHASES;
            /* warm-up first, into the slots after the measured ones, then the measured run */
            double *wbuf = (eng ? es : rs) + (size_t)n * A2A_PHASES;
            int r = eng ? a2a_run_engine(&io, pl, warm, wbuf) : a2a_run_raw(&io, pl, warm, wbuf);
            if (!r) r = eng ? a2a_run_engine(&io, pl, iters, dst) : a2a_run_raw(&io, pl, iters, dst);
            if (r) rc = 1;
        }
    if (!rc && (ask(srv, buf, sizeof buf, "a2a-disarm") || strncmp(buf, "a2a-left ", 9))) {
        fprintf(stderr, "fabric-debug: the server did not disarm the a2a count ('%s')\n", buf);
        rc = 1;
    }
    unsigned long long le = 0, lr = 0, ls = 0;
    if (!rc && (sscanf(buf, "a2a-left %llu %llu %llu", &le, &lr, &ls) != 3 || le || lr || ls)) {
        fprintf(stderr, "fabric-debug: a2a: the server counted immediates beyond the pattern (%s)\n", buf);
        rc = 3;
    }
    if (!rc) {
        printf("%-5s %6s %11s | %9s %9s %8s | %9s %9s %8s | %6s\n", "phase", "writes", "bytes", "eng p50us",
               "p99us", "GB/s", "raw p50us", "p99us", "GB/s", "ratio");
        printf("------------------------------------------------------------------------------------------\n");
        for (int p = 0; p <= A2A_PHASES; p++) { /* A2A_PHASES: the whole iteration */
            double q[2][2] = {{0}};
            for (int side = 0; side < 2; side++) {
                if (!(o->modes & (1 << side))) continue;
                const double *v = side ? rs : es;
                for (int i = 0; i < n; i++) {
                    double t = 0;
                    for (int ph = 0; ph < A2A_PHASES; ph++)
                        if (ph == p || p == A2A_PHASES) t += v[(size_t)i * A2A_PHASES + ph];
                    tmp[i] = t * 1e6;
                }
                q[side][0] = pct(tmp, n, 0.5);
                q[side][1] = pct(tmp, n, 0.99);
            }
            uint64_t b = p < A2A_PHASES ? pl->bytes[p] : total;
            size_t wr = p < A2A_PHASES ? (size_t)rw[p] : pl->n;
            double eg = q[0][0] > 0 ? b / q[0][0] / 1e3 : 0, rg = q[1][0] > 0 ? b / q[1][0] / 1e3 : 0;
            const char *name = p < A2A_PHASES ? a2a_phase_name[p] : "iter";
            printf("%-5s %6zu %8.3f MB | %9.1f %9.1f %8.3f | %9.1f %9.1f %8.3f | %6.3f\n", name, wr, b / 1e6,
                   q[0][0], q[0][1], eg, q[1][0], q[1][1], rg, (o->modes == 3 && rg > 0) ? eg / rg : NAN);
            json_row("{\"workload\":\"a2a\",\"phase\":\"%s\",\"writes\":%zu,\"bytes\":%" PRIu64
                     ",\"iterations\":%d,\"peers\":%u,\"engine_p50_us\":%.2f,\"engine_p99_us\":%.2f,"
                     "\"raw_p50_us\":%.2f,\"raw_p99_us\":%.2f,\"engine_gbps\":%.4f,\"raw_gbps\":%.4f}",
                     name, wr, b, n, pl->peers, q[0][0], q[0][1], q[1][0], q[1][1], eg, rg);
        }
        printf("GB/s = the phase's bytes / its p50 time; ratio = engine GB/s / raw GB/s (1 = no overhead).\n");
    }
    if (!rc && o->verify) {
        for (size_t k = 0; k < pl->n && !rc; k++)
            for (int side = 0; side < 2 && !rc; side++) {
                const a2a_write *w = &pl->w[k];
                if (!w->len || !(o->modes & (1 << side))) continue;
                char want[64];
                ask(srv, buf, sizeof buf, "hash %c %" PRIu64 " %" PRIu64, side ? 'r' : 'e', w->off, w->len);
                snprintf(want, sizeof want, "hash %" PRIu64, fnv(C.src_host + w->off, w->len));
                if (strcmp(buf, want)) {
                    fprintf(stderr, "fabric-debug: VERIFY FAILED for the a2a %s write of %" PRIu64
                            " bytes to peer %u (%s)\n", a2a_phase_name[w->phase], w->len, w->peer,
                            side ? "raw" : "engine");
                    rc = 3;
                }
            }
        if (!rc) printf("a2a: every write's bytes verified at the server (%s)\n",
                        o->modes == 3 ? "engine and raw" : o->modes == 1 ? "engine" : "raw");
    }
    fflush(stdout);
    free(es);
    free(rs);
    free(tmp);
    return rc;
}

static int run_client(const char *token, const opts *o)
{
    char d[TE_MR_DESC_TEXT_MAX], ra[TE_ADDR_TEXT_MAX];
    unsigned long long key, base;
    char *tok = strdup(token);
    for (char *p = tok; *p; p++)
        if (*p == ':') *p = ' ';
    if (sscanf(tok, "%2188s %516s %llx %llx", d, ra, &key, &base) != 4) {
        fprintf(stderr, "fabric-debug: malformed token\n");
        return 2;
    }
    free(tok);
    uint8_t rab[TE_ADDR_MAX];
    size_t ran = 0;
    int r;
    if ((r = te_mr_desc_parse(d, &C.dst))) die("server token (descriptor)", r);
    if ((r = raw_name_parse(ra, rab, &ran))) die("server token (raw endpoint name)", r);
    C.e = make_engine(o, false);
    C.raw_key = key;
    C.raw_base = base;
    C.src_host = aligned_alloc(4096, g_region);
    C.pong_mem = aligned_alloc(4096, 4096);
    if (!C.src_host || !C.pong_mem) die("source buffer", -ENOMEM);
    for (uint64_t k = 0; k < g_region; k++) C.src_host[k] = (uint8_t)(k * 131 + (k >> 12));
    if ((r = devbuf_alloc(o->gpu, g_region, &C.src)) || (r = devbuf_put(o->gpu, C.src, C.src_host, g_region)))
        die("source buffer", r);
    if ((r = te_mr_register(C.e, C.src, g_region, mem_device(o), 0, &C.mr))) die("register", r);
    if ((r = te_mr_register(C.e, C.pong_mem, 4096, TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &C.pong_mr)))
        die("register", r);
    te_counter_create(&C.done);
    te_imm_counter_create(C.e, PONG, &C.pongs);
    for (int p = 0; p < A2A_PHASES; p++)
        if ((r = te_imm_counter_create(C.e, A2A_ACK + (uint32_t)p, &C.a2a_ack[p]))) die("imm counter", r);
    te_recv_pool *pool;
    if ((r = te_recv_pool_create(C.e, MSG, 8, client_on_msg, NULL, NULL, &pool))) die("recv pool", r);
    char err[256];
    if (raw_open(te_provider_name(C.e), te_nic_name(C.e, 0, 0), o->gpu >= 0, &C.raw, err, sizeof err)) {
        fprintf(stderr, "fabric-debug: raw endpoint: %s\n", err);
        return 1;
    }
    if ((r = raw_register(C.raw, C.src, g_region, false, o->gpu, &C.rsrc)) ||
        (r = raw_register(C.raw, C.pong_mem, 4096, true, -1, &C.rpong)) || (r = raw_connect(C.raw, rab, ran))) {
        fprintf(stderr, "fabric-debug: raw endpoint setup failed: %s\n", fi_msg(r));
        return 1;
    }
    te_addr srv = C.dst.nic[0].addr, me;
    te_main_address(C.e, &me);
    char mh[TE_ADDR_TEXT_MAX], ph[TE_MR_DESC_TEXT_MAX], rh[TE_ADDR_TEXT_MAX], reply_buf[MSG];
    te_mr_desc pd;
    if ((r = te_addr_format(&me, mh, sizeof mh)) || (r = te_mr_desc_get(C.pong_mr, &pd)) ||
        (r = te_mr_desc_format(&pd, ph, sizeof ph)))
        die("own address", r);
    uint8_t myraw[256];
    size_t myrawlen = sizeof myraw;
    raw_name(C.raw, myraw, &myrawlen);
    if ((r = raw_name_format(myraw, myrawlen, rh, sizeof rh))) die("raw endpoint name", r);
    if ((r = ask(&srv, reply_buf, sizeof reply_buf, "hello %s %s %s %" PRIx64 " %" PRIx64, mh, ph, rh,
                 C.rpong.key, (uint64_t)(uintptr_t)C.pong_mem)) || strcmp(reply_buf, "hello-ok")) {
        fprintf(stderr, "fabric-debug: server did not answer hello (%d, '%s')\n", r, reply_buf);
        return 1;
    }
    if (o->json && !(C.json = fopen(o->json, "w"))) {
        perror(o->json);
        return 1;
    }
    char memory[16] = "host";
    if (o->gpu >= 0) snprintf(memory, sizeof memory, "cuda:%d", o->gpu);
    if (C.json) fprintf(C.json, "{\"provider\":\"%s\",\"nics\":%u,\"reps\":%d,\"memory\":\"%s\",\"rows\":[",
                        te_provider_name(C.e), te_group_nics(C.e, 0), o->reps, memory);

    int modes = o->modes;
    printf("\nfabric-debug: provider %s, %u NIC(s) per group (%s), %s memory, engine vs raw provider",
           te_provider_name(C.e), te_group_nics(C.e, 0), te_nic_name(C.e, 0, 0),
           o->gpu >= 0 ? memory : "host");
    if (o->reps > 1) printf(", median of %d alternated runs per row", o->reps);
    printf("\n");
    printf("%-7s %9s %6s | %8s %8s %6s | %8s %8s %6s\n", "op", "size", "pages", "eng GB/s", "raw GB/s",
           "ratio", "eng Mops", "raw Mops", "ratio");
    printf("-------------------------------------------------------------------------------\n");
    static const uint64_t sizes_full[] = {1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20,
                                          4 << 20, 16 << 20, 64 << 20};
    static const uint64_t sizes_quick[] = {4 << 10, 64 << 10, 1 << 20, 16 << 20};
    const uint64_t *sizes = o->quick ? sizes_quick : sizes_full;
    size_t n_sizes = o->quick ? 4 : 9;
    uint64_t budget = o->quick ? (256ull << 20) : (1024ull << 20);
    for (size_t s = 0; s < n_sizes && selected(o, "single"); s++) {
        uint64_t size = sizes[s];
        if (!size_selected(o, size)) continue;
        uint64_t count = budget / size;
        if (count < 16) count = 16;
        if (count > (o->quick ? 20000u : 100000u)) count = o->quick ? 20000 : 100000;
        uint64_t window = (64ull << 20) / size;
        window = window < 2 ? 2 : window > 64 ? 64 : window;
        uint64_t nb[TE_MAX_NICS] = {0};
        nic_bytes(nb);
        workload w = {.size = size, .pages = 1, .count = count, .window = window};
        result e, rr;
        double e_secs;
        run_alternated(o, &srv, &w, &e, &rr, &e_secs);
        print_row("single", size, 1, modes & 1 ? &e : NULL, modes & 2 ? &rr : NULL, modes);
        if (modes & 1) print_per_nic("single", size, nb, e_secs);
        if (o->verify && (modes & 1)) {
            ask(&srv, reply_buf, sizeof reply_buf, "hash e 0 %" PRIu64, size);
            char want[64];
            snprintf(want, sizeof want, "hash %" PRIu64, fnv(C.src_host, size));
            if (strcmp(reply_buf, want)) {
                fprintf(stderr, "fabric-debug: VERIFY FAILED for %" PRIu64 "-byte writes\n", size);
                return 3;
            }
        }
    }
    static const uint64_t pg_full[] = {1 << 10, 4 << 10, 16 << 10, 64 << 10};
    static const uint64_t cnt_full[] = {64, 1024};
    for (size_t s = 0; s < 4 && selected(o, "paged"); s++)
        for (size_t c = 0; c < 2 && size_selected(o, pg_full[s]); c++) {
            uint64_t page = pg_full[s], pages = o->quick ? cnt_full[c] / 4 : cnt_full[c];
            uint64_t slots = (REGION - PAGE_OFF - page) / (page + 128);
            uint32_t *idx = make_pages(pages, slots, 0x123);
            te_pages *tp;
            te_pages_create(idx, pages, &tp);
            uint64_t total_pages = o->quick ? 16384 : 65536;
            if (total_pages * page > budget) total_pages = budget / page;
            uint64_t count = total_pages / pages;
            if (count < 4) count = 4;
            uint64_t window = 16;
            workload w = {.paged = true, .size = page, .pages = pages, .count = count,
                          .window = window, .tp = tp, .idx = idx};
            result e, rr;
            double e_secs;
            run_alternated(o, &srv, &w, &e, &rr, &e_secs);
            print_row("paged", page, pages, modes & 1 ? &e : NULL, modes & 2 ? &rr : NULL, modes);
            if (o->verify && (modes & 1)) {
                uint64_t off = PAGE_OFF + (page + 128) * idx[0];
                ask(&srv, reply_buf, sizeof reply_buf, "hash e %" PRIu64 " %" PRIu64, off, page);
                char want[64];
                snprintf(want, sizeof want, "hash %" PRIu64, fnv(C.src_host + off, page));
                if (strcmp(reply_buf, want)) {
                    fprintf(stderr, "fabric-debug: VERIFY FAILED for paged writes\n");
                    return 3;
                }
            }
            te_pages_release(tp);
            free(idx);
        }
    if (selected(o, "latency")) {
        int n = o->quick ? 300 : 2000;
        double e50 = 0, e99 = 0, e999 = 0, r50 = 0, r99 = 0, r999 = 0;
        if (modes & 1) set_mode(&srv, "engine"), op_latency(false, true, 0, n, &e50, &e99, &e999);
        if (modes & 2) set_mode(&srv, "raw"), op_latency(true, true, 0, n, &r50, &r99, &r999);
        printf("\nimm round trip (%d samples), us:   p50      p99    p99.9\n", n);
        if (modes & 1) printf("  engine                        %8.1f %8.1f %8.1f\n", e50, e99, e999);
        if (modes & 2) printf("  raw provider                  %8.1f %8.1f %8.1f\n", r50, r99, r999);
        json_row("{\"workload\":\"imm_rtt_us\",\"engine_p50\":%.2f,\"engine_p99\":%.2f,\"engine_p999\":%.2f,"
                 "\"raw_p50\":%.2f,\"raw_p99\":%.2f,\"raw_p999\":%.2f}", e50, e99, e999, r50, r99, r999);

        static const uint64_t lat_sizes[] = {4 << 10, 64 << 10, 1 << 20};
        int ln = o->quick ? 200 : 1000;
        printf("\nsingle write, one in flight (%d samples), us:\n"
               "  size           engine p50   p99  p99.9 |    raw p50   p99  p99.9\n", ln);
        for (size_t k = 0; k < sizeof lat_sizes / sizeof *lat_sizes; k++) {
            char sz[32];
            size_str(lat_sizes[k], sz);
            e50 = e99 = e999 = r50 = r99 = r999 = 0;
            if (modes & 1) set_mode(&srv, "engine"), op_latency(false, false, lat_sizes[k], ln, &e50, &e99, &e999);
            if (modes & 2) set_mode(&srv, "raw"), op_latency(true, false, lat_sizes[k], ln, &r50, &r99, &r999);
            printf("  %-9s      %8.1f %6.1f %6.1f | %8.1f %6.1f %6.1f\n", sz, e50, e99, e999, r50, r99, r999);
            json_row("{\"workload\":\"write_latency_us\",\"bytes\":%" PRIu64 ",\"engine_p50\":%.2f,"
                     "\"engine_p99\":%.2f,\"engine_p999\":%.2f,\"raw_p50\":%.2f,\"raw_p99\":%.2f,"
                     "\"raw_p999\":%.2f}", lat_sizes[k], e50, e99, e999, r50, r99, r999);
        }
    }

    int rc = 0;
    if (o->a2a_pattern && selected(o, "a2a")) rc = run_a2a(o, &srv);

    if (!rc) printf("\nper-NIC statistics (engine, this process):\n  NIC  name          writes      bytes  errors\n");
    for (uint32_t k = 0; k < te_group_nics(C.e, 0) && !rc; k++) {
        te_nic_stats st;
        te_nic_stats_get(C.e, 0, k, &st);
        printf("  %3u  %-10s %9" PRIu64 " %10.3f GB %7" PRIu64 "\n", k, te_nic_name(C.e, 0, k),
               st.write_ops, (double)st.write_bytes / 1e9, st.errors);
        json_row("{\"nic\":%u,\"name\":\"%s\",\"write_ops\":%" PRIu64 ",\"write_bytes\":%" PRIu64
                 ",\"errors\":%" PRIu64 "}", k, te_nic_name(C.e, 0, k), st.write_ops, st.write_bytes,
                 st.errors);
    }
    if (C.json) {
        fprintf(C.json, "\n]}\n");
        fclose(C.json);
    }
    te_send(C.e, &srv, "bye", 4, NULL);
    usleep(100000);
    te_engine_destroy(C.e);
    raw_deregister(&C.rsrc);
    raw_deregister(&C.rpong);
    raw_close(C.raw);
    devbuf_free(o->gpu, C.src);
    free(C.src_host);
    free(C.pong_mem);
    return rc;
}

/* ------------------------------------------------------------------- local --- */

static int run_local(int argc, char **argv, const opts *o)
{
    int pipefd[2];
    if (pipe(pipefd)) return 1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pipefd[1], 1);
        close(pipefd[0]);
        char **av = calloc((size_t)argc + 2, sizeof *av);
        av[0] = "/proc/self/exe";
        av[1] = "server";
        for (int k = 2; k < argc; k++) av[k] = argv[k];
        execv("/proc/self/exe", av);
        _exit(127);
    }
    close(pipefd[1]);
    FILE *f = fdopen(pipefd[0], "r");
    char line[8192], token[8192] = "";
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "token ", 6)) {
            snprintf(token, sizeof token, "%s", line + 6);
            token[strcspn(token, "\n")] = '\0';
            break;
        }
        fputs(line, stdout);
    }
    if (!*token) {
        fprintf(stderr, "fabric-debug: the server did not start\n");
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        return 1;
    }
    int rc = run_client(token, o);
    for (int k = 0; k < 100; k++) {
        if (waitpid(pid, NULL, WNOHANG) == pid) return rc;
        usleep(50000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return rc;
}

static const cli_tool T = {
    "fabric-debug",
    "usage: fabric-debug server [opts]\n"
    "       fabric-debug client TOKEN [opts]\n"
    "       fabric-debug local [opts]      (server and client on this machine)\n"
    "Point-to-point benchmark: every workload through the engine and through plain\n"
    "libfabric calls, and their ratio (docs/performance.md).\n"
    "options:\n"
    "  --provider P     auto (default), tcp, shm, efa, verbs, or any libfabric provider\n"
    "  --nics N         NICs per group (1..4, default 1)\n"
    "  --nic-names A,B  NIC (domain) names; default: the provider's first N (tcp in local mode: lo)\n"
    "  --mode M         engine, raw or both (default both)\n"
    "  --quick          fewer sizes and iterations (2-vCPU VM: 15 s over tcp, 62 s with\n"
    "                   --reps 3; 9 s over shm with --reps 3)\n"
    "  --verify         check the written bytes through the server\n"
    "  --json FILE      also write the results as JSON\n"
    "  --reps N         throughput rows: N engine and N raw runs, alternated, median of\n"
    "                   each (1..15, default 1; 5 or more on a noisy machine); a2a: N runs\n"
    "                   per side, alternated, percentiles over all their iterations\n"
    "  --only LIST      only these workloads: single, paged, latency, a2a (comma list)\n"
    "  --sizes LIST     only these write sizes / page sizes, e.g. 64K,1M\n"
    "  --gpu N          buffers (source and target, engine and raw) in device memory of\n"
    "                   CUDA device N; needs a provider with FI_HMEM (libfabric built with\n"
    "                   CUDA); --verify then checks the device bytes\n"
    "  --a2a-pattern F  the a2a workload: replay one rank's all-to-all writes of an\n"
    "                   iteration from F (PHASE PEER BYTES lines; tools/a2a_model/a2a_model.py\n"
    "                   --pattern writes it); runs unless --only leaves a2a out; a server\n"
    "                   started apart needs the same option (it sizes its region from F)\n"
    "  --a2a-iters N    a2a iterations per run (default: from the pattern's bytes, 10..1000;\n"
    "                   --quick 5..1000)\n"
    "  --help, --version\n"
    "environment: TENDRIL_* (docs/configuration.md); tendril-info prints the effective values\n"};

int main(int argc, char **argv)
{
    cli_common(&T, argc, argv);
    if (argc < 2) cli_fail(&T, "missing command: server, client TOKEN or local");
    signal(SIGPIPE, SIG_IGN);
    opts o = {.provider = "auto", .nics = 1, .modes = 3, .reps = 1, .gpu = -1};
    const char *cmd = argv[1];
    const char *token = NULL;
    int first = 2;
    if (strcmp(cmd, "server") && strcmp(cmd, "client") && strcmp(cmd, "local"))
        cli_fail(&T, "unknown command '%s' (server, client TOKEN or local)", cmd);
    if (!strcmp(cmd, "client")) {
        if (argc < 3 || argv[2][0] == '-') cli_fail(&T, "client needs the server's TOKEN");
        token = argv[2];
        first = 3;
    }
    static struct option lo[] = {{"provider", 1, 0, 'p'}, {"nics", 1, 0, 'n'}, {"nic-names", 1, 0, 'N'},
                                 {"mode", 1, 0, 'm'},     {"quick", 0, 0, 'q'}, {"verify", 0, 0, 'v'},
                                 {"json", 1, 0, 'j'},     {"reps", 1, 0, 'r'},    {"only", 1, 0, 'o'},
                                 {"sizes", 1, 0, 's'},    {"gpu", 1, 0, 'g'},
                                 {"a2a-pattern", 1, 0, 'A'}, {"a2a-iters", 1, 0, 'I'}, {0, 0, 0, 0}};
    optind = first;
    opterr = 0; /* cli_fail names the option */
    int c;
    while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
        switch (c) {
        case 'p': o.provider = optarg; break;
        case 'n': o.nics = (uint32_t)cli_u64(&T, "--nics", optarg, 1, TE_MAX_NICS); break;
        case 'N': o.nic_names = optarg; break;
        case 'm':
            o.modes = !strcmp(optarg, "engine") ? 1 : !strcmp(optarg, "raw") ? 2
                    : !strcmp(optarg, "both") ? 3 : 0;
            if (!o.modes) cli_fail(&T, "option '--mode': '%s' is not engine, raw or both", optarg);
            break;
        case 'q': o.quick = true; break;
        case 'v': o.verify = true; break;
        case 'j': o.json = optarg; break;
        case 'r': o.reps = (int)cli_u64(&T, "--reps", optarg, 1, MAX_REPS); break;
        case 'o':
            o.only = optarg;
            if (!selected(&o, "single") && !selected(&o, "paged") && !selected(&o, "latency") &&
                !selected(&o, "a2a"))
                cli_fail(&T, "option '--only' takes a comma list of single, paged, latency, a2a");
            break;
        case 's':
            if ((o.n_sizes = parse_sizes(optarg, o.sizes, 16)) <= 0)
                cli_fail(&T, "option '--sizes' takes a comma list such as 4K,64K,1M");
            break;
        case 'g': o.gpu = (int)cli_u64(&T, "--gpu", optarg, 0, 1024); break;
        case 'A': o.a2a_pattern = optarg; break;
        case 'I': o.a2a_iters = (int)cli_u64(&T, "--a2a-iters", optarg, 1, 100000); break;
        case ':': cli_fail(&T, "option '%s' needs a value", argv[optind - 1]);
        default: cli_fail(&T, "unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc) cli_fail(&T, "unexpected argument '%s'", argv[optind]);
    if (o.only && selected(&o, "a2a") && !o.a2a_pattern)
        cli_fail(&T, "--only a2a needs --a2a-pattern FILE (tools/a2a_model/a2a_model.py --pattern)");
    if (o.a2a_pattern) {
        char err[512];
        /* the pattern starts past the first 4 KiB, like the paged workload's PAGE_OFF */
        if (a2a_plan_load(o.a2a_pattern, A2A_ALIGN, &o.plan, err, sizeof err))
            cli_fail(&T, "--a2a-pattern: %s", err);
        if (o.plan.footprint > g_region) g_region = (o.plan.footprint + A2A_ALIGN - 1) / A2A_ALIGN * A2A_ALIGN;
    }
    if (o.gpu >= 0) {
        char err[300];
        if (devbuf_check_gpu(o.gpu, err, sizeof err)) {
            fprintf(stderr, "fabric-debug: --gpu %d: %s\n", o.gpu, err);
            return 1;
        }
    }
    /* In local mode over tcp the loopback interface is the fast path (the server is on this
     * machine; eth0 would take the same kernel path with more overhead). */
    if (!strcmp(cmd, "local") && !o.nic_names && o.nics == 1 && !getenv("TENDRIL_NICS")) {
        char picked[64] = "";
        te_engine *probe;
        te_config cfg;
        te_config_init(&cfg);
        cfg.provider = o.provider;
        if (te_engine_create(&cfg, &probe) == 0) {
            snprintf(picked, sizeof picked, "%s", te_provider_name(probe));
            te_engine_destroy(probe);
        }
        if (strstr(picked, "tcp")) setenv("TENDRIL_NICS", "lo", 1);
    }
    int rc = !strcmp(cmd, "server") ? run_server(&o)
           : !strcmp(cmd, "client") ? run_client(token, &o) : run_local(argc, argv, &o);
    a2a_plan_free(&o.plan);
    return rc;
}
