/* test_config.c — cmocka tests for the INI parser, the settings table, SHOW CONFIG text and admin SET. */
#include "config.h"
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

/* Every test writes its files under one mkdtemp directory (resolved with realpath, as error messages are). */
static char tmpdir[256];
static char *created[512];
static int ncreated;

static void remember(const char *path)
{
	assert_true(ncreated < (int)ARRAY_SIZE(created));
	created[ncreated++] = xstrdup(path);
}

static void write_all(const char *path, const char *content)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(content, 1, strlen(content), fp), strlen(content));
	assert_int_equal(fclose(fp), 0);
}

/* Writes content to a fresh mkstemp file; returns its path (static buffer, valid until the next call). */
static const char *write_temp(const char *content)
{
	static char path[1024];
	int fd;

	snprintf(path, sizeof(path), "%s/cfgXXXXXX", tmpdir);
	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	write_all(path, content);
	remember(path);
	return path;
}

/* Writes tmpdir/name (a subdirectory is created if name has one); returns the path (static buffer). */
static const char *write_named(const char *name, const char *content)
{
	static char path[1024];
	const char *slash = strchr(name, '/');

	if (slash) {
		snprintf(path, sizeof(path), "%s/%.*s", tmpdir, (int)(slash - name), name);
		if (mkdir(path, 0700) == 0)
			remember(path);
	}
	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	write_all(path, content);
	remember(path);
	return path;
}

static int group_setup(void **state)
{
	char tmpl[] = "/tmp/parley_test_config_XXXXXX", real[PATH_MAX];
	assert_non_null(mkdtemp(tmpl));
	assert_non_null(realpath(tmpl, real));
	assert_true(strlcpy_ok(tmpdir, real, sizeof(tmpdir)));
	return 0;
}

static int group_teardown(void **state)
{
	/* files first, then the directories they are in */
	while (ncreated > 0) {
		char *p = created[--ncreated];
		if (unlink(p) < 0)
			rmdir(p);
		free(p);
	}
	rmdir(tmpdir);
	return 0;
}

/* Loads content from a temp file and expects success; *path_out gets the file's path. */
static void load_ok(const char *content, struct parley_config *cfg, const char **path_out)
{
	char err[1024] = "";
	const char *path = write_temp(content);
	int rc = config_load(path, cfg, err, sizeof(err));
	if (rc != 0)
		fail_msg("loading failed: %s\n--- file ---\n%s", err, content);
	if (path_out)
		*path_out = path;
}

/* Loads content and expects exactly "PATH:line: msg". */
static void load_fails(const char *content, int line, const char *msg)
{
	struct parley_config cfg;
	char err[1024] = "", expect[4096];
	const char *path = write_temp(content);
	static const struct parley_config zero;

	memset(&cfg, 0x5a, sizeof(cfg));
	if (config_load(path, &cfg, err, sizeof(err)) == 0) {
		config_free(&cfg);
		fail_msg("expected an error for:\n%s", content);
	}
	snprintf(expect, sizeof(expect), "%s:%d: %s", path, line, msg);
	assert_string_equal(err, expect);
	/* on failure there is nothing to free */
	assert_memory_equal(&cfg, &zero, sizeof(cfg));
}

static const char *text_of(const struct parley_config *cfg, const char *key)
{
	static char buf[512];
	const struct setting *s = config_find_setting(key);
	assert_non_null(s);
	return config_value_text(cfg, s, buf, sizeof(buf));
}

static void test_defaults(void **state)
{
	struct parley_config cfg;

	config_init_defaults(&cfg);
	assert_string_equal(cfg.listen_addr, "127.0.0.1");
	assert_int_equal(cfg.listen_port, 6432);
	assert_int_equal(cfg.listen_backlog, 128);
	assert_string_equal(cfg.unix_socket_dir, "/tmp");
	assert_int_equal(cfg.unix_socket_mode, 0777);
	assert_int_equal(cfg.pool_mode, POOL_SESSION);
	assert_int_equal(cfg.default_pool_size, 20);
	assert_int_equal(cfg.min_pool_size, 0);
	assert_int_equal(cfg.reserve_pool_size, 0);
	assert_int_equal(cfg.reserve_pool_timeout, 5 * USEC_PER_SEC);
	assert_int_equal(cfg.max_client_conn, 100);
	assert_int_equal(cfg.max_db_connections, 0);
	assert_int_equal(cfg.max_user_connections, 0);
	assert_int_equal(cfg.server_connect_timeout, 15 * USEC_PER_SEC);
	assert_int_equal(cfg.server_login_retry, 15 * USEC_PER_SEC);
	assert_int_equal(cfg.server_idle_timeout, 600 * USEC_PER_SEC);
	assert_int_equal(cfg.server_lifetime, 3600 * USEC_PER_SEC);
	assert_int_equal(cfg.server_check_delay, 30 * USEC_PER_SEC);
	assert_string_equal(cfg.server_check_query, "select 1");
	assert_string_equal(cfg.server_reset_query, "DISCARD ALL");
	assert_false(cfg.server_reset_query_always);
	assert_false(cfg.server_round_robin);
	assert_int_equal(cfg.query_timeout, 0);
	assert_int_equal(cfg.query_wait_timeout, 120 * USEC_PER_SEC);
	assert_int_equal(cfg.client_idle_timeout, 0);
	assert_int_equal(cfg.client_login_timeout, 60 * USEC_PER_SEC);
	assert_int_equal(cfg.idle_transaction_timeout, 0);
	assert_int_equal(cfg.autodb_idle_timeout, 3600 * USEC_PER_SEC);
	assert_int_equal(cfg.suspend_timeout, 10 * USEC_PER_SEC);
	assert_int_equal(cfg.stats_period, 60 * USEC_PER_SEC);
	assert_int_equal(cfg.auth_type, AUTH_MD5);
	assert_null(cfg.auth_file);
	assert_null(cfg.auth_user);
	assert_string_equal(cfg.auth_query,
			    "SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END FROM pg_authid WHERE rolname=$1 AND rolcanlogin");
	assert_string_equal(cfg.admin_users, "");
	assert_string_equal(cfg.stats_users, "");
	assert_string_equal(cfg.ignore_startup_parameters, "");
	assert_null(cfg.logfile);
	assert_null(cfg.pidfile);
	assert_int_equal(cfg.verbose, 0);
	assert_true(cfg.log_connections);
	assert_true(cfg.log_disconnections);
	assert_true(cfg.log_pooler_errors);
	assert_true(cfg.log_stats);
	assert_int_equal(cfg.max_packet_size, 2147483647);
	assert_int_equal(cfg.pkt_buf, 4096);
	assert_int_equal(cfg.sbuf_loopcnt, 5);
	assert_int_equal(cfg.tcp_keepalive, 1);
	assert_int_equal(cfg.tcp_defer_accept, 1);
	assert_int_equal(cfg.tcp_keepcnt, 0);
	assert_false(cfg.so_reuseport);
	assert_int_equal(cfg.dns_max_ttl, 15 * USEC_PER_SEC);
	assert_string_equal(cfg.metrics_listen_addr, "127.0.0.1");
	assert_int_equal(cfg.metrics_port, 0);
	assert_int_equal(cfg.slow_query_threshold, USEC_PER_SEC);
	assert_true(cfg.pool_utilization_warn > 0.799 && cfg.pool_utilization_warn < 0.801);
	assert_null(cfg.databases);
	assert_null(cfg.users);
	assert_null(cfg.warnings);
	config_free(&cfg);
	assert_null(cfg.listen_addr);
}

