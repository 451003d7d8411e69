/* test_shape.c — unit tests of the shape module: normalizer, libpg_query classification, memo, LRU, refcounts. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include "shape.h"

/* ---- normalizer ---- */

struct norm_case {
	const char *sql;
	size_t len;          /* 0: strlen(sql) */
	const char *expect;  /* normalized text */
};

static const struct norm_case norm_cases[] = {
	/* literals of every kind */
	{ "SELECT * FROM parlant_agent WHERE id = 5", 0, "select * from parlant_agent where id = ?" },
	{ "select 1, 1.5, .5, 1e10, 1.5E-3, 42abc", 0, "select ?, ?, ?, ?, ?, ? abc" },
	{ "SELECT 'it''s', E'a\\'b', $$x'y$$, $tag$ a $ b $tag$, B'0101', X'1F', N'n', U&'d\\0061t'", 0,
	  "select ?, ?, ?, ?, ?, ?, ?, ?" },
	{ "SELECT 'a'\n  'b'", 0, "select ?" },           /* continuation across a newline: one literal */
	{ "SELECT 'a' 'b'", 0, "select ? ?" },             /* no newline: two tokens (a syntax error in PostgreSQL) */
	{ "SELECT * FROM t WHERE id = $12 AND x = $1::uuid", 0, "select * from t where id = $12 and x = $1::uuid" },
	{ "SELECT 'now'::timestamptz, 'Today 10:00'::timestamp, 'snow'", 0,
	  "select 'now?'::timestamptz, 'now?'::timestamp, ?" },
	/* comments and whitespace */
	{ "SELECT 1 -- trailing\n + 2", 0, "select ? + ?" },
	{ "SELECT /* a /* nested */ still comment */ 1", 0, "select ?" },
	{ "  SELECT\t\n1  ,  2  ;  ", 0, "select ?, ?;" },
	{ "select a--b\n,c", 0, "select a, c" },
	/* case: keywords and unquoted identifiers fold, quoted ones are kept */
	{ "SeLeCt \"MixedCase\", Foo FROM \"T\" t", 0, "select \"MixedCase\", foo from \"T\" t" },
	{ "SELECT \"a\"\"b\"", 0, "select \"a\"\"b\"" },
	/* punctuation spacing is canonical; '(' keeps the source's choice */
	{ "SELECT count( * ),t.id FROM t WHERE id IN(1,2)", 0, "select count(*), t.id from t where id in(?, ?)" },
	{ "SELECT count(*) , t . id FROM t WHERE id IN (1, 2)", 0, "select count(*), t.id from t where id in (?, ?)" },
	{ "SELECT a[1], b::text, c->>'k', d ? 'k', e>=-5", 0, "select a[?], b::text, c ->> ?, d ? ?, e >= - ?" },
	/* unterminated tokens never take the shape of the complete text */
	{ "SELECT 'abc", 0, "select ?<eof>" },
	{ "SELECT $$abc", 0, "select ?<eof>" },
	{ "SELECT E'abc\\", 0, "select ?<eof>" },
	{ "SELECT \"abc", 0, "select \"abc" },
	{ "SELECT /* x", 0, "select /*<eof>" },
	/* garbage and control bytes: visible, never raw */
	{ "\x01\x02{}\\", 0, "\\x01 \\x02 { } \\" },
	{ "SELECT 1\0 garbage", 17, "select ? \\x00 garbage" },
	{ "\xff\xfe\x80", 0, "\xff\xfe\x80" },
	{ "", 0, "" },
	{ "$", 0, "$" },
	{ "$a", 0, "$ a" },
	{ "'", 0, "?<eof>" },
	/* words of every length around the normalizer's four-byte steps, and at the very end of the text */
	{ "SELECT abcd, ABCDE, a_b$1, x9Y, Z FROM t", 0, "select abcd, abcde, a_b$1, x9y, z from t" },
	{ "select ABCDEFGH", 0, "select abcdefgh" },
	{ "SELECT caf\xc3\xa9, \xc3\x91" "AME", 0, "select caf\xc3\xa9, \xc3\x91" "ame" }, /* UTF-8 kept, ASCII folded */
	{ "SELECT(1)", 0, "select(?)" },
	/* word-to-word sequences the normalizer takes without a dispatch, next to ones it must not */
	{ "SELECT a.b, c.d,e . f FROM t x, u y WHERE x.e=y.f", 0, "select a.b, c.d, e.f from t x, u y where x.e = y.f" },
	{ "select e.x, n.y, b.z, x.w, u.v, e.e'str', n 'a', b x'1f', u u&'x', u&\"q\" ,x", 0,
	  "select e.x, n.y, b.z, x.w, u.v, e.?, n ?, b ?, u ?, u&\"q\", x" },
	{ "select a,\tb, c.5, d ,e", 0, "select a, b, c ?, d, e" },
	/* operators: a multi-character one ends in + or - only when it holds one of ~ ! @ # % ^ & | ` ? */
	{ "SELECT a+-b, c@-d, e<=-1, f*-g, h||-i", 0, "select a + - b, c @- d, e <= - ?, f * - g, h ||- i" },
	/* time words: whole letter runs of a string, case-insensitive, also across a continuation */
	{ "SELECT 'no'\n'w', 'nowx', 'yesterdayx', 'YESTERDAY', 'a now b'", 0,
	  "select 'now?', ?, ?, 'now?', 'now?'" },
};

static void test_normalize_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		const struct norm_case *c = &norm_cases[i];
		size_t len = c->len ? c->len : strlen(c->sql);
		char out[512], again[512];
		uint64_t id = shape_normalize(c->sql, len, out, sizeof(out), NULL);
		if (strcmp(out, c->expect) != 0)
			fail_msg("case %zu: got '%s', want '%s'", i, out, c->expect);
		/* the id is the hash of the normalized text: normalizing that text again gives the same id */
		if (!strstr(c->expect, "<eof>") && !strstr(c->expect, "\\x") && c->expect[0] != '\xff') {
			uint64_t id2 = shape_normalize(out, strlen(out), again, sizeof(again), NULL);
			assert_string_equal(again, out);
			assert_true(id2 == id);
		}
	}
}

static uint64_t norm_id(const char *sql)
{
	char out[256];
	return shape_normalize(sql, strlen(sql), out, sizeof(out), NULL);
}

static void test_normalize_same_and_different_ids(void **state)
{
	(void)state;
	assert_true(norm_id("SELECT * FROM t WHERE id = 5") == norm_id("SELECT * FROM t WHERE id = 7"));
	assert_true(norm_id("SELECT * FROM t WHERE id = 5") == norm_id("select *\n from T  where ID=  'x' -- c"));
	assert_true(norm_id("SELECT * FROM t WHERE id = 5") == norm_id("SELECT * FROM t /* c */ WHERE id = 5"));
	assert_true(norm_id("SELECT * FROM t WHERE id = 5") != norm_id("SELECT * FROM t WHERE id = $1"));
	assert_true(norm_id("SELECT * FROM t WHERE id = 5") != norm_id("SELECT * FROM \"T\" WHERE id = 5"));
	assert_true(norm_id("SELECT 'x'::timestamptz") != norm_id("SELECT 'now'::timestamptz"));
	assert_true(norm_id("SELECT 'abc'") != norm_id("SELECT 'abc"));
}

