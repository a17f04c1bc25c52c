/*
 * Tendril TransferEngine: point-to-point RDMA for LLM systems.
 *
 * One engine per process. The engine owns one or more *groups* (one per GPU or per
 * host-memory group); a group drives 1..4 NICs ("domains") from one worker thread.
 * Data moves with one-sided writes that may carry a 32-bit immediate; receivers learn
 * of arrivals only by counting immediates (never by order). Two-sided send/recv exists
 * for small control messages.
 *
 * Conventions
 *  - Every fallible call returns 0 or a negative errno. te_strerror() names the code;
 *    te_last_error() returns a message describing the last failure *of the calling
 *    thread* (which argument was wrong, what the provider said).
 *  - Bad input is rejected synchronously and nothing is queued.
 *  - Every operation that was accepted (returned 0) completes exactly once, with 0 or a
 *    negative errno, through its te_completion: on success, on provider error, when the
 *    peer dies, when the per-operation timeout (te_config.op_timeout_ms) expires, and
 *    with -ECANCELED when the engine is stopped.
 *  - Thread safety is stated per function. "Any thread" means any number of threads
 *    concurrently, lock-free on the submission path.
 *
 * Immediate counts: how many immediates the receiver sees per request (the value the
 * receiver must pass to te_imm_expect()). N = NICs of the sending group.
 *
 *   request                                  writes posted            immediates seen
 *   te_write_imm                             1                        1
 *   te_barrier, n destinations               1 per destination        1 per destination
 *   te_write, s shards (TE_ROUTE_SHARDED)    s (zero-length included)  s   (if has_imm)
 *   te_write, TE_ROUTE_PINNED                1                        1   (if has_imm)
 *   te_write_paged, P pages                  P                        P   (if has_imm)
 *   te_write_scatter SHARD_PEERS / SINGLE    1 per target             1 per target
 *   te_write_scatter SHARD_BYTES             N per target             N per target
 *
 * Sharding of a single write into s shards: base = round_up(len / s, 8192); shard k
 * covers [k*base, min((k+1)*base, len)); an empty shard becomes a zero-length write at
 * the request's offsets (so it still carries the immediate and never leaves the region).
 * These counts match pplx-garden's fabric-lib so expected counts carry over.
 */
#ifndef TENDRIL_TE_H
#define TENDRIL_TE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The library is built with hidden visibility; what this header declares is its API. */
#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define TE_MAX_NICS 4      /* NICs per group */
#define TE_MAX_GROUPS 16   /* groups per engine */
#define TE_ADDR_MAX 255    /* raw transport address bytes */
#define TE_WIRE_VERSION 1  /* version byte of every encoded address / descriptor */
/* Upper bounds of encoded sizes, for callers that size buffers statically. */
#define TE_ADDR_ENCODED_MAX (3 + TE_ADDR_MAX)
#define TE_ADDR_TEXT_MAX (2 * TE_ADDR_ENCODED_MAX + 1)
#define TE_MR_DESC_ENCODED_MAX (1 + 10 + 10 + 1 + TE_MAX_NICS * (TE_ADDR_ENCODED_MAX + 10))
#define TE_MR_DESC_TEXT_MAX (2 * TE_MR_DESC_ENCODED_MAX + 1)
#define TE_DEVICE_HOST (-1)

typedef struct te_engine te_engine;
typedef struct te_mr te_mr;
typedef struct te_pages te_pages;
typedef struct te_counter te_counter;
typedef struct te_imm_counter te_imm_counter;
typedef struct te_recv_pool te_recv_pool;
typedef struct te_peer_group te_peer_group;

/* ---------------------------------------------------------------- errors ---- */

/* Text for a negative errno returned by any te_ call. Never NULL. Thread-safe. */
const char *te_strerror(int err);
/* Message of the last failed te_ call made by this thread ("" if none). The pointer is
 * valid until the thread's next te_ call. */
const char *te_last_error(void);

/* ----------------------------------------------- version, configuration ---- */

