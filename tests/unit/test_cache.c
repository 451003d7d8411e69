/* test_cache.c — cmocka tests of the result cache: hits, TTL, LRU and exact accounting, racing fills, key-level
 * invalidation, single-flight waiters, references held by evbuffers, and the configuration hook. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <event2/buffer.h>
#include "cache.h"
#include "config.h"
#include "shape.h"

#define SEC USEC_PER_SEC

/* ---- stand-ins for the two shape.c functions cache_apply_config calls (records what it was asked) ---- */

static int override_clears;
static int override_n;
static char override_keys[8][128];
static int override_ttls[8];

void shape_override_clear_all(void)
{
	override_clears++;
	override_n = 0;
}

int shape_override_set(const char *key, int ttl_sec)
{
	if (strcmp(key, "bad") == 0)
		return -1;
	assert_true(override_n < 8);
	snprintf(override_keys[override_n], sizeof(override_keys[0]), "%s", key);
	override_ttls[override_n++] = ttl_sec;
	return 0;
}

/* ---- helpers ---- */

static void init_cache(size_t max_memory, size_t max_entry_size)
{
	struct cache_config cfg = { .enabled = true, .max_memory = max_memory, .max_entry_size = max_entry_size,
				    .wait_timeout = SEC };
	cache_init(&cfg);
}

static int setup(void **state)
{
	(void)state;
	init_cache(1 << 20, 64 << 10);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	cache_shutdown();
	return 0;
}

static struct cache_stats stats(void)
{
	struct cache_stats st;
	cache_get_stats(&st);
	return st;
}

/* Every stored entry leaves through exactly one counted reason. */
static void assert_identity(void)
{
	struct cache_stats st = stats();
	assert_int_equal(st.stores, st.entries + st.evictions + st.expirations + st.invalidations + st.flushes);
}

/* Fills key with value through a real LEAD/append/commit at now; returns true if a lookup then hits. */
static bool store(const char *key, const struct cache_dep *deps, int ndeps, const char *value, usec_t ttl, usec_t now)
{
	struct cache_entry *e;
	struct cache_flight *f;
	enum cache_rc rc = cache_lookup(key, strlen(key), deps, ndeps, ttl, now, &e, &f);

	assert_int_equal(rc, CACHE_LEAD);
	assert_non_null(f);
	assert_true(cache_fill_append(f, value, strlen(value)));
	cache_fill_commit(f, now);
	rc = cache_lookup(key, strlen(key), deps, ndeps, ttl, now, &e, &f);
	if (rc == CACHE_LEAD)
		cache_fill_abort(f);
	return rc == CACHE_HIT;
}

/* Whether key is stored and fresh at now (a miss starts and aborts a fill; the stats move accordingly). */
static bool present(const char *key, usec_t now)
{
	struct cache_entry *e;
	struct cache_flight *f;
	static const struct cache_dep dep = { .table = "t" };
	enum cache_rc rc = cache_lookup(key, strlen(key), &dep, 1, SEC, now, &e, &f);

	if (rc == CACHE_LEAD)
		cache_fill_abort(f);
	return rc == CACHE_HIT;
}

/* The stored value of key as a string (static buffer), or NULL. */
static const char *value_of(const char *key, usec_t now)
{
	static char buf[4096];
	struct cache_entry *e;
	struct cache_flight *f;
	const uint8_t *data;
	size_t len;
	enum cache_rc rc = cache_lookup(key, strlen(key), NULL, 0, SEC, now, &e, &f);

	if (rc == CACHE_LEAD)
		cache_fill_abort(f);
	if (rc != CACHE_HIT)
		return NULL;
	data = cache_entry_data(e, &len);
	assert_true(len < sizeof(buf));
	memcpy(buf, data, len);
	buf[len] = '\0';
	return buf;
}

/* ---- basic behaviour ---- */

