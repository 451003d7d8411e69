/* client.c — the client connection state machine: accept, startup, authentication, and client→server forwarding. */
#include "parley.h"
#include "authquery.h"
#include "peer.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/uio.h>
#include <unistd.h>
#include <openssl/crypto.h>

#define X_NAME(e, s) s,
static const char *const client_state_names[] = { CLIENT_STATES(X_NAME) };
const char *const tracked_var_names[VAR_COUNT] = { TRACKED_VARS(X_NAME) };
#undef X_NAME

const char *client_state_name(enum client_state s)
{
	return (s >= 0 && s < CL_STATE_COUNT) ? client_state_names[s] : "unknown";
}

int tracked_var_lookup(const char *name)
{
	for (int i = 0; i < VAR_COUNT; i++)
		if (strcasecmp(name, tracked_var_names[i]) == 0)
			return i;
	return -1;
}

/* Largest authentication message accepted from a client (SASL messages are a few hundred bytes). */
#define AUTH_MSG_MAX 8192

/* ---- socket helpers shared with server.c ---- */

int sock_setup(struct sock *s, int fd, event_callback_fn on_read, event_callback_fn on_write, void *arg)
{
	int flags = fcntl(fd, F_GETFL, 0);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return -1;
	memset(s, 0, sizeof(*s));
	s->fd = fd;
	s->out = evbuffer_new();
	s->ev_read = event_new(g.base, fd, EV_READ | EV_PERSIST, on_read, arg);
	s->ev_write = event_new(g.base, fd, EV_WRITE | EV_PERSIST, on_write, arg);
	if (!s->out || !s->ev_read || !s->ev_write)
		return -1;
	return 0;
}

/* Closes the socket and releases its events and buffers; safe to call twice. */
void sock_close(struct sock *s)
{
	if (s->ev_read) {
		event_free(s->ev_read);
		s->ev_read = NULL;
	}
	if (s->ev_write) {
		event_free(s->ev_write);
		s->ev_write = NULL;
	}
	if (s->ssl) {
		tls_close(s->ssl);
		s->ssl = NULL;
	}
	if (s->fd >= 0) {
		close(s->fd);
		s->fd = -1;
	}
	ibuf_release(&s->in);
	if (s->out) {
		evbuffer_free(s->out);
		s->out = NULL;
	}
	s->reading = s->writing = false;
}

void sock_want_read(struct sock *s, bool on)
{
	if (!s->ev_read || s->reading == on)
		return;
	if (on)
		event_add(s->ev_read, NULL);
	else
		event_del(s->ev_read);
	s->reading = on;
}

/* Arms or disarms the write event to match what is left in s->out. */
static void sock_arm_write(struct sock *s, bool on)
{
	if (on && !s->writing) {
		event_add(s->ev_write, NULL);
		s->writing = true;
	} else if (!on && s->writing) {
		event_del(s->ev_write);
		s->writing = false;
	}
}

/* Runs the TLS handshake while it is not finished: 1 when it is, 0 while it waits for the socket (the right event is
 * armed), -1 when it failed (logged; errno = EPROTO). */
static int sock_tls_handshake(struct sock *s)
{
	char err[512] = "";
	if (SSL_is_init_finished(s->ssl))
		return 1;
	switch (tls_handshake(s->ssl, err, sizeof(err))) {
	case TLS_IO_OK:
		if (g.cfg.verbose > 0) {
			char desc[128];
			log_debug("fd %d: TLS handshake done (%s)", s->fd, tls_describe(s->ssl, desc, sizeof(desc)));
		}
		/* What was queued while the handshake ran (the server startup packet) can go now. */
		sock_arm_write(s, evbuffer_get_length(s->out) > 0);
		return 1;
	case TLS_IO_WANT_READ:
		sock_want_read(s, true);
		sock_arm_write(s, false);
		return 0;
	case TLS_IO_WANT_WRITE:
		sock_arm_write(s, true);
		return 0;
	case TLS_IO_EOF:
	case TLS_IO_ERROR:
		break;
	}
	log_info("fd %d: TLS handshake failed: %s", s->fd, *err ? err : "unknown error");
	errno = EPROTO;
	return -1;
}

/* sock_flush for a TLS socket: SSL_write from the front of s->out, up to one TLS record at a time. */
static int sock_flush_tls(struct sock *s)
{
	char err[512];
	bool blocked_on_read = false;
	int hs;

	if (s->tls_read_wants_write) {
		/* an SSL_read waited for this writability: let the read callback run it again */
		s->tls_read_wants_write = false;
		event_active(s->ev_read, EV_READ, 1);
	}
	hs = sock_tls_handshake(s);
	if (hs <= 0)
		return hs;
	while (evbuffer_get_length(s->out) > 0) {
		size_t len = evbuffer_get_length(s->out), done = 0;
		unsigned char *p;
		if (len > 16384)
			len = 16384;	/* one record */
		p = evbuffer_pullup(s->out, (ev_ssize_t)len);
		if (!p) {
			errno = ENOMEM;
			return -1;
		}
		switch (tls_write(s->ssl, p, len, &done, err, sizeof(err))) {
		case TLS_IO_OK:
			evbuffer_drain(s->out, done);
			s->bytes_out += (uint64_t)done;
			continue;
		case TLS_IO_WANT_WRITE:
			break;
		case TLS_IO_WANT_READ:
			s->tls_write_wants_read = true;
			blocked_on_read = true;
			sock_want_read(s, true);
			break;
		case TLS_IO_EOF:
		case TLS_IO_ERROR:
			if (*err)
				log_debug("fd %d: TLS write failed: %s", s->fd, err);
			errno = EPIPE;
			return -1;
		}
		break;
	}
	sock_arm_write(s, evbuffer_get_length(s->out) > 0 && !blocked_on_read);
	return 0;
}

/* One send of what s->out holds: send() for a single chunk, sendmsg() for several. Unlike evbuffer_write (writev), the
 * socket calls skip the file layer's checks, which the profile of a busy pool showed as measurable kernel time.
 * Returns bytes sent (drained from s->out) or -1 with errno set. */
