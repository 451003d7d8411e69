/* notify.h — the invalidation feed: one libpq LISTEN connection per cached database, driven on the libevent loop,
 * applying notifications from PostgreSQL triggers (writes that bypass parley) to the cache. */
#ifndef PARLEY_NOTIFY_H
#define PARLEY_NOTIFY_H
#include "common.h"

struct parley_config;
struct pool;

/* Starts, keeps or stops the feed connections for the configuration (after load and each reload). */
void notify_apply_config(const struct parley_config *cfg);
void notify_shutdown(void);

/* May entries be served to (and filled for) clients of this pool? false while the feed of the pool's server database
 * is enabled but not connected and listening, or lagging (fail closed). true when the feed is off in the config. */
bool notify_cache_usable(const struct pool *p);

/* Feed status of one database for SHOW CACHE / metrics. */
struct notify_status {
	const char *dbname;          /* server database */
	bool enabled, connected;     /* required (mode on, or auto with the triggers installed); LISTEN active */
	uint64_t notifications;      /* applied since start */
	uint64_t reconnects;
	usec_t last_notification;    /* wall clock, 0 = none yet */
	usec_t down_since;           /* monotonic, 0 = up */
	const char *host;            /* server host or unix socket directory */
	int port;
	const char *user;            /* user the feed logs in as */
	const char *state;           /* "up", "connecting", "retrying", "not_needed" (auto: no triggers), "stopped" */
	const char *last_error;      /* why it last failed or was not needed, "" if never */
};
void notify_foreach(bool (*fn)(const struct notify_status *st, void *arg), void *arg);

#endif
