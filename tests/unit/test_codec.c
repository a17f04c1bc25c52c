/* Unit tests for the address / descriptor codec (src/core/codec.c) and the varints
 * under it (src/core/varint.h). Layouts: docs/wire-format.md. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/varint.h"
#include "tendril/te.h"

/* ------------------------------------------------------------- helpers ---- */

/* Deterministic generator (xorshift64*), so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dull;
}
/* Values of every magnitude: a random value shifted down by a random amount. */
static uint64_t rnd_u64(void) { return rnd() >> (rnd() % 64); }

static void rnd_addr(te_addr *a)
{
    memset(a, 0, sizeof *a);
    a->transport = (rnd() & 1) ? TE_TRANSPORT_FABRIC : TE_TRANSPORT_VERBS;
    a->len = (uint8_t)(1 + rnd() % TE_ADDR_MAX);
    for (unsigned i = 0; i < a->len; i++)
        a->bytes[i] = (uint8_t)rnd();
}

static void rnd_desc(te_mr_desc *d)
{
    memset(d, 0, sizeof *d);
    d->base = rnd_u64();
    d->len = rnd_u64();
    if (d->len > UINT64_MAX - d->base)
        d->len = UINT64_MAX - d->base; /* the largest len that fits: an edge worth hitting */
    d->n_nics = (uint32_t)(1 + rnd() % TE_MAX_NICS);
    for (uint32_t k = 0; k < d->n_nics; k++) {
        rnd_addr(&d->nic[k].addr);
        d->nic[k].rkey = rnd_u64();
    }
}

static void make_addr(te_addr *a, uint8_t transport, const uint8_t *bytes, uint8_t len)
{
    memset(a, 0, sizeof *a);
    a->transport = transport;
    a->len = len;
    memcpy(a->bytes, bytes, len);
}

/* The last error message must mention `needle`. */
static void assert_msg(const char *needle)
{
    const char *m = te_last_error();
    if (!strstr(m, needle))
        fail_msg("te_last_error() = \"%s\" does not mention \"%s\"", m, needle);
}

#define ASSERT_ADDR_BAD(bytes_, needle_)                                                   \
    do {                                                                                   \
        static const uint8_t in_[] = bytes_;                                               \
        te_addr out_;                                                                      \
        assert_int_equal(te_addr_decode(in_, sizeof in_, &out_), -EBADMSG);                \
        assert_msg(needle_);                                                               \
    } while (0)

#define ASSERT_DESC_BAD(bytes_, needle_)                                                   \
    do {                                                                                   \
        static const uint8_t in_[] = bytes_;                                               \
        te_mr_desc out_;                                                                   \
        assert_int_equal(te_mr_desc_decode(in_, sizeof in_, &out_), -EBADMSG);             \
        assert_msg(needle_);                                                               \
    } while (0)
#define B(...) { __VA_ARGS__ }

/* -------------------------------------------------------------- varint ---- */

static void test_varint_vectors(void **state)
{
    static const struct {
        uint64_t v;
        uint8_t n;
        uint8_t b[10];
    } vec[] = {
        { 0, 1, { 0x00 } },
        { 1, 1, { 0x01 } },
        { 127, 1, { 0x7f } },
        { 128, 2, { 0x80, 0x01 } },
        { 300, 2, { 0xac, 0x02 } },
        { 16383, 2, { 0xff, 0x7f } },
        { 16384, 3, { 0x80, 0x80, 0x01 } },
        { 0xffffffffull, 5, { 0xff, 0xff, 0xff, 0xff, 0x0f } },
        { 1ull << 63, 10, { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01 } },
        { UINT64_MAX, 10, { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 } },
    };
    for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
        uint8_t buf[TN_VARINT_MAX];
        assert_int_equal(tn_varint_len(vec[i].v), vec[i].n);
        assert_int_equal(tn_varint_encode(vec[i].v, buf), vec[i].n);
        assert_memory_equal(buf, vec[i].b, vec[i].n);
        uint64_t v = 12345;
        assert_int_equal(tn_varint_decode(vec[i].b, vec[i].n, &v), vec[i].n);
        assert_true(v == vec[i].v);
        /* Every proper prefix is truncated. */
        for (size_t k = 0; k < vec[i].n; k++)
            assert_int_equal(tn_varint_decode(vec[i].b, k, &v), TN_VARINT_TRUNCATED);
    }
}