static ssize_t sock_send(struct sock *s)
{
	struct evbuffer_iovec v[16];
	int nv = evbuffer_peek(s->out, -1, NULL, v, 16);
	ssize_t n;

	if (nv <= 0)
		return 0;
	if (nv == 1) {
		n = send(s->fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
	} else {
		struct msghdr mh;
		memset(&mh, 0, sizeof(mh));
		mh.msg_iov = (struct iovec *)v;	/* evbuffer_iovec has struct iovec's layout on POSIX systems */
		mh.msg_iovlen = (size_t)(nv < 16 ? nv : 16);
		n = sendmsg(s->fd, &mh, MSG_NOSIGNAL);
	}
	if (n > 0)
		evbuffer_drain(s->out, (size_t)n);
	return n;
}

int sock_flush(struct sock *s)
{
	if (s->ssl)
		return sock_flush_tls(s);
	while (evbuffer_get_length(s->out) > 0) {
		ssize_t n = sock_send(s);
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
				break;
			return -1;
		}
		if (n == 0)
			break;
		s->bytes_out += (uint64_t)n;
	}
	if (evbuffer_get_length(s->out) > 0) {
		if (!s->writing) {
			event_add(s->ev_write, NULL);
			s->writing = true;
		}
	} else if (s->writing) {
		event_del(s->ev_write);
		s->writing = false;
	}
	return 0;
}

/* Free space sock_read makes sure of before a read. A read gets all the free space of the input buffer (at least
 * IBUF_INITIAL); a read that fills it doubles the next one's minimum, so a large result streams in 64 KiB reads, and
 * a run of small reads brings it back down. */
#define SOCK_READ_MIN 1024
#define SOCK_READ_MAX (64 * 1024)

/* sock_read for a TLS socket: runs the handshake until it is done, then SSL_read into reserved space of s->in until
 * OpenSSL holds no decrypted byte (a record it has read whole is no longer visible to the socket's read event). */
static int sock_read_tls(struct sock *s)
{
	char err[512];
	size_t total = 0;
	enum tls_io r = TLS_IO_OK;
	int hs;

	if (s->tls_write_wants_read) {
		/* an SSL_write waited for this readability: let the write callback run it again */
		s->tls_write_wants_read = false;
		event_active(s->ev_write, EV_WRITE, 1);
	}
	hs = sock_tls_handshake(s);
	if (hs <= 0) {
		if (hs == 0)
			errno = EAGAIN;
		return -1;
	}
	do {
		size_t want = s->read_size ? s->read_size : SOCK_READ_MIN, done = 0, space;
		uint8_t *p = ibuf_space(&s->in, want, &space);
		r = tls_read(s->ssl, p, space, &done, err, sizeof(err));
		if (r != TLS_IO_OK)
			break;
		ibuf_commit(&s->in, done);
		total += done;
		if (done >= want && want < SOCK_READ_MAX)
			s->read_size = (uint32_t)(want * 2 + 64 < SOCK_READ_MAX ? want * 2 + 64 : SOCK_READ_MAX);
	} while (SSL_pending(s->ssl) > 0 && total < SOCK_READ_MAX * 4);
	if (r == TLS_IO_WANT_WRITE) {
		s->tls_read_wants_write = true;
		sock_arm_write(s, true);
	}
	if (total > 0) {
		if (SSL_pending(s->ssl) > 0)
			event_active(s->ev_read, EV_READ, 1);	/* more decrypted bytes wait: come back */
		return total > INT32_MAX ? INT32_MAX : (int)total;
	}
	switch (r) {
	case TLS_IO_EOF:
		return 0;
	case TLS_IO_ERROR:
		if (*err)
			log_debug("fd %d: TLS read failed: %s", s->fd, err);
		errno = EPROTO;
		return -1;
	default:
		errno = EAGAIN;
		return -1;
	}
}

/* Reads what the socket has into the free end of s->in with one recv(). */
int sock_read(struct sock *s)
{
	size_t want = s->read_size ? s->read_size : SOCK_READ_MIN, space;
	uint8_t *p;
	ssize_t n;

	if (s->ssl)
		return sock_read_tls(s);
	p = ibuf_space(&s->in, want, &space);
	n = recv(s->fd, p, space, 0);
	if (n <= 0)
		return (int)n;	/* errno is recv()'s */
	ibuf_commit(&s->in, (size_t)n);
	if ((size_t)n >= space && want < SOCK_READ_MAX)
		s->read_size = (uint32_t)(want * 2 < SOCK_READ_MAX ? want * 2 : SOCK_READ_MAX);
	else if ((size_t)n < want / 4 && want > SOCK_READ_MIN)
		s->read_size = (uint32_t)(want / 2 > SOCK_READ_MIN ? want / 2 : SOCK_READ_MIN);
	return (int)n;
}

void sock_pass(struct sock *s, struct ibuf *in, size_t n)
{
	const uint8_t *p;
	size_t done = 0;

	if (n == 0)
		return;
	p = ibuf_ptr(in);
	if (!s->ssl && s->fd >= 0 && evbuffer_get_length(s->out) == 0) {
		ssize_t r = send(s->fd, p, n, MSG_NOSIGNAL);
		if (r > 0) {
			done = (size_t)r;
			s->bytes_out += (uint64_t)r;
		}
		/* EAGAIN: the rest waits for the write event; another error: sock_flush meets it again and reports it */
	}
	if (done < n) {
		evbuffer_add(s->out, p + done, n - done);
		if (!s->ssl)
			sock_arm_write(s, true);	/* a TLS socket is flushed by its caller (the handshake may still run) */
	}
	ibuf_drain(in, n);
}

/* Best effort flush where the caller closes the connection anyway. */
int sock_flush_quiet(struct sock *s)
{
	if (s->fd < 0 || !s->out)
		return -1;
	return sock_flush(s);
}

/* Appends the builder's bytes to an output buffer and resets the builder. */
static void send_pkt(struct sock *s, struct pkt_builder *b)
{
	if (!b->failed && b->len)
		evbuffer_add(s->out, b->buf, b->len);
	pkt_reset(b);
}

/* ---- lifecycle ---- */

static void client_on_read(evutil_socket_t fd, short what, void *arg);
static void client_on_write(evutil_socket_t fd, short what, void *arg);
static void client_process(struct client *c);

