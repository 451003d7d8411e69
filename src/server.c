/* server.c — the server connection state machine: connect, log into PostgreSQL, pass results back to the client. */
#include "parley.h"
#include "authquery.h"
#include "stats.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/un.h>
#include <unistd.h>
#include <openssl/crypto.h>

#define X_NAME(e, s) s,
static const char *const server_state_names[] = { SERVER_STATES(X_NAME) };
#undef X_NAME

/* Largest message accepted from PostgreSQL during login. */
#define SERVER_LOGIN_MSG_MAX (64 * 1024)

const char *server_state_name(enum server_state s)
{
	return (s >= 0 && s < SV_STATE_COUNT) ? server_state_names[s] : "unknown";
}

static void server_on_read(evutil_socket_t fd, short what, void *arg);
static void server_on_write(evutil_socket_t fd, short what, void *arg);
static void server_on_timeout(evutil_socket_t fd, short what, void *arg);
static void server_login_error(struct server *sv, const char *sqlstate, const char *msg);
static void server_io_failed(struct server *sv, const char *what);

static void send_pkt(struct sock *s, struct pkt_builder *b)
{
	if (!b->failed && b->len)
		evbuffer_add(s->out, b->buf, b->len);
	pkt_reset(b);
}

struct server *server_launch(struct pool *p)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char err[300];
	struct server *sv;
	int fd, one = 1;
	struct timeval tv;

	if (pg_address(p->host, p->port, &ss, &sslen, err, sizeof(err)) < 0) {
		p->last_login_fail = now_usec();
		strlcpy_ok(p->last_login_error, err, sizeof(p->last_login_error));
		log_warning("%s/%s: %s", p->dbname, p->user, err);
		pool_login_failed(p, SQLSTATE_CANNOT_CONNECT, err);
		return NULL;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		log_error("socket(): %s", strerror(errno));
		return NULL;
	}
	sv = xcalloc(1, sizeof(*sv));
	list_init(&sv->node);
	if (sock_setup(&sv->s, fd, server_on_read, server_on_write, sv) < 0) {
		log_error("cannot set up server socket: %s", strerror(errno));
		sock_close(&sv->s);
		free(sv);
		close(fd);
		return NULL;
	}
	if (ss.ss_family != AF_UNIX) {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		if (g.cfg.tcp_keepalive)
			setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		snprintf(sv->addr, sizeof(sv->addr), "%s:%d", p->host, p->port);
	} else {
		snprintf(sv->addr, sizeof(sv->addr), "unix:%d", p->port);
	}
	sv->pool = p;
	sv->tx_status = 'I';
	sv->connect_time = sv->last_used = now_usec();
	sv->connect_wall = wall_usec();
	sv->state = SV_JUSTFREE; /* not on any list yet */
	server_change_state(sv, SV_LOGIN);
	g.server_count++;
	sv->ev_timer = evtimer_new(g.base, server_on_timeout, sv);
	tv.tv_sec = g.cfg.server_connect_timeout / USEC_PER_SEC;
	tv.tv_usec = g.cfg.server_connect_timeout % USEC_PER_SEC;
	if (g.cfg.server_connect_timeout > 0)
		evtimer_add(sv->ev_timer, &tv);
	if (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS) {
		char msg[300];
		snprintf(msg, sizeof(msg), "server connection failed: %s", strerror(errno));
		p->last_login_fail = now_usec();
		strlcpy_ok(p->last_login_error, msg, sizeof(p->last_login_error));
		server_disconnect(sv, msg);
		pool_login_failed(p, SQLSTATE_CANNOT_CONNECT, msg);
		return NULL;
	}
	event_add(sv->s.ev_write, NULL);
	sv->s.writing = true;
	log_debug("S-%p: %s/%s connecting to %s", (void *)sv, p->dbname, p->user, sv->addr);
	return sv;
}

/* The length counter of p's list that holds a server in state st, or NULL for SV_JUSTFREE (a global list, and the
 * state of a server not on any list yet). */
static int *server_list_len(struct pool *p, enum server_state st)
{
	switch (st) {
	case SV_LOGIN:
		return &p->n_servers_login;
	case SV_IDLE:
		return &p->n_servers_idle;
	case SV_ACTIVE:
		return &p->n_servers_active;
	case SV_USED:
		return &p->n_servers_used;
	case SV_TESTED:
		return &p->n_servers_tested;
	default:
		return NULL;
	}
}