static void test_normalize_literals(void **state)
{
	const char *sql = "SELECT 'it''s', 42, E'a\\'b', $q$x$q$, B'01', X'ff', 'a'\n'b', $3, 1.5e3";
	struct shape_lits l;
	char out[256];
	(void)state;
	shape_normalize(sql, strlen(sql), out, sizeof(out), &l);
	assert_int_equal(l.n, 8);
	const struct {
		const char *value;
		const char *at; /* the text at the literal's location */
	} want[] = {
		{ "it's", "'it''s'" }, { "42", "42" }, { "a\\'b", "E'" }, { "x", "$q$x" },
		{ "01", "B'01'" },     { "ff", "X'ff'" }, { "ab", "'a'\n'b'" }, { "1.5e3", "1.5e3" },
	};
	for (int i = 0; i < 8; i++) {
		assert_int_equal(l.v[i].len, strlen(want[i].value));
		assert_memory_equal(l.v[i].value, want[i].value, l.v[i].len);
		assert_memory_equal(sql + l.v[i].location, want[i].at, strlen(want[i].at));
	}
	/* values that needed no rewriting point into the caller's text */
	assert_ptr_equal(l.v[1].value, sql + l.v[1].location);
}

static void test_normalize_truncation_keeps_full_id(void **state)
{
	const char *sql = "SELECT a, b, c FROM some_table WHERE x = 1";
	char small[8], big[256];
	(void)state;
	uint64_t a = shape_normalize(sql, strlen(sql), small, sizeof(small), NULL);
	uint64_t b = shape_normalize(sql, strlen(sql), big, sizeof(big), NULL);
	assert_true(a == b);
	assert_string_equal(small, "select ");
	assert_true(shape_normalize(sql, strlen(sql), NULL, 0, NULL) == b);
	small[0] = 'z';
	shape_normalize(sql, strlen(sql), small, 1, NULL);
	assert_int_equal(small[0], '\0');
}

/* Every output size from 0 to past the full length: the same id, and the longest prefix of the full text that fits
 * (the normalizer's unchecked fast paths must never write past outlen: the buffer is exactly outlen bytes). */
static void test_normalize_every_outlen(void **state)
{
	static const char *const texts[] = {
		"SELECT abalance FROM pgbench_accounts WHERE aid = 123456;",
		"SELECT e.id,e.kind FROM \"Ev\" e WHERE e.s = 'now' AND e.o >= -5 ORDER BY 1",
		"  x  y\t(z)::int[1] \x01 $1 $$d$$ /* c */ 'a'\n'b' +- @- \xc3\xa9t\xc3\xa9",
	};
	(void)state;
	for (size_t t = 0; t < sizeof(texts) / sizeof(texts[0]); t++) {
		const char *sql = texts[t];
		char full[512];
		uint64_t id = shape_normalize(sql, strlen(sql), full, sizeof(full), NULL);
		size_t flen = strlen(full);
		for (size_t outlen = 0; outlen <= flen + 2; outlen++) {
			char *out = outlen ? malloc(outlen) : NULL;
			struct shape_lits l;
			assert_true(shape_normalize(sql, strlen(sql), out, outlen, &l) == id);
			if (out) {
				size_t want = outlen - 1 < flen ? outlen - 1 : flen;
				assert_int_equal(strlen(out), want);
				assert_memory_equal(out, full, want);
			}
			free(out);
		}
	}
}

static void test_normalize_huge_input(void **state)
{
	size_t n = 2 * 1024 * 1024, len = 0;
	char *sql = malloc(n + 64), *out = malloc(64);
	struct shape_lits *l = malloc(sizeof(*l));
	(void)state;
	assert_non_null(sql);
	len += (size_t)sprintf(sql, "SELECT * FROM t WHERE id IN (");
	while (len < n) {
		len += (size_t)sprintf(sql + len, "'v''%zu',", len);
	}
	sql[len - 1] = ')';
	uint64_t id = shape_normalize(sql, len, out, 64, l);
	assert_int_equal(strlen(out), 63);
	assert_true(l->n > 0 && l->n <= SHAPE_MAX_LITERALS);
	/* every recorded value is within the buffer or the text */
	for (int i = 0; i < l->n; i++) {
		assert_true(l->v[i].value >= l->buf && l->v[i].value + l->v[i].len <= l->buf + sizeof(l->buf));
		assert_true(l->v[i].location < len);
	}
	assert_true(shape_normalize(sql, len, NULL, 0, NULL) == id);
	free(sql);
	free(out);
	free(l);
}

/* Literal values that need rewriting fill lits->buf: once full, no later literal is recorded (indices stay true). */
static void test_normalize_literal_buffer_full(void **state)
{
	char sql[20000];
	size_t len = 0;
	struct shape_lits l;
	char out[64];
	(void)state;
	len += (size_t)sprintf(sql, "SELECT ");
	for (int i = 0; i < 40; i++) {
		sql[len++] = '\'';
		for (int k = 0; k < 200; k++)
			sql[len++] = 'x';
		sql[len++] = '\'';
		sql[len++] = '\'';
		sql[len++] = '\'';
		sql[len++] = ',';
	}
	len += (size_t)sprintf(sql + len, "7");
	shape_normalize(sql, len, out, sizeof(out), &l);
	assert_true(l.n >= 19 && l.n < 40);
	for (int i = 0; i < l.n; i++) {
		assert_int_equal(l.v[i].len, 201);
		assert_int_equal(l.v[i].value[200], '\'');
	}
}

/* Random bytes: never a crash, always a terminated output (run under the sanitizer build). */
static void test_normalize_random_bytes(void **state)
{
	uint64_t x = 0x12345678abcdefULL;
	char in[300], out[128];
	struct shape_lits l;
	static const char alphabet[] = "'\"$-/*\\ \nEeBbXxUuNn&:;()[]0123456789.a_?=\x01\x80";
	(void)state;
	for (int iter = 0; iter < 20000; iter++) {
		size_t len = (size_t)(iter % 300);
		for (size_t i = 0; i < len; i++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			in[i] = (iter & 1) ? (char)(x & 0xff) : alphabet[x % (sizeof(alphabet) - 1)];
		}
		shape_normalize(in, len, out, sizeof(out), &l);
		assert_true(strlen(out) < sizeof(out));
		assert_true(l.n >= 0 && l.n <= SHAPE_MAX_LITERALS);
		for (int i = 0; i < l.n; i++)
			assert_true(l.v[i].location < len);
	}
}

/* ---- classification ---- */

/* Describes a shape's tables compactly: "t[a=$1,b=#0] u[]" (reads), "t u" (written), "{a=$1}{b=#2}" (rows). */
static void describe_pins(char *out, size_t n, const struct shape_pin *pins, int npins)
{
	for (int i = 0; i < npins; i++) {
		size_t l = strlen(out);
		snprintf(out + l, n - l, "%s%s=%s%d", i ? "," : "", pins[i].column, pins[i].src == PIN_PARAM ? "$" : "#",
			 pins[i].index);
	}
}

static void describe(const struct shape *s, char *reads, char *written, char *rows, size_t n)
{
	reads[0] = written[0] = rows[0] = '\0';
	for (int t = 0; t < s->nread; t++) {
		size_t l = strlen(reads);
		snprintf(reads + l, n - l, "%s%s[", t ? " " : "", s->read[t].name);
		describe_pins(reads, n, s->read[t].pins, s->read[t].npins);
		l = strlen(reads);
		snprintf(reads + l, n - l, "]");
	}
	for (int t = 0; t < s->nwritten; t++) {
		size_t l = strlen(written);
		snprintf(written + l, n - l, "%s%s", t ? " " : "", s->written[t]);
	}
	for (int r = 0; r < s->nrows; r++) {
		size_t l = strlen(rows);
		snprintf(rows + l, n - l, "{");
		describe_pins(rows, n, s->rows[r].pins, s->rows[r].npins);
		l = strlen(rows);
		snprintf(rows + l, n - l, "}");
	}
}