void client_accept(int fd, const struct sockaddr *sa, socklen_t salen, bool is_unix)
{
	struct client *c;
	int one = 1;

	if (g.shutdown != SHUTDOWN_NONE) {
		close(fd);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	list_init(&c->node);
	c->s.fd = -1;
	if (sock_setup(&c->s, fd, client_on_read, client_on_write, c) < 0) {
		log_error("cannot set up client socket: %s", strerror(errno));
		sock_close(&c->s);
		free(c);
		close(fd);
		return;
	}
	if (is_unix) {
		strcpy(c->addr, "unix");
	} else {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (g.cfg.tcp_keepalive)
			setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *in4 = (const struct sockaddr_in *)sa;
			inet_ntop(AF_INET, &in4->sin_addr, c->addr, sizeof(c->addr));
			c->port = ntohs(in4->sin_port);
		} else if (sa->sa_family == AF_INET6) {
			const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
			inet_ntop(AF_INET6, &in6->sin6_addr, c->addr, sizeof(c->addr));
			c->port = ntohs(in6->sin6_port);
		}
	}
	(void)salen;
	c->state = CL_LOGIN;
	c->connect_time = c->last_active = c->request_time = now_usec();
	c->connect_wall = wall_usec();
	list_add_tail(&c->node, &g.login_clients);
	g.client_count++;
	g.total_clients_ever++;
	sock_want_read(&c->s, true);
	if (g.client_count > g.cfg.max_client_conn) {
		/* As PostgreSQL's superuser_reserved_connections: a few connections beyond the limit are read, so that a
		 * CancelRequest still reaches a runaway query and an operator still gets into the admin console of a
		 * pooler that is full; any other login among them is refused once its StartupMessage names the database
		 * (also as PostgreSQL, which answers SSLRequest first and says "too many clients" after the startup
		 * packet). Beyond the reserve, the connection is refused at once. */
		if (g.client_count > g.cfg.max_client_conn + CLIENT_RESERVED_CONN) {
			client_disconnect(c, SQLSTATE_TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)");
			return;
		}
		c->over_limit = true;
	}
	log_debug("C-%p: new connection from %s:%d", (void *)c, c->addr, c->port);
}

void client_send_error(struct client *c, const char *sqlstate, const char *message)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_error(&b, "ERROR", sqlstate, message);
	send_pkt(&c->s, &b);
	pkt_free(&b);
}

/* Detaches the linked server: reuse it when it is clean, close it otherwise. */
static void client_unlink_server(struct client *c)
{
	struct server *sv = c->server;
	if (!sv)
		return;
	c->server = NULL;
	sv->client = NULL;
	if (sv->internal || relay_server_busy(sv) || sv->tx_status != 'I' || sv->s.pkt_remain > 0 ||
	    c->s.pkt_remain > 0 || ibuf_len(&sv->s.in) > 0)
		server_disconnect(sv, "client disconnected while server was busy");
	else
		pool_release_server(sv);
}

void client_disconnect(struct client *c, const char *sqlstate, const char *reason)
{
	if (c->state == CL_JUSTFREE)
		return;
	if (sqlstate) {
		struct pkt_builder b;
		pkt_init(&b);
		if (c->v2_errors)
			pkt_error_v2(&b, "FATAL", reason);
		else
			pkt_error(&b, "FATAL", sqlstate, reason);
		send_pkt(&c->s, &b);
		pkt_free(&b);
		(void)sock_flush_quiet(&c->s);
		if (c->state == CL_LOGIN || !g.cfg.log_pooler_errors)
			log_info("C-%p: %s/%s@%s:%d closing because: %s", (void *)c, c->dbname, c->user, c->addr, c->port, reason);
		else
			log_warning("C-%p: %s/%s@%s:%d pooler error: %s", (void *)c, c->dbname, c->user, c->addr, c->port, reason);
	} else if (g.cfg.log_disconnections) {
		log_info("C-%p: %s/%s@%s:%d closing because: %s (age=%llds)", (void *)c, c->dbname, c->user, c->addr, c->port,
			 reason, (long long)((now_usec() - c->connect_time) / USEC_PER_SEC));
	}
	authquery_cancel(c);
	client_unlink_server(c);
	relay_client_free(c);
	session_client_free(c);
	if (c->cancel_hash_key)
		HASH_DELETE(hh_cancel, g.clients_by_key, c);
	c->cancel_hash_key = 0;
	pool_client_change_state(c, CL_JUSTFREE);
	sock_close(&c->s);
	scram_state_clear(&c->scram);
	if (c->secret) {
		OPENSSL_cleanse(c->secret, strlen(c->secret));
		free(c->secret);
		c->secret = NULL;
	}
	g.client_count--;
	parley_request_reap();
	parley_check_shutdown();
}

/* ---- I/O callbacks ---- */

static void client_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	int n = sock_read(&c->s);
	(void)fd;
	(void)what;
	if (n == 0) {
		client_disconnect(c, NULL, "client closed connection");
		return;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		client_disconnect(c, NULL, "client socket read failed");
		return;
	}
	c->s.bytes_in += (uint64_t)n;
	if (c->pool)
		c->pool->stat_bytes_in += (uint64_t)n;
	c->last_active = now_cached();
	client_process(c);
}

static void client_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	(void)fd;
	(void)what;
	if (sock_flush(&c->s) < 0) {
		client_disconnect(c, NULL, "client socket write failed");
		return;
	}
	/* Output drained below the mark: let the server send more. */
	if (c->server && evbuffer_get_length(c->s.out) < OUTBUF_HIGH_WATER)
		server_resume_reading(c->server);
}

void client_resume_reading(struct client *c)
{
	if (c->state == CL_ACTIVE || c->state == CL_LOGIN)
		sock_want_read(&c->s, true);
	if (c->state == CL_ACTIVE && ibuf_len(&c->s.in) > 0)
		client_process(c);
}

/* ---- login ---- */

/* Sends AuthenticationOk, the pool's ParameterStatus set (with the client's own values), BackendKeyData, ReadyForQuery. */
static void send_welcome(struct client *c)
{
	struct pool *p = c->pool;
	struct pkt_builder b;
	bool sent[VAR_COUNT] = { false };

	pkt_init(&b);
	pkt_auth(&b, AUTH_REQ_OK, NULL, 0);
	for (int i = 0; i < p->welcome_count; i++) {
		int v = tracked_var_lookup(p->welcome_names[i]);
		const char *val = p->welcome_values[i];
		if (v >= 0) {
			if (c->vars.set[v])
				val = c->vars.value[v];
			else if (p->forced_vars.set[v])
				val = p->forced_vars.value[v];
			varcache_set(&c->vars, v, val);
			sent[v] = true;
		}
		pkt_param_status(&b, p->welcome_names[i], val);
	}
	for (int v = 0; v < VAR_COUNT; v++)
		if (c->vars.set[v] && !sent[v] && tracked_var_reported(v))
			pkt_param_status(&b, tracked_var_names[v], c->vars.value[v]);
	pkt_backend_key(&b, c->cancel_pid, c->cancel_key);
	pkt_ready(&b, 'I');
	send_pkt(&c->s, &b);
	pkt_free(&b);
}

