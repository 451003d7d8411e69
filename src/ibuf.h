/* ibuf.h — a connection's input buffer: one contiguous block that reads append to and parsing consumes in place. */
#ifndef PARLEY_IBUF_H
#define PARLEY_IBUF_H
#include "common.h"

/* Bytes [head, tail) of data are read and not yet consumed. Messages are parsed where they lie: a message that
 * arrived whole is contiguous, with no copy and no chain walk (PgBouncer's sbuf works this way; libevent's evbuffer,
 * which parley used before, allocated a chain per read and freed it per send). Pointers into the buffer stay valid
 * until the next ibuf_space (the only call that moves or reallocates the bytes). */
struct ibuf {
	uint8_t *data;   /* heap block of cap bytes, NULL until the first read */
	size_t head;     /* offset of the first unconsumed byte */
	size_t tail;     /* offset just past the last byte read */
	size_t cap;      /* size of data */
};

/* Size of a connection's first block; enough for the usual request or reply, so most connections never grow it. */
#define IBUF_INITIAL 4096
/* A block grown above this is freed when it empties, so a connection that once moved a large message does not keep
 * the memory. */
#define IBUF_KEEP_MAX (64 * 1024)

static inline size_t ibuf_len(const struct ibuf *b)
{
	return b->tail - b->head;
}

/* The first unconsumed byte (the buffer's bytes are contiguous). */
static inline uint8_t *ibuf_ptr(const struct ibuf *b)
{
	return b->data + b->head;
}

/* Consumes n bytes (n <= ibuf_len) from the front. */
static inline void ibuf_drain(struct ibuf *b, size_t n)
{
	b->head += n;
	if (b->head >= b->tail) {
		b->head = b->tail = 0;
		if (b->cap > IBUF_KEEP_MAX) {
			free(b->data);
			b->data = NULL;
			b->cap = 0;
		}
	}
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

void ibuf_free(struct ibuf *b);

#endif