static void test_varint_rejects(void **state)
{
    uint64_t v = 7;
    static const uint8_t eleven[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0x01 };
    static const uint8_t tenth2[] = { 0xff, 0xff, 0xff, 0xff, 0xff,
                                      0xff, 0xff, 0xff, 0xff, 0x02 };
    static const uint8_t tenth7f[] = { 0x80, 0x80, 0x80, 0x80, 0x80,
                                       0x80, 0x80, 0x80, 0x80, 0x7f };
    static const uint8_t tenth0[] = { 0x80, 0x80, 0x80, 0x80, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x00 };
    static const uint8_t zero2[] = { 0x80, 0x00 };
    static const uint8_t one3[] = { 0x81, 0x80, 0x00 };
    assert_int_equal(tn_varint_decode(eleven, sizeof eleven, &v), TN_VARINT_OVERFLOW);
    assert_int_equal(tn_varint_decode(tenth2, sizeof tenth2, &v), TN_VARINT_OVERFLOW);
    assert_int_equal(tn_varint_decode(tenth7f, sizeof tenth7f, &v), TN_VARINT_OVERFLOW);
    assert_int_equal(tn_varint_decode(tenth0, sizeof tenth0, &v), TN_VARINT_NONCANONICAL);
    assert_int_equal(tn_varint_decode(zero2, sizeof zero2, &v), TN_VARINT_NONCANONICAL);
    assert_int_equal(tn_varint_decode(one3, sizeof one3, &v), TN_VARINT_NONCANONICAL);
    assert_int_equal(tn_varint_decode(zero2, 0, &v), TN_VARINT_TRUNCATED);
    assert_true(v == 7); /* untouched on failure */
    /* Trailing data after a complete varint is not the varint's business. */
    static const uint8_t more[] = { 0x05, 0xff };
    assert_int_equal(tn_varint_decode(more, sizeof more, &v), 1);
    assert_true(v == 5);
}

static void test_varint_random(void **state)
{
    for (int i = 0; i < 100000; i++) {
        uint64_t x = rnd_u64(), y = 0;
        uint8_t buf[TN_VARINT_MAX + 1];
        size_t n = tn_varint_encode(x, buf);
        assert_int_equal(n, tn_varint_len(x));
        assert_int_equal(tn_varint_decode(buf, n, &y), (int)n);
        assert_true(x == y);
    }
}

/* ------------------------------------------------------ exact layouts ---- */

static void test_addr_layout(void **state)
{
    static const uint8_t raw[] = { 0xde, 0xad, 0xbe };
    static const uint8_t want[] = { 0x01, 0x01, 0x03, 0xde, 0xad, 0xbe };
    te_addr a, b;
    make_addr(&a, TE_TRANSPORT_FABRIC, raw, sizeof raw);

    uint8_t buf[16];
    size_t n = 0;
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), 0);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, sizeof want);

    char text[TE_ADDR_TEXT_MAX];
    assert_int_equal(te_addr_format(&a, text, sizeof text), 0);
    assert_string_equal(text, "010103deadbe");

    assert_int_equal(te_addr_decode(want, sizeof want, &b), 0);
    assert_true(te_addr_equal(&a, &b));
    assert_memory_equal(&a, &b, sizeof a); /* unused bytes zeroed */
    assert_int_equal(te_addr_parse("010103DEADBE", &b), 0);
    assert_true(te_addr_equal(&a, &b));
    assert_int_equal(te_addr_parse("010103DeAdBe", &b), 0);
    assert_true(te_addr_equal(&a, &b));
    assert_string_equal(te_last_error(), "");

    /* A verbs address: transport byte 2. */
    static const uint8_t raw2[] = { 0x00 };
    static const uint8_t want2[] = { 0x01, 0x02, 0x01, 0x00 };
    make_addr(&a, TE_TRANSPORT_VERBS, raw2, sizeof raw2);
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), 0);
    assert_int_equal(n, sizeof want2);
    assert_memory_equal(buf, want2, sizeof want2);
}

