/* config.c — parses parley.ini (or an unchanged pgbouncer.ini) into struct parley_config, driven by one settings table. */
#include "config.h"
#include <ctype.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <strings.h>

#define INCLUDE_DEPTH_MAX 10
#define TIME_MAX_SEC 1e9        /* ~31 years: any larger duration is a typo */
#define IMAX 2147483647.0

/* Builders for rows of the settings table. R/NR: reloadable or not. Rows made with C_* are accepted for
 * pgbouncer.ini compatibility only: they have no struct field, their value is validated and shown by
 * SHOW CONFIG, and config_load records a warning when a file sets them. */
#define R true
#define NR false
#define F(field) offsetof(struct parley_config, field)
#define ROW(n, t, off, def, rel, impl, lo, hi, h) \
	{ .name = (n), .type = (t), .offset = (off), .default_value = (def), .reloadable = (rel), \
	  .implemented = (impl), .help = (h), .min = (lo), .max = (hi) }
#define S_INT(n, f, def, rel, lo, hi, h) ROW(n, SET_INT, F(f), def, rel, true, lo, hi, h)
#define S_BOOL(n, f, def, rel, h)        ROW(n, SET_BOOL, F(f), def, rel, true, 0, 1, h)
#define S_STR(n, f, def, rel, h)         ROW(n, SET_STR, F(f), def, rel, true, 0, 0, h)
#define S_TIME(n, f, def, rel, h)        ROW(n, SET_TIME, F(f), def, rel, true, 0, TIME_MAX_SEC, h)
#define S_BYTES(n, f, def, rel, lo, hi, h) ROW(n, SET_BYTES, F(f), def, rel, true, lo, hi, h)
#define C_INT(n, def, rel, lo, hi, h)    ROW(n, SET_INT, SETTING_NO_FIELD, def, rel, false, lo, hi, h)
#define C_BOOL(n, def, rel, h)           ROW(n, SET_BOOL, SETTING_NO_FIELD, def, rel, false, 0, 1, h)
#define C_STR(n, def, rel, h)            ROW(n, SET_STR, SETTING_NO_FIELD, def, rel, false, 0, 0, h)
#define C_TIME(n, def, rel, h)           ROW(n, SET_TIME, SETTING_NO_FIELD, def, rel, false, 0, TIME_MAX_SEC, h)

/* A string setting limited to a list of words (the value is stored lower-cased as written in the list). */
#define S_CHOICE(n, f, def, rel, list, h) \
	{ .name = (n), .type = SET_STR, .offset = F(f), .default_value = (def), .reloadable = (rel), \
	  .implemented = true, .help = (h), .choices = (list) }

static const char *const feed_modes[] = { "auto", "on", "off", NULL };
/* transaction_unsafe, in session.h's enum unsafe_mode order */
static const char *const unsafe_modes[] = { "error", "warn", "allow", NULL };
/* client_tls_sslmode / server_tls_sslmode, in tls.h's enum tls_mode order */
static const char *const tls_modes[] = { "disable", "allow", "prefer", "require", "verify-ca", "verify-full", NULL };

#define DEFAULT_AUTH_QUERY \
	"SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin"

