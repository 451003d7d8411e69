/* notify.c — the invalidation feed: one libpq LISTEN connection per cached server database, driven on the libevent
 * loop, applying the notifications of contrib/parlant/invalidation.sql's triggers (writes that bypass parley) to the
 * cache, and closing the cache of a database while its feed is required but down. */
#include "notify.h"
#include "parley.h"
#include "cache.h"
#include <event2/event.h>
#include <libpq-fe.h>
#include <strings.h>
#include <unistd.h>

#define FEED_CHANNEL "parley_invalidate"
/* The trigger function of invalidation.sql: its presence means "the triggers are installed". */
#define FEED_FUNCTION "parley_invalidation_notify"
#define FEED_SETUP_SQL \
	"LISTEN " FEED_CHANNEL "; SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_proc WHERE proname = '" FEED_FUNCTION "')"
#define BACKOFF_MIN (100 * 1000)                  /* first reconnect delay of a required feed */
#define BACKOFF_MAX (5 * USEC_PER_SEC)            /* the delay doubles up to this */
#define RECHECK_INTERVAL (30 * USEC_PER_SEC)      /* auto: how often a feed that is not needed (or not reachable) is tried again */
#define PING_INTERVAL (1 * USEC_PER_SEC)          /* heartbeat (SELECT 1) period while up */
#define MAX_KEY_COLS 16                           /* pins of one row description (struct cache_write_row) */
#define JSON_MAX_DEPTH 16

enum feed_mode { MODE_OFF, MODE_AUTO, MODE_ON };

enum feed_state {
	FS_WAIT,        /* not connected; ev_timer starts the next attempt */
	FS_CONNECTING,  /* PQconnectPoll in progress */
	FS_SETUP,       /* LISTEN and the trigger check sent */
	FS_UP,          /* listening */
	FS_NOT_NEEDED,  /* auto mode and the triggers are not installed: disconnected, checked again later */
};

/* One feed: a server database (host, port, dbname) and the connection that listens on it. */
struct feed {
	struct feed *next;          /* in feeds */
	char *host;                 /* NULL = default unix socket directory */
	int port;
	char *dbname;               /* database on the server */
	char *user;                 /* user the feed logs in as (the pool's server user) */
	char *password;             /* explicit password ([databases] password=), NULL = look up auth_file */
	bool from_config;           /* created for a [databases] entry with a forced user (else for a pool) */
	bool seen;                  /* scratch flag of notify_apply_config */
	PGconn *conn;               /* NULL while not connected */
	struct event *ev_io;        /* socket event on io_fd, or NULL */
	int io_fd;
	short io_flags;
	struct event *ev_timer;     /* retry, connect deadline or heartbeat, depending on state */
	enum feed_state state;
	bool required;              /* entries of the database are served only while FS_UP (mode on, or auto with triggers) */
	bool triggers_present;      /* the last completed setup found the trigger function */
	bool query_pending;         /* a query (setup or heartbeat) awaits its results */
	bool ping_pending;          /* the pending query is a heartbeat */
	bool setup_found;           /* FS_SETUP: the trigger check said yes */
	bool password_unusable;     /* auth_file holds an md5/SCRAM secret for user: libpq cannot use it */
	int attempts;               /* connection attempts so far */
	usec_t backoff;             /* next reconnect delay of a required feed */
	usec_t down_since;          /* monotonic time the required feed went (or started) down, 0 = up or not required */
	uint64_t notifications, reconnects, bad_payloads;
	usec_t last_notification;   /* wall clock, 0 = none */
	char last_error[256];       /* why it last failed or is not needed */
};

static struct feed *feeds;         /* every feed */
static bool wanted;                /* the configuration wants feeds: cache on, a policy, mode not off */
static enum feed_mode mode = MODE_AUTO;
static usec_t timeout_us;          /* cache_invalidation_timeout; 0 = no deadline */

static void feed_connect(struct feed *f);
static void feed_fail(struct feed *f, const char *fmt, ...) PRINTF_LIKE(2, 3);

static const char *feed_host(const struct feed *f)
{
	return f->host ? f->host : "/var/run/postgresql";
}

