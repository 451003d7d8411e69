/* scram.c — SCRAM-SHA-256 (RFC 5802/7677) for both sides of parley, and PostgreSQL-style SCRAM secrets. */
#include "auth.h"
#include <limits.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

/*
 * No SASLprep: passwords are used as raw bytes. PostgreSQL does the same for passwords that are not valid UTF-8 and
 * SASLprep leaves plain ASCII unchanged, so secrets agree for ASCII passwords (and for any password whose SCRAM
 * secret PostgreSQL computed itself). Non-ASCII passwords needing normalization may not match PostgreSQL's secret.
 *
 * Like PostgreSQL, the username inside SCRAM ("n=") is ignored by the server and sent empty by the client: the user
 * is the one from the startup packet.
 */

#define SCRAM_RAW_NONCE_LEN 18		/* random bytes in a nonce, as PostgreSQL */
#define SCRAM_SALT_LEN 16		/* salt of secrets parley makes, as PostgreSQL */
#define SCRAM_DEFAULT_ITERATIONS 4096
/* Upper bound on the iteration count a server may ask for: PBKDF2 runs in the event loop. */
#define SCRAM_MAX_ITERATIONS 10000000
#define SCRAM_PREFIX "SCRAM-SHA-256$"

static const char *test_nonce;
static const char *test_username;

void scram_set_test_nonce(const char *nonce)
{
	test_nonce = nonce;
}

void scram_set_test_username(const char *user)
{
	test_username = user;
}

static void PRINTF_LIKE(3, 4) set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

static void free_secret_str(char **s)
{
	if (*s) {
		OPENSSL_cleanse(*s, strlen(*s));
		free(*s);
		*s = NULL;
	}
}

void scram_state_clear(struct scram_state *st)
{
	if (!st)
		return;
	free_secret_str(&st->client_first_bare);
	free_secret_str(&st->server_first);
	free_secret_str(&st->client_final_without_proof);
	free_secret_str(&st->password);
	OPENSSL_cleanse(st, sizeof(*st));	/* zero-fills: the state is reusable afterwards */
}

/* ---- encoding and crypto helpers ---- */

/* Standard base64 with padding into out; returns the length or -1 if out is too small. */
static int b64_encode(const uint8_t *in, size_t len, char *out, size_t outlen)
{
	size_t need = 4 * ((len + 2) / 3) + 1;

	if (need > outlen || len > INT_MAX / 2)
		return -1;
	return EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

/* Strict base64 decode (length a multiple of 4, at most two '=' of padding, no whitespace). EVP_DecodeBlock counts
 * padding as zero bytes, so the padding is subtracted here. Returns the decoded length or -1. */
static int b64_decode(const char *in, size_t inlen, uint8_t *out, size_t outmax)
{
	size_t pad = 0, full, dlen;
	uint8_t *tmp;
	int n;

	if (inlen % 4 != 0 || inlen > INT_MAX / 2)
		return -1;
	if (inlen == 0)
		return 0;
	if (in[inlen - 1] == '=')
		pad = in[inlen - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < inlen - pad; i++)
		if (!b64_char(in[i]))
			return -1;
	full = inlen / 4 * 3;
	dlen = full - pad;
	if (dlen > outmax)
		return -1;
	tmp = xmalloc(full);
	n = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)inlen);
	if (n != (int)full) {
		free(tmp);
		return -1;
	}
	memcpy(out, tmp, dlen);
	OPENSSL_cleanse(tmp, full);
	free(tmp);
	return (int)dlen;
}

static int hmac_sha256(const uint8_t *key, size_t keylen, const void *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	if (keylen > INT_MAX)
		return -1;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &olen) || olen != SCRAM_KEY_LEN)
		return -1;
	return 0;
}

static int sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int olen = 0;

	if (EVP_Digest(data, len, out, &olen, EVP_sha256(), NULL) != 1 || olen != SCRAM_KEY_LEN)
		return -1;
	return 0;
}

/* SaltedPassword = PBKDF2-HMAC-SHA-256(password, salt, iterations); ClientKey = HMAC(SaltedPassword, "Client Key");
 * StoredKey = H(ClientKey); ServerKey = HMAC(SaltedPassword, "Server Key"). client_key may be NULL. */