static void test_desc_layout(void **state)
{
    static const uint8_t raw0[] = { 0xaa, 0xbb, 0xcc };
    static const uint8_t raw1[] = { 0xff };
    te_mr_desc d, e;
    memset(&d, 0, sizeof d);
    d.base = 4096;
    d.len = 300;
    d.n_nics = 2;
    make_addr(&d.nic[0].addr, TE_TRANSPORT_FABRIC, raw0, sizeof raw0);
    d.nic[0].rkey = 0;
    make_addr(&d.nic[1].addr, TE_TRANSPORT_VERBS, raw1, sizeof raw1);
    d.nic[1].rkey = UINT64_MAX;

    static const uint8_t want[] = {
        0x01,                               /* version */
        0x80, 0x20,                         /* base 4096 */
        0xac, 0x02,                         /* len 300 */
        0x02,                               /* 2 NICs */
        0x01, 0x01, 0x03, 0xaa, 0xbb, 0xcc, /* nic0 address (fabric) */
        0x00,                               /* nic0 rkey 0 */
        0x01, 0x02, 0x01, 0xff,             /* nic1 address (verbs) */
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, /* rkey 2^64-1 */
    };
    uint8_t buf[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, sizeof want);
    assert_int_equal(te_mr_desc_decode(want, sizeof want, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);

    /* Text form: the hex of the same bytes (docs/wire-format.md's example). */
    static const char want_text[] = "018020ac0202010103aabbcc00010201ffffffffffffffffffff01";
    char text[TE_MR_DESC_TEXT_MAX];
    assert_int_equal(te_mr_desc_format(&d, text, sizeof text), 0);
    assert_string_equal(text, want_text);
    memset(&e, 0xee, sizeof e);
    assert_int_equal(te_mr_desc_parse(want_text, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);
    memset(&e, 0xee, sizeof e);
    assert_int_equal(te_mr_desc_parse("018020AC0202010103AABBCC00010201FFFFFFFFFFFFFFFFFFFF01", &e), 0);
    assert_memory_equal(&d, &e, sizeof d);
    /* One byte short: -ENOSPC with an empty string, exact size fits. */
    assert_int_equal(te_mr_desc_format(&d, text, sizeof want_text - 1), -ENOSPC);
    assert_string_equal(text, "");
    assert_msg("TE_MR_DESC_TEXT_MAX");
    assert_int_equal(te_mr_desc_format(&d, text, sizeof want_text), 0);
}

/* ---------------------------------------------------------- round trips ---- */

static void test_addr_roundtrip_random(void **state)
{
    for (int i = 0; i < 20000; i++) {
        te_addr a, b, c;
        rnd_addr(&a);
        uint8_t buf[TE_ADDR_ENCODED_MAX];
        size_t n = 0;
        assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), 0);
        assert_int_equal(n, 3u + a.len);
        assert_int_equal(te_addr_decode(buf, n, &b), 0);
        assert_memory_equal(&a, &b, sizeof a);

        char text[TE_ADDR_TEXT_MAX];
        assert_int_equal(te_addr_format(&a, text, sizeof text), 0);
        assert_int_equal(strlen(text), 2 * n);
        assert_int_equal(te_addr_parse(text, &c), 0);
        assert_memory_equal(&a, &c, sizeof a);
        assert_true(te_addr_equal(&a, &c));
    }
}

static void test_desc_roundtrip_random(void **state)
{
    for (int i = 0; i < 20000; i++) {
        te_mr_desc d, e;
        rnd_desc(&d);
        uint8_t buf[TE_MR_DESC_ENCODED_MAX];
        size_t n = 0;
        assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
        assert_true(n <= TE_MR_DESC_ENCODED_MAX);
        memset(&e, 0xee, sizeof e);
        assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
        assert_memory_equal(&d, &e, sizeof d);
        /* Re-encoding gives the same bytes (one encoding per value). */
        uint8_t buf2[TE_MR_DESC_ENCODED_MAX];
        size_t n2 = 0;
        assert_int_equal(te_mr_desc_encode(&e, buf2, sizeof buf2, &n2), 0);
        assert_int_equal(n, n2);
        assert_memory_equal(buf, buf2, n);

        char text[TE_MR_DESC_TEXT_MAX];
        te_mr_desc f;
        assert_int_equal(te_mr_desc_format(&d, text, sizeof text), 0);
        assert_int_equal(strlen(text), 2 * n);
        memset(&f, 0xee, sizeof f);
        assert_int_equal(te_mr_desc_parse(text, &f), 0);
        assert_memory_equal(&d, &f, sizeof d);
    }
}

