#include "gpu_tick.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef void *CUctx, *CUmod, *CUfn, *CUstrm, *CUgraph_, *CUgexec;

/* One kernel: spin on %globaltimer for `ns`, fence (system scope), store `value`. */
static const char kPtx[] =
    ".version 7.0\n"
    ".target sm_70\n"
    ".address_size 64\n"
    ".visible .entry kv_layer(.param .u64 p_ns, .param .u64 p_ptr, .param .u64 p_val)\n"
    "{\n"
    "  .reg .pred %p1;\n"
    "  .reg .b64 %rd<8>;\n"
    "  ld.param.u64 %rd1, [p_ns];\n"
    "  ld.param.u64 %rd5, [p_ptr];\n"
    "  ld.param.u64 %rd6, [p_val];\n"
    "  mov.u64 %rd2, %globaltimer;\n"
    "LOOP:\n"
    "  mov.u64 %rd3, %globaltimer;\n"
    "  sub.s64 %rd4, %rd3, %rd2;\n"
    "  setp.lt.u64 %p1, %rd4, %rd1;\n"
    "  @%p1 bra LOOP;\n"
    "  membar.sys;\n"
    "  st.volatile.u64 [%rd5], %rd6;\n"
    "  ret;\n"
    "}\n";

struct gpu_tick {
    void *lib;
    CUctx ctx;
    CUmod mod;
    CUfn fn;
    CUstrm stream;
    CUgexec exec;
    CUgraph_ graph;
    char err[160];
    CUresult (*Init)(unsigned);
    CUresult (*DeviceGet)(int *, int);
    CUresult (*PrimaryCtxRetain)(CUctx *, int);
    CUresult (*PrimaryCtxRelease)(int);
    CUresult (*CtxSetCurrent)(CUctx);
    CUresult (*ModuleLoadData)(CUmod *, const void *);
    CUresult (*ModuleGetFunction)(CUfn *, CUmod, const char *);
    CUresult (*ModuleUnload)(CUmod);
    CUresult (*StreamCreate)(CUstrm *, unsigned);
    CUresult (*StreamDestroy)(CUstrm);
    CUresult (*StreamSynchronize)(CUstrm);
    CUresult (*LaunchKernel)(CUfn, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                             unsigned, CUstrm, void **, void **);
    CUresult (*BeginCapture)(CUstrm, int);
    CUresult (*EndCapture)(CUstrm, CUgraph_ *);
    CUresult (*Instantiate)(CUgexec *, CUgraph_, unsigned long long);
    CUresult (*GraphLaunch)(CUgexec, CUstrm);
    CUresult (*GraphExecDestroy)(CUgexec);
    CUresult (*GraphDestroy)(CUgraph_);
    int device;
};

#define LOAD(field, name)                                                                       \
    do {                                                                                        \
        *(void **)&g->field = dlsym(g->lib, name);                                              \
        if (!g->field) goto nosym;                                                              \
    } while (0)

