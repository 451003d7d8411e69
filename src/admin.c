/* admin.c — the admin console: the virtual database "parley" (alias "pgbouncer") answering PgBouncer's SHOW and
 * control commands with PgBouncer's columns, plus parley's SHOW CACHE, SHAPES and SLOW_QUERIES. */
#include "parley.h"
#include "stats.h"
#include "shape.h"
#include "cache.h"
#include "notify.h"
#include <strings.h>
#include <ctype.h>
#include <stdarg.h>
#include <arpa/inet.h>

#define MAX_COLS 64
#define MAX_PAUSE_WAITERS 16

bool admin_is_console_db(const char *dbname)
{
	return strcmp(dbname, "parley") == 0 || strcmp(dbname, "pgbouncer") == 0;
}

/* A console client waiting for PAUSE to finish, found again by its cancel key (so a client that left meanwhile is
 * simply not found). */
struct pause_waiter {
	uint64_t key;                /* the client's cancel_hash_key; 0 = free slot */
	char db[NAME_MAX_LEN];       /* "" = every pool */
};
static struct pause_waiter pause_waiters[MAX_PAUSE_WAITERS];
static bool paused_all;          /* PAUSE without a database is in effect (SHOW STATE) */

/* Result set writer: a RowDescription of text columns, rows, then CommandComplete. */
struct result {
	struct pkt_builder b;
	int ncols;
	int nrows;
};

/* One row being filled: values borrowed or formatted (owned). */
struct row {
	int n;
	const char *v[MAX_COLS];
	char *owned[MAX_COLS];
	int nowned;
};

/* Starts a result of n columns; types has one letter per column, PgBouncer's wire types: 's' text, 'i' int4,
 * 'N' numeric (values are always sent as text). */
static void result_begin(struct result *r, const char *const *cols, int n, const char *types)
{
	uint32_t oids[MAX_COLS];
	pkt_init(&r->b);
	r->ncols = n < MAX_COLS ? n : MAX_COLS;
	r->nrows = 0;
	for (int i = 0; i < r->ncols; i++) {
		char t = i < (int)strlen(types) ? types[i] : 's';
		oids[i] = t == 'i' ? 23 : t == 'N' ? 1700 : 25;
	}
	pkt_row_description(&r->b, cols, oids, r->ncols);
}

static void row_str(struct row *w, const char *s)
{
	if (w->n < MAX_COLS)
		w->v[w->n++] = s;
}

static void row_fmt(struct row *w, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void row_fmt(struct row *w, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	if (!s) {
		row_str(w, NULL);
		return;
	}
	w->owned[w->nowned++] = s;
	row_str(w, s);
}

static void row_int(struct row *w, long long v)
{
	row_fmt(w, "%lld", v);
}

static void row_u64(struct row *w, uint64_t v)
{
	row_fmt(w, "%llu", (unsigned long long)v);
}

/* Writes the row (missing trailing values as NULL) and resets it. */
static void result_row(struct result *r, struct row *w)
{
	while (w->n < r->ncols)
		w->v[w->n++] = NULL;
	pkt_data_row(&r->b, w->v, r->ncols);
	r->nrows++;
	for (int i = 0; i < w->nowned; i++)
		free(w->owned[i]);
	memset(w, 0, sizeof(*w));
}

static void result_end(struct client *c, struct result *r, const char *tag)
{
	pkt_command_complete(&r->b, tag);
	pkt_ready(&r->b, 'I');
	if (!r->b.failed)
		evbuffer_add(c->s.out, r->b.buf, r->b.len);
	pkt_free(&r->b);
}

static void admin_error(struct client *c, const char *sqlstate, const char *msg)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_error(&b, "ERROR", sqlstate, msg);
	pkt_ready(&b, 'I');
	if (!b.failed)
		evbuffer_add(c->s.out, b.buf, b.len);
	pkt_free(&b);
}

/* CommandComplete tag and ReadyForQuery, for commands without rows. */
static void admin_ok(struct client *c, const char *tag)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_command_complete(&b, tag);
	pkt_ready(&b, 'I');
	if (!b.failed)
		evbuffer_add(c->s.out, b.buf, b.len);
	pkt_free(&b);
}

/* A wall-clock timestamp as PgBouncer prints it ("2024-01-31 12:00:00 UTC"). */
static void row_time(struct row *w, usec_t wall)
{
	time_t t = (time_t)(wall / USEC_PER_SEC);
	struct tm tm;
	char buf[64];
	gmtime_r(&t, &tm);
	strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
	row_fmt(w, "%s", buf);
}

/* The local end of a socket as text address and port. */
static void row_local_addr(struct row *w, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "";
	int port = 0;
	if (fd >= 0 && getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
			port = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
			port = ntohs(in6->sin6_port);
		} else {
			strcpy(host, "unix");
		}
	}
	row_fmt(w, "%s", host);
	row_int(w, port);
}

/* ---- SHOW commands ---- */

static void show_help(struct client *c)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_notice(&b, "NOTICE", "00000",
		   "Console usage\n"
		   "\tSHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION|STATE\n"
		   "\tSHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS|LISTS|MEM\n"
		   "\tSHOW CACHE|CACHE_TABLES|CACHE_FEED|SHAPES|SLOW_QUERIES\n"
		   "\tSET key = arg\n"
		   "\tRELOAD\n"
		   "\tPAUSE [<db>]\n"
		   "\tRESUME [<db>]\n"
		   "\tKILL <db>\n"
		   "\tRECONNECT [<db>]\n"
		   "\tCACHE FLUSH [<table>]\n"
		   "\tSHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]");
	pkt_command_complete(&b, "SHOW");
	pkt_ready(&b, 'I');
	if (!b.failed)
		evbuffer_add(c->s.out, b.buf, b.len);
	pkt_free(&b);
}

static void show_version(struct client *c)
{
	static const char *const cols[] = { "version" };
	struct result r;
	struct row w = { 0 };
	result_begin(&r, cols, 1, "s");
	row_str(&w, "parley " PACKAGE_VERSION);
	result_row(&r, &w);
	result_end(c, &r, "SHOW");
}

static void show_state(struct client *c)
{
	static const char *const cols[] = { "key", "value" };
	struct result r;
	struct row w = { 0 };
	bool any_paused = paused_all;
	struct pool *p, *tmp;
	HASH_ITER(hh, g.pools, p, tmp)
		any_paused = any_paused || p->paused;
	result_begin(&r, cols, 2, "ss");
	row_str(&w, "active");
	row_str(&w, !any_paused && g.shutdown == SHUTDOWN_NONE ? "yes" : "no");
	result_row(&r, &w);
	row_str(&w, "paused");
	row_str(&w, any_paused ? "yes" : "no");
	result_row(&r, &w);
	row_str(&w, "suspended");
	row_str(&w, "no");
	result_row(&r, &w);
	row_str(&w, "shutting_down");
	row_str(&w, g.shutdown != SHUTDOWN_NONE ? "yes" : "no");
	result_row(&r, &w);
	result_end(c, &r, "SHOW");
}

