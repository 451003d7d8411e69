/* authquery.c — auth_user + auth_query: a login whose user is not in auth_file looks the user's secret up on
 * PostgreSQL with one short libpq connection per login, driven by the libevent loop like notify.c's feed; also the
 * parley --hash-password tool.
 *
 * Why libpq and not the pool's own server connections (PgBouncer's way): the lookup then stays out of the relay and
 * the pool state machines (a login client is never linked to a server of another user's pool, no server ever
 * carries a half-read result), and a failed lookup cannot leave a pooled connection in an unknown state. The cost:
 * a backend start per lookup (a few milliseconds on a local server), and auth_user must log in with a plain-text
 * password (auth_file or [databases] password=), trust or ~/.pgpass, since libpq cannot log in with an md5 or SCRAM
 * secret. Nothing is cached across logins: every login runs auth_query again. */
#include "authquery.h"
#include "parley.h"
#include <event2/event.h>
#include <libpq-fe.h>
#include <limits.h>
#include <termios.h>
#include <unistd.h>
#include <openssl/crypto.h>

#define DEFAULT_UNIX_DIR "/var/run/postgresql"
#define LOOKUP_DEFAULT_TIMEOUT (15 * USEC_PER_SEC)   /* when server_connect_timeout is 0 */

enum lookup_state {
	LK_QUEUED,      /* waiting for a free slot (at most max_running() lookups have a connection) */
	LK_CONNECTING,  /* PQconnectPoll in progress */
	LK_QUERY,       /* auth_query sent, results being read */
};

/* One running lookup: the libpq connection that runs auth_query for one logging-in client. */
struct authquery_lookup {
	struct authquery_lookup *next;  /* in lookups, oldest first */
	struct client *c;               /* the client waiting for it (c->auth_lookup points back) */
	PGconn *conn;
	struct event *ev_io;            /* socket event on io_fd, or NULL */
	int io_fd;
	short io_flags;
	struct event *ev_timer;         /* deadline of the whole lookup */
	enum lookup_state state;
	char auth_user[NAME_MAX_LEN];   /* user the connection logs in as */
	char target[200];               /* "host:port/dbname", for messages */
	bool password_unusable;         /* auth_file holds an md5/SCRAM secret for auth_user: libpq cannot use it */
	bool have_result;               /* a result row (or its absence) was read */
	char *secret;                   /* the secret found (heap), or NULL */
	char error[300];                /* set when the query failed */
};

static struct authquery_lookup *lookups;   /* queued and running lookups, oldest first */
static int running;                        /* lookups with a connection (state past LK_QUEUED) */
static struct event *ev_kick;              /* starts queued lookups once a slot is free */

/* How many lookups may have a connection at once: like PgBouncer's pool of auth_user, default_pool_size. This keeps
 * a burst of logins (or of unauthenticated clients naming unknown users) from opening a backend each. */
static int max_running(void)
{
	return g.cfg.default_pool_size > 0 ? g.cfg.default_pool_size : 1;
}
/* Credentials found by the last lookup of each (database, user): auth_user entries keyed by "db\x01user". */
static struct auth_user *creds;

static void lookup_io_cb(evutil_socket_t fd, short what, void *arg);
static void lookup_fail(struct authquery_lookup *lk, const char *sqlstate, const char *reason, const char *detail);

/* ---- credentials ---- */

static void cred_key(char *key, size_t len, const char *dbname, const char *user)
{
	snprintf(key, len, "%s\x01%s", dbname, user);
}

/* Records what a lookup found: secret NULL removes the credential (the user is gone, has no password or expired). */
static void cred_set(const char *dbname, const char *user, const char *secret)
{
	char key[NAME_MAX_LEN * 2 + 2];
	struct auth_user *u;

	cred_key(key, sizeof(key), dbname, user);
	u = auth_user_find(creds, key);
	if (!secret) {
		if (u) {
			HASH_DEL(creds, u);
			auth_user_destroy(u);
		}
		return;
	}
	if (u) {
		if (strcmp(u->secret, secret) == 0)
			return;     /* unchanged: a learned ClientKey stays valid */
		OPENSSL_cleanse(u->secret, strlen(u->secret));
		free(u->secret);
		u->secret = xstrdup(secret);
		OPENSSL_cleanse(u->scram_client_key, sizeof(u->scram_client_key));
		u->has_scram_client_key = false;
		return;
	}
	u = xcalloc(1, sizeof(*u));
	u->name = xstrdup(key);
	u->secret = xstrdup(secret);
	HASH_ADD_KEYPTR(hh, creds, u->name, strlen(u->name), u);
}

