/* Logging: level from TENDRIL_LOG, lines to stderr or TENDRIL_LOG_FILE, or messages to
 * the application's handler (te_log_set_handler).
 *
 * A line is written with one write(2) to an O_APPEND descriptor, so lines from several
 * threads and processes sharing a file do not interleave. The handler is read under a
 * read lock for the duration of its call; te_log_set_handler takes the write lock, which
 * is what guarantees that the previous handler has returned when it does. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/env.h"
#include "core/error.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static int level = TN_LOG_WARN;
static int sink_fd = 2;
static const char *bad_level;   /* a TENDRIL_LOG value that was not understood */
static int log_file_errno;      /* TENDRIL_LOG_FILE could not be opened */
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static pthread_rwlock_t handler_lock = PTHREAD_RWLOCK_INITIALIZER;
static te_log_handler handler;
static void *handler_arg;
static _Thread_local bool in_handler;

/* Reads the environment once. Warnings about it are emitted after the once-block (a
 * warning from inside it would re-enter tn_log_level). */
static void init(void)
{
    const char *s = tn_env_get("TENDRIL_LOG");
    if (s) {
        int k = 0;
        while (k < 4 && strcmp(s, level_names[k])) k++;
        if (k < 4) level = k;
        else bad_level = s;
    }
    const char *path = tn_env_get("TENDRIL_LOG_FILE");
    if (path) {
        int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd >= 0) sink_fd = fd;
        else log_file_errno = errno;
    }
}

static void report_env_once(void)
{
    static _Atomic bool reported;
    if (!bad_level && !log_file_errno) return;
    if (__atomic_exchange_n(&reported, true, __ATOMIC_SEQ_CST)) return;
    if (bad_level)
        tn_log(TN_LOG_WARN, "TENDRIL_LOG=%s is not valid (accepted: error|warn|info|debug); "
               "using warn", bad_level);
    if (log_file_errno)
        tn_log(TN_LOG_WARN, "TENDRIL_LOG_FILE=%s: cannot open (%s); logging to stderr",
               tn_env_get("TENDRIL_LOG_FILE"), strerror(log_file_errno));
}

int tn_log_level(void)
{
    pthread_once(&init_once, init);
    report_env_once();
    return level;
}

/* "2026-12-07T04:15:25.123456Z tendril[PID:TID] LEVEL: msg\n" with one write. */
static void write_line(int lvl, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char line[1200];
    int n = snprintf(line, sizeof line,
                     "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ tendril[%ld:%ld] %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000, (long)getpid(), (long)syscall(SYS_gettid),
                     level_names[lvl], msg);
    if (n < 0) return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(sink_fd, line, (size_t)n);
    (void)w; /* nowhere left to report a failed log write */
}

void tn_log(int lvl, const char *fmt, ...)
{
    if (lvl < TN_LOG_ERROR || lvl > TN_LOG_DEBUG || lvl > tn_log_level()) return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    if (!in_handler) {
        pthread_rwlock_rdlock(&handler_lock);
        if (handler) {
            in_handler = true;
            handler(handler_arg, lvl, msg);
            in_handler = false;
            pthread_rwlock_unlock(&handler_lock);
            return;
        }
        pthread_rwlock_unlock(&handler_lock);
    }
    write_line(lvl, msg);
}

int te_log_set_handler(te_log_handler fn, void *arg)
{
    tn_err_clear();
    if (in_handler)
        return tn_err(-EDEADLK, "te_log_set_handler: called from inside a log handler");
    pthread_rwlock_wrlock(&handler_lock);
    handler = fn;
    handler_arg = arg;
    pthread_rwlock_unlock(&handler_lock);
    return 0;
}
