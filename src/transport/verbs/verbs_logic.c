/* Pure logic of the ibverbs backend; see verbs_logic.h and docs/verbs.md. */
#include <errno.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "core/error.h"
#include "core/varint.h"
#include "transport/verbs/verbs_logic.h"

/* ------------------------------------------------------------ UD address ---- */

void tv_addr_encode(const tv_ud_addr *a, te_addr *out)
{
    memset(out, 0, sizeof *out);
    out->transport = TE_TRANSPORT_VERBS;
    out->len = TV_ADDR_LEN;
    uint8_t *p = out->bytes;
    memcpy(p, a->gid, 16);
    p[16] = (uint8_t)a->lid;
    p[17] = (uint8_t)(a->lid >> 8);
    for (int k = 0; k < 4; k++) {
        p[18 + k] = (uint8_t)(a->qpn >> (8 * k));
        p[22 + k] = (uint8_t)(a->qkey >> (8 * k));
    }
}

int tv_addr_decode(const te_addr *in, tv_ud_addr *out)
{
    if (in->transport != TE_TRANSPORT_VERBS)
        return tn_err(-EINVAL, "peer address is not an ibverbs address (transport %u)",
                      (unsigned)in->transport);
    if (in->len != TV_ADDR_LEN)
        return tn_err(-EINVAL, "ibverbs address has %u bytes (expected %d)", (unsigned)in->len,
                      TV_ADDR_LEN);
    const uint8_t *p = in->bytes;
    tv_ud_addr a;
    memcpy(a.gid, p, 16);
    a.lid = (uint16_t)(p[16] | (p[17] << 8));
    a.qpn = 0;
    a.qkey = 0;
    for (int k = 0; k < 4; k++) {
        a.qpn |= (uint32_t)p[18 + k] << (8 * k);
        a.qkey |= (uint32_t)p[22 + k] << (8 * k);
    }
    if (a.qpn == 0 || a.qpn > 0xffffffu)
        return tn_err(-EINVAL, "ibverbs address: UD QP number %u is not a valid 24-bit QPN", a.qpn);
    *out = a;
    return 0;
}

/* ------------------------------------------------------------- handshake ---- */

typedef struct wr_buf {
    uint8_t *p;
    size_t cap, len;
    bool ok;
} wr_buf;

