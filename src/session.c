/* session.c — session state across pooled servers: tracks the client's own SET / RESET of parameters PostgreSQL does
 * not report (track_extra_parameters) with transaction semantics and restores them on whichever server the client
 * gets; refuses (or logs) session-level features that break in transaction mode (transaction_unsafe). */
#include "parley.h"
#include "shape.h"
#include <ctype.h>
#include <pg_query.h>

/* Longest SET value text remembered; a longer one is not tracked (and logged). */
#define SESS_VALUE_MAX 4096

/* The two parameters that say who the client is, tracked whatever track_extra_parameters says. Setting or resetting
 * the session authorization also drops the role (PostgreSQL: SET SESSION AUTHORIZATION, RESET SESSION AUTHORIZATION
 * and SET ... DEFAULT leave SHOW role at none), and RESET ALL keeps both (GUC_NO_RESET_ALL); DISCARD ALL drops both. */
#define SESS_ROLE "role"
#define SESS_AUTH "session_authorization"

/* One parameter a client or server session has SET (a parameter not in the table is at its default). */
struct sess_val {
	char *name;                /* lower-cased parameter name (heap) */
	char *value;               /* the SET's value as the client wrote it, SQL text ("a, \"B\"", 'x', 5) (heap) */
	bool guc_string;           /* value is instead the setting's own string (a startup parameter), set with set_config */
};

struct sess_vals {
	int n, cap;                /* entries used / allocated in v */
	struct sess_val *v;        /* the parameters set, in no particular order */
	struct sess_fx *pending;   /* clients only: effects of the open transaction block, applied when it commits */
};

enum fx_kind {
	FX_SET,                    /* SET name TO value */
	FX_RESET,                  /* RESET name / SET name TO DEFAULT */
	FX_RESET_ALL,              /* RESET ALL: every parameter but the role and the session authorization */
	FX_DISCARD_ALL,            /* DISCARD ALL: every parameter, the role and the session authorization */
	FX_COMMIT,                 /* COMMIT / END: the pending effects are now the session's */
	FX_ROLLBACK                /* ROLLBACK / ABORT: the pending effects are undone */
};

/* One session effect of a statement the client sent. */
struct sess_fx {
	struct sess_fx *next;
	enum fx_kind kind;
	char *name;                /* FX_SET, FX_RESET: lower-cased parameter name (heap) */
	char *value;               /* FX_SET: value text (heap) */
};

/* ---- values ---- */

static struct sess_vals *vals_of(struct sess_vals **pv)
{
	if (!*pv)
		*pv = xcalloc(1, sizeof(**pv));
	return *pv;
}

static int vals_find(const struct sess_vals *v, const char *name)
{
	for (int i = 0; v && i < v->n; i++)
		if (strcmp(v->v[i].name, name) == 0)
			return i;
	return -1;
}

static void vals_reset(struct sess_vals *v, const char *name)
{
	int i = vals_find(v, name);
	if (i < 0)
		return;
	free(v->v[i].name);
	free(v->v[i].value);
	v->v[i] = v->v[--v->n];
}

static void vals_clear(struct sess_vals *v)
{
	if (!v)
		return;
	for (int i = 0; i < v->n; i++) {
		free(v->v[i].name);
		free(v->v[i].value);
	}
	v->n = 0;
}

static bool is_identity(const char *name)
{
	return strcmp(name, SESS_ROLE) == 0 || strcmp(name, SESS_AUTH) == 0;
}

/* RESET ALL: as PostgreSQL, it leaves the role and the session authorization alone (they are undone by RESET ROLE /
 * RESET SESSION AUTHORIZATION or DISCARD ALL). */
static void vals_reset_all(struct sess_vals *v)
{
	int kept = 0;
	for (int i = 0; i < v->n; i++) {
		if (is_identity(v->v[i].name)) {
			struct sess_val keep = v->v[i];
			v->v[i] = v->v[kept];
			v->v[kept++] = keep;
		}
	}
	for (int i = kept; i < v->n; i++) {
		free(v->v[i].name);
		free(v->v[i].value);
	}
	v->n = kept;
}