enum { F_LOCK = 1, F_VOL = 2, F_TEMP = 4, F_ALL = 8 };

struct cls_case {
	const char *sql;
	enum shape_kind kind;
	bool cacheable;
	const char *reason;   /* substring of not_cacheable, or NULL */
	const char *reads;
	const char *written;
	const char *rows;
	int flags;            /* F_*: has_locking, has_volatile, uses_temp, write_all_tables */
	const char *var;      /* var_name, or NULL to skip */
};

static const struct cls_case cls_cases[] = {
	/* the Parlant hot reads */
	{ "SELECT * FROM parlant_agent WHERE id = $1", SHAPE_READ, true, NULL, "parlant_agent[id=$1]", "", "", 0,
	  NULL },
	{ "SELECT t.* , at.priority FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = at.tool_id "
	  "WHERE at.agent_id = $1 AND at.enabled ORDER BY at.priority",
	  SHAPE_READ, true, NULL, "parlant_agent_tool[agent_id=$1] parlant_tool[]", "", "", 0, NULL },
	{ "SELECT * FROM parlant_event WHERE session_id = $1 AND \"offset\" >= $2 ORDER BY \"offset\" LIMIT 50",
	  SHAPE_READ, true, NULL, "parlant_event[session_id=$1]", "", "", 0, NULL },
	{ "SELECT s.* FROM parlant_journey_state s WHERE s.journey_id = $1 ORDER BY s.id", SHAPE_READ, true, NULL,
	  "parlant_journey_state[journey_id=$1]", "", "", 0, NULL },
	{ "SELECT tr.* FROM parlant_journey_transition tr JOIN parlant_journey_state s ON s.id = tr.source_id "
	  "WHERE s.journey_id = $1::uuid AND tr.enabled = true",
	  SHAPE_READ, true, NULL, "parlant_journey_transition[] parlant_journey_state[journey_id=$1]", "", "", 0,
	  NULL },
	{ "SELECT kb.* FROM parlant_knowledge_base kb WHERE kb.agent_id = 'a1' AND kb.kind = 'faq'::text", SHAPE_READ,
	  true, NULL, "parlant_knowledge_base[agent_id=#0,kind=#1]", "", "", 0, NULL },
	/* pins: constants, casts, reversed sides, schema-qualified tables, unresolvable columns */
	{ "SELECT * FROM public.Parlant_Agent WHERE 42 = ID", SHAPE_READ, true, NULL, "parlant_agent[id=#0]", "", "",
	  0, NULL },
	{ "SELECT * FROM \"Quoted\" q WHERE q.\"Col\" = $2", SHAPE_READ, true, NULL, "Quoted[Col=$2]", "", "", 0,
	  NULL },
	{ "SELECT * FROM t WHERE id::text = '5' AND k = -3 AND j = $1 + 1 AND ctid = '(0,1)'", SHAPE_READ, true, NULL,
	  "t[]", "", "", 0, NULL },
	{ "SELECT * FROM a, b WHERE id = $1", SHAPE_READ, true, NULL, "a[] b[]", "", "", 0, NULL },
	{ "SELECT * FROM a LEFT JOIN b ON b.x = 5 AND a.y = 6 WHERE a.id = $1", SHAPE_READ, true, NULL,
	  "a[id=$1] b[]", "", "", 0, NULL },
	{ "SELECT * FROM a x JOIN a y ON x.id = $1 AND y.id = $2", SHAPE_READ, true, NULL, "a[]", "", "", 0, NULL },
	{ "SELECT * FROM a WHERE id = $1 AND k IN (SELECT k FROM a WHERE id = $1)", SHAPE_READ, true, NULL, "a[]", "",
	  "", 0, NULL },
	{ "SELECT * FROM a WHERE id = $1 OR id = $2", SHAPE_READ, true, NULL, "a[]", "", "", 0, NULL },
	{ "SELECT * FROM a WHERE id = 1 UNION ALL SELECT * FROM b WHERE k = $1", SHAPE_READ, true, NULL,
	  "a[id=#0] b[k=$1]", "", "", 0, NULL },
	{ "SELECT * FROM t WHERE E'a\\nb' = x AND y = 'p'\n'q'", SHAPE_READ, true, NULL, "t[y=#1]", "", "", 0, NULL },
	/* CTEs are not tables; subqueries count as reads without pins */
	{ "WITH a AS (SELECT * FROM b WHERE z = 1) SELECT * FROM a WHERE id = 3", SHAPE_READ, true, NULL, "b[]", "",
	  "", 0, NULL },
	{ "WITH a AS (SELECT * FROM a) SELECT * FROM a", SHAPE_READ, true, NULL, "a[]", "", "", 0, NULL },
	{ "WITH RECURSIVE r AS (SELECT 1 AS n UNION SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r", SHAPE_READ,
	  true, NULL, "", "", "", 0, NULL },
	{ "SELECT * FROM c WHERE x IN (WITH c AS (SELECT 1) SELECT * FROM c)", SHAPE_READ, true, NULL, "c[]", "", "",
	  0, NULL },
	{ "SELECT * FROM (SELECT * FROM inner_t WHERE id = $1) s WHERE s.id = $1", SHAPE_READ, true, NULL,
	  "inner_t[]", "", "", 0, NULL },
	{ "SELECT count(*), coalesce(max(a), 0), lower(b), jsonb_build_object('k', c), d->>'k' FROM t", SHAPE_READ,
	  true, NULL, "t[]", "", "", 0, NULL },
	/* not cacheable reads */
	{ "SELECT * FROM t WHERE id = 1 FOR UPDATE", SHAPE_READ, false, "FOR UPDATE", "t[id=#0]", "", "", F_LOCK,
	  NULL },
	{ "SELECT * FROM t FOR SHARE", SHAPE_READ, false, "FOR SHARE", "t[]", "", "", F_LOCK, NULL },
	{ "SELECT random()", SHAPE_READ, false, "random()", "", "", "", F_VOL, NULL },
	{ "SELECT * FROM t WHERE ts < now()", SHAPE_READ, false, "now()", "t[]", "", "", F_VOL, NULL },
	{ "SELECT nextval('s')", SHAPE_READ, false, "nextval()", "", "", "", F_VOL, NULL },
	{ "SELECT current_timestamp", SHAPE_READ, false, "current_timestamp", "", "", "", F_VOL, NULL },
	{ "SELECT 'now'::timestamptz", SHAPE_READ, false, "time literal", "", "", "", F_VOL, NULL },
	{ "SELECT my_func(a) FROM t", SHAPE_READ, false, "my_func()", "t[]", "", "", F_VOL | F_ALL, NULL },
	{ "SELECT s.fn()", SHAPE_READ, false, "fn()", "", "", "", F_VOL | F_ALL, NULL },
	{ "SELECT * FROM pg_temp.x", SHAPE_READ, false, "temporary", "x[]", "", "", F_TEMP, NULL },
	{ "SELECT * FROM t TABLESAMPLE SYSTEM (1)", SHAPE_READ, false, "TABLESAMPLE", "t[]", "", "", F_VOL, NULL },
	{ "SHOW search_path", SHAPE_READ, false, "SHOW", "", "", "", 0, NULL },
	{ "SELECT * FROM t WHERE owner = current_setting('app.user')", SHAPE_READ, false, "current_setting()", "t[]",
	  "", "", F_VOL, NULL },
	{ "SELECT has_table_privilege('t', 'select')", SHAPE_READ, false, "has_table_privilege()", "", "", "", F_VOL,
	  NULL },
	{ "SELECT set_config('app.user', $1, false)", SHAPE_SET, false, NULL, "", "", "", F_VOL, "" },
	{ "SELECT 1 INTO t2", SHAPE_WRITE, false, "SELECT INTO", "", "t2", "", 0, NULL },
	/* writes */
	{ "UPDATE parlant_agent SET name=$2 WHERE id=$1", SHAPE_WRITE, false, "not a read", "", "parlant_agent",
	  "{id=$1}", 0, NULL },
	{ "UPDATE parlant_agent_tool SET agent_id = 9 WHERE agent_id = 8", SHAPE_WRITE, false, NULL, "",
	  "parlant_agent_tool", "", 0, NULL },
	{ "UPDATE parlant_agent_tool t SET enabled = false WHERE t.agent_id = 8 AND tool_id = $1", SHAPE_WRITE, false,
	  NULL, "", "parlant_agent_tool", "{agent_id=#0,tool_id=$1}", 0, NULL },
	{ "UPDATE t SET (a, b) = (1, 2) WHERE a = 3 AND c = 4", SHAPE_WRITE, false, NULL, "", "t", "{c=#3}", 0, NULL },
	{ "UPDATE t SET a = 1 FROM u WHERE id = 2 AND t.k = 3", SHAPE_WRITE, false, NULL, "u[]", "t", "{k=#2}", 0,
	  NULL },
	{ "INSERT INTO parlant_event (session_id, \"offset\", kind, data) VALUES (42, 7, 'message', $1)", SHAPE_WRITE,
	  false, NULL, "", "parlant_event", "{session_id=#0,offset=#1,kind=#2,data=$1}", 0, NULL },
	{ "INSERT INTO parlant_event (session_id, \"offset\") VALUES ($1, $2), (43, 8), ($3, DEFAULT)", SHAPE_WRITE,
	  false, NULL, "", "parlant_event", "{session_id=$1,offset=$2}{session_id=#0,offset=#1}{session_id=$3}", 0,
	  NULL },
	{ "INSERT INTO t (a) VALUES (now())", SHAPE_WRITE, false, NULL, "", "t", "", F_VOL, NULL },
	{ "INSERT INTO t SELECT * FROM u", SHAPE_WRITE, false, NULL, "u[]", "t", "", 0, NULL },
	{ "INSERT INTO t VALUES (1, 2)", SHAPE_WRITE, false, NULL, "", "t", "", 0, NULL },
	{ "INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT (id) DO UPDATE SET a = excluded.a", SHAPE_WRITE, false,
	  NULL, "", "t", "{id=#0}", 0, NULL },
	{ "INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT ON CONSTRAINT t_pkey DO UPDATE SET a = 3", SHAPE_WRITE,
	  false, NULL, "", "t", "", 0, NULL },
	{ "INSERT INTO t (id, a) VALUES (1, 2) ON CONFLICT DO NOTHING", SHAPE_WRITE, false, NULL, "", "t",
	  "{id=#0,a=#1}", 0, NULL },
	{ "DELETE FROM parlant_event WHERE session_id = $1", SHAPE_WRITE, false, NULL, "", "parlant_event",
	  "{session_id=$1}", 0, NULL },
	{ "DELETE FROM parlant_event", SHAPE_WRITE, false, NULL, "", "parlant_event", "", 0, NULL },
	{ "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = 1", SHAPE_WRITE, false, NULL, "s[]",
	  "t", "", 0, NULL },
	{ "COPY t (a) FROM STDIN", SHAPE_WRITE, false, NULL, "", "t", "", 0, NULL },
	{ "COPY t TO STDOUT", SHAPE_OTHER, false, NULL, "t[]", "", "", 0, NULL },
	{ "WITH d AS (DELETE FROM parlant_event WHERE id = 1 RETURNING *) SELECT * FROM d", SHAPE_WRITE, false,
	  "data-modifying CTE", "", "parlant_event", "", 0, NULL },
	{ "WITH d AS (UPDATE a SET x = 1 RETURNING *) INSERT INTO b SELECT * FROM d", SHAPE_WRITE, false, NULL, "",
	  "a b", "", 0, NULL },
	{ "EXPLAIN ANALYZE DELETE FROM x", SHAPE_WRITE, false, NULL, "", "x", "", 0, NULL },
	{ "EXPLAIN SELECT * FROM x", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ "TRUNCATE a, s.b", SHAPE_TRUNCATE, false, NULL, "", "a b", "", 0, NULL },
	{ "TRUNCATE a CASCADE", SHAPE_TRUNCATE, false, NULL, "", "a", "", F_ALL, NULL },
	/* DDL */
	{ "ALTER TABLE parlant_agent ADD COLUMN y int", SHAPE_DDL, false, "DDL", "", "parlant_agent", "", 0, NULL },
	{ "DROP TABLE x, s.y", SHAPE_DDL, false, NULL, "", "x y", "", 0, NULL },
	{ "DROP TABLE x CASCADE", SHAPE_DDL, false, NULL, "", "", "", F_ALL, NULL },
	{ "CREATE INDEX ON parlant_event (session_id)", SHAPE_DDL, false, NULL, "", "parlant_event", "", 0, NULL },
	{ "CREATE TEMP TABLE tt (a int)", SHAPE_DDL, false, NULL, "", "tt", "", F_TEMP, NULL },
	{ "ALTER TABLE s.t1 RENAME TO parlant_agent", SHAPE_DDL, false, NULL, "", "t1 parlant_agent", "", 0, NULL },
	{ "GRANT SELECT ON parlant_agent TO bob", SHAPE_DDL, false, NULL, "", "parlant_agent", "", 0, NULL },
	{ "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob", SHAPE_DDL, false, NULL, "", "", "", F_ALL, NULL },
	{ "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", SHAPE_DDL, false, NULL, "", "", "", F_ALL,
	  NULL },
	{ "DROP SCHEMA s", SHAPE_DDL, false, NULL, "", "", "", F_ALL, NULL },
	/* session and transaction control */
	{ "SET search_path = a, b", SHAPE_SET, false, NULL, "", "", "", 0, "search_path" },
	{ "SET LOCAL TimeZone TO 'UTC'", SHAPE_SET, false, NULL, "", "", "", 0, "timezone" },
	{ "SET TIME ZONE 'UTC'", SHAPE_SET, false, NULL, "", "", "", 0, "timezone" },
	{ "RESET search_path", SHAPE_SET, false, NULL, "", "", "", 0, "search_path" },
	{ "SET ROLE bob", SHAPE_SET_ROLE, false, NULL, "", "", "", 0, "role" },
	{ "RESET ROLE", SHAPE_SET_ROLE, false, NULL, "", "", "", 0, "role" },
	{ "SET SESSION AUTHORIZATION bob", SHAPE_SET_ROLE, false, NULL, "", "", "", 0, "session_authorization" },
	{ "RESET ALL", SHAPE_SET_ROLE, false, NULL, "", "", "", 0, "" },
	{ "BEGIN", SHAPE_TX_BEGIN, false, "transaction", "", "", "", 0, NULL },
	{ "START TRANSACTION ISOLATION LEVEL SERIALIZABLE", SHAPE_TX_BEGIN, false, NULL, "", "", "", 0, NULL },
	{ "COMMIT", SHAPE_TX_COMMIT, false, NULL, "", "", "", 0, NULL },
	{ "END", SHAPE_TX_COMMIT, false, NULL, "", "", "", 0, NULL },
	{ "COMMIT PREPARED 'x'", SHAPE_TX_COMMIT, false, NULL, "", "", "", F_ALL, NULL },
	{ "ROLLBACK", SHAPE_TX_ROLLBACK, false, NULL, "", "", "", 0, NULL },
	{ "ABORT", SHAPE_TX_ROLLBACK, false, NULL, "", "", "", 0, NULL },
	{ "ROLLBACK TO SAVEPOINT s1", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ "SAVEPOINT s1", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ "DISCARD ALL", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ "LISTEN x", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ "CALL p()", SHAPE_OTHER, false, NULL, "", "", "", F_ALL, NULL },
	{ "DO $$BEGIN END$$", SHAPE_OTHER, false, NULL, "", "", "", F_ALL, NULL },
	{ "EXECUTE p(1)", SHAPE_OTHER, false, NULL, "", "", "", F_ALL, NULL },
	/* several statements */
	{ "BEGIN; UPDATE a SET x = 1 WHERE id = 2; DELETE FROM b; COMMIT", SHAPE_MULTI, false, "several", "", "a b",
	  "", 0, "" },
	{ "SELECT 1; SET ROLE bob", SHAPE_MULTI, false, NULL, "", "", "", 0, "role" },
	{ "SELECT 1; SET search_path = x", SHAPE_MULTI, false, NULL, "", "", "", 0, "search_path" },
	/* unparsable and empty */
	{ "SELEC 1", SHAPE_UNPARSED, false, "does not parse", "", "", "", F_ALL, NULL },
	{ "SELECT 'abc", SHAPE_UNPARSED, false, "does not parse", "", "", "", F_ALL, NULL },
	{ "\x01\x02\xff", SHAPE_UNPARSED, false, NULL, "", "", "", F_ALL, NULL },
	{ "", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
	{ " ; -- nothing", SHAPE_OTHER, false, NULL, "", "", "", 0, NULL },
};

static int setup_shapes(void **state)
{
	(void)state;
	shape_init(NULL);
	return 0;
}

static int teardown_shapes(void **state)
{
	(void)state;
	shape_shutdown();
	return 0;
}

/* Fails naming the case, so a table row that breaks is found at once. */
#define CHECK(cond, ...)                                                                                           \
	do {                                                                                                       \
		if (!(cond)) {                                                                                     \
			print_error("case %zu: %s\n  normalized: %s\n", i, c->sql, s->normalized);               \
			fail_msg(__VA_ARGS__);                                                                     \
		}                                                                                                  \
	} while (0)

static void test_classification_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cls_cases) / sizeof(cls_cases[0]); i++) {
		const struct cls_case *c = &cls_cases[i];
		char reads[1024], written[512], rows[1024];
		struct shape *s = shape_get(c->sql, strlen(c->sql), NULL);

		assert_non_null(s);
		CHECK(s->kind == c->kind, "kind %d, want %d", s->kind, c->kind);
		CHECK(s->cacheable_kind == c->cacheable, "cacheable %d (%s)", s->cacheable_kind,
		      s->not_cacheable ? s->not_cacheable : "-");
		CHECK(c->cacheable == (s->not_cacheable == NULL), "reason %s", s->not_cacheable);
		CHECK(!c->reason || (s->not_cacheable && strstr(s->not_cacheable, c->reason)), "reason '%s' lacks '%s'",
		      s->not_cacheable, c->reason);
		describe(s, reads, written, rows, sizeof(reads));
		CHECK(!strcmp(reads, c->reads), "reads '%s', want '%s'", reads, c->reads);
		CHECK(!strcmp(written, c->written), "written '%s', want '%s'", written, c->written);
		CHECK(!strcmp(rows, c->rows), "rows '%s', want '%s'", rows, c->rows);
		CHECK(s->has_locking == ((c->flags & F_LOCK) != 0), "has_locking %d", s->has_locking);
		CHECK(s->has_volatile == ((c->flags & F_VOL) != 0), "has_volatile %d", s->has_volatile);
		CHECK(s->uses_temp == ((c->flags & F_TEMP) != 0), "uses_temp %d", s->uses_temp);
		CHECK(s->write_all_tables == ((c->flags & F_ALL) != 0), "write_all_tables %d", s->write_all_tables);
		CHECK(!c->var || !strcmp(s->var_name, c->var), "var_name '%s', want '%s'", s->var_name, c->var);
		/* a reason never carries a literal value */
		CHECK(!s->not_cacheable || !strchr(s->not_cacheable, '5'), "reason with a value: %s", s->not_cacheable);
		shape_unref(s);
	}
}