struct auth_user *authquery_credential(const char *dbname, const char *user)
{
	char key[NAME_MAX_LEN * 2 + 2];

	if (!dbname || !user)
		return NULL;
	cred_key(key, sizeof(key), dbname, user);
	return auth_user_find(creds, key);
}

bool authquery_remember_scram_key(const char *dbname, const char *user, const char *secret,
				  const uint8_t client_key[SCRAM_KEY_LEN])
{
	char key[NAME_MAX_LEN * 2 + 2];

	cred_key(key, sizeof(key), dbname, user);
	return auth_user_remember_scram_key(creds, key, secret, client_key);
}

/* ---- which auth_user, where ---- */

/* auth_user for logins to dbname: its [databases] entry's, else the global one; NULL or "" = none. */
static const char *auth_user_for(const struct db_def *db)
{
	const char *u = db && db->auth_user ? db->auth_user : g.cfg.auth_user;
	return u && *u ? u : NULL;
}

bool authquery_needed(const struct client *c)
{
	if (c->auth_lookup || c->auth_lookup_done || admin_is_console_db(c->dbname))
		return false;
	if (auth_user_find(g.auth_users, c->user))
		return false;
	return auth_user_for(config_find_db(&g.cfg, c->dbname)) != NULL;
}

/* ---- the lookup connection ---- */

static void lookup_set_io(struct authquery_lookup *lk, int fd, short flags)
{
	flags |= EV_PERSIST;
	if (lk->ev_io && lk->io_fd == fd && lk->io_flags == flags)
		return;
	if (lk->ev_io) {
		event_free(lk->ev_io);
		lk->ev_io = NULL;
	}
	lk->ev_io = event_new(g.base, fd, flags, lookup_io_cb, lk);
	lk->io_fd = fd;
	lk->io_flags = flags;
	if (lk->ev_io)
		event_add(lk->ev_io, NULL);
}

/* Unlinks and frees a lookup (its client is left alone). */
static void lookup_free(struct authquery_lookup *lk)
{
	struct authquery_lookup **pp;

	for (pp = &lookups; *pp; pp = &(*pp)->next) {
		if (*pp == lk) {
			*pp = lk->next;
			break;
		}
	}
	if (lk->ev_io)
		event_free(lk->ev_io);
	if (lk->ev_timer)
		event_free(lk->ev_timer);
	if (lk->conn)
		PQfinish(lk->conn);
	if (lk->secret) {
		OPENSSL_cleanse(lk->secret, strlen(lk->secret));
		free(lk->secret);
	}
	if (lk->c && lk->c->auth_lookup == lk)
		lk->c->auth_lookup = NULL;
	if (lk->state != LK_QUEUED) {
		running--;
		if (ev_kick)
			event_active(ev_kick, EV_TIMEOUT, 0);	/* a slot is free */
	}
	free(lk);
}

/* The server's message without libpq's "connection to server at ... failed: FATAL:  " prefix and trailing newline. */
static void short_pq_error(const char *msg, char *out, size_t len)
{
	const char *p = msg ? msg : "";
	const char *f = strstr(p, "FATAL:");
	size_t n;

	if (f) {
		p = f + 6;
		while (*p == ' ')
			p++;
	}
	n = strcspn(p, "\n");
	snprintf(out, len, "%.*s", (int)(n < 200 ? n : 200), p);
}

