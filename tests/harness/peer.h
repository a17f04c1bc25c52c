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
#endif