/* In alphabetical order, as PgBouncer's SHOW CONFIG lists them. */
static const struct setting settings[] = {
	S_STR("admin_users", admin_users, "", R, "users allowed to run any admin console command (comma-separated)"),
	S_BOOL("application_name_add_host", application_name_add_host, "0", R, "append the client's host:port to application_name"),
	S_STR("auth_dbname", auth_dbname, NULL, R, "[databases] entry auth_query runs in (default: the client's database)"),
	S_STR("auth_file", auth_file, NULL, R, "userlist.txt with \"user\" \"password\" lines"),
	S_STR("auth_hba_file", auth_hba_file, "", R, "pg_hba.conf (PgBouncer's subset) that picks the method per connection for auth_type = hba; read at startup and on reload"),
	C_STR("auth_ident_file", NULL, R, "pg_ident.conf for auth_type = hba"),
	C_STR("auth_ldap_options", NULL, R, "LDAP options for auth_type = ldap"),
	S_STR("auth_query", auth_query, DEFAULT_AUTH_QUERY, R, "query that looks up a user's password when it is not in auth_file"),
	ROW("auth_type", SET_AUTH_TYPE, F(auth_type), "md5", R, true, 0, 0, "client authentication: trust, any, plain, md5, scram-sha-256 or hba (auth_hba_file)"),
	S_STR("auth_user", auth_user, NULL, R, "user that runs auth_query on the server"),
	S_TIME("autodb_idle_timeout", autodb_idle_timeout, "3600", R, "drop pools created through the \"*\" entry after this long unused"),
	S_BOOL("cache_enabled", cache_enabled, "1", R, "serve the tables listed in [cache] from the query cache (off = pooling only)"),
	S_CHOICE("cache_invalidation_feed", cache_invalidation_feed, "auto", R, feed_modes, "invalidate on writes made outside parley through PostgreSQL triggers and LISTEN: auto (when the triggers are installed), on (required: no cache while the feed is down) or off"),
	S_TIME("cache_invalidation_timeout", cache_invalidation_timeout, "5", R, "the invalidation feed counts as down when connecting or its heartbeat takes longer than this"),
	S_BYTES("cache_max_entry_size", cache_max_entry_size, "1MB", R, 0, 1073741824.0, "largest result stored in the cache (bytes; kB, MB, GB units)"),
	S_BYTES("cache_max_memory", cache_max_memory, "256MB", R, 0, 1099511627776.0, "memory for cached results, everything counted (bytes; kB, MB, GB units)"),
	S_INT("cache_max_shapes", cache_max_shapes, "2000", NR, 1, IMAX, "query shapes whose classification is remembered"),
	S_TIME("cache_wait_timeout", cache_wait_timeout, "1", R, "how long a query waits for a concurrent identical fill before going to the server"),
	C_TIME("cancel_wait_timeout", "10", R, "how long a cancel request may wait for a server connection"),
	S_TIME("client_idle_timeout", client_idle_timeout, "0", R, "close client connections idle this long (0 = never)"),
	S_TIME("client_login_timeout", client_login_timeout, "60", R, "close clients that have not logged in after this long"),
	C_STR("client_tls13_ciphers", NULL, R, "TLS 1.3 cipher suites for client connections"),
	S_STR("client_tls_ca_file", client_tls_ca_file, "", R, "CA that signs client certificates (needed by verify-ca and verify-full)"),
	S_STR("client_tls_cert_file", client_tls_cert_file, "", R, "certificate (PEM, may hold the chain) presented to clients"),
	S_STR("client_tls_ciphers", client_tls_ciphers, "default", R, "OpenSSL cipher list (TLS 1.2 and older) for client connections; default = OpenSSL's"),
	C_STR("client_tls_dheparams", "auto", R, "DH parameters for client connections"),
	C_STR("client_tls_ecdhcurve", "auto", R, "ECDH curve for client connections"),
	S_STR("client_tls_key_file", client_tls_key_file, "", R, "private key (PEM) of client_tls_cert_file"),
	S_STR("client_tls_protocols", client_tls_protocols, "secure", R, "TLS versions for client connections: tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, secure (1.2 and 1.3), all"),
	S_CHOICE("client_tls_sslmode", client_tls_sslmode, "disable", R, tls_modes, "TLS for client connections: disable, allow, prefer, require (no plain TCP logins), verify-ca or verify-full (client certificate required)"),
	C_STR("conffile", NULL, R, "path of the configuration file (informational)"),
	S_INT("default_pool_size", default_pool_size, "20", R, 0, IMAX, "server connections per user/database pair"),
	S_BOOL("disable_pqexec", disable_pqexec, "0", NR, "reject the simple query protocol"),
	ROW("dns_max_ttl", SET_TIME, F(dns_max_ttl), "15", R, false, 0, TIME_MAX_SEC, "how long DNS lookups are cached"),
	C_TIME("dns_nxdomain_ttl", "15", R, "how long DNS failures are cached"),
	C_TIME("dns_zone_check_period", "0", R, "period of DNS zone serial checks"),
	S_TIME("idle_transaction_timeout", idle_transaction_timeout, "0", R, "close clients idle inside a transaction this long (0 = never)"),
	S_STR("ignore_startup_parameters", ignore_startup_parameters, "", R, "startup parameters clients may send that parley does not track (comma-separated)"),
	C_STR("job_name", "parley", NR, "Windows service name"),
	S_STR("listen_addr", listen_addr, "127.0.0.1", NR, "TCP addresses to listen on (comma-separated; * = all; empty = unix socket only)"),
	S_INT("listen_backlog", listen_backlog, "128", NR, 1, IMAX, "length of the listen(2) queue of pending connections"),
	S_INT("listen_port", listen_port, "6432", NR, 1, 65535, "TCP port for clients; the unix socket is named .s.PGSQL.PORT after it"),
	S_BOOL("log_connections", log_connections, "1", R, "log successful logins"),
	S_BOOL("log_disconnections", log_disconnections, "1", R, "log disconnections with the reason"),
	S_BOOL("log_pooler_errors", log_pooler_errors, "1", R, "log errors parley sends to clients"),
	S_BOOL("log_stats", log_stats, "1", R, "log aggregated statistics every stats_period"),
	S_STR("logfile", logfile, NULL, R, "log file (empty = stderr); reopened on SIGHUP"),
	S_INT("max_client_conn", max_client_conn, "100", R, 1, IMAX, "maximum number of client connections"),
	C_INT("max_db_client_connections", "0", R, 0, IMAX, "maximum client connections per database (0 = unlimited)"),
	S_INT("max_db_connections", max_db_connections, "0", R, 0, IMAX, "maximum server connections per database (0 = unlimited)"),
	S_INT("max_packet_size", max_packet_size, "2147483647", R, 1024, IMAX, "largest protocol message accepted, in bytes"),
	S_INT("max_prepared_statements", max_prepared_statements, "200", R, 0, IMAX, "prepared statements kept on each server connection; the oldest is closed beyond it (0 = no limit)"),
	C_INT("max_user_client_connections", "0", R, 0, IMAX, "maximum client connections per user (0 = unlimited)"),
	S_INT("max_user_connections", max_user_connections, "0", R, 0, IMAX, "maximum server connections per user (0 = unlimited)"),
	S_STR("metrics_listen_addr", metrics_listen_addr, "127.0.0.1", NR, "address of the Prometheus metrics endpoint"),
	S_INT("metrics_port", metrics_port, "0", NR, 0, 65535, "port of the Prometheus metrics endpoint (0 = disabled)"),
	S_INT("min_pool_size", min_pool_size, "0", R, 0, IMAX, "keep at least this many server connections open per pool"),
	S_INT("peer_id", peer_id, "0", R, 0, 16383, "this process's id among [peers]; cancel keys carry it so peers forward cancel requests here (0 = no peering)"),
	S_STR("pidfile", pidfile, NULL, NR, "write the process id to this file"),
	S_INT("pkt_buf", pkt_buf, "4096", NR, 512, IMAX, "size of each connection's I/O buffer, in bytes"),
	ROW("pool_mode", SET_POOL_MODE, F(pool_mode), "session", R, true, 0, 0, "when a server connection returns to the pool: session, transaction or statement"),
	ROW("pool_utilization_warn", SET_DOUBLE, F(pool_utilization_warn), "0.8", R, true, 0, 1, "warn when a pool's busy fraction exceeds this (0..1)"),
	S_TIME("query_timeout", query_timeout, "0", R, "cancel queries running longer than this and disconnect their client (0 = never)"),
	C_INT("query_wait_notify", "5", R, 0, IMAX, "seconds of waiting after which a client is told it is queued"),
	S_TIME("query_wait_timeout", query_wait_timeout, "120", R, "disconnect clients waiting this long for a server connection (0 = never)"),
	S_INT("reserve_pool_size", reserve_pool_size, "0", R, 0, IMAX, "extra server connections allowed per pool when clients wait"),
	S_TIME("reserve_pool_timeout", reserve_pool_timeout, "5", R, "how long a client waits before the reserve pool is used (0 disables the reserve pool)"),
	C_STR("resolv_conf", "", NR, "resolver configuration file"),
	S_INT("sbuf_loopcnt", sbuf_loopcnt, "5", R, 0, IMAX, "packets processed per connection per event loop round (0 = no limit)"),
	C_INT("scram_iterations", "4096", R, 1, IMAX, "PBKDF2 iterations when parley computes SCRAM secrets"),
	S_TIME("server_check_delay", server_check_delay, "30", R, "run server_check_query on connections idle longer than this before handing them out (0 = always)"),
	S_STR("server_check_query", server_check_query, "select 1", R, "query that checks an idle server connection is alive (empty = no checks)"),
	S_TIME("server_connect_timeout", server_connect_timeout, "15", R, "give up connecting and logging in to a server after this long"),
	C_BOOL("server_fast_close", "0", R, "close server connections mid-transaction during RECONNECT or RELOAD"),
	S_TIME("server_idle_timeout", server_idle_timeout, "600", R, "close server connections idle this long (0 = never)"),
	S_TIME("server_lifetime", server_lifetime, "3600", R, "close server connections older than this when released (0 = never)"),
	S_TIME("server_login_retry", server_login_retry, "15", R, "wait this long before retrying a failed server login"),
	S_STR("server_reset_query", server_reset_query, "DISCARD ALL", R, "query run when a session-mode server connection is released (empty = none)"),
	S_BOOL("server_reset_query_always", server_reset_query_always, "0", R, "run server_reset_query in transaction and statement mode too"),
	S_BOOL("server_round_robin", server_round_robin, "0", R, "reuse server connections round-robin instead of last-in-first-out"),
	C_STR("server_tls13_ciphers", NULL, R, "TLS 1.3 cipher suites for server connections"),
	S_STR("server_tls_ca_file", server_tls_ca_file, "", R, "CA that signs server certificates (verify-ca and verify-full; empty = the system's CAs)"),
	S_STR("server_tls_cert_file", server_tls_cert_file, "", R, "client certificate (PEM) presented to servers (optional)"),
	S_STR("server_tls_ciphers", server_tls_ciphers, "default", R, "OpenSSL cipher list (TLS 1.2 and older) for server connections; default = OpenSSL's"),
	S_STR("server_tls_key_file", server_tls_key_file, "", R, "private key (PEM) of server_tls_cert_file"),
	S_STR("server_tls_protocols", server_tls_protocols, "secure", R, "TLS versions for server connections (as client_tls_protocols)"),
	S_CHOICE("server_tls_sslmode", server_tls_sslmode, "prefer", R, tls_modes, "TLS for server connections: disable, allow and prefer (TLS if the server offers it; prefer is the default, as in PgBouncer), require, verify-ca or verify-full"),
	C_STR("service_name", NULL, NR, "Windows service name (alias of job_name)"),
	ROW("slow_query_threshold", SET_TIME, F(slow_query_threshold), "1", R, true, 0, TIME_MAX_SEC, "log queries slower than this (0 = off)"),
	S_BOOL("so_reuseport", so_reuseport, "0", NR, "set SO_REUSEPORT on listening sockets"),
	S_TIME("stats_period", stats_period, "60", R, "period of statistics averaging and log_stats lines"),
	S_STR("stats_users", stats_users, "", R, "users allowed to run read-only SHOW commands (comma-separated)"),
	S_TIME("suspend_timeout", suspend_timeout, "10", R, "how long SUSPEND waits for buffers to flush"),
	C_BOOL("syslog", "0", R, "also log to syslog"),
	C_STR("syslog_facility", "daemon", R, "syslog facility"),
	C_STR("syslog_ident", "parley", R, "syslog program name"),
	S_INT("tcp_defer_accept", tcp_defer_accept, "1", NR, 0, IMAX, "TCP_DEFER_ACCEPT on listening sockets (Linux)"),
	S_INT("tcp_keepalive", tcp_keepalive, "1", R, 0, 1, "enable TCP keepalive on all sockets"),
	S_INT("tcp_keepcnt", tcp_keepcnt, "0", R, 0, IMAX, "TCP_KEEPCNT (0 = OS default)"),
	S_INT("tcp_keepidle", tcp_keepidle, "0", R, 0, IMAX, "TCP_KEEPIDLE in seconds (0 = OS default)"),
	S_INT("tcp_keepintvl", tcp_keepintvl, "0", R, 0, IMAX, "TCP_KEEPINTVL in seconds (0 = OS default)"),
	S_INT("tcp_socket_buffer", tcp_socket_buffer, "0", R, 0, IMAX, "SO_SNDBUF/SO_RCVBUF in bytes (0 = OS default)"),
	S_INT("tcp_user_timeout", tcp_user_timeout, "0", R, 0, IMAX, "TCP_USER_TIMEOUT in milliseconds (0 = OS default)"),
	S_STR("track_extra_parameters", track_extra_parameters, "IntervalStyle, search_path", R, "session parameters restored on whichever server a client gets (comma-separated; client_encoding, DateStyle, TimeZone, standard_conforming_strings, application_name and IntervalStyle always are); parameters PostgreSQL does not report are tracked from the client's SET / RESET statements"),
	C_TIME("transaction_timeout", "0", R, "cancel transactions open longer than this"),
	S_CHOICE("transaction_unsafe", transaction_unsafe, "error", R, unsafe_modes, "what to do in transaction and statement mode with session-level features that break there (LISTEN, session advisory locks, SQL PREPARE, DECLARE ... WITH HOLD): error (answer 0A000), warn (run it and log a warning) or allow"),
	S_STR("unix_socket_dir", unix_socket_dir, "/tmp", NR, "directory of the unix socket (empty = no unix socket)"),
	C_STR("unix_socket_group", "", NR, "group owning the unix socket"),
	ROW("unix_socket_mode", SET_MODE_OCTAL, F(unix_socket_mode), "0777", NR, true, 0, 07777, "permissions of the unix socket, in octal"),
	C_STR("user", NULL, NR, "switch to this OS user at startup"),
	S_INT("verbose", verbose, "0", R, 0, IMAX, "extra debug logging: 1 = debug, 2 = noise"),
};