void client_finish_login(struct client *c)
{
	if (c->state != CL_WAITING_LOGIN)
		return;
	send_welcome(c);
	pool_client_change_state(c, CL_ACTIVE);
	if (sock_flush(&c->s) < 0) {
		client_disconnect(c, NULL, "client socket write failed");
		return;
	}
	if (g.cfg.log_connections)
		log_info("C-%p: %s/%s@%s:%d login ok", (void *)c, c->dbname, c->user, c->addr, c->port);
	sock_want_read(&c->s, true);
	if (ibuf_len(&c->s.in) > 0)
		client_process(c);
}

/* Authentication succeeded: attach the client to its pool and send the welcome when the pool knows it. */
static void client_auth_ok(struct client *c)
{
	const struct db_def *db;
	const struct user_def *ud;
	struct pool *p;

	if (c->secret) {
		OPENSSL_cleanse(c->secret, strlen(c->secret));
		free(c->secret);
		c->secret = NULL;
	}
	scram_state_clear(&c->scram);
	c->auth_step = AUTHS_NONE;
	if (admin_is_console_db(c->dbname)) {
		if (!config_list_contains(g.cfg.admin_users, c->user) && !config_list_contains(g.cfg.stats_users, c->user)) {
			client_disconnect(c, SQLSTATE_INSUFFICIENT_PRIVILEGE, "not allowed to connect to the admin console");
			return;
		}
		c->pool = NULL;
		list_del(&c->node);
		list_add_tail(&c->node, &g.login_clients);
		c->state = CL_ACTIVE;
		{
			struct pkt_builder b;
			pkt_init(&b);
			pkt_auth(&b, AUTH_REQ_OK, NULL, 0);
			pkt_param_status(&b, "server_version", PACKAGE_VERSION " parley");
			pkt_param_status(&b, "client_encoding", "UTF8");
			pkt_param_status(&b, "server_encoding", "UTF8");
			pkt_param_status(&b, "DateStyle", "ISO, MDY");
			pkt_param_status(&b, "integer_datetimes", "on");
			pkt_param_status(&b, "standard_conforming_strings", "on");
			pkt_backend_key(&b, c->cancel_pid, c->cancel_key);
			pkt_ready(&b, 'I');
			send_pkt(&c->s, &b);
			pkt_free(&b);
		}
		(void)sock_flush_quiet(&c->s);
		return;
	}
	db = config_find_db(&g.cfg, c->dbname);
	if (!db) {
		client_disconnect(c, SQLSTATE_INVALID_CATALOG, "no such database");
		return;
	}
	ud = config_find_user(&g.cfg, c->user);
	p = pool_get(c->dbname, c->user, db, ud);
	c->pool = p;
	c->state = CL_LOGIN;
	if (p->welcome_ready) {
		pool_client_change_state(c, CL_WAITING_LOGIN);
		client_finish_login(c);
	} else {
		pool_client_change_state(c, CL_WAITING_LOGIN);
		pool_launch_if_needed(p);
	}
}

/* The hba rules in force. Startup and RELOAD load auth_hba_file (main.c); when the console's SET named another file
 * (or SET auth_type = hba before any file was loaded), that file is loaded here at the next hba login. A file that
 * fails keeps the rules in force (none: every login is refused) and is not tried again until the setting changes. */
static const struct hba *hba_rules(void)
{
	static char *failed_path;    /* the auth_hba_file that last failed to load here */
	const char *want = g.cfg.auth_hba_file;
	struct hba *fresh;
	char err[600];

	if (!want || !*want || (g.hba && strcmp(g.hba->path, want) == 0) ||
	    (failed_path && strcmp(failed_path, want) == 0))
		return g.hba;
	free(failed_path);
	failed_path = NULL;
	if (hba_load(want, &fresh, err, sizeof(err)) < 0) {
		log_error("%s; the hba rules in force stay", err);
		failed_path = xstrdup(want);
		return g.hba;
	}
	log_info("auth_hba_file %s loaded (%zu rules)", want, fresh->count);
	hba_free(g.hba);
	g.hba = fresh;
	return g.hba;
}

/* auth_type = hba: the first auth_hba_file rule matching c decides. Returns true with *at set to the auth type whose
 * path client_start_auth then runs (trust, password, md5, scram-sha-256); returns false when the login was settled
 * here: refused (no rule, reject, or a failed cert / peer check; c is closed) or accepted by cert / peer. */
static bool client_hba_decide(struct client *c, enum auth_type *at)
{
	struct hba_client hc = { .local = strcmp(c->addr, "unix") == 0, .tls = c->s.ssl != NULL, .addr = c->addr,
				 .database = c->dbname, .user = c->user, .replication = false };
	const struct hba_rule *r = hba_match(hba_rules(), &hc);
	char msg[2 * NAME_MAX_LEN + ADDR_MAX_LEN + 128], why[300];
	bool ok = false;

	if (!r || r->method == HBA_REJECT) {
		/* PostgreSQL's wording, so clients and tools recognise it */
		snprintf(msg, sizeof(msg), "%s for host \"%s\", user \"%s\", database \"%s\", %s",
			 r ? "pg_hba.conf rejects connection" : "no pg_hba.conf entry", hc.local ? "[local]" : c->addr,
			 c->user, c->dbname, hc.tls ? "SSL encryption" : "no encryption");
		if (r)
			log_info("C-%p: %s (%s:%d)", (void *)c, msg, g.hba->path, r->line);
		else
			log_info("C-%p: %s", (void *)c, msg);
		client_disconnect(c, SQLSTATE_INVALID_AUTH_SPEC, msg);
		return false;
	}
	switch (r->method) {
	case HBA_TRUST:
		*at = AUTH_TRUST;
		return true;
	case HBA_PASSWORD:
		*at = AUTH_PLAIN;
		return true;
	case HBA_MD5:
		*at = AUTH_MD5;
		return true;
	case HBA_SCRAM:
		*at = AUTH_SCRAM;
		return true;
	case HBA_CERT:
		ok = hba_cert_check(c->s.ssl, c->user, why, sizeof(why));
		break;
	case HBA_PEER:
		ok = hba_peer_check(c->s.fd, c->user, why, sizeof(why));
		break;
	case HBA_REJECT:
		break;
	}
	if (!ok) {
		log_info("C-%p: %s@%s:%d %s authentication failed (%s:%d): %s", (void *)c, c->user, c->addr, c->port,
			 hba_method_name(r->method), g.hba->path, r->line, why);
		snprintf(msg, sizeof(msg), "%s authentication failed for user \"%s\"",
			 r->method == HBA_CERT ? "certificate" : "peer", c->user);
		client_disconnect(c, SQLSTATE_INVALID_AUTH_SPEC, msg);
		return false;
	}
	client_auth_ok(c);
	return false;
}