/* SHOW POOLS with PgBouncer's columns, then parley's pool_size, utilization and paused. */
static void show_pools(struct client *c)
{
	static const char *const cols[] = { "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
					    "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
					    "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
					    "pool_mode", "load_balance_hosts", "pool_size", "utilization", "paused" };
	struct result r;
	struct pool *p, *tmp;
	usec_t now = now_usec();
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "ssiiiiiiiiiiiiissiNi");
	HASH_ITER(hh, g.pools, p, tmp) {
		struct row w = { 0 };
		usec_t wait = 0;
		if (!list_empty(&p->clients_waiting))
			wait = now - list_first_entry(&p->clients_waiting, struct client, node)->request_time;
		row_str(&w, p->dbname);
		row_str(&w, p->user);
		row_int(&w, list_count(&p->clients_active));
		row_int(&w, list_count(&p->clients_waiting) + list_count(&p->clients_login));
		row_str(&w, "0");
		row_str(&w, "0");
		row_int(&w, list_count(&p->servers_active));
		row_str(&w, "0");
		row_str(&w, "0");
		row_int(&w, list_count(&p->servers_idle));
		row_int(&w, list_count(&p->servers_used));
		row_int(&w, list_count(&p->servers_tested));
		row_int(&w, list_count(&p->servers_login));
		row_int(&w, (long long)(wait / USEC_PER_SEC));
		row_int(&w, (long long)(wait % USEC_PER_SEC));
		row_str(&w, pool_mode_name(p->mode));
		row_str(&w, NULL);
		row_int(&w, p->pool_size);
		row_fmt(&w, "%.2f", stats_pool_utilization(p));
		row_int(&w, p->paused ? 1 : 0);
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
}

/* Sums of a database's pools (SHOW STATS is per database, like PgBouncer). */
struct db_totals {
	char name[NAME_MAX_LEN];
	struct pool_stat_snapshot tot;   /* current totals (at unused) */
	struct stats_averages avg;
	uint64_t cached, slow;
	uint64_t xacts_avg_weight, queries_avg_weight, assigns_avg_weight, closed_avg_weight;
};

/* Collects per-database totals and averages; returns the number of databases (array owned by the caller). */
static int collect_db_totals(struct db_totals **out)
{
	struct pool *p, *tmp;
	int n = 0, cap = 8;
	struct db_totals *a = xcalloc((size_t)cap, sizeof(*a));
	HASH_ITER(hh, g.pools, p, tmp) {
		struct db_totals *d = NULL;
		struct stats_averages av;
		for (int i = 0; i < n; i++)
			if (strcmp(a[i].name, p->dbname) == 0)
				d = &a[i];
		if (!d) {
			if (n == cap) {
				cap *= 2;
				a = xrealloc(a, (size_t)cap * sizeof(*a));
			}
			d = &a[n++];
			memset(d, 0, sizeof(*d));
			strlcpy_ok(d->name, p->dbname, sizeof(d->name));
		}
		d->tot.xact_count += p->stat_xact_count;
		d->tot.query_count += p->stat_query_count;
		d->tot.assign_count += p->stat_assign_count;
		d->tot.closed_count += p->stat_closed_count;
		d->tot.bytes_in += p->stat_bytes_in;
		d->tot.bytes_out += p->stat_bytes_out;
		d->tot.xact_time += p->stat_xact_time;
		d->tot.query_time += p->stat_query_time;
		d->tot.wait_time += p->stat_wait_time;
		d->tot.server_lifetime += p->stat_server_lifetime;
		d->cached += p->stat_cached_count;
		d->slow += p->stat_slow_count;
		stats_pool_averages(p, &av);
		d->avg.xact_count += av.xact_count;
		d->avg.query_count += av.query_count;
		d->avg.assign_count += av.assign_count;
		d->avg.closed_count += av.closed_count;
		d->avg.bytes_in += av.bytes_in;
		d->avg.bytes_out += av.bytes_out;
		/* average times are weighted by each pool's rate, divided out below */
		d->avg.xact_time += av.xact_time * av.xact_count;
		d->avg.query_time += av.query_time * av.query_count;
		d->avg.wait_time += av.wait_time * av.assign_count;
		d->avg.server_lifetime += av.server_lifetime * av.closed_count;
	}
	for (int i = 0; i < n; i++) {
		struct stats_averages *v = &a[i].avg;
		v->xact_time = v->xact_count ? v->xact_time / v->xact_count : 0;
		v->query_time = v->query_count ? v->query_time / v->query_count : 0;
		v->wait_time = v->assign_count ? v->wait_time / v->assign_count : 0;
		v->server_lifetime = v->closed_count ? v->server_lifetime / v->closed_count : 0;
	}
	*out = a;
	return n;
}

/* The total_ values of one database in SHOW STATS order. */
static void row_totals(struct row *w, const struct db_totals *d)
{
	row_u64(w, d->tot.xact_count);
	row_u64(w, d->tot.query_count);
	row_u64(w, d->tot.assign_count);
	row_u64(w, d->tot.closed_count);
	row_u64(w, d->tot.bytes_in);
	row_u64(w, d->tot.bytes_out);
	row_int(w, d->tot.xact_time);
	row_int(w, d->tot.query_time);
	row_int(w, d->tot.wait_time);
	row_int(w, d->tot.server_lifetime);
	row_str(w, "0"); /* client_parse_count: prepared statements are not tracked by name */
	row_str(w, "0"); /* server_parse_count */
	row_str(w, "0"); /* bind_count */
}

static void row_averages(struct row *w, const struct db_totals *d)
{
	row_u64(w, d->avg.xact_count);
	row_u64(w, d->avg.query_count);
	row_u64(w, d->avg.assign_count);
	row_u64(w, d->avg.closed_count);
	row_u64(w, d->avg.bytes_in);
	row_u64(w, d->avg.bytes_out);
	row_u64(w, d->avg.xact_time);
	row_u64(w, d->avg.query_time);
	row_u64(w, d->avg.wait_time);
	row_u64(w, d->avg.server_lifetime);
	row_str(w, "0");
	row_str(w, "0");
	row_str(w, "0");
}

