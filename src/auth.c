/* auth.c — auth_file (PgBouncer userlist.txt) loading, secret classification, md5 password auth and random bytes. */
#include "auth.h"
#include "log.h"
#include <limits.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define MD5_SECRET_LEN 35	/* "md5" + 32 hex digits */

static void PRINTF_LIKE(3, 4) set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* ---- auth_file ---- */

void auth_user_destroy(struct auth_user *u)
{
	OPENSSL_cleanse(u->scram_client_key, sizeof(u->scram_client_key));
	if (u->secret) {
		OPENSSL_cleanse(u->secret, strlen(u->secret));
		free(u->secret);
	}
	free(u->name);
	free(u);
}

void auth_users_free(struct auth_user **users)
{
	struct auth_user *u, *tmp;

	HASH_ITER(hh, *users, u, tmp) {
		HASH_DEL(*users, u);
		auth_user_destroy(u);
	}
	*users = NULL;
}

struct auth_user *auth_user_find(struct auth_user *users, const char *name)
{
	struct auth_user *u = NULL;

	if (!name)
		return NULL;
	HASH_FIND_STR(users, name, u);
	return u;
}

bool auth_user_remember_scram_key(struct auth_user *users, const char *name, const char *secret,
				  const uint8_t client_key[SCRAM_KEY_LEN])
{
	struct auth_user *u = auth_user_find(users, name);
	bool news;

	if (!u || !secret || strcmp(u->secret, secret) != 0 || secret_kind(secret) != SECRET_SCRAM)
		return false;
	news = !u->has_scram_client_key || CRYPTO_memcmp(u->scram_client_key, client_key, SCRAM_KEY_LEN) != 0;
	memcpy(u->scram_client_key, client_key, SCRAM_KEY_LEN);
	u->has_scram_client_key = true;
	return news;
}

void auth_users_carry_scram_keys(struct auth_user *fresh, const struct auth_user *old)
{
	const struct auth_user *o, *tmp;

	HASH_ITER(hh, old, o, tmp) {
		struct auth_user *u;
		if (!o->has_scram_client_key)
			continue;
		u = auth_user_find(fresh, o->name);
		if (u && strcmp(u->secret, o->secret) == 0) {
			memcpy(u->scram_client_key, o->scram_client_key, SCRAM_KEY_LEN);
			u->has_scram_client_key = true;
		}
	}
}

/* Reads one double-quoted field at *pp ("" inside stands for one quote). On success returns a heap copy of the
 * unescaped content and leaves *pp after the closing quote; returns NULL if the closing quote is missing. */
static char *read_quoted(const char **pp)
{
	const char *p = *pp + 1;	/* skip the opening quote */
	char *out = xmalloc(strlen(p) + 1), *o = out;

	for (;;) {
		if (*p == '\0') {
			OPENSSL_cleanse(out, (size_t)(o - out));
			free(out);
			return NULL;
		}
		if (*p == '"') {
			if (p[1] != '"')
				break;
			p++;	/* doubled quote: emit one */
		}
		*o++ = *p++;
	}
	*o = '\0';
	*pp = p + 1;
	return out;
}

static const char *skip_blanks(const char *p)
{
	while (*p == ' ' || *p == '\t')
		p++;
	return p;
}

/* Parses one line (already stripped of its line terminator). Returns 1 with *name and *secret set for an entry,
 * 0 for a blank or comment line, -1 with *why set for a malformed line. */
static int parse_line(const char *line, char **name, char **secret, const char **why)
{
	const char *p = skip_blanks(line);

	*name = *secret = NULL;
	if (*p == '\0' || *p == ';' || *p == '#')
		return 0;
	if (*p != '"') {
		*why = "expected a double-quoted user name";
		return -1;
	}
	*name = read_quoted(&p);
	if (!*name) {
		*why = "unterminated quoted user name";
		return -1;
	}
	if (**name == '\0') {
		*why = "empty user name";
		goto fail;
	}
	p = skip_blanks(p);
	if (*p == '\0') {
		*why = "missing password after the user name";
		goto fail;
	}
	if (*p != '"') {
		*why = "expected a double-quoted password after the user name";
		goto fail;
	}
	*secret = read_quoted(&p);
	if (!*secret) {
		*why = "unterminated quoted password";
		goto fail;
	}
	/* Anything after the second field is ignored, as PgBouncer does. */
	return 1;
fail:
	free(*name);
	*name = NULL;
	return -1;
}