/* Every row is well-formed: unique names, help text, ranges, and a default that parses. */
static void test_table(void **state)
{
	size_t n, i, j;
	const struct setting *t = config_settings(&n);
	struct parley_config cfg;
	char buf[512];

	assert_true(n > 90);
	config_init_defaults(&cfg);
	for (i = 0; i < n; i++) {
		assert_non_null(t[i].name);
		assert_non_null(t[i].help);
		assert_true(strlen(t[i].help) > 5);
		assert_true(t[i].min <= t[i].max);
		assert_ptr_equal(config_find_setting(t[i].name), &t[i]);
		if (t[i].offset != SETTING_NO_FIELD)
			assert_true(t[i].offset < sizeof(struct parley_config));
		else
			assert_false(t[i].implemented);
		for (j = i + 1; j < n; j++)
			assert_true(strcmp(t[i].name, t[j].name) < 0);     /* sorted, hence unique */
		/* the default text is what SHOW CONFIG shows for a fresh config, modulo formatting */
		config_value_text(&cfg, &t[i], buf, sizeof(buf));
		if (t[i].default_value && t[i].type == SET_STR)
			assert_string_equal(buf, t[i].default_value);
	}
	assert_null(config_find_setting("no_such_setting"));
	assert_ptr_equal(config_find_setting("LISTEN_PORT"), config_find_setting("listen_port"));
	config_free(&cfg);
}

struct good_case {
	const char *line;
	const char *key;
	const char *shown;
};

static const struct good_case good_cases[] = {
	{ "default_pool_size = 30", "default_pool_size", "30" },
	{ "DEFAULT_POOL_SIZE=31", "default_pool_size", "31" },
	{ "  listen_port   =   7000   ", "listen_port", "7000" },
	{ "listen_port = 65535", "listen_port", "65535" },
	{ "metrics_port = 0", "metrics_port", "0" },
	{ "metrics_port = 9187", "metrics_port", "9187" },
	{ "max_client_conn = 1", "max_client_conn", "1" },
	{ "so_reuseport = yes", "so_reuseport", "1" },
	{ "so_reuseport = On", "so_reuseport", "1" },
	{ "server_round_robin = TRUE", "server_round_robin", "1" },
	{ "log_stats = false", "log_stats", "0" },
	{ "log_stats = off", "log_stats", "0" },
	{ "log_stats = no", "log_stats", "0" },
	{ "log_stats = 0", "log_stats", "0" },
	{ "listen_addr = *", "listen_addr", "*" },
	{ "listen_addr = 10.0.0.1, ::1", "listen_addr", "10.0.0.1, ::1" },
	{ "listen_addr =", "listen_addr", "" },
	{ "server_reset_query = DISCARD ALL; SELECT 1", "server_reset_query", "DISCARD ALL; SELECT 1" },
	{ "server_check_query = 'select 1' ; kept", "server_check_query", "'select 1' ; kept" },
	{ "auth_file = /etc/parley/userlist.txt", "auth_file", "/etc/parley/userlist.txt" },
	{ "auth_file =", "auth_file", "" },
	{ "query_timeout = 0.5", "query_timeout", "0.5" },
	{ "query_timeout = 250ms", "query_timeout", "0.25" },
	{ "query_timeout = 250 ms", "query_timeout", "0.25" },
	{ "query_timeout = 1500us", "query_timeout", "0.0015" },
	{ "query_timeout = 0", "query_timeout", "0" },
	{ "server_lifetime = 30s", "server_lifetime", "30" },
	{ "server_lifetime = 2min", "server_lifetime", "120" },
	{ "server_lifetime = 1.5h", "server_lifetime", "5400" },
	{ "server_lifetime = 1d", "server_lifetime", "86400" },
	{ "stats_period = 1.25", "stats_period", "1.25" },
	{ "pool_utilization_warn = 0.95", "pool_utilization_warn", "0.95" },
	{ "pool_utilization_warn = 1", "pool_utilization_warn", "1" },
	{ "pool_utilization_warn = 0", "pool_utilization_warn", "0" },
	{ "pool_mode = transaction", "pool_mode", "transaction" },
	{ "pool_mode = Statement", "pool_mode", "statement" },
	{ "auth_type = trust", "auth_type", "trust" },
	{ "auth_type = any", "auth_type", "any" },
	{ "auth_type = plain", "auth_type", "plain" },
	{ "auth_type = MD5", "auth_type", "md5" },
	{ "auth_type = scram-sha-256", "auth_type", "scram-sha-256" },
	{ "unix_socket_mode = 0700", "unix_socket_mode", "0700" },
	{ "unix_socket_mode = 777", "unix_socket_mode", "0777" },
	{ "unix_socket_mode = 0", "unix_socket_mode", "0000" },
	{ "syslog = yes", "syslog", "1" },
	{ "server_tls_sslmode = require", "server_tls_sslmode", "require" },
	{ "max_prepared_statements = 0", "max_prepared_statements", "0" },
	{ "dns_max_ttl = 30", "dns_max_ttl", "30" },
	{ "cancel_wait_timeout = 500ms", "cancel_wait_timeout", "0.5" },
};

static void test_good_values(void **state)
{
	struct parley_config cfg;
	char content[512];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(good_cases); i++) {
		snprintf(content, sizeof(content), "[parley]\n%s\n", good_cases[i].line);
		load_ok(content, &cfg, NULL);
		if (strcmp(text_of(&cfg, good_cases[i].key), good_cases[i].shown) != 0)
			fail_msg("\"%s\": shown as \"%s\", expected \"%s\"", good_cases[i].line, text_of(&cfg, good_cases[i].key),
				 good_cases[i].shown);
		config_free(&cfg);
	}
	/* the stored forms behind a few of those */
	load_ok("[parley]\nquery_timeout = 250ms\nauth_file =\nlisten_addr =\nunix_socket_mode = 0700\n", &cfg, NULL);
	assert_int_equal(cfg.query_timeout, 250000);
	assert_null(cfg.auth_file);
	assert_string_equal(cfg.listen_addr, "");
	assert_int_equal(cfg.unix_socket_mode, 0700);
	config_free(&cfg);
}

struct bad_case {
	const char *line;
	const char *msg;
};