/* kind: 0 = SHOW STATS, 1 = STATS_TOTALS, 2 = STATS_AVERAGES. */
static void show_stats(struct client *c, int kind)
{
	static const char *const cols_all[] = {
		"database", "total_xact_count", "total_query_count", "total_server_assignment_count",
		"total_server_closed_count", "total_received", "total_sent", "total_xact_time", "total_query_time",
		"total_wait_time", "total_server_lifetime", "total_client_parse_count", "total_server_parse_count",
		"total_bind_count", "avg_xact_count", "avg_query_count", "avg_server_assignment_count",
		"avg_server_closed_count", "avg_recv", "avg_sent", "avg_xact_time", "avg_query_time", "avg_wait_time",
		"avg_server_lifetime", "avg_client_parse_count", "avg_server_parse_count", "avg_bind_count",
		"total_cached_query_count", "total_slow_query_count"
	};
	static const char *const cols_part[] = {
		"database", "xact_count", "query_count", "server_assignment_count", "server_closed_count",
		"bytes_received", "bytes_sent", "xact_time", "query_time", "wait_time", "server_lifetime",
		"client_parse_count", "server_parse_count", "bind_count"
	};
	struct db_totals *d;
	int n = collect_db_totals(&d);
	struct result r;
	if (kind == 0)
		result_begin(&r, cols_all, (int)ARRAY_SIZE(cols_all), "sNNNNNNNNNNNNNNNNNNNNNNNNNNNN");
	else
		result_begin(&r, cols_part, (int)ARRAY_SIZE(cols_part), "sNNNNNNNNNNNNN");
	for (int i = 0; i < n; i++) {
		struct row w = { 0 };
		row_str(&w, d[i].name);
		if (kind != 2)
			row_totals(&w, &d[i]);
		if (kind != 1)
			row_averages(&w, &d[i]);
		if (kind == 0) {
			row_u64(&w, d[i].cached);
			row_u64(&w, d[i].slow);
		}
		result_row(&r, &w);
	}
	free(d);
	result_end(c, &r, "SHOW");
}

/* SHOW TOTALS: SHOW STATS summed over every database, as name/value rows named as PgBouncer names them. */
static void show_totals(struct client *c)
{
	static const char *const cols[] = { "name", "value" };
	static const char *const names[] = {
		"total_xact_count", "total_query_count", "total_server_assignment_count", "total_server_closed_count",
		"total_client_bytes", "total_server_bytes", "total_xact_time", "total_query_time", "total_wait_time",
		"total_server_lifetime", "total_client_parse_count", "total_server_parse_count", "total_bind_count",
		"avg_xact_count", "avg_query_count", "avg_server_assignment_count", "avg_server_closed_count",
		"avg_client_bytes", "avg_server_bytes", "avg_xact_time", "avg_query_time", "avg_wait_time", "avg_server_lifetime",
		"avg_client_parse_count", "avg_server_parse_count", "avg_bind_count"
	};
	struct db_totals *d, all;
	int n = collect_db_totals(&d);
	struct row vals = { 0 };
	struct result r;
	memset(&all, 0, sizeof(all));
	for (int i = 0; i < n; i++) {
		all.tot.xact_count += d[i].tot.xact_count;
		all.tot.query_count += d[i].tot.query_count;
		all.tot.assign_count += d[i].tot.assign_count;
		all.tot.closed_count += d[i].tot.closed_count;
		all.tot.bytes_in += d[i].tot.bytes_in;
		all.tot.bytes_out += d[i].tot.bytes_out;
		all.tot.xact_time += d[i].tot.xact_time;
		all.tot.query_time += d[i].tot.query_time;
		all.tot.wait_time += d[i].tot.wait_time;
		all.tot.server_lifetime += d[i].tot.server_lifetime;
		all.avg.xact_count += d[i].avg.xact_count;
		all.avg.query_count += d[i].avg.query_count;
		all.avg.assign_count += d[i].avg.assign_count;
		all.avg.closed_count += d[i].avg.closed_count;
		all.avg.bytes_in += d[i].avg.bytes_in;
		all.avg.bytes_out += d[i].avg.bytes_out;
		all.avg.xact_time += d[i].avg.xact_time * d[i].avg.xact_count;
		all.avg.query_time += d[i].avg.query_time * d[i].avg.query_count;
		all.avg.wait_time += d[i].avg.wait_time * d[i].avg.assign_count;
		all.avg.server_lifetime += d[i].avg.server_lifetime * d[i].avg.closed_count;
	}
	free(d);
	all.avg.xact_time = all.avg.xact_count ? all.avg.xact_time / all.avg.xact_count : 0;
	all.avg.query_time = all.avg.query_count ? all.avg.query_time / all.avg.query_count : 0;
	all.avg.wait_time = all.avg.assign_count ? all.avg.wait_time / all.avg.assign_count : 0;
	all.avg.server_lifetime = all.avg.closed_count ? all.avg.server_lifetime / all.avg.closed_count : 0;
	row_totals(&vals, &all);
	row_averages(&vals, &all);
	result_begin(&r, cols, 2, "sN");
	for (size_t i = 0; i < ARRAY_SIZE(names) && (int)i < vals.n; i++) {
		struct row w = { 0 };
		row_str(&w, names[i]);
		row_str(&w, vals.v[i]);
		result_row(&r, &w);
	}
	for (int i = 0; i < vals.nowned; i++)
		free(vals.owned[i]);
	result_end(c, &r, "SHOW");
}

static const char *const conn_cols[] = { "type", "user", "database", "replication", "state", "addr", "port",
					  "local_addr", "local_port", "connect_time", "request_time", "wait", "wait_us",
					  "close_needed", "ptr", "link", "remote_pid", "tls", "application_name",
					  "prepared_statements", "id" };

static void client_row(struct result *r, const struct client *c, usec_t now)
{
	struct row w = { 0 };
	char tlsinfo[160];
	const char *state;
	usec_t wait = 0;
	usec_t req = c->request_time ? c->request_time : c->connect_time;
	switch (c->state) {
	case CL_WAITING:
		state = "waiting";
		wait = now - c->request_time;
		break;
	case CL_WAITING_LOGIN:
		state = "waiting";
		break;
	case CL_LOGIN:
		state = "login";
		break;
	case CL_ACTIVE:
		state = c->server || !c->pool ? "active" : "idle";
		break;
	default:
		state = client_state_name(c->state);
	}
	row_str(&w, "C");
	row_str(&w, c->user);
	row_str(&w, c->dbname);
	row_str(&w, "none");
	row_str(&w, state);
	row_str(&w, c->addr);
	row_int(&w, c->port);
	row_local_addr(&w, c->s.fd);
	row_time(&w, c->connect_wall);
	row_time(&w, c->connect_wall + (req - c->connect_time));
	row_int(&w, (long long)(wait / USEC_PER_SEC));
	row_int(&w, (long long)(wait % USEC_PER_SEC));
	row_str(&w, "0");
	row_fmt(&w, "%p", (const void *)c);
	if (c->server)
		row_fmt(&w, "%p", (const void *)c->server);
	else
		row_str(&w, "");
	row_str(&w, "0");
	row_str(&w, tls_connection_info(c->s.ssl, tlsinfo, sizeof(tlsinfo)));
	row_str(&w, c->vars.set[VAR_APPNAME] ? c->vars.value[VAR_APPNAME] : "");
	row_str(&w, "0");
	row_u64(&w, c->cancel_pid);
	result_row(r, &w);
}

