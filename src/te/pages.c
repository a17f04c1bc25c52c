/* Immutable shared page-index lists (PageIndices). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "te/engine_internal.h"

int te_pages_create(const uint32_t *idx, size_t n, te_pages **out)
{
    tn_err_clear();
    if (!out) return tn_err(-EINVAL, "te_pages_create: out is NULL");
    if (n && !idx) return tn_err(-EINVAL, "te_pages_create: idx is NULL with n = %zu", n);
    if (n > UINT32_MAX) return tn_err(-EINVAL, "te_pages_create: more than 2^32-1 pages");
    te_pages *p = malloc(sizeof *p + n * sizeof(uint32_t));
    if (!p) return tn_err(-ENOMEM, "te_pages_create: out of memory for %zu pages", n);
    atomic_init(&p->refs, 1);
    p->n = n;
    if (n) memcpy(p->idx, idx, n * sizeof(uint32_t));
    *out = p;
    return 0;
}

void pages_retain(te_pages *p) { atomic_fetch_add(&p->refs, 1); }

void te_pages_release(te_pages *p)
{
    if (p && atomic_fetch_sub(&p->refs, 1) == 1) free(p);
}

size_t te_pages_count(const te_pages *p) { return p ? p->n : 0; }
const uint32_t *te_pages_data(const te_pages *p) { return p ? p->idx : NULL; }
