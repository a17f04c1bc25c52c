/* Scalar watchers with host writers (runs everywhere; on a GPU machine the words are
 * mapped pinned host memory, elsewhere plain host memory), and the CUDA-registration
 * refusals that do not need a GPU. */
/* ctest-labels: threads (the TSan run: the watcher thread and writer threads) */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/clock.h"
#include "cuda/cuda_loader.h"
#include "harness.h"

typedef struct rec {
    _Atomic uint64_t calls, last_old, last_new;
    uint64_t stop_at; /* return false when new == stop_at */
} rec;

static bool on_change(void *arg, uint64_t o, uint64_t n)
{
    rec *r = arg;
    atomic_store(&r->last_old, o);
    atomic_store(&r->last_new, n);
    atomic_fetch_add(&r->calls, 1);
    return n != r->stop_at;
}

static void wait_new(rec *r, uint64_t v)
{
    uint64_t t0 = tn_now_ns();
    while (atomic_load(&r->last_new) != v) {
        if (tn_now_ns() - t0 > 5000000000ull)
            fail_msg("callback for %llu not seen (last %llu)", (unsigned long long)v,
                     (unsigned long long)atomic_load(&r->last_new));
        sched_yield();
    }
}

static te_engine *make_engine(void)
{
    te_config cfg;
    th_config(&cfg);
    te_engine *e = NULL;
    assert_int_equal(te_engine_create(&cfg, &e), 0);
    return e;
}

static void test_basic_and_release(void **state)
{
    (void)state;
    te_engine *e = make_engine();
    rec r = {.stop_at = 1000};
    te_watcher *w = NULL;
    assert_int_equal(te_watcher_alloc(e, on_change, &r, &w), 0);
    volatile uint64_t *p = te_watcher_ptr(w);
    assert_non_null(p);
    assert_int_equal(*p, 0);
    if (tcu_device_count() == 0) {
        assert_string_equal(te_watcher_memory_kind(e), "host");
        assert_true(te_watcher_device_ptr(w) == (uint64_t)(uintptr_t)p);
    }
    for (uint64_t v = 1; v <= 100; v++) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
        wait_new(&r, v);
        assert_int_equal(atomic_load(&r.last_old), v - 1);
    }
    /* Returning false releases the slot: the next alloc gets it back, zeroed. */
    __atomic_store_n(p, 1000, __ATOMIC_RELEASE);
    wait_new(&r, 1000);
    /* The callback has returned but the watcher thread may not have pushed the slot on
     * the free list yet. Until it has, allocations take fresh slots; they are held (not
     * freed) so that none of them can land on top of the LIFO free list above p. */
    enum { MAX_EXTRA = 4096 };
    te_watcher **extra = calloc(MAX_EXTRA, sizeof *extra);
    assert_non_null(extra);
    int n_extra = 0;
    te_watcher *w2 = NULL;
    for (;;) {
        assert_int_equal(te_watcher_alloc(e, on_change, &r, &w2), 0);
        if (te_watcher_ptr(w2) == p) break;
        assert_true(n_extra < MAX_EXTRA); /* about 4 s at 1 ms per try */
        extra[n_extra++] = w2;
        usleep(1000);
    }
    for (int i = 0; i < n_extra; i++) te_watcher_free(extra[i]);
    free(extra);
    assert_int_equal(*p, 0);
    uint64_t calls = atomic_load(&r.calls);
    __atomic_store_n(p, 5, __ATOMIC_RELEASE);
    wait_new(&r, 5);
    assert_int_equal(atomic_load(&r.last_old), 0);
    assert_int_equal(atomic_load(&r.calls), calls + 1);
    te_engine_destroy(e); /* w2 is freed with the engine */
}

static void test_bad_args(void **state)
{
    (void)state;
    te_engine *e = make_engine();
    te_watcher *w = NULL;
    assert_int_equal(te_watcher_alloc(NULL, on_change, NULL, &w), -EINVAL);
    assert_int_equal(te_watcher_alloc(e, NULL, NULL, &w), -EINVAL);
    assert_non_null(strstr(te_last_error(), "fn"));
    assert_int_equal(te_watcher_alloc(e, on_change, NULL, NULL), -EINVAL);
    assert_null(te_watcher_ptr(NULL));
    te_watcher_free(NULL);
    te_engine_stop(e);
    rec r = {.stop_at = ~0ull};
    assert_int_equal(te_watcher_alloc(e, on_change, &r, &w), -ESHUTDOWN);
    te_engine_destroy(e);
}

/* Many watchers, several writer threads, frees racing with callbacks. */
#define NW 2000
typedef struct many {
    te_watcher *w[NW];
    rec r[NW];
} many;

