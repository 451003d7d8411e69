/* ibuf.h — a connection's input buffer: one contiguous block that reads append to and parsing consumes in place. */
#ifndef PARLEY_IBUF_H
#define PARLEY_IBUF_H
#include "common.h"

/* Bytes [head, tail) of data are read and not yet consumed. Messages are parsed where they lie: a message that
 * arrived whole is contiguous, with no copy and no chain walk (PgBouncer's sbuf works this way; libevent's evbuffer,
 * which parley used before, allocated a chain per read and freed it per send). Pointers into the buffer stay valid
 * until the next ibuf_space (which may move or reallocate the bytes) or a drain that empties it (which releases the
 * block). */
struct ibuf {
	uint8_t *data;   /* heap block of cap bytes, NULL until the first read */
	size_t head;     /* offset of the first unconsumed byte */
	size_t tail;     /* offset just past the last byte read */
	size_t cap;      /* size of data */
};

/* Size of a connection's block; enough for the usual request or reply, so most connections never grow it. A block is
 * released whenever the buffer empties (a pool of free blocks makes taking one back cheap), so idle connections hold
 * none, and a block grown for a large message goes back to malloc. */
#define IBUF_INITIAL 4096

static inline size_t ibuf_len(const struct ibuf *b)
{
	return b->tail - b->head;
}

/* The first unconsumed byte (the buffer's bytes are contiguous). */
static inline uint8_t *ibuf_ptr(const struct ibuf *b)
{
	return b->data + b->head;
}

/* Empties the buffer and gives its block back (to the free pool, or to malloc when it was grown). */
void ibuf_release(struct ibuf *b);

/* Consumes n bytes (n <= ibuf_len) from the front. */
static inline void ibuf_drain(struct ibuf *b, size_t n)
{
	b->head += n;
	if (b->head >= b->tail)
		ibuf_release(b);
}

/* Copies n bytes (n <= ibuf_len) from the front to dst and consumes them. */
static inline void ibuf_remove(struct ibuf *b, void *dst, size_t n)
{
	memcpy(dst, ibuf_ptr(b), n);
	ibuf_drain(b, n);
}

/* Free space of at least want bytes after the buffered ones (moving them to the front or growing the block first);
 * *space gets the whole free length. May move the bytes: pointers taken before are invalid after. */
uint8_t *ibuf_space(struct ibuf *b, size_t want, size_t *space);

/* Marks n bytes written into the space ibuf_space returned as buffered. */
static inline void ibuf_commit(struct ibuf *b, size_t n)
{
	b->tail += n;
}

/* Appends n bytes (for tests and for bytes that arrive other than by a read). */
void ibuf_add(struct ibuf *b, const void *src, size_t n);

/* Blocks in the free pool (for tests), and freeing them all (at exit). */
int ibuf_pool_count(void);
void ibuf_pool_clear(void);

#endif
