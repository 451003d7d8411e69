/* relay.c — the message-level data path: client messages to the server (named statements renamed and re-prepared on
 * whichever server a client gets), server replies back (expected replies tracked per server so parley can swallow
 * the replies to its own Parse messages and synthesize the ones it answers itself), cache hits and fills, and
 * write-through invalidation. */
#include "parley.h"
#include "relay.h"
#include "shape.h"
#include "cache.h"
#include "stats.h"
#include "notify.h"

/* Messages up to this size are read whole and inspected; a larger Query/Parse/Bind streams through uninspected (its
 * batch then invalidates the whole cache when it succeeds). CopyData always streams. */
#define INSPECT_MAX (64u * 1024 * 1024)
/* An extended-protocol batch is considered for the cache only if it arrives whole (through Sync) within this size. */
#define LOOKAHEAD_MAX (256u * 1024)
/* Version byte at the start of every cache key, bumped when the key layout changes. */
#define KEY_VERSION 1
/* Unreported settings remembered per client for the cache key; more are chained into one fingerprint. */
#define RELAY_SETTINGS_MAX 16
/* Server-side statement names: this prefix and a process-unique number. */
#define STMT_PREFIX "parley_"
/* No definition gets number 0: STMT_PREFIX "0" is parley's scratch statement on every server, for the Parse that stands
 * in for one of a name the client already has (parse_duplicate), sent only for the error it gets. */
#define SCRATCH_SEQ 0

/* ---- a growable byte buffer ---- */

struct bbuf {
	uint8_t *p;
	size_t len, cap;
};

static void bb_add(struct bbuf *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc < b->len + n)
			nc *= 2;
		b->p = xrealloc(b->p, nc);
		b->cap = nc;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void bb_u8(struct bbuf *b, uint8_t v)
{
	bb_add(b, &v, 1);
}

static void bb_u32(struct bbuf *b, uint32_t v)
{
	uint8_t x[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v };
	bb_add(b, x, 4);
}

static void bb_u64(struct bbuf *b, uint64_t v)
{
	bb_u32(b, (uint32_t)(v >> 32));
	bb_u32(b, (uint32_t)v);
}

static uint32_t get_u32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static uint16_t get_u16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

/* 64-bit FNV-1a, for fingerprints of session settings (not for keys: keys are compared whole). */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* ---- statement definitions, shared by every client ---- */

/* A statement text with its parameter types, as prepared on servers under the name STMT_PREFIX<seq>. */
struct stmt_def {
	uint64_t seq;           /* unique for the life of the process */
	char *key;              /* the text, a NUL, then the raw parameter-type section of the Parse (hash key) */
	size_t keylen;
	size_t text_len;
	struct shape *shape;    /* classification of the text (a reference) */
	int refs;               /* client statements and unnamed-statement slots pointing here */
	/* Where a server last accepted a client's Parse of it: a Parse + Sync of it in the same context is answered
	 * without a server (plan_prepare_only). The pool is compared, never dereferenced (pools live until exit). */
	const struct pool *ok_pool;
	uint64_t ok_fp;         /* the client's settings_fp then (search_path decides what a name refers to) */
	uint64_t ok_gen;        /* stmt_check_gen then */
	UT_hash_handle hh;      /* in stmt_defs */
};

static struct stmt_def *stmt_defs;
static uint64_t stmt_next_seq = SCRATCH_SEQ + 1;
/* Bumped by every statement that may change what a Parse accepts (DDL, or anything parley cannot see into): a text
 * accepted before then has to be shown to a server again. */
static uint64_t stmt_check_gen;

/* Whether d is the definition of text + types. */
static bool stmt_def_is(const struct stmt_def *d, const char *text, size_t tlen, const uint8_t *types, size_t typlen)
{
	return d->text_len == tlen && d->keylen == tlen + 1 + typlen && memcmp(d->key, text, tlen) == 0 &&
	       memcmp(d->key + tlen + 1, types, typlen) == 0;
}

/* The definition of text + types, new or shared (a reference). hint, if not NULL, is tried first without hashing:
 * drivers send the same unnamed Parse again and again. */
static struct stmt_def *stmt_def_get(struct stmt_def *hint, const char *text, size_t tlen, const uint8_t *types,
				     size_t typlen)
{
	struct stmt_def *d;
	if (hint && stmt_def_is(hint, text, tlen, types, typlen)) {
		hint->refs++;
		return hint;
	}
	size_t klen = tlen + 1 + typlen;
	char stackkey[1024];
	char *key = klen <= sizeof(stackkey) ? stackkey : xmalloc(klen);

	memcpy(key, text, tlen);
	key[tlen] = '\0';
	memcpy(key + tlen + 1, types, typlen);
	HASH_FIND(hh, stmt_defs, key, klen, d);
	if (d) {
		d->refs++;
	} else {
		d = xcalloc(1, sizeof(*d));
		d->key = xmalloc(klen);
		memcpy(d->key, key, klen);
		d->keylen = klen;
		d->text_len = tlen;
		d->seq = stmt_next_seq++;
		d->shape = shape_get(text, tlen, NULL);
		d->refs = 1;
		HASH_ADD_KEYPTR(hh, stmt_defs, d->key, d->keylen, d);
	}
	if (key != stackkey)
		free(key);
	return d;
}

static void stmt_def_unref(struct stmt_def *d)
{
	if (!d || --d->refs > 0)
		return;
	HASH_DEL(stmt_defs, d);
	shape_unref(d->shape);
	free(d->key);
	free(d);
}


struct group;

/* A named statement of one client. */
struct client_stmt {
	char *name;             /* the client's name (hash key) */
	struct stmt_def *def;   /* reference */
	const struct group *pending_grp; /* while the Parse that created it is unanswered (it is forgotten if that
					  * fails): the batch that Parse went in; else NULL */
	UT_hash_handle hh;
};

/* PostgreSQL tells statement names apart by their first NAMEDATALEN - 1 bytes (the key size of its table of prepared
 * statements): a longer name is the same statement as any other with the same start. Client statements are hashed
 * on that much of their name. */
#define PG_NAME_KEY 63

static size_t stmt_key_len(const char *name)
{
	size_t n = strlen(name);
	return n < PG_NAME_KEY ? n : PG_NAME_KEY;
}

#define STMT_FIND(head, name, out)                                 \
	do {                                                       \
		size_t stmt_klen_ = stmt_key_len(name);            \
		HASH_FIND(hh, head, name, stmt_klen_, out);        \
	} while (0)
#define STMT_ADD(head, s)                                          \
	do {                                                       \
		size_t stmt_klen_ = stmt_key_len((s)->name);       \
		HASH_ADD_KEYPTR(hh, head, (s)->name, stmt_klen_, s); \
	} while (0)

/* What an unanswered Parse, Close or DEALLOCATE ALL did to the client's statements, undone if PostgreSQL fails or
 * skips it. The client's name space is changed when a message is forwarded (later messages must see it), as if it
 * will succeed; one record per such message, in the order they went out, each resolved by the reply to its slot
 * (flag rec). */
enum stmt_rec_kind {
	REC_PARSE,  /* a Parse created cs (still in rc->stmts): forgotten if the Parse fails */
	REC_CLOSE,  /* a Close took cs out of rc->stmts (the record owns it): put back if the Close is skipped */
	REC_DUP,    /* a Parse of a name the client has: it fails; name is for its error message */
	REC_FORGET  /* DEALLOCATE ALL / DISCARD ALL: the statements it took away (stash), back if it fails */
};

struct stmt_rec {
	uint8_t kind;                   /* enum stmt_rec_kind */
	const struct group *grp;        /* the batch the message went in (alive until the record is resolved) */
	struct client_stmt *cs;         /* REC_PARSE: the statement it made; REC_CLOSE: the one it took out (owned; NULL
					 * once put back) */
	char *name;                     /* REC_DUP: the client's name (owned) */
	struct client_stmt *stash;      /* REC_FORGET: the client's statements (owned) */
};

/* A statement prepared on one server. */
struct server_stmt {
	uint64_t seq;
	uint64_t gid;           /* id of the group whose Parse prepared it (0: known there) */
	UT_hash_handle hh;
};

/* ---- writes seen, for invalidation ---- */

/* One table a statement wrote, with the touched-row descriptions resolved to values. */
struct wrec {
	struct wrec *next;
	bool all_tables;                         /* scope unknown: invalidate everything */
	bool applied;                            /* already applied at a CommandComplete */
	char table[SHAPE_NAME_MAX];
	int nrows;                               /* 0 = the whole table */
	void *ctable;                            /* cache_invalidate_memo's memo of the table's lookup */
	uint64_t ctable_gen;
	struct shape *shape;                     /* reference: the rows' column names point into it */
	struct cache_write_row rows[];           /* room for the rows wrec_new was asked for (none for table level), then
						  * the copies of the pinned values the rows point to */
};

/* A new write record at the front of *list with room for maxrows row descriptions and vbytes of value copies after
 * them, in one allocation (only the fixed part is zeroed: a record used to carry room for SHAPE_MAX_ROWS rows, and
 * zeroing those 3 KB on every write showed in profiles; one allocation per value showed too). */
static struct wrec *wrec_new(struct wrec **list, int maxrows, size_t vbytes)
{
	struct wrec *w = xmalloc(sizeof(*w) + (size_t)maxrows * sizeof(w->rows[0]) + vbytes);
	memset(w, 0, sizeof(*w));
	w->next = *list;
	*list = w;
	return w;
}

/* A write of unknown scope (a function call, a statement parley cannot see into): every table. */
static void wrec_all_tables(struct wrec **list)
{
	wrec_new(list, 0, 0)->all_tables = true;
}

static void wrec_free_list(struct wrec *w)
{
	while (w) {
		struct wrec *n = w->next;
		if (w->shape)
			shape_unref(w->shape);
		free(w);
		w = n;
	}
}

static void wrec_apply(struct wrec *w)
{
	if (w->all_tables)
		cache_invalidate_all();
	else
		cache_invalidate_memo(w->table, w->nrows ? w->rows : NULL, w->nrows, &w->ctable, &w->ctable_gen);
	w->applied = true;
}

/* ---- per-connection relay state ---- */

enum slot_kind { SL_PARSE, SL_BIND, SL_DESCRIBE_S, SL_DESCRIBE_P, SL_EXECUTE, SL_CLOSE, SL_SYNC, SL_QUERY };
enum slot_action {
	SA_FORWARD, /* the client sent it: pass the reply on */
	SA_SWALLOW, /* parley sent it (re-prepare): drop the reply */
	SA_SYNTH    /* parley answers it itself: nothing was sent, emit the reply when its turn comes */
};

/* A reply the server (or parley) owes, in order. */
struct slot {
	uint8_t kind;           /* enum slot_kind */
	uint8_t action;         /* enum slot_action */
	uint8_t synth;          /* SA_SYNTH: the message type to emit ('1' ParseComplete, '3' CloseComplete) */
	uint8_t rec;            /* the reply resolves the client's oldest struct stmt_rec */
	union {
		uint64_t seq;   /* SL_PARSE: statement forgotten again if the Parse fails */
		struct client_stmt *cs; /* SL_BIND of a renamed statement: its client name goes into the error, if any
					 * (a Close or DEALLOCATE ALL after the Bind frees it only at its own reply) */
	};
};

/* Everything the client sent up to a Sync (extended protocol), or one Query / FunctionCall. */
struct group {
	struct group *next;
	struct shape *shape;            /* the statement executed (reference) or NULL, for statistics */
	struct cache_flight *flight;    /* this group's replies fill the cache, or NULL */
	usec_t start;
	struct wrec *writes;            /* tables written: invalidated at each CommandComplete and at ReadyForQuery */
	struct sess_fx *sess_fx;        /* its SET / RESET / COMMIT / ROLLBACK effects, resolved at ReadyForQuery (session.c) */
	bool failed;                    /* an ErrorResponse came back */
	bool closed;                    /* its Sync / Query / FunctionCall was sent */
	uint64_t id;                    /* its server's count of groups when it was opened */
};

/* Freed groups kept for reuse (one is opened per request): saves a calloc/free pair on every transaction. */
#define GROUP_POOL_MAX 256
static struct group *group_pool;
static int group_pool_len;

struct relay_server {
	struct slot *slots;             /* ring of expected replies */
	int shead, scount, scap;        /* scap is 0 or a power of two (indices wrap with a mask) */
	struct group *ghead, *gtail;    /* groups in the order they were sent; the tail may be open */
	struct server_stmt *prepared;   /* statements prepared on this server, by seq */
	bool cur_fill;                  /* the message being streamed goes into the head group's fill */
	uint64_t next_gid;              /* id of the last group opened */
	uint64_t done_gid;              /* id of the last group answered (groups are answered in order) */
};

#define RELAY_RECENT_DEFS 8

