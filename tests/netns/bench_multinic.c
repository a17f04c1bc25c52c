/* Aggregate and per-NIC write throughput on the emulated cluster (a benchmark, not a
 * test): for each NIC count k, two network namespaces joined by k veth pairs, one engine
 * process per namespace, sharded single writes over all k NICs.
 *
 *   bench_multinic [--nics 1,2,4] [--sizes 1,16,64] (MiB) [--seconds S] [--window W]
 *                  [--repeat R]   (each point R times, one row each)
 *
 * Per row: aggregate Gbit/s, each NIC's Gbit/s (engine byte counters), the CPU time of
 * this process (sender) and of the peer (receiver) per wall second (100% = one core), and
 * how busy the whole machine was (100% = every CPU; the kernel's TCP and veth work runs
 * in softirq context and is charged to neither process). Needs root. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "cli.h"
#include "core/clock.h"
#include "harness.h"
#include "netns_util.h"
#include "peer.h"

#define REGION (68u << 20)

static double cpu_self(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           (double)ru.ru_stime.tv_usec / 1e6;
}

static double cpu_of(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long ut = 0, st = 0;
    if (p) sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st);
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Busy and total jiffies of the whole machine (/proc/stat "cpu" line): the kernel's
 * TCP/veth work runs in softirq context and is not charged to either process. */
static void machine_cpu(double *busy, double *total)
{
    unsigned long long v[10] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7]) != 8) memset(v, 0, sizeof v);
        fclose(f);
    }
    double t = 0;
    for (int k = 0; k < 8; k++) t += (double)v[k];
    *total = t;
    *busy = t - (double)v[3] - (double)v[4]; /* minus idle and iowait */
}

static int parse_list(const char *s, unsigned *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = (unsigned)strtoul(s, (char **)&s, 10);
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return n;
}

