/* cache.c — the result cache: exact-key entries with TTL and LRU under an exactly accounted memory limit, per-table
 * generations against racing fills, table- and key-level invalidation, and single-flight fills (see cache.h). */
#include "cache.h"
#include "list.h"
#include <ctype.h>

/* Every uthash table of this file hashes with hash64 (below), folded to uthash's 32-bit bucket hash. uthash compares
 * the full key bytes after the bucket lookup, so a hash collision costs a comparison, never a wrong answer. This must
 * be defined before the first inclusion of uthash.h (config.h includes it); no hash table of this file is shared
 * with another file. */
static uint64_t hash64(const void *data, size_t len);
#define HASH_FUNCTION(keyptr, keylen, hashv) \
	do { uint64_t h64_ = hash64((keyptr), (size_t)(keylen)); (hashv) = (unsigned)(h64_ ^ (h64_ >> 32)); } while (0)
#include <uthash.h>
#include "config.h"
#include "log.h"
#include "shape.h"

/* An interned table name. Owner: cache.tables; lives until cache_shutdown (generations must outlive entries). */
struct cache_table {
	char *name;                  /* lower-cased, owned */
	uint64_t generation;         /* bumped by every invalidation and flush of the table */
	int ttl_sec;                 /* policy from [cache]; -1 = not listed */
	struct list_head links;      /* struct entry_link of the live entries that read this table */
	uint64_t nentries, bytes;    /* live entries linked here and the sum of their sizes */
	uint64_t invalidations;      /* entries removed by cache_invalidate of this table */
	UT_hash_handle hh;           /* in cache.tables, keyed by name */
};

/* One dependency of a stored entry; strings point into the entry's block. */
struct entry_dep {
	struct cache_table *table;
	const char *col;             /* NULL: a dependency on the whole table */
	const char *val;             /* canonical (cache_canon_value) value the column is pinned to, NUL-terminated */
	size_t val_len;
};

/* Membership of an entry in one table's list (one per distinct table among the entry's deps). */
struct entry_link {
	struct list_head node;       /* in table->links */
	struct cache_entry *entry;
	struct cache_table *table;
};

/* A stored result. One allocation holds the struct, deps, links, key, dep strings and value, in that order; its size
 * is what the entry counts for in max_memory. Owners: while live, the cache (one reference); plus one reference per
 * evbuffer chain holding its bytes and per waiter wake-up in progress. cache_entry_free is the only way it dies. */
struct cache_entry {
	UT_hash_handle hh;           /* in cache.entries, keyed by key (only while live) */
	struct list_head lru;        /* in cache.lru, least recently used first (only while live) */
	const uint8_t *key;          /* points into the block */
	size_t keylen;
	const uint8_t *data;         /* the stored backend messages, into the block */
	size_t len;
	usec_t expires;              /* a miss from this instant on */
	size_t size;                 /* bytes of the block: the accounted size */
	int refcount;
	bool live;                   /* in the hash, the LRU and the table lists */
	int ndeps;
	struct entry_dep *deps;
	int nlinks;
	struct entry_link *links;
};

/* A dependency of a fill in progress (owned copies, value canonical). */
struct flight_dep {
	struct cache_table *table;
	char *col;                   /* NULL = whole table */
	char *val;
	size_t val_len;
};

/* A fill in progress. Owner: the relay that got it from CACHE_LEAD, until commit or abort frees it; the cache keeps
 * it findable by key in cache.flights meanwhile. */
struct cache_flight {
	UT_hash_handle hh;           /* in cache.flights, keyed by key */
	uint8_t *key;                /* owned */
	size_t keylen;
	usec_t ttl;
	uint64_t global_gen;         /* cache.global_gen at lookup */
	int ndeps;
	struct flight_dep deps[CACHE_MAX_DEPS];
	int ntables;                 /* distinct tables among deps, with their generation at lookup */
	struct {
		struct cache_table *table;
		uint64_t generation;
	} snap[CACHE_MAX_DEPS];
	uint8_t *buf;                /* the value so far, owned */
	size_t len, cap;
	bool doomed;                 /* over max_entry_size: commit stores nothing */
	struct list_head waiters;    /* struct cache_waiter, in arrival order */
};

