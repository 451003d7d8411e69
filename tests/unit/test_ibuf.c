/* test_ibuf.c — cmocka tests for the contiguous input buffer: growth, reuse of the consumed front, release and reuse
 * of blocks. */
#include "ibuf.h"
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

/* Appends n bytes through the same ibuf_space/ibuf_commit pair sock_read uses; returns the space offered. */
static size_t read_in(struct ibuf *b, const uint8_t *src, size_t n, size_t want)
{
	size_t space;
	uint8_t *p = ibuf_space(b, want, &space);
	assert_non_null(p);
	assert_true(space >= want);
	assert_true(space >= n);
	memcpy(p, src, n);
	ibuf_commit(b, n);
	return space;
}

static void test_first_read_allocates_initial_block(void **state)
{
	struct ibuf b = { 0 };
	uint8_t msg[10] = "0123456789";
	(void)state;
	assert_int_equal(ibuf_len(&b), 0);
	assert_int_equal(read_in(&b, msg, sizeof(msg), 100), IBUF_INITIAL);
	assert_int_equal(ibuf_len(&b), 10);
	assert_memory_equal(ibuf_ptr(&b), msg, 10);
	ibuf_release(&b);
	assert_null(b.data);
	assert_int_equal(ibuf_len(&b), 0);
}

/* A message that arrives in pieces is contiguous once whole, wherever the pieces landed. */
static void test_split_message_becomes_contiguous(void **state)
{
	struct ibuf b = { 0 };
	uint8_t msg[3000];
	(void)state;
	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (uint8_t)(i * 7);
	/* consume most of a first block so the second piece forces the remaining bytes to the front */
	read_in(&b, msg, 1000, 1000);
	ibuf_drain(&b, 990);
	assert_int_equal(ibuf_len(&b), 10);
	read_in(&b, msg, 1500, 1500);
	read_in(&b, msg + 1500, 1500, IBUF_INITIAL);	/* more than is free: compacts, then grows */
	assert_int_equal(ibuf_len(&b), 3010);
	assert_int_equal(b.head, 0);
	assert_memory_equal(ibuf_ptr(&b) + 10, msg, sizeof(msg));
	ibuf_release(&b);
}

/* Draining to empty gives the block back: an idle connection holds no buffer, and the next read of any connection
 * takes that block again from the free pool. */
static void test_drain_to_empty_releases_block(void **state)
{
	struct ibuf b = { 0 }, other = { 0 };
	uint8_t buf[64] = { 1, 2, 3, 4, 5 };
	uint8_t got[3], *block;
	size_t space;
	int pooled;
	(void)state;
	ibuf_pool_clear();
	ibuf_add(&b, buf, 5);
	block = b.data;
	ibuf_remove(&b, got, 3);
	assert_int_equal(got[0], 1);
	assert_int_equal(got[2], 3);
	assert_int_equal(b.head, 3);
	assert_ptr_equal(b.data, block);	/* not empty: kept */
	pooled = ibuf_pool_count();
	ibuf_drain(&b, 2);
	assert_int_equal(ibuf_len(&b), 0);
	assert_null(b.data);
	assert_int_equal(ibuf_pool_count(), pooled + 1);
	assert_ptr_equal(ibuf_space(&other, 100, &space), block);	/* reused, not a new allocation */
	assert_int_equal(space, IBUF_INITIAL);
	assert_int_equal(ibuf_pool_count(), pooled);
	ibuf_release(&other);
	ibuf_release(&b);
	ibuf_pool_clear();
	assert_int_equal(ibuf_pool_count(), 0);
}

/* A block grown for a large message goes back to malloc once it is empty, and the next read starts small again. */
static void test_large_block_released_when_empty(void **state)
{
	struct ibuf b = { 0 };
	size_t n = 16 * IBUF_INITIAL;
	uint8_t *big = malloc(n);
	(void)state;
	assert_non_null(big);
	ibuf_pool_clear();
	memset(big, 'x', n);
	ibuf_add(&b, big, n);
	assert_true(b.cap >= n);
	ibuf_drain(&b, n - 1);
	assert_non_null(b.data);	/* one byte left: kept */
	assert_int_equal(*ibuf_ptr(&b), 'x');
	ibuf_drain(&b, 1);
	assert_null(b.data);
	assert_int_equal(b.cap, 0);
	assert_int_equal(ibuf_pool_count(), 0);	/* not pooled: only blocks of the initial size are */
	assert_int_equal(read_in(&b, big, 1, 1), IBUF_INITIAL);
	ibuf_release(&b);
	ibuf_pool_clear();
	free(big);
}

/* Adding nothing to a buffer without a block takes no block, and asking for no space gets none (found by fuzz_relay:
 * it used to compute NULL + 0 and memcpy from it, undefined behaviour UBSan reports). */
static void test_empty_add_takes_no_block(void **state)
{
	struct ibuf b = { 0 };
	size_t space = 99;
	(void)state;
	ibuf_pool_clear();
	ibuf_add(&b, "", 0);
	assert_null(b.data);
	assert_int_equal(ibuf_len(&b), 0);
	assert_null(ibuf_space(&b, 0, &space));
	assert_int_equal(space, 0);
	ibuf_add(&b, "abc", 3);
	assert_int_equal(ibuf_len(&b), 3);
	ibuf_add(&b, "", 0);
	assert_int_equal(ibuf_len(&b), 3);
	assert_memory_equal(ibuf_ptr(&b), "abc", 3);
	ibuf_release(&b);
	ibuf_pool_clear();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_first_read_allocates_initial_block),
		cmocka_unit_test(test_split_message_becomes_contiguous),
		cmocka_unit_test(test_drain_to_empty_releases_block),
		cmocka_unit_test(test_large_block_released_when_empty),
		cmocka_unit_test(test_empty_add_takes_no_block),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