/* The first text of a shape decides its classification, for every text of that shape: literal pins carry over. */
static void test_literal_pins_follow_the_text(void **state)
{
	struct shape_lits l1, l2;
	const char *a = "UPDATE parlant_agent SET name = 'x' WHERE id = 'agent-1'";
	const char *b = "update parlant_agent set name='it''s' where id='agent-2'";
	(void)state;
	struct shape *s1 = shape_get(a, strlen(a), &l1);
	struct shape *s2 = shape_get(b, strlen(b), &l2);
	assert_ptr_equal(s1, s2);
	assert_int_equal(s1->nrows, 1);
	assert_int_equal(s1->rows[0].npins, 1);
	assert_int_equal(s1->rows[0].pins[0].src, PIN_LITERAL);
	int idx = s1->rows[0].pins[0].index;
	assert_int_equal(l1.v[idx].len, 7);
	assert_memory_equal(l1.v[idx].value, "agent-1", 7);
	assert_memory_equal(l2.v[idx].value, "agent-2", 7);
	assert_memory_equal(l2.v[0].value, "it's", 4);
	shape_unref(s1);
	shape_unref(s2);
}

/* A text that fails to lex (a bad escape) does not decide for the valid texts of the same shape. */
static void test_unparsed_does_not_poison_shape(void **state)
{
	const char *bad = "SELECT * FROM t WHERE x = E'\\u00'";
	const char *good = "SELECT * FROM t WHERE x = E'ok'";
	(void)state;
	struct shape *s1 = shape_get(bad, strlen(bad), NULL);
	assert_int_equal(s1->kind, SHAPE_UNPARSED);
	struct shape *s2 = shape_get(good, strlen(good), NULL);
	assert_int_equal(s2->kind, SHAPE_READ);
	assert_true(s2->cacheable_kind);
	assert_true(s1->id == s2->id);
	/* the old shape is still valid for its holder */
	assert_string_equal(s1->normalized, s2->normalized);
	shape_unref(s1);
	shape_unref(s2);
}

