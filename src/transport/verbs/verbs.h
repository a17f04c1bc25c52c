/* The ibverbs (ConnectX RC) backend. Its descriptor exists in every build (so that
 * "verbs" gets a clear error where libibverbs was missing at build time); the vtable and
 * device listing only in builds with libibverbs (TENDRIL_HAVE_VERBS). Design and limits:
 * docs/verbs.md. */
#ifndef TENDRIL_TRANSPORT_VERBS_H
#define TENDRIL_TRANSPORT_VERBS_H

#include "transport/backend.h"

extern const tp_backend tp_verbs_backend;

#ifdef TENDRIL_HAVE_VERBS
extern const tp_ops tp_verbs_ops;
/* Lists up to max RDMA device names (names may be NULL when max is 0); returns the
 * number of devices present (>= 0) or -errno. */
int tp_verbs_list_devices(char names[][64], int max);
#endif

#endif
