/* Unit tests of the ibverbs backend's pure logic (src/transport/verbs_logic.c): address
 * and handshake encodings, GID choice, queue sizing, wr_id tags, the connection state
 * machine; and that an engine asked for provider "verbs" on a machine without an RDMA
 * device fails cleanly. No RDMA device is needed. Builds without libibverbs skip (77). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tendril/te.h"

#ifdef TENDRIL_HAVE_VERBS
#include "transport/verbs/verbs.h"
#include "transport/verbs/verbs_logic.h"

static tv_handshake sample_hs(int kind)
{
    tv_handshake h;
    memset(&h, 0, sizeof h);
    for (int k = 0; k < 16; k++) {
        h.ud.gid[k] = (uint8_t)(0xf0 + k);
        h.gid[k] = (uint8_t)(0xf0 + k);
    }
    h.ud.lid = 0x1234;
    h.ud.qpn = 0xabcdef;
    h.ud.qkey = TV_QKEY;
    h.lid = 0x1234;
    h.msg_qpn = 0x111;
    h.msg_psn = 123;
    h.rma_qpn = 0xffffff;
    h.rma_psn = 456;
    h.kind = kind;
    return h;
}

static void test_addr_roundtrip(void **state)
{
    (void)state;
    tv_ud_addr a = {.lid = 0xbeef, .qpn = 0x00a1b2, .qkey = 0x11111111};
    for (int k = 0; k < 16; k++) a.gid[k] = (uint8_t)k;
    te_addr t;
    tv_addr_encode(&a, &t);
    assert_int_equal(t.transport, TE_TRANSPORT_VERBS);
    assert_int_equal(t.len, 26);
    /* layout: gid | lid LE | qpn LE | qkey LE */
    assert_int_equal(t.bytes[15], 15);
    assert_int_equal(t.bytes[16], 0xef);
    assert_int_equal(t.bytes[17], 0xbe);
    assert_int_equal(t.bytes[18], 0xb2);
    assert_int_equal(t.bytes[19], 0xa1);
    assert_int_equal(t.bytes[21], 0);
    assert_int_equal(t.bytes[22], 0x11);
    tv_ud_addr b;
    assert_int_equal(tv_addr_decode(&t, &b), 0);
    assert_memory_equal(&a.gid, &b.gid, 16);
    assert_int_equal(b.lid, a.lid);
    assert_int_equal(b.qpn, a.qpn);
    assert_int_equal(b.qkey, a.qkey);
    /* and through the public text form */
    char text[TE_ADDR_ENCODED_MAX * 2 + 8];
    te_addr parsed;
    assert_int_equal(te_addr_format(&t, text, sizeof text), 0);
    assert_int_equal(te_addr_parse(text, &parsed), 0);
    assert_true(te_addr_equal(&t, &parsed));
}

static void test_addr_rejects(void **state)
{
    (void)state;
    tv_ud_addr a = {.lid = 1, .qpn = 7, .qkey = 1};
    te_addr t, bad;
    tv_ud_addr out;
    tv_addr_encode(&a, &t);
    bad = t;
    bad.transport = TE_TRANSPORT_FABRIC;
    assert_int_equal(tv_addr_decode(&bad, &out), -EINVAL);
    bad = t;
    bad.len = 25;
    assert_int_equal(tv_addr_decode(&bad, &out), -EINVAL);
    bad = t;
    bad.bytes[21] = 1; /* qpn above 24 bits */
    assert_int_equal(tv_addr_decode(&bad, &out), -EINVAL);
    bad = t;
    memset(&bad.bytes[18], 0, 4); /* qpn 0 */
    assert_int_equal(tv_addr_decode(&bad, &out), -EINVAL);
}

