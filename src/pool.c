/* pool.c — pools keyed by (database, user): server assignment, the FIFO wait queue, sizing and timeouts. */
#include "parley.h"
#include "stats.h"

/* Copies src into a fresh heap string (NULL stays NULL). */
static char *dup_or_null(const char *s)
{
	return s ? xstrdup(s) : NULL;
}

static bool str_changed(const char *a, const char *b)
{
	if (!a || !b)
		return a != b;
	return strcmp(a, b) != 0;
}

static void set_forced(struct varcache *vc, enum tracked_var v, const char *val)
{
	vc->set[v] = false;
	if (val && strlen(val) < VAR_VALUE_MAX) {
		strcpy(vc->value[v], val);
		vc->set[v] = true;
	}
}

void pool_apply_config(struct pool *p, const struct db_def *db, const struct user_def *ud)
{
	const char *server_user = db->user ? db->user : p->user;
	const char *server_db = db->dbname ? db->dbname : p->dbname;
	bool changed = str_changed(p->host, db->host) || p->port != db->port || str_changed(p->server_dbname, server_db) ||
		       str_changed(p->server_user, server_user) || str_changed(p->server_password, db->password);
	struct list_head *lists[] = { &p->servers_idle, &p->servers_active, &p->servers_used, &p->servers_tested,
				      &p->servers_login };

	free(p->host);
	free(p->server_dbname);
	free(p->server_user);
	free(p->server_password);
	free(p->connect_query);
	p->host = dup_or_null(db->host);
	p->port = db->port > 0 ? db->port : 5432;
	p->server_dbname = xstrdup(server_db);
	p->server_user = xstrdup(server_user);
	p->server_password = dup_or_null(db->password);
	p->connect_query = dup_or_null(db->connect_query);
	/* As PgBouncer: a [users] value wins over the [databases] one, which wins over the global setting. */
	p->pool_size = ud && ud->pool_size >= 0 ? ud->pool_size : (db->pool_size >= 0 ? db->pool_size : g.cfg.default_pool_size);
	p->min_pool_size = db->min_pool_size >= 0 ? db->min_pool_size : g.cfg.min_pool_size;
	p->reserve_pool = db->reserve_pool >= 0 ? db->reserve_pool : g.cfg.reserve_pool_size;
	/* 0 in [databases] means "not set" there, like PgBouncer (the global 0 means unlimited) */
	p->max_db_connections = db->max_db_connections > 0 ? db->max_db_connections : g.cfg.max_db_connections;
	if (ud && ud->pool_mode != POOL_MODE_UNSET)
		p->mode = ud->pool_mode;
	else if (db->pool_mode != POOL_MODE_UNSET)
		p->mode = db->pool_mode;
	else
		p->mode = g.cfg.pool_mode;
	set_forced(&p->forced_vars, VAR_CLIENT_ENCODING, db->client_encoding);
	set_forced(&p->forced_vars, VAR_DATESTYLE, db->datestyle);
	set_forced(&p->forced_vars, VAR_TIMEZONE, db->timezone);
	set_forced(&p->forced_vars, VAR_APPNAME, db->application_name);

	if (changed) {
		/* Connections made with the old parameters are closed as soon as they are free. */
		for (size_t i = 0; i < ARRAY_SIZE(lists); i++) {
			struct list_head *pos, *tmp;
			list_for_each_safe(pos, tmp, lists[i]) {
				struct server *sv = list_entry(pos, struct server, node);
				sv->dirty = true;
				if (sv->state == SV_IDLE)
					server_disconnect(sv, "database configuration changed");
			}
		}
		p->last_login_fail = 0;
	}
}

