/* Peer-down events for the proxies. The engine has one peer callback (te_peer_set_callback
 * replaces it) and does not wait for a running call when it is removed, so the callback
 * installed here never dereferences its argument: it is the engine pointer used as a
 * key, and the live proxies are found in a process-wide registry under a lock. A proxy
 * being delivered to holds a reference; px_peers_remove waits until none is held, after
 * which no event reaches that proxy. One callback serves every proxy of an engine; it is
 * installed with the first proxy that wants it and removed with the last one. */
#include <errno.h>
#include <stdio.h>

#include "core/log.h"
#include "px_internal.h"

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_released = PTHREAD_COND_INITIALIZER;
static a2a_px *g_list;

/* Slice rank of px's RDMA peer whose NIC is at addr, or -1. */
static int peer_of(const a2a_px *px, const te_addr *addr)
{
    for (int q = 0; q < px->world; q++) {
        if (!(px->rdma_mask >> q & 1)) continue;
        if (px->have_addr && te_addr_equal(&px->addr[q], addr)) return q;
        for (uint32_t k = 0; k < px->rblock[q].n_nics && k < TE_MAX_NICS; k++)
            if (te_addr_equal(&px->rblock[q].nic[k].addr, addr)) return q;
    }
    return -1;
}

void a2a_px_peer_event(te_engine *e, const te_addr *addr, int state)
{
    if (!e || !addr || state != TE_PEER_DOWN) return;
    a2a_px *hit[64];
    int who[64], n = 0;
    pthread_mutex_lock(&g_lock);
    for (a2a_px *p = g_list; p && n < 64; p = p->next) {
        if (p->e != e || atomic_load(&p->closing)) continue;
        int q = peer_of(p, addr);
        if (q < 0) continue;
        p->refs++;
        hit[n] = p;
        who[n++] = q;
    }
    pthread_mutex_unlock(&g_lock);
    for (int k = 0; k < n; k++) {
        char text[TE_ADDR_TEXT_MAX];
        if (te_addr_format(addr, text, sizeof text)) snprintf(text, sizeof text, "?");
        px_fail(hit[k], -ECONNRESET,
                "a2a proxy rank %d: rank %d is down (the engine reported its NIC %s gone); "
                "its writes and arrivals will not complete",
                hit[k]->rank, who[k], text);
    }
    if (!n) return;
    pthread_mutex_lock(&g_lock);
    for (int k = 0; k < n; k++) hit[k]->refs--;
    pthread_cond_broadcast(&g_released);
    pthread_mutex_unlock(&g_lock);
}

static void on_peer(void *key, const te_addr *addr, int state)
{
    a2a_px_peer_event((te_engine *)key, addr, state);
}

int px_peers_add(a2a_px *px, bool wants_cb)
{
    pthread_mutex_lock(&g_lock);
    bool installed = false;
    for (a2a_px *p = g_list; p; p = p->next)
        if (p->e == px->e && p->owns_peer_cb) installed = true;
    px->wants_peer_cb = wants_cb;
    int r = 0;
    if (wants_cb && !installed) {
        r = te_peer_set_callback(px->e, on_peer, px->e);
        px->owns_peer_cb = r == 0;
    }
    if (r == 0) {
        px->next = g_list;
        g_list = px;
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

void px_peers_remove(a2a_px *px)
{
    pthread_mutex_lock(&g_lock);
    a2a_px **pp = &g_list;
    while (*pp && *pp != px) pp = &(*pp)->next;
    if (*pp) *pp = px->next;
    if (px->owns_peer_cb) {
        /* Hand the callback to another proxy of the engine that wants it, else remove it. */
        a2a_px *heir = NULL;
        for (a2a_px *p = g_list; p && !heir; p = p->next)
            if (p->e == px->e && p->wants_peer_cb) heir = p;
        if (heir) heir->owns_peer_cb = true;
        else if (te_peer_set_callback(px->e, NULL, NULL))
            TN_LOGW("a2a proxy rank %d: could not remove the peer callback: %s", px->rank,
                    te_last_error());
        px->owns_peer_cb = false;
    }
    while (px->refs > 0) pthread_cond_wait(&g_released, &g_lock);
    pthread_mutex_unlock(&g_lock);
}