/* A parsed value of any setting type. */
union value {
	int i;
	bool b;
	char *str;       /* owned by whoever holds the union */
	usec_t t;
	double d;
	enum pool_mode pm;
	enum auth_type at;
	size_t sz;
};

enum section { SEC_NONE, SEC_MAIN, SEC_DATABASES, SEC_USERS, SEC_CACHE, SEC_CACHE_SHAPES, SEC_PEERS };

/* State shared by a file and the files it %includes (the current section carries across, as in PgBouncer). */
struct parse_ctx {
	struct parley_config *cfg;
	char *err;
	size_t errlen;
	enum section sect;
	char sect_name[64];     /* as written, for messages */
	int nsections;          /* section headers seen, in all files */
};

static const char *const pool_mode_names[] = { "session", "transaction", "statement" };
static const char *const auth_type_names[] = { "trust", "any", "plain", "md5", "scram-sha-256", "hba" };
/* auth types PgBouncer knows that parley rejects with a clear message. */
static const char *const auth_type_unsupported[] = { "cert", "pam", "ldap", "peer" };

const struct setting *config_settings(size_t *count)
{
	if (count)
		*count = ARRAY_SIZE(settings);
	return settings;
}

const struct setting *config_find_setting(const char *name)
{
	size_t i;
	for (i = 0; i < ARRAY_SIZE(settings); i++)
		if (strcasecmp(settings[i].name, name) == 0)
			return &settings[i];
	return NULL;
}

const char *pool_mode_name(enum pool_mode m)
{
	if (m >= POOL_SESSION && m <= POOL_STATEMENT)
		return pool_mode_names[m];
	return "unset";
}

const char *auth_type_name(enum auth_type t)
{
	if ((int)t >= 0 && (size_t)t < ARRAY_SIZE(auth_type_names))
		return auth_type_names[t];
	return "unknown";
}

static char *skip_ws(char *p)
{
	while (*p && isspace((unsigned char)*p))
		p++;
	return p;
}

/* Removes trailing whitespace in place. */
static void rtrim(char *s)
{
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
}

static int parse_pool_mode(const char *text, enum pool_mode *out)
{
	size_t i;
	for (i = 0; i < ARRAY_SIZE(pool_mode_names); i++) {
		if (strcasecmp(text, pool_mode_names[i]) == 0) {
			*out = (enum pool_mode)i;
			return 0;
		}
	}
	return -1;
}

/* Parses a decimal integer within [lo, hi]. On error writes 'invalid value "x" for NAME: why' to msg. */
static int parse_int_range(const char *name, const char *text, double lo, double hi, int *out, char *msg, size_t msglen)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(text, &end, 10);
	if (end == text || *end != '\0' || isspace((unsigned char)*text)) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: not an integer", text, name);
		return -1;
	}
	if (errno == ERANGE || (double)v < lo || (double)v > hi) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: must be between %.0f and %.0f", text, name, lo, hi);
		return -1;
	}
	*out = (int)v;
	return 0;
}

/* Parses a duration: a number of seconds (may be fractional) with an optional unit us, ms, s, min, h or d. */
static int parse_duration(const char *name, const char *text, double max_sec, usec_t *out, char *msg, size_t msglen)
{
	static const struct { const char *unit; double usec; } units[] = {
		{ "", 1e6 }, { "s", 1e6 }, { "us", 1 }, { "ms", 1e3 }, { "min", 60e6 }, { "h", 3600e6 }, { "d", 86400e6 },
	};
	char *end;
	double v, mult = -1;
	size_t i;

	errno = 0;
	v = strtod(text, &end);
	if (end == text || isspace((unsigned char)*text) || !isfinite(v)) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: not a duration (seconds, or a number with unit us, ms, s, min, h or d)",
			 text, name);
		return -1;
	}
	while (*end == ' ' || *end == '\t')
		end++;
	for (i = 0; i < ARRAY_SIZE(units); i++)
		if (strcasecmp(end, units[i].unit) == 0)
			mult = units[i].usec;
	if (mult < 0) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: unknown time unit \"%s\" (use us, ms, s, min, h or d)", text, name, end);
		return -1;
	}
	if (v < 0) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: must not be negative", text, name);
		return -1;
	}
	if (v * mult / 1e6 > max_sec) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: must be at most %.0f seconds", text, name, max_sec);
		return -1;
	}
	*out = (usec_t)(v * mult + 0.5);   /* v >= 0: round to the nearest microsecond */
	return 0;
}

/* Parses a size in bytes: digits with an optional unit B, kB, MB, GB or TB (any case, powers of 1024), within
 * [lo, hi]. */
