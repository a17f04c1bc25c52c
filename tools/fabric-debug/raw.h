/* The raw-provider baseline of fabric-debug: the same workloads written with plain
 * libfabric calls on one thread (no engine, no queues, no callbacks), so the engine's
 * overhead shows up as a ratio in the same run. Deliberately minimal and separate from
 * src/transport/fabric/fabric.c: it is the yardstick, not a second implementation. */
#ifndef FABRIC_DEBUG_RAW_H
#define FABRIC_DEBUG_RAW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct raw_ep raw_ep;

typedef struct raw_region {
    void *ptr;
    size_t len;
    void *desc;
    uint64_t key;
    void *mr;
} raw_region;

/* Opens an RDM endpoint of `provider` (full name, e.g. "tcp;ofi_rxm") on domain `nic`.
 * hmem: ask for FI_HMEM (and accept FI_MR_HMEM), as the engine does for a GPU group. */
int raw_open(const char *provider, const char *nic, bool hmem, raw_ep **out, char *err,
             size_t errcap);
void raw_close(raw_ep *r);
int raw_name(raw_ep *r, uint8_t *addr, size_t *len);
/* gpu >= 0: ptr is CUDA device memory of that ordinal (fi_mr_regattr, FI_HMEM_CUDA). */
int raw_register(raw_ep *r, void *ptr, size_t len, bool remote, int gpu, raw_region *out);
void raw_deregister(raw_region *reg);
int raw_connect(raw_ep *r, const uint8_t *addr, size_t len);
/* Remote address of byte `off` of a region whose base VA is `base` (VA or offset mode). */
uint64_t raw_remote_addr(raw_ep *r, uint64_t base, uint64_t off);
/* Posts one write; returns 0, -EAGAIN, or another negative errno. */
int raw_write(raw_ep *r, const raw_region *src, uint64_t src_off, size_t len, uint64_t raddr,
              uint64_t rkey, bool has_imm, uint32_t imm, bool more);
/* Drains completions: *writes += local write completions, *imms += arrived immediates
 * (the value of the last one in *last_imm). Returns < 0 on a completion error. */
int raw_poll(raw_ep *r, uint64_t *writes, uint64_t *imms, uint32_t *last_imm);

#endif
