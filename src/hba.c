/* hba.c — parser and matcher for PgBouncer's subset of pg_hba.conf (auth_type = hba): local/host/hostssl/hostnossl rules, first match wins. */
#include "hba.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <ifaddrs.h>
#include <limits.h>
#include <netinet/in.h>
#include <openssl/x509.h>
#include <pwd.h>
#include <stdarg.h>
#include <sys/socket.h>

#define HBA_INCLUDE_DEPTH_MAX 10   /* @file inside @file, as deep as this */
#define HBA_FILE_MAX (16 << 20)    /* larger files (and @files) are refused: surely not an hba file */

/* One token of a field as written: its text (quotes removed) and whether any part of it was quoted (a quoted
 * keyword is a plain name, as in PostgreSQL). */
struct tok {
	char *s;       /* heap */
	bool quoted;   /* the token contained a double quote */
};

/* One whitespace-separated field: a comma-separated list of tokens. */
struct field {
	struct tok *toks;  /* heap array */
	size_t n;          /* tokens */
};

/* A tokenized record. */
struct record {
	struct field *f;   /* heap array */
	size_t n;          /* fields */
};

/* Parser state for one file. */
struct hba_parser {
	const char *name;      /* file name for messages */
	const char *base_dir;  /* directory for @file references; NULL = not allowed */
	int line;              /* line of the record being parsed */
	char *err;
	size_t errlen;
	int depth;             /* @file nesting */
};

static void PRINTF_LIKE(2, 3) perr(struct hba_parser *ps, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (ps->err && ps->errlen)
		snprintf(ps->err, ps->errlen, "%s:%d: %s", ps->name, ps->line, msg);
}

static void record_clear(struct record *r)
{
	for (size_t i = 0; i < r->n; i++) {
		for (size_t j = 0; j < r->f[i].n; j++)
			free(r->f[i].toks[j].s);
		free(r->f[i].toks);
	}
	free(r->f);
	r->f = NULL;
	r->n = 0;
}

static void names_free(struct hba_names *nm)
{
	for (size_t i = 0; i < nm->count; i++)
		free(nm->names[i]);
	free(nm->names);
	memset(nm, 0, sizeof(*nm));
}

void hba_free(struct hba *h)
{
	if (!h)
		return;
	for (size_t i = 0; i < h->count; i++) {
		names_free(&h->rules[i].db);
		names_free(&h->rules[i].user);
	}
	free(h->rules);
	free(h->path);
	free(h);
}

const char *hba_method_name(enum hba_method m)
{
	static const char *const names[] = { "trust", "reject", "md5", "password", "scram-sha-256", "cert", "peer" };
	if ((int)m >= 0 && (size_t)m < ARRAY_SIZE(names))
		return names[m];
	return "unknown";
}

/* ---- tokenizer ---- */

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* Splits one logical record (continuations already joined) into fields of comma-separated tokens, as PostgreSQL
 * does: blanks separate fields, "..." quotes blanks, commas and '#', a '#' outside quotes starts a comment, and
 * blanks after a comma continue the same field. Returns 0, or -1 with the message set. */
static int tokenize(struct hba_parser *ps, const char *p, struct record *r)
{
	size_t cap = strlen(p) + 1;
	char *buf = xmalloc(cap);

	r->f = NULL;
	r->n = 0;
	for (;;) {
		struct field fld = { NULL, 0 };
		bool more;

		while (is_blank(*p))
			p++;
		if (*p == '\0' || *p == '#')
			break;
		do {
			size_t len = 0;
			bool quoted = false, in_quote = false;

			more = false;
			while (*p) {
				if (in_quote) {
					if (*p == '"')
						in_quote = false;
					else
						buf[len++] = *p;
					p++;
					continue;
				}
				if (*p == '"') {
					in_quote = quoted = true;
					p++;
					continue;
				}
				if (is_blank(*p) || *p == '#')
					break;
				if (*p == ',') {
					more = true;
					p++;
					break;
				}
				buf[len++] = *p++;
			}
			if (in_quote) {
				perr(ps, "unterminated quoted string");
				goto fail_field;
			}
			if (len == 0 && !quoted) {
				perr(ps, more ? "empty element in a comma-separated list" : "list ends with a comma");
				goto fail_field;
			}
			buf[len] = '\0';
			fld.toks = xrealloc(fld.toks, (fld.n + 1) * sizeof(*fld.toks));
			fld.toks[fld.n].s = xstrdup(buf);
			fld.toks[fld.n].quoted = quoted;
			fld.n++;
			if (more) {
				/* blanks after a comma do not end the field */
				while (is_blank(*p))
					p++;
				if (*p == '\0' || *p == '#') {
					perr(ps, "list ends with a comma");
					goto fail_field;
				}
			}
		} while (more);
		r->f = xrealloc(r->f, (r->n + 1) * sizeof(*r->f));
		r->f[r->n++] = fld;
		continue;
fail_field:
		for (size_t j = 0; j < fld.n; j++)
			free(fld.toks[j].s);
		free(fld.toks);
		record_clear(r);
		free(buf);
		return -1;
	}
	free(buf);
	return 0;
}