/* The library's version, "MAJOR.MINOR.PATCH" (the project version in CMakeLists.txt). */
const char *te_version(void);

/* One TENDRIL_* environment variable the library reads: its name, the values it accepts,
 * its default and what it does. te_env_vars() returns the complete list (static storage,
 * *n set to its length); docs/configuration.md documents the same list. A malformed value
 * is reported, never ignored silently: the engine settings (TENDRIL_PROVIDER, _NICS,
 * _OP_TIMEOUT_MS, _BUSY_POLL, _MAX_QUEUED_OPS) make te_engine_create fail with -EINVAL naming the variable
 * and the accepted values; the others log a warning saying so and use the default. Where
 * an engine setting overrides a value the caller set explicitly in te_config, a warning
 * names both. Thread-safe. */
typedef struct te_env_var {
    const char *name;
    const char *values;  /* accepted values, e.g. "0|1" or "1..255" */
    const char *dflt;    /* the default, as text */
    const char *what;    /* one line */
} te_env_var;
const te_env_var *te_env_vars(size_t *n);

/* ------------------------------------------------------------- logging ---- */

/* The library logs at TENDRIL_LOG=error|warn|info|debug (default warn). Each line goes to
 * stderr, or appended to the file TENDRIL_LOG_FILE names, as
 *   2026-12-07T04:15:25.123456Z tendril[PID:TID] LEVEL: message
 * (UTC time, process id, kernel thread id). */
enum te_log_level { TE_LOG_ERROR = 0, TE_LOG_WARN = 1, TE_LOG_INFO = 2, TE_LOG_DEBUG = 3 };

/* Receives each message at or above the TENDRIL_LOG level instead of the default sink:
 * level is an enum te_log_level, msg the text without the time/pid/level prefix (valid
 * during the call only). It runs on the thread that logs (an application thread, an
 * engine worker or callback thread), possibly on several threads at once; it must not
 * block for long, and a message it logs itself goes to the default sink. */
typedef void (*te_log_handler)(void *arg, int level, const char *msg);

/* Installs fn (NULL restores the default sink). When it returns, the previous handler is
 * no longer running on any thread and will not be called again, so its arg may be freed.
 * Any thread; -EDEADLK when called from inside a handler (that wait could not end). */
int te_log_set_handler(te_log_handler fn, void *arg);

/* ------------------------------------------------- addresses (NetAddr) ---- */

enum te_transport_kind {
    TE_TRANSPORT_FABRIC = 1, /* libfabric endpoint name (fi_getname) */
    TE_TRANSPORT_VERBS = 2,  /* ibverbs UD handshake address */
};

/* Address of one NIC of one engine. Plain value type: copy freely. */
typedef struct te_addr {
    uint8_t transport; /* enum te_transport_kind */
    uint8_t len;       /* bytes used in bytes[] (1..TE_ADDR_MAX) */
    uint8_t bytes[TE_ADDR_MAX];
} te_addr;

/* Wire form (docs/wire-format.md): u8 version | u8 transport | u8 len | len bytes.
 * encode: -ENOSPC if cap is too small (*out_len then holds the size needed).
 * decode: -EBADMSG on any malformed input (bad version, transport, length, trailing
 * bytes). All thread-safe, no engine needed. */
int te_addr_encode(const te_addr *addr, uint8_t *buf, size_t cap, size_t *out_len);
int te_addr_decode(const uint8_t *buf, size_t len, te_addr *out);
/* Text form: lowercase hex of the wire form. parse rejects odd length, non-hex, and
 * anything te_addr_decode rejects. */
int te_addr_format(const te_addr *addr, char *buf, size_t cap);
int te_addr_parse(const char *text, te_addr *out);
bool te_addr_equal(const te_addr *a, const te_addr *b);

/* ------------------------------------------- memory descriptors (MrDesc) ---- */

/* What a peer needs to write into a registered region: its base virtual address, its
 * length, and per NIC of the owning group the NIC's address and remote key. */
