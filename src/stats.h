/* stats.h — counters and histograms the data path feeds, the slow-query log, and the pool-utilization watchdog. */
#ifndef PARLEY_STATS_H
#define PARLEY_STATS_H
#include "common.h"

struct pool;
struct client;
struct shape;

/* The relay calls this once per finished request: a simple Query, or an extended-protocol batch ending in Sync.
 * shape is the request's shape (NULL when unknown, e.g. a bare Sync); from_cache says it was answered from the
 * cache without a server. Updates per-pool and per-shape figures, the duration histograms, and the slow-query log
 * (duration >= slow_query_threshold: logged with shape id and normalized text only, never values). */
void stats_query_done(struct pool *p, struct client *c, struct shape *sh, usec_t duration, bool from_cache);

/* A client waited `waited` for a server (pool.c calls this when it links a waiting client). */
void stats_client_waited(struct pool *p, usec_t waited);

/* Called every stats_period by main.c: per-pool averages for SHOW STATS_AVERAGES, the utilization watchdog. */
void stats_period_tick(usec_t now);

void stats_init(void);
void stats_shutdown(void);

#endif