struct relay_client {
	struct client_stmt *stmts;      /* named statements, by name */
	struct stmt_def *unnamed;       /* the unnamed statement (last unnamed Parse), reference or NULL */
	struct shape *portal_shape;     /* the statement bound to the unnamed portal (reference) or NULL */
	uint64_t settings_fp;           /* fingerprint of the settings below (part of every cache key) */
	struct {
		char name[SHAPE_NAME_MAX];  /* a setting PostgreSQL does not report (search_path, ...) */
		uint64_t h;                 /* hash of the statement that last set it */
	} settings[RELAY_SETTINGS_MAX];
	int nsettings;
	uint64_t settings_extra;        /* settings beyond the table, or set by set_config(): chained, never forgotten */
	bool role_changed;              /* SET ROLE / SESSION AUTHORIZATION seen: not served from cache until DISCARD ALL */
	bool planned;                   /* the batch at the head of the input has had its cache decision */
	bool bypass;                    /* the next batch goes to the server without looking at the cache */
	struct cache_flight *plan_flight; /* the fill decided for the next group, taken by it when it is created */
	struct cache_waiter *waiter;    /* waiting for another client's fill of the same key */
	struct event *kick;             /* deferred re-processing of the input after a wait */
	struct event *wait_timer;       /* bounds the wait */
	struct wrec *tx_writes;         /* writes of the open transaction, applied again when it ends */
	struct bbuf key;                /* cache key under construction */
	/* The shape plan_query found for the Query at the head of the input, for forward_message when that same message
	 * goes to a server, possibly after a wait for one (so a text is classified once, not twice) */
	struct shape *memo_sh;          /* reference, or NULL */
	/* definitions of the client's recent unnamed Parse messages, most recent first (references): drivers cycle
	 * through a few texts (pgbench's TPC-B, seven), found here by a compare instead of a hash and a rebuild */
	struct stmt_def *recent[RELAY_RECENT_DEFS];
	int nrecent;
	const char *memo_text;          /* where the text was in the input buffer (same message only if unmoved) */
	size_t memo_tlen;
	struct stmt_rec *recs;          /* ring of records of unanswered Parse / Close / DEALLOCATE ALL, oldest first */
	int rhead, rcount, rcap;        /* rcap is 0 or a power of two */
	int nclosing;                   /* REC_CLOSE and REC_FORGET records (names that may come back) */
	bool stalled;                   /* input waits until a record is resolved (stmt_blocked) */
	char *reset_portal;             /* the named portal last bound to DEALLOCATE ALL / DISCARD ALL, or NULL */
};

static struct relay_stats rstats;

void relay_get_stats(struct relay_stats *st)
{
	*st = rstats;
}

static struct relay_client *rc_of(struct client *c)
{
	if (!c->rc)
		c->rc = xcalloc(1, sizeof(*c->rc));
	return c->rc;
}

/* stmt_def_get for an unnamed Parse (a reference for the caller): the client's recent definitions first. */
static struct stmt_def *unnamed_def_get(struct relay_client *rc, const char *text, size_t tlen, const uint8_t *types,
					size_t typlen)
{
	struct stmt_def *d;
	for (int i = 0; i < rc->nrecent; i++) {
		d = rc->recent[i];
		if (stmt_def_is(d, text, tlen, types, typlen)) {
			memmove(&rc->recent[1], &rc->recent[0], (size_t)i * sizeof(rc->recent[0]));
			rc->recent[0] = d;
			d->refs++;
			return d;
		}
	}
	d = stmt_def_get(NULL, text, tlen, types, typlen);
	if (rc->nrecent == RELAY_RECENT_DEFS)
		stmt_def_unref(rc->recent[--rc->nrecent]);
	memmove(&rc->recent[1], &rc->recent[0], (size_t)rc->nrecent * sizeof(rc->recent[0]));
	rc->recent[0] = d;
	rc->nrecent++;
	d->refs++;
	return d;
}

static struct relay_server *rs_of(struct server *sv)
{
	if (!sv->rs)
		sv->rs = xcalloc(1, sizeof(*sv->rs));
	return sv->rs;
}

/* ---- slots ---- */

static struct slot *slot_head(struct relay_server *rs)
{
	return rs->scount ? &rs->slots[rs->shead] : NULL;
}

static struct slot *slot_push(struct relay_server *rs, enum slot_kind kind, enum slot_action action, uint8_t synth,
			      uint64_t seq)
{
	struct slot *s;
	if (rs->scount == rs->scap) {
		int nc = rs->scap ? rs->scap * 2 : 16;
		struct slot *ns = xmalloc(sizeof(*ns) * (size_t)nc);
		for (int i = 0; i < rs->scount; i++)
			ns[i] = rs->slots[(rs->shead + i) & (rs->scap - 1)];
		free(rs->slots);
		rs->slots = ns;
		rs->scap = nc;
		rs->shead = 0;
	}
	s = &rs->slots[(rs->shead + rs->scount) & (rs->scap - 1)];
	s->kind = (uint8_t)kind;
	s->action = (uint8_t)action;
	s->synth = synth;
	s->rec = 0;
	s->seq = seq;
	rs->scount++;
	return s;
}

static void slot_pop(struct relay_server *rs)
{
	if (!rs->scount)
		return;
	rs->shead = (rs->shead + 1) & (rs->scap - 1);
	rs->scount--;
}

bool relay_server_busy(const struct server *sv)
{
	return sv->rs && (sv->rs->scount > 0 || sv->rs->ghead != NULL);
}

/* ---- prepared statements on servers ---- */

static bool server_has_stmt(struct relay_server *rs, uint64_t seq)
{
	struct server_stmt *s;
	HASH_FIND(hh, rs->prepared, &seq, sizeof(seq), s);
	return s != NULL;
}

/* Whether a message of group grp can count on statement seq being prepared on the server: a Parse of it went there
 * in a group answered since, or earlier in grp itself (if that Parse fails, the server skips the rest of grp too). One
 * in a later batch than that Parse's could find it missing. */
static bool server_ready_stmt(struct relay_server *rs, uint64_t seq, const struct group *grp)
{
	struct server_stmt *s;
	HASH_FIND(hh, rs->prepared, &seq, sizeof(seq), s);
	return s && (s->gid <= rs->done_gid || s->gid == grp->id);
}

/* A Parse of statement seq went to the server in group gid (0: the statement is known to be there). It becomes the
 * newest (trim_prepared closes the oldest). */
static void server_add_stmt(struct relay_server *rs, uint64_t seq, uint64_t gid)
{
	struct server_stmt *s;
	HASH_FIND(hh, rs->prepared, &seq, sizeof(seq), s);
	if (s) {
		HASH_DEL(rs->prepared, s);
	} else {
		s = xcalloc(1, sizeof(*s));
		s->seq = seq;
	}
	s->gid = gid;
	HASH_ADD(hh, rs->prepared, seq, sizeof(s->seq), s);
}

/* The Parse of statement seq sent in the head group failed or was skipped (if a later group sent another, that one
 * decides). */
static void server_del_stmt(struct relay_server *rs, uint64_t seq)
{
	struct server_stmt *s;
	HASH_FIND(hh, rs->prepared, &seq, sizeof(seq), s);
	if (s && (!rs->ghead || s->gid == rs->ghead->id)) {
		HASH_DEL(rs->prepared, s);
		free(s);
	}
}

void relay_server_forget_statements(struct server *sv)
{
	struct server_stmt *s, *tmp;
	if (!sv->rs)
		return;
	HASH_ITER(hh, sv->rs->prepared, s, tmp) {
		HASH_DEL(sv->rs->prepared, s);
		free(s);
	}
}

static void stmt_server_name(uint64_t seq, char *buf, size_t len)
{
	snprintf(buf, len, STMT_PREFIX "%llu", (unsigned long long)seq);
}

/* A Parse of def under the statement name name. */
static void emit_parse_as(struct evbuffer *out, const char *name, const struct stmt_def *def)
{
	size_t nlen = strlen(name) + 1, typlen = def->keylen - def->text_len - 1;
	uint8_t hdr[5];
	hdr[0] = FE_PARSE;
	{
		uint32_t l = (uint32_t)(4 + nlen + def->text_len + 1 + typlen);
		hdr[1] = (uint8_t)(l >> 24);
		hdr[2] = (uint8_t)(l >> 16);
		hdr[3] = (uint8_t)(l >> 8);
		hdr[4] = (uint8_t)l;
	}
	evbuffer_add(out, hdr, 5);
	evbuffer_add(out, name, nlen);
	evbuffer_add(out, def->key, def->text_len + 1 + typlen);
}

static void emit_renamed(struct evbuffer *out, uint8_t type, const void *prefix, size_t plen, uint64_t seq,
			 const void *rest, size_t restlen);

/* A Parse of def under its server-side name, for a server parley does not know to have it. A Close of that name goes
 * first (reply swallowed): the server may have it after all (parley forgets a server's statements when a client's
 * DEALLOCATE ALL or DISCARD ALL goes out, which can fail, and the statement of a Close of its own skipped after an
 * error), and a Parse of a name it has would fail. The caller pushes the Parse's slot. */
static void emit_parse(struct server *sv, const struct stmt_def *def)
{
	static const uint8_t kind = 'S';
	char name[32];
	emit_renamed(sv->s.out, FE_CLOSE, &kind, 1, def->seq, NULL, 0);
	slot_push(rs_of(sv), SL_CLOSE, SA_SWALLOW, 0, 0);
	stmt_server_name(def->seq, name, sizeof(name));
	emit_parse_as(sv->s.out, name, def);
}

/* Keeps a server under max_prepared_statements: closes its oldest statements (replies swallowed). Messages already
 * queued that use them were written before the Close, so they still find them. */
static void trim_prepared(struct server *sv)
{
	struct relay_server *rs = rs_of(sv);
	int limit = g.cfg.max_prepared_statements;
	while (limit > 0 && (int)HASH_COUNT(rs->prepared) > limit) {
		struct server_stmt *old = rs->prepared; /* uthash iterates in insertion order: the oldest first */
		uint8_t kind = 'S';
		emit_renamed(sv->s.out, FE_CLOSE, &kind, 1, old->seq, NULL, 0);
		slot_push(rs, SL_CLOSE, SA_SWALLOW, 0, 0);
		HASH_DEL(rs->prepared, old);
		free(old);
		rstats.prepared_closed++;
	}
}

/* Makes sure def is prepared on sv for the messages of group grp, sending a Parse whose reply is swallowed if it is
 * not. */
static void ensure_prepared(struct server *sv, struct stmt_def *def, const struct group *grp)
{
	struct relay_server *rs = rs_of(sv);
	if (server_ready_stmt(rs, def->seq, grp))
		return;
	emit_parse(sv, def);
	server_add_stmt(rs, def->seq, grp->id);
	slot_push(rs, SL_PARSE, SA_SWALLOW, 0, def->seq);
	rstats.prepared_injected++;
	trim_prepared(sv);
}

/* ---- groups ---- */

static struct group *group_open(struct client *c, struct server *sv)
{
	struct relay_server *rs = rs_of(sv);
	struct relay_client *rc = rc_of(c);
	struct group *grp;
	if (rs->gtail && !rs->gtail->closed)
		return rs->gtail;
	if (group_pool) {
		grp = group_pool;
		group_pool = grp->next;
		group_pool_len--;
		memset(grp, 0, sizeof(*grp));
	} else {
		grp = xcalloc(1, sizeof(*grp));
	}
	grp->start = now_usec();
	grp->id = ++rs->next_gid;
	if (rc->plan_flight) {
		grp->flight = rc->plan_flight;
		rc->plan_flight = NULL;
	}
	if (rs->gtail)
		rs->gtail->next = grp;
	else
		rs->ghead = grp;
	rs->gtail = grp;
	if (sv->expect_rfq == 0)
		sv->query_start = grp->start;
	return grp;
}

static void group_close(struct client *c, struct server *sv, struct group *grp)
{
	grp->closed = true;
	sv->expect_rfq++;
	rc_of(c)->planned = false;
}

static void group_set_shape(struct group *grp, struct shape *sh)
{
	if (!sh || grp->shape == sh)
		return;
	shape_ref(sh);
	if (grp->shape)
		shape_unref(grp->shape);
	grp->shape = sh;
}

static void group_abort_fill(struct group *grp)
{
	if (grp->flight) {
		cache_fill_abort(grp->flight);
		grp->flight = NULL;
	}
}

static void group_free(struct group *grp)
{
	group_abort_fill(grp);
	wrec_free_list(grp->writes);
	session_fx_free(grp->sess_fx);
	if (grp->shape)
		shape_unref(grp->shape);
	if (group_pool_len < GROUP_POOL_MAX) {
		grp->next = group_pool;
		group_pool = grp;
		group_pool_len++;
	} else {
		free(grp);
	}
}

/* Applies the writes of grp not yet applied (at a CommandComplete: the statement succeeded). */
static void group_apply_new_writes(struct group *grp)
{
	for (struct wrec *w = grp->writes; w; w = w->next)
		if (!w->applied)
			wrec_apply(w);
}

/* ---- resolving pinned values ---- */

/* Finds Bind parameter idx (1-based). Returns false when absent, NULL, or binary (not comparable as text). */
static bool bind_param_text(const uint8_t *body, size_t blen, int idx, const char **val, size_t *vlen)
{
	struct pkt_reader r;
	uint16_t nfmt, nparam;
	const uint8_t *fmts;
	int fmt;

	if (!body || idx < 1)
		return false;
	reader_init(&r, body, blen);
	reader_cstr(&r);
	reader_cstr(&r);
	nfmt = reader_u16(&r);
	fmts = reader_bytes(&r, (size_t)nfmt * 2);
	nparam = reader_u16(&r);
	if (r.failed || idx > nparam)
		return false;
	fmt = nfmt == 0 ? 0 : nfmt == 1 ? get_u16(fmts) : (idx <= nfmt ? get_u16(fmts + 2 * (idx - 1)) : 0);
	for (int i = 1; i <= idx; i++) {
		uint32_t l = reader_u32(&r);
		const uint8_t *p;
		if (r.failed)
			return false;
		if (l == 0xFFFFFFFFu) {
			if (i == idx)
				return false;
			continue;
		}
		p = reader_bytes(&r, l);
		if (!p)
			return false;
		if (i == idx) {
			if (fmt != 0)
				return false;
			*val = (const char *)p;
			*vlen = l;
			return true;
		}
	}
	return false;
}

