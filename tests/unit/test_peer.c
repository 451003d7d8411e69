/* test_peer.c — cmocka tests for peer_id in cancel keys (PgBouncer's byte layout) and the [peers] section parser. */
#include "parley.h"
#include "peer.h"
#include <setjmp.h>
#include <stdarg.h>
#include <arpa/inet.h>
#include <unistd.h>
#include <cmocka.h>

struct parley_state g;  /* peer.c reads g.cfg; main.c (which defines it in parley) is not linked here */

static char tmpdir[256];

/* Writes content to tmpdir/name and loads it; returns config_load's result with err filled on failure. */
static int load_text(const char *content, struct parley_config *cfg, char *path, size_t pathlen, char *err, size_t errlen)
{
	FILE *fp;

	snprintf(path, pathlen, "%s/peers.ini", tmpdir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fwrite(content, 1, strlen(content), fp), strlen(content));
	assert_int_equal(fclose(fp), 0);
	return config_load(path, cfg, err, errlen);
}

static void test_key_layout_matches_pgbouncer(void **state)
{
	static const int ids[] = { 1, 2, 255, 256, 1000, 16383 };
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(ids); i++) {
		uint32_t pid = 0x7fffffffu, key = 0x12345678u, wire[2];
		const uint8_t *b = (const uint8_t *)wire;

		peer_key_stamp(&pid, &key, ids[i]);
		assert_int_equal(peer_key_id(pid), ids[i]);
		/* on the wire (BackendKeyData / CancelRequest, network order): byte 1 = low byte, byte 2 = high byte of the
		 * peer id, the low two bits of byte 7 = TTL 3; bytes 0 and 3 keep their random bits */
		wire[0] = htonl(pid);
		wire[1] = htonl(key);
		assert_int_equal(b[1], ids[i] & 0xff);
		assert_int_equal(b[2], (ids[i] >> 8) & 0xff);
		assert_int_equal(b[0], 0x7f);
		assert_int_equal(b[3], 0xff);
		assert_int_equal(b[7] & 0x3, 0x3);
		assert_int_equal(key & ~0x3u, 0x12345678u);
	}
}

static void test_key_without_peering_is_untouched(void **state)
{
	uint32_t pid = 0x01020304u, key = 0x05060708u;
	(void)state;
	peer_key_stamp(&pid, &key, 0);
	assert_int_equal(pid, 0x01020304u);
	assert_int_equal(key, 0x05060708u);
}

static void test_key_normalize_restores_ttl(void **state)
{
	uint32_t pid = 0, key = 0xabcdef00u;
	(void)state;
	peer_key_stamp(&pid, &key, 7);
	assert_int_equal(peer_key_normalize(key - 1), key);   /* forwarded once: TTL 2 */
	assert_int_equal(peer_key_normalize(key - 3), key);   /* TTL exhausted */
	assert_int_equal(peer_key_normalize(key), key);
}

static void test_peers_section_parses(void **state)
{
	struct parley_config cfg;
	char path[512], err[1024] = "";
	const struct peer_def *pd;
	(void)state;

	assert_int_equal(load_text("[pgbouncer]\npeer_id = 2\n[peers]\n"
				   "1 = host=/tmp/parley-1\n"
				   "2 = host=/tmp/parley-2 port=6433\n"
				   "3 = host='10.0.0.3' port=7000 pool_size=4\n",
				   &cfg, path, sizeof(path), err, sizeof(err)), 0);
	assert_int_equal(cfg.peer_id, 2);
	assert_int_equal(HASH_COUNT(cfg.peers), 3);
	pd = config_find_peer(&cfg, 1);
	assert_non_null(pd);
	assert_string_equal(pd->host, "/tmp/parley-1");
	assert_int_equal(pd->port, 6432);
	assert_int_equal(pd->pool_size, -1);
	pd = config_find_peer(&cfg, 2);
	assert_int_equal(pd->port, 6433);
	pd = config_find_peer(&cfg, 3);
	assert_string_equal(pd->host, "10.0.0.3");
	assert_int_equal(pd->port, 7000);
	assert_int_equal(pd->pool_size, 4);
	assert_null(config_find_peer(&cfg, 4));
	assert_null(cfg.warnings);
	config_free(&cfg);

	/* a repeated id replaces the earlier line, with a warning */
	assert_int_equal(load_text("[peers]\n1 = host=a\n1 = host=b\n", &cfg, path, sizeof(path), err, sizeof(err)), 0);
	assert_string_equal(config_find_peer(&cfg, 1)->host, "b");
	assert_non_null(cfg.warnings);
	assert_non_null(strstr(cfg.warnings, ":3: peer 1 is defined again"));
	config_free(&cfg);
}