void server_change_state(struct server *sv, enum server_state st)
{
	struct pool *p = sv->pool;
	int *len = server_list_len(p, sv->state);
	if (len)
		(*len)--;
	list_del(&sv->node);
	sv->state = st;
	len = server_list_len(p, st);
	if (len)
		(*len)++;
	switch (st) {
	case SV_LOGIN:
		list_add_tail(&sv->node, &p->servers_login);
		break;
	case SV_IDLE:
		/* LIFO: the most recently used server is reused first, so surplus servers age out. */
		if (g.cfg.server_round_robin)
			list_add_tail(&sv->node, &p->servers_idle);
		else
			list_add_head(&sv->node, &p->servers_idle);
		break;
	case SV_ACTIVE:
		list_add_tail(&sv->node, &p->servers_active);
		break;
	case SV_USED:
		list_add_tail(&sv->node, &p->servers_used);
		break;
	case SV_TESTED:
		list_add_tail(&sv->node, &p->servers_tested);
		break;
	case SV_JUSTFREE:
		list_add_tail(&sv->node, &g.justfree_servers);
		break;
	case SV_STATE_COUNT:
		break;
	}
}

void server_disconnect(struct server *sv, const char *reason)
{
	struct pool *p = sv->pool;
	struct client *c = sv->client;
	if (sv->state == SV_JUSTFREE)
		return;
	if (c) {
		sv->client = NULL;
		c->server = NULL;
		client_disconnect(c, SQLSTATE_CONNECTION_FAILURE, reason);
	}
	if (sv->ready && sv->s.fd >= 0) {
		/* Say goodbye so PostgreSQL does not log an unexpected EOF. */
		struct pkt_builder b;
		pkt_init(&b);
		pkt_terminate(&b);
		send_pkt(&sv->s, &b);
		pkt_free(&b);
		(void)sock_flush_quiet(&sv->s);
	}
	if (g.cfg.log_disconnections || !sv->ready)
		log_info("S-%p: %s/%s@%s closing because: %s (age=%llds)", (void *)sv, p->dbname, p->user, sv->addr, reason,
			 (long long)((now_usec() - sv->connect_time) / USEC_PER_SEC));
	server_change_state(sv, SV_JUSTFREE);
	relay_server_free(sv);
	session_server_free(sv);
	if (sv->ready)
		stats_server_closed(p, now_usec() - sv->connect_time);
	if (sv->ev_timer) {
		event_free(sv->ev_timer);
		sv->ev_timer = NULL;
	}
	sock_close(&sv->s);
	scram_state_clear(&sv->scram);
	g.server_count--;
	parley_request_reap();
	/* A slot opened: clients may be waiting for it (login failures retry from the janitor instead). */
	if (sv->ready)
		pool_launch_if_needed(p);
	parley_check_shutdown();
}

static void server_on_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct server *sv = arg;
	(void)fd;
	(void)what;
	if (!sv->ready) {
		struct pool *p = sv->pool;
		snprintf(p->last_login_error, sizeof(p->last_login_error), "server_connect_timeout: no answer from %s within %.1f s",
			 sv->addr, (double)g.cfg.server_connect_timeout / USEC_PER_SEC);
		p->last_login_fail = now_usec();
		server_disconnect(sv, p->last_login_error);
		pool_login_failed(p, SQLSTATE_CANNOT_CONNECT, p->last_login_error);
	}
}

/* The password parley uses to log into PostgreSQL for this pool, or NULL. *from_file is set to the auth_file entry
 * when the secret comes from there (it may carry a learned SCRAM ClientKey), else to NULL. */
static const char *server_password(const struct pool *p, struct auth_user **from_file)
{
	struct auth_user *au;
	*from_file = NULL;
	if (p->server_password)
		return p->server_password;
	au = auth_user_find(g.auth_users, p->server_user);
	/* a user found by auth_query logs in with the secret the last lookup returned (SCRAM: with a learned key) */
	if (!au && strcmp(p->server_user, p->user) == 0)
		au = authquery_credential(p->dbname, p->user);
	*from_file = au;
	return au ? au->secret : NULL;
}

