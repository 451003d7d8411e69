/* tls.c — TLS with OpenSSL: the contexts for client connections (parley is the TLS server) and for server connections
 * (parley is the TLS client) built from the *_tls_* settings, and the non-blocking handshake, read and write. */
#include "tls.h"
#include "log.h"
#include <arpa/inet.h>
#include <ctype.h>
#include <strings.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

const char *const tls_mode_names[] = { "disable", "allow", "prefer", "require", "verify-ca", "verify-full", NULL };

/* One leg's context and the mode it was built for; ctx is NULL when the mode is disable. */
struct tls_side {
	SSL_CTX *ctx;            /* owned (one reference); sessions hold their own */
	enum tls_mode mode;
};

static struct tls_side client_side;  /* connections from clients */
static struct tls_side server_side;  /* connections to PostgreSQL */

int tls_mode_parse(const char *text, enum tls_mode *out)
{
	for (int i = 0; tls_mode_names[i]; i++) {
		if (strcasecmp(text, tls_mode_names[i]) == 0) {
			*out = (enum tls_mode)i;
			return 0;
		}
	}
	return -1;
}

enum tls_mode tls_client_mode(void)
{
	return client_side.mode;
}

enum tls_mode tls_server_mode(void)
{
	return server_side.mode;
}

/* Appends OpenSSL's queued errors ("; "-separated) to buf and clears the queue. */
static void ssl_errors(char *buf, size_t len)
{
	unsigned long e;
	size_t used = strlen(buf);
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		ERR_error_string_n(e, one, sizeof(one));
		if (used + 3 < len) {
			snprintf(buf + used, len - used, "%s%s", used ? "; " : "", one);
			used = strlen(buf);
		}
	}
}

/* Parses a *_tls_protocols value into a version range: a list (commas or spaces) of tlsv1.0 (or tlsv1), tlsv1.1,
 * tlsv1.2, tlsv1.3, or the words secure (tlsv1.2 and tlsv1.3), all and legacy (every version). OpenSSL enables a
 * range, so the range spans the oldest to the newest version named. */
static int parse_protocols(const char *text, int *min_ver, int *max_ver, char *err, size_t errlen)
{
	static const struct { const char *name; int lo, hi; } words[] = {
		{ "tlsv1", TLS1_VERSION, TLS1_VERSION }, { "tlsv1.0", TLS1_VERSION, TLS1_VERSION },
		{ "tlsv1.1", TLS1_1_VERSION, TLS1_1_VERSION }, { "tlsv1.2", TLS1_2_VERSION, TLS1_2_VERSION },
		{ "tlsv1.3", TLS1_3_VERSION, TLS1_3_VERSION }, { "secure", TLS1_2_VERSION, TLS1_3_VERSION },
		{ "default", TLS1_2_VERSION, TLS1_3_VERSION }, { "all", TLS1_VERSION, TLS1_3_VERSION },
		{ "legacy", TLS1_VERSION, TLS1_3_VERSION },
	};
	const char *p = text ? text : "";
	int lo = 0, hi = 0;

	while (*p) {
		char word[32];
		size_t n = 0, i;
		while (*p == ',' || *p == ':' || isspace((unsigned char)*p))
			p++;
		if (!*p)
			break;
		while (*p && *p != ',' && *p != ':' && !isspace((unsigned char)*p)) {
			if (n + 1 < sizeof(word))
				word[n++] = *p;
			p++;
		}
		word[n] = '\0';
		for (i = 0; i < ARRAY_SIZE(words); i++)
			if (strcasecmp(word, words[i].name) == 0)
				break;
		if (i == ARRAY_SIZE(words)) {
			snprintf(err, errlen, "unknown TLS protocol \"%s\" (use tlsv1.0, tlsv1.1, tlsv1.2, tlsv1.3, secure, all or legacy)",
				 word);
			return -1;
		}
		if (!lo || words[i].lo < lo)
			lo = words[i].lo;
		if (!hi || words[i].hi > hi)
			hi = words[i].hi;
	}
	if (!lo) {
		lo = TLS1_2_VERSION;   /* empty: the secure default */
		hi = TLS1_3_VERSION;
	}
	*min_ver = lo;
	*max_ver = hi;
	return 0;
}

