/* shape.h — statement shapes: a single-pass normalizer (text → shape id) and a one-time classification of each shape
 * with the real PostgreSQL grammar (libpg_query), remembered in a bounded LRU so the hot path never parses twice. */
#ifndef PARLEY_SHAPE_H
#define PARLEY_SHAPE_H
#include "common.h"

#define SHAPE_MAX_TABLES 16     /* tables remembered per shape; more makes the shape not cacheable (reads) or table-less (writes: see all_tables) */
#define SHAPE_MAX_PINS 8        /* pinned columns per table (reads) or per written row; more are dropped (less precise, never unsafe) */
#define SHAPE_MAX_ROWS 8        /* written rows described per write (multi-row VALUES); more = table-level */
#define SHAPE_MAX_LITERALS 128  /* literals extracted from one text; more = the extra ones are not pinnable */
#define SHAPE_NAME_MAX 64       /* NAMEDATALEN */

/* What a statement (or, for a multi-statement simple query, the whole text) does. */
enum shape_kind {
	SHAPE_READ,        /* SELECT / VALUES / TABLE / SHOW with no side effect (may still be not cacheable) */
	SHAPE_WRITE,       /* INSERT / UPDATE / DELETE / MERGE / COPY FROM, or a SELECT with a data-modifying CTE */
	SHAPE_DDL,         /* CREATE / ALTER / DROP / COMMENT / GRANT / REINDEX / CLUSTER / VACUUM FULL … naming tables */
	SHAPE_TRUNCATE,
	SHAPE_TX_BEGIN,    /* BEGIN / START TRANSACTION */
	SHAPE_TX_COMMIT,   /* COMMIT / END / COMMIT PREPARED */
	SHAPE_TX_ROLLBACK, /* ROLLBACK / ABORT (not ROLLBACK TO SAVEPOINT, which is SHAPE_OTHER) */
	SHAPE_SET_ROLE,    /* SET [SESSION|LOCAL] ROLE, SET SESSION AUTHORIZATION, RESET ROLE / SESSION AUTHORIZATION, RESET ALL */
	SHAPE_SET,         /* other SET / RESET (search_path, TimeZone, …); var_name says which ("" = unknown: a SELECT
			    * calling set_config(), whose variable is a literal that varies within the shape) */
	SHAPE_MULTI,       /* several statements in one text: never cacheable; tables_written is the union */
	SHAPE_OTHER,       /* anything else (SAVEPOINT, LISTEN, DISCARD, EXPLAIN, CALL, DO, PREPARE, …) */
	SHAPE_UNPARSED     /* libpg_query could not parse it: goes to PostgreSQL untouched, never cached */
};

/* Where a pinned value comes from. */
enum pin_src { PIN_NONE = 0, PIN_PARAM, PIN_LITERAL };

/* A column pinned to a value by `col = $n` or `col = constant` (a cast like '5'::int or $1::uuid still pins). */
struct shape_pin {
	char column[SHAPE_NAME_MAX]; /* lower-cased unless it was quoted */
	enum pin_src src;
	int index;                   /* PIN_PARAM: parameter number n of $n (1-based); PIN_LITERAL: literal index (0-based, see
				      * shape_lits; an index >= lits->n has no known value: treat it as unpinned) */
};

/* A table a statement reads, with the equalities every returned row of that table satisfies (top-level AND
 * conjuncts of the WHERE clause and of inner JOIN ... ON conditions, only when the column resolves to this table
 * without doubt). */
struct shape_read_table {
	char name[SHAPE_NAME_MAX];   /* relation name without schema, lower-cased unless quoted */
	int npins;
	struct shape_pin pins[SHAPE_MAX_PINS];
};

/* One description of the rows a write touches: every touched row satisfies all pins (AND). npins == 0 means
 * "any row". For UPDATE, columns assigned in SET are never pinned (a row can move into another value). */
struct shape_write_row {
	int npins;
	struct shape_pin pins[SHAPE_MAX_PINS];
};

/* The classification of one shape. Immutable once published; refcounted (see shape_unref). */
struct shape {
	uint64_t id;                 /* hash of the normalized text */
	char *normalized;            /* normalized text: literals replaced by '?', $n kept, whitespace collapsed, keywords and
				      * unquoted identifiers lower-cased; never contains a literal value (safe for logs) */
	enum shape_kind kind;
	bool cacheable_kind;         /* a single SHAPE_READ with no volatile/unknown function, no locking clause, no temp
				      * table, no data-modifying CTE, no SELECT INTO, no set-returning side effects */
	const char *not_cacheable;   /* static reason text when !cacheable_kind ("volatile function random()" must not include
				      * literal values; "locking clause FOR UPDATE", "not a read", "does not parse", …), else NULL */
	bool has_locking;            /* FOR UPDATE / FOR SHARE / … */
	bool has_volatile;           /* a function not on the known-immutable/stable-safe list, or a time/random/sequence one */
	bool uses_temp;              /* pg_temp schema, or a table created TEMP earlier is not knowable: only pg_temp.* counts */
	char var_name[SHAPE_NAME_MAX]; /* SHAPE_SET: the variable (lower-cased), e.g. "search_path"; "" for RESET ALL;
					* SHAPE_MULTI: "role" when a statement changes the role, else the first SET variable */