/* ----------------------------------------------------------- boundaries ---- */

static void test_addr_boundaries(void **state)
{
    te_addr a, b;
    uint8_t raw[TE_ADDR_MAX];
    for (int i = 0; i < TE_ADDR_MAX; i++)
        raw[i] = (uint8_t)(0xff - i);
    make_addr(&a, TE_TRANSPORT_VERBS, raw, TE_ADDR_MAX);

    uint8_t buf[TE_ADDR_ENCODED_MAX];
    size_t n = 0;
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), 0);
    assert_int_equal(n, TE_ADDR_ENCODED_MAX);
    assert_int_equal(buf[2], 0xff);
    assert_int_equal(te_addr_decode(buf, n, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);

    char text[TE_ADDR_TEXT_MAX];
    assert_int_equal(te_addr_format(&a, text, sizeof text), 0);
    assert_int_equal(strlen(text), TE_ADDR_TEXT_MAX - 1);
    assert_int_equal(te_addr_parse(text, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);

    /* Smallest address: one byte. */
    make_addr(&a, TE_TRANSPORT_FABRIC, raw, 1);
    assert_int_equal(te_addr_encode(&a, buf, 4, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(te_addr_decode(buf, n, &b), 0);
    assert_memory_equal(&a, &b, sizeof a);
}

static void test_desc_boundaries(void **state)
{
    te_mr_desc d, e;
    uint8_t buf[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;

    /* Largest reachable encoding: 4 NICs, 255-byte addresses, 10-byte rkeys, base 2^63
     * (10 bytes) and the largest len that does not overflow (2^63-1, 9 bytes). A 10-byte
     * base and a 10-byte len cannot both fit in u64, so TE_MR_DESC_ENCODED_MAX is one
     * byte above the largest real encoding. */
    memset(&d, 0, sizeof d);
    d.base = 1ull << 63;
    d.len = UINT64_MAX - d.base;
    d.n_nics = TE_MAX_NICS;
    for (int k = 0; k < TE_MAX_NICS; k++) {
        d.nic[k].addr.transport = TE_TRANSPORT_FABRIC;
        d.nic[k].addr.len = TE_ADDR_MAX;
        memset(d.nic[k].addr.bytes, 0x40 + k, TE_ADDR_MAX);
        d.nic[k].rkey = UINT64_MAX - (uint64_t)k;
    }
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    assert_int_equal(n, TE_MR_DESC_ENCODED_MAX - 1);
    assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);

    /* base + len == 2^64 - 1 exactly is fine, in either split. */
    d.base = 0;
    d.len = UINT64_MAX;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);
    d.base = UINT64_MAX;
    d.len = 0;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);

    /* Smallest: 1 NIC, 1-byte address, zeros. */
    memset(&d, 0, sizeof d);
    d.n_nics = 1;
    d.nic[0].addr.transport = TE_TRANSPORT_VERBS;
    d.nic[0].addr.len = 1;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    static const uint8_t want[] = { 0x01, 0x00, 0x00, 0x01, 0x01, 0x02, 0x01, 0x00, 0x00 };
    assert_int_equal(n, sizeof want);
    assert_memory_equal(buf, want, sizeof want);
    assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);
}

/* ------------------------------------------------------------ rejections ---- */

