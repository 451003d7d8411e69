/* fuzz_relay.c — libFuzzer target: the message-level relay (relay_client_input / relay_server_input, unchanged src/relay.c with the cache and shapes) on interleaved fuzzed client and server bytes, its socket, pool and connection neighbours replaced by stand-ins. */
#include "parley.h"
#include "cache.h"
#include "notify.h"
#include "shape.h"
#include "stats.h"
#include "fuzz_common.h"
#include <strings.h>

/*
 * The input is a list of records: one direction byte (even: from the client, odd: from the server), a 16-bit
 * big-endian length, then that many bytes (cut short at the end of the input). Client bytes are appended to the
 * client's input buffer and relay_client_input runs; server bytes go to the linked server's input buffer and
 * relay_server_input runs. One client and one server connection live for one input, on a transaction-mode pool;
 * the cache (with the Parlant tables cacheable) and the shape table live across inputs, as in the daemon.
 *
 * What the relay needs from client.c, server.c, pool.c, stats.c and notify.c is replaced below by stand-ins that
 * keep the same contracts without sockets: a flush drains the output buffer, a server request links the one
 * server (unless it was disconnected), a disconnect marks the connection gone.
 */

struct parley_state g;
const char *const tracked_var_names[VAR_COUNT] = {
#define X_NAME(e, s) s,
	TRACKED_VARS(X_NAME)
#undef X_NAME
};

static struct pool fz_pool;        /* the one pool */
static struct server *fz_server;   /* the one server connection of the current input */
static bool fz_client_gone;        /* client_disconnect was called */
static bool fz_server_gone;        /* server_disconnect was called */

/* ---- stand-ins ---- */

int tracked_var_lookup(const char *name)
{
	for (int i = 0; i < VAR_COUNT; i++)
		if (strcasecmp(name, tracked_var_names[i]) == 0)
			return i;
	return -1;
}

void client_disconnect(struct client *c, const char *sqlstate, const char *reason)
{
	FUZZ_CHECK(reason != NULL);
	c->state = CL_JUSTFREE;
	fz_client_gone = true;
}

void client_on_server_data(struct client *c)
{
}

bool client_sync_vars(struct client *c)
{
	return false;
}

bool pool_request_server(struct client *c)
{
	FUZZ_CHECK(c->server == NULL);
	if (fz_server_gone || fz_server->client)
		return false;	/* no server available: the client would wait */
	c->server = fz_server;
	fz_server->client = c;
	return true;
}

void pool_release_server(struct server *sv)
{
	FUZZ_CHECK(sv == fz_server);
	if (sv->client)
		sv->client->server = NULL;
	sv->client = NULL;
}

void server_disconnect(struct server *sv, const char *reason)
{
	FUZZ_CHECK(reason != NULL);
	if (sv->client)
		sv->client->server = NULL;
	sv->client = NULL;
	fz_server_gone = true;
}

void server_param_status(struct server *sv, const uint8_t *body, size_t len)
{
	/* body is a ParameterStatus body: both strings must be inside it */
	volatile uint8_t sink = 0;
	for (size_t i = 0; i < len; i++)
		sink ^= body[i];
	(void)sink;
}

int sock_flush(struct sock *s)
{
	evbuffer_drain(s->out, evbuffer_get_length(s->out));
	return 0;
}

void sock_want_read(struct sock *s, bool on)
{
}

/* As client.c's: the bytes leave the input buffer for the output (no socket here, so all of them are queued). */
void sock_pass(struct sock *s, struct ibuf *in, size_t n)
{
	FUZZ_CHECK(n <= ibuf_len(in));
	if (n == 0)
		return;
	evbuffer_add(s->out, ibuf_ptr(in), n);
	ibuf_drain(in, n);
}

void stats_query_done(struct pool *p, struct client *c, struct shape *sh, usec_t duration, bool from_cache)
{
	FUZZ_CHECK(p == &fz_pool);
}

bool notify_cache_usable(const struct pool *p)
{
	return true;
}

/* ---- the harness ---- */

/* Server bytes are fed as they come, however they are framed: a hostile or broken server must not crash parley.
 * tests/fuzz/corpus/fuzz_relay/bug_parsecomplete_length is the regression seed of a crash found here (a ParseComplete
 * with a wrong length word whose body had not all arrived). */