static const struct bad_case bad_cases[] = {
	{ "default_pool_size = abc", "invalid value \"abc\" for default_pool_size: not an integer" },
	{ "default_pool_size = 12abc", "invalid value \"12abc\" for default_pool_size: not an integer" },
	{ "default_pool_size = 1.5", "invalid value \"1.5\" for default_pool_size: not an integer" },
	{ "default_pool_size =", "invalid value \"\" for default_pool_size: not an integer" },
	{ "default_pool_size = -1", "invalid value \"-1\" for default_pool_size: must be between 0 and 2147483647" },
	{ "default_pool_size = 99999999999", "invalid value \"99999999999\" for default_pool_size: must be between 0 and 2147483647" },
	{ "listen_port = 0", "invalid value \"0\" for listen_port: must be between 1 and 65535" },
	{ "listen_port = 65536", "invalid value \"65536\" for listen_port: must be between 1 and 65535" },
	{ "metrics_port = -1", "invalid value \"-1\" for metrics_port: must be between 0 and 65535" },
	{ "max_client_conn = 0", "invalid value \"0\" for max_client_conn: must be between 1 and 2147483647" },
	{ "so_reuseport = maybe", "invalid value \"maybe\" for so_reuseport: not a boolean (use 1/0, yes/no, on/off or true/false)" },
	{ "so_reuseport = 2", "invalid value \"2\" for so_reuseport: not a boolean (use 1/0, yes/no, on/off or true/false)" },
	{ "query_timeout = abc",
	  "invalid value \"abc\" for query_timeout: not a duration (seconds, or a number with unit us, ms, s, min, h or d)" },
	{ "query_timeout = inf",
	  "invalid value \"inf\" for query_timeout: not a duration (seconds, or a number with unit us, ms, s, min, h or d)" },
	{ "query_timeout = -1", "invalid value \"-1\" for query_timeout: must not be negative" },
	{ "query_timeout = 5 weeks", "invalid value \"5 weeks\" for query_timeout: unknown time unit \"weeks\" (use us, ms, s, min, h or d)" },
	{ "query_timeout = 1e12", "invalid value \"1e12\" for query_timeout: must be at most 1000000000 seconds" },
	{ "pool_utilization_warn = 1.5", "invalid value \"1.5\" for pool_utilization_warn: must be between 0 and 1" },
	{ "pool_utilization_warn = high", "invalid value \"high\" for pool_utilization_warn: not a number" },
	{ "pool_mode = sessions", "invalid value \"sessions\" for pool_mode: expected session, transaction or statement" },
	{ "auth_type = cert", "auth_type 'cert' is not supported yet (use trust, any, plain, md5, scram-sha-256 or hba)" },
	{ "auth_type = pam", "auth_type 'pam' is not supported yet (use trust, any, plain, md5, scram-sha-256 or hba)" },
	{ "auth_type = password", "invalid value \"password\" for auth_type: expected trust, any, plain, md5, scram-sha-256 or hba" },
	{ "unix_socket_mode = 0789", "invalid value \"0789\" for unix_socket_mode: not an octal mode such as 0777" },
	{ "unix_socket_mode = rw", "invalid value \"rw\" for unix_socket_mode: not an octal mode such as 0777" },
	{ "unix_socket_mode = 10000", "invalid value \"10000\" for unix_socket_mode: must be between 0 and 07777" },
	{ "listen_prot = 6432", "unknown setting \"listen_prot\" in [parley]" },
	{ "syslog = maybe", "invalid value \"maybe\" for syslog: not a boolean (use 1/0, yes/no, on/off or true/false)" },
	{ "peer_id = -3", "invalid value \"-3\" for peer_id: must be between 0 and 16383" },
};

/* Each malformed value on line 3, after a comment and the section header. */
static void test_bad_values(void **state)
{
	char content[512];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(bad_cases); i++) {
		snprintf(content, sizeof(content), "; sample\n[parley]\n%s\nlisten_port = 6432\n", bad_cases[i].line);
		load_fails(content, 3, bad_cases[i].msg);
	}
}

struct file_case {
	const char *content;
	int line;
	const char *msg;        /* NULL: must load */
};

static const struct file_case syntax_cases[] = {
	{ "listen_port = 6432\n", 1, "\"listen_port\" appears before any [section] header" },
	{ "[parley]\n\n[bogus]\n", 3, "unknown section [bogus] (expected [parley], [pgbouncer], [databases], [users], [peers], [cache] or [cache_shapes])" },
	{ "[parley\n", 1, "syntax error: missing \"]\" in section header" },
	{ "[parley] extra\n", 1, "syntax error: unexpected text after section header" },
	{ "[parley]\nlisten_port 6432\n", 2, "syntax error: expected \"name = value\"" },
	{ "[parley]\n= 5\n", 2, "syntax error: expected \"name = value\"" },
	{ "[parley]\n%foo bar\n", 2, "unknown directive \"%foo\" (only %include is supported)" },
	{ "[parley]\n%include\n", 2, "%include needs a file name" },
	{ "[databases]\n\"unterminated = x\n", 2, "syntax error: unterminated quoted name" },
	{ "; c\n# c\n[pgbouncer]\nlisten_prot = 1\n", 4, "unknown setting \"listen_prot\" in [pgbouncer]" },
	{ "[parley]\r\nlisten_port = abc\r\n", 2, "invalid value \"abc\" for listen_port: not an integer" },
	{ "[parley]\nlisten_port = 6432 ; comment\n", 2, "invalid value \"6432 ; comment\" for listen_port: not an integer" },
	/* [databases] entries, all on line 2 */
	{ "[databases]\ndb = host=x bogus=1\n", 2, "database \"db\": unknown parameter \"bogus\"" },
	{ "[databases]\ndb = port=abc\n", 2, "database \"db\": invalid value \"abc\" for port: not an integer" },
	{ "[databases]\ndb = port=0\n", 2, "database \"db\": invalid value \"0\" for port: must be between 1 and 65535" },
	{ "[databases]\ndb = pool_size=-1\n", 2, "database \"db\": invalid value \"-1\" for pool_size: must be between 0 and 2147483647" },
	{ "[databases]\ndb = max_db_connections=x\n", 2, "database \"db\": invalid value \"x\" for max_db_connections: not an integer" },
	{ "[databases]\ndb = pool_mode=fast\n", 2,
	  "database \"db\": invalid value \"fast\" for pool_mode: expected session, transaction or statement" },
	{ "[databases]\ndb = connect_query='select 1\n", 2, "database \"db\": unterminated quoted value for connect_query" },
	{ "[databases]\ndb = password='a'b\n", 2, "database \"db\": unexpected text after the quoted value of password" },
	{ "[databases]\ndb = port=5432 host=\n", 2, "database \"db\": missing value for host" },
	{ "[databases]\ndb = host\n", 2, "database \"db\": syntax error: expected key=value at \"host\"" },
	{ "[databases]\npgbouncer = host=x\n", 2, "database name \"pgbouncer\" is reserved for the admin console" },
	{ "[databases]\n\"\" = host=x\n", 2, "database name is empty" },
	/* [users] entries */
	{ "[users]\nbob = pool_size=x\n", 2, "user \"bob\": invalid value \"x\" for pool_size: not an integer" },
	{ "[users]\nbob = bogus=1\n", 2, "user \"bob\": unknown parameter \"bogus\"" },
	{ "[users]\nbob = pool_mode=none\n", 2, "user \"bob\": invalid value \"none\" for pool_mode: expected session, transaction or statement" },
	/* files that load */
	{ "\xEF\xBB\xBF[parley]\r\nlisten_port = 6000\r\n", 0, NULL },
	{ "[Parley]   ; comment after a header\n  # indented comment\n\tlisten_port\t=\t6000\n", 0, NULL },
	{ "[cache]\nanything = 60\n[peers]\n1 = host=x\n[parley]\nlisten_port = 6000\n", 0, NULL },
};