static void test_hs_roundtrip(void **state)
{
    (void)state;
    int kinds[3] = {TV_HS_LEGACY, TV_HS_REQUEST, TV_HS_REPLY};
    for (int k = 0; k < 3; k++) {
        tv_handshake h = sample_hs(kinds[k]), d;
        uint8_t buf[TV_HS_MAX];
        size_t len = tv_hs_encode(&h, buf, sizeof buf);
        assert_true(len > 0 && len <= TV_HS_MAX);
        assert_true(TV_GRH_LEN + len <= 128);
        assert_int_equal(tv_hs_decode(buf, len, &d), 0);
        assert_memory_equal(&h.ud.gid, &d.ud.gid, 16);
        assert_memory_equal(&h.gid, &d.gid, 16);
        assert_int_equal(d.ud.lid, h.ud.lid);
        assert_int_equal(d.ud.qpn, h.ud.qpn);
        assert_int_equal(d.ud.qkey, h.ud.qkey);
        assert_int_equal(d.lid, h.lid);
        assert_int_equal(d.msg_qpn, h.msg_qpn);
        assert_int_equal(d.msg_psn, h.msg_psn);
        assert_int_equal(d.rma_qpn, h.rma_qpn);
        assert_int_equal(d.rma_psn, h.rma_psn);
        assert_int_equal(d.kind, h.kind);
        /* every truncation is rejected, never read past the end */
        for (size_t cut = 0; cut < len; cut++) {
            if (kinds[k] != TV_HS_LEGACY && cut == len - 1) continue; /* = the legacy form */
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, buf, cut);
            assert_int_equal(tv_hs_decode(copy, cut, &d), -EBADMSG);
            free(copy);
        }
        assert_int_equal(tv_hs_encode(&h, buf, len - 1), 0); /* no room */
    }
}

static void test_hs_legacy_bytes(void **state)
{
    (void)state;
    /* The original's postcard layout: gid raw, varints; PSNs 123 and 456 fit one byte
     * and two bytes respectively. */
    tv_handshake h = sample_hs(TV_HS_LEGACY);
    uint8_t buf[TV_HS_MAX];
    size_t len = tv_hs_encode(&h, buf, sizeof buf);
    /* 16 + lid(2: 0x1234) + qpn(4: 0xabcdef) + qkey(5) + lid(2) + 16 + msg_qpn(2) +
     * psn 123 (1) + rma_qpn(4: 0xffffff) + psn 456 (2) */
    assert_int_equal(len, 16 + 2 + 4 + 5 + 2 + 16 + 2 + 1 + 4 + 2);
    assert_int_equal(buf[16], 0xb4); /* 0x1234 = 0b10_0100011_0110100 -> b4 24 */
    assert_int_equal(buf[17], 0x24);
    assert_int_equal(buf[len - 3], 0x07); /* ff ff ff 07 = 0xffffff */
    assert_int_equal(buf[len - 2], 0xc8); /* 456 = c8 03 */
    assert_int_equal(buf[len - 1], 0x03);
}

static void test_hs_rejects(void **state)
{
    (void)state;
    tv_handshake h = sample_hs(TV_HS_REQUEST), d;
    uint8_t buf[TV_HS_MAX + 4];
    size_t len = tv_hs_encode(&h, buf, sizeof buf);
    uint8_t b2[TV_HS_MAX + 4];
    /* unknown kind byte */
    memcpy(b2, buf, len);
    b2[len - 1] = 7;
    assert_int_equal(tv_hs_decode(b2, len, &d), -EBADMSG);
    /* trailing bytes */
    memcpy(b2, buf, len);
    b2[len] = 0;
    assert_int_equal(tv_hs_decode(b2, len + 1, &d), -EBADMSG);
    /* non-canonical varint in ud.lid: 0x34|0x80, 0x24 -> 0xb4 0xa4 0x00 */
    memcpy(b2, buf, 16);
    b2[16] = 0xb4;
    b2[17] = 0xa4;
    b2[18] = 0x00;
    memcpy(b2 + 19, buf + 18, len - 18);
    assert_int_equal(tv_hs_decode(b2, len + 1, &d), -EBADMSG);
    /* lid out of u16 range: 0x10000 = 80 80 04 */
    memcpy(b2, buf, 16);
    b2[16] = 0x80;
    b2[17] = 0x80;
    b2[18] = 0x04;
    memcpy(b2 + 19, buf + 18, len - 18);
    assert_int_equal(tv_hs_decode(b2, len + 1, &d), -EBADMSG);
    /* a PSN above 24 bits */
    tv_handshake big = h;
    big.msg_psn = 0x1000000;
    size_t l2 = tv_hs_encode(&big, b2, sizeof b2);
    assert_true(l2 > 0);
    assert_int_equal(tv_hs_decode(b2, l2, &d), -EBADMSG);
    /* QP number 0 */
    big = h;
    big.rma_qpn = 0;
    l2 = tv_hs_encode(&big, b2, sizeof b2);
    assert_int_equal(tv_hs_decode(b2, l2, &d), -EBADMSG);
    /* random garbage never crashes and is mostly rejected */
    uint64_t s = 88172645463325252ull;
    for (int it = 0; it < 20000; it++) {
        size_t n = (size_t)(it % (TV_HS_MAX + 3));
        for (size_t k = 0; k < n; k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            b2[k] = (uint8_t)s;
        }
        int r = tv_hs_decode(b2, n, &d);
        assert_true(r == 0 || r == -EBADMSG);
    }
}

