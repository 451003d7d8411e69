/* main.c — command line, daemonizing, listeners, signals, the event loop and its shutdown. */
#include "parley.h"
#include "authquery.h"
#include "cache.h"
#include "shape.h"
#include "notify.h"
#include "metrics.h"
#include "stats.h"
#include "peer.h"
#include <arpa/inet.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct parley_state g;

static char unix_socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static bool pidfile_written;
static struct event *ev_signals[5];
static struct event *ev_stats;      /* fires every stats_period: stats_period_tick */

static void usage(FILE *to)
{
	fprintf(to, "usage: parley [-d] [-v] [-q] [-V] [-h] CONFIG\n"
		    "       parley --hash-password [--iterations N] [USER]\n"
		    "  -d  run in the background (logfile and pidfile should be set)\n"
		    "  -v  more verbose logging (repeat for more)\n"
		    "  -q  quiet: log nothing but errors to stderr\n"
		    "  -V  print the version and exit\n"
		    "  -h  print this help\n"
		    "  --hash-password  read a password and print its SCRAM-SHA-256 secret (with USER: an auth_file line)\n"
		    "Signals: SIGHUP reloads the configuration, SIGINT waits for running queries to finish then exits,\n"
		    "SIGTERM waits for clients to disconnect then exits, SIGQUIT exits at once.\n");
}

void parley_request_reap(void)
{
	if (g.ev_reaper)
		event_active(g.ev_reaper, EV_TIMEOUT, 0);
}

/* Frees connections that were closed during callbacks (never inside their own callback). */
static void reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	while (!list_empty(&g.justfree_clients)) {
		struct client *c = list_first_entry(&g.justfree_clients, struct client, node);
		list_del(&c->node);
		free(c);
	}
	while (!list_empty(&g.justfree_servers)) {
		struct server *sv = list_first_entry(&g.justfree_servers, struct server, node);
		list_del(&sv->node);
		free(sv);
	}
}

static int count_active_servers(void)
{
	struct pool *p, *tmp;
	int n = 0;
	HASH_ITER(hh, g.pools, p, tmp)
		n += list_count(&p->servers_active) + list_count(&p->servers_used);
	return n;
}

void parley_check_shutdown(void)
{
	if (event_base_got_break(g.base))
		return;	/* already decided (several closes in one loop iteration each call this) */
	if (g.shutdown == SHUTDOWN_SAFE && count_active_servers() == 0) {
		log_info("shutdown: no server is in use, exiting");
		event_base_loopbreak(g.base);
	} else if (g.shutdown == SHUTDOWN_WAIT_CLIENTS && g.client_count == 0) {
		log_info("shutdown: all clients are gone, exiting");
		event_base_loopbreak(g.base);
	}
}

void parley_stop_listening(void)
{
	for (int i = 0; i < g.nlisten; i++) {
		if (g.ev_listen[i]) {
			event_free(g.ev_listen[i]);
			g.ev_listen[i] = NULL;
		}
		if (g.listen_fd[i] >= 0) {
			close(g.listen_fd[i]);
			g.listen_fd[i] = -1;
		}
	}
	g.nlisten = 0;
	if (unix_socket_path[0]) {
		unlink(unix_socket_path);
		unix_socket_path[0] = '\0';
	}
}

/* Out of file descriptors or kernel memory, accept() fails while the connection stays queued, so the listener stays
 * readable: rather than spin on it (and log each failure), stop watching the listeners for ACCEPT_PAUSE and try again.
 * The connections wait in the listen backlog meanwhile, as PgBouncer's do when it pauses accepting. */
#define ACCEPT_PAUSE_MS 1000
static struct event *ev_accept_resume;

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	for (int i = 0; i < g.nlisten; i++)
		if (g.ev_listen[i])
			event_add(g.ev_listen[i], NULL);
}