static void show_clients(struct client *c)
{
	struct result r;
	struct pool *p, *tmp;
	struct list_head *pos;
	usec_t now = now_usec();
	result_begin(&r, conn_cols, (int)ARRAY_SIZE(conn_cols), "ssssssisissiiississii");
	list_for_each(pos, &g.login_clients) client_row(&r, list_entry(pos, struct client, node), now);
	HASH_ITER(hh, g.pools, p, tmp) {
		struct list_head *lists[] = { &p->clients_active, &p->clients_waiting, &p->clients_login };
		for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
			list_for_each(pos, lists[i]) client_row(&r, list_entry(pos, struct client, node), now);
	}
	result_end(c, &r, "SHOW");
}

static void server_row(struct result *r, const struct server *sv)
{
	struct row w = { 0 };
	char tlsinfo[160];
	const struct pool *p = sv->pool;
	usec_t last = sv->client ? sv->link_time : sv->last_used;
	row_str(&w, "S");
	row_str(&w, p->server_user);
	row_str(&w, p->dbname);
	row_str(&w, "none");
	row_str(&w, sv->state == SV_LOGIN ? "new" : server_state_name(sv->state));
	row_str(&w, p->host && *p->host ? p->host : "unix");
	row_int(&w, p->port);
	row_local_addr(&w, sv->s.fd);
	row_time(&w, sv->connect_wall);
	row_time(&w, sv->connect_wall + ((last ? last : sv->connect_time) - sv->connect_time));
	row_str(&w, "0");
	row_str(&w, "0");
	row_int(&w, sv->dirty ? 1 : 0);
	row_fmt(&w, "%p", (const void *)sv);
	if (sv->client)
		row_fmt(&w, "%p", (const void *)sv->client);
	else
		row_str(&w, "");
	row_u64(&w, sv->be_pid);
	row_str(&w, tls_connection_info(sv->s.ssl, tlsinfo, sizeof(tlsinfo)));
	row_str(&w, sv->client && sv->client->vars.set[VAR_APPNAME] ? sv->client->vars.value[VAR_APPNAME] : "");
	row_str(&w, "0");
	row_u64(&w, sv->be_pid);
	result_row(r, &w);
}

static void show_servers(struct client *c)
{
	struct result r;
	struct pool *p, *tmp;
	struct list_head *pos;
	result_begin(&r, conn_cols, (int)ARRAY_SIZE(conn_cols), "ssssssisissiiississii");
	HASH_ITER(hh, g.pools, p, tmp) {
		struct list_head *lists[] = { &p->servers_active, &p->servers_idle, &p->servers_used, &p->servers_tested,
					      &p->servers_login };
		for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
			list_for_each(pos, lists[i]) server_row(&r, list_entry(pos, struct server, node));
	}
	result_end(c, &r, "SHOW");
}

static int db_current_connections(const char *dbname, int *clients, bool *paused)
{
	struct pool *p, *tmp;
	int n = 0;
	*clients = 0;
	*paused = paused_all;
	HASH_ITER(hh, g.pools, p, tmp) {
		if (strcmp(p->dbname, dbname) != 0)
			continue;
		n += pool_server_total(p);
		*clients += list_count(&p->clients_active) + list_count(&p->clients_waiting) + list_count(&p->clients_login);
		*paused = *paused || p->paused;
	}
	return n;
}

/* SHOW DATABASES; reserve_pool is PgBouncer 1.18's name of reserve_pool_size, kept beside it for older tools. */
static void show_databases(struct client *c)
{
	static const char *const cols[] = { "name", "host", "port", "database", "force_user", "pool_size",
					    "min_pool_size", "reserve_pool_size", "reserve_pool", "server_lifetime",
					    "pool_mode", "load_balance_hosts", "max_connections", "current_connections",
					    "max_client_connections", "current_client_connections", "paused", "disabled" };
	struct result r;
	struct db_def *db, *tmp;
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "ssissiiiiissiiiiii");
	HASH_ITER(hh, g.cfg.databases, db, tmp) {
		struct row w = { 0 };
		int clients;
		bool paused;
		int cur = db_current_connections(db->name, &clients, &paused);
		int reserve = db->reserve_pool >= 0 ? db->reserve_pool : g.cfg.reserve_pool_size;
		row_str(&w, db->name);
		row_str(&w, db->host);
		row_int(&w, db->port > 0 ? db->port : 5432);
		row_str(&w, db->dbname ? db->dbname : db->name);
		row_str(&w, db->user);
		row_int(&w, db->pool_size >= 0 ? db->pool_size : g.cfg.default_pool_size);
		row_int(&w, db->min_pool_size >= 0 ? db->min_pool_size : g.cfg.min_pool_size);
		row_int(&w, reserve);
		row_int(&w, reserve);
		row_int(&w, (long long)(g.cfg.server_lifetime / USEC_PER_SEC));
		row_str(&w, db->pool_mode != POOL_MODE_UNSET ? pool_mode_name(db->pool_mode) : NULL);
		row_str(&w, NULL);
		row_int(&w, db->max_db_connections >= 0 ? db->max_db_connections : g.cfg.max_db_connections);
		row_int(&w, cur);
		row_str(&w, "0");
		row_int(&w, clients);
		row_int(&w, paused ? 1 : 0);
		row_str(&w, "0");
		result_row(&r, &w);
	}
	/* the console itself, as PgBouncer lists it */
	for (int i = 0; i < 2; i++) {
		struct row w = { 0 };
		const char *name = i == 0 ? "parley" : "pgbouncer";
		row_str(&w, name);
		row_str(&w, NULL);
		row_int(&w, g.cfg.listen_port);
		row_str(&w, name);
		row_str(&w, name);
		row_str(&w, "2");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "statement");
		row_str(&w, NULL);
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		row_str(&w, "0");
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
}

/* Adds name to the list of names if it is not there yet. */
static void add_name(char ***names, int *n, int *cap, const char *name)
{
	for (int i = 0; i < *n; i++)
		if (strcmp((*names)[i], name) == 0)
			return;
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		*names = xrealloc(*names, (size_t)*cap * sizeof(char *));
	}
	(*names)[(*n)++] = (char *)name;
}

static void show_users(struct client *c)
{
	static const char *const cols[] = { "name", "pool_size", "reserve_pool_size", "pool_mode", "max_user_connections",
					    "current_connections", "max_user_client_connections",
					    "current_client_connections" };
	struct result r;
	struct user_def *u, *utmp;
	struct pool *p, *ptmp;
	char **names = NULL;
	int n = 0, cap = 0;
	HASH_ITER(hh, g.cfg.users, u, utmp)
		add_name(&names, &n, &cap, u->name);
	HASH_ITER(hh, g.pools, p, ptmp)
		add_name(&names, &n, &cap, p->user);
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "siisiiii");
	for (int i = 0; i < n; i++) {
		struct row w = { 0 };
		const struct user_def *ud = config_find_user(&g.cfg, names[i]);
		int servers = 0, clients = 0;
		HASH_ITER(hh, g.pools, p, ptmp) {
			if (strcmp(p->user, names[i]) != 0)
				continue;
			servers += pool_server_total(p);
			clients += list_count(&p->clients_active) + list_count(&p->clients_waiting) +
				   list_count(&p->clients_login);
		}
		row_str(&w, names[i]);
		if (ud && ud->pool_size >= 0)
			row_int(&w, ud->pool_size);
		else
			row_str(&w, NULL);
		row_str(&w, NULL);
		row_str(&w, ud && ud->pool_mode != POOL_MODE_UNSET ? pool_mode_name(ud->pool_mode) : NULL);
		row_int(&w, ud && ud->max_user_connections >= 0 ? ud->max_user_connections : g.cfg.max_user_connections);
		row_int(&w, servers);
		row_str(&w, "0");
		row_int(&w, clients);
		result_row(&r, &w);
	}
	free(names);
	result_end(c, &r, "SHOW");
}

