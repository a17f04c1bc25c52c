#include "a2a_pattern.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const a2a_phase_name[A2A_PHASES] = {"dsp", "wgt", "cmb"};

static int phase_of(const char *s)
{
    for (int p = 0; p < A2A_PHASES; p++)
        if (!strcmp(s, a2a_phase_name[p])) return p;
    return -1;
}

/* Parses one unsigned decimal field; false on anything else (sign, junk, overflow). */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    if (!*s || *s < '0' || *s > '9') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v > max) return false;
    *out = v;
    return true;
}

static int fail(char *err, size_t cap, int r, const char *path, int line, const char *what)
{
    if (line) snprintf(err, cap, "%s:%d: %s", path, line, what);
    else snprintf(err, cap, "%s: %s", path, what);
    return r;
}

int a2a_plan_load(const char *path, uint64_t base, a2a_plan *out, char *err, size_t cap)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "r");
    if (!f) return fail(err, cap, -errno, path, 0, strerror(errno));
    a2a_write *raw = calloc(A2A_MAX_WRITES, sizeof *raw);
    static const uint32_t none = UINT32_MAX;
    uint32_t *slot_of = malloc((A2A_MAX_PEER + 1) * sizeof *slot_of);
    if (!raw || !slot_of) {
        fclose(f);
        free(raw);
        free(slot_of);
        return fail(err, cap, -ENOMEM, path, 0, "out of memory");
    }
    for (int k = 0; k <= A2A_MAX_PEER; k++) slot_of[k] = none;
    char line[512], msg[160];
    int lineno = 0, r = 0;
    size_t n = 0;
    uint32_t peers = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            r = fail(err, cap, -EINVAL, path, lineno, "line too long");
            goto out;
        }
        line[strcspn(line, "#\n")] = '\0';
        char *save = NULL, *tok[4];
        int nt = 0;
        for (char *t = strtok_r(line, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save))
            if (nt < 4) tok[nt++] = t;
            else nt = 5;
        if (nt == 0) continue;
        uint64_t peer, len;
        int ph = nt == 3 ? phase_of(tok[0]) : -1;
        if (nt != 3 || ph < 0 || !parse_u64(tok[1], A2A_MAX_PEER, &peer) ||
            !parse_u64(tok[2], A2A_MAX_FOOTPRINT, &len)) {
            snprintf(msg, sizeof msg, "expected 'PHASE PEER BYTES' (PHASE dsp, wgt or cmb; PEER 0..%d; "
                     "BYTES a decimal number)", A2A_MAX_PEER);
            r = fail(err, cap, -EINVAL, path, lineno, msg);
            goto out;
        }
        if (n == A2A_MAX_WRITES) {
            snprintf(msg, sizeof msg, "more than %d writes", A2A_MAX_WRITES);
            r = fail(err, cap, -E2BIG, path, lineno, msg);
            goto out;
        }
        if (slot_of[peer] == none) slot_of[peer] = peers++;
        raw[n++] = (a2a_write){.phase = (uint32_t)ph, .peer = (uint32_t)peer, .slot = slot_of[peer], .len = len};
    }
    if (ferror(f)) {
        r = fail(err, cap, -EIO, path, 0, "read error");
        goto out;
    }
    if (n == 0) {
        r = fail(err, cap, -EINVAL, path, 0, "no writes (lines 'PHASE PEER BYTES')");
        goto out;
    }
    /* Layout, peer by peer: each peer's writes (in file order) one after another, so a
     * peer's writes occupy one slot range of the region, as in a real receive block. */
    uint64_t cur = base;
    for (uint32_t s = 0; s < peers; s++)
        for (size_t k = 0; k < n; k++)
            if (raw[k].slot == s) {
                raw[k].off = cur;
                cur += (raw[k].len + A2A_ALIGN - 1) / A2A_ALIGN * A2A_ALIGN;
                if (!raw[k].len) cur += A2A_ALIGN; /* a distinct offset for an empty write too */
                if (cur > A2A_MAX_FOOTPRINT) {
                    snprintf(msg, sizeof msg, "the writes need more than %llu bytes of memory",
                             (unsigned long long)A2A_MAX_FOOTPRINT);
                    r = fail(err, cap, -E2BIG, path, 0, msg);
                    goto out;
                }
            }
    out->w = malloc(n * sizeof *out->w);
    if (!out->w) {
        r = fail(err, cap, -ENOMEM, path, 0, "out of memory");
        goto out;
    }
    for (int p = 0; p < A2A_PHASES; p++) {
        out->first[p] = out->n;
        for (size_t k = 0; k < n; k++)
            if (raw[k].phase == (uint32_t)p) {
                out->w[out->n++] = raw[k];
                out->bytes[p] += raw[k].len;
            }
    }
    out->first[A2A_PHASES] = out->n;
    out->peers = peers;
    out->footprint = cur;
out:
    fclose(f);
    free(raw);
    free(slot_of);
    return r;
}

void a2a_plan_free(a2a_plan *p)
{
    free(p->w);
    memset(p, 0, sizeof *p);
}
