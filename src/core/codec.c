/* Wire and text forms of addresses (te_addr) and memory descriptors (te_mr_desc).
 * The byte layouts, the text form and the rejection rules are in docs/wire-format.md.
 * No allocation, no global state: every function is thread-safe. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "core/varint.h"
#include "tendril/te.h"

/* ------------------------------------------------------------ helpers ---- */

static bool transport_known(uint8_t t)
{
    return t == TE_TRANSPORT_FABRIC || t == TE_TRANSPORT_VERBS;
}

/* Checks an address struct before encoding. `what` names it in the message. */
static int addr_validate(const te_addr *a, const char *what)
{
    if (!transport_known(a->transport))
        return tn_err(-EINVAL, "%s: unknown transport kind %u (expected %d fabric or %d verbs)",
                      what, (unsigned)a->transport, TE_TRANSPORT_FABRIC, TE_TRANSPORT_VERBS);
    if (a->len == 0)
        return tn_err(-EINVAL, "%s: len is 0 (must be 1..%d)", what, TE_ADDR_MAX);
    return 0;
}

static size_t addr_wire_size(const te_addr *a) { return 3u + a->len; }

/* Writes a validated address; out must have addr_wire_size(a) bytes. */
static size_t addr_write(const te_addr *a, uint8_t *out)
{
    out[0] = TE_WIRE_VERSION;
    out[1] = a->transport;
    out[2] = a->len;
    memcpy(out + 3, a->bytes, a->len);
    return addr_wire_size(a);
}

/* Bounded reader over the input; every read checks the remaining length. */
typedef struct reader {
    const uint8_t *p;
    size_t left;
    size_t off; /* bytes consumed so far, for messages */
} reader;

static int rd_u8(reader *r, uint8_t *out, const char *what)
{
    if (r->left < 1)
        return tn_err(-EBADMSG, "truncated input: %s missing at byte %zu", what, r->off);
    *out = r->p[0];
    r->p++;
    r->left--;
    r->off++;
    return 0;
}

static int rd_varint(reader *r, uint64_t *out, const char *what)
{
    int n = tn_varint_decode(r->p, r->left, out);
    if (n < 0) {
        if (n == TN_VARINT_TRUNCATED)
            return tn_err(-EBADMSG, "truncated input: %s (varint at byte %zu) is cut off",
                          what, r->off);
        return tn_err(-EBADMSG, "%s at byte %zu: %s", what, r->off, tn_varint_status_str(n));
    }
    r->p += n;
    r->left -= (size_t)n;
    r->off += (size_t)n;
    return 0;
}

static int rd_version(reader *r, const char *what)
{
    uint8_t v = 0;
    int rc = rd_u8(r, &v, what);
    if (rc)
        return rc;
    if (v != TE_WIRE_VERSION)
        return tn_err(-EBADMSG, "%s: unsupported wire version %u at byte %zu (this build "
                      "reads version %d only)", what, (unsigned)v, r->off - 1, TE_WIRE_VERSION);
    return 0;
}

/* Reads one encoded address (version, transport, len, bytes). `what` prefixes messages.
 * Fills *out completely (unused bytes zeroed) only on success. */
static int rd_addr(reader *r, te_addr *out, const char *what)
{
    char ctx[64];
    uint8_t transport = 0, len = 0;
    int rc;

    snprintf(ctx, sizeof ctx, "%s version byte", what);
    if ((rc = rd_version(r, ctx)))
        return rc;
    snprintf(ctx, sizeof ctx, "%s transport kind", what);
    if ((rc = rd_u8(r, &transport, ctx)))
        return rc;
    if (!transport_known(transport))
        return tn_err(-EBADMSG, "%s: unknown transport kind %u at byte %zu (expected %d "
                      "fabric or %d verbs)", what, (unsigned)transport, r->off - 1,
                      TE_TRANSPORT_FABRIC, TE_TRANSPORT_VERBS);
    snprintf(ctx, sizeof ctx, "%s length", what);
    if ((rc = rd_u8(r, &len, ctx)))
        return rc;
    if (len == 0)
        return tn_err(-EBADMSG, "%s: length 0 at byte %zu (must be 1..%d)", what, r->off - 1,
                      TE_ADDR_MAX);
    if (r->left < len)
        return tn_err(-EBADMSG, "truncated input: %s needs %u bytes at byte %zu, %zu left",
                      what, (unsigned)len, r->off, r->left);
    memset(out, 0, sizeof *out);
    out->transport = transport;
    out->len = len;
    memcpy(out->bytes, r->p, len);
    r->p += len;
    r->left -= len;
    r->off += len;
    return 0;
}