static void test_syntax(void **state)
{
	struct parley_config cfg;
	size_t i;

	for (i = 0; i < ARRAY_SIZE(syntax_cases); i++) {
		if (syntax_cases[i].msg) {
			load_fails(syntax_cases[i].content, syntax_cases[i].line, syntax_cases[i].msg);
		} else {
			load_ok(syntax_cases[i].content, &cfg, NULL);
			config_free(&cfg);
		}
	}
}

/* A file with no section at all (empty, or comments only: a truncated save) is refused, at startup and on RELOAD,
 * rather than loaded as "all defaults, no database". */
static void test_file_without_sections_is_refused(void **state)
{
	static const char *const contents[] = { "", "\n\n", "; only a comment\n# and another\n" };
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(contents); i++) {
		struct parley_config cfg;
		char err[1024] = "", expect[1200];
		const char *path = write_temp(contents[i]);
		if (config_load(path, &cfg, err, sizeof(err)) == 0) {
			config_free(&cfg);
			fail_msg("expected an error for:\n%s", contents[i]);
		}
		snprintf(expect, sizeof(expect),
			 "%s: no section at all (expected [parley] or [pgbouncer], and [databases])", path);
		assert_string_equal(err, expect);
	}
}

static void test_pgbouncer_alias(void **state)
{
	struct parley_config cfg;

	load_ok("; an unchanged pgbouncer.ini\n"
		"[databases]\n"
		"appdb = host=127.0.0.1 port=5432 dbname=app\n"
		"\n"
		"[pgbouncer]\n"
		"listen_addr = *\n"
		"listen_port = 6543\n"
		"auth_type = scram-sha-256\n"
		"auth_file = /etc/pgbouncer/userlist.txt\n"
		"pool_mode = transaction\n"
		"Max_Client_Conn = 500\n"
		"admin_users = postgres\n",
		&cfg, NULL);
	assert_string_equal(cfg.listen_addr, "*");
	assert_int_equal(cfg.listen_port, 6543);
	assert_int_equal(cfg.auth_type, AUTH_SCRAM);
	assert_string_equal(cfg.auth_file, "/etc/pgbouncer/userlist.txt");
	assert_int_equal(cfg.pool_mode, POOL_TRANSACTION);
	assert_int_equal(cfg.max_client_conn, 500);
	assert_non_null(config_find_db(&cfg, "appdb"));
	assert_null(cfg.warnings);
	assert_non_null(cfg.config_file);
	assert_true(cfg.config_file[0] == '/');
	config_free(&cfg);
}

