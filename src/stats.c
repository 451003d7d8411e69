/* stats.c — per-pool and per-shape statistics, the slow-query log and ring, and the pool-utilization watchdog. */
#include "stats.h"
#include "parley.h"
#include "shape.h"

const double stats_bucket_bounds[STATS_BUCKETS] = { 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0 };

/* One shape's figures; owned by the shapes table below. */
struct shape_stat {
	struct stats_shape s;        /* what stats_top_shapes hands out */
	UT_hash_handle hh;           /* in shapes, keyed by s.id */
};

static struct shape_stat *shapes;   /* uthash by id, at most STATS_MAX_SHAPES entries */
static int nshapes;
static uint64_t shapes_gen = 1;     /* changes when the table is emptied: a shape's stat_memo from before is stale */
static struct shape_stat other;     /* shapes over the limit, and requests without a shape */

static struct stats_slow_entry slow_ring[STATS_SLOW_RING];
static int slow_next;               /* index the next entry goes to */
static int slow_len;                /* entries in the ring */
static uint64_t slow_total;         /* slow requests since start */

/* Index of the bucket a duration falls in (STATS_BUCKETS = +Inf). */
static int bucket_of(usec_t d)
{
	double sec = (double)d / (double)USEC_PER_SEC;
	for (int i = 0; i < STATS_BUCKETS; i++)
		if (sec <= stats_bucket_bounds[i])
			return i;
	return STATS_BUCKETS;
}

static void copy_trunc(char *dst, size_t n, const char *src)
{
	if (!strlcpy_ok(dst, src ? src : "", n) && n > 4)
		memcpy(dst + n - 4, "...", 4);
}

/* The entry for a shape, created while the table has room; NULL means "count it in other". */
static struct shape_stat *shape_stat_get(struct shape *sh)
{
	struct shape_stat *st;
	uint64_t id;
	if (!sh || sh->id == 0)
		return NULL;
	if (sh->stat_memo && sh->stat_gen == shapes_gen)
		return sh->stat_memo;
	id = sh->id;
	HASH_FIND(hh, shapes, &id, sizeof(id), st);
	if (!st) {
		if (nshapes >= STATS_MAX_SHAPES)
			return NULL;
		st = xcalloc(1, sizeof(*st));
		st->s.id = id;
		copy_trunc(st->s.query, sizeof(st->s.query), sh->normalized);
		HASH_ADD(hh, shapes, s.id, sizeof(st->s.id), st);
		nshapes++;
	}
	sh->stat_memo = st;
	sh->stat_gen = shapes_gen;
	return st;
}

/* Logs a slow request and remembers it in the ring. */
static void record_slow(struct pool *p, struct client *c, struct shape *sh, usec_t duration, bool from_cache)
{
	struct stats_slow_entry *e = &slow_ring[slow_next];
	memset(e, 0, sizeof(*e));
	e->when = wall_usec();
	e->shape_id = sh ? sh->id : 0;
	e->duration = duration;
	e->from_cache = from_cache;
	copy_trunc(e->database, sizeof(e->database), p ? p->dbname : (c ? c->dbname : ""));
	copy_trunc(e->user, sizeof(e->user), p ? p->user : (c ? c->user : ""));
	copy_trunc(e->client_addr, sizeof(e->client_addr), c ? c->addr : "");
	e->client_port = c ? c->port : 0;
	copy_trunc(e->query, sizeof(e->query), sh && sh->normalized ? sh->normalized : "(unknown shape)");
	slow_next = (slow_next + 1) % STATS_SLOW_RING;
	if (slow_len < STATS_SLOW_RING)
		slow_len++;
	slow_total++;
	log_warning("slow query: %.3f ms, shape 0x%016llx, database %s, user %s, client %s:%d%s: %s",
		    (double)duration / (double)USEC_PER_MSEC, (unsigned long long)e->shape_id, e->database, e->user,
		    e->client_addr, e->client_port, from_cache ? " (from cache)" : "", e->query);
}