static void test_addr_decode_rejects(void **state)
{
    ASSERT_ADDR_BAD(B(0x00, 0x01, 0x01, 0xaa), "version");
    ASSERT_ADDR_BAD(B(0x02, 0x01, 0x01, 0xaa), "unsupported wire version 2");
    ASSERT_ADDR_BAD(B(0xff, 0x01, 0x01, 0xaa), "version");
    ASSERT_ADDR_BAD(B(0x01, 0x00, 0x01, 0xaa), "unknown transport kind 0");
    ASSERT_ADDR_BAD(B(0x01, 0x03, 0x01, 0xaa), "unknown transport kind 3");
    ASSERT_ADDR_BAD(B(0x01, 0xff, 0x01, 0xaa), "unknown transport kind 255");
    ASSERT_ADDR_BAD(B(0x01, 0x01, 0x00), "length 0");
    ASSERT_ADDR_BAD(B(0x01, 0x01, 0x02, 0xaa), "truncated");
    ASSERT_ADDR_BAD(B(0x01, 0x01, 0x01, 0xaa, 0x00), "trailing");

    /* Every proper prefix of a valid encoding is truncated. */
    static const uint8_t ok[] = { 0x01, 0x01, 0x03, 0xde, 0xad, 0xbe };
    te_addr a;
    memset(&a, 0x5a, sizeof a);
    te_addr before = a;
    for (size_t k = 0; k < sizeof ok; k++) {
        assert_int_equal(te_addr_decode(ok, k, &a), -EBADMSG);
        assert_msg("truncated");
        assert_memory_equal(&a, &before, sizeof a); /* out untouched on failure */
    }
    assert_int_equal(te_addr_decode(NULL, 0, &a), -EBADMSG);
    assert_int_equal(te_addr_decode(NULL, 4, &a), -EINVAL);
    assert_msg("buf");
    assert_int_equal(te_addr_decode(ok, sizeof ok, NULL), -EINVAL);
    assert_msg("out");

    /* A success clears the previous message. */
    assert_int_equal(te_addr_decode(ok, sizeof ok, &a), 0);
    assert_string_equal(te_last_error(), "");
}

static void test_desc_decode_rejects(void **state)
{
    /* Valid reference: 01 | base 00 | len 00 | n 01 | 01 01 01 aa | rkey 05 */
    ASSERT_DESC_BAD(B(0x02, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "version");
    ASSERT_DESC_BAD(B(0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "version");
    /* Overlong / non-canonical / truncated varints in base, len, rkey. */
    ASSERT_DESC_BAD(B(0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
                      0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "base");
    ASSERT_DESC_BAD(B(0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
                      0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "overlong");
    ASSERT_DESC_BAD(B(0x01, 0x80, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05),
                    "non-canonical");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x80, 0x80, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05),
                    "len");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x85), "truncated");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa,
                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x03), "rkey");
    /* base + len overflows u64: base 2^64-1, len 1. */
    ASSERT_DESC_BAD(B(0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01,
                      0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "overflows");
    /* base 2^63, len 2^63. */
    ASSERT_DESC_BAD(B(0x01, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                      0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
                      0x01, 0x01, 0x01, 0x01, 0xaa, 0x05), "overflows");
    /* NIC count 0 and 5. */
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x00), "NIC count 0");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x05, 0x01, 0x01, 0x01, 0xaa, 0x05), "NIC count 5");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0xff), "NIC count 255");
    /* Nested address problems. */
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x02, 0x01, 0x01, 0xaa, 0x05),
                    "nic[0] address version");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x01, 0x07, 0x01, 0xaa, 0x05),
                    "unknown transport kind 7");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, 0x05), "length 0");
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x02, 0x01, 0x01, 0x01, 0xaa, 0x05,
                      0x01, 0x01, 0x05, 0xaa, 0x05), "nic[1] address needs 5 bytes");
    /* Second NIC missing entirely. */
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x02, 0x01, 0x01, 0x01, 0xaa, 0x05), "nic[1]");
    /* Trailing bytes. */
    ASSERT_DESC_BAD(B(0x01, 0x00, 0x00, 0x01, 0x01, 0x01, 0x01, 0xaa, 0x05, 0x00),
                    "1 trailing byte");

    /* Every proper prefix of a valid encoding is rejected and leaves out untouched. */
    te_mr_desc d, e;
    memset(&d, 0, sizeof d);
    d.base = 0x7f0000001000ull;
    d.len = 1u << 21;
    d.n_nics = 3;
    for (int k = 0; k < 3; k++) {
        d.nic[k].addr.transport = TE_TRANSPORT_FABRIC;
        d.nic[k].addr.len = (uint8_t)(10 + k);
        memset(d.nic[k].addr.bytes, k + 1, d.nic[k].addr.len);
        d.nic[k].rkey = 0x123456789ull << k;
    }
    uint8_t buf[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    memset(&e, 0x5a, sizeof e);
    te_mr_desc before = e;
    for (size_t k = 0; k < n; k++) {
        assert_int_equal(te_mr_desc_decode(buf, k, &e), -EBADMSG);
        assert_msg("truncated");
        assert_memory_equal(&e, &before, sizeof e);
    }
    assert_int_equal(te_mr_desc_decode(buf, n, &e), 0);
    assert_memory_equal(&d, &e, sizeof d);

    assert_int_equal(te_mr_desc_decode(NULL, 3, &e), -EINVAL);
    assert_msg("buf");
    assert_int_equal(te_mr_desc_decode(buf, n, NULL), -EINVAL);
    assert_msg("out");
}