static int rd_end(const reader *r, const char *what)
{
    if (r->left)
        return tn_err(-EBADMSG, "%zu trailing byte(s) after the %s (at byte %zu)", r->left,
                      what, r->off);
    return 0;
}

/* ----------------------------------------------------------- addresses ---- */

int te_addr_encode(const te_addr *addr, uint8_t *buf, size_t cap, size_t *out_len)
{
    tn_err_clear();
    if (!addr)
        return tn_err(-EINVAL, "te_addr_encode: addr is NULL");
    if (!out_len)
        return tn_err(-EINVAL, "te_addr_encode: out_len is NULL");
    if (!buf && cap)
        return tn_err(-EINVAL, "te_addr_encode: buf is NULL with cap %zu", cap);
    int rc = addr_validate(addr, "te_addr_encode: addr");
    if (rc)
        return rc;
    size_t need = addr_wire_size(addr);
    *out_len = need;
    if (cap < need)
        return tn_err(-ENOSPC, "te_addr_encode: cap %zu too small, %zu bytes needed", cap, need);
    addr_write(addr, buf);
    return 0;
}

int te_addr_decode(const uint8_t *buf, size_t len, te_addr *out)
{
    tn_err_clear();
    if (!buf && len)
        return tn_err(-EINVAL, "te_addr_decode: buf is NULL with len %zu", len);
    if (!out)
        return tn_err(-EINVAL, "te_addr_decode: out is NULL");
    reader r = { buf, len, 0 };
    te_addr tmp;
    int rc = rd_addr(&r, &tmp, "address");
    if (!rc)
        rc = rd_end(&r, "address");
    if (rc)
        return rc;
    *out = tmp;
    return 0;
}

static const char hex_digits[] = "0123456789abcdef";

/* Writes the lowercase hex of wire[0..n) and a NUL into buf. `fn` names the caller and
 * `max_name` the constant that always fits, for the -ENOSPC message. */
