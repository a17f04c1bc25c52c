/* RSS of engines: creates N engines in this process (one NIC each, no traffic), then has
 * engine 0 write 64 bytes to each of the others, and prints the growth of VmRSS per
 * engine and per peer written to. Both ends of each write live in this process, so the
 * per-peer figure counts both sides.
 *
 *   engine_rss [--engines N] [--provider tcp|shm]                                  */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tendril/te.h"

#define MAX_ENGINES 64

static long rss_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = atol(line + 6);
    if (f) fclose(f);
    return v;
}

static int fail(const char *what, int r)
{
    fprintf(stderr, "engine_rss: %s: %s (%s)\n", what, te_strerror(r), te_last_error());
    return 1;
}

int main(int argc, char **argv)
{
    int n = 8;
    const char *prov = "tcp";
    for (int k = 1; k + 1 < argc; k += 2) {
        if (!strcmp(argv[k], "--engines")) n = atoi(argv[k + 1]);
        else if (!strcmp(argv[k], "--provider")) prov = argv[k + 1];
    }
    if (n < 2 || n > MAX_ENGINES) {
        fprintf(stderr, "engine_rss: --engines takes 2..%d\n", MAX_ENGINES);
        return 2;
    }
    te_config cfg;
    te_config_init(&cfg);
    cfg.provider = prov;
    cfg.n_groups = 1;
    cfg.groups[0].n_nics = 1;
    if (!strcmp(prov, "tcp")) cfg.groups[0].nics[0] = "lo";
    static te_engine *e[MAX_ENGINES];
    static te_mr *mr[MAX_ENGINES];
    static te_mr_desc d[MAX_ENGINES];
    static char buf[MAX_ENGINES][4096];
    long r0 = rss_kb();
    int r;
    for (int k = 0; k < n; k++)
        if ((r = te_engine_create(&cfg, &e[k]))) return fail("te_engine_create", r);
    long r1 = rss_kb();
    for (int k = 0; k < n; k++) {
        if ((r = te_mr_register(e[k], buf[k], sizeof buf[k], TE_DEVICE_HOST, TE_MR_REMOTE_WRITE, &mr[k])))
            return fail("te_mr_register", r);
        te_mr_desc_get(mr[k], &d[k]);
    }
    te_counter *c;
    if ((r = te_counter_create(&c))) return fail("te_counter_create", r);
    long r2 = rss_kb();
    for (int k = 1; k < n; k++) {
        te_write_args a = {.src = mr[0], .len = 64, .dst = &d[k]};
        te_completion comp = {.counter = c};
        if ((r = te_write(e[0], &a, &comp))) return fail("te_write", r);
    }
    if ((r = te_counter_wait(c, (uint64_t)n - 1, 30000))) return fail("te_counter_wait", r);
    long r3 = rss_kb();
    printf("provider %s (%s), %d engines\n", prov, te_provider_name(e[0]), n);
    printf("  RSS per engine (created, no traffic): %.2f MB\n", (double)(r1 - r0) / 1024.0 / n);
    printf("  RSS per peer written to (both ends):  %.2f MB\n",
           (double)(r3 - r2) / 1024.0 / (n - 1));
    printf("  failed writes: %llu\n", (unsigned long long)te_counter_errors(c));
    for (int k = 0; k < n; k++) te_engine_destroy(e[k]);
    te_counter_destroy(c);
    return 0;
}
