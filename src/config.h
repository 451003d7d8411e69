/* config.h — parley's settings: one declarative table drives INI parsing, defaults, SHOW CONFIG and admin SET. */
#ifndef PARLEY_CONFIG_H
#define PARLEY_CONFIG_H
#include "common.h"
#include <uthash.h>

enum pool_mode { POOL_MODE_UNSET = -1, POOL_SESSION = 0, POOL_TRANSACTION = 1, POOL_STATEMENT = 2 };
enum auth_type { AUTH_TRUST = 0, AUTH_ANY, AUTH_PLAIN, AUTH_MD5, AUTH_SCRAM, AUTH_HBA };

/* One entry of [databases]. Numeric fields are -1 when not given (inherit the global value). */
struct db_def {
	char *name;             /* key in [databases]; "*" is the fallback entry */
	char *host;             /* server host, or a unix socket directory if it starts with '/'; NULL = unix socket in /var/run/postgresql */
	int port;               /* server port, default 5432 */
	char *dbname;           /* database on the server; NULL = same as name (for "*": the client's database) */
	char *user;             /* forced server user; NULL = the client's user */
	char *password;         /* password for the forced user; NULL = look it up in auth_file */
	char *auth_user;        /* per-database auth_user: runs auth_query for logins to this database; NULL = global */
	char *auth_dbname;      /* per-database auth_dbname: [databases] entry auth_query runs in; NULL = global */
	char *auth_query;       /* per-database auth_query; NULL = global */
	int pool_size;          /* -1 = default_pool_size */
	int min_pool_size;      /* -1 = global min_pool_size */
	int reserve_pool;       /* -1 = global reserve_pool_size */
	int max_db_connections; /* -1 = global max_db_connections */
	enum pool_mode pool_mode; /* POOL_MODE_UNSET = user's or global */
	char *connect_query;    /* run once on each new server connection, or NULL */
	char *application_name; /* startup parameters to force on server connections, or NULL */
	char *client_encoding;
	char *datestyle;
	char *timezone;
	UT_hash_handle hh;      /* keyed by name; owned by parley_config.databases */
};

/* One entry of [users]. */
struct user_def {
	char *name;
	enum pool_mode pool_mode;  /* POOL_MODE_UNSET = inherit */
	int pool_size;             /* -1 = inherit */
	int max_user_connections;  /* -1 = global */
	UT_hash_handle hh;         /* keyed by name; owned by parley_config.users */
};

/* One entry of [peers] (peer.c): another parley (or PgBouncer) process of this group, where cancel requests whose
 * key carries its peer_id are forwarded. */
struct peer_def {
	int id;                 /* key in [peers]: 1..16383 */
	char *host;             /* IP address or host name, or a unix socket directory if it starts with '/' */
	int port;               /* default 6432 */
	int pool_size;          /* most cancel forwards in flight to this peer at once; -1 = default_pool_size */
	UT_hash_handle hh;      /* keyed by id; owned by parley_config.peers */
};

/* One line of [cache] (key: a lower-cased table name) or [cache_shapes] (key: a shape id as written, or a normalized
 * query text), in file order; a later line with the same key replaces the earlier one. */
struct cache_rule {
	char *key;                  /* owned */
	int ttl_sec;                /* 0 = listed but never cached */
};

/* The whole configuration. Time settings are stored in microseconds (written in seconds in the file). */
struct parley_config {
	char *config_file;          /* absolute path of the file this was loaded from */

