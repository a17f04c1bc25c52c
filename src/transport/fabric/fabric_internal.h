/* Shared by the files of the libfabric backend (fabric.c and fabric_shm.c); nothing
 * outside src/transport/fabric/ includes it. */
#ifndef TENDRIL_TRANSPORT_FABRIC_INTERNAL_H
#define TENDRIL_TRANSPORT_FABRIC_INTERNAL_H

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_rma.h>

#include "transport/backend.h"

/* Maps a completion's op_context back to the engine's context; NULL drops the entry. */
typedef void *(*fab_unwrap_fn)(void *state, void *op_context);

/* Drains up to max entries of cq into ev (success and error entries alike, classified by
 * their flags). >= 0 events, < 0 the CQ is unusable (te_last_error says why). */
int fab_read_cq(struct fid_cq *cq, const char *prov, tp_event *ev, int max, fab_unwrap_fn unwrap,
                void *state);

/* Names an shm endpoint uniquely (pid, 64 random bits, a counter) before fi_enable: shm
 * names its region after the pid otherwise, and a crashed process's leftover region then
 * blocks a later process with the same pid. The name is written to out (cap >= 96). */
int fab_shm_name_endpoint(struct fid_ep *ep, char *out, size_t cap);

/* ---- fabric_probe.c: is anyone listening at a tcp peer's address? ---- */
typedef struct sock_probes sock_probes;
/* 0: the peer's address refused a connection; 1: accepted, or not known yet (a probe is
 * started, or checked, without blocking). *sp is created on first use. */
int sock_probe_peer(sock_probes **sp, struct fid_av *av, uint64_t peer);
void sock_probes_free(sock_probes *s);

/* ---- fabric_shm.c: per-peer transmit endpoints and peer liveness on shm ---- */
typedef struct shm_peers shm_peers;

/* own_name: the name of the engine's receiving endpoint (its published address). */
int shm_peers_open(struct fid_domain *domain, struct fi_info *info, const char *own_name,
                   shm_peers **out);
/* Called before the receiving endpoint closes: peers in this process stop posting to it
 * and peers elsewhere see it gone. */
void shm_peers_retire(shm_peers *s);
void shm_peers_close(shm_peers *s);
int shm_peers_resolve(shm_peers *s, const te_addr *addr, tp_peer *out);
/* msg->addr is ignored (the peer's own endpoint knows it). Same returns as fi_writemsg,
 * mapped to negative errnos; -ECONNRESET for a peer that is gone. */
int shm_peers_write(shm_peers *s, tp_peer peer, struct fi_msg_rma *msg, uint64_t flags);
int shm_peers_send(shm_peers *s, tp_peer peer, const void *buf, size_t len, void *desc, void *ctx);
/* Completions of writes and sends, failures of work requests to peers found gone, and one
 * TP_EV_PEER per peer found gone. */
int shm_peers_poll(shm_peers *s, tp_event *ev, int max);

/* ---- fabric_arrivals.c: arrivals held until the device copies shm made for them finish ---- */
typedef struct held_arrivals held_arrivals;
int held_open(const char *provider, const char *nic, held_arrivals **out);
void held_close(held_arrivals *h);
/* Arrivals held now (0 for NULL). */
unsigned held_count(const held_arrivals *h);
/* How many CQ entries the caller may read before held_take (0: read none now). */
int held_room(const held_arrivals *h);
/* Hands over, in arrival order, up to max held arrivals whose copies have finished. */
int held_release(held_arrivals *h, tp_event *ev, int max);
/* Keeps back the successful arrivals (TP_EV_IMM, TP_EV_RECV) among ev[0..got), behind the
 * copies this thread has queued so far, and compacts the rest to the front; what is ready
 * already follows them. Returns the number of events left in ev. */
int held_take(held_arrivals *h, tp_event *ev, int got);

#endif