static void test_hit_miss(void **state)
{
	struct cache_dep dep = { .table = "parlant_agent" };
	struct cache_entry *e;
	struct cache_flight *f, *f2;
	struct cache_stats st;
	const uint8_t *data;
	size_t len;

	(void)state;
	assert_true(cache_enabled());
	assert_int_equal(cache_lookup("k1", 2, &dep, 1, 10 * SEC, 0, &e, &f), CACHE_LEAD);
	assert_null(e);
	/* the same key while the fill runs: wait on that flight */
	assert_int_equal(cache_lookup("k1", 2, &dep, 1, 10 * SEC, 0, &e, &f2), CACHE_WAIT);
	assert_ptr_equal(f2, f);
	assert_true(cache_fill_append(f, "hello ", 6));
	assert_true(cache_fill_append(f, "world", 5));
	cache_fill_commit(f, 0);
	assert_int_equal(cache_lookup("k1", 2, &dep, 1, 10 * SEC, 1, &e, &f), CACHE_HIT);
	assert_null(f);
	data = cache_entry_data(e, &len);
	assert_int_equal(len, 11);
	assert_memory_equal(data, "hello world", 11);
	/* exact key bytes: a prefix, an extension and a one-byte change are other keys */
	assert_false(present("k", 1));
	assert_int_equal(cache_lookup("k1\0", 3, &dep, 1, SEC, 1, &e, &f), CACHE_LEAD);
	cache_fill_abort(f);
	assert_false(present("k2", 1));
	assert_true(present("k1", 1));
	/* binary keys with embedded NULs */
	assert_int_equal(cache_lookup("a\0b", 3, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, "x", 1));
	cache_fill_commit(f, 0);
	assert_int_equal(cache_lookup("a\0b", 3, &dep, 1, SEC, 0, &e, &f), CACHE_HIT);
	assert_int_equal(cache_lookup("a\0c", 3, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	cache_fill_abort(f);

	st = stats();
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.stores, 2);
	assert_int_equal(st.waits, 1);
	assert_int_equal(st.hits, 3);
	assert_int_equal(st.misses, 6);
	assert_identity();
}

/* CACHE_OFF cases: a disabled or uninitialized cache, and keys that cannot be filled now. */
static void test_off(void **state)
{
	struct cache_dep good = { .table = "t" }, bad = { .table = NULL };
	struct cache_dep many[CACHE_MAX_DEPS + 1];
	struct cache_entry *e;
	struct cache_flight *f;
	int i;

	(void)state;
	for (i = 0; i < CACHE_MAX_DEPS + 1; i++)
		many[i] = good;
	assert_int_equal(cache_lookup("k", 1, &good, 1, 0, 0, &e, &f), CACHE_OFF);          /* ttl 0 */
	assert_int_equal(cache_lookup("k", 1, &bad, 1, SEC, 0, &e, &f), CACHE_OFF);         /* dep without a table */
	assert_int_equal(cache_lookup("k", 1, many, CACHE_MAX_DEPS + 1, SEC, 0, &e, &f), CACHE_OFF);
	assert_null(f);
	assert_int_equal(cache_lookup("k", 1, many, CACHE_MAX_DEPS, SEC, 0, &e, &f), CACHE_LEAD);
	cache_fill_abort(f);
	assert_int_equal(stats().misses, 1);
	cache_shutdown();
	assert_false(cache_enabled());
	assert_int_equal(cache_lookup("k", 1, &good, 1, SEC, 0, &e, &f), CACHE_OFF);
	init_cache(1 << 20, 1 << 10);
}

struct canon_case {
	const char *in;
	size_t outlen;
	const char *out;
};

static const struct canon_case canon_cases[] = {
	{ "42", 128, "#42e2" },
	{ "  42\t\n", 128, "#42e2" },
	{ "042", 128, "#42e2" },
	{ "+42.000", 128, "#42e2" },
	{ "4.2e1", 128, "#42e2" },
	{ "420E-1", 128, "#42e2" },
	{ "0.042", 128, "#42e-1" },
	{ "-7", 128, "#-7e1" },
	{ "0", 128, "#0" },
	{ "-0.00", 128, "#0" },
	{ "1e", 128, "1e" },
	{ "12abc", 128, "12abc" },
	{ "550E8400-E29B-41D4-A716-446655440000", 128, "u550e8400e29b41d4a716446655440000" },
	{ "{550e8400e29b41d4a716446655440000}", 128, "u550e8400e29b41d4a716446655440000" },
	{ "TRUE", 128, "#1e1" },
	{ "off", 128, "#0" },
	{ " Ab C ", 128, "ab c" },
	{ "", 128, "" },
	{ "   ", 128, "" },
	{ "abcdef", 4, "abc" },
	{ "\xc3\x89t\xc3\xa9", 128, "\xc3\x89t\xc3\xa9" },   /* non-ASCII bytes untouched */
};

static void test_canon_value(void **state)
{
	char out[128];
	size_t i, n;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(canon_cases); i++) {
		n = cache_canon_value(canon_cases[i].in, strlen(canon_cases[i].in), out, canon_cases[i].outlen);
		assert_string_equal(out, canon_cases[i].out);
		assert_int_equal(n, strlen(canon_cases[i].out));
	}
	assert_int_equal(cache_canon_value("x", 1, out, 0), 0);
}

static void test_ttl_and_sweep(void **state)
{
	struct cache_dep dep = { .table = "t" };

	(void)state;
	assert_true(store("a", &dep, 1, "A", 10 * SEC, 0));
	assert_true(present("a", 10 * SEC - 1));
	assert_false(present("a", 10 * SEC));        /* expired: a miss, removed at lookup */
	assert_int_equal(stats().expirations, 1);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().bytes, 0);

	assert_true(store("t1", &dep, 1, "1", 1 * SEC, 100 * SEC));
	assert_true(store("t2", &dep, 1, "2", 2 * SEC, 100 * SEC));
	assert_true(store("t3", &dep, 1, "3", 3 * SEC, 100 * SEC));
	cache_sweep(102 * SEC);
	assert_int_equal(stats().entries, 1);
	assert_int_equal(stats().expirations, 3);
	assert_true(present("t3", 102 * SEC));
	cache_sweep(200 * SEC);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().bytes, 0);
	assert_identity();
}

/* ---- memory ---- */