/* ---- reading files ---- */

/* ---- fields ---- */

static void names_add(struct hba_names *nm, const char *s)
{
	nm->names = xrealloc(nm->names, (nm->count + 1) * sizeof(*nm->names));
	nm->names[nm->count++] = xstrdup(s);
}

static int add_name_token(struct hba_parser *ps, struct hba_names *nm, const struct tok *t, bool is_db);

/* Adds the names listed in an @file (blanks, commas and newlines separate them; '#' comments; quotes as in the
 * hba file). */
static int include_names(struct hba_parser *ps, struct hba_names *nm, const char *ref, bool is_db)
{
	char path[PATH_MAX];
	char *text, *line, *save = NULL;
	size_t len;
	int rc = 0;

	if (*ref == '\0') {
		perr(ps, "\"@\" must be followed by a file name");
		return -1;
	}
	if (!ps->base_dir) {
		perr(ps, "@%s: @file references need the hba file to be read from disk", ref);
		return -1;
	}
	if (ps->depth >= HBA_INCLUDE_DEPTH_MAX) {
		perr(ps, "@%s: @file references nested more than %d deep", ref, HBA_INCLUDE_DEPTH_MAX);
		return -1;
	}
	if (ref[0] == '/')
		snprintf(path, sizeof(path), "%s", ref);
	else if ((size_t)snprintf(path, sizeof(path), "%s/%s", ps->base_dir, ref) >= sizeof(path)) {
		perr(ps, "@%s: path too long", ref);
		return -1;
	}
	text = read_whole_file(path, HBA_FILE_MAX, &len);
	if (!text) {
		perr(ps, "cannot read @file %s: %s", path, strerror(errno));
		return -1;
	}
	if (strlen(text) != len) {
		perr(ps, "@file %s contains a NUL byte", path);
		free(text);
		return -1;
	}
	ps->depth++;
	for (line = strtok_r(text, "\n", &save); line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
		struct record r;
		if (tokenize(ps, line, &r) < 0) {
			rc = -1;
			break;
		}
		for (size_t i = 0; i < r.n && rc == 0; i++)
			for (size_t j = 0; j < r.f[i].n && rc == 0; j++)
				rc = add_name_token(ps, nm, &r.f[i].toks[j], is_db);
		record_clear(&r);
	}
	ps->depth--;
	free(text);
	return rc;
}

/* Interprets one token of the database (is_db) or user field: keywords, @file, or a literal name. */
static int add_name_token(struct hba_parser *ps, struct hba_names *nm, const struct tok *t, bool is_db)
{
	const char *s = t->s;

	if (!t->quoted) {
		if (strcmp(s, "all") == 0) {
			nm->all = true;
			return 0;
		}
		if (s[0] == '@')
			return include_names(ps, nm, s + 1, is_db);
		if (is_db) {
			if (strcmp(s, "sameuser") == 0) {
				nm->sameuser = true;
				return 0;
			}
			if (strcmp(s, "replication") == 0) {
				nm->replication = true;
				return 0;
			}
			if (strcmp(s, "samerole") == 0 || strcmp(s, "samegroup") == 0) {
				perr(ps, "database keyword \"%s\" is not supported (PgBouncer does not know role membership)", s);
				return -1;
			}
		} else if (s[0] == '+') {
			perr(ps, "group membership \"%s\" is not supported (PgBouncer does not know role membership); list the users or use @file", s);
			return -1;
		}
	}
	names_add(nm, s);
	return 0;
}

static int parse_names(struct hba_parser *ps, const struct field *f, struct hba_names *nm, bool is_db)
{
	for (size_t i = 0; i < f->n; i++)
		if (add_name_token(ps, nm, &f->toks[i], is_db) < 0)
			return -1;
	return 0;
}

