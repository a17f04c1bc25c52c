#include "kv_cache.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/app_util.h"
#include "cuda/cuda_loader.h"
#include "kv_cache_streaming/gpu_tick.h"

#define KV_MAGIC 0x4b56434bu /* "KVCK" */
#define KV_MSG_SIZE 65536u
#define KV_IMM_BASE 0x4b000000u

enum { KV_REQ = 1, KV_CANCEL = 2, KV_CANCEL_ACK = 3, KV_REJECT = 4 };

/* Control message: header, then the sender's encoded address, then (requests) the
 * encoded descriptor and the page indices. */
typedef struct kv_msg {
    uint32_t magic, type;
    uint64_t req_id;
    uint32_t imm, layers, pages, addr_len, desc_len, pad;
    uint64_t page_len, ctx_len, kv_offset, layer_stride, ctx_offset, seed;
} kv_msg;

void kv_fill(uint8_t *buf, uint64_t len, uint64_t seed, uint32_t layer, uint32_t page)
{
    uint64_t key = app_mix(seed ^ ((uint64_t)layer << 40) ^ ((uint64_t)page << 8));
    for (uint64_t w = 0; w < len / 8; w++) {
        uint64_t v = app_mix(key + w);
        memcpy(buf + 8 * w, &v, 8);
    }
}

static int encode_msg(uint8_t *buf, size_t cap, kv_msg *m, const te_addr *self,
                      const te_mr_desc *desc, const uint32_t *pages, size_t *out_len)
{
    size_t off = sizeof *m, n = 0;
    int r = te_addr_encode(self, buf + off, cap - off, &n);
    if (r) return r;
    m->addr_len = (uint32_t)n;
    off += n;
    m->desc_len = 0;
    if (desc) {
        r = te_mr_desc_encode(desc, buf + off, cap - off, &n);
        if (r) return r;
        m->desc_len = (uint32_t)n;
        off += n;
    }
    size_t pb = pages ? (size_t)m->pages * 4u : 0;
    if (off + pb > cap) return -EMSGSIZE;
    if (pb) memcpy(buf + off, pages, pb);
    off += pb;
    memcpy(buf, m, sizeof *m);
    *out_len = off;
    return 0;
}

/* KV memory: host (aligned, zeroed) or device memory of `gpu` (gpu < 0: host). */
static uint8_t *kv_alloc(int gpu, size_t len)
{
    void *p = NULL;
    if (gpu >= 0) return tcu_dev_alloc(gpu, len, &p) ? NULL : p;
    p = aligned_alloc(4096, (len + 4095) / 4096 * 4096);
    if (p) memset(p, 0, len);
    return p;
}

static void kv_free(int gpu, uint8_t *p)
{
    if (gpu >= 0) tcu_dev_free(gpu, p);
    else free(p);
}

/* ================================================================ prefiller ==== */

typedef struct kv_layer_rec {
    struct kv_req *req;
    uint64_t t_compute_end, t_submit, t_done;
    int status;
} kv_layer_rec;

typedef struct kv_req {
    struct kv_prefiller *pf;
    struct kv_req *next;
    kv_msg m;
    te_addr peer;
    te_mr_desc desc;
    te_pages *src_pages, *dst_pages;
    uint8_t *src;
    te_mr *mr;
    te_counter *ctr; /* completions of this request's writes */
    te_watcher *w;
    pthread_t thread;
    pthread_mutex_t mu;
    bool cancelled, failed, has_thread;
    uint32_t issued;    /* layers whose writes were submitted */
    uint64_t submitted; /* operations submitted */
    uint64_t t_start;
    kv_layer_rec *layer;
    uint32_t callbacks; /* layer_done calls (atomic) */
} kv_req;

typedef struct kv_item {
    struct kv_item *next;
    size_t len;
    uint8_t data[];
} kv_item;

struct kv_prefiller {
    te_engine *e;
    kv_prefiller_opts o;
    te_addr self;
    te_recv_pool *pool;
    pthread_t ctl;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    kv_item *head, *tail;
    bool stop;
    kv_req *reqs;
    kv_prefiller_stats st;
    gpu_tick *gpu;          /* gpu_watcher: the GPU writes the watcher word */
    pthread_mutex_t gpu_mu; /* one graph at a time */
};

static void pf_send(kv_prefiller *pf, const te_addr *to, uint32_t type, uint64_t req_id)
{
    uint8_t buf[512];
    size_t n = 0;
    kv_msg m = {.magic = KV_MAGIC, .type = type, .req_id = req_id};
    if (encode_msg(buf, sizeof buf, &m, &pf->self, NULL, NULL, &n) == 0)
        (void)te_send(pf->e, to, buf, n, NULL);
}