int auth_file_load(const char *path, struct auth_user **users, char *err, size_t errlen)
{
	struct auth_user *table = NULL, *u;
	FILE *fp;
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int lineno = 0;
	int rc = 0;

	fp = fopen(path, "r");
	if (!fp) {
		set_err(err, errlen, "cannot open auth_file %s: %s", path, strerror(errno));
		return -1;
	}
	while ((n = getline(&line, &cap, fp)) >= 0) {
		char *name, *secret;
		const char *why = NULL;
		int r;

		lineno++;
		if (n > 0 && line[n - 1] == '\n')
			line[--n] = '\0';
		if (n > 0 && line[n - 1] == '\r')
			line[--n] = '\0';
		if (strlen(line) != (size_t)n) {
			set_err(err, errlen, "%s:%d: line contains a NUL byte", path, lineno);
			rc = -1;
			break;
		}
		r = parse_line(line, &name, &secret, &why);
		if (r < 0) {
			set_err(err, errlen, "%s:%d: %s", path, lineno, why);
			rc = -1;
			break;
		}
		if (r == 0)
			continue;
		u = auth_user_find(table, name);
		if (u) {
			/* Duplicate user: the last line wins (no key can have been learned yet). */
			OPENSSL_cleanse(u->secret, strlen(u->secret));
			free(u->secret);
			u->secret = secret;
			free(name);
			continue;
		}
		u = xcalloc(1, sizeof(*u));
		u->name = name;
		u->secret = secret;
		HASH_ADD_KEYPTR(hh, table, u->name, strlen(u->name), u);
	}
	if (rc == 0 && ferror(fp)) {
		set_err(err, errlen, "%s: read error: %s", path, strerror(errno));
		rc = -1;
	}
	if (line) {
		OPENSSL_cleanse(line, cap);
		free(line);
	}
	fclose(fp);
	if (rc < 0) {
		auth_users_free(&table);
		return -1;
	}
	*users = table;
	return 0;
}

/* ---- secrets and md5 ---- */

enum secret_kind secret_kind(const char *secret)
{
	int iterations, salt_len;
	uint8_t salt[64], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	enum secret_kind kind = SECRET_PLAIN;

	if (!secret)
		return SECRET_PLAIN;
	/* Same rules as PostgreSQL's get_password_type(): lowercase hex only for md5; a SCRAM secret must parse. */
	if (strncmp(secret, "md5", 3) == 0 && strlen(secret) == MD5_SECRET_LEN &&
	    strspn(secret + 3, "0123456789abcdef") == MD5_SECRET_LEN - 3)
		return SECRET_MD5;
	if (strncmp(secret, "SCRAM-SHA-256$", 14) == 0 &&
	    scram_parse_secret(secret, &iterations, salt, &salt_len, stored, server) == 0)
		kind = SECRET_SCRAM;
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	return kind;
}

/* out = "md5" + hex(md5(a || b)). On digest failure (e.g. MD5 disabled by a FIPS provider) out is all zeros, which
 * never equals a valid response or secret. */
static void md5_hex2(const void *a, size_t alen, const void *b, size_t blen, char out[36])
{
	static const char hex[] = "0123456789abcdef";
	uint8_t dig[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 && EVP_DigestUpdate(ctx, a, alen) == 1 &&
		  EVP_DigestUpdate(ctx, b, blen) == 1 && EVP_DigestFinal_ex(ctx, dig, &dlen) == 1 && dlen == 16;

	EVP_MD_CTX_free(ctx);
	memset(out, 0, 36);
	if (!ok) {
		log_error("MD5 digest failed (is MD5 disabled in OpenSSL?)");
		return;
	}
	memcpy(out, "md5", 3);
	for (int i = 0; i < 16; i++) {
		out[3 + 2 * i] = hex[dig[i] >> 4];
		out[4 + 2 * i] = hex[dig[i] & 15];
	}
	out[MD5_SECRET_LEN] = '\0';
	OPENSSL_cleanse(dig, sizeof(dig));
}

void md5_password_hash(const char *password, const char *user, char out[36])
{
	md5_hex2(password, strlen(password), user, strlen(user), out);
}

void md5_salted_response(const char *md5secret, const uint8_t salt[4], char out[36])
{
	if (strlen(md5secret) < MD5_SECRET_LEN) {
		memset(out, 0, 36);
		return;
	}
	md5_hex2(md5secret + 3, MD5_SECRET_LEN - 3, salt, 4, out);
}

bool md5_check_response(const char *secret, const char *user, const uint8_t salt[4], const char *response)
{
	char hash[36], expect[36];
	bool ok;

	if (!secret || !user || !response)
		return false;
	switch (secret_kind(secret)) {
	case SECRET_PLAIN:
		md5_password_hash(secret, user, hash);
		break;
	case SECRET_MD5:
		memcpy(hash, secret, MD5_SECRET_LEN + 1);
		break;
	case SECRET_SCRAM:
	default:
		return false;
	}
	md5_salted_response(hash, salt, expect);
	ok = strlen(expect) == MD5_SECRET_LEN && strlen(response) == MD5_SECRET_LEN &&
	     CRYPTO_memcmp(expect, response, MD5_SECRET_LEN) == 0;
	OPENSSL_cleanse(hash, sizeof(hash));
	OPENSSL_cleanse(expect, sizeof(expect));
	return ok;
}

int random_bytes(void *buf, size_t len)
{
	if (len > INT_MAX)
		return -1;
	if (len == 0)
		return 0;
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}