typedef struct te_mr_desc {
    uint64_t base;
    uint64_t len;
    uint32_t n_nics; /* 1..TE_MAX_NICS */
    struct {
        te_addr addr;
        uint64_t rkey;
    } nic[TE_MAX_NICS];
} te_mr_desc;

/* Wire form (docs/wire-format.md): u8 version | varint base | varint len | u8 n |
 * n x (encoded te_addr | varint rkey). Same error rules as te_addr_*. */
int te_mr_desc_encode(const te_mr_desc *d, uint8_t *buf, size_t cap, size_t *out_len);
int te_mr_desc_decode(const uint8_t *buf, size_t len, te_mr_desc *out);
/* Text form, for passing a descriptor through a command line, an environment variable,
 * a key-value store or a log: lowercase hex of the wire form, no prefix, one token
 * without spaces. format writes a NUL-terminated string; a buffer of TE_MR_DESC_TEXT_MAX
 * bytes always fits (-ENOSPC otherwise, with an empty string written when cap > 0) and
 * it rejects what te_mr_desc_encode rejects. parse accepts upper- and lowercase digits
 * and rejects with -EBADMSG (message in te_last_error(), *out untouched): empty text, an
 * odd digit count, any non-hex character (whitespace and "0x" included), more digits than
 * the largest descriptor, and anything te_mr_desc_decode rejects. Thread-safe. */
int te_mr_desc_format(const te_mr_desc *d, char *buf, size_t cap);
int te_mr_desc_parse(const char *text, te_mr_desc *out);

/* -------------------------------------------------------------- config ---- */

typedef struct te_group_config {
    int cuda_device;                  /* TE_DEVICE_HOST or a CUDA ordinal */
    uint32_t n_nics;                  /* 1..TE_MAX_NICS; 0 means 1 */
    const char *nics[TE_MAX_NICS];    /* provider domain names ("lo", "eth1",
                                         "rdmap16s27", "mlx5_0"); NULL = auto */
    int worker_cpu;                   /* CPU to pin the worker thread to; -1 = none */
} te_group_config;

typedef struct te_config {
    size_t struct_size;   /* sizeof(te_config): lets the struct grow compatibly */
    const char *provider; /* "auto" (efa, then verbs, then tcp), or any libfabric
                             provider name ("tcp", "shm", "efa", "tcp;ofi_rxm") */
    uint32_t n_groups;    /* 0 means one host group with default NICs */
    te_group_config groups[TE_MAX_GROUPS];
    uint32_t op_timeout_ms;   /* per-operation deadline; 0 = default (30000) */
    uint32_t max_msg_size;    /* largest te_send payload; 0 = default (65536) */
    bool busy_poll;           /* workers never sleep and post and poll for every caller
                                 (callers only queue; burns a core per group) */
    uint32_t max_queued_ops;  /* per group: operations submitted and not yet completed
                                 beyond which submission returns -EAGAIN; 0 = default
                                 (65536) */
} te_config;

/* Fills defaults. Environment variables override the config at te_engine_create:
 *   TENDRIL_PROVIDER       provider name (as te_config.provider)
 *   TENDRIL_NICS           NIC names of group 0, comma separated ("lo" or "veth0,veth1")
 *   TENDRIL_OP_TIMEOUT_MS  per-operation deadline
 *   TENDRIL_BUSY_POLL      1 = busy poll
 *   TENDRIL_MAX_QUEUED_OPS as te_config.max_queued_ops
 *   TENDRIL_WAIT_DRIVE     0 = te_counter_wait / te_imm_counter_wait only sleep; by
 *                          default a waiting thread polls the NICs itself (see below)
 *   TENDRIL_WAIT_SPIN_NS   how long te_*_wait spin before sleeping (default 50000 with
 *                          4+ CPUs in the process's affinity set, else 0)
 *   TENDRIL_LOG            error|warn|info|debug (stderr, or TENDRIL_LOG_FILE)
 * The complete list, with accepted values: te_env_vars() below, docs/configuration.md.
 * libfabric's own variables apply too; docs/engine.md ("Memory per engine") names the one
 * that cuts a tcp engine's memory from 68 to 18 MB with libfabric 1.17. */
