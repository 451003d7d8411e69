/* tls.h — TLS on both legs: SSL contexts built from the configuration (rebuilt on reload), and the per-socket
 * handshake, read and write that sock_read and sock_flush use when a socket carries TLS. */
#ifndef PARLEY_TLS_H
#define PARLEY_TLS_H
#include "config.h"
#include <openssl/ssl.h>

/* client_tls_sslmode / server_tls_sslmode, in increasing strictness (the order matters: >= TLS_REQUIRE means
 * "TLS is mandatory"). */
enum tls_mode { TLS_DISABLE, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };

/* The accepted spellings of the modes, NULL-terminated (the settings table uses it). */
extern const char *const tls_mode_names[];

/* Parses a mode name (case-insensitive); -1 if unknown. */
int tls_mode_parse(const char *text, enum tls_mode *out) MUST_CHECK;

/* Builds the contexts for client connections (parley as the TLS server) and server connections (parley as the TLS
 * client) from cfg. A side whose new context cannot be built keeps the context (and mode) it had, and the reason is
 * logged; at startup there is nothing to keep, so the caller should stop. Returns 0 when both sides were built, -1
 * (with "client_tls_...: why" or "server_tls_...: why" in err) when a side failed. */
int tls_configure(const struct parley_config *cfg, char *err, size_t errlen) MUST_CHECK;

/* Frees the contexts (connections still using them keep their own reference). */
void tls_shutdown(void);

/* Modes in effect (those of the contexts last built successfully). */
enum tls_mode tls_client_mode(void);
enum tls_mode tls_server_mode(void);

/* A new TLS session for an accepted client on fd (server role), or NULL (logged) when client TLS is off or fails. */
SSL *tls_accept_new(int fd);
/* A new TLS session to a server on fd (client role); host is the configured server host (SNI, and the name or IP
 * address checked with verify-full; NULL for a unix socket). NULL (logged) on failure. */
SSL *tls_connect_new(int fd, const char *host);

/* Results of the non-blocking operations below. */
enum tls_io { TLS_IO_OK, TLS_IO_WANT_READ, TLS_IO_WANT_WRITE, TLS_IO_EOF, TLS_IO_ERROR };

/* Advances the handshake. TLS_IO_OK once it is complete; on TLS_IO_ERROR, err holds the reason. */
enum tls_io tls_handshake(SSL *ssl, char *err, size_t errlen);
/* SSL_read/SSL_write of at most len bytes: TLS_IO_OK with *done > 0, or why nothing moved. */
enum tls_io tls_read(SSL *ssl, void *buf, size_t len, size_t *done, char *err, size_t errlen);
enum tls_io tls_write(SSL *ssl, const void *buf, size_t len, size_t *done, char *err, size_t errlen);
/* Sends close_notify without waiting for the peer's, then frees the session. */
void tls_close(SSL *ssl);
/* "TLSv1.3/TLS_AES_256_GCM_SHA384" for logs ("no" without TLS). */
const char *tls_describe(SSL *ssl, char *buf, size_t len);
/* The tls column of SHOW CLIENTS / SHOW SERVERS, as PgBouncer writes it: "TLSv1.3/TLS_AES_256_GCM_SHA384", followed by
 * the key exchange where OpenSSL reports one ("TLSv1.2/ECDHE-ECDSA-CHACHA20-POLY1305/ECDH=X25519"); empty without TLS or
 * while the handshake is still running. */
const char *tls_connection_info(SSL *ssl, char *buf, size_t len);

#endif