static void test_lru_eviction(void **state)
{
	struct cache_dep dep = { .table = "t" };
	struct cache_config cfg = { .enabled = true, .max_entry_size = 1 << 10 };
	struct cache_entry *e;
	struct cache_flight *f;
	size_t one;

	(void)state;
	assert_true(store("A", &dep, 1, "aaaa", SEC, 0));
	assert_int_equal(cache_lookup("A", 1, &dep, 1, SEC, 0, &e, &f), CACHE_HIT);
	one = cache_entry_size(e);
	assert_int_equal(stats().bytes, one);
	/* room for exactly three entries of this shape */
	cache_shutdown();
	init_cache(3 * one, 1 << 10);
	assert_true(store("A", &dep, 1, "aaaa", SEC, 0));
	assert_true(store("B", &dep, 1, "bbbb", SEC, 0));
	assert_true(store("C", &dep, 1, "cccc", SEC, 0));
	assert_int_equal(stats().bytes, 3 * one);
	assert_true(present("A", 0));               /* A is now the most recently used; B the least */
	assert_true(store("D", &dep, 1, "dddd", SEC, 0));
	assert_int_equal(stats().evictions, 1);
	assert_false(present("B", 0));
	assert_true(present("C", 0));
	assert_true(present("A", 0));
	assert_true(present("D", 0));               /* order now: C, A, D */
	assert_true(store("E", &dep, 1, "eeee", SEC, 0));
	assert_false(present("C", 0));
	assert_int_equal(stats().evictions, 2);
	assert_int_equal(stats().bytes, 3 * one);
	assert_int_equal(stats().entries, 3);

	/* shrinking max_memory evicts at once, least recently used first */
	cfg.max_memory = one;
	cache_configure(&cfg);
	assert_int_equal(stats().entries, 1);
	assert_int_equal(stats().max_memory, one);
	assert_true(present("E", 0));
	assert_identity();
}

/* Values over max_entry_size are never stored; nor is an entry larger than all of max_memory. */
static void test_too_big(void **state)
{
	struct cache_dep dep = { .table = "t" };
	struct cache_entry *e;
	struct cache_flight *f;
	char big[200];

	(void)state;
	cache_shutdown();
	init_cache(1 << 20, 100);
	memset(big, 'x', sizeof(big));
	assert_int_equal(cache_lookup("k", 1, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, big, 60));
	assert_true(cache_fill_append(f, big, 40));     /* exactly the limit is fine */
	assert_false(cache_fill_append(f, big, 1));
	assert_false(cache_fill_append(f, big, 1));     /* doomed: further appends ignored, counted once */
	cache_fill_commit(f, 0);
	assert_int_equal(stats().too_big, 1);
	assert_int_equal(stats().stores, 0);
	assert_false(present("k", 0));
	assert_int_equal(cache_lookup("k", 1, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, big, 100));
	cache_fill_commit(f, 0);
	assert_true(present("k", 0));

	/* under max_entry_size but more than max_memory with its overhead */
	cache_shutdown();
	init_cache(150, 1000);
	assert_int_equal(cache_lookup("k", 1, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, big, 149));
	cache_fill_commit(f, 0);
	assert_int_equal(stats().too_big, 1);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().bytes, 0);
}

static bool sum_tables(const struct cache_table_stats *t, void *arg)
{
	uint64_t *sum = arg;
	sum[0] += t->bytes;
	sum[1] += t->entries;
	return true;
}

/* stats.bytes is exactly the sum of the stored entries' sizes, each size is the struct overhead plus key, value and
 * dependency strings, and the total never exceeds max_memory however many entries go in. */
static void test_exact_accounting(void **state)
{
	static const char *const tables[] = { "parlant_agent", "parlant_tool", "parlant_journey" };
	enum { N = 3000, MAXMEM = 64 << 10 };
	struct cache_entry *e;
	struct cache_flight *f;
	char key[64], val[600], pinval[32];
	size_t overhead = 0, sum, size;
	uint64_t tsum[2];
	unsigned seed = 12345;
	int i, live;

	(void)state;
	cache_shutdown();
	init_cache(MAXMEM, 1 << 10);
	memset(val, 'v', sizeof(val));
	for (i = 0; i < N; i++) {
		/* one table with one pinned column; random key and value lengths */
		struct cache_dep dep = { .table = tables[i % 3], .col = "id", .val = pinval };
		size_t klen, vlen, clen;
		char canon[64];
		seed = seed * 1103515245 + 12345;
		vlen = (seed >> 8) % 500;
		dep.val_len = (size_t)snprintf(pinval, sizeof(pinval), "%d", i);
		klen = (size_t)snprintf(key, sizeof(key), "key-%d-%u", i, (seed >> 4) % 1000);
		assert_int_equal(cache_lookup(key, klen, &dep, 1, 1000 * SEC, 0, &e, &f), CACHE_LEAD);
		assert_true(cache_fill_append(f, val, vlen));
		cache_fill_commit(f, 0);
		assert_int_equal(cache_lookup(key, klen, &dep, 1, 1000 * SEC, 0, &e, &f), CACHE_HIT);
		size = cache_entry_size(e);
		/* size = fixed overhead (struct, one dep, one table link) + key + value + "id\0" + canonical value\0 */
		clen = cache_canon_value(pinval, dep.val_len, canon, sizeof(canon));
		assert_true(size > klen + vlen + 3 + clen + 1);
		if (!overhead)
			overhead = size - (klen + vlen + 3 + clen + 1);
		assert_int_equal(size, overhead + klen + vlen + 3 + clen + 1);
		assert_true(stats().bytes <= MAXMEM);
	}
	assert_true(stats().evictions > 0);
	/* re-derive the total from the entries still there (every key ever used is probed) */
	sum = 0;
	live = 0;
	seed = 12345;
	for (i = 0; i < N; i++) {
		size_t klen;
		seed = seed * 1103515245 + 12345;
		klen = (size_t)snprintf(key, sizeof(key), "key-%d-%u", i, (seed >> 4) % 1000);
		switch (cache_lookup(key, klen, NULL, 0, SEC, 0, &e, &f)) {
		case CACHE_HIT:
			sum += cache_entry_size(e);
			live++;
			break;
		case CACHE_LEAD:
			cache_fill_abort(f);
			break;
		default:
			fail_msg("unexpected lookup result for %s", key);
		}
	}
	assert_int_equal(stats().entries, live);
	assert_int_equal(stats().bytes, sum);
	/* each entry reads one table: the per-table figures add up to the same totals */
	tsum[0] = tsum[1] = 0;
	cache_foreach_table(sum_tables, tsum);
	assert_int_equal(tsum[0], sum);
	assert_int_equal(tsum[1], live);
	assert_identity();
	/* and everything comes back to zero */
	assert_int_equal(cache_flush(NULL), live);
	assert_int_equal(stats().bytes, 0);
	tsum[0] = tsum[1] = 0;
	cache_foreach_table(sum_tables, tsum);
	assert_int_equal(tsum[0], 0);
	assert_identity();
}