void te_config_init(te_config *cfg);

/* -------------------------------------------------------------- engine ---- */

/* Opens every NIC of every group and starts the worker threads. cfg must not be NULL
 * (-EINVAL): te_config_init gives the defaults. Thread-safe. */
int te_engine_create(const te_config *cfg, te_engine **out);
/* Stops the engine: every pending operation completes with -ECANCELED (its callback runs
 * before this returns), threads are joined. Later calls on the engine return -ESHUTDOWN.
 * Idempotent. Must not be called from an engine callback. */
int te_engine_stop(te_engine *e);
/* te_engine_stop, then frees everything the engine owns (MRs, pools, counters it
 * created). NULL is ignored. */
void te_engine_destroy(te_engine *e);

/* Address of NIC 0 of group 0: the address peers send control messages to. */
int te_main_address(const te_engine *e, te_addr *out);
int te_nic_address(const te_engine *e, uint32_t group, uint32_t nic, te_addr *out);
uint32_t te_num_groups(const te_engine *e);
uint32_t te_group_nics(const te_engine *e, uint32_t group); /* 0 if no such group */
uint32_t te_num_nics(const te_engine *e);                   /* over all groups */
const char *te_provider_name(const te_engine *e);           /* e.g. "tcp;ofi_rxm" */
const char *te_nic_name(const te_engine *e, uint32_t group, uint32_t nic);
/* Sum of the NICs' link speeds in bits/s as reported by the provider (0 if unknown). */
uint64_t te_link_speed(const te_engine *e);

typedef struct te_nic_stats {
    uint64_t write_ops, write_bytes;   /* RMA writes completed by this NIC */
    uint64_t send_ops, send_bytes;
    uint64_t recv_ops, recv_bytes;
    uint64_t imms_received;            /* bumped after the immediate was counted/matched */
    uint64_t errors;                   /* failed work requests */
} te_nic_stats;
int te_nic_stats_get(const te_engine *e, uint32_t group, uint32_t nic, te_nic_stats *out);

/* --------------------------------------------------------------- peers ---- */

/* What this engine knows of a peer NIC (keyed by that NIC's address, as in a descriptor
 * or te_send's destination). */
enum te_peer_state {
    TE_PEER_UNKNOWN = 0, /* never addressed by this engine */
    TE_PEER_UP = 1,      /* addressed, and the transport has not reported it gone */
    TE_PEER_DOWN = 2,    /* the transport reported it gone; every operation to it that was
                            pending fails at once (shm: with its regions already free; tcp:
                            a region stays held until the transport returns the work
                            requests, as after a timeout). shm: its process exited or its engine
                            stopped; final, later operations to it fail at once with
                            -ECONNRESET. tcp: its connection was refused, reset or torn down
                            (the peer died, or rejected a write); the next operation tries
                            again, and UP follows if it succeeds. */
};

/* State of the peer NIC at addr: a te_peer_state value (>= 0), or -EINVAL. Thread-safe. */
int te_peer_state(te_engine *e, const te_addr *addr);

/* Called on the callback thread once per state change of a peer NIC (TE_PEER_UP when the
 * engine first addresses it, TE_PEER_DOWN when the transport reports it gone). */
typedef void (*te_peer_fn)(void *arg, const te_addr *addr, int state);
/* Installs (fn != NULL) or removes the peer callback. Changes already queued are
 * delivered to the function installed when they run. Thread-safe. */
int te_peer_set_callback(te_engine *e, te_peer_fn fn, void *arg);

/* ---------------------------------------------------------- completion ---- */

/* Called once per operation with status 0 or a negative errno and, on error, a message
 * (NULL on success). Runs on the engine's callback thread: it may submit new operations
 * but must not wait for them, and must not call te_engine_stop/destroy. */