static int hex_write(const uint8_t *wire, size_t n, char *buf, size_t cap, const char *fn,
                     const char *max_name)
{
    size_t need = 2 * n + 1;
    if (cap < need) {
        if (cap)
            buf[0] = '\0';
        return tn_err(-ENOSPC, "%s: cap %zu too small, %zu bytes needed (%s always fits)", fn,
                      cap, need, max_name);
    }
    for (size_t i = 0; i < n; i++) {
        buf[2 * i] = hex_digits[wire[i] >> 4];
        buf[2 * i + 1] = hex_digits[wire[i] & 0xf];
    }
    buf[2 * n] = '\0';
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads the hex text into wire (at most cap bytes); *n gets the byte count. Rejects with
 * -EBADMSG: empty text, odd digit count, a non-hex character, more than cap bytes.
 * `fn` names the caller and `what` the value, for the messages. */
static int hex_read(const char *text, uint8_t *wire, size_t cap, size_t *n, const char *fn,
                    const char *what)
{
    if (!text[0])
        return tn_err(-EBADMSG, "%s: empty text", fn);
    size_t got = 0;
    for (size_t i = 0;; i += 2) {
        char hi = text[i];
        if (!hi)
            break;
        char lo = text[i + 1];
        if (!lo)
            return tn_err(-EBADMSG, "%s: odd number of hex digits (%zu)", fn, i + 1);
        int h = hex_value(hi), l = hex_value(lo);
        if (h < 0 || l < 0) {
            size_t at = h < 0 ? i : i + 1;
            unsigned char c = (unsigned char)text[at];
            if (c >= 0x20 && c < 0x7f)
                return tn_err(-EBADMSG, "%s: '%c' at offset %zu is not a hex digit", fn,
                              (char)c, at);
            return tn_err(-EBADMSG, "%s: byte 0x%02x at offset %zu is not a hex digit", fn,
                          (unsigned)c, at);
        }
        if (got == cap)
            return tn_err(-EBADMSG, "%s: text longer than %zu hex digits (the largest encoded "
                          "%s)", fn, 2 * cap, what);
        wire[got++] = (uint8_t)(h << 4 | l);
    }
    *n = got;
    return 0;
}

int te_addr_format(const te_addr *addr, char *buf, size_t cap)
{
    tn_err_clear();
    if (!addr)
        return tn_err(-EINVAL, "te_addr_format: addr is NULL");
    if (!buf)
        return tn_err(-EINVAL, "te_addr_format: buf is NULL");
    int rc = addr_validate(addr, "te_addr_format: addr");
    if (rc)
        return rc;
    uint8_t wire[TE_ADDR_ENCODED_MAX];
    size_t n = addr_write(addr, wire);
    return hex_write(wire, n, buf, cap, "te_addr_format", "TE_ADDR_TEXT_MAX");
}

int te_addr_parse(const char *text, te_addr *out)
{
    tn_err_clear();
    if (!text)
        return tn_err(-EINVAL, "te_addr_parse: text is NULL");
    if (!out)
        return tn_err(-EINVAL, "te_addr_parse: out is NULL");

    uint8_t wire[TE_ADDR_ENCODED_MAX];
    size_t n = 0;
    int rc = hex_read(text, wire, sizeof wire, &n, "te_addr_parse", "address");
    if (rc)
        return rc;
    reader r = { wire, n, 0 };
    te_addr tmp;
    rc = rd_addr(&r, &tmp, "te_addr_parse: address");
    if (!rc)
        rc = rd_end(&r, "address");
    if (rc)
        return rc;
    *out = tmp;
    return 0;
}

bool te_addr_equal(const te_addr *a, const te_addr *b)
{
    tn_err_clear();
    if (a == b)
        return true;
    if (!a || !b)
        return false;
    return a->transport == b->transport && a->len == b->len &&
           memcmp(a->bytes, b->bytes, a->len) == 0;
}

/* ---------------------------------------------------------- descriptors ---- */

int te_mr_desc_encode(const te_mr_desc *d, uint8_t *buf, size_t cap, size_t *out_len)
{
    tn_err_clear();
    if (!d)
        return tn_err(-EINVAL, "te_mr_desc_encode: d is NULL");
    if (!out_len)
        return tn_err(-EINVAL, "te_mr_desc_encode: out_len is NULL");
    if (!buf && cap)
        return tn_err(-EINVAL, "te_mr_desc_encode: buf is NULL with cap %zu", cap);
    if (d->n_nics == 0 || d->n_nics > TE_MAX_NICS)
        return tn_err(-EINVAL, "te_mr_desc_encode: n_nics %u out of range 1..%d",
                      (unsigned)d->n_nics, TE_MAX_NICS);
    if (d->len > UINT64_MAX - d->base)
        return tn_err(-EINVAL, "te_mr_desc_encode: base 0x%llx + len 0x%llx overflows u64",
                      (unsigned long long)d->base, (unsigned long long)d->len);

    size_t need = 1 + tn_varint_len(d->base) + tn_varint_len(d->len) + 1;
    for (uint32_t k = 0; k < d->n_nics; k++) {
        char what[48];
        snprintf(what, sizeof what, "te_mr_desc_encode: nic[%u].addr", (unsigned)k);
        int rc = addr_validate(&d->nic[k].addr, what);
        if (rc)
            return rc;
        need += addr_wire_size(&d->nic[k].addr) + tn_varint_len(d->nic[k].rkey);
    }
    *out_len = need;
    if (cap < need)
        return tn_err(-ENOSPC, "te_mr_desc_encode: cap %zu too small, %zu bytes needed", cap,
                      need);

    size_t o = 0;
    buf[o++] = TE_WIRE_VERSION;
    o += tn_varint_encode(d->base, buf + o);
    o += tn_varint_encode(d->len, buf + o);
    buf[o++] = (uint8_t)d->n_nics;
    for (uint32_t k = 0; k < d->n_nics; k++) {
        o += addr_write(&d->nic[k].addr, buf + o);
        o += tn_varint_encode(d->nic[k].rkey, buf + o);
    }
    return 0;
}

int te_mr_desc_decode(const uint8_t *buf, size_t len, te_mr_desc *out)
{
    tn_err_clear();
    if (!buf && len)
        return tn_err(-EINVAL, "te_mr_desc_decode: buf is NULL with len %zu", len);
    if (!out)
        return tn_err(-EINVAL, "te_mr_desc_decode: out is NULL");

    reader r = { buf, len, 0 };
    te_mr_desc tmp;
    uint8_t n = 0;
    int rc;
    memset(&tmp, 0, sizeof tmp);
    if ((rc = rd_version(&r, "descriptor version byte")))
        return rc;
    if ((rc = rd_varint(&r, &tmp.base, "descriptor base")))
        return rc;
    if ((rc = rd_varint(&r, &tmp.len, "descriptor len")))
        return rc;
    if (tmp.len > UINT64_MAX - tmp.base)
        return tn_err(-EBADMSG, "descriptor: base 0x%llx + len 0x%llx overflows u64",
                      (unsigned long long)tmp.base, (unsigned long long)tmp.len);
    if ((rc = rd_u8(&r, &n, "descriptor NIC count")))
        return rc;
    if (n == 0 || n > TE_MAX_NICS)
        return tn_err(-EBADMSG, "descriptor: NIC count %u at byte %zu out of range 1..%d",
                      (unsigned)n, r.off - 1, TE_MAX_NICS);
    tmp.n_nics = n;
    for (unsigned k = 0; k < n; k++) {
        char what[48];
        snprintf(what, sizeof what, "descriptor nic[%u] address", k);
        if ((rc = rd_addr(&r, &tmp.nic[k].addr, what)))
            return rc;
        snprintf(what, sizeof what, "descriptor nic[%u] rkey", k);
        if ((rc = rd_varint(&r, &tmp.nic[k].rkey, what)))
            return rc;
    }
    if ((rc = rd_end(&r, "descriptor")))
        return rc;
    *out = tmp;
    return 0;
}

int te_mr_desc_format(const te_mr_desc *d, char *buf, size_t cap)
{
    tn_err_clear();
    if (!buf)
        return tn_err(-EINVAL, "te_mr_desc_format: buf is NULL");
    uint8_t wire[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    int rc = te_mr_desc_encode(d, wire, sizeof wire, &n);
    if (rc) {
        if (cap)
            buf[0] = '\0';
        return rc;
    }
    return hex_write(wire, n, buf, cap, "te_mr_desc_format", "TE_MR_DESC_TEXT_MAX");
}

int te_mr_desc_parse(const char *text, te_mr_desc *out)
{
    tn_err_clear();
    if (!text)
        return tn_err(-EINVAL, "te_mr_desc_parse: text is NULL");
    if (!out)
        return tn_err(-EINVAL, "te_mr_desc_parse: out is NULL");
    uint8_t wire[TE_MR_DESC_ENCODED_MAX];
    size_t n = 0;
    int rc = hex_read(text, wire, sizeof wire, &n, "te_mr_desc_parse", "descriptor");
    if (rc)
        return rc;
    /* te_mr_desc_decode leaves *out untouched on a rejection. */
    return te_mr_desc_decode(wire, n, out);
}