static bool str_eq(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static enum feed_mode parse_mode(const char *s)
{
	if (s && strcasecmp(s, "on") == 0)
		return MODE_ON;
	if (s && strcasecmp(s, "off") == 0)
		return MODE_OFF;
	return MODE_AUTO;
}

/* ---- events ---- */

static void timer_cb(evutil_socket_t fd, short what, void *arg);
static void io_cb(evutil_socket_t fd, short what, void *arg);

static void arm_timer(struct feed *f, usec_t delay)
{
	struct timeval tv = { (time_t)(delay / USEC_PER_SEC), (suseconds_t)(delay % USEC_PER_SEC) };
	evtimer_add(f->ev_timer, &tv);
}

/* Watches fd for flags (EV_PERSIST added), replacing the previous socket event if it differs. */
static void set_io(struct feed *f, int fd, short flags)
{
	flags |= EV_PERSIST;
	if (f->ev_io && f->io_fd == fd && f->io_flags == flags)
		return;
	if (f->ev_io) {
		event_free(f->ev_io);
		f->ev_io = NULL;
	}
	f->ev_io = event_new(g.base, fd, flags, io_cb, f);
	f->io_fd = fd;
	f->io_flags = flags;
	if (f->ev_io)
		event_add(f->ev_io, NULL);
}

static void close_conn(struct feed *f)
{
	if (f->ev_io) {
		event_free(f->ev_io);
		f->ev_io = NULL;
	}
	if (f->conn) {
		PQfinish(f->conn);
		f->conn = NULL;
	}
	f->query_pending = f->ping_pending = false;
}

/* ---- lifecycle ---- */

static struct feed *feed_find(const char *host, int port, const char *dbname)
{
	for (struct feed *f = feeds; f; f = f->next)
		if (f->port == port && str_eq(f->host, host) && str_eq(f->dbname, dbname))
			return f;
	return NULL;
}

static struct feed *feed_new(const char *host, int port, const char *dbname, const char *user, const char *password,
			     bool from_config)
{
	struct feed *f = xcalloc(1, sizeof(*f));
	f->host = host ? xstrdup(host) : NULL;
	f->port = port;
	f->dbname = xstrdup(dbname);
	f->user = xstrdup(user);
	f->password = password ? xstrdup(password) : NULL;
	f->from_config = from_config;
	f->io_fd = -1;
	f->ev_timer = evtimer_new(g.base, timer_cb, f);
	f->state = FS_WAIT;
	f->required = mode == MODE_ON;
	f->down_since = f->required ? now_usec() : 0;
	f->backoff = BACKOFF_MIN;
	f->next = feeds;
	feeds = f;
	log_debug("invalidation feed for database %s at %s:%d (user %s) created", f->dbname, feed_host(f), f->port, f->user);
	arm_timer(f, 0); /* connect from the loop, not from the caller's stack */
	return f;
}

static void feed_free(struct feed *f)
{
	close_conn(f);
	if (f->ev_timer)
		event_free(f->ev_timer);
	free(f->host);
	free(f->dbname);
	free(f->user);
	free(f->password);
	free(f);
}

/* Reconnects with new credentials. */
static void feed_set_credentials(struct feed *f, const char *user, const char *password)
{
	if (str_eq(f->user, user) && str_eq(f->password, password))
		return;
	free(f->user);
	free(f->password);
	f->user = xstrdup(user);
	f->password = password ? xstrdup(password) : NULL;
	if (f->conn || f->state != FS_WAIT) {
		feed_fail(f, "credentials changed");
		evtimer_del(f->ev_timer);
		arm_timer(f, 0);
	}
}

/* The feed reached FS_UP. */
static void feed_up(struct feed *f)
{
	usec_t was_down = f->down_since;
	f->state = FS_UP;
	f->backoff = BACKOFF_MIN;
	f->down_since = 0;
	f->last_error[0] = '\0';
	/* Entries filled while this feed was not listening (startup in auto mode, mode changes) may have missed a
	 * notification: start from an empty cache. (After an outage the cache was emptied when the feed went down.) */
	cache_invalidate_all();
	if (was_down)
		log_info("invalidation feed for database %s up after %.1f s: its cache entries are served again", f->dbname,
			 (double)(now_usec() - was_down) / USEC_PER_SEC);
	else
		log_info("invalidation feed for database %s up, listening on %s", f->dbname, FEED_CHANNEL);
	arm_timer(f, PING_INTERVAL);
}

/* Closes the connection after a failure and schedules the next attempt; reason is logged when it changes. */
static void feed_fail(struct feed *f, const char *fmt, ...)
{
	char reason[sizeof(f->last_error)];
	bool was_up = f->state == FS_UP;
	bool repeated;
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	n = strlen(reason);
	while (n > 0 && (reason[n - 1] == '\n' || reason[n - 1] == ' '))
		reason[--n] = '\0';
	repeated = strcmp(reason, f->last_error) == 0;
	strlcpy_ok(f->last_error, reason, sizeof(f->last_error));
	close_conn(f);
	evtimer_del(f->ev_timer);
	f->state = FS_WAIT;
	if (f->required) {
		if (!f->down_since)
			f->down_since = now_usec();
		if (was_up) {
			uint64_t n_dropped = cache_invalidate_all();
			log_warning("invalidation feed for database %s lost: %s; %llu cache entries dropped, none served for "
				    "this database until the feed is back", f->dbname, reason, (unsigned long long)n_dropped);
		} else if (!repeated) {
			log_warning("invalidation feed for database %s down: %s; cache not served for this database, retrying",
				    f->dbname, reason);
		}
		arm_timer(f, f->backoff);
		f->backoff = f->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : f->backoff * 2;
	} else {
		if (!repeated)
			log_warning("invalidation feed for database %s not available: %s; with cache_invalidation_feed = "
				    "auto the cache serves it as if no triggers were installed (set it to on to require the "
				    "feed, off to stop trying); trying again every %d s",
				    f->dbname, reason, (int)(RECHECK_INTERVAL / USEC_PER_SEC));
		arm_timer(f, RECHECK_INTERVAL);
	}
}

/* The setup query finished: LISTEN is active; decide by the trigger check. */
static void setup_done(struct feed *f)
{
	f->triggers_present = f->setup_found;
	if (f->triggers_present) {
		f->required = mode != MODE_OFF;
		feed_up(f);
		return;
	}
	if (mode == MODE_ON) {
		feed_fail(f, "the invalidation triggers are not installed (no function %s in database %s; load "
			  "contrib/parlant/invalidation.sql)", FEED_FUNCTION, f->dbname);
		return;
	}
	/* auto: nothing will ever notify; do not keep a backend busy */
	close_conn(f);
	f->required = false;
	f->down_since = 0;
	f->state = FS_NOT_NEEDED;
	if (strcmp(f->last_error, "triggers not installed") != 0) {
		log_info("invalidation feed for database %s not needed: no function %s there (writes made outside parley "
			 "live in the cache until their TTL); checking again every %d s", f->dbname, FEED_FUNCTION,
			 (int)(RECHECK_INTERVAL / USEC_PER_SEC));
		strlcpy_ok(f->last_error, "triggers not installed", sizeof(f->last_error));
	}
	arm_timer(f, RECHECK_INTERVAL);
}

/* Sends what libpq holds and watches the socket for replies (and for writability while output is pending). */
static void flush_and_watch(struct feed *f)
{
	int r = PQflush(f->conn);
	if (r < 0) {
		feed_fail(f, "send failed: %s", PQerrorMessage(f->conn));
		return;
	}
	set_io(f, PQsocket(f->conn), EV_READ | (r == 1 ? EV_WRITE : 0));
}

static void send_query(struct feed *f, const char *sql, bool ping)
{
	if (!PQsendQuery(f->conn, sql)) {
		feed_fail(f, "cannot send query: %s", PQerrorMessage(f->conn));
		return;
	}
	f->query_pending = true;
	f->ping_pending = ping;
	flush_and_watch(f);
}

static void feed_connect(struct feed *f)
{
	char port[16], appname[64];
	const char *password = f->password;
	const char *keys[8], *vals[8];
	int k = 0;

	f->password_unusable = false;
	if (!password) {
		struct auth_user *au = auth_user_find(g.auth_users, f->user);
		if (au && au->secret && secret_kind(au->secret) == SECRET_PLAIN)
			password = au->secret;
		else if (au && au->secret)
			f->password_unusable = true; /* libpq then tries PGPASSWORD and ~/.pgpass */
	}
	snprintf(port, sizeof(port), "%d", f->port);
	snprintf(appname, sizeof(appname), "parley-feed pid=%d", (int)getpid());
	keys[k] = "host", vals[k++] = feed_host(f);
	keys[k] = "port", vals[k++] = port;
	keys[k] = "dbname", vals[k++] = f->dbname;
	keys[k] = "user", vals[k++] = f->user;
	keys[k] = "application_name", vals[k++] = appname;
	keys[k] = "client_encoding", vals[k++] = "UTF8";
	if (password)
		keys[k] = "password", vals[k++] = password;
	keys[k] = NULL, vals[k] = NULL;

	if (f->attempts++ > 0)
		f->reconnects++;
	close_conn(f);
	f->conn = PQconnectStartParams(keys, vals, 0);
	if (!f->conn) {
		feed_fail(f, "out of memory");
		return;
	}
	if (PQstatus(f->conn) == CONNECTION_BAD || PQsocket(f->conn) < 0) {
		feed_fail(f, "cannot connect: %s", PQerrorMessage(f->conn));
		return;
	}
	f->state = FS_CONNECTING;
	set_io(f, PQsocket(f->conn), EV_WRITE);
	if (timeout_us)
		arm_timer(f, timeout_us);
}

/* One step of the non-blocking connection. */
static void poll_connect(struct feed *f)
{
	switch (PQconnectPoll(f->conn)) {
	case PGRES_POLLING_READING:
		set_io(f, PQsocket(f->conn), EV_READ);
		break;
	case PGRES_POLLING_WRITING:
		set_io(f, PQsocket(f->conn), EV_WRITE);
		break;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(f->conn, 1) != 0) {
			feed_fail(f, "cannot make the connection non-blocking: %s", PQerrorMessage(f->conn));
			return;
		}
		f->state = FS_SETUP;
		f->setup_found = false;
		send_query(f, FEED_SETUP_SQL, false);
		break;
	default:
		feed_fail(f, "cannot connect to %s:%d as %s: %s%s", feed_host(f), f->port, f->user, PQerrorMessage(f->conn),
			  f->password_unusable ? " (auth_file holds an md5 or SCRAM secret for this user, which libpq "
						 "cannot log in with: give a plain-text password, trust, or ~/.pgpass)" : "");
		break;
	}
}

