/* Watcher callbacks fire for writes from a plain kernel and from a replayed CUDA graph;
 * a callback returning false releases its slot, which is recycled zeroed. */
#include "gpu_common.h"

#define atomic_load(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define atomic_store(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#define atomic_fetch_add(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)

static unsigned long long g_new, g_old, g_calls;
static unsigned long long g_stop_at; /* return false when new == this */

static bool on_change(void *arg, uint64_t old_value, uint64_t new_value)
{
    (void)arg;
    atomic_store(&g_old, (unsigned long long)old_value);
    atomic_store(&g_new, (unsigned long long)new_value);
    atomic_fetch_add(&g_calls, 1);
    return new_value != atomic_load(&g_stop_at);
}

__global__ void k_write(unsigned long long *word, unsigned long long v)
{
    *(volatile unsigned long long *)word = v;
    __threadfence_system();
}

/* Graph body: the value comes from a device counter so every replay writes a new one. */
__global__ void k_write_next(unsigned long long *word, unsigned long long *counter)
{
    unsigned long long v = ++*counter;
    *(volatile unsigned long long *)word = v;
    __threadfence_system();
}

static void wait_new(unsigned long long v)
{
    double t0 = now_s();
    while (atomic_load(&g_new) != v) REQUIRE(now_s() - t0 < 5.0, "callback for %llu not seen (last %llu)",
                                              v, (unsigned long long)atomic_load(&g_new));
}

int main(void)
{
    if (!gpu_or_skip()) return SKIP;
    te_config cfg;
    engine_config(&cfg, test_provider(), TE_DEVICE_HOST);
    te_engine *e = NULL;
    REQUIRE(te_engine_create(&cfg, &e) == 0, "%s", te_last_error());
    te_watcher *w = NULL;
    atomic_store(&g_stop_at, ~0ull);
    REQUIRE(te_watcher_alloc(e, on_change, NULL, &w) == 0, "%s", te_last_error());
    printf("watcher memory: %s\n", te_watcher_memory_kind(e));
    REQUIRE(!strcmp(te_watcher_memory_kind(e), "mapped-host"), "expected mapped-host memory");
    unsigned long long *word = (unsigned long long *)te_watcher_device_ptr(w);

    /* Plain kernel launches. */
    for (unsigned long long v = 1; v <= 200; v++) {
        k_write<<<1, 1>>>(word, v);
        CK(cudaDeviceSynchronize());
        wait_new(v);
        REQUIRE(atomic_load(&g_old) == v - 1, "old %llu for new %llu",
                (unsigned long long)atomic_load(&g_old), v);
    }
    printf("kernel writes: 200 callbacks, old/new exact\n");

    /* Captured graph, replayed. */
    unsigned long long *counter = NULL;
    CK(cudaMalloc(&counter, sizeof *counter));
    unsigned long long start = 200;
    CK(cudaMemcpy(counter, &start, sizeof start, cudaMemcpyHostToDevice));
    cudaStream_t s;
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CK(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    k_write_next<<<1, 1, 0, s>>>(word, counter);
    CK(cudaStreamEndCapture(s, &g));
    CK(cudaGraphInstantiate(&ge, g, 0));
    for (unsigned long long v = 201; v <= 400; v++) {
        CK(cudaGraphLaunch(ge, s));
        CK(cudaStreamSynchronize(s));
        wait_new(v);
    }
    printf("graph replays: 200 callbacks\n");

    /* Release by returning false; the slot is recycled, zeroed. */
    atomic_store(&g_stop_at, 999ull);
    k_write<<<1, 1>>>(word, 999ull);
    CK(cudaDeviceSynchronize());
    wait_new(999);
    te_watcher *w2 = NULL;
    double t0 = now_s();
    /* The release happens right after the callback returned: retry until recycled. */
    for (;;) {
        REQUIRE(te_watcher_alloc(e, on_change, NULL, &w2) == 0, "%s", te_last_error());
        if (te_watcher_device_ptr(w2) == (uint64_t)(uintptr_t)word) break;
        te_watcher_free(w2);
        REQUIRE(now_s() - t0 < 5.0, "slot not recycled");
    }
    REQUIRE(*te_watcher_ptr(w2) == 0, "recycled word not zeroed");
    atomic_store(&g_stop_at, ~0ull);
    k_write<<<1, 1>>>(word, 5ull);
    CK(cudaDeviceSynchronize());
    wait_new(5);
    REQUIRE(atomic_load(&g_old) == 0, "recycled watcher old value %llu", (unsigned long long)atomic_load(&g_old));
    printf("release by callback + recycling: ok\n");

    CK(cudaGraphExecDestroy(ge));
    CK(cudaGraphDestroy(g));
    CK(cudaStreamDestroy(s));
    CK(cudaFree(counter));
    te_engine_destroy(e); /* frees w2 with the engine */
    printf("PASS\n");
    return 0;
}