static void test_nul_byte_is_unparsed(void **state)
{
	const char sql[] = "SELECT 1\0; DELETE FROM parlant_agent";
	(void)state;
	struct shape *s = shape_get(sql, sizeof(sql) - 1, NULL);
	assert_int_equal(s->kind, SHAPE_UNPARSED);
	assert_true(s->write_all_tables);
	assert_false(s->cacheable_kind);
	shape_unref(s);
}

/* Random statements assembled from SQL fragments: every one gets a consistent classification, never a crash. */
static void test_get_random_statements(void **state)
{
	static const char *const frag[] = {
		"SELECT ", "* ", "FROM ", "t ", "a ", "JOIN ", "ON ", "WHERE ", "id ", "= ", "$1 ", "'x' ", "5 ",
		"AND ", "OR ", "( ", ") ", "WITH ", "AS ", "UPDATE ", "SET ", "INSERT ", "INTO ", "VALUES ", "DELETE ",
		"RETURNING ", "UNION ", "FOR UPDATE ", "now() ", "count(*) ", ", ", "; ", "t.id ", "IN ", "EXISTS ",
		"ORDER BY ", "LIMIT ", "::int ", "BEGIN ", "COMMIT ", "TRUNCATE ", "CREATE TABLE ", "DROP TABLE ",
		"LEFT JOIN ", "lateral ", "(SELECT 1) ", "f(x) ", "E'\\n' ", "$$q$$ ", "-- c\n", "/* c */ ",
	};
	uint64_t x = 0x9e3779b97f4a7c15ULL;
	char sql[512];
	(void)state;
	for (int iter = 0; iter < 1500; iter++) {
		size_t len = 0;
		int nfrag = 1 + iter % 14;
		for (int k = 0; k < nfrag; k++) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			const char *f = frag[x % (sizeof(frag) / sizeof(frag[0]))];
			size_t fl = strlen(f);
			memcpy(sql + len, f, fl);
			len += fl;
		}
		struct shape_lits l;
		struct shape *s = shape_get(sql, len, &l);
		assert_non_null(s);
		assert_true(s->cacheable_kind == (s->not_cacheable == NULL));
		assert_true(!s->cacheable_kind || s->kind == SHAPE_READ);
		assert_true(s->nread >= 0 && s->nread <= SHAPE_MAX_TABLES);
		assert_true(s->nwritten >= 0 && s->nwritten <= SHAPE_MAX_TABLES);
		assert_true(s->nrows >= 0 && s->nrows <= SHAPE_MAX_ROWS);
		assert_true(s->nrows == 0 || (s->kind == SHAPE_WRITE && s->nwritten == 1));
		for (int r = 0; r < s->nrows; r++)
			for (int p = 0; p < s->rows[r].npins; p++)
				assert_true(s->rows[r].pins[p].src != PIN_LITERAL || s->rows[r].pins[p].index < l.n);
		for (int t = 0; t < s->nread; t++)
			for (int p = 0; p < s->read[t].npins; p++)
				assert_true(s->read[t].pins[p].src != PIN_LITERAL || s->read[t].pins[p].index < l.n);
		shape_unref(s);
	}
}