/* ---- payloads ---- */

/* A tiny JSON reader for the payload format (see doc/consistency.md): {"t": table, "c": [columns], "r": [[values]]}.
 * Strings are decoded into an arena at least as long as the input (a decoded string is never longer than its
 * quoted form, which leaves room for the NUL). */
struct jreader {
	const char *p;
	char *arena;
	size_t used;
	int depth;
};

static void jws(struct jreader *r)
{
	while (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')
		r->p++;
}

static int read_u4(const char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + (unsigned)h;
	}
	*out = v;
	return 0;
}

/* Reads a JSON string; *out points at the decoded NUL-terminated text in the arena. */
static int jstring(struct jreader *r, const char **out, size_t *len)
{
	char *dst = r->arena + r->used;
	char *w = dst;
	if (*r->p != '"')
		return -1;
	r->p++;
	for (;;) {
		unsigned char ch = (unsigned char)*r->p;
		if (ch == '\0' || ch < 0x20)
			return -1;
		r->p++;
		if (ch == '"')
			break;
		if (ch != '\\') {
			*w++ = (char)ch;
			continue;
		}
		ch = (unsigned char)*r->p++;
		switch (ch) {
		case '"': case '\\': case '/':
			*w++ = (char)ch;
			break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u': {
			unsigned cp, lo;
			if (read_u4(r->p, &cp) < 0)
				return -1;
			r->p += 4;
			if (cp >= 0xD800 && cp <= 0xDBFF) {
				if (r->p[0] != '\\' || r->p[1] != 'u' || read_u4(r->p + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
					return -1;
				r->p += 6;
				cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
			} else if (cp >= 0xDC00 && cp <= 0xDFFF) {
				return -1;
			}
			if (cp == 0)
				return -1; /* PostgreSQL text cannot hold NUL */
			if (cp < 0x80) {
				*w++ = (char)cp;
			} else if (cp < 0x800) {
				*w++ = (char)(0xC0 | (cp >> 6));
				*w++ = (char)(0x80 | (cp & 0x3F));
			} else if (cp < 0x10000) {
				*w++ = (char)(0xE0 | (cp >> 12));
				*w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*w++ = (char)(0x80 | (cp & 0x3F));
			} else {
				*w++ = (char)(0xF0 | (cp >> 18));
				*w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
				*w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
				*w++ = (char)(0x80 | (cp & 0x3F));
			}
			break;
		}
		default:
			return -1;
		}
	}
	*w++ = '\0';
	*out = dst;
	*len = (size_t)(w - dst - 1);
	r->used += (size_t)(w - dst);
	return 0;
}

/* A number, true, false or null as text (null: *out = NULL). */
static int jscalar(struct jreader *r, const char **out, size_t *len)
{
	const char *start = r->p;
	if (strncmp(r->p, "null", 4) == 0) {
		r->p += 4;
		*out = NULL;
		*len = 0;
		return 0;
	}
	if (strncmp(r->p, "true", 4) == 0 || strncmp(r->p, "false", 5) == 0) {
		r->p += r->p[0] == 't' ? 4 : 5;
	} else {
		while (*r->p == '-' || *r->p == '+' || *r->p == '.' || *r->p == 'e' || *r->p == 'E' ||
		       (*r->p >= '0' && *r->p <= '9'))
			r->p++;
		if (r->p == start)
			return -1;
	}
	*len = (size_t)(r->p - start);
	memcpy(r->arena + r->used, start, *len);
	r->arena[r->used + *len] = '\0';
	*out = r->arena + r->used;
	r->used += *len + 1;
	return 0;
}

/* A string or scalar value. */
static int jvalue_text(struct jreader *r, const char **out, size_t *len)
{
	jws(r);
	if (*r->p == '"')
		return jstring(r, out, len);
	return jscalar(r, out, len);
}

/* Skips any value (for keys the reader does not know). */
static int jskip(struct jreader *r)
{
	const char *s;
	size_t n;
	jws(r);
	if (*r->p == '{' || *r->p == '[') {
		char close = *r->p == '{' ? '}' : ']';
		bool obj = *r->p == '{';
		if (++r->depth > JSON_MAX_DEPTH)
			return -1;
		r->p++;
		jws(r);
		if (*r->p == close) {
			r->p++;
			r->depth--;
			return 0;
		}
		for (;;) {
			if (obj) {
				jws(r);
				if (jstring(r, &s, &n) < 0)
					return -1;
				jws(r);
				if (*r->p++ != ':')
					return -1;
			}
			if (jskip(r) < 0)
				return -1;
			jws(r);
			if (*r->p == ',') {
				r->p++;
				continue;
			}
			if (*r->p++ != close)
				return -1;
			r->depth--;
			return 0;
		}
	}
	return jvalue_text(r, &s, &n);
}

/* Reads "[" item ("," item)* "]" calling fn for each item (fn reads the item). */
static int jarray(struct jreader *r, int (*fn)(struct jreader *r, void *arg), void *arg)
{
	jws(r);
	if (*r->p != '[')
		return -1;
	r->p++;
	jws(r);
	if (*r->p == ']') {
		r->p++;
		return 0;
	}
	for (;;) {
		if (fn(r, arg) < 0)
			return -1;
		jws(r);
		if (*r->p == ',') {
			r->p++;
			continue;
		}
		return *r->p++ == ']' ? 0 : -1;
	}
}

/* A decoded payload. */
struct payload {
	const char *table;
	const char *cols[MAX_KEY_COLS];
	int ncols;                       /* columns named (beyond MAX_KEY_COLS ignored) */
	bool has_rows;                   /* "r" given */
	struct cache_write_row *rows;    /* values with col = NULL until the columns are known; heap */
	int nrows, caprows;
	int *val_col;                    /* column index of each pin, parallel to rows[i].pins (heap, MAX_KEY_COLS per row) */
	int extra_cols;                  /* columns named beyond MAX_KEY_COLS (their values are ignored) */
	bool row_arity_bad;              /* a row had a different number of values than "c" */
};

static int read_col(struct jreader *r, void *arg)
{
	struct payload *pl = arg;
	const char *s;
	size_t n;
	jws(r);
	if (jstring(r, &s, &n) < 0)
		return -1;
	if (pl->ncols < MAX_KEY_COLS)
		pl->cols[pl->ncols] = s;
	if (pl->ncols < MAX_KEY_COLS)
		pl->ncols++;
	else
		pl->extra_cols++;
	return 0;
}

/* Reads one value of the current row. */
struct row_ctx {
	struct payload *pl;
	int idx;                         /* values read so far in this row */
};

static int read_val(struct jreader *r, void *arg)
{
	struct row_ctx *rc = arg;
	struct payload *pl = rc->pl;
	struct cache_write_row *row = &pl->rows[pl->nrows - 1];
	const char *v;
	size_t n;
	int i = rc->idx++;
	if (jvalue_text(r, &v, &n) < 0)
		return -1;
	if (!v || i >= MAX_KEY_COLS)
		return 0; /* NULL matches no pinned value; a dropped pin only widens the description */
	row->pins[row->npins].val = v;
	row->pins[row->npins].val_len = n;
	pl->val_col[(pl->nrows - 1) * MAX_KEY_COLS + row->npins] = i;
	row->npins++;
	return 0;
}

static int read_row(struct jreader *r, void *arg)
{
	struct payload *pl = arg;
	struct row_ctx rc = { pl, 0 };
	if (pl->nrows == pl->caprows) {
		pl->caprows = pl->caprows ? pl->caprows * 2 : 16;
		pl->rows = xrealloc(pl->rows, (size_t)pl->caprows * sizeof(*pl->rows));
		pl->val_col = xrealloc(pl->val_col, (size_t)pl->caprows * MAX_KEY_COLS * sizeof(*pl->val_col));
	}
	memset(&pl->rows[pl->nrows], 0, sizeof(pl->rows[0]));
	pl->nrows++;
	if (jarray(r, read_val, &rc) < 0)
		return -1;
	if (rc.idx != pl->ncols + pl->extra_cols)
		pl->row_arity_bad = true;
	return 0;
}

/* Parses a JSON payload into *pl (strings in arena). Returns 0 or -1. */
static int parse_json_payload(const char *text, char *arena, struct payload *pl)
{
	struct jreader r = { text, arena, 0, 0 };
	jws(&r);
	if (*r.p++ != '{')
		return -1;
	jws(&r);
	if (*r.p == '}')
		return -1;
	for (;;) {
		const char *key;
		size_t n;
		jws(&r);
		if (jstring(&r, &key, &n) < 0)
			return -1;
		jws(&r);
		if (*r.p++ != ':')
			return -1;
		jws(&r);
		if (strcmp(key, "t") == 0) {
			if (jstring(&r, &pl->table, &n) < 0 || n == 0)
				return -1;
		} else if (strcmp(key, "c") == 0) {
			if (jarray(&r, read_col, pl) < 0)
				return -1;
		} else if (strcmp(key, "r") == 0) {
			pl->has_rows = true;
			if (jarray(&r, read_row, pl) < 0)
				return -1;
		} else if (jskip(&r) < 0) {
			return -1;
		}
		jws(&r);
		if (*r.p == ',') {
			r.p++;
			continue;
		}
		if (*r.p++ != '}')
			return -1;
		jws(&r);
		return *r.p == '\0' && pl->table ? 0 : -1;
	}
}

/* Applies one notification payload to the cache. Returns false if it could not be read (everything was dropped). */
static bool apply_payload(struct feed *f, const char *text)
{
	struct payload pl;
	size_t len = strlen(text);
	char *arena;
	bool ok;

	while (*text == ' ')
		text++;
	if (*text != '{') {
		/* the plain form: "*" (everything) or one table name, for NOTIFY by hand or from other tools */
		if (strcmp(text, "*") == 0 || *text == '\0') {
			cache_invalidate_all();
			return *text != '\0';
		}
		cache_invalidate(text, NULL, 0);
		return true;
	}
	memset(&pl, 0, sizeof(pl));
	arena = xmalloc(len + 1);
	ok = parse_json_payload(text, arena, &pl) == 0;
	if (!ok) {
		cache_invalidate_all();
	} else if (!pl.has_rows || pl.nrows == 0 || pl.row_arity_bad || pl.ncols == 0) {
		/* table-level (or a malformed key list: the whole table, to be safe) */
		cache_invalidate(pl.table, NULL, 0);
	} else {
		for (int i = 0; i < pl.nrows; i++)
			for (int j = 0; j < pl.rows[i].npins; j++)
				pl.rows[i].pins[j].col = pl.cols[pl.val_col[i * MAX_KEY_COLS + j]];
		cache_invalidate(pl.table, pl.rows, pl.nrows);
	}
	if (!ok) {
		f->bad_payloads++;
		if (f->bad_payloads == 1 || f->bad_payloads % 1000 == 0)
			log_warning("invalidation feed for database %s: unreadable notification payload (%.80s%s); dropped every "
				    "cache entry (%llu such payloads so far)", f->dbname, text, len > 80 ? "..." : "",
				    (unsigned long long)f->bad_payloads);
	}
	free(pl.rows);
	free(pl.val_col);
	free(arena);
	return ok;
}

/* ---- socket and timer ---- */

/* Reads what arrived: query results, then notifications. */
static void feed_read(struct feed *f)
{
	PGnotify *n;
	if (!PQconsumeInput(f->conn)) {
		feed_fail(f, "connection lost: %s", PQerrorMessage(f->conn));
		return;
	}
	/* notifications first: those that arrived before a result belong to commits before it */
	while (f->conn && (n = PQnotifies(f->conn)) != NULL) {
		if (strcmp(n->relname, FEED_CHANNEL) == 0) {
			f->notifications++;
			f->last_notification = wall_usec();
			apply_payload(f, n->extra);
		}
		PQfreemem(n);
	}
	while (f->conn && f->query_pending && !PQisBusy(f->conn)) {
		PGresult *res = PQgetResult(f->conn);
		if (!res) {
			bool ping = f->ping_pending;
			f->query_pending = f->ping_pending = false;
			if (f->state == FS_SETUP) {
				setup_done(f);
			} else if (ping && f->state == FS_UP) {
				evtimer_del(f->ev_timer);
				arm_timer(f, PING_INTERVAL);
			}
			break;
		}
		switch (PQresultStatus(res)) {
		case PGRES_TUPLES_OK:
			if (f->state == FS_SETUP && PQntuples(res) == 1 && PQnfields(res) == 1)
				f->setup_found = PQgetvalue(res, 0, 0)[0] == 't';
			break;
		case PGRES_COMMAND_OK:
			break;
		default: {
			char err[200];
			snprintf(err, sizeof(err), "%s", PQresultErrorMessage(res));
			PQclear(res);
			feed_fail(f, "query failed: %s", err);
			return;
		}
		}
		PQclear(res);
	}
	/* results may have carried more notifications */
	while (f->conn && (n = PQnotifies(f->conn)) != NULL) {
		if (strcmp(n->relname, FEED_CHANNEL) == 0) {
			f->notifications++;
			f->last_notification = wall_usec();
			apply_payload(f, n->extra);
		}
		PQfreemem(n);
	}
}

static void io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct feed *f = arg;
	(void)fd;
	if (!f->conn)
		return;
	if (f->state == FS_CONNECTING) {
		poll_connect(f);
		return;
	}
	if (what & EV_WRITE) {
		flush_and_watch(f);
		if (!f->conn)
			return;
	}
	if (what & EV_READ)
		feed_read(f);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct feed *f = arg;
	(void)fd;
	(void)what;
	switch (f->state) {
	case FS_WAIT:
	case FS_NOT_NEEDED:
		feed_connect(f);
		break;
	case FS_CONNECTING:
	case FS_SETUP:
		feed_fail(f, "no answer within %.1f s (cache_invalidation_timeout)", (double)timeout_us / USEC_PER_SEC);
		break;
	case FS_UP:
		if (f->query_pending) {
			/* only a heartbeat is ever pending while up: it is overdue */
			feed_fail(f, "heartbeat not answered within %.1f s (cache_invalidation_timeout)",
				  (double)timeout_us / USEC_PER_SEC);
			break;
		}
		send_query(f, "SELECT 1", true);
		if (f->conn && timeout_us)
			arm_timer(f, timeout_us);
		break;
	}
}

