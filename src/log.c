/* log.c — leveled logging with timestamps, to stderr or an append-only logfile. */
#include "log.h"
#include <stdarg.h>
#include <sys/time.h>
#include <unistd.h>

int log_level_current = LOG_LVL_LOG;
static FILE *log_fp;
static bool log_quiet;

static const char *const level_names[] = { "FATAL", "ERROR", "WARNING", "LOG", "DEBUG", "NOISE" };

int log_open(const char *path)
{
	FILE *fp;
	if (!path || !*path) {
		if (log_fp && log_fp != stderr)
			fclose(log_fp);
		log_fp = NULL;
		return 0;
	}
	fp = fopen(path, "a");
	if (!fp)
		return -1;
	setvbuf(fp, NULL, _IOLBF, 0);
	if (log_fp)
		fclose(log_fp);
	log_fp = fp;
	return 0;
}

void log_set_quiet(bool quiet)
{
	log_quiet = quiet;
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
	char msg[2048];
	char stamp[64];
	struct timeval tv;
	struct tm tm;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	gettimeofday(&tv, NULL);
	localtime_r(&tv.tv_sec, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%d %H:%M:%S", &tm);
	if (log_fp)
		fprintf(log_fp, "%s.%03d %d %s %s\n", stamp, (int)(tv.tv_usec / 1000), (int)getpid(), level_names[lvl], msg);
	if (!log_quiet || lvl <= LOG_LVL_ERROR)
		if (!log_fp || lvl <= LOG_LVL_FATAL)
			fprintf(stderr, "%s.%03d %d %s %s\n", stamp, (int)(tv.tv_usec / 1000), (int)getpid(), level_names[lvl], msg);
}

usec_t loop_clock;

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p) {
		log_fatal("out of memory allocating %zu bytes", n);
		abort();
	}
	return p;
}

void *xcalloc(size_t n, size_t m)
{
	void *p = calloc(n ? n : 1, m ? m : 1);
	if (!p) {
		log_fatal("out of memory allocating %zu bytes", n * m);
		abort();
	}
	return p;
}

void *xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);
	if (!q) {
		log_fatal("out of memory allocating %zu bytes", n);
		abort();
	}
	return q;
}

char *read_whole_file(const char *path, size_t max, size_t *len)
{
	FILE *fp = fopen(path, "rb");
	char *buf = NULL;
	size_t n = 0, cap = 0;

	if (!fp)
		return NULL;
	for (;;) {
		size_t got;
		if (cap - n < 4096) {
			cap = cap ? cap * 2 : 8192;
			buf = xrealloc(buf, cap + 1);
		}
		got = fread(buf + n, 1, cap - n, fp);
		n += got;
		if (max && n > max) {
			free(buf);
			fclose(fp);
			errno = EFBIG;
			return NULL;
		}
		if (got == 0)
			break;
	}
	if (ferror(fp)) {
		int e = errno ? errno : EIO;
		free(buf);
		fclose(fp);
		errno = e;
		return NULL;
	}
	fclose(fp);
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = xmalloc(n);
	memcpy(p, s, n);
	return p;
}

bool strlcpy_ok(char *dst, const char *src, size_t n)
{
	size_t len = strlen(src);
	if (n == 0)
		return false;
	if (len >= n) {
		memcpy(dst, src, n - 1);
		dst[n - 1] = '\0';
		return false;
	}
	memcpy(dst, src, len + 1);
	return true;
}
