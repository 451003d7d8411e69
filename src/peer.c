/* peer.c — cancel keys that name their process (peer_id) and forwarding of cancel requests to the [peers] that own them. */
#include "peer.h"
#include "parley.h"
#include <fcntl.h>
#include <netdb.h>
#include <sys/un.h>
#include <unistd.h>

#define PEER_CONNECT_TIMEOUT_SEC 5     /* a forward not written by then is given up */
#define PEER_QUEUE_WAIT_USEC (10 * USEC_PER_SEC) /* PgBouncer's cancel_wait_timeout default */
#define PEER_QUEUE_MAX 10000           /* queued forwards per peer beyond which new ones are dropped */

/* A cancel request waiting for one of its peer's pool_size slots. */
struct peer_queued {
	struct list_head node;      /* in peer_state.queue */
	uint32_t pid, key;          /* the key to send (TTL already decremented) */
	usec_t queued_at;
};

/* Runtime state of one peer id, kept across reloads (the [peers] entry itself is read from g.cfg each time). */
struct peer_state {
	int id;                     /* hash key */
	int inflight;               /* forwards connecting or writing now */
	int queued;                 /* entries in queue */
	struct list_head queue;     /* struct peer_queued, oldest first; owned */
	struct list_head conns;     /* struct peer_conn in flight; owned */
	UT_hash_handle hh;          /* in peer_states */
};

/* One forward in flight: a non-blocking connection to the peer that writes the 16-byte CancelRequest and closes. */
struct peer_conn {
	struct list_head node;      /* in peer_state.conns */
	struct peer_state *ps;      /* the peer it goes to */
	int fd;
	struct event *ev;           /* EV_WRITE with a timeout */
	uint8_t pkt[16];            /* the CancelRequest */
};

static struct peer_state *peer_states;  /* uthash by id; owned */

void peer_key_stamp(uint32_t *pid, uint32_t *key, int peer_id)
{
	if (peer_id <= 0)
		return;
	*pid = (*pid & 0xff0000ffu) | ((uint32_t)(peer_id & 0xff) << 16) | ((uint32_t)((peer_id >> 8) & 0xff) << 8);
	*key |= PEER_TTL_MASK;
}

int peer_key_id(uint32_t pid)
{
	return (int)(((pid >> 16) & 0xff) | (((pid >> 8) & 0xff) << 8));
}

uint32_t peer_key_normalize(uint32_t key)
{
	return key | PEER_TTL_MASK;
}

static struct peer_state *peer_state_get(int id)
{
	struct peer_state *ps;
	HASH_FIND_INT(peer_states, &id, ps);
	if (!ps) {
		ps = xcalloc(1, sizeof(*ps));
		ps->id = id;
		list_init(&ps->queue);
		list_init(&ps->conns);
		HASH_ADD_INT(peer_states, id, ps);
	}
	return ps;
}

static void peer_dispatch(struct peer_state *ps);

static void peer_conn_free(struct peer_conn *pc)
{
	list_del(&pc->node);
	pc->ps->inflight--;
	if (pc->ev)
		event_free(pc->ev);
	close(pc->fd);
	free(pc);
}

/* The connection to the peer is writable (connected) or timed out: send the request, close, start the next. */
static void peer_conn_on_event(evutil_socket_t fd, short what, void *arg)
{
	struct peer_conn *pc = arg;
	struct peer_state *ps = pc->ps;
	int soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (!(what & EV_WRITE)) {
		log_warning("cancel request forwarded to peer %d: no connection within %d s", ps->id, PEER_CONNECT_TIMEOUT_SEC);
	} else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0 || soerr != 0) {
		log_warning("cannot forward cancel request to peer %d: %s", ps->id, strerror(soerr ? soerr : errno));
	} else if (write(fd, pc->pkt, sizeof(pc->pkt)) != (ssize_t)sizeof(pc->pkt)) {
		log_warning("cannot forward cancel request to peer %d: write failed: %s", ps->id, strerror(errno));
	} else {
		log_debug("cancel request forwarded to peer %d", ps->id);
	}
	peer_conn_free(pc);
	peer_dispatch(ps);
}

/* Opens the connection that carries one forwarded request. Returns false if it failed at once (logged). */
static bool peer_conn_start(struct peer_state *ps, const struct peer_def *pd, uint32_t pid, uint32_t key)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct timeval tv = { PEER_CONNECT_TIMEOUT_SEC, 0 };
	struct pkt_builder b;
	struct peer_conn *pc;
	char err[300];
	int fd;

	if (pg_address(pd->host, pd->port, &ss, &sslen, err, sizeof(err)) < 0) {
		log_warning("cannot forward cancel request to peer %d: %s", ps->id, err);
		return false;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		log_warning("cannot forward cancel request to peer %d: socket(): %s", ps->id, strerror(errno));
		return false;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL, 0) | O_NONBLOCK) < 0 ||
	    (connect(fd, (struct sockaddr *)&ss, sslen) < 0 && errno != EINPROGRESS)) {
		log_warning("cannot forward cancel request to peer %d (%s%s%d): %s", ps->id, pd->host,
			    pd->host[0] == '/' ? "/.s.PGSQL." : ":", pd->port, strerror(errno));
		close(fd);
		return false;
	}
	pc = xcalloc(1, sizeof(*pc));
	pc->fd = fd;
	pc->ps = ps;
	pkt_init(&b);
	pkt_cancel(&b, pid, key);
	if (b.failed || b.len != sizeof(pc->pkt)) {
		pkt_free(&b);
		close(fd);
		free(pc);
		return false;
	}
	memcpy(pc->pkt, b.buf, sizeof(pc->pkt));
	pkt_free(&b);
	pc->ev = event_new(g.base, fd, EV_WRITE, peer_conn_on_event, pc);
	event_add(pc->ev, &tv);
	list_add_tail(&pc->node, &ps->conns);
	ps->inflight++;
	return true;
}

