/* kv_cache_streaming: disaggregated prefill/decode over the TransferEngine.
 *
 * Usage in the T.usage text below. The prefiller of the two-terminal mode serves until
 * SIGINT or SIGTERM (Ctrl-C), not until its stdin closes, so it also runs in the
 * background, under nohup or from a service manager. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "common/app_util.h"
#include "kv_cache_streaming/kv_cache.h"

static const cli_tool T = {
    "kv_cache_streaming",
    "usage: kv_cache_streaming [opts]                decoder here, prefiller as a child process\n"
    "       kv_cache_streaming --role prefiller [opts]\n"
    "                        prints its address; serves until Ctrl-C (SIGINT) or SIGTERM\n"
    "       kv_cache_streaming --role decoder --peer ADDRESS --peer-nics N [opts]\n"
    "Disaggregated prefill/decode: the prefiller writes each layer's KV pages into the\n"
    "decoder's cache as the layer completes (docs/applications.md).\n"
    "options:\n"
    "  --provider P       tcp, shm, efa, verbs, ... (default $TENDRIL_PROVIDER or tcp)\n"
    "  --layers L         layers per request (default 32)\n"
    "  --pages P          KV pages per layer (default 64)\n"
    "  --page-kb K        page size in KiB (default 32)\n"
    "  --ctx-kb K         context block in KiB (default 16)\n"
    "  --compute-us U     simulated compute per layer (default 2000)\n"
    "  --requests R       requests to run (default 3)\n"
    "  --deadline-ms D    per-request deadline (default 20000)\n"
    "  --cancel-demo      one request whose deadline is shorter than the prefill: cancel and\n"
    "                     confirmation\n"
    "  --gpu-watcher      the layer loop is a CUDA graph on GPU 0 whose kernels bump the\n"
    "                     watcher word (needs a CUDA driver)\n"
    "  --gpu N            everything on GPU N: the prefiller's KV pages in device memory,\n"
    "                     written by the graph's kernels layer by layer, the decoder's pool\n"
    "                     in device memory, checked by a kernel; needs a provider that\n"
    "                     registers GPU memory (exit 77 with the reason where it cannot,\n"
    "                     unless TENDRIL_GPU_REQUIRE_HMEM=1)\n"
    "  --help, --version\n"};

typedef struct opts {
    const char *provider, *role, *peer;
    uint32_t peer_nics, layers, pages, requests, compute_us;
    uint64_t page_kb, ctx_kb;
    int deadline_ms;
    int cancel_demo, gpu_watcher;
    int gpu; /* --gpu N; -1: host memory */
} opts;

static void parse(int argc, char **argv, opts *o)
{
    *o = (opts){.provider = "", .role = "both", .peer_nics = 1, .layers = 32, .pages = 64,
                .requests = 3, .compute_us = 2000, .page_kb = 32, .ctx_kb = 16,
                .deadline_ms = 20000, .gpu = -1};
    cli_common(&T, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--cancel-demo")) { o->cancel_demo = 1; continue; }
        if (!strcmp(a, "--gpu-watcher")) { o->gpu_watcher = 1; continue; }
        if (strncmp(a, "--", 2)) cli_fail(&T, "unexpected argument '%s'", a);
        if (strcmp(a, "--provider") && strcmp(a, "--role") && strcmp(a, "--peer") &&
            strcmp(a, "--peer-nics") && strcmp(a, "--layers") && strcmp(a, "--pages") &&
            strcmp(a, "--requests") && strcmp(a, "--compute-us") && strcmp(a, "--page-kb") &&
            strcmp(a, "--ctx-kb") && strcmp(a, "--deadline-ms") && strcmp(a, "--gpu"))
            cli_fail(&T, "unknown option '%s'", a);
        const char *v = cli_value(&T, argc, argv, &i);
        if (!strcmp(a, "--provider")) o->provider = v;
        else if (!strcmp(a, "--role")) {
            if (strcmp(v, "both") && strcmp(v, "prefiller") && strcmp(v, "decoder") &&
                strcmp(v, "prefiller-child"))
                cli_fail(&T, "option '--role': '%s' is not prefiller or decoder", v);
            o->role = v;
        }
        else if (!strcmp(a, "--peer")) o->peer = v;
        else if (!strcmp(a, "--peer-nics")) o->peer_nics = (uint32_t)cli_u64(&T, a, v, 1, TE_MAX_NICS);
        else if (!strcmp(a, "--layers")) o->layers = (uint32_t)cli_u64(&T, a, v, 1, 4096);
        else if (!strcmp(a, "--pages")) o->pages = (uint32_t)cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--requests")) o->requests = (uint32_t)cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--compute-us")) o->compute_us = (uint32_t)cli_u64(&T, a, v, 0, 60000000);
        else if (!strcmp(a, "--page-kb")) o->page_kb = cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--ctx-kb")) o->ctx_kb = cli_u64(&T, a, v, 1, 1u << 20);
        else if (!strcmp(a, "--deadline-ms")) o->deadline_ms = (int)cli_u64(&T, a, v, 1, 3600000);
        else o->gpu = (int)cli_u64(&T, a, v, 0, 1023), o->gpu_watcher = 1; /* --gpu */
    }
}