/* PgBouncer's *_tls_ciphers keywords and the OpenSSL cipher lists they stand for (those of PgBouncer's libusual TLS
 * layer, so a pgbouncer.ini that says "fast" negotiates the same TLS 1.2 cipher under parley). "default" is not among
 * them: in parley it means OpenSSL's own default list. TLS 1.3 suites are not affected by any of these. */
static const struct {
	const char *word;
	const char *list;
} cipher_words[] = {
	{ "secure", "HIGH+EECDH:HIGH+EDH:!SSLv3:!SHA384:!SHA256:!DSS:!aNULL" },
	{ "normal", "HIGH+EECDH:HIGH+EDH:HIGH+RSA:+SHA384:+SHA256:+SSLv3:+EDH:+RSA:-3DES:3DES+RSA:!CAMELLIA:!DSS:!aNULL" },
	{ "fast", "HIGH+EECDH:HIGH+EDH:HIGH+RSA:+AES256:+SHA256:+SHA384:+SSLv3:+EDH:+RSA:-3DES:3DES+RSA:!CAMELLIA:!DSS:!aNULL" },
	{ "compat", "HIGH:+3DES:!aNULL" },
	{ "legacy", "HIGH:+3DES:!aNULL" },
	{ "all", "ALL:!aNULL:!eNULL" },
	{ "insecure", "ALL:!aNULL:!eNULL" },
};

/* The OpenSSL cipher list for a *_tls_ciphers value: a keyword's list, or the value itself. */
static const char *cipher_list(const char *value)
{
	for (size_t i = 0; i < ARRAY_SIZE(cipher_words); i++)
		if (strcasecmp(value, cipher_words[i].word) == 0)
			return cipher_words[i].list;
	return value;
}

/* The settings of one leg, as read from the configuration. */
struct tls_settings {
	const char *prefix;      /* "client_tls" or "server_tls", for messages */
	const char *sslmode, *key_file, *cert_file, *ca_file, *protocols, *ciphers;
};

static bool set(const char *s)
{
	return s && *s;
}