static void server_send_startup(struct server *sv)
{
	const char *names[8], *values[8];
	int n = 0;
	struct pkt_builder b;
	struct pool *p = sv->pool;

	names[n] = "user";
	values[n++] = p->server_user;
	names[n] = "database";
	values[n++] = p->server_dbname;
	for (int v = 0; v < VAR_COUNT && n < 8; v++) {
		if (p->forced_vars.set[v]) {
			names[n] = tracked_var_names[v];
			values[n++] = p->forced_vars.value[v];
		}
	}
	pkt_init(&b);
	pkt_startup(&b, names, values, n);
	send_pkt(&sv->s, &b);
	pkt_free(&b);
}

/* With server_tls_sslmode other than disable and a TCP server, queues an SSLRequest (the startup packet follows
 * the answer) and returns true. */
static bool server_request_tls(struct server *sv)
{
	struct pkt_builder b;
	if (tls_server_mode() == TLS_DISABLE || !sv->pool->host || sv->pool->host[0] == '/')
		return false;
	pkt_init(&b);
	pkt_u32(&b, 8);
	pkt_u32(&b, PROTO_SSL_REQUEST);
	send_pkt(&sv->s, &b);
	pkt_free(&b);
	sv->tls_requested = true;
	return true;
}

/* Handles the server's one-byte answer to the SSLRequest: 'S' starts the TLS handshake (the startup packet is queued
 * behind it), 'N' continues in plain text unless TLS is required. Returns false if the server was closed. */
static bool server_tls_answer(struct server *sv)
{
	uint8_t answer;
	char msg[300];
	if (ibuf_len(&sv->s.in) < 1)
		return true;
	ibuf_remove(&sv->s.in, &answer, 1);
	sv->tls_requested = false;
	if (answer == 'S') {
		/* Bytes after the 'S' arrived before TLS protected anything (CVE-2021-23222): refuse them. */
		if (ibuf_len(&sv->s.in) > 0) {
			server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, "server sent unencrypted data after its SSL response");
			return false;
		}
		sv->s.ssl = tls_connect_new(sv->s.fd, sv->pool->host);
		if (!sv->s.ssl) {
			server_login_error(sv, SQLSTATE_CONNECTION_FAILURE, "cannot start TLS to the server");
			return false;
		}
	} else if (answer == 'N') {
		if (tls_server_mode() >= TLS_REQUIRE) {
			snprintf(msg, sizeof(msg), "server %s does not support TLS (server_tls_sslmode = %s)", sv->addr,
				 tls_mode_names[tls_server_mode()]);
			server_login_error(sv, SQLSTATE_CONNECTION_FAILURE, msg);
			return false;
		}
	} else {
		snprintf(msg, sizeof(msg), "server %s sent an invalid answer to the SSL request", sv->addr);
		server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, msg);
		return false;
	}
	server_send_startup(sv);
	if (sock_flush(&sv->s) < 0) {
		server_io_failed(sv, "write");
		return false;
	}
	return true;
}

static void server_on_write(evutil_socket_t fd, short what, void *arg)
{
	struct server *sv = arg;
	(void)what;
	if (!sv->connected) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			struct pool *p = sv->pool;
			snprintf(p->last_login_error, sizeof(p->last_login_error), "server connection to %s failed: %s", sv->addr,
				 strerror(err));
			p->last_login_fail = now_usec();
			server_disconnect(sv, p->last_login_error);
			pool_login_failed(p, SQLSTATE_CANNOT_CONNECT, p->last_login_error);
			return;
		}
		sv->connected = true;
		if (!server_request_tls(sv))
			server_send_startup(sv);
		sock_want_read(&sv->s, true);
	}
	if (sock_flush(&sv->s) < 0) {
		server_io_failed(sv, "write");
		return;
	}
	if (sv->client && evbuffer_get_length(sv->s.out) < OUTBUF_HIGH_WATER)
		client_resume_reading(sv->client);
}

void server_resume_reading(struct server *sv)
{
	if (sv->state == SV_JUSTFREE || sv->s.reading)
		return;
	sock_want_read(&sv->s, true);
	if (ibuf_len(&sv->s.in) > 0)
		server_on_client_data(sv);
}

/* Fails the login: logs, tells waiting clients, closes. */
static void server_login_error(struct server *sv, const char *sqlstate, const char *msg)
{
	struct pool *p = sv->pool;
	strlcpy_ok(p->last_login_error, msg, sizeof(p->last_login_error));
	p->last_login_fail = now_usec();
	server_disconnect(sv, msg);
	pool_login_failed(p, sqlstate, msg);
}

/* A read or a write on sv's socket failed (errno as sock_read / sock_flush left it). During the login the waiting
 * clients are told why; a TLS handshake runs in whichever of the two comes first, so both report its failure alike. */