static bool server_bytes_ok(const uint8_t *data, size_t len)
{
	(void)data;
	(void)len;
	return true;
}

static void init_once(void)
{
	static const char *const tables[] = { "parlant_agent", "parlant_tool", "parlant_agent_tool", "parlant_event",
					      "parlant_session", "parlant_journey_state" };
	struct shape_config scfg = { .max_shapes = 256, .max_texts = 512 };
	struct cache_config ccfg = { .enabled = true, .max_memory = 8u << 20, .max_entry_size = 64u << 10,
				     .wait_timeout = USEC_PER_SEC };

	g.base = event_base_new();
	FUZZ_CHECK(g.base != NULL);
	config_init_defaults(&g.cfg);
	g.cfg.pool_mode = POOL_TRANSACTION;
	g.cfg.max_packet_size = 1 << 20;
	shape_init(&scfg);
	cache_init(&ccfg);
	for (size_t i = 0; i < ARRAY_SIZE(tables); i++)
		cache_policy_set(tables[i], 300);
	snprintf(fz_pool.dbname, sizeof(fz_pool.dbname), "parlant");
	snprintf(fz_pool.user, sizeof(fz_pool.user), "parlant");
	snprintf(fz_pool.key, sizeof(fz_pool.key), "parlant\x01parlant");
	fz_pool.mode = POOL_TRANSACTION;
	fz_pool.pool_size = 1;
	list_init(&fz_pool.clients_active);
	list_init(&fz_pool.clients_waiting);
	list_init(&fz_pool.clients_login);
	list_init(&fz_pool.servers_login);
	list_init(&fz_pool.servers_idle);
	list_init(&fz_pool.servers_active);
	list_init(&fz_pool.servers_used);
	list_init(&fz_pool.servers_tested);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;
	struct client *c;
	struct server *sv;
	size_t off = 0;

	if (!inited) {
		init_once();
		inited = true;
	}
	c = xcalloc(1, sizeof(*c));
	sv = xcalloc(1, sizeof(*sv));
	c->state = CL_ACTIVE;
	c->pool = &fz_pool;
	c->s.fd = -1;
	c->s.out = evbuffer_new();
	snprintf(c->user, sizeof(c->user), "parlant");
	snprintf(c->dbname, sizeof(c->dbname), "parlant");
	sv->state = SV_ACTIVE;
	sv->pool = &fz_pool;
	sv->s.fd = -1;
	sv->s.out = evbuffer_new();
	sv->connected = sv->ready = true;
	sv->tx_status = 'I';
	fz_server = sv;
	fz_client_gone = fz_server_gone = false;

	while (off + 3 <= size && !fz_client_gone) {
		uint8_t dir = data[off];
		size_t len = (size_t)data[off + 1] << 8 | data[off + 2];
		off += 3;
		if (len > size - off)
			len = size - off;
		if (!(dir & 1)) {
			ibuf_add(&c->s.in, data + off, len);
			relay_client_input(c);
		} else if (sv->client == c && !fz_server_gone && server_bytes_ok(data + off, len)) {
			ibuf_add(&sv->s.in, data + off, len);
			relay_server_input(sv);
		}
		off += len;
	}

	if (sv->client)
		pool_release_server(sv);
	relay_client_free(c);
	relay_server_free(sv);
	session_client_free(c);
	session_server_free(sv);
	FUZZ_CHECK(c->rc == NULL && sv->rs == NULL);
	ibuf_release(&c->s.in);
	evbuffer_free(c->s.out);
	ibuf_release(&sv->s.in);
	evbuffer_free(sv->s.out);
	free(c);
	free(sv);
	fz_server = NULL;
	if (getenv("PARLEY_FUZZ_VERBOSE")) {	/* to see what the seeds reach: cache hits, statements re-prepared */
		struct relay_stats st;
		relay_get_stats(&st);
		fprintf(stderr, "relay: hits %llu misses %llu bypassed %llu prepared injected %llu skipped %llu\n",
			(unsigned long long)st.cache_hits, (unsigned long long)st.cache_misses,
			(unsigned long long)st.cache_bypassed, (unsigned long long)st.prepared_injected,
			(unsigned long long)st.prepared_skipped);
	}
	return 0;
}
