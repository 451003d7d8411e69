/* cache.h — the result cache: entries keyed by exact key bytes, TTL, LRU under a memory limit with exact accounting,
 * per-table generations that keep racing fills out, table- and key-level invalidation, and single-flight fills. */
#ifndef PARLEY_CACHE_H
#define PARLEY_CACHE_H
#include "common.h"
#include <event2/buffer.h>

#define CACHE_MAX_DEPS 32        /* (table, column, value) dependencies of one entry */

/* Global cache settings (from [parley]); the table policy comes from [cache] through cache_policy_set. */
struct cache_config {
	bool enabled;
	size_t max_memory;           /* bytes, everything the cache holds counted (entries, keys, values, deps) */
	size_t max_entry_size;       /* largest value stored, bytes */
	usec_t wait_timeout;         /* how long a single-flight waiter waits before going to the server itself */
};

/* One dependency of an entry on a table it read. col == NULL: on the whole table. Several deps on the same table are
 * ANDed (every row of that table in the result has col_i = val_i for all i). Values are compared after
 * cache_canon_value. */
struct cache_dep {
	const char *table;
	const char *col;
	const char *val;
	size_t val_len;
};

/* One description of rows a write touched (AND of its pins); npins == 0: any row of the table. */
struct cache_write_row {
	int npins;
	struct {
		const char *col;
		const char *val;
		size_t val_len;
	} pins[16];
};

struct cache_entry;   /* a stored result; opaque */
struct cache_flight;  /* an in-progress fill (single-flight leader); opaque */
struct cache_waiter;  /* a client waiting on someone else's fill; opaque */

enum cache_rc {
	CACHE_HIT,        /* *hit is the entry (valid until the caller returns to the event loop unless referenced) */
	CACHE_LEAD,       /* no entry: *flight is a new fill the caller owns; it must end in cache_fill_commit or _abort */
	CACHE_WAIT,       /* someone is filling this key: *flight is theirs; wait with cache_flight_wait or go to the server */
	CACHE_OFF         /* cache disabled, or the key cannot be cached now: go to the server, store nothing */
};

/* Counters. Every stored entry leaves through exactly one reason, so at any time
 * stores == entries + evictions + expirations + invalidations + flushes. bytes is the sum of cache_entry_size over the
 * stored entries (each one allocation: the entry struct, its key, deps and value); fills in progress (each at most
 * max_entry_size) and removed entries whose bytes an output buffer still references are not counted. */
struct cache_stats {
	uint64_t entries, bytes;             /* current */
	uint64_t hits, misses, waits;        /* misses counts CACHE_LEAD */
	uint64_t stores, discarded_racing, too_big;
	uint64_t evictions, expirations, invalidations; /* entries removed for each reason */
	uint64_t flushes;                    /* entries removed by cache_flush, or by disabling the cache */
	size_t max_memory;
};

/* Starts the module (again: an initialized cache is shut down first). */
void cache_init(const struct cache_config *cfg);
/* Applies new settings (RELOAD / SET). Shrinking max_memory evicts at once; disabling drops every entry. */
void cache_configure(const struct cache_config *cfg);
/* Drops everything, including the table policy. Fills still open are aborted (waiters woken with NULL) and must not be
 * used afterwards. Entries whose bytes an evbuffer still references are freed when libevent releases them. */
void cache_shutdown(void);
bool cache_enabled(void);
/* The settings in force (e.g. wait_timeout for the relay). */
void cache_get_config(struct cache_config *out);

struct parley_config;
/* Pushes the cache settings of a loaded configuration into the cache (call after config_load and after each
 * reload): cache_configure (cache_init the first time), the [cache] table policy and the [cache_shapes] overrides
 * (shape_override_clear_all / shape_override_set). cache_max_shapes is for shape_init and is not applied here. */
void cache_apply_config(const struct parley_config *cfg);

/* Table policy from [cache]: TTL in seconds for a table name (0 or absent = not cacheable). */
void cache_policy_clear(void);
void cache_policy_set(const char *table, int ttl_sec);
/* The TTL of a table in seconds, or -1 when the table is not listed. */
int cache_policy_ttl(const char *table);
/* Changes whenever the table policies or the [cache_shapes] overrides may have changed (never 0). */
uint64_t cache_policy_generation(void);

/* Room a canonical value may need beyond the raw value's length. */
#define CACHE_CANON_EXTRA 32

/* Canonical form of a pinned value for comparisons. Equality of canonical forms must hold whenever PostgreSQL would
 * find the values equal (else a stale entry could survive a write), and may hold when it would not (a needless
 * invalidation). So: surrounding blanks trimmed; decimal numbers as "#digits e exponent" (42, 042, 42.0, 4.2e1
 * agree); UUIDs as "u" + 32 lower-case hex digits (with or without hyphens or braces); boolean words as the numbers
 * 1 and 0; anything else ASCII lower-cased. Residual limit: types with other spellings of one value (dates,
 * intervals, inet) compare as text. With outlen >= len + CACHE_CANON_EXTRA nothing is truncated. Writes at most
 * outlen-1 bytes and a NUL; returns the length. */
