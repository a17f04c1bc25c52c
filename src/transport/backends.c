/* The table of backends and the choice among them. The engine asks only this file; it
 * never names a backend. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/error.h"
#include "transport/backend.h"
#include "transport/fabric/fabric.h"
#include "transport/verbs/verbs.h"

/* Claim order: specific names first, libfabric (which claims anything) last. */
const tp_backend *const tp_backends[] = {
    &tp_verbs_backend,
    &tp_fabric_backend,
    NULL,
};

/* "auto": every backend's choices, tried by ascending rank; the first probe that
 * succeeds wins. */
static int select_auto(const tp_backend **backend, char *provider, size_t cap)
{
    char tried[256] = "";
    size_t used = 0;
    int last = -1;
    for (;;) {
        const tp_backend *best_b = NULL;
        const tp_auto_choice *best = NULL;
        for (const tp_backend *const *b = tp_backends; *b; b++)
            for (size_t k = 0; k < (*b)->n_auto_choices; k++) {
                const tp_auto_choice *c = &(*b)->auto_choices[k];
                if (c->rank > last && (!best || c->rank < best->rank)) {
                    best = c;
                    best_b = *b;
                }
            }
        if (!best) break;
        last = best->rank;
        if (best->probe(provider, cap) == 0) {
            tn_err_clear();
            *backend = best_b;
            return 0;
        }
        used += (size_t)snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "",
                                 best->label);
        if (used >= sizeof tried) used = sizeof tried - 1;
    }
    return tn_err(-ENODEV, "provider auto: none of %s is usable here (no RDM endpoint with RMA "
                           "and remote CQ data, or no device)", tried);
}

int tp_backend_select(const char *want, const tp_backend **backend, char *provider, size_t cap)
{
    if (!want || !*want || !strcmp(want, "auto")) return select_auto(backend, provider, cap);
    for (const tp_backend *const *b = tp_backends; *b; b++)
        if ((*b)->claims(want)) {
            int r = (*b)->resolve(want, provider, cap);
            if (r == 0) *backend = *b;
            return r;
        }
    return tn_err(-ENODEV, "provider '%s': no backend serves it", want);
}
