/* parley.h — the runtime objects (clients, servers, pools) and the process-wide state that ties them together. */
#ifndef PARLEY_PARLEY_H
#define PARLEY_PARLEY_H
#include "common.h"
#include "config.h"
#include "auth.h"
#include "hba.h"
#include "ibuf.h"
#include "list.h"
#include "netaddr.h"
#include "log.h"
#include "proto.h"
#include "relay.h"
#include "session.h"
#include "tls.h"
#include <event2/event.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <uthash.h>

#define NAME_MAX_LEN 64          /* PostgreSQL's NAMEDATALEN */
#define VAR_VALUE_MAX 128        /* longest tracked parameter value kept */
#define ADDR_MAX_LEN 64
/* Stop reading from one side while the other side has this many bytes not yet written. */
#define OUTBUF_HIGH_WATER (256 * 1024)

/* Session parameters parley tracks per client and per server, restored with SET when a client gets a server. */
#define TRACKED_VARS(X) \
	X(VAR_CLIENT_ENCODING, "client_encoding") \
	X(VAR_DATESTYLE, "DateStyle") \
	X(VAR_TIMEZONE, "TimeZone") \
	X(VAR_STD_STRINGS, "standard_conforming_strings") \
	X(VAR_APPNAME, "application_name") \
	X(VAR_INTERVALSTYLE, "IntervalStyle") \
	X(VAR_EXTRA_FLOAT_DIGITS, "extra_float_digits")
#define X_ENUM(e, s) e,
enum tracked_var { TRACKED_VARS(X_ENUM) VAR_COUNT };
#undef X_ENUM
extern const char *const tracked_var_names[VAR_COUNT];
int tracked_var_lookup(const char *name);   /* index or -1; case-insensitive */
/* PostgreSQL reports it with ParameterStatus (extra_float_digits is tracked from startup packets only). */
#define tracked_var_reported(v) ((v) != VAR_EXTRA_FLOAT_DIGITS)

struct varcache {
	char value[VAR_COUNT][VAR_VALUE_MAX];   /* written with varcache_set: zero bytes after the string */
	bool set[VAR_COUNT];
};

/* Sets tracked parameter v to val (truncated to VAR_VALUE_MAX - 1 bytes) with the rest of its slot zeroed, so that
 * two caches holding the same values are equal byte for byte (client_vars_differ's one-memcmp fast path). */
static inline void varcache_set(struct varcache *vc, int v, const char *val)
{
	size_t n = strlen(val);
	if (n >= VAR_VALUE_MAX)
		n = VAR_VALUE_MAX - 1;
	memcpy(vc->value[v], val, n);
	memset(vc->value[v] + n, 0, VAR_VALUE_MAX - n);
	vc->set[v] = true;
}

/* Client states; names appear in logs and SHOW CLIENTS. */
#define CLIENT_STATES(X) \
	X(CL_LOGIN, "login") \
	X(CL_WAITING_LOGIN, "waiting_login") \
	X(CL_ACTIVE, "active") \
	X(CL_WAITING, "waiting") \
	X(CL_JUSTFREE, "justfree")
#define X_ENUM(e, s) e,
enum client_state { CLIENT_STATES(X_ENUM) CL_STATE_COUNT };
#undef X_ENUM

/* Server states. */
#define SERVER_STATES(X) \
	X(SV_LOGIN, "login") \
	X(SV_IDLE, "idle") \
	X(SV_ACTIVE, "active") \
	X(SV_USED, "used") \
	X(SV_TESTED, "tested") \
	X(SV_JUSTFREE, "justfree")
#define X_ENUM(e, s) e,
enum server_state { SERVER_STATES(X_ENUM) SV_STATE_COUNT };
#undef X_ENUM

const char *client_state_name(enum client_state s);
const char *server_state_name(enum server_state s);

/* Socket plumbing shared by both connection kinds. */
struct sock {
	int fd;
	struct event *ev_read;
	struct event *ev_write;
	struct ibuf in;              /* bytes read, not yet processed (parsed in place) */
	struct evbuffer *out;        /* bytes to write */
	bool reading;                /* ev_read is armed */
	bool writing;                /* ev_write is armed */
	uint32_t pkt_remain;         /* bytes of the message being passed through still to move */
	uint32_t read_size;          /* free space sock_read makes sure of before a read: grows while reads fill the buffer,
				      * shrinks when they don't */
	SSL *ssl;                    /* TLS session (owned; freed by sock_close), or NULL for plain TCP */
	bool tls_read_wants_write;   /* an SSL_read stopped until the socket is writable: the write event retries it */
	bool tls_write_wants_read;   /* an SSL_write stopped until the socket is readable: the read event retries it */
	uint64_t bytes_in, bytes_out;
};