/* A parse tree too deep to walk is treated as opaque: not cacheable, and a write to every table. */
static void test_deep_expression_is_opaque(void **state)
{
	size_t n = 3000, len = 0;
	char *sql = malloc(16 + n * 4);
	(void)state;
	assert_non_null(sql);
	len += (size_t)sprintf(sql, "SELECT 1");
	for (size_t i = 0; i < n; i++)
		len += (size_t)sprintf(sql + len, "+%zu", i % 10);
	struct shape *s = shape_get(sql, len, NULL);
	assert_false(s->cacheable_kind);
	assert_true(s->write_all_tables);
	assert_true(s->kind == SHAPE_OTHER || s->kind == SHAPE_UNPARSED);
	shape_unref(s);
	free(sql);
}

/* ---- memo, LRU, refcounts, overrides ---- */

static void test_memo_hit_returns_same_shape(void **state)
{
	const char *sql = "SELECT * FROM parlant_agent WHERE id = 'abc' AND n = 'x''y'";
	struct shape_lits l1, l2;
	(void)state;
	struct shape *a = shape_get(sql, strlen(sql), &l1);
	int before = a->refcount;
	struct shape *b = shape_get(sql, strlen(sql), &l2);
	assert_ptr_equal(a, b);
	assert_int_equal(b->refcount, before + 1);
	/* the memo gives the same literals as the normalizer */
	assert_int_equal(l1.n, l2.n);
	for (int i = 0; i < l1.n; i++) {
		assert_int_equal(l1.v[i].len, l2.v[i].len);
		assert_int_equal(l1.v[i].location, l2.v[i].location);
		assert_memory_equal(l1.v[i].value, l2.v[i].value, l1.v[i].len);
	}
	assert_ptr_equal(l2.v[0].value, sql + l2.v[0].location + 1);
	/* another text of the same shape: the same object too */
	const char *other = "select * from parlant_agent where id = 'zz' and n = 'q'";
	struct shape *c = shape_get(other, strlen(other), NULL);
	assert_ptr_equal(a, c);
	shape_unref(a);
	shape_unref(b);
	shape_unref(c);
}

static void test_lru_bound_and_refcounts(void **state)
{
	struct shape_config cfg = { .max_shapes = 3, .max_texts = 4 };
	char sql[128];
	(void)state;
	shape_init(&cfg);
	struct shape *first = shape_get("SELECT * FROM t0", 16, NULL);
	assert_int_equal(first->refcount, 2); /* the table's and ours */
	for (int i = 1; i < 20; i++) {
		int n = snprintf(sql, sizeof(sql), "SELECT * FROM t%d WHERE id = %d", i, i);
		struct shape *s = shape_get(sql, (size_t)n, NULL);
		assert_true(shape_count() <= 3);
		shape_unref(s);
	}
	assert_int_equal(shape_count(), 3);
	/* evicted while referenced: still valid, now only ours */
	assert_int_equal(first->refcount, 1);
	assert_string_equal(first->normalized, "select * from t0");
	assert_int_equal(first->read[0].name[1], '0');
	/* asking again classifies anew: a different object */
	struct shape *again = shape_get("SELECT * FROM t0", 16, NULL);
	assert_ptr_not_equal(again, first);
	assert_true(again->id == first->id);
	shape_unref(first);
	shape_unref(again);
	/* many texts of one shape: the memo stays bounded and the shape stays */
	for (int i = 0; i < 50; i++) {
		int n = snprintf(sql, sizeof(sql), "SELECT * FROM t0 WHERE k = %d", i);
		struct shape *s = shape_get(sql, (size_t)n, NULL);
		assert_int_equal(s->kind, SHAPE_READ);
		shape_unref(s);
	}
	assert_true(shape_count() <= 3);
	shape_shutdown();
	shape_init(NULL);
}

/* Texts that never repeat make the memo sample its lookups and insertions: results stay those of the normalizer,
 * and a text that then repeats is still answered right (from the memo or not). */
static void test_memo_sampling_keeps_results(void **state)
{
	char sql[128];
	struct shape_lits l;
	struct shape *first = NULL;
	(void)state;
	for (int i = 0; i < 3000; i++) {
		int n = snprintf(sql, sizeof(sql), "SELECT abalance FROM pgbench_accounts WHERE aid = %d", 100000 + i);
		struct shape *s = shape_get(sql, (size_t)n, &l);
		if (!first)
			first = s;
		else
			assert_ptr_equal(s, first); /* one shape, found by id */
		assert_int_equal(l.n, 1);
		assert_int_equal(l.v[0].len, 6);
		assert_ptr_equal(l.v[0].value, sql + l.v[0].location);
		assert_int_equal(l.v[0].location, (size_t)n - 6);
		if (i > 0)
			shape_unref(s); /* the first reference is kept in first */
	}
	/* now one text over and over, and another shape in between */
	for (int i = 0; i < 200; i++) {
		const char *hot = "SELECT abalance FROM pgbench_accounts WHERE aid = 'x''y'";
		struct shape *s = shape_get(hot, strlen(hot), &l);
		assert_ptr_equal(s, first);
		assert_int_equal(l.n, 1);
		assert_int_equal(l.v[0].len, 3);
		assert_memory_equal(l.v[0].value, "x'y", 3);
		assert_int_equal(l.v[0].location, strlen(hot) - 6);
		shape_unref(s);
		const char *upd = "UPDATE t SET v = 1 WHERE k = 2";
		struct shape *o = shape_get(upd, strlen(upd), &l);
		assert_int_equal(o->kind, SHAPE_WRITE);
		assert_int_equal(l.n, 2);
		assert_memory_equal(l.v[1].value, "2", 1);
		shape_unref(o);
	}
	shape_unref(first);
}

