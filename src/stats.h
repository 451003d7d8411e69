/* stats.h — counters and histograms the data path feeds, the slow-query log, and the pool-utilization watchdog. */
#ifndef PARLEY_STATS_H
#define PARLEY_STATS_H
#include "common.h"

struct pool;
struct client;
struct shape;

/* Upper bounds (seconds) of the duration histograms; a final +Inf bucket follows. The wait-time histogram of each
 * pool (struct pool's stat_wait_hist, POOL_WAIT_BUCKETS = STATS_BUCKETS + 1) uses the same bounds. */
#define STATS_BUCKETS 11
extern const double stats_bucket_bounds[STATS_BUCKETS];

/* Entries kept in the slow-query ring for SHOW SLOW_QUERIES. */
#define STATS_SLOW_RING 100
/* Shapes kept with their own duration histogram; more fold into the "other" entry (id 0). */
#define STATS_MAX_SHAPES 1000
/* Shapes exported to Prometheus with their own labels (the top ones by total time); the rest fold into "other". */
#define STATS_TOP_SHAPES 20

/* The relay calls this once per finished request: a simple Query, or an extended-protocol batch ending in Sync.
 * shape is the request's shape (NULL when unknown, e.g. a bare Sync); from_cache says it was answered from the
 * cache without a server. c may be NULL. Does:
 *  - requests answered from the cache: counts them in p->stat_query_count / stat_query_time (and stat_xact_count
 *    when the client is not inside a transaction), because no server sees them. Requests a server answered are
 *    counted there by the data path at ReadyForQuery; this function never counts them a second time;
 *  - requests a server answered that end a transaction (client not in_tx): adds the transaction's time to
 *    p->stat_xact_time (since the server was linked in transaction/statement pooling, else the request's duration);
 *  - the per-shape duration histogram (bounded, see STATS_MAX_SHAPES) and the pool's stat_cached_count;
 *  - the slow-query log (duration >= slow_query_threshold, if not 0): a warning with shape id and normalized text only
 *    (never literal values or parameters), database, user and client address; the ring for SHOW SLOW_QUERIES;
 *    p->stat_slow_count, sh->slow and the per-shape slow counter.
 * The other struct shape statistics (calls, hits, misses, total_time, max_time, last_refusal) belong to the relay. */
void stats_query_done(struct pool *p, struct client *c, struct shape *sh, usec_t duration, bool from_cache);

/* A server was linked to a client of p (pool.c's link_pair calls this for every assignment); waited is how long the
 * client queued for it (0 if a server was free). Feeds total_wait_time, the assignment count, max wait and the
 * wait-time histogram. */
void stats_client_waited(struct pool *p, usec_t waited);

/* Called every stats_period by main.c: snapshots for SHOW STATS_AVERAGES, the log_stats line, and the utilization
 * watchdog (a warning per pool whose utilization is above pool_utilization_warn or that has clients waiting). */
void stats_period_tick(usec_t now);

/* A pool's utilization: servers linked to clients over pool_size (0 when pool_size is 0). */
double stats_pool_utilization(const struct pool *p);
/* Averages over the last stats_period of a set of snapshots (per second for counts and bytes, microseconds per
 * transaction/query/assignment for times). */
struct stats_averages {
	uint64_t xact_count, query_count, assign_count, closed_count, bytes_in, bytes_out;
	uint64_t xact_time, query_time, wait_time, server_lifetime;
};
void stats_pool_averages(const struct pool *p, struct stats_averages *out);

/* One slow request as remembered for SHOW SLOW_QUERIES. */
struct stats_slow_entry {
	usec_t when;                 /* wall clock when it finished */
	uint64_t shape_id;           /* 0 when the shape was unknown */
	usec_t duration;
	bool from_cache;
	char database[64];
	char user[64];
	char client_addr[64];
	int client_port;
	char query[512];             /* normalized text (no literal values), truncated */
};
/* Visits the ring, oldest first. */
void stats_slow_foreach(void (*fn)(const struct stats_slow_entry *e, void *arg), void *arg);
uint64_t stats_slow_total(void);

/* Per-shape figures kept by stats.c (for metrics). count/sum/buckets describe request durations. */
struct stats_shape {
	uint64_t id;                 /* shape id; 0 = "other" */
	char query[256];             /* normalized text, truncated ("" for other) */
	uint64_t count, slow, cached;
	usec_t sum;
	uint64_t buckets[STATS_BUCKETS + 1]; /* not cumulative; last = +Inf */
};
/* Visits the STATS_TOP_SHAPES shapes with the largest total time, then one "other" entry (id 0) holding the sum
 * of every other shape. */
void stats_top_shapes(void (*fn)(const struct stats_shape *s, void *arg), void *arg);

/* Reserved for the data path: a server connection of p closed after living `lifetime`. Feeds
 * total_server_closed_count and total_server_lifetime (0 until something calls it). */
void stats_server_closed(struct pool *p, usec_t lifetime);

void stats_init(void);
void stats_shutdown(void);

#endif