static void vals_set(struct sess_vals **pv, const char *name, const char *value, bool guc_string)
{
	struct sess_vals *v = vals_of(pv);
	int i = vals_find(v, name);
	if (i >= 0) {
		free(v->v[i].value);
		v->v[i].value = xstrdup(value);
		v->v[i].guc_string = guc_string;
		return;
	}
	if (v->n == v->cap) {
		v->cap = v->cap ? v->cap * 2 : 4;
		v->v = xrealloc(v->v, (size_t)v->cap * sizeof(v->v[0]));
	}
	v->v[v->n].name = xstrdup(name);
	v->v[v->n].value = xstrdup(value);
	v->v[v->n].guc_string = guc_string;
	v->n++;
}

/* Applies one SET / RESET / RESET ALL to a session's values (markers are ignored). */
static void vals_apply(struct sess_vals **pv, const struct sess_fx *e)
{
	switch (e->kind) {
	case FX_SET:
		if (strcmp(e->name, SESS_AUTH) == 0)
			vals_reset(*pv, SESS_ROLE); /* SET SESSION AUTHORIZATION drops the role */
		vals_set(pv, e->name, e->value, false);
		break;
	case FX_RESET:
		if (strcmp(e->name, SESS_AUTH) == 0)
			vals_reset(*pv, SESS_ROLE); /* so does RESET SESSION AUTHORIZATION */
		vals_reset(*pv, e->name);
		break;
	case FX_RESET_ALL:
		if (*pv)
			vals_reset_all(*pv);
		break;
	case FX_DISCARD_ALL:
		vals_clear(*pv);
		break;
	default:
		break;
	}
}

void session_fx_free(struct sess_fx *fx)
{
	while (fx) {
		struct sess_fx *n = fx->next;
		free(fx->name);
		free(fx->value);
		free(fx);
		fx = n;
	}
}

static void vals_free(struct sess_vals *v)
{
	if (!v)
		return;
	vals_clear(v);
	session_fx_free(v->pending);
	free(v->v);
	free(v);
}

void session_client_free(struct client *c)
{
	vals_free(c->sess);
	c->sess = NULL;
}

void session_server_free(struct server *sv)
{
	vals_free(sv->sess);
	sv->sess = NULL;
}

/* Appends an effect at the end of a list. */
static void fx_push(struct sess_fx **list, enum fx_kind kind, const char *name, const char *value)
{
	struct sess_fx *e = xcalloc(1, sizeof(*e)), **p = list;
	e->kind = kind;
	e->name = name ? xstrdup(name) : NULL;
	e->value = value ? xstrdup(value) : NULL;
	while (*p)
		p = &(*p)->next;
	*p = e;
}

/* ---- which parameters are tracked ---- */

/* name (lower-cased) is listed in track_extra_parameters and is not one parley tracks through ParameterStatus or the
 * startup packet anyway; or it is the role or the session authorization, which are always tracked: a SET ROLE or
 * SET SESSION AUTHORIZATION left on a shared server would make the next client of the pool run as that user. */