static void show_config(struct client *c)
{
	static const char *const cols[] = { "key", "value", "default", "changeable" };
	struct result r;
	size_t n;
	const struct setting *s = config_settings(&n);
	result_begin(&r, cols, 4, "ssss");
	for (size_t i = 0; i < n; i++) {
		struct row w = { 0 };
		char buf[1024];
		row_str(&w, s[i].name);
		row_fmt(&w, "%s", config_value_text(&g.cfg, &s[i], buf, sizeof(buf)));
		row_str(&w, s[i].default_value ? s[i].default_value : "");
		row_str(&w, s[i].reloadable ? "yes" : "no");
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
}

static void show_lists(struct client *c)
{
	static const char *const cols[] = { "list", "items" };
	struct result r;
	struct list_head *pos;
	int login = 0, users = 0, ucap = 0;
	char **unames = NULL;
	struct pool *p, *tmp;
	struct user_def *u, *utmp;
	list_for_each(pos, &g.login_clients) {
		if (list_entry(pos, struct client, node)->state == CL_LOGIN)
			login++;
	}
	HASH_ITER(hh, g.cfg.users, u, utmp)
		add_name(&unames, &users, &ucap, u->name);
	HASH_ITER(hh, g.pools, p, tmp)
		add_name(&unames, &users, &ucap, p->user);
	free(unames);
	struct {
		const char *name;
		long long v;
	} rows[] = {
		{ "databases", (long long)HASH_COUNT(g.cfg.databases) }, { "users", users },
		{ "peers", (long long)HASH_COUNT(g.cfg.peers) }, { "pools", (long long)HASH_COUNT(g.pools) }, { "peer_pools", 0 },
		{ "free_clients", 0 }, { "used_clients", g.client_count }, { "login_clients", login },
		{ "free_servers", 0 }, { "used_servers", g.server_count }, { "dns_names", 0 }, { "dns_zones", 0 },
		{ "dns_queries", 0 }, { "dns_pending", 0 },
	};
	result_begin(&r, cols, 2, "si");
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct row w = { 0 };
		row_str(&w, rows[i].name);
		row_int(&w, rows[i].v);
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
}

static void show_mem(struct client *c)
{
	static const char *const cols[] = { "name", "size", "used", "free", "memtotal" };
	struct result r;
	struct cache_stats cs;
	struct {
		const char *name;
		long long size, used;
	} rows[] = {
		{ "client", (long long)sizeof(struct client), g.client_count },
		{ "server", (long long)sizeof(struct server), g.server_count },
		{ "pool", (long long)sizeof(struct pool), (long long)HASH_COUNT(g.pools) },
		{ "shape", (long long)sizeof(struct shape), shape_count() },
		{ "cache", 1, 0 },
	};
	memset(&cs, 0, sizeof(cs));
	cache_get_stats(&cs);
	rows[4].used = (long long)cs.bytes;
	result_begin(&r, cols, 5, "siiii");
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct row w = { 0 };
		row_str(&w, rows[i].name);
		row_int(&w, rows[i].size);
		row_int(&w, rows[i].used);
		row_str(&w, "0");
		row_int(&w, rows[i].size * rows[i].used);
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
}

/* Counts feeds that are up ([0]) and required but not up ([1]). */
static bool count_feeds(const struct notify_status *st, void *arg)
{
	uint64_t *n = arg;
	if (st->connected)
		n[0]++;
	else if (st->enabled)
		n[1]++;
	return true;
}

/* SHOW CACHE: the cache's global figures as name/value rows. */
static void show_cache(struct client *c)
{
	static const char *const cols[] = { "name", "value" };
	struct result r;
	struct cache_stats st;
	uint64_t lookups;
	memset(&st, 0, sizeof(st));
	cache_get_stats(&st);
	lookups = st.hits + st.misses;
	struct {
		const char *name;
		uint64_t v;
	} rows[] = {
		{ "enabled", cache_enabled() ? 1 : 0 }, { "entries", st.entries }, { "bytes", st.bytes },
		{ "max_memory", st.max_memory }, { "hits", st.hits }, { "misses", st.misses }, { "waits", st.waits },
		{ "stores", st.stores }, { "discarded_racing", st.discarded_racing }, { "too_big", st.too_big },
		{ "evictions", st.evictions }, { "expirations", st.expirations }, { "invalidations", st.invalidations },
		{ "flushes", st.flushes },
	};
	result_begin(&r, cols, 2, "sN");
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct row w = { 0 };
		row_str(&w, rows[i].name);
		row_u64(&w, rows[i].v);
		result_row(&r, &w);
	}
	{
		struct row w = { 0 };
		row_str(&w, "hit_ratio");
		row_fmt(&w, "%.4f", lookups ? (double)st.hits / (double)lookups : 0.0);
		result_row(&r, &w);
	}
	{
		/* invalidation feeds (details in SHOW CACHE_FEED): up, and required but down (entries not served) */
		uint64_t feeds[2] = { 0, 0 };
		notify_foreach(count_feeds, feeds);
		for (int i = 0; i < 2; i++) {
			struct row w = { 0 };
			row_str(&w, i ? "feeds_down" : "feeds_up");
			row_u64(&w, feeds[i]);
			result_row(&r, &w);
		}
	}
	result_end(c, &r, "SHOW");
}

static bool cache_table_row(const struct cache_table_stats *t, void *arg)
{
	struct result *r = arg;
	struct row w = { 0 };
	row_str(&w, t->table);
	if (t->ttl_sec >= 0)
		row_int(&w, t->ttl_sec);
	else
		row_str(&w, NULL);
	row_u64(&w, t->entries);
	row_u64(&w, t->bytes);
	row_u64(&w, t->invalidations);
	row_u64(&w, t->generation);
	result_row(r, &w);
	return true;
}

static void show_cache_tables(struct client *c)
{
	static const char *const cols[] = { "table", "ttl", "entries", "bytes", "invalidations", "generation" };
	struct result r;
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "siNNNN");
	cache_foreach_table(cache_table_row, &r);
	result_end(c, &r, "SHOW");
}