/* Source of pinned values: a Bind body (PIN_PARAM) or the literals of a simple query (PIN_LITERAL). */
struct pin_values {
	const uint8_t *bind;
	size_t bind_len;
	const struct shape_lits *lits;
};

static bool pin_value(const struct shape_pin *pin, const struct pin_values *pv, const char **val, size_t *vlen)
{
	if (pin->src == PIN_PARAM)
		return bind_param_text(pv->bind, pv->bind_len, pin->index, val, vlen);
	if (pin->src == PIN_LITERAL && pv->lits && pin->index >= 0 && pin->index < pv->lits->n) {
		*val = pv->lits->v[pin->index].value;
		*vlen = pv->lits->v[pin->index].len;
		return true;
	}
	return false;
}

/* Cache dependencies of a read: one per resolvable pin, else one on the whole table. Returns the count, or -1 when
 * there are too many to track. */
static int build_deps(const struct shape *sh, const struct pin_values *pv, struct cache_dep *deps)
{
	int n = 0;
	for (int t = 0; t < sh->nread; t++) {
		const struct shape_read_table *rt = &sh->read[t];
		int before = n;
		for (int i = 0; i < rt->npins; i++) {
			const char *v;
			size_t vl;
			if (!pin_value(&rt->pins[i], pv, &v, &vl))
				continue;
			if (n == CACHE_MAX_DEPS)
				return -1;
			deps[n].table = rt->name;
			deps[n].col = rt->pins[i].column;
			deps[n].val = v;
			deps[n].val_len = vl;
			n++;
		}
		if (n == before) {
			if (n == CACHE_MAX_DEPS)
				return -1;
			deps[n].table = rt->name;
			deps[n].col = NULL;
			deps[n].val = NULL;
			deps[n].val_len = 0;
			n++;
		}
	}
	return n;
}

/* The rows a one-table write touches, with their pinned values resolved (pointing into the Bind message or the
 * text): the count, or 0 when some row has no resolvable pin (the whole table then). *vbytes gets the room copies
 * of the values take. */
static int resolve_rows(const struct shape *sh, const struct pin_values *pv, struct cache_write_row *rows,
			size_t *vbytes)
{
	int n = sh->nrows < SHAPE_MAX_ROWS ? sh->nrows : SHAPE_MAX_ROWS;

	*vbytes = 0;
	for (int r = 0; r < n; r++) {
		const struct shape_write_row *sr = &sh->rows[r];
		struct cache_write_row *cr = &rows[r];
		cr->npins = 0;
		for (int i = 0; i < sr->npins && i < 16; i++) {
			const char *v;
			size_t vl;
			if (!pin_value(&sr->pins[i], pv, &v, &vl))
				continue;
			cr->pins[cr->npins].col = sr->pins[i].column;
			cr->pins[cr->npins].val = v;
			cr->pins[cr->npins].val_len = vl;
			cr->npins++;
			*vbytes += vl + 1;
		}
		if (cr->npins == 0)
			return 0;	/* a row we cannot describe: the whole table */
	}
	return n;
}

/* Records what a statement about to run writes, on the group. */
static void note_writes(struct group *grp, struct shape *sh, const struct pin_values *pv)
{
	bool table_level = sh->kind != SHAPE_WRITE || sh->nwritten != 1 || sh->nrows == 0;

	if (sh->write_all_tables || sh->kind == SHAPE_UNPARSED) {
		wrec_all_tables(&grp->writes);
		return;
	}
	for (int t = 0; t < sh->nwritten; t++) {
		struct cache_write_row rows[SHAPE_MAX_ROWS];
		int nrows = 0;
		size_t vbytes = 0;
		struct wrec *w;
		char *vp;
		/* a table the cache has never named holds no entries and no fill: the touched rows would not narrow
		 * anything, so they are not resolved (Bind parsing per pinned column showed in profiles of write-heavy
		 * loads on tables nobody caches). A fill that names the table before this write completes is still
		 * covered: the table-level record invalidates all of it. */
		if (cache_table_named(sh->written[t], &sh->wmemo[t], &sh->wmemo_gen[t]) && !table_level)
			nrows = resolve_rows(sh, pv, rows, &vbytes);
		w = wrec_new(&grp->writes, nrows, vbytes);
		strlcpy_ok(w->table, sh->written[t], sizeof(w->table));
		w->ctable = sh->wmemo[t];
		w->ctable_gen = sh->wmemo_gen[t];
		if (nrows == 0)
			continue;
		/* the values are copied after the rows (the message they point into goes away); the column names point
		 * into the shape, kept by a reference */
		shape_ref(sh);
		w->shape = sh;
		vp = (char *)&w->rows[nrows];
		for (int r = 0; r < nrows; r++) {
			w->rows[r] = rows[r];
			for (int i = 0; i < rows[r].npins; i++) {
				size_t vl = rows[r].pins[i].val_len;
				memcpy(vp, rows[r].pins[i].val, vl);
				vp[vl] = '\0';
				w->rows[r].pins[i].val = vp;
				vp += vl + 1;
			}
		}
		w->nrows = nrows;
	}
}

/* Statements whose effects parley cannot see from their text: treated as writes to every table. */
static bool opaque_effects(const struct shape *sh)
{
	static const char *const prefixes[] = { "call ", "do ", "execute ", "explain ", "refresh ", "import " };
	if (sh->kind != SHAPE_OTHER || !sh->normalized)
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(prefixes); i++)
		if (strncmp(sh->normalized, prefixes[i], strlen(prefixes[i])) == 0)
			return true;
	return false;
}

static bool resets_statements(const struct shape *sh)
{
	return sh->normalized &&
	       (strncmp(sh->normalized, "discard all", 11) == 0 || strncmp(sh->normalized, "deallocate all", 14) == 0 ||
		strncmp(sh->normalized, "deallocate prepare all", 22) == 0);
}

/* A new statement name of the client, for def (whose reference it takes). */
static struct client_stmt *client_stmt_add(struct relay_client *rc, const char *name, struct stmt_def *def)
{
	struct client_stmt *s = xcalloc(1, sizeof(*s));
	s->name = xstrdup(name);
	s->def = def;
	STMT_ADD(rc->stmts, s);
	return s;
}

static void client_stmt_free(struct client_stmt *s)
{
	stmt_def_unref(s->def);
	free(s->name);
	free(s);
}

static void client_stmts_free(struct client_stmt **head)
{
	struct client_stmt *s, *tmp;
	HASH_ITER(hh, *head, s, tmp) {
		HASH_DEL(*head, s);
		client_stmt_free(s);
	}
}

/* ---- records of unanswered Parse / Close / DEALLOCATE ALL ---- */

static void on_kick(evutil_socket_t fd, short what, void *arg);

static struct stmt_rec *rec_at(struct relay_client *rc, int i)
{
	return &rc->recs[(rc->rhead + i) & (rc->rcap - 1)];
}

static struct stmt_rec *rec_push(struct relay_client *rc, enum stmt_rec_kind kind, const struct group *grp,
				 struct client_stmt *cs, const char *name)
{
	struct stmt_rec *r;
	if (rc->rcount == rc->rcap) {
		int nc = rc->rcap ? rc->rcap * 2 : 8;
		struct stmt_rec *nr = xmalloc(sizeof(*nr) * (size_t)nc);
		for (int i = 0; i < rc->rcount; i++)
			nr[i] = *rec_at(rc, i);
		free(rc->recs);
		rc->recs = nr;
		rc->rcap = nc;
		rc->rhead = 0;
	}
	r = &rc->recs[(rc->rhead + rc->rcount) & (rc->rcap - 1)];
	memset(r, 0, sizeof(*r));
	r->kind = (uint8_t)kind;
	r->grp = grp;
	r->cs = cs;
	r->name = name ? xstrdup(name) : NULL;
	rc->rcount++;
	if (kind == REC_PARSE) {
		cs->pending_grp = grp;
	} else if (kind == REC_CLOSE || kind == REC_FORGET) {
		rc->nclosing++;
	}
	return r;
}

/* Frees what a record owns. */
static void rec_free(struct stmt_rec *r)
{
	if (r->kind == REC_CLOSE && r->cs)
		client_stmt_free(r->cs);
	client_stmts_free(&r->stash);
	free(r->name);
}

/* A record was resolved: input waiting on one (stmt_blocked) is looked at again, from the event loop. */
static void rec_resolved(struct client *c, struct relay_client *rc)
{
	if (!rc->stalled)
		return;
	rc->stalled = false;
	if (!rc->kick)
		rc->kick = evtimer_new(g.base, on_kick, c);
	event_active(rc->kick, EV_TIMEOUT, 0);
}

/* The oldest record's message succeeded. */
static void rec_commit(struct client *c)
{
	struct relay_client *rc = c->rc;
	struct stmt_rec *r;
	if (!rc || !rc->rcount)
		return;
	r = rec_at(rc, 0);
	if (r->kind == REC_PARSE) {
		/* a server of this pool accepts the text: a Parse + Sync of it may be answered by parley */
		struct stmt_def *d = r->cs->def;
		r->cs->pending_grp = NULL;
		d->ok_pool = c->pool;
		d->ok_fp = rc->settings_fp;
		d->ok_gen = stmt_check_gen;
	} else if (r->kind == REC_CLOSE || r->kind == REC_FORGET) {
		rc->nclosing--;
	}
	rec_free(r);
	rc->rhead = (rc->rhead + 1) & (rc->rcap - 1);
	rc->rcount--;
	rec_resolved(c, rc);
}

/* The n oldest records' messages failed or were skipped (PostgreSQL skips to the Sync after an error): undone
 * newest first, so a Close and a Parse of one name in one batch leave the statement as it was. What they undo is
 * the client's statements as they were before the first later DEALLOCATE ALL still unanswered (in its stash), or
 * its statements now. */
static void rec_undo(struct client *c, int n)
{
	struct relay_client *rc = c->rc;
	struct client_stmt **target;
	if (n <= 0 || !rc)
		return;
	if (n > rc->rcount)
		n = rc->rcount;
	target = &rc->stmts;
	for (int j = n; j < rc->rcount; j++)
		if (rec_at(rc, j)->kind == REC_FORGET) {
			target = &rec_at(rc, j)->stash;
			break;
		}
	for (int i = n - 1; i >= 0; i--) {
		struct stmt_rec *r = rec_at(rc, i);
		struct client_stmt *cur = NULL;
		if (r->cs)
			STMT_FIND(*target, r->cs->name, cur);
		if (r->kind == REC_PARSE && cur == r->cs) {
			HASH_DEL(*target, cur);
			client_stmt_free(cur);
		} else if (r->kind == REC_CLOSE) {
			rc->nclosing--;
			if (!cur && r->cs) {
				STMT_ADD(*target, r->cs);
				r->cs = NULL; /* not owned any more */
			}
		} else if (r->kind == REC_FORGET) {
			/* the client still has its statements (the server too, but parley prepares them again there:
			 * emit_parse) */
			struct client_stmt *st, *tmp;
			rc->nclosing--;
			HASH_ITER(hh, r->stash, st, tmp) {
				HASH_DEL(r->stash, st);
				STMT_FIND(*target, st->name, cur);
				if (cur)
					client_stmt_free(st);
				else
					STMT_ADD(*target, st);
			}
		}
		rec_free(r);
	}
	rc->rhead = (rc->rhead + n) & (rc->rcap - 1);
	rc->rcount -= n;
	rec_resolved(c, rc);
}

/* DEALLOCATE ALL / DISCARD ALL on its way: the client's statements are gone when it succeeds, and stay if it fails
 * (in a failed transaction, or DISCARD ALL in a transaction block). Later messages see them gone; the record keeps
 * them until the reply says which. The server's are forgotten either way (emit_parse copes with a server that has
 * a statement parley does not know of). */
static void forget_statements(struct client *c, struct server *sv, const struct group *grp)
{
	struct relay_client *rc = rc_of(c);
	struct stmt_rec *r = rec_push(rc, REC_FORGET, grp, NULL, NULL);
	r->stash = rc->stmts;
	rc->stmts = NULL;
	relay_server_forget_statements(sv);
}

/* Whether an unanswered Close of name, or DEALLOCATE ALL, from another batch than grp is still pending. */
static bool closing_elsewhere(struct relay_client *rc, const char *name, const struct group *grp)
{
	for (int i = 0; i < rc->rcount; i++) {
		const struct stmt_rec *r = rec_at(rc, i);
		if (r->grp == grp)
			continue;
		if (r->kind == REC_FORGET || (r->kind == REC_CLOSE && r->cs && strncmp(r->cs->name, name, PG_NAME_KEY) == 0))
			return true;
	}
	return false;
}

