/* test_hba.c — cmocka tests for the pg_hba.conf subset (hba.c): good and malformed lines, first-match order, CIDR v4/v6, @file, peer. */
#include "hba.h"
#include <setjmp.h>
#include <stdarg.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

/* Parses text (no @file directory) and fails the test on an error. */
static struct hba *parse_ok(const char *text)
{
	struct hba *h = NULL;
	char err[512];
	int rc = hba_parse(text, strlen(text), "t.conf", NULL, &h, err, sizeof(err));
	if (rc != 0)
		fail_msg("unexpected parse error: %s", err);
	assert_non_null(h);
	return h;
}

/* Parses text that must fail and checks the whole message. */
static void parse_fails(const char *text, const char *expect)
{
	struct hba *h = NULL;
	char err[512];
	int rc = hba_parse(text, strlen(text), "t.conf", NULL, &h, err, sizeof(err));
	if (rc != -1)
		fail_msg("parsed although it should not: %s", text);
	assert_null(h);
	assert_string_equal(err, expect);
}

/* Convenience: the method of the first matching rule, or -1 when none matches. */
static int method_for(const struct hba *h, bool local, bool tls, const char *addr, const char *db, const char *user)
{
	struct hba_client c = { .local = local, .tls = tls, .addr = addr, .database = db, .user = user };
	const struct hba_rule *r = hba_match(h, &c);
	return r ? (int)r->method : -1;
}

static void test_good_lines(void **state)
{
	(void)state;
	struct hba *h = parse_ok(
		"# comment line\n"
		"\n"
		"local   all        all                         peer\n"
		"host    db1,db2    alice,bob   127.0.0.1/32    md5   # trailing comment\n"
		"hostssl all        all         ::1/128         scram-sha-256\n"
		"hostnossl \"all\"  \"a b\"     10.0.0.0 255.0.0.0  password\n"
		"host    sameuser   all         all             trust\n"
		"host    db1, db2   carol       samehost        reject\n"
		"hostssl all        all         0.0.0.0/0       cert\n"
		"host    replication all        all             trust\n"
		"host    all        all         samenet \\\n"
		"        md5\n");
	assert_int_equal(h->count, 9);
	assert_string_equal(h->path, "t.conf");

	assert_int_equal(h->rules[0].conn, HBA_CONN_LOCAL);
	assert_int_equal(h->rules[0].addr_kind, HBA_ADDR_NONE);
	assert_true(h->rules[0].db.all && h->rules[0].user.all);
	assert_int_equal(h->rules[0].method, HBA_PEER);
	assert_int_equal(h->rules[0].line, 3);

	assert_int_equal(h->rules[1].conn, HBA_CONN_HOST);
	assert_int_equal(h->rules[1].db.count, 2);
	assert_string_equal(h->rules[1].db.names[0], "db1");
	assert_string_equal(h->rules[1].db.names[1], "db2");
	assert_int_equal(h->rules[1].user.count, 2);
	assert_string_equal(h->rules[1].user.names[1], "bob");
	assert_int_equal(h->rules[1].family, AF_INET);
	assert_int_equal(h->rules[1].method, HBA_MD5);

	assert_int_equal(h->rules[2].conn, HBA_CONN_HOSTSSL);
	assert_int_equal(h->rules[2].family, AF_INET6);
	assert_int_equal(h->rules[2].method, HBA_SCRAM);

	/* quoted keywords are plain names; quotes keep blanks */
	assert_int_equal(h->rules[3].conn, HBA_CONN_HOSTNOSSL);
	assert_false(h->rules[3].db.all);
	assert_string_equal(h->rules[3].db.names[0], "all");
	assert_string_equal(h->rules[3].user.names[0], "a b");
	assert_int_equal(h->rules[3].addr_kind, HBA_ADDR_NET);
	assert_int_equal(h->rules[3].mask[0], 0xff);
	assert_int_equal(h->rules[3].mask[1], 0);
	assert_int_equal(h->rules[3].method, HBA_PASSWORD);

	assert_true(h->rules[4].db.sameuser);
	assert_int_equal(h->rules[4].addr_kind, HBA_ADDR_ALL);
	/* blanks after a comma continue the list */
	assert_int_equal(h->rules[5].db.count, 2);
	assert_string_equal(h->rules[5].db.names[1], "db2");
	assert_int_equal(h->rules[5].addr_kind, HBA_ADDR_SAMEHOST);
	assert_int_equal(h->rules[5].method, HBA_REJECT);
	assert_int_equal(h->rules[6].method, HBA_CERT);
	assert_true(h->rules[7].db.replication);
	/* a continued record keeps the number of its first line */
	assert_int_equal(h->rules[8].addr_kind, HBA_ADDR_SAMENET);
	assert_int_equal(h->rules[8].method, HBA_MD5);
	assert_int_equal(h->rules[8].line, 11);
	hba_free(h);
}