/* One row of SHOW CACHE_FEED. */
static bool cache_feed_row(const struct notify_status *st, void *arg)
{
	struct result *r = arg;
	struct row w = { 0 };
	usec_t now = now_usec();
	row_str(&w, st->dbname);
	row_str(&w, st->host);
	row_int(&w, st->port);
	row_str(&w, st->user);
	row_str(&w, st->state);
	row_str(&w, st->enabled ? "yes" : "no");
	row_u64(&w, st->notifications);
	row_u64(&w, st->reconnects);
	if (st->last_notification)
		row_fmt(&w, "%.3f", (double)(wall_usec() - st->last_notification) / USEC_PER_SEC);
	else
		row_str(&w, NULL);
	if (st->down_since)
		row_fmt(&w, "%.3f", (double)(now - st->down_since) / USEC_PER_SEC);
	else
		row_str(&w, NULL);
	row_str(&w, st->last_error);
	result_row(r, &w);
	return true;
}

/* SHOW CACHE_FEED: the invalidation feed of each cached database (notify.c). required = the database's entries are
 * served only while the feed is up. */
static void show_cache_feed(struct client *c)
{
	static const char *const cols[] = { "database", "host", "port", "user", "state", "required", "notifications",
					    "reconnects", "last_notification_age", "down_for", "last_error" };
	struct result r;
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "ssissNNNNNs");
	notify_foreach(cache_feed_row, &r);
	result_end(c, &r, "SHOW");
}

/* Shapes collected for sorting. */
struct shape_list {
	struct shape **v;
	int n, cap;
};

static bool collect_shape(struct shape *s, void *arg)
{
	struct shape_list *l = arg;
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 64;
		l->v = xrealloc(l->v, (size_t)l->cap * sizeof(*l->v));
	}
	shape_ref(s);
	l->v[l->n++] = s;
	return true;
}

static int shape_by_time(const void *a, const void *b)
{
	const struct shape *x = *(const struct shape *const *)a, *y = *(const struct shape *const *)b;
	if (x->total_time != y->total_time)
		return x->total_time > y->total_time ? -1 : 1;
	return x->id < y->id ? -1 : (x->id > y->id);
}

static const char *const shape_kind_names[] = { "read", "write", "ddl", "truncate", "begin", "commit", "rollback",
						"set_role", "set", "multi", "other", "unparsed" };

/* SHOW SHAPES: every remembered shape, largest total time first; times in microseconds. */
static void show_shapes(struct client *c)
{
	static const char *const cols[] = { "shape_id", "kind", "calls", "hits", "misses", "slow", "total_time",
					    "avg_time", "max_time", "cacheable", "last_refusal", "query" };
	struct shape_list l = { 0 };
	struct result r;
	shape_foreach(collect_shape, &l);
	if (l.n > 1)
		qsort(l.v, (size_t)l.n, sizeof(*l.v), shape_by_time);
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "ssNNNNNNNsss");
	for (int i = 0; i < l.n; i++) {
		const struct shape *s = l.v[i];
		struct row w = { 0 };
		row_fmt(&w, "0x%016llx", (unsigned long long)s->id);
		row_str(&w, (size_t)s->kind < ARRAY_SIZE(shape_kind_names) ? shape_kind_names[s->kind] : "?");
		row_u64(&w, s->calls);
		row_u64(&w, s->hits);
		row_u64(&w, s->misses);
		row_u64(&w, s->slow);
		row_int(&w, s->total_time);
		row_int(&w, s->calls ? s->total_time / (usec_t)s->calls : 0);
		row_int(&w, s->max_time);
		row_str(&w, s->cacheable_kind ? "yes" : "no");
		row_str(&w, s->cacheable_kind ? s->last_refusal : s->not_cacheable);
		row_str(&w, s->normalized);
		result_row(&r, &w);
	}
	result_end(c, &r, "SHOW");
	for (int i = 0; i < l.n; i++)
		shape_unref(l.v[i]);
	free(l.v);
}

static void slow_row(const struct stats_slow_entry *e, void *arg)
{
	struct result *r = arg;
	struct row w = { 0 };
	row_time(&w, e->when);
	row_fmt(&w, "0x%016llx", (unsigned long long)e->shape_id);
	row_str(&w, e->database);
	row_str(&w, e->user);
	row_str(&w, e->client_addr);
	row_int(&w, e->client_port);
	row_int(&w, e->duration);
	row_str(&w, e->from_cache ? "yes" : "no");
	row_str(&w, e->query);
	result_row(r, &w);
}

/* SHOW SLOW_QUERIES: the last STATS_SLOW_RING slow requests, oldest first; duration in microseconds. */
static void show_slow_queries(struct client *c)
{
	static const char *const cols[] = { "time", "shape_id", "database", "user", "client_addr", "client_port",
					    "duration", "from_cache", "query" };
	struct result r;
	result_begin(&r, cols, (int)ARRAY_SIZE(cols), "sssssiNss");
	stats_slow_foreach(slow_row, &r);
	result_end(c, &r, "SHOW");
}

/* ---- control commands ---- */

/* Pools of database db ("" or NULL = all). */
static bool pool_matches(const struct pool *p, const char *db)
{
	return !db || !*db || strcmp(p->dbname, db) == 0;
}

/* A database named in [databases], or one a pool serves (through the "*" entry). */
static bool db_known(const char *db)
{
	struct pool *p, *tmp;
	struct db_def *d;
	HASH_FIND_STR(g.cfg.databases, db, d);
	if (d)
		return true;
	HASH_ITER(hh, g.pools, p, tmp)
		if (strcmp(p->dbname, db) == 0)
			return true;
	return false;
}

/* Marks every server of p to be closed once free and closes the idle ones now. */
static void close_servers_when_free(struct pool *p)
{
	struct list_head *lists[] = { &p->servers_active, &p->servers_used, &p->servers_tested, &p->servers_login };
	struct list_head *pos;
	for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
		list_for_each(pos, lists[i]) list_entry(pos, struct server, node)->dirty = true;
	while (!list_empty(&p->servers_idle))
		server_disconnect(list_first_entry(&p->servers_idle, struct server, node), "admin console: reconnect/pause");
}

static int servers_left(const char *db)
{
	struct pool *p, *tmp;
	int n = 0;
	HASH_ITER(hh, g.pools, p, tmp)
		if (pool_matches(p, db))
			n += pool_server_total(p);
	return n;
}

static void cmd_pause(struct client *c, const char *db)
{
	struct pool *p, *tmp;
	if (db && !db_known(db)) {
		admin_error(c, "08P01", "PAUSE: no such database");
		return;
	}
	if (!db)
		paused_all = true;
	HASH_ITER(hh, g.pools, p, tmp) {
		if (!pool_matches(p, db))
			continue;
		p->paused = true;
		close_servers_when_free(p);
	}
	log_info("admin: PAUSE %s by %s", db ? db : "(all)", c->user);
	if (servers_left(db) == 0) {
		admin_ok(c, "PAUSE");
		return;
	}
	for (int i = 0; i < MAX_PAUSE_WAITERS; i++) {
		if (pause_waiters[i].key == 0) {
			pause_waiters[i].key = c->cancel_hash_key;
			strlcpy_ok(pause_waiters[i].db, db ? db : "", sizeof(pause_waiters[i].db));
			sock_want_read(&c->s, false);
			return;
		}
	}
	admin_error(c, "53300", "PAUSE: too many PAUSE commands are waiting; the pause is in effect, servers still close");
}