static void server_io_failed(struct server *sv, const char *what)
{
	char msg[64];
	if (!sv->ready && errno == EPROTO && sv->s.ssl) {
		server_login_error(sv, SQLSTATE_CONNECTION_FAILURE,
				   "TLS handshake with the server failed (the reason is in parley's log)");
		return;
	}
	snprintf(msg, sizeof(msg), "server socket %s failed", what);
	if (!sv->ready)
		server_login_error(sv, SQLSTATE_CONNECTION_FAILURE, msg);
	else
		server_disconnect(sv, msg);
}

/* Handles one authentication request from PostgreSQL. Returns false if the server was closed. */
static bool server_auth_request(struct server *sv, const uint8_t *body, size_t len)
{
	struct pkt_reader r;
	uint32_t code;
	struct auth_user *au;
	const char *pw = server_password(sv->pool, &au);
	struct pkt_builder b;
	char out[512], err[200], msg[400];
	int n;

	reader_init(&r, body, len);
	code = reader_u32(&r);
	if (r.failed) {
		server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, "malformed authentication request from server");
		return false;
	}
	if (code == AUTH_REQ_OK)
		return true;
	if (code == AUTH_REQ_SASL_FIN) {
		if (scram_client_verify(&sv->scram, (const char *)body + 4, len - 4, err, sizeof(err)) < 0) {
			snprintf(msg, sizeof(msg), "server SCRAM signature invalid: %s", err);
			server_login_error(sv, SQLSTATE_INVALID_PASSWORD, msg);
			return false;
		}
		return true;
	}
	if (!pw) {
		snprintf(msg, sizeof(msg), "no password for server user \"%s\" in [databases] or auth_file",
			 sv->pool->server_user);
		server_login_error(sv, SQLSTATE_INVALID_PASSWORD, msg);
		return false;
	}
	pkt_init(&b);
	switch (code) {
	case AUTH_REQ_PASSWORD:
		if (secret_kind(pw) != SECRET_PLAIN)
			goto need_plain;
		pkt_password(&b, pw);
		break;
	case AUTH_REQ_MD5: {
		const uint8_t *salt = reader_bytes(&r, 4);
		char h[36], resp[36];
		if (!salt)
			goto malformed;
		if (secret_kind(pw) == SECRET_SCRAM)
			goto need_plain;
		if (secret_kind(pw) == SECRET_MD5)
			strlcpy_ok(h, pw, sizeof(h));
		else
			md5_password_hash(pw, sv->pool->server_user, h);
		md5_salted_response(h, salt, resp);
		pkt_password(&b, resp);
		break;
	}
	case AUTH_REQ_SASL: {
		bool have = false;
		for (;;) {
			const char *mech = reader_cstr(&r);
			if (r.failed || !*mech)
				break;
			if (strcmp(mech, "SCRAM-SHA-256") == 0)
				have = true;
		}
		if (!have) {
			pkt_free(&b);
			server_login_error(sv, SQLSTATE_FEATURE_NOT_SUPPORTED, "server offers no supported SASL mechanism");
			return false;
		}
		switch (secret_kind(pw)) {
		case SECRET_PLAIN:
			n = scram_client_first(&sv->scram, pw, out, sizeof(out));
			break;
		case SECRET_SCRAM:
			/* SCRAM pass-through: the ClientKey a client revealed when it authenticated with this secret. */
			if (!au || !au->has_scram_client_key) {
				pkt_free(&b);
				snprintf(msg, sizeof(msg),
					 "cannot log into the server as \"%s\" with the SCRAM secret of auth_file until a "
					 "client has authenticated as that user with SCRAM-SHA-256",
					 sv->pool->server_user);
				server_login_error(sv, SQLSTATE_INVALID_PASSWORD, msg);
				return false;
			}
			n = scram_client_first_with_key(&sv->scram, pw, au->scram_client_key, out, sizeof(out));
			break;
		case SECRET_MD5:
		default:
			goto need_plain;
		}
		if (n < 0) {
			pkt_free(&b);
			server_login_error(sv, SQLSTATE_INTERNAL_ERROR, "cannot start the SCRAM exchange with the server");
			return false;
		}
		pkt_sasl_initial(&b, "SCRAM-SHA-256", out, (size_t)n);
		break;
	}
	case AUTH_REQ_SASL_CONT: {
		char buf[1024];
		if (len - 4 >= sizeof(buf))
			goto malformed;
		memcpy(buf, body + 4, len - 4);
		buf[len - 4] = '\0';
		n = scram_client_final(&sv->scram, buf, len - 4, out, sizeof(out), err, sizeof(err));
		if (n < 0) {
			pkt_free(&b);
			snprintf(msg, sizeof(msg), "SCRAM exchange with server failed: %s", err);
			server_login_error(sv, SQLSTATE_INVALID_PASSWORD, msg);
			return false;
		}
		pkt_sasl_response(&b, out, (size_t)n);
		break;
	}
	default:
		pkt_free(&b);
		snprintf(msg, sizeof(msg), "server asked for an unsupported authentication method (%u)", code);
		server_login_error(sv, SQLSTATE_FEATURE_NOT_SUPPORTED, msg);
		return false;
	}
	send_pkt(&sv->s, &b);
	pkt_free(&b);
	if (sock_flush(&sv->s) < 0) {
		server_io_failed(sv, "write");
		return false;
	}
	return true;