static int parse_bytes(const char *name, const char *text, double lo, double hi, size_t *out, char *msg, size_t msglen)
{
	static const struct { const char *unit; unsigned long long mult; } units[] = {
		{ "", 1 }, { "b", 1 }, { "kb", 1ULL << 10 }, { "mb", 1ULL << 20 }, { "gb", 1ULL << 30 }, { "tb", 1ULL << 40 },
	};
	unsigned long long v, mult = 0;
	char *end;
	size_t i;

	errno = 0;
	if (!isdigit((unsigned char)*text)) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: not a size (bytes, or a whole number with unit kB, MB, GB or TB)",
			 text, name);
		return -1;
	}
	v = strtoull(text, &end, 10);
	while (*end == ' ' || *end == '\t')
		end++;
	for (i = 0; i < ARRAY_SIZE(units); i++)
		if (strcasecmp(end, units[i].unit) == 0)
			mult = units[i].mult;
	if (!mult) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: unknown size unit \"%s\" (use kB, MB, GB or TB)", text, name, end);
		return -1;
	}
	if (errno == ERANGE || v > ULLONG_MAX / mult || (double)(v * mult) < lo || (double)(v * mult) > hi) {
		snprintf(msg, msglen, "invalid value \"%s\" for %s: must be between %.0f and %.0f bytes", text, name, lo, hi);
		return -1;
	}
	*out = (size_t)(v * mult);
	return 0;
}

/* Parses text as a value of setting s into *v (a string result is heap-allocated). On error writes a complete
 * message (without FILE:LINE) to msg and returns -1. */
static int parse_value(const struct setting *s, const char *text, union value *v, char *msg, size_t msglen)
{
	static const char *const true_words[] = { "1", "yes", "on", "true" };
	static const char *const false_words[] = { "0", "no", "off", "false" };
	char *end;
	size_t i;
	long m;

	memset(v, 0, sizeof(*v));
	switch (s->type) {
	case SET_INT:
		return parse_int_range(s->name, text, s->min, s->max, &v->i, msg, msglen);
	case SET_BOOL:
		for (i = 0; i < ARRAY_SIZE(true_words); i++) {
			if (strcasecmp(text, true_words[i]) == 0) {
				v->b = true;
				return 0;
			}
			if (strcasecmp(text, false_words[i]) == 0) {
				v->b = false;
				return 0;
			}
		}
		snprintf(msg, msglen, "invalid value \"%s\" for %s: not a boolean (use 1/0, yes/no, on/off or true/false)", text, s->name);
		return -1;
	case SET_STR:
		if (s->choices) {
			for (i = 0; s->choices[i]; i++) {
				if (strcasecmp(text, s->choices[i]) == 0) {
					v->str = xstrdup(s->choices[i]);
					return 0;
				}
			}
			snprintf(msg, msglen, "invalid value \"%s\" for %s: expected one of", text, s->name);
			for (i = 0; s->choices[i]; i++) {
				size_t used = strlen(msg);
				snprintf(msg + used, msglen > used ? msglen - used : 0, "%s %s", i ? "," : "", s->choices[i]);
			}
			return -1;
		}
		/* An empty value resets a setting whose default is unset back to unset. */
		v->str = (*text || s->default_value) ? xstrdup(text) : NULL;
		return 0;
	case SET_TIME:
		return parse_duration(s->name, text, s->max, &v->t, msg, msglen);
	case SET_BYTES:
		return parse_bytes(s->name, text, s->min, s->max, &v->sz, msg, msglen);
	case SET_DOUBLE:
		errno = 0;
		v->d = strtod(text, &end);
		if (end == text || *end != '\0' || isspace((unsigned char)*text) || !isfinite(v->d)) {
			snprintf(msg, msglen, "invalid value \"%s\" for %s: not a number", text, s->name);
			return -1;
		}
		if (v->d < s->min || v->d > s->max) {
			snprintf(msg, msglen, "invalid value \"%s\" for %s: must be between %g and %g", text, s->name, s->min, s->max);
			return -1;
		}
		return 0;
	case SET_POOL_MODE:
		if (parse_pool_mode(text, &v->pm) == 0)
			return 0;
		snprintf(msg, msglen, "invalid value \"%s\" for %s: expected session, transaction or statement", text, s->name);
		return -1;
	case SET_AUTH_TYPE:
		for (i = 0; i < ARRAY_SIZE(auth_type_names); i++) {
			if (strcasecmp(text, auth_type_names[i]) == 0) {
				v->at = (enum auth_type)i;
				return 0;
			}
		}
		for (i = 0; i < ARRAY_SIZE(auth_type_unsupported); i++) {
			if (strcasecmp(text, auth_type_unsupported[i]) == 0) {
				snprintf(msg, msglen, "auth_type '%s' is not supported yet (use trust, any, plain, md5, scram-sha-256 or hba)", text);
				return -1;
			}
		}
		snprintf(msg, msglen, "invalid value \"%s\" for %s: expected trust, any, plain, md5, scram-sha-256 or hba", text, s->name);
		return -1;
	case SET_MODE_OCTAL:
		if (!*text || strspn(text, "01234567") != strlen(text)) {
			snprintf(msg, msglen, "invalid value \"%s\" for %s: not an octal mode such as 0777", text, s->name);
			return -1;
		}
		errno = 0;
		m = strtol(text, NULL, 8);
		if (errno == ERANGE || m < s->min || m > s->max) {
			snprintf(msg, msglen, "invalid value \"%s\" for %s: must be between 0 and 0%o", text, s->name, (unsigned)s->max);
			return -1;
		}
		v->i = (int)m;
		return 0;
	}
	snprintf(msg, msglen, "internal error: setting %s has an unknown type", s->name);
	return -1;
}

/* Formats *v (of s's type) as SHOW CONFIG text. */
static void format_value(const struct setting *s, const union value *v, char *buf, size_t len)
{
	long long sec, frac;
	size_t n;

	if (!len)
		return;
	switch (s->type) {
	case SET_INT:
		snprintf(buf, len, "%d", v->i);
		break;
	case SET_BOOL:
		snprintf(buf, len, "%d", v->b ? 1 : 0);
		break;
	case SET_STR:
		snprintf(buf, len, "%s", v->str ? v->str : "");
		break;
	case SET_TIME:
		sec = (long long)(v->t / USEC_PER_SEC);
		frac = (long long)(v->t % USEC_PER_SEC);
		if (frac == 0) {
			snprintf(buf, len, "%lld", sec);
		} else {
			snprintf(buf, len, "%lld.%06lld", sec, frac);
			n = strlen(buf);
			while (n > 0 && buf[n - 1] == '0')
				buf[--n] = '\0';
		}
		break;
	case SET_DOUBLE:
		/* the shortest text that reads back as the same double */
		snprintf(buf, len, "%.15g", v->d);
		if (strtod(buf, NULL) != v->d)
			snprintf(buf, len, "%.17g", v->d);
		break;
	case SET_POOL_MODE:
		snprintf(buf, len, "%s", pool_mode_name(v->pm));
		break;
	case SET_AUTH_TYPE:
		snprintf(buf, len, "%s", auth_type_name(v->at));
		break;
	case SET_MODE_OCTAL:
		snprintf(buf, len, "%04o", (unsigned)v->i);
		break;
	case SET_BYTES:
		/* the largest unit that divides exactly, as PostgreSQL shows memory settings */
		if (v->sz && v->sz % (1ULL << 40) == 0)
			snprintf(buf, len, "%lluTB", (unsigned long long)(v->sz >> 40));
		else if (v->sz && v->sz % (1ULL << 30) == 0)
			snprintf(buf, len, "%lluGB", (unsigned long long)(v->sz >> 30));
		else if (v->sz && v->sz % (1ULL << 20) == 0)
			snprintf(buf, len, "%lluMB", (unsigned long long)(v->sz >> 20));
		else if (v->sz && v->sz % (1ULL << 10) == 0)
			snprintf(buf, len, "%llukB", (unsigned long long)(v->sz >> 10));
		else
			snprintf(buf, len, "%llu", (unsigned long long)v->sz);
		break;
	}
}

