/* The libfabric backend's entry points beyond its vtable (used by its descriptor in
 * fabric_backend.c). */
#ifndef TENDRIL_TRANSPORT_FABRIC_H
#define TENDRIL_TRANSPORT_FABRIC_H

#include "transport/backend.h"

extern const tp_ops tp_fabric_ops;
extern const tp_backend tp_fabric_backend;

/* Resolves a provider name to a libfabric provider string that offers RDM endpoints
 * with RMA and remote CQ data ("tcp" -> "tcp;ofi_rxm"). 0 or -ENODEV. */
int tp_fabric_pick_provider(const char *want, char *out, size_t cap);
/* Lists up to max domain names of a provider; returns the count (>= 0) or -errno. */
int tp_fabric_list_domains(const char *provider, char names[][64], int max);
/* The TP_EV_* kind of a libfabric completion with these fi_cq_data_entry flags
 * (exposed for the unit test of the per-provider flag sets it must accept). */
int tp_fabric_classify(uint64_t flags);

#endif
