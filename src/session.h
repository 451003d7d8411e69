/* session.h — session state across pooled servers: the client's own SET / RESET of parameters PostgreSQL does not
 * report (track_extra_parameters), restored on whichever server it gets, and the session-level features that break
 * in transaction mode (transaction_unsafe). */
#ifndef PARLEY_SESSION_H
#define PARLEY_SESSION_H
#include "common.h"
#include <event2/buffer.h>

struct client;
struct server;
struct shape;

/* transaction_unsafe, in config.c's unsafe_modes order. */
enum unsafe_mode { UNSAFE_ERROR, UNSAFE_WARN, UNSAFE_ALLOW };

struct sess_vals;   /* committed parameter values of a client or a server session (session.c) */
struct sess_fx;     /* session effects of the statements of one request, in order (session.c) */

/* Records the session effects (SET / RESET / RESET ALL / DISCARD ALL, and COMMIT / ROLLBACK markers) of a statement
 * the client is sending: sh is its shape, text/tlen its exact text. Cheap unless the shape is one of those. */
void session_note(struct client *c, struct sess_fx **fx, const struct shape *sh, const char *text, size_t tlen);
/* A request finished with ReadyForQuery status (failed: an ErrorResponse came back): its effects become the client's
 * (and sv's, which ran them) when their transaction committed, and are dropped when it rolled back. Frees *fx. */
void session_request_done(struct client *c, struct server *sv, struct sess_fx **fx, bool failed, char status);
void session_fx_free(struct sess_fx *fx);

/* A startup parameter the client sent: true if it is in track_extra_parameters (its value becomes the client's, set
 * on each server it gets, as PgBouncer does for search_path from pgjdbc's currentSchema), false if not tracked. */
bool session_startup_param(struct client *c, const char *name, const char *value);
/* The statements that give sv the client's tracked parameters ("SET a TO x;RESET b;"), heap, or NULL when sv has
 * them already; sv's state then counts as the client's (the caller runs the statements). */
char *session_sync_sql(struct client *c, struct server *sv);
/* parley runs sql on sv itself (reset query, connect query, the sync above): apply its SET / RESET / DISCARD ALL. */
void session_server_query(struct server *sv, const char *sql);

void session_client_free(struct client *c);
void session_server_free(struct server *sv);

/* Simple Query text the client sent in transaction or statement mode: if it uses a session-level feature that breaks
 * there and transaction_unsafe = error, writes to out a Query that makes PostgreSQL answer with a 0A000 error naming
 * the feature instead, and returns true (the caller drops the client's message). warn: logs and returns false. */
bool session_unsafe_query(struct client *c, const struct shape *sh, const char *text, size_t tlen,
			  struct evbuffer *out);
/* The same check for a Parse (extended protocol): NULL when the statement may be prepared as it is (after a warning
 * when transaction_unsafe = warn), else the text to prepare in its place (heap): executing it raises the 0A000 error
 * (its Parse and Bind succeed, so parameters the client binds are accepted and ignored). */
char *session_unsafe_parse(struct client *c, const struct shape *sh, const char *text, size_t tlen);
/* The name of the unsafe feature text uses ("LISTEN", "SQL PREPARE", ...) confirmed by the grammar, or NULL. For
 * tests and the checks above; sh (may be NULL) lets it skip texts that cannot match. */
const char *session_unsafe_feature(const struct shape *sh, const char *text, size_t tlen);

#endif