static tv_gid_entry gid_entry(int type, bool v4, bool valid)
{
    tv_gid_entry e;
    memset(&e, 0, sizeof e);
    e.type = type;
    e.valid = valid;
    if (v4) {
        e.gid[10] = 0xff;
        e.gid[11] = 0xff;
        e.gid[12] = 10;
        e.gid[15] = 1;
    } else {
        e.gid[0] = 0xfe;
        e.gid[1] = 0x80;
        e.gid[15] = 2;
    }
    return e;
}

static void test_gid_pick(void **state)
{
    (void)state;
    tv_gid_entry t[6] = {
        gid_entry(TV_GID_ROCE_V1, false, true), gid_entry(TV_GID_ROCE_V2, false, true),
        gid_entry(TV_GID_ROCE_V1, true, true),  gid_entry(TV_GID_ROCE_V2, true, false),
        gid_entry(TV_GID_ROCE_V2, true, true),  gid_entry(TV_GID_IB, false, true),
    };
    assert_int_equal(tv_gid_pick(t, 6, true, -1), 4);  /* v2 + IPv4-mapped, valid */
    assert_int_equal(tv_gid_pick(t, 4, true, -1), 1);  /* v2 link-local */
    assert_int_equal(tv_gid_pick(t, 1, true, -1), 0);  /* no v2: 0 */
    assert_int_equal(tv_gid_pick(t, 6, false, -1), 0); /* InfiniBand: 0 */
    assert_int_equal(tv_gid_pick(t, 6, true, 2), 2);   /* override */
    assert_int_equal(tv_gid_pick(t, 6, true, 3), -EINVAL); /* invalid entry */
    assert_int_equal(tv_gid_pick(t, 6, true, 9), -EINVAL); /* no such entry */
    assert_int_equal(tv_gid_pick(t, 0, true, -1), 0);
}

static void check_sizing(const tv_caps *c)
{
    tv_sizing s;
    assert_int_equal(tv_size(c, &s), 0);
    assert_int_equal(s.cq, s.send_credits + s.msg_srq + s.imm_srq + s.ud_sq + s.ud_rq);
    assert_true(s.cq <= c->max_cqe);
    assert_true(s.send_credits <= c->max_qp_wr);
    assert_true(s.msg_srq <= c->max_srq_wr && s.imm_srq <= c->max_srq_wr);
    assert_true(s.imm_batch >= 1 && s.imm_batch <= s.imm_srq / 2);
}

static void test_sizing(void **state)
{
    (void)state;
    tv_caps cx7 = {.max_cqe = 4194303, .max_qp_wr = 32768, .max_srq_wr = 32767};
    tv_sizing s;
    assert_int_equal(tv_size(&cx7, &s), 0);
    assert_int_equal(s.send_credits, 2048);
    assert_int_equal(s.imm_srq, 8192); /* deep: B8 */
    assert_int_equal(s.cq, 2048 + 1024 + 8192 + 64 + 64);
    check_sizing(&cx7);
    tv_caps small_cq = {.max_cqe = 4096, .max_qp_wr = 32768, .max_srq_wr = 32767};
    check_sizing(&small_cq);
    tv_caps small_q = {.max_cqe = 65536, .max_qp_wr = 256, .max_srq_wr = 512};
    check_sizing(&small_q);
    tv_caps tiny = {.max_cqe = 50, .max_qp_wr = 16, .max_srq_wr = 16};
    assert_int_equal(tv_size(&tiny, &s), -EINVAL);
    tv_caps tinyq = {.max_cqe = 1 << 20, .max_qp_wr = 8, .max_srq_wr = 1 << 15};
    assert_int_equal(tv_size(&tinyq, &s), -EINVAL);
}