/* The lookup failed: the client gets reason (with SQLSTATE sqlstate), the log gets detail too. Frees lk. */
static void lookup_fail(struct authquery_lookup *lk, const char *sqlstate, const char *reason, const char *detail)
{
	struct client *c = lk->c;

	log_warning("C-%p: %s/%s@%s:%d auth_query lookup failed: %s%s%s", (void *)c, c->dbname, c->user, c->addr, c->port,
		    reason, detail && *detail ? ": " : "", detail ? detail : "");
	lookup_free(lk);
	client_disconnect(c, sqlstate, reason);
}

/* The lookup ran to its end: record the credential and continue the client's authentication. Frees lk. */
static void lookup_done(struct authquery_lookup *lk)
{
	struct client *c = lk->c;

	if (lk->error[0]) {
		char msg[1024];
		snprintf(msg, sizeof(msg), "auth_query failed in %s: %s", lk->target, lk->error);
		lookup_fail(lk, SQLSTATE_CONNECTION_FAILURE, msg, NULL);
		return;
	}
	cred_set(c->dbname, c->user, lk->secret);
	log_debug("C-%p: auth_query for %s in %s: %s", (void *)c, c->user, c->dbname,
		  lk->secret ? "secret found" : "no usable password (unknown user, no password, expired or no login)");
	lookup_free(lk);
	c->auth_lookup_done = true;
	client_auth_lookup_done(c);
}

/* Reads results: the first row's second column is the secret. */
static void lookup_read(struct authquery_lookup *lk)
{
	if (!PQconsumeInput(lk->conn)) {
		char detail[208];
		short_pq_error(PQerrorMessage(lk->conn), detail, sizeof(detail));
		snprintf(lk->error, sizeof(lk->error), "connection lost: %s", detail);
		lookup_done(lk);
		return;
	}
	while (!PQisBusy(lk->conn)) {
		PGresult *res = PQgetResult(lk->conn);
		if (!res) {
			lookup_done(lk);
			return;
		}
		if (lk->error[0] || lk->have_result) {
			/* a second result (several statements in auth_query): only the first counts */
		} else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
			lk->have_result = true;
			if (PQnfields(res) < 2)
				snprintf(lk->error, sizeof(lk->error),
					 "auth_query must return two columns (user name, password), it returned %d", PQnfields(res));
			else if (PQntuples(res) > 1)
				snprintf(lk->error, sizeof(lk->error), "auth_query returned %d rows for one user", PQntuples(res));
			else if (PQntuples(res) == 1 && !PQgetisnull(res, 0, 1) && PQgetvalue(res, 0, 1)[0] != '\0')
				lk->secret = xstrdup(PQgetvalue(res, 0, 1));
		} else {
			const char *m = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
			if (PQresultStatus(res) == PGRES_COMMAND_OK)
				snprintf(lk->error, sizeof(lk->error), "auth_query returned no rows description (not a SELECT?)");
			else
				snprintf(lk->error, sizeof(lk->error), "%s", m ? m : PQresStatus(PQresultStatus(res)));
		}
		PQclear(res);
	}
}

/* Sends what libpq holds and watches for replies (and writability while output is pending). false if lk failed. */
static bool lookup_flush(struct authquery_lookup *lk)
{
	int r = PQflush(lk->conn);
	if (r < 0) {
		char detail[208];
		short_pq_error(PQerrorMessage(lk->conn), detail, sizeof(detail));
		snprintf(lk->error, sizeof(lk->error), "send failed: %s", detail);
		lookup_done(lk);
		return false;
	}
	lookup_set_io(lk, PQsocket(lk->conn), EV_READ | (r == 1 ? EV_WRITE : 0));
	return true;
}

/* Connected: sends auth_query with the user name as $1. */
static void lookup_send_query(struct authquery_lookup *lk)
{
	const struct db_def *db = config_find_db(&g.cfg, lk->c->dbname);
	const char *query = db && db->auth_query ? db->auth_query : g.cfg.auth_query;
	const char *params[1] = { lk->c->user };

	if (PQsetnonblocking(lk->conn, 1) != 0 || !PQsendQueryParams(lk->conn, query, 1, NULL, params, NULL, NULL, 0)) {
		char detail[208];
		short_pq_error(PQerrorMessage(lk->conn), detail, sizeof(detail));
		snprintf(lk->error, sizeof(lk->error), "cannot send auth_query: %s", detail);
		lookup_done(lk);
		return;
	}
	lk->state = LK_QUERY;
	(void)lookup_flush(lk);
}