/* A client waiting on a fill. Owner: the flight's waiter list until its callback has run (then freed), or the
 * caller of cache_wait_cancel. */
struct cache_waiter {
	struct list_head node;       /* in flight->waiters; self-linked once taken off */
	void (*cb)(void *arg, struct cache_entry *e);
	void *arg;
	bool firing;                 /* its callback is running: cancel is then a no-op */
};

/* Reasons an entry leaves the cache, each with its own counter. */
enum removal { RM_EVICTION, RM_EXPIRATION, RM_INVALIDATION, RM_FLUSH };

/* The module's state. */
static struct {
	bool initialized;
	struct cache_config cfg;
	struct cache_entry *entries; /* uthash by key: the live entries */
	struct list_head lru;        /* live entries, least recently used first */
	struct cache_flight *flights; /* uthash by key: fills in progress */
	struct cache_table *tables;  /* uthash by lower-cased name: every table ever named */
	uint64_t global_gen;         /* bumped by invalidate_all, flush of everything, disabling and enabling */
	struct cache_stats st;       /* counters; entries and bytes are the current totals */
} cache = { .lru = LIST_INIT(cache.lru) };

/* ---- hashing ---- */

/* A 64-bit hash of arbitrary bytes, 8 bytes per step. */
static uint64_t hash64(const void *data, size_t len)
{
	const uint8_t *p = data;
	uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)len * 0xff51afd7ed558ccdULL), w;

	while (len >= 8) {
		memcpy(&w, p, 8);
		h = (h ^ mix64(w)) * 0x9fb21c651e98df25ULL;
		h = (h << 27) | (h >> 37);
		p += 8;
		len -= 8;
	}
	if (len) {
		w = 0;
		memcpy(&w, p, len);
		h = (h ^ mix64(w ^ ((uint64_t)len << 56))) * 0x9fb21c651e98df25ULL;
	}
	return mix64(h);
}

/* ---- tables ---- */

/* The table named name (compared lower-cased); created when create is set, else NULL when unknown. */
/* Changes whenever the set of tables does (a table added, all freed): a remembered lookup from before is stale. */
static uint64_t tables_gen = 1;

static struct cache_table *table_get(const char *name, bool create)
{
	char sbuf[128], *low;
	const char *key = name;
	size_t n, i;
	bool upper = false;
	struct cache_table *t = NULL;

	if (!name)
		return NULL;
	/* names from the shapes are lower case already (the normalizer folds unquoted identifiers): copy only when
	 * there is an upper-case ASCII letter to fold (every write looks its tables up, several times per transaction) */
	for (n = 0; name[n]; n++)
		upper |= name[n] >= 'A' && name[n] <= 'Z';
	low = sbuf;
	if (upper) {
		low = n < sizeof(sbuf) ? sbuf : xmalloc(n + 1);
		for (i = 0; i < n; i++)
			low[i] = (char)tolower((unsigned char)name[i]);
		low[n] = '\0';
		key = low;
	}
	HASH_FIND(hh, cache.tables, key, n, t);
	if (!t && create) {
		t = xcalloc(1, sizeof(*t));
		t->name = xstrdup(key);
		t->ttl_sec = -1;
		list_init(&t->links);
		HASH_ADD_KEYPTR(hh, cache.tables, t->name, n, t);
		tables_gen++;
	}
	if (low != sbuf)
		free(low);
	return t;
}

/* ---- entries ---- */

/* Frees an entry's block: the only place an entry dies (called when its last reference goes). */
static void cache_entry_free(struct cache_entry *e)
{
	free(e);
}

static void entry_unref(struct cache_entry *e)
{
	if (--e->refcount == 0)
		cache_entry_free(e);
}