struct pool *pool_get(const char *dbname, const char *user, const struct db_def *db, const struct user_def *ud)
{
	char key[sizeof(((struct pool *)0)->key)];
	struct pool *p;
	snprintf(key, sizeof(key), "%s\x01%s", dbname, user);
	HASH_FIND_STR(g.pools, key, p);
	if (p)
		return p;
	p = xcalloc(1, sizeof(*p));
	strcpy(p->key, key);
	strlcpy_ok(p->dbname, dbname, sizeof(p->dbname));
	strlcpy_ok(p->user, user, sizeof(p->user));
	list_init(&p->clients_active);
	list_init(&p->clients_waiting);
	list_init(&p->clients_login);
	list_init(&p->servers_login);
	list_init(&p->servers_idle);
	list_init(&p->servers_active);
	list_init(&p->servers_used);
	list_init(&p->servers_tested);
	p->port = -1;
	pool_apply_config(p, db, ud);
	HASH_ADD_STR(g.pools, key, p);
	log_debug("new pool %s/%s (size %d, %s mode)", dbname, user, p->pool_size, pool_mode_name(p->mode));
	return p;
}

int pool_server_total(const struct pool *p)
{
	return p->n_servers_login + p->n_servers_idle + p->n_servers_active + p->n_servers_used + p->n_servers_tested;
}

/* Server connections to the same server database, across users (for max_db_connections). */
static int db_server_total(const struct pool *p)
{
	struct pool *q, *tmp;
	int n = 0;
	HASH_ITER(hh, g.pools, q, tmp) {
		if (strcmp(q->dbname, p->dbname) == 0)
			n += pool_server_total(q);
	}
	return n;
}

/* Server connections logged in as p's server user, across databases (for max_user_connections). */
static int user_server_total(const struct pool *p)
{
	struct pool *q, *tmp;
	int n = 0;
	HASH_ITER(hh, g.pools, q, tmp) {
		if (q->server_user && p->server_user && strcmp(q->server_user, p->server_user) == 0)
			n += pool_server_total(q);
	}
	return n;
}

/* max_user_connections for p's server user: its [users] value when above 0, else the global one (0 = no limit). */
static int user_conn_limit(const struct pool *p)
{
	const struct user_def *ud = p->server_user ? config_find_user(&g.cfg, p->server_user) : NULL;
	return ud && ud->max_user_connections > 0 ? ud->max_user_connections : g.cfg.max_user_connections;
}

/* Closes the longest-idle server of another pool that counts against the same limit as p (the same database when
 * by_db, else the same server user), so that a database or user at its limit does not keep connections idle in one
 * pool while clients of another wait (PgBouncer evicts likewise). Returns true if one was closed. */
static bool evict_idle_server(struct pool *p, bool by_db)
{
	struct pool *q, *tmp;
	struct server *victim = NULL;
	HASH_ITER(hh, g.pools, q, tmp) {
		struct server *sv;
		if (q == p || list_empty(&q->servers_idle))
			continue;
		if (by_db ? strcmp(q->dbname, p->dbname) != 0
			  : !q->server_user || !p->server_user || strcmp(q->server_user, p->server_user) != 0)
			continue;
		sv = list_entry(q->servers_idle.prev, struct server, node);	/* LIFO list: the tail waited longest */
		if (!victim || sv->last_used < victim->last_used)
			victim = sv;
	}
	if (!victim)
		return false;
	server_disconnect(victim, by_db ? "closed to make room for another pool of the database (max_db_connections)"
					: "closed to make room for another pool of the user (max_user_connections)");
	return true;
}

/* Whether p may open one more server connection within max_db_connections and max_user_connections. With evict,
 * an idle server of another pool of the same database or user is closed when that is what stands in the way. */
static bool limits_allow_launch(struct pool *p, bool evict)
{
	int ulimit;
	if (p->max_db_connections > 0 && db_server_total(p) >= p->max_db_connections &&
	    (!evict || !evict_idle_server(p, true) || db_server_total(p) >= p->max_db_connections))
		return false;
	ulimit = user_conn_limit(p);
	if (ulimit > 0 && user_server_total(p) >= ulimit &&
	    (!evict || !evict_idle_server(p, false) || user_server_total(p) >= ulimit))
		return false;
	return true;
}

