/* The transport vtable: one NIC ("domain") of one backend. The engine above knows
 * nothing of libfabric or ibverbs; it posts work requests and drains events.
 *
 * Threading: post_*, poll, resolve, wait_fd and can_block are called only under the owning
 * group's progress lock: one thread at a time, but not always the same thread (the
 * worker, a submitter or a waiter: src/te/worker.c).
 * mr_reg / mr_dereg may be called from any thread concurrently with the worker (the
 * backend must make that safe: libfabric domains stay thread-safe for registration,
 * FI_THREAD_SAFE, or FI_THREAD_COMPLETION on shm/sm2 whose domain locks at every level:
 * src/transport/fabric/fabric.c, wanted_threading). */
#ifndef TENDRIL_TRANSPORT_BACKEND_H
#define TENDRIL_TRANSPORT_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tendril/te.h"

typedef struct tp_nic tp_nic;
typedef uint64_t tp_peer; /* resolved peer address (fi_addr_t for libfabric) */

typedef struct tp_mr {
    void *handle;     /* backend MR object */
    void *desc;       /* local descriptor passed with work requests (may be NULL) */
    uint64_t rkey;    /* remote key published in te_mr_desc */
    bool target_polled; /* backend's own: this region keeps the NIC polling (fabric.c) */
    bool remote;        /* backend's own: registered for remote writes (fabric.c counts them) */
} tp_mr;

typedef struct tp_write {
    const void *local;   /* NULL with len 0 for imm-only writes */
    size_t len;
    void *local_desc;
    tp_peer peer;
    uint64_t remote_base; /* registered base VA of the target region */
    uint64_t remote_off;  /* offset inside it */
    uint64_t rkey;
    bool has_imm;
    uint32_t imm;
    void *ctx;            /* returned in the completion event */
} tp_write;

enum tp_event_kind {
    TP_EV_WRITE = 1, /* local completion of a posted write (ctx) */
    TP_EV_SEND,      /* local completion of a posted send (ctx) */
    TP_EV_RECV,      /* a receive buffer filled (ctx, len) */
    TP_EV_IMM,       /* an immediate arrived with a remote write (imm) */
    TP_EV_PEER,      /* the transport found `peer` gone (status < 0): work requests to it
                        that are still outstanding complete with errors, new ones fail */
};

typedef struct tp_event {
    int kind;
    int status;        /* 0 or negative errno */
    void *ctx;
    size_t len;
    uint32_t imm;
    tp_peer peer;      /* TP_EV_PEER */
    char msg[160];     /* provider's explanation when status != 0 */
} tp_event;

typedef struct tp_open_args {
    const char *provider; /* libfabric provider name as given by the user */
    const char *nic;      /* domain name, NULL = first the provider offers */
    bool hmem;            /* the NIC serves a GPU group: request device-memory support */
} tp_open_args;

typedef struct tp_nic_info {
    char provider[64];  /* full provider name, e.g. "tcp;ofi_rxm" */
    char name[64];      /* domain name */
    uint64_t link_speed; /* bits/s, 0 if unknown */
    size_t max_msg;     /* largest single work request */
    size_t cq_data_size;
    bool mr_local;      /* local buffers of sends must be registered */
} tp_nic_info;

typedef struct tp_ops {
    const char *backend;
    int (*open)(const tp_open_args *a, tp_nic **out); /* sets te_last_error on failure */
    void (*close)(tp_nic *n);
    void (*info)(const tp_nic *n, tp_nic_info *out);
    int (*address)(const tp_nic *n, te_addr *out);
    int (*mr_reg)(tp_nic *n, void *ptr, size_t len, int device, bool remote, tp_mr *out);
    void (*mr_dereg)(tp_nic *n, tp_mr *mr);
    int (*resolve)(tp_nic *n, const te_addr *addr, tp_peer *out);
    /* 0 posted, -EAGAIN try again later, other negative: this request failed. `more`
     * hints that another post follows at once (doorbell batching). */
    int (*post_write)(tp_nic *n, const tp_write *w, bool more);
    int (*post_send)(tp_nic *n, tp_peer peer, const void *buf, size_t len, void *desc, void *ctx);
    int (*post_recv)(tp_nic *n, void *buf, size_t len, void *desc, void *ctx);
    /* Cancels a posted receive; its completion then arrives with -ECANCELED. */
    int (*cancel_recv)(tp_nic *n, void *ctx);
    /* A file descriptor that turns readable when poll() has something to do (data
     * arrived, completions ready), or -1 if the provider offers none. */
    int (*wait_fd)(tp_nic *n);
    /* True if blocking on wait_fd is safe now (the provider has nothing pending that only
     * a poll() would progress); false means: poll again instead of sleeping. */
    bool (*can_block)(tp_nic *n);
    /* Drains up to max events. >= 0 number of events; < 0 the NIC is unusable. */
    int (*poll)(tp_nic *n, tp_event *ev, int max);
    /* Optional. How many peers' writes were applied to our memory since the last call
     * (0 if none, or if the NIC cannot tell). For a provider whose target must poll for
     * a write to finish and that shows nothing of it otherwise (shm): the worker asks
     * after a step that found nothing, and stays hot while peers write into it. */
    uint64_t (*target_activity)(tp_nic *n);
    /* Optional. Asked about a peer whose operations have made no progress for a while:
     * 0 if the transport has evidence that it is gone (its address refuses connections),
     * 1 otherwise. Never blocks; may start a check whose answer a later call returns. */
    int (*peer_check)(tp_nic *n, tp_peer peer);
} tp_ops;

/* ------------------------------------------------------------- backends ---- */

/* One way of serving "auto": a probe that fills `out` with a provider string and
 * returns 0 where this backend can run here, or a negative errno where it cannot. Choices
 * of all backends are tried in ascending `rank` (efa 10, verbs 20, tcp 30), so
 * backends interleave without knowing each other. Ranks are distinct across the table
 * (tests/unit/test_backends.c checks). */
typedef struct tp_auto_choice {
    int rank;
    const char *label;  /* for the error message when nothing is usable */
    int (*probe)(char *out, size_t cap);
} tp_auto_choice;

/* A backend as the engine sees it. Each backend's folder defines one of these; the
 * table in backends.c lists them. Adding a backend = its folder + one table entry. */
typedef struct tp_backend {
    const char *name;   /* "libfabric", "ibverbs" */
    const tp_ops *ops;  /* NULL where this build lacks the backend's library */
    /* True if this backend serves the provider string `want` (never "auto"). */
    bool (*claims)(const char *want);
    /* Turns a claimed string into the provider string NICs open with ("tcp" ->
     * "tcp;ofi_rxm"). 0, or a negative errno with te_last_error set. */
    int (*resolve)(const char *want, char *out, size_t cap);
    /* Lists up to max NIC names of `provider` (as resolved); the count (>= 0) or -errno. */
    int (*list_nics)(const char *provider, char names[][64], int max);
    const tp_auto_choice *auto_choices;
    size_t n_auto_choices;
} tp_backend;

/* NULL-terminated, in claim order: the first backend that claims a string gets it. */
extern const tp_backend *const tp_backends[];

/* Picks the backend and provider string for a user's provider name ("auto", NULL or ""
 * for the best one present). 0, or a negative errno with te_last_error set. */
int tp_backend_select(const char *want, const tp_backend **backend, char *provider, size_t cap);

#endif
