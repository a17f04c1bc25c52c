/* Logging to stderr, level from TENDRIL_LOG=error|warn|info|debug (default warn). */
#ifndef TENDRIL_CORE_LOG_H
#define TENDRIL_CORE_LOG_H

enum te_log_level { TE_LOG_ERROR = 0, TE_LOG_WARN = 1, TE_LOG_INFO = 2, TE_LOG_DEBUG = 3 };

int te_log_level(void);
void te_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TE_LOGE(...) te_log(TE_LOG_ERROR, __VA_ARGS__)
#define TE_LOGW(...) te_log(TE_LOG_WARN, __VA_ARGS__)
#define TE_LOGI(...) do { if (te_log_level() >= TE_LOG_INFO) te_log(TE_LOG_INFO, __VA_ARGS__); } while (0)
#define TE_LOGD(...) do { if (te_log_level() >= TE_LOG_DEBUG) te_log(TE_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