static int derive_keys(const char *password, const uint8_t *salt, int salt_len, int iterations,
		       uint8_t *client_key, uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN], ck[SCRAM_KEY_LEN];
	size_t pwlen = strlen(password);
	int rc = -1;

	if (pwlen > INT_MAX)
		return -1;
	if (PKCS5_PBKDF2_HMAC(password, (int)pwlen, salt, salt_len, iterations, EVP_sha256(),
			      SCRAM_KEY_LEN, salted) != 1)
		goto out;
	if (hmac_sha256(salted, sizeof(salted), "Client Key", 10, ck) < 0 || sha256(ck, sizeof(ck), stored_key) < 0 ||
	    hmac_sha256(salted, sizeof(salted), "Server Key", 10, server_key) < 0)
		goto out;
	if (client_key)
		memcpy(client_key, ck, SCRAM_KEY_LEN);
	rc = 0;
out:
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(ck, sizeof(ck));
	return rc;
}

/* AuthMessage = client-first-message-bare "," server-first-message "," client-final-message-without-proof. */
static char *auth_message(const struct scram_state *st, size_t *len)
{
	size_t a = strlen(st->client_first_bare), b = strlen(st->server_first);
	size_t c = strlen(st->client_final_without_proof);
	char *m = xmalloc(a + b + c + 3);

	memcpy(m, st->client_first_bare, a);
	m[a] = ',';
	memcpy(m + a + 1, st->server_first, b);
	m[a + 1 + b] = ',';
	memcpy(m + a + b + 2, st->client_final_without_proof, c + 1);
	*len = a + b + c + 2;
	return m;
}

/* HMAC(key, AuthMessage): ClientSignature with StoredKey, ServerSignature with ServerKey. */
static int signature(const struct scram_state *st, const uint8_t key[SCRAM_KEY_LEN], uint8_t out[SCRAM_KEY_LEN])
{
	size_t len;
	char *m = auth_message(st, &len);
	int rc = hmac_sha256(key, SCRAM_KEY_LEN, m, len, out);

	free(m);
	return rc;
}

/* Fresh nonce: 18 random bytes in base64 (24 printable characters, no comma), or the test hook's value. */
static int make_nonce(char *out, size_t outlen)
{
	uint8_t raw[SCRAM_RAW_NONCE_LEN];

	if (test_nonce)
		return strlcpy_ok(out, test_nonce, outlen) ? (int)strlen(out) : -1;
	if (random_bytes(raw, sizeof(raw)) < 0)
		return -1;
	return b64_encode(raw, sizeof(raw), out, outlen);
}

/* RFC 5802 printable: %x21-7E except ','. */
static bool valid_nonce(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < 0x21 || *s > 0x7e || *s == ',')
			return false;
	return true;
}

/* Parses a decimal iteration count (digits only) in [1, max]; returns it or -1. */
static int parse_iterations(const char *s, const char *end, long long max)
{
	long long v = 0;

	if (s == end)
		return -1;
	for (; s < end; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > max)
			return -1;
	}
	return v >= 1 ? (int)v : -1;
}