/* ---- template match: texts that differ from a recent one only in integer literals ---- */

/* shape_get(sql) gives what the normalizer gives: id, normalized text, literals (values, lengths, offsets). Returns
 * the shape (a reference the caller releases). */
static struct shape *get_checked(const char *sql, size_t len)
{
	static struct shape_lits l, ln;
	static char norm[4096];
	memset(&l, 0x5a, sizeof(l));
	struct shape *s = shape_get(sql, len, &l);
	uint64_t id = shape_normalize(sql, len, norm, sizeof(norm), &ln);
	assert_true(s->id == id);
	assert_string_equal(s->normalized, norm);
	assert_int_equal(l.n, ln.n);
	for (int i = 0; i < l.n; i++) {
		assert_int_equal(l.v[i].location, ln.v[i].location);
		assert_int_equal(l.v[i].len, ln.v[i].len);
		assert_memory_equal(l.v[i].value, ln.v[i].value, l.v[i].len);
		if (ln.v[i].value == sql + ln.v[i].location)
			assert_ptr_equal(l.v[i].value, sql + l.v[i].location);
	}
	return s;
}

/* Texts of one structure whose integers change (pgbench -M simple): one shape, the literals of each text. */
static void test_template_hit(void **state)
{
	static const char *const texts[] = {
		"UPDATE pgbench_accounts SET abalance = abalance + 17 WHERE aid = 123456;",
		"UPDATE pgbench_accounts SET abalance = abalance + 4999 WHERE aid = 1;",
		"UPDATE pgbench_accounts SET abalance = abalance + 0 WHERE aid = 98765432109876543210987654321;",
		"UPDATE pgbench_accounts SET abalance = abalance + 00017 WHERE aid = 5;",
	};
	(void)state;
	struct shape *first = get_checked(texts[0], strlen(texts[0]));
	assert_int_equal(first->kind, SHAPE_WRITE);
	assert_string_equal(first->normalized, "update pgbench_accounts set abalance = abalance + ? where aid = ?;");
	for (int round = 0; round < 3; round++)
		for (size_t i = 1; i < sizeof(texts) / sizeof(texts[0]); i++) {
			struct shape *s = get_checked(texts[i], strlen(texts[i]));
			assert_ptr_equal(s, first);
			shape_unref(s);
		}
	assert_int_equal(first->refcount, 2); /* the table's and ours: a template holds none */
	/* a string literal of the same structure: the normalizer's answer, the string's value */
	const char *str = "SELECT abalance FROM pgbench_accounts WHERE aid = 5";
	const char *str2 = "SELECT abalance FROM pgbench_accounts WHERE aid = 'x''y'";
	struct shape *a = get_checked(str, strlen(str)), *b = get_checked(str2, strlen(str2));
	assert_ptr_equal(a, b);
	shape_unref(a);
	shape_unref(b);
	shape_unref(first);
}

/* Texts that look like a template's but are not one token of digits where it had one: each is what the normalizer
 * says (another shape, or the same shape with other literals), never the template's shape with cut literals. */
static void test_template_fallbacks(void **state)
{
	static const char *const variants[] = {
		"SELECT * FROM parlant_agent WHERE n = 1abc AND m = 7",   /* the number ends, a word follows */
		"SELECT * FROM parlant_agent WHERE n = 1.5 AND m = 7",    /* same shape, literal 1.5 */
		"SELECT * FROM parlant_agent WHERE n = 1. AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1e5 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1E+5 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1e AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1..2 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1$ AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1_000 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = -1 AND m = 7",     /* structure differs */
		"SELECT * FROM parlant_agent WHERE n = .5 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = $1 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 'x' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = '' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 'it''s' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 'a\\b' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = E'a\\'b' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 'now' AND m = 7",  /* a time word: a shape of its own */
		"SELECT * FROM parlant_agent WHERE n = 'Today' AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 12 AND m = 7 ",    /* longer than the template */
		"SELECT * FROM parlant_agent WHERE n = 12 AND m = ",      /* shorter */
		"SELECT * FROM parlant_agent WHERE n = 12 AND  m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1 -- c\n AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1/* c */AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1::int AND m = 7",
		"SELECT * FROM parlant_agent WHERE n = 1 1 AND m = 7",
		"SELECT * FROM parlant_agent WHERE n =  AND m = 7",       /* no digit where the template has its literal */
		"SELECT * FROM parlant_agent WHERE n = 12 AND m = 7abc",  /* more after the last literal */
		"SELECT * FROM parlant_agent WHERE n = 12 AND m = 7.5",
		"SELECT * FROM parlant_agent WHERE n = 12 AND m = 7 OR n = 2",
	};
	const char *base = "SELECT * FROM parlant_agent WHERE n = 12 AND m = 7";
	const char nul[] = "SELECT * FROM parlant_agent WHERE n = 1\0002 AND m = 7";
	(void)state;
	struct shape *b = get_checked(base, strlen(base));
	assert_int_equal(b->kind, SHAPE_READ);
	for (size_t i = 0; i < sizeof(variants) / sizeof(variants[0]); i++) {
		/* the base text's template is the latest for its shape each time */
		char again[64];
		int n = snprintf(again, sizeof(again), "SELECT * FROM parlant_agent WHERE n = %zu AND m = 7", 100 + i);
		shape_unref(get_checked(again, (size_t)n));
		struct shape *s = get_checked(variants[i], strlen(variants[i]));
		if (strstr(variants[i], "'now'") || strstr(variants[i], "'Today'")) {
			assert_ptr_not_equal(s, b);
			assert_true(s->has_volatile);
		}
		shape_unref(s);
	}
	/* an empty literal between two others */
	shape_unref(get_checked("SELECT a FROM t WHERE b = 1 + 2 + 3", 35));
	shape_unref(get_checked("SELECT a FROM t WHERE b = 1 +  + 3", 34));
	struct shape *z = get_checked(nul, sizeof(nul) - 1);
	assert_int_equal(z->kind, SHAPE_UNPARSED);
	shape_unref(z);
	/* a text with a NUL after the digits where the template has none, and the other way round */
	const char nul2[] = "SELECT * FROM parlant_agent WHERE n = 12\0 AND m = 7";
	z = get_checked(nul2, sizeof(nul2) - 1);
	assert_int_equal(z->kind, SHAPE_UNPARSED);
	shape_unref(z);
	const char nul3[] = "SELECT * FROM parlant_agent WHERE n = 13\0 AND m = 7";
	z = get_checked(nul3, sizeof(nul3) - 1);
	assert_int_equal(z->kind, SHAPE_UNPARSED);
	assert_string_equal(z->not_cacheable, "contains a NUL byte");
	shape_unref(z);
	shape_unref(b);
}

/* Texts of several structures that share the bytes before their first digit (one pair of template slots), in turn:
 * each is what the normalizer says, whichever template is in the pair. */