static void test_malformed_lines(void **state)
{
	(void)state;
	/* each bad line next to the good lines it resembles, so the line number is checked too */
	parse_fails("host all all 127.0.0.1/32 md5\nhots all all 127.0.0.1/32 md5\n",
		    "t.conf:2: invalid connection type \"hots\" (expected local, host, hostssl or hostnossl)");
	parse_fails("host all all 127.0.0.1/32 md5\nhostgssenc all all all md5\n",
		    "t.conf:2: connection type \"hostgssenc\" is not supported (no GSSAPI encryption)");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 ident\n",
		    "t.conf:2: authentication method \"ident\" is not supported (use trust, reject, md5, password, "
		    "scram-sha-256, cert or peer)");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all all 127.0.0.1/32 md6\n",
		    "t.conf:2: invalid authentication method \"md6\"");
	parse_fails("local all all peer\nhost all all 127.0.0.1/32 peer\n",
		    "t.conf:2: peer authentication is only supported on local sockets");
	parse_fails("hostssl all all all cert\nhost all all all cert\n",
		    "t.conf:2: cert authentication is only supported on hostssl connections");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all +admins 127.0.0.1/32 md5\n",
		    "t.conf:2: group membership \"+admins\" is not supported (PgBouncer does not know role membership); "
		    "list the users or use @file");
	parse_fails("host all all all md5\nhost samerole all all md5\n",
		    "t.conf:2: database keyword \"samerole\" is not supported (PgBouncer does not know role membership)");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all all 127.0.0.1/33 md5\n",
		    "t.conf:2: invalid CIDR mask in address \"127.0.0.1/33\"");
	parse_fails("host all all ::1/128 md5\nhost all all ::1/129 md5\n",
		    "t.conf:2: invalid CIDR mask in address \"::1/129\"");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all all 127.0.0.1/x md5\n",
		    "t.conf:2: invalid CIDR mask in address \"127.0.0.1/x\"");
	parse_fails("host all all 127.0.0.1/32 md5\nhost all all db.example.com md5\n",
		    "t.conf:2: invalid IP address \"db.example.com\" (host names and domain suffixes are not supported)");
	parse_fails("host all all 10.0.0.0 255.0.0.0 md5\nhost all all 10.0.0.0 md5\n",
		    "t.conf:2: invalid IP mask \"md5\" after address \"10.0.0.0\" (write ADDRESS/BITS or ADDRESS NETMASK)");
	parse_fails("host all all 10.0.0.0 255.0.0.0 md5\nhost all all 10.0.0.0 ffff:: md5\n",
		    "t.conf:2: invalid IP mask \"ffff::\" after address \"10.0.0.0\" (write ADDRESS/BITS or ADDRESS NETMASK)");
	parse_fails("host all all 10.0.0.0\n",
		    "t.conf:1: end of line after the IP address: expected a netmask or a /bits suffix");
	parse_fails("local all all trust\nlocal all\n", "t.conf:2: end of line before the user field");
	parse_fails("local all all trust\nlocal\n", "t.conf:2: end of line before the database field");
	parse_fails("host all all all trust\nhost all all\n", "t.conf:2: end of line before the address field");
	parse_fails("local all all trust\nlocal all all\n", "t.conf:2: end of line before the authentication method");
	parse_fails("host all all all md5\nhost all all all md5 clientcert=verify-full\n",
		    "t.conf:2: authentication option \"clientcert\" is not supported");
	parse_fails("host all all all md5\nhost all all all md5 extra\n",
		    "t.conf:2: unexpected \"extra\" after the authentication method");
	parse_fails("host all all all md5\nhost all \"bob all all md5\n", "t.conf:2: unterminated quoted string");
	parse_fails("host all all all md5\nhost db1,,db2 all all md5\n",
		    "t.conf:2: empty element in a comma-separated list");
	parse_fails("host all all all md5\nhost db1, all\n", "t.conf:2: end of line before the user field");
	parse_fails("host all all all md5\nhost db1,\n", "t.conf:2: list ends with a comma");
	parse_fails("host all all all,127.0.0.1/32 md5\n", "t.conf:1: multiple values specified for the host address");
	parse_fails("host all all all md5,trust\n", "t.conf:1: multiple values specified for the authentication method");
	parse_fails("host,local all all all md5\n", "t.conf:1: multiple values specified for the connection type");
	parse_fails("host @users all all md5\n",
		    "t.conf:1: @users: @file references need the hba file to be read from disk");
	{
		static const char nul[] = "host all all all md5\nhost all\0 all all md5\n";
		struct hba *h = NULL;
		char err[256];
		assert_int_equal(hba_parse(nul, sizeof(nul) - 1, "t.conf", NULL, &h, err, sizeof(err)), -1);
		assert_string_equal(err, "t.conf:2: line contains a NUL byte");
	}
}

