/* KV-cache streaming for disaggregated prefill/decode (paper §"KvCache transfer").
 *
 * Decoder: owns a pool of KV pages (layers x slots x page_len, HND: each page holds all
 * heads of its tokens, so one page is one contiguous write), arms one immediate
 * expectation per request (layers x pages + prefiller NICs), sends the request (its
 * address, its MR descriptor, page indices) with te_send and waits until the counter is
 * reached: no completion message. A per-request deadline turns into a cancel request; the
 * pages are reused only after the prefiller confirms the cancellation.
 *
 * Prefiller: per request a "model" thread computes layer after layer and increments a
 * scalar watcher word after each layer (on a GPU the model does this inside its CUDA
 * graph, see docs/applications.md); the watcher callback issues one te_write_paged per
 * finished layer (one write per page, one immediate per page) and, after the last layer,
 * the context (last-token hidden states / logits) with one sharded te_write. A cancel
 * stops further writes, waits for the ones in flight, then confirms. */
#ifndef TENDRIL_KV_CACHE_H
#define TENDRIL_KV_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "tendril/te.h"

typedef struct kv_shape {
    uint32_t layers;   /* transformer layers */
    uint32_t pages;    /* max pages per request */
    uint64_t page_len; /* bytes of one page of one layer (multiple of 8) */
    uint64_t ctx_len;  /* bytes of the last chunk's context (multiple of 8, may be 0) */
} kv_shape;

/* ------------------------------------------------------------- prefiller ---- */

typedef struct kv_prefiller kv_prefiller;

typedef struct kv_prefiller_opts {
    kv_shape shape;
    uint32_t compute_us; /* simulated compute time per layer */
    bool verbose;        /* per-layer timing table on stderr after each request */
    bool gpu_watcher;    /* the layer loop runs on the GPU (a captured CUDA graph whose
                            kernels store the layer count into the watcher word); needs a
                            CUDA driver: -ENOTSUP otherwise */
    int gpu_device;      /* CUDA ordinal for gpu_watcher */
    bool gpu_kv;         /* with gpu_watcher: the KV pages live in device memory of
                            gpu_device and each layer's kernels write them before bumping
                            the word (the engine's group must drive that GPU) */
} kv_prefiller_opts;

typedef struct kv_prefiller_stats {
    uint64_t requests, completed, cancelled, rejected;
    uint64_t layers_issued;  /* paged writes submitted, over all requests */
    uint64_t write_errors;   /* writes that completed with an error */
    /* last completed request: */
    double last_compute_ms, last_transfer_ms_max, last_exposed_ms;
    uint32_t last_hidden_layers, last_layers;
} kv_prefiller_stats;

int kv_prefiller_create(const te_config *cfg, const kv_prefiller_opts *o, kv_prefiller **out);
int kv_prefiller_address(const kv_prefiller *p, te_addr *out);
uint32_t kv_prefiller_nics(const kv_prefiller *p);
void kv_prefiller_get_stats(kv_prefiller *p, kv_prefiller_stats *s);
void kv_prefiller_destroy(kv_prefiller *p);

/* --------------------------------------------------------------- decoder ---- */

typedef struct kv_decoder kv_decoder;

typedef struct kv_decoder_opts {
    kv_shape shape;
    uint32_t slots; /* pages per layer in the pool */
    bool gpu_pool;  /* the pool is device memory of gpu_device (the engine's group must
                       drive that GPU); arrivals are checked by a kernel on the device */
    int gpu_device;
} kv_decoder_opts;

typedef struct kv_result {
    int status;          /* 0, -ETIMEDOUT (deadline), -EBUSY (pages not free), -EREMOTEIO
                            (prefiller rejected), other -errno */
    bool confirmed;      /* on timeout: the prefiller confirmed the cancellation */
    uint32_t fires;      /* how often the counter fired (must be 1 on success) */
    uint64_t expected;   /* immediates armed */
    uint64_t ttft_us;    /* request sent -> counter reached (TTFT-like) */
    uint64_t bad_bytes;  /* verification: bytes that differ from what the prefiller computed */
} kv_result;

int kv_decoder_create(const te_config *cfg, const kv_decoder_opts *o, kv_decoder **out);
/* One request: pages[0..n) are pool slots (distinct, < slots). deadline_ms bounds the
 * wait for the KV, cancel_wait_ms the wait for the cancel confirmation. Pages return to
 * the free state on success and on a confirmed cancel; an unconfirmed cancel leaves them
 * quarantined until a confirmation arrives (if ever). */
int kv_decoder_run(kv_decoder *d, const te_addr *prefiller, uint32_t prefiller_nics,
                   const uint32_t *pages, uint32_t n, uint64_t seed, int deadline_ms,
                   int cancel_wait_ms, kv_result *res);
/* Immediates of a request that arrived after its cancellation was confirmed (must be 0). */
uint64_t kv_decoder_late_imms(kv_decoder *d);
/* Hash over the given pages of every layer (to show they are not written any more). */
uint64_t kv_decoder_hash_pages(kv_decoder *d, const uint32_t *pages, uint32_t n);
/* Slots currently quarantined (waiting for a cancel confirmation). */
uint32_t kv_decoder_quarantined(kv_decoder *d);
void kv_decoder_destroy(kv_decoder *d);

/* Content the prefiller "computes" for (seed, layer, page position): 64-bit words. */
void kv_fill(uint8_t *buf, uint64_t len, uint64_t seed, uint32_t layer, uint32_t page);

#endif