typedef void (*te_done_fn)(void *arg, int status, const char *msg);

/* Completion counter: bumped directly by the thread that polled the completion (no
 * callback-thread hop). Not tied to one engine. All functions thread-safe.
 * While operations submitted with a counter are pending (all on one group),
 * te_counter_wait drives that group's progress from the waiting thread: it posts queued
 * work and polls completions itself, as a raw libfabric loop would, instead of sleeping
 * until the worker wakes it; it sleeps after 1 ms in which nothing moved. */
int te_counter_create(te_counter **out);
void te_counter_destroy(te_counter *c);
uint64_t te_counter_done(const te_counter *c);   /* operations completed (ok or not) */
uint64_t te_counter_errors(const te_counter *c); /* of which failed */
/* Waits until done >= target. 0, or -ETIMEDOUT after timeout_ms (< 0: no limit). */
int te_counter_wait(te_counter *c, uint64_t target, int timeout_ms);

/* How an operation reports completion: fn, counter, both, or neither (fire and forget;
 * errors are then only logged and counted in te_nic_stats). With both, the counter is
 * bumped by the worker *before* fn runs on the callback thread: a thread that waits on
 * the counter must not assume fn has already run. */
typedef struct te_completion {
    te_done_fn fn;
    void *arg;
    te_counter *counter;
} te_completion;

/* ------------------------------------------------------------- memory ---- */

enum te_mr_flags {
    TE_MR_LOCAL = 0,               /* usable as a source only */
    TE_MR_REMOTE_WRITE = 1u << 0,  /* peers may write into it (has a descriptor) */
};

/* Registers [ptr, ptr+len) with every NIC of the group that owns `device`
 * (TE_DEVICE_HOST: group 0, or the host group). Registration runs on the calling
 * thread, never on a worker, so transfers in flight are not stalled. A region may be
 * registered more than once (each call yields its own te_mr). Thread-safe. */
int te_mr_register(te_engine *e, void *ptr, size_t len, int device, unsigned flags,
                   te_mr **out);
/* -EBUSY if operations using the region are still in flight. Thread-safe. */
int te_mr_deregister(te_mr *mr);
/* Descriptor of a TE_MR_REMOTE_WRITE region (-EPERM for a local-only region). */
int te_mr_desc_get(const te_mr *mr, te_mr_desc *out);
void *te_mr_ptr(const te_mr *mr);
size_t te_mr_len(const te_mr *mr);

/* Immutable, shared list of page indices (PageIndices). Reference counted: operations
 * hold a reference while in flight, so the caller may release right after submitting. */
int te_pages_create(const uint32_t *idx, size_t n, te_pages **out);
void te_pages_release(te_pages *p);
size_t te_pages_count(const te_pages *p);
const uint32_t *te_pages_data(const te_pages *p);

/* --------------------------------------------------------- operations ---- */

/* struct_size, the first field of te_write_args, te_paged_args and te_scatter_args, lets
 * these structs grow without breaking callers built against an older header:
 *  - 0 (what `= {.src = ...}` and memset leave) means the layout of tendril 0.1, the
 *    fields declared below; a caller that never uses later fields never sets it;
 *  - a caller that uses a field added after 0.1 sets it to sizeof(the struct) (later
 *    fields will say from which release on they exist);
 *  - any other value, or a size larger than this library knows, is rejected with
 *    -EINVAL; fields a smaller (older) size does not cover read as zero. */

typedef enum te_route_kind {
    TE_ROUTE_SHARDED = 0, /* split over `n` NICs round-robin (0 = all NICs of group) */
    TE_ROUTE_PINNED = 1,  /* everything on NIC `n` */
} te_route_kind;

typedef struct te_route {
    te_route_kind kind;
    uint32_t n;
} te_route;

typedef struct te_write_args {
    size_t struct_size;          /* 0 or sizeof(te_write_args): see above */
    te_mr *src;
    uint64_t src_offset;
    uint64_t len;                /* 0 allowed: zero-length write(s) */
    const te_mr_desc *dst;       /* copied at submission */
    uint64_t dst_offset;
    bool has_imm;
    uint32_t imm;
    te_route route;
} te_write_args;

