/* Pure logic of the ibverbs backend (src/transport/verbs.c): wire encodings of the UD
 * address and of the connection handshake, GID selection, queue sizing, wr_id tagging
 * and the per-peer connection state machine. Nothing here calls libibverbs, so all of it
 * is unit-tested on machines without an RDMA device (tests/unit/test_verbs.c).
 * Layouts and rationale: docs/verbs.md. */
#ifndef TENDRIL_TRANSPORT_VERBS_LOGIC_H
#define TENDRIL_TRANSPORT_VERBS_LOGIC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tendril/te.h"

/* ------------------------------------------------------------ UD address ---- */

/* te_addr bytes (transport TE_TRANSPORT_VERBS), 26 bytes, the original's layout:
 * gid[16] | lid u16 LE | ud_qpn u32 LE | qkey u32 LE. */
#define TV_ADDR_LEN 26
#define TV_QKEY 0x11111111u /* the original's qkey; ours travels in the address anyway */

typedef struct tv_ud_addr {
    uint8_t gid[16];
    uint16_t lid;
    uint32_t qpn;
    uint32_t qkey;
} tv_ud_addr;

void tv_addr_encode(const tv_ud_addr *a, te_addr *out);
/* -EINVAL (with tn_err) unless transport is verbs, len is 26 and the qpn fits 24 bits. */
int tv_addr_decode(const te_addr *in, tv_ud_addr *out);

/* ------------------------------------------------------------- handshake ---- */

/* Postcard encoding of {ud{gid[16], lid, qpn, qkey}, lid, gid[16], msg_qpn, msg_psn,
 * rma_qpn, rma_psn}: byte arrays raw, integers as unsigned LEB128 varints, then (our
 * extension, omitted in pplx-compatible mode) one byte: 0 request, 1 reply. */
#define TV_HS_MAX (16 + 3 + 5 + 5 + 3 + 16 + 4 * 5 + 1)
#define TV_GRH_LEN 40 /* UD receives start with the GRH area */

enum tv_hs_kind { TV_HS_LEGACY = -1, TV_HS_REQUEST = 0, TV_HS_REPLY = 1 };

typedef struct tv_handshake {
    tv_ud_addr ud; /* the sender's UD address: where replies go, and its identity */
    uint16_t lid;
    uint8_t gid[16];
    uint32_t msg_qpn, msg_psn, rma_qpn, rma_psn;
    int kind; /* enum tv_hs_kind; TV_HS_LEGACY encodes/decodes without the kind byte */
} tv_handshake;

/* Returns the encoded length, or 0 if cap is too small. */
size_t tv_hs_encode(const tv_handshake *h, uint8_t *buf, size_t cap);
/* Strict: truncated, overlong or non-canonical varints, values out of range (lid > u16,
 * qpn or psn > 24 bits), an unknown kind byte and trailing bytes are -EBADMSG (tn_err). */
int tv_hs_decode(const uint8_t *buf, size_t len, tv_handshake *out);

/* ------------------------------------------------------------ GID choice ---- */

enum tv_gid_type { TV_GID_IB = 0, TV_GID_ROCE_V1 = 1, TV_GID_ROCE_V2 = 2 };

typedef struct tv_gid_entry {
    uint8_t gid[16];
    int type;     /* enum tv_gid_type */
    bool valid;   /* populated (non-zero) */
} tv_gid_entry;

/* Index to use: `override` >= 0 if that entry exists and is valid (else -EINVAL); on
 * Ethernet (roce) the first valid RoCE v2 entry whose GID is IPv4-mapped
 * (::ffff:a.b.c.d), then any valid RoCE v2 entry, then 0; on InfiniBand 0. */
int tv_gid_pick(const tv_gid_entry *g, int n, bool roce, int override);

/* ---------------------------------------------------------------- sizing ---- */

typedef struct tv_caps {
    uint32_t max_cqe, max_qp_wr, max_srq_wr;
} tv_caps;

typedef struct tv_sizing {
    uint32_t send_credits; /* signaled send WRs in flight on the whole NIC; also each RC QP's SQ depth */
    uint32_t msg_srq;      /* user receives */
    uint32_t imm_srq;      /* zero-length receives for WRITE_WITH_IMM */
    uint32_t imm_batch;    /* re-post zero-length receives this many at a time */
    uint32_t ud_sq, ud_rq; /* handshake QP */
    uint32_t cq;           /* = send_credits + msg_srq + imm_srq + ud_sq + ud_rq */
} tv_sizing;

