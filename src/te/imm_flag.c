/* GPU-visible completion: an immediate counter that raises an epoch word a GPU kernel
 * can poll (te.h, "GPU-visible completion").
 *
 * Why a monotonic epoch. The original's GdrCounter kept one signed counter that both
 * sides modified: wait() subtracted the target and the worker, on reaching zero, set the
 * GPU flag and then stored 0 into the counter, which could erase a concurrent wait()'s
 * subtraction (lost wake-up), and its flag store into write-combined memory had no
 * fence. Here the worker is the only writer of the word, arrivals are
 * only ever added, and the kernel compares against the round it waits for: there is no
 * reset and nothing for two parties to race on.
 *
 * Memory ordering (data visible before the flag), for mapped pinned host memory:
 *  1. The payload is placed in the destination region by the NIC (RDMA providers) or by
 *     a provider thread's copy (tcp, shm).
 *  2. The provider reports the remote write's completion (FI_REMOTE_CQ_DATA) only after
 *     the payload is placed; the worker reads that completion through the provider's CQ
 *     (its internal lock or the NIC's DMA-before-CQE ordering), so on this CPU the
 *     payload happens-before everything the worker does next.
 *  3. The worker counts the arrival (atomic add) and, at the round boundary, publishes
 *     the epoch with a release store (x86: a plain store, stores stay in program order
 *     and are globally visible in one order, TSO). A GPU read over PCIe snoops the CPU
 *     caches, so when it returns the new epoch, every store that preceded it is visible
 *     to later reads by that GPU thread...
 *  4. ...provided the GPU's later reads are not performed early: the kernel uses an
 *     acquire (ld.acquire.sys) or volatile load plus __threadfence_system() between
 *     seeing the epoch and reading the payload.
 * For a GDRCopy word (GPU memory written through a write-combined BAR mapping) the
 * store is followed by a store fence (sfence) so it leaves the WC buffer promptly and
 * after all earlier stores. Payload that a real NIC writes into GPU memory is ordered
 * before the flag by PCIe posted-write ordering on the same path (the paper's argument;
 * not verified here on NIC hardware: docs/gpu-memory.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/wait.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "cuda/gdr_loader.h"
#include "te/engine_internal.h"

enum flag_mem { FLAG_HOST = 0, FLAG_MAPPED = 1, FLAG_GDR = 2 };

struct te_imm_flag {
    te_engine *e;
    uint32_t imm;
    uint64_t expected;
    _Atomic uint64_t arrived;        /* immediates counted since creation */
    pthread_mutex_t pub_lock;        /* orders publications of concurrent workers */
    _Atomic uint64_t published;      /* last epoch stored (host shadow of the word) */
    _Atomic bool attached;
    volatile uint64_t *word;         /* where the CPU stores the epoch */
    uint64_t dptr;                   /* where kernels read it */
    int mem;
    int dev;
    void *host_block;                /* FLAG_HOST / FLAG_MAPPED allocation */
    tgdr_buf gdr;
    tn_notify wake;                  /* host waiters */
    struct te_imm_flag *next_owned;
};

static inline void store_fence(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("sfence" ::: "memory");
#else
    atomic_thread_fence(memory_order_seq_cst);
#endif
}

/* Worker side, under the table's read lock: one immediate for this flag arrived. */
void imm_flag_arrived(struct te_imm_flag *f)
{
    uint64_t n = atomic_fetch_add_explicit(&f->arrived, 1, memory_order_acq_rel) + 1;
    if (n % f->expected) return;
    uint64_t epoch = n / f->expected;
    /* Workers of several groups may complete rounds concurrently: publish under a lock
     * so the word never moves backwards. Taken once per round only. */
    pthread_mutex_lock(&f->pub_lock);
    if (epoch > atomic_load_explicit(&f->published, memory_order_relaxed)) {
        __atomic_store_n(f->word, epoch, __ATOMIC_RELEASE);
        if (f->mem == FLAG_GDR) store_fence();
        atomic_store_explicit(&f->published, epoch, memory_order_release);
    }
    pthread_mutex_unlock(&f->pub_lock);
    tn_notify_wake(&f->wake);
}

/* Table write lock held: the entry is being unlinked (replaced or removed). */
void imm_flag_detach(struct te_imm_flag *f, te_imm_prev *p)
{
    atomic_store(&f->attached, false);
    p->count = atomic_load(&f->arrived) % f->expected;
    p->expected = f->expected;
    tn_notify_wake(&f->wake);
}

static void flag_release_memory(struct te_imm_flag *f)
{
    if (f->mem == FLAG_GDR) tgdr_release(&f->gdr);
    else if (f->mem == FLAG_MAPPED) tcu_host_free_mapped(f->dev, f->host_block);
    else free(f->host_block);
    f->host_block = NULL;
}

void imm_flag_free_all(imm_table *t)
{
    struct te_imm_flag *f = t->flags;
    while (f) {
        struct te_imm_flag *nx = f->next_owned;
        flag_release_memory(f);
        pthread_mutex_destroy(&f->pub_lock);
        free(f);
        f = nx;
    }
    t->flags = NULL;
}