/* One step of the non-blocking connection. */
static void lookup_poll_connect(struct authquery_lookup *lk)
{
	char detail[208], msg[1024];

	/* libpq may have closed its socket and opened another one with the same number (a retry without TLS, the next
	 * host): register the socket afresh at every step so the event never watches a closed descriptor */
	if (lk->ev_io) {
		event_free(lk->ev_io);
		lk->ev_io = NULL;
	}
	switch (PQconnectPoll(lk->conn)) {
	case PGRES_POLLING_READING:
		lookup_set_io(lk, PQsocket(lk->conn), EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		lookup_set_io(lk, PQsocket(lk->conn), EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		lookup_send_query(lk);
		return;
	default:
		break;
	}
	short_pq_error(PQerrorMessage(lk->conn), detail, sizeof(detail));
	snprintf(msg, sizeof(msg), "auth_query lookup failed: auth_user \"%s\" cannot log into %s: %s", lk->auth_user,
		 lk->target, detail);
	lookup_fail(lk, SQLSTATE_CANNOT_CONNECT, msg,
		    lk->password_unusable ? "auth_file holds an md5 or SCRAM secret for auth_user, which libpq cannot log in "
					    "with: give its plain-text password (auth_file or [databases] password=)" : NULL);
}

static void lookup_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authquery_lookup *lk = arg;
	(void)fd;
	if (lk->state == LK_CONNECTING) {
		lookup_poll_connect(lk);
		return;
	}
	if ((what & EV_WRITE) && !lookup_flush(lk))
		return;
	if (what & EV_READ)
		lookup_read(lk);
}

static void lookup_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authquery_lookup *lk = arg;
	usec_t t = g.cfg.server_connect_timeout > 0 ? g.cfg.server_connect_timeout : LOOKUP_DEFAULT_TIMEOUT;
	char msg[1024];
	(void)fd;
	(void)what;
	snprintf(msg, sizeof(msg), "auth_query lookup in %s as auth_user \"%s\" timed out after %.1f s (server_connect_timeout)",
		 lk->target, lk->auth_user, (double)t / USEC_PER_SEC);
	lookup_fail(lk, SQLSTATE_CANNOT_CONNECT, msg,
		    lk->state == LK_QUEUED ? "while waiting for a free lookup slot (default_pool_size lookups run at once)"
		    : lk->state == LK_CONNECTING ? "while connecting" : "while querying");
}

/* Where and as whom c's lookup runs, from the current configuration. */
struct lookup_params {
	const char *auth_user;          /* NULL: no auth_user for c's database (any more) */
	const char *auth_dbname;        /* [databases] entry the query runs in */
	const struct db_def *adb;       /* that entry, NULL if it does not exist */
	const char *host, *dbname;      /* server host (or unix socket directory) and database */
	int port;
	const char *password;           /* auth_user's plain password, NULL = none (libpq then tries ~/.pgpass) */
	bool password_unusable;         /* auth_file holds a hashed secret for auth_user */
};

static void lookup_resolve(const struct client *c, struct lookup_params *lp)
{
	const struct db_def *cdb = config_find_db(&g.cfg, c->dbname);
	struct auth_user *au;

	memset(lp, 0, sizeof(*lp));
	lp->auth_user = auth_user_for(cdb);
	lp->auth_dbname = cdb && cdb->auth_dbname && *cdb->auth_dbname ? cdb->auth_dbname
			  : (g.cfg.auth_dbname && *g.cfg.auth_dbname ? g.cfg.auth_dbname : c->dbname);
	lp->adb = config_find_db(&g.cfg, lp->auth_dbname);
	if (!lp->auth_user || !lp->adb)
		return;
	lp->host = lp->adb->host ? lp->adb->host : DEFAULT_UNIX_DIR;
	lp->port = lp->adb->port > 0 ? lp->adb->port : 5432;
	lp->dbname = lp->adb->dbname ? lp->adb->dbname : lp->auth_dbname;
	/* auth_user's password: the [databases] password when that entry forces auth_user, else a plain auth_file one */
	if (lp->adb->user && lp->adb->password && strcmp(lp->adb->user, lp->auth_user) == 0) {
		lp->password = lp->adb->password;
	} else if ((au = auth_user_find(g.auth_users, lp->auth_user)) != NULL) {
		if (secret_kind(au->secret) == SECRET_PLAIN)
			lp->password = au->secret;
		else
			lp->password_unusable = true;
	}
}