static void test_parse_rejects(void **state)
{
    te_addr a;
    assert_int_equal(te_addr_parse("", &a), -EBADMSG);
    assert_msg("empty");
    assert_int_equal(te_addr_parse("010103deadb", &a), -EBADMSG);
    assert_msg("odd");
    assert_int_equal(te_addr_parse("0", &a), -EBADMSG);
    assert_msg("odd");
    assert_int_equal(te_addr_parse("010103deadbg", &a), -EBADMSG);
    assert_msg("'g' at offset 11");
    assert_int_equal(te_addr_parse(" 10103deadbe", &a), -EBADMSG);
    assert_msg("offset 0");
    assert_int_equal(te_addr_parse("010103deadbe\n", &a), -EBADMSG);
    assert_int_equal(te_addr_parse("0x0103deadbe", &a), -EBADMSG);
    assert_msg("'x'");
    assert_int_equal(te_addr_parse("01\xff" "103deadbe", &a), -EBADMSG);
    assert_msg("0xff");
    /* Well-formed hex that te_addr_decode rejects. */
    assert_int_equal(te_addr_parse("020103deadbe", &a), -EBADMSG);
    assert_msg("version");
    assert_int_equal(te_addr_parse("010303deadbe", &a), -EBADMSG);
    assert_msg("transport");
    assert_int_equal(te_addr_parse("010104deadbe", &a), -EBADMSG);
    assert_msg("truncated");
    assert_int_equal(te_addr_parse("010103deadbe00", &a), -EBADMSG);
    assert_msg("trailing");
    assert_int_equal(te_addr_parse("010100", &a), -EBADMSG);
    assert_msg("length 0");
    /* Longer than any encoded address. */
    char big[2 * TE_ADDR_ENCODED_MAX + 3];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(te_addr_parse(big, &a), -EBADMSG);
    assert_msg("longer");

    assert_int_equal(te_addr_parse(NULL, &a), -EINVAL);
    assert_msg("text");
    assert_int_equal(te_addr_parse("010103deadbe", NULL), -EINVAL);
    assert_msg("out");
}

