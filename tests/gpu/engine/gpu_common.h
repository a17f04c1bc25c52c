/* Shared helpers of the engine's GPU tests (CUDA C, compiled by nvcc). */
#ifndef TENDRIL_GPU_ENGINE_COMMON_H
#define TENDRIL_GPU_ENGINE_COMMON_H

#include <cuda_runtime.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tendril/te.h"

#define SKIP 77

#define CK(x)                                                                                \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_)); \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

#define REQUIRE(c, ...)                                                                      \
    do {                                                                                     \
        if (!(c)) {                                                                          \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c);            \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, "\n");                                                           \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

static inline int gpu_or_skip(void)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device (%s)\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        return 0;
    }
    CK(cudaSetDevice(0));
    CK(cudaFree(0)); /* create the primary context */
    return n;
}

static inline const char *test_provider(void)
{
    const char *p = getenv("TENDRIL_TEST_PROVIDER");
    return p && *p ? p : "tcp";
}

/* One group for `device` (TE_DEVICE_HOST or a GPU) on the provider; tcp runs on lo. */
static inline void engine_config(te_config *c, const char *provider, int device)
{
    te_config_init(c);
    c->provider = provider;
    c->n_groups = 1;
    c->groups[0].cuda_device = device;
    c->groups[0].n_nics = 1;
    if (strstr(provider, "tcp")) c->groups[0].nics[0] = "lo";
}

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#endif