typedef struct te_paged_args {
    size_t struct_size;          /* 0 or sizeof(te_paged_args): see above */
    uint64_t page_len;           /* bytes per page; 0 allowed */
    te_mr *src;
    te_pages *src_pages;
    uint64_t src_stride, src_offset;
    const te_mr_desc *dst;
    te_pages *dst_pages;         /* same count as src_pages */
    uint64_t dst_stride, dst_offset;
    bool has_imm;                /* one immediate per page */
    uint32_t imm;
} te_paged_args;

typedef enum te_scatter_kind {
    TE_SCATTER_SHARD_PEERS = 0, /* targets split into contiguous ranges, one per NIC */
    TE_SCATTER_SHARD_BYTES = 1, /* every NIC writes 1/N of every target */
    TE_SCATTER_SINGLE = 2,      /* all targets through NIC `nic` */
} te_scatter_kind;

typedef struct te_scatter_target {
    const te_mr_desc *dst;
    uint64_t len, src_offset, dst_offset;
} te_scatter_target;

typedef struct te_scatter_args {
    size_t struct_size;               /* 0 or sizeof(te_scatter_args): see above */
    te_mr *src;
    const te_scatter_target *targets; /* copied at submission */
    size_t n_targets;                 /* >= 1 */
    te_peer_group *peers;             /* optional: pre-resolved addresses, same order */
    bool has_imm;
    uint32_t imm;
    te_scatter_kind kind;
    uint32_t nic;                     /* for TE_SCATTER_SINGLE */
} te_scatter_args;

/* All submission functions: any thread; the arguments are validated and copied before
 * return. The operation runs on the group that owns `src` (te_write_imm / te_barrier /
 * te_send: group 0): it is queued without a lock, and posted by the submitting thread
 * itself when no other thread is in that group's progress step (a try-lock; otherwise
 * the step in progress or the worker posts it). -EAGAIN: the group already has
 * te_config.max_queued_ops operations not yet completed; nothing was queued, retry
 * after some complete. */
int te_write(te_engine *e, const te_write_args *a, const te_completion *c);
int te_write_paged(te_engine *e, const te_paged_args *a, const te_completion *c);
int te_write_scatter(te_engine *e, const te_scatter_args *a, const te_completion *c);
/* Zero-length write carrying `imm` to dst (route: TE_ROUTE_PINNED nic, or SHARDED = next
 * NIC round-robin). */
int te_write_imm(te_engine *e, uint32_t imm, const te_mr_desc *dst, te_route route,
                 const te_completion *c);
/* One imm-only write per destination. Completes when all have completed locally. */
int te_barrier(te_engine *e, uint32_t imm, const te_mr_desc *dsts, size_t n,
               te_route route, const te_completion *c);

/* Pre-resolves the addresses of a set of peers for scatter (n_peers x group NICs).
 * Thread-safe. Freed with the engine or te_peer_group_destroy. */
int te_peer_group_create(te_engine *e, uint32_t group, const te_mr_desc *peers,
                         size_t n_peers, te_peer_group **out);
void te_peer_group_destroy(te_peer_group *g);

/* ------------------------------------------------------ send / receive ---- */

/* Sends len bytes (<= max_msg_size) to a peer's main address. The payload is copied
 * before return. */
int te_send(te_engine *e, const te_addr *dst, const void *buf, size_t len,
            const te_completion *c);

/* Called on the callback thread with one received message; `data` is valid only during
 * the call (the receive buffer itself was re-posted before the call). */
typedef void (*te_recv_fn)(void *arg, const void *data, size_t len);

/* Posts `count` receive buffers of `msg_size` bytes on NIC 0 of group 0 and keeps them
 * posted. on_error (optional) reports receive errors such as truncation. Thread-safe. */