/* ---- generations and invalidation ---- */

static void test_racing_fill_discarded(void **state)
{
	struct cache_dep deps[2] = { { .table = "parlant_agent", .col = "id", .val = "42", .val_len = 2 },
				     { .table = "parlant_tool" } };
	struct cache_write_row row = { .npins = 1, .pins = { { "id", "7", 1 } } };
	struct cache_entry *e;
	struct cache_flight *f;

	(void)state;
	/* a write to a table the fill read, even a key-level one elsewhere, makes the fill racy */
	assert_int_equal(cache_lookup("q", 1, deps, 2, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, "old", 3));
	assert_int_equal(cache_invalidate("PARLANT_AGENT", &row, 1), 0);
	cache_fill_commit(f, 0);
	assert_int_equal(stats().discarded_racing, 1);
	assert_false(present("q", 0));
	/* the second table too */
	assert_int_equal(cache_lookup("q", 1, deps, 2, SEC, 0, &e, &f), CACHE_LEAD);
	cache_invalidate("parlant_tool", NULL, 0);
	cache_fill_commit(f, 0);
	assert_int_equal(stats().discarded_racing, 2);
	/* a write to another table does not */
	assert_int_equal(cache_lookup("q", 1, deps, 2, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, "new", 3));
	cache_invalidate("parlant_session", NULL, 0);
	cache_fill_commit(f, 0);
	assert_int_equal(stats().discarded_racing, 2);
	assert_string_equal(value_of("q", 0), "new");
	/* invalidate_all and a full flush reach fills without any dependency */
	assert_int_equal(cache_lookup("n", 1, NULL, 0, SEC, 0, &e, &f), CACHE_LEAD);
	cache_invalidate_all();
	cache_fill_commit(f, 0);
	assert_int_equal(stats().discarded_racing, 3);
	assert_int_equal(cache_lookup("n", 1, NULL, 0, SEC, 0, &e, &f), CACHE_LEAD);
	cache_flush(NULL);
	cache_fill_commit(f, 0);
	assert_int_equal(stats().discarded_racing, 4);
	assert_int_equal(cache_lookup("n", 1, NULL, 0, SEC, 0, &e, &f), CACHE_LEAD);
	cache_flush("parlant_agent");
	cache_fill_commit(f, 0);
	assert_true(present("n", 0));
}

#define PIN(c, v) { (c), (v), sizeof(v) - 1 }

/* One key-level invalidation case: an entry with up to 3 deps, a write of up to 3 rows to one table. */
struct inval_case {
	const char *name;
	struct cache_dep deps[3];
	int ndeps;
	const char *table;
	int nrows;                   /* -1: rows == NULL */
	struct cache_write_row rows[3];
	bool survives;
};