static void put_bytes(wr_buf *w, const uint8_t *b, size_t n)
{
    if (!w->ok || w->cap - w->len < n) {
        w->ok = false;
        return;
    }
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void put_var(wr_buf *w, uint64_t v)
{
    uint8_t tmp[TN_VARINT_MAX];
    put_bytes(w, tmp, tn_varint_encode(v, tmp));
}

size_t tv_hs_encode(const tv_handshake *h, uint8_t *buf, size_t cap)
{
    wr_buf w = {.p = buf, .cap = cap, .len = 0, .ok = true};
    put_bytes(&w, h->ud.gid, 16);
    put_var(&w, h->ud.lid);
    put_var(&w, h->ud.qpn);
    put_var(&w, h->ud.qkey);
    put_var(&w, h->lid);
    put_bytes(&w, h->gid, 16);
    put_var(&w, h->msg_qpn);
    put_var(&w, h->msg_psn);
    put_var(&w, h->rma_qpn);
    put_var(&w, h->rma_psn);
    if (h->kind != TV_HS_LEGACY) {
        uint8_t k = (uint8_t)h->kind;
        put_bytes(&w, &k, 1);
    }
    return w.ok ? w.len : 0;
}

typedef struct rd_buf {
    const uint8_t *p;
    size_t len, off;
} rd_buf;

static int get_bytes(rd_buf *r, uint8_t *out, size_t n, const char *what)
{
    if (r->len - r->off < n)
        return tn_err(-EBADMSG, "verbs handshake: truncated in %s (%zu bytes)", what, r->len);
    memcpy(out, r->p + r->off, n);
    r->off += n;
    return 0;
}

static int get_var(rd_buf *r, uint64_t max, uint64_t *out, const char *what)
{
    int n = tn_varint_decode(r->p + r->off, r->len - r->off, out);
    if (n < 0) return tn_err(-EBADMSG, "verbs handshake: %s: %s", what, tn_varint_status_str(n));
    if (*out > max)
        return tn_err(-EBADMSG, "verbs handshake: %s = %llu out of range (max %llu)", what,
                      (unsigned long long)*out, (unsigned long long)max);
    r->off += (size_t)n;
    return 0;
}

int tv_hs_decode(const uint8_t *buf, size_t len, tv_handshake *out)
{
    rd_buf r = {.p = buf, .len = len, .off = 0};
    tv_handshake h;
    memset(&h, 0, sizeof h);
    uint64_t v[9];
    int rc;
    if ((rc = get_bytes(&r, h.ud.gid, 16, "ud.gid"))) return rc;
    if ((rc = get_var(&r, 0xffff, &v[0], "ud.lid"))) return rc;
    if ((rc = get_var(&r, 0xffffff, &v[1], "ud.qpn"))) return rc;
    if ((rc = get_var(&r, 0xffffffff, &v[2], "ud.qkey"))) return rc;
    if ((rc = get_var(&r, 0xffff, &v[3], "lid"))) return rc;
    if ((rc = get_bytes(&r, h.gid, 16, "gid"))) return rc;
    if ((rc = get_var(&r, 0xffffff, &v[4], "msg_qpn"))) return rc;
    if ((rc = get_var(&r, 0xffffff, &v[5], "msg_psn"))) return rc;
    if ((rc = get_var(&r, 0xffffff, &v[6], "rma_qpn"))) return rc;
    if ((rc = get_var(&r, 0xffffff, &v[7], "rma_psn"))) return rc;
    h.ud.lid = (uint16_t)v[0];
    h.ud.qpn = (uint32_t)v[1];
    h.ud.qkey = (uint32_t)v[2];
    h.lid = (uint16_t)v[3];
    h.msg_qpn = (uint32_t)v[4];
    h.msg_psn = (uint32_t)v[5];
    h.rma_qpn = (uint32_t)v[6];
    h.rma_psn = (uint32_t)v[7];
    h.kind = TV_HS_LEGACY;
    if (r.off < len) {
        uint8_t k = buf[r.off++];
        if (k != TV_HS_REQUEST && k != TV_HS_REPLY)
            return tn_err(-EBADMSG, "verbs handshake: unknown kind byte %u", k);
        h.kind = k;
    }
    if (r.off != len)
        return tn_err(-EBADMSG, "verbs handshake: %zu trailing bytes", len - r.off);
    if (h.ud.qpn == 0 || h.msg_qpn == 0 || h.rma_qpn == 0)
        return tn_err(-EBADMSG, "verbs handshake: QP number 0");
    *out = h;
    return 0;
}

/* ------------------------------------------------------------ GID choice ---- */

static bool ipv4_mapped(const uint8_t *g)
{
    static const uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return memcmp(g, prefix, 12) == 0;
}

int tv_gid_pick(const tv_gid_entry *g, int n, bool roce, int override)
{
    if (override >= 0) {
        if (override >= n || !g[override].valid)
            return tn_err(-EINVAL, "GID index %d: no such valid GID on this port (%d entries)",
                          override, n);
        return override;
    }
    if (!roce) return 0;
    for (int k = 0; k < n; k++)
        if (g[k].valid && g[k].type == TV_GID_ROCE_V2 && ipv4_mapped(g[k].gid)) return k;
    for (int k = 0; k < n; k++)
        if (g[k].valid && g[k].type == TV_GID_ROCE_V2) return k;
    return 0;
}

/* ---------------------------------------------------------------- sizing ---- */

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

int tv_size(const tv_caps *caps, tv_sizing *s)
{
    s->send_credits = min_u32(2048, caps->max_qp_wr);
    s->msg_srq = min_u32(1024, caps->max_srq_wr);
    s->imm_srq = min_u32(8192, caps->max_srq_wr);
    s->ud_sq = min_u32(64, caps->max_qp_wr);
    s->ud_rq = min_u32(64, caps->max_qp_wr);
    /* Shrink the largest terms until the CQ fits the device. */
    for (;;) {
        uint64_t cq = (uint64_t)s->send_credits + s->msg_srq + s->imm_srq + s->ud_sq + s->ud_rq;
        if (cq <= caps->max_cqe) {
            s->cq = (uint32_t)cq;
            break;
        }
        if (s->imm_srq > 256 && s->imm_srq >= s->send_credits) s->imm_srq /= 2;
        else if (s->send_credits > 64) s->send_credits /= 2;
        else if (s->msg_srq > 64) s->msg_srq /= 2;
        else if (s->imm_srq > 64) s->imm_srq /= 2;
        else
            return tn_err(-EINVAL, "verbs: the device's CQ limit (%u entries) is too small",
                          caps->max_cqe);
    }
    if (s->send_credits < 16 || s->msg_srq < 16 || s->imm_srq < 16 || s->ud_sq < 4 || s->ud_rq < 4)
        return tn_err(-EINVAL, "verbs: device queue limits too small (max_qp_wr %u, max_srq_wr %u)",
                      caps->max_qp_wr, caps->max_srq_wr);
    s->imm_batch = s->imm_srq / 8 < 64 ? s->imm_srq / 8 : 64;
    if (s->imm_batch == 0) s->imm_batch = 1;
    return 0;
}

/* ------------------------------------------------------ connection state ---- */

int tv_conn_start(tv_conn *c, const tv_conn_timing *t, uint64_t now)
{
    if (c->state != TV_IDLE) return 0;
    c->state = TV_CONNECTING;
    c->tries = 1;
    c->backoff_ns = t->first_retry_ns;
    c->next_tx_ns = now + c->backoff_ns;
    c->deadline_ns = now + t->timeout_ns;
    return TV_ACT_SEND_REQUEST;
}

int tv_conn_tick(tv_conn *c, const tv_conn_timing *t, uint64_t now)
{
    if (c->state != TV_CONNECTING) return 0;
    if (now >= c->deadline_ns) {
        c->state = TV_IDLE;
        return TV_ACT_FAIL;
    }
    if (now < c->next_tx_ns) return 0;
    c->tries++;
    c->backoff_ns *= 2;
    if (c->backoff_ns > t->max_retry_ns) c->backoff_ns = t->max_retry_ns;
    c->next_tx_ns = now + c->backoff_ns;
    return TV_ACT_SEND_REQUEST;
}

int tv_conn_on_handshake(tv_conn *c, const tv_handshake *h)
{
    if (c->state == TV_ESTABLISHED) {
        if (h->msg_qpn != c->remote_msg_qpn || h->rma_qpn != c->remote_rma_qpn)
            return h->kind == TV_HS_REPLY ? TV_ACT_IGNORE : TV_ACT_RESTART;
        return h->kind == TV_HS_REQUEST ? TV_ACT_SEND_REPLY : 0;
    }
    if (c->state == TV_IDLE && h->kind == TV_HS_REPLY) return TV_ACT_IGNORE; /* answers a dead attempt */
    c->state = TV_ESTABLISHED;
    c->remote_msg_qpn = h->msg_qpn;
    c->remote_rma_qpn = h->rma_qpn;
    return TV_ACT_CONNECT | TV_ACT_FLUSH | (h->kind == TV_HS_REPLY ? 0 : TV_ACT_SEND_REPLY);
}

void tv_conn_reset(tv_conn *c) { memset(c, 0, sizeof *c); }

uint32_t tv_random_psn(void)
{
    uint32_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        v = (uint32_t)(ts.tv_nsec * 2654435761u) ^ (uint32_t)ts.tv_sec;
    }
    return v & 0xffffffu;
}