/* Parses an IPv4 or IPv6 address (no host names). Returns the family or 0. */
static int parse_ip(const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, out) == 1)
		return AF_INET6;
	return 0;
}

static void mask_from_bits(int bits, int family, uint8_t mask[16])
{
	int nbytes = family == AF_INET ? 4 : 16;

	memset(mask, 0, 16);
	for (int i = 0; i < nbytes; i++) {
		int b = bits - i * 8;
		mask[i] = b >= 8 ? 0xff : b <= 0 ? 0 : (uint8_t)(0xff << (8 - b));
	}
}

/* Parses the address field (and the netmask field after it when the address has no /bits). *used is the number
 * of fields consumed. */
static int parse_address(struct hba_parser *ps, const struct record *r, size_t at, struct hba_rule *rule, size_t *used)
{
	const struct field *f = &r->f[at];
	const struct tok *t = &f->toks[0];
	char buf[INET6_ADDRSTRLEN + 8];
	char *slash;
	int nbytes;

	*used = 1;
	if (f->n != 1) {
		perr(ps, "multiple values specified for the host address");
		return -1;
	}
	if (!t->quoted && strcmp(t->s, "all") == 0) {
		rule->addr_kind = HBA_ADDR_ALL;
		return 0;
	}
	if (!t->quoted && strcmp(t->s, "samehost") == 0) {
		rule->addr_kind = HBA_ADDR_SAMEHOST;
		return 0;
	}
	if (!t->quoted && strcmp(t->s, "samenet") == 0) {
		rule->addr_kind = HBA_ADDR_SAMENET;
		return 0;
	}
	if (strlen(t->s) >= sizeof(buf)) {
		perr(ps, "invalid IP address \"%s\" (host names are not supported)", t->s);
		return -1;
	}
	strcpy(buf, t->s);
	slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	rule->family = parse_ip(buf, rule->addr);
	if (!rule->family) {
		perr(ps, "invalid IP address \"%s\" (host names and domain suffixes are not supported)", buf);
		return -1;
	}
	nbytes = rule->family == AF_INET ? 4 : 16;
	if (slash) {
		const char *b = slash + 1;
		long bits;
		char *end;
		if (!isdigit((unsigned char)*b)) {
			perr(ps, "invalid CIDR mask in address \"%s\"", t->s);
			return -1;
		}
		errno = 0;
		bits = strtol(b, &end, 10);
		if (*end != '\0' || errno || bits < 0 || bits > nbytes * 8) {
			perr(ps, "invalid CIDR mask in address \"%s\"", t->s);
			return -1;
		}
		mask_from_bits((int)bits, rule->family, rule->mask);
	} else {
		const struct field *mf;
		if (at + 1 >= r->n) {
			perr(ps, "end of line after the IP address: expected a netmask or a /bits suffix");
			return -1;
		}
		mf = &r->f[at + 1];
		if (mf->n != 1 || parse_ip(mf->toks[0].s, rule->mask) != rule->family) {
			perr(ps, "invalid IP mask \"%s\" after address \"%s\" (write ADDRESS/BITS or ADDRESS NETMASK)",
			     mf->toks[0].s, buf);
			return -1;
		}
		*used = 2;
	}
	rule->addr_kind = HBA_ADDR_NET;
	for (int i = 0; i < 16; i++)
		rule->addr[i] &= rule->mask[i];
	return 0;
}

static int parse_method(struct hba_parser *ps, const struct field *f, struct hba_rule *rule)
{
	static const char *const unsupported[] = { "ident", "gss", "sspi", "pam", "ldap", "radius", "bsd", "oauth" };
	const char *s = f->toks[0].s;

	if (f->n != 1) {
		perr(ps, "multiple values specified for the authentication method");
		return -1;
	}
	for (int m = HBA_TRUST; m <= HBA_PEER; m++) {
		if (strcmp(s, hba_method_name((enum hba_method)m)) == 0) {
			rule->method = (enum hba_method)m;
			goto check;
		}
	}
	for (size_t i = 0; i < ARRAY_SIZE(unsupported); i++) {
		if (strcmp(s, unsupported[i]) == 0) {
			perr(ps, "authentication method \"%s\" is not supported (use trust, reject, md5, password, scram-sha-256, cert or peer)", s);
			return -1;
		}
	}
	perr(ps, "invalid authentication method \"%s\"", s);
	return -1;
check:
	if (rule->method == HBA_PEER && rule->conn != HBA_CONN_LOCAL) {
		perr(ps, "peer authentication is only supported on local sockets");
		return -1;
	}
	if (rule->method == HBA_CERT && rule->conn != HBA_CONN_HOSTSSL) {
		perr(ps, "cert authentication is only supported on hostssl connections");
		return -1;
	}
	return 0;
}