static void accept_pause(int err)
{
	struct timeval tv = { ACCEPT_PAUSE_MS / 1000, (ACCEPT_PAUSE_MS % 1000) * 1000 };
	struct rlimit rl;
	char lim[48] = "";

	if (!ev_accept_resume)
		ev_accept_resume = evtimer_new(g.base, accept_resume_cb, NULL);
	if (evtimer_pending(ev_accept_resume, NULL))
		return;
	for (int i = 0; i < g.nlisten; i++)
		if (g.ev_listen[i])
			event_del(g.ev_listen[i]);
	evtimer_add(ev_accept_resume, &tv);
	if (err == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		snprintf(lim, sizeof(lim), " (open files limit %llu)", (unsigned long long)rl.rlim_cur);
	log_warning("accept() failed: %s%s; not accepting new connections for %d ms (%d clients connected)",
		    strerror(err), lim, ACCEPT_PAUSE_MS, g.client_count);
}

/* Each client takes a file descriptor, and so does each server connection: when max_client_conn alone is near the
 * soft open-files limit, raise the soft limit toward the hard one (as Redis does for maxclients), and say so when
 * even that is not enough (accept_pause then keeps the excess in the listen backlog). */
static void check_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)g.cfg.max_client_conn + (rlim_t)g.cfg.default_pool_size + 64;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
		return;
	if (rl.rlim_max == RLIM_INFINITY || rl.rlim_max > rl.rlim_cur) {
		rlim_t old = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
			log_info("raised the open files limit from %llu to %llu for max_client_conn = %d",
				 (unsigned long long)old, (unsigned long long)rl.rlim_cur, g.cfg.max_client_conn);
		else
			rl.rlim_cur = old;
	}
	if (rl.rlim_cur < want)
		log_warning("max_client_conn = %d, but the open files limit (ulimit -n) is %llu: clients and server "
			    "connections together cannot exceed it, and connections beyond it wait until others close",
			    g.cfg.max_client_conn, (unsigned long long)rl.rlim_cur);
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	bool is_unix = arg != NULL;
	(void)what;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		int fd = accept(lfd, (struct sockaddr *)&ss, &len);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				accept_pause(errno);
			else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warning("accept() failed: %s", strerror(errno));
			return;
		}
		client_accept(fd, (struct sockaddr *)&ss, len, is_unix);
	}
}

static int add_listener(int fd, bool is_unix)
{
	if (g.nlisten >= MAX_LISTENERS) {
		close(fd);
		return -1;
	}
	evutil_make_socket_nonblocking(fd);
	g.listen_fd[g.nlisten] = fd;
	g.ev_listen[g.nlisten] = event_new(g.base, fd, EV_READ | EV_PERSIST, accept_cb, is_unix ? (void *)1 : NULL);
	event_add(g.ev_listen[g.nlisten], NULL);
	g.nlisten++;
	return 0;
}