static void test_peers_section_errors(void **state)
{
	static const struct {
		const char *line;   /* line 2 of the file, after "[peers]" */
		const char *msg;
	} cases[] = {
		{ "0 = host=a", "[peers]: \"0\" is not a peer id (an integer between 1 and 16383, as peer_id)" },
		{ "16384 = host=a", "[peers]: \"16384\" is not a peer id (an integer between 1 and 16383, as peer_id)" },
		{ "one = host=a", "[peers]: \"one\" is not a peer id (an integer between 1 and 16383, as peer_id)" },
		{ "1x = host=a", "[peers]: \"1x\" is not a peer id (an integer between 1 and 16383, as peer_id)" },
		{ "1 = port=6432", "peer 1: host is required (an address, a host name or a unix socket directory)" },
		{ "1 = host=a port=0", "peer 1: invalid value \"0\" for port: must be between 1 and 65535" },
		{ "1 = host=a port=x", "peer 1: invalid value \"x\" for port: not an integer" },
		{ "1 = host=a pool_size=0", "peer 1: invalid value \"0\" for pool_size: must be between 1 and 2147483647" },
		{ "1 = host=a dbname=x", "peer 1: unknown parameter \"dbname\" (expected host, port or pool_size)" },
		{ "1 = host", "peer 1: syntax error: expected key=value at \"host\"" },
		{ "1 = host=@abstract", "peer 1: abstract unix sockets (host=@...) are not supported; use a directory or an address" },
	};
	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct parley_config cfg;
		char path[512], err[1024] = "", text[256], expect[1024];

		snprintf(text, sizeof(text), "[peers]\n%s\n", cases[i].line);
		if (load_text(text, &cfg, path, sizeof(path), err, sizeof(err)) == 0) {
			config_free(&cfg);
			fail_msg("expected an error for: %s", cases[i].line);
		}
		snprintf(expect, sizeof(expect), "%s:2: %s", path, cases[i].msg);
		assert_string_equal(err, expect);
	}
}

static void test_peer_id_range(void **state)
{
	struct parley_config cfg;
	char path[512], err[1024] = "", expect[1024];
	(void)state;
	assert_int_equal(load_text("[pgbouncer]\npeer_id = 16384\n", &cfg, path, sizeof(path), err, sizeof(err)), -1);
	snprintf(expect, sizeof(expect), "%s:2: invalid value \"16384\" for peer_id: must be between 0 and 16383", path);
	assert_string_equal(err, expect);
}

static int setup(void **state)
{
	const char *base = getenv("TMPDIR");
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "%s/parley-test-peer-XXXXXX", base && *base ? base : "/tmp");
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
	char path[512];
	(void)state;
	snprintf(path, sizeof(path), "%s/peers.ini", tmpdir);
	unlink(path);
	return rmdir(tmpdir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_key_layout_matches_pgbouncer),
		cmocka_unit_test(test_key_without_peering_is_untouched),
		cmocka_unit_test(test_key_normalize_restores_ttl),
		cmocka_unit_test(test_peers_section_parses),
		cmocka_unit_test(test_peers_section_errors),
		cmocka_unit_test(test_peer_id_range),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