/* Turns one tokenized record into a rule. */
static int parse_record(struct hba_parser *ps, const struct record *r, struct hba_rule *rule)
{
	static const char *const conn_names[] = { "local", "host", "hostssl", "hostnossl" };
	const struct field *f0 = &r->f[0];
	size_t at, used;
	int c;

	memset(rule, 0, sizeof(*rule));
	rule->line = ps->line;
	if (f0->n != 1) {
		perr(ps, "multiple values specified for the connection type");
		return -1;
	}
	for (c = 0; c < (int)ARRAY_SIZE(conn_names); c++)
		if (strcmp(f0->toks[0].s, conn_names[c]) == 0)
			break;
	if (c == (int)ARRAY_SIZE(conn_names)) {
		if (strcmp(f0->toks[0].s, "hostgssenc") == 0 || strcmp(f0->toks[0].s, "hostnogssenc") == 0)
			perr(ps, "connection type \"%s\" is not supported (no GSSAPI encryption)", f0->toks[0].s);
		else
			perr(ps, "invalid connection type \"%s\" (expected local, host, hostssl or hostnossl)", f0->toks[0].s);
		return -1;
	}
	rule->conn = (enum hba_conn)c;
	if (r->n < 2) {
		perr(ps, "end of line before the database field");
		return -1;
	}
	if (parse_names(ps, &r->f[1], &rule->db, true) < 0)
		return -1;
	if (r->n < 3) {
		perr(ps, "end of line before the user field");
		return -1;
	}
	if (parse_names(ps, &r->f[2], &rule->user, false) < 0)
		return -1;
	at = 3;
	if (rule->conn != HBA_CONN_LOCAL) {
		if (r->n < 4) {
			perr(ps, "end of line before the address field");
			return -1;
		}
		if (parse_address(ps, r, at, rule, &used) < 0)
			return -1;
		at += used;
	} else {
		rule->addr_kind = HBA_ADDR_NONE;
	}
	if (at >= r->n) {
		perr(ps, "end of line before the authentication method");
		return -1;
	}
	if (parse_method(ps, &r->f[at], rule) < 0)
		return -1;
	at++;
	if (at < r->n) {
		const char *opt = r->f[at].toks[0].s;
		if (!strchr(opt, '='))
			perr(ps, "unexpected \"%s\" after the authentication method", opt);
		else
			perr(ps, "authentication option \"%.*s\" is not supported", (int)(strchr(opt, '=') - opt), opt);
		return -1;
	}
	return 0;
}

int hba_parse(const char *text, size_t len, const char *name, const char *base_dir, struct hba **out,
	      char *err, size_t errlen)
{
	struct hba_parser ps = { .name = name ? name : "(hba)", .base_dir = base_dir, .line = 0, .err = err,
				 .errlen = errlen, .depth = 0 };
	struct hba *h = xcalloc(1, sizeof(*h));
	char *rec = NULL;
	size_t rec_len = 0, pos = 0;
	int lineno = 0, rec_line = 0;

	if (err && errlen)
		err[0] = '\0';
	h->path = xstrdup(ps.name);
	if (memchr(text, '\0', len)) {
		ps.line = 1;
		for (size_t i = 0; text[i]; i++)
			if (text[i] == '\n')
				ps.line++;
		perr(&ps, "line contains a NUL byte");
		goto fail;
	}
	rec = xmalloc(len + 1);
	while (pos < len) {
		const char *ln = text + pos;
		const char *nl = memchr(ln, '\n', len - pos);
		size_t n = nl ? (size_t)(nl - ln) : len - pos;
		size_t m = n;

		pos += n + (nl ? 1 : 0);
		lineno++;
		if (rec_len == 0)
			rec_line = lineno;
		while (m > 0 && ln[m - 1] == '\r')
			m--;
		/* a backslash at the very end continues the record on the next line (also inside quotes/comments) */
		if (m > 0 && ln[m - 1] == '\\') {
			memcpy(rec + rec_len, ln, m - 1);
			rec_len += m - 1;
			if (pos < len)
				continue;
		} else {
			memcpy(rec + rec_len, ln, m);
			rec_len += m;
		}
		rec[rec_len] = '\0';
		rec_len = 0;
		{
			struct record r;
			ps.line = rec_line;
			if (tokenize(&ps, rec, &r) < 0)
				goto fail;
			if (r.n > 0) {
				struct hba_rule rule;
				if (parse_record(&ps, &r, &rule) < 0) {
					names_free(&rule.db);
					names_free(&rule.user);
					record_clear(&r);
					goto fail;
				}
				h->rules = xrealloc(h->rules, (h->count + 1) * sizeof(*h->rules));
				h->rules[h->count++] = rule;
			}
			record_clear(&r);
		}
	}
	free(rec);
	*out = h;
	return 0;
fail:
	free(rec);
	hba_free(h);
	return -1;
}

