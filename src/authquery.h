/* authquery.h — auth_user + auth_query: looks up the secret of a user missing from auth_file on PostgreSQL (libpq, non-blocking on the libevent loop), keeps it for the pool's server logins, and the parley --hash-password tool. */
#ifndef PARLEY_AUTHQUERY_H
#define PARLEY_AUTHQUERY_H
#include "common.h"
#include "auth.h"

struct client;
struct authquery_lookup;

/* Must c's secret be looked up before its authentication starts? True when auth_user is set for c's database (its
 * [databases] entry, else the global setting), c's user is not in auth_file, c is not for the admin console and no
 * lookup ran for this login yet. */
bool authquery_needed(const struct client *c);

/* Starts the lookup for c (c->auth_lookup is set while it runs). When it ends, authquery sets c->auth_lookup_done and
 * calls client_auth_lookup_done(c), which continues the authentication with authquery_credential(c->dbname, c->user)
 * (NULL: no such user, no password, or the password expired). When the lookup itself fails (auth_user cannot log in,
 * the query fails or times out), c is disconnected with an error naming the problem, and the reason is logged. */
void authquery_start(struct client *c);

/* c is going away: abandons its lookup, if any. */
void authquery_cancel(struct client *c);

/* The secret the last lookup found for user logging into database dbname (the client-side name), or NULL. It is what
 * parley logs into PostgreSQL with for that pool (md5, plain, or SCRAM with the ClientKey a client revealed). Every
 * login runs the query again and replaces or removes it: nothing is trusted across logins. */
struct auth_user *authquery_credential(const char *dbname, const char *user);

/* Remembers the ClientKey a client revealed while authenticating against secret, as auth_user_remember_scram_key does
 * for auth_file entries. Returns true if it is new (server logins that failed for want of it may now succeed). */
bool authquery_remember_scram_key(const char *dbname, const char *user, const char *secret,
				  const uint8_t client_key[SCRAM_KEY_LEN]);

/* Frees every credential and running lookup (at exit). */
void authquery_shutdown(void);

/* parley --hash-password [--iterations N] [USER]: reads a password (without echo from a terminal, else the first line
 * of stdin) and prints its SCRAM-SHA-256 secret as PostgreSQL stores it, or a ready auth_file line for USER. argv[0] is
 * the program, argv[1] "--hash-password". Returns the exit status. */
int hash_password_main(int argc, char **argv);

#endif