/* ---- the contract ---- */

/* true when the configuration asks for feeds: the cache on, something cacheable, and the feed not off. */
static bool config_wants_feeds(const struct parley_config *cfg)
{
	bool policy = false;
	if (!cfg->cache_enabled || parse_mode(cfg->cache_invalidation_feed) == MODE_OFF)
		return false;
	for (int i = 0; i < cfg->ncache_tables && !policy; i++)
		policy = cfg->cache_tables[i].ttl_sec > 0;
	for (int i = 0; i < cfg->ncache_shapes && !policy; i++)
		policy = cfg->cache_shapes[i].ttl_sec > 0;
	return policy;
}

static void free_all(void)
{
	while (feeds) {
		struct feed *f = feeds;
		feeds = f->next;
		feed_free(f);
	}
}

void notify_apply_config(const struct parley_config *cfg)
{
	struct db_def *db, *dtmp;
	struct pool *p, *ptmp;
	struct feed **pp;
	enum feed_mode old_mode = mode;

	mode = parse_mode(cfg->cache_invalidation_feed);
	timeout_us = cfg->cache_invalidation_timeout;
	wanted = config_wants_feeds(cfg);
	if (!wanted) {
		if (feeds)
			log_info("invalidation feeds stopped (%s)", mode == MODE_OFF ? "cache_invalidation_feed = off" :
				 "nothing is cached");
		free_all();
		return;
	}
	for (struct feed *f = feeds; f; f = f->next)
		f->seen = false;
	/* [databases] entries with a forced user: start their feeds now */
	HASH_ITER(hh, cfg->databases, db, dtmp) {
		const char *dbname = db->dbname ? db->dbname : db->name;
		int port = db->port > 0 ? db->port : 5432;
		struct feed *f;
		if (strcmp(db->name, "*") == 0 || !db->user)
			continue;
		f = feed_find(db->host, port, dbname);
		if (!f)
			f = feed_new(db->host, port, dbname, db->user, db->password, true);
		else
			feed_set_credentials(f, db->user, db->password);
		f->seen = true;
	}
	/* feeds started for pools (created on a pool's first cacheable request) stay while a pool uses them */
	HASH_ITER(hh, g.pools, p, ptmp) {
		struct feed *f = feed_find(p->host, p->port, p->server_dbname);
		if (f)
			f->seen = true;
	}
	for (pp = &feeds; *pp;) {
		struct feed *f = *pp;
		if (!f->seen) {
			*pp = f->next;
			log_info("invalidation feed for database %s stopped (no longer configured)", f->dbname);
			feed_free(f);
			continue;
		}
		if (mode != old_mode) {
			bool req = mode == MODE_ON || (mode == MODE_AUTO && f->triggers_present);
			if (req && !f->required && f->state != FS_UP)
				f->down_since = now_usec();
			if (!req)
				f->down_since = 0;
			f->required = req;
			if (mode == MODE_ON && f->state == FS_NOT_NEEDED) {
				/* check now, and fail closed until the feed is up */
				evtimer_del(f->ev_timer);
				arm_timer(f, 0);
			}
		}
		pp = &f->next;
	}
}

