/* Memory registration. Runs on the caller's thread (the transport's domains are
 * thread-safe), so registering gigabytes never stalls a worker's posting loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/engine_internal.h"

static void list_add(te_engine *e, te_mr *m)
{
    pthread_mutex_lock(&e->lists_lock);
    m->prev = NULL;
    m->next = e->mrs;
    if (e->mrs) e->mrs->prev = m;
    e->mrs = m;
    pthread_mutex_unlock(&e->lists_lock);
}

static void list_del(te_engine *e, te_mr *m)
{
    if (m->prev) m->prev->next = m->next;
    else e->mrs = m->next;
    if (m->next) m->next->prev = m->prev;
}

int te_mr_register(te_engine *e, void *ptr, size_t len, int device, unsigned flags, te_mr **out)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_mr_register: engine is NULL");
    if (!out) return tn_err(-EINVAL, "te_mr_register: out is NULL");
    if (!ptr) return tn_err(-EINVAL, "te_mr_register: ptr is NULL");
    if (len == 0) return tn_err(-EINVAL, "te_mr_register: len is 0");
    if ((uintptr_t)ptr + len < (uintptr_t)ptr)
        return tn_err(-EINVAL, "te_mr_register: ptr + len wraps around the address space");
    if (flags & ~(unsigned)TE_MR_REMOTE_WRITE)
        return tn_err(-EINVAL, "te_mr_register: unknown flags 0x%x", flags);
    int r = engine_enter(e);
    if (r) return r;
    eng_group *g = engine_group_for_device(e, device, &r);
    if (!g) {
        engine_leave(e);
        return r;
    }
    te_mr *m = calloc(1, sizeof *m);
    if (!m) {
        engine_leave(e);
        return tn_err(-ENOMEM, "te_mr_register: out of memory");
    }
    m->e = e;
    m->group = g->idx;
    m->ptr = ptr;
    m->len = len;
    m->device = device;
    m->flags = flags;
    m->n_nics = g->n_nics;
    atomic_init(&m->inflight, 0);
    for (uint32_t k = 0; k < g->n_nics; k++) {
        eng_nic *n = &g->nic[k];
        r = n->ops->mr_reg(n->tp, ptr, len, device, (flags & TE_MR_REMOTE_WRITE) != 0, &m->nic[k]);
        if (r) {
            char why[256];
            snprintf(why, sizeof why, "%s", te_last_error());
            while (k-- > 0) g->nic[k].ops->mr_dereg(g->nic[k].tp, &m->nic[k]);
            free(m);
            engine_leave(e);
            return tn_err(r, "te_mr_register: NIC %s: %s", n->info.name, why);
        }
    }
    list_add(e, m);
    engine_leave(e);
    *out = m;
    return 0;
}

int te_mr_deregister(te_mr *m)
{
    tn_err_clear();
    if (!m) return tn_err(-EINVAL, "te_mr_deregister: mr is NULL");
    te_engine *e = m->e;
    int64_t busy = atomic_load(&m->inflight);
    if (busy > 0)
        return tn_err(-EBUSY, "te_mr_deregister: %lld operations using this region are in flight",
                      (long long)busy);
    pthread_mutex_lock(&e->lists_lock);
    list_del(e, m);
    pthread_mutex_unlock(&e->lists_lock);
    if (!m->dead) {
        eng_group *g = e->groups[m->group];
        for (uint32_t k = 0; k < m->n_nics; k++) g->nic[k].ops->mr_dereg(g->nic[k].tp, &m->nic[k]);
    }
    free(m);
    return 0;
}

int te_mr_desc_get(const te_mr *m, te_mr_desc *out)
{
    tn_err_clear();
    if (!m || !out) return tn_err(-EINVAL, "te_mr_desc_get: %s is NULL", m ? "out" : "mr");
    if (!(m->flags & TE_MR_REMOTE_WRITE))
        return tn_err(-EPERM, "te_mr_desc_get: region was registered local-only "
                              "(register with TE_MR_REMOTE_WRITE to publish it)");
    memset(out, 0, sizeof *out);
    out->base = (uint64_t)(uintptr_t)m->ptr;
    out->len = m->len;
    out->n_nics = m->n_nics;
    eng_group *g = m->e->groups[m->group];
    for (uint32_t k = 0; k < m->n_nics; k++) {
        out->nic[k].addr = g->nic[k].addr;
        out->nic[k].rkey = m->nic[k].rkey;
    }
    return 0;
}

void *te_mr_ptr(const te_mr *m) { return m ? m->ptr : NULL; }
size_t te_mr_len(const te_mr *m) { return m ? m->len : 0; }

void mr_close_all(te_engine *e)
{
    pthread_mutex_lock(&e->lists_lock);
    for (te_mr *m = e->mrs; m; m = m->next) {
        if (m->dead) continue;
        eng_group *g = e->groups[m->group];
        for (uint32_t k = 0; k < m->n_nics; k++) g->nic[k].ops->mr_dereg(g->nic[k].tp, &m->nic[k]);
        m->dead = true;
    }
    pthread_mutex_unlock(&e->lists_lock);
}

void mr_free_all(te_engine *e)
{
    te_mr *m = e->mrs;
    while (m) {
        te_mr *nx = m->next;
        free(m);
        m = nx;
    }
    e->mrs = NULL;
}