static int flag_alloc_memory(te_engine *e, struct te_imm_flag *f)
{
    f->dev = engine_gpu_device(e);
    if (f->dev >= 0) {
        if (!tgdr_alloc(f->dev, &f->gdr)) {
            f->mem = FLAG_GDR;
            f->word = (volatile uint64_t *)f->gdr.map;
            f->dptr = f->gdr.dptr;
            return 0;
        }
        TN_LOGD("imm flag: no GDRCopy (%s); using mapped host memory", te_last_error());
        uint64_t d = 0;
        int r = tcu_host_alloc_mapped(f->dev, 64, &f->host_block, &d);
        if (r) return r;
        f->mem = FLAG_MAPPED;
        f->word = f->host_block;
        f->dptr = d;
        return 0;
    }
    f->host_block = aligned_alloc(64, 64);
    if (!f->host_block) return tn_err(-ENOMEM, "out of memory");
    memset(f->host_block, 0, 64);
    f->mem = FLAG_HOST;
    f->word = f->host_block;
    f->dptr = (uint64_t)(uintptr_t)f->host_block;
    return 0;
}

int te_imm_flag_create(te_engine *e, uint32_t imm, uint64_t expected, te_imm_flag **out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_imm_flag_create: %s is NULL", e ? "out" : "engine");
    if (expected == 0 || expected > INT64_MAX)
        return tn_err(-EINVAL, "te_imm_flag_create: expected must be in 1..2^63-1 (got %llu)",
                      (unsigned long long)expected);
    int r = engine_enter(e);
    if (r) return r;
    struct te_imm_flag *f = calloc(1, sizeof *f);
    imm_entry *x = calloc(1, sizeof *x);
    if (!f || !x) {
        free(f);
        free(x);
        engine_leave(e);
        return tn_err(-ENOMEM, "te_imm_flag_create: out of memory");
    }
    if ((r = flag_alloc_memory(e, f))) {
        char why[256];
        snprintf(why, sizeof why, "%s", te_last_error());
        free(f);
        free(x);
        engine_leave(e);
        return tn_err(r, "te_imm_flag_create: %s", why);
    }
    f->e = e;
    f->imm = imm;
    f->expected = expected;
    pthread_mutex_init(&f->pub_lock, NULL);
    atomic_init(&f->arrived, 0);
    atomic_init(&f->published, 0);
    atomic_init(&f->attached, true);
    tn_notify_init(&f->wake);
    x->imm = imm;
    x->kind = IMM_FLAG;
    x->flag = f;
    pthread_rwlock_wrlock(&e->imm.lock);
    imm_install_locked(&e->imm, x, NULL);
    f->next_owned = e->imm.flags;
    e->imm.flags = f;
    pthread_rwlock_unlock(&e->imm.lock);
    engine_leave(e);
    TN_LOGD("imm flag for imm %u (expected %llu) in %s memory", imm, (unsigned long long)expected,
            te_imm_flag_memory_kind(f));
    *out = f;
    return 0;
}

uint64_t te_imm_flag_device_ptr(const te_imm_flag *f) { return f ? f->dptr : 0; }

uint64_t te_imm_flag_value(const te_imm_flag *f)
{
    return f ? atomic_load_explicit(&((te_imm_flag *)f)->published, memory_order_acquire) : 0;
}

const char *te_imm_flag_memory_kind(const te_imm_flag *f)
{
    if (!f) return "";
    return f->mem == FLAG_GDR ? "gdrcopy" : f->mem == FLAG_MAPPED ? "mapped-host" : "host";
}

typedef struct flag_wait {
    te_imm_flag *f;
    uint64_t target;
} flag_wait;

static bool flag_reached(void *arg)
{
    flag_wait *w = arg;
    return te_imm_flag_value(w->f) >= w->target;
}

static bool flag_engine_stopped(void *arg)
{
    flag_wait *w = arg;
    return atomic_load(&w->f->e->state) != ENGINE_RUNNING;
}

int te_imm_flag_wait(te_imm_flag *f, uint64_t target, int timeout_ms)
{
    tn_err_clear();
    if (!f) return tn_err(-EINVAL, "te_imm_flag_wait: flag is NULL");
    flag_wait fw = {f, target};
    tn_wait_spec w = {.notify = &f->wake, .done = flag_reached, .give_up = flag_engine_stopped,
                      .arg = &fw, .deadline_ns = tn_deadline_ms(timeout_ms)};
    int r = tn_wait_until(&w);
    if (r == -ESHUTDOWN) return tn_err(r, "te_imm_flag_wait: engine stopped");
    if (r)
        return tn_err(r, "te_imm_flag_wait: imm %u at epoch %llu (%llu arrivals), waited for %llu "
                         "for %d ms", f->imm, (unsigned long long)te_imm_flag_value(f),
                      (unsigned long long)atomic_load(&f->arrived), (unsigned long long)target,
                      timeout_ms);
    return 0;
}

void te_imm_flag_destroy(te_imm_flag *f)
{
    if (!f) return;
    te_engine *e = f->e;
    pthread_rwlock_wrlock(&e->imm.lock);
    imm_entry **pp = imm_slot(&e->imm, f->imm);
    if (*pp && (*pp)->kind == IMM_FLAG && (*pp)->flag == f) {
        imm_entry *x = *pp;
        *pp = x->next;
        free(x);
    }
    struct te_imm_flag **fp = &e->imm.flags;
    while (*fp && *fp != f) fp = &(*fp)->next_owned;
    if (*fp) *fp = f->next_owned;
    pthread_rwlock_unlock(&e->imm.lock);
    flag_release_memory(f);
    pthread_mutex_destroy(&f->pub_lock);
    free(f);
}