/* Whether a message about statement name (s: the client's statement of that name, or NULL) must wait for replies:
 * a Parse, Close or DEALLOCATE ALL of that name went in an earlier batch and is unanswered, so whether the name
 * exists is not known yet. (Within one batch it never matters: if an earlier message fails, PostgreSQL skips the
 * later ones too.) */
static inline bool stmt_blocked(struct relay_client *rc, const struct client_stmt *s, const char *name,
				const struct group *grp)
{
	if (s)
		return s->pending_grp && s->pending_grp != grp;
	return rc->nclosing > 0 && closing_elsewhere(rc, name, grp);
}

/* The fingerprint is order-independent over (setting, statement) pairs, so setting the same value again, or the
 * same settings in another order, gives the same key. */
static void settings_refresh(struct relay_client *rc)
{
	uint64_t fp = rc->settings_extra;
	for (int i = 0; i < rc->nsettings; i++)
		fp ^= mix64(fnv1a(0xcbf29ce484222325ULL, rc->settings[i].name, strlen(rc->settings[i].name)) ^ rc->settings[i].h);
	rc->settings_fp = fp;
}

static void settings_mark(struct relay_client *rc, const char *name, uint64_t h)
{
	int i;
	for (i = 0; i < rc->nsettings && strcmp(rc->settings[i].name, name) != 0; i++)
		;
	if (i == rc->nsettings) {
		if (i == RELAY_SETTINGS_MAX) {
			rc->settings_extra = mix64(rc->settings_extra ^ fnv1a(h, name, strlen(name)));
			settings_refresh(rc);
			return;
		}
		strlcpy_ok(rc->settings[i].name, name, sizeof(rc->settings[i].name));
		rc->nsettings++;
	}
	rc->settings[i].h = h;
	settings_refresh(rc);
}

/* A tracked setting from the client's startup packet (session.c): in the cache key like a SET of it, and forgotten by
 * the same RESET / RESET ALL / DISCARD ALL. */
void relay_note_startup_setting(struct client *c, const char *name, const char *value)
{
	settings_mark(rc_of(c), name, fnv1a(0x9e3779b97f4a7c15ULL, value, strlen(value)));
}

static void settings_unmark(struct relay_client *rc, const char *name)
{
	for (int i = 0; i < rc->nsettings; i++)
		if (strcmp(rc->settings[i].name, name) == 0) {
			rc->settings[i] = rc->settings[--rc->nsettings];
			break;
		}
	settings_refresh(rc);
}