void admin_janitor(void)
{
	for (int i = 0; i < MAX_PAUSE_WAITERS; i++) {
		struct pause_waiter *w = &pause_waiters[i];
		struct client *c;
		if (w->key == 0)
			continue;
		HASH_FIND(hh_cancel, g.clients_by_key, &w->key, sizeof(uint64_t), c);
		if (!c || c->state == CL_JUSTFREE) {
			w->key = 0;
			continue;
		}
		if (servers_left(w->db) > 0)
			continue;
		w->key = 0;
		admin_ok(c, "PAUSE");
		sock_want_read(&c->s, true);
		if (sock_flush(&c->s) < 0)
			client_disconnect(c, NULL, "client socket write failed");
	}
}

static void cmd_resume(struct client *c, const char *db)
{
	struct pool *p, *tmp;
	if (db && !db_known(db)) {
		admin_error(c, "08P01", "RESUME: no such database");
		return;
	}
	if (!db)
		paused_all = false;
	HASH_ITER(hh, g.pools, p, tmp) {
		if (!pool_matches(p, db) || !p->paused)
			continue;
		p->paused = false;
		/* Hand idle servers to the clients that queued meanwhile, then open more if needed. */
		while (!list_empty(&p->clients_waiting) && !list_empty(&p->servers_idle))
			pool_server_ready(list_first_entry(&p->servers_idle, struct server, node));
		pool_launch_if_needed(p);
	}
	log_info("admin: RESUME %s by %s", db ? db : "(all)", c->user);
	admin_ok(c, "RESUME");
}

static void cmd_kill(struct client *c, const char *db)
{
	struct pool *p, *tmp;
	if (!db) {
		admin_error(c, SQLSTATE_SYNTAX_ERROR, "KILL needs a database name");
		return;
	}
	if (!db_known(db)) {
		admin_error(c, "08P01", "KILL: no such database");
		return;
	}
	log_info("admin: KILL %s by %s", db, c->user);
	HASH_ITER(hh, g.pools, p, tmp) {
		struct list_head *slists[] = { &p->servers_active, &p->servers_idle, &p->servers_used, &p->servers_tested,
					       &p->servers_login };
		struct list_head *clists[] = { &p->clients_active, &p->clients_waiting, &p->clients_login };
		if (!pool_matches(p, db))
			continue;
		p->paused = true; /* new clients wait until RESUME, as in PgBouncer */
		for (size_t i = 0; i < ARRAY_SIZE(slists); i++)
			while (!list_empty(slists[i]))
				server_disconnect(list_first_entry(slists[i], struct server, node), "database killed by admin");
		for (size_t i = 0; i < ARRAY_SIZE(clists); i++)
			while (!list_empty(clists[i]))
				client_disconnect(list_first_entry(clists[i], struct client, node), SQLSTATE_ADMIN_SHUTDOWN,
						  "database killed by admin console");
	}
	admin_ok(c, "KILL");
}

static void cmd_reconnect(struct client *c, const char *db)
{
	struct pool *p, *tmp;
	if (db && !db_known(db)) {
		admin_error(c, "08P01", "RECONNECT: no such database");
		return;
	}
	log_info("admin: RECONNECT %s by %s", db ? db : "(all)", c->user);
	HASH_ITER(hh, g.pools, p, tmp) {
		if (!pool_matches(p, db))
			continue;
		close_servers_when_free(p);
		pool_launch_if_needed(p);
	}
	admin_ok(c, "RECONNECT");
}

static void cmd_set(struct client *c, const char *args)
{
	char key[128], value[1024], err[512];
	const char *eq = strchr(args, '=');
	size_t klen, vlen;
	const char *v;
	while (isspace((unsigned char)*args))
		args++;
	if (!eq) {
		admin_error(c, SQLSTATE_SYNTAX_ERROR, "SET: expected SET key = value");
		return;
	}
	klen = (size_t)(eq - args);
	while (klen > 0 && isspace((unsigned char)args[klen - 1]))
		klen--;
	if (klen == 0 || klen >= sizeof(key)) {
		admin_error(c, SQLSTATE_SYNTAX_ERROR, "SET: missing or overlong setting name");
		return;
	}
	memcpy(key, args, klen);
	key[klen] = '\0';
	for (char *k = key; *k; k++)
		*k = (char)tolower((unsigned char)*k);
	v = eq + 1;
	while (isspace((unsigned char)*v))
		v++;
	vlen = strlen(v);
	while (vlen > 0 && isspace((unsigned char)v[vlen - 1]))
		vlen--;
	if (vlen >= 2 && v[0] == '\'' && v[vlen - 1] == '\'') {
		/* 'quoted', with '' standing for one quote */
		size_t o = 0;
		for (size_t i = 1; i + 1 < vlen && o + 1 < sizeof(value); i++) {
			value[o++] = v[i];
			if (v[i] == '\'' && v[i + 1] == '\'')
				i++;
		}
		value[o] = '\0';
	} else {
		if (vlen >= sizeof(value)) {
			admin_error(c, SQLSTATE_SYNTAX_ERROR, "SET: value too long");
			return;
		}
		memcpy(value, v, vlen);
		value[vlen] = '\0';
	}
	if (config_set(&g.cfg, key, value, err, sizeof(err)) < 0) {
		admin_error(c, "22023", err);
		return;
	}
	log_info("admin: SET %s = '%s' by %s", key, value, c->user);
	parley_settings_changed();
	admin_ok(c, "SET");
}

static void cmd_cache_flush(struct client *c, const char *table)
{
	uint64_t n = cache_flush(table);
	char tag[64];
	log_info("admin: CACHE FLUSH %s by %s: %llu entries removed", table ? table : "(all)", c->user,
		 (unsigned long long)n);
	snprintf(tag, sizeof(tag), "CACHE FLUSH %llu", (unsigned long long)n);
	admin_ok(c, tag);
}

/* ---- parsing and dispatch ---- */

/* Next word of *s (an identifier, or a "quoted" one) into out; false when there is none. */
static bool next_word(const char **s, char *out, size_t outlen, bool *quoted)
{
	const char *p = *s;
	size_t n = 0;
	*quoted = false;
	while (isspace((unsigned char)*p))
		p++;
	if (!*p)
		return false;
	if (*p == '"') {
		*quoted = true;
		p++;
		while (*p && !(*p == '"' && p[1] != '"')) {
			if (*p == '"')
				p++;
			if (n + 1 < outlen)
				out[n++] = *p;
			p++;
		}
		if (*p == '"')
			p++;
	} else {
		while (*p && !isspace((unsigned char)*p)) {
			if (n + 1 < outlen)
				out[n++] = *p;
			p++;
		}
	}
	out[n] = '\0';
	*s = p;
	return true;
}

static void lower(char *s)
{
	for (; *s; s++)
		*s = (char)tolower((unsigned char)*s);
}

