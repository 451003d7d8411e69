/* auth.h — client and server authentication: auth_file (userlist.txt), md5, SCRAM-SHA-256 (server and client side). */
#ifndef PARLEY_AUTH_H
#define PARLEY_AUTH_H
#include "common.h"
#include <uthash.h>

#define SCRAM_KEY_LEN 32

/* One line of auth_file: "user" "secret". */
struct auth_user {
	char *name;
	char *secret;            /* plain password, "md5<32 hex>" or "SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>" */
	/* SCRAM pass-through (as PgBouncer): the ClientKey of a SCRAM secret cannot be computed from the secret, but a
	 * client that proves it knows the password reveals it (ClientProof XOR ClientSignature). With it parley can
	 * log into a PostgreSQL that demands SCRAM for this user, as long as PostgreSQL stores the same secret. */
	uint8_t scram_client_key[SCRAM_KEY_LEN];
	bool has_scram_client_key; /* scram_client_key is valid for the current secret */
	UT_hash_handle hh;       /* keyed by name; owned by the hash head given to auth_file_load */
};

enum secret_kind { SECRET_PLAIN, SECRET_MD5, SECRET_SCRAM };

/* Parses a PgBouncer userlist.txt. On success replaces *users (freeing nothing: caller frees the old one) and returns 0;
 * on error returns -1 with "FILE:LINE: message" in err. */
int auth_file_load(const char *path, struct auth_user **users, char *err, size_t errlen) MUST_CHECK;
void auth_users_free(struct auth_user **users);
/* Frees one entry (not in a table any more), wiping its secret and SCRAM key first. */
void auth_user_destroy(struct auth_user *u);
struct auth_user *auth_user_find(struct auth_user *users, const char *name);
/* Remembers the ClientKey a client revealed while authenticating as name against secret (a SCRAM secret). Ignored
 * when the user is gone or its secret changed meanwhile (auth_file reload). Returns true if the user had no key
 * (or another one) before, i.e. server logins that failed for want of it may now succeed. */
bool auth_user_remember_scram_key(struct auth_user *users, const char *name, const char *secret,
				  const uint8_t client_key[SCRAM_KEY_LEN]);
/* After an auth_file reload: keeps the learned ClientKeys of users whose secret did not change. */
void auth_users_carry_scram_keys(struct auth_user *fresh, const struct auth_user *old);

/* Classifies a stored secret (a valid md5 secret is "md5" + 32 lowercase hex digits). */
enum secret_kind secret_kind(const char *secret);

/* "md5" + hex(md5(password || user)), NUL-terminated, into out[36]. */
void md5_password_hash(const char *password, const char *user, char out[36]);
/* The PasswordMessage a client sends for MD5 auth: "md5" + hex(md5(hex_part_of(md5secret) || salt)), into out[36].
 * md5secret is an "md5..." secret as produced by md5_password_hash. */
void md5_salted_response(const char *md5secret, const uint8_t salt[4], char out[36]);
/* Checks a client's md5 response against a stored plain or md5 secret. SCRAM secrets always fail. */
bool md5_check_response(const char *secret, const char *user, const uint8_t salt[4], const char *response);

#define SCRAM_NONCE_MAX 128

/* State of one SCRAM-SHA-256 exchange, either side. Zero-initialize before use; scram_state_clear() wipes it. */
struct scram_state {
	char client_nonce[SCRAM_NONCE_MAX];
	char server_nonce[SCRAM_NONCE_MAX];  /* full combined nonce (client + server part) */
	char *client_first_bare;             /* heap */
	char *server_first;                  /* heap */
	char *client_final_without_proof;    /* heap */
	uint8_t salt[64];
	int salt_len;
	int iterations;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	uint8_t client_key[SCRAM_KEY_LEN];   /* client side, or learned from a proof on the server side */
	bool have_client_key;
	bool keys_preset;                    /* client side: keys from a secret + learned ClientKey, not a password */
	char *password;                      /* client side only, heap */
	char cbind_flag;                     /* server side: gs2 cbind flag the client sent ('n' or 'y') */
};

/* Server side (parley authenticating a client). secret: plain or SCRAM secret of the user.
 * scram_server_first: consumes the SASLInitialResponse data (client-first-message), writes the server-first-message
 * into out, returns its length or -1 (malformed / unsupported secret; err says why). */
int scram_server_first(struct scram_state *st, const char *secret, const char *client_first, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen) MUST_CHECK;
/* Consumes client-final-message; on a valid proof writes server-final-message ("v=...") into out and returns its
 * length; returns -1 if the proof is wrong or the message malformed. */
int scram_server_final(struct scram_state *st, const char *client_final, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen) MUST_CHECK;

/* Client side (parley logging into PostgreSQL with a plain password). */
int scram_client_first(struct scram_state *st, const char *password, char *out, size_t outlen) MUST_CHECK;
int scram_client_final(struct scram_state *st, const char *server_first, size_t len,
		       char *out, size_t outlen, char *err, size_t errlen) MUST_CHECK;
/* Client side with a SCRAM secret instead of a password (SCRAM pass-through): client_key must be the ClientKey that
 * belongs to secret (learned from a client's proof). The server's salt and iteration count must then be those of
 * secret, which scram_client_final checks. Continue with scram_client_final and scram_client_verify as usual. */
int scram_client_first_with_key(struct scram_state *st, const char *secret, const uint8_t client_key[SCRAM_KEY_LEN],
				char *out, size_t outlen) MUST_CHECK;
/* Verifies the server signature in server-final-message. Returns 0 if valid. */
int scram_client_verify(struct scram_state *st, const char *server_final, size_t len, char *err, size_t errlen) MUST_CHECK;

/* Builds a SCRAM-SHA-256 secret (random 16-byte salt, 4096 iterations) as PostgreSQL stores it. Returns 0 or -1. */
int scram_make_secret(const char *password, char *out, size_t outlen) MUST_CHECK;
/* The same with a chosen iteration count (at least 1), as parley --hash-password makes them. */
int scram_make_secret_iter(const char *password, int iterations, char *out, size_t outlen) MUST_CHECK;
/* Parses "SCRAM-SHA-256$<iter>:<b64 salt>$<b64 StoredKey>:<b64 ServerKey>" (salt at most 64 bytes). Returns 0 or -1. */
int scram_parse_secret(const char *secret, int *iterations, uint8_t salt[64], int *salt_len,
		       uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN]) MUST_CHECK;

void scram_state_clear(struct scram_state *st);

/* Test hooks: a fixed nonce part (instead of 18 random bytes, both sides) and a client username (instead of the
 * empty "n=" parley sends); NULL restores the default. Only for unit tests reproducing RFC 7677 vectors. */
void scram_set_test_nonce(const char *nonce);
void scram_set_test_username(const char *user);

/* Cryptographically random bytes (OpenSSL). Returns 0 or -1. */
int random_bytes(void *buf, size_t len) MUST_CHECK;

#endif