/* RESET ALL: every setting back to its default (the role is not: PostgreSQL keeps it). */
static void settings_reset_all(struct relay_client *rc)
{
	rc->nsettings = 0;
	rc->settings_extra = 0;
	settings_refresh(rc);
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool is_role_change(const char *norm)
{
	return starts_with(norm, "set role") || starts_with(norm, "set session role") || starts_with(norm, "set local role") ||
	       starts_with(norm, "set session authorization") || starts_with(norm, "set session session authorization") ||
	       starts_with(norm, "set local session authorization") || starts_with(norm, "reset role") ||
	       starts_with(norm, "reset session authorization");
}

/* The session effects of the statements of a multi-statement text, one normalized piece at a time. */
static void note_multi_settings(struct relay_client *rc, const struct shape *sh, uint64_t texth)
{
	const char *p = sh->normalized;
	char piece[256];
	while (p && *p) {
		const char *end = strchr(p, ';');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		while (n > 0 && *p == ' ') {
			p++;
			n--;
		}
		if (n >= sizeof(piece))
			n = sizeof(piece) - 1;
		memcpy(piece, p, n);
		piece[n] = '\0';
		while (n > 0 && piece[n - 1] == ' ')
			piece[--n] = '\0';
		if (strcmp(piece, "reset all") == 0)
			settings_reset_all(rc);
		else if (strcmp(piece, "discard all") == 0) {
			settings_reset_all(rc);
			rc->role_changed = false;
		} else if (is_role_change(piece))
			rc->role_changed = true;
		else if (starts_with(piece, "set ") || starts_with(piece, "reset ") || strstr(piece, "set_config("))
			settings_mark(rc, piece, texth);
		p = end ? end + 1 : NULL;
	}
}

/* Session effects and writes of a statement the client is about to run. text/tlen: its exact text (the Query
 * text, or the prepared text for a Bind); pv: where pinned values come from. Returns true when it pushed a record
 * (a DEALLOCATE ALL / DISCARD ALL Query) that the reply to the Query resolves. */
static bool note_statement(struct client *c, struct server *sv, struct group *grp, struct shape *sh, const char *text,
			   size_t tlen, const struct pin_values *pv)
{
	struct relay_client *rc = rc_of(c);
	bool rec = false;

	group_set_shape(grp, sh);
	session_note(c, &grp->sess_fx, sh, text, tlen);
	switch (sh->kind) {
	case SHAPE_SET_ROLE:
		if (sh->normalized && strcmp(sh->normalized, "reset all") == 0)
			settings_reset_all(rc);
		else
			rc->role_changed = true;
		break;
	case SHAPE_SET: {
		int v = tracked_var_lookup(sh->var_name);
		uint64_t h = fnv1a(0x9e3779b97f4a7c15ULL, text, tlen);
		if (pv->bind)
			h = fnv1a(h, pv->bind, pv->bind_len);
		if (v >= 0 && tracked_var_reported(v))
			break; /* PostgreSQL reports the new value: it reaches the key through the client's parameters */
		if (!sh->var_name[0]) {
			/* set_config(): which setting is not known */
			rc->settings_extra = mix64(rc->settings_extra ^ h);
			settings_refresh(rc);
		} else if (sh->normalized && starts_with(sh->normalized, "reset ")) {
			settings_unmark(rc, sh->var_name);
		} else {
			settings_mark(rc, sh->var_name, h);
		}
		break;
	}
	case SHAPE_READ:
		/* a read calling a function parley does not know (SELECT my_func(1)) may write any table */
		if (sh->write_all_tables)
			wrec_all_tables(&grp->writes);
		break;
	case SHAPE_MULTI:
		stmt_check_gen++;
		note_multi_settings(rc, sh, fnv1a(0x9e3779b97f4a7c15ULL, text, tlen));
		note_writes(grp, sh, pv);
		break;
	case SHAPE_DDL:
	case SHAPE_UNPARSED:
		stmt_check_gen++;
		note_writes(grp, sh, pv);
		break;
	case SHAPE_WRITE:
	case SHAPE_TRUNCATE:
		note_writes(grp, sh, pv);
		break;
	case SHAPE_OTHER:
		if (opaque_effects(sh)) {
			stmt_check_gen++;
			wrec_all_tables(&grp->writes);
		}
		if (resets_statements(sh)) {
			if (!pv->bind) {
				forget_statements(c, sv, grp);
				rec = true;
			} else if (pv->bind_len && pv->bind[0]) {
				/* bound to a named portal: it takes effect at that portal's Execute (forward_message),
				 * as in the unnamed portal, found by portal_shape */
				free(rc->reset_portal);
				rc->reset_portal = xstrdup((const char *)pv->bind);
			}
		}
		if (sh->normalized && strcmp(sh->normalized, "discard all") == 0) {
			settings_reset_all(rc);
			rc->role_changed = false;
		}
		break;
	default:
		break;
	}
	return rec;
}

/* ---- the cache decision for the batch at the head of the client's input ---- */

/* TTL in microseconds for a shape, or 0 when not cacheable (the reason is left on the shape). */
static usec_t shape_ttl_decide(struct shape *sh);

/* shape_ttl_decide, remembered on the shape until the policy changes (cache_apply_config bumps the generation
 * after it has set the overrides too). */
static usec_t shape_ttl(struct shape *sh)
{
	uint64_t gen = cache_policy_generation();
	if (sh->ttl_gen != gen) {
		const char *before = sh->last_refusal;
		sh->ttl_usec = shape_ttl_decide(sh);
		sh->ttl_refusal = sh->ttl_usec ? NULL : sh->last_refusal;
		if (sh->ttl_usec)
			sh->last_refusal = before;
		sh->ttl_gen = gen;
	}
	if (!sh->ttl_usec)
		sh->last_refusal = sh->ttl_refusal;
	return sh->ttl_usec;
}

static usec_t shape_ttl_decide(struct shape *sh)
{
	int ov = shape_override_ttl(sh);
	int ttl = -1;
	if (ov == 0) {
		sh->last_refusal = "disabled by a [cache_shapes] override";
		return 0;
	}
	if (!sh->cacheable_kind) {
		sh->last_refusal = sh->not_cacheable ? sh->not_cacheable : "not a cacheable read";
		return 0;
	}
	if (ov > 0)
		return (usec_t)ov * USEC_PER_SEC;
	if (sh->nread == 0) {
		sh->last_refusal = "reads no table";
		return 0;
	}
	for (int t = 0; t < sh->nread; t++) {
		int tt = cache_policy_ttl(sh->read[t].name);
		if (tt <= 0) {
			sh->last_refusal = tt < 0 ? "reads a table not listed in [cache]" : "reads a table with TTL 0";
			return 0;
		}
		if (ttl < 0 || tt < ttl)
			ttl = tt;
	}
	return (usec_t)ttl * USEC_PER_SEC;
}

/* Starts a key with everything that makes the same request give different bytes: database, user, settings. */
static void key_begin(struct client *c)
{
	struct relay_client *rc = rc_of(c);
	rc->key.len = 0;
	bb_u8(&rc->key, KEY_VERSION);
	bb_add(&rc->key, c->pool->key, strlen(c->pool->key) + 1);
	bb_u64(&rc->key, rc->settings_fp);
	for (int v = 0; v < VAR_COUNT; v++) {
		if (v == VAR_APPNAME)
			continue;
		if (c->vars.set[v])
			bb_add(&rc->key, c->vars.value[v], strlen(c->vars.value[v]));
		bb_u8(&rc->key, 0);
	}
}

enum plan_rc { PLAN_FORWARD, PLAN_DONE, PLAN_WAIT, PLAN_MORE };

static void on_fill_done(void *arg, struct cache_entry *e);
static void on_wait_timeout(evutil_socket_t fd, short what, void *arg);

/* Per-shape figures the relay keeps (stats_query_done adds the slow count and the histograms). */
static void shape_account(struct shape *sh, usec_t dur)
{
	sh->calls++;
	sh->total_time += dur;
	if (dur > sh->max_time)
		sh->max_time = dur;
}

static void send_ready_idle(struct client *c)
{
	static const uint8_t rfq[6] = { BE_READY, 0, 0, 0, 5, 'I' };
	evbuffer_add(c->s.out, rfq, sizeof(rfq));
}

/* Answers a batch from the cache: the stored replies and a ReadyForQuery. */
static void serve_hit(struct client *c, struct cache_entry *e, struct shape *sh, size_t consumed, usec_t start)
{
	ibuf_drain(&c->s.in, consumed);
	cache_entry_write(e, c->s.out);
	send_ready_idle(c);
	sh->hits++;
	rstats.cache_hits++;
	c->query_count++;
	c->xact_count++;
	shape_account(sh, now_usec() - start);
	stats_query_done(c->pool, c, sh, now_usec() - start, true);
}

/* Looks the key up; on a hit answers, on a miss arranges the fill. */
static enum plan_rc lookup_and_act(struct client *c, struct shape *sh, const struct cache_dep *deps, int ndeps,
				   usec_t ttl, size_t consumed, struct stmt_def *parse_def, const char *parse_name)
{
	struct relay_client *rc = rc_of(c);
	struct cache_entry *e = NULL;
	struct cache_flight *f = NULL;
	usec_t now = now_usec();

	switch (cache_lookup(rc->key.p, rc->key.len, deps, ndeps, ttl, now, &e, &f)) {
	case CACHE_HIT:
		if (parse_def) {
			/* the batch prepared a statement: the client now has it (servers get it when it is used) */
			if (parse_name && *parse_name) {
				struct client_stmt *s;
				STMT_FIND(rc->stmts, parse_name, s);
				parse_def->refs++;
				if (!s) {
					client_stmt_add(rc, parse_name, parse_def);
				} else {
					stmt_def_unref(s->def);
					s->def = parse_def;
				}
			} else {
				parse_def->refs++;
				stmt_def_unref(rc->unnamed);
				rc->unnamed = parse_def;
			}
		}
		serve_hit(c, e, sh, consumed, now);
		return PLAN_DONE;
	case CACHE_LEAD:
		rc->plan_flight = f;
		sh->misses++;
		rstats.cache_misses++;
		return PLAN_FORWARD;
	case CACHE_WAIT: {
		struct timeval tv;
		usec_t wt = g.cfg.cache_wait_timeout > 0 ? g.cfg.cache_wait_timeout : USEC_PER_SEC;
		rc->waiter = cache_flight_wait(f, on_fill_done, c);
		if (!rc->wait_timer)
			rc->wait_timer = evtimer_new(g.base, on_wait_timeout, c);
		tv.tv_sec = wt / USEC_PER_SEC;
		tv.tv_usec = wt % USEC_PER_SEC;
		evtimer_add(rc->wait_timer, &tv);
		sock_want_read(&c->s, false);
		return PLAN_WAIT;
	}
	case CACHE_OFF:
		break;
	}
	return PLAN_FORWARD;
}

/* The literals plan_query found in the text of one client's Query (struct shape_lits is 4 KB: one copy, kept for
 * the last client planned; the shape itself is remembered per client in memo_sh). */
static struct {
	const struct client *owner;      /* whose Query they belong to, or NULL */
	struct shape_lits lits;          /* the text's literals (may point into the text) */
} plan_lits;

static void memo_drop(struct relay_client *rc)
{
	if (rc->memo_sh)
		shape_unref(rc->memo_sh);
	rc->memo_sh = NULL;
}

/* Ends plan_query: a forwarded Query keeps its shape for forward_message, other outcomes drop the reference. */
static enum plan_rc plan_query_done(struct client *c, const char *text, size_t tlen, struct shape *sh, enum plan_rc r)
{
	struct relay_client *rc = rc_of(c);
	if (r != PLAN_FORWARD) {
		shape_unref(sh);
		return r;
	}
	rc->memo_sh = sh;
	rc->memo_text = text;
	rc->memo_tlen = tlen;
	return r;
}

/* Whether forwarding a statement of this kind reads its literals (the rows a write touches). */
static bool kind_uses_literals(enum shape_kind k)
{
	return k != SHAPE_READ && k != SHAPE_SET && k != SHAPE_SET_ROLE && k != SHAPE_OTHER;
}

static enum plan_rc plan_query(struct client *c, uint32_t mlen)
{
	struct relay_client *rc = rc_of(c);
	const uint8_t *msg = ibuf_ptr(&c->s.in);
	const char *text = (const char *)msg + 5;
	size_t tlen = mlen - 6;
	struct shape *sh;
	usec_t ttl;
	struct shape_lits *lits = &plan_lits.lits;
	struct pin_values pv = { NULL, 0, NULL };
	struct cache_dep deps[CACHE_MAX_DEPS];
	int ndeps;
	enum plan_rc r;

	if (!msg || msg[mlen - 1] != '\0' || memchr(text, '\0', tlen))
		return PLAN_FORWARD;
	memo_drop(rc);
	plan_lits.owner = c;
	sh = shape_get(text, tlen, lits);
	ttl = shape_ttl(sh);
	if (ttl <= 0) {
		rstats.cache_bypassed++;
		return plan_query_done(c, text, tlen, sh, PLAN_FORWARD);
	}
	pv.lits = lits;
	ndeps = build_deps(sh, &pv, deps);
	if (ndeps < 0) {
		sh->last_refusal = "too many table dependencies";
		return plan_query_done(c, text, tlen, sh, PLAN_FORWARD);
	}
	key_begin(c);
	bb_u8(&rc->key, FE_QUERY);
	bb_add(&rc->key, text, tlen);
	r = lookup_and_act(c, sh, deps, ndeps, ttl, mlen, NULL, NULL);
	return plan_query_done(c, text, tlen, sh, r);
}

/* Looks at the extended-protocol batch at the head of the input: a cacheable one is [Parse] Bind [Describe]
 * Execute Sync on the unnamed portal, whole in the buffer. */
static enum plan_rc plan_extended(struct client *c)
{
	struct relay_client *rc = rc_of(c);
	struct ibuf *in = &c->s.in;
	size_t avail = ibuf_len(in), off = 0, total;
	const uint8_t *buf = ibuf_ptr(in), *parse = NULL, *bind = NULL, *desc = NULL, *exec = NULL;
	uint32_t parse_len = 0, bind_len = 0, desc_len = 0, exec_len = 0;
	struct stmt_def *def = NULL;
	const char *parse_name = NULL;
	struct shape *sh;
	usec_t ttl;
	struct pin_values pv;
	struct cache_dep deps[CACHE_MAX_DEPS];
	int ndeps;
	enum plan_rc r;
	bool synced = false;

	/* The usual batch of a driver runs one of its recent unnamed statements again: a Parse of a text seen lately,
	 * or a Bind of the unnamed statement. When that text's shape is not cacheable, nothing below can change the
	 * answer. */
	if (avail >= 7) {
		size_t blen = (size_t)get_u32(buf + 1) - 4;
		const uint8_t *body = buf + 5;
		const struct stmt_def *known = NULL;
		if (buf[0] == FE_PARSE && blen >= 2 && body[0] == '\0') {
			for (int i = 0; i < rc->nrecent && !known; i++) {
				size_t tlen = rc->recent[i]->text_len;
				if (blen >= tlen + 2 && body[1 + tlen] == '\0' && memcmp(body + 1, rc->recent[i]->key, tlen) == 0)
					known = rc->recent[i];
			}
		} else if (buf[0] == FE_BIND && blen >= 2 && body[0] == '\0' && body[1] == '\0') {
			known = rc->unnamed;
		}
		if (known && shape_ttl(known->shape) <= 0) {
			rstats.cache_bypassed++;
			return PLAN_FORWARD;
		}
	}

	/* find the Sync */
	while (off + 5 <= avail) {
		const uint8_t *hdr = buf + off;
		uint32_t len = get_u32(hdr + 1);
		if (len < 4 || len > LOOKAHEAD_MAX)
			return PLAN_FORWARD;
		if (hdr[0] != FE_PARSE && hdr[0] != FE_BIND && hdr[0] != FE_DESCRIBE && hdr[0] != FE_EXECUTE &&
		    hdr[0] != FE_SYNC)
			return PLAN_FORWARD;
		off += (size_t)len + 1;
		if (off > LOOKAHEAD_MAX)
			return PLAN_FORWARD;
		if (hdr[0] == FE_SYNC) {
			synced = true;
			break;
		}
	}
	if (!synced)
		return off + 5 > LOOKAHEAD_MAX ? PLAN_FORWARD : PLAN_MORE;
	if (off > avail)
		return PLAN_MORE;
	total = off;
	for (off = 0; off < total;) {
		uint8_t t = buf[off];
		uint32_t len = get_u32(buf + off + 1);
		const uint8_t *body = buf + off + 5;
		uint32_t blen = len - 4;
		const uint8_t **slotp = t == FE_PARSE ? &parse : t == FE_BIND ? &bind : t == FE_DESCRIBE ? &desc : t == FE_EXECUTE ? &exec : NULL;
		if (slotp) {
			if (*slotp)
				return PLAN_FORWARD; /* two of a kind: not the simple shape we cache */
			*slotp = body;
			if (t == FE_PARSE)
				parse_len = blen;
			else if (t == FE_BIND)
				bind_len = blen;
			else if (t == FE_DESCRIBE)
				desc_len = blen;
			else
				exec_len = blen;
		}
		off += (size_t)len + 1;
	}
	if (!bind || !exec)
		return PLAN_FORWARD;
	/* Execute: unnamed portal, no row limit */
	if (exec_len != 5 || exec[0] != '\0' || get_u32(exec + 1) != 0)
		return PLAN_FORWARD;
	/* Bind: unnamed portal */
	if (bind_len < 2 || bind[0] != '\0' || !memchr(bind + 1, '\0', bind_len - 1))
		return PLAN_FORWARD;
	if (desc && (desc_len < 2 || (desc[0] != 'P' && desc[0] != 'S') || desc[desc_len - 1] != '\0'))
		return PLAN_FORWARD;
	if (desc && desc[0] == 'P' && desc[1] != '\0')
		return PLAN_FORWARD;
	{
		const char *bstmt = (const char *)bind + 1;
		if (parse) {
			struct pkt_reader pr;
			const char *pname, *ptext;
			size_t tpos;
			uint16_t ntypes;
			reader_init(&pr, parse, parse_len);
			pname = reader_cstr(&pr);
			ptext = reader_cstr(&pr);
			tpos = pr.pos;
			ntypes = reader_u16(&pr);
			(void)reader_bytes(&pr, (size_t)ntypes * 4);
			if (pr.failed || pr.pos != parse_len || strcmp(pname, bstmt) != 0)
				return PLAN_FORWARD;
			if (*pname) {
				struct client_stmt *s;
				STMT_FIND(rc->stmts, pname, s);
				if (s)
					return PLAN_FORWARD; /* redefining a name: let the server say what it thinks */
			}
			def = *pname ? stmt_def_get(NULL, ptext, strlen(ptext), parse + tpos, (size_t)ntypes * 4 + 2) :
				       unnamed_def_get(rc, ptext, strlen(ptext), parse + tpos, (size_t)ntypes * 4 + 2);
			parse_name = pname;
		} else if (*bstmt) {
			struct client_stmt *s;
			STMT_FIND(rc->stmts, bstmt, s);
			if (!s)
				return PLAN_FORWARD;
			def = s->def;
			def->refs++;
		} else {
			if (!rc->unnamed)
				return PLAN_FORWARD;
			def = rc->unnamed;
			def->refs++;
		}
		if (desc && desc[0] == 'S' && strcmp((const char *)desc + 1, bstmt) != 0) {
			stmt_def_unref(def);
			return PLAN_FORWARD;
		}
	}
	sh = def->shape;
	ttl = shape_ttl(sh);
	if (ttl <= 0) {
		rstats.cache_bypassed++;
		stmt_def_unref(def);
		return PLAN_FORWARD;
	}
	pv.bind = bind;
	pv.bind_len = bind_len;
	pv.lits = NULL;
	ndeps = build_deps(sh, &pv, deps);
	if (ndeps < 0) {
		stmt_def_unref(def);
		return PLAN_FORWARD;
	}
	key_begin(c);
	for (off = 0; off < total;) {
		uint8_t t = buf[off];
		uint32_t len = get_u32(buf + off + 1);
		bb_u8(&rc->key, t);
		if (t == FE_PARSE || (t == FE_DESCRIBE && buf[off + 5] == 'S')) {
			if (t == FE_DESCRIBE)
				bb_u8(&rc->key, 'S');
			bb_add(&rc->key, def->key, def->keylen);
		} else if (t == FE_BIND) {
			size_t skip = 1 + strlen((const char *)bind + 1) + 1;
			bb_add(&rc->key, def->key, def->keylen);
			bb_add(&rc->key, bind + skip, bind_len - skip);
		} else if (t != FE_SYNC) {
			bb_add(&rc->key, buf + off + 5, len - 4);
		}
		off += (size_t)len + 1;
	}
	shape_ref(sh);
	r = lookup_and_act(c, sh, deps, ndeps, ttl, total, parse ? def : NULL, parse_name);
	shape_unref(sh);
	stmt_def_unref(def);
	return r;
}

/* A batch that only prepares a named statement (Parse + Sync, as libpq's PQprepare sends it) needs no server when a
 * server of the client's pool accepted a Parse of the same text and parameter types from a client with the same
 * settings (search_path), and no DDL went through parley since: the statement is registered and prepared on whichever
 * server first runs it. Answering it here also keeps clients that prepare synchronously (pgbench -M prepared) from
 * blocking while every server is held by an open transaction. Any other text goes to the server, so an error (syntax,
 * unknown table) comes back where the client expects it and the name is not registered. */
static enum plan_rc plan_prepare_only(struct client *c, uint32_t mlen)
{
	struct relay_client *rc = rc_of(c);
	static const uint8_t reply[11] = { BE_PARSE_COMPLETE, 0, 0, 0, 4, BE_READY, 0, 0, 0, 5, 'I' };
	const uint8_t *msg;
	struct pkt_reader r;
	const char *name, *text;
	size_t tpos;
	uint16_t ntypes;
	struct stmt_def *def;
	struct client_stmt *s;
	uint8_t sync[5];

	if (ibuf_len(&c->s.in) < (size_t)mlen + 5)
		return PLAN_FORWARD;
	msg = ibuf_ptr(&c->s.in);
	if (msg[mlen] != FE_SYNC || get_u32(msg + mlen + 1) != 4)
		return PLAN_FORWARD;
	memcpy(sync, msg + mlen, 5);
	reader_init(&r, msg + 5, mlen - 5);
	name = reader_cstr(&r);
	text = reader_cstr(&r);
	tpos = r.pos;
	ntypes = reader_u16(&r);
	(void)reader_bytes(&r, (size_t)ntypes * 4);
	if (r.failed || r.pos != mlen - 5 || !*name)
		return PLAN_FORWARD;
	STMT_FIND(rc->stmts, name, s);
	if (s)
		return PLAN_FORWARD; /* redefinition: the server reports the error */
	def = stmt_def_get(NULL, text, strlen(text), msg + 5 + tpos, (size_t)ntypes * 4 + 2);
	if (def->ok_pool != c->pool || def->ok_fp != rc->settings_fp || def->ok_gen != stmt_check_gen ||
	    def->shape->kind == SHAPE_UNPARSED) {
		stmt_def_unref(def);
		return PLAN_FORWARD;
	}
	client_stmt_add(rc, name, def);
	ibuf_drain(&c->s.in, (size_t)mlen + 5);
	evbuffer_add(c->s.out, reply, sizeof(reply));
	rstats.prepared_skipped++;
	return PLAN_DONE;
}

static enum plan_rc plan_batch(struct client *c, uint8_t type, uint32_t mlen)
{
	struct relay_client *rc = rc_of(c);
	if (type != FE_QUERY && type != FE_PARSE && type != FE_BIND)
		return PLAN_FORWARD;
	if (c->in_tx || (c->server && relay_server_busy(c->server)))
		return PLAN_FORWARD;
	if (type == FE_PARSE && !c->server && plan_prepare_only(c, mlen) == PLAN_DONE)
		return PLAN_DONE;
	if (!cache_enabled() || rc->role_changed || !notify_cache_usable(c->pool))
		return PLAN_FORWARD;
	if (rc->bypass) {
		rc->bypass = false;
		return PLAN_FORWARD;
	}
	if (type == FE_QUERY)
		return plan_query(c, mlen);
	return plan_extended(c);
}

static void on_fill_done(void *arg, struct cache_entry *e)
{
	struct client *c = arg;
	struct relay_client *rc = rc_of(c);
	(void)e;
	rc->waiter = NULL;
	if (rc->wait_timer)
		evtimer_del(rc->wait_timer);
	if (!rc->kick)
		rc->kick = evtimer_new(g.base, on_kick, c);
	event_active(rc->kick, EV_TIMEOUT, 0);
}

static void on_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	struct relay_client *rc = rc_of(c);
	(void)fd;
	(void)what;
	if (rc->waiter) {
		cache_wait_cancel(rc->waiter);
		rc->waiter = NULL;
	}
	rc->bypass = true;
	rc->planned = false;
	on_kick(-1, 0, c);
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;
	(void)fd;
	(void)what;
	if (c->state != CL_ACTIVE)
		return;
	sock_want_read(&c->s, true);
	relay_client_input(c);
}