static void test_first_match_wins(void **state)
{
	(void)state;
	struct hba *h = parse_ok(
		"host   app    bob    127.0.0.1/32  reject\n"
		"host   app    all    127.0.0.1/32  md5\n"
		"host   all    bob    all           trust\n"
		"host   all    all    10.1.0.0/16   password\n"
		"local  all    all                  scram-sha-256\n"
		"hostssl all   all    all           scram-sha-256\n"
		"hostnossl all carol  all           reject\n"
		"host   sameuser all  all           trust\n");

	assert_int_equal(method_for(h, false, false, "127.0.0.1", "app", "bob"), HBA_REJECT);
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "app", "alice"), HBA_MD5);
	assert_int_equal(method_for(h, false, false, "127.0.0.2", "app", "bob"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "10.1.200.3", "other", "alice"), HBA_PASSWORD);
	assert_int_equal(method_for(h, false, false, "10.2.0.1", "other", "alice"), -1);
	/* host lines never match unix-socket logins, local lines never TCP ones */
	assert_int_equal(method_for(h, true, false, NULL, "app", "bob"), HBA_SCRAM);
	assert_int_equal(method_for(h, true, false, NULL, "x", "y"), HBA_SCRAM);
	/* hostssl vs hostnossl */
	assert_int_equal(method_for(h, false, true, "192.0.2.1", "x", "carol"), HBA_SCRAM);
	assert_int_equal(method_for(h, false, false, "192.0.2.1", "x", "carol"), HBA_REJECT);
	/* sameuser */
	assert_int_equal(method_for(h, false, false, "192.0.2.1", "dave", "dave"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "192.0.2.1", "dave", "erin"), -1);
	/* names are case-sensitive */
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "APP", "alice"), -1);
	/* an unparsable client address matches only "all" */
	assert_int_equal(method_for(h, false, false, "garbage", "app", "bob"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "garbage", "app", "alice"), -1);
	/* no rules at all, or no hba: nothing matches */
	assert_int_equal(method_for(NULL, false, false, "127.0.0.1", "app", "bob"), -1);
	hba_free(h);
	h = parse_ok("# only comments\n\n   \n");
	assert_int_equal(h->count, 0);
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "app", "bob"), -1);
	hba_free(h);
}

