/* Immediate counting: expectations, pollable counters, unmatched delivery.
 *
 * Concurrency: workers look entries up under the table's read lock and only touch
 * atomics; arming, removal and the callback thread's decisions take the write lock.
 * An expectation that reached its target is marked `pending` until its callback has
 * decided keep-or-release; while pending, arrivals accumulate but cannot fire a second
 * reach, so no arrival is lost or counted twice (the original has that race). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/error.h"
#include "core/wait.h"
#include "te/engine_internal.h"


static unsigned bucket_of(uint32_t imm) { return (imm * 2654435761u) >> 22; /* 10 bits */ }

static imm_entry **find_slot(imm_table *t, uint32_t imm)
{
    imm_entry **pp = &t->buckets[bucket_of(imm)];
    while (*pp && (*pp)->imm != imm) pp = &(*pp)->next;
    return pp;
}

int imm_table_init(imm_table *t)
{
    memset(t, 0, sizeof *t);
    t->next_gen = 1;
    return -pthread_rwlock_init(&t->lock, NULL);
}

void imm_table_destroy(imm_table *t)
{
    for (unsigned b = 0; b < IMM_BUCKETS; b++) {
        imm_entry *x = t->buckets[b];
        while (x) {
            imm_entry *nx = x->next;
            free(x);
            x = nx;
        }
        t->buckets[b] = NULL;
    }
    struct te_imm_counter *c = t->counters;
    while (c) {
        struct te_imm_counter *nx = c->next_owned;
        free(c);
        c = nx;
    }
    t->counters = NULL;
    imm_flag_free_all(t);
    pthread_rwlock_destroy(&t->lock);
}

void imm_wake_all(imm_table *t)
{
    pthread_rwlock_rdlock(&t->lock);
    for (struct te_imm_counter *c = t->counters; c; c = c->next_owned) tn_notify_wake(&c->wake.n);
    pthread_rwlock_unlock(&t->lock);
}

/* Fires a reach if the target is met and no reach is pending. Caller holds a lock. */
static void maybe_reach(te_engine *e, imm_entry *x)
{
    if (atomic_load(&x->count) < (int64_t)x->expected) return;
    int zero = 0;
    if (!atomic_compare_exchange_strong(&x->pending, &zero, 1)) return;
    atomic_fetch_sub(&x->count, (int64_t)x->expected);
    cb_post_reached(e, x->imm, x->gen);
}

void imm_arrived(te_engine *e, uint32_t imm)
{
    imm_table *t = &e->imm;
    pthread_rwlock_rdlock(&t->lock);
    imm_entry *x = *find_slot(t, imm);
    if (!x) {
        te_imm_fn fn = t->fn_inline ? t->fn : NULL;
        void *arg = t->arg;
        pthread_rwlock_unlock(&t->lock);
        if (fn) fn(arg, imm); /* te_imm_set_callback_inline: on this thread, no hop */
        else cb_post_imm(e, imm);
        return;
    }
    if (x->kind == IMM_COUNTER) {
        int64_t v = atomic_fetch_add(&x->counter->avail, 1) + 1;
        tn_notify_at_reached(&x->counter->wake, v > 0 ? (uint64_t)v : 0);
    } else if (x->kind == IMM_FLAG) {
        imm_flag_arrived(x->flag);
    } else {
        atomic_fetch_add(&x->count, 1);
        maybe_reach(e, x);
    }
    pthread_rwlock_unlock(&t->lock);
}

void imm_deliver_plain(te_engine *e, uint32_t imm)
{
    imm_table *t = &e->imm;
    pthread_rwlock_rdlock(&t->lock);
    te_imm_fn fn = t->fn;
    void *arg = t->arg;
    pthread_rwlock_unlock(&t->lock);
    if (fn) fn(arg, imm);
}

void imm_handle_reached(te_engine *e, uint32_t imm, uint64_t gen)
{
    imm_table *t = &e->imm;
    pthread_rwlock_rdlock(&t->lock);
    imm_entry *x = *find_slot(t, imm);
    if (!x || x->gen != gen || x->kind != IMM_EXPECT) {
        pthread_rwlock_unlock(&t->lock); /* replaced or removed meanwhile */
        return;
    }
    te_imm_reached_fn fn = x->fn;
    void *arg = x->arg;
    pthread_rwlock_unlock(&t->lock);

    bool keep = fn ? fn(arg, imm) : false;

    pthread_rwlock_wrlock(&t->lock);
    imm_entry **pp = find_slot(t, imm);
    x = *pp;
    if (!x || x->gen != gen) { /* the callback itself re-armed or removed it */
        pthread_rwlock_unlock(&t->lock);
        return;
    }
    if (keep) {
        atomic_store(&x->pending, 0);
        maybe_reach(e, x);
        pthread_rwlock_unlock(&t->lock);
        return;
    }
    *pp = x->next;
    int64_t surplus = atomic_load(&x->count);
    pthread_rwlock_unlock(&t->lock);
    free(x);
    for (int64_t k = 0; k < surplus; k++) imm_deliver_plain(e, imm);
}