static int listen_tcp(const char *addr, int port)
{
	struct addrinfo hints, *res, *ai;
	char portstr[16];
	int rc, count = 0;
	const char *host = strcmp(addr, "*") == 0 ? NULL : addr;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(portstr, sizeof(portstr), "%d", port);
	rc = getaddrinfo(host, portstr, &hints, &res);
	if (rc != 0) {
		log_fatal("cannot resolve listen_addr \"%s\": %s", addr, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int one = 1;
		int fd = socket(ai->ai_family, SOCK_STREAM, 0);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		/* TCP only, as in PgBouncer: each process of a so_reuseport group has its own unix_socket_dir. */
		if (g.cfg.so_reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
			log_fatal("so_reuseport: cannot set SO_REUSEPORT on the listening socket: %s", strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return -1;
		}
		if (ai->ai_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, g.cfg.listen_backlog) < 0) {
			char hostbuf[NI_MAXHOST] = "?";
			getnameinfo(ai->ai_addr, ai->ai_addrlen, hostbuf, sizeof(hostbuf), NULL, 0, NI_NUMERICHOST);
			log_fatal("cannot listen on %s:%d: %s", hostbuf, port, strerror(errno));
			close(fd);
			freeaddrinfo(res);
			return -1;
		}
		if (add_listener(fd, false) == 0)
			count++;
	}
	freeaddrinfo(res);
	if (count == 0) {
		log_fatal("no usable address for listen_addr \"%s\"", addr);
		return -1;
	}
	log_info("listening on %s:%d", addr, port);
	return 0;
}

static int listen_unix(const char *dir, int port)
{
	struct sockaddr_un un;
	int fd;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	if ((size_t)snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", dir, port) >= sizeof(un.sun_path)) {
		log_fatal("unix_socket_dir is too long: %s", dir);
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	/* A socket file someone still accepts on belongs to a running process (another parley of a so_reuseport group
	 * sharing this unix_socket_dir): fail rather than unlink it from under that process. A stale file is replaced. */
	if (connect(fd, (struct sockaddr *)&un, sizeof(un)) == 0) {
		log_fatal("unix socket %s is in use by another process; processes sharing a port (so_reuseport) each need "
			  "their own unix_socket_dir", un.sun_path);
		close(fd);
		return -1;
	}
	close(fd);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	unlink(un.sun_path);
	if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(fd, g.cfg.listen_backlog) < 0) {
		log_fatal("cannot listen on unix socket %s: %s", un.sun_path, strerror(errno));
		close(fd);
		return -1;
	}
	chmod(un.sun_path, (mode_t)g.cfg.unix_socket_mode);
	strcpy(unix_socket_path, un.sun_path);
	log_info("listening on unix:%s", un.sun_path);
	return add_listener(fd, true);
}

static int open_listeners(void)
{
	const char *list = g.cfg.listen_addr;
	if (list && *list) {
		char *copy = xstrdup(list), *save = NULL;
		for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
			if (listen_tcp(tok, g.cfg.listen_port) < 0) {
				free(copy);
				return -1;
			}
		}
		free(copy);
	}
	if (g.cfg.unix_socket_dir && *g.cfg.unix_socket_dir && listen_unix(g.cfg.unix_socket_dir, g.cfg.listen_port) < 0)
		return -1;
	if (g.nlisten == 0) {
		log_fatal("nothing to listen on: set listen_addr or unix_socket_dir");
		return -1;
	}
	return 0;
}

/* Loads cfg's auth_file into *out and warns when group or others may read it. At startup (the logfile is already
 * open) a failure is FATAL, so it also reaches stderr; on reload it is an ERROR and the old users stay. */