static void layer_done(void *arg, int status, const char *msg)
{
    kv_layer_rec *l = arg;
    l->t_done = app_now_us();
    l->status = status;
    __atomic_fetch_add(&l->req->callbacks, 1, __ATOMIC_RELEASE);
    if (status) {
        kv_prefiller *pf = l->req->pf;
        pthread_mutex_lock(&pf->mu);
        pf->st.write_errors++;
        pthread_mutex_unlock(&pf->mu);
    }
}

/* Watcher callback (watcher thread): the model finished layers [old, new). */
static bool on_layers(void *arg, uint64_t old_value, uint64_t new_value)
{
    kv_req *q = arg;
    kv_prefiller *pf = q->pf;
    const kv_msg *m = &q->m;
    pthread_mutex_lock(&q->mu);
    while (q->issued < new_value && q->issued < m->layers && !q->cancelled && !q->failed) {
        uint32_t l = q->issued;
        te_paged_args a = {
            .page_len = m->page_len, .src = q->mr, .src_pages = q->src_pages,
            .src_stride = m->page_len, .src_offset = (uint64_t)l * m->pages * m->page_len,
            .dst = &q->desc, .dst_pages = q->dst_pages, .dst_stride = m->page_len,
            .dst_offset = m->kv_offset + (uint64_t)l * m->layer_stride,
            .has_imm = true, .imm = m->imm};
        te_completion c = {.fn = layer_done, .arg = &q->layer[l], .counter = q->ctr};
        q->layer[l].t_submit = app_now_us();
        if (pf->gpu) q->layer[l].t_compute_end = q->layer[l].t_submit; /* seen now */
        if (te_write_paged(pf->e, &a, &c)) {
            fprintf(stderr, "prefiller: te_write_paged: %s\n", te_last_error());
            q->failed = true;
            break;
        }
        q->submitted++;
        if (l + 1 == m->layers) {
            /* Last chunk's context: one write, sharded over the NICs (N immediates). */
            te_write_args w = {.src = q->mr,
                               .src_offset = (uint64_t)m->layers * m->pages * m->page_len,
                               .len = m->ctx_len, .dst = &q->desc, .dst_offset = m->ctx_offset,
                               .has_imm = true, .imm = m->imm, .route = {TE_ROUTE_SHARDED, 0}};
            te_completion c2 = {.counter = q->ctr};
            if (te_write(pf->e, &w, &c2)) {
                fprintf(stderr, "prefiller: te_write: %s\n", te_last_error());
                q->failed = true;
                break;
            }
            q->submitted++;
        }
        q->issued = l + 1;
    }
    pthread_mutex_unlock(&q->mu);
    (void)old_value;
    return true;
}

static void print_timing(const kv_req *q, uint64_t t_end)
{
    const kv_msg *m = &q->m;
    fprintf(stderr, "prefiller: request %llu: %u layers x %u pages x %llu B\n",
            (unsigned long long)m->req_id, m->layers, m->pages, (unsigned long long)m->page_len);
    fprintf(stderr, "  layer  compute_ms  transfer_ms  hidden\n");
    uint64_t prev = q->t_start;
    for (uint32_t l = 0; l < m->layers; l++) {
        const kv_layer_rec *r = &q->layer[l];
        uint64_t next_end = l + 1 < m->layers ? q->layer[l + 1].t_compute_end : 0;
        bool hidden = next_end && r->t_done <= next_end;
        if (l < 4 || l + 2 >= m->layers)
            fprintf(stderr, "  %5u  %10.3f  %11.3f  %s\n", l, (double)(r->t_compute_end - prev) / 1e3,
                    (double)(r->t_done - r->t_submit) / 1e3,
                    l + 1 == m->layers ? "(last)" : hidden ? "yes" : "no");
        else if (l == 4)
            fprintf(stderr, "  ...\n");
        prev = r->t_compute_end;
    }
    (void)t_end;
}

/* Device of the prefiller's KV memory, -1 for host memory. */
static int src_gpu(const kv_prefiller *pf) { return pf->o.gpu_kv ? pf->o.gpu_device : -1; }