/* Takes a live entry out of every index, keeps the accounting exact, and drops the cache's reference. */
static void entry_remove(struct cache_entry *e, enum removal why)
{
	int i;

	HASH_DEL(cache.entries, e);
	list_del(&e->lru);
	for (i = 0; i < e->nlinks; i++) {
		struct cache_table *t = e->links[i].table;
		list_del(&e->links[i].node);
		t->nentries--;
		t->bytes -= e->size;
	}
	cache.st.entries--;
	cache.st.bytes -= e->size;
	switch (why) {
	case RM_EVICTION:
		cache.st.evictions++;
		break;
	case RM_EXPIRATION:
		cache.st.expirations++;
		break;
	case RM_INVALIDATION:
		cache.st.invalidations++;
		break;
	case RM_FLUSH:
		cache.st.flushes++;
		break;
	}
	e->live = false;
	entry_unref(e);
}

/* Removes every live entry; returns how many. */
static uint64_t remove_all(enum removal why)
{
	struct list_head *pos, *tmp;
	uint64_t n = 0;

	list_for_each_safe(pos, tmp, &cache.lru) {
		entry_remove(list_entry(pos, struct cache_entry, lru), why);
		n++;
	}
	return n;
}

/* Evicts least recently used entries until need more bytes fit under max_memory. */
static void evict_for(size_t need)
{
	while (!list_empty(&cache.lru) && cache.st.bytes + need > cache.cfg.max_memory)
		entry_remove(list_first_entry(&cache.lru, struct cache_entry, lru), RM_EVICTION);
}

/* Bumps the global generation and every table's, so no fill in progress can be stored. */
static void bump_all_generations(void)
{
	struct cache_table *t, *tmp;

	cache.global_gen++;
	HASH_ITER(hh, cache.tables, t, tmp)
		t->generation++;
}

/* The accounted size of an entry built from f (the whole block). */
static size_t entry_block_size(const struct cache_flight *f, int nlinks)
{
	size_t size = sizeof(struct cache_entry) + (size_t)f->ndeps * sizeof(struct entry_dep) +
		      (size_t)nlinks * sizeof(struct entry_link) + f->keylen + f->len;
	int i;

	for (i = 0; i < f->ndeps; i++)
		if (f->deps[i].col)
			size += strlen(f->deps[i].col) + 1 + f->deps[i].val_len + 1;
	return size;
}

/* Builds and stores the entry of a successful fill; NULL (counted as too_big) when it cannot fit in max_memory. */
static struct cache_entry *entry_store(struct cache_flight *f, usec_t now)
{
	struct cache_entry *e, *old = NULL;
	size_t size, n;
	char *p;
	int i;

	size = entry_block_size(f, f->ntables);
	if (size > cache.cfg.max_memory) {
		cache.st.too_big++;
		return NULL;
	}
	HASH_FIND(hh, cache.entries, f->key, f->keylen, old);
	if (old)
		entry_remove(old, RM_INVALIDATION);   /* cannot happen while flights are unique per key; kept exact anyway */
	evict_for(size);

	e = xmalloc(size);
	memset(e, 0, sizeof(*e));
	e->size = size;
	e->deps = (struct entry_dep *)(e + 1);
	e->links = (struct entry_link *)(e->deps + f->ndeps);
	p = (char *)(e->links + f->ntables);
	memcpy(p, f->key, f->keylen);
	e->key = (const uint8_t *)p;
	e->keylen = f->keylen;
	p += f->keylen;
	e->ndeps = f->ndeps;
	for (i = 0; i < f->ndeps; i++) {
		e->deps[i].table = f->deps[i].table;
		e->deps[i].col = e->deps[i].val = NULL;
		e->deps[i].val_len = 0;
		if (!f->deps[i].col)
			continue;
		n = strlen(f->deps[i].col) + 1;
		memcpy(p, f->deps[i].col, n);
		e->deps[i].col = p;
		p += n;
		memcpy(p, f->deps[i].val, f->deps[i].val_len + 1);
		e->deps[i].val = p;
		e->deps[i].val_len = f->deps[i].val_len;
		p += f->deps[i].val_len + 1;
	}
	if (f->len)
		memcpy(p, f->buf, f->len);
	e->data = (const uint8_t *)p;
	e->len = f->len;
	e->expires = now + f->ttl;
	e->refcount = 1;
	e->live = true;