/* ---- client → server ---- */

/* PostgreSQL's limits on a frontend message's length (PQ_SMALL_MESSAGE_LIMIT and PQ_LARGE_MESSAGE_LIMIT in its
 * libpq.h, applied by postgres.c's SocketBackend): longer, and it closes the connection. */
#define PG_SMALL_MESSAGE_LIMIT 10000u
#define PG_LARGE_MESSAGE_LIMIT (0x40000000u - 1)

/* The largest length field a frontend message of type t may carry (4: the message has no body), or 0 when t is
 * not a frontend message type. */
static uint32_t frontend_max_len(uint8_t t)
{
	switch (t) {
	case FE_QUERY:
	case FE_PARSE:
	case FE_BIND:
	case FE_FUNCTION_CALL:
	case FE_COPY_DATA:
		return PG_LARGE_MESSAGE_LIMIT;
	case FE_DESCRIBE:
	case FE_EXECUTE:
	case FE_CLOSE:
	case FE_COPY_FAIL:
		return PG_SMALL_MESSAGE_LIMIT;
	case FE_SYNC:
	case FE_FLUSH:
	case FE_COPY_DONE:
	case FE_TERMINATE:
		return 4;
	default:
		return 0;
	}
}

/* Writes a message with a rewritten statement name: type, then name, then rest[0..restlen). prefix (portal name
 * for Bind, kind byte for Describe/Close) goes before the name. */
static void emit_renamed(struct evbuffer *out, uint8_t type, const void *prefix, size_t plen, uint64_t seq,
			 const void *rest, size_t restlen)
{
	char name[32];
	size_t nlen;
	uint8_t hdr[5];
	uint32_t l;
	stmt_server_name(seq, name, sizeof(name));
	nlen = strlen(name) + 1;
	l = (uint32_t)(4 + plen + nlen + restlen);
	hdr[0] = type;
	hdr[1] = (uint8_t)(l >> 24);
	hdr[2] = (uint8_t)(l >> 16);
	hdr[3] = (uint8_t)(l >> 8);
	hdr[4] = (uint8_t)l;
	evbuffer_add(out, hdr, 5);
	if (plen)
		evbuffer_add(out, prefix, plen);
	evbuffer_add(out, name, nlen);
	if (restlen)
		evbuffer_add(out, rest, restlen);
}

/* Emits replies parley owes ahead of the server's, if their turn has come. */
static void drain_synth(struct server *sv, struct client *c)
{
	struct relay_server *rs = rs_of(sv);
	struct slot *s;
	while ((s = slot_head(rs)) && s->action == SA_SYNTH) {
		uint8_t m[5] = { s->synth, 0, 0, 0, 4 };
		evbuffer_add(c->s.out, m, 5);
		if (rs->ghead && rs->ghead->flight && !cache_fill_append(rs->ghead->flight, m, 5))
			group_abort_fill(rs->ghead);
		if (s->rec)
			rec_commit(c);
		slot_pop(rs);
	}
}

static void disconnect_malformed(struct client *c, const char *what)
{
	char msg[160];
	snprintf(msg, sizeof(msg), "malformed %s message", what);
	client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, msg);
}

/* Moves the pass-through bytes gathered so far (*pend of them, at the front of the client's input) to the server in
 * one go instead of one per message (usually one send() straight from the input buffer). */
static void pend_flush(struct client *c, struct server *sv, size_t *pend)
{
	if (*pend) {
		sock_pass(&sv->s, &c->s.in, *pend);
		*pend = 0;
	}
}

/* Whether forward_message may drain a message or write bytes of its own for it (a named statement, a Query), so the
 * bytes gathered before it must reach the server first; the others pass through unchanged. Looks only at raw bytes:
 * a malformed message is caught by forward_message's parsing either way. */
static bool may_rewrite(uint8_t type, const uint8_t *body, size_t blen)
{
	switch (type) {
	case FE_PARSE:          /* named statement: Parse is renamed or answered by parley */
		return blen > 0 && body[0] != '\0';
	case FE_BIND: {         /* portal name, then statement name */
		const uint8_t *z = blen ? memchr(body, '\0', blen) : NULL;
		return !z || (size_t)(z - body) + 1 >= blen || z[1] != '\0';
	}
	case FE_DESCRIBE:
	case FE_CLOSE:          /* 'S' + a statement name */
		return blen < 2 || (body[0] == 'S' && body[1] != '\0');
	case FE_EXECUTE:
	case FE_SYNC:
		return false;
	default:                /* Query (may be refused in place), FunctionCall, anything else */
		return true;
	}
}

enum fwd_rc {
	FWD_OK,         /* forwarded (or answered) */
	FWD_GONE,       /* the client was disconnected */
	FWD_WAIT        /* not now: it depends on replies still due (stmt_blocked); it stays at the front of the
			 * input */
};

/* Closes the scratch statement on sv (reply swallowed): a Close of a statement that does not exist succeeds, in a
 * failed transaction too. */
static void emit_scratch_close(struct server *sv)
{
	static const uint8_t kind = 'S';
	emit_renamed(sv->s.out, FE_CLOSE, &kind, 1, SCRATCH_SEQ, NULL, 0);
	slot_push(rs_of(sv), SL_CLOSE, SA_SWALLOW, 0, 0);
}

/* A Parse of a name the client already has (rest: the Parse after the name). PostgreSQL parses and analyses the text,
 * then refuses the name (42P05) and, as after any error, skips to the Sync and fails an open transaction. The server
 * is made to do just that: the scratch statement is closed and prepared empty (neither can fail, even in a failed
 * transaction), then the client's Parse goes out under the scratch name; the 42P05 gets the client's name back
 * (REC_DUP). The client's statement is left as it was. */
static void parse_duplicate(struct client *c, struct server *sv, const struct group *grp, const char *name,
			    const uint8_t *rest, size_t restlen)
{
	static const uint8_t empty[3] = { 0, 0, 0 }; /* text "", no parameter types */
	struct relay_server *rs = rs_of(sv);
	emit_scratch_close(sv);
	emit_renamed(sv->s.out, FE_PARSE, NULL, 0, SCRATCH_SEQ, empty, sizeof(empty));
	slot_push(rs, SL_PARSE, SA_SWALLOW, 0, 0);
	emit_renamed(sv->s.out, FE_PARSE, NULL, 0, SCRATCH_SEQ, rest, restlen);
	rec_push(rc_of(c), REC_DUP, grp, NULL, name);
	slot_push(rs, SL_PARSE, SA_FORWARD, 0, 0)->rec = 1;
}

/* Forwards one whole message (rewriting statement names) and records the replies it will get. */
static enum fwd_rc forward_message(struct client *c, struct server *sv, uint8_t type, uint32_t mlen, size_t *pend)
{
	struct relay_client *rc = rc_of(c);
	struct relay_server *rs = rs_of(sv);
	struct ibuf *in = &c->s.in;
	struct evbuffer *out = sv->s.out;
	const uint8_t *msg = ibuf_ptr(in) + *pend;
	const uint8_t *body;
	size_t blen = mlen - 5;
	struct pkt_reader r;
	struct group *grp;

	if (type == FE_COPY_DATA || type == FE_COPY_DONE || type == FE_COPY_FAIL || type == FE_FLUSH) {
		*pend += mlen;
		return FWD_OK;
	}
	if (may_rewrite(type, msg + 5, blen)) {
		/* it may drain its bytes or write others: what precedes it goes first, and it is at the front */
		pend_flush(c, sv, pend);
		msg = ibuf_ptr(in);
	}
	body = msg + 5;
	grp = group_open(c, sv);
	reader_init(&r, body, blen);
	switch (type) {
	case FE_QUERY:
	case FE_FUNCTION_CALL: {
		bool rec = false;
		if (type == FE_QUERY) {
			const char *text = reader_cstr(&r);
			struct shape *sh;
			struct shape_lits lits;
			struct pin_values pv = { NULL, 0, &lits };
			if (r.failed || r.pos != blen) {
				disconnect_malformed(c, "Query");
				return FWD_GONE;
			}
			if (rc->memo_sh && rc->memo_text == text && rc->memo_tlen == blen - 1 &&
			    (plan_lits.owner == c || !kind_uses_literals(rc->memo_sh->kind))) {
				/* plan_query looked at this very message: take its shape (and its literals, still there
				 * unless another client was planned meanwhile, when they are not needed) */
				sh = rc->memo_sh;
				rc->memo_sh = NULL;
				if (plan_lits.owner == c) {
					pv.lits = &plan_lits.lits;
					plan_lits.owner = NULL;
				} else {
					lits.n = 0;
				}
			} else {
				memo_drop(rc);
				sh = shape_get(text, blen - 1, &lits);
			}
			rec = note_statement(c, sv, grp, sh, text, blen - 1, &pv);
			if (session_unsafe_query(c, sh, text, blen - 1, out)) /* refused: PostgreSQL raises the error */
				ibuf_drain(in, mlen), mlen = 0;
			shape_unref(sh);
			c->query_count++;
		} else {
			/* a function can do anything */
			wrec_all_tables(&grp->writes);
		}
		*pend += mlen;
		slot_push(rs, SL_QUERY, SA_FORWARD, 0, 0)->rec = rec;
		group_close(c, sv, grp);
		return FWD_OK;
	}
	case FE_PARSE: {
		const char *name = reader_cstr(&r);
		const char *text = reader_cstr(&r);
		size_t tpos = r.pos;
		uint16_t ntypes = reader_u16(&r);
		struct stmt_def *def;
		struct client_stmt *s = NULL;
		(void)reader_bytes(&r, (size_t)ntypes * 4);
		if (r.failed || r.pos != blen) {
			disconnect_malformed(c, "Parse");
			return FWD_GONE;
		}
		if (*name) {
			STMT_FIND(rc->stmts, name, s);
			if (stmt_blocked(rc, s, name, grp))
				return FWD_WAIT;
			if (s) {
				size_t nlen = strlen(name) + 1;
				parse_duplicate(c, sv, grp, name, body + nlen, blen - nlen);
				ibuf_drain(in, mlen);
				return FWD_OK;
			}
		}
		def = *name ? stmt_def_get(NULL, text, strlen(text), body + tpos, (size_t)ntypes * 4 + 2) :
			      unnamed_def_get(rc, text, strlen(text), body + tpos, (size_t)ntypes * 4 + 2);
		{
			char *repl = session_unsafe_parse(c, def->shape, text, strlen(text));
			if (repl) {
				/* refused in transaction mode: the statement prepared is one whose execution raises the
				 * error (same parameter types, so the client's Binds still fit) */
				struct stmt_def *rdef = stmt_def_get(NULL, repl, strlen(repl), body + tpos,
								     (size_t)ntypes * 4 + 2);
				free(repl);
				stmt_def_unref(def);
				def = rdef;
				if (!*name) {
					pend_flush(c, sv, pend);
					emit_parse_as(out, "", def);
					ibuf_drain(in, mlen);
					stmt_def_unref(rc->unnamed);
					rc->unnamed = def;
					slot_push(rs, SL_PARSE, SA_FORWARD, 0, 0);
					return FWD_OK;
				}
			}
		}
		if (!*name) {
			stmt_def_unref(rc->unnamed);
			rc->unnamed = def;
			*pend += mlen;
			slot_push(rs, SL_PARSE, SA_FORWARD, 0, 0);
			return FWD_OK;
		}
		s = client_stmt_add(rc, name, def);
		rec_push(rc, REC_PARSE, grp, s, NULL);
		if (sv->tx_status != 'E' && rs->ghead == grp && server_has_stmt(rs, def->seq)) {
			/* prepared there already, and the batch starts outside a failed transaction (nothing before it
			 * is unanswered): PostgreSQL would accept the Parse, or skip it after an error before it */
			slot_push(rs, SL_PARSE, SA_SYNTH, BE_PARSE_COMPLETE, 0)->rec = 1;
			rstats.prepared_skipped++;
			if (rs->scount == 1 && !grp->failed)
				drain_synth(sv, c);
		} else {
			/* the server answers (prepared there already, it is prepared again: in a failed transaction
			 * PostgreSQL refuses the Parse, 25P02, and a Parse of it in an earlier batch may yet fail) */
			emit_parse(sv, def);
			server_add_stmt(rs, def->seq, grp->id);
			slot_push(rs, SL_PARSE, SA_FORWARD, 0, def->seq)->rec = 1;
			trim_prepared(sv);
		}
		ibuf_drain(in, mlen);
		return FWD_OK;
	}
	case FE_BIND: {
		const char *portal = reader_cstr(&r);
		const char *stmt = reader_cstr(&r);
		size_t rest_off = r.pos;
		struct stmt_def *def = NULL;
		struct client_stmt *s = NULL;
		struct pin_values pv;
		if (r.failed) {
			disconnect_malformed(c, "Bind");
			return FWD_GONE;
		}
		if (*stmt) {
			STMT_FIND(rc->stmts, stmt, s);
			if (stmt_blocked(rc, s, stmt, grp))
				return FWD_WAIT;
			def = s ? s->def : NULL;
		} else {
			def = rc->unnamed;
		}
		if (def) {
			pv.bind = body;
			pv.bind_len = blen;
			pv.lits = NULL;
			note_statement(c, sv, grp, def->shape, def->key, def->text_len, &pv);
			if (!*portal) {
				if (rc->portal_shape)
					shape_unref(rc->portal_shape);
				shape_ref(def->shape);
				rc->portal_shape = def->shape;
			} else if (rc->reset_portal && strcmp(portal, rc->reset_portal) == 0 &&
				   !resets_statements(def->shape)) {
				free(rc->reset_portal);
				rc->reset_portal = NULL;
			}
		} else if (!*portal && rc->portal_shape) {
			/* a statement parley does not know (the server reports the error): not the one bound before */
			shape_unref(rc->portal_shape);
			rc->portal_shape = NULL;
		}
		if (s) {
			ensure_prepared(sv, def, grp);
			emit_renamed(out, FE_BIND, portal, strlen(portal) + 1, def->seq, body + rest_off, blen - rest_off);
			ibuf_drain(in, mlen);
		} else {
			*pend += mlen;
		}
		slot_push(rs, SL_BIND, SA_FORWARD, 0, 0)->cs = s;
		return FWD_OK;
	}
	case FE_DESCRIBE:
	case FE_CLOSE: {
		uint8_t kind = reader_u8(&r);
		const char *name = reader_cstr(&r);
		struct client_stmt *s = NULL;
		if (r.failed || r.pos != blen || (kind != 'S' && kind != 'P')) {
			disconnect_malformed(c, type == FE_DESCRIBE ? "Describe" : "Close");
			return FWD_GONE;
		}
		if (kind == 'S' && *name) {
			STMT_FIND(rc->stmts, name, s);
			if (stmt_blocked(rc, s, name, grp))
				return FWD_WAIT;
		}
		if (type == FE_CLOSE) {
			if (s) {
				/* the statement stays prepared on servers for reuse; the client forgets it (put back if
				 * PostgreSQL would skip the Close) */
				HASH_DEL(rc->stmts, s);
				rec_push(rc, REC_CLOSE, grp, s, NULL);
				ibuf_drain(in, mlen);
				slot_push(rs, SL_CLOSE, SA_SYNTH, BE_CLOSE_COMPLETE, 0)->rec = 1;
				if (rs->scount == 1 && !grp->failed) /* failed: the server skips to the Sync */
					drain_synth(sv, c);
				return FWD_OK;
			}
			*pend += mlen;
			slot_push(rs, SL_CLOSE, SA_FORWARD, 0, 0);
			return FWD_OK;
		}
		if (s) {
			ensure_prepared(sv, s->def, grp);
			emit_renamed(out, FE_DESCRIBE, &kind, 1, s->def->seq, NULL, 0);
			ibuf_drain(in, mlen);
		} else {
			*pend += mlen;
		}
		slot_push(rs, kind == 'S' ? SL_DESCRIBE_S : SL_DESCRIBE_P, SA_FORWARD, 0, 0);
		return FWD_OK;
	}
	case FE_EXECUTE: {
		bool rec = false;
		if (rc->portal_shape)
			group_set_shape(grp, rc->portal_shape);
		/* DEALLOCATE ALL / DISCARD ALL bound to the portal: its CommandComplete or error says whether it
		 * happened (DISCARD ALL fails in a transaction block) */
		if (blen > 0 && body[0] == '\0') {
			if (rc->portal_shape && rc->portal_shape->kind == SHAPE_OTHER &&
			    resets_statements(rc->portal_shape))
				rec = true;
		} else if (rc->reset_portal && memchr(body, '\0', blen) &&
			   strcmp((const char *)body, rc->reset_portal) == 0) {
			rec = true;
		}
		if (rec)
			forget_statements(c, sv, grp);
		*pend += mlen;
		slot_push(rs, SL_EXECUTE, SA_FORWARD, 0, 0)->rec = rec;
		return FWD_OK;
	}
	case FE_SYNC:
		*pend += mlen;
		slot_push(rs, SL_SYNC, SA_FORWARD, 0, 0);
		group_close(c, sv, grp);
		c->query_count++;
		return FWD_OK;
	default:
		break;
	}
	client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, "unexpected frontend message");
	return FWD_GONE;
}