need_plain:
	pkt_free(&b);
	snprintf(msg, sizeof(msg), "server requested an authentication method that needs the plain password of \"%s\"",
		 sv->pool->server_user);
	server_login_error(sv, SQLSTATE_INVALID_PASSWORD, msg);
	return false;
malformed:
	pkt_free(&b);
	server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, "malformed authentication request from server");
	return false;
}

/* Remembers a ParameterStatus on the server (and the linked client). */
void server_param_status(struct server *sv, const uint8_t *body, size_t len)
{
	struct pkt_reader r;
	const char *name, *value;
	int v;
	reader_init(&r, body, len);
	name = reader_cstr(&r);
	value = reader_cstr(&r);
	if (r.failed)
		return;
	v = tracked_var_lookup(name);
	if (v >= 0 && strlen(value) < VAR_VALUE_MAX) {
		varcache_set(&sv->vars, v, value);
		if (sv->client && !sv->internal)
			varcache_set(&sv->client->vars, v, value);
	}
	if (!sv->pool->welcome_ready && !sv->ready && sv->pool->welcome_count < (int)ARRAY_SIZE(sv->pool->welcome_names)) {
		struct pool *p = sv->pool;
		for (int i = 0; i < p->welcome_count; i++) {
			if (strcmp(p->welcome_names[i], name) == 0) {
				free(p->welcome_values[i]);
				p->welcome_values[i] = xstrdup(value);
				return;
			}
		}
		p->welcome_names[p->welcome_count] = xstrdup(name);
		p->welcome_values[p->welcome_count++] = xstrdup(value);
	}
}

/* Login finished (ReadyForQuery): publish the welcome and offer the server to the pool. */
static void server_login_done(struct server *sv)
{
	struct pool *p = sv->pool;
	sv->ready = true;
	p->last_login_fail = 0;
	if (sv->ev_timer)
		evtimer_del(sv->ev_timer);
	log_debug("S-%p: %s/%s login ok (backend pid %u)", (void *)sv, p->dbname, p->user, sv->be_pid);
	if (!p->welcome_ready) {
		p->welcome_ready = true;
		while (!list_empty(&p->clients_login)) {
			struct client *c = list_first_entry(&p->clients_login, struct client, node);
			client_finish_login(c);
		}
	}
	if (p->connect_query && *p->connect_query) {
		server_change_state(sv, SV_TESTED);
		server_internal_query(sv, p->connect_query);
		return;
	}
	pool_server_ready(sv);
}

