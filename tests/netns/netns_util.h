/* Emulated multi-NIC hosts for tests and benchmarks: drives scripts/netns-topo.sh (two
 * network namespaces joined by k veth pairs, one subnet per pair), moves the calling
 * process into host 0 and starts peers in host 1. */
#ifndef TENDRIL_TEST_NETNS_UTIL_H
#define TENDRIL_TEST_NETNS_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#define NT_MAX_NICS 4

typedef struct nt_topo {
    char prefix[16];
    int nics;
    char ns[2][32];                         /* namespace of host 0 / host 1 */
    char ifname[2][NT_MAX_NICS][32];        /* veth names per host */
    char niclist[2][NT_MAX_NICS * 32];      /* "if0,if1": TENDRIL_NICS per host */
    bool up;
} nt_topo;

/* 0 if namespaces can be used here; otherwise prints why on stderr and returns 77 (the
 * ctest skip code). */
int nt_can_run(void);
/* Creates the topology (unique prefix) and registers its teardown at exit and on
 * SIGINT/SIGTERM. 0 or -1 (message on stderr). */
int nt_up(nt_topo *t, int nics);
void nt_down(nt_topo *t);
/* Moves the calling thread (call before any thread exists) into namespace `ns`. */
int nt_enter(const char *ns);
/* Runs `ip -n NS link set IF up|down`. */
int nt_link(const char *ns, const char *ifname, bool up);
/* Kernel counters of an interface in the caller's namespace (/proc/net/dev). */
int nt_ifstats(const char *ifname, uint64_t *rx_bytes, uint64_t *tx_bytes);

/* Child role "nspeer": arg "NS NICLIST SIZE" -> enters NS, TENDRIL_NICS=NICLIST, runs
 * the harness peer with a SIZE-byte region. */
int nt_peer_child(const char *arg);

#endif
