#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/clock.h"

const char *th_provider(void)
{
    const char *p = getenv("TENDRIL_TEST_PROVIDER");
    return (p && *p) ? p : "tcp";
}

void th_config(te_config *cfg)
{
    te_config_init(cfg);
    cfg->provider = th_provider();
    cfg->n_groups = 1;
    cfg->groups[0].cuda_device = TE_DEVICE_HOST;
    cfg->groups[0].n_nics = 1;
    cfg->groups[0].worker_cpu = -1;
    if (strstr(cfg->provider, "tcp")) cfg->groups[0].nics[0] = "lo";
}

int th_spawn(th_proc *p, const char *role, const char *arg)
{
    int in[2], out[2];
    memset(p, 0, sizeof *p);
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC)) return -errno;
    pid_t pid = fork();
    if (pid < 0) return -errno;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
        if (n <= 0) _exit(127);
        self[n] = '\0';
        char *argv[] = {self, "--child", (char *)role, (char *)(arg ? arg : ""), NULL};
        execv(self, argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->pid = pid;
    p->to_child = in[1];
    p->from_child = out[0];
    return 0;
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int vsend(int fd, const char *fmt, va_list ap)
{
    char line[65536];
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    if (n < 0 || n >= (int)sizeof line - 1) return -EMSGSIZE;
    line[n++] = '\n';
    return write_all(fd, line, (size_t)n);
}

int th_send(th_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsend(p->to_child, fmt, ap);
    va_end(ap);
    return r;
}

/* Reads one line from fd using buf/have as carry-over storage. */
static int read_line(int fd, char *buf, size_t *have, size_t bufcap, char *line, size_t cap,
                     int timeout_ms)
{
    uint64_t deadline = te_deadline_ms(timeout_ms);
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        if (nl) {
            size_t len = (size_t)(nl - buf);
            size_t cp = len < cap - 1 ? len : cap - 1;
            memcpy(line, buf, cp);
            line[cp] = '\0';
            memmove(buf, nl + 1, *have - len - 1);
            *have -= len + 1;
            return 0;
        }
        if (*have == bufcap) return -EMSGSIZE;
        uint64_t now = te_now_ns();
        if (now >= deadline) return -ETIMEDOUT;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        int ms = deadline == UINT64_MAX ? -1 : (int)((deadline - now) / 1000000ull + 1);
        int r = poll(&pf, 1, ms);
        if (r < 0 && errno != EINTR) return -errno;
        if (r <= 0) continue;
        ssize_t n = read(fd, buf + *have, bufcap - *have);
        if (n == 0) return -EPIPE;
        if (n < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        *have += (size_t)n;
    }
}

int th_recv(th_proc *p, char *line, size_t cap, int timeout_ms)
{
    return read_line(p->from_child, p->buf, &p->have, sizeof p->buf, line, cap, timeout_ms);
}

int th_ask(th_proc *p, char *reply, size_t cap, int timeout_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = vsend(p->to_child, fmt, ap);
    va_end(ap);
    if (r) return r;
    return th_recv(p, reply, cap, timeout_ms);
}

/* A child that died by a signal cannot close its libfabric shm endpoint, whose region
 * then stays in /dev/shm; the engine names them tendril-<pid>-... (src/transport/fabric.c). */
static void remove_shm_leftovers(pid_t pid)
{
    char pattern[64];
    snprintf(pattern, sizeof pattern, "/dev/shm/tendril-%d-*", (int)pid);
    glob_t g;
    if (glob(pattern, 0, NULL, &g) == 0)
        for (size_t k = 0; k < g.gl_pathc; k++) unlink(g.gl_pathv[k]);
    globfree(&g);
}

int th_wait(th_proc *p, int timeout_ms)
{
    if (p->pid <= 0) return -ECHILD;
    close(p->to_child);
    p->to_child = -1;
    uint64_t deadline = te_deadline_ms(timeout_ms);
    int st;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) break;
        if (te_now_ns() >= deadline) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            close(p->from_child);
            remove_shm_leftovers(p->pid);
            p->pid = 0;
            return -ETIMEDOUT;
        }
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    }
    close(p->from_child);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) remove_shm_leftovers(p->pid);
    p->pid = 0;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

void th_kill(th_proc *p, int sig)
{
    if (p->pid > 0) kill(p->pid, sig);
}

static char child_buf[65536];
static size_t child_have;

int th_child_read(char *line, size_t cap, int timeout_ms)
{
    return read_line(0, child_buf, &child_have, sizeof child_buf, line, cap, timeout_ms);
}

void th_child_reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsend(1, fmt, ap);
    va_end(ap);
}

int th_desc_to_hex(const te_mr_desc *d, char *out, size_t cap)
{
    uint8_t raw[TE_MR_DESC_ENCODED_MAX];
    size_t n;
    int r = te_mr_desc_encode(d, raw, sizeof raw, &n);
    if (r) return r;
    if (cap < 2 * n + 1) return -ENOSPC;
    for (size_t k = 0; k < n; k++) sprintf(out + 2 * k, "%02x", raw[k]);
    return 0;
}

int th_desc_from_hex(const char *hex, te_mr_desc *d)
{
    uint8_t raw[TE_MR_DESC_ENCODED_MAX];
    size_t n = strlen(hex) / 2;
    if (n > sizeof raw) return -EMSGSIZE;
    for (size_t k = 0; k < n; k++) {
        unsigned v;
        if (sscanf(hex + 2 * k, "%2x", &v) != 1) return -EINVAL;
        raw[k] = (uint8_t)v;
    }
    return te_mr_desc_decode(raw, n, d);
}

void th_fill(uint8_t *buf, size_t len, uint64_t seed, uint64_t start)
{
    for (size_t k = 0; k < len; k++) buf[k] = th_pattern(seed, start + k);
}

uint64_t th_hash(const uint8_t *buf, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < len; k++) h = (h ^ buf[k]) * 1099511628211ull;
    return h;
}