void stats_query_done(struct pool *p, struct client *c, struct shape *sh, usec_t duration, bool from_cache)
{
	struct shape_stat *st;
	bool in_tx = c ? c->in_tx : false;
	bool slow;
	int b;

	if (duration < 0)
		duration = 0;
	slow = g.cfg.slow_query_threshold > 0 && duration >= g.cfg.slow_query_threshold;
	if (p) {
		if (from_cache) {
			p->stat_cached_count++;
			p->stat_query_count++;
			p->stat_query_time += duration;
			if (!in_tx) {
				p->stat_xact_count++;
				p->stat_xact_time += duration;
			}
		} else if (!in_tx) {
			usec_t xt = duration;
			/* In transaction and statement pooling the server was linked when the transaction began. */
			if (c && c->server && p->mode != POOL_SESSION && c->server->link_time > 0) {
				usec_t since = now_usec() - c->server->link_time;
				if (since > xt)
					xt = since;
			}
			p->stat_xact_time += xt;
		}
		if (slow)
			p->stat_slow_count++;
	}
	st = shape_stat_get(sh);
	if (!st)
		st = &other;
	b = bucket_of(duration);
	st->s.count++;
	st->s.sum += duration;
	st->s.buckets[b]++;
	if (from_cache)
		st->s.cached++;
	if (slow) {
		st->s.slow++;
		if (sh)
			sh->slow++;
		record_slow(p, c, sh, duration, from_cache);
	}
}

void stats_client_waited(struct pool *p, usec_t waited)
{
	if (!p)
		return;
	if (waited < 0)
		waited = 0;
	p->stat_assign_count++;
	p->stat_wait_time += waited;
	if (waited > p->max_wait_seen)
		p->max_wait_seen = waited;
	p->stat_wait_hist[bucket_of(waited)]++;
}

void stats_server_closed(struct pool *p, usec_t lifetime)
{
	if (!p)
		return;
	p->stat_closed_count++;
	p->stat_server_lifetime += lifetime > 0 ? lifetime : 0;
}

double stats_pool_utilization(const struct pool *p)
{
	if (p->pool_size <= 0)
		return 0.0;
	return (double)list_count(&p->servers_active) / (double)p->pool_size;
}

static void take_snapshot(const struct pool *p, struct pool_stat_snapshot *s, usec_t now)
{
	s->at = now;
	s->xact_count = p->stat_xact_count;
	s->query_count = p->stat_query_count;
	s->assign_count = p->stat_assign_count;
	s->closed_count = p->stat_closed_count;
	s->bytes_in = p->stat_bytes_in;
	s->bytes_out = p->stat_bytes_out;
	s->xact_time = p->stat_xact_time;
	s->query_time = p->stat_query_time;
	s->wait_time = p->stat_wait_time;
	s->server_lifetime = p->stat_server_lifetime;
}

/* Per-second rate of a counter between two snapshots dur microseconds apart. */
static uint64_t rate(uint64_t cur, uint64_t prev, usec_t dur)
{
	if (cur < prev || dur <= 0)
		return 0;
	return (uint64_t)((double)(cur - prev) * (double)USEC_PER_SEC / (double)dur);
}

static uint64_t per(usec_t time_cur, usec_t time_prev, uint64_t n_cur, uint64_t n_prev)
{
	if (n_cur <= n_prev || time_cur < time_prev)
		return 0;
	return (uint64_t)(time_cur - time_prev) / (n_cur - n_prev);
}

void stats_pool_averages(const struct pool *p, struct stats_averages *out)
{
	const struct pool_stat_snapshot *cur = &p->stat_cur;
	struct pool_stat_snapshot prev = p->stat_prev;
	usec_t dur;
	memset(out, 0, sizeof(*out));
	if (cur->at == 0)
		return;
	if (prev.at == 0)
		prev.at = g.start_time; /* first period: averages since start */
	dur = cur->at - prev.at;
	out->xact_count = rate(cur->xact_count, prev.xact_count, dur);
	out->query_count = rate(cur->query_count, prev.query_count, dur);
	out->assign_count = rate(cur->assign_count, prev.assign_count, dur);
	out->closed_count = rate(cur->closed_count, prev.closed_count, dur);
	out->bytes_in = rate(cur->bytes_in, prev.bytes_in, dur);
	out->bytes_out = rate(cur->bytes_out, prev.bytes_out, dur);
	out->xact_time = per(cur->xact_time, prev.xact_time, cur->xact_count, prev.xact_count);
	out->query_time = per(cur->query_time, prev.query_time, cur->query_count, prev.query_count);
	out->wait_time = per(cur->wait_time, prev.wait_time, cur->assign_count, prev.assign_count);
	out->server_lifetime = per(cur->server_lifetime, prev.server_lifetime, cur->closed_count, prev.closed_count);
}