int scram_parse_secret(const char *secret, int *iterations, uint8_t salt[64], int *salt_len,
		       uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
	const char *p, *colon, *dollar, *colon2;
	int it, n;

	if (!secret || strncmp(secret, SCRAM_PREFIX, strlen(SCRAM_PREFIX)) != 0)
		return -1;
	p = secret + strlen(SCRAM_PREFIX);
	colon = strchr(p, ':');
	if (!colon)
		return -1;
	it = parse_iterations(p, colon, INT_MAX);
	if (it < 0)
		return -1;
	dollar = strchr(colon + 1, '$');
	if (!dollar)
		return -1;
	n = b64_decode(colon + 1, (size_t)(dollar - colon - 1), salt, 64);
	if (n <= 0)
		return -1;
	colon2 = strchr(dollar + 1, ':');
	if (!colon2)
		return -1;
	if (b64_decode(dollar + 1, (size_t)(colon2 - dollar - 1), stored_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN ||
	    b64_decode(colon2 + 1, strlen(colon2 + 1), server_key, SCRAM_KEY_LEN) != SCRAM_KEY_LEN)
		return -1;
	*iterations = it;
	*salt_len = n;
	return 0;
}

int scram_make_secret(const char *password, char *out, size_t outlen)
{
	return scram_make_secret_iter(password, SCRAM_DEFAULT_ITERATIONS, out, outlen);
}

int scram_make_secret_iter(const char *password, int iterations, char *out, size_t outlen)
{
	uint8_t salt[SCRAM_SALT_LEN], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	char bsalt[32], bstored[48], bserver[48];
	int n, rc = -1;

	if (!password || iterations < 1 || random_bytes(salt, sizeof(salt)) < 0)
		return -1;
	if (derive_keys(password, salt, sizeof(salt), iterations, NULL, stored, server) < 0)
		goto out;
	if (b64_encode(salt, sizeof(salt), bsalt, sizeof(bsalt)) < 0 ||
	    b64_encode(stored, sizeof(stored), bstored, sizeof(bstored)) < 0 ||
	    b64_encode(server, sizeof(server), bserver, sizeof(bserver)) < 0)
		goto out;
	n = snprintf(out, outlen, SCRAM_PREFIX "%d:%s$%s:%s", iterations, bsalt, bstored, bserver);
	if (n < 0 || (size_t)n >= outlen) {
		OPENSSL_cleanse(out, outlen);
		goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(stored, sizeof(stored));
	OPENSSL_cleanse(server, sizeof(server));
	OPENSSL_cleanse(bstored, sizeof(bstored));
	OPENSSL_cleanse(bserver, sizeof(bserver));
	return rc;
}

/* ---- message parsing ---- */

/* Cursor over a mutable copy of a SCRAM message; attributes are split in place at commas. */
struct parser {
	char *p;
	bool done;	/* the last attribute has been consumed */
};

/* NUL-terminated heap copy of a protocol message; NULL (with err) if it contains a NUL byte. */
static char *msg_dup(const char *in, size_t len, const char *what, char *err, size_t errlen)
{
	char *m;

	if (!in || memchr(in, '\0', len)) {
		set_err(err, errlen, "malformed SCRAM message (NUL byte in %s)", what);
		return NULL;
	}
	m = xmalloc(len + 1);
	memcpy(m, in, len);
	m[len] = '\0';
	return m;
}

/* Reads "<attr>=<value>" (attr 0: any letter); returns the NUL-terminated value or NULL with err. */
static char *read_attr(struct parser *ps, char attr, const char *what, char *err, size_t errlen)
{
	char *s = ps->p, *v, *end;
	bool letter = (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z');

	if (ps->done || (attr ? *s != attr : !letter) || s[1] != '=') {
		if (attr)
			set_err(err, errlen, "malformed SCRAM message (attribute \"%c\" expected in %s)", attr, what);
		else
			set_err(err, errlen, "malformed SCRAM message (malformed attribute in %s)", what);
		return NULL;
	}
	v = s + 2;
	end = strchr(v, ',');
	if (end) {
		*end = '\0';
		ps->p = end + 1;
	} else {
		ps->p = v + strlen(v);
		ps->done = true;
	}
	return v;
}

/* ---- server side ---- */

/* Loads the salt, iteration count and keys the exchange will use from the user's secret. */
static int server_load_secret(struct scram_state *st, const char *secret, char *err, size_t errlen)
{
	switch (secret_kind(secret)) {
	case SECRET_MD5:
		set_err(err, errlen, "user has an md5 password secret, which cannot be used for SCRAM authentication");
		return -1;
	case SECRET_SCRAM:
		if (scram_parse_secret(secret, &st->iterations, st->salt, &st->salt_len, st->stored_key,
				       st->server_key) < 0) {
			set_err(err, errlen, "invalid SCRAM secret");
			return -1;
		}
		return 0;
	case SECRET_PLAIN:
	default:
		/* A plain password: make up a salt and derive the keys as if a SCRAM secret were stored. */
		st->salt_len = SCRAM_SALT_LEN;
		st->iterations = SCRAM_DEFAULT_ITERATIONS;
		if (random_bytes(st->salt, SCRAM_SALT_LEN) < 0 ||
		    derive_keys(secret, st->salt, st->salt_len, st->iterations, NULL, st->stored_key, st->server_key) < 0) {
			set_err(err, errlen, "could not compute SCRAM keys");
			return -1;
		}
		return 0;
	}
}

int scram_server_first(struct scram_state *st, const char *secret, const char *client_first, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen)
{
	static const char what[] = "client-first-message";
	char *msg, *p, *nonce;
	char snonce[SCRAM_NONCE_MAX], bsalt[96];
	struct parser ps;
	char cbind;
	int n;

	scram_state_clear(st);
	if (!secret) {
		set_err(err, errlen, "no secret for SCRAM authentication");
		return -1;
	}
	msg = msg_dup(client_first, len, what, err, errlen);
	if (!msg)
		return -1;
	p = msg;
	/* gs2-header: cbind-flag "," [authzid] "," */
	switch (*p) {
	case 'n':
	case 'y':
		/* "y" means the client could do channel binding but thinks we cannot. Once parley supports TLS and
		 * advertises SCRAM-SHA-256-PLUS, "y" over TLS must be rejected as a downgrade (as PostgreSQL does). */
		cbind = *p++;
		break;
	case 'p':
		set_err(err, errlen, "client requires SCRAM channel binding, which parley does not support");
		goto fail;
	default:
		set_err(err, errlen, "malformed SCRAM message (unexpected channel-binding flag in %s)", what);
		goto fail;
	}
	if (*p != ',') {
		set_err(err, errlen, "malformed SCRAM message (comma expected after channel-binding flag)");
		goto fail;
	}
	p++;
	if (*p == 'a') {
		set_err(err, errlen, "client uses an authorization identity, which is not supported");
		goto fail;
	}
	if (*p != ',') {
		set_err(err, errlen, "malformed SCRAM message (comma expected after gs2 header)");
		goto fail;
	}
	p++;
	st->client_first_bare = xstrdup(p);
	if (p[0] == 'm' && p[1] == '=') {
		set_err(err, errlen, "client requires an unsupported SCRAM extension");
		goto fail;
	}
	ps.p = p;
	ps.done = false;
	if (!read_attr(&ps, 'n', what, err, errlen))	/* username: ignored, the startup packet's user counts */
		goto fail;
	nonce = read_attr(&ps, 'r', what, err, errlen);
	if (!nonce)
		goto fail;
	if (!valid_nonce(nonce)) {
		set_err(err, errlen, "malformed SCRAM message (invalid nonce in %s)", what);
		goto fail;
	}
	while (!ps.done)	/* optional extensions: ignored */
		if (!read_attr(&ps, 0, what, err, errlen))
			goto fail;
	if (make_nonce(snonce, sizeof(snonce)) < 0) {
		set_err(err, errlen, "could not generate SCRAM nonce");
		goto fail;
	}
	if (!strlcpy_ok(st->client_nonce, nonce, sizeof(st->client_nonce)) ||
	    strlen(nonce) + strlen(snonce) >= sizeof(st->server_nonce)) {
		set_err(err, errlen, "malformed SCRAM message (client nonce too long)");
		goto fail;
	}
	memcpy(st->server_nonce, nonce, strlen(nonce));	/* lengths checked just above */
	memcpy(st->server_nonce + strlen(nonce), snonce, strlen(snonce) + 1);
	if (server_load_secret(st, secret, err, errlen) < 0)
		goto fail;
	if (b64_encode(st->salt, (size_t)st->salt_len, bsalt, sizeof(bsalt)) < 0) {
		set_err(err, errlen, "invalid SCRAM salt");
		goto fail;
	}
	n = snprintf(out, outlen, "r=%s,s=%s,i=%d", st->server_nonce, bsalt, st->iterations);
	if (n < 0 || (size_t)n >= outlen) {
		set_err(err, errlen, "SCRAM server-first-message too long");
		goto fail;
	}
	st->server_first = xstrdup(out);
	st->cbind_flag = cbind;
	free(msg);
	return n;
fail:
	free(msg);
	scram_state_clear(st);
	return -1;
}

int scram_server_final(struct scram_state *st, const char *client_final, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen)
{
	static const char what[] = "client-final-message";
	char *msg = NULL, *cb, *nonce, *proof_b64;
	uint8_t cbind[16], proof[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];
	char bsig[48];
	struct parser ps;
	size_t wo_len;
	int n, rc = -1;

	if (!st->server_first || !st->client_first_bare || st->client_final_without_proof) {
		set_err(err, errlen, "SCRAM exchange out of sequence");
		return -1;
	}
	msg = msg_dup(client_final, len, what, err, errlen);
	if (!msg)
		goto out;
	ps.p = msg;
	ps.done = false;
	cb = read_attr(&ps, 'c', what, err, errlen);
	if (!cb)
		goto out;
	n = b64_decode(cb, strlen(cb), cbind, sizeof(cbind));
	if (n != 3 || cbind[0] != (uint8_t)st->cbind_flag || cbind[1] != ',' || cbind[2] != ',') {
		set_err(err, errlen, "SCRAM channel-binding check failed (unexpected \"c\" attribute in %s)", what);
		goto out;
	}
	nonce = read_attr(&ps, 'r', what, err, errlen);
	if (!nonce)
		goto out;
	if (strcmp(nonce, st->server_nonce) != 0) {
		set_err(err, errlen, "SCRAM nonce mismatch in %s", what);
		goto out;
	}
	for (;;) {	/* extensions until the proof, which must come last */
		if (ps.done) {
			set_err(err, errlen, "malformed SCRAM message (proof missing in %s)", what);
			goto out;
		}
		if (ps.p[0] == 'p' && ps.p[1] == '=')
			break;
		if (!read_attr(&ps, 0, what, err, errlen))
			goto out;
	}
	wo_len = (size_t)(ps.p - msg) - 1;	/* up to the comma before "p=" */
	proof_b64 = read_attr(&ps, 'p', what, err, errlen);
	if (!proof_b64)
		goto out;
	if (!ps.done) {
		set_err(err, errlen, "malformed SCRAM message (garbage at end of %s)", what);
		goto out;
	}
	if (b64_decode(proof_b64, strlen(proof_b64), proof, sizeof(proof)) != SCRAM_KEY_LEN) {
		set_err(err, errlen, "malformed SCRAM message (malformed proof in %s)", what);
		goto out;
	}
	st->client_final_without_proof = xmalloc(wo_len + 1);
	memcpy(st->client_final_without_proof, client_final, wo_len);
	st->client_final_without_proof[wo_len] = '\0';

	/* ClientKey = ClientProof XOR ClientSignature; the proof is good if H(ClientKey) == StoredKey. */
	if (signature(st, st->stored_key, sig) < 0) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		st->client_key[i] = proof[i] ^ sig[i];
	if (sha256(st->client_key, SCRAM_KEY_LEN, stored) < 0) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	if (CRYPTO_memcmp(stored, st->stored_key, SCRAM_KEY_LEN) != 0) {
		set_err(err, errlen, "invalid SCRAM proof (wrong password)");
		goto out;
	}
	st->have_client_key = true;
	if (signature(st, st->server_key, sig) < 0 || b64_encode(sig, sizeof(sig), bsig, sizeof(bsig)) < 0) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	n = snprintf(out, outlen, "v=%s", bsig);
	if (n < 0 || (size_t)n >= outlen) {
		set_err(err, errlen, "SCRAM server-final-message too long");
		goto out;
	}
	rc = n;
out:
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(stored, sizeof(stored));
	free(msg);
	if (rc < 0)
		scram_state_clear(st);	/* a failed exchange cannot be continued */
	return rc;
}

/* ---- client side ---- */

/* Writes s escaped as a SCRAM saslname ("=" -> "=3D", "," -> "=2C"); returns false if it does not fit. */
static bool escape_saslname(const char *s, char *out, size_t outlen)
{
	size_t o = 0;

	for (; *s; s++) {
		const char *rep = *s == '=' ? "=3D" : *s == ',' ? "=2C" : NULL;
		size_t l = rep ? 3 : 1;
		if (o + l >= outlen)
			return false;
		if (rep)
			memcpy(out + o, rep, 3);
		else
			out[o] = *s;
		o += l;
	}
	out[o] = '\0';
	return true;
}

/* Writes the client-first-message (a new nonce, the user name) into out and keeps its bare part in st; its length,
 * or -1. */
static int client_first_message(struct scram_state *st, char *out, size_t outlen)
{
	char user[256];
	int n;

	if (make_nonce(st->client_nonce, sizeof(st->client_nonce)) < 0 || !valid_nonce(st->client_nonce))
		return -1;
	if (!escape_saslname(test_username ? test_username : "", user, sizeof(user)))
		return -1;
	n = snprintf(out, outlen, "n,,n=%s,r=%s", user, st->client_nonce);
	if (n < 0 || (size_t)n >= outlen)
		return -1;
	st->client_first_bare = xstrdup(out + 3);
	return n;
}

int scram_client_first(struct scram_state *st, const char *password, char *out, size_t outlen)
{
	int n;

	scram_state_clear(st);
	if (!password)
		return -1;
	n = client_first_message(st, out, outlen);
	if (n < 0) {
		scram_state_clear(st);
		return -1;
	}
	st->password = xstrdup(password);
	return n;
}

int scram_client_first_with_key(struct scram_state *st, const char *secret, const uint8_t client_key[SCRAM_KEY_LEN],
				char *out, size_t outlen)
{
	uint8_t stored[SCRAM_KEY_LEN];
	int n;

	scram_state_clear(st);
	if (!secret || !client_key)
		return -1;
	/* The secret's salt and iteration count are kept to compare with the server's in scram_client_final. */
	if (scram_parse_secret(secret, &st->iterations, st->salt, &st->salt_len, st->stored_key, st->server_key) < 0)
		goto fail;
	/* The key must belong to the secret: StoredKey = H(ClientKey). */
	if (sha256(client_key, SCRAM_KEY_LEN, stored) < 0 || CRYPTO_memcmp(stored, st->stored_key, SCRAM_KEY_LEN) != 0)
		goto fail;
	memcpy(st->client_key, client_key, SCRAM_KEY_LEN);
	st->have_client_key = true;
	st->keys_preset = true;
	n = client_first_message(st, out, outlen);
	if (n < 0)
		goto fail;
	OPENSSL_cleanse(stored, sizeof(stored));
	return n;
fail:
	OPENSSL_cleanse(stored, sizeof(stored));
	scram_state_clear(st);
	return -1;
}

int scram_client_final(struct scram_state *st, const char *server_first, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen)
{
	static const char what[] = "server-first-message";
	char *msg, *nonce, *salt_b64, *iter;
	uint8_t sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN], salt[sizeof(st->salt)];
	char bproof[48];
	struct parser ps;
	size_t cn_len = strlen(st->client_nonce);
	int n, salt_len, iterations, rc = -1;

	if ((!st->password && !st->keys_preset) || !st->client_first_bare || st->server_first) {
		set_err(err, errlen, "SCRAM exchange out of sequence");
		return -1;
	}
	msg = msg_dup(server_first, len, what, err, errlen);
	if (!msg)
		return -1;
	if (msg[0] == 'm' && msg[1] == '=') {
		set_err(err, errlen, "server requires an unsupported SCRAM extension");
		goto out;
	}
	ps.p = msg;
	ps.done = false;
	nonce = read_attr(&ps, 'r', what, err, errlen);
	if (!nonce)
		goto out;
	if (strlen(nonce) <= cn_len || memcmp(nonce, st->client_nonce, cn_len) != 0 || !valid_nonce(nonce)) {
		set_err(err, errlen, "invalid SCRAM response (nonce mismatch)");
		goto out;
	}
	if (!strlcpy_ok(st->server_nonce, nonce, sizeof(st->server_nonce))) {
		set_err(err, errlen, "malformed SCRAM message (server nonce too long)");
		goto out;
	}
	salt_b64 = read_attr(&ps, 's', what, err, errlen);
	if (!salt_b64)
		goto out;
	salt_len = b64_decode(salt_b64, strlen(salt_b64), salt, sizeof(salt));
	if (salt_len <= 0) {
		set_err(err, errlen, "malformed SCRAM message (invalid salt in %s)", what);
		goto out;
	}
	iter = read_attr(&ps, 'i', what, err, errlen);
	if (!iter)
		goto out;
	iterations = parse_iterations(iter, iter + strlen(iter), SCRAM_MAX_ITERATIONS);
	if (iterations < 0) {
		set_err(err, errlen, "malformed SCRAM message (invalid iteration count in %s)", what);
		goto out;
	}
	if (!ps.done) {
		set_err(err, errlen, "malformed SCRAM message (garbage at end of %s)", what);
		goto out;
	}
	if (st->keys_preset) {
		/* The keys come from a stored secret: they fit only if the server stores that same secret. */
		if (salt_len != st->salt_len || memcmp(salt, st->salt, (size_t)salt_len) != 0 ||
		    iterations != st->iterations) {
			set_err(err, errlen, "the server's SCRAM secret differs from the one in auth_file "
					     "(salt or iteration count do not match)");
			goto out;
		}
	} else {
		memcpy(st->salt, salt, (size_t)salt_len);
		st->salt_len = salt_len;
		st->iterations = iterations;
		if (derive_keys(st->password, st->salt, st->salt_len, st->iterations, st->client_key, st->stored_key,
				st->server_key) < 0) {
			set_err(err, errlen, "could not compute SCRAM keys");
			goto out;
		}
		st->have_client_key = true;
		free_secret_str(&st->password);	/* the keys are all we need from now on */
	}

	st->server_first = msg_dup(server_first, len, what, err, errlen);	/* cannot fail: checked above */
	n = snprintf(NULL, 0, "c=biws,r=%s", st->server_nonce);
	st->client_final_without_proof = xmalloc((size_t)n + 1);
	snprintf(st->client_final_without_proof, (size_t)n + 1, "c=biws,r=%s", st->server_nonce);

	/* ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage) */
	if (signature(st, st->stored_key, sig) < 0) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	for (int i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] = st->client_key[i] ^ sig[i];
	if (b64_encode(proof, sizeof(proof), bproof, sizeof(bproof)) < 0)
		goto out;
	n = snprintf(out, outlen, "%s,p=%s", st->client_final_without_proof, bproof);
	if (n < 0 || (size_t)n >= outlen) {
		set_err(err, errlen, "SCRAM client-final-message too long");
		goto out;
	}
	rc = n;
out:
	OPENSSL_cleanse(sig, sizeof(sig));
	OPENSSL_cleanse(proof, sizeof(proof));
	OPENSSL_cleanse(bproof, sizeof(bproof));
	free(msg);
	return rc;
}

int scram_client_verify(struct scram_state *st, const char *server_final, size_t len, char *err, size_t errlen)
{
	static const char what[] = "server-final-message";
	char *msg, *v;
	uint8_t got[SCRAM_KEY_LEN], want[SCRAM_KEY_LEN];
	struct parser ps;
	int rc = -1;

	if (!st->have_client_key || !st->client_final_without_proof || !st->server_first) {
		set_err(err, errlen, "SCRAM exchange out of sequence");
		return -1;
	}
	msg = msg_dup(server_final, len, what, err, errlen);
	if (!msg)
		return -1;
	if (msg[0] == 'e' && msg[1] == '=') {
		set_err(err, errlen, "server reported SCRAM error: %s", msg + 2);
		goto out;
	}
	ps.p = msg;
	ps.done = false;
	v = read_attr(&ps, 'v', what, err, errlen);
	if (!v)
		goto out;
	if (!ps.done) {
		set_err(err, errlen, "malformed SCRAM message (garbage at end of %s)", what);
		goto out;
	}
	if (b64_decode(v, strlen(v), got, sizeof(got)) != SCRAM_KEY_LEN) {
		set_err(err, errlen, "malformed SCRAM message (malformed server signature)");
		goto out;
	}
	if (signature(st, st->server_key, want) < 0) {
		set_err(err, errlen, "SCRAM computation failed");
		goto out;
	}
	if (CRYPTO_memcmp(got, want, SCRAM_KEY_LEN) != 0) {
		set_err(err, errlen, "incorrect server signature");
		goto out;
	}
	rc = 0;
out:
	OPENSSL_cleanse(want, sizeof(want));
	free(msg);
	return rc;
}