/* The length counter of p's list that holds a client in state st, or NULL when that list is not one of p's (login
 * and justfree clients sit on global lists, an admin console client has no pool). */
static int *client_list_len(struct pool *p, enum client_state st)
{
	if (!p)
		return NULL;
	switch (st) {
	case CL_WAITING_LOGIN:
		return &p->n_clients_login;
	case CL_ACTIVE:
		return &p->n_clients_active;
	case CL_WAITING:
		return &p->n_clients_waiting;
	default:
		return NULL;
	}
}

void pool_client_change_state(struct client *c, enum client_state st)
{
	struct pool *p = c->pool;
	int *len = client_list_len(p, c->state);
	if (len)
		(*len)--;
	list_del(&c->node);
	c->state = st;
	len = client_list_len(p, st);
	if (len)
		(*len)++;
	switch (st) {
	case CL_LOGIN:
		list_add_tail(&c->node, &g.login_clients);
		break;
	case CL_WAITING_LOGIN:
		list_add_tail(&c->node, &p->clients_login);
		break;
	case CL_ACTIVE:
		if (p)
			list_add_tail(&c->node, &p->clients_active);
		else
			list_add_tail(&c->node, &g.login_clients);
		break;
	case CL_WAITING:
		list_add_tail(&c->node, &p->clients_waiting);
		break;
	case CL_JUSTFREE:
		list_add_tail(&c->node, &g.justfree_clients);
		break;
	case CL_STATE_COUNT:
		break;
	}
}

/* How long the oldest waiting client has waited. */
static usec_t oldest_wait(const struct pool *p, usec_t now)
{
	const struct client *c;
	if (list_empty(&p->clients_waiting))
		return 0;
	c = list_first_entry(&p->clients_waiting, struct client, node);
	return now - c->request_time;
}

/* Whether the pool is still in its server_login_retry pause after a failed login. An unreachable server (down,
 * restarting) is retried after at most a second, so clients are served again within a second of it coming back;
 * a login PostgreSQL refused (password, missing database) waits the whole server_login_retry. */
static bool login_retry_pending(const struct pool *p, usec_t now)
{
	usec_t wait = g.cfg.server_login_retry;
	if (p->last_fail_unreachable && wait > USEC_PER_SEC)
		wait = USEC_PER_SEC;
	return p->last_login_fail && now - p->last_login_fail < wait;
}

/* Closes c with the pool's last server login error while server_login_retry has not passed. */
static void refuse_during_login_retry(struct client *c)
{
	char msg[400];
	snprintf(msg, sizeof(msg), "server login has been failing, try again later (server_login_retry): %s",
		 c->pool->last_login_error);
	client_disconnect(c, SQLSTATE_CANNOT_CONNECT, msg);
}

void pool_launch_if_needed(struct pool *p)
{
	usec_t now;
	int want, total, limit;

	if (g.shutdown == SHUTDOWN_SAFE || p->paused)
		return;
	want = p->n_clients_waiting + (p->welcome_ready ? 0 : p->n_clients_login);
	if (!p->welcome_ready && want > 1)
		want = 1; /* learn the welcome from one login before opening more */
	want -= p->n_servers_login + p->n_servers_tested;	/* servers under a check or connect_query come next */
	if (want <= 0)
		return;
	total = pool_server_total(p);
	/* Full even with the reserve: the common case under load, decided without reading the clock. */
	if ((long long)total >= (long long)p->pool_size + (p->reserve_pool > 0 ? p->reserve_pool : 0))
		return;
	now = now_usec();
	if (login_retry_pending(p, now)) {
		/* As PgBouncer: while a refused server login waits out server_login_retry, clients logging in to the
		 * pool get the error at once instead of queueing (an unreachable server is retried within a second) */
		if (!p->last_fail_unreachable && total == 0)
			while (!list_empty(&p->clients_login))
				refuse_during_login_retry(list_first_entry(&p->clients_login, struct client, node));
		return;
	}
	limit = p->pool_size;
	/* reserve_pool_timeout = 0 disables the reserve pool, as in PgBouncer */
	if (p->reserve_pool > 0 && g.cfg.reserve_pool_timeout > 0 && oldest_wait(p, now) >= g.cfg.reserve_pool_timeout &&
	    !list_empty(&p->clients_waiting))
		limit += p->reserve_pool;
	while (want > 0 && total < limit) {
		if (!limits_allow_launch(p, true))
			break;
		if (!server_launch(p))
			break;
		total++;
		want--;
	}
}

