/* The library's logging (sink, format and handler in log.c; the public side, the level
 * enum and te_log_set_handler, in tendril/te.h). Level from TENDRIL_LOG (default warn). */
#ifndef TENDRIL_CORE_LOG_H
#define TENDRIL_CORE_LOG_H

#include "tendril/te.h"

/* Internal code names the levels TN_LOG_*; their values are the public enum te_log_level's
 * (te_log_set_handler passes them to the application). */
enum {
    TN_LOG_ERROR = TE_LOG_ERROR,
    TN_LOG_WARN = TE_LOG_WARN,
    TN_LOG_INFO = TE_LOG_INFO,
    TN_LOG_DEBUG = TE_LOG_DEBUG
};

int tn_log_level(void);
void tn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TN_LOGE(...) tn_log(TN_LOG_ERROR, __VA_ARGS__)
#define TN_LOGW(...) tn_log(TN_LOG_WARN, __VA_ARGS__)
#define TN_LOGI(...) do { if (tn_log_level() >= TN_LOG_INFO) tn_log(TN_LOG_INFO, __VA_ARGS__); } while (0)
#define TN_LOGD(...) do { if (tn_log_level() >= TN_LOG_DEBUG) tn_log(TN_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