static const struct inval_case inval_cases[] = {
	{ "other key survives", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "parlant_agent_tool", 1, { { 1, { PIN("agent_id", "7") } } }, true },
	{ "same key dies", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "parlant_agent_tool", 1, { { 1, { PIN("agent_id", "42") } } }, false },
	{ "same key with blanks dies", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "parlant_agent_tool", 1, { { 1, { PIN("agent_id", " 42 ") } } }, false },
	{ "table name case does not matter", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "Parlant_Agent_Tool", 1, { { 1, { PIN("agent_id", "42") } } }, false },
	{ "unpinned write dies", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "parlant_agent_tool", 1, { { 0, { { NULL, NULL, 0 } } } }, false },
	{ "rows NULL dies", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1, "parlant_agent_tool", -1, { { 0 } }, false },
	{ "zero rows dies", { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1, "parlant_agent_tool", 0, { { 0 } }, false },
	{ "uppercase and lowercase values are equal", { { "parlant_session", "id", "550e8400-e29b-41d4-a716-446655440000", 36 } }, 1,
	  "parlant_session", 1, { { 1, { PIN("id", "550E8400-E29B-41D4-A716-446655440000") } } }, false },
	{ "uppercase entry value, lowercase write", { { "parlant_session", "id", "ABC", 3 } }, 1,
	  "parlant_session", 1, { { 1, { PIN("id", "abc") } } }, false },
	{ "no pin on the write's column dies", { { "parlant_agent_tool", "tool_id", "3", 1 } }, 1,
	  "parlant_agent_tool", 1, { { 1, { PIN("agent_id", "7") } } }, false },
	{ "whole-table dep dies", { { "parlant_agent_tool", NULL, NULL, 0 } }, 1,
	  "parlant_agent_tool", 1, { { 1, { PIN("agent_id", "7") } } }, false },
	{ "one differing column of several suffices",
	  { { "parlant_agent_tool", "agent_id", "42", 2 }, { "parlant_agent_tool", "tool_id", "3", 1 } }, 2,
	  "parlant_agent_tool", 1, { { 2, { PIN("agent_id", "42"), PIN("tool_id", "4") } } }, true },
	{ "all pinned columns equal dies",
	  { { "parlant_agent_tool", "agent_id", "42", 2 }, { "parlant_agent_tool", "tool_id", "3", 1 } }, 2,
	  "parlant_agent_tool", 1, { { 2, { PIN("agent_id", "42"), PIN("tool_id", "3") } } }, false },
	{ "the write's extra pins do not save a match",
	  { { "parlant_agent_tool", "agent_id", "42", 2 } }, 1,
	  "parlant_agent_tool", 1, { { 2, { PIN("agent_id", "42"), PIN("tool_id", "9") } } }, false },
	{ "pins on another table do not count",
	  { { "parlant_agent", "id", "42", 2 }, { "parlant_agent_tool", NULL, NULL, 0 } }, 2,
	  "parlant_agent_tool", 1, { { 1, { PIN("id", "7") } } }, false },
	{ "join: the written table's own pin decides",
	  { { "parlant_agent", "id", "42", 2 }, { "parlant_agent_tool", "agent_id", "42", 2 } }, 2,
	  "parlant_agent", 1, { { 1, { PIN("id", "7") } } }, true },
	{ "write to a table the entry did not read", { { "parlant_agent", "id", "42", 2 } }, 1,
	  "parlant_tool", -1, { { 0 } }, true },
	/* multi-row writes: the entry must survive every row */
	{ "multi-row, no row matches", { { "parlant_event", "session_id", "42", 2 } }, 1,
	  "parlant_event", 3, { { 1, { PIN("session_id", "7") } }, { 1, { PIN("session_id", "8") } }, { 1, { PIN("session_id", "9") } } },
	  true },
	{ "multi-row, the last row matches", { { "parlant_event", "session_id", "42", 2 } }, 1,
	  "parlant_event", 3, { { 1, { PIN("session_id", "7") } }, { 1, { PIN("session_id", "8") } }, { 1, { PIN("session_id", "42") } } },
	  false },
	{ "multi-row, one row unpinned", { { "parlant_event", "session_id", "42", 2 } }, 1,
	  "parlant_event", 2, { { 1, { PIN("session_id", "7") } }, { 0, { { NULL, NULL, 0 } } } }, false },
};

static void test_key_invalidation(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(inval_cases); i++) {
		const struct inval_case *c = &inval_cases[i];
		/* a bystander entry pinned to another key of every table, which only an unpinned write removes */
		struct cache_dep other = { c->table, NULL, NULL, 0 };
		uint64_t removed, before = stats().invalidations;

		cache_flush(NULL);
		assert_true(store("entry", c->deps, c->ndeps, "v", 100 * SEC, 0));
		assert_true(store("bystander", &other, 1, "b", 100 * SEC, 0));
		removed = cache_invalidate(c->table, c->nrows < 0 ? NULL : c->rows, c->nrows < 0 ? 0 : c->nrows);
		if (present("entry", 0) != c->survives)
			fail_msg("case \"%s\": the entry %s", c->name, c->survives ? "was removed" : "survived");
		assert_false(present("bystander", 0));     /* whole-table dependency on the written table */
		assert_int_equal(removed, (c->survives ? 0 : 1) + 1);
		assert_int_equal(stats().invalidations - before, removed);
	}
	assert_identity();
}

static bool find_table(const struct cache_table_stats *t, void *arg)
{
	struct cache_table_stats *want = arg;
	if (strcmp(t->table, want->table) != 0)
		return true;
	*want = *t;
	return false;
}

static void test_flush_and_tables(void **state)
{
	struct cache_dep a = { .table = "parlant_agent" }, t = { .table = "parlant_tool" };
	struct cache_dep both[2] = { { .table = "parlant_agent" }, { .table = "parlant_tool" } };
	struct cache_table_stats ts;

	(void)state;
	assert_true(store("a1", &a, 1, "x", SEC, 0));
	assert_true(store("a2", &a, 1, "x", SEC, 0));
	assert_true(store("t1", &t, 1, "x", SEC, 0));
	assert_true(store("at", both, 2, "x", SEC, 0));
	memset(&ts, 0, sizeof(ts));
	ts.table = "parlant_agent";
	cache_foreach_table(find_table, &ts);
	assert_int_equal(ts.entries, 3);
	assert_int_equal(ts.ttl_sec, -1);
	assert_int_equal(cache_flush("Parlant_Agent"), 3);
	assert_int_equal(stats().flushes, 3);
	assert_int_equal(stats().invalidations, 0);
	assert_true(present("t1", 0));
	assert_false(present("at", 0));
	memset(&ts, 0, sizeof(ts));
	ts.table = "parlant_agent";
	cache_foreach_table(find_table, &ts);
	assert_int_equal(ts.entries, 0);
	assert_int_equal(ts.bytes, 0);
	assert_int_equal(ts.generation, 1);
	assert_int_equal(cache_flush("no_such_table"), 0);
	assert_int_equal(cache_flush(NULL), 1);
	assert_int_equal(stats().entries, 0);

	/* invalidation counts per table */
	assert_true(store("a1", &a, 1, "x", SEC, 0));
	assert_true(store("a2", &a, 1, "x", SEC, 0));
	assert_int_equal(cache_invalidate("parlant_agent", NULL, 0), 2);
	assert_int_equal(cache_invalidate("never_seen", NULL, 0), 0);
	memset(&ts, 0, sizeof(ts));
	ts.table = "parlant_agent";
	cache_foreach_table(find_table, &ts);
	assert_int_equal(ts.invalidations, 2);
	assert_int_equal(ts.generation, 3);
	assert_true(store("a1", &a, 1, "x", SEC, 0));
	assert_true(store("t1", &t, 1, "x", SEC, 0));
	assert_int_equal(cache_invalidate_all(), 2);
	assert_int_equal(stats().invalidations, 4);
	assert_identity();
}