/* Defaults clipped to the device's limits so the CQ can never overrun (B7): every CQE
 * comes from a posted WR, and posted WRs are bounded by the terms of the sum. 0 or
 * -EINVAL (tn_err) when the device is too small for a minimal configuration. */
int tv_size(const tv_caps *caps, tv_sizing *out);

/* ----------------------------------------------------------- wr_id tags ---- */

/* wr_id = kind << 56 | value (value < 2^56: a user-space pointer or an index). Error
 * completions are classified by this, never by wc.opcode (B6). */
enum tv_wr_kind {
    TV_WR_WRITE = 1,
    TV_WR_SEND = 2,
    TV_WR_RECV = 3,
    TV_WR_IMM = 4,     /* zero-length receive on the imm SRQ */
    TV_WR_UD_SEND = 5, /* value = buffer index */
    TV_WR_UD_RECV = 6,
};
#define TV_WR_VALUE_BITS 56
#define TV_WR_VALUE_MASK ((UINT64_C(1) << TV_WR_VALUE_BITS) - 1)

static inline uint64_t tv_wr_tag(int kind, uint64_t value)
{
    return ((uint64_t)kind << TV_WR_VALUE_BITS) | (value & TV_WR_VALUE_MASK);
}
static inline int tv_wr_kind(uint64_t wr_id) { return (int)(wr_id >> TV_WR_VALUE_BITS); }
static inline uint64_t tv_wr_value(uint64_t wr_id) { return wr_id & TV_WR_VALUE_MASK; }
static inline bool tv_wr_fits(uint64_t value) { return (value & ~TV_WR_VALUE_MASK) == 0; }

/* ------------------------------------------------------ connection state ---- */

enum tv_conn_state { TV_IDLE = 0, TV_CONNECTING, TV_ESTABLISHED };

typedef struct tv_conn {
    int state;
    uint64_t next_tx_ns;  /* next handshake (re)transmission */
    uint64_t deadline_ns; /* give up connecting after this */
    uint64_t backoff_ns;
    uint32_t tries;
    uint32_t remote_msg_qpn, remote_rma_qpn; /* valid once established */
} tv_conn;

typedef struct tv_conn_timing {
    uint64_t first_retry_ns, max_retry_ns, timeout_ns;
} tv_conn_timing;

/* Actions the caller performs after a state-machine step (bit set). */
enum tv_conn_action {
    TV_ACT_SEND_REQUEST = 1 << 0, /* send our handshake (request) */
    TV_ACT_SEND_REPLY = 1 << 1,   /* send our handshake (reply) */
    TV_ACT_CONNECT = 1 << 2,      /* create/move QPs to RTS with the peer's numbers */
    TV_ACT_FLUSH = 1 << 3,        /* post the operations queued while connecting */
    TV_ACT_FAIL = 1 << 4,         /* complete queued ops with an error, back to IDLE */
    TV_ACT_IGNORE = 1 << 5,       /* stale handshake: log and drop */
    TV_ACT_RESTART = 1 << 6,      /* the peer reconnects with new QPs: drop the old
                                     connection (tv_conn_reset), then handle it again */
};

/* A local operation needs the connection: IDLE starts connecting (returns SEND_REQUEST
 * now); other states return 0. */
int tv_conn_start(tv_conn *c, const tv_conn_timing *t, uint64_t now);
/* Time passes: while CONNECTING, SEND_REQUEST when a retransmission is due (exponential
 * back-off up to max_retry_ns), FAIL once the deadline passed (state becomes IDLE). */
int tv_conn_tick(tv_conn *c, const tv_conn_timing *t, uint64_t now);
/* The peer's handshake arrived. IDLE or CONNECTING: CONNECT|FLUSH (and SEND_REPLY for a
 * request or a legacy handshake), IGNORE for a reply while IDLE (it answers an attempt
 * that already failed); ESTABLISHED: SEND_REPLY for a request with the same QP numbers
 * (our reply was lost), nothing for a duplicate reply or legacy handshake; with other QP
 * numbers RESTART for a request or legacy handshake (the peer dropped the connection and
 * builds a new one), IGNORE for a reply. */
int tv_conn_on_handshake(tv_conn *c, const tv_handshake *h);
/* The connection broke (error completion on its QPs): back to IDLE. */
void tv_conn_reset(tv_conn *c);

/* Random 24-bit PSN (getrandom, falling back to a clock mix). */
uint32_t tv_random_psn(void);

#endif
