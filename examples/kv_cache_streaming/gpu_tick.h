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
/* Captures layers x (spin compute_ns; store l+1 to word) into a CUDA graph, launches it
 * and returns at once (the host does not take part per layer). */
int gpu_tick_launch(gpu_tick *g, uint64_t word_device_ptr, uint32_t layers, uint64_t compute_ns);
/* Waits until the launched graph finished (before the watcher word is released). */
int gpu_tick_wait(gpu_tick *g);
const char *gpu_tick_error(const gpu_tick *g);
void gpu_tick_close(gpu_tick *g);

#endif