static void test_replication_keyword(void **state)
{
	(void)state;
	struct hba *h = parse_ok("host replication all all trust\nhost all all all md5\n");
	struct hba_client c = { .addr = "127.0.0.1", .database = "replication", .user = "u" };

	/* a normal login to a database named "replication" does not match the keyword */
	assert_int_equal(hba_match(h, &c)->method, HBA_MD5);
	c.replication = true;
	assert_int_equal(hba_match(h, &c)->method, HBA_TRUST);
	hba_free(h);
	/* a replication connection matches nothing but the keyword, not "all" */
	h = parse_ok("host all all all md5\n");
	assert_null(hba_match(h, &c));
	hba_free(h);
}

static void test_cidr(void **state)
{
	(void)state;
	struct hba *h = parse_ok(
		"host a all 192.168.10.0/24        trust\n"
		"host b all 10.0.0.1/32            trust\n"
		"host c all 0.0.0.0/0              trust\n"
		"host d all 2001:db8::/32          trust\n"
		"host e all ::1/128                trust\n"
		"host f all ::/0                   trust\n"
		"host g all 172.16.0.0 255.240.0.0 trust\n"
		"host h all 192.168.10.77/24       trust\n"
		"host i all ::ffff:10.9.0.0/112    trust\n"
		"host j all fe80::1 ffff:ffff:ffff:ffff:: trust\n");

	assert_int_equal(method_for(h, false, false, "192.168.10.1", "a", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "192.168.10.255", "a", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "192.168.11.1", "a", "u"), -1);
	assert_int_equal(method_for(h, false, false, "10.0.0.1", "b", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "10.0.0.2", "b", "u"), -1);
	assert_int_equal(method_for(h, false, false, "203.0.113.9", "c", "u"), HBA_TRUST);
	/* an IPv6 client never matches a plain IPv4 rule... */
	assert_int_equal(method_for(h, false, false, "2001:db8::1", "c", "u"), -1);
	/* ...but an IPv4-mapped one does, as in PostgreSQL */
	assert_int_equal(method_for(h, false, false, "::ffff:203.0.113.9", "c", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "2001:db8:ffff::7", "d", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "2001:db9::1", "d", "u"), -1);
	assert_int_equal(method_for(h, false, false, "10.0.0.1", "d", "u"), -1);
	assert_int_equal(method_for(h, false, false, "::1", "e", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "::2", "e", "u"), -1);
	assert_int_equal(method_for(h, false, false, "fe80::abcd", "f", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "172.31.255.254", "g", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "172.32.0.1", "g", "u"), -1);
	/* host bits in the rule's address are masked off */
	assert_int_equal(method_for(h, false, false, "192.168.10.3", "h", "u"), HBA_TRUST);
	/* an IPv4 client matches an IPv6 rule through its mapped form */
	assert_int_equal(method_for(h, false, false, "10.9.3.4", "i", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "10.8.3.4", "i", "u"), -1);
	assert_int_equal(method_for(h, false, false, "fe80::1:2:3:4", "j", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "fe81::1", "j", "u"), -1);
	hba_free(h);
}

static void test_samehost(void **state)
{
	(void)state;
	/* 127.0.0.1 is on lo (every Linux machine has it); 203.0.113.77 (TEST-NET-3, documentation only) is on no
	 * interface of a test machine */
	struct hba *h = parse_ok("host all all samehost trust\nhost all all samenet md5\n");
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "d", "u"), HBA_TRUST);
	assert_int_equal(method_for(h, false, false, "127.0.0.2", "d", "u"), HBA_MD5);   /* lo is 127.0.0.0/8 */
	assert_int_equal(method_for(h, false, false, "203.0.113.77", "d", "u"), -1);
	hba_free(h);
}

