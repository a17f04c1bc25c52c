/* GPU variant of the prefiller's layer loop: a CUDA graph of one kernel per layer; each
 * kernel "computes" (spins for compute_ns on the GPU clock) and then stores the layer
 * count into the watcher word (te_watcher_device_ptr) with a system-scope fence, as a
 * model's attention-output kernel would. Uses the CUDA driver API through dlopen, so the
 * example builds without the CUDA toolkit; gpu_tick_open fails with -ENOTSUP where no
 * driver/GPU exists. */
#ifndef TENDRIL_KV_GPU_TICK_H
#define TENDRIL_KV_GPU_TICK_H

#include <stdint.h>

typedef struct gpu_tick gpu_tick;

int gpu_tick_open(int device, gpu_tick **out);

/* The prefiller's KV in device memory, produced by the graph: layer l's page k at
 * kv + (l * pages + k) * page_len, the context (ctx_len bytes) after the last layer;
 * contents as kv_fill(seed, layer, page). */
typedef struct gpu_kv_src {
    uint64_t kv; /* device address */
    uint64_t page_len, ctx_len, seed;
    uint32_t pages;
} gpu_kv_src;

/* Captures layers x ([write layer l's KV pages;] spin compute_ns; store l+1 to word)
 * into a CUDA graph, launches it and returns at once (the host does not take part per
 * layer). kv NULL: no KV is produced on the GPU (host-memory KV). */
int gpu_tick_launch(gpu_tick *g, uint64_t word_device_ptr, uint32_t layers, uint64_t compute_ns,
                    const gpu_kv_src *kv);

/* The decoder's pool in device memory: layer l's copy of request page k at
 * base + l * layer_stride + slots[k] * page_len, the context at base + ctx_offset. */
typedef struct gpu_kv_dst {
    uint64_t base, layer_stride, page_len, ctx_offset, ctx_len, seed;
    const uint32_t *slots; /* host array of n slots */
    uint32_t n, layers;
} gpu_kv_dst;

/* Counts, with a kernel on the device, the bytes of the request's pages and context
 * that differ from kv_fill's content. Synchronous. */
int gpu_tick_check(gpu_tick *g, const gpu_kv_dst *d, uint64_t *bad);
/* Waits until the launched graph finished (before the watcher word is released). */
int gpu_tick_wait(gpu_tick *g);
const char *gpu_tick_error(const gpu_tick *g);
void gpu_tick_close(gpu_tick *g);

#endif
