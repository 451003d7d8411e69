/* fuzz_config.c — libFuzzer target: config_load on an INI file (and one %include'd file) written from the input into a private temp dir, checking that every loaded value prints and parses back unchanged. */
#include "config.h"
#include "fuzz_common.h"
#include <ctype.h>

/*
 * The input is "MAIN\0INCLUDED": MAIN is written to DIR/parley.ini and INCLUDED to DIR/inc. %include must not escape
 * DIR, so on every line that holds a '%' anywhere (a directive may follow blanks or a byte order mark) only letters,
 * digits, '_', blanks and '%' are kept: no '/' or '.' survives, so an argument can only name a file in DIR (such as
 * "inc"; "parleyini" or "inc" including itself is stopped by the depth limit). The parser's lines are a subset of
 * these lines (it splits at '\n' too and stops at a NUL byte).
 */
static size_t sanitize(const uint8_t *in, size_t len, uint8_t *out)
{
	size_t o = 0, i = 0;

	while (i < len) {
		size_t start = i, end = i;
		while (end < len && in[end] != '\n')
			end++;
		if (memchr(in + start, '%', end - start)) {
			for (size_t k = start; k < end; k++)
				if (isalnum(in[k]) || in[k] == '_' || in[k] == ' ' || in[k] == '\t' || in[k] == '%')
					out[o++] = in[k];
		} else {
			memcpy(out + o, in + start, end - start);
			o += end - start;
		}
		if (end < len)
			out[o++] = '\n';
		i = end + 1;
	}
	return o;
}

/* Every value of a loaded configuration prints, and the printed text of a settable one applies back to the same text. */
static void check_values(struct parley_config *cfg)
{
	size_t n;
	const struct setting *s = config_settings(&n);
	char before[1024], after[1024], err[512];

	for (size_t i = 0; i < n; i++) {
		const char *t = config_value_text(cfg, &s[i], before, sizeof(before));
		FUZZ_CHECK(t != NULL && memchr(before, '\0', sizeof(before)));
		if (!s[i].reloadable || !s[i].implemented || strlen(before) >= sizeof(before) - 1)
			continue;
		if (config_set(cfg, s[i].name, before, err, sizeof(err)) != 0) {
			fprintf(stderr, "setting %s: value \"%s\" as printed does not apply back: %s\n", s[i].name, before, err);
			FUZZ_CHECK(!"printed value applies back");
		}
		config_value_text(cfg, &s[i], after, sizeof(after));
		if (strcmp(before, after) != 0) {
			fprintf(stderr, "setting %s: \"%s\" became \"%s\"\n", s[i].name, before, after);
			FUZZ_CHECK(!"printed value round-trips");
		}
	}
	(void)config_find_db(cfg, "parlant");
	(void)config_find_user(cfg, "parlant");
	for (struct db_def *db = cfg->databases; db; db = db->hh.next)
		FUZZ_CHECK(db->name && config_find_db(cfg, db->name) == db);
	for (int i = 0; i < cfg->ncache_tables; i++)
		FUZZ_CHECK(cfg->cache_tables[i].key && cfg->cache_tables[i].ttl_sec >= 0);
	for (int i = 0; i < cfg->ncache_shapes; i++)
		FUZZ_CHECK(cfg->cache_shapes[i].key && cfg->cache_shapes[i].ttl_sec >= 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t main_len = nul ? (size_t)(nul - data) : size;
	uint8_t *buf = malloc(size + 1);
	struct parley_config cfg;
	char err[1024];
	const char *path;
	size_t n;

	if (nul) {
		n = sanitize(nul + 1, size - main_len - 1, buf);
		(void)fuzz_write_file("inc", buf, n);
	} else {
		(void)fuzz_write_file("inc", (const uint8_t *)"", 0);
	}
	n = sanitize(data, main_len, buf);
	path = fuzz_write_file("parley.ini", buf, n);
	free(buf);

	err[0] = '\0';
	if (config_load(path, &cfg, err, sizeof(err)) == 0) {
		check_values(&cfg);
		config_free(&cfg);
	} else {
		/* a rejected file always says why, naming the file */
		FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)));
		FUZZ_CHECK(strstr(err, "parley-fuzz-") != NULL);
	}
	return 0;
}
