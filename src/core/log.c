#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int level = -1;
static pthread_once_t level_once = PTHREAD_ONCE_INIT;

static void read_level(void)
{
    const char *s = getenv("TENDRIL_LOG");
    level = TN_LOG_WARN;
    if (!s) return;
    if (!strcmp(s, "error")) level = TN_LOG_ERROR;
    else if (!strcmp(s, "warn")) level = TN_LOG_WARN;
    else if (!strcmp(s, "info")) level = TN_LOG_INFO;
    else if (!strcmp(s, "debug")) level = TN_LOG_DEBUG;
}

int tn_log_level(void)
{
    pthread_once(&level_once, read_level);
    return level;
}

void tn_log(int lvl, const char *fmt, ...)
{
    static const char *names[] = {"error", "warn", "info", "debug"};
    if (lvl > tn_log_level()) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "tendril %s: %s\n", names[lvl], line);
}