static void *model_thread(void *arg)
{
    kv_req *q = arg;
    kv_prefiller *pf = q->pf;
    const kv_msg *m = &q->m;
    uint64_t layer_bytes = (uint64_t)m->pages * m->page_len;
    volatile uint64_t *word = te_watcher_ptr(q->w);
    bool gpu_started = false;
    if (pf->gpu) {
        /* GPU variant: a captured CUDA graph runs the layers and each layer's last kernel
         * stores l+1 into the word. With gpu_kv the KV lives in device memory and the
         * graph's kernels write each layer's pages first; otherwise the KV is produced
         * up front here in host memory. */
        gpu_kv_src kv = {.kv = (uint64_t)(uintptr_t)q->src, .page_len = m->page_len,
                         .ctx_len = m->ctx_len, .seed = m->seed, .pages = m->pages};
        if (!pf->o.gpu_kv) {
            for (uint32_t l = 0; l < m->layers; l++)
                for (uint32_t k = 0; k < m->pages; k++)
                    kv_fill(q->src + l * layer_bytes + (uint64_t)k * m->page_len, m->page_len,
                            m->seed, l, k);
            kv_fill(q->src + (uint64_t)m->layers * layer_bytes, m->ctx_len, m->seed, m->layers, 0);
        }
        pthread_mutex_lock(&pf->gpu_mu);
        q->t_start = app_now_us();
        if (gpu_tick_launch(pf->gpu, te_watcher_device_ptr(q->w), m->layers,
                            (uint64_t)pf->o.compute_us * 1000u, pf->o.gpu_kv ? &kv : NULL)) {
            fprintf(stderr, "prefiller: GPU launch: %s\n", gpu_tick_error(pf->gpu));
            pthread_mutex_lock(&q->mu);
            q->failed = true;
            pthread_mutex_unlock(&q->mu);
        } else {
            gpu_started = true;
        }
    }
    if (!pf->gpu) q->t_start = app_now_us();
    for (uint32_t l = 0; l < m->layers && !pf->gpu; l++) {
        uint64_t t0 = app_now_us();
        pthread_mutex_lock(&q->mu);
        bool stop = q->cancelled || q->failed;
        pthread_mutex_unlock(&q->mu);
        if (stop) break;
        /* "Compute": produce this layer's KV pages, then pad to the configured time. */
        for (uint32_t k = 0; k < m->pages; k++)
            kv_fill(q->src + l * layer_bytes + (uint64_t)k * m->page_len, m->page_len, m->seed, l, k);
        if (l + 1 == m->layers)
            kv_fill(q->src + (uint64_t)m->layers * layer_bytes, m->ctx_len, m->seed, m->layers, 0);
        uint64_t spent = app_now_us() - t0;
        if (spent < pf->o.compute_us) app_sleep_us(pf->o.compute_us - spent);
        q->layer[l].t_compute_end = app_now_us();
        /* Layer done: bump the watched word. On a GPU this is a 64-bit store/atomicAdd
         * by the attention-output kernel inside the CUDA graph, to
         * te_watcher_device_ptr(w); the release orders the KV stores before it. */
        __atomic_store_n(word, (uint64_t)l + 1, __ATOMIC_RELEASE);
    }
    /* Wait until the watcher caught up (or the request was cancelled/failed). */
    uint64_t t_wait = app_now_us();
    for (;;) {
        pthread_mutex_lock(&q->mu);
        bool fin = q->issued == m->layers || q->cancelled || q->failed;
        pthread_mutex_unlock(&q->mu);
        if (fin || app_now_us() - t_wait > 30000000u) break;
        app_sleep_us(50);
    }
    if (pf->gpu) { /* the GPU must be done with the word before it is released */
        if (gpu_started && gpu_tick_wait(pf->gpu))
            fprintf(stderr, "prefiller: GPU: %s\n", gpu_tick_error(pf->gpu));
        pthread_mutex_unlock(&pf->gpu_mu);
    }
    te_watcher_free(q->w); /* the callback is not running and will not run again */
    q->w = NULL;
    pthread_mutex_lock(&q->mu);
    uint64_t submitted = q->submitted;
    q->failed = q->failed || q->issued != m->layers;
    pthread_mutex_unlock(&q->mu);
    (void)te_counter_wait(q->ctr, submitted, -1); /* every op completes (op timeout) */
    /* The counter is bumped by the worker before the callback thread runs layer_done. */
    pthread_mutex_lock(&q->mu);
    uint32_t issued = q->issued;
    pthread_mutex_unlock(&q->mu);
    while (__atomic_load_n(&q->callbacks, __ATOMIC_ACQUIRE) < issued) app_sleep_us(50);
    uint64_t t_end = app_now_us();
    bool cancelled, failed;
    pthread_mutex_lock(&q->mu);
    cancelled = q->cancelled;
    failed = q->failed;
    pthread_mutex_unlock(&q->mu);
    if (!cancelled && !failed) {
        uint32_t hidden = 0;
        double tmax = 0;
        for (uint32_t l = 0; l < m->layers; l++) {
            double t = (double)(q->layer[l].t_done - q->layer[l].t_submit) / 1e3;
            if (t > tmax) tmax = t;
            if (l + 1 < m->layers && q->layer[l].t_done <= q->layer[l + 1].t_compute_end) hidden++;
        }
        pthread_mutex_lock(&pf->mu);
        pf->st.completed++;
        pf->st.last_layers = m->layers;
        pf->st.last_hidden_layers = hidden;
        pf->st.last_transfer_ms_max = tmax;
        pf->st.last_compute_ms = (double)(q->layer[m->layers - 1].t_compute_end - q->t_start) / 1e3;
        pf->st.last_exposed_ms = (double)(t_end - q->layer[m->layers - 1].t_compute_end) / 1e3;
        pthread_mutex_unlock(&pf->mu);
        if (pf->o.verbose) {
            print_timing(q, t_end);
            fprintf(stderr, "  compute %.3f ms, transfers hidden behind the next layer's compute: "
                            "%u/%u, exposed after the last layer: %.3f ms\n",
                    pf->st.last_compute_ms, hidden, m->layers - 1, pf->st.last_exposed_ms);
        }
    }
    te_mr_deregister(q->mr);
    q->mr = NULL;
    kv_free(src_gpu(pf), q->src);
    q->src = NULL;
    return NULL;
}