void notify_shutdown(void)
{
	free_all();
	wanted = false;
}

bool notify_cache_usable(const struct pool *p)
{
	struct feed *f;
	if (!wanted)
		return true;
	f = feed_find(p->host, p->port, p->server_dbname);
	if (!f)
		f = feed_new(p->host, p->port, p->server_dbname, p->server_user, p->server_password, false);
	return !f->required || f->state == FS_UP;
}

static const char *state_name(const struct feed *f)
{
	switch (f->state) {
	case FS_WAIT:
		return f->attempts ? "retrying" : "connecting";
	case FS_CONNECTING:
	case FS_SETUP:
		return "connecting";
	case FS_UP:
		return "up";
	case FS_NOT_NEEDED:
		return "not_needed";
	}
	return "?";
}

void notify_foreach(bool (*fn)(const struct notify_status *st, void *arg), void *arg)
{
	for (struct feed *f = feeds; f; f = f->next) {
		struct notify_status st = {
			.dbname = f->dbname,
			.enabled = f->required,
			.connected = f->state == FS_UP,
			.notifications = f->notifications,
			.reconnects = f->reconnects,
			.last_notification = f->last_notification,
			.down_since = f->required ? f->down_since : 0,
			.host = feed_host(f),
			.port = f->port,
			.user = f->user,
			.state = state_name(f),
			.last_error = f->last_error,
		};
		if (!fn(&st, arg))
			break;
	}
}