enum client_auth_step { AUTHS_NONE, AUTHS_PASSWORD, AUTHS_MD5, AUTHS_SASL_INIT, AUTHS_SASL_CONT };

struct pool;
struct server;

/* Connections accepted beyond max_client_conn for the admin console and CancelRequests (client.c). */
#define CLIENT_RESERVED_CONN 3

struct client {
	struct list_head node;       /* in pool->clients_active / clients_waiting, or g.login_clients, or g.justfree */
	enum client_state state;
	struct sock s;
	struct pool *pool;
	struct server *server;       /* linked server, or NULL */
	char user[NAME_MAX_LEN];
	char dbname[NAME_MAX_LEN];
	char addr[ADDR_MAX_LEN];     /* peer address as text ("unix" for unix sockets) */
	int port;
	struct varcache vars;        /* the client's view of tracked parameters */
	uint32_t cancel_pid, cancel_key; /* what parley told this client in BackendKeyData */
	UT_hash_handle hh_cancel;    /* in g.clients_by_key, keyed by cancel_pid+cancel_key (8 bytes) */
	uint64_t cancel_hash_key;
	enum client_auth_step auth_step;
	uint8_t md5_salt[4];
	struct scram_state scram;
	char *secret;                /* the user's stored secret during login, heap */
	struct authquery_lookup *auth_lookup; /* auth_query lookup running for this login (authquery.c owns it), or NULL */
	bool auth_lookup_done;       /* auth_query ran for this login: its credential (or its absence) is final */
	bool startup_done;           /* StartupMessage received */
	bool ssl_answered;           /* an SSLRequest was answered (a second one is refused, as PostgreSQL does) */
	bool gss_answered;           /* a GSSENCRequest was answered 'N' */
	bool v2_errors;              /* asked for protocol 1.x or 2.x: the refusal goes out in 2.0's format, as PostgreSQL's */
	bool over_limit;             /* accepted beyond max_client_conn: only the admin console or a cancel may follow */
	bool in_tx;                  /* last ReadyForQuery said 'T' or 'E' */
	usec_t connect_time;         /* monotonic */
	usec_t connect_wall;         /* wall clock, for SHOW CLIENTS */
	usec_t request_time;         /* when the current wait or query began */
	usec_t last_active;          /* last byte from the client */
	uint64_t xact_count, query_count;
	bool send_errors_on_close;
	struct relay_client *rc;     /* message-level state of the data path (relay.c), created on first use */
	struct sess_vals *sess;      /* session parameters the client SET (track_extra_parameters; session.c), or NULL */
};

struct server {
	struct list_head node;       /* in one of pool's server lists by state, or g.justfree */
	enum server_state state;
	struct sock s;
	struct pool *pool;
	struct client *client;       /* linked client, or NULL */
	char addr[ADDR_MAX_LEN];
	uint32_t be_pid, be_key;     /* BackendKeyData from PostgreSQL */
	struct varcache vars;        /* values PostgreSQL reported for this session */
	struct scram_state scram;
	bool connected;              /* TCP connect finished */
	bool tls_requested;          /* SSLRequest sent: the next byte from the server is its one-byte answer */
	bool ready;                  /* login finished */
	bool internal;               /* running a query of parley's own: responses are swallowed */
	bool dirty;                  /* close instead of reusing (config changed, protocol confusion) */
	char internal_state[6];      /* SQLSTATE of the first error parley's own query on it got ("" = none) */
	char internal_error[200];    /* and its message, for the client the query was run for */
	char tx_status;              /* last ReadyForQuery status: 'I', 'T', 'E' */
	int expect_rfq;              /* ReadyForQuery messages still owed for what the client sent */
	usec_t connect_time;         /* monotonic */
	usec_t connect_wall;
	usec_t last_used;            /* when it last went idle */
	usec_t link_time;            /* when it was given to the current client */
	usec_t query_start;          /* when the current client request began */
	struct event *ev_timer;      /* connect timeout */
	struct relay_server *rs;     /* expected replies, open batches, prepared statements (relay.c) */
	struct sess_vals *sess;      /* what this session has of those parameters (session.c), or NULL = all default */
};

/* Buckets of the client wait-time histogram (stats.c defines the bounds; the last one is +Inf). */
#define POOL_WAIT_BUCKETS 12

