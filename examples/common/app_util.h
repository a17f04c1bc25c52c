/* Small helpers shared by the example applications: child processes with line pipes
 * (the control plane a real deployment would run over its own RPC layer), clocks and a
 * provider-aware engine config. Addresses and descriptors travel in their text forms
 * (te_addr_format, te_mr_desc_format). Public API only. The tests' harness
 * (tests/harness) uses the same child-process code: this is its only copy. */
#ifndef TENDRIL_APP_UTIL_H
#define TENDRIL_APP_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tendril/te.h"

typedef struct app_proc {
    pid_t pid;
    int to_child;   /* child's stdin */
    int from_child; /* child's stdout */
    char buf[65536];
    size_t have;
} app_proc;

/* Starts this executable (/proc/self/exe) with argv[1..] = args (NULL-terminated).
 * The child's stdin/stdout are pipes; its stderr is inherited. 0 or -errno. */
int app_spawn_self(app_proc *p, const char *const *args);
/* One line to the child ('\n' appended). 0, -EPIPE (child gone). */
int app_send(app_proc *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int app_vsend(app_proc *p, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* One line from the child (without '\n'). 0, -ETIMEDOUT, -EPIPE (child closed/died). */
int app_recv(app_proc *p, char *line, size_t cap, int timeout_ms);
/* Waits for exit: exit status, 128+signal, or -ETIMEDOUT (the child is then killed). */
int app_wait(app_proc *p, int timeout_ms);
void app_kill(app_proc *p, int sig);

/* libfabric's shm provider keeps a shared-memory region per endpoint (the engine names
 * it /dev/shm/tendril-<pid>-..., shm's default is /dev/shm/<pid>:...) and only a clean
 * shutdown removes it. A process that crashed
 * leaves it behind, and a later process that gets the same pid then fails in fi_enable
 * with EBUSY. Call this for a child that died abnormally while it is still a zombie
 * (not yet reaped: then no other process can hold its pid). app_wait does it. */
void app_shm_cleanup_dead(pid_t pid);
/* Blocks until the child has exited, without reaping it (0, or -ETIMEDOUT). */
int app_wait_exited(pid_t pid, int timeout_ms);

/* Child side: line from stdin (0, -ETIMEDOUT, -EPIPE at EOF), reply line to stdout. */
int app_read_line(char *line, size_t cap, int timeout_ms);
void app_reply(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t app_now_us(void);           /* CLOCK_MONOTONIC: comparable across processes */
void app_sleep_us(uint64_t us);

/* Engine config for a provider ("tcp" runs on "lo"; NULL/"" = $TENDRIL_PROVIDER or tcp). */
void app_config(te_config *cfg, const char *provider);

/* 64-bit mixer used to generate verifiable content. */
static inline uint64_t app_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

#endif
