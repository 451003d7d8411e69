/* ibuf.c — growth and release of a connection's contiguous input buffer (ibuf.h). */
#include "ibuf.h"

/* Released blocks of IBUF_INITIAL bytes kept for the next read of any connection (PgBouncer keeps its packet
 * buffers in a slab the same way): an idle connection holds no buffer, and a busy one takes a block back with a
 * list pop instead of malloc. */
#define IBUF_POOL_MAX 1024

struct free_block {
	struct free_block *next;
};

static struct free_block *free_blocks;
static int free_count;

void ibuf_release(struct ibuf *b)
{
	b->head = b->tail = 0;
	if (!b->data)
		return;
	if (b->cap == IBUF_INITIAL && free_count < IBUF_POOL_MAX) {
		struct free_block *f = (struct free_block *)(void *)b->data;
		f->next = free_blocks;
		free_blocks = f;
		free_count++;
	} else {
		free(b->data);
	}
	b->data = NULL;
	b->cap = 0;
}

uint8_t *ibuf_space(struct ibuf *b, size_t want, size_t *space)
{
	size_t len = b->tail - b->head;

	if (!b->data && free_blocks && want <= IBUF_INITIAL) {
		b->data = (uint8_t *)free_blocks;
		free_blocks = free_blocks->next;
		free_count--;
		b->cap = IBUF_INITIAL;
	}
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
	return b->data ? b->data + b->tail : NULL;	/* want 0 of a buffer without a block: no space (and no NULL + 0) */
}

void ibuf_add(struct ibuf *b, const void *src, size_t n)
{
	size_t space;
	uint8_t *p;

	if (n == 0)
		return;
	p = ibuf_space(b, n, &space);
	memcpy(p, src, n);
	ibuf_commit(b, n);
}

int ibuf_pool_count(void)
{
	return free_count;
}

void ibuf_pool_clear(void)
{
	while (free_blocks) {
		struct free_block *f = free_blocks;
		free_blocks = f->next;
		free(f);
	}
	free_count = 0;
}