	/* [parley] / [pgbouncer] */
	char *listen_addr;          /* "" = no TCP; "*" = all addresses; comma-separated list */
	int listen_port;            /* 6432 */
	int listen_backlog;         /* 128 */
	char *unix_socket_dir;      /* "/tmp"; "" disables the unix socket */
	int unix_socket_mode;       /* 0777 */
	enum pool_mode pool_mode;   /* session */
	int default_pool_size;      /* 20 */
	int min_pool_size;          /* 0 */
	int reserve_pool_size;      /* 0 */
	usec_t reserve_pool_timeout; /* 5 s */
	int max_client_conn;        /* 100 */
	int max_db_connections;     /* 0 = unlimited */
	int max_user_connections;   /* 0 = unlimited */
	usec_t server_connect_timeout; /* 15 s */
	usec_t server_login_retry;  /* 15 s */
	usec_t server_idle_timeout; /* 600 s */
	usec_t server_lifetime;     /* 3600 s */
	usec_t server_check_delay;  /* 30 s */
	char *server_check_query;   /* "select 1" */
	char *server_reset_query;   /* "DISCARD ALL" */
	bool server_reset_query_always; /* false */
	bool server_round_robin;    /* false */
	usec_t query_timeout;       /* 0 = disabled */
	usec_t query_wait_timeout;  /* 120 s */
	usec_t client_idle_timeout; /* 0 = disabled */
	usec_t client_login_timeout; /* 60 s */
	usec_t idle_transaction_timeout; /* 0 = disabled */
	usec_t autodb_idle_timeout; /* 3600 s */
	usec_t suspend_timeout;     /* 10 s */
	usec_t stats_period;        /* 60 s */
	enum auth_type auth_type;   /* md5 */
	char *auth_file;            /* NULL */
	char *auth_hba_file;        /* "" = none; pg_hba.conf subset for auth_type = hba (hba.c) */
	char *auth_user;            /* NULL = no auth_query lookups (authquery.c) */
	char *auth_query;           /* PgBouncer's default since 1.24.1 (CVE-2025-2291: honours VALID UNTIL) */
	char *auth_dbname;          /* NULL = the client's database */
	char *admin_users;          /* comma-separated */
	char *stats_users;          /* comma-separated */
	char *ignore_startup_parameters; /* comma-separated */
	char *track_extra_parameters; /* comma-separated; "IntervalStyle, search_path" (session.c) */
	char *transaction_unsafe;   /* "error", "warn" or "allow" (session.c) */
	bool application_name_add_host;
	bool disable_pqexec;
	char *logfile;              /* NULL = stderr */
	char *pidfile;              /* NULL */
	int verbose;                /* 0 */
	bool log_connections;       /* true */
	bool log_disconnections;    /* true */
	bool log_pooler_errors;     /* true */
	bool log_stats;             /* true */
	int max_packet_size;        /* 2147483647 */
	int max_prepared_statements; /* 200: statements kept prepared per server connection (0 = no limit) */
	int pkt_buf;                /* 4096 */
	int sbuf_loopcnt;           /* 5 */
	int tcp_keepalive;          /* bool-ish, 1 */
	int tcp_keepcnt, tcp_keepidle, tcp_keepintvl; /* 0 = OS default */
	int tcp_user_timeout;       /* 0 */
	int tcp_defer_accept;       /* 1 */
	int tcp_socket_buffer;      /* 0 */
	bool so_reuseport;          /* false */
	usec_t dns_max_ttl;         /* 15 s; accepted, unused */
	/* TLS (tls.c): client_tls_* for connections from clients, server_tls_* for connections to PostgreSQL */
	char *client_tls_sslmode;   /* "disable", "allow", "prefer", "require", "verify-ca" or "verify-full" */
	char *client_tls_key_file;  /* "" = none; PEM private key of client_tls_cert_file */
	char *client_tls_cert_file; /* "" = none; PEM certificate (chain) presented to clients */
	char *client_tls_ca_file;   /* "" = none; CA that signs client certificates (verify-ca / verify-full) */
	char *client_tls_protocols; /* "secure" (TLS 1.2 and 1.3) */
	char *client_tls_ciphers;   /* "default" = OpenSSL's list */
	char *server_tls_sslmode;   /* "prefer" by default (see tls.h for the meaning of each mode) */
	char *server_tls_key_file;  /* "" = none; client certificate key presented to PostgreSQL */
	char *server_tls_cert_file; /* "" = none */
	char *server_tls_ca_file;   /* "" = system CAs; CA that signs the servers' certificates (verify-ca / verify-full) */
	char *server_tls_protocols; /* "secure" */
	char *server_tls_ciphers;   /* "default" */
	/* parley's own */
	char *metrics_listen_addr;  /* "127.0.0.1" */
	int metrics_port;           /* 0 = disabled */
	usec_t slow_query_threshold; /* 1 s; 0 disables */
	double pool_utilization_warn; /* 0.8 */
	bool cache_enabled;         /* true; nothing is cacheable until [cache] lists tables */
	size_t cache_max_memory;    /* 256 MB: everything the cache stores counts */
	size_t cache_max_entry_size; /* 1 MB: larger results are never stored */
	usec_t cache_wait_timeout;  /* 1 s: a single-flight waiter then goes to the server itself */
	int cache_max_shapes;       /* 10000: classified shapes remembered (shape_init) */
	char *cache_invalidation_feed; /* "auto" (on when the triggers are installed), "on" (required) or "off" */
	usec_t cache_invalidation_timeout; /* 5 s: feed connect and heartbeat deadline */
	struct cache_rule *cache_tables; /* [cache]: table = TTL seconds; owned array */
	int ncache_tables;
	struct cache_rule *cache_shapes; /* [cache_shapes]: shape id or "normalized text" = TTL seconds; owned array */
	int ncache_shapes;