	HASH_ADD_KEYPTR(hh, cache.entries, e->key, e->keylen, e);
	list_add_tail(&e->lru, &cache.lru);
	e->nlinks = f->ntables;
	for (i = 0; i < f->ntables; i++) {
		struct cache_table *t = f->snap[i].table;
		e->links[i].entry = e;
		e->links[i].table = t;
		list_add_tail(&e->links[i].node, &t->links);
		t->nentries++;
		t->bytes += size;
	}
	cache.st.entries++;
	cache.st.bytes += size;
	cache.st.stores++;
	return e;
}

/* ---- configuration and policy ---- */

void cache_init(const struct cache_config *cfg)
{
	if (cache.initialized)
		cache_shutdown();
	cache.initialized = true;
	cache.cfg = *cfg;
	cache.st.max_memory = cfg->max_memory;
}

void cache_configure(const struct cache_config *cfg)
{
	bool was_enabled = cache.cfg.enabled;

	if (!cache.initialized) {
		cache_init(cfg);
		return;
	}
	cache.cfg = *cfg;
	cache.st.max_memory = cfg->max_memory;
	if (was_enabled != cfg->enabled) {
		/* Writes are not necessarily reported while the cache is off: nothing filled before a switch may be stored. */
		bump_all_generations();
		if (!cfg->enabled)
			remove_all(RM_FLUSH);
	}
	evict_for(0);
}

void cache_shutdown(void)
{
	struct cache_flight *f, *ftmp;
	struct cache_table *t, *ttmp;

	cache.initialized = false;   /* lookups from waiters' callbacks now get CACHE_OFF */
	HASH_ITER(hh, cache.flights, f, ftmp)
		cache_fill_abort(f);
	remove_all(RM_FLUSH);
	HASH_ITER(hh, cache.tables, t, ttmp) {
		HASH_DEL(cache.tables, t);
		free(t->name);
		free(t);
	}
	tables_gen++;
	HASH_CLEAR(hh, cache.entries);
	memset(&cache.cfg, 0, sizeof(cache.cfg));
	memset(&cache.st, 0, sizeof(cache.st));
	cache.global_gen++;
}

bool cache_enabled(void)
{
	return cache.initialized && cache.cfg.enabled;
}

void cache_get_config(struct cache_config *out)
{
	*out = cache.cfg;
}

static uint64_t policy_gen = 1;

uint64_t cache_policy_generation(void)
{
	return policy_gen;
}

void cache_policy_clear(void)
{
	policy_gen++;
	struct cache_table *t, *tmp;

	HASH_ITER(hh, cache.tables, t, tmp)
		t->ttl_sec = -1;
}

void cache_policy_set(const char *table, int ttl_sec)
{
	struct cache_table *t = table_get(table, true);

	policy_gen++;
	if (t)
		t->ttl_sec = ttl_sec < 0 ? -1 : ttl_sec;
}

int cache_policy_ttl(const char *table)
{
	struct cache_table *t = table_get(table, false);

	return t ? t->ttl_sec : -1;
}

void cache_apply_config(const struct parley_config *cfg)
{
	struct cache_config cc;
	int i;

	memset(&cc, 0, sizeof(cc));
	cc.enabled = cfg->cache_enabled;
	cc.max_memory = cfg->cache_max_memory;
	cc.max_entry_size = cfg->cache_max_entry_size;
	cc.wait_timeout = cfg->cache_wait_timeout;
	cache_configure(&cc);
	cache_policy_clear();
	for (i = 0; i < cfg->ncache_tables; i++)
		cache_policy_set(cfg->cache_tables[i].key, cfg->cache_tables[i].ttl_sec);
	shape_override_clear_all();
	for (i = 0; i < cfg->ncache_shapes; i++)
		if (shape_override_set(cfg->cache_shapes[i].key, cfg->cache_shapes[i].ttl_sec) < 0)
			log_warning("[cache_shapes]: \"%s\" is neither a shape id nor a normalized query text; ignored",
				    cfg->cache_shapes[i].key);
	policy_gen++; /* the overrides are part of the policy too */
}

