/* Unsigned LEB128 varints for u64 values (the integer encoding of addresses and memory
 * descriptors, docs/wire-format.md).
 *
 * Seven value bits per byte, least significant group first; bit 7 set means "more bytes
 * follow". A u64 takes 1..10 bytes. Decoding is strict, so that every value has exactly
 * one accepted encoding:
 *   - truncated: the input ends while bit 7 of the last byte read is set;
 *   - overflow:  more than 10 bytes, or a 10th byte > 1 (bits above 63);
 *   - non-canonical: a multi-byte encoding whose last byte is 0 (e.g. 80 00 for 0),
 *     i.e. redundant high zero groups.
 * No I/O, no allocation, no global state. */
#ifndef TENDRIL_CORE_VARINT_H
#define TENDRIL_CORE_VARINT_H

#include <stddef.h>
#include <stdint.h>

#define TN_VARINT_MAX 10 /* longest encoding of a u64 */

enum tn_varint_status {
    TN_VARINT_TRUNCATED = -1,    /* input ended inside the varint */
    TN_VARINT_OVERFLOW = -2,     /* more than 10 bytes, or value above 2^64-1 */
    TN_VARINT_NONCANONICAL = -3, /* redundant trailing zero group */
};

/* Bytes needed to encode v (1..10). */
static inline size_t tn_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Writes v to out (which must have room for tn_varint_len(v) bytes); returns the number
 * of bytes written. */
static inline size_t tn_varint_encode(uint64_t v, uint8_t *out)
{
    size_t n = 0;
    while (v >= 0x80) {
        out[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    out[n++] = (uint8_t)v;
    return n;
}

/* Reads one varint from p[0..avail). Returns the number of bytes consumed (1..10) and
 * stores the value in *out, or returns a negative enum tn_varint_status (*out untouched). */
static inline int tn_varint_decode(const uint8_t *p, size_t avail, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < TN_VARINT_MAX; i++) {
        if (i >= avail)
            return TN_VARINT_TRUNCATED;
        uint8_t b = p[i];
        if (i == TN_VARINT_MAX - 1 && b > 1)
            return TN_VARINT_OVERFLOW; /* 10th byte may only carry bit 63 */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return TN_VARINT_NONCANONICAL;
            *out = v;
            return (int)(i + 1);
        }
    }
    return TN_VARINT_OVERFLOW; /* unreachable: the 10th byte has bit 7 clear or failed */
}

/* Short English name of a negative status, for error messages. */
static inline const char *tn_varint_status_str(int status)
{
    switch (status) {
    case TN_VARINT_TRUNCATED: return "truncated varint";
    case TN_VARINT_OVERFLOW: return "overlong varint (more than 64 bits)";
    case TN_VARINT_NONCANONICAL: return "non-canonical varint (redundant zero byte)";
    default: return "bad varint";
    }
}

#endif
