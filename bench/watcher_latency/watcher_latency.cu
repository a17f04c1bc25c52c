/* Watcher latency: GPU write -> watcher callback.
 *
 * A single GPU thread writes i into a watcher's word (volatile store +
 * __threadfence_system) and spins until the host echoes i into an ack word in mapped
 * pinned host memory; the watcher callback does the echo. Both timestamps are taken on
 * the GPU (clock64, converted to ns with %globaltimer over the whole run), so no clocks
 * of two devices are compared. The round trip = GPU write visible to the CPU + watcher
 * poll + callback + ack store visible to the GPU poll. The baseline mode replaces the
 * engine by a bare CPU thread that spins on the word and echoes (same path, no watcher
 * machinery), so (watcher - baseline) is the watcher's own cost and RTT/2 estimates the
 * one-way GPU write -> callback latency.
 *
 * Modes: kernel (one persistent kernel, N events), graph (a captured one-event graph
 * replayed N times; each replay measures its own round trip), baseline.
 *   watcher_latency [--events N] [--json FILE]                                         */
#include <cuda_runtime.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "tendril/te.h"

#define CK(x)                                                                                \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

typedef unsigned long long u64;

__device__ static u64 gtimer(void)
{
    u64 t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

/* One event: write v, wait for the echo; the cycle count goes to lat[slot]. */
__device__ static void one_event(u64 *word, const u64 *ack, u64 v, u64 *lat, u64 slot)
{
    long long t0 = clock64();
    *(volatile u64 *)word = v;
    __threadfence_system();
    while (*(volatile const u64 *)ack < v) {
    }
    long long t1 = clock64();
    lat[slot] = (u64)(t1 - t0);
}

/* calib[0..3] = globaltimer start/end, clock64 start/end */
__global__ void k_loop(u64 *word, const u64 *ack, u64 n, u64 *lat, u64 *calib)
{
    calib[0] = gtimer();
    calib[2] = (u64)clock64();
    for (u64 i = 1; i <= n; i++) one_event(word, ack, i, lat, i - 1);
    calib[1] = gtimer();
    calib[3] = (u64)clock64();
}

__global__ void k_graph_event(u64 *word, const u64 *ack, u64 *counter, u64 *lat)
{
    u64 v = ++*counter;
    one_event(word, ack, v, lat, v - 1);
}

__global__ void k_calib(u64 *calib, u64 spin_ns)
{
    calib[0] = gtimer();
    calib[2] = (u64)clock64();
    while (gtimer() - calib[0] < spin_ns) {
    }
    calib[1] = gtimer();
    calib[3] = (u64)clock64();
}

static volatile u64 *g_ack;

static bool echo_cb(void *arg, uint64_t old_value, uint64_t new_value)
{
    (void)arg;
    (void)old_value;
    __atomic_store_n(g_ack, new_value, __ATOMIC_RELEASE);
    return true;
}

struct baseline_arg {
    volatile u64 *word;
    u64 n;
};

static void *baseline_thread(void *p)
{
    struct baseline_arg *a = (struct baseline_arg *)p;
    u64 last = 0;
    while (last < a->n) {
        u64 v = __atomic_load_n(a->word, __ATOMIC_ACQUIRE);
        if (v != last) {
            last = v;
            __atomic_store_n(g_ack, v, __ATOMIC_RELEASE);
        }
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    u64 x = *(const u64 *)a, y = *(const u64 *)b;
    return x < y ? -1 : x > y;
}

struct stats {
    double p50, p90, p99, p999, max, mean;
};

static struct stats summarize(u64 *cyc, u64 n, double ns_per_cycle)
{
    qsort(cyc, n, sizeof *cyc, cmp_u64);
    struct stats s;
    double sum = 0;
    for (u64 i = 0; i < n; i++) sum += cyc[i];
#define Q(q) (cyc[(u64)((double)(n - 1) * (q))] * ns_per_cycle / 1000.0)
    s.p50 = Q(0.50);
    s.p90 = Q(0.90);
    s.p99 = Q(0.99);
    s.p999 = Q(0.999);
    s.max = cyc[n - 1] * ns_per_cycle / 1000.0;
    s.mean = sum / n * ns_per_cycle / 1000.0;
    return s;
}

static const cli_tool T = {
    "watcher_latency",
    "usage: watcher_latency [--events N] [--json FILE]\n"
    "Round-trip latency GPU write -> watcher callback -> GPU, against a bare CPU spin-echo\n"
    "(docs/performance.md). Needs a CUDA GPU; exits 77 without one.\n"
    "  --events N    events per mode (default 20000)\n"
    "  --json FILE   also write the results as JSON\n"
    "  --help, --version\n"};

int main(int argc, char **argv)
{
    u64 n = 20000;
    const char *json = NULL;
    cli_common(&T, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--events")) n = cli_u64(&T, a, cli_value(&T, argc, argv, &i), 100, 100000000);
        else if (!strcmp(a, "--json")) json = cli_value(&T, argc, argv, &i);
        else cli_fail(&T, "unknown option '%s'", a);
    }
    int ndev = 0;
    if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
        printf("no CUDA device: nothing to measure\n");
        return 77;
    }
    CK(cudaSetDevice(0));
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));

    u64 *ack_h = NULL, *ack_d = NULL, *lat = NULL, *calib = NULL, *counter = NULL;
    CK(cudaHostAlloc((void **)&ack_h, 64, cudaHostAllocMapped | cudaHostAllocPortable));
    CK(cudaHostGetDevicePointer((void **)&ack_d, ack_h, 0));
    g_ack = ack_h;
    CK(cudaMalloc(&lat, n * sizeof(u64)));
    CK(cudaMalloc(&calib, 4 * sizeof(u64)));
    CK(cudaMalloc(&counter, sizeof(u64)));
    u64 *h_lat = (u64 *)malloc(n * sizeof(u64));

    /* ns per SM cycle, measured against %globaltimer over 200 ms of spinning. */
    u64 cal[4];
    k_calib<<<1, 1>>>(calib, 200000000ull);
    CK(cudaMemcpy(cal, calib, sizeof cal, cudaMemcpyDeviceToHost));
    double ns_per_cycle = (double)(cal[1] - cal[0]) / (double)(cal[3] - cal[2]);

    te_config cfg;
    te_config_init(&cfg);
    cfg.provider = "tcp";
    cfg.n_groups = 1;
    cfg.groups[0].cuda_device = TE_DEVICE_HOST;
    cfg.groups[0].n_nics = 1;
    cfg.groups[0].nics[0] = "lo";
    te_engine *e = NULL;
    if (te_engine_create(&cfg, &e)) {
        fprintf(stderr, "te_engine_create: %s\n", te_last_error());
        return 1;
    }
    const char *names[3] = {"watcher, persistent kernel", "watcher, CUDA graph replay",
                            "baseline: bare CPU spin-echo"};
    struct stats st[3];
    for (int mode = 0; mode < 3; mode++) {
        *ack_h = 0;
        te_watcher *w = NULL;
        u64 *word = NULL;
        pthread_t th;
        struct baseline_arg ba;
        if (mode < 2) {
            if (te_watcher_alloc(e, echo_cb, NULL, &w)) {
                fprintf(stderr, "te_watcher_alloc: %s\n", te_last_error());
                return 1;
            }
            word = (u64 *)te_watcher_device_ptr(w);
        } else {
            CK(cudaHostAlloc((void **)&word, 64, cudaHostAllocMapped | cudaHostAllocPortable));
            *word = 0;
            ba.word = word;
            ba.n = n;
            pthread_create(&th, NULL, baseline_thread, &ba);
        }
        if (mode == 1) {
            cudaStream_t s;
            cudaGraph_t g;
            cudaGraphExec_t ge;
            CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
            CK(cudaMemset(counter, 0, sizeof(u64)));
            CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
            k_graph_event<<<1, 1, 0, s>>>(word, ack_d, counter, lat);
            CK(cudaStreamEndCapture(s, &g));
            CK(cudaGraphInstantiate(&ge, g, 0));
            for (u64 i = 0; i < n; i++) CK(cudaGraphLaunch(ge, s));
            CK(cudaStreamSynchronize(s));
            CK(cudaGraphExecDestroy(ge));
            CK(cudaGraphDestroy(g));
            CK(cudaStreamDestroy(s));
        } else {
            k_loop<<<1, 1>>>(word, ack_d, n, lat, calib);
            CK(cudaDeviceSynchronize());
        }
        CK(cudaMemcpy(h_lat, lat, n * sizeof(u64), cudaMemcpyDeviceToHost));
        st[mode] = summarize(h_lat, n, ns_per_cycle);
        if (w) te_watcher_free(w);
        if (mode == 2) {
            pthread_join(th, NULL);
            CK(cudaFreeHost(word));
        }
    }
    te_engine_destroy(e);

    printf("\nWatcher latency, %s, %llu events per mode (round trip GPU write -> callback -> "
           "ack seen by GPU; us)\n", prop.name, n);
    printf("%-30s %7s %7s %7s %7s %7s %7s %9s\n", "mode", "mean", "p50", "p90", "p99", "p99.9",
           "max", "p50/2");
    for (int m = 0; m < 3; m++)
        printf("%-30s %7.2f %7.2f %7.2f %7.2f %7.2f %7.2f %9.2f\n", names[m], st[m].mean, st[m].p50,
               st[m].p90, st[m].p99, st[m].p999, st[m].max, st[m].p50 / 2);
    printf("watcher overhead over baseline (p50): %.2f us; ns per SM cycle %.4f\n",
           st[0].p50 - st[2].p50, ns_per_cycle);
    if (json) {
        FILE *f = fopen(json, "w");
        if (f) {
            fprintf(f, "{\"device\": \"%s\", \"events\": %llu, \"modes\": [", prop.name, n);
            for (int m = 0; m < 3; m++)
                fprintf(f, "%s{\"mode\": \"%s\", \"mean_us\": %.3f, \"p50_us\": %.3f, \"p90_us\": %.3f, "
                           "\"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": %.3f}",
                        m ? ", " : "", names[m], st[m].mean, st[m].p50, st[m].p90, st[m].p99,
                        st[m].p999, st[m].max);
            fprintf(f, "]}\n");
            fclose(f);
        }
    }
    free(h_lat);
    return 0;
}
