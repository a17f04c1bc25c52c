/* libFuzzer target: te_addr_decode and te_addr_parse on arbitrary input.
 * Properties checked:
 *  - a rejection is -EBADMSG with a message, and leaves the output untouched;
 *  - when decode accepts, encode(decoded) reproduces the input bytes exactly (the wire
 *    form is canonical), decode(encode(x)) == x field for field, format/parse round-trip,
 *    and encode/format never write past cap (-ENOSPC reports the size needed);
 *  - the input read as text: when parse accepts, format gives the same text lowercased. */
#include <ctype.h>
#include <errno.h>

#include "fuzz_check.h"

static void check_addr_encoders(const te_addr *a, const uint8_t *wire, size_t wire_len)
{
    size_t need = 0, n = 0;
    FUZZ_CHECK(te_addr_encode(a, NULL, 0, &need) == -ENOSPC);
    FUZZ_CHECK(need == wire_len && need <= TE_ADDR_ENCODED_MAX);

    /* Too small: nothing written at all. */
    size_t small[] = { 0, need / 2, need - 1 };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        uint8_t *b = fuzz_buf_new(small[i]);
        n = 0;
        FUZZ_CHECK(te_addr_encode(a, b, small[i], &n) == -ENOSPC);
        FUZZ_CHECK(n == need);
        fuzz_buf_free(b, small[i], 0);
    }
    uint8_t *b = fuzz_buf_new(need);
    FUZZ_CHECK(te_addr_encode(a, b, need, &n) == 0 && n == need);
    FUZZ_CHECK(memcmp(b, wire, need) == 0);
    te_addr again;
    FUZZ_CHECK(te_addr_decode(b, n, &again) == 0);
    FUZZ_CHECK(memcmp(&again, a, sizeof again) == 0);
    fuzz_buf_free(b, need, need);

    /* Text form. */
    size_t tneed = 2 * need + 1;
    FUZZ_CHECK(tneed <= TE_ADDR_TEXT_MAX);
    uint8_t *t = fuzz_buf_new(tneed - 1);
    FUZZ_CHECK(te_addr_format(a, (char *)t, tneed - 1) == -ENOSPC);
    fuzz_buf_free(t, tneed - 1, tneed == 1 ? 0 : 1);
    t = fuzz_buf_new(tneed);
    FUZZ_CHECK(te_addr_format(a, (char *)t, tneed) == 0);
    FUZZ_CHECK(strlen((char *)t) == tneed - 1);
    FUZZ_CHECK(te_addr_parse((char *)t, &again) == 0);
    FUZZ_CHECK(te_addr_equal(&again, a));
    FUZZ_CHECK(memcmp(&again, a, sizeof again) == 0);
    fuzz_buf_free(t, tneed, tneed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    te_addr a, before;

    /* 1. The input as wire bytes. */
    memset(&a, 0x3c, sizeof a);
    before = a;
    int rc = te_addr_decode(data, size, &a);
    if (rc == 0) {
        FUZZ_CHECK(te_last_error()[0] == '\0');
        FUZZ_CHECK(a.len >= 1 && size == 3u + a.len);
        check_addr_encoders(&a, data, size);
    } else {
        FUZZ_CHECK(rc == -EBADMSG);
        FUZZ_CHECK(te_last_error()[0] != '\0');
        FUZZ_CHECK(memcmp(&a, &before, sizeof a) == 0);
    }

    /* 2. The input as text (NUL-terminated copy; an embedded NUL ends the text). */
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    memset(&a, 0x3c, sizeof a);
    rc = te_addr_parse(text, &a);
    if (rc == 0) {
        size_t tl = strlen(text);
        char out[TE_ADDR_TEXT_MAX];
        FUZZ_CHECK(te_addr_format(&a, out, sizeof out) == 0);
        FUZZ_CHECK(strlen(out) == tl);
        for (size_t i = 0; i < tl; i++)
            FUZZ_CHECK(out[i] == tolower((unsigned char)text[i]));
        uint8_t wire[TE_ADDR_ENCODED_MAX];
        size_t n = 0;
        FUZZ_CHECK(te_addr_encode(&a, wire, sizeof wire, &n) == 0 && 2 * n == tl);
        check_addr_encoders(&a, wire, n);
    } else {
        FUZZ_CHECK(rc == -EBADMSG);
        FUZZ_CHECK(te_last_error()[0] != '\0');
        FUZZ_CHECK(memcmp(&a, &before, sizeof a) == 0);
    }
    free(text);
    return 0;
}
