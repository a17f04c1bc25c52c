/* GDRCopy through dlopen: see gdr_loader.h. The declarations below follow the
 * public gdrapi ABI (gdr_t is an opaque pointer, gdr_mh_t a struct of one unsigned
 * long passed by value). */
#include "cuda/gdr_loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/env.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"

#define GPU_PAGE (64u * 1024u)

typedef struct { unsigned long h; } gdr_mh;
typedef void *gdr_h;

static struct {
    gdr_h (*open)(void);
    int (*close)(gdr_h g);
    int (*pin)(gdr_h g, unsigned long addr, size_t size, uint64_t tok, uint32_t va_space, gdr_mh *mh);
    int (*unpin)(gdr_h g, gdr_mh mh);
    int (*map)(gdr_h g, gdr_mh mh, void **va, size_t size);
    int (*unmap)(gdr_h g, gdr_mh mh, void *va, size_t size);
} G;
static gdr_h g_handle;
static int g_status;
static char g_why[200];
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER; /* gdr handle calls */

static void load_once(void)
{
    if (!tn_env_flag_warn("TENDRIL_GDRCOPY", true)) {
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "GDRCopy disabled by TENDRIL_GDRCOPY=0");
        return;
    }
    void *h = dlopen("libgdrapi.so.2", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libgdrapi.so", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "GDRCopy library libgdrapi.so.2 not found");
        return;
    }
    *(void **)&G.open = dlsym(h, "gdr_open");
    *(void **)&G.close = dlsym(h, "gdr_close");
    *(void **)&G.pin = dlsym(h, "gdr_pin_buffer");
    *(void **)&G.unpin = dlsym(h, "gdr_unpin_buffer");
    *(void **)&G.map = dlsym(h, "gdr_map");
    *(void **)&G.unmap = dlsym(h, "gdr_unmap");
    if (!G.open || !G.close || !G.pin || !G.unpin || !G.map || !G.unmap) {
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "libgdrapi lacks a gdr_* symbol");
        return;
    }
    g_handle = G.open();
    if (!g_handle) {
        g_status = -ENOSYS;
        snprintf(g_why, sizeof g_why, "gdr_open failed (GDRCopy driver gdrdrv not loaded?)");
    }
}

int tgdr_alloc(int dev, tgdr_buf *out)
{
    pthread_once(&g_once, load_once);
    if (g_status) return tn_err(g_status, "%s", g_why);
    const tcu_api *cu;
    int r = tcu_load(&cu);
    if (r) return r;
    memset(out, 0, sizeof *out);
    out->dev = dev;
    if ((r = tcu_ctx_enter(dev))) return r;
    tcu_result cr = cu->cuMemAlloc(&out->alloc, 2 * GPU_PAGE);
    if (cr) {
        tcu_ctx_leave(dev);
        return tn_err(-ENOMEM, "cuMemAlloc for a GDRCopy flag: %s", tcu_strerror(cr));
    }
    out->dptr = (out->alloc + GPU_PAGE - 1) & ~(uint64_t)(GPU_PAGE - 1);
    out->size = GPU_PAGE;
    unsigned one = 1; /* synchronous memory operations on this buffer, as GDRCopy asks */
    cu->cuPointerSetAttribute(&one, TCU_POINTER_ATTRIBUTE_SYNC_MEMOPS, out->dptr);
    gdr_mh mh = {0};
    pthread_mutex_lock(&g_lock);
    int gr = G.pin(g_handle, (unsigned long)out->dptr, out->size, 0, 0, &mh);
    if (!gr) {
        gr = G.map(g_handle, mh, &out->map, out->size);
        if (gr) G.unpin(g_handle, mh);
    }
    pthread_mutex_unlock(&g_lock);
    if (gr) {
        cu->cuMemFree(out->alloc);
        tcu_ctx_leave(dev);
        return tn_err(-ENOSYS, "gdr_pin_buffer/gdr_map failed (%d)", gr);
    }
    out->handle = mh.h;
    memset(out->map, 0, 64);
    tcu_ctx_keep(dev); /* the allocation lives in the primary context: keep it alive */
    tcu_ctx_leave(dev);
    return 0;
}

void tgdr_release(tgdr_buf *b)
{
    if (!b || !b->map) return;
    const tcu_api *cu;
    gdr_mh mh = {.h = (unsigned long)b->handle};
    pthread_mutex_lock(&g_lock);
    G.unmap(g_handle, mh, b->map, b->size);
    G.unpin(g_handle, mh);
    pthread_mutex_unlock(&g_lock);
    if (!tcu_load(&cu) && !tcu_ctx_enter(b->dev)) {
        cu->cuMemFree(b->alloc);
        tcu_ctx_leave(b->dev);
        tcu_ctx_unkeep(b->dev);
    }
    b->map = NULL;
}