/* Links sv and c (both in the same pool). */
static void link_pair(struct server *sv, struct client *c)
{
	usec_t now = now_cached();
	sv->client = c;
	c->server = sv;
	sv->link_time = now;
	sv->expect_rfq = 0;
	server_change_state(sv, SV_ACTIVE);
	stats_client_waited(c->pool, c->state == CL_WAITING && now > c->request_time ? now - c->request_time : 0);
	pool_client_change_state(c, CL_ACTIVE);
	server_resume_reading(sv);
}

/* Whether an idle server must pass server_check_query before a client gets it: it has been idle at least
 * server_check_delay (0 = always); an empty server_check_query turns the check off. */
static bool server_needs_check(const struct server *sv, usec_t now)
{
	return g.cfg.server_check_query && *g.cfg.server_check_query && now - sv->last_used >= g.cfg.server_check_delay;
}

bool pool_request_server(struct client *c)
{
	struct pool *p = c->pool;
	if (!list_empty(&p->servers_idle) && g.shutdown != SHUTDOWN_SAFE && !p->paused) {
		struct server *sv = list_first_entry(&p->servers_idle, struct server, node);
		usec_t now = now_cached();
		if (server_needs_check(sv, now)) {
			/* c waits while the check runs; pool_server_ready then gives it this server, or a failed check
			 * closes the server and another one is opened for c */
			pool_client_change_state(c, CL_WAITING);
			c->request_time = now;
			server_change_state(sv, SV_TESTED);
			server_internal_query(sv, g.cfg.server_check_query);
			return false;
		}
		link_pair(sv, c);
		return true;
	}
	if (login_retry_pending(p, now_usec()) && pool_server_total(p) == 0) {
		refuse_during_login_retry(c);
		return false;
	}
	pool_client_change_state(c, CL_WAITING);
	c->request_time = now_cached();
	/* Reading stays on while c waits (two epoll_ctl calls fewer per wait): what it sends meanwhile is buffered by
	 * client_process up to OUTBUF_HIGH_WATER, and a client that hangs up leaves the queue at once. */
	pool_launch_if_needed(p);
	return false;
}

void pool_server_ready(struct server *sv)
{
	struct pool *p = sv->pool;
	usec_t now = now_cached();

	if (sv->dirty) {
		server_disconnect(sv, "server connection is dirty");
		return;
	}
	if (g.cfg.server_lifetime > 0 && now - sv->connect_time > g.cfg.server_lifetime && list_empty(&p->clients_waiting)) {
		server_disconnect(sv, "server lifetime over");
		return;
	}
	if (!list_empty(&p->clients_waiting) && g.shutdown != SHUTDOWN_SAFE && !p->paused) {
		struct client *c = list_first_entry(&p->clients_waiting, struct client, node);
		link_pair(sv, c);
		client_server_linked(c);
		return;
	}
	sv->last_used = now;
	server_change_state(sv, SV_IDLE);
	parley_check_shutdown();
}

