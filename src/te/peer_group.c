/* Peer groups: a scatter's destinations resolved once (n peers x N NICs), so repeated
 * scatters to the same peers skip per-target address lookups. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/engine_internal.h"

int peer_group_worker_resolve(eng_group *g, te_peer_group *pg)
{
    for (size_t t = 0; t < pg->n; t++)
        for (uint32_t k = 0; k < g->n_nics; k++) {
            int r = dg_resolve(g, k, &pg->peers[t].nic[k].addr, &pg->resolved[t * g->n_nics + k]);
            if (r) return tn_err(r, "peer group: peer %zu NIC %u unreachable: %s", t, k, te_last_error());
        }
    return 0;
}

int te_peer_group_create(te_engine *e, uint32_t group, const te_mr_desc *peers, size_t n_peers,
                         te_peer_group **out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_peer_group_create: %s is NULL", e ? "out" : "engine");
    if (!peers || n_peers == 0) return tn_err(-EINVAL, "te_peer_group_create: no peers");
    int r = engine_enter(e);
    if (r) return r;
    if (group >= e->n_groups) {
        engine_leave(e);
        return tn_err(-EINVAL, "te_peer_group_create: group %u does not exist", group);
    }
    eng_group *g = e->groups[group];
    for (size_t t = 0; t < n_peers; t++)
        if (peers[t].n_nics != g->n_nics) {
            engine_leave(e);
            return tn_err(-EINVAL, "te_peer_group_create: peer %zu has %u NICs, group %u has %u", t,
                          peers[t].n_nics, group, g->n_nics);
        }
    te_peer_group *pg = calloc(1, sizeof *pg);
    if (pg) {
        pg->peers = malloc(n_peers * sizeof *pg->peers);
        pg->resolved = calloc(n_peers * g->n_nics, sizeof(tp_peer));
    }
    if (!pg || !pg->peers || !pg->resolved) {
        if (pg) {
            free(pg->peers);
            free(pg->resolved);
        }
        free(pg);
        engine_leave(e);
        return tn_err(-ENOMEM, "te_peer_group_create: out of memory");
    }
    memcpy(pg->peers, peers, n_peers * sizeof *peers);
    pg->e = e;
    pg->group = group;
    pg->n = n_peers;
    r = worker_control(g, CTL_PEER_GROUP, pg, 10000);
    if (r) {
        free(pg->peers);
        free(pg->resolved);
        free(pg);
        engine_leave(e);
        return r;
    }
    pthread_mutex_lock(&e->lists_lock);
    pg->next = e->peer_groups;
    e->peer_groups = pg;
    pthread_mutex_unlock(&e->lists_lock);
    engine_leave(e);
    *out = pg;
    return 0;
}

void te_peer_group_destroy(te_peer_group *pg)
{
    if (!pg) return;
    te_engine *e = pg->e;
    pthread_mutex_lock(&e->lists_lock);
    te_peer_group **pp = &e->peer_groups;
    while (*pp && *pp != pg) pp = &(*pp)->next;
    if (*pp) *pp = pg->next;
    pthread_mutex_unlock(&e->lists_lock);
    free(pg->peers);
    free(pg->resolved);
    free(pg);
}

void peer_group_free_all(te_engine *e)
{
    while (e->peer_groups) te_peer_group_destroy(e->peer_groups);
}