static int load_auth_file(const struct parley_config *cfg, struct auth_user **out, bool startup)
{
	char err[512];
	struct stat st;
	*out = NULL;
	if (!cfg->auth_file || !*cfg->auth_file)
		return 0;
	if (auth_file_load(cfg->auth_file, out, err, sizeof(err)) < 0) {
		if (startup)
			log_fatal("%s", err);
		else
			log_error("%s", err);
		return -1;
	}
	if (stat(cfg->auth_file, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
		log_warning("auth_file %s is readable by group or others; chmod 600 it", cfg->auth_file);
	return 0;
}

/* Loads cfg's auth_hba_file into *out (NULL when none is set). auth_type = hba without a file is an error. Failures
 * are logged with FILE:LINE: FATAL at startup, ERROR on reload (the caller then keeps the running rules). */
static int load_hba_file(const struct parley_config *cfg, struct hba **out, bool startup)
{
	char err[600];

	*out = NULL;
	if ((!cfg->auth_hba_file || !*cfg->auth_hba_file) && cfg->auth_type != AUTH_HBA)
		return 0;
	if (hba_load(cfg->auth_hba_file, out, err, sizeof(err)) < 0) {
		if (startup)
			log_fatal("%s", err);
		else
			log_error("%s", err);
		return -1;
	}
	log_debug("auth_hba_file %s: %zu rules", cfg->auth_hba_file, (*out)->count);
	return 0;
}

static void apply_log_settings(int verbose_cli)
{
	int v = g.cfg.verbose > verbose_cli ? g.cfg.verbose : verbose_cli;
	log_level_current = LOG_LVL_LOG + v;
	if (log_level_current > LOG_LVL_NOISE)
		log_level_current = LOG_LVL_NOISE;
	if (log_open(g.cfg.logfile) < 0)
		log_error("cannot open logfile %s: %s", g.cfg.logfile, strerror(errno));
}

static int cli_verbose;

/* Logs the loader's compatibility warnings, one line each. */
static void log_config_warnings(const struct parley_config *cfg)
{
	const char *p = cfg->warnings;
	while (p && *p) {
		const char *nl = strchr(p, '\n');
		int len = nl ? (int)(nl - p) : (int)strlen(p);
		if (len > 0)
			log_warning("%.*s", len, p);
		p = nl ? nl + 1 : p + len;
	}
}

/* SIGHUP and admin RELOAD: load the file again; a broken file leaves the running configuration in place. */
void parley_reload(void)
{
	struct parley_config fresh;
	struct auth_user *users = NULL;
	struct hba *hba = NULL;
	char err[1024];
	const char *path = g.cfg.config_file;

	log_info("reloading %s", path);
	if (config_load(path, &fresh, err, sizeof(err)) < 0) {
		log_error("reload failed, keeping the running configuration: %s", err);
		return;
	}
	if (load_auth_file(&fresh, &users, false) < 0) {
		log_error("reload failed, keeping the running configuration");
		config_free(&fresh);
		return;
	}
	if (load_hba_file(&fresh, &hba, false) < 0) {
		log_error("reload failed, keeping the running configuration (and hba rules)");
		auth_users_free(&users);
		config_free(&fresh);
		return;
	}
	hba_free(g.hba);
	g.hba = hba;
	if (fresh.listen_port != g.cfg.listen_port || strcmp(fresh.listen_addr ? fresh.listen_addr : "",
							       g.cfg.listen_addr ? g.cfg.listen_addr : "") != 0)
		log_warning("listen_addr/listen_port changes take effect only after a restart");
	auth_users_carry_scram_keys(users, g.auth_users);
	auth_users_free(&g.auth_users);
	g.auth_users = users;
	{
		/* Settings that need a restart keep their running values. */
		char *la = fresh.listen_addr, *usd = fresh.unix_socket_dir;
		int lp = fresh.listen_port;
		fresh.listen_addr = g.cfg.listen_addr;
		fresh.unix_socket_dir = g.cfg.unix_socket_dir;
		fresh.listen_port = g.cfg.listen_port;
		g.cfg.listen_addr = la;
		g.cfg.unix_socket_dir = usd;
		g.cfg.listen_port = lp;
	}
	config_free(&g.cfg);
	g.cfg = fresh;
	apply_log_settings(cli_verbose);
	log_config_warnings(&g.cfg);
	peer_config_check(&g.cfg);
	if (tls_configure(&g.cfg, err, sizeof(err)) < 0)
		log_error("TLS settings not applied, the previous TLS setup stays in use: %s", err);
	pool_reload();
	cache_apply_config(&g.cfg);
	notify_apply_config(&g.cfg);
	/* The metrics listener moves when its address or port changed (metrics_start does nothing otherwise). */
	if (metrics_start(g.base, g.cfg.metrics_listen_addr, g.cfg.metrics_port) < 0)
		log_error("metrics endpoint not available after reload");
	log_info("configuration reloaded");
}

void parley_shutdown(enum shutdown_mode mode)
{
	if (mode == SHUTDOWN_NONE) {
		/* at once: finish the current callbacks (so replies already queued are flushed by close_everything) */
		event_base_loopexit(g.base, NULL);
		return;
	}
	g.shutdown = mode;
	parley_stop_listening();
	parley_check_shutdown();
}

void parley_settings_changed(void)
{
	char err[1024];
	apply_log_settings(cli_verbose);
	if (tls_configure(&g.cfg, err, sizeof(err)) < 0)
		log_error("TLS settings not applied, the previous TLS setup stays in use: %s", err);
	pool_reload();
	cache_apply_config(&g.cfg);
	notify_apply_config(&g.cfg);
}

/* Every stats_period (re-read each time, so SET and RELOAD apply): averages and the utilization watchdog. */
static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
	usec_t period = g.cfg.stats_period > 0 ? g.cfg.stats_period : 60 * USEC_PER_SEC;
	struct timeval tv = { (time_t)(period / USEC_PER_SEC), (suseconds_t)(period % USEC_PER_SEC) };
	(void)fd;
	(void)what;
	(void)arg;
	stats_period_tick(now_usec());
	evtimer_add(ev_stats, &tv);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	switch (sig) {
	case SIGHUP:
		log_info("got SIGHUP");
		parley_reload();
		break;
	case SIGINT:
		log_info("got SIGINT, shutting down once running queries finish");
		parley_shutdown(SHUTDOWN_SAFE);
		break;
	case SIGTERM:
		log_info("got SIGTERM, shutting down once all clients disconnect");
		parley_shutdown(SHUTDOWN_WAIT_CLIENTS);
		break;
	case SIGQUIT:
		log_info("got SIGQUIT, exiting immediately");
		parley_shutdown(SHUTDOWN_NONE);
		break;
	default:
		break;
	}
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	pool_janitor();
	admin_janitor();
	cache_sweep(now_usec());
	parley_check_shutdown();
}

static int write_pidfile(const char *path)
{
	char buf[32];
	int fd, n;
	FILE *fp = fopen(path, "r");
	if (fp) {
		long pid = 0;
		if (fscanf(fp, "%ld", &pid) == 1 && pid > 0 && kill((pid_t)pid, 0) == 0) {
			fclose(fp);
			log_fatal("pidfile %s names a running process (%ld): is parley already running?", path, pid);
			return -1;
		}
		fclose(fp);
	}
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		log_fatal("cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (write(fd, buf, (size_t)n) != n) {
		close(fd);
		return -1;
	}
	close(fd);
	pidfile_written = true;
	return 0;
}

static int daemonize(void)
{
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	if (setsid() < 0)
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0)
		_exit(0);
	{
		int fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
			dup2(fd, 2);
			if (fd > 2)
				close(fd);
		}
	}
	return 0;
}