/* A pool's cumulative counters at one moment (stats.c takes one every stats_period for SHOW STATS_AVERAGES). */
struct pool_stat_snapshot {
	usec_t at;                       /* monotonic time of the snapshot, 0 = never taken */
	uint64_t xact_count, query_count, assign_count, closed_count, bytes_in, bytes_out;
	usec_t xact_time, query_time, wait_time, server_lifetime;
};

/* A pool: server connections for one (database, user) pair and the clients that use them. */
struct pool {
	char key[NAME_MAX_LEN * 2 + 2];  /* "db\x01user" */
	UT_hash_handle hh;               /* in g.pools */
	char dbname[NAME_MAX_LEN];       /* name clients use */
	char user[NAME_MAX_LEN];         /* name clients log in as */
	/* server connection parameters, copied from config on creation and reload */
	char *host;                      /* NULL = default unix socket dir */
	int port;
	char *server_dbname;
	char *server_user;
	char *server_password;           /* NULL = from auth_file */
	char *connect_query;
	int pool_size, min_pool_size, reserve_pool, max_db_connections;
	enum pool_mode mode;
	struct varcache forced_vars;     /* from [databases]: client_encoding, datestyle, timezone, application_name */

	struct list_head clients_active;   /* logged-in clients (with or without server) */
	struct list_head clients_waiting;  /* FIFO of clients waiting for a server */
	struct list_head clients_login;    /* clients waiting for the first server to learn ParameterStatus */
	struct list_head servers_login;
	struct list_head servers_idle;
	struct list_head servers_active;
	struct list_head servers_used;
	struct list_head servers_tested;
	/* Lengths of the eight lists above, so hot paths need no list walk. Only pool_client_change_state and
	 * server_change_state (the functions that move entries between these lists) change them. */
	int n_clients_active, n_clients_waiting, n_clients_login;
	int n_servers_login, n_servers_idle, n_servers_active, n_servers_used, n_servers_tested;

	/* ParameterStatus values of the first server login, sent to clients as their welcome */
	char *welcome_names[32];
	char *welcome_values[32];
	int welcome_count;
	bool welcome_ready;

	usec_t last_login_fail;          /* monotonic time of the last failed server login, 0 if none */
	bool last_fail_unreachable;      /* that failure was the server not answering (08xxx), not a refused login */
	char last_login_error[256];
	bool paused;

	/* statistics */
	uint64_t stat_xact_count, stat_query_count, stat_bytes_in, stat_bytes_out;
	usec_t stat_xact_time, stat_query_time, stat_wait_time;
	usec_t max_wait_seen;

	/* statistics kept by stats.c (read by admin.c and metrics.c); the data path keeps the stat_* counters above */
	uint64_t stat_assign_count;      /* times a server was linked to a client (PgBouncer's server_assignment_count) */
	uint64_t stat_cached_count;      /* requests answered from the cache (also counted in stat_query_count) */
	uint64_t stat_slow_count;        /* requests that took at least slow_query_threshold */
	uint64_t stat_closed_count;      /* server connections closed (stats_server_closed) */
	usec_t stat_server_lifetime;     /* summed age of the closed server connections */
	uint64_t stat_wait_hist[POOL_WAIT_BUCKETS]; /* client waits per bucket of stats.c's wait bounds (not cumulative) */
	struct pool_stat_snapshot stat_prev, stat_cur; /* totals at the last two stats_period ticks, for the averages */
	usec_t stat_last_warn;           /* when the utilization watchdog last warned about this pool (monotonic) */
};

enum shutdown_mode { SHUTDOWN_NONE, SHUTDOWN_SAFE /* SIGINT */, SHUTDOWN_WAIT_CLIENTS /* SIGTERM */ };

#define MAX_LISTENERS 16

/* Process-wide state. */
struct parley_state {
	struct event_base *base;
	struct parley_config cfg;
	struct auth_user *auth_users;
	struct hba *hba;                    /* auth_hba_file rules (auth_type = hba); NULL = none loaded */
	struct pool *pools;                 /* uthash by key */
	struct client *clients_by_key;      /* uthash by cancel key */
	struct list_head login_clients;     /* clients still in startup/auth, not in a pool yet */
	struct list_head justfree_clients;  /* freed at the next safe point */
	struct list_head justfree_servers;
	struct event *ev_reaper;            /* fires right after the current callbacks to free justfree objects */
	struct event *ev_janitor;           /* periodic timeouts and pool maintenance */
	struct event *ev_listen[MAX_LISTENERS];
	int listen_fd[MAX_LISTENERS];
	int nlisten;
	enum shutdown_mode shutdown;
	int client_count;                   /* all clients, any state */
	int server_count;
	usec_t start_time;
	uint64_t total_clients_ever;
};

extern struct parley_state g;

