/* Peer state: what the engine knows of each peer NIC it has addressed (te_peer_state),
 * and the callback that tells the application when a peer goes away, so it stops waiting
 * on immediates or messages that will never come.
 *
 * Workers record changes (a peer first resolved: UP; the transport reports it gone:
 * DOWN); both are rare, so a mutex-protected table is enough. The table is separate from
 * the workers' per-NIC peer caches because any thread may query it. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/log.h"
#include "te/engine_internal.h"

typedef struct peer_entry {
    te_addr addr;
    int state;
} peer_entry;

struct te_peer_states {
    pthread_mutex_t lock;
    peer_entry *v;
    size_t n, cap;
    te_peer_fn fn;
    void *arg;
};

int peers_init(te_engine *e)
{
    struct te_peer_states *p = calloc(1, sizeof *p);
    if (!p) return tn_err(-ENOMEM, "out of memory");
    pthread_mutex_init(&p->lock, NULL);
    e->peer_states = p;
    return 0;
}

void peers_free(te_engine *e)
{
    struct te_peer_states *p = e->peer_states;
    if (!p) return;
    pthread_mutex_destroy(&p->lock);
    free(p->v);
    free(p);
    e->peer_states = NULL;
}

static peer_entry *find(struct te_peer_states *p, const te_addr *addr)
{
    for (size_t k = 0; k < p->n; k++)
        if (te_addr_equal(&p->v[k].addr, addr)) return &p->v[k];
    return NULL;
}

void peers_note(te_engine *e, const te_addr *addr, int state)
{
    if (!e) return; /* a group built without an engine (unit tests of the sharding rules) */
    struct te_peer_states *p = e->peer_states;
    pthread_mutex_lock(&p->lock);
    peer_entry *x = find(p, addr);
    if (!x && p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        peer_entry *nv = realloc(p->v, cap * sizeof *nv);
        if (nv) {
            p->v = nv;
            p->cap = cap;
        }
    }
    if (!x && p->n < p->cap) {
        x = &p->v[p->n++];
        x->addr = *addr;
        x->state = TE_PEER_UNKNOWN;
    }
    bool changed = x && x->state != state;
    if (changed) x->state = state;
    pthread_mutex_unlock(&p->lock);
    if (!x) TN_LOGE("peer table: out of memory, a peer state change is not recorded");
    if (changed) cb_post_peer(e, addr, state);
}

void peers_deliver(te_engine *e, const te_addr *addr, int state)
{
    struct te_peer_states *p = e->peer_states;
    pthread_mutex_lock(&p->lock);
    te_peer_fn fn = p->fn;
    void *arg = p->arg;
    pthread_mutex_unlock(&p->lock);
    if (fn) fn(arg, addr, state);
}

bool peers_status_is_gone(int status)
{
    switch (status) {
    case -ECONNRESET:
    case -ECONNREFUSED:
    case -ECONNABORTED:
    case -ENOTCONN:
    case -EPIPE:
    case -EHOSTUNREACH:
        return true;
    default:
        return false;
    }
}

int te_peer_state(te_engine *e, const te_addr *addr)
{
    tn_err_clear();
    if (!e || !addr) return tn_err(-EINVAL, "te_peer_state: %s is NULL", e ? "addr" : "engine");
    struct te_peer_states *p = e->peer_states;
    pthread_mutex_lock(&p->lock);
    peer_entry *x = find(p, addr);
    int s = x ? x->state : TE_PEER_UNKNOWN;
    pthread_mutex_unlock(&p->lock);
    return s;
}

int te_peer_set_callback(te_engine *e, te_peer_fn fn, void *arg)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_peer_set_callback: engine is NULL");
    struct te_peer_states *p = e->peer_states;
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->arg = arg;
    pthread_mutex_unlock(&p->lock);
    return 0;
}