#define CK(call)                                                                                \
    do {                                                                                        \
        CUresult _r = (call);                                                                   \
        if (_r) {                                                                               \
            snprintf(g->err, sizeof g->err, "%s failed: CUDA error %d", #call, _r);            \
            return -EIO;                                                                        \
        }                                                                                       \
    } while (0)

static int setup(gpu_tick *g)
{
    CK(g->Init(0));
    int dev;
    CK(g->DeviceGet(&dev, g->device));
    CK(g->PrimaryCtxRetain(&g->ctx, dev));
    CK(g->CtxSetCurrent(g->ctx));
    CK(g->ModuleLoadData(&g->mod, kPtx));
    CK(g->ModuleGetFunction(&g->fn, g->mod, "kv_layer"));
    CK(g->StreamCreate(&g->stream, 1 /* non-blocking */));
    return 0;
}

int gpu_tick_open(int device, gpu_tick **out)
{
    gpu_tick *g = calloc(1, sizeof *g);
    if (!g) return -ENOMEM;
    g->device = device;
    g->lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!g->lib) {
        free(g);
        return -ENOTSUP;
    }
    LOAD(Init, "cuInit");
    LOAD(DeviceGet, "cuDeviceGet");
    LOAD(PrimaryCtxRetain, "cuDevicePrimaryCtxRetain");
    LOAD(PrimaryCtxRelease, "cuDevicePrimaryCtxRelease_v2");
    LOAD(CtxSetCurrent, "cuCtxSetCurrent");
    LOAD(ModuleLoadData, "cuModuleLoadData");
    LOAD(ModuleGetFunction, "cuModuleGetFunction");
    LOAD(ModuleUnload, "cuModuleUnload");
    LOAD(StreamCreate, "cuStreamCreate");
    LOAD(StreamDestroy, "cuStreamDestroy_v2");
    LOAD(StreamSynchronize, "cuStreamSynchronize");
    LOAD(LaunchKernel, "cuLaunchKernel");
    LOAD(BeginCapture, "cuStreamBeginCapture_v2");
    LOAD(EndCapture, "cuStreamEndCapture");
    LOAD(Instantiate, "cuGraphInstantiateWithFlags");
    LOAD(GraphLaunch, "cuGraphLaunch");
    LOAD(GraphExecDestroy, "cuGraphExecDestroy");
    LOAD(GraphDestroy, "cuGraphDestroy");
    int r = setup(g);
    if (r) {
        fprintf(stderr, "gpu_tick: %s\n", g->err);
        gpu_tick_close(g);
        return -ENOTSUP;
    }
    *out = g;
    return 0;
nosym:
    dlclose(g->lib);
    free(g);
    return -ENOTSUP;
}

int gpu_tick_launch(gpu_tick *g, uint64_t word, uint32_t layers, uint64_t compute_ns)
{
    CK(g->CtxSetCurrent(g->ctx));
    if (g->exec) {
        g->GraphExecDestroy(g->exec);
        g->exec = NULL;
    }
    if (g->graph) {
        g->GraphDestroy(g->graph);
        g->graph = NULL;
    }
    /* Capture the per-layer kernels into a graph, as a model's forward pass would be. */
    CK(g->BeginCapture(g->stream, 2 /* CU_STREAM_CAPTURE_MODE_RELAXED */));
    for (uint32_t l = 0; l < layers; l++) {
        uint64_t ns = compute_ns, ptr = word, val = (uint64_t)l + 1;
        void *args[] = {&ns, &ptr, &val};
        CUresult r = g->LaunchKernel(g->fn, 1, 1, 1, 1, 1, 1, 0, g->stream, args, NULL);
        if (r) {
            CUgraph_ tmp = NULL;
            g->EndCapture(g->stream, &tmp);
            if (tmp) g->GraphDestroy(tmp);
            snprintf(g->err, sizeof g->err, "cuLaunchKernel failed: CUDA error %d", r);
            return -EIO;
        }
    }
    CK(g->EndCapture(g->stream, &g->graph));
    CK(g->Instantiate(&g->exec, g->graph, 0));
    CK(g->GraphLaunch(g->exec, g->stream));
    return 0;
}

int gpu_tick_wait(gpu_tick *g)
{
    CK(g->CtxSetCurrent(g->ctx));
    CK(g->StreamSynchronize(g->stream));
    return 0;
}

const char *gpu_tick_error(const gpu_tick *g) { return g->err; }

void gpu_tick_close(gpu_tick *g)
{
    if (!g) return;
    if (g->ctx) g->CtxSetCurrent(g->ctx);
    if (g->stream) g->StreamSynchronize(g->stream);
    if (g->exec) g->GraphExecDestroy(g->exec);
    if (g->graph) g->GraphDestroy(g->graph);
    if (g->stream) g->StreamDestroy(g->stream);
    if (g->mod) g->ModuleUnload(g->mod);
    if (g->ctx) g->PrimaryCtxRelease(g->device);
    dlclose(g->lib);
    free(g);
}