void pool_release_server(struct server *sv)
{
	struct pool *p = sv->pool;
	sv->client = NULL;
	if (sv->state == SV_JUSTFREE)
		return;
	if (sv->dirty) {
		server_disconnect(sv, "server connection is dirty");
		return;
	}
	if (g.cfg.server_reset_query && *g.cfg.server_reset_query &&
	    (p->mode == POOL_SESSION || g.cfg.server_reset_query_always)) {
		server_change_state(sv, SV_USED);
		server_internal_query(sv, g.cfg.server_reset_query);
		return;
	}
	pool_server_ready(sv);
}

void pool_login_failed(struct pool *p, const char *sqlstate, const char *message)
{
	char msg[400];
	p->last_fail_unreachable = sqlstate && (strncmp(sqlstate, "08", 2) == 0 || strcmp(sqlstate, "57P03") == 0);
	/* Clients keep waiting while other servers of the pool can still serve them. */
	if (pool_server_total(p) > 0)
		return;
	snprintf(msg, sizeof(msg), "%s", message);
	while (!list_empty(&p->clients_login)) {
		struct client *c = list_first_entry(&p->clients_login, struct client, node);
		client_disconnect(c, sqlstate, msg);
	}
	while (!list_empty(&p->clients_waiting)) {
		struct client *c = list_first_entry(&p->clients_waiting, struct client, node);
		client_disconnect(c, sqlstate, msg);
	}
}

/* Closes clients that waited longer than query_wait_timeout (both queues). */
static void pool_check_wait_timeouts(struct pool *p, usec_t now)
{
	struct list_head *queues[] = { &p->clients_waiting, &p->clients_login };
	if (g.cfg.query_wait_timeout <= 0)
		return;
	for (size_t i = 0; i < ARRAY_SIZE(queues); i++) {
		struct list_head *pos, *tmp;
		list_for_each_safe(pos, tmp, queues[i]) {
			struct client *c = list_entry(pos, struct client, node);
			if (now - c->request_time > g.cfg.query_wait_timeout)
				client_disconnect(c, SQLSTATE_CANNOT_CONNECT, "query_wait_timeout");
		}
	}
}

static void pool_check_clients(struct pool *p, usec_t now)
{
	struct list_head *pos, *tmp;
	list_for_each_safe(pos, tmp, &p->clients_active) {
		struct client *c = list_entry(pos, struct client, node);
		struct server *sv = c->server;
		if (!sv) {
			if (g.cfg.client_idle_timeout > 0 && now - c->last_active > g.cfg.client_idle_timeout)
				client_disconnect(c, SQLSTATE_IDLE_SESSION_TIMEOUT, "client_idle_timeout");
			continue;
		}
		if (sv->internal)
			continue;
		if (sv->expect_rfq > 0) {
			/* Not idle while its request runs: the idle timeouts count from the end of the last request
			 * (to within a janitor tick), not from when it was sent. */
			c->last_active = now;
			if (g.cfg.query_timeout > 0 && now - sv->query_start > g.cfg.query_timeout) {
				/* Cancel the query too: closing the connection alone leaves the backend running it. */
				server_send_cancel(sv);
				client_disconnect(c, SQLSTATE_QUERY_CANCELED, "query_timeout");
			}
			continue;
		}
		if (g.cfg.idle_transaction_timeout > 0 && sv->expect_rfq == 0 && sv->tx_status != 'I' &&
		    now - c->last_active > g.cfg.idle_transaction_timeout) {
			client_disconnect(c, SQLSTATE_IDLE_IN_TXN_TIMEOUT, "idle transaction timeout");
			continue;
		}
		if (g.cfg.client_idle_timeout > 0 && now - c->last_active > g.cfg.client_idle_timeout)
			client_disconnect(c, SQLSTATE_IDLE_SESSION_TIMEOUT, "client_idle_timeout");
	}
}

