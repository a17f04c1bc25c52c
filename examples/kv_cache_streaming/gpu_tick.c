#include "gpu_tick.h"

#include "cuda/cuda_loader.h"
#include "tendril/te.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int CUresult;
typedef void *CUctx, *CUmod, *CUfn, *CUstrm, *CUgraph_, *CUgexec;

/* PTX of app_mix (common/app_util.h) applied in place to register x, t a scratch register. */
#define PTX_MIX(x, t)                                                                           \
    "  add.u64 " x ", " x ", 0x9e3779b97f4a7c15;\n"                                             \
    "  shr.u64 " t ", " x ", 30;\n  xor.b64 " x ", " x ", " t ";\n"                             \
    "  mul.lo.u64 " x ", " x ", 0xbf58476d1ce4e5b9;\n"                                          \
    "  shr.u64 " t ", " x ", 27;\n  xor.b64 " x ", " x ", " t ";\n"                             \
    "  mul.lo.u64 " x ", " x ", 0x94d049bb133111eb;\n"                                          \
    "  shr.u64 " t ", " x ", 31;\n  xor.b64 " x ", " x ", " t ";\n"

/* key of page k of layer l: app_mix(seed ^ l << 40 ^ k << 8), as kv_fill; %rd3 = seed,
 * %rd4 = layer, %rd5 = k; result in %rd6 (scratch %rd7). */
#define PTX_KEY                                                                                 \
    "  shl.b64 %rd6, %rd4, 40;\n  xor.b64 %rd6, %rd6, %rd3;\n"                                  \
    "  shl.b64 %rd7, %rd5, 8;\n  xor.b64 %rd6, %rd6, %rd7;\n" PTX_MIX("%rd6", "%rd7")

/* Grid-stride loop over words: %rd10 = first word, %rd12 = step (uses %r2..%r5). */
#define PTX_WORDS                                                                               \
    "  mov.u32 %r2, %ctaid.x;\n  mov.u32 %r3, %ntid.x;\n  mov.u32 %r4, %tid.x;\n"               \
    "  mov.u32 %r5, %nctaid.x;\n  mul.wide.u32 %rd10, %r2, %r3;\n"                              \
    "  cvt.u64.u32 %rd11, %r4;\n  add.u64 %rd10, %rd10, %rd11;\n  mul.wide.u32 %rd12, %r3, %r5;\n"

