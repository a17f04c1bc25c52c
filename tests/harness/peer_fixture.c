/* The peer fixture in cmocka form: a peer process (peer.c) with a mirror of its region,
 * and the command helpers the tests that write into it share. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "harness.h"
#include "peer.h"

void th_peer_up(th_peer *p, const char *role, const char *arg, size_t region_len, int timeout_ms)
{
    char why[4200];
    memset(p, 0, sizeof *p);
    p->region_len = region_len;
    p->timeout_ms = timeout_ms;
    if (th_peer_start_as(&p->proc, role ? role : "peer", arg, &p->addr, &p->desc, timeout_ms, why,
                         sizeof why))
        fail_msg("%s", why);
    p->mirror = calloc(1, region_len);
    if (!p->mirror) fail_msg("out of memory for a %zu-byte mirror", region_len);
}

void th_peer_down(th_peer *p)
{
    th_send(&p->proc, "quit");
    assert_int_equal(th_wait(&p->proc, p->timeout_ms), 0);
    free(p->mirror);
    p->mirror = NULL;
}

static void vask(th_peer *p, char *reply, size_t cap, char *cmd, size_t cmd_cap, const char *fmt,
                 va_list ap)
{
    vsnprintf(cmd, cmd_cap, fmt, ap);
    int r = th_ask(&p->proc, reply, cap, p->timeout_ms, "%s", cmd);
    if (r) fail_msg("peer did not answer '%s': %d", cmd, r);
}

void th_peer_ask(th_peer *p, char *reply, size_t cap, const char *fmt, ...)
{
    char cmd[1024];
    va_list ap;
    va_start(ap, fmt);
    vask(p, reply, cap, cmd, sizeof cmd, fmt, ap);
    va_end(ap);
}

void th_peer_expect_ok(th_peer *p, const char *fmt, ...)
{
    char cmd[1024], reply[256];
    va_list ap;
    va_start(ap, fmt);
    vask(p, reply, sizeof reply, cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    if (strncmp(reply, "ok", 2)) fail_msg("'%s' -> '%s'", cmd, reply);
}

void th_peer_check_range(th_peer *p, uint64_t off, uint64_t len)
{
    char reply[128];
    th_peer_ask(p, reply, sizeof reply, "hash %" PRIu64 " %" PRIu64, off, len);
    uint64_t got = 0;
    if (sscanf(reply, "hash %" SCNu64, &got) != 1) fail_msg("hash: '%s'", reply);
    if (got != th_hash(p->mirror + off, len))
        fail_msg("peer bytes [%" PRIu64 ", +%" PRIu64 ") differ from what was written", off, len);
}