static void pool_check_servers(struct pool *p, usec_t now)
{
	struct list_head *pos, *tmp;
	int total = pool_server_total(p);
	/* Oldest idle servers are at the tail (LIFO reuse). */
	for (pos = p->servers_idle.prev, tmp = pos->prev; pos != &p->servers_idle; pos = tmp, tmp = pos->prev) {
		struct server *sv = list_entry(pos, struct server, node);
		if (g.cfg.server_lifetime > 0 && now - sv->connect_time > g.cfg.server_lifetime) {
			server_disconnect(sv, "server lifetime over");
			total--;
		} else if (g.cfg.server_idle_timeout > 0 && now - sv->last_used > g.cfg.server_idle_timeout &&
			   total > p->min_pool_size) {
			server_disconnect(sv, "server idle timeout");
			total--;
		} else if (sv->dirty) {
			server_disconnect(sv, "server connection is dirty");
			total--;
		}
	}
	(void)tmp;
	/* Keep min_pool_size connections warm (once the pool is in use and the server is reachable). */
	if (g.shutdown == SHUTDOWN_NONE && !p->paused && p->min_pool_size > 0 && list_empty(&p->servers_login) &&
	    !login_retry_pending(p, now)) {
		int limit = p->min_pool_size < p->pool_size ? p->min_pool_size : p->pool_size;
		while (total < limit) {
			if (!limits_allow_launch(p, false))
				break;
			if (!server_launch(p))
				break;
			total++;
		}
	}
}

/* Compares the length counters with the lists they count (a short walk, once per janitor tick) and repairs a drift,
 * which would mean that a list was changed outside pool_client_change_state / server_change_state. */
static void pool_check_counters(struct pool *p)
{
	struct {
		const struct list_head *list;
		int *len;
		const char *name;
	} t[] = {
		{ &p->clients_active, &p->n_clients_active, "clients_active" },
		{ &p->clients_waiting, &p->n_clients_waiting, "clients_waiting" },
		{ &p->clients_login, &p->n_clients_login, "clients_login" },
		{ &p->servers_login, &p->n_servers_login, "servers_login" },
		{ &p->servers_idle, &p->n_servers_idle, "servers_idle" },
		{ &p->servers_active, &p->n_servers_active, "servers_active" },
		{ &p->servers_used, &p->n_servers_used, "servers_used" },
		{ &p->servers_tested, &p->n_servers_tested, "servers_tested" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(t); i++) {
		int n = list_count(t[i].list);
		if (n != *t[i].len) {
			log_error("pool %s/%s: %s length counter was %d but the list holds %d (repaired)", p->dbname, p->user,
				  t[i].name, *t[i].len, n);
			*t[i].len = n;
		}
	}
}

void pool_janitor(void)
{
	struct pool *p, *tmp;
	usec_t now = now_usec();
	struct list_head *pos, *ptmp;

	HASH_ITER(hh, g.pools, p, tmp) {
		pool_check_counters(p);
		pool_check_wait_timeouts(p, now);
		pool_check_clients(p, now);
		pool_check_servers(p, now);
		pool_launch_if_needed(p);
	}
	if (g.cfg.client_login_timeout > 0) {
		list_for_each_safe(pos, ptmp, &g.login_clients) {
			struct client *c = list_entry(pos, struct client, node);
			if (c->state == CL_LOGIN && now - c->connect_time > g.cfg.client_login_timeout)
				client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "client_login_timeout (server down or wrong password?)");
		}
	}
}

void pool_reload(void)
{
	struct pool *p, *tmp;
	HASH_ITER(hh, g.pools, p, tmp) {
		const struct db_def *db = config_find_db(&g.cfg, p->dbname);
		if (db)
			pool_apply_config(p, db, config_find_user(&g.cfg, p->user));
	}
}

void pool_free_all(void)
{
	struct pool *p, *tmp;
	HASH_ITER(hh, g.pools, p, tmp) {
		HASH_DEL(g.pools, p);
		free(p->host);
		free(p->server_dbname);
		free(p->server_user);
		free(p->server_password);
		free(p->connect_query);
		for (int i = 0; i < p->welcome_count; i++) {
			free(p->welcome_names[i]);
			free(p->welcome_values[i]);
		}
		free(p);
	}
}