static void pf_start(kv_prefiller *pf, const uint8_t *data, size_t len)
{
    kv_msg m;
    memcpy(&m, data, sizeof m);
    kv_req *q = calloc(1, sizeof *q);
    if (!q) return;
    q->pf = pf;
    q->m = m;
    pthread_mutex_init(&q->mu, NULL);
    const uint8_t *p = data + sizeof m;
    bool ok = te_addr_decode(p, m.addr_len, &q->peer) == 0;
    p += m.addr_len;
    const kv_shape *s = &pf->o.shape;
    ok = ok && te_mr_desc_decode(p, m.desc_len, &q->desc) == 0;
    p += m.desc_len;
    ok = ok && m.layers == s->layers && m.page_len == s->page_len && m.pages <= s->pages &&
         m.pages >= 1 && m.ctx_len <= s->ctx_len &&
         sizeof m + m.addr_len + m.desc_len + (size_t)m.pages * 4u == len;
    pthread_mutex_lock(&pf->mu);
    pf->st.requests++;
    q->next = pf->reqs;
    pf->reqs = q; /* kept until destroy: a late cancel always finds its request */
    pthread_mutex_unlock(&pf->mu);
    if (!ok) goto reject;
    uint32_t *idx = malloc((size_t)m.pages * 4u);
    for (uint32_t k = 0; k < m.pages; k++) idx[k] = k;
    int r = te_pages_create(idx, m.pages, &q->src_pages);
    memcpy(idx, p, (size_t)m.pages * 4u);
    if (!r) r = te_pages_create(idx, m.pages, &q->dst_pages);
    free(idx);
    size_t bytes = (size_t)m.layers * m.pages * m.page_len + m.ctx_len;
    q->src = kv_alloc(src_gpu(pf), bytes);
    q->layer = calloc(m.layers, sizeof *q->layer);
    for (uint32_t l = 0; l < m.layers && q->layer; l++) q->layer[l].req = q;
    if (r || !q->src || !q->layer) goto reject;
    /* GPU KV: CUDA memory, registered with device = the GPU ordinal. */
    if (te_mr_register(pf->e, q->src, bytes, pf->o.gpu_kv ? pf->o.gpu_device : TE_DEVICE_HOST,
                       TE_MR_LOCAL, &q->mr)) {
        fprintf(stderr, "prefiller: registering the KV: %s\n", te_last_error());
        goto reject;
    }
    if (te_counter_create(&q->ctr)) goto reject;
    if (te_watcher_alloc(pf->e, on_layers, q, &q->w)) goto reject;
    if (pthread_create(&q->thread, NULL, model_thread, q) == 0) {
        q->has_thread = true;
    } else {
        te_watcher_free(q->w);
        q->w = NULL;
        goto reject;
    }
    if (q->has_thread) return;
reject:
    fprintf(stderr, "prefiller: rejecting request %llu\n", (unsigned long long)m.req_id);
    pthread_mutex_lock(&pf->mu);
    pf->st.rejected++;
    pthread_mutex_unlock(&pf->mu);
    pthread_mutex_lock(&q->mu);
    q->failed = true;
    pthread_mutex_unlock(&q->mu);
    pf_send(pf, &q->peer, KV_REJECT, m.req_id);
}

/* Cancel: no write of this request is submitted after the flag is set (the watcher
 * callback checks it under the same lock); confirm once the submitted ones completed. */
static void pf_cancel(kv_prefiller *pf, const uint8_t *data, size_t len)
{
    kv_msg m;
    memcpy(&m, data, sizeof m);
    te_addr peer;
    if (len < sizeof m + m.addr_len || te_addr_decode(data + sizeof m, m.addr_len, &peer)) return;
    pthread_mutex_lock(&pf->mu);
    kv_req *q = pf->reqs;
    while (q && q->m.req_id != m.req_id) q = q->next;
    pthread_mutex_unlock(&pf->mu);
    if (q) {
        pthread_mutex_lock(&q->mu);
        bool first = !q->cancelled;
        q->cancelled = true;
        uint64_t submitted = q->submitted;
        uint32_t issued = q->issued;
        pthread_mutex_unlock(&q->mu);
        if (q->ctr) (void)te_counter_wait(q->ctr, submitted, -1);
        if (first) {
            pthread_mutex_lock(&pf->mu);
            pf->st.cancelled++;
            pthread_mutex_unlock(&pf->mu);
            if (pf->o.verbose)
                fprintf(stderr, "prefiller: request %llu cancelled after %u/%u layers\n",
                        (unsigned long long)m.req_id, issued, q->m.layers);
        }
    }
    /* Unknown request: nothing of it can be in flight. */
    pf_send(pf, &peer, KV_CANCEL_ACK, m.req_id);
}