/* Fails c's login when its lookup has nowhere to run; returns false then (lk freed, c closed). */
static bool lookup_check_params(struct authquery_lookup *lk, const struct lookup_params *lp)
{
	char msg[1024];

	if (!lp->auth_user) {
		lookup_fail(lk, SQLSTATE_INVALID_AUTH_SPEC, "auth_query lookup failed: auth_user is no longer set", NULL);
		return false;
	}
	if (!lp->adb) {
		snprintf(msg, sizeof(msg), "auth_query lookup failed: auth_dbname \"%s\" is not in [databases]",
			 lp->auth_dbname);
		lookup_fail(lk, SQLSTATE_INVALID_CATALOG, msg, NULL);
		return false;
	}
	return true;
}

/* Opens the lookup's connection (a slot is free). */
static void lookup_connect(struct authquery_lookup *lk)
{
	struct lookup_params lp;
	const char *keys[14], *vals[14];
	char port[16], msg[1024];
	int k = 0;

	lookup_resolve(lk->c, &lp);
	if (!lookup_check_params(lk, &lp))
		return;
	strlcpy_ok(lk->auth_user, lp.auth_user, sizeof(lk->auth_user));
	snprintf(lk->target, sizeof(lk->target), "%s:%d/%s", lp.host, lp.port, lp.dbname);
	lk->password_unusable = lp.password_unusable;
	snprintf(port, sizeof(port), "%d", lp.port);
	keys[k] = "host", vals[k++] = lp.host;
	keys[k] = "port", vals[k++] = port;
	keys[k] = "dbname", vals[k++] = lp.dbname;
	keys[k] = "user", vals[k++] = lp.auth_user;
	keys[k] = "application_name", vals[k++] = "parley-auth_query";
	keys[k] = "client_encoding", vals[k++] = "UTF8";
	/* the server_tls_* settings apply as to pooled server connections (libpq ignores them on unix sockets) */
	if (g.cfg.server_tls_sslmode && *g.cfg.server_tls_sslmode)
		keys[k] = "sslmode", vals[k++] = g.cfg.server_tls_sslmode;
	if (g.cfg.server_tls_ca_file && *g.cfg.server_tls_ca_file)
		keys[k] = "sslrootcert", vals[k++] = g.cfg.server_tls_ca_file;
	if (g.cfg.server_tls_cert_file && *g.cfg.server_tls_cert_file && g.cfg.server_tls_key_file &&
	    *g.cfg.server_tls_key_file) {
		keys[k] = "sslcert", vals[k++] = g.cfg.server_tls_cert_file;
		keys[k] = "sslkey", vals[k++] = g.cfg.server_tls_key_file;
	}
	if (lp.password)
		keys[k] = "password", vals[k++] = lp.password;
	keys[k] = NULL, vals[k] = NULL;

	lk->state = LK_CONNECTING;
	running++;
	lk->conn = PQconnectStartParams(keys, vals, 0);
	if (!lk->conn) {
		lookup_fail(lk, SQLSTATE_INTERNAL_ERROR, "auth_query lookup failed: out of memory", NULL);
		return;
	}
	if (PQstatus(lk->conn) == CONNECTION_BAD || PQsocket(lk->conn) < 0) {
		char detail[208];
		short_pq_error(PQerrorMessage(lk->conn), detail, sizeof(detail));
		snprintf(msg, sizeof(msg), "auth_query lookup failed: cannot connect to %s: %s", lk->target, detail);
		lookup_fail(lk, SQLSTATE_CANNOT_CONNECT, msg, NULL);
		return;
	}
	lookup_set_io(lk, PQsocket(lk->conn), EV_WRITE);
	log_debug("C-%p: looking up user %s with auth_query as %s in %s", (void *)lk->c, lk->c->user, lk->auth_user,
		  lk->target);
}