int hba_load(const char *path, struct hba **out, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	const char *slash;
	size_t len;
	char *text;
	int rc;

	if (!path || !*path) {
		snprintf(err, errlen, "auth_type = hba needs auth_hba_file");
		return -1;
	}
	text = read_whole_file(path, HBA_FILE_MAX, &len);
	if (!text) {
		snprintf(err, errlen, "cannot read auth_hba_file %s: %s", path, strerror(errno));
		return -1;
	}
	slash = strrchr(path, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == path)
		snprintf(dir, sizeof(dir), "/");
	else
		snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
	rc = hba_parse(text, len, path, dir, out, err, errlen);
	free(text);
	return rc;
}

/* ---- matching ---- */

static bool names_match(const struct hba_names *nm, const char *name)
{
	for (size_t i = 0; i < nm->count; i++)
		if (strcmp(nm->names[i], name) == 0)
			return true;
	return false;
}

static bool db_matches(const struct hba_names *nm, const struct hba_client *c)
{
	/* As PostgreSQL: a replication connection matches only the replication keyword, and that keyword nothing else. */
	if (c->replication)
		return nm->replication;
	return nm->all || (nm->sameuser && strcmp(c->database, c->user) == 0) || names_match(nm, c->database);
}

static bool masked_equal(const uint8_t *a, const uint8_t *b, const uint8_t *mask, int nbytes)
{
	for (int i = 0; i < nbytes; i++)
		if ((a[i] & mask[i]) != (b[i] & mask[i]))
			return false;
	return true;
}

static const uint8_t v4mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/* Compares the client address (fam/ca) with network net/mask of family nfam; an IPv4 client matches an IPv6 rule
 * through its v4-mapped form and a v4-mapped IPv6 client matches an IPv4 rule, as in PostgreSQL. */
static bool addr_in_net(int fam, const uint8_t ca[16], int nfam, const uint8_t net[16], const uint8_t mask[16])
{
	uint8_t tmp[16];

	if (fam == nfam)
		return masked_equal(ca, net, mask, fam == AF_INET ? 4 : 16);
	if (fam == AF_INET6 && nfam == AF_INET) {
		if (memcmp(ca, v4mapped_prefix, 12) != 0)
			return false;
		return masked_equal(ca + 12, net, mask, 4);
	}
	/* IPv4 client, IPv6 rule */
	memcpy(tmp, v4mapped_prefix, 12);
	memcpy(tmp + 12, ca, 4);
	return masked_equal(tmp, net, mask, 16);
}