/* Canonical number: "#" [-] digits "e" exponent, with the value = 0.digits x 10^exponent and no leading or trailing
 * zero digit ("#0" for zero), so 42, 042, 42.0, +4.2e1 and 420E-1 agree. Returns the length, or 0 when val is not a
 * plain decimal number. out must hold len + CACHE_CANON_EXTRA bytes. */
static size_t canon_number(const char *val, size_t len, char *out)
{
	size_t i = 0, n = 0, nd = 0, lead = 0;
	long exp10 = 0, e = 0;
	bool neg = false, dot = false, any = false, eneg = false;
	char digits[512];

	if (len > sizeof(digits))
		return 0;
	if (i < len && (val[i] == '+' || val[i] == '-'))
		neg = val[i++] == '-';
	for (; i < len; i++) {
		char ch = val[i];
		if (ch >= '0' && ch <= '9') {
			any = true;
			if (nd == 0 && ch == '0') {
				/* a leading zero: moves the exponent only after the point */
				if (dot)
					lead++;
				continue;
			}
			digits[nd++] = ch;
			if (!dot)
				exp10++;
		} else if (ch == '.' && !dot) {
			dot = true;
		} else {
			break;
		}
	}
	if (!any)
		return 0;
	if (i < len && (val[i] == 'e' || val[i] == 'E')) {
		size_t start;
		i++;
		if (i < len && (val[i] == '+' || val[i] == '-'))
			eneg = val[i++] == '-';
		start = i;
		for (; i < len && val[i] >= '0' && val[i] <= '9'; i++) {
			if (i - start >= 9)
				return 0;
			e = e * 10 + (val[i] - '0');
		}
		if (i == start)
			return 0;
	}
	if (i != len)
		return 0;
	while (nd > 0 && digits[nd - 1] == '0')
		nd--;
	if (nd == 0) {
		memcpy(out, "#0", 3);
		return 2;
	}
	exp10 = exp10 - (long)lead + (eneg ? -e : e);
	out[n++] = '#';
	if (neg)
		out[n++] = '-';
	memcpy(out + n, digits, nd);
	n += nd;
	n += (size_t)snprintf(out + n, CACHE_CANON_EXTRA, "e%ld", exp10);
	return n;
}

/* Canonical UUID: "u" and 32 lower-case hex digits, whatever braces and hyphens PostgreSQL's input accepted.
 * Returns the length, or 0 when val is not a UUID. */
static size_t canon_uuid(const char *val, size_t len, char *out)
{
	size_t n = 0;
	out[n++] = 'u';
	for (size_t i = 0; i < len; i++) {
		char ch = val[i];
		if (ch == '-' || ch == '{' || ch == '}')
			continue;
		if (!isxdigit((unsigned char)ch) || n > 32)
			return 0;
		out[n++] = (char)tolower((unsigned char)ch);
	}
	if (n != 33)
		return 0;
	out[n] = '\0';
	return n;
}

size_t cache_canon_value(const char *val, size_t len, char *out, size_t outlen)
{
	static const char *const truthy[] = { "t", "true", "y", "yes", "on" };
	static const char *const falsy[] = { "f", "false", "n", "no", "off" };
	char low[16];
	size_t i, n;

	if (outlen == 0)
		return 0;
	if (!val)
		len = 0;
	while (len > 0 && isspace((unsigned char)val[0])) {
		val++;
		len--;
	}
	while (len > 0 && isspace((unsigned char)val[len - 1]))
		len--;
	if (outlen >= len + CACHE_CANON_EXTRA) {
		if ((n = canon_number(val, len, out)) > 0 || (n = canon_uuid(val, len, out)) > 0)
			return n;
		if (len < sizeof(low)) {
			for (i = 0; i < len; i++)
				low[i] = (char)tolower((unsigned char)val[i]);
			low[len] = '\0';
			for (i = 0; i < ARRAY_SIZE(truthy); i++)
				if (strcmp(low, truthy[i]) == 0)
					return canon_number("1", 1, out);
			for (i = 0; i < ARRAY_SIZE(falsy); i++)
				if (strcmp(low, falsy[i]) == 0)
					return canon_number("0", 1, out);
		}
	}
	for (n = 0, i = 0; i < len && n + 1 < outlen; i++)
		out[n++] = (char)tolower((unsigned char)val[i]);
	out[n] = '\0';
	return n;
}