static void pf_on_recv(void *arg, const void *data, size_t len)
{
    kv_prefiller *pf = arg;
    if (len < sizeof(kv_msg)) return;
    kv_item *it = malloc(sizeof *it + len);
    if (!it) return;
    it->next = NULL;
    it->len = len;
    memcpy(it->data, data, len);
    pthread_mutex_lock(&pf->mu);
    if (pf->tail) pf->tail->next = it;
    else pf->head = it;
    pf->tail = it;
    pthread_cond_signal(&pf->cv);
    pthread_mutex_unlock(&pf->mu);
}

static void *pf_control(void *arg)
{
    kv_prefiller *pf = arg;
    pthread_mutex_lock(&pf->mu);
    for (;;) {
        while (!pf->head && !pf->stop) pthread_cond_wait(&pf->cv, &pf->mu);
        if (pf->stop) break;
        kv_item *it = pf->head;
        pf->head = it->next;
        if (!pf->head) pf->tail = NULL;
        pthread_mutex_unlock(&pf->mu);
        kv_msg m;
        memcpy(&m, it->data, sizeof m);
        if (m.magic == KV_MAGIC && m.type == KV_REQ) pf_start(pf, it->data, it->len);
        else if (m.magic == KV_MAGIC && m.type == KV_CANCEL) pf_cancel(pf, it->data, it->len);
        free(it);
        pthread_mutex_lock(&pf->mu);
    }
    pthread_mutex_unlock(&pf->mu);
    return NULL;
}

int kv_prefiller_create(const te_config *cfg, const kv_prefiller_opts *o, kv_prefiller **out)
{
    if (!o->shape.layers || !o->shape.pages || o->shape.page_len % 8 || o->shape.ctx_len % 8)
        return -EINVAL;
    kv_prefiller *pf = calloc(1, sizeof *pf);
    if (!pf) return -ENOMEM;
    pf->o = *o;
    if (o->gpu_kv && !o->gpu_watcher) {
        free(pf);
        return -EINVAL; /* the KV is written by the graph's kernels */
    }
    pthread_mutex_init(&pf->mu, NULL);
    pthread_cond_init(&pf->cv, NULL);
    pthread_mutex_init(&pf->gpu_mu, NULL);
    int r = te_engine_create(cfg, &pf->e);
    if (!r && o->gpu_watcher) {
        /* The word must be GPU-visible: mapped pinned host memory (CUDA driver present). */
        if (strcmp(te_watcher_memory_kind(pf->e), "mapped-host")) {
            fprintf(stderr, "prefiller: watcher memory is '%s', not GPU-visible\n",
                    te_watcher_memory_kind(pf->e));
            r = -ENOTSUP;
        }
        if (!r) r = gpu_tick_open(o->gpu_device, &pf->gpu);
    }
    if (!r) r = te_main_address(pf->e, &pf->self);
    if (!r) r = te_recv_pool_create(pf->e, KV_MSG_SIZE, 16, pf_on_recv, NULL, pf, &pf->pool);
    if (!r) r = -pthread_create(&pf->ctl, NULL, pf_control, pf);
    if (r) {
        if (pf->e) te_engine_destroy(pf->e);
        free(pf);
        return r;
    }
    *out = pf;
    return 0;
}

int kv_prefiller_address(const kv_prefiller *p, te_addr *out)
{
    *out = p->self;
    return 0;
}

uint32_t kv_prefiller_nics(const kv_prefiller *p) { return te_group_nics(p->e, 0); }

void kv_prefiller_get_stats(kv_prefiller *p, kv_prefiller_stats *s)
{
    pthread_mutex_lock(&p->mu);
    *s = p->st;
    uint64_t issued = 0;
    for (kv_req *q = p->reqs; q; q = q->next) {
        pthread_mutex_lock(&q->mu);
        issued += q->issued;
        pthread_mutex_unlock(&q->mu);
    }
    s->layers_issued = issued;
    pthread_mutex_unlock(&p->mu);
}