static void test_desc_parse_rejects(void **state)
{
    static const char good[] = "018020ac0202010103aabbcc00010201ffffffffffffffffffff01";
    te_mr_desc d, before;
    memset(&d, 0x5a, sizeof d);
    before = d;
    static const struct {
        const char *text, *needle;
    } bad[] = {
        { "", "empty" },
        { "018020ac0", "odd" },
        { "0x8020ac02", "'x'" },
        { " 18020ac02", "offset 0" },
        { "018020ac0202010103aabbcc00010201ffffffffffffffffffff01\n", "odd" },
        { "018020ac0202010103aabbcc00010201ffffffffffffffffffff0100", "trailing" },
        { "028020ac0202010103aabbcc00010201ffffffffffffffffffff01", "version" },
        { "018020ac0200", "NIC count 0" },
        { "018020ac0201010103aabbcc", "rkey" },
        { "0180", "truncated" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(te_mr_desc_parse(bad[i].text, &d), -EBADMSG);
        assert_msg(bad[i].needle);
        assert_memory_equal(&d, &before, sizeof d); /* untouched */
    }
    char big[2 * TE_MR_DESC_ENCODED_MAX + 3];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(te_mr_desc_parse(big, &d), -EBADMSG);
    assert_msg("longer");
    assert_int_equal(te_mr_desc_parse(NULL, &d), -EINVAL);
    assert_msg("text");
    assert_int_equal(te_mr_desc_parse(good, NULL), -EINVAL);
    assert_msg("out");

    /* format rejects what encode rejects, and a NULL buffer. */
    te_mr_desc z;
    memset(&z, 0, sizeof z);
    char text[TE_MR_DESC_TEXT_MAX] = "x";
    assert_int_equal(te_mr_desc_format(&z, text, sizeof text), -EINVAL);
    assert_msg("n_nics");
    assert_string_equal(text, "");
    assert_int_equal(te_mr_desc_format(&z, NULL, 10), -EINVAL);
    assert_msg("buf");
}

static void test_encode_invalid(void **state)
{
    uint8_t buf[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    char text[TE_ADDR_TEXT_MAX];
    te_addr a;
    static const uint8_t raw[] = { 1, 2 };
    make_addr(&a, TE_TRANSPORT_FABRIC, raw, 2);

    assert_int_equal(te_addr_encode(NULL, buf, sizeof buf, &n), -EINVAL);
    assert_msg("addr is NULL");
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, NULL), -EINVAL);
    assert_msg("out_len");
    assert_int_equal(te_addr_encode(&a, NULL, 8, &n), -EINVAL);
    assert_msg("buf");
    a.transport = 0;
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), -EINVAL);
    assert_msg("transport");
    assert_int_equal(te_addr_format(&a, text, sizeof text), -EINVAL);
    assert_msg("transport");
    a.transport = 3;
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), -EINVAL);
    a.transport = TE_TRANSPORT_VERBS;
    a.len = 0;
    assert_int_equal(te_addr_encode(&a, buf, sizeof buf, &n), -EINVAL);
    assert_msg("len is 0");
    assert_int_equal(te_addr_format(&a, text, sizeof text), -EINVAL);
    a.len = 2;
    assert_int_equal(te_addr_format(NULL, text, sizeof text), -EINVAL);
    assert_msg("addr");
    assert_int_equal(te_addr_format(&a, NULL, 10), -EINVAL);
    assert_msg("buf");

    te_mr_desc d;
    memset(&d, 0, sizeof d);
    d.n_nics = 1;
    d.nic[0].addr = a;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), 0);
    assert_int_equal(te_mr_desc_encode(NULL, buf, sizeof buf, &n), -EINVAL);
    assert_msg("d is NULL");
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, NULL), -EINVAL);
    assert_msg("out_len");
    assert_int_equal(te_mr_desc_encode(&d, NULL, 4, &n), -EINVAL);
    assert_msg("buf");
    d.n_nics = 0;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), -EINVAL);
    assert_msg("n_nics 0");
    d.n_nics = TE_MAX_NICS + 1;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), -EINVAL);
    assert_msg("n_nics 5");
    d.n_nics = 2; /* nic[1] is all zeros: invalid address */
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), -EINVAL);
    assert_msg("nic[1].addr");
    d.n_nics = 1;
    d.base = UINT64_MAX;
    d.len = 1;
    assert_int_equal(te_mr_desc_encode(&d, buf, sizeof buf, &n), -EINVAL);
    assert_msg("overflows");
}

