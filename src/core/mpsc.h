/* Intrusive multi-producer / single-consumer queue (Vyukov). Producers never block
 * and never take a lock: one atomic exchange per push. The consumer may observe the
 * queue as momentarily empty while a push is half done; it then simply retries later
 * (mpsc_pop returns NULL), which is what a polling worker wants. */
#ifndef TENDRIL_CORE_MPSC_H
#define TENDRIL_CORE_MPSC_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct mpsc_node {
    _Atomic(struct mpsc_node *) next;
} mpsc_node;

typedef struct mpsc_queue {
    _Atomic(mpsc_node *) head; /* producers push here */
    mpsc_node *tail;           /* consumer pops here */
    mpsc_node stub;
} mpsc_queue;

static inline void mpsc_init(mpsc_queue *q)
{
    atomic_store_explicit(&q->stub.next, NULL, memory_order_relaxed);
    atomic_store_explicit(&q->head, &q->stub, memory_order_relaxed);
    q->tail = &q->stub;
}

static inline void mpsc_push(mpsc_queue *q, mpsc_node *n)
{
    atomic_store_explicit(&n->next, NULL, memory_order_relaxed);
    mpsc_node *prev = atomic_exchange_explicit(&q->head, n, memory_order_acq_rel);
    atomic_store_explicit(&prev->next, n, memory_order_release);
}

/* Single consumer only. */
static inline mpsc_node *mpsc_pop(mpsc_queue *q)
{
    mpsc_node *tail = q->tail;
    mpsc_node *next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (tail == &q->stub) {
        if (!next) return NULL;
        q->tail = next;
        tail = next;
        next = atomic_load_explicit(&next->next, memory_order_acquire);
    }
    if (next) {
        q->tail = next;
        return tail;
    }
    if (tail != atomic_load_explicit(&q->head, memory_order_acquire)) return NULL; /* push in progress */
    mpsc_push(q, &q->stub);
    next = atomic_load_explicit(&tail->next, memory_order_acquire);
    if (next) {
        q->tail = next;
        return tail;
    }
    return NULL;
}

/* True if nothing is queued (a racing push may make this stale at once). */
static inline int mpsc_empty(mpsc_queue *q)
{
    return q->tail == &q->stub &&
           atomic_load_explicit(&q->stub.next, memory_order_acquire) == NULL &&
           atomic_load_explicit(&q->head, memory_order_acquire) == &q->stub;
}

#endif