/* Builds one leg's context; *ctx_out is NULL for mode disable. is_server: parley is the TLS server (client leg). */
static int build_ctx(const struct tls_settings *st, bool is_server, SSL_CTX **ctx_out, enum tls_mode *mode_out, char *err,
		     size_t errlen)
{
	enum tls_mode mode;
	SSL_CTX *ctx;
	int lo, hi;
	char why[512] = "";

	*ctx_out = NULL;
	if (tls_mode_parse(st->sslmode ? st->sslmode : "disable", &mode) < 0) {
		snprintf(err, errlen, "%s_sslmode: unknown mode \"%s\"", st->prefix, st->sslmode);
		return -1;
	}
	*mode_out = mode;
	if (mode == TLS_DISABLE)
		return 0;
	if (parse_protocols(st->protocols, &lo, &hi, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s_protocols: %s", st->prefix, why);
		return -1;
	}
	if (is_server && (!set(st->key_file) || !set(st->cert_file))) {
		snprintf(err, errlen, "%s_sslmode = %s needs %s_key_file and %s_cert_file", st->prefix, tls_mode_names[mode],
			 st->prefix, st->prefix);
		return -1;
	}
	if (!is_server && set(st->key_file) != set(st->cert_file)) {
		snprintf(err, errlen, "%s_key_file and %s_cert_file must be set together", st->prefix, st->prefix);
		return -1;
	}
	if (is_server && mode >= TLS_VERIFY_CA && !set(st->ca_file)) {
		snprintf(err, errlen, "%s_sslmode = %s needs %s_ca_file (the CA that signs client certificates)", st->prefix,
			 tls_mode_names[mode], st->prefix);
		return -1;
	}
	ERR_clear_error();
	ctx = SSL_CTX_new(is_server ? TLS_server_method() : TLS_client_method());
	if (!ctx) {
		ssl_errors(why, sizeof(why));
		snprintf(err, errlen, "%s: cannot create a TLS context: %s", st->prefix, why);
		return -1;
	}
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
				 | SSL_OP_IGNORE_UNEXPECTED_EOF
#endif
				 | (is_server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
	/* sock_flush writes from an evbuffer whose front may move between a blocked write and its retry. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (is_server)
		SSL_CTX_set_num_tickets(ctx, 0);
	if (!SSL_CTX_set_min_proto_version(ctx, lo) || !SSL_CTX_set_max_proto_version(ctx, hi)) {
		snprintf(err, errlen, "%s_protocols: this OpenSSL does not support the versions \"%s\"", st->prefix, st->protocols);
		goto fail;
	}
	if (set(st->ciphers) && strcasecmp(st->ciphers, "default") != 0 &&
	    !SSL_CTX_set_cipher_list(ctx, cipher_list(st->ciphers))) {
		snprintf(err, errlen, "%s_ciphers: no usable cipher in \"%s\"", st->prefix, st->ciphers);
		goto fail;
	}
	if (set(st->cert_file)) {
		if (SSL_CTX_use_certificate_chain_file(ctx, st->cert_file) != 1) {
			ssl_errors(why, sizeof(why));
			snprintf(err, errlen, "%s_cert_file: cannot load \"%s\": %s", st->prefix, st->cert_file, why);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, st->key_file, SSL_FILETYPE_PEM) != 1) {
			ssl_errors(why, sizeof(why));
			snprintf(err, errlen, "%s_key_file: cannot load \"%s\": %s", st->prefix, st->key_file, why);
			goto fail;
		}
		if (SSL_CTX_check_private_key(ctx) != 1) {
			snprintf(err, errlen, "%s_key_file \"%s\" does not match %s_cert_file \"%s\"", st->prefix, st->key_file,
				 st->prefix, st->cert_file);
			goto fail;
		}
	}
	if (set(st->ca_file)) {
		if (SSL_CTX_load_verify_locations(ctx, st->ca_file, NULL) != 1) {
			ssl_errors(why, sizeof(why));
			snprintf(err, errlen, "%s_ca_file: cannot load \"%s\": %s", st->prefix, st->ca_file, why);
			goto fail;
		}
	} else if (!is_server && mode >= TLS_VERIFY_CA) {
		SSL_CTX_set_default_verify_paths(ctx);
	}
	if (mode >= TLS_VERIFY_CA) {
		int vm = SSL_VERIFY_PEER;
		if (is_server) {
			STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(st->ca_file);
			if (names)
				SSL_CTX_set_client_CA_list(ctx, names);
			vm |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
		}
		SSL_CTX_set_verify(ctx, vm, NULL);
	} else {
		SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
	}
	ERR_clear_error();
	*ctx_out = ctx;
	return 0;
fail:
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return -1;
}

/* Replaces one leg's context when the new one builds; keeps the old one (and says so) when it does not. */
static int configure_side(struct tls_side *side, const struct tls_settings *st, bool is_server, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	enum tls_mode mode = TLS_DISABLE;
	if (build_ctx(st, is_server, &ctx, &mode, err, errlen) < 0)
		return -1;
	SSL_CTX_free(side->ctx);
	side->ctx = ctx;
	side->mode = mode;
	return 0;
}

int tls_configure(const struct parley_config *cfg, char *err, size_t errlen)
{
	struct tls_settings cs = { "client_tls", cfg->client_tls_sslmode, cfg->client_tls_key_file, cfg->client_tls_cert_file,
				   cfg->client_tls_ca_file, cfg->client_tls_protocols, cfg->client_tls_ciphers };
	struct tls_settings ss = { "server_tls", cfg->server_tls_sslmode, cfg->server_tls_key_file, cfg->server_tls_cert_file,
				   cfg->server_tls_ca_file, cfg->server_tls_protocols, cfg->server_tls_ciphers };
	char e1[768] = "", e2[768] = "";
	int rc1 = configure_side(&client_side, &cs, true, e1, sizeof(e1));
	int rc2 = configure_side(&server_side, &ss, false, e2, sizeof(e2));

	if (rc1 == 0 && rc2 == 0) {
		if (err && errlen)
			err[0] = '\0';
		return 0;
	}
	if (err && errlen)
		snprintf(err, errlen, "%s%s%s", e1, (*e1 && *e2) ? "; " : "", e2);
	return -1;
}

void tls_shutdown(void)
{
	SSL_CTX_free(client_side.ctx);
	SSL_CTX_free(server_side.ctx);
	client_side.ctx = server_side.ctx = NULL;
	client_side.mode = server_side.mode = TLS_DISABLE;
}

SSL *tls_accept_new(int fd)
{
	SSL *ssl;
	char why[512] = "";
	if (!client_side.ctx)
		return NULL;
	ERR_clear_error();
	ssl = SSL_new(client_side.ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1) {
		ssl_errors(why, sizeof(why));
		log_error("cannot start TLS for a client: %s", why);
		SSL_free(ssl);
		return NULL;
	}
	SSL_set_accept_state(ssl);
	return ssl;
}

SSL *tls_connect_new(int fd, const char *host)
{
	SSL *ssl;
	char why[512] = "";
	unsigned char ip[16];
	bool is_ip;

	if (!server_side.ctx)
		return NULL;
	ERR_clear_error();
	ssl = SSL_new(server_side.ctx);
	if (!ssl || SSL_set_fd(ssl, fd) != 1)
		goto fail;
	is_ip = host && (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1);
	/* SNI carries host names only (RFC 6066). */
	if (host && *host && host[0] != '/' && !is_ip && !SSL_set_tlsext_host_name(ssl, host))
		goto fail;
	if (server_side.mode == TLS_VERIFY_FULL) {
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
		if (!host || !*host || host[0] == '/') {
			snprintf(why, sizeof(why), "server_tls_sslmode = verify-full needs a host name or address to check");
			goto fail_msg;
		}
		if (is_ip ? X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1 : X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1)
			goto fail;
	}
	SSL_set_connect_state(ssl);
	return ssl;
fail:
	ssl_errors(why, sizeof(why));
fail_msg:
	log_error("cannot start TLS to server %s: %s", host ? host : "(unix socket)", why);
	SSL_free(ssl);
	return NULL;
}

/* Maps the outcome of an SSL call that returned rc <= 0 to a tls_io, with the reason in err for errors. */
static enum tls_io io_result(SSL *ssl, int rc, char *err, size_t errlen)
{
	int saved = errno;
	int e = SSL_get_error(ssl, rc);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		return TLS_IO_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return TLS_IO_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return TLS_IO_EOF;
	case SSL_ERROR_SYSCALL:
		if (ERR_peek_error() == 0) {
			if (saved == 0 || saved == ECONNRESET || saved == EPIPE)
				return saved == 0 ? TLS_IO_EOF : TLS_IO_ERROR;
			if (saved == EAGAIN || saved == EINTR)
				return TLS_IO_WANT_READ;
			snprintf(err, errlen, "%s", strerror(saved));
			return TLS_IO_ERROR;
		}
		/* fallthrough */
	default: {
		long vr = SSL_get_verify_result(ssl);
		err[0] = '\0';
		if (vr != X509_V_OK)
			snprintf(err, errlen, "certificate verification failed: %s", X509_verify_cert_error_string(vr));
		ssl_errors(err, errlen);
		if (!*err)
			snprintf(err, errlen, "TLS error %d", e);
		return TLS_IO_ERROR;
	}
	}
}

enum tls_io tls_handshake(SSL *ssl, char *err, size_t errlen)
{
	int rc;
	ERR_clear_error();
	errno = 0;
	rc = SSL_do_handshake(ssl);
	if (rc == 1)
		return TLS_IO_OK;
	{
		enum tls_io r = io_result(ssl, rc, err, errlen);
		if (r == TLS_IO_EOF) {
			snprintf(err, errlen, "peer closed the connection during the TLS handshake");
			return TLS_IO_ERROR;
		}
		if (r == TLS_IO_ERROR && !*err)
			snprintf(err, errlen, "connection reset during the TLS handshake");
		return r;
	}
}

enum tls_io tls_read(SSL *ssl, void *buf, size_t len, size_t *done, char *err, size_t errlen)
{
	int rc;
	*done = 0;
	ERR_clear_error();
	errno = 0;
	rc = SSL_read(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (rc > 0) {
		*done = (size_t)rc;
		return TLS_IO_OK;
	}
	err[0] = '\0';
	return io_result(ssl, rc, err, errlen);
}

enum tls_io tls_write(SSL *ssl, const void *buf, size_t len, size_t *done, char *err, size_t errlen)
{
	int rc;
	*done = 0;
	ERR_clear_error();
	errno = 0;
	rc = SSL_write(ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (rc > 0) {
		*done = (size_t)rc;
		return TLS_IO_OK;
	}
	err[0] = '\0';
	return io_result(ssl, rc, err, errlen);
}

void tls_close(SSL *ssl)
{
	if (!ssl)
		return;
	ERR_clear_error();
	if (SSL_is_init_finished(ssl))
		(void)SSL_shutdown(ssl);   /* one non-blocking attempt: the socket closes right after */
	ERR_clear_error();
	SSL_free(ssl);
}

const char *tls_connection_info(SSL *ssl, char *buf, size_t len)
{
	const SSL_CIPHER *cipher;
	EVP_PKEY *key = NULL;
	size_t n;

	if (!len)
		return buf;
	buf[0] = '\0';
	if (!ssl || !SSL_is_init_finished(ssl) || !(cipher = SSL_get_current_cipher(ssl)))
		return buf;
	snprintf(buf, len, "%s/%s", SSL_get_version(ssl), SSL_CIPHER_get_name(cipher));
	n = strlen(buf);
	/* The key exchange, named the way PgBouncer names it. */
	if (!SSL_is_server(ssl)) {
		/* parley is the TLS client: the server's ephemeral key, when it is a classic DH or EC key */
		if (SSL_get_peer_tmp_key(ssl, &key) == 1 && key) {
			int id = EVP_PKEY_get_base_id(key);
			char group[80];
			if (id == EVP_PKEY_DH)
				snprintf(buf + n, len - n, "/DH=%d", EVP_PKEY_get_bits(key));
			else if (id == EVP_PKEY_EC && EVP_PKEY_get_group_name(key, group, sizeof(group), NULL) == 1)
				snprintf(buf + n, len - n, "/ECDH=%s", group);
			EVP_PKEY_free(key);
		}
	} else if (SSL_CIPHER_get_kx_nid(cipher) == NID_kx_ecdhe) {
		/* parley is the TLS server and the suite names ECDHE (TLS 1.2 and older): the group agreed on */
		int nid = SSL_get_shared_group(ssl, 0);
		const char *name = nid > 0 ? OBJ_nid2sn(nid) : NULL;
		if (name)
			snprintf(buf + n, len - n, "/ECDH=%s", name);
	} else if (SSL_CIPHER_get_kx_nid(cipher) == NID_kx_dhe) {
		snprintf(buf + n, len - n, "/DH=?");   /* PgBouncer does not know the size here either */
	}
	return buf;
}

const char *tls_describe(SSL *ssl, char *buf, size_t len)
{
	if (!ssl)
		snprintf(buf, len, "no");
	else
		snprintf(buf, len, "%s/%s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
	return buf;
}
