/* Immediate-data accounting (ImmCounter family). One table per engine, shared by all
 * groups' workers: imm value -> expectation (callback when `expected` arrived) or
 * pollable counter. Arrivals never assume order; unmatched values go to the engine's
 * immediate callback. */
#ifndef TENDRIL_TE_IMM_H
#define TENDRIL_TE_IMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/notify.h"
#include "tendril/te.h"

#define IMM_BUCKETS 1024

enum imm_kind { IMM_EXPECT = 1, IMM_COUNTER = 2, IMM_FLAG = 3 /* imm_flag.c */ };

typedef struct imm_entry {
    uint32_t imm;
    uint64_t gen;              /* identifies this arming across replacement */
    int kind;
    _Atomic int64_t count;     /* IMM_EXPECT: arrivals not yet consumed by a reach */
    uint64_t expected;
    te_imm_reached_fn fn;
    void *arg;
    _Atomic int pending;       /* a reach is queued to the callback thread */
    struct te_imm_counter *counter;
    struct te_imm_flag *flag;  /* IMM_FLAG */
    struct imm_entry *next;
} imm_entry;

struct te_imm_counter {
    te_engine *e;
    uint32_t imm;
    _Atomic int64_t avail;
    _Atomic bool attached;     /* still in the engine's table */
    tn_notify_at wake;         /* threshold: the n a sleeping wait(n) needs */
    struct te_imm_counter *next_owned; /* engine's list, freed at destroy */
};

typedef struct imm_table {
    pthread_rwlock_t lock;
    imm_entry *buckets[IMM_BUCKETS];
    uint64_t next_gen;
    te_imm_fn fn;   /* unmatched immediates */
    void *arg;
    bool fn_inline; /* fn runs on the thread that polled the immediate */
    struct te_imm_counter *counters; /* all counters created, for destroy */
    struct te_imm_flag *flags;       /* all GPU-visible flags created (imm_flag.c) */
} imm_table;

int imm_table_init(imm_table *t);
void imm_table_destroy(imm_table *t);

/* Worker side: one immediate arrived. */
void imm_arrived(te_engine *e, uint32_t imm);
/* Callback-thread side. */
void imm_handle_reached(te_engine *e, uint32_t imm, uint64_t gen);
void imm_deliver_plain(te_engine *e, uint32_t imm);
/* Entry slot for imm (lock held by the caller), and installation of a new entry that
 * replaces the old one (write lock held): used by imm_flag.c. */
imm_entry **imm_slot(imm_table *t, uint32_t imm);
void imm_install_locked(imm_table *t, imm_entry *x, te_imm_prev *prev);

/* imm_flag.c: the worker's increment, the description of a detached flag, teardown. */
void imm_flag_arrived(struct te_imm_flag *f);
void imm_flag_detach(struct te_imm_flag *f, te_imm_prev *p);
void imm_flag_free_all(imm_table *t);

/* Wakes counter waiters at stop so they return -ESHUTDOWN. */
void imm_wake_all(imm_table *t);

#endif
