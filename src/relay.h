/* relay.h — the message-level data path between a client and its server: statement tracking, named prepared
 * statements across pooled servers, cache hits and fills, and write-through invalidation. */
#ifndef PARLEY_RELAY_H
#define PARLEY_RELAY_H
#include "common.h"

struct client;
struct server;

/* Processes what the client sent: answers from the cache, or forwards to a server (linking one when needed). */
void relay_client_input(struct client *c);
/* Processes what the server sent for its linked client: forwards, swallows or synthesizes replies, fills the cache,
 * invalidates on writes, releases the server at the end of a transaction in transaction/statement mode. */
void relay_server_input(struct server *sv);

/* true while the server owes replies (an unfinished batch or query). */
bool relay_server_busy(const struct server *sv);
/* The server's session was reset (DISCARD ALL): it no longer has any prepared statement. */
void relay_server_forget_statements(struct server *sv);
/* A setting of track_extra_parameters the client gave in its startup packet: part of its cache keys. */
void relay_note_startup_setting(struct client *c, const char *name, const char *value);

/* Release the relay state of a connection (called when it is freed). */
void relay_client_free(struct client *c);
void relay_server_free(struct server *sv);

/* Figures for SHOW / metrics. */
struct relay_stats {
	uint64_t prepared_injected;   /* Parse messages parley sent to re-prepare a client's statement on another server */
	uint64_t prepared_skipped;    /* client Parse messages answered without the server (already prepared there) */
	uint64_t prepared_closed;     /* statements closed on a server to stay under max_prepared_statements */
	uint64_t cache_hits, cache_misses, cache_bypassed;
};
void relay_get_stats(struct relay_stats *st);

#endif