size_t cache_canon_value(const char *val, size_t len, char *out, size_t outlen);

/* Looks the key up. deps and ttl are used only for CACHE_LEAD: the flight snapshots the generation of every table
 * in deps now, and the fill is stored only if none changed by commit time. An expired entry is removed here and the
 * lookup goes on as a miss. With no entry and no flight, CACHE_OFF is returned instead of CACHE_LEAD when ttl <= 0,
 * ndeps is out of 0..CACHE_MAX_DEPS, a dep has no table, or flight is NULL. A dep with col or val NULL is a dep on the
 * whole table. */
enum cache_rc cache_lookup(const void *key, size_t keylen, const struct cache_dep *deps, int ndeps, usec_t ttl,
			   usec_t now, struct cache_entry **hit, struct cache_flight **flight) MUST_CHECK;

/* Appends result bytes to a fill. Returns false once the value is over max_entry_size: the fill is then doomed
 * (commit stores nothing) and further appends are ignored. */
bool cache_fill_append(struct cache_flight *f, const void *data, size_t len);
/* Ends a fill: stores it if it is intact and no table it read changed since cache_lookup, then wakes the waiters
 * (with the entry, or with NULL if nothing was stored). f is freed. */
void cache_fill_commit(struct cache_flight *f, usec_t now);
/* Ends a fill without storing (error, cancelled, connection lost); waiters are woken with NULL. f is freed. */
void cache_fill_abort(struct cache_flight *f);

/* Waits for f: cb(arg, entry or NULL) is called once, from cache_fill_commit/_abort. The returned handle is valid until
 * then; cache_wait_cancel(handle) withdraws (e.g. the client disconnected or waited too long). Cancelling another
 * waiter from inside a callback is safe; cancelling a waiter from inside its own callback does nothing. A waiter
 * gets NULL if the entry was removed by an earlier waiter's callback. */
struct cache_waiter *cache_flight_wait(struct cache_flight *f, void (*cb)(void *arg, struct cache_entry *e), void *arg);
void cache_wait_cancel(struct cache_waiter *w);

/* The stored bytes of an entry. */
const uint8_t *cache_entry_data(const struct cache_entry *e, size_t *len);
/* The bytes the entry counts for in max_memory and stats.bytes (struct, key, deps, value: one allocation). */
size_t cache_entry_size(const struct cache_entry *e);
/* Appends the entry's bytes to out without copying (evbuffer_add_reference, the entry kept alive until libevent is
 * done with them, even if it is invalidated meanwhile). */
void cache_entry_write(struct cache_entry *e, struct evbuffer *out);

/* Write-through invalidation of table (compared lower-cased): bumps its generation (so racing fills are dropped) and
 * removes the entries that may contain a touched row. An entry survives a row description only if some column is
 * pinned both by the entry (a dep on table with that col) and by the row, to values that differ after
 * cache_canon_value; it survives the write if it survives every row. rows == NULL or nrows == 0: every entry of the
 * table. Returns entries removed. */
uint64_t cache_invalidate(const char *table, const struct cache_write_row *rows, int nrows);
/* Whether a fill or the TTL policy has ever named table, i.e. whether the cache may hold or be filling anything that
 * depends on it (a write to a table it has not named can be recorded at table level: nothing finer is needed). *memo
 * and *memo_gen as for cache_invalidate_memo. */
bool cache_table_named(const char *table, void **memo, uint64_t *memo_gen);
/* cache_invalidate, for a caller that invalidates one table several times (a write at its CommandComplete, its
 * ReadyForQuery and its transaction's end): *memo and *memo_gen (start both at NULL/0) remember the name's lookup. */
uint64_t cache_invalidate_memo(const char *table, const struct cache_write_row *rows, int nrows, void **memo,
			       uint64_t *memo_gen);
/* Everything (DDL of unknown scope, feed loss): bumps every generation. */
uint64_t cache_invalidate_all(void);
/* CACHE FLUSH [table]: like invalidation, counted as a flush. */
uint64_t cache_flush(const char *table /* NULL = all */);

/* Removes expired entries (called periodically; walks every entry). */
void cache_sweep(usec_t now);

void cache_get_stats(struct cache_stats *st);
/* Per-table figures for SHOW CACHE and metrics. */
struct cache_table_stats {
	const char *table;
	int ttl_sec;                 /* policy, -1 if not listed */
	uint64_t entries, bytes;     /* live entries that read the table (an entry reading two tables counts in both) */
	uint64_t invalidations;      /* entries removed by cache_invalidate of this table */
	uint64_t generation;
};
/* Visits every table named so far (by the policy or a fill); stop by returning false. fn must not change the
 * cache. */
void cache_foreach_table(bool (*fn)(const struct cache_table_stats *t, void *arg), void *arg);

#endif
