/* log.h — leveled logging to stderr or a logfile; macros check the level before formatting. */
#ifndef PARLEY_LOG_H
#define PARLEY_LOG_H
#include "common.h"

enum log_level { LOG_LVL_FATAL = 0, LOG_LVL_ERROR, LOG_LVL_WARNING, LOG_LVL_LOG, LOG_LVL_DEBUG, LOG_LVL_NOISE };

extern int log_level_current;

/* Opens (or reopens, on SIGHUP) the log file; NULL or "" means stderr. Returns 0 or -1. */
int log_open(const char *path);
void log_set_quiet(bool quiet);
void log_write(enum log_level lvl, const char *fmt, ...) PRINTF_LIKE(2, 3);

#define log_at(lvl, ...) do { if ((lvl) <= log_level_current) log_write((lvl), __VA_ARGS__); } while (0)
#define log_fatal(...) log_at(LOG_LVL_FATAL, __VA_ARGS__)
#define log_error(...) log_at(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warning(...) log_at(LOG_LVL_WARNING, __VA_ARGS__)
#define log_info(...) log_at(LOG_LVL_LOG, __VA_ARGS__)
#define log_debug(...) log_at(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_noise(...) log_at(LOG_LVL_NOISE, __VA_ARGS__)

#endif
