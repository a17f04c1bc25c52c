/* Where fabric-debug's measured buffers live: host memory (default) or device memory of
 * one GPU (--gpu N, cuMemAlloc through the project's driver loader). Both the engine and
 * the raw baseline register the same buffers; filling and checking go through these
 * helpers so the workload code does not care where the bytes are. */
#ifndef FABRIC_DEBUG_DEVBUF_H
#define FABRIC_DEBUG_DEVBUF_H

#include <stddef.h>
#include <stdint.h>

/* 0, or a negative errno with a message in err: no CUDA driver, no device `gpu`. */
int devbuf_check_gpu(int gpu, char *err, size_t cap);
/* len zeroed bytes, 4 KiB aligned on the host; gpu < 0 means host memory. */
int devbuf_alloc(int gpu, size_t len, uint8_t **out);
void devbuf_free(int gpu, uint8_t *p);
/* Copies host bytes into the buffer / buffer bytes out to the host. */
int devbuf_put(int gpu, uint8_t *dst, const uint8_t *src, size_t len);
int devbuf_get(int gpu, uint8_t *dst, const uint8_t *src, size_t len);

#endif