/* Starts streaming a message too large to inspect. Its batch then counts as a write of unknown scope. */
static void forward_large(struct client *c, struct server *sv, uint8_t type, uint32_t mlen)
{
	struct relay_server *rs = rs_of(sv);
	size_t avail = ibuf_len(&c->s.in);
	size_t take = avail < mlen ? avail : mlen;
	if (type != FE_COPY_DATA) {
		struct group *grp = group_open(c, sv);
		wrec_all_tables(&grp->writes);
		if (type == FE_QUERY || type == FE_FUNCTION_CALL) {
			slot_push(rs, SL_QUERY, SA_FORWARD, 0, 0);
			group_close(c, sv, grp);
		} else if (type == FE_PARSE) {
			slot_push(rs, SL_PARSE, SA_FORWARD, 0, 0);
		} else if (type == FE_BIND) {
			slot_push(rs, SL_BIND, SA_FORWARD, 0, 0);
		} else if (type == FE_DESCRIBE) {
			slot_push(rs, SL_DESCRIBE_P, SA_FORWARD, 0, 0);
		} else if (type == FE_EXECUTE) {
			slot_push(rs, SL_EXECUTE, SA_FORWARD, 0, 0);
		} else if (type == FE_CLOSE) {
			slot_push(rs, SL_CLOSE, SA_FORWARD, 0, 0);
		}
	}
	sock_pass(&sv->s, &c->s.in, take);
	c->s.pkt_remain = (uint32_t)(mlen - take);
}

void relay_client_input(struct client *c)
{
	struct relay_client *rc = rc_of(c);
	struct ibuf *in = &c->s.in;
	struct server *sv;
	const char *why;
	size_t pend = 0;	/* bytes at the front of in that pass through to sv unchanged, moved in one go */

	for (;;) {
		struct pkt_header h;
		size_t avail;
		uint32_t mlen, maxlen;
		enum proto_rc prc;
		enum fwd_rc fr;

		if (c->state != CL_ACTIVE || rc->waiter) {
			if (c->state == CL_ACTIVE && c->server)
				pend_flush(c, c->server, &pend);
			return;
		}
		sv = c->server;
		if (sv && sv->internal)
			break;
		avail = ibuf_len(in) - pend;
		if (c->s.pkt_remain > 0) {
			size_t take;
			if (!sv)
				break;
			take = avail < c->s.pkt_remain ? avail : c->s.pkt_remain;
			if (take == 0)
				break;
			pend_flush(c, sv, &pend);
			sock_pass(&sv->s, in, take);
			c->s.pkt_remain -= (uint32_t)take;
			continue;
		}
		if (avail < 5)
			break;
		prc = proto_read_header(ibuf_ptr(in) + pend, 5, (uint32_t)g.cfg.max_packet_size, &h, &why);
		if (prc == PROTO_BAD) {
			client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, why);
			return;
		}
		maxlen = frontend_max_len(h.type);
		if (maxlen == 0) {
			char msg[120];
			if (h.type >= 0x20 && h.type < 0x7f)
				snprintf(msg, sizeof(msg), "invalid frontend message type '%c'", h.type);
			else
				snprintf(msg, sizeof(msg), "invalid frontend message type %u", h.type);
			client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, msg);
			return;
		}
		if (h.type == FE_TERMINATE) {
			client_disconnect(c, NULL, "client sent Terminate");
			return;
		}
		if (h.len > maxlen) {
			/* what PostgreSQL would refuse: a body it answers with an error and then skips up to the next Sync
			 * (a reply nobody waits for, leaving the server out of step for its next client), or a length it
			 * closes the connection for. Refused here, and the server is kept. */
			char msg[120];
			if (maxlen == 4)
				snprintf(msg, sizeof(msg), "invalid frontend message: %s with a body of %u bytes (it has none)",
					 proto_msg_name(h.type, true), h.len - 4);
			else
				snprintf(msg, sizeof(msg), "invalid message length %u for message type '%c'", h.len, h.type);
			client_disconnect(c, SQLSTATE_PROTOCOL_VIOLATION, msg);
			return;
		}
		mlen = h.len + 1;
		if (mlen <= INSPECT_MAX && avail < mlen)
			break;
		/* the cache decision, once per batch, before a server is involved */
		if (mlen <= INSPECT_MAX && !rc->planned && !(sv && sv->rs && sv->rs->gtail && !sv->rs->gtail->closed)) {
			enum plan_rc pr;
			if (sv)
				pend_flush(c, sv, &pend);
			pr = plan_batch(c, h.type, mlen);
			if (pr == PLAN_DONE) {
				if (sock_flush(&c->s) < 0) {
					client_disconnect(c, NULL, "client socket write failed");
					return;
				}
				continue;
			}
			if (pr == PLAN_WAIT)
				return;
			if (pr == PLAN_MORE)
				break;
			if (h.type == FE_QUERY || h.type == FE_PARSE || h.type == FE_BIND)
				rc->planned = true;
		}
		if (!sv) {
			c->request_time = now_cached();
			if (!pool_request_server(c) || client_sync_vars(c))
				return;
			sv = c->server;
		}
		if (mlen > INSPECT_MAX && h.type != FE_COPY_DATA) {
			pend_flush(c, sv, &pend);
			forward_large(c, sv, h.type, mlen);
			continue;
		}
		if (h.type == FE_COPY_DATA && avail < mlen) {
			/* stream a large CopyData */
			pend_flush(c, sv, &pend);
			sock_pass(&sv->s, in, avail);
			c->s.pkt_remain = (uint32_t)(mlen - avail);
			continue;
		}
		fr = forward_message(c, sv, h.type, mlen, &pend);
		if (fr == FWD_GONE)
			return;
		if (fr == FWD_WAIT) {
			/* resumed by rec_resolved; what went before it goes to the server now */
			rc->stalled = true;
			sock_want_read(&c->s, false);
			break;
		}
	}
	sv = c->server;
	if (sv)
		pend_flush(c, sv, &pend);
	if (sv && evbuffer_get_length(sv->s.out) > 0) {
		if (sock_flush(&sv->s) < 0) {
			server_disconnect(sv, "server socket write failed");
			return;
		}
		if (evbuffer_get_length(sv->s.out) >= OUTBUF_HIGH_WATER)
			sock_want_read(&c->s, false);
	}
	if (c->state == CL_ACTIVE && evbuffer_get_length(c->s.out) > 0 && sock_flush(&c->s) < 0)
		client_disconnect(c, NULL, "client socket write failed");
}

/* ---- server → client ---- */

/* Copies len bytes at offset off of the server's input into the fill; aborts the fill when it grows too big. */
static void fill_copy(struct group *grp, const struct ibuf *in, size_t off, size_t len)
{
	if (grp->flight && !cache_fill_append(grp->flight, ibuf_ptr(in) + off, len))
		group_abort_fill(grp);
}

/* A group got its ReadyForQuery: store or drop its fill, apply its writes, count it. */
static void group_finish(struct server *sv, struct client *c, struct group *grp, char status)
{
	struct relay_client *rc = rc_of(c);
	usec_t now = now_usec(), dur = now - grp->start;

	if (grp->flight) {
		if (!grp->failed && status == 'I')
			cache_fill_commit(grp->flight, now);
		else
			cache_fill_abort(grp->flight);
		grp->flight = NULL;
	}
	if (!grp->failed) {
		for (struct wrec *w = grp->writes; w; w = w->next)
			wrec_apply(w);
	}
	if (status == 'I') {
		/* a transaction ended: what it wrote is visible now (or rolled back: a needless invalidation) */
		for (struct wrec *w = rc->tx_writes; w; w = w->next)
			wrec_apply(w);
		wrec_free_list(rc->tx_writes);
		rc->tx_writes = NULL;
		wrec_free_list(grp->writes);
	} else if (!grp->failed && grp->writes) {
		struct wrec *last = grp->writes;
		while (last->next)
			last = last->next;
		last->next = rc->tx_writes;
		rc->tx_writes = grp->writes;
	} else {
		wrec_free_list(grp->writes);
	}
	grp->writes = NULL;
	session_request_done(c, sv, &grp->sess_fx, grp->failed, status);
	if (sv->pool) {
		sv->pool->stat_query_time += dur;
		sv->pool->stat_query_count++;
		if (status == 'I') {
			sv->pool->stat_xact_count++;
			c->xact_count++;
		}
	}
	if (grp->shape) {
		shape_account(grp->shape, dur);
		stats_query_done(sv->pool, c, grp->shape, dur, false);
	}
	group_free(grp);
}

