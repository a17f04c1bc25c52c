/* The one waiting loop of the library: drive progress while it moves (the waiting thread
 * polls for what it waits for, as a raw libfabric user would), spin briefly (completions
 * usually come sooner than a futex sleep/wake pair would take), then sleep on a tn_notify
 * in slices, until a condition holds, the caller gives up, or a deadline passes. */
#ifndef TENDRIL_CORE_WAIT_H
#define TENDRIL_CORE_WAIT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/notify.h"

typedef struct tn_wait_spec {
    tn_notify *notify;              /* woken by whoever makes `done` true */
    bool (*done)(void *arg);        /* the condition (may also consume, e.g. take n) */
    /* optional: the same condition without what `done` does only for a sleeper (e.g.
     * publishing a wake-up threshold: an atomic exchange per look); used on the turns
     * that do not lead to sleep. NULL: `done` everywhere. */
    bool (*check)(void *arg);
    bool (*give_up)(void *arg);     /* optional: stop waiting (engine stopped) */
    /* optional: one progress step; 1 something moved, 0 nothing (yet), < 0 cannot drive.
     * The waiter keeps driving until nothing moved for a while, then calls it once with
     * `last` (hand progress back to whoever drives when no waiter does) and sleeps. */
    int (*drive)(void *arg, bool last);
    void *arg;
    uint64_t deadline_ns;           /* tn_deadline_ms(); UINT64_MAX = none */
} tn_wait_spec;

/* 0 when done() held, -ESHUTDOWN when give_up() held, -ETIMEDOUT at the deadline.
 * Sets no error message: callers describe what they waited for. */
int tn_wait_until(const tn_wait_spec *w);

#endif