/* Sends a random-salt challenge or SASL offer for the configured auth_type. */
static void client_start_auth(struct client *c)
{
	struct auth_user *au = auth_user_find(g.auth_users, c->user);
	struct pkt_builder b;
	enum auth_type at = g.cfg.auth_type;
	bool admin = admin_is_console_db(c->dbname);

	if (at == AUTH_HBA && !client_hba_decide(c, &at))
		return;	/* refused, or accepted by cert / peer */
	/* auth_query: a user missing from auth_file is looked up first; client_auth_lookup_done() comes back here. */
	if (at != AUTH_ANY && authquery_needed(c)) {
		authquery_start(c);
		return;
	}
	if (!au && c->auth_lookup_done)
		au = authquery_credential(c->dbname, c->user);
	if (at == AUTH_ANY || (at == AUTH_TRUST && (au || !g.cfg.auth_file || admin))) {
		client_auth_ok(c);
		return;
	}
	if (at == AUTH_TRUST) {
		client_disconnect(c, SQLSTATE_INVALID_PASSWORD, "no such user");
		return;
	}
	if (au) {
		c->secret = xstrdup(au->secret);
	} else {
		/* Unknown user: run the exchange against a random secret so the reply looks like a wrong password. */
		uint8_t rnd[16];
		char hex[33];
		if (random_bytes(rnd, sizeof(rnd)) < 0)
			memset(rnd, 0x5a, sizeof(rnd));
		for (int i = 0; i < 16; i++)
			snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
		c->secret = xstrdup(hex);
	}
	pkt_init(&b);
	if (at == AUTH_PLAIN) {
		pkt_auth(&b, AUTH_REQ_PASSWORD, NULL, 0);
		c->auth_step = AUTHS_PASSWORD;
	} else if (at == AUTH_MD5 && secret_kind(c->secret) != SECRET_SCRAM) {
		if (random_bytes(c->md5_salt, 4) < 0) {
			pkt_free(&b);
			client_disconnect(c, SQLSTATE_INTERNAL_ERROR, "cannot generate random salt");
			return;
		}
		pkt_auth(&b, AUTH_REQ_MD5, c->md5_salt, 4);
		c->auth_step = AUTHS_MD5;
	} else {
		pkt_auth_sasl(&b, "SCRAM-SHA-256");
		c->auth_step = AUTHS_SASL_INIT;
	}
	send_pkt(&c->s, &b);
	pkt_free(&b);
	if (sock_flush(&c->s) < 0)
		client_disconnect(c, NULL, "client socket write failed");
}

void client_auth_lookup_done(struct client *c)
{
	if (c->state == CL_LOGIN)
		client_start_auth(c);
}

static void auth_failed(struct client *c, const char *why)
{
	char msg[200];
	log_info("C-%p: %s@%s:%d password authentication failed: %s", (void *)c, c->user, c->addr, c->port, why);
	snprintf(msg, sizeof(msg), "password authentication failed for user \"%s\"", c->user);
	client_disconnect(c, SQLSTATE_INVALID_PASSWORD, msg);
}

/* A credential for server_user just became available (a learned SCRAM ClientKey): pools logging in as that user
 * need not wait out server_login_retry after a failure that was probably caused by its absence. */
static void pools_retry_login_now(const char *server_user)
{
	struct pool *p, *tmp;

	HASH_ITER(hh, g.pools, p, tmp) {
		if (p->last_login_fail && p->server_user && strcmp(p->server_user, server_user) == 0)
			p->last_login_fail = 0;
	}
}

/* Handles one PasswordMessage / SASLInitialResponse / SASLResponse. */
static void client_auth_message(struct client *c, const uint8_t *body, size_t len)
{
	struct pkt_reader r;
	char out[512], err[200];
	int n;
	struct pkt_builder b;

	reader_init(&r, body, len);
	switch (c->auth_step) {
	case AUTHS_PASSWORD: {
		const char *pw = reader_cstr(&r);
		bool ok = false;
		if (r.failed)
			break;
		switch (secret_kind(c->secret)) {
		case SECRET_PLAIN:
			ok = strlen(pw) == strlen(c->secret) && CRYPTO_memcmp(pw, c->secret, strlen(pw)) == 0;
			break;
		case SECRET_MD5: {
			char h[36];
			md5_password_hash(pw, c->user, h);
			ok = CRYPTO_memcmp(h, c->secret, 35) == 0;
			break;
		}
		case SECRET_SCRAM:
			ok = false;
			break;
		}
		if (ok)
			client_auth_ok(c);
		else
			auth_failed(c, "wrong password");
		return;
	}
	case AUTHS_MD5: {
		const char *resp = reader_cstr(&r);
		if (r.failed)
			break;
		if (md5_check_response(c->secret, c->user, c->md5_salt, resp))
			client_auth_ok(c);
		else
			auth_failed(c, "wrong password");
		return;
	}
	case AUTHS_SASL_INIT: {
		const char *mech = reader_cstr(&r);
		uint32_t dlen = reader_u32(&r);
		const uint8_t *data;
		char buf[AUTH_MSG_MAX + 1];
		if (r.failed || strcmp(mech, "SCRAM-SHA-256") != 0 || dlen == 0xFFFFFFFFu || dlen > AUTH_MSG_MAX) {
			client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid SASL initial response");
			return;
		}
		data = reader_bytes(&r, dlen);
		if (!data)
			break;
		memcpy(buf, data, dlen);
		buf[dlen] = '\0';
		n = scram_server_first(&c->scram, c->secret, buf, dlen, out, sizeof(out), err, sizeof(err));
		if (n < 0) {
			if (secret_kind(c->secret) == SECRET_MD5)
				auth_failed(c, err);
			else
				client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, err);
			return;
		}
		pkt_init(&b);
		pkt_auth(&b, AUTH_REQ_SASL_CONT, out, (size_t)n);
		send_pkt(&c->s, &b);
		pkt_free(&b);
		c->auth_step = AUTHS_SASL_CONT;
		if (sock_flush(&c->s) < 0)
			client_disconnect(c, NULL, "client socket write failed");
		return;
	}
	case AUTHS_SASL_CONT: {
		char buf[AUTH_MSG_MAX + 1];
		memcpy(buf, body, len);
		buf[len] = '\0';
		n = scram_server_final(&c->scram, buf, len, out, sizeof(out), err, sizeof(err));
		if (n < 0) {
			auth_failed(c, err);
			return;
		}
		/* A proof against a SCRAM secret revealed the ClientKey: keep it so parley can log into PostgreSQL. */
		if (c->scram.have_client_key && secret_kind(c->secret) == SECRET_SCRAM &&
		    (auth_user_remember_scram_key(g.auth_users, c->user, c->secret, c->scram.client_key) ||
		     authquery_remember_scram_key(c->dbname, c->user, c->secret, c->scram.client_key)))
			pools_retry_login_now(c->user);
		pkt_init(&b);
		pkt_auth(&b, AUTH_REQ_SASL_FIN, out, (size_t)n);
		send_pkt(&c->s, &b);
		pkt_free(&b);
		client_auth_ok(c);
		return;
	}
	case AUTHS_NONE:
		break;
	}
	client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "invalid authentication message");
}