static void test_wr_tags(void **state)
{
    (void)state;
    int value_ok = 0;
    uint64_t vals[] = {0, 1, 0x7ffff7a3c010ull, 0x7ffff7a3c011ull /* engine's tagged ctx */,
                       TV_WR_VALUE_MASK};
    for (int kind = TV_WR_WRITE; kind <= TV_WR_UD_RECV; kind++)
        for (size_t k = 0; k < sizeof vals / sizeof *vals; k++) {
            uint64_t id = tv_wr_tag(kind, vals[k]);
            assert_int_equal(tv_wr_kind(id), kind);
            assert_int_equal(tv_wr_value(id), vals[k]);
            value_ok++;
        }
    assert_int_equal(value_ok, 6 * 5);
    assert_true(tv_wr_fits((uintptr_t)&value_ok));
    assert_false(tv_wr_fits(UINT64_C(1) << 56));
}

static const tv_conn_timing T = {.first_retry_ns = 100, .max_retry_ns = 400, .timeout_ns = 2000};

static void test_conn_retry_and_timeout(void **state)
{
    (void)state;
    tv_conn c;
    tv_conn_reset(&c);
    assert_int_equal(tv_conn_start(&c, &T, 0), TV_ACT_SEND_REQUEST);
    assert_int_equal(c.state, TV_CONNECTING);
    assert_int_equal(tv_conn_start(&c, &T, 1), 0); /* already connecting */
    assert_int_equal(tv_conn_tick(&c, &T, 50), 0);
    assert_int_equal(tv_conn_tick(&c, &T, 100), TV_ACT_SEND_REQUEST); /* retransmit (B10) */
    assert_int_equal(tv_conn_tick(&c, &T, 250), 0);                   /* back-off 200 */
    assert_int_equal(tv_conn_tick(&c, &T, 300), TV_ACT_SEND_REQUEST);
    assert_int_equal(tv_conn_tick(&c, &T, 700), TV_ACT_SEND_REQUEST); /* back-off capped 400 */
    assert_int_equal(tv_conn_tick(&c, &T, 1100), TV_ACT_SEND_REQUEST);
    assert_int_equal(c.tries, 5);
    assert_int_equal(tv_conn_tick(&c, &T, 2000), TV_ACT_FAIL); /* deadline: an error, no panic */
    assert_int_equal(c.state, TV_IDLE);
    assert_int_equal(tv_conn_tick(&c, &T, 5000), 0);
    /* a late reply to the dead attempt is ignored */
    tv_handshake rep = sample_hs(TV_HS_REPLY);
    assert_int_equal(tv_conn_on_handshake(&c, &rep), TV_ACT_IGNORE);
    /* and the next use starts over */
    assert_int_equal(tv_conn_start(&c, &T, 6000), TV_ACT_SEND_REQUEST);
}

static void test_conn_initiator(void **state)
{
    (void)state;
    tv_conn c;
    tv_conn_reset(&c);
    tv_conn_start(&c, &T, 0);
    tv_handshake rep = sample_hs(TV_HS_REPLY);
    assert_int_equal(tv_conn_on_handshake(&c, &rep), TV_ACT_CONNECT | TV_ACT_FLUSH);
    assert_int_equal(c.state, TV_ESTABLISHED);
    assert_int_equal(c.remote_msg_qpn, rep.msg_qpn);
    assert_int_equal(tv_conn_tick(&c, &T, 100000), 0); /* no retransmits once established */
    assert_int_equal(tv_conn_on_handshake(&c, &rep), 0); /* duplicate reply: no reply loop */
    tv_handshake other = rep;
    other.msg_qpn++;
    assert_int_equal(tv_conn_on_handshake(&c, &other), TV_ACT_IGNORE); /* stale reply */
    other.kind = TV_HS_REQUEST; /* the peer dropped the connection and builds a new one */
    assert_int_equal(tv_conn_on_handshake(&c, &other), TV_ACT_RESTART);
    assert_int_equal(c.state, TV_ESTABLISHED); /* the caller resets, then asks again */
    tv_conn_reset(&c);
    assert_int_equal(tv_conn_on_handshake(&c, &other), TV_ACT_CONNECT | TV_ACT_FLUSH | TV_ACT_SEND_REPLY);
    assert_int_equal(c.remote_msg_qpn, other.msg_qpn);
}

