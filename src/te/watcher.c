/* Scalar (UVM) watchers: see te.h, "watchers".
 *
 * Layout: words live in chunks of 512 (one 4 KiB page each), allocated as needed, at
 * most 64 chunks. Slot i is word i % 512 of chunk i / 512. A slot is live when
 * live[i] holds its watcher; the watcher thread scans slots [0, high) and calls the
 * callback when a word differs from the last value it saw.
 *
 * Freeing: te_watcher_free clears live[i], then waits until the watcher thread has
 * finished the scan it may be in (scan sequence number advanced once), so the callback
 * is not running when it returns. From inside a callback (the watcher thread itself)
 * clearing is enough. The slot's word is zeroed and the slot pushed on a LIFO free
 * list only after that point, so a new owner never sees the old owner's callback. */
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/log.h"
#include "cuda/cuda_loader.h"
#include "te/engine_internal.h"

#define SLOTS_PER_CHUNK 512
#define MAX_CHUNKS 64
#define MAX_SLOTS (SLOTS_PER_CHUNK * MAX_CHUNKS)
#define SPIN_WINDOW_NS 2000000ull /* keep spinning this long after the last change */
#define SLEEP_MIN_NS 10000ull
#define SLEEP_MAX_NS 200000ull

struct te_watcher {
    struct watcher_pool *ws;
    uint32_t slot;
    te_watch_fn fn;
    void *arg;
    uint64_t last;         /* watcher thread only */
};

typedef struct watcher_pool {
    te_engine *e;
    pthread_mutex_t lock;          /* allocation, free list, chunk creation */
    int dev;                       /* CUDA device of the mapped memory, -1 = plain host */
    uint32_t n_chunks;
    volatile uint64_t *host[MAX_CHUNKS];
    uint64_t dptr[MAX_CHUNKS];
    struct te_watcher *_Atomic live[MAX_SLOTS];
    _Atomic uint32_t high;         /* slots ever handed out: scan [0, high) */
    uint32_t free_list[MAX_SLOTS]; /* LIFO of released slots */
    uint32_t n_free;
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    _Atomic uint64_t scan_seq;     /* completed scans */
    tn_notify wake;
} watcher_pool;

static volatile uint64_t *slot_word(watcher_pool *ws, uint32_t s)
{
    return &ws->host[s / SLOTS_PER_CHUNK][s % SLOTS_PER_CHUNK];
}

/* Returns the slot to the free list (lock held by the caller). */
static void slot_release_locked(watcher_pool *ws, uint32_t s)
{
    __atomic_store_n(slot_word(ws, s), 0, __ATOMIC_RELEASE);
    ws->free_list[ws->n_free++] = s;
}

static void *watcher_main(void *arg)
{
    watcher_pool *ws = arg;
    uint64_t last_change = tn_now_ns();
    uint64_t sleep_ns = SLEEP_MIN_NS;
    while (!atomic_load_explicit(&ws->stop, memory_order_acquire)) {
        bool changed = false;
        uint32_t high = atomic_load_explicit(&ws->high, memory_order_acquire);
        for (uint32_t s = 0; s < high; s++) {
            struct te_watcher *w = atomic_load_explicit(&ws->live[s], memory_order_acquire);
            if (!w) continue;
            uint64_t v = __atomic_load_n(slot_word(ws, s), __ATOMIC_ACQUIRE);
            if (v == w->last) continue;
            changed = true;
            uint64_t old = w->last;
            w->last = v;
            if (w->fn(w->arg, old, v)) continue;
            /* Release, unless the callback already freed it (live[s] then differs). */
            struct te_watcher *expect = w;
            if (atomic_compare_exchange_strong(&ws->live[s], &expect, NULL)) {
                pthread_mutex_lock(&ws->lock);
                slot_release_locked(ws, s);
                pthread_mutex_unlock(&ws->lock);
                free(w);
            }
        }
        atomic_fetch_add_explicit(&ws->scan_seq, 1, memory_order_release);
        uint64_t now = tn_now_ns();
        if (changed || ws->e->busy_poll) {
            last_change = now;
            sleep_ns = SLEEP_MIN_NS;
            continue;
        }
        if (now - last_change < SPIN_WINDOW_NS) continue;
        uint32_t t = tn_notify_prepare(&ws->wake);
        if (atomic_load(&ws->stop)) {
            tn_notify_cancel(&ws->wake);
            break;
        }
        tn_notify_wait(&ws->wake, t, sleep_ns);
        if (sleep_ns < SLEEP_MAX_NS) sleep_ns *= 2;
    }
    return NULL;
}

/* Engine's watcher state, created on first use (lists_lock serialises creation). */
static watcher_pool *get_watchers(te_engine *e, int *err)
{
    pthread_mutex_lock(&e->lists_lock);
    watcher_pool *ws = e->watchers;
    if (!ws) {
        ws = calloc(1, sizeof *ws);
        if (!ws) {
            pthread_mutex_unlock(&e->lists_lock);
            *err = tn_err(-ENOMEM, "te_watcher_alloc: out of memory");
            return NULL;
        }
        ws->e = e;
        ws->dev = engine_gpu_device(e);
        pthread_mutex_init(&ws->lock, NULL);
        tn_notify_init(&ws->wake);
        e->watchers = ws;
    }
    pthread_mutex_unlock(&e->lists_lock);
    return ws;
}

