/* Sharing cuMem allocations between processes of one host without privileges: the
 * exporter's POSIX file descriptor travels over an abstract Unix socket (SCM_RIGHTS). */
#ifndef TENDRIL_A2A_SHARE_H
#define TENDRIL_A2A_SHARE_H

#include <stddef.h>
#include <stdint.h>

/* What a rank offers its peers. */
typedef struct a2a_share_offer {
    int rank, world;   /* physical */
    int fd;            /* exported allocation */
    uint64_t size;     /* bytes of the allocation */
    uint64_t layout;   /* hash of the buffer layout: peers must agree */
} a2a_share_offer;

/* Runs the exchange with the npeers physical ranks peers[] (not ours; every one of them
 * runs the exchange with a list that holds us): serves `offer` to each and fetches theirs.
 * On success fds[i] holds peers[i]'s descriptor (caller closes) and sizes[i] its size.
 * Returns 0, -ETIMEDOUT, -EPROTO (peer disagrees on layout/world), or -errno, with a
 * message (core/error.h). */
int a2a_share_exchange(const char *rendezvous, const a2a_share_offer *offer, int timeout_ms,
                       int npeers, const int *peers, int *fds, uint64_t *sizes);

#endif