/* One writer's share: a view of the handles only (the recs are the callbacks'). */
typedef struct part {
    te_watcher **w;
    int first, count;
} part;

static void *writer(void *arg)
{
    part *m = arg;
    for (int round = 1; round <= 20; round++)
        for (int i = m->first; i < m->first + m->count; i++)
            __atomic_store_n(te_watcher_ptr(m->w[i]), (uint64_t)round, __ATOMIC_RELEASE);
    return NULL;
}

static void test_many_threads(void **state)
{
    (void)state;
    te_engine *e = make_engine();
    many *m = calloc(1, sizeof *m);
    for (int i = 0; i < NW; i++) {
        m->r[i].stop_at = ~0ull;
        assert_int_equal(te_watcher_alloc(e, on_change, &m->r[i], &m->w[i]), 0);
    }
    part parts[4];
    pthread_t th[4];
    for (int k = 0; k < 4; k++) {
        parts[k].w = m->w;
        parts[k].first = k * (NW / 4);
        parts[k].count = NW / 4;
        pthread_create(&th[k], NULL, writer, &parts[k]);
    }
    for (int k = 0; k < 4; k++) pthread_join(th[k], NULL);
    for (int i = 0; i < NW; i++) wait_new(&m->r[i], 20); /* the final value is always seen */
    /* Free half while the other half keeps changing. */
    for (int i = 0; i < NW; i += 2) te_watcher_free(m->w[i]);
    for (int i = 1; i < NW; i += 2) __atomic_store_n(te_watcher_ptr(m->w[i]), 21, __ATOMIC_RELEASE);
    for (int i = 1; i < NW; i += 2) wait_new(&m->r[i], 21);
    for (int i = 0; i < NW; i += 2) assert_int_equal(atomic_load(&m->r[i].last_new), 20);
    te_engine_destroy(e);
    free(m);
}

/* A callback that frees another watcher and allocates a new one. */
typedef struct chain {
    te_engine *e;
    te_watcher *victim, *made;
    rec r;
    _Atomic int fired;
} chain;

static bool chain_cb(void *arg, uint64_t o, uint64_t n)
{
    (void)o;
    (void)n;
    chain *c = arg;
    te_watcher_free(c->victim);
    c->victim = NULL;
    if (te_watcher_alloc(c->e, on_change, &c->r, &c->made)) return false;
    atomic_store(&c->fired, 1);
    return false;
}

static void test_callback_reentry(void **state)
{
    (void)state;
    chain c;
    memset(&c, 0, sizeof c);
    c.e = make_engine();
    c.r.stop_at = ~0ull;
    te_watcher *w = NULL;
    assert_int_equal(te_watcher_alloc(c.e, on_change, &c.r, &c.victim), 0);
    assert_int_equal(te_watcher_alloc(c.e, chain_cb, &c, &w), 0);
    __atomic_store_n(te_watcher_ptr(w), 1, __ATOMIC_RELEASE);
    uint64_t t0 = tn_now_ns();
    while (!atomic_load(&c.fired)) {
        assert_true(tn_now_ns() - t0 < 5000000000ull);
        sched_yield();
    }
    __atomic_store_n(te_watcher_ptr(c.made), 9, __ATOMIC_RELEASE);
    wait_new(&c.r, 9);
    te_engine_destroy(c.e);
}

/* CUDA memory on a machine without CUDA (or a host-only group): a clear refusal. */
static void test_cuda_registration_refused(void **state)
{
    (void)state;
    te_engine *e = make_engine();
    char buf[4096];
    te_mr *mr = NULL;
    int r = te_mr_register(e, buf, sizeof buf, 0, TE_MR_LOCAL, &mr);
    assert_int_equal(r, -ENODEV); /* no group drives device 0 */
    te_engine_destroy(e);
    if (tcu_device_count() > 0) return; /* the GPU tests cover the rest there */
    te_config cfg;
    th_config(&cfg);
    cfg.groups[0].cuda_device = 0; /* a GPU group on a machine without CUDA */
    assert_int_equal(te_engine_create(&cfg, &e), 0);
    r = te_mr_register(e, buf, sizeof buf, 0, TE_MR_LOCAL, &mr);
    assert_int_equal(r, -ENOSYS);
    assert_non_null(strstr(te_last_error(), "libcuda.so.1"));
    /* Host memory still registers on that group. */
    assert_int_equal(te_mr_register(e, buf, sizeof buf, TE_DEVICE_HOST, TE_MR_LOCAL, &mr), 0);
    assert_int_equal(te_mr_deregister(mr), 0);
    te_engine_destroy(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic_and_release),
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_many_threads),
        cmocka_unit_test(test_callback_reentry),
        cmocka_unit_test(test_cuda_registration_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
