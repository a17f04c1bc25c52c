/* The libfabric backend's descriptor: it serves every provider string no other backend
 * claims (libfabric names: "tcp", "shm", "efa", "tcp;ofi_rxm", ...), and offers two
 * choices for "auto": efa first, tcp last. */
#include <stdbool.h>

#include "transport/fabric/fabric.h"

static bool fabric_claims(const char *want)
{
    (void)want;
    return true; /* the fallback: libfabric decides whether it knows the name */
}

static int probe_efa(char *out, size_t cap) { return tp_fabric_pick_provider("efa", out, cap); }

static int probe_tcp(char *out, size_t cap) { return tp_fabric_pick_provider("tcp;ofi_rxm", out, cap); }

static const tp_auto_choice fabric_auto[] = {
    {10, "efa", probe_efa},
    {30, "tcp;ofi_rxm", probe_tcp},
};

const tp_backend tp_fabric_backend = {
    .name = "libfabric",
    .ops = &tp_fabric_ops,
    .claims = fabric_claims,
    .resolve = tp_fabric_pick_provider,
    .list_nics = tp_fabric_list_domains,
    .auto_choices = fabric_auto,
    .n_auto_choices = sizeof fabric_auto / sizeof *fabric_auto,
};