/* Starts queued lookups, oldest first, while slots are free (run from ev_kick, outside other lookups' callbacks). */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct authquery_lookup *lk, *next;
	(void)fd;
	(void)what;
	(void)arg;
	for (lk = lookups; lk && running < max_running(); lk = next) {
		next = lk->next;
		if (lk->state == LK_QUEUED)
			lookup_connect(lk);	/* may free lk (not next: another client's lookup) */
	}
}

void authquery_start(struct client *c)
{
	usec_t t = g.cfg.server_connect_timeout > 0 ? g.cfg.server_connect_timeout : LOOKUP_DEFAULT_TIMEOUT;
	struct timeval tv = { (time_t)(t / USEC_PER_SEC), (suseconds_t)(t % USEC_PER_SEC) };
	struct authquery_lookup *lk, **pp;
	struct lookup_params lp;

	lk = xcalloc(1, sizeof(*lk));
	lk->c = c;
	lk->state = LK_QUEUED;
	c->auth_lookup = lk;
	for (pp = &lookups; *pp; pp = &(*pp)->next)
		;
	*pp = lk;	/* FIFO */
	lookup_resolve(c, &lp);
	if (!lookup_check_params(lk, &lp))
		return;
	strlcpy_ok(lk->auth_user, lp.auth_user, sizeof(lk->auth_user));
	snprintf(lk->target, sizeof(lk->target), "%s:%d/%s", lp.host, lp.port, lp.dbname);
	lk->ev_timer = evtimer_new(g.base, lookup_timer_cb, lk);
	if (!lk->ev_timer || (!ev_kick && !(ev_kick = event_new(g.base, -1, 0, kick_cb, NULL)))) {
		lookup_fail(lk, SQLSTATE_INTERNAL_ERROR, "auth_query lookup failed: out of memory", NULL);
		return;
	}
	evtimer_add(lk->ev_timer, &tv);	/* the deadline includes the wait for a slot */
	if (running < max_running())
		lookup_connect(lk);
	else
		log_debug("C-%p: auth_query lookup of %s queued (%d running)", (void *)c, c->user, running);
}

void authquery_cancel(struct client *c)
{
	if (c->auth_lookup) {
		c->auth_lookup->c = NULL;
		lookup_free(c->auth_lookup);
		c->auth_lookup = NULL;
	}
}

void authquery_shutdown(void)
{
	struct auth_user *u, *tmp;

	while (lookups) {
		struct authquery_lookup *lk = lookups;
		if (lk->c)
			lk->c->auth_lookup = NULL;
		lk->c = NULL;
		lookup_free(lk);
	}
	HASH_ITER(hh, creds, u, tmp) {
		HASH_DEL(creds, u);
		auth_user_destroy(u);
	}
	if (ev_kick) {
		event_free(ev_kick);
		ev_kick = NULL;
	}
}

/* ---- parley --hash-password ---- */

static void hash_usage(FILE *out)
{
	fprintf(out, "usage: parley --hash-password [--iterations N] [USER]\n"
		     "Reads a password (without echo from a terminal, else the first line of standard input) and prints\n"
		     "its SCRAM-SHA-256 secret as PostgreSQL stores it; with USER, a ready auth_file line.\n"
		     "  --iterations N   PBKDF2 iterations (default 4096, PostgreSQL's scram_iterations default)\n");
}

