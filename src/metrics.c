/* metrics.c — the Prometheus endpoint: /metrics in the text exposition format and /healthz, over libevent's evhttp. */
#include "metrics.h"
#include "parley.h"
#include "stats.h"
#include "shape.h"
#include "cache.h"
#include "notify.h"
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>

/* Seconds an HTTP client may take to send its request (or stay idle) before parley closes the connection. */
#define METRICS_HTTP_TIMEOUT 5
#define METRICS_MAX_HEADERS 8192
#define METRICS_MAX_BODY 1024

static struct evhttp *http;               /* the listener, or NULL when disabled */
static char *bound_addr;                  /* where it listens (for restart decisions) */
static int bound_port;

/* Appends v as a label value: backslash, double quote and newline escaped as the format requires. */
static void add_label_value(struct evbuffer *b, const char *v)
{
	for (; v && *v; v++) {
		switch (*v) {
		case '\\':
			evbuffer_add(b, "\\\\", 2);
			break;
		case '"':
			evbuffer_add(b, "\\\"", 2);
			break;
		case '\n':
			evbuffer_add(b, "\\n", 2);
			break;
		default:
			evbuffer_add(b, v, 1);
		}
	}
}

static void family(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{database="..",user=".."[,extra]} */
static void pool_labels(struct evbuffer *b, const char *name, const struct pool *p, const char *extra_k,
			const char *extra_v)
{
	evbuffer_add_printf(b, "%s{database=\"", name);
	add_label_value(b, p->dbname);
	evbuffer_add(b, "\",user=\"", 8);
	add_label_value(b, p->user);
	evbuffer_add(b, "\"", 1);
	if (extra_k) {
		evbuffer_add_printf(b, ",%s=\"", extra_k);
		add_label_value(b, extra_v);
		evbuffer_add(b, "\"", 1);
	}
	evbuffer_add(b, "} ", 2);
}

static double secs(usec_t u)
{
	return (double)u / (double)USEC_PER_SEC;
}

/* A sample value: integers exactly (counters up to 2^53), others with 9 significant digits. */
static void add_value(struct evbuffer *b, double v)
{
	if (v == (double)(int64_t)v && v < 9007199254740992.0 && v > -9007199254740992.0)
		evbuffer_add_printf(b, "%lld\n", (long long)v);
	else
		evbuffer_add_printf(b, "%.9g\n", v);
}

/* Gauge or counter with one sample per pool, value from fn. */
static void per_pool(struct evbuffer *b, const char *name, const char *type, const char *help,
		     double (*fn)(const struct pool *p))
{
	struct pool *p, *tmp;
	family(b, name, type, help);
	HASH_ITER(hh, g.pools, p, tmp) {
		pool_labels(b, name, p, NULL, NULL);
		add_value(b, fn(p));
	}
}

static double f_pool_size(const struct pool *p) { return p->pool_size; }
static double f_util(const struct pool *p) { return stats_pool_utilization(p); }
static double f_waiting(const struct pool *p) { return list_count(&p->clients_waiting); }
static double f_paused(const struct pool *p) { return p->paused ? 1 : 0; }
static double f_max_wait(const struct pool *p)
{
	if (list_empty(&p->clients_waiting))
		return 0;
	return secs(now_usec() - list_first_entry(&p->clients_waiting, struct client, node)->request_time);
}
static double f_max_wait_seen(const struct pool *p) { return secs(p->max_wait_seen); }
static double f_xacts(const struct pool *p) { return (double)p->stat_xact_count; }
static double f_queries(const struct pool *p) { return (double)p->stat_query_count; }
static double f_cached(const struct pool *p) { return (double)p->stat_cached_count; }
static double f_slow(const struct pool *p) { return (double)p->stat_slow_count; }
static double f_assign(const struct pool *p) { return (double)p->stat_assign_count; }
static double f_xact_time(const struct pool *p) { return secs(p->stat_xact_time); }
static double f_query_time(const struct pool *p) { return secs(p->stat_query_time); }
static double f_bytes_in(const struct pool *p) { return (double)p->stat_bytes_in; }
static double f_bytes_out(const struct pool *p) { return (double)p->stat_bytes_out; }

/* Clients of a pool in one state as SHOW CLIENTS names them: active (linked), idle, waiting, login. */
static int clients_in(const struct pool *p, const char *state)
{
	const struct list_head *pos;
	int n = 0;
	if (strcmp(state, "waiting") == 0)
		return list_count(&p->clients_waiting);
	if (strcmp(state, "login") == 0)
		return list_count(&p->clients_login);
	list_for_each(pos, &p->clients_active) {
		const struct client *c = list_entry(pos, struct client, node);
		if ((c->server != NULL) == (strcmp(state, "active") == 0))
			n++;
	}
	return n;
}

static void write_pools(struct evbuffer *b)
{
	static const char *const cstates[] = { "active", "idle", "waiting", "login" };
	struct pool *p, *tmp;
	usec_t now = now_usec();

	family(b, "parley_client_connections", "gauge",
	       "Client connections per pool and state (active: linked to a server; idle; waiting for a server; login).");
	HASH_ITER(hh, g.pools, p, tmp) {
		for (size_t i = 0; i < ARRAY_SIZE(cstates); i++) {
			pool_labels(b, "parley_client_connections", p, "state", cstates[i]);
			evbuffer_add_printf(b, "%d\n", clients_in(p, cstates[i]));
		}
	}
	family(b, "parley_server_connections", "gauge", "Server connections per pool and state.");
	HASH_ITER(hh, g.pools, p, tmp) {
		struct {
			const char *name;
			const struct list_head *l;
		} sv[] = { { "active", &p->servers_active }, { "idle", &p->servers_idle }, { "used", &p->servers_used },
			   { "tested", &p->servers_tested }, { "login", &p->servers_login } };
		for (size_t i = 0; i < ARRAY_SIZE(sv); i++) {
			pool_labels(b, "parley_server_connections", p, "state", sv[i].name);
			evbuffer_add_printf(b, "%d\n", list_count(sv[i].l));
		}
	}
	per_pool(b, "parley_pool_size", "gauge", "Configured pool_size of the pool.", f_pool_size);
	per_pool(b, "parley_pool_utilization_ratio", "gauge",
		 "Server connections linked to clients divided by pool_size.", f_util);
	per_pool(b, "parley_pool_waiting_clients", "gauge", "Clients waiting for a server connection.", f_waiting);
	per_pool(b, "parley_pool_paused", "gauge", "1 while the pool is paused by the admin console.", f_paused);
	per_pool(b, "parley_pool_max_wait_seconds", "gauge", "How long the oldest waiting client has waited.", f_max_wait);
	per_pool(b, "parley_pool_max_wait_seen_seconds", "gauge",
		 "Longest time any client waited for a server since start.", f_max_wait_seen);

	family(b, "parley_client_wait_seconds", "histogram", "Time clients waited for a server connection.");
	HASH_ITER(hh, g.pools, p, tmp) {
		uint64_t cum = 0;
		char le[32];
		for (int i = 0; i <= STATS_BUCKETS; i++) {
			cum += p->stat_wait_hist[i];
			if (i < STATS_BUCKETS)
				snprintf(le, sizeof(le), "%g", stats_bucket_bounds[i]);
			else
				strcpy(le, "+Inf");
			pool_labels(b, "parley_client_wait_seconds_bucket", p, "le", le);
			evbuffer_add_printf(b, "%llu\n", (unsigned long long)cum);
		}
		pool_labels(b, "parley_client_wait_seconds_sum", p, NULL, NULL);
		evbuffer_add_printf(b, "%.6f\n", secs(p->stat_wait_time));
		pool_labels(b, "parley_client_wait_seconds_count", p, NULL, NULL);
		evbuffer_add_printf(b, "%llu\n", (unsigned long long)p->stat_assign_count);
	}
	per_pool(b, "parley_server_assignments_total", "counter", "Times a server connection was linked to a client.",
		 f_assign);
	per_pool(b, "parley_transactions_total", "counter", "Transactions completed through the pool.", f_xacts);
	per_pool(b, "parley_queries_total", "counter",
		 "Requests (simple queries or extended-protocol batches) completed through the pool, cache hits included.",
		 f_queries);
	per_pool(b, "parley_queries_from_cache_total", "counter", "Requests answered from the cache.", f_cached);
	per_pool(b, "parley_slow_queries_by_pool_total", "counter", "Requests slower than slow_query_threshold.", f_slow);
	per_pool(b, "parley_transaction_time_seconds_total", "counter", "Time spent in transactions.", f_xact_time);
	per_pool(b, "parley_query_time_seconds_total", "counter", "Time spent executing requests.", f_query_time);
	per_pool(b, "parley_received_bytes_total", "counter", "Bytes received from clients.", f_bytes_in);
	per_pool(b, "parley_sent_bytes_total", "counter", "Bytes sent to clients.", f_bytes_out);
	(void)now;
}

/* Histogram lines and slow counters of the top shapes, collected for two families. */
struct shape_out {
	struct evbuffer *hist, *slow, *info;
};

static void shape_label(struct evbuffer *b, const char *name, const struct stats_shape *s, const char *le)
{
	if (s->id)
		evbuffer_add_printf(b, "%s{shape=\"0x%016llx\"", name, (unsigned long long)s->id);
	else
		evbuffer_add_printf(b, "%s{shape=\"other\"", name);
	if (le)
		evbuffer_add_printf(b, ",le=\"%s\"", le);
	evbuffer_add(b, "} ", 2);
}

static void shape_cb(const struct stats_shape *s, void *arg)
{
	struct shape_out *o = arg;
	uint64_t cum = 0;
	char le[32];
	for (int i = 0; i <= STATS_BUCKETS; i++) {
		cum += s->buckets[i];
		if (i < STATS_BUCKETS)
			snprintf(le, sizeof(le), "%g", stats_bucket_bounds[i]);
		else
			strcpy(le, "+Inf");
		shape_label(o->hist, "parley_query_duration_seconds_bucket", s, le);
		evbuffer_add_printf(o->hist, "%llu\n", (unsigned long long)cum);
	}
	shape_label(o->hist, "parley_query_duration_seconds_sum", s, NULL);
	evbuffer_add_printf(o->hist, "%.6f\n", secs(s->sum));
	shape_label(o->hist, "parley_query_duration_seconds_count", s, NULL);
	evbuffer_add_printf(o->hist, "%llu\n", (unsigned long long)s->count);
	shape_label(o->slow, "parley_slow_queries_total", s, NULL);
	evbuffer_add_printf(o->slow, "%llu\n", (unsigned long long)s->slow);
	if (s->id) {
		evbuffer_add_printf(o->info, "parley_shape_info{shape=\"0x%016llx\",query=\"", (unsigned long long)s->id);
		add_label_value(o->info, s->query);
		evbuffer_add(o->info, "\"} 1\n", 5);
	}
}

static void write_shapes(struct evbuffer *b)
{
	struct shape_out o = { evbuffer_new(), evbuffer_new(), evbuffer_new() };
	if (!o.hist || !o.slow || !o.info)
		goto out;
	stats_top_shapes(shape_cb, &o);
	family(b, "parley_query_duration_seconds", "histogram",
	       "Request durations per statement shape (the top shapes by total time; the rest are shape=\"other\").");
	evbuffer_add_buffer(b, o.hist);
	family(b, "parley_slow_queries_total", "counter", "Requests slower than slow_query_threshold, per shape.");
	evbuffer_add_buffer(b, o.slow);
	family(b, "parley_shape_info", "gauge", "Normalized text (no literal values) of the shapes labelled above.");
	evbuffer_add_buffer(b, o.info);
	family(b, "parley_slow_queries_logged_total", "counter", "Slow requests logged since start.");
	evbuffer_add_printf(b, "parley_slow_queries_logged_total %llu\n", (unsigned long long)stats_slow_total());
	family(b, "parley_shapes", "gauge", "Statement shapes currently remembered.");
	evbuffer_add_printf(b, "parley_shapes %d\n", shape_count());
out:
	if (o.hist)
		evbuffer_free(o.hist);
	if (o.slow)
		evbuffer_free(o.slow);
	if (o.info)
		evbuffer_free(o.info);
}

/* Per-table cache figures, one buffer per family. */
struct table_out {
	struct evbuffer *entries, *bytes, *inval;
};

static bool table_cb(const struct cache_table_stats *t, void *arg)
{
	struct table_out *o = arg;
	struct evbuffer *bufs[] = { o->entries, o->bytes, o->inval };
	const char *names[] = { "parley_cache_table_entries", "parley_cache_table_bytes",
				"parley_cache_table_invalidations_total" };
	uint64_t vals[] = { t->entries, t->bytes, t->invalidations };
	for (int i = 0; i < 3; i++) {
		evbuffer_add_printf(bufs[i], "%s{table=\"", names[i]);
		add_label_value(bufs[i], t->table);
		evbuffer_add_printf(bufs[i], "\"} %llu\n", (unsigned long long)vals[i]);
	}
	return true;
}

static void write_cache(struct evbuffer *b)
{
	struct cache_stats st;
	struct table_out o = { evbuffer_new(), evbuffer_new(), evbuffer_new() };
	struct {
		const char *name, *type, *help;
		uint64_t v;
	} rows[16];
	int n = 0;

	memset(&st, 0, sizeof(st));
	cache_get_stats(&st);
#define ROW(nm, ty, hp, val) rows[n++] = (typeof(rows[0])){ nm, ty, hp, val }
	ROW("parley_cache_enabled", "gauge", "1 when the result cache is enabled.", cache_enabled() ? 1 : 0);
	ROW("parley_cache_entries", "gauge", "Entries in the result cache.", st.entries);
	ROW("parley_cache_bytes", "gauge", "Bytes the result cache holds, everything counted.", st.bytes);
	ROW("parley_cache_max_bytes", "gauge", "The cache memory limit (max_memory).", st.max_memory);
	ROW("parley_cache_hits_total", "counter", "Lookups answered from the cache.", st.hits);
	ROW("parley_cache_misses_total", "counter", "Lookups that went to the server to fill an entry.", st.misses);
	ROW("parley_cache_waits_total", "counter", "Lookups that waited for another client's fill.", st.waits);
	ROW("parley_cache_stores_total", "counter", "Results stored.", st.stores);
	ROW("parley_cache_discarded_racing_total", "counter", "Fills dropped because a table they read changed meanwhile.",
	    st.discarded_racing);
	ROW("parley_cache_too_big_total", "counter", "Results not stored because they exceeded the entry size limit.",
	    st.too_big);
	ROW("parley_cache_evictions_total", "counter", "Entries evicted to stay under the memory limit.", st.evictions);
	ROW("parley_cache_expirations_total", "counter", "Entries removed when their TTL ran out.", st.expirations);
	ROW("parley_cache_invalidations_total", "counter", "Entries removed by write-through or notified invalidation.",
	    st.invalidations);
	ROW("parley_cache_flushes_total", "counter", "Entries removed by CACHE FLUSH.", st.flushes);
#undef ROW
	for (int i = 0; i < n; i++) {
		family(b, rows[i].name, rows[i].type, rows[i].help);
		evbuffer_add_printf(b, "%s %llu\n", rows[i].name, (unsigned long long)rows[i].v);
	}
	if (!o.entries || !o.bytes || !o.inval)
		goto out;
	cache_foreach_table(table_cb, &o);
	family(b, "parley_cache_table_entries", "gauge", "Cache entries that read the table.");
	evbuffer_add_buffer(b, o.entries);
	family(b, "parley_cache_table_bytes", "gauge", "Bytes of the cache entries that read the table.");
	evbuffer_add_buffer(b, o.bytes);
	family(b, "parley_cache_table_invalidations_total", "counter", "Cache entries of the table removed by invalidation.");
	evbuffer_add_buffer(b, o.inval);
out:
	if (o.entries)
		evbuffer_free(o.entries);
	if (o.bytes)
		evbuffer_free(o.bytes);
	if (o.inval)
		evbuffer_free(o.inval);
}

/* The invalidation feeds (notify.c), one buffer per family; labels database and server ("host:port"). */
struct feed_out {
	struct evbuffer *b[6];
};

static const char *const feed_families[6][3] = {
	{ "parley_cache_feed_up", "gauge", "1 while the invalidation feed of the database is connected and listening." },
	{ "parley_cache_feed_required", "gauge",
	  "1 when the database's cache entries are served only while its feed is up (cache_invalidation_feed on, or "
	  "auto with the triggers installed)." },
	{ "parley_cache_feed_down_seconds", "gauge",
	  "Seconds the required feed has been down (its entries are not served meanwhile); 0 when up." },
	{ "parley_cache_feed_notifications_total", "counter", "Invalidation notifications applied to the cache." },
	{ "parley_cache_feed_reconnects_total", "counter", "Connection attempts of the feed after the first." },
	{ "parley_cache_feed_last_notification_age_seconds", "gauge",
	  "Seconds since the feed's last notification (absent before the first)." },
};

static bool feed_cb(const struct notify_status *st, void *arg)
{
	struct feed_out *o = arg;
	double v[6] = {
		st->connected ? 1 : 0,
		st->enabled ? 1 : 0,
		st->down_since ? secs(now_usec() - st->down_since) : 0,
		(double)st->notifications,
		(double)st->reconnects,
		st->last_notification ? secs(wall_usec() - st->last_notification) : -1,
	};
	for (int i = 0; i < 6; i++) {
		if (v[i] < 0)
			continue;
		evbuffer_add_printf(o->b[i], "%s{database=\"", feed_families[i][0]);
		add_label_value(o->b[i], st->dbname);
		evbuffer_add(o->b[i], "\",server=\"", 10);
		add_label_value(o->b[i], st->host);
		evbuffer_add_printf(o->b[i], ":%d\"} ", st->port);
		add_value(o->b[i], v[i]);
	}
	return true;
}

static void write_feeds(struct evbuffer *b)
{
	struct feed_out o;
	bool ok = true;
	for (int i = 0; i < 6; i++)
		ok = (o.b[i] = evbuffer_new()) != NULL && ok;
	if (ok) {
		notify_foreach(feed_cb, &o);
		for (int i = 0; i < 6; i++) {
			family(b, feed_families[i][0], feed_families[i][1], feed_families[i][2]);
			evbuffer_add_buffer(b, o.b[i]);
		}
	}
	for (int i = 0; i < 6; i++)
		if (o.b[i])
			evbuffer_free(o.b[i]);
}

static void write_process(struct evbuffer *b)
{
	struct {
		const char *name, *help;
		double v;
	} cfg[] = {
		{ "parley_config_max_client_conn", "The max_client_conn setting.", g.cfg.max_client_conn },
		{ "parley_config_default_pool_size", "The default_pool_size setting.", g.cfg.default_pool_size },
		{ "parley_config_reserve_pool_size", "The reserve_pool_size setting.", g.cfg.reserve_pool_size },
		{ "parley_config_max_db_connections", "The max_db_connections setting (0 = unlimited).",
		  g.cfg.max_db_connections },
		{ "parley_config_max_user_connections", "The max_user_connections setting (0 = unlimited).",
		  g.cfg.max_user_connections },
		{ "parley_config_slow_query_threshold_seconds", "The slow_query_threshold setting (0 = off).",
		  secs(g.cfg.slow_query_threshold) },
		{ "parley_config_pool_utilization_warn_ratio", "The pool_utilization_warn setting.",
		  g.cfg.pool_utilization_warn },
	};
	family(b, "parley_build_info", "gauge", "Always 1; the version label says which parley runs.");
	evbuffer_add_printf(b, "parley_build_info{version=\"%s\"} 1\n", PACKAGE_VERSION);
	family(b, "parley_uptime_seconds", "gauge", "Seconds since parley started.");
	evbuffer_add_printf(b, "parley_uptime_seconds %.3f\n", secs(now_usec() - g.start_time));
	for (size_t i = 0; i < ARRAY_SIZE(cfg); i++) {
		family(b, cfg[i].name, "gauge", cfg[i].help);
		evbuffer_add_printf(b, "%s ", cfg[i].name);
		add_value(b, cfg[i].v);
	}
	family(b, "parley_clients", "gauge", "Client connections of every kind (pools, console, login).");
	evbuffer_add_printf(b, "parley_clients %d\n", g.client_count);
	family(b, "parley_servers", "gauge", "Server connections of every pool.");
	evbuffer_add_printf(b, "parley_servers %d\n", g.server_count);
	family(b, "parley_client_connections_accepted_total", "counter", "Client connections accepted since start.");
	evbuffer_add_printf(b, "parley_client_connections_accepted_total %llu\n", (unsigned long long)g.total_clients_ever);
	family(b, "parley_pools", "gauge", "Pools (database, user pairs).");
	evbuffer_add_printf(b, "parley_pools %u\n", HASH_COUNT(g.pools));
}

/* Writes the whole exposition into b. */
static void render(struct evbuffer *b)
{
	write_process(b);
	write_pools(b);
	write_shapes(b);
	write_cache(b);
	write_feeds(b);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *text)
{
	struct evbuffer *out = evbuffer_new();
	if (!out) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	evbuffer_add(out, text, strlen(text));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
	evhttp_send_reply(req, code, reason, out);
	evbuffer_free(out);
}

static void on_metrics(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();
	(void)arg;
	if (!out) {
		evhttp_send_error(req, HTTP_INTERNAL, NULL);
		return;
	}
	render(out);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", out);
	evbuffer_free(out);
}

static void on_healthz(struct evhttp_request *req, void *arg)
{
	(void)arg;
	if (g.shutdown != SHUTDOWN_NONE)
		reply_text(req, 503, "Service Unavailable", "shutting down\n");
	else
		reply_text(req, HTTP_OK, "OK", "ok\n");
}

static void on_other(struct evhttp_request *req, void *arg)
{
	(void)arg;
	reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: try /metrics or /healthz\n");
}

int metrics_start(struct event_base *base, const char *addr, int port)
{
	const char *a = addr && *addr ? addr : "127.0.0.1";
	if (http && bound_port == port && strcmp(bound_addr, a) == 0)
		return 0;
	metrics_stop();
	if (port <= 0)
		return 0;
	http = evhttp_new(base);
	if (!http) {
		log_error("metrics: cannot create the HTTP server");
		return -1;
	}
	evhttp_set_timeout(http, METRICS_HTTP_TIMEOUT);
	evhttp_set_max_headers_size(http, METRICS_MAX_HEADERS);
	evhttp_set_max_body_size(http, METRICS_MAX_BODY);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_cb(http, "/metrics", on_metrics, NULL);
	evhttp_set_cb(http, "/healthz", on_healthz, NULL);
	evhttp_set_gencb(http, on_other, NULL);
	if (!evhttp_bind_socket_with_handle(http, strcmp(a, "*") == 0 ? "0.0.0.0" : a, (ev_uint16_t)port)) {
		log_error("metrics: cannot listen on %s:%d (metrics_listen_addr, metrics_port): %s", a, port,
			  strerror(errno));
		evhttp_free(http);
		http = NULL;
		return -1;
	}
	bound_addr = xstrdup(a);
	bound_port = port;
	log_info("metrics: serving /metrics and /healthz on http://%s:%d", a, port);
	return 0;
}

void metrics_stop(void)
{
	if (http) {
		evhttp_free(http);
		http = NULL;
	}
	free(bound_addr);
	bound_addr = NULL;
	bound_port = 0;
}