/* Reads whole messages during login. */
static void server_login_step(struct server *sv)
{
	uint8_t hdr[5];
	const char *why;
	if (sv->tls_requested && !server_tls_answer(sv))
		return;
	while (sv->state == SV_LOGIN) {
		size_t avail = ibuf_len(&sv->s.in);
		struct pkt_header h;
		uint8_t *msg;
		enum proto_rc rc;
		if (avail < 5)
			return;
		memcpy(hdr, ibuf_ptr(&sv->s.in), 5);
		rc = proto_read_header(hdr, 5, SERVER_LOGIN_MSG_MAX, &h, &why);
		if (rc == PROTO_BAD) {
			server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, why);
			return;
		}
		if (avail < (size_t)h.len + 1)
			return;
		msg = ibuf_ptr(&sv->s.in);
		switch (h.type) {
		case BE_AUTH:
			if (!server_auth_request(sv, msg + 5, h.len - 4))
				return;
			break;
		case BE_PARAM_STATUS:
			server_param_status(sv, msg + 5, h.len - 4);
			break;
		case BE_BACKEND_KEY: {
			struct pkt_reader r;
			reader_init(&r, msg + 5, h.len - 4);
			sv->be_pid = reader_u32(&r);
			sv->be_key = reader_u32(&r);
			break;
		}
		case BE_ERROR: {
			struct error_fields ef;
			char text[400], sqlstate[6];
			/* Copies: the fields point into the input buffer, which closing the server frees. */
			strcpy(sqlstate, SQLSTATE_CONNECTION_FAILURE);
			if (proto_parse_error(msg + 5, h.len - 4, &ef) == PROTO_OK) {
				snprintf(text, sizeof(text), "server login failed: %s", ef.message ? ef.message : "unknown error");
				if (ef.sqlstate && strlen(ef.sqlstate) == 5)
					strcpy(sqlstate, ef.sqlstate);
			} else {
				snprintf(text, sizeof(text), "server login failed");
			}
			server_login_error(sv, sqlstate, text);
			return;
		}
		case BE_NOTICE:
		case BE_NEGOTIATE_VERSION:
			break;
		case BE_READY:
			ibuf_drain(&sv->s.in, h.len + 1);
			server_login_done(sv);
			return;
		default:
			server_login_error(sv, SQLSTATE_PROTOCOL_VIOLATION, "unexpected message from server during login");
			return;
		}
		ibuf_drain(&sv->s.in, h.len + 1);
	}
}

void server_internal_query(struct server *sv, const char *sql)
{
	struct pkt_builder b;
	/* a session reset drops the server's prepared statements */
	if (strcasestr(sql, "discard all") || strcasestr(sql, "deallocate all"))
		relay_server_forget_statements(sv);
	session_server_query(sv, sql); /* its SET / RESET / DISCARD ALL of tracked parameters */
	sv->internal = true;
	sv->expect_rfq = 1;
	pkt_init(&b);
	pkt_query(&b, sql);
	send_pkt(&sv->s, &b);
	pkt_free(&b);
	if (sock_flush(&sv->s) < 0)
		server_disconnect(sv, "server socket write failed");
}

/* Consumes the replies to parley's own query; when done, continues with the client or returns the server. */
static void server_internal_step(struct server *sv)
{
	uint8_t hdr[5];
	const char *why;
	while (sv->internal) {
		size_t avail = ibuf_len(&sv->s.in);
		struct pkt_header h;
		uint8_t *msg;
		if (avail < 5)
			return;
		memcpy(hdr, ibuf_ptr(&sv->s.in), 5);
		if (proto_read_header(hdr, 5, (uint32_t)g.cfg.max_packet_size, &h, &why) == PROTO_BAD) {
			server_disconnect(sv, why);
			return;
		}
		if (avail < (size_t)h.len + 1)
			return;
		msg = ibuf_ptr(&sv->s.in);
		if (h.type == BE_PARAM_STATUS) {
			server_param_status(sv, msg + 5, h.len - 4);
		} else if (h.type == BE_ERROR) {
			struct error_fields ef;
			if (proto_parse_error(msg + 5, h.len - 4, &ef) == PROTO_OK) {
				log_warning("S-%p: %s/%s internal query failed: %s", (void *)sv, sv->pool->dbname, sv->pool->user,
					    ef.message ? ef.message : "?");
				if (!sv->internal_state[0] && ef.sqlstate && strlen(ef.sqlstate) == 5) {
					memcpy(sv->internal_state, ef.sqlstate, 6);
					snprintf(sv->internal_error, sizeof(sv->internal_error), "%s",
						 ef.message ? ef.message : "");
				}
			}
			sv->dirty = true;
		} else if (h.type == BE_READY) {
			sv->tx_status = (char)msg[5];
			sv->internal = false;
			sv->expect_rfq = 0;
			if (sv->tx_status != 'I')
				sv->dirty = true;
		}
		ibuf_drain(&sv->s.in, h.len + 1);
	}
	if (sv->client) {
		struct client *c = sv->client;
		if (sv->dirty) {
			/* the client's own settings (a startup parameter PostgreSQL refuses, say): its error, as PostgreSQL
			 * would have given it at login */
			char reason[300] = "failed to set session parameters on the server";
			if (sv->internal_state[0])
				snprintf(reason, sizeof(reason), "failed to set session parameters on the server: %s",
					 sv->internal_error);
			client_disconnect(c, sv->internal_state[0] ? sv->internal_state : SQLSTATE_PROTOCOL_VIOLATION, reason);
			return;
		}
		sock_want_read(&c->s, true);
		client_on_server_data(c);
	} else {
		pool_server_ready(sv);
	}
}

