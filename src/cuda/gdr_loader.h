/* GDRCopy (libgdrapi) loaded at run time: a CPU mapping of a small piece of GPU memory,
 * so the CPU can store a flag straight into device memory. Optional: when the library
 * or its kernel driver (/dev/gdrdrv) is missing, callers fall back to mapped pinned
 * host memory. Set TENDRIL_GDRCOPY=0 to never use it. */
#ifndef TENDRIL_GDR_LOADER_H
#define TENDRIL_GDR_LOADER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tgdr_buf {
    int dev;
    uint64_t alloc;        /* cuMemAlloc'ed block (freed at release) */
    uint64_t dptr;         /* GPU-page aligned device address handed to kernels */
    void *map;             /* CPU mapping of dptr (write-combined) */
    size_t size;           /* pinned/mapped bytes (one GPU page) */
    uint64_t handle;       /* gdr memory handle */
} tgdr_buf;

/* Allocates one GPU page on device `dev` and maps it for the CPU. 0, or a negative
 * errno (-ENOSYS: no library / no driver) with te_last_error() saying why. */
int tgdr_alloc(int dev, tgdr_buf *out);
void tgdr_release(tgdr_buf *b);

#endif