/* Whether canonical a equals raw b once b is canonicalized. */
static bool canon_equal(const char *a, size_t alen, const char *b, size_t blen)
{
	char sbuf[256];
	size_t cap = blen + CACHE_CANON_EXTRA, n;
	char *buf = cap <= sizeof(sbuf) ? sbuf : xmalloc(cap);
	bool eq;

	n = cache_canon_value(b, blen, buf, cap);
	eq = n == alen && memcmp(a, buf, n) == 0;
	if (buf != sbuf)
		free(buf);
	return eq;
}

/* ---- lookup and fills ---- */

/* Frees a flight's own storage (not its waiters). */
static void flight_free(struct cache_flight *f)
{
	int i;

	for (i = 0; i < f->ndeps; i++) {
		free(f->deps[i].col);
		free(f->deps[i].val);
	}
	free(f->buf);
	free(f->key);
	free(f);
}

/* Starts a fill of key: copies the deps (values canonical) and snapshots each distinct table's generation. */
static struct cache_flight *flight_new(const void *key, size_t keylen, const struct cache_dep *deps, int ndeps, usec_t ttl)
{
	struct cache_flight *f = xcalloc(1, sizeof(*f));
	int i, j;

	f->key = xmalloc(keylen ? keylen : 1);
	memcpy(f->key, key, keylen);
	f->keylen = keylen;
	f->ttl = ttl;
	f->global_gen = cache.global_gen;
	list_init(&f->waiters);
	for (i = 0; i < ndeps; i++) {
		struct flight_dep *d = &f->deps[f->ndeps++];
		d->table = table_get(deps[i].table, true);
		if (deps[i].col && deps[i].val) {
			d->col = xstrdup(deps[i].col);
			d->val = xmalloc(deps[i].val_len + CACHE_CANON_EXTRA);
			d->val_len = cache_canon_value(deps[i].val, deps[i].val_len, d->val, deps[i].val_len + CACHE_CANON_EXTRA);
		}
		for (j = 0; j < f->ntables && f->snap[j].table != d->table; j++)
			;
		if (j == f->ntables) {
			f->snap[j].table = d->table;
			f->snap[j].generation = d->table->generation;
			f->ntables++;
		}
	}
	HASH_ADD_KEYPTR(hh, cache.flights, f->key, f->keylen, f);
	return f;
}

enum cache_rc cache_lookup(const void *key, size_t keylen, const struct cache_dep *deps, int ndeps, usec_t ttl,
			   usec_t now, struct cache_entry **hit, struct cache_flight **flight)
{
	struct cache_entry *e = NULL;
	struct cache_flight *f = NULL;
	int i;

	if (hit)
		*hit = NULL;
	if (flight)
		*flight = NULL;
	if (!cache_enabled() || !key)
		return CACHE_OFF;
	HASH_FIND(hh, cache.entries, key, keylen, e);
	if (e) {
		if (now < e->expires) {
			list_del(&e->lru);
			list_add_tail(&e->lru, &cache.lru);
			cache.st.hits++;
			if (hit)
				*hit = e;
			return CACHE_HIT;
		}
		entry_remove(e, RM_EXPIRATION);
	}
	HASH_FIND(hh, cache.flights, key, keylen, f);
	if (f) {
		cache.st.waits++;
		if (flight)
			*flight = f;
		return CACHE_WAIT;
	}
	if (ttl <= 0 || ndeps < 0 || ndeps > CACHE_MAX_DEPS || (ndeps > 0 && !deps) || !flight)
		return CACHE_OFF;
	for (i = 0; i < ndeps; i++)
		if (!deps[i].table || !deps[i].table[0])
			return CACHE_OFF;
	cache.st.misses++;
	*flight = flight_new(key, keylen, deps, ndeps, ttl);
	return CACHE_LEAD;
}

