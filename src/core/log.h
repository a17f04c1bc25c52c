/* Logging to stderr, level from TENDRIL_LOG=error|warn|info|debug (default warn). */
#ifndef TENDRIL_CORE_LOG_H
#define TENDRIL_CORE_LOG_H

enum tn_log_level { TN_LOG_ERROR = 0, TN_LOG_WARN = 1, TN_LOG_INFO = 2, TN_LOG_DEBUG = 3 };

int tn_log_level(void);
void tn_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define TN_LOGE(...) tn_log(TN_LOG_ERROR, __VA_ARGS__)
#define TN_LOGW(...) tn_log(TN_LOG_WARN, __VA_ARGS__)
#define TN_LOGI(...) do { if (tn_log_level() >= TN_LOG_INFO) tn_log(TN_LOG_INFO, __VA_ARGS__); } while (0)
#define TN_LOGD(...) do { if (tn_log_level() >= TN_LOG_DEBUG) tn_log(TN_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