void kv_prefiller_destroy(kv_prefiller *pf)
{
    if (!pf) return;
    pthread_mutex_lock(&pf->mu);
    pf->stop = true;
    pthread_cond_signal(&pf->cv);
    pthread_mutex_unlock(&pf->mu);
    pthread_join(pf->ctl, NULL);
    for (kv_req *q = pf->reqs; q; q = q->next) {
        pthread_mutex_lock(&q->mu);
        q->cancelled = true;
        pthread_mutex_unlock(&q->mu);
        if (q->has_thread) pthread_join(q->thread, NULL);
    }
    te_recv_pool_destroy(pf->pool);
    te_engine_destroy(pf->e);
    gpu_tick_close(pf->gpu);
    while (pf->reqs) {
        kv_req *q = pf->reqs;
        pf->reqs = q->next;
        /* a watcher still live was freed with the engine */
        if (q->src_pages) te_pages_release(q->src_pages);
        if (q->dst_pages) te_pages_release(q->dst_pages);
        if (q->ctr) te_counter_destroy(q->ctr);
        kv_free(src_gpu(pf), q->src);
        free(q->layer);
        pthread_mutex_destroy(&q->mu);
        free(q);
    }
    while (pf->head) {
        kv_item *it = pf->head;
        pf->head = it->next;
        free(it);
    }
    pthread_mutex_destroy(&pf->mu);
    pthread_cond_destroy(&pf->cv);
    free(pf);
}

/* ================================================================== decoder ==== */

enum { SLOT_FREE = 0, SLOT_BUSY = 1, SLOT_QUARANTINED = 2 };

typedef struct kv_pending {
    struct kv_pending *next;
    struct kv_decoder *d;
    uint64_t req_id;
    uint32_t imm, n;
    uint32_t *pages;
    uint32_t fires;
    bool rejected, cancel_sent, acked, quarantined;
    uint64_t strays;
} kv_pending;

struct kv_decoder {
    te_engine *e;
    kv_decoder_opts o;
    te_addr self;
    uint8_t *pool;
    size_t pool_len;
    uint64_t layer_stride, ctx_offset;
    te_mr *mr;
    te_mr_desc desc;
    te_recv_pool *rp;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint8_t *slot;
    kv_pending *reqs;
    uint64_t next_id;
    uint64_t late_imms;
    gpu_tick *gpu; /* gpu_pool: the kernels that check arrivals on the device */
};

static int pool_gpu(const kv_decoder *d) { return d->o.gpu_pool ? d->o.gpu_device : -1; }

static kv_pending *find_req(kv_decoder *d, uint64_t id)
{
    kv_pending *r = d->reqs;
    while (r && r->req_id != id) r = r->next;
    return r;
}

static void release_pages(kv_decoder *d, kv_pending *r, uint8_t state)
{
    for (uint32_t k = 0; k < r->n; k++) d->slot[r->pages[k]] = state;
}

static void dec_on_recv(void *arg, const void *data, size_t len)
{
    kv_decoder *d = arg;
    kv_msg m;
    if (len < sizeof m) return;
    memcpy(&m, data, sizeof m);
    if (m.magic != KV_MAGIC) return;
    pthread_mutex_lock(&d->mu);
    kv_pending *r = find_req(d, m.req_id);
    if (r && m.type == KV_CANCEL_ACK && !r->acked) {
        r->acked = true;
        if (r->quarantined) { /* late confirmation: the pages may be reused now */
            release_pages(d, r, SLOT_FREE);
            r->quarantined = false;
        }
    } else if (r && m.type == KV_REJECT) {
        r->rejected = true;
    }
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
}

static bool dec_on_reached(void *arg, uint32_t imm)
{
    kv_pending *r = arg;
    kv_decoder *d = r->d;
    pthread_mutex_lock(&d->mu);
    r->fires++;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    (void)imm;
    return false; /* one shot: anything beyond the target goes to dec_on_stray */
}

/* Immediates nobody expects: surplus, or writes of a cancelled request. */
static void dec_on_stray(void *arg, uint32_t imm)
{
    kv_decoder *d = arg;
    pthread_mutex_lock(&d->mu);
    for (kv_pending *r = d->reqs; r; r = r->next) {
        if (r->imm != imm) continue;
        r->strays++;
        if (r->acked) d->late_imms++;
        break;
    }
    pthread_mutex_unlock(&d->mu);
}