/* Closes every connection at exit. */
static void close_everything(void)
{
	struct pool *p, *tmp;
	struct list_head *pos, *ptmp;
	list_for_each_safe(pos, ptmp, &g.login_clients) {
		struct client *c = list_entry(pos, struct client, node);
		client_disconnect(c, SQLSTATE_ADMIN_SHUTDOWN, "parley is shutting down");
	}
	HASH_ITER(hh, g.pools, p, tmp) {
		struct list_head *lists[] = { &p->clients_active, &p->clients_waiting, &p->clients_login };
		struct list_head *slists[] = { &p->servers_idle, &p->servers_active, &p->servers_used, &p->servers_tested,
					       &p->servers_login };
		for (size_t i = 0; i < ARRAY_SIZE(lists); i++)
			list_for_each_safe(pos, ptmp, lists[i]) client_disconnect(list_entry(pos, struct client, node),
										    SQLSTATE_ADMIN_SHUTDOWN, "parley is shutting down");
		for (size_t i = 0; i < ARRAY_SIZE(slists); i++)
			list_for_each_safe(pos, ptmp, slists[i]) server_disconnect(list_entry(pos, struct server, node),
										     "parley is shutting down");
	}
	reaper_cb(-1, 0, NULL);
}

int main(int argc, char **argv)
{
	char err[1024];
	bool daemon_mode = false, quiet = false;
	int opt;
	struct timeval janitor_tv = { 0, 200 * 1000 };
	static const int sigs[] = { SIGHUP, SIGINT, SIGTERM, SIGQUIT };

	if (argc >= 2 && strcmp(argv[1], "--hash-password") == 0)
		return hash_password_main(argc, argv);
	while ((opt = getopt(argc, argv, "dvqVh")) != -1) {
		switch (opt) {
		case 'd':
			daemon_mode = true;
			break;
		case 'v':
			cli_verbose++;
			break;
		case 'q':
			quiet = true;
			break;
		case 'V':
			printf("parley %s\n", PACKAGE_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return 2;
	}
	list_init(&g.login_clients);
	list_init(&g.justfree_clients);
	list_init(&g.justfree_servers);
	log_set_quiet(quiet);
	if (config_load(argv[optind], &g.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "parley: %s\n", err);
		return 1;
	}
	/* The logfile first, so that the auth_file permission warning lands in it. */
	apply_log_settings(cli_verbose);
	if (load_auth_file(&g.cfg, &g.auth_users, true) < 0) {
		config_free(&g.cfg);
		return 1;
	}
	if (load_hba_file(&g.cfg, &g.hba, true) < 0) {
		auth_users_free(&g.auth_users);
		config_free(&g.cfg);
		return 1;
	}
	log_config_warnings(&g.cfg);
	peer_config_check(&g.cfg);
	if (tls_configure(&g.cfg, err, sizeof(err)) < 0) {
		if (g.cfg.logfile && *g.cfg.logfile)
			log_fatal("%s", err);
		fprintf(stderr, "parley: %s\n", err);
		tls_shutdown();
		auth_users_free(&g.auth_users);
		hba_free(g.hba);
		g.hba = NULL;
		config_free(&g.cfg);
		return 1;
	}
	if (daemon_mode && daemonize() < 0) {
		log_fatal("cannot daemonize: %s", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	g.base = event_base_new();
	if (!g.base) {
		log_fatal("cannot create the event loop");
		return 1;
	}
	g.start_time = now_usec();
	/* before the pooler's listeners, so the metrics port is up once the main port accepts */
	if (metrics_start(g.base, g.cfg.metrics_listen_addr, g.cfg.metrics_port) < 0)
		return 1;
	if (open_listeners() < 0)
		return 1;
	if (g.cfg.pidfile && *g.cfg.pidfile && write_pidfile(g.cfg.pidfile) < 0)
		return 1;
	g.ev_reaper = event_new(g.base, -1, 0, reaper_cb, NULL);
	g.ev_janitor = event_new(g.base, -1, EV_PERSIST, janitor_cb, NULL);
	event_add(g.ev_janitor, &janitor_tv);
	{
		struct shape_config sc = { g.cfg.cache_max_shapes, g.cfg.cache_max_shapes * 2 };
		shape_init(&sc);
	}
	cache_apply_config(&g.cfg);
	notify_apply_config(&g.cfg);
	stats_init();
	ev_stats = evtimer_new(g.base, stats_cb, NULL);
	{
		usec_t period = g.cfg.stats_period > 0 ? g.cfg.stats_period : 60 * USEC_PER_SEC;
		struct timeval tv = { (time_t)(period / USEC_PER_SEC), (suseconds_t)(period % USEC_PER_SEC) };
		evtimer_add(ev_stats, &tv);
	}
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++) {
		ev_signals[i] = evsignal_new(g.base, sigs[i], signal_cb, NULL);
		event_add(ev_signals[i], NULL);
	}
	check_fd_limit();
	log_info("parley %s started (pid %d), %s pooling", PACKAGE_VERSION, (int)getpid(), pool_mode_name(g.cfg.pool_mode));
	/* One iteration at a time, so the cached clock (now_cached) is read afresh once per iteration. */
	for (;;) {
		loop_clock = 0;
		if (event_base_loop(g.base, EVLOOP_ONCE) != 0 || event_base_got_exit(g.base) || event_base_got_break(g.base))
			break;
	}

	parley_stop_listening();
	if (ev_accept_resume)
		event_free(ev_accept_resume);
	close_everything();
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		event_free(ev_signals[i]);
	event_free(g.ev_janitor);
	event_free(ev_stats);
	metrics_stop();
	stats_shutdown();
	ibuf_pool_clear();
	event_free(g.ev_reaper);
	g.ev_reaper = NULL;
	pool_free_all();
	peer_shutdown();
	notify_shutdown();
	cache_shutdown();
	shape_shutdown();
	authquery_shutdown();
	auth_users_free(&g.auth_users);
	hba_free(g.hba);
	g.hba = NULL;
	tls_shutdown();
	if (pidfile_written)
		unlink(g.cfg.pidfile);
	config_free(&g.cfg);
	event_base_free(g.base);
	log_info("parley stopped");
	log_open(NULL); /* closes the logfile, so nothing parley allocated is left at exit (LeakSanitizer) */
	return 0;
}
