/* common.h — includes, small macros and time helpers shared by every parley module. */
#ifndef PARLEY_COMMON_H
#define PARLEY_COMMON_H

#include "build_config.h"
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <time.h>

/* Microseconds: every duration and timestamp inside parley uses this unit. */
typedef int64_t usec_t;
#define USEC_PER_SEC 1000000LL
#define USEC_PER_MSEC 1000LL

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MUST_CHECK __attribute__((warn_unused_result))
#define UNUSED __attribute__((unused))
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))

/* Monotonic clock in microseconds. */
static inline usec_t now_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* The event loop's clock: read at most once per loop iteration (main.c clears loop_clock before each one), as
 * PgBouncer's cached time. For timestamps that timeouts and wait statistics compare (last_active, request_time,
 * link_time, last_used); query durations, which must be exact, use now_usec(). Mixing is safe one way: a cached
 * value is never later than now_usec(), so now_usec() - cached >= 0. */
extern usec_t loop_clock;
static inline usec_t now_cached(void)
{
	if (!loop_clock)
		loop_clock = now_usec();
	return loop_clock;
}

/* Wall clock in microseconds since the epoch. */
static inline usec_t wall_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

/* The splitmix64 finalizer: a bijection with full avalanche (hash mixing). */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

/* Value of a hexadecimal digit, or -1. */
static inline int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Allocation that aborts on failure: parley cannot continue without memory. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
/* Reads a whole file into a NUL-terminated heap buffer (its length in *len when len is not NULL). NULL with errno set
 * on failure: EFBIG when the file holds more than max bytes (0 = no limit). */
char *read_whole_file(const char *path, size_t max, size_t *len);
char *xstrdup(const char *s);

/* Copy src into dst of size n, always NUL-terminated; returns false if truncated. */
bool strlcpy_ok(char *dst, const char *src, size_t n);

#endif