int kv_decoder_create(const te_config *cfg, const kv_decoder_opts *o, kv_decoder **out)
{
    const kv_shape *s = &o->shape;
    if (!s->layers || !o->slots || s->page_len % 8 || s->ctx_len % 8) return -EINVAL;
    kv_decoder *d = calloc(1, sizeof *d);
    if (!d) return -ENOMEM;
    d->o = *o;
    pthread_mutex_init(&d->mu, NULL);
    pthread_cond_init(&d->cv, NULL);
    d->layer_stride = (uint64_t)o->slots * s->page_len;
    d->ctx_offset = (uint64_t)s->layers * d->layer_stride;
    d->pool_len = d->ctx_offset + s->ctx_len;
    /* GPU: the KV pool is CUDA memory registered with device = its ordinal; arrivals are
     * checked by a kernel there. Nothing else changes. */
    int r = 0;
    if (o->gpu_pool) r = gpu_tick_open(o->gpu_device, &d->gpu);
    d->pool = r ? NULL : kv_alloc(pool_gpu(d), d->pool_len);
    d->slot = calloc(o->slots, 1);
    d->next_id = (uint64_t)app_now_us() << 16;
    if (!r) r = d->pool && d->slot ? 0 : -ENOMEM;
    if (!r) r = te_engine_create(cfg, &d->e);
    if (!r) r = te_main_address(d->e, &d->self);
    if (!r) r = te_mr_register(d->e, d->pool, d->pool_len, o->gpu_pool ? o->gpu_device : TE_DEVICE_HOST,
                               TE_MR_REMOTE_WRITE, &d->mr);
    if (!r) r = te_mr_desc_get(d->mr, &d->desc);
    if (!r) r = te_recv_pool_create(d->e, KV_MSG_SIZE, 16, dec_on_recv, NULL, d, &d->rp);
    if (!r) r = te_imm_set_callback(d->e, dec_on_stray, d);
    if (r) {
        if (d->e) te_engine_destroy(d->e);
        kv_free(pool_gpu(d), d->pool);
        gpu_tick_close(d->gpu);
        free(d->slot);
        free(d);
        return r;
    }
    *out = d;
    return 0;
}

static void deadline_ts(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static uint64_t verify(kv_decoder *d, const uint32_t *pages, uint32_t n, uint64_t seed)
{
    const kv_shape *s = &d->o.shape;
    uint64_t bad = 0;
    if (d->gpu) {
        gpu_kv_dst g = {.base = (uint64_t)(uintptr_t)d->pool, .layer_stride = d->layer_stride,
                        .page_len = s->page_len, .ctx_offset = d->ctx_offset, .ctx_len = s->ctx_len,
                        .seed = seed, .slots = pages, .n = n, .layers = s->layers};
        if (gpu_tick_check(d->gpu, &g, &bad)) {
            fprintf(stderr, "decoder: device check: %s\n", gpu_tick_error(d->gpu));
            return UINT64_MAX;
        }
        return bad;
    }
    uint8_t *want = malloc(s->page_len > s->ctx_len ? s->page_len : s->ctx_len);
    if (!want) return UINT64_MAX;
    for (uint32_t l = 0; l < s->layers; l++)
        for (uint32_t k = 0; k < n; k++) {
            kv_fill(want, s->page_len, seed, l, k);
            const uint8_t *got = d->pool + l * d->layer_stride + (uint64_t)pages[k] * s->page_len;
            for (uint64_t b = 0; b < s->page_len; b++) bad += got[b] != want[b];
        }
    kv_fill(want, s->ctx_len, seed, s->layers, 0);
    for (uint64_t b = 0; b < s->ctx_len; b++) bad += d->pool[d->ctx_offset + b] != want[b];
    free(want);
    return bad;
}

int kv_decoder_run(kv_decoder *d, const te_addr *prefiller, uint32_t prefiller_nics,
                   const uint32_t *pages, uint32_t n, uint64_t seed, int deadline_ms,
                   int cancel_wait_ms, kv_result *res)
{
    const kv_shape *s = &d->o.shape;
    memset(res, 0, sizeof *res);
    if (!n || n > s->pages || !prefiller_nics) return res->status = -EINVAL;
    kv_pending *r = calloc(1, sizeof *r);
    if (!r) return res->status = -ENOMEM;
    r->d = d;
    r->n = n;
    r->pages = malloc((size_t)n * 4u);
    memcpy(r->pages, pages, (size_t)n * 4u);
    pthread_mutex_lock(&d->mu);
    for (uint32_t k = 0; k < n; k++)
        if (pages[k] >= d->o.slots || d->slot[pages[k]] != SLOT_FREE) {
            pthread_mutex_unlock(&d->mu);
            free(r->pages);
            free(r);
            return res->status = -EBUSY; /* in use, or waiting for a cancel confirmation */
        }
    r->req_id = ++d->next_id;
    r->imm = KV_IMM_BASE | (uint32_t)(r->req_id & 0xffffffu);
    release_pages(d, r, SLOT_BUSY);
    r->next = d->reqs;
    d->reqs = r;
    pthread_mutex_unlock(&d->mu);

    /* Immediates: one per page per layer (te_write_paged) + one per shard of the context
     * write, sharded over every NIC of the prefiller's group. */
    uint64_t expected = (uint64_t)s->layers * n + prefiller_nics;
    res->expected = expected;
    int rc = te_imm_expect(d->e, r->imm, expected, dec_on_reached, r, NULL);
    if (rc) {
        pthread_mutex_lock(&d->mu);
        release_pages(d, r, SLOT_FREE);
        pthread_mutex_unlock(&d->mu);
        return res->status = rc;
    }
    uint8_t buf[KV_MSG_SIZE];
    size_t len = 0;
    kv_msg m = {.magic = KV_MAGIC, .type = KV_REQ, .req_id = r->req_id, .imm = r->imm,
                .layers = s->layers, .pages = n, .page_len = s->page_len, .ctx_len = s->ctx_len,
                .kv_offset = 0, .layer_stride = d->layer_stride, .ctx_offset = d->ctx_offset,
                .seed = seed};
    uint64_t t0 = app_now_us();
    rc = encode_msg(buf, sizeof buf, &m, &d->self, &d->desc, pages, &len);
    if (!rc) rc = te_send(d->e, prefiller, buf, len, NULL);

    struct timespec ts;
    deadline_ts(&ts, deadline_ms);
    pthread_mutex_lock(&d->mu);
    while (!rc && !r->fires && !r->rejected)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT) break;
    bool fired = r->fires > 0;
    pthread_mutex_unlock(&d->mu);
    if (!fired) te_imm_remove(d->e, r->imm, NULL); /* later immediates become strays */
    pthread_mutex_lock(&d->mu);
    fired = r->fires > 0; /* it may have fired just before the removal */
    pthread_mutex_unlock(&d->mu);
    if (fired) {
        res->ttft_us = app_now_us() - t0;
        res->bad_bytes = verify(d, pages, n, seed);
        /* The pages now hold the KV for decoding; this example hands them back at once. */
        pthread_mutex_lock(&d->mu);
        res->fires = r->fires;
        release_pages(d, r, SLOT_FREE);
        pthread_mutex_unlock(&d->mu);
        return res->status = 0;
    }
    /* Deadline (or the request could not be sent / was rejected): cancel, and reuse the
     * pages only once the prefiller confirmed that none of its writes can still land. */
    res->status = rc ? rc : r->rejected ? -EREMOTEIO : -ETIMEDOUT;
    m.type = KV_CANCEL;
    m.pages = 0;
    if (encode_msg(buf, sizeof buf, &m, &d->self, NULL, NULL, &len) == 0)
        (void)te_send(d->e, prefiller, buf, len, NULL);
    deadline_ts(&ts, cancel_wait_ms);
    pthread_mutex_lock(&d->mu);
    r->cancel_sent = true;
    while (!r->acked)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &ts) == ETIMEDOUT) break;
    res->confirmed = r->acked;
    res->fires = r->fires;
    if (r->acked) {
        release_pages(d, r, SLOT_FREE);
    } else {
        release_pages(d, r, SLOT_QUARANTINED);
        r->quarantined = true;
    }
    pthread_mutex_unlock(&d->mu);
    res->ttft_us = app_now_us() - t0;
    return res->status;
}

