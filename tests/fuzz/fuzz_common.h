/* fuzz_common.h — helpers shared by the libFuzzer targets: invariant checks that abort, and a private temp dir. */
#ifndef PARLEY_FUZZ_COMMON_H
#define PARLEY_FUZZ_COMMON_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Fails the run (libFuzzer reports a deadly signal and saves the input) when an invariant does not hold. */
#define FUZZ_CHECK(cond)                                                                              \
	do {                                                                                          \
		if (!(cond)) {                                                                        \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                      \
		}                                                                                     \
	} while (0)

/* true if s is a NUL-terminated string that starts and ends inside buf[0..len). */
static inline int fuzz_str_inside(const char *s, const uint8_t *buf, size_t len)
{
	const uint8_t *p = (const uint8_t *)s;
	if (p < buf || p >= buf + len)
		return 0;
	return memchr(p, '\0', (size_t)(buf + len - p)) != NULL;
}

/* A directory of this process's own under $TMPDIR (created once, removed at exit), so file-reading targets never
 * touch anything else. Returns its path. */
static char fuzz_dir_path[256];

static void fuzz_dir_cleanup(void)
{
	char cmd[300];
	if (fuzz_dir_path[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fuzz_dir_path);
		if (system(cmd) != 0)
			fprintf(stderr, "fuzz: could not remove %s\n", fuzz_dir_path);
	}
}

static inline const char *fuzz_dir(void)
{
	if (!fuzz_dir_path[0]) {
		const char *tmp = getenv("TMPDIR");
		snprintf(fuzz_dir_path, sizeof(fuzz_dir_path), "%s/parley-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
		if (!mkdtemp(fuzz_dir_path)) {
			perror("fuzz: mkdtemp");
			abort();
		}
		atexit(fuzz_dir_cleanup);
	}
	return fuzz_dir_path;
}

/* Writes data[0..len) to dir/name (replacing it) and returns the full path in a static buffer. */
static inline const char *fuzz_write_file(const char *name, const uint8_t *data, size_t len)
{
	static char path[512];
	FILE *fp;
	snprintf(path, sizeof(path), "%s/%s", fuzz_dir(), name);
	fp = fopen(path, "wb");
	if (!fp || (len && fwrite(data, 1, len, fp) != len) || fclose(fp) != 0) {
		perror("fuzz: writing the input file");
		abort();
	}
	return path;
}

#endif