static void test_include(void **state)
{
	struct parley_config cfg;
	char err[1024], expect[4096], main_path[1024], bad_path[1024];

	write_named("sub/extra.ini", "default_pool_size = 5\nmax_client_conn = 55\n[databases]\nincdb = host=h\n%include more.ini\n");
	write_named("sub/more.ini", "[parley]\nverbose = 2\n");
	snprintf(main_path, sizeof(main_path), "%s",
		 write_named("main.ini", "[parley]\nlisten_port = 7000\n%include sub/extra.ini\ndefault_pool_size = 9\n"));
	assert_int_equal(config_load(main_path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.listen_port, 7000);
	assert_int_equal(cfg.max_client_conn, 55);
	assert_int_equal(cfg.verbose, 2);
	/* sub/more.ini switched back to [parley], so the last line of main.ini is a setting again */
	assert_int_equal(cfg.default_pool_size, 9);
	assert_non_null(config_find_db(&cfg, "incdb"));
	assert_string_equal(cfg.config_file, main_path);
	config_free(&cfg);

	/* an error inside an included file names that file and its line */
	snprintf(bad_path, sizeof(bad_path), "%s", write_named("sub/bad.ini", "verbose = 1\nverbose = loud\n"));
	snprintf(main_path, sizeof(main_path), "%s", write_named("main2.ini", "[parley]\n%include sub/bad.ini\n"));
	assert_int_equal(config_load(main_path, &cfg, err, sizeof(err)), -1);
	snprintf(expect, sizeof(expect), "%s:2: invalid value \"loud\" for verbose: not an integer", bad_path);
	assert_string_equal(err, expect);

	/* a missing file is reported at the %include line */
	snprintf(main_path, sizeof(main_path), "%s", write_named("main3.ini", "[parley]\n\n%include  nothere.ini\n"));
	assert_int_equal(config_load(main_path, &cfg, err, sizeof(err)), -1);
	snprintf(expect, sizeof(expect), "%s:3: cannot open included file \"%s/nothere.ini\": No such file or directory", main_path,
		 tmpdir);
	assert_string_equal(err, expect);

	/* absolute include paths work too */
	snprintf(expect, sizeof(expect), "[parley]\n%%include %s/sub/more.ini\n", tmpdir);
	snprintf(main_path, sizeof(main_path), "%s", write_named("main4.ini", expect));
	assert_int_equal(config_load(main_path, &cfg, err, sizeof(err)), 0);
	assert_int_equal(cfg.verbose, 2);
	config_free(&cfg);

	/* a file including itself hits the depth limit */
	snprintf(main_path, sizeof(main_path), "%s", write_named("loop.ini", "[parley]\n%include loop.ini\n"));
	assert_int_equal(config_load(main_path, &cfg, err, sizeof(err)), -1);
	snprintf(expect, sizeof(expect), "%s:2: %%include nested more than 10 levels deep (is a file including itself?)", main_path);
	assert_string_equal(err, expect);
}

static void test_databases(void **state)
{
	struct parley_config cfg;
	struct db_def *db;

	load_ok("[databases]\n"
		"full = host=10.0.0.1 port=5433 dbname=real user=u password=p auth_user=au auth_dbname=adb auth_query='SELECT 1' pool_size=5 min_pool_size=1"
		" reserve_pool=2 max_db_connections=9 pool_mode=transaction application_name=app client_encoding=UTF8"
		" datestyle=ISO timezone=UTC\n"
		"quoted = host=/var/run/postgresql connect_query='SELECT set_config(''a.b'', ''x'', false)'"
		" password='it\\'s  a \\\\ secret' Reserve_Pool_Size=3 application_name=''\n"
		"\"odd name\" = dbname=x\n"
		"empty =\n"
		"* = host=127.0.0.1\n",
		&cfg, NULL);
	assert_int_equal(HASH_COUNT(cfg.databases), 5);

	db = config_find_db(&cfg, "full");
	assert_non_null(db);
	assert_string_equal(db->name, "full");
	assert_string_equal(db->host, "10.0.0.1");
	assert_int_equal(db->port, 5433);
	assert_string_equal(db->dbname, "real");
	assert_string_equal(db->user, "u");
	assert_string_equal(db->password, "p");
	assert_string_equal(db->auth_user, "au");
	assert_string_equal(db->auth_dbname, "adb");
	assert_string_equal(db->auth_query, "SELECT 1");
	assert_int_equal(db->pool_size, 5);
	assert_int_equal(db->min_pool_size, 1);
	assert_int_equal(db->reserve_pool, 2);
	assert_int_equal(db->max_db_connections, 9);
	assert_int_equal(db->pool_mode, POOL_TRANSACTION);
	assert_string_equal(db->application_name, "app");
	assert_string_equal(db->client_encoding, "UTF8");
	assert_string_equal(db->datestyle, "ISO");
	assert_string_equal(db->timezone, "UTC");
	assert_null(db->connect_query);

	db = config_find_db(&cfg, "quoted");
	assert_string_equal(db->host, "/var/run/postgresql");
	assert_string_equal(db->connect_query, "SELECT set_config('a.b', 'x', false)");
	assert_string_equal(db->password, "it's  a \\ secret");
	assert_int_equal(db->reserve_pool, 3);
	assert_string_equal(db->application_name, "");

	db = config_find_db(&cfg, "odd name");
	assert_string_equal(db->name, "odd name");
	assert_string_equal(db->dbname, "x");

	/* nothing given: everything inherits */
	db = config_find_db(&cfg, "empty");
	assert_string_equal(db->name, "empty");
	assert_null(db->host);
	assert_int_equal(db->port, 5432);
	assert_null(db->dbname);
	assert_null(db->user);
	assert_null(db->password);
	assert_int_equal(db->pool_size, -1);
	assert_int_equal(db->min_pool_size, -1);
	assert_int_equal(db->reserve_pool, -1);
	assert_int_equal(db->max_db_connections, -1);
	assert_int_equal(db->pool_mode, POOL_MODE_UNSET);

	/* unknown names fall back to "*"; names are case-sensitive */
	db = config_find_db(&cfg, "whatever");
	assert_non_null(db);
	assert_string_equal(db->name, "*");
	assert_string_equal(db->host, "127.0.0.1");
	assert_string_equal(config_find_db(&cfg, "FULL")->name, "*");
	assert_null(cfg.warnings);
	config_free(&cfg);

	/* without "*" there is no fallback */
	load_ok("[databases]\nonly = host=h\n", &cfg, NULL);
	assert_null(config_find_db(&cfg, "other"));
	assert_non_null(config_find_db(&cfg, "only"));
	config_free(&cfg);
}

static void test_users(void **state)
{
	struct parley_config cfg;
	struct user_def *u;

	load_ok("[users]\n"
		"alice = pool_mode=statement pool_size=3 max_user_connections=7\n"
		"bob =\n",
		&cfg, NULL);
	u = config_find_user(&cfg, "alice");
	assert_non_null(u);
	assert_int_equal(u->pool_mode, POOL_STATEMENT);
	assert_int_equal(u->pool_size, 3);
	assert_int_equal(u->max_user_connections, 7);
	u = config_find_user(&cfg, "bob");
	assert_non_null(u);
	assert_int_equal(u->pool_mode, POOL_MODE_UNSET);
	assert_int_equal(u->pool_size, -1);
	assert_int_equal(u->max_user_connections, -1);
	assert_null(config_find_user(&cfg, "carol"));
	config_free(&cfg);
}

/* Keys accepted only for compatibility load, show in SHOW CONFIG, and leave one warning line each. */
static void test_warnings(void **state)
{
	struct parley_config cfg;
	const char *path;
	char expect[4096];

	load_ok("[pgbouncer]\n"
		"syslog = 1\n"
		"listen_port = 6000\n"
		"client_tls_ecdhcurve = prime256v1\n"
		"[peers]\n"
		"1 = host=x\n"
		"[databases]\n"
		"d = host=x load_balance_hosts=disable\n"
		"d = host=y\n"
		"[users]\n"
		"u = max_user_client_connections=3\n",
		&cfg, &path);
	snprintf(expect, sizeof(expect),
		 "%1$s:2: setting \"syslog\" is accepted for compatibility but has no effect in parley\n"
		 "%1$s:4: setting \"client_tls_ecdhcurve\" is accepted for compatibility but has no effect in parley\n"
		 "%1$s:8: database \"d\": parameter \"load_balance_hosts\" is accepted for compatibility but has no effect in parley\n"
		 "%1$s:9: database \"d\" is defined again; this definition replaces the earlier one\n"
		 "%1$s:11: user \"u\": parameter \"max_user_client_connections\" is accepted for compatibility but has no effect in parley\n",
		 path);
	assert_non_null(cfg.warnings);
	assert_string_equal(cfg.warnings, expect);
	assert_string_equal(text_of(&cfg, "syslog"), "1");
	assert_string_equal(text_of(&cfg, "client_tls_ecdhcurve"), "prime256v1");
	assert_string_equal(text_of(&cfg, "server_tls_sslmode"), "prefer");   /* PgBouncer's default */
	assert_string_equal(config_find_db(&cfg, "d")->host, "y");
	assert_int_equal(cfg.listen_port, 6000);
	config_free(&cfg);
}

static void test_config_set(void **state)
{
	struct parley_config cfg;
	char err[512];

	config_init_defaults(&cfg);
	assert_int_equal(config_set(&cfg, "default_pool_size", "50", err, sizeof(err)), 0);
	assert_int_equal(cfg.default_pool_size, 50);
	assert_int_equal(config_set(&cfg, "Default_Pool_Size", "  51 ", err, sizeof(err)), 0);
	assert_int_equal(cfg.default_pool_size, 51);
	assert_int_equal(config_set(&cfg, "query_timeout", "1.5", err, sizeof(err)), 0);
	assert_int_equal(cfg.query_timeout, 1500000);
	assert_int_equal(config_set(&cfg, "pool_mode", "transaction", err, sizeof(err)), 0);
	assert_int_equal(cfg.pool_mode, POOL_TRANSACTION);
	assert_int_equal(config_set(&cfg, "server_reset_query", "", err, sizeof(err)), 0);
	assert_string_equal(cfg.server_reset_query, "");
	assert_int_equal(config_set(&cfg, "auth_file", "/x", err, sizeof(err)), 0);
	assert_string_equal(cfg.auth_file, "/x");
	assert_int_equal(config_set(&cfg, "auth_file", "", err, sizeof(err)), 0);
	assert_null(cfg.auth_file);
	assert_int_equal(config_set(&cfg, "admin_users", "alice, bob", err, sizeof(err)), 0);
	assert_true(config_list_contains(cfg.admin_users, "bob"));

	assert_int_equal(config_set(&cfg, "listen_port", "7000", err, sizeof(err)), -1);
	assert_string_equal(err, "setting \"listen_port\" cannot be changed without a restart");
	assert_int_equal(cfg.listen_port, 6432);
	assert_int_equal(config_set(&cfg, "nosuch", "1", err, sizeof(err)), -1);
	assert_string_equal(err, "unknown setting \"nosuch\"");
	assert_int_equal(config_set(&cfg, "default_pool_size", "x", err, sizeof(err)), -1);
	assert_string_equal(err, "invalid value \"x\" for default_pool_size: not an integer");
	assert_int_equal(cfg.default_pool_size, 51);
	assert_int_equal(config_set(&cfg, "auth_type", "cert", err, sizeof(err)), -1);
	assert_string_equal(err, "auth_type 'cert' is not supported yet (use trust, any, plain, md5, scram-sha-256 or hba)");
	assert_int_equal(cfg.auth_type, AUTH_MD5);
	assert_int_equal(config_set(&cfg, "syslog", "1", err, sizeof(err)), -1);
	assert_string_equal(err, "setting \"syslog\" is accepted in the configuration file for compatibility but has no effect in parley");
	config_free(&cfg);
}

/* value_text output parses back to the same value: through a file for every setting, through SET where allowed. */
static void test_value_text_roundtrip(void **state)
{
	struct parley_config a, b;
	size_t n, i, len = 0;
	const struct setting *t = config_settings(&n);
	char *content = xmalloc(65536), buf[512], buf2[512], err[512];

	load_ok("[parley]\nquery_timeout = 0.123456\nserver_lifetime = 90min\npool_utilization_warn = 0.1\nunix_socket_mode = 0640\n"
		"auth_type = trust\nlog_stats = no\nauth_file = /a b/c\nsyslog_ident = x\ndns_zone_check_period = 1ms\n",
		&a, NULL);
	len += (size_t)snprintf(content + len, 65536 - len, "[parley]\n");
	for (i = 0; i < n; i++)
		len += (size_t)snprintf(content + len, 65536 - len, "%s = %s\n", t[i].name, config_value_text(&a, &t[i], buf, sizeof(buf)));
	assert_true(len < 65536);
	load_ok(content, &b, NULL);
	for (i = 0; i < n; i++) {
		config_value_text(&a, &t[i], buf, sizeof(buf));
		assert_string_equal(config_value_text(&b, &t[i], buf2, sizeof(buf2)), buf);
		if (!t[i].implemented || !t[i].reloadable)
			continue;
		assert_int_equal(config_set(&b, t[i].name, buf, err, sizeof(err)), 0);
		assert_string_equal(config_value_text(&b, &t[i], buf2, sizeof(buf2)), buf);
	}
	assert_string_equal(text_of(&b, "query_timeout"), "0.123456");
	assert_string_equal(text_of(&b, "server_lifetime"), "5400");
	assert_string_equal(text_of(&b, "dns_zone_check_period"), "0.001");
	config_free(&a);
	config_free(&b);
	free(content);
}

static void test_list_contains(void **state)
{
	assert_true(config_list_contains("alice", "alice"));
	assert_true(config_list_contains("alice,bob", "bob"));
	assert_true(config_list_contains("alice, bob ,carol", "bob"));
	assert_true(config_list_contains(" alice  bob\tcarol ", "carol"));
	assert_false(config_list_contains("alice,bob", "ali"));
	assert_false(config_list_contains("alice,bob", "bobby"));
	assert_false(config_list_contains("alice,bob", "Alice"));
	assert_false(config_list_contains("", "alice"));
	assert_false(config_list_contains(NULL, "alice"));
	assert_false(config_list_contains("alice", ""));
	assert_false(config_list_contains(",,", ""));
}

static void test_names(void **state)
{
	assert_string_equal(pool_mode_name(POOL_SESSION), "session");
	assert_string_equal(pool_mode_name(POOL_TRANSACTION), "transaction");
	assert_string_equal(pool_mode_name(POOL_STATEMENT), "statement");
	assert_string_equal(pool_mode_name(POOL_MODE_UNSET), "unset");
	assert_string_equal(auth_type_name(AUTH_TRUST), "trust");
	assert_string_equal(auth_type_name(AUTH_ANY), "any");
	assert_string_equal(auth_type_name(AUTH_PLAIN), "plain");
	assert_string_equal(auth_type_name(AUTH_MD5), "md5");
	assert_string_equal(auth_type_name(AUTH_SCRAM), "scram-sha-256");
	assert_string_equal(auth_type_name(AUTH_HBA), "hba");
}

static void test_missing_file(void **state)
{
	struct parley_config cfg;
	char err[512];

	assert_int_equal(config_load("/nonexistent/parley/x.ini", &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "/nonexistent/parley/x.ini: cannot open: No such file or directory");
	assert_int_equal(config_load(tmpdir, &cfg, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot read: Is a directory"));
	assert_null(cfg.listen_addr);
}

/* etc/parley.ini loads cleanly and mentions every setting as "name =" (usually commented out). */
static void test_sample_ini(void **state)
{
	static const char *const fallbacks[] = { "etc/parley.ini", "../etc/parley.ini", "../../etc/parley.ini" };
	const char *srcdir = getenv("PARLEY_SRCDIR");
	char path[PATH_MAX], line[4096], err[1024];
	size_t n, i;
	const struct setting *t = config_settings(&n);
	bool *seen = xcalloc(n, sizeof(bool));
	struct parley_config cfg;
	FILE *fp = NULL;

	if (srcdir) {
		snprintf(path, sizeof(path), "%s/etc/parley.ini", srcdir);
	} else if (access(__FILE__, R_OK) == 0 && strstr(__FILE__, "tests/unit/")) {
		/* next to this source file, when run from where it was compiled */
		snprintf(path, sizeof(path), "%.*setc/parley.ini", (int)(strstr(__FILE__, "tests/unit/") - __FILE__), __FILE__);
	} else {
		for (i = 0; i < ARRAY_SIZE(fallbacks); i++)
			if (access(fallbacks[i], R_OK) == 0)
				break;
		assert_true(i < ARRAY_SIZE(fallbacks));
		snprintf(path, sizeof(path), "%s", fallbacks[i]);
	}
	if (config_load(path, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_null(cfg.warnings);
	assert_non_null(config_find_db(&cfg, "postgres"));
	assert_string_equal(config_find_db(&cfg, "anything")->name, "*");
	assert_string_equal(cfg.listen_addr, "127.0.0.1");
	assert_int_equal(cfg.listen_port, 6432);
	config_free(&cfg);

	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp)) {
		char *p = line + strspn(line, "; \t");
		size_t k = strcspn(p, " \t=");
		const struct setting *s;
		if (!k || p[k + strspn(p + k, " \t")] != '=')
			continue;
		p[k] = '\0';
		s = config_find_setting(p);
		if (s)
			seen[s - t] = true;
	}
	fclose(fp);
	for (i = 0; i < n; i++)
		if (!seen[i])
			fail_msg("%s does not mention setting %s", path, t[i].name);
	free(seen);
}

/* ---- the query cache settings and the [cache] / [cache_shapes] sections ---- */

static const struct good_case cache_good_cases[] = {
	{ "cache_max_memory = 1048576", "cache_max_memory", "1MB" },
	{ "cache_max_memory = 64MB", "cache_max_memory", "64MB" },
	{ "cache_max_memory = 512 kB", "cache_max_memory", "512kB" },
	{ "cache_max_memory = 2gb", "cache_max_memory", "2GB" },
	{ "cache_max_memory = 1TB", "cache_max_memory", "1TB" },
	{ "cache_max_memory = 1000", "cache_max_memory", "1000" },
	{ "cache_max_memory = 1000B", "cache_max_memory", "1000" },
	{ "cache_max_memory = 0", "cache_max_memory", "0" },
	{ "cache_max_entry_size = 100kB", "cache_max_entry_size", "100kB" },
	{ "cache_enabled = off", "cache_enabled", "0" },
	{ "cache_wait_timeout = 250ms", "cache_wait_timeout", "0.25" },
	{ "cache_max_shapes = 50", "cache_max_shapes", "50" },
};

static const struct file_case cache_bad_cases[] = {
	{ "[parley]\ncache_max_memory = lots\n", 2,
	  "invalid value \"lots\" for cache_max_memory: not a size (bytes, or a whole number with unit kB, MB, GB or TB)" },
	{ "[parley]\ncache_max_memory = 10XB\n", 2, "invalid value \"10XB\" for cache_max_memory: unknown size unit \"XB\" (use kB, MB, GB or TB)" },
	{ "[parley]\ncache_max_memory = -1\n", 2,
	  "invalid value \"-1\" for cache_max_memory: not a size (bytes, or a whole number with unit kB, MB, GB or TB)" },
	{ "[parley]\ncache_max_memory = 1.5GB\n", 2, "invalid value \"1.5GB\" for cache_max_memory: unknown size unit \".5GB\" (use kB, MB, GB or TB)" },
	{ "[parley]\ncache_max_memory = 2TB\n", 2, "invalid value \"2TB\" for cache_max_memory: must be between 0 and 1099511627776 bytes" },
	{ "[parley]\ncache_max_memory = 99999999999999999999999\n", 2,
	  "invalid value \"99999999999999999999999\" for cache_max_memory: must be between 0 and 1099511627776 bytes" },
	{ "[parley]\ncache_max_entry_size = 2GB\n", 2, "invalid value \"2GB\" for cache_max_entry_size: must be between 0 and 1073741824 bytes" },
	{ "[parley]\ncache_max_shapes = 0\n", 2, "invalid value \"0\" for cache_max_shapes: must be between 1 and 2147483647" },
	{ "[parley]\ncache_enabled = maybe\n", 2,
	  "invalid value \"maybe\" for cache_enabled: not a boolean (use 1/0, yes/no, on/off or true/false)" },
	/* [cache] */
	{ "[cache]\nparlant_agent = soon\n", 2,
	  "[cache]: invalid value \"soon\" for the TTL of table parlant_agent: not a duration (seconds, or a number with unit us, ms, s, min, h or d)" },
	{ "[parley]\n[cache]\n\nparlant_agent = -5\n", 4, "[cache]: invalid value \"-5\" for the TTL of table parlant_agent: must not be negative" },
	{ "[cache]\nparlant_agent = 1.5\n", 2, "[cache]: invalid value \"1.5\" for the TTL of table parlant_agent: must be a whole number of seconds" },
	{ "[cache]\nparlant_agent = 10ms\n", 2, "[cache]: invalid value \"10ms\" for the TTL of table parlant_agent: must be a whole number of seconds" },
	{ "[cache]\nparlant_agent = 5 weeks\n", 2,
	  "[cache]: invalid value \"5 weeks\" for the TTL of table parlant_agent: unknown time unit \"weeks\" (use us, ms, s, min, h or d)" },
	{ "[cache]\npublic.parlant_agent = 5\n", 2, "[cache]: write the table name \"public.parlant_agent\" without a schema (tables are matched by name)" },
	{ "[Cache]\n\"\" = 5\n", 2, "[Cache]: empty table name" },
	{ "[cache]\nparlant_agent\n", 2, "syntax error: expected \"name = value\"" },
	{ "[cache]\na234567890123456789012345678901234567890123456789012345678901234 = 5\n", 2,
	  "[cache]: table name \"a234567890123456789012345678901234567890...\" is longer than 63 bytes" },
	/* [cache_shapes] */
	{ "[cache_shapes]\nselect = 5\n", 2,
	  "[cache_shapes]: \"select\" is not a shape id (16 hex digits, optionally 0x); write a normalized query text in double quotes" },
	{ "[cache_shapes]\n0x123 = 5\n", 2,
	  "[cache_shapes]: \"0x123\" is not a shape id (16 hex digits, optionally 0x); write a normalized query text in double quotes" },
	{ "[cache_shapes]\n0123456789abcdeg = 5\n", 2,
	  "[cache_shapes]: \"0123456789abcdeg\" is not a shape id (16 hex digits, optionally 0x); write a normalized query text in double quotes" },
	{ "[cache_shapes]\n\"select 1\" = x\n", 2,
	  "[cache_shapes]: invalid value \"x\" for the TTL of shape \"select 1\": not a duration (seconds, or a number with unit us, ms, s, min, h or d)" },
	{ "[cache_shapes]\n\"select 1 = 5\n", 2, "syntax error: unterminated quoted name" },
	{ "[cache_shapes]\n\"\" = 5\n", 2, "[cache_shapes]: empty shape" },
};

static void test_cache_settings(void **state)
{
	struct parley_config cfg;
	char content[512], err[512];
	size_t i;

	config_init_defaults(&cfg);
	assert_true(cfg.cache_enabled);
	assert_int_equal(cfg.cache_max_memory, (size_t)256 << 20);
	assert_int_equal(cfg.cache_max_entry_size, (size_t)1 << 20);
	assert_int_equal(cfg.cache_wait_timeout, USEC_PER_SEC);
	assert_int_equal(cfg.cache_max_shapes, 2000);
	assert_null(cfg.cache_tables);
	assert_int_equal(cfg.ncache_tables, 0);
	assert_null(cfg.cache_shapes);
	assert_int_equal(cfg.ncache_shapes, 0);
	assert_string_equal(text_of(&cfg, "cache_max_memory"), "256MB");
	assert_string_equal(text_of(&cfg, "cache_max_entry_size"), "1MB");
	/* reloadable: SET works, with the same parsing */
	assert_int_equal(config_set(&cfg, "cache_max_memory", "3 MB", err, sizeof(err)), 0);
	assert_int_equal(cfg.cache_max_memory, (size_t)3 << 20);
	assert_int_equal(config_set(&cfg, "cache_enabled", "no", err, sizeof(err)), 0);
	assert_false(cfg.cache_enabled);
	assert_int_equal(config_set(&cfg, "cache_max_entry_size", "1x", err, sizeof(err)), -1);
	assert_string_equal(err, "invalid value \"1x\" for cache_max_entry_size: unknown size unit \"x\" (use kB, MB, GB or TB)");
	assert_int_equal(cfg.cache_max_entry_size, (size_t)1 << 20);
	config_free(&cfg);

	for (i = 0; i < ARRAY_SIZE(cache_good_cases); i++) {
		snprintf(content, sizeof(content), "[parley]\n%s\n", cache_good_cases[i].line);
		load_ok(content, &cfg, NULL);
		if (strcmp(text_of(&cfg, cache_good_cases[i].key), cache_good_cases[i].shown) != 0)
			fail_msg("\"%s\": shown as \"%s\", expected \"%s\"", cache_good_cases[i].line,
				 text_of(&cfg, cache_good_cases[i].key), cache_good_cases[i].shown);
		config_free(&cfg);
	}
	load_ok("[parley]\ncache_max_memory = 512 kB\ncache_max_entry_size = 2000\n", &cfg, NULL);
	assert_int_equal(cfg.cache_max_memory, 512 * 1024);
	assert_int_equal(cfg.cache_max_entry_size, 2000);
	config_free(&cfg);
	for (i = 0; i < ARRAY_SIZE(cache_bad_cases); i++)
		load_fails(cache_bad_cases[i].content, cache_bad_cases[i].line, cache_bad_cases[i].msg);
}

/* Finds rule key in rules[0..n) and returns its TTL, or -1. */
static int rule_ttl(const struct cache_rule *rules, int n, const char *key)
{
	int i;
	for (i = 0; i < n; i++)
		if (strcmp(rules[i].key, key) == 0)
			return rules[i].ttl_sec;
	return -1;
}

static void test_cache_sections(void **state)
{
	struct parley_config cfg;
	const char *path;
	char expect[2048];

	load_ok("[cache]\n"
		"Parlant_Agent = 300\n"
		"parlant_tool = 10min\n"
		"\"Quoted Table\" = 1h\n"
		"parlant_event = 0\n"
		"[cache_shapes]\n"
		"0x5E1F0C0A3B2D4E6F = 0\n"
		"0123456789abcdef = 30\n"
		"\"select * from parlant_agent where id = $1 and name = \"\"x\"\"\" = 60\n"
		"[parley]\n"
		"listen_port = 7000\n"
		"[cache]\n"
		"parlant_agent = 400\n",
		&cfg, &path);
	assert_int_equal(cfg.listen_port, 7000);
	assert_int_equal(cfg.ncache_tables, 4);
	/* file order, names lower-cased, a later line replaces the earlier TTL in place */
	assert_string_equal(cfg.cache_tables[0].key, "parlant_agent");
	assert_int_equal(cfg.cache_tables[0].ttl_sec, 400);
	assert_int_equal(rule_ttl(cfg.cache_tables, cfg.ncache_tables, "parlant_tool"), 600);
	assert_int_equal(rule_ttl(cfg.cache_tables, cfg.ncache_tables, "quoted table"), 3600);
	assert_int_equal(rule_ttl(cfg.cache_tables, cfg.ncache_tables, "parlant_event"), 0);
	assert_int_equal(cfg.ncache_shapes, 3);
	assert_int_equal(rule_ttl(cfg.cache_shapes, cfg.ncache_shapes, "0x5E1F0C0A3B2D4E6F"), 0);
	assert_int_equal(rule_ttl(cfg.cache_shapes, cfg.ncache_shapes, "0123456789abcdef"), 30);
	assert_int_equal(rule_ttl(cfg.cache_shapes, cfg.ncache_shapes, "select * from parlant_agent where id = $1 and name = \"x\""), 60);
	snprintf(expect, sizeof(expect), "%s:13: [cache]: \"parlant_agent\" is listed again; this line replaces the earlier one\n", path);
	assert_non_null(cfg.warnings);
	assert_string_equal(cfg.warnings, expect);
	config_free(&cfg);
	assert_null(cfg.cache_tables);
	assert_int_equal(cfg.ncache_shapes, 0);

	/* an included file continues the [cache] section it was included from */
	write_named("cache_inc.ini", "parlant_journey = 600\n");
	load_ok("[cache]\nparlant_agent = 5\n%include cache_inc.ini\n", &cfg, NULL);
	assert_int_equal(cfg.ncache_tables, 2);
	assert_int_equal(rule_ttl(cfg.cache_tables, cfg.ncache_tables, "parlant_journey"), 600);
	assert_null(cfg.warnings);
	config_free(&cfg);
}

/* etc/parlant.ini loads without warnings and carries the Parlant policy and timeouts. */
static void test_parlant_ini(void **state)
{
	static const struct { const char *table; int ttl; } policy[] = {
		{ "parlant_agent", 300 }, { "parlant_tool", 600 }, { "parlant_agent_tool", 600 },
		{ "parlant_journey", 600 }, { "parlant_journey_state", 600 }, { "parlant_journey_transition", 600 },
	};
	const char *srcdir = getenv("PARLEY_SRCDIR");
	char path[PATH_MAX], err[1024];
	struct parley_config cfg;
	size_t i;

	if (srcdir)
		snprintf(path, sizeof(path), "%s/etc/parlant.ini", srcdir);
	else if (strstr(__FILE__, "tests/unit/"))
		snprintf(path, sizeof(path), "%.*setc/parlant.ini", (int)(strstr(__FILE__, "tests/unit/") - __FILE__), __FILE__);
	else
		snprintf(path, sizeof(path), "etc/parlant.ini");
	if (config_load(path, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_null(cfg.warnings);
	assert_int_equal(cfg.pool_mode, POOL_TRANSACTION);
	assert_int_equal(cfg.default_pool_size, 20);
	assert_int_equal(cfg.server_connect_timeout, 5 * USEC_PER_SEC);
	assert_int_equal(cfg.server_idle_timeout, 30 * USEC_PER_SEC);
	assert_int_equal(cfg.idle_transaction_timeout, 30 * USEC_PER_SEC);
	assert_int_equal(cfg.slow_query_threshold, USEC_PER_SEC);
	assert_true(cfg.pool_utilization_warn > 0.799 && cfg.pool_utilization_warn < 0.801);
	assert_true(cfg.cache_enabled);
	assert_non_null(config_find_db(&cfg, "parlant"));
	assert_int_equal(cfg.ncache_tables, (int)ARRAY_SIZE(policy));
	for (i = 0; i < ARRAY_SIZE(policy); i++)
		if (rule_ttl(cfg.cache_tables, cfg.ncache_tables, policy[i].table) != policy[i].ttl)
			fail_msg("%s: [cache] %s should be %d", path, policy[i].table, policy[i].ttl);
	config_free(&cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_good_values),
		cmocka_unit_test(test_bad_values),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_file_without_sections_is_refused),
		cmocka_unit_test(test_pgbouncer_alias),
		cmocka_unit_test(test_include),
		cmocka_unit_test(test_databases),
		cmocka_unit_test(test_users),
		cmocka_unit_test(test_warnings),
		cmocka_unit_test(test_config_set),
		cmocka_unit_test(test_value_text_roundtrip),
		cmocka_unit_test(test_list_contains),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_sample_ini),
		cmocka_unit_test(test_cache_settings),
		cmocka_unit_test(test_cache_sections),
		cmocka_unit_test(test_parlant_ini),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