uint64_t kv_decoder_late_imms(kv_decoder *d)
{
    pthread_mutex_lock(&d->mu);
    uint64_t v = d->late_imms;
    pthread_mutex_unlock(&d->mu);
    return v;
}

uint64_t kv_decoder_hash_pages(kv_decoder *d, const uint32_t *pages, uint32_t n)
{
    uint64_t h = 0x12345;
    const kv_shape *s = &d->o.shape;
    uint8_t *copy = d->gpu ? malloc(s->page_len ? s->page_len : 1) : NULL;
    for (uint32_t l = 0; l < s->layers; l++)
        for (uint32_t k = 0; k < n; k++) {
            const uint8_t *p = d->pool + l * d->layer_stride + (uint64_t)pages[k] * s->page_len;
            if (d->gpu) { /* hashed on the host: a copy of the device page */
                if (!copy || tcu_copy_to_host(d->o.gpu_device, copy, p, s->page_len)) {
                    free(copy);
                    return 0;
                }
                p = copy;
            }
            for (uint64_t w = 0; w < s->page_len / 8; w++) {
                uint64_t v;
                memcpy(&v, p + 8 * w, 8);
                h = app_mix(h ^ v);
            }
        }
    free(copy);
    return h;
}

uint32_t kv_decoder_quarantined(kv_decoder *d)
{
    uint32_t c = 0;
    pthread_mutex_lock(&d->mu);
    for (uint32_t k = 0; k < d->o.slots; k++) c += d->slot[k] == SLOT_QUARANTINED;
    pthread_mutex_unlock(&d->mu);
    return c;
}

void kv_decoder_destroy(kv_decoder *d)
{
    if (!d) return;
    te_recv_pool_destroy(d->rp);
    te_engine_destroy(d->e);
    while (d->reqs) {
        kv_pending *r = d->reqs;
        d->reqs = r->next;
        free(r->pages);
        free(r);
    }
    kv_free(pool_gpu(d), d->pool);
    gpu_tick_close(d->gpu);
    free(d->slot);
    pthread_mutex_destroy(&d->mu);
    pthread_cond_destroy(&d->cv);
    free(d);
}