/* Pops the head slot; when the next ones are parley's own replies, emits them (after flushing pending bytes). */
static void pop_and_synth(struct server *sv, struct client *c, size_t *batch)
{
	struct relay_server *rs = rs_of(sv);
	struct slot *s;
	slot_pop(rs);
	s = slot_head(rs);
	if (s && s->action == SA_SYNTH) {
		if (*batch) {
			sock_pass(&c->s, &sv->s.in, *batch);
			*batch = 0;
		}
		drain_synth(sv, c);
	}
}

/* After an ErrorResponse in an extended batch the server skips to the Sync: so do the expected replies. Returns how
 * many of the dropped slots had a record (for rec_undo). */
static int skip_to_sync(struct relay_server *rs)
{
	struct slot *s;
	int nrec = 0;
	while ((s = slot_head(rs)) && s->kind != SL_SYNC && s->kind != SL_QUERY) {
		/* (a Close of parley's skipped too leaves a statement parley no longer counts on, or one whose Parse was
		 * skipped as well: emit_parse copes either way) */
		if (s->kind == SL_PARSE && s->seq && s->action != SA_SYNTH)
			server_del_stmt(rs, s->seq);
		nrec += s->rec;
		slot_pop(rs);
	}
	return nrec;
}

/* Passes on the ErrorResponse msg (mlen bytes) with the server-side name of statement seq in its message replaced by
 * the client's name for it, as PostgreSQL would have written it ("bind message supplies 1 parameters, but prepared
 * statement "parley_12" requires 2"). */
static void send_error_renamed(struct client *c, const uint8_t *msg, uint32_t mlen, uint64_t seq, const char *cname)
{
	char sname[32];
	size_t slen, clen = strlen(cname);
	const uint8_t *p = msg + 5, *end = msg + mlen;
	struct bbuf b = { NULL, 0, 0 };

	stmt_server_name(seq, sname, sizeof(sname));
	slen = strlen(sname);
	bb_add(&b, msg, 5);
	while (p < end && *p) {
		const uint8_t *z = memchr(p, '\0', (size_t)(end - p));
		const uint8_t *hit = NULL;
		if (!z) {
			/* malformed: passed on as it came (the client judges it) */
			free(b.p);
			evbuffer_add(c->s.out, msg, mlen);
			return;
		}
		/* the name whole, not the start of a longer one (parley_1 in parley_12) */
		for (const uint8_t *q = p + 1; *p == 'M' && !hit && q + slen <= z; q++)
			if (memcmp(q, sname, slen) == 0 && (q + slen == z || q[slen] < '0' || q[slen] > '9'))
				hit = q;
		if (hit) {
			bb_add(&b, p, (size_t)(hit - p));
			bb_add(&b, cname, clen);
			bb_add(&b, hit + slen, (size_t)(z - hit - slen) + 1);
		} else {
			bb_add(&b, p, (size_t)(z - p) + 1);
		}
		p = z + 1;
	}
	bb_u8(&b, 0);
	{
		uint32_t l = (uint32_t)b.len - 1;
		b.p[1] = (uint8_t)(l >> 24);
		b.p[2] = (uint8_t)(l >> 16);
		b.p[3] = (uint8_t)(l >> 8);
		b.p[4] = (uint8_t)l;
	}
	evbuffer_add(c->s.out, b.p, b.len);
	free(b.p);
}

void relay_server_input(struct server *sv)
{
	struct relay_server *rs = rs_of(sv);
	struct client *c = sv->client;
	struct ibuf *in = &sv->s.in;
	size_t batch = 0;	/* bytes at the front of in that go to the client unchanged, moved in one go */
	bool release = false;
	const char *why;

	for (;;) {
		size_t avail = ibuf_len(in) - batch;
		const uint8_t *hdr;
		struct pkt_header h;
		struct group *grp = rs->ghead;
		struct slot *slot = slot_head(rs);
		uint32_t mlen;

		if (avail == 0)
			break;
		if (sv->s.pkt_remain > 0) {
			size_t take = avail < sv->s.pkt_remain ? avail : sv->s.pkt_remain;
			if (rs->cur_fill && grp)
				fill_copy(grp, in, batch, take);
			batch += take;
			sv->s.pkt_remain -= (uint32_t)take;
			continue;
		}
		if (avail < 5)
			break;
		hdr = ibuf_ptr(in) + batch;
		if (proto_read_header(hdr, 5, (uint32_t)g.cfg.max_packet_size, &h, &why) != PROTO_OK) {
			server_disconnect(sv, why ? why : "bad message header from server");
			return;
		}
		mlen = h.len + 1;
		rs->cur_fill = grp && grp->flight;
		switch (h.type) {
		case BE_READY: {
			char status;
			int nrec;
			if (h.len != 5) {
				server_disconnect(sv, "malformed ReadyForQuery from server");
				return;
			}
			if (avail < 6)
				goto out;
			status = (char)hdr[5];
			if (!grp || !slot) {
				server_disconnect(sv, "unexpected ReadyForQuery from server");
				return;
			}
			nrec = skip_to_sync(rs);
			if (nrec)
				rec_undo(c, nrec);
			slot = slot_head(rs);
			if (slot && slot->rec) {
				/* a DEALLOCATE ALL / DISCARD ALL Query: done unless it failed */
				if (grp->failed)
					rec_undo(c, 1);
				else
					rec_commit(c);
			}
			slot_pop(rs);
			rs->ghead = grp->next;
			if (!rs->ghead)
				rs->gtail = NULL;
			rs->done_gid = grp->id;
			if (sv->expect_rfq > 0)
				sv->expect_rfq--;
			sv->tx_status = status;
			c->in_tx = status != 'I';
			group_finish(sv, c, grp, status);
			batch += 6;
			if (!rs->ghead && sv->pool->mode != POOL_SESSION) {
				if (status == 'I') {
					release = true;
					goto out;
				}
				if (sv->pool->mode == POOL_STATEMENT) {
					/* withhold the ReadyForQuery (as PgBouncer): the statement that opened the
					 * transaction fails with the error below instead of seeming to succeed */
					sock_pass(&c->s, in, batch - 6);
					client_disconnect(c, SQLSTATE_FEATURE_NOT_SUPPORTED,
							  "transaction blocks not allowed in statement pooling mode");
					return;
				}
			}
			/* a pipelined batch may start with a reply parley gives itself (CloseComplete): its turn is
			 * now */
			slot = slot_head(rs);
			if (slot && slot->action == SA_SYNTH) {
				sock_pass(&c->s, in, batch);
				batch = 0;
				drain_synth(sv, c);
			}
			continue;
		}
		case BE_PARAM_STATUS: {
			if (avail < mlen)
				goto out;
			server_param_status(sv, hdr + 5, h.len - 4);
			if (grp)
				group_abort_fill(grp);
			rs->cur_fill = false;
			break;
		}
		case BE_NOTICE:
		case BE_NOTIFICATION:
			if (grp)
				group_abort_fill(grp);
			rs->cur_fill = false;
			break;
		case BE_ERROR: {
			const char *cname = NULL;  /* the client's name for the statement the error names, if renamed */
			uint64_t sseq = 0;
			int nrec;
			if (!slot || slot->kind == SL_QUERY || slot->kind == SL_SYNC) {
				if (grp) {
					grp->failed = true;
					group_abort_fill(grp);
				}
				rs->cur_fill = false;
				break;
			}
			if (slot->rec && c->rc && c->rc->rcount && rec_at(c->rc, 0)->kind == REC_DUP) {
				cname = rec_at(c->rc, 0)->name;
				sseq = SCRATCH_SEQ;
			} else if (slot->kind == SL_BIND && slot->cs) {
				cname = slot->cs->name;
				sseq = slot->cs->def->seq;
			}
			if (cname && avail < mlen)
				goto out; /* rewritten whole */
			if (grp) {
				grp->failed = true;
				group_abort_fill(grp);
			}
			rs->cur_fill = false;
			if (slot->kind == SL_PARSE && slot->seq)
				server_del_stmt(rs, slot->seq);
			if (cname) {
				if (batch) {
					sock_pass(&c->s, in, batch);
					batch = 0;
				}
				send_error_renamed(c, ibuf_ptr(in), mlen, sseq, cname);
				ibuf_drain(in, mlen);
			}
			/* the statements the failed message and the skipped ones would have created or closed */
			nrec = slot->rec;
			slot_pop(rs);
			nrec += skip_to_sync(rs);
			rec_undo(c, nrec);
			if (cname)
				continue;
			break;
		}
		case BE_PARSE_COMPLETE:
		case BE_BIND_COMPLETE:
		case BE_CLOSE_COMPLETE:
		case BE_NO_DATA:
		case BE_ROW_DESCRIPTION:
		case BE_COMMAND_COMPLETE:
		case BE_EMPTY_QUERY:
		case BE_PORTAL_SUSPENDED: {
			bool pops = slot && ((h.type == BE_PARSE_COMPLETE && slot->kind == SL_PARSE) ||
					     (h.type == BE_BIND_COMPLETE && slot->kind == SL_BIND) ||
					     (h.type == BE_CLOSE_COMPLETE && slot->kind == SL_CLOSE) ||
					     ((h.type == BE_NO_DATA || h.type == BE_ROW_DESCRIPTION) &&
					      (slot->kind == SL_DESCRIBE_S || slot->kind == SL_DESCRIBE_P)) ||
					     ((h.type == BE_COMMAND_COMPLETE || h.type == BE_EMPTY_QUERY ||
					       h.type == BE_PORTAL_SUSPENDED) &&
					      slot->kind == SL_EXECUTE));
			if (h.type == BE_COMMAND_COMPLETE && grp)
				group_apply_new_writes(grp);
			if (h.type == BE_PORTAL_SUSPENDED && grp)
				group_abort_fill(grp);
			if (pops) {
				if (avail < mlen) {
					/* wait for the whole message so the pop happens after it (a server may lie about its length) */
					goto out;
				}
				if (slot->action == SA_SWALLOW) {
					/* the reply to parley's own Parse or Close */
					if (batch) {
						sock_pass(&c->s, in, batch);
						batch = 0;
					}
					ibuf_drain(in, mlen);
					pop_and_synth(sv, c, &batch);
					continue;
				}
				if (rs->cur_fill && grp && grp->flight)
					fill_copy(grp, in, batch, mlen);
				rs->cur_fill = false;
				batch += mlen;
				if (slot->rec)
					rec_commit(c);
				pop_and_synth(sv, c, &batch);
				continue;
			}
			break;
		}
		default:
			break;
		}
		if (!grp && h.type != BE_NOTICE && h.type != BE_NOTIFICATION && h.type != BE_PARAM_STATUS &&
		    h.type != BE_ERROR) {
			server_disconnect(sv, "server sent a message nobody asked for");
			return;
		}
		sv->s.pkt_remain = mlen;
	}
out:
	if (batch > 0)
		sock_pass(&c->s, in, batch);
	if (evbuffer_get_length(c->s.out) > 0) {
		if (sock_flush(&c->s) < 0) {
			client_disconnect(c, NULL, "client socket write failed");
			return;
		}
		if (evbuffer_get_length(c->s.out) >= OUTBUF_HIGH_WATER)
			sock_want_read(&sv->s, false);
	}
	if (release) {
		if (ibuf_len(in) > 0) {
			server_disconnect(sv, "server sent data after ReadyForQuery");
			return;
		}
		sv->client = NULL;
		c->server = NULL;
		pool_release_server(sv);
		/* the client may have pipelined more requests meanwhile */
		client_on_server_data(c);
	}
}

/* ---- teardown ---- */

void relay_client_free(struct client *c)
{
	struct relay_client *rc = c->rc;
	if (plan_lits.owner == c)
		plan_lits.owner = NULL;
	if (!rc)
		return;
	memo_drop(rc);
	if (rc->waiter)
		cache_wait_cancel(rc->waiter);
	if (rc->plan_flight)
		cache_fill_abort(rc->plan_flight);
	if (rc->kick)
		event_free(rc->kick);
	if (rc->wait_timer)
		event_free(rc->wait_timer);
	/* a COMMIT may have been on its way: what the transaction wrote is invalidated (harmless if it rolled back) */
	for (struct wrec *w = rc->tx_writes; w; w = w->next)
		wrec_apply(w);
	wrec_free_list(rc->tx_writes);
	client_stmts_free(&rc->stmts);
	for (int i = 0; i < rc->rcount; i++)
		rec_free(rec_at(rc, i));
	free(rc->recs);
	free(rc->reset_portal);
	stmt_def_unref(rc->unnamed);
	for (int i = 0; i < rc->nrecent; i++)
		stmt_def_unref(rc->recent[i]);
	if (rc->portal_shape)
		shape_unref(rc->portal_shape);
	free(rc->key.p);
	free(rc);
	c->rc = NULL;
}

void relay_server_free(struct server *sv)
{
	struct relay_server *rs = sv->rs;
	if (!rs)
		return;
	while (rs->ghead) {
		struct group *grp = rs->ghead;
		rs->ghead = grp->next;
		/* the server may have committed it before the connection went: invalidate */
		for (struct wrec *w = grp->writes; w; w = w->next)
			wrec_apply(w);
		group_free(grp);
	}
	relay_server_forget_statements(sv);
	free(rs->slots);
	free(rs);
	sv->rs = NULL;
}
