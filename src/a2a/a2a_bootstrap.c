/*
 * What the ranks exchange through the caller's all-gather at connect
 * (docs/a2a-internode.md, "Bootstrap"): the configuration (every rank must agree), the
 * node identity (ranks the configuration puts on one node must run on one host: the
 * NVLink exchange would otherwise wait for peers that are not there), the Unix-socket
 * rendezvous name (rank 0's), and for RDMA peers the engine's main address and the
 * rblock descriptor. A second, small all-gather at the end tells every rank whether
 * every other rank connected, so no rank runs a kernel against a peer that gave up.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "a2a_internal.h"

#define BOOT_MAGIC 0x54413242u /* "TA2B" */
#define BOOT_VERSION 1u

typedef struct boot_rec {
    uint32_t magic, version;
    int32_t rank, world, rpn, dp;
    uint64_t layout;
    uint64_t node_id;
    int32_t status; /* 0, or why this rank cannot go on (its RDMA buffers failed) */
    char why[200];
    char host[64];
    char rdv[88];
    uint32_t addr_len, desc_len;
    uint8_t addr[TE_ADDR_ENCODED_MAX];
    uint8_t desc[TE_MR_DESC_ENCODED_MAX];
} boot_rec;

typedef struct done_rec {
    int32_t rank, rc;
    char msg[248];
} done_rec;

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Host name and boot id: two processes of one host (one boot) agree, others do not. */
static uint64_t node_identity(char *host, size_t cap)
{
    if (gethostname(host, cap) != 0) snprintf(host, cap, "?");
    host[cap - 1] = 0;
    char boot[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        if (!fgets(boot, sizeof boot, f)) boot[0] = 0;
        fclose(f);
    }
    uint64_t h = 0xcbf29ce484222325ull;
    h = fnv_bytes(h, host, strlen(host));
    return fnv_bytes(h, boot, strlen(boot));
}

static void draw_rendezvous(char *out, size_t cap)
{
    unsigned char r[12];
    if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40);
        for (size_t i = 0; i < sizeof r; i++) r[i] = (unsigned char)(v >> (8 * (i % 8))) ^ (unsigned char)i;
    }
    size_t o = 0;
    o += (size_t)snprintf(out, cap, "a2a-");
    for (size_t i = 0; i < sizeof r && o + 2 < cap; i++) o += (size_t)snprintf(out + o, cap - o, "%02x", r[i]);
}

static int gather(a2a_ctx *c, const void *in, void *out, size_t len, const char *what)
{
    int rc = c->cfg.allgather(c->cfg.allgather_ctx, in, out, len);
    if (rc)
        return tn_err(rc < 0 ? rc : -EIO, "a2a_connect: the allgather callback failed (%d) while "
                                          "exchanging %s",
                      rc, what);
    return 0;
}