static bool rest_empty(const char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	return *s == '\0';
}

/* SHOW subcommands: name and handler. */
static const struct {
	const char *name;
	void (*fn)(struct client *c);
} show_cmds[] = {
	{ "help", show_help }, { "version", show_version }, { "state", show_state }, { "pools", show_pools },
	{ "totals", show_totals }, { "clients", show_clients }, { "servers", show_servers },
	{ "databases", show_databases }, { "users", show_users }, { "config", show_config }, { "lists", show_lists },
	{ "mem", show_mem }, { "cache", show_cache }, { "cache_tables", show_cache_tables }, { "cache_feed", show_cache_feed }, { "shapes", show_shapes },
	{ "slow_queries", show_slow_queries },
};

static void show_stats_all(struct client *c) { show_stats(c, 0); }
static void show_stats_totals(struct client *c) { show_stats(c, 1); }
static void show_stats_averages(struct client *c) { show_stats(c, 2); }

static void dispatch_show(struct client *c, const char *what)
{
	if (strcmp(what, "stats") == 0) {
		show_stats_all(c);
		return;
	}
	if (strcmp(what, "stats_totals") == 0) {
		show_stats_totals(c);
		return;
	}
	if (strcmp(what, "stats_averages") == 0) {
		show_stats_averages(c);
		return;
	}
	for (size_t i = 0; i < ARRAY_SIZE(show_cmds); i++) {
		if (strcmp(what, show_cmds[i].name) == 0) {
			show_cmds[i].fn(c);
			return;
		}
	}
	{
		char msg[200];
		snprintf(msg, sizeof(msg), "unknown SHOW command: %.100s (SHOW HELP lists them)", what);
		admin_error(c, SQLSTATE_SYNTAX_ERROR, msg);
	}
}

void admin_handle_query(struct client *c, const char *sql)
{
	char buf[1024], verb[64], arg[NAME_MAX_LEN * 2], extra[64];
	const char *s;
	size_t n;
	bool quoted, has_arg, is_admin, is_stats;

	/* trim, drop trailing semicolons */
	while (*sql && isspace((unsigned char)*sql))
		sql++;
	n = strlen(sql);
	while (n > 0 && (isspace((unsigned char)sql[n - 1]) || sql[n - 1] == ';'))
		n--;
	if (n >= sizeof(buf)) {
		admin_error(c, SQLSTATE_SYNTAX_ERROR, "admin command too long");
		return;
	}
	memcpy(buf, sql, n);
	buf[n] = '\0';
	if (n == 0) {
		struct pkt_builder b;
		pkt_init(&b);
		pkt_begin(&b, 'I'); /* EmptyQueryResponse */
		pkt_end(&b);
		pkt_ready(&b, 'I');
		if (!b.failed)
			evbuffer_add(c->s.out, b.buf, b.len);
		pkt_free(&b);
		return;
	}
	s = buf;
	if (!next_word(&s, verb, sizeof(verb), &quoted)) {
		admin_error(c, SQLSTATE_SYNTAX_ERROR, "empty admin command");
		return;
	}
	lower(verb);
	is_admin = config_list_contains(g.cfg.admin_users, c->user);
	is_stats = config_list_contains(g.cfg.stats_users, c->user);
	if (!is_admin && !is_stats) {
		admin_error(c, SQLSTATE_INSUFFICIENT_PRIVILEGE, "admin console access denied: user is not in admin_users or stats_users");
		return;
	}
	if (strcmp(verb, "show") == 0) {
		if (!next_word(&s, arg, sizeof(arg), &quoted)) {
			admin_error(c, SQLSTATE_SYNTAX_ERROR, "SHOW needs a subject (SHOW HELP lists them)");
			return;
		}
		lower(arg);
		if (!rest_empty(s)) {
			admin_error(c, SQLSTATE_SYNTAX_ERROR, "SHOW takes no arguments");
			return;
		}
		dispatch_show(c, arg);
		return;
	}
	if (!is_admin) {
		admin_error(c, SQLSTATE_INSUFFICIENT_PRIVILEGE,
			    "admin console: only SHOW commands are allowed for stats_users; this needs admin_users");
		return;
	}
	if (strcmp(verb, "set") == 0) {
		cmd_set(c, s);
		return;
	}
	has_arg = next_word(&s, arg, sizeof(arg), &quoted);
	if (strcmp(verb, "cache") == 0) {
		char table[NAME_MAX_LEN * 2];
		lower(arg);
		if (!has_arg || strcmp(arg, "flush") != 0) {
			admin_error(c, SQLSTATE_SYNTAX_ERROR, "expected CACHE FLUSH [table]");
			return;
		}
		has_arg = next_word(&s, table, sizeof(table), &quoted);
		if (!rest_empty(s)) {
			admin_error(c, SQLSTATE_SYNTAX_ERROR, "CACHE FLUSH takes at most one table name");
			return;
		}
		if (has_arg && !quoted)
			lower(table);
		cmd_cache_flush(c, has_arg ? table : NULL);
		return;
	}
	if (next_word(&s, extra, sizeof(extra), &quoted)) {
		char msg[200];
		snprintf(msg, sizeof(msg), "%s: too many arguments", verb);
		admin_error(c, SQLSTATE_SYNTAX_ERROR, msg);
		return;
	}
	if (strcmp(verb, "pause") == 0)
		cmd_pause(c, has_arg ? arg : NULL);
	else if (strcmp(verb, "resume") == 0)
		cmd_resume(c, has_arg ? arg : NULL);
	else if (strcmp(verb, "kill") == 0)
		cmd_kill(c, has_arg ? arg : NULL);
	else if (strcmp(verb, "reconnect") == 0)
		cmd_reconnect(c, has_arg ? arg : NULL);
	else if (strcmp(verb, "reload") == 0 && !has_arg) {
		log_info("admin: RELOAD by %s", c->user);
		parley_reload();
		admin_ok(c, "RELOAD");
	} else if (strcmp(verb, "shutdown") == 0) {
		enum shutdown_mode mode = SHUTDOWN_NONE;
		if (has_arg) {
			lower(arg);
			if (strcmp(arg, "wait_for_servers") == 0)
				mode = SHUTDOWN_SAFE;
			else if (strcmp(arg, "wait_for_clients") == 0)
				mode = SHUTDOWN_WAIT_CLIENTS;
			else {
				admin_error(c, SQLSTATE_SYNTAX_ERROR, "SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS");
				return;
			}
		}
		log_info("admin: SHUTDOWN%s%s by %s", has_arg ? " " : "", has_arg ? arg : "", c->user);
		admin_ok(c, "SHUTDOWN");
		(void)sock_flush_quiet(&c->s);
		parley_shutdown(mode);
	} else {
		char msg[200];
		snprintf(msg, sizeof(msg), "unknown admin command: %.60s (SHOW HELP lists them)", verb);
		admin_error(c, SQLSTATE_SYNTAX_ERROR, msg);
	}
}
