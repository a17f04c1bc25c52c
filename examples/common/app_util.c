#define _GNU_SOURCE
#include "app_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t app_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000ull + (uint64_t)ts.tv_nsec / 1000u;
}

void app_sleep_us(uint64_t us)
{
    struct timespec ts = {(time_t)(us / 1000000u), (long)(us % 1000000u) * 1000};
    while (nanosleep(&ts, &ts) && errno == EINTR) {
    }
}

void app_config(te_config *cfg, const char *provider)
{
    te_config_init(cfg);
    if (!provider || !*provider) provider = getenv("TENDRIL_PROVIDER");
    if (!provider || !*provider) provider = "tcp";
    cfg->provider = provider;
    cfg->n_groups = 1;
    cfg->groups[0].cuda_device = TE_DEVICE_HOST; /* GPU: the CUDA ordinal of the KV / weights */
    cfg->groups[0].n_nics = 1;
    cfg->groups[0].worker_cpu = -1;
    if (strstr(provider, "tcp")) cfg->groups[0].nics[0] = "lo";
}

int app_spawn_self(app_proc *p, const char *const *args)
{
    int in[2], out[2];
    memset(p, 0, sizeof *p);
    p->pid = -1;
    signal(SIGPIPE, SIG_IGN); /* a dead child must give -EPIPE, not kill us */
    if (pipe2(in, O_CLOEXEC)) return -errno;
    if (pipe2(out, O_CLOEXEC)) {
        int r = -errno;
        close(in[0]);
        close(in[1]);
        return r;
    }
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) {
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return -ENOENT;
    }
    self[n] = '\0';
    const char *argv[32];
    size_t k = 0;
    argv[k++] = self;
    for (; args[k - 1] && k < 31; k++) argv[k] = args[k - 1];
    argv[k] = NULL;
    fflush(stdout);
    fflush(stderr);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        return r;
    }
    if (pid == 0) {
        /* The child dies with us: a child stuck inside a provider call (libfabric 1.17's
         * shm spins forever on the region lock of a peer that died holding it) would
         * otherwise outlive a failed test and load the machine (seen after a TSan halt). */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127); /* we already missed it */
        dup2(in[0], 0);
        dup2(out[1], 1);
        execv(self, (char *const *)argv);
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
            return errno == EPIPE ? -EPIPE : -errno;
        }
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int vline(int fd, const char *fmt, va_list ap)
{
    char line[65536];
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    if (n < 0 || n >= (int)sizeof line - 1) return -EMSGSIZE;
    line[n++] = '\n';
    return write_all(fd, line, (size_t)n);
}

int app_vsend(app_proc *p, const char *fmt, va_list ap)
{
    if (p->to_child < 0) return -EPIPE;
    return vline(p->to_child, fmt, ap);
}

int app_send(app_proc *p, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = app_vsend(p, fmt, ap);
    va_end(ap);
    return r;
}

/* Reads one line from fd into a buffer that keeps leftovers between calls. */
static int read_line(int fd, char *buf, size_t bufcap, size_t *have, char *line, size_t cap,
                     int timeout_ms)
{
    uint64_t deadline = app_now_us() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000u;
    for (;;) {
        char *nl = memchr(buf, '\n', *have);
        if (nl) {
            size_t len = (size_t)(nl - buf);
            size_t c = len < cap - 1 ? len : cap - 1;
            memcpy(line, buf, c);
            line[c] = '\0';
            memmove(buf, nl + 1, *have - len - 1);
            *have -= len + 1;
            return 0;
        }
        if (*have == bufcap) *have = 0; /* overlong line: drop */
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            uint64_t now = app_now_us();
            if (now >= deadline) return -ETIMEDOUT;
            wait_ms = (int)((deadline - now + 999) / 1000);
        }
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int r = poll(&pfd, 1, wait_ms);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -errno;
        }
        if (r == 0) return -ETIMEDOUT;
        ssize_t n = read(fd, buf + *have, bufcap - *have);
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            return -errno;
        }
        if (n == 0) return -EPIPE;
        *have += (size_t)n;
    }
}

int app_recv(app_proc *p, char *line, size_t cap, int timeout_ms)
{
    if (p->from_child < 0) return -EPIPE;
    return read_line(p->from_child, p->buf, sizeof p->buf, &p->have, line, cap, timeout_ms);
}

int app_wait(app_proc *p, int timeout_ms)
{
    if (p->pid <= 0) return -ECHILD;
    if (p->to_child >= 0) close(p->to_child);
    p->to_child = -1;
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : app_now_us() + (uint64_t)timeout_ms * 1000u;
    int st = 0, ret;
    siginfo_t si;
    if (app_wait_exited(p->pid, timeout_ms) == 0) {
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
            si.si_pid == p->pid && (si.si_code != CLD_EXITED || si.si_status != 0))
            app_shm_cleanup_dead(p->pid);
    }
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            ret = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
        if (r < 0 && errno != EINTR) {
            ret = -errno;
            break;
        }
        if (app_now_us() >= deadline) {
            kill(p->pid, SIGKILL);
            if (app_wait_exited(p->pid, 5000) == 0) app_shm_cleanup_dead(p->pid);
            waitpid(p->pid, &st, 0);
            ret = -ETIMEDOUT;
            break;
        }
        app_sleep_us(2000);
    }
    p->pid = -1;
    if (p->from_child >= 0) close(p->from_child);
    p->from_child = -1;
    return ret;
}

int app_wait_exited(pid_t pid, int timeout_ms)
{
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX : app_now_us() + (uint64_t)timeout_ms * 1000u;
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        int r = waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT);
        if (r == 0 && si.si_pid == pid) return 0;
        if (r < 0 && errno != EINTR) return -errno;
        if (app_now_us() >= deadline) return -ETIMEDOUT;
        app_sleep_us(2000);
    }
}

void app_shm_cleanup_dead(pid_t pid)
{
    /* The engine names its shm endpoints tendril-<pid>-<random>-<n>; raw libfabric
     * endpoints keep shm's default <pid>:... */
    char prefix[32], named[48];
    int n = snprintf(prefix, sizeof prefix, "%d:", (int)pid);
    int m = snprintf(named, sizeof named, "tendril-%d-", (int)pid);
    DIR *d = opendir("/dev/shm");
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)))
        if (!strncmp(de->d_name, prefix, (size_t)n) || !strncmp(de->d_name, named, (size_t)m)) {
            char path[300];
            snprintf(path, sizeof path, "/dev/shm/%.250s", de->d_name);
            unlink(path);
        }
    closedir(d);
}

void app_kill(app_proc *p, int sig)
{
    if (p->pid > 0) kill(p->pid, sig);
}

static char g_in[65536];
static size_t g_in_have;

int app_read_line(char *line, size_t cap, int timeout_ms)
{
    return read_line(0, g_in, sizeof g_in, &g_in_have, line, cap, timeout_ms);
}

void app_reply(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    (void)vline(1, fmt, ap);
    va_end(ap);
}
