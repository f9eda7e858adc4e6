/* log.h - timestamped logging to stderr (the daemon's log). */
#ifndef VY_LOG_H
#define VY_LOG_H

enum vy_log_level { VY_LOG_DEBUG, VY_LOG_INFO, VY_LOG_WARN, VY_LOG_ERROR };

void vy_log_set_level(enum vy_log_level level);
void vy_log_set_tag(const char *tag);
void vy_log(enum vy_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define vy_debug(...) vy_log(VY_LOG_DEBUG, __VA_ARGS__)
#define vy_info(...) vy_log(VY_LOG_INFO, __VA_ARGS__)
#define vy_warn(...) vy_log(VY_LOG_WARN, __VA_ARGS__)
#define vy_err(...) vy_log(VY_LOG_ERROR, __VA_ARGS__)

#endif