/* A temporary directory with an hba file and @files. */
static void write_text(const char *dir, const char *name, const char *text)
{
	char path[512];
	FILE *f;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void test_load_and_include(void **state)
{
	(void)state;
	char dir[] = "/tmp/parley-test-hba-XXXXXX";
	char path[600], err[600];
	struct hba *h = NULL;

	assert_non_null(mkdtemp(dir));
	write_text(dir, "users.txt", "# team\nalice, bob\n\"carol x\"\n@more.txt\n");
	write_text(dir, "more.txt", "dave\n");
	write_text(dir, "dbs.txt", "db1 db2\n");
	write_text(dir, "hba.conf", "host @dbs.txt @users.txt 127.0.0.1/32 md5\nhost all all all reject\n");
	snprintf(path, sizeof(path), "%s/hba.conf", dir);
	assert_int_equal(hba_load(path, &h, err, sizeof(err)), 0);
	assert_int_equal(h->count, 2);
	assert_int_equal(h->rules[0].db.count, 2);
	assert_int_equal(h->rules[0].user.count, 4);
	assert_string_equal(h->rules[0].user.names[2], "carol x");
	assert_string_equal(h->rules[0].user.names[3], "dave");
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "db2", "dave"), HBA_MD5);
	assert_int_equal(method_for(h, false, false, "127.0.0.1", "db3", "dave"), HBA_REJECT);
	hba_free(h);
	h = NULL;

	/* a missing @file names the hba line that refers to it */
	write_text(dir, "hba.conf", "local all all trust\nhost all @nosuch.txt all md5\n");
	assert_int_equal(hba_load(path, &h, err, sizeof(err)), -1);
	assert_null(h);
	{
		char expect[900];
		snprintf(expect, sizeof(expect), "%s:2: cannot read @file %s/nosuch.txt: No such file or directory", path,
			 dir);
		assert_string_equal(err, expect);
	}
	/* @file including itself stops at the depth limit instead of looping */
	write_text(dir, "loop.txt", "@loop.txt\n");
	write_text(dir, "hba.conf", "host all @loop.txt all md5\n");
	assert_int_equal(hba_load(path, &h, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "hba.conf:1: @loop.txt: @file references nested more than 10 deep"));
	/* a broken line inside an @file is reported against the hba line */
	write_text(dir, "bad.txt", "+group\n");
	write_text(dir, "hba.conf", "host all all all md5\nhost all @bad.txt all md5\n");
	assert_int_equal(hba_load(path, &h, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "hba.conf:2: group membership \"+group\" is not supported"));

	/* a missing hba file, or none configured */
	snprintf(path, sizeof(path), "%s/none.conf", dir);
	assert_int_equal(hba_load(path, &h, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot read auth_hba_file"));
	assert_non_null(strstr(err, "No such file or directory"));
	assert_int_equal(hba_load("", &h, err, sizeof(err)), -1);
	assert_string_equal(err, "auth_type = hba needs auth_hba_file");
	assert_null(h);

	{
		char cmd[700];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
		assert_int_equal(system(cmd), 0);
	}
}

static void test_peer_check(void **state)
{
	(void)state;
	int sv[2];
	char why[300];
	struct passwd *pw = getpwuid(getuid());

	assert_non_null(pw);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	/* the peer is this very process: our own user name passes, any other fails */
	assert_true(hba_peer_check(sv[0], pw->pw_name, why, sizeof(why)));
	assert_false(hba_peer_check(sv[0], "surely-not-an-os-user", why, sizeof(why)));
	assert_non_null(strstr(why, "do not match"));
	close(sv[0]);
	close(sv[1]);
	/* not a socket */
	assert_false(hba_peer_check(-1, pw->pw_name, why, sizeof(why)));
	assert_non_null(strstr(why, "cannot get the peer's credentials"));
	/* cert without TLS */
	assert_false(hba_cert_check(NULL, "u", why, sizeof(why)));
	assert_string_equal(why, "no TLS connection");
	assert_string_equal(hba_method_name(HBA_SCRAM), "scram-sha-256");
	assert_string_equal(hba_method_name(HBA_PEER), "peer");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_lines),
		cmocka_unit_test(test_malformed_lines),
		cmocka_unit_test(test_first_match_wins),
		cmocka_unit_test(test_replication_keyword),
		cmocka_unit_test(test_cidr),
		cmocka_unit_test(test_samehost),
		cmocka_unit_test(test_load_and_include),
		cmocka_unit_test(test_peer_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