/* Reads one line from fp into a heap string without its line end; NULL at end of file or on error. */
static char *read_line(FILE *fp)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, fp);

	if (n < 0) {
		free(line);
		return NULL;
	}
	if (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	if (n > 0 && line[n - 1] == '\r')
		line[--n] = '\0';
	if (strlen(line) != (size_t)n) {	/* a NUL byte: not a password PostgreSQL can take */
		OPENSSL_cleanse(line, cap);
		free(line);
		errno = EINVAL;
		return NULL;
	}
	return line;
}

/* Prompts on the terminal with echo off; NULL on end of file. */
static char *prompt_password(const char *prompt)
{
	struct termios old, quiet;
	bool restore = false;
	char *line;

	fputs(prompt, stderr);
	fflush(stderr);
	if (tcgetattr(STDIN_FILENO, &old) == 0) {
		quiet = old;
		quiet.c_lflag &= ~(tcflag_t)ECHO;
		quiet.c_lflag |= ECHONL;
		restore = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
	}
	line = read_line(stdin);
	if (restore)
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
	return line;
}

static void free_secret(char *s)
{
	if (s) {
		OPENSSL_cleanse(s, strlen(s));
		free(s);
	}
}

int hash_password_main(int argc, char **argv)
{
	long iterations = 4096;
	const char *user = NULL;
	char *pw, secret[256];
	int rc = 1;

	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *val = NULL;
		if (strcmp(a, "--iterations") == 0 || strcmp(a, "-i") == 0) {
			if (i + 1 >= argc) {
				fprintf(stderr, "parley: %s needs a number\n", a);
				return 2;
			}
			val = argv[++i];
		} else if (strncmp(a, "--iterations=", 13) == 0) {
			val = a + 13;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			hash_usage(stdout);
			return 0;
		} else if (a[0] == '-' && a[1] != '\0') {
			fprintf(stderr, "parley: unknown option %s for --hash-password\n", a);
			hash_usage(stderr);
			return 2;
		} else if (!user) {
			user = a;
			continue;
		} else {
			fprintf(stderr, "parley: --hash-password takes at most one user name (got \"%s\" and \"%s\")\n", user, a);
			return 2;
		}
		{
			char *end;
			errno = 0;
			iterations = strtol(val, &end, 10);
			if (errno || end == val || *end || iterations < 1 || iterations > INT_MAX) {
				fprintf(stderr, "parley: invalid iteration count \"%s\": expected a whole number from 1 to %d\n",
					val, INT_MAX);
				return 2;
			}
		}
	}
	if (user && (!*user || strlen(user) >= NAME_MAX_LEN)) {
		fprintf(stderr, "parley: the user name must be 1 to %d bytes long\n", NAME_MAX_LEN - 1);
		return 2;
	}
	if (isatty(STDIN_FILENO)) {
		char *again;
		pw = prompt_password("Password: ");
		again = pw ? prompt_password("Repeat password: ") : NULL;
		if (pw && (!again || strcmp(pw, again) != 0)) {
			fprintf(stderr, "parley: the passwords do not match\n");
			free_secret(pw);
			free_secret(again);
			return 1;
		}
		free_secret(again);
	} else {
		pw = read_line(stdin);
	}
	if (!pw) {
		fprintf(stderr, "parley: %s\n", errno == EINVAL ? "the password contains a NUL byte"
								: "no password given on standard input");
		return 1;
	}
	if (!*pw) {
		fprintf(stderr, "parley: empty password (PostgreSQL does not accept empty passwords)\n");
		goto out;
	}
	if (scram_make_secret_iter(pw, (int)iterations, secret, sizeof(secret)) < 0) {
		fprintf(stderr, "parley: cannot compute the SCRAM secret (OpenSSL failure)\n");
		goto out;
	}
	if (user) {
		/* auth_file quoting: a double quote inside a field is written twice */
		putchar('"');
		for (const char *p = user; *p; p++) {
			if (*p == '"')
				putchar('"');
			putchar(*p);
		}
		printf("\" \"%s\"\n", secret);
	} else {
		printf("%s\n", secret);
	}
	OPENSSL_cleanse(secret, sizeof(secret));
	rc = fflush(stdout) == 0 ? 0 : 1;
out:
	free_secret(pw);
	return rc;
}