bool cache_fill_append(struct cache_flight *f, const void *data, size_t len)
{
	size_t cap;

	if (f->doomed)
		return false;
	if (len > cache.cfg.max_entry_size || f->len > cache.cfg.max_entry_size - len) {
		f->doomed = true;
		free(f->buf);
		f->buf = NULL;
		f->len = f->cap = 0;
		cache.st.too_big++;
		return false;
	}
	if (f->len + len > f->cap) {
		cap = f->cap ? f->cap : 1024;
		while (cap < f->len + len)
			cap *= 2;
		f->buf = xrealloc(f->buf, cap);
		f->cap = cap;
	}
	if (len)
		memcpy(f->buf + f->len, data, len);
	f->len += len;
	return true;
}

/* Whether a table f read changed since its lookup (or everything was invalidated). */
static bool flight_raced(const struct cache_flight *f)
{
	int i;

	if (f->global_gen != cache.global_gen)
		return true;
	for (i = 0; i < f->ntables; i++)
		if (f->snap[i].table->generation != f->snap[i].generation)
			return true;
	return false;
}

/* Wakes every waiter of an unlinked flight once, with e (or NULL if e stopped being live meanwhile), then frees f.
 * A callback may cancel other waiters, look the key up again, invalidate, or start and end other fills. */
static void flight_end(struct cache_flight *f, struct cache_entry *e)
{
	struct cache_waiter *w;

	if (e)
		e->refcount++;
	while (!list_empty(&f->waiters)) {
		w = list_first_entry(&f->waiters, struct cache_waiter, node);
		list_del(&w->node);
		w->firing = true;
		w->cb(w->arg, e && e->live ? e : NULL);
		free(w);
	}
	if (e)
		entry_unref(e);
	flight_free(f);
}

void cache_fill_commit(struct cache_flight *f, usec_t now)
{
	struct cache_entry *e = NULL;

	HASH_DEL(cache.flights, f);
	if (!f->doomed && cache_enabled()) {
		if (flight_raced(f))
			cache.st.discarded_racing++;
		else
			e = entry_store(f, now);
	}
	flight_end(f, e);
}

void cache_fill_abort(struct cache_flight *f)
{
	HASH_DEL(cache.flights, f);
	flight_end(f, NULL);
}

struct cache_waiter *cache_flight_wait(struct cache_flight *f, void (*cb)(void *arg, struct cache_entry *e), void *arg)
{
	struct cache_waiter *w = xcalloc(1, sizeof(*w));

	w->cb = cb;
	w->arg = arg;
	list_add_tail(&w->node, &f->waiters);
	return w;
}

void cache_wait_cancel(struct cache_waiter *w)
{
	if (!w || w->firing)
		return;
	list_del(&w->node);
	free(w);
}

/* ---- entries seen from outside ---- */

const uint8_t *cache_entry_data(const struct cache_entry *e, size_t *len)
{
	if (len)
		*len = e->len;
	return e->data;
}

size_t cache_entry_size(const struct cache_entry *e)
{
	return e->size;
}

/* libevent's cleanup of a chain that referenced an entry's bytes. */
static void entry_ref_cleanup(const void *data, size_t datalen, void *extra)
{
	(void)data;
	(void)datalen;
	entry_unref(extra);
}

void cache_entry_write(struct cache_entry *e, struct evbuffer *out)
{
	if (e->len == 0)
		return;
	e->refcount++;
	if (evbuffer_add_reference(out, e->data, e->len, entry_ref_cleanup, e) != 0) {
		/* libevent did not take the reference (and will not call the cleanup): copy instead */
		entry_unref(e);
		if (evbuffer_add(out, e->data, e->len) != 0)
			log_error("cache: could not append %zu cached bytes to an output buffer", e->len);
	}
}

/* ---- invalidation ---- */

