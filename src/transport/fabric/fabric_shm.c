/* shm: one transmit endpoint per peer, and peer liveness.
 *
 * Why one endpoint per peer: libfabric's shm provider (1.17 and 2.1 alike) completes a
 * write that needs the target's answer (anything above its 4 KiB inject size) when the
 * answer appears in the *sender's* response ring, and it drains that ring strictly in
 * order (smr_progress_resp stops at the first entry still busy). One peer that dies with
 * such a write outstanding therefore blocks every later completion of the endpoint,
 * whatever peer it is for. With an endpoint per peer a dead peer blocks only its own
 * ring. The receiving endpoint (the published address) stays one per NIC: peers write
 * into it, and immediates arrive on its CQ.
 *
 * Why a liveness file: shm notices nothing when a peer dies. A write to it is put into
 * the dead process's command queue and, if small, completes locally as if delivered; a
 * large one waits forever. Every engine holds an exclusive flock on
 * /dev/shm/<endpoint name>.live while it lives; the kernel drops the lock when the
 * process dies, however it dies. A sender probes that file (a shared non-blocking flock)
 * at resolve and then every PROBE_NS for each peer it knows: a peer found gone has its
 * transmit endpoint closed, its outstanding work requests fail with -ECONNRESET (so the
 * engine releases their regions), and later posts to it fail at once.
 *
 * Engines of the same process: shm maps a peer endpoint of the same process by pointer,
 * so posting to one that has since closed reads freed memory. Endpoints of this process
 * are listed in `local_eps`; a post to a local peer holds the list's read lock and checks
 * that the peer is still listed, and an endpoint is unlisted (write lock) before it
 * closes. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <rdma/fi_cm.h>
#include <rdma/fi_errno.h>

#include "core/error.h"
#include "core/log.h"
#include "transport/fabric/fabric_internal.h"

#define PROBE_NS 50000000ull   /* liveness probe period per peer */
#define PROBES_PER_ROUND 64    /* bounds the system calls of one poll */
#define NAME_MAX_LEN 128
#define LIVE_DIR "/dev/shm/"
#define LIVE_SUFFIX ".live"

typedef struct shm_wr { /* one outstanding work request on a peer endpoint */
    void *ctx;
    uint32_t peer;
    struct shm_wr *prev, *next;
} shm_wr;

typedef struct shm_peer {
    char name[NAME_MAX_LEN];
    struct fid_ep *ep;
    struct fid_av *av;
    fi_addr_t fa;
    bool local;     /* an endpoint of this process */
    bool gone;
    bool reported;  /* TP_EV_PEER delivered */
    shm_wr *out;    /* outstanding work requests */
} shm_peer;

struct shm_peers {
    struct fid_domain *domain;
    struct fi_info *info;
    struct fid_cq *cq;  /* transmit completions of every peer endpoint */
    char own[NAME_MAX_LEN];
    int live_fd;
    char live_path[sizeof LIVE_DIR + NAME_MAX_LEN + sizeof LIVE_SUFFIX];
    bool listed;        /* in local_eps */
    shm_peer **peer;
    uint32_t n, cap;
    shm_wr *free_wrs;
    uint64_t n_out;     /* work requests outstanding on all peer endpoints */
    tp_event *backlog;  /* events to hand out before reading the CQ again */
    uint32_t n_backlog, cap_backlog, backlog_head;
    uint32_t probe_cursor;
    uint64_t next_probe;
};

/* ------------------------------------------------ endpoints of this process --- */

typedef struct local_ep {
    char name[NAME_MAX_LEN];
    struct local_ep *next;
} local_ep;

static pthread_rwlock_t local_lock = PTHREAD_RWLOCK_INITIALIZER;
static local_ep *local_eps;

static bool local_listed_locked(const char *name)
{
    for (local_ep *x = local_eps; x; x = x->next)
        if (!strcmp(x->name, name)) return true;
    return false;
}

static bool local_listed(const char *name)
{
    pthread_rwlock_rdlock(&local_lock);
    bool r = local_listed_locked(name);
    pthread_rwlock_unlock(&local_lock);
    return r;
}

/* ----------------------------------------------------------------- liveness --- */

static uint64_t coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void live_path(const char *name, char *out, size_t cap)
{
    snprintf(out, cap, LIVE_DIR "%s" LIVE_SUFFIX, name);
}

