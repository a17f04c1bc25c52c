#include "netns_util.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "peer.h"

#ifndef NT_TOPO_SCRIPT
#error "NT_TOPO_SCRIPT must name scripts/netns-topo.sh"
#endif

static nt_topo *g_topo;
static int g_root_ns = -1;

int nt_can_run(void)
{
    if (geteuid() != 0) {
        fprintf(stderr, "SKIP: netns tests need root (network namespaces and veth pairs)\n");
        return 77;
    }
    if (system("ip netns list >/dev/null 2>&1") != 0) {
        fprintf(stderr, "SKIP: 'ip netns' is not available (iproute2 missing or no netns support)\n");
        return 77;
    }
    if (access(NT_TOPO_SCRIPT, X_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found or not executable\n", NT_TOPO_SCRIPT);
        return 77;
    }
    /* Can we really create one? (containers may forbid it) */
    char cmd[256], name[32];
    snprintf(name, sizeof name, "tdprobe%d", (int)getpid() % 100000);
    snprintf(cmd, sizeof cmd, "ip netns add %s >/dev/null 2>&1 && ip netns del %s", name, name);
    if (system(cmd) != 0) {
        fprintf(stderr, "SKIP: cannot create a network namespace here\n");
        return 77;
    }
    return 0;
}

void nt_down(nt_topo *t)
{
    if (!t || !t->up) return;
    t->up = false;
    if (g_root_ns >= 0) setns(g_root_ns, CLONE_NEWNET);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s down -p %s", NT_TOPO_SCRIPT, t->prefix);
    if (system(cmd) != 0) fprintf(stderr, "netns: teardown of %s reported an error\n", t->prefix);
}

static void at_exit(void) { nt_down(g_topo); }

static void on_signal(int sig)
{
    nt_down(g_topo);
    signal(sig, SIG_DFL);
    raise(sig);
}

int nt_up(nt_topo *t, int nics)
{
    memset(t, 0, sizeof *t);
    t->nics = nics;
    snprintf(t->prefix, sizeof t->prefix, "tn%d", (int)getpid() % 1000000);
    if (g_root_ns < 0) g_root_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    g_topo = t;
    t->up = true; /* from here on, teardown runs whatever happens */
    static bool registered;
    if (!registered) {
        atexit(at_exit);
        signal(SIGINT, on_signal);
        signal(SIGTERM, on_signal);
        registered = true;
    }
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s up -p %s -H 2 -k %d", NT_TOPO_SCRIPT, t->prefix, nics);
    FILE *p = popen(cmd, "r");
    if (!p) return fprintf(stderr, "netns: cannot run %s\n", cmd), -1;
    char line[512];
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = '\0';
        int h;
        char val[400];
        if (sscanf(line, "TOPO_NS_%d=%31s", &h, val) == 2 && h >= 0 && h < 2)
            snprintf(t->ns[h], sizeof t->ns[h], "%.31s", val);
        else if (sscanf(line, "TOPO_NICS_%d=%127s", &h, val) == 2 && h >= 0 && h < 2)
            snprintf(t->niclist[h], sizeof t->niclist[h], "%.127s", val);
    }
    if (pclose(p) != 0 || !t->ns[0][0] || !t->ns[1][0]) {
        fprintf(stderr, "netns: '%s' failed\n", cmd);
        return -1;
    }
    for (int h = 0; h < 2; h++) {
        char tmp[sizeof t->niclist[h]];
        snprintf(tmp, sizeof tmp, "%s", t->niclist[h]);
        int i = 0;
        for (char *s = strtok(tmp, ","); s && i < NT_MAX_NICS; s = strtok(NULL, ","))
            snprintf(t->ifname[h][i++], sizeof t->ifname[h][0], "%s", s);
        if (i != nics) return fprintf(stderr, "netns: host %d has %d NICs, want %d\n", h, i, nics), -1;
    }
    return 0;
}

int nt_enter(const char *ns)
{
    char path[256];
    snprintf(path, sizeof path, "/var/run/netns/%s", ns);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fprintf(stderr, "netns: open %s: %s\n", path, strerror(errno)), -errno;
    int r = setns(fd, CLONE_NEWNET);
    int err = errno;
    close(fd);
    if (r) return fprintf(stderr, "netns: setns %s: %s\n", ns, strerror(err)), -err;
    return 0;
}

int nt_link(const char *ns, const char *ifname, bool up)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "ip -n %s link set %s %s", ns, ifname, up ? "up" : "down");
    return system(cmd) == 0 ? 0 : -1;
}

int nt_ifstats(const char *ifname, uint64_t *rx_bytes, uint64_t *tx_bytes)
{
    FILE *f = fopen("/proc/self/net/dev", "r");
    if (!f) return -errno;
    char line[512];
    int found = -ENOENT;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        *colon = '\0';
        char *name = line;
        while (*name == ' ') name++;
        if (strcmp(name, ifname)) continue;
        unsigned long long v[16];
        if (sscanf(colon + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7], &v[8]) == 9) {
            *rx_bytes = v[0];
            *tx_bytes = v[8];
            found = 0;
        }
        break;
    }
    fclose(f);
    return found;
}

int nt_peer_child(const char *arg)
{
    char ns[64], nics[256], size[32];
    if (!arg || sscanf(arg, "%63s %255s %31s", ns, nics, size) != 3) {
        printf("error bad nspeer argument\n");
        return 2;
    }
    if (nt_enter(ns)) {
        printf("error cannot enter %s\n", ns);
        return 2;
    }
    setenv("TENDRIL_NICS", nics, 1);
    return th_peer_main(size);
}
