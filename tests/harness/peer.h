/* The remote end of integration tests. Started as a child process; prints
 *   "ready <main-address-hex> <descriptor-hex>"
 * then answers one line per command:
 *   hash OFF LEN            -> "hash H" (FNV-1a of the region's bytes)
 *   zero                    -> "ok"     (clears the region)
 *   counter IMM             -> "ok"     (te_imm_counter for IMM)
 *   wait IMM N MS           -> "ok 0 V" | "err CODE V" (counter wait, V = value after)
 *   value IMM               -> "value V"
 *   expect IMM N KEEP       -> "ok"     (te_imm_expect; callback returns KEEP)
 *   imms IMM                -> "imms REACHED PLAIN"
 *   msgs                    -> "msgs COUNT HASHSUM" (messages received by the pool)
 *   send ADDR LEN SEED      -> "ok 1" after the send completed
 *   stats                   -> "stats IMMS RECVS ERRORS"
 *   nicstats K              -> "nicstats IMMS RECVS ERRORS WRITE_OPS WRITE_BYTES" of
 *                              NIC K of group 0 ("err CODE" if no such NIC)
 *   sleep                   -> (no reply)
 *   quit                    -> exits 0 */
#ifndef TENDRIL_TEST_PEER_H
#define TENDRIL_TEST_PEER_H
#include "harness.h"

int th_peer_main(const char *arg);
/* Parent side: spawns the peer (region size `arg`, NULL = 8 MiB) and reads its "ready"
 * line. 0, or a negative errno with the peer's complaint in `why` (if not NULL). */
int th_peer_start(th_proc *p, const char *arg, te_addr *addr, te_mr_desc *desc, int timeout_ms,
                  char *why, size_t why_cap);
/* The same for a child started as "--child ROLE ARG" whose role ends in th_peer_main
 * (tests/netns's "nspeer" enters a namespace first). */
int th_peer_start_as(th_proc *p, const char *role, const char *arg, te_addr *addr, te_mr_desc *desc,
                     int timeout_ms, char *why, size_t why_cap);
/* Parent side: waits until the peer has counted exactly n immediates of `imm` (a counter
 * created with "counter IMM"), consumes them, then checks that no surplus arrives within
 * `settle_ms`. 0, or -1 with the reason in `why`. */
int th_peer_expect_imms(th_proc *p, uint32_t imm, uint64_t n, int timeout_ms, int settle_ms,
                        char *why, size_t why_cap);

/* cmocka forms (th_assert.c): fail the running test with the reason. */
/* All of target completions on c, none of them failed. */
void th_assert_counter(te_counter *c, uint64_t target, int timeout_ms);
/* th_peer_expect_imms succeeded. */
void th_assert_peer_imms(th_proc *p, uint32_t imm, uint64_t n, int timeout_ms, int settle_ms);

/* The peer fixture of the tests that write into a peer's region (peer_fixture.c, cmocka
 * forms: each fails the running test with the reason). */
typedef struct th_peer {
    th_proc proc;
    te_addr addr;       /* the peer's main address */
    te_mr_desc desc;    /* its region */
    uint8_t *mirror;    /* what the region must contain (starts zeroed) */
    size_t region_len;
    int timeout_ms;     /* for every command */
} th_peer;

/* Starts the peer as "--child ROLE ARG" (role NULL = "peer"; ARG per th_peer_main, NULL =
 * 8 MiB) with a mirror of region_len bytes. */
void th_peer_up(th_peer *p, const char *role, const char *arg, size_t region_len, int timeout_ms);
/* "quit", exit status 0, mirror freed. */
void th_peer_down(th_peer *p);
/* One command, one reply line. */
void th_peer_ask(th_peer *p, char *reply, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* One command whose reply must start with "ok". */
void th_peer_expect_ok(th_peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The peer's bytes [off, off+len) equal the mirror's. */
void th_peer_check_range(th_peer *p, uint64_t off, uint64_t len);
#endif