/* sock.c-like helpers (in client.c) */
int sock_setup(struct sock *s, int fd, event_callback_fn on_read, event_callback_fn on_write, void *arg);
void sock_close(struct sock *s);
void sock_want_read(struct sock *s, bool on);
/* Tries to write s->out now; arms the write event for what remains. Returns 0, or -1 on a socket error. */
int sock_flush(struct sock *s) MUST_CHECK;
/* Reads what the socket has into s->in with one recv() (SSL_read for TLS): bytes read, 0 at end of file, or -1 with errno set
 * (EAGAIN/EWOULDBLOCK/EINTR when there is nothing to read now). */
int sock_read(struct sock *s) MUST_CHECK;
int sock_flush_quiet(struct sock *s);
/* Moves n bytes from the front of in to s's output. When nothing is queued before them they are sent at once,
 * straight from in (no copy); what the socket does not take, or any error, leaves the rest in s->out for
 * sock_flush to send or to report. */
void sock_pass(struct sock *s, struct ibuf *in, size_t n);

/* client.c */
void client_accept(int fd, const struct sockaddr *sa, socklen_t salen, bool is_unix);
void client_disconnect(struct client *c, const char *sqlstate, const char *reason);
/* A server was linked to c (pool.c calls this); continue with the client's pending messages. */
void client_server_linked(struct client *c);
/* authquery.c finished the auth_query lookup of c (c->auth_lookup_done): continue its authentication. */
void client_auth_lookup_done(struct client *c);
/* The pool learned its welcome ParameterStatus set: finish the login of c. */
void client_finish_login(struct client *c);
/* Sends an ErrorResponse (and keeps the connection). */
void client_send_error(struct client *c, const char *sqlstate, const char *message);
/* Server side data for the linked client has arrived: process it (server.c calls this). */
void client_on_server_data(struct client *c);
void client_resume_reading(struct client *c);
void client_handle_cancel(uint32_t pid, uint32_t key);
/* After a server is linked: starts a SET for tracked parameters that differ; true if the client must wait for it. */
bool client_sync_vars(struct client *c);

/* server.c */
struct server *server_launch(struct pool *p);
void server_disconnect(struct server *sv, const char *reason);
/* Moves the server to state st (the one function that changes a server's list). */
void server_change_state(struct server *sv, enum server_state st);
/* Sends parley's own query; responses are swallowed and the server returns to the pool when done. */
void server_internal_query(struct server *sv, const char *sql);
void server_on_client_data(struct server *sv);
void server_resume_reading(struct server *sv);
void server_send_cancel(struct server *sv);
/* Remembers a ParameterStatus (body without header) on the server and its linked client. */
void server_param_status(struct server *sv, const uint8_t *body, size_t len);

/* pool.c */
struct pool *pool_get(const char *dbname, const char *user, const struct db_def *db, const struct user_def *ud);
void pool_apply_config(struct pool *p, const struct db_def *db, const struct user_def *ud);
void pool_free_all(void);
int pool_server_total(const struct pool *p);
/* Client c needs a server: link an idle one now (returns true) or queue c (false). */
bool pool_request_server(struct client *c);
/* sv finished what it was doing (login, release, reset): give it to a waiting client or park it idle. */
void pool_server_ready(struct server *sv);
/* The linked client is done with sv (transaction finished or client gone). */
void pool_release_server(struct server *sv);
/* A server login failed: tell the clients that wait for one. */
void pool_login_failed(struct pool *p, const char *sqlstate, const char *message);
void pool_janitor(void);
/* Opens server connections while clients wait and the limits allow. */
void pool_launch_if_needed(struct pool *p);
void pool_client_change_state(struct client *c, enum client_state st);
void pool_reload(void);

/* admin.c */
bool admin_is_console_db(const char *dbname);
void admin_handle_query(struct client *c, const char *sql);
/* Periodic work of the console (main.c's janitor): answers PAUSE commands whose servers are all gone. */
void admin_janitor(void);

/* main.c */
void parley_request_reap(void);
void parley_check_shutdown(void);
void parley_stop_listening(void);
/* Reloads the configuration file (SIGHUP, admin RELOAD); a broken file keeps the running configuration. */
void parley_reload(void);
/* Starts a shutdown (signals, admin SHUTDOWN): SHUTDOWN_SAFE waits for running queries, SHUTDOWN_WAIT_CLIENTS for
 * clients to leave, SHUTDOWN_NONE here means exit at once. */
void parley_shutdown(enum shutdown_mode mode);
/* Applies settings changed in g.cfg by admin SET: logging, pool sizes. */
void parley_settings_changed(void);

#endif
