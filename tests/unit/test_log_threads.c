/* Logging as a user relies on it: the line format (UTC time, pid, kernel thread id,
 * level), TENDRIL_LOG_FILE, and te_log_set_handler (every message reaches the handler
 * from every thread, none after it is replaced, -EDEADLK from inside a handler, a
 * message logged by the handler itself goes to the file). The environment is set before
 * the first message: the library reads it once per process. */
#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"
#include "tendril/te.h"

static char log_path[64];

static char *read_file(void)
{
    FILE *f = fopen(log_path, "r");
    assert_non_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void test_line_format_and_file(void **state)
{
    (void)state;
    tn_log(TE_LOG_INFO, "format probe %d", 42);
    tn_log(TE_LOG_DEBUG, "below the level"); /* TENDRIL_LOG=info */
    char *text = read_file();
    char want[160];
    snprintf(want, sizeof want,
             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z "
             "tendril\\[%ld:%ld\\] info: format probe 42$",
             (long)getpid(), (long)syscall(SYS_gettid));
    regex_t re;
    assert_int_equal(regcomp(&re, want, REG_EXTENDED | REG_NEWLINE | REG_NOSUB), 0);
    if (regexec(&re, text, 0, NULL, 0))
        fail_msg("no line matching %s in:\n%s", want, text);
    regfree(&re);
    assert_null(strstr(text, "below the level"));
}

/* ------------------------------------------------------------- handler ---- */

#define THREADS 4
#define PER_THREAD 500

typedef struct seen {
    pthread_mutex_t lock;
    int count[THREADS];
    int bad_level;
    int deadlk;
} seen;

static void collect(void *arg, int level, const char *msg)
{
    seen *s = arg;
    int t = -1, i = -1;
    if (sscanf(msg, "thread %d message %d", &t, &i) != 2 || t < 0 || t >= THREADS) {
        if (!strcmp(msg, "from the handler test")) {
            /* The handler may not replace itself, and its own message goes to the file. */
            if (te_log_set_handler(NULL, NULL) == -EDEADLK) {
                pthread_mutex_lock(&s->lock);
                s->deadlk++;
                pthread_mutex_unlock(&s->lock);
            }
            tn_log(TE_LOG_WARN, "logged inside the handler");
        }
        return;
    }
    pthread_mutex_lock(&s->lock);
    s->count[t]++;
    if (level != TE_LOG_WARN) s->bad_level++;
    pthread_mutex_unlock(&s->lock);
}

static void *logger(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int i = 0; i < PER_THREAD; i++) tn_log(TE_LOG_WARN, "thread %d message %d", t, i);
    return NULL;
}

static void test_handler_threads(void **state)
{
    (void)state;
    seen s = {.lock = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(te_log_set_handler(collect, &s), 0);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, logger, (void *)(intptr_t)t), 0);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    tn_log(TE_LOG_WARN, "from the handler test");
    assert_int_equal(te_log_set_handler(NULL, NULL), 0);
    /* After the reset nothing reaches the old handler: its counts stay as they are. */
    tn_log(TE_LOG_WARN, "thread 0 message 9999");
    for (int t = 0; t < THREADS; t++) assert_int_equal(s.count[t], PER_THREAD);
    assert_int_equal(s.bad_level, 0);
    assert_int_equal(s.deadlk, 1);
    char *text = read_file();
    assert_null(strstr(text, "thread 1 message")); /* handled lines do not reach the file */
    assert_non_null(strstr(text, "warn: logged inside the handler"));
    assert_non_null(strstr(text, "warn: thread 0 message 9999"));
}

/* Replacing the handler while other threads log: each message goes to exactly one of the
 * two handlers, and once the replacement returned, the first one is never called. */
static _Atomic int replaced_done;
static _Atomic int late_calls;
static _Atomic int calls_a, calls_b;

static void handler_a(void *arg, int level, const char *msg)
{
    (void)arg, (void)level, (void)msg;
    if (atomic_load(&replaced_done)) atomic_fetch_add(&late_calls, 1);
    atomic_fetch_add(&calls_a, 1);
}

static void handler_b(void *arg, int level, const char *msg)
{
    (void)arg, (void)level, (void)msg;
    atomic_fetch_add(&calls_b, 1);
}

static void test_handler_replace_under_load(void **state)
{
    (void)state;
    assert_int_equal(te_log_set_handler(handler_a, NULL), 0);
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, logger, (void *)(intptr_t)t), 0);
    usleep(1000);
    assert_int_equal(te_log_set_handler(handler_b, NULL), 0);
    atomic_store(&replaced_done, 1);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    assert_int_equal(te_log_set_handler(NULL, NULL), 0);
    assert_int_equal(atomic_load(&late_calls), 0);
    assert_int_equal(atomic_load(&calls_a) + atomic_load(&calls_b), THREADS * PER_THREAD);
}

int main(void)
{
    snprintf(log_path, sizeof log_path, "/tmp/tendril-log-test-%ld.log", (long)getpid());
    unlink(log_path);
    setenv("TENDRIL_LOG_FILE", log_path, 1);
    setenv("TENDRIL_LOG", "info", 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_format_and_file),
        cmocka_unit_test(test_handler_threads),
        cmocka_unit_test(test_handler_replace_under_load),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(log_path);
    return rc;
}