/* Unlinks the entry for imm (write lock held) and describes it in *prev. */
static void unlink_entry(imm_table *t, uint32_t imm, te_imm_prev *prev)
{
    imm_entry **pp = find_slot(t, imm);
    imm_entry *x = *pp;
    te_imm_prev p = {0};
    if (x) {
        p.existed = true;
        if (x->kind == IMM_COUNTER) {
            p.count = (uint64_t)atomic_load(&x->counter->avail);
            atomic_store(&x->counter->attached, false);
            tn_notify_wake(&x->counter->wake.n);
        } else if (x->kind == IMM_FLAG) {
            imm_flag_detach(x->flag, &p);
        } else {
            int64_t c = atomic_load(&x->count);
            p.count = c > 0 ? (uint64_t)c : 0;
            p.expected = x->expected;
        }
        *pp = x->next;
        free(x);
    }
    if (prev) *prev = p;
}

static int set_callback(te_engine *e, te_imm_fn fn, void *arg, bool in_line, const char *name)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "%s: engine is NULL", name);
    int r = engine_enter(e);
    if (r) return r;
    pthread_rwlock_wrlock(&e->imm.lock);
    e->imm.fn = fn;
    e->imm.arg = arg;
    e->imm.fn_inline = in_line;
    pthread_rwlock_unlock(&e->imm.lock);
    engine_leave(e);
    return 0;
}

int te_imm_set_callback(te_engine *e, te_imm_fn fn, void *arg)
{
    return set_callback(e, fn, arg, false, "te_imm_set_callback");
}

int te_imm_set_callback_inline(te_engine *e, te_imm_fn fn, void *arg)
{
    return set_callback(e, fn, arg, true, "te_imm_set_callback_inline");
}

int te_imm_expect(te_engine *e, uint32_t imm, uint64_t expected, te_imm_reached_fn fn, void *arg,
                  te_imm_prev *prev)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_imm_expect: engine is NULL");
    if (expected == 0 || expected > INT64_MAX)
        return tn_err(-EINVAL, "te_imm_expect: expected must be in 1..2^63-1 (got %llu)",
                      (unsigned long long)expected);
    int r = engine_enter(e);
    if (r) return r;
    imm_entry *x = calloc(1, sizeof *x);
    if (!x) {
        engine_leave(e);
        return tn_err(-ENOMEM, "te_imm_expect: out of memory");
    }
    x->imm = imm;
    x->kind = IMM_EXPECT;
    x->expected = expected;
    x->fn = fn;
    x->arg = arg;
    pthread_rwlock_wrlock(&e->imm.lock);
    unlink_entry(&e->imm, imm, prev);
    x->gen = e->imm.next_gen++;
    imm_entry **pp = find_slot(&e->imm, imm);
    *pp = x;
    pthread_rwlock_unlock(&e->imm.lock);
    engine_leave(e);
    return 0;
}

int te_imm_remove(te_engine *e, uint32_t imm, te_imm_prev *prev)
{
    tn_err_clear();
    if (!e) return tn_err(-EINVAL, "te_imm_remove: engine is NULL");
    int r = engine_enter(e);
    if (r) return r;
    te_imm_prev p;
    pthread_rwlock_wrlock(&e->imm.lock);
    unlink_entry(&e->imm, imm, &p);
    pthread_rwlock_unlock(&e->imm.lock);
    engine_leave(e);
    if (prev) *prev = p;
    return p.existed ? 0 : tn_err(-ENOENT, "te_imm_remove: no expectation or counter for imm %u", imm);
}