static void test_conn_responder(void **state)
{
    (void)state;
    tv_conn c;
    tv_conn_reset(&c);
    tv_handshake req = sample_hs(TV_HS_REQUEST);
    assert_int_equal(tv_conn_on_handshake(&c, &req), TV_ACT_CONNECT | TV_ACT_FLUSH | TV_ACT_SEND_REPLY);
    /* the initiator retransmits (our reply was lost): reply again, no reconnect */
    assert_int_equal(tv_conn_on_handshake(&c, &req), TV_ACT_SEND_REPLY);
    /* a legacy (pplx) peer: reply only when unknown, as the original */
    tv_conn l;
    tv_conn_reset(&l);
    tv_handshake leg = sample_hs(TV_HS_LEGACY);
    assert_int_equal(tv_conn_on_handshake(&l, &leg), TV_ACT_CONNECT | TV_ACT_FLUSH | TV_ACT_SEND_REPLY);
    assert_int_equal(tv_conn_on_handshake(&l, &leg), 0);
    /* simultaneous connect: both sides connecting, each receives the other's request */
    tv_conn a, b;
    tv_conn_reset(&a);
    tv_conn_reset(&b);
    tv_conn_start(&a, &T, 0);
    tv_conn_start(&b, &T, 0);
    assert_int_equal(tv_conn_on_handshake(&a, &req), TV_ACT_CONNECT | TV_ACT_FLUSH | TV_ACT_SEND_REPLY);
    assert_int_equal(tv_conn_on_handshake(&b, &req), TV_ACT_CONNECT | TV_ACT_FLUSH | TV_ACT_SEND_REPLY);
    tv_handshake rep = sample_hs(TV_HS_REPLY);
    assert_int_equal(tv_conn_on_handshake(&a, &rep), 0); /* the replies end it */
    tv_conn_reset(&a);
    assert_int_equal(a.state, TV_IDLE);
}

static void test_psn_random(void **state)
{
    (void)state;
    uint32_t a = tv_random_psn(), b = tv_random_psn(), c = tv_random_psn();
    assert_true(a <= 0xffffff && b <= 0xffffff && c <= 0xffffff);
    assert_false(a == b && b == c);
}

static void test_engine_without_device(void **state)
{
    (void)state;
    char names[4][64];
    int ndev = tp_verbs_list_devices(names, 4);
    if (ndev > 0) {
        print_message("an RDMA device is present (%s): the no-device check does not apply\n", names[0]);
        return;
    }
    te_config cfg;
    te_config_init(&cfg);
    cfg.provider = "verbs";
    te_engine *e = (te_engine *)0x1;
    int r = te_engine_create(&cfg, &e);
    assert_int_equal(r, -ENODEV);
    assert_null(e);
    assert_non_null(strstr(te_last_error(), "RDMA device"));
    /* a named NIC: the message names it */
    cfg.groups[0].n_nics = 1;
    cfg.groups[0].nics[0] = "mlx5_0";
    cfg.n_groups = 1;
    e = (te_engine *)0x1;
    r = te_engine_create(&cfg, &e);
    assert_int_equal(r, -ENODEV);
    assert_null(e);
    assert_non_null(strstr(te_last_error(), "mlx5_0"));
    /* auto is unchanged without a device: never verbs */
    te_config_init(&cfg);
    if (te_engine_create(&cfg, &e) == 0) {
        assert_string_not_equal(te_provider_name(e), "verbs");
        te_engine_destroy(e);
    }
}

int main(void)
{
    if (getenv("TENDRIL_PROVIDER")) unsetenv("TENDRIL_PROVIDER");
    if (getenv("TENDRIL_NICS")) unsetenv("TENDRIL_NICS");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_addr_roundtrip),
        cmocka_unit_test(test_addr_rejects),
        cmocka_unit_test(test_hs_roundtrip),
        cmocka_unit_test(test_hs_legacy_bytes),
        cmocka_unit_test(test_hs_rejects),
        cmocka_unit_test(test_gid_pick),
        cmocka_unit_test(test_sizing),
        cmocka_unit_test(test_wr_tags),
        cmocka_unit_test(test_conn_retry_and_timeout),
        cmocka_unit_test(test_conn_initiator),
        cmocka_unit_test(test_conn_responder),
        cmocka_unit_test(test_psn_random),
        cmocka_unit_test(test_engine_without_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#else
int main(void)
{
    printf("SKIP: this build has no libibverbs (TENDRIL_HAVE_VERBS unset)\n");
    return 77;
}
#endif