/* Assigns a random cancel key unique among connected clients. With peer_id set, the key carries it (peer.c) so a peer
 * that receives the cancel request can forward it here. */
static void client_assign_cancel_key(struct client *c)
{
	struct client *other;
	uint32_t kv[2];
	do {
		if (random_bytes(kv, sizeof(kv)) < 0) {
			kv[0] = (uint32_t)rand();
			kv[1] = (uint32_t)rand();
		}
		peer_key_stamp(&kv[0], &kv[1], g.cfg.peer_id);
		kv[0] &= 0x7fffffff;
		if (kv[0] == 0)
			kv[0] = 1;
		c->cancel_hash_key = ((uint64_t)kv[0] << 32) | kv[1];
		HASH_FIND(hh_cancel, g.clients_by_key, &c->cancel_hash_key, sizeof(uint64_t), other);
	} while (other);
	c->cancel_pid = kv[0];
	c->cancel_key = kv[1];
	HASH_ADD(hh_cancel, g.clients_by_key, cancel_hash_key, sizeof(uint64_t), c);
}

/* A CancelRequest: cancels the query of the client holding the key; a key no client here holds goes to
 * peer_forward_cancel (forwarded to the peer named in the key, or dropped). A request a peer forwarded has its TTL
 * bits decremented, so a key carrying our own peer_id is looked up again with them restored. */
void client_handle_cancel(uint32_t pid, uint32_t key)
{
	struct client *c;
	uint64_t k = ((uint64_t)pid << 32) | key;
	HASH_FIND(hh_cancel, g.clients_by_key, &k, sizeof(uint64_t), c);
	if (!c && g.cfg.peer_id > 0 && peer_key_id(pid) == g.cfg.peer_id && peer_key_normalize(key) != key) {
		k = ((uint64_t)pid << 32) | peer_key_normalize(key);
		HASH_FIND(hh_cancel, g.clients_by_key, &k, sizeof(uint64_t), c);
	}
	if (!c) {
		peer_forward_cancel(pid, key);
		return;
	}
	if (!c->server || c->server->expect_rfq <= 0) {
		log_debug("cancel request for an unknown or idle client ignored");
		return;
	}
	server_send_cancel(c->server);
}

/* As PostgreSQL 15: a client asking for protocol 3.1 or later, or sending protocol options (_pq_.name, none of which
 * parley knows), is told with NegotiateProtocolVersion that the newest version is 3.0 and which options were not
 * recognized; the client then carries on with 3.0 or hangs up. */
static void client_negotiate_version(struct client *c, const struct startup_packet *sp)
{
	struct pkt_builder b;
	uint32_t n = 0;

	for (int i = 0; i < sp->nparams; i++)
		if (strncmp(sp->names[i], "_pq_.", 5) == 0)
			n++;
	if (sp->minor == 0 && n == 0)
		return;
	pkt_init(&b);
	pkt_begin(&b, BE_NEGOTIATE_VERSION);
	pkt_u32(&b, PROTO_V3); /* the newest version supported, 3.0, as PostgreSQL writes it (major << 16 | minor) */
	pkt_u32(&b, n);
	for (int i = 0; i < sp->nparams; i++)
		if (strncmp(sp->names[i], "_pq_.", 5) == 0)
			pkt_cstr(&b, sp->names[i]);
	pkt_end(&b);
	send_pkt(&c->s, &b);
	pkt_free(&b);
}