static void test_template_shared_prefix(void **state)
{
	static const char *const tail[] = { "", " AND b = ", " OR b = ", " LIMIT " };
	char sql[96];
	struct shape *first[4] = { NULL };
	(void)state;
	for (int i = 0; i < 200; i++) {
		int k = (i * 7 + i / 5) % 4;
		int n = k ? snprintf(sql, sizeof(sql), "SELECT * FROM t WHERE a = %d%s%d", i * 37, tail[k], 1000000 - i)
			  : snprintf(sql, sizeof(sql), "SELECT * FROM t WHERE a = %d", i * 37);
		struct shape *s = get_checked(sql, (size_t)n);
		if (!first[k])
			first[k] = s;
		else {
			assert_ptr_equal(s, first[k]);
			shape_unref(s);
		}
	}
	for (int k = 0; k < 4; k++)
		shape_unref(first[k]);
}

/* A shape evicted from the table takes its template with it: a text of its structure afterwards gets a fresh shape,
 * and the evicted one (still referenced) is left alone. */
static void test_template_dies_with_shape(void **state)
{
	struct shape_config cfg = { .max_shapes = 2, .max_texts = 4 };
	(void)state;
	shape_init(&cfg);
	struct shape *old = get_checked("SELECT v FROM kv WHERE k = 1", 28);
	shape_unref(get_checked("SELECT v FROM kv WHERE k = 22", 29));
	shape_unref(get_checked("SELECT 1 FROM other1", 20));
	shape_unref(get_checked("SELECT 2 FROM other2", 20));
	assert_int_equal(old->refcount, 1); /* evicted: only ours */
	struct shape *s = get_checked("SELECT v FROM kv WHERE k = 333", 30);
	assert_ptr_not_equal(s, old);
	assert_true(s->id == old->id);
	assert_int_equal(s->refcount, 2);
	shape_unref(s);
	shape_unref(old);
	shape_shutdown();
	shape_init(NULL);
}

static bool count_visit(struct shape *s, void *arg)
{
	int *n = arg;
	(void)s;
	(*n)++;
	return *n < 2;
}

static void test_foreach_and_count(void **state)
{
	int visited = 0;
	(void)state;
	shape_shutdown();
	shape_init(NULL);
	for (int i = 0; i < 5; i++) {
		char sql[64];
		int n = snprintf(sql, sizeof(sql), "SELECT %d FROM x%d", i, i);
		shape_unref(shape_get(sql, (size_t)n, NULL));
	}
	assert_int_equal(shape_count(), 5);
	shape_foreach(count_visit, &visited);
	assert_int_equal(visited, 2); /* stopped when the visitor returned false */
}

static void test_overrides(void **state)
{
	const char *sql = "SELECT * FROM parlant_agent WHERE id = $1";
	char hex[32];
	(void)state;
	struct shape *s = shape_get(sql, strlen(sql), NULL);
	assert_int_equal(shape_override_ttl(s), -1);

	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)s->id);
	assert_int_equal(shape_override_set(hex, 30), 0);
	assert_int_equal(shape_override_ttl(s), 30);
	snprintf(hex, sizeof(hex), "0x%llX", (unsigned long long)s->id);
	assert_int_equal(shape_override_set(hex, 0), 0);
	assert_int_equal(shape_override_ttl(s), 0);
	shape_override_clear_all();
	assert_int_equal(shape_override_ttl(s), -1);

	/* by normalized text, and by a text that normalizes to it */
	assert_int_equal(shape_override_set("select * from parlant_agent where id = $1", 60), 0);
	assert_int_equal(shape_override_ttl(s), 60);
	shape_override_clear_all();
	assert_int_equal(shape_override_set("SELECT *  FROM Parlant_Agent WHERE id = $1 -- x", 5), 0);
	assert_int_equal(shape_override_ttl(s), 5);

	/* bad keys */
	assert_int_equal(shape_override_set("", 5), -1);
	assert_int_equal(shape_override_set("   ", 5), -1);
	assert_int_equal(shape_override_set("0xZZ", 5), -1);
	assert_int_equal(shape_override_set("0x", 5), -1);
	assert_int_equal(shape_override_set("0x12345678901234567", 5), -1);
	assert_int_equal(shape_override_set(NULL, 5), -1);
	assert_int_equal(shape_override_set(hex, -1), -1);
	shape_override_clear_all();
	shape_unref(s);
}

/* ---- timing (printed, never asserted) ---- */

static double ns_per_call(struct timespec a, struct timespec b, int n)
{
	return ((double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec)) / n;
}

static void test_benchmark(void **state)
{
	const char *hot = "SELECT t.* , at.priority FROM parlant_agent_tool at JOIN parlant_tool t ON t.id = "
			  "at.tool_id WHERE at.agent_id = $1 AND at.enabled ORDER BY at.priority";
	const char *lit = "SELECT * FROM parlant_agent WHERE id = 'a7f3c2d1-0000-4000-8000-000000000042'";
	struct timespec t0, t1;
	struct shape_lits l;
	char out[512];
	volatile uint64_t sink = 0;
	const int n = 200000;
	(void)state;

	shape_unref(shape_get(hot, strlen(hot), NULL));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		struct shape *s = shape_get(hot, strlen(hot), NULL);
		sink += s->id;
		shape_unref(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("bench: shape_get memo hit (%zu-byte join): %.0f ns/call\n", strlen(hot), ns_per_call(t0, t1, n));

	shape_unref(shape_get(lit, strlen(lit), &l));
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++) {
		struct shape *s = shape_get(lit, strlen(lit), &l);
		sink += s->id + (uint64_t)l.n;
		shape_unref(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("bench: shape_get memo hit with literals: %.0f ns/call\n", ns_per_call(t0, t1, n));

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < n; i++)
		sink += shape_normalize(hot, strlen(hot), out, sizeof(out), &l);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("bench: shape_normalize (same join): %.0f ns/call\n", ns_per_call(t0, t1, n));

	const int cold = 2000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < cold; i++) {
		char sql[256];
		/* a new shape each time: the table name differs */
		int len = snprintf(sql, sizeof(sql), "SELECT * FROM parlant_agent_%d a JOIN t ON t.id = a.tid WHERE a.id = $1",
			       i);
		struct shape *s = shape_get(sql, (size_t)len, NULL);
		sink += s->id;
		shape_unref(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	print_message("bench: shape_get new shape (normalize + pg_query_parse + classify): %.0f ns/call\n",
		      ns_per_call(t0, t1, cold));
	assert_true(sink != 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normalize_table),
		cmocka_unit_test(test_normalize_same_and_different_ids),
		cmocka_unit_test(test_normalize_literals),
		cmocka_unit_test(test_normalize_truncation_keeps_full_id),
		cmocka_unit_test(test_normalize_every_outlen),
		cmocka_unit_test(test_normalize_huge_input),
		cmocka_unit_test(test_normalize_literal_buffer_full),
		cmocka_unit_test(test_normalize_random_bytes),
		cmocka_unit_test_setup_teardown(test_classification_table, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_literal_pins_follow_the_text, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_unparsed_does_not_poison_shape, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_nul_byte_is_unparsed, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_get_random_statements, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_deep_expression_is_opaque, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_memo_hit_returns_same_shape, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_lru_bound_and_refcounts, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_memo_sampling_keeps_results, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_template_hit, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_template_fallbacks, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_template_shared_prefix, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_template_dies_with_shape, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_foreach_and_count, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_overrides, setup_shapes, teardown_shapes),
		cmocka_unit_test_setup_teardown(test_benchmark, setup_shapes, teardown_shapes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