/* A write record remembers its table's lookup across its repeated invalidations: a table that did not exist at the
 * first one is still found once a fill has created it, and a remembered table keeps being invalidated. */
static void test_invalidate_memo(void **state)
{
	struct cache_dep d = { .table = "parlant_event" };
	void *memo = NULL;
	uint64_t gen = 0;

	(void)state;
	assert_int_equal(cache_invalidate_memo("parlant_event", NULL, 0, &memo, &gen), 0);
	assert_null(memo);
	assert_true(store("e1", &d, 1, "x", SEC, 0));	/* the fill creates the table */
	assert_int_equal(cache_invalidate_memo("parlant_event", NULL, 0, &memo, &gen), 1);
	assert_non_null(memo);
	assert_false(present("e1", 0));
	assert_true(store("e1", &d, 1, "y", SEC, 0));
	assert_true(store("e2", &d, 1, "z", SEC, 0));
	assert_int_equal(cache_invalidate_memo("parlant_event", NULL, 0, &memo, &gen), 2);
	assert_int_equal(stats().invalidations, 3);
	assert_identity();
}

/* cache_table_named: false until a fill or the policy names the table, true after; the memo follows the tables'
 * generation (a table named after the memo was taken is seen). */
static void test_table_named(void **state)
{
	struct cache_dep d = { .table = "parlant_event" };
	void *memo = NULL, *memo2 = NULL, *memo3 = NULL;	/* a memo belongs to one name */
	uint64_t gen = 0, gen2 = 0, gen3 = 0;

	(void)state;
	assert_false(cache_table_named("parlant_event", &memo, &gen));
	assert_false(cache_table_named("parlant_event", &memo, &gen));	/* memoized answer */
	assert_true(store("e1", &d, 1, "x", SEC, 0));
	assert_true(cache_table_named("parlant_event", &memo, &gen));
	assert_non_null(memo);
	assert_true(cache_table_named("PARLANT_EVENT", &memo2, &gen2));
	assert_ptr_equal(memo, memo2);
	assert_false(cache_table_named("parlant_agent", &memo3, &gen3));
	cache_policy_set("parlant_agent", 300);
	assert_true(cache_table_named("parlant_agent", &memo3, &gen3));
	/* the memo is what cache_invalidate_memo uses too */
	assert_int_equal(cache_invalidate_memo("parlant_event", NULL, 0, &memo, &gen), 1);
	assert_false(present("e1", 0));
}

static void test_policy(void **state)
{
	struct cache_table_stats ts;

	(void)state;
	assert_int_equal(cache_policy_ttl("parlant_agent"), -1);
	cache_policy_set("Parlant_Agent", 300);
	cache_policy_set("parlant_event", 0);
	assert_int_equal(cache_policy_ttl("parlant_agent"), 300);
	assert_int_equal(cache_policy_ttl("PARLANT_AGENT"), 300);
	assert_int_equal(cache_policy_ttl("parlant_event"), 0);
	assert_int_equal(cache_policy_ttl("parlant_tool"), -1);
	memset(&ts, 0, sizeof(ts));
	ts.table = "parlant_agent";
	cache_foreach_table(find_table, &ts);
	assert_int_equal(ts.ttl_sec, 300);
	cache_policy_clear();
	assert_int_equal(cache_policy_ttl("parlant_agent"), -1);
	assert_int_equal(cache_policy_ttl("parlant_event"), -1);
}

/* ---- single-flight ---- */

struct waiter_log {
	int calls;
	struct cache_entry *e;
	char data[64];
	struct cache_waiter *cancel_other;   /* cancelled from inside this waiter's callback */
	struct cache_waiter **self;          /* cancelled (a no-op) from inside its own callback */
	bool lookup_again;                   /* looks the key "sf" up again from the callback */
	enum cache_rc again_rc;
};

static void on_done(void *arg, struct cache_entry *e)
{
	struct waiter_log *w = arg;
	struct cache_flight *f;
	struct cache_entry *hit;

	w->calls++;
	w->e = e;
	if (e) {
		size_t len;
		const uint8_t *d = cache_entry_data(e, &len);
		snprintf(w->data, sizeof(w->data), "%.*s", (int)len, (const char *)d);
	}
	if (w->cancel_other)
		cache_wait_cancel(w->cancel_other);
	if (w->self)
		cache_wait_cancel(*w->self);
	if (w->lookup_again) {
		static const struct cache_dep dep = { .table = "t" };
		w->again_rc = cache_lookup("sf", 2, &dep, 1, SEC, 0, &hit, &f);
		if (w->again_rc == CACHE_LEAD)
			cache_fill_abort(f);
	}
}