	struct db_def *databases;   /* uthash by name, owned */
	struct user_def *users;     /* uthash by name, owned */
	int peer_id;                /* 0 = no peering; 1..16383 = this process's id in [peers] (peer.c) */
	struct peer_def *peers;     /* [peers]: uthash by id, owned (may include this process's own id) */

	/* Set by config_load: "FILE:LINE: ..." lines, each ending in '\n', about settings that were accepted for
	 * pgbouncer.ini compatibility but have no effect (unimplemented keys, ignored sections, duplicate databases).
	 * NULL when there is nothing to say. The caller logs them as warnings. */
	char *warnings;
	/* Values of table rows without a struct field (offset == SETTING_NO_FIELD), as written, indexed like
	 * config_settings(); NULL (or a NULL entry) = the row's default. Only SHOW CONFIG reads them. */
	char **compat_values;
};

/* SET_BYTES: a size_t field, written as bytes with an optional unit B, kB, MB, GB or TB (powers of 1024). */
enum setting_type { SET_INT, SET_BOOL, SET_STR, SET_TIME, SET_DOUBLE, SET_POOL_MODE, SET_AUTH_TYPE, SET_MODE_OCTAL, SET_BYTES };

/* One row of the declarative settings table. */
struct setting {
	const char *name;           /* key as written in the INI file */
	enum setting_type type;
	size_t offset;              /* offsetof(struct parley_config, field), or SETTING_NO_FIELD */
	const char *default_value;  /* as text, parsed like a file value; NULL = unset string (an empty value then means unset too) */
	bool reloadable;            /* may change on RELOAD / SET without restart */
	bool implemented;           /* false: accepted for pgbouncer.ini compatibility, warned about, no effect */
	const char *help;           /* one line, used by etc/parley.ini and SHOW CONFIG docs */
	double min, max;            /* accepted range for SET_INT, SET_DOUBLE, SET_MODE_OCTAL, SET_TIME (in seconds) and SET_BYTES */
	const char *const *choices; /* SET_STR only: NULL-terminated list of accepted values (case-insensitive), or NULL */
};

/* offset of a row that has no field in struct parley_config (only accepted for compatibility). */
#define SETTING_NO_FIELD ((size_t)-1)

/* The settings table and its length. */
const struct setting *config_settings(size_t *count);
const struct setting *config_find_setting(const char *name);

/* Fills *cfg with defaults (no databases, no users). Allocates strings: release with config_free. */
void config_init_defaults(struct parley_config *cfg);

/* Parses the INI file at path into a fresh *cfg (defaults first, then the file; %include supported).
 * The previous contents of *cfg are overwritten, not freed. Returns 0 (check cfg->warnings), or -1 with
 * "FILE:LINE: message" in err. On failure *cfg holds nothing to free. */
int config_load(const char *path, struct parley_config *cfg, char *err, size_t errlen) MUST_CHECK;

/* Frees everything *cfg owns and zeroes it. */
void config_free(struct parley_config *cfg);

/* Applies key = value to *cfg (admin SET). Only reloadable, implemented settings may be set; on error *cfg
 * is unchanged. Returns 0, or -1 with a message in err. */
int config_set(struct parley_config *cfg, const char *key, const char *value, char *err, size_t errlen) MUST_CHECK;

/* Writes the current value of s as text (as SHOW CONFIG shows it: times in seconds, bools 1/0, unset strings "").
 * The text parses back to the same value. Returns buf. */
const char *config_value_text(const struct parley_config *cfg, const struct setting *s, char *buf, size_t len);

/* The [databases] entry for name, else the "*" entry, else NULL. */
struct db_def *config_find_db(const struct parley_config *cfg, const char *name);
struct user_def *config_find_user(const struct parley_config *cfg, const char *name);
/* The [peers] entry with this id, or NULL. */
struct peer_def *config_find_peer(const struct parley_config *cfg, int id);

/* true if name is in the comma/space separated list (e.g. admin_users). */
bool config_list_contains(const char *list, const char *name);

const char *pool_mode_name(enum pool_mode m);
const char *auth_type_name(enum auth_type t);

#endif