/* Reads the struct field of s into *v (strings are borrowed, not copied). */
static void read_field(const struct parley_config *cfg, const struct setting *s, union value *v)
{
	const void *f = (const char *)cfg + s->offset;

	memset(v, 0, sizeof(*v));
	switch (s->type) {
	case SET_INT:
	case SET_MODE_OCTAL:
		v->i = *(const int *)f;
		break;
	case SET_BOOL:
		v->b = *(const bool *)f;
		break;
	case SET_STR:
		v->str = *(char *const *)f;
		break;
	case SET_TIME:
		v->t = *(const usec_t *)f;
		break;
	case SET_DOUBLE:
		v->d = *(const double *)f;
		break;
	case SET_POOL_MODE:
		v->pm = *(const enum pool_mode *)f;
		break;
	case SET_AUTH_TYPE:
		v->at = *(const enum auth_type *)f;
		break;
	case SET_BYTES:
		v->sz = *(const size_t *)f;
		break;
	}
}

/* Stores *v into the struct field of s, taking ownership of a string and freeing the previous one. */
static void write_field(struct parley_config *cfg, const struct setting *s, const union value *v)
{
	void *f = (char *)cfg + s->offset;

	switch (s->type) {
	case SET_INT:
	case SET_MODE_OCTAL:
		*(int *)f = v->i;
		break;
	case SET_BOOL:
		*(bool *)f = v->b;
		break;
	case SET_STR:
		free(*(char **)f);
		*(char **)f = v->str;
		break;
	case SET_TIME:
		*(usec_t *)f = v->t;
		break;
	case SET_DOUBLE:
		*(double *)f = v->d;
		break;
	case SET_POOL_MODE:
		*(enum pool_mode *)f = v->pm;
		break;
	case SET_AUTH_TYPE:
		*(enum auth_type *)f = v->at;
		break;
	case SET_BYTES:
		*(size_t *)f = v->sz;
		break;
	}
}

/* Validates text for s and stores it: into the struct field, or as text in compat_values for rows without one. */
static int apply_value(struct parley_config *cfg, const struct setting *s, const char *text, char *msg, size_t msglen)
{
	union value v;
	size_t idx = (size_t)(s - settings);

	if (parse_value(s, text, &v, msg, msglen) < 0)
		return -1;
	if (s->offset != SETTING_NO_FIELD) {
		write_field(cfg, s, &v);
		return 0;
	}
	if (s->type == SET_STR)
		free(v.str);
	if (!cfg->compat_values)
		cfg->compat_values = xcalloc(ARRAY_SIZE(settings), sizeof(char *));
	free(cfg->compat_values[idx]);
	cfg->compat_values[idx] = xstrdup(text);
	return 0;
}

void config_init_defaults(struct parley_config *cfg)
{
	char msg[256];
	size_t i;

	memset(cfg, 0, sizeof(*cfg));
	for (i = 0; i < ARRAY_SIZE(settings); i++) {
		const struct setting *s = &settings[i];
		if (s->offset == SETTING_NO_FIELD)
			continue;
		if (s->type == SET_STR && !s->default_value)
			continue;       /* already NULL */
		if (apply_value(cfg, s, s->default_value, msg, sizeof(msg)) < 0) {
			/* a broken table is a programming error; the unit test catches it */
			fprintf(stderr, "parley: bad default for %s: %s\n", s->name, msg);
			abort();
		}
	}
}

static void db_free(struct db_def *db)
{
	if (!db)
		return;
	free(db->name);
	free(db->host);
	free(db->dbname);
	free(db->user);
	free(db->password);
	free(db->auth_user);
	free(db->auth_dbname);
	free(db->auth_query);
	free(db->connect_query);
	free(db->application_name);
	free(db->client_encoding);
	free(db->datestyle);
	free(db->timezone);
	free(db);
}

static void user_free(struct user_def *u)
{
	if (!u)
		return;
	free(u->name);
	free(u);
}

static void peer_def_free(struct peer_def *pd)
{
	if (!pd)
		return;
	free(pd->host);
	free(pd);
}

void config_free(struct parley_config *cfg)
{
	struct db_def *db, *dtmp;
	struct user_def *u, *utmp;
	struct peer_def *pd, *ptmp;
	size_t i;

	if (!cfg)
		return;
	for (i = 0; i < ARRAY_SIZE(settings); i++) {
		if (settings[i].type != SET_STR || settings[i].offset == SETTING_NO_FIELD)
			continue;
		free(*(char **)((char *)cfg + settings[i].offset));
	}
	if (cfg->compat_values) {
		for (i = 0; i < ARRAY_SIZE(settings); i++)
			free(cfg->compat_values[i]);
		free(cfg->compat_values);
	}
	HASH_ITER(hh, cfg->databases, db, dtmp) {
		HASH_DEL(cfg->databases, db);
		db_free(db);
	}
	HASH_ITER(hh, cfg->users, u, utmp) {
		HASH_DEL(cfg->users, u);
		user_free(u);
	}
	HASH_ITER(hh, cfg->peers, pd, ptmp) {
		HASH_DEL(cfg->peers, pd);
		peer_def_free(pd);
	}
	for (i = 0; i < (size_t)cfg->ncache_tables; i++)
		free(cfg->cache_tables[i].key);
	free(cfg->cache_tables);
	for (i = 0; i < (size_t)cfg->ncache_shapes; i++)
		free(cfg->cache_shapes[i].key);
	free(cfg->cache_shapes);
	free(cfg->config_file);
	free(cfg->warnings);
	memset(cfg, 0, sizeof(*cfg));
}

/* Writes "FILE:LINE: message" to the error buffer; returns -1. */
static int PRINTF_LIKE(4, 5) fail(struct parse_ctx *ctx, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ctx->err && ctx->errlen)
		snprintf(ctx->err, ctx->errlen, "%s:%d: %s", file, line, msg);
	return -1;
}

/* Appends one "FILE:LINE: message\n" line to cfg->warnings. */
static void PRINTF_LIKE(4, 5) warn(struct parley_config *cfg, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	size_t old, add;
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	old = cfg->warnings ? strlen(cfg->warnings) : 0;
	n = snprintf(NULL, 0, "%s:%d: %s\n", file, line, msg);
	if (n < 0)
		return;
	add = (size_t)n;
	cfg->warnings = xrealloc(cfg->warnings, old + add + 1);
	snprintf(cfg->warnings + old, add + 1, "%s:%d: %s\n", file, line, msg);
}

/* Splits the next libpq-style key=value pair off *pp, in place. A value may be single-quoted, with '' or a
 * backslash escaping the next character. Returns 1 with *key and *val set, 0 at the end, or -1 with msg. */
static int next_pair(char **pp, char **key, char **val, char *msg, size_t msglen)
{
	char *p = skip_ws(*pp), *k, *kend, *dst;

	if (!*p)
		return 0;
	k = p;
	while (*p && *p != '=' && !isspace((unsigned char)*p))
		p++;
	kend = p;
	p = skip_ws(p);
	if (*p != '=' || kend == k) {
		snprintf(msg, msglen, "syntax error: expected key=value at \"%.40s\"", k);
		return -1;
	}
	*kend = '\0';
	p = skip_ws(p + 1);
	if (*p == '\'') {
		dst = *val = ++p;
		for (;;) {
			if (!*p) {
				snprintf(msg, msglen, "unterminated quoted value for %s", k);
				return -1;
			}
			if (*p == '\\' && p[1]) {
				*dst++ = p[1];
				p += 2;
			} else if (*p == '\'' && p[1] == '\'') {
				*dst++ = '\'';
				p += 2;
			} else if (*p == '\'') {
				p++;
				break;
			} else {
				*dst++ = *p++;
			}
		}
		if (*p && !isspace((unsigned char)*p)) {
			snprintf(msg, msglen, "unexpected text after the quoted value of %s", k);
			return -1;
		}
		*dst = '\0';
	} else {
		*val = p;
		while (*p && !isspace((unsigned char)*p))
			p++;
		if (p == *val) {
			snprintf(msg, msglen, "missing value for %s", k);
			return -1;
		}
		if (*p)
			*p++ = '\0';
	}
	*key = k;
	*pp = p;
	return 1;
}