static int add_chunk_locked(watcher_pool *ws)
{
    if (ws->n_chunks == MAX_CHUNKS)
        return tn_err(-ENOSPC, "te_watcher_alloc: %d watchers are live (the most per engine)",
                      MAX_SLOTS);
    size_t bytes = SLOTS_PER_CHUNK * sizeof(uint64_t);
    void *h = NULL;
    uint64_t d = 0;
    if (ws->dev >= 0) {
        int r = tcu_host_alloc_mapped(ws->dev, bytes, &h, &d);
        if (r) {
            char why[256];
            snprintf(why, sizeof why, "%s", te_last_error());
            return tn_err(r, "te_watcher_alloc: %s", why);
        }
    } else {
        h = aligned_alloc(4096, bytes);
        if (!h) return tn_err(-ENOMEM, "te_watcher_alloc: out of memory");
        memset(h, 0, bytes);
        d = (uint64_t)(uintptr_t)h;
    }
    ws->host[ws->n_chunks] = h;
    ws->dptr[ws->n_chunks] = d;
    ws->n_chunks++;
    return 0;
}

int te_watcher_alloc(te_engine *e, te_watch_fn fn, void *arg, te_watcher **out)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_watcher_alloc: engine is NULL");
    if (!fn) return tn_err(-EINVAL, "te_watcher_alloc: callback fn is NULL");
    if (!out) return tn_err(-EINVAL, "te_watcher_alloc: out is NULL");
    int r = engine_enter(e);
    if (r) return r;
    watcher_pool *ws = get_watchers(e, &r);
    if (!ws) {
        engine_leave(e);
        return r;
    }
    struct te_watcher *w = calloc(1, sizeof *w);
    if (!w) {
        engine_leave(e);
        return tn_err(-ENOMEM, "te_watcher_alloc: out of memory");
    }
    w->ws = ws;
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_lock(&ws->lock);
    uint32_t s;
    if (ws->n_free) {
        s = ws->free_list[--ws->n_free];
    } else {
        uint32_t high = atomic_load(&ws->high);
        if (high == ws->n_chunks * SLOTS_PER_CHUNK && (r = add_chunk_locked(ws))) {
            pthread_mutex_unlock(&ws->lock);
            free(w);
            engine_leave(e);
            return r;
        }
        s = high;
        atomic_store_explicit(&ws->high, high + 1, memory_order_release);
    }
    w->slot = s;
    w->last = 0; /* the word is 0: fresh, or zeroed at release */
    atomic_store_explicit(&ws->live[s], w, memory_order_release);
    if (!ws->started) {
        atomic_init(&ws->stop, false);
        if ((r = pthread_create(&ws->thread, NULL, watcher_main, ws))) {
            atomic_store(&ws->live[s], NULL);
            slot_release_locked(ws, s);
            pthread_mutex_unlock(&ws->lock);
            free(w);
            engine_leave(e);
            return tn_err(-r, "te_watcher_alloc: cannot start the watcher thread");
        }
        ws->started = true;
    }
    pthread_mutex_unlock(&ws->lock);
    tn_notify_wake(&ws->wake);
    engine_leave(e);
    *out = w;
    return 0;
}

volatile uint64_t *te_watcher_ptr(const te_watcher *w) { return w ? slot_word(w->ws, w->slot) : NULL; }

uint64_t te_watcher_device_ptr(const te_watcher *w)
{
    if (!w) return 0;
    return w->ws->dptr[w->slot / SLOTS_PER_CHUNK] + (w->slot % SLOTS_PER_CHUNK) * sizeof(uint64_t);
}

const char *te_watcher_memory_kind(const te_engine *e)
{
    if (!e) return "";
    if (e->watchers) return e->watchers->dev >= 0 ? "mapped-host" : "host";
    return engine_gpu_device(e) >= 0 ? "mapped-host" : "host";
}

void te_watcher_free(te_watcher *w)
{
    if (!w) return;
    watcher_pool *ws = w->ws;
    uint32_t s = w->slot;
    struct te_watcher *expect = w;
    if (!atomic_compare_exchange_strong(&ws->live[s], &expect, NULL)) return; /* already gone */
    bool on_thread = ws->started && pthread_equal(pthread_self(), ws->thread);
    bool running = ws->started && !atomic_load(&ws->stop);
    if (!on_thread && running) {
        /* live[s] is clear: a scan that had loaded w ends with an increment that this
         * read either already includes or that comes next. */
        uint64_t seq = atomic_load_explicit(&ws->scan_seq, memory_order_seq_cst);
        tn_notify_wake(&ws->wake);
        while (atomic_load_explicit(&ws->scan_seq, memory_order_acquire) < seq + 1 &&
               !atomic_load(&ws->stop))
            sched_yield();
    }
    pthread_mutex_lock(&ws->lock);
    slot_release_locked(ws, s);
    pthread_mutex_unlock(&ws->lock);
    free(w);
}

void watchers_stop(te_engine *e)
{
    watcher_pool *ws = e->watchers;
    if (!ws || !ws->started) return;
    atomic_store(&ws->stop, true);
    tn_notify_wake(&ws->wake);
    pthread_join(ws->thread, NULL);
    ws->started = false;
}

void watchers_free(te_engine *e)
{
    watcher_pool *ws = e->watchers;
    if (!ws) return;
    watchers_stop(e);
    for (uint32_t s = 0; s < MAX_SLOTS; s++) free(atomic_load(&ws->live[s]));
    for (uint32_t c = 0; c < ws->n_chunks; c++) {
        if (ws->dev >= 0) tcu_host_free_mapped(ws->dev, (void *)ws->host[c]);
        else free((void *)ws->host[c]);
    }
    pthread_mutex_destroy(&ws->lock);
    free(ws);
    e->watchers = NULL;
}