int a2a_boot_exchange(a2a_ctx *c, int status, te_addr *addr, te_mr_desc *desc, int *gather_failed)
{
    const a2a_topo *t = &c->t;
    boot_rec me;
    memset(&me, 0, sizeof me);
    me.magic = BOOT_MAGIC;
    me.version = BOOT_VERSION;
    me.rank = t->rank;
    me.world = t->world;
    me.rpn = t->rpn;
    me.dp = t->dp;
    me.layout = c->layout_hash;
    me.node_id = node_identity(me.host, sizeof me.host);
    if (c->cfg.rendezvous) snprintf(me.rdv, sizeof me.rdv, "%s", c->cfg.rendezvous);
    else if (t->rank == 0) draw_rendezvous(me.rdv, sizeof me.rdv);
    int rc = 0;
    me.status = status;
    if (status) snprintf(me.why, sizeof me.why, "%s", te_last_error());
    if (!status && c->rdma_kind != A2A_KIND_NONE) {
        te_addr a;
        size_t n = 0;
        rc = te_main_address(c->cfg.engine, &a);
        if (!rc) rc = te_addr_encode(&a, me.addr, sizeof me.addr, &n);
        me.addr_len = (uint32_t)n;
        if (!rc) rc = te_mr_desc_encode(&c->rblock_desc, me.desc, sizeof me.desc, &n);
        me.desc_len = (uint32_t)n;
        if (rc) {
            me.status = rc;
            snprintf(me.why, sizeof me.why, "engine address / rblock descriptor: %s", te_last_error());
        }
    }
    boot_rec *all = calloc((size_t)t->world, sizeof *all);
    if (!all) return tn_err(-ENOMEM, "a2a_connect: out of host memory");
    rc = gather(c, &me, all, sizeof me, "configurations");
    *gather_failed = rc != 0;
    if (!rc && me.status) rc = tn_err(me.status, "%s", me.why); /* ours is the story */
    for (int q = 0; q < t->world && !rc; q++) {
        const boot_rec *o = &all[q];
        if (o->magic != BOOT_MAGIC || o->version != BOOT_VERSION || o->rank != q)
            rc = tn_err(-EPROTO, "a2a_connect: the allgather's record %d is not rank %d's a2a record "
                                 "(the callback must return every rank's bytes in rank order)",
                        q, q);
        else if (o->status)
            rc = tn_err(-ECONNABORTED, "a2a_connect: rank %d cannot connect (%s): %.200s", q,
                        a2a_strerror(o->status), o->why);
        else if (o->world != t->world || o->rpn != t->rpn || o->dp != t->dp)
            rc = tn_err(-EPROTO, "a2a_connect: rank %d has world_size %d, ranks_per_node %d, dp_size "
                                 "%d; rank %d has %d, %d, %d",
                        q, o->world, o->rpn, o->dp, t->rank, t->world, t->rpn, t->dp);
        else if (o->layout != me.layout)
            rc = tn_err(-EPROTO, "a2a_connect: rank %d has a different configuration (tokens, "
                                 "experts, hidden size, dtypes, padding or imm_base differ)", q);
        else if (q / t->rpn == t->node && o->node_id != me.node_id)
            rc = tn_err(-EPROTO, "a2a_connect: ranks_per_node %d puts ranks %d and %d on node %d, but "
                                 "they run on different hosts (%s, %s): check ranks_per_node and "
                                 "that ranks are numbered node by node",
                        t->rpn, q, t->rank, t->node, o->host, me.host);
        else if (c->cfg.rendezvous && q / t->rpn == t->node && strcmp(o->rdv, me.rdv) != 0)
            rc = tn_err(-EPROTO, "a2a_connect: rank %d's rendezvous '%s' differs from rank %d's '%s'",
                        q, o->rdv, t->rank, me.rdv);
    }
    if (!rc && !c->cfg.rendezvous) {
        if (!all[0].rdv[0] || strlen(all[0].rdv) > 80)
            rc = tn_err(-EPROTO, "a2a_connect: rank 0 sent no rendezvous name");
        else snprintf(c->rdv, sizeof c->rdv, "%s", all[0].rdv);
    }
    for (int q = 0; q < t->sworld && !rc; q++) {
        if (!a2a_is_rdma(t, q)) continue;
        const boot_rec *o = &all[a2a_phys(t, q)];
        if (!o->addr_len || !o->desc_len)
            rc = tn_err(-EPROTO, "a2a_connect: rank %d sent no RDMA address although rank %d is on "
                                 "another node", a2a_phys(t, q), t->rank);
        else if (te_addr_decode(o->addr, o->addr_len, &addr[q]) ||
                 te_mr_desc_decode(o->desc, o->desc_len, &desc[q]))
            rc = tn_err(-EPROTO, "a2a_connect: rank %d's engine address or buffer descriptor is "
                                 "malformed: %s", a2a_phys(t, q), te_last_error());
    }
    free(all);
    return rc;
}

int a2a_boot_finish(a2a_ctx *c, int rc)
{
    done_rec me;
    memset(&me, 0, sizeof me);
    me.rank = c->t.rank;
    me.rc = rc;
    if (rc) snprintf(me.msg, sizeof me.msg, "%s", te_last_error());
    done_rec *all = calloc((size_t)c->t.world, sizeof *all);
    if (!all) return rc ? rc : tn_err(-ENOMEM, "a2a_connect: out of host memory");
    int grc = gather(c, &me, all, sizeof me, "connect results");
    if (rc) {
        /* our own failure is the story; keep its message */
        tn_err(rc, "%s", me.msg);
    } else if (grc) {
        rc = grc;
    } else {
        for (int q = 0; q < c->t.world; q++)
            if (all[q].rc) {
                all[q].msg[sizeof all[q].msg - 1] = 0;
                rc = tn_err(-ECONNABORTED, "a2a_connect: rank %d failed to connect (%s): %s", q,
                            a2a_strerror(all[q].rc), all[q].msg);
                break;
            }
    }
    free(all);
    return rc;
}
