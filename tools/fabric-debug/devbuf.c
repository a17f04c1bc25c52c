#include "devbuf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_loader.h"
#include "tendril/te.h"

int devbuf_check_gpu(int gpu, char *err, size_t cap)
{
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) {
        snprintf(err, cap, "no usable CUDA driver: %s", te_last_error());
        return r;
    }
    int n = tcu_device_count();
    if (gpu >= n) {
        snprintf(err, cap, "no CUDA device %d (%d visible)", gpu, n);
        return -ENODEV;
    }
    return 0;
}

int devbuf_alloc(int gpu, size_t len, uint8_t **out)
{
    if (gpu >= 0) return tcu_dev_alloc(gpu, len, (void **)out);
    uint8_t *p = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    if (!p) return -ENOMEM;
    memset(p, 0, len);
    *out = p;
    return 0;
}

void devbuf_free(int gpu, uint8_t *p)
{
    if (gpu >= 0) tcu_dev_free(gpu, p);
    else free(p);
}

int devbuf_put(int gpu, uint8_t *dst, const uint8_t *src, size_t len)
{
    if (gpu >= 0) return tcu_copy_to_dev(gpu, dst, src, len);
    memcpy(dst, src, len);
    return 0;
}

int devbuf_get(int gpu, uint8_t *dst, const uint8_t *src, size_t len)
{
    if (gpu >= 0) return tcu_copy_to_host(gpu, dst, src, len);
    memcpy(dst, src, len);
    return 0;
}
