/* ibuf.c — growth and release of a connection's contiguous input buffer (ibuf.h). */
#include "ibuf.h"

uint8_t *ibuf_space(struct ibuf *b, size_t want, size_t *space)
{
	size_t len = b->tail - b->head;

	if (b->cap - b->tail < want && b->head > 0) {
		/* reuse the consumed front: the bytes left are usually a partial message, a few bytes */
		if (len)
			memmove(b->data, b->data + b->head, len);
		b->head = 0;
		b->tail = len;
	}
	if (b->cap - b->tail < want) {
		size_t cap = b->cap ? b->cap : IBUF_INITIAL;
		while (cap - len < want)
			cap *= 2;
		b->data = xrealloc(b->data, cap);
		b->cap = cap;
	}
	*space = b->cap - b->tail;
	return b->data + b->tail;
}

void ibuf_add(struct ibuf *b, const void *src, size_t n)
{
	size_t space;
	uint8_t *p = ibuf_space(b, n, &space);
	memcpy(p, src, n);
	ibuf_commit(b, n);
}

void ibuf_free(struct ibuf *b)
{
	free(b->data);
	b->data = NULL;
	b->head = b->tail = b->cap = 0;
}