/* Warns about a pool that is nearly full or makes clients wait (at most once per stats_period). */
static void watchdog(struct pool *p, usec_t now)
{
	int waiting = list_count(&p->clients_waiting);
	int busy = list_count(&p->servers_active);
	double util = stats_pool_utilization(p);
	usec_t oldest = 0;
	usec_t period = g.cfg.stats_period > 0 ? g.cfg.stats_period : USEC_PER_SEC;

	if (!(waiting > 0 || (p->pool_size > 0 && util > g.cfg.pool_utilization_warn)))
		return;
	if (p->stat_last_warn && now - p->stat_last_warn < period / 2)
		return;
	p->stat_last_warn = now;
	if (waiting > 0)
		oldest = now - list_first_entry(&p->clients_waiting, struct client, node)->request_time;
	log_warning("pool %s/%s: utilization %.2f (%d of %d servers busy, warning above %.2f), %d client%s waiting, "
		    "longest wait %.3f s",
		    p->dbname, p->user, util, busy, p->pool_size, g.cfg.pool_utilization_warn, waiting,
		    waiting == 1 ? "" : "s", (double)oldest / (double)USEC_PER_SEC);
}

void stats_period_tick(usec_t now)
{
	struct pool *p, *tmp;
	struct stats_averages sum, a;
	uint64_t xacts = 0, queries = 0, assigns = 0;

	memset(&sum, 0, sizeof(sum));
	HASH_ITER(hh, g.pools, p, tmp) {
		p->stat_prev = p->stat_cur;
		take_snapshot(p, &p->stat_cur, now);
		stats_pool_averages(p, &a);
		sum.xact_count += a.xact_count;
		sum.query_count += a.query_count;
		sum.bytes_in += a.bytes_in;
		sum.bytes_out += a.bytes_out;
		/* times weighted by counts, for one overall average per transaction/query/assignment */
		sum.xact_time += a.xact_time * a.xact_count;
		sum.query_time += a.query_time * a.query_count;
		sum.wait_time += a.wait_time * a.assign_count;
		xacts += a.xact_count;
		queries += a.query_count;
		assigns += a.assign_count;
		watchdog(p, now);
	}
	if (g.cfg.log_stats && g.pools)
		log_info("stats: %llu xacts/s, %llu queries/s, in %llu B/s, out %llu B/s, xact %llu us, query %llu us, "
			 "wait %llu us",
			 (unsigned long long)sum.xact_count, (unsigned long long)sum.query_count,
			 (unsigned long long)sum.bytes_in, (unsigned long long)sum.bytes_out,
			 (unsigned long long)(xacts ? sum.xact_time / xacts : 0),
			 (unsigned long long)(queries ? sum.query_time / queries : 0),
			 (unsigned long long)(assigns ? sum.wait_time / assigns : 0));
}

void stats_slow_foreach(void (*fn)(const struct stats_slow_entry *e, void *arg), void *arg)
{
	int start = (slow_next - slow_len + STATS_SLOW_RING) % STATS_SLOW_RING;
	for (int i = 0; i < slow_len; i++)
		fn(&slow_ring[(start + i) % STATS_SLOW_RING], arg);
}

uint64_t stats_slow_total(void)
{
	return slow_total;
}

/* Orders shapes by total time, largest first (ties by id, for a stable output). */
static int by_sum_desc(const void *a, const void *b)
{
	const struct shape_stat *x = *(const struct shape_stat *const *)a;
	const struct shape_stat *y = *(const struct shape_stat *const *)b;
	if (x->s.sum != y->s.sum)
		return x->s.sum > y->s.sum ? -1 : 1;
	return x->s.id < y->s.id ? -1 : (x->s.id > y->s.id);
}

void stats_top_shapes(void (*fn)(const struct stats_shape *s, void *arg), void *arg)
{
	struct shape_stat **all, *st, *tmp;
	struct stats_shape rest = other.s;
	int n = 0;

	all = xmalloc(sizeof(*all) * (size_t)(nshapes > 0 ? nshapes : 1));
	HASH_ITER(hh, shapes, st, tmp)
		all[n++] = st;
	qsort(all, (size_t)n, sizeof(*all), by_sum_desc);
	for (int i = 0; i < n; i++) {
		if (i < STATS_TOP_SHAPES) {
			fn(&all[i]->s, arg);
			continue;
		}
		rest.count += all[i]->s.count;
		rest.slow += all[i]->s.slow;
		rest.cached += all[i]->s.cached;
		rest.sum += all[i]->s.sum;
		for (int b = 0; b <= STATS_BUCKETS; b++)
			rest.buckets[b] += all[i]->s.buckets[b];
	}
	free(all);
	rest.id = 0;
	rest.query[0] = '\0';
	fn(&rest, arg);
}

void stats_init(void)
{
	memset(&other, 0, sizeof(other));
	slow_next = slow_len = 0;
	slow_total = 0;
}

void stats_shutdown(void)
{
	struct shape_stat *st, *tmp;
	HASH_ITER(hh, shapes, st, tmp) {
		HASH_DEL(shapes, st);
		free(st);
	}
	nshapes = 0;
	shapes_gen++;
}