static void set_str(char **dst, const char *val)
{
	free(*dst);
	*dst = xstrdup(val);
}

/* Applies one key=value of a [databases] entry. Returns 0, 1 for an accepted key without effect, -1 with msg. */
static int db_set(struct db_def *db, const char *key, const char *val, char *msg, size_t msglen)
{
	static const char *const no_effect[] = { "load_balance_hosts", "max_db_client_connections" };
	size_t i;

	if (strcasecmp(key, "host") == 0)
		set_str(&db->host, val);
	else if (strcasecmp(key, "port") == 0)
		return parse_int_range("port", val, 1, 65535, &db->port, msg, msglen);
	else if (strcasecmp(key, "dbname") == 0)
		set_str(&db->dbname, val);
	else if (strcasecmp(key, "user") == 0)
		set_str(&db->user, val);
	else if (strcasecmp(key, "password") == 0)
		set_str(&db->password, val);
	else if (strcasecmp(key, "auth_user") == 0)
		set_str(&db->auth_user, val);
	else if (strcasecmp(key, "auth_dbname") == 0)
		set_str(&db->auth_dbname, val);
	else if (strcasecmp(key, "auth_query") == 0)
		set_str(&db->auth_query, val);
	else if (strcasecmp(key, "pool_size") == 0)
		return parse_int_range("pool_size", val, 0, IMAX, &db->pool_size, msg, msglen);
	else if (strcasecmp(key, "min_pool_size") == 0)
		return parse_int_range("min_pool_size", val, 0, IMAX, &db->min_pool_size, msg, msglen);
	else if (strcasecmp(key, "reserve_pool") == 0 || strcasecmp(key, "reserve_pool_size") == 0)
		return parse_int_range(key, val, 0, IMAX, &db->reserve_pool, msg, msglen);
	else if (strcasecmp(key, "max_db_connections") == 0)
		return parse_int_range("max_db_connections", val, 0, IMAX, &db->max_db_connections, msg, msglen);
	else if (strcasecmp(key, "pool_mode") == 0) {
		if (parse_pool_mode(val, &db->pool_mode) < 0) {
			snprintf(msg, msglen, "invalid value \"%s\" for pool_mode: expected session, transaction or statement", val);
			return -1;
		}
	} else if (strcasecmp(key, "connect_query") == 0)
		set_str(&db->connect_query, val);
	else if (strcasecmp(key, "application_name") == 0)
		set_str(&db->application_name, val);
	else if (strcasecmp(key, "client_encoding") == 0)
		set_str(&db->client_encoding, val);
	else if (strcasecmp(key, "datestyle") == 0)
		set_str(&db->datestyle, val);
	else if (strcasecmp(key, "timezone") == 0)
		set_str(&db->timezone, val);
	else {
		for (i = 0; i < ARRAY_SIZE(no_effect); i++)
			if (strcasecmp(key, no_effect[i]) == 0)
				return 1;
		snprintf(msg, msglen, "unknown parameter \"%s\"", key);
		return -1;
	}
	return 0;
}

/* Applies one key=value of a [users] entry; same returns as db_set. */
static int user_set(struct user_def *u, const char *key, const char *val, char *msg, size_t msglen)
{
	static const char *const no_effect[] = { "reserve_pool_size", "max_user_client_connections" };
	size_t i;

	if (strcasecmp(key, "pool_mode") == 0) {
		if (parse_pool_mode(val, &u->pool_mode) < 0) {
			snprintf(msg, msglen, "invalid value \"%s\" for pool_mode: expected session, transaction or statement", val);
			return -1;
		}
		return 0;
	}
	if (strcasecmp(key, "pool_size") == 0)
		return parse_int_range("pool_size", val, 0, IMAX, &u->pool_size, msg, msglen);
	if (strcasecmp(key, "max_user_connections") == 0)
		return parse_int_range("max_user_connections", val, 0, IMAX, &u->max_user_connections, msg, msglen);
	for (i = 0; i < ARRAY_SIZE(no_effect); i++)
		if (strcasecmp(key, no_effect[i]) == 0)
			return 1;
	snprintf(msg, msglen, "unknown parameter \"%s\"", key);
	return -1;
}

/* Parses one [databases] (is_db) or [users] line: name = key=value ... A later entry replaces an earlier one. */
static int parse_entry(struct parse_ctx *ctx, const char *file, int line, bool is_db, const char *name, const char *spec)
{
	const char *what = is_db ? "database" : "user";
	struct db_def *db = NULL, *old_db;
	struct user_def *u = NULL, *old_u;
	char msg[512], *copy, *p, *key, *val;
	int r, rc = -1;

	if (!*name)
		return fail(ctx, file, line, "%s name is empty", what);
	if (is_db && strcmp(name, "pgbouncer") == 0)
		return fail(ctx, file, line, "database name \"pgbouncer\" is reserved for the admin console");
	if (is_db) {
		db = xcalloc(1, sizeof(*db));
		db->name = xstrdup(name);
		db->port = 5432;
		db->pool_size = db->min_pool_size = db->reserve_pool = db->max_db_connections = -1;
		db->pool_mode = POOL_MODE_UNSET;
	} else {
		u = xcalloc(1, sizeof(*u));
		u->name = xstrdup(name);
		u->pool_mode = POOL_MODE_UNSET;
		u->pool_size = u->max_user_connections = -1;
	}
	p = copy = xstrdup(spec);
	while ((r = next_pair(&p, &key, &val, msg, sizeof(msg))) != 0) {
		if (r < 0) {
			fail(ctx, file, line, "%s \"%s\": %s", what, name, msg);
			goto out;
		}
		r = is_db ? db_set(db, key, val, msg, sizeof(msg)) : user_set(u, key, val, msg, sizeof(msg));
		if (r < 0) {
			fail(ctx, file, line, "%s \"%s\": %s", what, name, msg);
			goto out;
		}
		if (r > 0)
			warn(ctx->cfg, file, line, "%s \"%s\": parameter \"%s\" is accepted for compatibility but has no effect in parley",
			     what, name, key);
	}
	if (is_db) {
		HASH_FIND_STR(ctx->cfg->databases, db->name, old_db);
		if (old_db) {
			warn(ctx->cfg, file, line, "database \"%s\" is defined again; this definition replaces the earlier one", name);
			HASH_DEL(ctx->cfg->databases, old_db);
			db_free(old_db);
		}
		HASH_ADD_KEYPTR(hh, ctx->cfg->databases, db->name, strlen(db->name), db);
		db = NULL;
	} else {
		HASH_FIND_STR(ctx->cfg->users, u->name, old_u);
		if (old_u) {
			warn(ctx->cfg, file, line, "user \"%s\" is defined again; this definition replaces the earlier one", name);
			HASH_DEL(ctx->cfg->users, old_u);
			user_free(old_u);
		}
		HASH_ADD_KEYPTR(hh, ctx->cfg->users, u->name, strlen(u->name), u);
		u = NULL;
	}
	rc = 0;
out:
	free(copy);
	db_free(db);
	user_free(u);
	return rc;
}

/* Parses one [peers] line: ID = host=... [port=...] [pool_size=...], ID in 1..16383 as for peer_id. A later line with
 * the same id replaces the earlier one. */