int te_imm_counter_create(te_engine *e, uint32_t imm, te_imm_counter **out)
{
    tn_err_clear();
    if (!e || !out) return tn_err(-EINVAL, "te_imm_counter_create: %s is NULL", e ? "out" : "engine");
    int r = engine_enter(e);
    if (r) return r;
    imm_entry *x = calloc(1, sizeof *x);
    struct te_imm_counter *c = calloc(1, sizeof *c);
    if (!x || !c) {
        free(x);
        free(c);
        engine_leave(e);
        return tn_err(-ENOMEM, "te_imm_counter_create: out of memory");
    }
    c->e = e;
    c->imm = imm;
    atomic_init(&c->attached, true);
    tn_notify_at_init(&c->wake);
    x->imm = imm;
    x->kind = IMM_COUNTER;
    x->counter = c;
    pthread_rwlock_wrlock(&e->imm.lock);
    unlink_entry(&e->imm, imm, NULL);
    x->gen = e->imm.next_gen++;
    *find_slot(&e->imm, imm) = x;
    c->next_owned = e->imm.counters;
    e->imm.counters = c;
    pthread_rwlock_unlock(&e->imm.lock);
    engine_leave(e);
    *out = c;
    return 0;
}

uint64_t te_imm_counter_value(const te_imm_counter *c)
{
    int64_t v = c ? atomic_load(&((te_imm_counter *)c)->avail) : 0;
    return v > 0 ? (uint64_t)v : 0;
}

static bool try_take(te_imm_counter *c, uint64_t n)
{
    int64_t v = atomic_load(&c->avail);
    while (v >= (int64_t)n)
        if (atomic_compare_exchange_weak(&c->avail, &v, v - (int64_t)n)) return true;
    return false;
}

typedef struct imm_wait {
    te_imm_counter *c;
    uint64_t n;
} imm_wait;

/* Awake turns: take without publishing (counter.c, counter_at, says why). */
static bool imm_take(void *arg)
{
    imm_wait *w = arg;
    return try_take(w->c, w->n);
}

/* Publishes n, then tries: tn_wait_until calls this after it announced itself as a
 * sleeper, the order tn_notify_at needs. */
static bool imm_took(void *arg)
{
    imm_wait *w = arg;
    tn_notify_at_publish(&w->c->wake, w->n);
    return imm_take(arg);
}

static int imm_drive(void *arg, bool last)
{
    imm_wait *w = arg;
    return engine_drive(w->c->e, last);
}

static bool imm_engine_stopped(void *arg)
{
    imm_wait *w = arg;
    return atomic_load(&w->c->e->state) != ENGINE_RUNNING;
}

int te_imm_counter_wait(te_imm_counter *c, uint64_t n, int timeout_ms)
{
    tn_err_clear();
    if (!c) return tn_err(-EINVAL, "te_imm_counter_wait: counter is NULL");
    if (n > INT64_MAX) return tn_err(-EINVAL, "te_imm_counter_wait: n too large");
    imm_wait iw = {c, n};
    tn_wait_spec w = {.notify = &c->wake.n, .done = imm_took, .check = imm_take, .give_up = imm_engine_stopped,
                      .drive = imm_drive, .arg = &iw, .deadline_ns = tn_deadline_ms(timeout_ms)};
    int r = tn_wait_until(&w);
    if (r == -ESHUTDOWN) return tn_err(r, "te_imm_counter_wait: engine stopped");
    if (r)
        return tn_err(r, "te_imm_counter_wait: %llu of %llu immediates %u after %d ms",
                      (unsigned long long)te_imm_counter_value(c), (unsigned long long)n, c->imm,
                      timeout_ms);
    return 0;
}

void te_imm_counter_destroy(te_imm_counter *c)
{
    if (!c) return;
    te_engine *e = c->e;
    pthread_rwlock_wrlock(&e->imm.lock);
    imm_entry **pp = find_slot(&e->imm, c->imm);
    if (*pp && (*pp)->kind == IMM_COUNTER && (*pp)->counter == c) {
        imm_entry *x = *pp;
        *pp = x->next;
        free(x);
    }
    struct te_imm_counter **cp = &e->imm.counters;
    while (*cp && *cp != c) cp = &(*cp)->next_owned;
    if (*cp) *cp = c->next_owned;
    pthread_rwlock_unlock(&e->imm.lock);
    free(c);
}

imm_entry **imm_slot(imm_table *t, uint32_t imm) { return find_slot(t, imm); }

void imm_install_locked(imm_table *t, imm_entry *x, te_imm_prev *prev)
{
    unlink_entry(t, x->imm, prev);
    x->gen = t->next_gen++;
    *find_slot(t, x->imm) = x;
}