/* kv_layer: spin on %globaltimer for `ns` (the layer's compute), fence (system scope),
 * store `value` into the watcher word.
 * kv_gen: the layer's KV, as the attention kernel would write it: page k (= ctaid.y) of
 * layer `layer` at dst + k * words * 8 gets kv_fill's content (word w = app_mix(key + w)).
 * kv_check: on the decoder, counts the bytes that differ from kv_fill's content in page
 * k (= ctaid.y) of layer layer0 + ctaid.z, found at base + ctaid.z * lstride + slot *
 * words * 8 with slot = idx[k] (idx == 0: slot = k), and adds them to *bad. */
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
    "}\n"
    ".visible .entry kv_gen(.param .u64 p_dst, .param .u64 p_words, .param .u64 p_seed,\n"
    "                       .param .u64 p_layer)\n"
    "{\n"
    "  .reg .pred %p<2>;\n"
    "  .reg .b32 %r<6>;\n"
    "  .reg .b64 %rd<20>;\n"
    "  ld.param.u64 %rd1, [p_dst];\n"
    "  ld.param.u64 %rd2, [p_words];\n"
    "  ld.param.u64 %rd3, [p_seed];\n"
    "  ld.param.u64 %rd4, [p_layer];\n"
    "  mov.u32 %r1, %ctaid.y;\n"
    "  cvt.u64.u32 %rd5, %r1;\n"
    PTX_KEY
    "  mul.lo.u64 %rd9, %rd5, %rd2;\n"
    "  shl.b64 %rd9, %rd9, 3;\n"
    "  add.u64 %rd9, %rd1, %rd9;\n"
    PTX_WORDS
    "GLOOP:\n"
    "  setp.ge.u64 %p1, %rd10, %rd2;\n"
    "  @%p1 bra GDONE;\n"
    "  add.u64 %rd13, %rd6, %rd10;\n"
    PTX_MIX("%rd13", "%rd7")
    "  shl.b64 %rd15, %rd10, 3;\n"
    "  add.u64 %rd15, %rd9, %rd15;\n"
    "  st.u64 [%rd15], %rd13;\n"
    "  add.u64 %rd10, %rd10, %rd12;\n"
    "  bra GLOOP;\n"
    "GDONE:\n"
    "  ret;\n"
    "}\n"
    ".visible .entry kv_check(.param .u64 p_base, .param .u64 p_lstride, .param .u64 p_words,\n"
    "                         .param .u64 p_idx, .param .u64 p_seed, .param .u64 p_layer0,\n"
    "                         .param .u64 p_bad)\n"
    "{\n"
    "  .reg .pred %p<4>;\n"
    "  .reg .b32 %r<8>;\n"
    "  .reg .b64 %rd<32>;\n"
    "  ld.param.u64 %rd1, [p_base];\n"
    "  ld.param.u64 %rd2, [p_words];\n"
    "  ld.param.u64 %rd3, [p_seed];\n"
    "  ld.param.u64 %rd20, [p_lstride];\n"
    "  ld.param.u64 %rd21, [p_idx];\n"
    "  ld.param.u64 %rd22, [p_layer0];\n"
    "  ld.param.u64 %rd23, [p_bad];\n"
    "  mov.u32 %r1, %ctaid.y;\n"
    "  cvt.u64.u32 %rd5, %r1;\n"
    "  mov.u32 %r6, %ctaid.z;\n"
    "  cvt.u64.u32 %rd24, %r6;\n"
    "  add.u64 %rd4, %rd22, %rd24;\n"
    PTX_KEY
    "  mov.u64 %rd25, %rd5;\n"
    "  setp.eq.u64 %p1, %rd21, 0;\n"
    "  @%p1 bra NOIDX;\n"
    "  shl.b64 %rd26, %rd5, 2;\n"
    "  add.u64 %rd26, %rd21, %rd26;\n"
    "  ld.u32 %r7, [%rd26];\n"
    "  cvt.u64.u32 %rd25, %r7;\n"
    "NOIDX:\n"
    "  mul.lo.u64 %rd9, %rd25, %rd2;\n"
    "  shl.b64 %rd9, %rd9, 3;\n"
    "  add.u64 %rd9, %rd1, %rd9;\n"
    "  mul.lo.u64 %rd26, %rd24, %rd20;\n"
    "  add.u64 %rd9, %rd9, %rd26;\n"
    PTX_WORDS
    "  mov.u64 %rd27, 0;\n"
    "CLOOP:\n"
    "  setp.ge.u64 %p1, %rd10, %rd2;\n"
    "  @%p1 bra CDONE;\n"
    "  shl.b64 %rd15, %rd10, 3;\n"
    "  add.u64 %rd15, %rd9, %rd15;\n"
    "  ld.volatile.u64 %rd14, [%rd15];\n"
    "  add.u64 %rd13, %rd6, %rd10;\n"
    PTX_MIX("%rd13", "%rd7")
    "  xor.b64 %rd14, %rd14, %rd13;\n"
    "  mov.u32 %r7, 0;\n"
    "BYTES:\n" /* differing bytes of the word */
    "  and.b64 %rd28, %rd14, 255;\n"
    "  setp.ne.u64 %p2, %rd28, 0;\n"
    "  selp.u64 %rd29, 1, 0, %p2;\n"
    "  add.u64 %rd27, %rd27, %rd29;\n"
    "  shr.u64 %rd14, %rd14, 8;\n"
    "  add.u32 %r7, %r7, 1;\n"
    "  setp.lt.u32 %p3, %r7, 8;\n"
    "  @%p3 bra BYTES;\n"
    "  add.u64 %rd10, %rd10, %rd12;\n"
    "  bra CLOOP;\n"
    "CDONE:\n"
    "  setp.eq.u64 %p1, %rd27, 0;\n"
    "  @%p1 bra CRET;\n"
    "  atom.add.u64 %rd30, [%rd23], %rd27;\n"
    "CRET:\n"
    "  ret;\n"
    "}\n";