static bool tracked(const char *name)
{
	const char *p = g.cfg.track_extra_parameters;
	size_t nlen = strlen(name);
	if (is_identity(name))
		return true;
	if (!p || tracked_var_lookup(name) >= 0)
		return false;
	while (*p) {
		const char *end;
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		end = p;
		while (*end && *end != ',')
			end++;
		{
			const char *e = end;
			while (e > p && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if ((size_t)(e - p) == nlen && strncasecmp(p, name, nlen) == 0)
				return true;
		}
		p = end;
	}
	return false;
}

/* ---- a small SQL lexer, enough to split statements and take SET values as written ---- */

enum tok { T_END, T_SEMI, T_WORD, T_QIDENT, T_STRING, T_OTHER };

struct lex {
	const char *p, *end;       /* what is left of the text */
	const char *ts, *te;       /* the current token's bytes */
	char word[SHAPE_NAME_MAX]; /* T_WORD: lower-cased (truncated); T_QIDENT: as written, without the quotes */
};

/* Skips a quoted run starting at p (the opening quote) that ends with q; doubled quotes stay inside; backslash escapes
 * when bs. Returns the byte after the closing quote (or end). */
static const char *skip_quoted(const char *p, const char *end, char q, bool bs)
{
	for (p++; p < end; p++) {
		if (bs && *p == '\\' && p + 1 < end) {
			p++;
			continue;
		}
		if (*p == q) {
			if (p + 1 < end && p[1] == q) {
				p++;
				continue;
			}
			return p + 1;
		}
	}
	return end;
}

static bool word_char(unsigned char ch)
{
	return isalnum(ch) || ch == '_' || ch == '$' || ch == '.' || ch >= 0x80;
}

static enum tok lex_next(struct lex *lx)
{
	const char *p = lx->p, *end = lx->end;
	enum tok t;
	for (;;) {
		while (p < end && isspace((unsigned char)*p))
			p++;
		if (p + 1 < end && p[0] == '-' && p[1] == '-') {
			while (p < end && *p != '\n')
				p++;
			continue;
		}
		if (p + 1 < end && p[0] == '/' && p[1] == '*') {
			int depth = 1;
			for (p += 2; p < end && depth > 0; p++) {
				if (p + 1 < end && p[0] == '/' && p[1] == '*') {
					depth++;
					p++;
				} else if (p + 1 < end && p[0] == '*' && p[1] == '/') {
					depth--;
					p++;
				}
			}
			continue;
		}
		break;
	}
	lx->ts = p;
	lx->word[0] = '\0';
	if (p >= end || *p == '\0') {
		t = T_END;
		p = end;
	} else if (*p == ';') {
		t = T_SEMI;
		p++;
	} else if ((*p == 'e' || *p == 'E') && p + 1 < end && p[1] == '\'') {
		t = T_STRING;
		p = skip_quoted(p + 1, end, '\'', true);
	} else if (*p == '\'') {
		t = T_STRING;
		p = skip_quoted(p, end, '\'', false);
	} else if (*p == '"') {
		const char *s = p + 1;
		size_t n;
		t = T_QIDENT;
		p = skip_quoted(p, end, '"', false);
		n = (size_t)(p - s) > 0 ? (size_t)(p - s) - 1 : 0;
		if (n >= sizeof(lx->word))
			n = sizeof(lx->word) - 1;
		memcpy(lx->word, s, n);
		lx->word[n] = '\0';
	} else if (*p == '$' && p + 1 < end && !isdigit((unsigned char)p[1])) {
		/* dollar quoting: $tag$ ... $tag$ */
		const char *tag = p, *q = p + 1;
		size_t tl;
		while (q < end && (isalnum((unsigned char)*q) || *q == '_'))
			q++;
		t = T_STRING;
		if (q < end && *q == '$') {
			tl = (size_t)(q - tag) + 1;
			p = q + 1;
			while (p + tl <= end && memcmp(p, tag, tl) != 0)
				p++;
			p = p + tl <= end ? p + tl : end;
		} else {
			t = T_OTHER;
			p = q;
		}
	} else if (word_char((unsigned char)*p)) {
		size_t n = 0;
		t = T_WORD;
		while (p < end && word_char((unsigned char)*p)) {
			if (n + 1 < sizeof(lx->word))
				lx->word[n++] = (char)tolower((unsigned char)*p);
			p++;
		}
		lx->word[n] = '\0';
	} else {
		t = T_OTHER;
		p++;
	}
	lx->te = p;
	lx->p = p;
	return t;
}

static bool is_word(enum tok t, const struct lex *lx, const char *w)
{
	return t == T_WORD && strcmp(lx->word, w) == 0;
}

/* The value of a SET whose first value token is t: records it if the parameter is tracked. Returns the token after
 * the statement. */
static enum tok scan_value(struct lex *lx, enum tok t, const char *name, struct sess_fx **fx)
{
	const char *vs, *ve;
	bool dflt = false;
	int ntok = 0;

	vs = lx->ts;
	ve = vs;
	while (t != T_END && t != T_SEMI) {
		if (ntok == 0 && is_word(t, lx, "default"))
			dflt = true;
		else if (ntok == 0 && is_word(t, lx, "from"))
			return t; /* FROM CURRENT: only meaningful in function definitions */
		ntok++;
		ve = lx->te;
		t = lex_next(lx);
	}
	if (ntok == 0 || !tracked(name))
		return t;
	if (ntok == 1 && strcmp(name, "role") == 0 && (ve - vs == 4 && strncasecmp(vs, "none", 4) == 0))
		dflt = true; /* SET ROLE NONE is RESET ROLE */
	if (dflt && ntok == 1) {
		fx_push(fx, FX_RESET, name, NULL);
	} else if ((size_t)(ve - vs) >= SESS_VALUE_MAX) {
		log_warning("SET %s: value longer than %d bytes, not restored on other server connections", name,
			    SESS_VALUE_MAX);
	} else {
		char *val = xmalloc((size_t)(ve - vs) + 1);
		memcpy(val, vs, (size_t)(ve - vs));
		val[ve - vs] = '\0';
		fx_push(fx, FX_SET, name, val);
		free(val);
	}
	return t;
}

/* SET [SESSION] name {TO | =} value, SET [SESSION] ROLE name, SET [SESSION] SESSION AUTHORIZATION name, SET SCHEMA
 * value: records it if the parameter is tracked. Returns the token after what it used. */
static enum tok scan_set(struct lex *lx, struct sess_fx **fx)
{
	char name[SHAPE_NAME_MAX];
	enum tok t = lex_next(lx);

	if (is_word(t, lx, "session")) {
		/* SET SESSION AUTHORIZATION, SET SESSION SESSION AUTHORIZATION (AUTHORIZATION is reserved: not a name) */
		t = lex_next(lx);
		if (is_word(t, lx, "session"))
			t = lex_next(lx);
		if (is_word(t, lx, "authorization"))
			return scan_value(lx, lex_next(lx), SESS_AUTH, fx);
	}
	if (is_word(t, lx, "role")) {
		t = lex_next(lx);
		if (is_word(t, lx, "to") || (t == T_OTHER && *lx->ts == '='))
			t = lex_next(lx); /* SET role TO name: the generic form */
		return scan_value(lx, t, "role", fx);
	}
	if (is_word(t, lx, "local") || is_word(t, lx, "time") || is_word(t, lx, "names") ||
	    is_word(t, lx, "session") || is_word(t, lx, "transaction") || is_word(t, lx, "constraints"))
		return t; /* transaction-local, reported (TimeZone, client_encoding) or not a parameter */
	if (is_word(t, lx, "schema")) {
		strcpy(name, "search_path");
	} else if (t == T_WORD || t == T_QIDENT) {
		strlcpy_ok(name, lx->word, sizeof(name));
		for (char *q = name; *q; q++)
			*q = (char)tolower((unsigned char)*q);
		t = lex_next(lx);
		if (!is_word(t, lx, "to") && !(t == T_OTHER && *lx->ts == '='))
			return t;
	} else {
		return t;
	}
	return scan_value(lx, lex_next(lx), name, fx);
}

/* Appends the session effects of every statement of text, in order. */
static void scan_text(struct sess_fx **fx, const char *text, size_t tlen)
{
	struct lex lx = { text, text + tlen, text, text, "" };
	enum tok t = lex_next(&lx);
	while (t != T_END) {
		if (t == T_WORD) {
			if (!strcmp(lx.word, "set")) {
				t = scan_set(&lx, fx);
			} else if (!strcmp(lx.word, "reset")) {
				t = lex_next(&lx);
				if (is_word(t, &lx, "all")) {
					fx_push(fx, FX_RESET_ALL, NULL, NULL);
				} else if (is_word(t, &lx, "session")) {
					t = lex_next(&lx);
					if (is_word(t, &lx, "authorization"))
						fx_push(fx, FX_RESET, SESS_AUTH, NULL);
				} else if (t == T_WORD || t == T_QIDENT) {
					char name[SHAPE_NAME_MAX];
					strlcpy_ok(name, lx.word, sizeof(name));
					for (char *q = name; *q; q++)
						*q = (char)tolower((unsigned char)*q);
					if (tracked(name))
						fx_push(fx, FX_RESET, name, NULL);
				}
			} else if (!strcmp(lx.word, "discard")) {
				t = lex_next(&lx);
				if (is_word(t, &lx, "all"))
					fx_push(fx, FX_DISCARD_ALL, NULL, NULL);
			} else if (!strcmp(lx.word, "commit") || !strcmp(lx.word, "end")) {
				t = lex_next(&lx);
				if (!is_word(t, &lx, "prepared"))
					fx_push(fx, FX_COMMIT, NULL, NULL);
			} else if (!strcmp(lx.word, "rollback") || !strcmp(lx.word, "abort")) {
				t = lex_next(&lx);
				if (is_word(t, &lx, "work") || is_word(t, &lx, "transaction"))
					t = lex_next(&lx);
				if (!is_word(t, &lx, "to") && !is_word(t, &lx, "prepared"))
					fx_push(fx, FX_ROLLBACK, NULL, NULL);
			}
		}
		/* the rest of the statement */
		while (t != T_END && t != T_SEMI)
			t = lex_next(&lx);
		if (t == T_SEMI)
			t = lex_next(&lx);
	}
}

/* ---- tracking ---- */

void session_note(struct client *c, struct sess_fx **fx, const struct shape *sh, const char *text, size_t tlen)
{
	switch (sh->kind) {
	case SHAPE_SET:
	case SHAPE_SET_ROLE:
	case SHAPE_MULTI:
		break;
	case SHAPE_TX_COMMIT:
		/* only matters when something is pending (a COMMIT is followed by status 'I', which commits anyway) */
		if (!*fx && !(c->sess && c->sess->pending))
			return;
		break;
	case SHAPE_TX_ROLLBACK:
		/* always: the SETs it undoes may still be in an earlier request that has not finished yet */
		break;
	case SHAPE_OTHER:
		if (!sh->normalized || strncmp(sh->normalized, "discard", 7) != 0)
			return;
		break;
	default:
		return;
	}
	scan_text(fx, text, tlen);
}

/* The transaction of the client's pending effects committed: they are now the client's and sv's. */
static void commit_pending(struct client *c, struct server *sv)
{
	struct sess_fx *e = c->sess->pending;
	c->sess->pending = NULL;
	for (struct sess_fx *x = e; x; x = x->next) {
		vals_apply(&c->sess, x);
		if (sv)
			vals_apply(&sv->sess, x);
	}
	session_fx_free(e);
}

void session_request_done(struct client *c, struct server *sv, struct sess_fx **fx, bool failed, char status)
{
	struct sess_fx *e = *fx;
	*fx = NULL;
	if (!e && !(c->sess && c->sess->pending))
		return;
	vals_of(&c->sess);
	if (failed || status == 'E') {
		/* the transaction failed: PostgreSQL undoes its SETs when it ends (ROLLBACK TO SAVEPOINT could keep the
		 * ones before the savepoint: parley forgets them too; see doc/transaction-mode.md) */
		session_fx_free(e);
		session_fx_free(c->sess->pending);
		c->sess->pending = NULL;
		return;
	}
	while (e) {
		struct sess_fx *n = e->next;
		e->next = NULL;
		if (e->kind == FX_COMMIT) {
			commit_pending(c, sv);
			session_fx_free(e);
		} else if (e->kind == FX_ROLLBACK) {
			session_fx_free(c->sess->pending);
			c->sess->pending = NULL;
			session_fx_free(e);
		} else {
			struct sess_fx **p = &c->sess->pending;
			while (*p)
				p = &(*p)->next;
			*p = e;
		}
		e = n;
	}
	if (status == 'I')
		commit_pending(c, sv); /* outside a transaction block: autocommitted */
}

/* Appends s to a growing heap string. */
static void str_add(char **buf, size_t *len, size_t *cap, const char *s)
{
	size_t n = strlen(s);
	if (*len + n + 1 > *cap) {
		*cap = (*len + n + 1) * 2;
		*buf = xrealloc(*buf, *cap);
	}
	memcpy(*buf + *len, s, n + 1);
	*len += n;
}

/* Appends a parameter name as SQL: bare when it is plain lower-case (dotted custom names stay dotted), else quoted. */
static void name_add(char **buf, size_t *len, size_t *cap, const char *name)
{
	bool plain = *name != '\0';
	for (const char *p = name; *p; p++)
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_' || *p == '.'))
			plain = false;
	if (plain) {
		str_add(buf, len, cap, name);
		return;
	}
	str_add(buf, len, cap, "\"");
	for (const char *p = name; *p; p++) {
		char one[3] = { *p, *p == '"' ? '"' : '\0', '\0' };
		str_add(buf, len, cap, one);
	}
	str_add(buf, len, cap, "\"");
}

/* Appends s as an E'' string literal (exact whatever standard_conforming_strings says). */
static void literal_add(char **buf, size_t *len, size_t *cap, const char *s)
{
	str_add(buf, len, cap, "E'");
	for (const char *p = s; *p; p++) {
		char one[3] = { *p, (*p == '\'' || *p == '\\') ? *p : '\0', '\0' };
		str_add(buf, len, cap, one);
	}
	str_add(buf, len, cap, "'");
}

bool session_startup_param(struct client *c, const char *name, const char *value)
{
	char lname[SHAPE_NAME_MAX];
	if (!strlcpy_ok(lname, name, sizeof(lname)))
		return false;
	for (char *q = lname; *q; q++)
		*q = (char)tolower((unsigned char)*q);
	/* PostgreSQL ignores a session_authorization in the startup packet: parley refuses it as any unknown one */
	if (!tracked(lname) || strcmp(lname, SESS_AUTH) == 0 || strlen(value) >= SESS_VALUE_MAX)
		return false;
	if (strcmp(lname, SESS_ROLE) == 0) {
		/* the role as SET role TO E'name' (the same string), which session_server_query sees when the sync SQL
		 * runs: a set_config after a session authorization change would leave the role out of the server's values */
		char *lit = NULL;
		size_t len = 0, cap = 0;
		literal_add(&lit, &len, &cap, value);
		vals_set(&c->sess, lname, lit, false);
		free(lit);
	} else {
		vals_set(&c->sess, lname, value, true);
	}
	relay_note_startup_setting(c, lname, value); /* the cache key must tell it apart, as a SET of it */
	return true;
}

/* Whether the client's entry ci and the server's entry sj (-1: not set) of a parameter are the same setting. */
static bool vals_same(const struct sess_vals *cv, int ci, const struct sess_vals *svv, int sj)
{
	if (ci < 0 || sj < 0)
		return ci < 0 && sj < 0;
	return svv->v[sj].guc_string == cv->v[ci].guc_string && strcmp(svv->v[sj].value, cv->v[ci].value) == 0;
}

/* Appends the statement that gives a server the client's entry i: SET name TO value, or set_config for a startup
 * parameter's string (set_config takes it as PostgreSQL took it from the startup packet). */
static void set_add(char **buf, size_t *len, size_t *cap, const struct sess_val *e)
{
	if (e->guc_string) {
		str_add(buf, len, cap, "SELECT pg_catalog.set_config(");
		literal_add(buf, len, cap, e->name);
		str_add(buf, len, cap, ", ");
		literal_add(buf, len, cap, e->value);
		str_add(buf, len, cap, ", false);");
		return;
	}
	str_add(buf, len, cap, "SET ");
	name_add(buf, len, cap, e->name);
	str_add(buf, len, cap, " TO ");
	str_add(buf, len, cap, e->value);
	str_add(buf, len, cap, ";");
}

static void reset_add(char **buf, size_t *len, size_t *cap, const char *name)
{
	str_add(buf, len, cap, "RESET ");
	name_add(buf, len, cap, name);
	str_add(buf, len, cap, ";");
}

char *session_sync_sql(struct client *c, struct server *sv)
{
	struct sess_vals *cv = c->sess, *svv = sv->sess;
	char *params = NULL, *buf = NULL;
	size_t plen = 0, pcap = 0, len = 0, cap = 0;
	int c_auth, s_auth, c_role, s_role;
	bool auth_same, role_same;

	if ((!cv || cv->n == 0) && (!svv || svv->n == 0))
		return NULL;
	c_auth = vals_find(cv, SESS_AUTH);
	s_auth = vals_find(svv, SESS_AUTH);
	c_role = vals_find(cv, SESS_ROLE);
	s_role = vals_find(svv, SESS_ROLE);
	auth_same = vals_same(cv, c_auth, svv, s_auth);
	role_same = vals_same(cv, c_role, svv, s_role);

	/* the other parameters */
	for (int i = 0; cv && i < cv->n; i++)
		if (!is_identity(cv->v[i].name) && !vals_same(cv, i, svv, vals_find(svv, cv->v[i].name)))
			set_add(&params, &plen, &pcap, &cv->v[i]);
	for (int j = 0; svv && j < svv->n; j++)
		if (!is_identity(svv->v[j].name) && vals_find(cv, svv->v[j].name) < 0)
			reset_add(&params, &plen, &pcap, svv->v[j].name);

	/* They run as the login user, who is allowed whatever the client set (a superuser-only parameter SET before
	 * SET SESSION AUTHORIZATION or SET ROLE would be refused under the user or role the server has now). */
	if (params && (s_auth >= 0 || s_role >= 0)) {
		/* resetting the session authorization drops the role too: the server is the login user, with no role */
		str_add(&buf, &len, &cap, s_auth >= 0 ? "RESET " SESS_AUTH ";" : "RESET " SESS_ROLE ";");
		auth_same = c_auth < 0;
		role_same = c_role < 0;
	}
	if (params) {
		str_add(&buf, &len, &cap, params);
		free(params);
	}
	/* then who the client is: the session authorization before the role, since setting or resetting it drops the
	 * role (and SET ROLE is checked against the session user) */
	if (!auth_same) {
		if (c_auth >= 0)
			set_add(&buf, &len, &cap, &cv->v[c_auth]);
		else
			reset_add(&buf, &len, &cap, SESS_AUTH);
		role_same = c_role < 0;
	}
	if (!role_same) {
		if (c_role >= 0)
			set_add(&buf, &len, &cap, &cv->v[c_role]);
		else
			reset_add(&buf, &len, &cap, SESS_ROLE);
	}
	if (!buf)
		return NULL;
	/* the server gets exactly the client's values (a failing SET closes the server connection) */
	vals_clear(svv);
	for (int i = 0; cv && i < cv->n; i++)
		vals_set(&sv->sess, cv->v[i].name, cv->v[i].value, cv->v[i].guc_string);
	return buf;
}

void session_server_query(struct server *sv, const char *sql)
{
	struct sess_fx *fx = NULL;
	/* cheap filter: most of parley's own queries (DISCARD ALL, select 1) set nothing tracked */
	if (!strcasestr(sql, "set") && !strcasestr(sql, "discard"))
		return;
	scan_text(&fx, sql, strlen(sql));
	for (struct sess_fx *e = fx; e; e = e->next)
		vals_apply(&sv->sess, e);
	session_fx_free(fx);
}

/* ---- features that break in transaction mode ---- */

/* Where a JSON node pattern occurs in libpg_query's output as a node (not inside an escaped string value). */
static const char *json_find(const char *json, const char *pat)
{
	const char *p = json;
	while ((p = strstr(p, pat)) != NULL) {
		if (p == json || p[-1] != '\\')
			return p;
		p++;
	}
	return NULL;
}

/* What the grammar says about text: the unsafe feature it uses, or NULL. *only_warn: a feature that often works (a
 * temporary table used within one transaction) and is logged, never refused. */
static const char *confirm_unsafe(const char *text, size_t tlen, bool *only_warn)
{
	static const char *const locks[] = { "{\"String\":{\"sval\":\"pg_advisory_lock\"}}",
					     "{\"String\":{\"sval\":\"pg_advisory_lock_shared\"}}",
					     "{\"String\":{\"sval\":\"pg_try_advisory_lock\"}}",
					     "{\"String\":{\"sval\":\"pg_try_advisory_lock_shared\"}}" };
	PgQueryParseResult pr;
	const char *what = NULL, *p;
	char *sql = xmalloc(tlen + 1);

	memcpy(sql, text, tlen);
	sql[tlen] = '\0';
	*only_warn = false;
	pr = pg_query_parse(sql);
	free(sql);
	if (pr.error || !pr.parse_tree) {
		pg_query_free_parse_result(pr);
		return NULL;
	}
	if (json_find(pr.parse_tree, "{\"ListenStmt\":"))
		what = "LISTEN";
	else if (json_find(pr.parse_tree, "{\"PrepareStmt\":"))
		what = "SQL-level PREPARE";
	else if ((p = json_find(pr.parse_tree, "{\"DeclareCursorStmt\":")) != NULL &&
		 (p = strstr(p, "\"options\":")) != NULL && (strtol(p + 10, NULL, 10) & 0x20) /* CURSOR_OPT_HOLD */)
		what = "DECLARE ... WITH HOLD";
	if (!what)
		for (size_t i = 0; i < ARRAY_SIZE(locks); i++)
			if (json_find(pr.parse_tree, locks[i])) {
				what = "session-level advisory lock (pg_advisory_lock)";
				break;
			}
	if (!what && json_find(pr.parse_tree, "\"relpersistence\":\"t\"") &&
	    !json_find(pr.parse_tree, "\"ONCOMMIT_DROP\"")) {
		what = "temporary table without ON COMMIT DROP";
		*only_warn = true;
	}
	pg_query_free_parse_result(pr);
	return what;
}

/* The cheap part: could sh's texts use an unsafe feature? Most statements are ruled out by their kind. */
static bool prefilter(const struct shape *sh)
{
	const char *n = sh->normalized;
	if (!n)
		return false;
	switch (sh->kind) {
	case SHAPE_READ:
		return sh->has_volatile && strstr(n, "advisory_lock") != NULL;
	case SHAPE_OTHER:
		return !strncmp(n, "listen", 6) || !strncmp(n, "prepare", 7) ||
		       (!strncmp(n, "declare", 7) && strstr(n, "hold")) || strstr(n, "advisory_lock");
	case SHAPE_DDL:
		return !strncmp(n, "create", 6) && strstr(n, "temp") != NULL;
	case SHAPE_MULTI:
		return strstr(n, "listen") || strstr(n, "prepare") || strstr(n, "hold") || strstr(n, "advisory_lock") ||
		       strstr(n, "temp");
	default:
		return false;
	}
}

const char *session_unsafe_feature(const struct shape *sh, const char *text, size_t tlen)
{
	bool only_warn;
	if (sh && !prefilter(sh))
		return NULL;
	return confirm_unsafe(text, tlen, &only_warn);
}

static enum unsafe_mode unsafe_mode(void)
{
	const char *m = g.cfg.transaction_unsafe;
	if (m && !strcmp(m, "allow"))
		return UNSAFE_ALLOW;
	if (m && !strcmp(m, "warn"))
		return UNSAFE_WARN;
	return UNSAFE_ERROR;
}

/* The check shared by the Query and Parse paths: the feature, or NULL; *refuse: answer with the error. */
static const char *unsafe_check(struct client *c, const struct shape *sh, const char *text, size_t tlen,
				bool *refuse)
{
	enum unsafe_mode m;
	const char *what;
	bool only_warn;

	*refuse = false;
	if (!c->pool || c->pool->mode == POOL_SESSION || !sh || !prefilter(sh))
		return NULL;
	m = unsafe_mode();
	if (m == UNSAFE_ALLOW)
		return NULL;
	what = confirm_unsafe(text, tlen, &only_warn);
	if (what)
		*refuse = m == UNSAFE_ERROR && !only_warn;
	return what;
}

/* The checks shared by the simple and the extended protocol: NULL when text may run (after a warning when
 * transaction_unsafe = warn), else the statement PostgreSQL should run in its place, heap: a DO block that raises
 * 0A000 naming the feature, so the error takes its place among the replies and aborts an open transaction exactly as
 * a failing statement would. how names the protocol in the warning. */
static char *unsafe_replacement(struct client *c, const struct shape *sh, const char *text, size_t tlen,
				const char *how)
{
	bool refuse;
	const char *what = unsafe_check(c, sh, text, tlen, &refuse);
	const char *mode;
	char sql[1024];

	if (!what)
		return NULL;
	mode = pool_mode_name(c->pool->mode);
	if (!refuse) {
		log_warning("C %s@%s %s:%d: %s%s in pool_mode=%s: it outlives the transaction on a shared server "
			    "connection", c->user, c->dbname, c->addr, c->port, what, how, mode);
		return NULL;
	}
	log_info("C %s@%s %s:%d: refused %s%s in pool_mode=%s (transaction_unsafe = error)", c->user, c->dbname,
		 c->addr, c->port, what, how, mode);
	snprintf(sql, sizeof(sql),
		 "DO $parley$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = '%s is not supported "
		 "with pool_mode=%s: the session state it creates would stay on a server connection other "
		 "clients share', HINT = 'Use a database or user with pool_mode=session for this client, or "
		 "set transaction_unsafe = warn or allow in parley.ini.'; END$parley$",
		 what, mode);
	return xstrdup(sql);
}

bool session_unsafe_query(struct client *c, const struct shape *sh, const char *text, size_t tlen,
			  struct evbuffer *out)
{
	char *sql = unsafe_replacement(c, sh, text, tlen, "");
	uint8_t hdr[5];
	size_t n;

	if (!sql)
		return false;
	n = strlen(sql);
	hdr[0] = 'Q';
	hdr[1] = (uint8_t)((n + 5) >> 24);
	hdr[2] = (uint8_t)((n + 5) >> 16);
	hdr[3] = (uint8_t)((n + 5) >> 8);
	hdr[4] = (uint8_t)(n + 5);
	evbuffer_add(out, hdr, 5);
	evbuffer_add(out, sql, n + 1);
	free(sql);
	return true;
}

char *session_unsafe_parse(struct client *c, const struct shape *sh, const char *text, size_t tlen)
{
	return unsafe_replacement(c, sh, text, tlen, " (prepared)");
}
