/* fuzz_shape.c — libFuzzer target: the SQL normalizer (shape_normalize, any output size) and the classifier (shape_get with libpg_query, memo and LRU) on arbitrary statement text. */
#include "shape.h"
#include "fuzz_common.h"

/* Literal values point into the text or into lits->buf, and their locations lie inside the text. */
static void check_lits(const struct shape_lits *l, const char *sql, size_t len)
{
	FUZZ_CHECK(l->n >= 0 && l->n <= SHAPE_MAX_LITERALS);
	for (int i = 0; i < l->n; i++) {
		const char *v = l->v[i].value;
		size_t vl = l->v[i].len;
		bool in_text = len > 0 && v >= sql && v + vl <= sql + len;
		bool in_buf = v >= l->buf && v + vl <= l->buf + sizeof(l->buf);
		FUZZ_CHECK(v != NULL);
		FUZZ_CHECK(in_text || in_buf || vl == 0);
		FUZZ_CHECK(l->v[i].location < len);
	}
}

/* Two literal lists hold the same values (the memo must give back what normalizing gave). */
static void check_same_lits(const struct shape_lits *a, const struct shape_lits *b)
{
	FUZZ_CHECK(a->n == b->n);
	for (int i = 0; i < a->n; i++) {
		FUZZ_CHECK(a->v[i].len == b->v[i].len);
		FUZZ_CHECK(a->v[i].location == b->v[i].location);
		FUZZ_CHECK(a->v[i].len == 0 || memcmp(a->v[i].value, b->v[i].value, a->v[i].len) == 0);
	}
}

static void check_shape(const struct shape *s)
{
	FUZZ_CHECK(s != NULL && s->normalized != NULL);
	FUZZ_CHECK(s->kind >= SHAPE_READ && s->kind <= SHAPE_UNPARSED);
	FUZZ_CHECK(s->nread >= 0 && s->nread <= SHAPE_MAX_TABLES);
	FUZZ_CHECK(s->nwritten >= 0 && s->nwritten <= SHAPE_MAX_TABLES);
	FUZZ_CHECK(s->nrows >= 0 && s->nrows <= SHAPE_MAX_ROWS);
	FUZZ_CHECK(memchr(s->var_name, '\0', sizeof(s->var_name)) != NULL);
	for (int i = 0; i < s->nread; i++) {
		FUZZ_CHECK(memchr(s->read[i].name, '\0', sizeof(s->read[i].name)) != NULL);
		FUZZ_CHECK(s->read[i].npins >= 0 && s->read[i].npins <= SHAPE_MAX_PINS);
	}
	for (int i = 0; i < s->nwritten; i++)
		FUZZ_CHECK(memchr(s->written[i], '\0', sizeof(s->written[i])) != NULL);
	for (int i = 0; i < s->nrows; i++)
		FUZZ_CHECK(s->rows[i].npins >= 0 && s->rows[i].npins <= SHAPE_MAX_PINS);
	if (s->cacheable_kind)
		FUZZ_CHECK(s->kind == SHAPE_READ && s->not_cacheable == NULL);
	else
		FUZZ_CHECK(s->not_cacheable != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool inited;
	static struct shape_lits lits, lits2;
	/* the text as an exact-size heap copy, so ASan catches reads past its end */
	char *sql = malloc(size ? size : 1);
	size_t full_cap = 2 * size + 64;
	char *full = NULL, small[17];
	uint64_t id, id_small, id_null;
	struct shape *s, *s2;

	if (!inited) {
		/* small bounds, so eviction of shapes and remembered texts is exercised too */
		struct shape_config cfg = { .max_shapes = 64, .max_texts = 128 };
		shape_init(&cfg);
		inited = true;
	}
	memcpy(sql, data, size);

	for (;;) {	/* room for the whole normalized text (it can be longer than the input: "a+b" -> "a + b") */
		full = realloc(full, full_cap);
		id = shape_normalize(sql, size, full, full_cap, &lits);
		FUZZ_CHECK(memchr(full, '\0', full_cap) != NULL);
		if (strlen(full) < full_cap - 1)
			break;
		full_cap *= 2;
	}
	check_lits(&lits, sql, size);
	/* the id covers the whole normalized text, whatever room the output has */
	id_small = shape_normalize(sql, size, small, sizeof(small), NULL);
	FUZZ_CHECK(id_small == id);
	FUZZ_CHECK(memchr(small, '\0', sizeof(small)) != NULL);
	FUZZ_CHECK(strlen(full) < sizeof(small) ? strcmp(small, full) == 0 : strncmp(small, full, sizeof(small) - 1) == 0);
	id_null = shape_normalize(sql, size, small, 1, NULL);
	FUZZ_CHECK(id_null == id && small[0] == '\0');

	s = shape_get(sql, size, &lits2);
	check_shape(s);
	check_lits(&lits2, sql, size);
	check_same_lits(&lits, &lits2);
	if (s->id == id && strcmp(s->normalized, full) != 0) {
		fprintf(stderr, "normalized \"%s\" but the shape says \"%s\"\n", full, s->normalized);
		FUZZ_CHECK(!"shape text matches the normalizer");
	}
	FUZZ_CHECK(s->id == id);
	/* the second lookup of the same text comes from the memo and must agree */
	memset(&lits2, 0xA5, sizeof(lits2));
	s2 = shape_get(sql, size, &lits2);
	FUZZ_CHECK(s2 == s);
	check_lits(&lits2, sql, size);
	check_same_lits(&lits, &lits2);
	shape_unref(s2);
	shape_unref(s);

	free(full);
	free(sql);
	return 0;
}
