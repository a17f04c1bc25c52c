/* libFuzzer target: te_mr_desc_decode and te_mr_desc_parse on arbitrary input.
 * Properties checked:
 *  - a rejection is -EBADMSG with a message, and leaves the output untouched;
 *  - when decode accepts: the result satisfies every documented invariant, encode
 *    reproduces the input bytes exactly (canonical form), decode(encode(x)) == x, and
 *    encode never writes past cap (-ENOSPC reports the size needed, writes nothing);
 *  - text form: format/parse round-trip, format never writes past cap; the input read as
 *    text: parse accepts exactly when decode accepts its bytes, and format gives the same
 *    text lowercased. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "fuzz_check.h"

/* The text form of an accepted descriptor: exact size, -ENOSPC one byte short, parse
 * gives the same value back. */
static void check_desc_text(const te_mr_desc *d, size_t wire_len)
{
    size_t tneed = 2 * wire_len + 1;
    FUZZ_CHECK(tneed <= TE_MR_DESC_TEXT_MAX);
    uint8_t *t = fuzz_buf_new(tneed - 1);
    FUZZ_CHECK(te_mr_desc_format(d, (char *)t, tneed - 1) == -ENOSPC);
    fuzz_buf_free(t, tneed - 1, tneed == 1 ? 0 : 1);
    t = fuzz_buf_new(tneed);
    FUZZ_CHECK(te_mr_desc_format(d, (char *)t, tneed) == 0);
    FUZZ_CHECK(strlen((char *)t) == tneed - 1);
    te_mr_desc again;
    FUZZ_CHECK(te_mr_desc_parse((char *)t, &again) == 0);
    FUZZ_CHECK(memcmp(&again, d, sizeof again) == 0);
    fuzz_buf_free(t, tneed, tneed);
}

/* The input read as text (an embedded NUL ends it). */
static void check_text_input(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';
    te_mr_desc d, before;
    memset(&d, 0x3c, sizeof d);
    before = d;
    int rc = te_mr_desc_parse(text, &d);
    if (rc == 0) {
        size_t tl = strlen(text);
        char *out = malloc(TE_MR_DESC_TEXT_MAX);
        FUZZ_CHECK(out != NULL);
        FUZZ_CHECK(te_mr_desc_format(&d, out, TE_MR_DESC_TEXT_MAX) == 0);
        FUZZ_CHECK(strlen(out) == tl);
        for (size_t i = 0; i < tl; i++)
            FUZZ_CHECK(out[i] == tolower((unsigned char)text[i]));
        free(out);
    } else {
        FUZZ_CHECK(rc == -EBADMSG);
        FUZZ_CHECK(te_last_error()[0] != '\0');
        FUZZ_CHECK(memcmp(&d, &before, sizeof d) == 0);
    }
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_text_input(data, size);
    te_mr_desc d, before;
    memset(&d, 0x3c, sizeof d);
    before = d;
    int rc = te_mr_desc_decode(data, size, &d);
    if (rc != 0) {
        FUZZ_CHECK(rc == -EBADMSG);
        FUZZ_CHECK(te_last_error()[0] != '\0');
        FUZZ_CHECK(memcmp(&d, &before, sizeof d) == 0);
        return 0;
    }
    FUZZ_CHECK(te_last_error()[0] == '\0');
    FUZZ_CHECK(d.n_nics >= 1 && d.n_nics <= TE_MAX_NICS);
    FUZZ_CHECK(d.len <= UINT64_MAX - d.base);
    for (uint32_t k = 0; k < d.n_nics; k++) {
        FUZZ_CHECK(d.nic[k].addr.len >= 1);
        FUZZ_CHECK(d.nic[k].addr.transport == TE_TRANSPORT_FABRIC ||
                   d.nic[k].addr.transport == TE_TRANSPORT_VERBS);
    }

    size_t need = 0, n = 0;
    FUZZ_CHECK(te_mr_desc_encode(&d, NULL, 0, &need) == -ENOSPC);
    FUZZ_CHECK(need == size && need <= TE_MR_DESC_ENCODED_MAX);

    size_t small[] = { 0, 1, need / 2, need - 1 };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) {
        uint8_t *b = fuzz_buf_new(small[i]);
        n = 0;
        FUZZ_CHECK(te_mr_desc_encode(&d, b, small[i], &n) == -ENOSPC);
        FUZZ_CHECK(n == need);
        fuzz_buf_free(b, small[i], 0);
    }

    uint8_t *b = fuzz_buf_new(need);
    FUZZ_CHECK(te_mr_desc_encode(&d, b, need, &n) == 0 && n == need);
    FUZZ_CHECK(memcmp(b, data, size) == 0);
    te_mr_desc again;
    FUZZ_CHECK(te_mr_desc_decode(b, n, &again) == 0);
    FUZZ_CHECK(memcmp(&again, &d, sizeof d) == 0);
    fuzz_buf_free(b, need, need);
    check_desc_text(&d, need);
    return 0;
}