int te_recv_pool_create(te_engine *e, size_t msg_size, uint32_t count, te_recv_fn on_recv,
                        te_done_fn on_error, void *arg, te_recv_pool **out);
/* Cancels the pool's buffers; no callback of the pool runs after this returns. Must not
 * be called from an engine callback. */
int te_recv_pool_destroy(te_recv_pool *p);

/* ----------------------------------------------------------- immediates ---- */

/* Immediates with no expectation and no counter go to this callback (callback thread).
 * Replaces the previous one; NULL removes it (unmatched immediates are then dropped and
 * counted only in te_nic_stats). Thread-safe. */
typedef void (*te_imm_fn)(void *arg, uint32_t imm);
int te_imm_set_callback(te_engine *e, te_imm_fn fn, void *arg);
/* The same, but fn runs on the thread that polled the immediate (the group's worker, or
 * a thread inside a te_* submission or wait that drove progress) with no hop to the
 * callback thread: the lowest latency for answering an immediate (e.g. a pong). fn must
 * be short and must not block or wait (no te_*_wait, no te_engine_stop); it may submit
 * operations, which go out in the same progress step. Immediates replayed after an
 * expectation is released still arrive on the callback thread. Thread-safe. */
int te_imm_set_callback_inline(te_engine *e, te_imm_fn fn, void *arg);

/* Called once each time `expected` immediates of one value have arrived. Return true
 * to keep counting (fires again after the next `expected`), false to remove the
 * expectation: immediates that arrived after the target are then replayed to the
 * te_imm_fn callback, none is lost and none is counted twice. */
typedef bool (*te_imm_reached_fn)(void *arg, uint32_t imm);

typedef struct te_imm_prev {
    bool existed;
    uint64_t count;    /* immediates counted and not yet consumed */
    uint64_t expected; /* 0 for a te_imm_counter */
} te_imm_prev;

/* Arms an expectation for `imm` (expected >= 1), replacing any previous expectation or
 * counter for that value (its state is returned in *prev if prev != NULL). Counting
 * starts at 0: immediates that arrived before arming went to the te_imm_fn callback.
 * Thread-safe. */
int te_imm_expect(te_engine *e, uint32_t imm, uint64_t expected, te_imm_reached_fn fn,
                  void *arg, te_imm_prev *prev);
/* Removes an expectation or counter (-ENOENT if none). Thread-safe. */
int te_imm_remove(te_engine *e, uint32_t imm, te_imm_prev *prev);

/* Pollable counter for `imm` (replaces an expectation for that value). Counting starts
 * at 0. Thread-safe. */
int te_imm_counter_create(te_engine *e, uint32_t imm, te_imm_counter **out);
/* Counting semaphore: waits until n immediates are available, consumes them. Surplus
 * stays for the next wait. 0, -ETIMEDOUT (nothing consumed), or -ESHUTDOWN. */
int te_imm_counter_wait(te_imm_counter *c, uint64_t n, int timeout_ms);
uint64_t te_imm_counter_value(const te_imm_counter *c); /* available now */
/* Removes the counter from the engine and frees it. */
void te_imm_counter_destroy(te_imm_counter *c);

/* ------------------------------------------------------------- watchers ---- */

/* Scalar watcher (UVM watcher): a 64-bit word that GPU kernels (also inside captured
 * and replayed CUDA graphs) or host threads write; a CPU thread of the engine notices
 * each change and calls the watcher's callback with (last value seen, current value).
 * Intermediate values written faster than the thread polls may be skipped.
 *
 * Memory: with a CUDA driver present, the words live in pinned host memory mapped into
 * the GPU address space (cuMemHostAlloc PORTABLE|DEVICEMAP), usable from any context
 * and device; without CUDA they are plain host memory (host writers only). A word
 * starts at 0 and is zeroed again when its watcher is released; slots are recycled.
 *
 * Threading: the engine's watcher thread (started at the first te_watcher_alloc) polls
 * every live word; it spins while words change and for ~2 ms after the last change,
 * then sleeps with a growing interval (at most 200 us). With te_config.busy_poll it
 * never sleeps. Callbacks run ON THE WATCHER THREAD (not the callback thread: one hop
 * less and no queueing behind completion callbacks): keep them short; they may submit
 * operations, allocate and free watchers, but must not block on engine progress and
 * must not call te_engine_stop/destroy. */