/* Processes the StartupMessage: parameters, database lookup, then the authentication challenge. */
static void client_startup(struct client *c, const struct startup_packet *sp)
{
	const char *user = sp->user, *db = sp->database;
	char msg[300];

	client_negotiate_version(c, sp);

	if (!user || !*user) {
		client_disconnect(c, SQLSTATE_INVALID_AUTH_SPEC, "no user name specified in startup packet");
		return;
	}
	if (!db || !*db)
		db = user;
	if (strlen(user) >= NAME_MAX_LEN || strlen(db) >= NAME_MAX_LEN) {
		client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "user or database name too long");
		return;
	}
	strcpy(c->user, user);
	strcpy(c->dbname, db);
	if (c->over_limit && !admin_is_console_db(db)) {
		client_disconnect(c, SQLSTATE_TOO_MANY_CONNECTIONS, "no more connections allowed (max_client_conn)");
		return;
	}
	for (int i = 0; i < sp->nparams; i++) {
		const char *n = sp->names[i], *v = sp->values[i];
		int var;
		if (strcmp(n, "user") == 0 || strcmp(n, "database") == 0 || strncmp(n, "_pq_.", 5) == 0)
			continue;
		var = tracked_var_lookup(n);
		if (var >= 0) {
			if (strlen(v) >= VAR_VALUE_MAX) {
				snprintf(msg, sizeof(msg), "startup parameter %s is too long", n);
				client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, msg);
				return;
			}
			varcache_set(&c->vars, var, v);
			continue;
		}
		if (session_startup_param(c, n, v)) /* in track_extra_parameters (search_path from pgjdbc's currentSchema) */
			continue;
		if (config_list_contains(g.cfg.ignore_startup_parameters, n))
			continue;
		if (strcmp(n, "replication") == 0) {
			client_disconnect(c, SQLSTATE_FEATURE_NOT_SUPPORTED, "replication connections are not supported");
			return;
		}
		snprintf(msg, sizeof(msg), "unsupported startup parameter: %s", n);
		client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, msg);
		return;
	}
	if (g.cfg.application_name_add_host) {
		/* As PgBouncer: "NAME - HOST:PORT" ("[HOST]:PORT" for IPv6), NAME "app" when the client gave none */
		char buf[VAR_VALUE_MAX + ADDR_MAX_LEN + 16];
		bool v6 = strchr(c->addr, ':') != NULL;
		snprintf(buf, sizeof(buf), "%s - %s%s%s:%d", c->vars.set[VAR_APPNAME] ? c->vars.value[VAR_APPNAME] : "app",
			 v6 ? "[" : "", c->addr, v6 ? "]" : "", c->port);
		varcache_set(&c->vars, VAR_APPNAME, buf);
	}
	if (!admin_is_console_db(db) && !config_find_db(&g.cfg, db)) {
		snprintf(msg, sizeof(msg), "no such database: %s", db);
		client_disconnect(c, SQLSTATE_INVALID_CATALOG, msg);
		return;
	}
	c->startup_done = true;
	client_assign_cancel_key(c);
	client_start_auth(c);
}

/* Answers an SSLRequest with 'S' and starts the TLS handshake (sock_read drives it from the next read event) when
 * client TLS is on and c came over TCP; frees pkt and returns true then, also when c was closed. Returns false
 * (pkt untouched) when the request is to be refused with 'N'. */
static bool client_start_tls(struct client *c, uint8_t *pkt)
{
	if (tls_client_mode() == TLS_DISABLE || strcmp(c->addr, "unix") == 0)
		return false;
	free(pkt);
	/* Bytes sent after the SSLRequest but before the handshake were not protected by TLS, yet would be read as if
	 * they had been (CVE-2021-23222 / CVE-2021-23214): refuse them. */
	if (ibuf_len(&c->s.in) > 0) {
		client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "received unencrypted data after SSL request");
		return true;
	}
	evbuffer_add(c->s.out, "S", 1);
	if (sock_flush(&c->s) < 0 || evbuffer_get_length(c->s.out) > 0) {
		client_disconnect(c, NULL, "could not answer the SSL request");
		return true;
	}
	c->s.ssl = tls_accept_new(c->s.fd);
	if (!c->s.ssl) {
		client_disconnect(c, NULL, "cannot start TLS");
		return true;
	}
	return true;
}

/* Reads startup-phase packets and authentication messages. */
static void client_login_step(struct client *c)
{
	uint8_t hdr[8];
	const char *why;

	while (c->state == CL_LOGIN && ibuf_len(&c->s.in) > 0) {
		size_t avail = ibuf_len(&c->s.in);
		if (!c->startup_done) {
			uint32_t len;
			struct startup_packet sp;
			char err[200];
			uint8_t *pkt;
			enum proto_rc rc;

			memcpy(hdr, ibuf_ptr(&c->s.in), avail < 8 ? avail : 8);
			rc = proto_read_startup_len(hdr, avail < 8 ? avail : 8, &len, &why);
			if (rc == PROTO_BAD) {
				client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, why);
				return;
			}
			if (rc == PROTO_INCOMPLETE || avail < len)
				return;
			/* Take the packet out of the input buffer before acting on it: client_startup() may finish the
			 * login at once (trust, or a pool whose welcome is known), and then whatever is still in the
			 * buffer is forwarded to a server; or it may close the client, which frees the buffer. */
			pkt = xmalloc(len);
			ibuf_remove(&c->s.in, pkt, len);
			if (proto_parse_startup(pkt, len, &sp, err, sizeof(err)) != PROTO_OK) {
				free(pkt);
				c->v2_errors = sp.bad_version && sp.code >> 16 < 3;
				client_disconnect(c, sp.bad_version ? SQLSTATE_FEATURE_NOT_SUPPORTED :
								      SQLSTATE_PROTOCOL_VIOLATION, err);
				return;
			}
			if ((sp.code == PROTO_SSL_REQUEST && c->ssl_answered) ||
			    (sp.code == PROTO_GSSENC_REQUEST && c->gss_answered)) {
				/* PostgreSQL answers each request once, then reads the next packet as a StartupMessage: a
				 * client repeating it would otherwise loop here for as long as it likes */
				snprintf(err, sizeof(err), PROTO_UNSUPPORTED_VERSION_FMT,
					 sp.code >> 16, sp.code & 0xFFFFu);
				free(pkt);
				client_disconnect(c, SQLSTATE_FEATURE_NOT_SUPPORTED, err);
				return;
			}
			if (sp.code == PROTO_SSL_REQUEST)
				c->ssl_answered = true;
			else if (sp.code == PROTO_GSSENC_REQUEST)
				c->gss_answered = true;
			if (sp.code == PROTO_SSL_REQUEST && client_start_tls(c, pkt))
				return;
			if (sp.code == PROTO_SSL_REQUEST || sp.code == PROTO_GSSENC_REQUEST) {
				free(pkt);
				evbuffer_add(c->s.out, "N", 1);
				if (sock_flush(&c->s) < 0) {
					client_disconnect(c, NULL, "client socket write failed");
					return;
				}
				continue;
			}
			if (sp.code == PROTO_CANCEL_REQUEST) {
				free(pkt);
				client_handle_cancel(sp.cancel_pid, sp.cancel_key);
				client_disconnect(c, NULL, "cancel request handled");
				return;
			}
			/* As PgBouncer: TLS is required on TCP only (a unix socket is never offered TLS). */
			if (!c->s.ssl && tls_client_mode() >= TLS_REQUIRE && strcmp(c->addr, "unix") != 0) {
				free(pkt);
				client_disconnect(c, SQLSTATE_INVALID_AUTH_SPEC, "SSL required");
				return;
			}
			client_startup(c, &sp);	/* sp points into pkt */
			free(pkt);
			continue;
		} else {
			struct pkt_header h;
			uint8_t *msg;
			enum proto_rc rc;
			memcpy(hdr, ibuf_ptr(&c->s.in), avail < 5 ? avail : 5);
			rc = proto_read_header(hdr, avail < 5 ? avail : 5, AUTH_MSG_MAX, &h, &why);
			if (rc == PROTO_BAD) {
				client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, why);
				return;
			}
			if (rc == PROTO_INCOMPLETE || avail < (size_t)h.len + 1)
				return;
			if (h.type != FE_PASSWORD) {
				if (h.type == FE_TERMINATE)
					client_disconnect(c, NULL, "client gave up during authentication");
				else
					client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "expected a password message");
				return;
			}
			msg = ibuf_ptr(&c->s.in);
			{
				uint8_t body[AUTH_MSG_MAX];
				size_t blen = h.len - 4;
				memcpy(body, msg + 5, blen);
				ibuf_drain(&c->s.in, h.len + 1);
				client_auth_message(c, body, blen);
				OPENSSL_cleanse(body, blen);
			}
		}
	}
}

