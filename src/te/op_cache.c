/* Recycled operation objects. A eng_op is 1.9 KB, above glibc's per-thread cache of small
 * blocks, so malloc + free of one cost about 300 instructions: a sixth of the engine's
 * whole cost for a small write (bench/engine_ceiling under callgrind).
 *
 * Freed operations go onto the group's list, a lock-free stack (pushers use a CAS; they
 * are the progress-lock holder and the odd refused submission); a submitting thread
 * takes the whole list at once (one exchange, so no ABA) into its own thread-local list
 * and allocates from that. A thread that frees an operation (the lock holder: usually the
 * submitter itself, whose step completed it) keeps it on its own list, up to
 * THREAD_CACHE_MAX, with no atomic operation at all; past that (a worker completing what
 * others submit) it goes to the group's list. The group's list is capped; a thread's list
 * is freed when the thread exits, the group's when the engine stops. */
#include <pthread.h>
#include <stdlib.h>

#include "te/engine_internal.h"

#define GROUP_CACHE_MAX 256u
#define THREAD_CACHE_MAX 256u

static _Thread_local eng_op *t_ops;
static _Thread_local unsigned t_n; /* operations on t_ops, counted only by op_cache_put */
static _Thread_local bool t_registered;
static pthread_key_t t_key;
static pthread_once_t t_once = PTHREAD_ONCE_INIT;

static void free_list(eng_op *op)
{
    while (op) {
        eng_op *nx = op->next;
        free(op);
        op = nx;
    }
}

static void thread_exit(void *list_head) { free_list(*(eng_op **)list_head); }
static void make_key(void) { pthread_key_create(&t_key, thread_exit); }

static void register_thread(void)
{
    if (t_registered) return;
    pthread_once(&t_once, make_key);
    pthread_setspecific(t_key, &t_ops);
    t_registered = true;
}

eng_op *op_cache_get(eng_group *g)
{
    if (!t_ops && atomic_load_explicit(&g->op_cache, memory_order_relaxed)) {
        t_ops = atomic_exchange_explicit(&g->op_cache, NULL, memory_order_acquire);
        atomic_store_explicit(&g->op_cache_n, 0, memory_order_relaxed);
        if (t_ops) register_thread();
    }
    eng_op *op = t_ops;
    if (op) {
        t_ops = op->next;
        if (t_n) t_n--;
        return op;
    }
    return malloc(sizeof *op);
}

void op_cache_put(eng_group *g, eng_op *op)
{
    if (t_n < THREAD_CACHE_MAX) {
        register_thread();
        op->next = t_ops;
        t_ops = op;
        t_n++;
        return;
    }
    /* The count is approximate (a taker resets it without a lock): it only caps memory. */
    if (atomic_load_explicit(&g->op_cache_n, memory_order_relaxed) >= GROUP_CACHE_MAX) {
        free(op);
        return;
    }
    atomic_fetch_add_explicit(&g->op_cache_n, 1, memory_order_relaxed);
    eng_op *head = atomic_load_explicit(&g->op_cache, memory_order_relaxed);
    do op->next = head;
    while (!atomic_compare_exchange_weak_explicit(&g->op_cache, &head, op, memory_order_release,
                                                  memory_order_relaxed));
}

void op_cache_drain(eng_group *g)
{
    free_list(atomic_exchange_explicit(&g->op_cache, NULL, memory_order_acquire));
    atomic_store_explicit(&g->op_cache_n, 0, memory_order_relaxed);
}