typedef struct te_watcher te_watcher;

/* Return true to keep watching, false to release the watcher (as te_watcher_free; the
 * handle is invalid after the callback returns false). */
typedef bool (*te_watch_fn)(void *arg, uint64_t old_value, uint64_t new_value);

/* Allocates a watcher (at most 32768 live per engine: -ENOSPC beyond). Thread-safe. */
int te_watcher_alloc(te_engine *e, te_watch_fn fn, void *arg, te_watcher **out);
/* Host address of the watched word (write it with a 64-bit store). NULL for NULL. */
volatile uint64_t *te_watcher_ptr(const te_watcher *w);
/* Device address of the same word for kernels (equal to the host address under UVA;
 * equal to it as well in the plain-host fallback, where no GPU can use it). */
uint64_t te_watcher_device_ptr(const te_watcher *w);
/* Releases a watcher; after return its callback is not running and will not run again.
 * May be called from any thread, including from a watcher callback. Watchers still live
 * at te_engine_destroy are freed with the engine (do not free them afterwards). */
void te_watcher_free(te_watcher *w);
/* "mapped-host" (GPU-visible pinned host memory) or "host" (no CUDA). */
const char *te_watcher_memory_kind(const te_engine *e);

/* ---------------------------------------------------- GPU-visible completion ---- */

/* An immediate counter whose completion a GPU kernel can poll without any CPU thread
 * hop: each time `expected` immediates of value `imm` have arrived, the receiving worker
 * raises a 64-bit *epoch* (1, 2, 3, ...). A kernel waiting for round r polls the word
 * until epoch >= r; nobody ever resets the word (so no wake-up can be lost, unlike the
 * original's GdrCounter, which reset it from two sides). Arrivals beyond a round count
 * toward the next one. The low 32 bits at the same address form a 32-bit epoch for
 * kernels that prefer it (wraps after 2^32 rounds).
 *
 * Ordering: the epoch is raised only after the provider reported the remote write
 * complete (its payload placed), with a release store (and a store fence for
 * write-combined GDRCopy mappings). A kernel must read it with an acquire or volatile
 * load followed by __threadfence_system() before reading the payload, e.g.
 *     while (ld_acquire_sys(flag) < r) ;   // or: volatile load + __threadfence_system()
 * Memory: GDRCopy (a word in GPU memory mapped for the CPU) when libgdrapi and its driver
 * exist, otherwise mapped pinned host memory, otherwise (no CUDA) plain host memory.
 * Replaces any expectation or counter for `imm` (te_imm_remove removes the flag's table
 * entry; the flag then stays valid but stops advancing). Thread-safe. */
typedef struct te_imm_flag te_imm_flag;

int te_imm_flag_create(te_engine *e, uint32_t imm, uint64_t expected, te_imm_flag **out);
/* Device address of the epoch word (8-byte aligned). */
uint64_t te_imm_flag_device_ptr(const te_imm_flag *f);
/* Current epoch, read on the host. */
uint64_t te_imm_flag_value(const te_imm_flag *f);
/* Host-side wait until epoch >= target: 0, -ETIMEDOUT, or -ESHUTDOWN. */
int te_imm_flag_wait(te_imm_flag *f, uint64_t target, int timeout_ms);
/* "gdrcopy", "mapped-host" or "host". */
const char *te_imm_flag_memory_kind(const te_imm_flag *f);
/* Removes the flag from the engine (if still installed) and frees it. The device
 * pointer is invalid afterwards: no kernel may still poll it. */
void te_imm_flag_destroy(te_imm_flag *f);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif
#endif /* TENDRIL_TE_H */
