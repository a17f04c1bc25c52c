/* Test harness for integration tests: provider selection, child processes (the test
 * binary re-executes itself with "--child ROLE"), line-based pipes with timeouts;
 * addresses and descriptors travel between processes in their text forms. */
#ifndef TENDRIL_TEST_HARNESS_H
#define TENDRIL_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "app_util.h"
#include "tendril/te.h"

/* Provider under test: $TENDRIL_TEST_PROVIDER, default "tcp". */
const char *th_provider(void);
/* te_config for the provider under test (tcp runs on "lo"). */
void th_config(te_config *cfg);

/* Child processes: the code is examples/common/app_util.c's (its only copy); these are
 * its names in the tests. The child is this executable run as "--child role arg". */
typedef app_proc th_proc;

/* Starts this executable as "--child role [arg]". 0 or -errno. */
int th_spawn(th_proc *p, const char *role, const char *arg);
/* Line I/O with the child; -ETIMEDOUT or -EPIPE (child gone). Lines exclude '\n'. */
#define th_send app_send
#define th_recv app_recv
/* Sends a command and returns the reply line. */
int th_ask(th_proc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Waits for exit (exit status, or 128+signal); kills the child after timeout_ms and
 * returns -ETIMEDOUT. Removes the shm endpoints of a child that died abnormally. */
#define th_wait app_wait
#define th_kill app_kill

/* Child side: read a command line from stdin / write a reply line to stdout. */
#define th_child_read app_read_line
#define th_child_reply app_reply

/* Deterministic content: byte at absolute position i of stream `seed`. */
static inline uint8_t th_pattern(uint64_t seed, uint64_t i)
{
    uint64_t x = (seed + 1) * 0x9e3779b97f4a7c15ull ^ (i * 0xbf58476d1ce4e5b9ull);
    x ^= x >> 31;
    return (uint8_t)(x * 0x94d049bb133111ebull >> 56);
}
void th_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t start);
uint64_t th_hash(const uint8_t *buf, size_t len);

#endif