struct gpu_tick {
    void *lib;
    CUctx ctx;
    CUmod mod;
    CUfn fn, fn_gen, fn_check;
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
    CK(g->ModuleGetFunction(&g->fn_gen, g->mod, "kv_gen"));
    CK(g->ModuleGetFunction(&g->fn_check, g->mod, "kv_check"));
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

/* Blocks of 256 threads for `words` 64-bit words per page (at most 64 per page). */
static unsigned blocks_for(uint64_t words)
{
    uint64_t b = (words + 255) / 256;
    return b < 1 ? 1 : b > 64 ? 64 : (unsigned)b;
}

static CUresult launch_gen(gpu_tick *g, uint64_t dst, uint64_t page_len, uint32_t pages, uint64_t seed,
                           uint64_t layer)
{
    uint64_t words = page_len / 8;
    void *args[] = {&dst, &words, &seed, &layer};
    return g->LaunchKernel(g->fn_gen, blocks_for(words), pages, 1, 256, 1, 1, 0, g->stream, args, NULL);
}

int gpu_tick_launch(gpu_tick *g, uint64_t word, uint32_t layers, uint64_t compute_ns,
                    const gpu_kv_src *kv)
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
        CUresult r = 0;
        /* The layer's KV (and after the last layer the context) is complete before the
         * kernel that bumps the word starts: same stream. */
        if (kv && kv->page_len)
            r = launch_gen(g, kv->kv + (uint64_t)l * kv->pages * kv->page_len, kv->page_len, kv->pages,
                           kv->seed, l);
        if (!r && kv && kv->ctx_len && l + 1 == layers)
            r = launch_gen(g, kv->kv + (uint64_t)layers * kv->pages * kv->page_len, kv->ctx_len, 1,
                           kv->seed, layers);
        if (!r) r = g->LaunchKernel(g->fn, 1, 1, 1, 1, 1, 1, 0, g->stream, args, NULL);
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

int gpu_tick_check(gpu_tick *g, const gpu_kv_dst *d, uint64_t *bad)
{
    CK(g->CtxSetCurrent(g->ctx));
    /* Scratch: the bad-byte counter, then the page slots. Everything runs on the legacy
     * stream (stream 0), so the synchronous copies order with the kernels. */
    size_t scratch_len = 8 + 4 * (size_t)d->n;
    uint8_t *scratch = NULL;
    int r = tcu_dev_alloc(g->device, scratch_len, (void **)&scratch);
    if (r) {
        snprintf(g->err, sizeof g->err, "scratch: %s", te_last_error());
        return r;
    }
    uint64_t base = d->base, lstride = d->layer_stride, words = d->page_len / 8, seed = d->seed;
    uint64_t idx = (uint64_t)(uintptr_t)(scratch + 8), layer0 = 0, cnt = (uint64_t)(uintptr_t)scratch;
    r = d->n ? tcu_copy_to_dev(g->device, scratch + 8, d->slots, 4 * (size_t)d->n) : 0;
    CUresult cr = 0;
    if (!r && d->n && words) {
        void *args[] = {&base, &lstride, &words, &idx, &seed, &layer0, &cnt};
        cr = g->LaunchKernel(g->fn_check, blocks_for(words), d->n, d->layers, 256, 1, 1, 0, NULL, args,
                             NULL);
    }
    if (!r && !cr && d->ctx_len) {
        uint64_t cbase = d->base + d->ctx_offset, zero = 0, cwords = d->ctx_len / 8, clayer = d->layers;
        void *args[] = {&cbase, &zero, &cwords, &zero, &seed, &clayer, &cnt};
        cr = g->LaunchKernel(g->fn_check, blocks_for(cwords), 1, 1, 256, 1, 1, 0, NULL, args, NULL);
    }
    uint64_t v = 0;
    if (!r && !cr) r = tcu_copy_to_host(g->device, &v, scratch, 8);
    tcu_dev_free(g->device, scratch);
    if (cr) {
        snprintf(g->err, sizeof g->err, "kv_check launch: CUDA error %d", cr);
        return -EIO;
    }
    if (r) {
        snprintf(g->err, sizeof g->err, "%s", te_last_error());
        return r;
    }
    *bad = v;
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