/* Whether write row r cannot touch any row e read from t: some column is pinned by both to different values. */
static bool row_excludes(const struct cache_entry *e, const struct cache_table *t, const struct cache_write_row *r)
{
	int npins = r->npins < (int)ARRAY_SIZE(r->pins) ? r->npins : (int)ARRAY_SIZE(r->pins);
	int i, j;

	for (i = 0; i < npins; i++) {
		if (!r->pins[i].col || !r->pins[i].val)
			continue;
		for (j = 0; j < e->ndeps; j++) {
			const struct entry_dep *d = &e->deps[j];
			if (d->table == t && d->col && strcmp(d->col, r->pins[i].col) == 0 &&
			    !canon_equal(d->val, d->val_len, r->pins[i].val, r->pins[i].val_len))
				return true;
		}
	}
	return false;
}

/* Removes the entries of t that a write of rows may affect (all of them when rows is NULL or empty). */
static uint64_t invalidate_table(struct cache_table *t, const struct cache_write_row *rows, int nrows, enum removal why)
{
	struct list_head *pos, *tmp;
	uint64_t n = 0;
	int i;

	t->generation++;
	/* Removing an entry unlinks only its own link from this list (one per table), so tmp stays valid. */
	list_for_each_safe(pos, tmp, &t->links) {
		struct cache_entry *e = list_entry(pos, struct entry_link, node)->entry;
		bool survives = rows && nrows > 0;
		for (i = 0; survives && i < nrows; i++)
			survives = row_excludes(e, t, &rows[i]);
		if (survives)
			continue;
		entry_remove(e, why);
		n++;
	}
	return n;
}

bool cache_table_named(const char *table, void **memo, uint64_t *memo_gen)
{
	if (*memo_gen != tables_gen) {
		*memo = table_get(table, false);
		*memo_gen = tables_gen;
	}
	return *memo != NULL;
}

uint64_t cache_invalidate_memo(const char *table, const struct cache_write_row *rows, int nrows, void **memo,
			       uint64_t *memo_gen)
{
	struct cache_table *t;
	uint64_t n;

	if (!cache_table_named(table, memo, memo_gen))
		return 0;	/* a table no fill has named cannot be in a snapshot or an entry: nothing to bump or remove */
	t = *memo;
	n = invalidate_table(t, rows, nrows, RM_INVALIDATION);
	t->invalidations += n;
	return n;
}

uint64_t cache_invalidate(const char *table, const struct cache_write_row *rows, int nrows)
{
	void *memo = NULL;
	uint64_t gen = 0;
	return cache_invalidate_memo(table, rows, nrows, &memo, &gen);
}

uint64_t cache_invalidate_all(void)
{
	bump_all_generations();
	return remove_all(RM_INVALIDATION);
}

uint64_t cache_flush(const char *table)
{
	struct cache_table *t;

	if (!table) {
		bump_all_generations();
		return remove_all(RM_FLUSH);
	}
	t = table_get(table, false);
	return t ? invalidate_table(t, NULL, 0, RM_FLUSH) : 0;
}

void cache_sweep(usec_t now)
{
	struct list_head *pos, *tmp;

	list_for_each_safe(pos, tmp, &cache.lru) {
		struct cache_entry *e = list_entry(pos, struct cache_entry, lru);
		if (now >= e->expires)
			entry_remove(e, RM_EXPIRATION);
	}
}

/* ---- figures ---- */

void cache_get_stats(struct cache_stats *st)
{
	*st = cache.st;
	st->max_memory = cache.cfg.max_memory;
}

void cache_foreach_table(bool (*fn)(const struct cache_table_stats *t, void *arg), void *arg)
{
	struct cache_table *t, *tmp;
	struct cache_table_stats ts;

	HASH_ITER(hh, cache.tables, t, tmp) {
		ts.table = t->name;
		ts.ttl_sec = t->ttl_sec;
		ts.entries = t->nentries;
		ts.bytes = t->bytes;
		ts.invalidations = t->invalidations;
		ts.generation = t->generation;
		if (!fn(&ts, arg))
			break;
	}
}
