/* peer.h — peering of parley processes that share a port (so_reuseport): cancel keys carry peer_id, and a cancel request for another peer's client is forwarded to it once. */
#ifndef PARLEY_PEER_H
#define PARLEY_PEER_H
#include "common.h"
#include "config.h"

#define PEER_ID_MAX 16383
/* Low two bits of the secret key: how many more times the request may be forwarded (PgBouncer's
 * CANCELLATION_TTL_MASK). parley hands out keys with both bits set and forwards only such keys, so a forwarded
 * request (bits decremented) is never forwarded again. */
#define PEER_TTL_MASK 0x3u

/* Writes peer_id (1..16383) into a random BackendKeyData pair in PgBouncer's layout: the second and third bytes of
 * the 8 bytes on the wire (bits 16..23 of pid hold the low byte, bits 8..15 the high byte) and both TTL bits of
 * key set. peer_id 0 leaves the pair as it is. */
void peer_key_stamp(uint32_t *pid, uint32_t *key, int peer_id);

/* The peer id a cancel key carries (meaningless for keys handed out with peering off). */
int peer_key_id(uint32_t pid);

/* The key as this process stored it: the TTL bits restored. Only for keys carrying our own peer_id. */
uint32_t peer_key_normalize(uint32_t key);

/* A CancelRequest whose key no local client holds: forwards it to the peer named in the key when peer_id is set,
 * the key carries another peer's id, [peers] lists that id and the request was not forwarded before; otherwise
 * logs why and drops it. Never blocks on the peer (non-blocking connect, at most [peers] pool_size in flight per
 * peer, the rest queued for up to 10 s). */
void peer_forward_cancel(uint32_t pid, uint32_t key);

/* Logs what the loaded configuration means for peering (at startup and after each reload). */
void peer_config_check(const struct parley_config *cfg);

/* Closes in-flight forwards and frees the queues (at exit). */
void peer_shutdown(void);

#endif