/* ---- forwarding ---- */

/* Builds SET statements for tracked parameters where the server's value differs from the client's. */
static bool client_vars_sql(const struct client *c, const struct server *sv, char *sql, size_t len)
{
	size_t used = 0;
	sql[0] = '\0';
	for (int v = 0; v < VAR_COUNT; v++) {
		const char *cv = c->vars.value[v];
		if (!c->vars.set[v] || (sv->vars.set[v] && strcmp(cv, sv->vars.value[v]) == 0))
			continue;
		used += (size_t)snprintf(sql + used, used < len ? len - used : 0, "SET %s='", tracked_var_names[v]);
		for (const char *p = cv; *p && used + 4 < len; p++) {
			if (*p == '\'')
				sql[used++] = '\'';
			sql[used++] = *p;
		}
		if (used + 4 < len) {
			memcpy(sql + used, "';", 3);
			used += 2;
		}
	}
	return used > 0 && used < len;
}

/* Whether some parameter the client has differs from the server's (the usual answer, no, without building SQL). */
static bool client_vars_differ(const struct client *c, const struct server *sv)
{
	/* the usual case, both caches the same bytes (varcache_set zeroes past each value): one compare */
	if (memcmp(&c->vars, &sv->vars, sizeof(c->vars)) == 0)
		return false;
	for (int v = 0; v < VAR_COUNT; v++)
		if (c->vars.set[v] && (!sv->vars.set[v] || strcmp(c->vars.value[v], sv->vars.value[v]) != 0))
			return true;
	return false;
}

/* After a server is linked: starts a SET for parameters that differ; true if the client must wait for it. */
bool client_sync_vars(struct client *c)
{
	char sql[VAR_COUNT * (VAR_VALUE_MAX * 2 + 40)];
	struct server *sv = c->server;
	char *extra;
	bool vars;

	sv->query_start = now_cached();
	vars = client_vars_differ(c, sv) && client_vars_sql(c, sv, sql, sizeof(sql));
	extra = session_sync_sql(c, sv); /* track_extra_parameters the client SET (session.c) */
	if (!vars && !extra)
		return false;
	if (extra && vars) {
		size_t a = strlen(sql), b = strlen(extra);
		char *both = xmalloc(a + b + 1);
		memcpy(both, sql, a);
		memcpy(both + a, extra, b + 1);
		free(extra);
		extra = both;
	}
	server_internal_query(sv, extra ? extra : sql);
	free(extra);
	/* PostgreSQL does not report every tracked setting: remember what was set (a failure closes the server) */
	for (int v = 0; v < VAR_COUNT; v++)
		if (c->vars.set[v] && !tracked_var_reported(v)) {
			memcpy(sv->vars.value[v], c->vars.value[v], VAR_VALUE_MAX);
			sv->vars.set[v] = true;
		}
	return true;
}

void client_server_linked(struct client *c)
{
	if (client_sync_vars(c))
		return;
	if (c->state == CL_ACTIVE)
		sock_want_read(&c->s, true);
	client_process(c);
}

/* Admin console: only simple Query messages. */
static void client_admin(struct client *c)
{
	uint8_t hdr[5];
	const char *why;
	for (;;) {
		size_t avail = ibuf_len(&c->s.in);
		struct pkt_header h;
		enum proto_rc rc;
		char *sql;
		if (avail < 5)
			return;
		memcpy(hdr, ibuf_ptr(&c->s.in), 5);
		rc = proto_read_header(hdr, 5, 1024 * 1024, &h, &why);
		if (rc == PROTO_BAD) {
			client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, why);
			return;
		}
		if (avail < (size_t)h.len + 1)
			return;
		if (h.type == FE_TERMINATE) {
			client_disconnect(c, NULL, "client sent Terminate");
			return;
		}
		if (h.type != FE_QUERY) {
			ibuf_drain(&c->s.in, h.len + 1);
			if (h.type == FE_SYNC || h.type == FE_FLUSH)
				continue;
			client_disconnect(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
					  "the admin console supports only the simple query protocol");
			return;
		}
		sql = xmalloc(h.len - 3);
		ibuf_drain(&c->s.in, 5);
		ibuf_remove(&c->s.in, sql, h.len - 4);
		sql[h.len - 4] = '\0';
		admin_handle_query(c, sql);
		free(sql);
		if (c->state == CL_JUSTFREE)
			return;
		if (sock_flush(&c->s) < 0) {
			client_disconnect(c, NULL, "client socket write failed");
			return;
		}
	}
}

static void client_process(struct client *c)
{
	switch (c->state) {
	case CL_LOGIN:
		client_login_step(c);
		break;
	case CL_ACTIVE:
		if (!c->pool)
			client_admin(c);
		else
			relay_client_input(c);
		break;
	case CL_WAITING:
	case CL_WAITING_LOGIN:
		/* Messages wait in the input buffer until a server is linked. */
		if (ibuf_len(&c->s.in) > (size_t)OUTBUF_HIGH_WATER)
			sock_want_read(&c->s, false);
		break;
	case CL_JUSTFREE:
	case CL_STATE_COUNT:
		break;
	}
}

/* The linked server's internal work is done, or it sent data: handled in server.c; this continues client input. */
void client_on_server_data(struct client *c)
{
	if (c->state == CL_ACTIVE && ibuf_len(&c->s.in) > 0)
		relay_client_input(c);
}