static const cli_tool T = {
    "bench_multinic",
    "usage: bench_multinic [--nics 1,2,4] [--sizes 1,16,64] [--seconds S] [--window W]\n"
    "                      [--repeat R]\n"
    "Throughput of single writes sharded over k NICs between two engine processes in two\n"
    "network namespaces joined by k veth pairs (needs root; docs/performance.md).\n"
    "  --nics LIST     NIC counts to measure (each 1..4; default 1,2,4)\n"
    "  --sizes LIST    write sizes in MiB (default 1,16,64)\n"
    "  --seconds S     seconds per point (default 3)\n"
    "  --window W      writes in flight (default 4)\n"
    "  --repeat R      runs per point, median reported (default 1)\n"
    "  --help, --version\n"};

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--child")) return nt_peer_child(argc > 3 ? argv[3] : NULL);
    unsigned nics[4] = {1, 2, 4}, sizes[8] = {1, 16, 64};
    int n_nics = 3, n_sizes = 3;
    double seconds = 3;
    unsigned window = 4;
    int repeat = 1;
    cli_common(&T, argc, argv);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--nics") && strcmp(a, "--sizes") && strcmp(a, "--seconds") &&
            strcmp(a, "--window") && strcmp(a, "--repeat"))
            cli_fail(&T, "unknown option '%s'", a);
        const char *v = cli_value(&T, argc, argv, &i);
        if (!strcmp(a, "--nics")) {
            if ((n_nics = parse_list(v, nics, 4)) <= 0)
                cli_fail(&T, "option '--nics' takes a comma list such as 1,2,4");
        } else if (!strcmp(a, "--sizes")) {
            if ((n_sizes = parse_list(v, sizes, 8)) <= 0)
                cli_fail(&T, "option '--sizes' takes a comma list of MiB such as 1,16,64");
        } else if (!strcmp(a, "--seconds")) seconds = cli_double(&T, a, v, 0.1, 3600);
        else if (!strcmp(a, "--window")) window = (unsigned)cli_u64(&T, a, v, 1, 1024);
        else repeat = (int)cli_u64(&T, a, v, 1, 100);
    }
    int skip = nt_can_run();
    if (skip) return skip;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("bench_multinic: tcp;ofi_rxm over veth pairs between 2 network namespaces, sharded\n"
           "single writes over all NICs, window %u, %.1f s per point, %ld online CPUs\n\n",
           window, seconds, sysconf(_SC_NPROCESSORS_ONLN));
    printf("%4s %8s | %9s | %-32s | %7s %7s %8s\n", "NICs", "size", "agg Gb/s", "per-NIC Gb/s",
           "snd CPU", "rcv CPU", "machine");
    printf("----------------------------------------------------------------------------------------------\n");
    for (int ni = 0; ni < n_nics; ni++) {
        int k = (int)nics[ni];
        if (k < 1 || k > NT_MAX_NICS) continue;
        nt_topo t;
        if (nt_up(&t, k) || nt_enter(t.ns[0])) return 1;
        setenv("TENDRIL_NICS", t.niclist[0], 1);
        te_config cfg;
        th_config(&cfg);
        cfg.provider = "tcp";
        te_engine *e;
        if (te_engine_create(&cfg, &e)) {
            fprintf(stderr, "engine: %s\n", te_last_error());
            return 1;
        }
        uint8_t *src = aligned_alloc(4096, REGION);
        th_fill(src, REGION, 1, 0);
        te_mr *mr;
        te_counter *done;
        if (te_mr_register(e, src, REGION, TE_DEVICE_HOST, TE_MR_LOCAL, &mr) || te_counter_create(&done))
            return 1;
        th_proc p;
        char arg[512], why[4200];
        snprintf(arg, sizeof arg, "%s %s %u", t.ns[1], t.niclist[1], REGION);
        te_addr peer_addr;
        te_mr_desc d;
        if (th_peer_start_as(&p, "nspeer", arg, &peer_addr, &d, 30000, why, sizeof why)) {
            fprintf(stderr, "%s\n", why);
            return 1;
        }
        for (int sr = 0; sr < n_sizes * repeat; sr++) {
            int si = sr / repeat;
            uint64_t size = (uint64_t)sizes[si] << 20;
            if (size > REGION) continue;
            te_nic_stats a[NT_MAX_NICS], b[NT_MAX_NICS];
            for (int j = 0; j < k; j++) te_nic_stats_get(e, 0, (uint32_t)j, &a[j]);
            double c0 = cpu_self(), p0 = cpu_of(p.pid), mb0, mt0, mb1, mt1;
            machine_cpu(&mb0, &mt0);
            uint64_t base = te_counter_done(done), n = 0, t0 = tn_now_ns();
            uint64_t end = t0 + (uint64_t)(seconds * 1e9);
            while (tn_now_ns() < end) {
                if (n >= window && te_counter_wait(done, base + n - window + 1, 60000)) {
                    fprintf(stderr, "writes stalled: %s\n", te_last_error());
                    return 1;
                }
                te_write_args w = {.src = mr, .len = size, .dst = &d, .route = {TE_ROUTE_SHARDED, 0}};
                te_completion c = {.counter = done};
                if (te_write(e, &w, &c)) {
                    fprintf(stderr, "te_write: %s\n", te_last_error());
                    return 1;
                }
                n++;
            }
            if (te_counter_wait(done, base + n, 60000)) return 1;
            double secs = (double)(tn_now_ns() - t0) / 1e9;
            double cs = (cpu_self() - c0) / secs, cp = (cpu_of(p.pid) - p0) / secs;
            machine_cpu(&mb1, &mt1);
            double busy = mt1 > mt0 ? (mb1 - mb0) / (mt1 - mt0) : 0; /* fraction of all CPUs */
            char per[128] = "";
            uint64_t tot = 0;
            for (int j = 0; j < k; j++) {
                te_nic_stats_get(e, 0, (uint32_t)j, &b[j]);
                uint64_t by = b[j].write_bytes - a[j].write_bytes;
                tot += by;
                size_t l = strlen(per);
                snprintf(per + l, sizeof per - l, "%s%.2f", j ? " / " : "", (double)by * 8 / secs / 1e9);
            }
            if (te_counter_errors(done)) fprintf(stderr, "warning: %" PRIu64 " writes failed\n", te_counter_errors(done));
            printf("%4d %5u MiB | %9.2f | %-32s | %6.0f%% %6.0f%% %7.0f%%\n", k, sizes[si],
                   (double)tot * 8 / secs / 1e9, per, cs * 100, cp * 100, busy * 100);
        }
        th_send(&p, "quit");
        th_wait(&p, 30000);
        te_engine_destroy(e);
        te_counter_destroy(done);
        free(src);
        nt_down(&t);
    }
    return 0;
}
