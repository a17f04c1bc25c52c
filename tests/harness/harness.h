/* Test harness for integration tests: provider selection, child processes (the test
 * binary re-executes itself with "--child ROLE"), line-based pipes with timeouts, and
 * the hex helpers that carry addresses and descriptors between processes. */
#ifndef TENDRIL_TEST_HARNESS_H
#define TENDRIL_TEST_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include "tendril/te.h"

/* Provider under test: $TENDRIL_TEST_PROVIDER, default "tcp". */
const char *th_provider(void);
/* te_config for the provider under test (tcp runs on "lo"). */
void th_config(te_config *cfg);

typedef struct th_proc {
    pid_t pid;
    int to_child;   /* child's stdin */
    int from_child; /* child's stdout */
    char buf[65536];
    size_t have;
} th_proc;

/* Starts this executable as "--child role [arg]". 0 or -errno. */
int th_spawn(th_proc *p, const char *role, const char *arg);
/* Line I/O with the child; -ETIMEDOUT or -EPIPE (child gone). Lines exclude '\n'. */
int th_send(th_proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int th_recv(th_proc *p, char *line, size_t cap, int timeout_ms);
/* Sends a command and returns the reply line. */
int th_ask(th_proc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
/* Waits for exit (status as from waitpid's WEXITSTATUS, or 128+signal); kills the child
 * after timeout_ms and returns -ETIMEDOUT. */
int th_wait(th_proc *p, int timeout_ms);
void th_kill(th_proc *p, int sig);

/* Child side: read a command line from stdin / write a reply line to stdout. */
int th_child_read(char *line, size_t cap, int timeout_ms);
void th_child_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Hex forms of descriptors (addresses use te_addr_format/parse). */
int th_desc_to_hex(const te_mr_desc *d, char *out, size_t cap);
int th_desc_from_hex(const char *hex, te_mr_desc *d);

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