static int parse_peer(struct parse_ctx *ctx, const char *file, int line, const char *name, const char *spec)
{
	struct peer_def *pd, *old;
	char msg[512], *copy, *p, *key, *val, *end;
	long id;
	int r, rc = -1;

	errno = 0;
	id = strtol(name, &end, 10);
	if (!*name || *end || errno || id < 1 || id > 16383)
		return fail(ctx, file, line, "[peers]: \"%s\" is not a peer id (an integer between 1 and 16383, as peer_id)", name);
	pd = xcalloc(1, sizeof(*pd));
	pd->id = (int)id;
	pd->port = 6432;
	pd->pool_size = -1;
	p = copy = xstrdup(spec);
	while ((r = next_pair(&p, &key, &val, msg, sizeof(msg))) != 0) {
		if (r < 0) {
			fail(ctx, file, line, "peer %d: %s", pd->id, msg);
			goto out;
		}
		if (strcasecmp(key, "host") == 0) {
			if (val[0] == '@') {
				fail(ctx, file, line, "peer %d: abstract unix sockets (host=@...) are not supported; use a directory or an address",
				     pd->id);
				goto out;
			}
			set_str(&pd->host, val);
		} else if (strcasecmp(key, "port") == 0) {
			r = parse_int_range("port", val, 1, 65535, &pd->port, msg, sizeof(msg));
		} else if (strcasecmp(key, "pool_size") == 0) {
			r = parse_int_range("pool_size", val, 1, IMAX, &pd->pool_size, msg, sizeof(msg));
		} else {
			snprintf(msg, sizeof(msg), "unknown parameter \"%s\" (expected host, port or pool_size)", key);
			r = -1;
		}
		if (r < 0) {
			fail(ctx, file, line, "peer %d: %s", pd->id, msg);
			goto out;
		}
	}
	if (!pd->host || !*pd->host) {
		fail(ctx, file, line, "peer %d: host is required (an address, a host name or a unix socket directory)", pd->id);
		goto out;
	}
	HASH_FIND_INT(ctx->cfg->peers, &pd->id, old);
	if (old) {
		warn(ctx->cfg, file, line, "peer %d is defined again; this definition replaces the earlier one", pd->id);
		HASH_DEL(ctx->cfg->peers, old);
		peer_def_free(old);
	}
	HASH_ADD_INT(ctx->cfg->peers, id, pd);
	pd = NULL;
	rc = 0;
out:
	free(copy);
	peer_def_free(pd);
	return rc;
}

static int parse_file(struct parse_ctx *ctx, const char *path, int depth);

/* Handles "%include FILE" (FILE relative to the including file's directory). */
static int do_include(struct parse_ctx *ctx, const char *file, int line, const char *arg, int depth)
{
	char *joined, *real;
	const char *slash;
	size_t dirlen;
	int rc;

	if (!*arg)
		return fail(ctx, file, line, "%%include needs a file name");
	if (depth + 1 > INCLUDE_DEPTH_MAX)
		return fail(ctx, file, line, "%%include nested more than %d levels deep (is a file including itself?)", INCLUDE_DEPTH_MAX);
	if (arg[0] == '/') {
		joined = xstrdup(arg);
	} else {
		slash = strrchr(file, '/');
		dirlen = slash ? (size_t)(slash - file) : 0;
		joined = xmalloc(dirlen + strlen(arg) + 3);
		if (slash)
			snprintf(joined, dirlen + strlen(arg) + 3, "%.*s/%s", (int)dirlen, file, arg);
		else
			snprintf(joined, dirlen + strlen(arg) + 3, "./%s", arg);
	}
	real = realpath(joined, NULL);
	if (!real) {
		rc = fail(ctx, file, line, "cannot open included file \"%s\": %s", joined, strerror(errno));
		free(joined);
		return rc;
	}
	free(joined);
	rc = parse_file(ctx, real, depth + 1);
	if (rc == -2)
		rc = fail(ctx, file, line, "cannot read included file \"%s\": %s", real, strerror(errno));
	free(real);
	return rc;
}

/* Handles a "[name]" line (p points after '['). */
static int do_section(struct parse_ctx *ctx, const char *file, int line, char *p)
{
	char *end = strchr(p, ']');
	char *name, *tail;

	if (!end)
		return fail(ctx, file, line, "syntax error: missing \"]\" in section header");
	tail = skip_ws(end + 1);
	if (*tail && *tail != ';' && *tail != '#')
		return fail(ctx, file, line, "syntax error: unexpected text after section header");
	*end = '\0';
	name = skip_ws(p);
	rtrim(name);
	ctx->nsections++;
	if (strcasecmp(name, "parley") == 0 || strcasecmp(name, "pgbouncer") == 0) {
		ctx->sect = SEC_MAIN;
	} else if (strcasecmp(name, "databases") == 0) {
		ctx->sect = SEC_DATABASES;
	} else if (strcasecmp(name, "users") == 0) {
		ctx->sect = SEC_USERS;
	} else if (strcasecmp(name, "cache") == 0) {
		ctx->sect = SEC_CACHE;
	} else if (strcasecmp(name, "cache_shapes") == 0) {
		ctx->sect = SEC_CACHE_SHAPES;
	} else if (strcasecmp(name, "peers") == 0) {
		ctx->sect = SEC_PEERS;
	} else {
		return fail(ctx, file, line,
			    "unknown section [%s] (expected [parley], [pgbouncer], [databases], [users], [peers], [cache] or [cache_shapes])",
			    name);
	}
	snprintf(ctx->sect_name, sizeof(ctx->sect_name), "%s", name);
	return 0;
}

/* Whether text is a shape id: 16 hex digits, optionally after 0x. */
static bool is_shape_id(const char *text)
{
	if (text[0] == '0' && (text[1] == 'x' || text[1] == 'X'))
		text += 2;
	return strlen(text) == 16 && strspn(text, "0123456789abcdefABCDEF") == 16;
}

/* Parses one [cache] line (table = TTL) or [cache_shapes] line (shape id or "normalized text" = TTL). The TTL is a
 * duration in whole seconds (300, 5min); 0 means listed but never cached. */
static int parse_cache_rule(struct parse_ctx *ctx, const char *file, int line, bool shapes, const char *key, bool quoted,
			    const char *val)
{
	struct cache_rule **rules = shapes ? &ctx->cfg->cache_shapes : &ctx->cfg->cache_tables;
	int *n = shapes ? &ctx->cfg->ncache_shapes : &ctx->cfg->ncache_tables;
	char what[160], msg[1024], *name;
	usec_t ttl;
	size_t i;
	int j;

	if (!*key)
		return fail(ctx, file, line, "[%s]: empty %s", ctx->sect_name, shapes ? "shape" : "table name");
	if (shapes && !quoted && !is_shape_id(key))
		return fail(ctx, file, line,
			    "[%s]: \"%s\" is not a shape id (16 hex digits, optionally 0x); write a normalized query text in double quotes",
			    ctx->sect_name, key);
	if (!shapes && strchr(key, '.'))
		return fail(ctx, file, line, "[%s]: write the table name \"%s\" without a schema (tables are matched by name)",
			    ctx->sect_name, key);
	if (!shapes && strlen(key) > 63)
		return fail(ctx, file, line, "[%s]: table name \"%.40s...\" is longer than 63 bytes", ctx->sect_name, key);
	snprintf(what, sizeof(what), "the TTL of %s %s%.100s%s", shapes ? "shape" : "table", shapes && quoted ? "\"" : "",
		 key, shapes && quoted ? "\"" : "");
	if (parse_duration(what, val, TIME_MAX_SEC, &ttl, msg, sizeof(msg)) < 0)
		return fail(ctx, file, line, "[%s]: %s", ctx->sect_name, msg);
	if (ttl % USEC_PER_SEC != 0)
		return fail(ctx, file, line, "[%s]: invalid value \"%s\" for %s: must be a whole number of seconds", ctx->sect_name,
			    val, what);
	name = xstrdup(key);
	if (!shapes)
		for (i = 0; name[i]; i++)
			name[i] = (char)tolower((unsigned char)name[i]);
	for (j = 0; j < *n; j++) {
		if (strcmp((*rules)[j].key, name) == 0) {
			warn(ctx->cfg, file, line, "[%s]: \"%s\" is listed again; this line replaces the earlier one", ctx->sect_name, key);
			free(name);
			(*rules)[j].ttl_sec = (int)(ttl / USEC_PER_SEC);
			return 0;
		}
	}
	*rules = xrealloc(*rules, (size_t)(*n + 1) * sizeof(**rules));
	(*rules)[*n].key = name;
	(*rules)[*n].ttl_sec = (int)(ttl / USEC_PER_SEC);
	(*n)++;
	return 0;
}