/* 1 alive, 0 gone (no file, or nobody holds its lock). */
static int probe_alive(const char *name)
{
    char path[sizeof LIVE_DIR + NAME_MAX_LEN + sizeof LIVE_SUFFIX];
    live_path(name, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    int held = flock(fd, LOCK_SH | LOCK_NB) != 0 && errno == EWOULDBLOCK;
    close(fd);
    return held;
}

/* The name of an shm address: a NUL-terminated string without '/'. */
static int addr_name(const te_addr *a, char *out)
{
    size_t len = strnlen((const char *)a->bytes, a->len);
    if (len == 0 || len >= a->len || len >= NAME_MAX_LEN || memchr(a->bytes, '/', len))
        return tn_err(-EINVAL, "shm: peer address is not an shm endpoint name");
    memcpy(out, a->bytes, len);
    out[len] = '\0';
    return 0;
}

/* ------------------------------------------------------------------- setup --- */

int shm_peers_open(struct fid_domain *domain, struct fi_info *info, const char *own_name,
                   shm_peers **out)
{
    shm_peers *s = calloc(1, sizeof *s);
    if (!s) return tn_err(-ENOMEM, "out of memory");
    s->domain = domain;
    s->info = info;
    s->live_fd = -1;
    snprintf(s->own, sizeof s->own, "%s", own_name);
    struct fi_cq_attr cq_attr = {.format = FI_CQ_FORMAT_DATA, .wait_obj = FI_WAIT_NONE};
    int r = fi_cq_open(domain, &cq_attr, &s->cq, NULL);
    if (r) {
        free(s);
        return tn_err(r < 0 ? r : -r, "shm: fi_cq_open: %s", fi_strerror(r < 0 ? -r : r));
    }
    live_path(own_name, s->live_path, sizeof s->live_path);
    s->live_fd = open(s->live_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (s->live_fd < 0 || flock(s->live_fd, LOCK_EX | LOCK_NB)) {
        r = tn_err(-errno, "shm: cannot create the liveness file %s: %s", s->live_path,
                   strerror(errno));
        shm_peers_close(s);
        return r;
    }
    local_ep *le = calloc(1, sizeof *le);
    if (!le) {
        shm_peers_close(s);
        return tn_err(-ENOMEM, "out of memory");
    }
    snprintf(le->name, sizeof le->name, "%s", own_name);
    pthread_rwlock_wrlock(&local_lock);
    le->next = local_eps;
    local_eps = le;
    pthread_rwlock_unlock(&local_lock);
    s->listed = true;
    *out = s;
    return 0;
}

void shm_peers_retire(shm_peers *s)
{
    if (!s) return;
    if (s->listed) {
        pthread_rwlock_wrlock(&local_lock);
        for (local_ep **pp = &local_eps; *pp; pp = &(*pp)->next)
            if (!strcmp((*pp)->name, s->own)) {
                local_ep *x = *pp;
                *pp = x->next;
                free(x);
                break;
            }
        pthread_rwlock_unlock(&local_lock);
        s->listed = false;
    }
    if (s->live_fd >= 0) {
        unlink(s->live_path);
        close(s->live_fd);
        s->live_fd = -1;
    }
}

static void close_peer_ep(shm_peer *p)
{
    if (p->ep) fi_close(&p->ep->fid);
    if (p->av) fi_close(&p->av->fid);
    p->ep = NULL;
    p->av = NULL;
}

static void free_list(shm_wr *w)
{
    while (w) {
        shm_wr *nx = w->next;
        free(w);
        w = nx;
    }
}

void shm_peers_close(shm_peers *s)
{
    if (!s) return;
    shm_peers_retire(s);
    for (uint32_t k = 0; k < s->n; k++) {
        close_peer_ep(s->peer[k]);
        free_list(s->peer[k]->out);
        free(s->peer[k]);
    }
    free(s->peer);
    if (s->cq) fi_close(&s->cq->fid);
    free_list(s->free_wrs);
    free(s->backlog);
    free(s);
}

static int open_peer_ep(shm_peers *s, shm_peer *p, const te_addr *addr)
{
    struct fi_av_attr av_attr = {.type = FI_AV_UNSPEC, .count = 1};
    char name[96];
    int r;
    const char *what = "fi_av_open";
    if ((r = fi_av_open(s->domain, &av_attr, &p->av, NULL))) goto fail;
    what = "fi_endpoint";
    if ((r = fi_endpoint(s->domain, s->info, &p->ep, NULL))) goto fail;
    what = "fi_ep_bind";
    if ((r = fi_ep_bind(p->ep, &s->cq->fid, FI_TRANSMIT | FI_RECV))) goto fail;
    if ((r = fi_ep_bind(p->ep, &p->av->fid, 0))) goto fail;
    what = "fi_setname";
    if ((r = fab_shm_name_endpoint(p->ep, name, sizeof name))) goto fail;
    what = "fi_enable";
    if ((r = fi_enable(p->ep))) goto fail;
    what = "fi_av_insert";
    p->fa = FI_ADDR_UNSPEC;
    if ((r = fi_av_insert(p->av, addr->bytes, 1, &p->fa, 0, NULL)) != 1) {
        r = r < 0 ? r : -FI_EADDRNOTAVAIL;
        goto fail;
    }
    return 0;
fail:
    close_peer_ep(p);
    r = r < 0 ? r : -r;
    return tn_err(r == -FI_EADDRNOTAVAIL ? -EHOSTUNREACH : r, "shm: %s for peer %s: %s", what,
                  p->name, fi_strerror(-r));
}

int shm_peers_resolve(shm_peers *s, const te_addr *addr, tp_peer *out)
{
    char name[NAME_MAX_LEN];
    int r = addr_name(addr, name);
    if (r) return r;
    for (uint32_t k = 0; k < s->n; k++)
        if (!strcmp(s->peer[k]->name, name)) {
            if (s->peer[k]->gone)
                return tn_err(-ECONNRESET, "shm: peer %s is gone (its process exited or its "
                                           "engine stopped)", name);
            *out = k;
            return 0;
        }
    if (!probe_alive(name))
        return tn_err(-EHOSTUNREACH, "shm: peer %s is not running (no live engine holds "
                                     LIVE_DIR "%s" LIVE_SUFFIX ")", name, name);
    if (s->n == s->cap) {
        uint32_t cap = s->cap ? 2 * s->cap : 16;
        shm_peer **np = realloc(s->peer, cap * sizeof *np);
        if (!np) return tn_err(-ENOMEM, "out of memory");
        s->peer = np;
        s->cap = cap;
    }
    shm_peer *p = calloc(1, sizeof *p);
    if (!p) return tn_err(-ENOMEM, "out of memory");
    snprintf(p->name, sizeof p->name, "%s", name);
    p->local = local_listed(name);
    if ((r = open_peer_ep(s, p, addr))) {
        free(p);
        return r;
    }
    s->peer[s->n] = p;
    *out = s->n++;
    return 0;
}

/* ------------------------------------------------------------------ posting --- */

static shm_wr *wr_get(shm_peers *s)
{
    shm_wr *w = s->free_wrs;
    if (w) s->free_wrs = w->next;
    else w = malloc(sizeof *w);
    return w;
}

static void wr_unlink(shm_peers *s, shm_wr *w)
{
    shm_peer *p = s->peer[w->peer];
    if (w->prev) w->prev->next = w->next;
    else p->out = w->next;
    if (w->next) w->next->prev = w->prev;
    s->n_out--;
}

static void wr_put(shm_peers *s, shm_wr *w)
{
    w->next = s->free_wrs;
    s->free_wrs = w;
}

static int gone_err(const shm_peer *p)
{
    return tn_err(-ECONNRESET, "shm: peer %s is gone (its process exited or its engine stopped)",
                  p->name);
}

typedef ssize_t (*post_fn)(shm_peer *p, void *wr_ctx, const void *args, uint64_t flags);

/* Posts through the peer's endpoint with a tracked context. */
static int post(shm_peers *s, tp_peer peer, void *ctx, post_fn fn, const void *args, uint64_t flags,
                const char *what)
{
    if (peer >= s->n) return tn_err(-EINVAL, "shm: unknown peer %llu", (unsigned long long)peer);
    shm_peer *p = s->peer[peer];
    if (p->gone) return gone_err(p);
    shm_wr *w = wr_get(s);
    if (!w) return tn_err(-ENOMEM, "out of memory");
    w->ctx = ctx;
    w->peer = (uint32_t)peer;
    ssize_t r;
    if (p->local) {
        pthread_rwlock_rdlock(&local_lock);
        bool there = local_listed_locked(p->name);
        r = there ? fn(p, w, args, flags) : 0;
        pthread_rwlock_unlock(&local_lock);
        if (!there) {
            wr_put(s, w);
            p->gone = true; /* reported by the next poll */
            return gone_err(p);
        }
    } else {
        r = fn(p, w, args, flags);
    }
    if (r) {
        wr_put(s, w);
        if (r == -FI_EAGAIN) return -EAGAIN;
        return tn_err((int)(r < 0 ? r : -r), "%s (shm): %s", what, fi_strerror((int)(r < 0 ? -r : r)));
    }
    w->prev = NULL;
    w->next = p->out;
    if (p->out) p->out->prev = w;
    p->out = w;
    s->n_out++;
    return 0;
}

static ssize_t do_write(shm_peer *p, void *wr_ctx, const void *args, uint64_t flags)
{
    struct fi_msg_rma msg = *(const struct fi_msg_rma *)args;
    msg.addr = p->fa;
    msg.context = wr_ctx;
    return fi_writemsg(p->ep, &msg, flags);
}

int shm_peers_write(shm_peers *s, tp_peer peer, struct fi_msg_rma *msg, uint64_t flags)
{
    return post(s, peer, msg->context, do_write, msg, flags, "fi_writemsg");
}

struct send_args {
    const void *buf;
    size_t len;
    void *desc;
};

static ssize_t do_send(shm_peer *p, void *wr_ctx, const void *args, uint64_t flags)
{
    (void)flags;
    const struct send_args *a = args;
    return fi_send(p->ep, a->buf, a->len, a->desc, p->fa, wr_ctx);
}

int shm_peers_send(shm_peers *s, tp_peer peer, const void *buf, size_t len, void *desc, void *ctx)
{
    struct send_args a = {buf, len, desc};
    return post(s, peer, ctx, do_send, &a, 0, "fi_send");
}

/* ---------------------------------------------------------------- progress --- */

static void *unwrap(void *state, void *op_context)
{
    shm_peers *s = state;
    shm_wr *w = op_context;
    if (!w) return NULL; /* a provider error without a context: nothing of ours */
    void *ctx = w->ctx;
    wr_unlink(s, w);
    wr_put(s, w);
    return ctx;
}

static tp_event *backlog_add(shm_peers *s)
{
    if (s->n_backlog == s->cap_backlog) {
        uint32_t cap = s->cap_backlog ? 2 * s->cap_backlog : 64;
        tp_event *nb = realloc(s->backlog, cap * sizeof *nb);
        if (!nb) return NULL;
        s->backlog = nb;
        s->cap_backlog = cap;
    }
    tp_event *x = &s->backlog[s->n_backlog++];
    memset(x, 0, sizeof *x);
    return x;
}

/* The peer is gone: nothing it owed us will ever arrive. Its endpoint is closed (shm
 * then forgets the commands waiting in the dead peer's queue); completions already in
 * the shared CQ are set aside in order, and the peer's work requests still outstanding
 * after that become failures. */
static void peer_gone(shm_peers *s, shm_peer *p)
{
    p->gone = true;
    close_peer_ep(p);
    for (;;) {
        tp_event tmp[64];
        int r = fab_read_cq(s->cq, "shm", tmp, 64, unwrap, s);
        for (int k = 0; k < r; k++) {
            tp_event *x = backlog_add(s);
            if (x) *x = tmp[k];
            else TN_LOGE("shm: out of memory: a completion is lost");
        }
        if (r < 64) break;
    }
    while (p->out) {
        shm_wr *w = p->out;
        tp_event *x = backlog_add(s);
        if (!x) {
            TN_LOGE("shm: out of memory: a failure is not reported");
            break;
        }
        x->kind = TP_EV_WRITE; /* the engine classifies by its own context */
        x->status = -ECONNRESET;
        x->ctx = w->ctx;
        snprintf(x->msg, sizeof x->msg, "shm: peer %.100s is gone (process exited or engine "
                 "stopped)", p->name);
        wr_unlink(s, w);
        wr_put(s, w);
    }
    TN_LOGI("shm: peer %s is gone", p->name);
}

static void probe_round(shm_peers *s)
{
    if (s->n == 0) return; /* no peer to probe: not even the clock */
    uint64_t now = coarse_ns();
    if (now < s->next_probe) return;
    s->next_probe = now + PROBE_NS;
    for (uint32_t k = 0; k < PROBES_PER_ROUND && k < s->n; k++) {
        shm_peer *p = s->peer[s->probe_cursor++ % s->n];
        if (!p->gone && !probe_alive(p->name)) peer_gone(s, p);
    }
}

int shm_peers_poll(shm_peers *s, tp_event *ev, int max)
{
    probe_round(s);
    for (uint32_t k = 0; k < s->n; k++)
        if (s->peer[k]->gone && s->peer[k]->ep) peer_gone(s, s->peer[k]); /* found by a post */
    int got = 0;
    while (s->backlog_head < s->n_backlog && got < max) ev[got++] = s->backlog[s->backlog_head++];
    if (s->backlog_head < s->n_backlog) return got;
    s->backlog_head = s->n_backlog = 0;
    /* After the peer's failed work requests: operations whose every request has returned
     * complete (and release their regions) before the engine hears the peer is gone. */
    for (uint32_t k = 0; k < s->n && got < max; k++) {
        shm_peer *p = s->peer[k];
        if (!p->gone || p->reported) continue;
        p->reported = true;
        tp_event *x = &ev[got++];
        memset(x, 0, sizeof *x);
        x->kind = TP_EV_PEER;
        x->status = -ECONNRESET;
        x->peer = k;
        snprintf(x->msg, sizeof x->msg, "shm: peer %.100s is gone", p->name);
    }
    /* Nothing outstanding, nothing to complete: no progress call on the transmit CQ
     * (each runs shm's progress engine; a pure target would pay it on every poll for
     * endpoints that have nothing in flight). */
    if (got == max || s->n_out == 0) return got;
    int r = fab_read_cq(s->cq, "shm", ev + got, max - got, unwrap, s);
    return r < 0 ? r : got + r;
}