/* Starts queued forwards while the peer has free slots; drops those that waited too long or whose peer left [peers]. */
static void peer_dispatch(struct peer_state *ps)
{
	usec_t now = now_usec();

	while (!list_empty(&ps->queue)) {
		struct peer_queued *q = list_first_entry(&ps->queue, struct peer_queued, node);
		const struct peer_def *pd = config_find_peer(&g.cfg, ps->id);
		int limit = pd && pd->pool_size > 0 ? pd->pool_size : g.cfg.default_pool_size;

		if (pd && now - q->queued_at <= PEER_QUEUE_WAIT_USEC && ps->inflight >= (limit > 0 ? limit : 1))
			return;
		list_del(&q->node);
		ps->queued--;
		if (!pd)
			log_warning("queued cancel request for peer %d dropped: the peer is no longer in [peers]", ps->id);
		else if (now - q->queued_at > PEER_QUEUE_WAIT_USEC)
			log_warning("queued cancel request for peer %d dropped after waiting 10 s for a free slot", ps->id);
		else
			peer_conn_start(ps, pd, q->pid, q->key);
		free(q);
	}
}

void peer_forward_cancel(uint32_t pid, uint32_t key)
{
	const struct peer_def *pd;
	struct peer_state *ps;
	int id = peer_key_id(pid), limit;

	if (g.cfg.peer_id <= 0) {
		log_debug("cancel request for an unknown key ignored (peer_id = 0: no peering)");
		return;
	}
	if (id == g.cfg.peer_id || id == 0) {
		log_debug("cancel request for an unknown or gone client ignored");
		return;
	}
	if ((key & PEER_TTL_MASK) != PEER_TTL_MASK) {
		/* A peer forwarded it already (or a PgBouncer did): forwarding once more could loop between two peers that
		 * each think the other owns the key. */
		log_info("cancel request for peer %d ignored: it was already forwarded by a peer and is not forwarded again", id);
		return;
	}
	pd = config_find_peer(&g.cfg, id);
	if (!pd) {
		log_warning("cancel request for peer %d dropped: [peers] has no entry %d", id, id);
		return;
	}
	key = (key & ~PEER_TTL_MASK) | ((key & PEER_TTL_MASK) - 1);
	ps = peer_state_get(id);
	limit = pd->pool_size > 0 ? pd->pool_size : g.cfg.default_pool_size;
	if (limit < 1)
		limit = 1;
	if (ps->inflight < limit && list_empty(&ps->queue)) {
		peer_conn_start(ps, pd, pid, key);
		return;
	}
	if (ps->queued >= PEER_QUEUE_MAX) {
		log_warning("cancel request for peer %d dropped: %d requests already wait for it", id, ps->queued);
		return;
	}
	{
		struct peer_queued *q = xcalloc(1, sizeof(*q));
		q->pid = pid;
		q->key = key;
		q->queued_at = now_usec();
		list_add_tail(&q->node, &ps->queue);
		ps->queued++;
	}
}

void peer_config_check(const struct parley_config *cfg)
{
	const struct peer_def *pd, *tmp;
	unsigned others = 0;

	HASH_ITER(hh, cfg->peers, pd, tmp)
		if (pd->id != cfg->peer_id)
			others++;
	if (cfg->peer_id == 0 && cfg->peers)
		log_warning("[peers] has no effect while peer_id = 0: set a distinct peer_id in each process of the group");
	else if (cfg->peer_id > 0 && others == 0)
		log_warning("peer_id = %d but [peers] lists no other process: cancel requests landing here for another "
			    "process are dropped", cfg->peer_id);
	else if (cfg->peer_id > 0)
		log_info("peering: this is peer %d, %u other peer(s) in [peers]", cfg->peer_id, others);
	if (cfg->so_reuseport && cfg->peer_id == 0)
		log_info("so_reuseport without peer_id: a cancel request the kernel hands to another process is dropped "
			 "(see doc/peers.md)");
}

void peer_shutdown(void)
{
	struct peer_state *ps, *tmp;

	HASH_ITER(hh, peer_states, ps, tmp) {
		while (!list_empty(&ps->conns))
			peer_conn_free(list_first_entry(&ps->conns, struct peer_conn, node));
		while (!list_empty(&ps->queue)) {
			struct peer_queued *q = list_first_entry(&ps->queue, struct peer_queued, node);
			list_del(&q->node);
			free(q);
		}
		HASH_DEL(peer_states, ps);
		free(ps);
	}
}