/* Handles a "key = value" line. A key may be double-quoted ("" escapes a quote) so database names can hold any character. */
static int do_key_value(struct parse_ctx *ctx, const char *file, int line, char *p)
{
	const struct setting *s;
	char *key, *kend, *val, *dst, msg[1024];
	bool quoted = *p == '"';

	if (quoted) {
		key = dst = ++p;
		for (;;) {
			if (!*p)
				return fail(ctx, file, line, "syntax error: unterminated quoted name");
			if (*p == '"' && p[1] == '"') {
				*dst++ = '"';
				p += 2;
			} else if (*p == '"') {
				p++;
				break;
			} else {
				*dst++ = *p++;
			}
		}
		kend = dst;
	} else {
		key = p;
		while (*p && *p != '=' && !isspace((unsigned char)*p))
			p++;
		kend = p;
	}
	p = skip_ws(p);
	if (*p != '=' || (kend == key && !quoted))
		return fail(ctx, file, line, "syntax error: expected \"name = value\"");
	*kend = '\0';
	val = skip_ws(p + 1);   /* the line is already right-trimmed */

	switch (ctx->sect) {
	case SEC_NONE:
		return fail(ctx, file, line, "\"%s\" appears before any [section] header", key);
	case SEC_DATABASES:
		return parse_entry(ctx, file, line, true, key, val);
	case SEC_USERS:
		return parse_entry(ctx, file, line, false, key, val);
	case SEC_PEERS:
		return parse_peer(ctx, file, line, key, val);
	case SEC_CACHE:
	case SEC_CACHE_SHAPES:
		return parse_cache_rule(ctx, file, line, ctx->sect == SEC_CACHE_SHAPES, key, quoted, val);
	case SEC_MAIN:
		break;
	}
	s = config_find_setting(key);
	if (!s)
		return fail(ctx, file, line, "unknown setting \"%s\" in [%s]", key, ctx->sect_name);
	if (apply_value(ctx->cfg, s, val, msg, sizeof(msg)) < 0)
		return fail(ctx, file, line, "%s", msg);
	if (!s->implemented)
		warn(ctx->cfg, file, line, "setting \"%s\" is accepted for compatibility but has no effect in parley", s->name);
	return 0;
}

/* Parses one file (path is absolute). Returns 0, -1 with ctx->err set, or -2 with errno if it cannot be read. */
static int parse_file(struct parse_ctx *ctx, const char *path, int depth)
{
	char *buf = read_whole_file(path, 0, NULL), *p, *next, *directive;
	int line = 0, rc = 0;
	size_t n;

	if (!buf)
		return -2;
	p = buf;
	if ((unsigned char)p[0] == 0xEF && (unsigned char)p[1] == 0xBB && (unsigned char)p[2] == 0xBF)
		p += 3;         /* UTF-8 byte order mark */
	for (; p && rc == 0; p = next) {
		line++;
		next = strchr(p, '\n');
		if (next)
			*next++ = '\0';
		rtrim(p);       /* also drops the '\r' of CRLF files */
		p = skip_ws(p);
		if (!*p || *p == ';' || *p == '#')
			continue;
		if (*p == '[') {
			rc = do_section(ctx, path, line, p + 1);
		} else if (*p == '%') {
			directive = p;
			n = strcspn(p, " \t");
			if (n == strlen("%include") && strncasecmp(directive, "%include", n) == 0)
				rc = do_include(ctx, path, line, skip_ws(p + n), depth);
			else
				rc = fail(ctx, path, line, "unknown directive \"%.*s\" (only %%include is supported)", (int)n, directive);
		} else {
			rc = do_key_value(ctx, path, line, p);
		}
	}
	free(buf);
	return rc;
}

int config_load(const char *path, struct parley_config *cfg, char *err, size_t errlen)
{
	struct parley_config tmp;
	struct parse_ctx ctx;
	int rc;

	config_init_defaults(&tmp);
	tmp.config_file = realpath(path, NULL);
	if (!tmp.config_file) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		goto failed;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = &tmp;
	ctx.err = err;
	ctx.errlen = errlen;
	ctx.sect = SEC_NONE;
	rc = parse_file(&ctx, tmp.config_file, 0);
	if (rc == -2 && err && errlen)
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno));
	if (rc < 0)
		goto failed;
	if (ctx.nsections == 0) {
		/* an empty file (a truncated save, say) would otherwise mean "defaults and no database at all" */
		if (err && errlen)
			snprintf(err, errlen, "%s: no section at all (expected [parley] or [pgbouncer], and [databases])",
				 path);
		goto failed;
	}
	*cfg = tmp;
	return 0;
failed:
	config_free(&tmp);
	memset(cfg, 0, sizeof(*cfg));
	return -1;
}

int config_set(struct parley_config *cfg, const char *key, const char *value, char *err, size_t errlen)
{
	const struct setting *s = config_find_setting(key);
	char msg[1024], *text;
	int rc;

	if (!s) {
		snprintf(err, errlen, "unknown setting \"%s\"", key);
		return -1;
	}
	if (!s->implemented) {
		snprintf(err, errlen, "setting \"%s\" is accepted in the configuration file for compatibility but has no effect in parley",
			 s->name);
		return -1;
	}
	if (!s->reloadable) {
		snprintf(err, errlen, "setting \"%s\" cannot be changed without a restart", s->name);
		return -1;
	}
	text = xstrdup(value ? value : "");
	rtrim(text);
	rc = apply_value(cfg, s, skip_ws(text), msg, sizeof(msg));
	if (rc < 0)
		snprintf(err, errlen, "%s", msg);
	free(text);
	return rc;
}

const char *config_value_text(const struct parley_config *cfg, const struct setting *s, char *buf, size_t len)
{
	union value v;
	const char *text;
	char msg[256];
	size_t idx = (size_t)(s - settings);

	if (len)
		buf[0] = '\0';
	if (s->offset != SETTING_NO_FIELD) {
		read_field(cfg, s, &v);
		format_value(s, &v, buf, len);
		return buf;
	}
	text = (cfg->compat_values && idx < ARRAY_SIZE(settings)) ? cfg->compat_values[idx] : NULL;
	if (!text)
		text = s->default_value;
	if (!text)
		return buf;
	if (parse_value(s, text, &v, msg, sizeof(msg)) == 0) {
		format_value(s, &v, buf, len);
		if (s->type == SET_STR)
			free(v.str);
	}
	return buf;
}

struct db_def *config_find_db(const struct parley_config *cfg, const char *name)
{
	struct db_def *db = NULL;

	HASH_FIND_STR(cfg->databases, name, db);
	if (!db)
		HASH_FIND_STR(cfg->databases, "*", db);
	return db;
}

struct user_def *config_find_user(const struct parley_config *cfg, const char *name)
{
	struct user_def *u = NULL;

	HASH_FIND_STR(cfg->users, name, u);
	return u;
}

struct peer_def *config_find_peer(const struct parley_config *cfg, int id)
{
	struct peer_def *pd;
	HASH_FIND_INT(cfg->peers, &id, pd);
	return pd;
}

bool config_list_contains(const char *list, const char *name)
{
	size_t n, len;

	if (!list || !name || !*name)
		return false;
	len = strlen(name);
	while (*list) {
		list += strspn(list, ", \t");
		n = strcspn(list, ", \t");
		if (n == len && strncmp(list, name, n) == 0)
			return true;
		list += n;
	}
	return false;
}