/* Entry point for server bytes (also used after backpressure lifts). */
void server_on_client_data(struct server *sv)
{
	if (sv->state == SV_LOGIN) {
		server_login_step(sv);
	} else if (sv->internal) {
		server_internal_step(sv);
	} else if (sv->client) {
		relay_server_input(sv);
	} else if (ibuf_len(&sv->s.in) > 0) {
		/* An idle server speaks only to say it is going away. */
		uint8_t hdr[5];
		struct pkt_header h;
		const char *why;
		char reason[300] = "server sent data while idle";
		size_t avail = ibuf_len(&sv->s.in);
		memcpy(hdr, ibuf_ptr(&sv->s.in), avail < 5 ? avail : 5);
		if (proto_read_header(hdr, avail < 5 ? avail : 5, SERVER_LOGIN_MSG_MAX, &h, &why) == PROTO_OK && h.type == BE_ERROR &&
		    avail >= (size_t)h.len + 1) {
			struct error_fields ef;
			uint8_t *msg = ibuf_ptr(&sv->s.in);
			if (proto_parse_error(msg + 5, h.len - 4, &ef) == PROTO_OK && ef.message)
				snprintf(reason, sizeof(reason), "server closed the connection: %s", ef.message);
		} else if (h.type == BE_NOTICE || h.type == BE_PARAM_STATUS) {
			/* Harmless chatter (e.g. a NOTICE): drop it and keep the server. */
			if (avail >= (size_t)h.len + 1) {
				ibuf_drain(&sv->s.in, h.len + 1);
				return;
			}
			return;
		}
		server_disconnect(sv, reason);
	}
}

static void server_on_read(evutil_socket_t fd, short what, void *arg)
{
	struct server *sv = arg;
	int n = sock_read(&sv->s);
	(void)fd;
	(void)what;
	if (n == 0) {
		char reason[300];
		if (!sv->ready) {
			snprintf(reason, sizeof(reason), "server closed the connection during login");
			server_login_error(sv, SQLSTATE_CONNECTION_FAILURE, reason);
			return;
		}
		server_disconnect(sv, "server closed the connection unexpectedly");
		return;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		server_io_failed(sv, "read");
		return;
	}
	sv->s.bytes_in += (uint64_t)n;
	if (sv->pool)
		sv->pool->stat_bytes_out += (uint64_t)n;
	server_on_client_data(sv);
}

/* ---- cancel ---- */

/* A one-shot connection that delivers a CancelRequest to PostgreSQL. */
struct cancel_conn {
	int fd;
	struct event *ev;
	uint8_t pkt[16];
	usec_t started;
};

static void cancel_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct cancel_conn *cc = arg;
	if (what & EV_WRITE) {
		ssize_t n = write(fd, cc->pkt, sizeof(cc->pkt));
		if (n != (ssize_t)sizeof(cc->pkt))
			log_warning("could not send cancel request to server");
	} else {
		log_warning("cancel request to server timed out");
	}
	event_free(cc->ev);
	close(cc->fd);
	free(cc);
}

void server_send_cancel(struct server *sv)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char err[300];
	struct cancel_conn *cc;
	struct pkt_builder b;
	struct timeval tv = { 5, 0 };
	int fd;

	if (pg_address(sv->pool->host, sv->pool->port, &ss, &sslen, err, sizeof(err)) < 0)
		return;
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0)
		return;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK) < 0 ||
	    (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS)) {
		close(fd);
		return;
	}
	cc = xcalloc(1, sizeof(*cc));
	cc->fd = fd;
	pkt_init(&b);
	pkt_cancel(&b, sv->be_pid, sv->be_key);
	if (!b.failed && b.len == sizeof(cc->pkt))
		memcpy(cc->pkt, b.buf, sizeof(cc->pkt));
	pkt_free(&b);
	cc->ev = event_new(g.base, fd, EV_WRITE, cancel_on_event, cc);
	event_add(cc->ev, &tv);
	log_debug("S-%p: forwarding cancel request to backend %u", (void *)sv, sv->be_pid);
}