/* Exit status for a failure to set up: 77 (skipped) when this machine cannot run the
 * GPU variant (no CUDA driver/GPU, provider without FI_HMEM), unless
 * TENDRIL_GPU_REQUIRE_HMEM=1 says it must. */
static int setup_failed(int r)
{
    const char *req = getenv("TENDRIL_GPU_REQUIRE_HMEM");
    bool cannot = r == -EOPNOTSUPP || r == -ENOTSUP || r == -ENOSYS || r == -ENODEV;
    if (cannot && !(req && *req == '1')) {
        const char *why = te_last_error();
        printf("SKIP: the GPU variant cannot run here: %s%s%s%s (details on stderr)\n", te_strerror(r),
               *why ? " (" : "", why, *why ? ")" : "");
        return 77;
    }
    return 1;
}

static kv_shape shape_of(const opts *o)
{
    return (kv_shape){.layers = o->layers, .pages = o->pages, .page_len = o->page_kb * 1024,
                      .ctx_len = o->ctx_kb * 1024};
}

static int run_prefiller(const opts *o, int child)
{
    /* Standalone, the prefiller stops on SIGINT/SIGTERM, taken with sigwait: blocked here,
     * before the engine's threads start, so that every thread inherits the mask. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (!child) pthread_sigmask(SIG_BLOCK, &stop, NULL);
    te_config cfg;
    app_config(&cfg, o->provider);
    if (o->gpu >= 0) cfg.groups[0].cuda_device = o->gpu;
    kv_prefiller_opts po = {.shape = shape_of(o), .compute_us = o->compute_us, .verbose = true,
                            .gpu_watcher = o->gpu_watcher != 0, .gpu_device = o->gpu >= 0 ? o->gpu : 0,
                            .gpu_kv = o->gpu >= 0};
    kv_prefiller *pf;
    int r = kv_prefiller_create(&cfg, &po, &pf);
    if (r) {
        fprintf(stderr, "prefiller: %s (%s)\n", te_strerror(r), te_last_error());
        if (child) app_reply("error %d", r);
        return 1;
    }
    te_addr a;
    char hex[TE_ADDR_TEXT_MAX];
    kv_prefiller_address(pf, &a);
    te_addr_format(&a, hex, sizeof hex);
    if (child) {
        app_reply("ready %s %u", hex, kv_prefiller_nics(pf));
        char line[256];
        while (app_read_line(line, sizeof line, -1) == 0 && strcmp(line, "quit")) {
        }
    } else {
        printf("prefiller ready: --peer %s --peer-nics %u\n"
               "serving until Ctrl-C (SIGINT) or SIGTERM\n", hex, kv_prefiller_nics(pf));
        fflush(stdout);
        int sig = 0;
        sigwait(&stop, &sig);
        printf("prefiller: signal %d, stopping\n", sig);
    }
    kv_prefiller_destroy(pf);
    return 0;
}

static int run_decoder(const opts *o, const te_addr *peer, uint32_t peer_nics)
{
    te_config cfg;
    app_config(&cfg, o->provider);
    if (o->gpu >= 0) cfg.groups[0].cuda_device = o->gpu;
    kv_decoder_opts dopts = {.shape = shape_of(o), .slots = 4 * o->pages, .gpu_pool = o->gpu >= 0,
                             .gpu_device = o->gpu};
    kv_decoder *d;
    int r = kv_decoder_create(&cfg, &dopts, &d);
    if (r) {
        fprintf(stderr, "decoder: %s (%s)\n", te_strerror(r), te_last_error());
        return o->gpu >= 0 ? setup_failed(r) : 1;
    }
    uint64_t kv_bytes = (uint64_t)o->layers * o->pages * o->page_kb * 1024;
    printf("decoder: %u layers x %u pages x %llu KiB = %.1f MiB KV per request, compute %u us/layer, "
           "%s\n", o->layers, o->pages, (unsigned long long)o->page_kb, (double)kv_bytes / 1048576.0,
           o->compute_us, o->gpu >= 0 ? "KV in GPU memory on both sides, checked on the device"
                                      : "KV in host memory");
    printf("decoder: expecting %llu immediates per request (layers x pages + %u context shard(s))\n",
           (unsigned long long)o->layers * o->pages + peer_nics, peer_nics);
    uint32_t *pages = malloc(o->pages * sizeof *pages);
    int fails = 0;
    uint32_t nreq = o->cancel_demo ? 1 : o->requests;
    for (uint32_t q = 0; q < nreq; q++) {
        for (uint32_t k = 0; k < o->pages; k++) /* scattered slots, different per request */
            pages[k] = (k * 7 + q * 3) % dopts.slots;
        int deadline = o->cancel_demo ? (int)(o->layers * o->compute_us / 1000 / 3) : o->deadline_ms;
        kv_result res;
        r = kv_decoder_run(d, peer, peer_nics, pages, o->pages, 1000 + q, deadline, 5000, &res);
        double ideal = (double)o->layers * o->compute_us / 1e3;
        if (r == 0)
            printf("request %u: TTFT-like %.3f ms (compute alone %.3f ms), %.3f ms per layer, counter "
                   "fired %u time(s), %llu bad bytes, %.2f GB/s KV\n",
                   q, (double)res.ttft_us / 1e3, ideal, (double)res.ttft_us / 1e3 / o->layers, res.fires,
                   (unsigned long long)res.bad_bytes, (double)kv_bytes / (double)res.ttft_us / 1e3);
        else
            printf("request %u: %s after %.3f ms; cancellation %s\n", q, te_strerror(r),
                   (double)res.ttft_us / 1e3, res.confirmed ? "confirmed, pages reusable"
                                                            : "NOT confirmed, pages quarantined");
        if (r || res.bad_bytes) fails++;
        fflush(stdout);
    }
    app_sleep_us(200000); /* let the prefiller print its table */
    printf("late immediates after confirmation: %llu\n", (unsigned long long)kv_decoder_late_imms(d));
    free(pages);
    kv_decoder_destroy(d);
    return o->cancel_demo ? 0 : fails != 0;
}