	int nread;
	struct shape_read_table read[SHAPE_MAX_TABLES];
	bool read_overflow;          /* more tables than SHAPE_MAX_TABLES: not cacheable */

	int nwritten;                /* tables written (WRITE, DDL, TRUNCATE, MULTI) */
	char written[SHAPE_MAX_TABLES][SHAPE_NAME_MAX];
	bool write_all_tables;       /* a write whose tables are not all known (overflow, DDL on a schema, DROP OWNED, …):
				      * invalidate everything. Also set on SHAPE_UNPARSED (a newer server may accept it), on
				      * CALL / DO / EXECUTE (SHAPE_OTHER), on COMMIT PREPARED, and on a READ that calls a function
				      * not known to be free of writes (user functions) */
	int nrows;                   /* WRITE of exactly one table: touched-row descriptions; 0 = table-level */
	struct shape_write_row rows[SHAPE_MAX_ROWS];

	/* statistics, updated by the relay and read by the console and metrics (not part of the classification) */
	uint64_t calls, hits, misses, slow;
	usec_t total_time, max_time;
	const char *last_refusal;    /* why the last call was not served from cache (static text), or NULL */
	/* relay.c's memo of the cache policy's answer for this shape, valid while ttl_gen equals
	 * cache_policy_generation(): saves the per-table policy lookups on every call */
	uint64_t ttl_gen;            /* 0 = none */
	uint64_t ttl_usec;           /* the TTL decided, 0 = not cacheable */
	const char *ttl_refusal;     /* the refusal that went with a 0 */
	/* relay.c's memo of cache_table_named() for each written table (wmemo_gen[t] 0 = none) */
	void *wmemo[SHAPE_MAX_TABLES];
	uint64_t wmemo_gen[SHAPE_MAX_TABLES];
	/* stats.c's memo of its figures for this shape id, valid while stat_gen equals its table's generation */
	void *stat_memo;
	uint64_t stat_gen;           /* 0 = none */

	int refcount;                /* owner: the shape table holds one reference while the shape is in it */
	/* private to shape.c */
	void *priv;
};

/* Literals found by the normalizer, in order of appearance, as the SQL text wrote them (quotes removed, '' unescaped,
 * E'' escapes left as written). value points into the caller's buffer or into buf. */
struct shape_lits {
	int n;
	struct {
		const char *value;
		size_t len;
		size_t location;         /* byte offset of the literal's first character in the original text */
	} v[SHAPE_MAX_LITERALS];
	char buf[4096];              /* storage for unescaped values when the text needed rewriting */
};

/* Configuration of the shape table. */
struct shape_config {
	int max_shapes;              /* LRU bound for classified shapes (default 10000) */
	int max_texts;               /* LRU bound for the exact-text memo (default 20000) */
};

void shape_init(const struct shape_config *cfg);
void shape_shutdown(void);

/* Normalizes sql[0..len) into out (always NUL-terminated, truncated to outlen) and returns the shape id (a 64-bit hash
 * of the full normalized text, computed even when out is truncated). lits, if not NULL, receives the literals.
 * Pure, no allocation, single pass; safe on any bytes (garbage in, some id out). */
uint64_t shape_normalize(const char *sql, size_t len, char *out, size_t outlen, struct shape_lits *lits);

/* The shape of an exact text: a memo hit by the text's hash costs no normalization; otherwise normalizes, finds the
 * shape by id or classifies it with libpg_query (once per shape). Never NULL (an unparsable text gets a
 * SHAPE_UNPARSED shape). Returns a new reference: release it with shape_unref. lits, if not NULL, is filled for this
 * text (needed to resolve PIN_LITERAL pins). */
struct shape *shape_get(const char *sql, size_t len, struct shape_lits *lits);

void shape_ref(struct shape *s);
void shape_unref(struct shape *s);

/* Visits every shape in the table (for SHOW SHAPES and metrics); stop by returning false. */
void shape_foreach(bool (*fn)(struct shape *s, void *arg), void *arg);
int shape_count(void);

/* Applies a per-shape override: cacheable (ttl_sec > 0) or not (ttl_sec == 0) regardless of the table policy.
 * Overrides are looked up by the relay; this module only stores them: see shape_override_ttl. key is a shape id in
 * hex ("0x…" or 16 hex digits) or a normalized text. Returns 0, or -1 if key is neither. */
int shape_override_set(const char *key, int ttl_sec) MUST_CHECK;
void shape_override_clear_all(void);
/* -1 when the shape has no override, else the TTL in seconds (0 = never cache). */
int shape_override_ttl(const struct shape *s);

#endif