static void test_single_flight(void **state)
{
	struct cache_dep dep = { .table = "t" };
	struct cache_entry *e;
	struct cache_flight *f, *g;
	struct waiter_log w[4];
	struct cache_waiter *h[4];

	(void)state;
	/* commit: every waiter gets the entry, once; a waiter's own lookup then hits */
	memset(w, 0, sizeof(w));
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &g), CACHE_WAIT);
	h[0] = cache_flight_wait(g, on_done, &w[0]);
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &g), CACHE_WAIT);
	h[1] = cache_flight_wait(g, on_done, &w[1]);
	w[1].lookup_again = true;
	assert_non_null(h[0]);
	assert_non_null(h[1]);
	assert_true(cache_fill_append(f, "rows", 4));
	assert_int_equal(w[0].calls, 0);
	cache_fill_commit(f, 0);
	assert_int_equal(w[0].calls, 1);
	assert_int_equal(w[1].calls, 1);
	assert_non_null(w[0].e);
	assert_ptr_equal(w[0].e, w[1].e);
	assert_string_equal(w[0].data, "rows");
	assert_int_equal(w[1].again_rc, CACHE_HIT);
	assert_int_equal(stats().waits, 2);

	/* abort: waiters get NULL; a waiter's own lookup leads a new fill */
	cache_flush(NULL);
	memset(w, 0, sizeof(w));
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	h[0] = cache_flight_wait(f, on_done, &w[0]);
	h[1] = cache_flight_wait(f, on_done, &w[1]);
	w[0].lookup_again = true;
	cache_fill_abort(f);
	assert_int_equal(w[0].calls, 1);
	assert_int_equal(w[1].calls, 1);
	assert_null(w[0].e);
	assert_null(w[1].e);
	assert_int_equal(w[0].again_rc, CACHE_LEAD);

	/* a racing or too-big fill also wakes with NULL */
	memset(w, 0, sizeof(w));
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	h[0] = cache_flight_wait(f, on_done, &w[0]);
	cache_invalidate("t", NULL, 0);
	cache_fill_commit(f, 0);
	assert_int_equal(w[0].calls, 1);
	assert_null(w[0].e);

	/* cancel: before the end, from another waiter's callback, and of oneself inside one's callback */
	memset(w, 0, sizeof(w));
	assert_int_equal(cache_lookup("sf", 2, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	h[0] = cache_flight_wait(f, on_done, &w[0]);
	h[1] = cache_flight_wait(f, on_done, &w[1]);
	h[2] = cache_flight_wait(f, on_done, &w[2]);
	h[3] = cache_flight_wait(f, on_done, &w[3]);
	cache_wait_cancel(h[0]);
	w[1].cancel_other = h[3];
	w[2].self = &h[2];
	assert_true(cache_fill_append(f, "ok", 2));
	cache_fill_commit(f, 0);
	assert_int_equal(w[0].calls, 0);
	assert_int_equal(w[1].calls, 1);
	assert_int_equal(w[2].calls, 1);
	assert_int_equal(w[3].calls, 0);
	assert_string_equal(w[2].data, "ok");
	cache_wait_cancel(NULL);
	assert_identity();
}

static void flush_in_callback(void *arg, struct cache_entry *e)
{
	struct waiter_log *w = arg;
	w->calls++;
	w->e = e;
	cache_flush(NULL);
}

/* A waiter whose callback removes the entry: later waiters get NULL, never a removed entry. */
static void test_waiter_sees_removed_entry_as_null(void **state)
{
	struct cache_dep dep = { .table = "t" };
	struct cache_entry *e;
	struct cache_flight *f;
	struct waiter_log w[2];

	(void)state;
	memset(w, 0, sizeof(w));
	assert_int_equal(cache_lookup("k", 1, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	cache_flight_wait(f, flush_in_callback, &w[0]);
	cache_flight_wait(f, on_done, &w[1]);
	assert_true(cache_fill_append(f, "v", 1));
	cache_fill_commit(f, 0);
	assert_int_equal(w[0].calls, 1);
	assert_non_null(w[0].e);
	assert_int_equal(w[1].calls, 1);
	assert_null(w[1].e);
	assert_int_equal(stats().entries, 0);
}

/* ---- references from output buffers ---- */

static void test_reference_outlives_removal(void **state)
{
	struct cache_dep dep = { .table = "parlant_agent" };
	struct cache_entry *e;
	struct cache_flight *f;
	struct evbuffer *out = evbuffer_new(), *out2 = evbuffer_new();
	char value[3000], got[3000];
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(value); i++)
		value[i] = (char)('a' + i % 26);
	assert_int_equal(cache_lookup("ref", 3, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);
	assert_true(cache_fill_append(f, value, sizeof(value)));
	cache_fill_commit(f, 0);
	assert_int_equal(cache_lookup("ref", 3, &dep, 1, SEC, 0, &e, &f), CACHE_HIT);
	evbuffer_add(out, "head", 4);
	cache_entry_write(e, out);
	cache_entry_write(e, out2);
	cache_entry_write(e, out2);
	assert_int_equal(evbuffer_get_length(out), 4 + sizeof(value));
	/* the entry goes away from the cache, its bytes stay in the buffers */
	assert_int_equal(cache_invalidate("parlant_agent", NULL, 0), 1);
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().bytes, 0);
	assert_false(present("ref", 0));
	/* a new entry under the same key does not disturb the old bytes */
	assert_true(store("ref", &dep, 1, "replacement", SEC, 0));
	assert_int_equal(evbuffer_remove(out, got, 4), 4);
	assert_int_equal(evbuffer_remove(out, got, sizeof(got)), sizeof(value));
	assert_memory_equal(got, value, sizeof(value));
	evbuffer_free(out);                          /* drained: one reference released */
	/* partly drained, then freed with the rest still in it: the last reference goes with the buffer */
	assert_int_equal(evbuffer_remove(out2, got, 100), 100);
	assert_memory_equal(got, value, 100);
	assert_int_equal(evbuffer_get_length(out2), 2 * sizeof(value) - 100);
	evbuffer_free(out2);
	assert_string_equal(value_of("ref", 0), "replacement");
	/* a reference that outlives the whole cache is released safely too */
	out = evbuffer_new();
	assert_int_equal(cache_lookup("ref", 3, &dep, 1, SEC, 0, &e, &f), CACHE_HIT);
	cache_entry_write(e, out);
	cache_shutdown();
	assert_int_equal(evbuffer_get_length(out), strlen("replacement"));
	evbuffer_free(out);
	init_cache(1 << 20, 64 << 10);
}

/* ---- switching off and configuration ---- */

static void test_disable_drops_everything(void **state)
{
	struct cache_dep dep = { .table = "t" };
	struct cache_config off = { .enabled = false, .max_memory = 1 << 20, .max_entry_size = 1 << 10 };
	struct cache_config on = off;
	struct cache_entry *e;
	struct cache_flight *f, *g;

	(void)state;
	on.enabled = true;
	assert_true(store("a", &dep, 1, "A", SEC, 0));
	assert_true(store("b", &dep, 1, "B", SEC, 0));
	assert_int_equal(cache_lookup("c", 1, &dep, 1, SEC, 0, &e, &f), CACHE_LEAD);   /* a fill in progress */
	cache_configure(&off);
	assert_false(cache_enabled());
	assert_int_equal(stats().entries, 0);
	assert_int_equal(stats().bytes, 0);
	assert_int_equal(stats().flushes, 2);
	assert_int_equal(cache_lookup("a", 1, &dep, 1, SEC, 0, &e, &g), CACHE_OFF);
	assert_null(g);
	assert_true(cache_fill_append(f, "C", 1));
	cache_fill_commit(f, 0);                     /* nothing stored while off */
	assert_int_equal(stats().entries, 0);
	/* a fill started before switching back on is not stored after */
	cache_configure(&on);
	assert_true(cache_enabled());
	assert_int_equal(cache_lookup("d", 1, NULL, 0, SEC, 0, &e, &f), CACHE_LEAD);
	cache_configure(&off);
	cache_configure(&on);
	cache_fill_commit(f, 0);
	assert_false(present("d", 0));
	assert_true(store("a", &dep, 1, "A", SEC, 0));
	assert_identity();
}

static void test_apply_config(void **state)
{
	struct parley_config cfg;
	struct cache_config cc;
	struct cache_rule tables[] = { { "parlant_agent", 300 }, { "parlant_tool", 600 }, { "parlant_event", 0 } };
	struct cache_rule shapes[] = { { "0x0123456789abcdef", 0 }, { "bad", 5 }, { "select * from t where id = $1", 60 } };

	(void)state;
	memset(&cfg, 0, sizeof(cfg));
	cfg.cache_enabled = true;
	cfg.cache_max_memory = 12345;
	cfg.cache_max_entry_size = 678;
	cfg.cache_wait_timeout = 2 * SEC;
	cfg.cache_tables = tables;
	cfg.ncache_tables = 3;
	cfg.cache_shapes = shapes;
	cfg.ncache_shapes = 3;
	cache_policy_set("stale_table", 10);
	override_clears = 0;
	cache_apply_config(&cfg);
	cache_get_config(&cc);
	assert_true(cc.enabled);
	assert_int_equal(cc.max_memory, 12345);
	assert_int_equal(cc.max_entry_size, 678);
	assert_int_equal(cc.wait_timeout, 2 * SEC);
	assert_int_equal(cache_policy_ttl("parlant_agent"), 300);
	assert_int_equal(cache_policy_ttl("parlant_tool"), 600);
	assert_int_equal(cache_policy_ttl("parlant_event"), 0);
	assert_int_equal(cache_policy_ttl("stale_table"), -1);      /* a reload replaces the whole policy */
	assert_int_equal(override_clears, 1);
	assert_int_equal(override_n, 2);                           /* "bad" was refused by shape.c and skipped */
	assert_string_equal(override_keys[0], "0x0123456789abcdef");
	assert_int_equal(override_ttls[0], 0);
	assert_string_equal(override_keys[1], "select * from t where id = $1");
	assert_int_equal(override_ttls[1], 60);
	/* applying again, now switched off, drops the entries */
	assert_true(store("a", NULL, 0, "A", SEC, 0));
	cfg.cache_enabled = false;
	cfg.ncache_shapes = 0;
	cache_apply_config(&cfg);
	assert_false(cache_enabled());
	assert_int_equal(stats().entries, 0);
	assert_int_equal(override_n, 0);
	/* and it initializes a cache that was not started */
	cache_shutdown();
	cfg.cache_enabled = true;
	cache_apply_config(&cfg);
	assert_true(cache_enabled());
	assert_int_equal(cache_policy_ttl("parlant_agent"), 300);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hit_miss, setup, teardown),
		cmocka_unit_test_setup_teardown(test_off, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalidate_memo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_table_named, setup, teardown),
		cmocka_unit_test_setup_teardown(test_canon_value, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ttl_and_sweep, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_big, setup, teardown),
		cmocka_unit_test_setup_teardown(test_exact_accounting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_racing_fill_discarded, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_invalidation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_and_tables, setup, teardown),
		cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waiter_sees_removed_entry_as_null, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reference_outlives_removal, setup, teardown),
		cmocka_unit_test_setup_teardown(test_disable_drops_everything, setup, teardown),
		cmocka_unit_test_setup_teardown(test_apply_config, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