/* samehost / samenet: against every address of this machine's interfaces. */
static bool addr_local_match(int fam, const uint8_t ca[16], bool samenet)
{
	struct ifaddrs *ifs, *i;
	bool found = false;

	if (getifaddrs(&ifs) < 0)
		return false;
	for (i = ifs; i && !found; i = i->ifa_next) {
		uint8_t a[16] = { 0 }, m[16];
		int f;
		if (!i->ifa_addr)
			continue;
		f = i->ifa_addr->sa_family;
		if (f == AF_INET)
			memcpy(a, &((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr, 4);
		else if (f == AF_INET6)
			memcpy(a, &((const struct sockaddr_in6 *)(const void *)i->ifa_addr)->sin6_addr, 16);
		else
			continue;
		memset(m, 0xff, sizeof(m));
		if (samenet) {
			if (!i->ifa_netmask || i->ifa_netmask->sa_family != f)
				continue;
			if (f == AF_INET)
				memcpy(m, &((const struct sockaddr_in *)(const void *)i->ifa_netmask)->sin_addr, 4);
			else
				memcpy(m, &((const struct sockaddr_in6 *)(const void *)i->ifa_netmask)->sin6_addr, 16);
		}
		if (f == AF_INET) {
			uint8_t net[16] = { 0 };
			for (int k = 0; k < 4; k++)
				net[k] = a[k] & m[k];
			found = addr_in_net(fam, ca, AF_INET, net, m);
		} else {
			found = fam == AF_INET6 && masked_equal(ca, a, m, 16);
		}
	}
	freeifaddrs(ifs);
	return found;
}

static bool addr_matches(const struct hba_rule *r, const struct hba_client *c)
{
	uint8_t ca[16];
	int fam;

	if (r->addr_kind == HBA_ADDR_ALL)
		return true;
	fam = c->addr ? parse_ip(c->addr, ca) : 0;
	if (!fam)
		return false;
	switch (r->addr_kind) {
	case HBA_ADDR_NET:
		return addr_in_net(fam, ca, r->family, r->addr, r->mask);
	case HBA_ADDR_SAMEHOST:
		return addr_local_match(fam, ca, false);
	case HBA_ADDR_SAMENET:
		return addr_local_match(fam, ca, true);
	default:
		return false;
	}
}

const struct hba_rule *hba_match(const struct hba *h, const struct hba_client *c)
{
	if (!h || !c || !c->database || !c->user)
		return NULL;
	for (size_t i = 0; i < h->count; i++) {
		const struct hba_rule *r = &h->rules[i];
		switch (r->conn) {
		case HBA_CONN_LOCAL:
			if (!c->local)
				continue;
			break;
		case HBA_CONN_HOST:
			if (c->local)
				continue;
			break;
		case HBA_CONN_HOSTSSL:
			if (c->local || !c->tls)
				continue;
			break;
		case HBA_CONN_HOSTNOSSL:
			if (c->local || c->tls)
				continue;
			break;
		}
		if (!db_matches(&r->db, c))
			continue;
		if (!r->user.all && !names_match(&r->user, c->user))
			continue;
		if (r->conn != HBA_CONN_LOCAL && !addr_matches(r, c))
			continue;
		return r;
	}
	return NULL;
}

/* ---- cert and peer ---- */

bool hba_cert_check(SSL *ssl, const char *user, char *why, size_t whylen)
{
	X509 *cert;
	X509_NAME *subj;
	const ASN1_STRING *cn;
	int idx;
	bool ok;

	if (!ssl) {
		snprintf(why, whylen, "no TLS connection");
		return false;
	}
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
	cert = SSL_get1_peer_certificate(ssl);
#else
	cert = SSL_get_peer_certificate(ssl);
#endif
	if (!cert) {
		snprintf(why, whylen, "the client sent no certificate (client_tls_sslmode must be verify-ca or verify-full)");
		return false;
	}
	if (SSL_get_verify_result(ssl) != X509_V_OK) {
		snprintf(why, whylen, "the client certificate did not verify: %s",
			 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
		X509_free(cert);
		return false;
	}
	subj = X509_get_subject_name(cert);
	idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
	if (idx < 0) {
		snprintf(why, whylen, "the client certificate has no common name");
		X509_free(cert);
		return false;
	}
	cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
	ok = cn && (size_t)ASN1_STRING_length(cn) == strlen(user) &&
	     memcmp(ASN1_STRING_get0_data(cn), user, strlen(user)) == 0;
	if (!ok)
		snprintf(why, whylen, "the certificate's common name does not match the user name");
	X509_free(cert);
	return ok;
}

bool hba_peer_check(int fd, const char *user, char *why, size_t whylen)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct passwd pw, *res = NULL;
	char buf[4096];
	int e;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || len != sizeof(cred)) {
		snprintf(why, whylen, "cannot get the peer's credentials: %s", strerror(errno));
		return false;
	}
	e = getpwuid_r(cred.uid, &pw, buf, sizeof(buf), &res);
	if (e != 0 || !res) {
		snprintf(why, whylen, "no OS user name for uid %u", (unsigned)cred.uid);
		return false;
	}
	if (strcmp(pw.pw_name, user) != 0) {
		snprintf(why, whylen, "provided user name (%s) and authenticated user name (%s) do not match", user,
			 pw.pw_name);
		return false;
	}
	return true;
}