static void test_enospc(void **state)
{
    te_addr a;
    static const uint8_t raw[] = { 9, 8, 7, 6, 5 };
    make_addr(&a, TE_TRANSPORT_FABRIC, raw, sizeof raw);
    uint8_t buf[64];
    size_t n = 0;

    /* Size query with no buffer. */
    assert_int_equal(te_addr_encode(&a, NULL, 0, &n), -ENOSPC);
    assert_int_equal(n, 8);
    assert_msg("8 bytes needed");
    for (size_t cap = 0; cap < 8; cap++) {
        memset(buf, 0xa5, sizeof buf);
        n = 0;
        assert_int_equal(te_addr_encode(&a, buf, cap, &n), -ENOSPC);
        assert_int_equal(n, 8);
        for (size_t i = 0; i < sizeof buf; i++)
            assert_int_equal(buf[i], 0xa5); /* nothing written */
    }
    memset(buf, 0xa5, sizeof buf);
    assert_int_equal(te_addr_encode(&a, buf, 8, &n), 0);
    assert_int_equal(buf[8], 0xa5);

    /* Text needs 2 * 8 + 1 bytes. */
    char text[32];
    for (size_t cap = 1; cap < 17; cap++) {
        memset(text, 'Z', sizeof text);
        assert_int_equal(te_addr_format(&a, text, cap), -ENOSPC);
        assert_msg("17 bytes needed");
        assert_int_equal(text[0], '\0');
        for (size_t i = 1; i < sizeof text; i++)
            assert_int_equal(text[i], 'Z');
    }
    assert_int_equal(te_addr_format(&a, text, 0), -ENOSPC);
    memset(text, 'Z', sizeof text);
    assert_int_equal(te_addr_format(&a, text, 17), 0);
    assert_string_equal(text, "0101050908070605");
    assert_int_equal(text[17], 'Z');

    te_mr_desc d;
    memset(&d, 0, sizeof d);
    d.base = 1;
    d.len = 128; /* 2 bytes */
    d.n_nics = 2;
    d.nic[0].addr = a;
    d.nic[1].addr = a;
    d.nic[1].rkey = 1ull << 14; /* 3 bytes */
    size_t need = 1 + 1 + 2 + 1 + 8 + 1 + 8 + 3;
    assert_int_equal(te_mr_desc_encode(&d, NULL, 0, &n), -ENOSPC);
    assert_int_equal(n, need);
    for (size_t cap = 0; cap < need; cap++) {
        memset(buf, 0xa5, sizeof buf);
        n = 0;
        assert_int_equal(te_mr_desc_encode(&d, buf, cap, &n), -ENOSPC);
        assert_int_equal(n, need);
        for (size_t i = 0; i < sizeof buf; i++)
            assert_int_equal(buf[i], 0xa5);
    }
    memset(buf, 0xa5, sizeof buf);
    assert_int_equal(te_mr_desc_encode(&d, buf, need, &n), 0);
    assert_int_equal(n, need);
    assert_int_equal(buf[need], 0xa5);
}

static void test_addr_equal(void **state)
{
    te_addr a, b;
    static const uint8_t raw[] = { 1, 2, 3, 4 };
    make_addr(&a, TE_TRANSPORT_FABRIC, raw, 4);
    make_addr(&b, TE_TRANSPORT_FABRIC, raw, 4);
    assert_true(te_addr_equal(&a, &b));
    assert_true(te_addr_equal(&a, &a));
    b.bytes[10] = 0x77; /* beyond len: ignored */
    assert_true(te_addr_equal(&a, &b));
    b.bytes[3] = 5;
    assert_false(te_addr_equal(&a, &b));
    b.bytes[3] = 4;
    b.transport = TE_TRANSPORT_VERBS;
    assert_false(te_addr_equal(&a, &b));
    b.transport = TE_TRANSPORT_FABRIC;
    b.len = 3;
    assert_false(te_addr_equal(&a, &b));
    assert_false(te_addr_equal(&a, NULL));
    assert_false(te_addr_equal(NULL, &a));
    assert_true(te_addr_equal(NULL, NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_varint_vectors),
        cmocka_unit_test(test_varint_rejects),
        cmocka_unit_test(test_varint_random),
        cmocka_unit_test(test_addr_layout),
        cmocka_unit_test(test_desc_layout),
        cmocka_unit_test(test_addr_roundtrip_random),
        cmocka_unit_test(test_desc_roundtrip_random),
        cmocka_unit_test(test_addr_boundaries),
        cmocka_unit_test(test_desc_boundaries),
        cmocka_unit_test(test_addr_decode_rejects),
        cmocka_unit_test(test_desc_decode_rejects),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_desc_parse_rejects),
        cmocka_unit_test(test_encode_invalid),
        cmocka_unit_test(test_enospc),
        cmocka_unit_test(test_addr_equal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