int main(int argc, char **argv)
{
    opts o;
    parse(argc, argv, &o);
    if (!strcmp(o.role, "prefiller")) return run_prefiller(&o, 0);
    if (!strcmp(o.role, "prefiller-child")) return run_prefiller(&o, 1);
    te_addr peer;
    if (!strcmp(o.role, "decoder")) {
        if (!o.peer) cli_fail(&T, "--role decoder needs --peer ADDRESS (printed by the prefiller)");
        if (te_addr_parse(o.peer, &peer))
            cli_fail(&T, "option '--peer': %s", te_last_error());
        return run_decoder(&o, &peer, o.peer_nics);
    }
    /* both: the prefiller runs in a child process with the same options */
    const char *args[40];
    int k = 0;
    for (int i = 1; i < argc && k < 36; i++) args[k++] = argv[i];
    args[k++] = "--role";
    args[k++] = "prefiller-child";
    args[k] = NULL;
    app_proc pf;
    int r = app_spawn_self(&pf, args);
    char line[1024], hex[TE_ADDR_TEXT_MAX];
    unsigned nics = 0;
    if (!r) r = app_recv(&pf, line, sizeof line, 30000);
    int err = 0;
    if (r || sscanf(line, "ready %511s %u", hex, &nics) != 2 || te_addr_parse(hex, &peer)) {
        fprintf(stderr, "prefiller did not start: %s\n", r ? te_strerror(r) : line);
        app_wait(&pf, 10000);
        return !r && o.gpu >= 0 && sscanf(line, "error %d", &err) == 1 ? setup_failed(err) : 1;
    }
    int rc = run_decoder(&o, &peer, nics);
    app_send(&pf, "quit");
    app_wait(&pf, 10000);
    return rc;
}
