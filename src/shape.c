/* shape.c — statement shapes: single-pass normalizer, one-time classification with libpg_query, memo and LRU. */
#include "shape.h"
#include <ctype.h>
#include <pg_query.h>

/* Every key hashed by uthash in this file is already a 64-bit hash: fold it instead of hashing it again. */
#define HASH_FUNCTION(keyptr, keylen, hashv)                                                                       \
	do {                                                                                                       \
		uint64_t hk_;                                                                                      \
		memcpy(&hk_, (keyptr), sizeof(hk_));                                                               \
		(hashv) = (unsigned)(hk_ ^ (hk_ >> 32));                                                           \
	} while (0)
#include <uthash.h>

#define MEMO_MAX_TEXT (32 * 1024) /* longer texts are normalized on every call instead of being remembered */
#define JSON_MAX_DEPTH 1000       /* deeper parse trees are not analyzed: the statement is treated as opaque */
#define MAX_OCC 64                /* table occurrences collected while classifying one text */
#define MAX_FROM 64               /* FROM items of one SELECT level considered for pins */
#define MAX_CONJ 64               /* AND conjuncts of one SELECT level considered for pins */
#define MAX_CTE 64                /* CTE names in scope */
#define MAX_REASONS 256           /* distinct function-name reasons kept (interned) */

/* ------------------------------------------------------------------------------------------------------------ */
/* Hashing: a small word-at-a-time mix (not cryptographic). The streaming form (used while normalizing) and the   */
/* block form (used on exact texts) give the same value for the same bytes.                                      */

#define HK1 0x9E3779B97F4A7C15ULL
#define HK2 0xC2B2AE3D27D4EB4FULL

struct hstate {
	uint64_t h;    /* running state */
	uint64_t acc;  /* bytes not yet mixed, little-endian packed */
	unsigned nacc; /* how many bytes are in acc (0..7) */
	uint64_t len;  /* total bytes fed */
};

static inline uint64_t hstep(uint64_t h, uint64_t w)
{
	h = (h ^ w) * HK1;
	return h ^ (h >> 32);
}

static inline uint64_t hfinal(uint64_t h, uint64_t acc, uint64_t len)
{
	h = hstep(h, acc);
	h ^= len * HK2;
	h ^= h >> 33;
	h *= 0xFF51AFD7ED558CCDULL;
	h ^= h >> 33;
	h *= 0xC4CEB9FE1A85EC53ULL;
	h ^= h >> 33;
	return h;
}

static inline uint64_t load_le64(const unsigned char *p)
{
	uint64_t w;
	memcpy(&w, p, sizeof(w));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap64(w);
#endif
	return w;
}

static inline void hs_init(struct hstate *s)
{
	s->h = HK2;
	s->acc = 0;
	s->nacc = 0;
	s->len = 0;
}

static inline void hs_byte(struct hstate *s, unsigned char c)
{
	s->acc |= (uint64_t)c << (8 * s->nacc);
	s->len++;
	if (++s->nacc == 8) {
		s->h = hstep(s->h, s->acc);
		s->acc = 0;
		s->nacc = 0;
	}
}

/* Feeds a block of bytes (word at a time while aligned with the stream). */
static void hs_feed(struct hstate *s, const unsigned char *p, size_t n)
{
	size_t i = 0;
	if (s->nacc == 0)
		for (; i + 8 <= n; i += 8) {
			s->h = hstep(s->h, load_le64(p + i));
			s->len += 8;
		}
	for (; i < n; i++)
		hs_byte(s, p[i]);
}

static inline uint64_t hs_final(const struct hstate *s)
{
	return hfinal(s->h, s->acc, s->len);
}

static inline uint32_t load_le32(const unsigned char *p)
{
	uint32_t w;
	memcpy(&w, p, sizeof(w));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
	w = __builtin_bswap32(w);
#endif
	return w;
}

/* Hash of a byte string; equals the streaming hash of the same bytes. The last partial word is packed with
 * (overlapping) whole-word loads instead of byte by byte. */
static inline uint64_t hash_bytes(const void *data, size_t len)
{
	const unsigned char *p = data;
	uint64_t h = HK2, acc = 0;
	size_t i = 0, rem;

	for (; i + 8 <= len; i += 8)
		h = hstep(h, load_le64(p + i));
	rem = len - i;
	if (rem == 0) {
		/* no partial word */
	} else if (len >= 8) {
		acc = load_le64(p + len - 8) >> (8 * (8 - rem)); /* the last 8 bytes, of which the top rem are new */
	} else if (rem >= 4) {
		acc = load_le32(p) | (uint64_t)load_le32(p + rem - 4) << (8 * (rem - 4));
	} else {
		for (unsigned k = 0; k < rem; k++)
			acc |= (uint64_t)p[k] << (8 * k);
	}
	return hfinal(h, acc, len);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Normalizer                                                                                                    */

/* Token classes that decide where the normalized text gets a space. */
enum tokc { TK_NONE, TK_WORD, TK_OPEN, TK_OPENB, TK_CLOSE, TK_COMMA, TK_SEMI, TK_DOT, TK_CAST, TK_OTHER };

struct nstate {
	char *restrict out;       /* output buffer (may be NULL when outlen == 0); nothing else is reached through it */
	size_t outlen;            /* its size */
	size_t pos;               /* bytes of normalized text produced so far (may exceed outlen) */
	bool overflowed;          /* out is full: the hash is streamed in hs from then on */
	struct hstate hs;         /* hash of everything produced, once overflowed */
	enum tokc prev;           /* class of the previous token */
	bool ws;                  /* whitespace or a comment since the previous token */
	struct shape_lits *lits;  /* where literals go, or NULL */
	size_t bufpos;            /* bytes used in lits->buf */
	bool lits_full;           /* a literal could not be recorded: record no more (keeps indices aligned) */
};

/* A byte that does not fit in out: hash what out holds (once), then stream. */
static void emit_slow(struct nstate *ns, char c)
{
	if (!ns->overflowed) {
		ns->overflowed = true;
		hs_init(&ns->hs);
		hs_feed(&ns->hs, (const unsigned char *)ns->out, ns->pos);
	}
	hs_byte(&ns->hs, (unsigned char)c);
	ns->pos++;
}

/* Appends one byte of normalized text. While it fits, the hash is left for the end (one block pass). */
static inline void emit(struct nstate *ns, char c)
{
	if (ns->pos + 1 < ns->outlen) {
		ns->out[ns->pos++] = c;
		return;
	}
	emit_slow(ns, c);
}

/* ASCII lower-casing as a table lookup (bytes >= 0x80 and non-letters map to themselves). */
static const unsigned char lower_tab[256] = {
#define L4(b) (b), (b) + 1, (b) + 2, (b) + 3
#define L16(b) L4(b), L4((b) + 4), L4((b) + 8), L4((b) + 12)
	L16(0x00), L16(0x10), L16(0x20), L16(0x30),
	0x40, L4(0x61), L4(0x65), L4(0x69), L4(0x6d), L4(0x71), L4(0x75), 0x79, 0x7a, 0x5b, 0x5c, 0x5d, 0x5e, 0x5f,
	L16(0x60), L16(0x70), L16(0x80), L16(0x90), L16(0xa0), L16(0xb0), L16(0xc0), L16(0xd0), L16(0xe0), L16(0xf0),
#undef L16
#undef L4
};

/* Appends the bytes p[0..n) lower-cased (ASCII only), in one copy when they fit. */
static void emit_lower(struct nstate *ns, const char *p, size_t n)
{
	if (ns->pos + n < ns->outlen) {
		char *o = ns->out + ns->pos;
		for (size_t k = 0; k < n; k++)
			o[k] = (char)lower_tab[(unsigned char)p[k]];
		ns->pos += n;
		return;
	}
	for (size_t k = 0; k < n; k++)
		emit(ns, (p[k] >= 'A' && p[k] <= 'Z') ? (char)(p[k] | 0x20) : p[k]);
}

static void emit_str(struct nstate *ns, const char *s)
{
	while (*s)
		emit(ns, *s++);
}

/* The canonical spacing between the previous token (row) and the next (column): bit 1 = always a space, bit 2 = a
 * space when whitespace or a comment separated them in the text. Nothing after the start of the text or after
 * ( [ . ::, nothing before ) ] , ; . :: [, a space before ( only when the text had one, else a space. */
#define SP_ROW_NORMAL { 1, 1, 2, 0, 0, 0, 0, 0, 0, 1 }
static const unsigned char space_rule[TK_OTHER + 1][TK_OTHER + 1] = {
	[TK_NONE] = { 0 }, [TK_OPEN] = { 0 }, [TK_OPENB] = { 0 }, [TK_DOT] = { 0 }, [TK_CAST] = { 0 },
	[TK_WORD] = SP_ROW_NORMAL, [TK_CLOSE] = SP_ROW_NORMAL, [TK_COMMA] = SP_ROW_NORMAL, [TK_SEMI] = SP_ROW_NORMAL,
	[TK_OTHER] = SP_ROW_NORMAL,
};
#undef SP_ROW_NORMAL

/* Starts a token of class cls: writes the separating space the canonical spacing asks for. */
static inline void begin_token(struct nstate *ns, enum tokc cls)
{
	if (space_rule[ns->prev][cls] & (1u | (unsigned)ns->ws << 1))
		emit(ns, ' ');
	ns->prev = cls;
	ns->ws = false;
}

/* A one-byte token of class cls (with its separating space). */
static inline void emit_token1(struct nstate *ns, enum tokc cls, char c)
{
	if (ns->pos + 2 < ns->outlen) {
		/* both fit: no checks */
		char *o = ns->out + ns->pos;
		if (space_rule[ns->prev][cls] & (1u | (unsigned)ns->ws << 1))
			*o++ = ' ';
		*o++ = c;
		ns->pos = (size_t)(o - ns->out);
		ns->prev = cls;
		ns->ws = false;
		return;
	}
	begin_token(ns, cls);
	emit(ns, c);
}

/* Character classes: bit 1 = may start an identifier, bit 2 = may continue one, bit 4 = blank, bit 8 = may be part
 * of an operator, bit 16 = lets a multi-character operator end in + or - (see op_len). */
static const unsigned char char_class[256] = {
	[' '] = 4, ['\t'] = 4, ['\n'] = 4, ['\r'] = 4, ['\f'] = 4, ['\v'] = 4,
	['+'] = 8, ['-'] = 8, ['*'] = 8, ['/'] = 8, ['<'] = 8, ['>'] = 8, ['='] = 8, ['~'] = 24, ['!'] = 24, ['@'] = 24,
	['#'] = 24, ['%'] = 24, ['^'] = 24, ['&'] = 24, ['|'] = 24, ['`'] = 24, ['?'] = 24,
	['$'] = 2,
	['0'] = 2, ['1'] = 2, ['2'] = 2, ['3'] = 2, ['4'] = 2, ['5'] = 2, ['6'] = 2, ['7'] = 2, ['8'] = 2, ['9'] = 2,
	['_'] = 3,
	['A'] = 3, ['B'] = 3, ['C'] = 3, ['D'] = 3, ['E'] = 3, ['F'] = 3, ['G'] = 3, ['H'] = 3, ['I'] = 3, ['J'] = 3,
	['K'] = 3, ['L'] = 3, ['M'] = 3, ['N'] = 3, ['O'] = 3, ['P'] = 3, ['Q'] = 3, ['R'] = 3, ['S'] = 3, ['T'] = 3,
	['U'] = 3, ['V'] = 3, ['W'] = 3, ['X'] = 3, ['Y'] = 3, ['Z'] = 3,
	['a'] = 3, ['b'] = 3, ['c'] = 3, ['d'] = 3, ['e'] = 3, ['f'] = 3, ['g'] = 3, ['h'] = 3, ['i'] = 3, ['j'] = 3,
	['k'] = 3, ['l'] = 3, ['m'] = 3, ['n'] = 3, ['o'] = 3, ['p'] = 3, ['q'] = 3, ['r'] = 3, ['s'] = 3, ['t'] = 3,
	['u'] = 3, ['v'] = 3, ['w'] = 3, ['x'] = 3, ['y'] = 3, ['z'] = 3,
	[0x80 ... 0xff] = 3,
};

static inline bool is_space(unsigned char c)
{
	return char_class[c] & 4;
}

static inline bool is_ident_start(unsigned char c)
{
	return char_class[c] & 1;
}

static inline bool is_ident_cont(unsigned char c)
{
	return char_class[c] & 2;
}

static inline bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static inline bool is_op_char(unsigned char c)
{
	return char_class[c] & 8;
}

/* Builds one literal's value: a slice of the text while no rewriting was needed, else a copy in lits->buf. Also
 * watches for the date/time words that make a literal mean "the current time" ('now', 'today', …). */
struct litval {
	const char *raw;    /* start of the value in the text (raw mode) */
	size_t rawlen;      /* its length so far */
	bool inbuf;         /* switched to a copy in lits->buf */
	size_t bufstart;    /* where the copy starts in lits->buf */
	bool overflow;      /* the copy did not fit: the literal is not recorded */
	char word[10];      /* current alphabetic word, lower-cased (for the time-word check) */
	int wlen;           /* its length; -1 while inside a word too long to matter */
	bool timeword;      /* a word now/today/tomorrow/yesterday was seen */
	bool unterminated;  /* the text ended inside the literal */
};

static void lv_init(struct litval *lv, const char *raw)
{
	memset(lv, 0, sizeof(*lv));
	lv->raw = raw;
}

static void lv_word_end(struct litval *lv)
{
	switch (lv->wlen) {
	case 3:
		if (!memcmp(lv->word, "now", 3))
			lv->timeword = true;
		break;
	case 5:
		if (!memcmp(lv->word, "today", 5))
			lv->timeword = true;
		break;
	case 8:
		if (!memcmp(lv->word, "tomorrow", 8))
			lv->timeword = true;
		break;
	case 9:
		if (!memcmp(lv->word, "yesterday", 9))
			lv->timeword = true;
		break;
	default:
		break;
	}
	lv->wlen = 0;
}

static inline void lv_watch(struct litval *lv, unsigned char c)
{
	if ((unsigned)((c | 0x20) - 'a') < 26) { /* an ASCII letter */
		if (lv->wlen >= 0 && lv->wlen < (int)sizeof(lv->word) - 1)
			lv->word[lv->wlen++] = (char)(c | 0x20);
		else
			lv->wlen = -1;
	} else if (lv->wlen > 0) {
		lv_word_end(lv);
	} else {
		lv->wlen = 0;
	}
}

/* Switches the value to a copy in lits->buf (when literals are recorded at all). */
static void lv_to_buf(struct nstate *ns, struct litval *lv)
{
	if (lv->inbuf)
		return;
	lv->inbuf = true;
	if (!ns->lits || ns->lits_full) {
		lv->overflow = true;
		return;
	}
	lv->bufstart = ns->bufpos;
	if (ns->bufpos + lv->rawlen > sizeof(ns->lits->buf)) {
		lv->overflow = true;
		return;
	}
	memcpy(ns->lits->buf + ns->bufpos, lv->raw, lv->rawlen);
	ns->bufpos += lv->rawlen;
}

/* Adds one value byte: the next byte of the text (raw mode) or a byte of the rewritten copy. */
static inline void lv_add(struct nstate *ns, struct litval *lv, char c)
{
	lv_watch(lv, (unsigned char)c);
	if (!lv->inbuf) {
		lv->rawlen++;
		return;
	}
	if (lv->overflow)
		return;
	if (ns->bufpos >= sizeof(ns->lits->buf)) {
		lv->overflow = true;
		return;
	}
	ns->lits->buf[ns->bufpos++] = c;
}

/* Records a finished literal that starts at loc. */
static void lit_record(struct nstate *ns, struct litval *lv, size_t loc)
{
	struct shape_lits *l = ns->lits;

	if (!l || ns->lits_full)
		return;
	if (lv->overflow || l->n >= SHAPE_MAX_LITERALS) {
		ns->lits_full = true;
		return;
	}
	if (lv->inbuf) {
		l->v[l->n].value = l->buf + lv->bufstart;
		l->v[l->n].len = ns->bufpos - lv->bufstart;
	} else {
		l->v[l->n].value = lv->raw;
		l->v[l->n].len = lv->rawlen;
	}
	l->v[l->n].location = loc;
	l->n++;
}

/* Emits the placeholder of a literal: '?' or, for a string naming the current time, a marker that gives such
 * texts a shape of their own (their classification differs: they are volatile). */
static void emit_literal(struct nstate *ns, struct litval *lv, bool stringy)
{
	lv_word_end(lv);
	begin_token(ns, TK_OTHER);
	if (stringy && lv->timeword)
		emit_str(ns, "'now?'");
	else
		emit(ns, '?');
	if (lv->unterminated)
		emit_str(ns, "<eof>"); /* never the shape of the complete text, which may parse */
}

/* After a closing quote: PostgreSQL joins 'a' <whitespace with a newline> 'b' into one literal. Returns the index
 * of the continuing quote, or 0 when the literal ends here. */
static size_t quote_continues(const char *sql, size_t len, size_t i)
{
	bool newline = false;
	while (i < len && is_space((unsigned char)sql[i])) {
		if (sql[i] == '\n' || sql[i] == '\r')
			newline = true;
		i++;
	}
	if (newline && i < len && sql[i] == '\'')
		return i;
	return 0;
}

/* Scans a quoted string starting at the quote at index q; backslash: E'' escapes. Returns the index after it. */
static size_t scan_string(struct nstate *ns, const char *sql, size_t len, size_t q, bool backslash,
			  struct litval *lv)
{
	size_t i = q + 1;

	lv_init(lv, sql + i);
	for (;;) {
		if (i >= len) {
			lv->unterminated = true; /* the rest of the text is the literal */
			return len;
		}
		char c = sql[i];
		if (c == '\'') {
			if (i + 1 < len && sql[i + 1] == '\'') {
				lv_to_buf(ns, lv);
				lv_add(ns, lv, '\'');
				i += 2;
				continue;
			}
			size_t next = quote_continues(sql, len, i + 1);
			if (next) {
				lv_to_buf(ns, lv);
				i = next + 1;
				continue;
			}
			return i + 1;
		}
		if (backslash && c == '\\' && i + 1 < len) {
			lv_add(ns, lv, c);
			lv_add(ns, lv, sql[i + 1]);
			i += 2;
			continue;
		}
		lv_add(ns, lv, c);
		i++;
	}
}

/* If sql[i] starts a dollar-quote tag ($$ or $tag$), returns the tag length including both '$', else 0. */
static size_t dollar_tag(const char *sql, size_t len, size_t i)
{
	size_t j = i + 1;
	if (j < len && sql[j] == '$')
		return 2;
	if (j >= len || !is_ident_start((unsigned char)sql[j]))
		return 0;
	while (j < len && (is_ident_start((unsigned char)sql[j]) || is_digit((unsigned char)sql[j])))
		j++;
	if (j < len && sql[j] == '$')
		return j - i + 1;
	return 0;
}

/* Length of the operator starting at i, following PostgreSQL's lexer: stops before a comment start; a multi-char
 * operator may not end in + or - unless it contains one of ~ ! @ # % ^ & | ` ?. */
static size_t op_len(const char *sql, size_t len, size_t i)
{
	size_t j = i;
	bool special = false;

	while (j < len && is_op_char((unsigned char)sql[j])) {
		if ((sql[j] == '-' && j + 1 < len && sql[j + 1] == '-') ||
		    (sql[j] == '/' && j + 1 < len && sql[j + 1] == '*'))
			break; /* a comment starts */
		if (char_class[(unsigned char)sql[j]] & 16)
			special = true;
		j++;
	}
	if (j - i > 1 && !special)
		while (j - i > 1 && (sql[j - 1] == '+' || sql[j - 1] == '-'))
			j--;
	return j > i ? j - i : 1;
}

/* Whether the letter at sql[i] starts a prefixed string or quoted identifier (E'', N'', B'', X'', U&'', U&"")
 * rather than a word. */
static inline bool string_prefix(const char *sql, size_t len, size_t i)
{
	unsigned char l = (unsigned char)(sql[i] | 0x20);
	if (i + 1 >= len)
		return false;
	if (l == 'e' || l == 'n' || l == 'b' || l == 'x')
		return sql[i + 1] == '\'';
	return l == 'u' && i + 2 < len && sql[i + 1] == '&' && (sql[i + 2] == '\'' || sql[i + 2] == '"');
}

/* Dispatch classes of a token's first byte (normalize_impl). */
enum nclass {
	NC_OTHER,  /* a byte that is a token by itself: \ { } and the like */
	NC_SPACE,  /* whitespace */
	NC_WORD,   /* starts a keyword or unquoted identifier */
	NC_PREFIX, /* e n b x u (either case): a word, or the prefix of E'' N'' B'' X'' U&'' U&"" */
	NC_DIGIT,
	NC_QUOTE,  /* ' */
	NC_DQUOTE, /* " */
	NC_DOLLAR, /* $n, $$ or $tag$ quoting, or a lone $ */
	NC_DASH,   /* - : a comment or an operator */
	NC_SLASH,  /* / : a comment or an operator */
	NC_COLON,  /* :: or a lone : */
	NC_DOT,    /* .5 or the . of a qualified name */
	NC_PUNCT,  /* ( ) [ ] , ; */
	NC_OP,     /* another operator character */
	NC_CTRL    /* a control byte outside quotes (not whitespace) */
};

static const unsigned char nclass_tab[256] = {
	[0x00 ... 0x08] = NC_CTRL, [0x0e ... 0x1f] = NC_CTRL,
	[' '] = NC_SPACE, ['\t'] = NC_SPACE, ['\n'] = NC_SPACE, ['\r'] = NC_SPACE, ['\f'] = NC_SPACE, ['\v'] = NC_SPACE,
	[0x7f] = NC_CTRL,
	['+'] = NC_OP, ['*'] = NC_OP, ['<'] = NC_OP, ['>'] = NC_OP, ['='] = NC_OP, ['~'] = NC_OP, ['!'] = NC_OP,
	['@'] = NC_OP, ['#'] = NC_OP, ['%'] = NC_OP, ['^'] = NC_OP, ['&'] = NC_OP, ['|'] = NC_OP, ['`'] = NC_OP,
	['?'] = NC_OP,
	['-'] = NC_DASH, ['/'] = NC_SLASH, [':'] = NC_COLON, ['.'] = NC_DOT, ['\''] = NC_QUOTE, ['"'] = NC_DQUOTE,
	['$'] = NC_DOLLAR,
	['('] = NC_PUNCT, [')'] = NC_PUNCT, ['['] = NC_PUNCT, [']'] = NC_PUNCT, [','] = NC_PUNCT, [';'] = NC_PUNCT,
	['0'] = NC_DIGIT, ['1'] = NC_DIGIT, ['2'] = NC_DIGIT, ['3'] = NC_DIGIT, ['4'] = NC_DIGIT, ['5'] = NC_DIGIT,
	['6'] = NC_DIGIT, ['7'] = NC_DIGIT, ['8'] = NC_DIGIT, ['9'] = NC_DIGIT,
	['_'] = NC_WORD,
	['A'] = NC_WORD, ['B'] = NC_PREFIX, ['C'] = NC_WORD, ['D'] = NC_WORD, ['E'] = NC_PREFIX, ['F'] = NC_WORD,
	['G'] = NC_WORD, ['H'] = NC_WORD, ['I'] = NC_WORD, ['J'] = NC_WORD, ['K'] = NC_WORD, ['L'] = NC_WORD,
	['M'] = NC_WORD, ['N'] = NC_PREFIX, ['O'] = NC_WORD, ['P'] = NC_WORD, ['Q'] = NC_WORD, ['R'] = NC_WORD,
	['S'] = NC_WORD, ['T'] = NC_WORD, ['U'] = NC_PREFIX, ['V'] = NC_WORD, ['W'] = NC_WORD, ['X'] = NC_PREFIX,
	['Y'] = NC_WORD, ['Z'] = NC_WORD,
	['a'] = NC_WORD, ['b'] = NC_PREFIX, ['c'] = NC_WORD, ['d'] = NC_WORD, ['e'] = NC_PREFIX, ['f'] = NC_WORD,
	['g'] = NC_WORD, ['h'] = NC_WORD, ['i'] = NC_WORD, ['j'] = NC_WORD, ['k'] = NC_WORD, ['l'] = NC_WORD,
	['m'] = NC_WORD, ['n'] = NC_PREFIX, ['o'] = NC_WORD, ['p'] = NC_WORD, ['q'] = NC_WORD, ['r'] = NC_WORD,
	['s'] = NC_WORD, ['t'] = NC_WORD, ['u'] = NC_PREFIX, ['v'] = NC_WORD, ['w'] = NC_WORD, ['x'] = NC_PREFIX,
	['y'] = NC_WORD, ['z'] = NC_WORD,
	[0x80 ... 0xff] = NC_WORD,
};

/* The byte as it appears in a normalized word (ASCII lower-cased) when it may continue an identifier, else 0. */
static const unsigned char word_byte[256] = {
	['$'] = '$', ['_'] = '_',
	['0'] = '0', ['1'] = '1', ['2'] = '2', ['3'] = '3', ['4'] = '4', ['5'] = '5', ['6'] = '6', ['7'] = '7',
	['8'] = '8', ['9'] = '9',
	['A'] = 'a', ['B'] = 'b', ['C'] = 'c', ['D'] = 'd', ['E'] = 'e', ['F'] = 'f', ['G'] = 'g', ['H'] = 'h',
	['I'] = 'i', ['J'] = 'j', ['K'] = 'k', ['L'] = 'l', ['M'] = 'm', ['N'] = 'n', ['O'] = 'o', ['P'] = 'p',
	['Q'] = 'q', ['R'] = 'r', ['S'] = 's', ['T'] = 't', ['U'] = 'u', ['V'] = 'v', ['W'] = 'w', ['X'] = 'x',
	['Y'] = 'y', ['Z'] = 'z',
	['a'] = 'a', ['b'] = 'b', ['c'] = 'c', ['d'] = 'd', ['e'] = 'e', ['f'] = 'f', ['g'] = 'g', ['h'] = 'h',
	['i'] = 'i', ['j'] = 'j', ['k'] = 'k', ['l'] = 'l', ['m'] = 'm', ['n'] = 'n', ['o'] = 'o', ['p'] = 'p',
	['q'] = 'q', ['r'] = 'r', ['s'] = 's', ['t'] = 't', ['u'] = 'u', ['v'] = 'v', ['w'] = 'w', ['x'] = 'x',
	['y'] = 'y', ['z'] = 'z',
#define WB4(b) [b] = b, [(b) + 1] = (b) + 1, [(b) + 2] = (b) + 2, [(b) + 3] = (b) + 3
#define WB16(b) WB4(b), WB4((b) + 4), WB4((b) + 8), WB4((b) + 12)
	WB16(0x80), WB16(0x90), WB16(0xa0), WB16(0xb0), WB16(0xc0), WB16(0xd0), WB16(0xe0), WB16(0xf0),
#undef WB16
#undef WB4
};

/* Records a literal that is a plain slice of the text (a number). */
static inline void lit_record_raw(struct nstate *ns, const char *sql, size_t start, size_t end)
{
	struct shape_lits *l = ns->lits;

	if (!l || ns->lits_full)
		return;
	if (l->n >= SHAPE_MAX_LITERALS) {
		ns->lits_full = true;
		return;
	}
	l->v[l->n].value = sql + start;
	l->v[l->n].len = end - start;
	l->v[l->n].location = start;
	l->n++;
}

/* The normalizer proper; *needed receives the full length of the normalized text (without the NUL). One switch on
 * the first byte's class per token; words, numbers, blanks and punctuation take a fast path that writes straight
 * into out when the rest of the text is sure to fit. */
static uint64_t normalize_impl(const char *sql, size_t len, char *out, size_t outlen, struct shape_lits *lits,
			       size_t *needed)
{
	struct nstate ns;
	size_t i = 0;

	memset(&ns, 0, sizeof(ns));
	ns.out = out;
	ns.outlen = out ? outlen : 0;
	ns.lits = lits;
	if (lits)
		lits->n = 0;
	if (!sql)
		len = 0;

	while (i < len) {
		unsigned char c = (unsigned char)sql[i];
		struct litval lv;

		if (nclass_tab[c] == NC_SPACE) {
			/* blanks before a token: skipped here rather than as a token of their own */
			ns.ws = true;
			i++;
			while (i < len && nclass_tab[(unsigned char)sql[i]] == NC_SPACE)
				i++;
			if (i >= len)
				break;
			c = (unsigned char)sql[i];
		}
		switch ((enum nclass)nclass_tab[c]) {
		case NC_SPACE:
			continue; /* not reached: blanks were skipped above */
		case NC_PREFIX:
			if (string_prefix(sql, len, i))
				break; /* a prefixed string or quoted identifier: below */
			/* fall through */
		case NC_WORD: {
			/* the common case: a keyword or an unquoted identifier */
			size_t j = i;
			if (ns.pos + 1 + (len - i) < ns.outlen) {
				/* the space and the whole rest of the text fit: write without checks */
				char *o = ns.out + ns.pos;
				if (space_rule[ns.prev][TK_WORD] & (1u | (unsigned)ns.ws << 1))
					*o++ = ' ';
				ns.prev = TK_WORD;
				ns.ws = false;
				const unsigned char *p = (const unsigned char *)sql + i, *end = (const unsigned char *)sql + len;
				unsigned char d;
			next_word:
				/* four bytes per round while the text has them, then byte by byte */
				for (; p + 4 <= end; p += 4, o += 4) {
					if (!(d = word_byte[p[0]]))
						goto word_end;
					o[0] = (char)d;
					if (!(d = word_byte[p[1]])) {
						p += 1, o += 1;
						goto word_end;
					}
					o[1] = (char)d;
					if (!(d = word_byte[p[2]])) {
						p += 2, o += 2;
						goto word_end;
					}
					o[2] = (char)d;
					if (!(d = word_byte[p[3]])) {
						p += 3, o += 3;
						goto word_end;
					}
					o[3] = (char)d;
				}
				while (p < end && (d = word_byte[*p]) != 0) {
					*o++ = (char)d;
					p++;
				}
			word_end:
				/* the commonest sequences go on without a dispatch: word, one blank, word (always one space
				 * between two words); word.word (never a space around .); word, one blank, word (a comma gets no
				 * space before and one after). Each writes one output byte per input byte, so the room check above
				 * still covers them. */
				if (p + 1 < end) {
					const unsigned char *w;
					unsigned char b = *p, k;
					if (nclass_tab[b] == NC_SPACE || b == '.')
						w = p + 1;
					else if (b == ',' && p + 2 < end && nclass_tab[p[1]] == NC_SPACE)
						w = p + 2;
					else
						goto word_done;
					k = nclass_tab[*w];
					if (k == NC_WORD ||
					    (k == NC_PREFIX && !string_prefix(sql, len, (size_t)(w - (const unsigned char *)sql)))) {
						if (b == ',') {
							*o++ = ',';
							*o++ = ' ';
						} else {
							*o++ = b == '.' ? '.' : ' ';
						}
						p = w;
						goto next_word;
					}
				}
			word_done:
				j = (size_t)(p - (const unsigned char *)sql);
				ns.pos = (size_t)(o - ns.out);
			} else {
				begin_token(&ns, TK_WORD);
				j = i + 1;
				while (j < len && is_ident_cont((unsigned char)sql[j]))
					j++;
				emit_lower(&ns, sql + i, j - i);
			}
			i = j;
			continue;
		}
		case NC_DOT:
			if (i + 1 < len && is_digit((unsigned char)sql[i + 1]))
				goto number;
			/* fall through */
		case NC_PUNCT: {
			enum tokc cls = c == '(' ? TK_OPEN : c == '[' ? TK_OPENB : (c == ')' || c == ']') ? TK_CLOSE
				      : c == ',' ? TK_COMMA : c == ';' ? TK_SEMI : TK_DOT;
			emit_token1(&ns, cls, (char)c);
			i++;
			continue;
		}
		case NC_DIGIT:
		number: {
			size_t start = i;
			while (i < len && is_digit((unsigned char)sql[i]))
				i++;
			if (i < len && sql[i] == '.' && !(i + 1 < len && sql[i + 1] == '.')) {
				i++;
				while (i < len && is_digit((unsigned char)sql[i]))
					i++;
			}
			if (i < len && (sql[i] == 'e' || sql[i] == 'E')) {
				size_t j = i + 1;
				if (j < len && (sql[j] == '+' || sql[j] == '-'))
					j++;
				if (j < len && is_digit((unsigned char)sql[j])) {
					while (j < len && is_digit((unsigned char)sql[j]))
						j++;
					i = j;
				}
			}
			emit_token1(&ns, TK_OTHER, '?');
			lit_record_raw(&ns, sql, start, i);
			continue;
		}
		case NC_DASH:
			if (i + 1 < len && sql[i + 1] == '-') {
				while (i < len && sql[i] != '\n' && sql[i] != '\r')
					i++;
				ns.ws = true;
				continue;
			}
			goto op;
		case NC_SLASH:
			if (i + 1 < len && sql[i + 1] == '*') {
				int depth = 1;
				i += 2;
				while (i < len && depth > 0) {
					if (sql[i] == '/' && i + 1 < len && sql[i + 1] == '*') {
						depth++;
						i += 2;
					} else if (sql[i] == '*' && i + 1 < len && sql[i + 1] == '/') {
						depth--;
						i += 2;
					} else {
						i++;
					}
				}
				if (depth > 0) {
					begin_token(&ns, TK_OTHER);
					emit_str(&ns, "/*<eof>");
				}
				ns.ws = true;
				continue;
			}
			/* fall through */
		case NC_OP:
		op: {
			size_t n = op_len(sql, len, i);
			if (n == 1) {
				emit_token1(&ns, TK_OTHER, (char)c);
				i++;
				continue;
			}
			begin_token(&ns, TK_OTHER);
			for (size_t k = 0; k < n; k++)
				emit(&ns, sql[i + k]);
			i += n;
			continue;
		}
		case NC_COLON:
			if (i + 1 < len && sql[i + 1] == ':') {
				begin_token(&ns, TK_CAST);
				emit(&ns, ':');
				emit(&ns, ':');
				i += 2;
				continue;
			}
			goto other;
		case NC_CTRL: {
			/* control bytes (NUL included) outside quotes: kept visible and distinct, never raw */
			static const char hex[] = "0123456789abcdef";
			begin_token(&ns, TK_OTHER);
			emit(&ns, '\\');
			emit(&ns, 'x');
			emit(&ns, hex[c >> 4]);
			emit(&ns, hex[c & 15]);
			i++;
			continue;
		}
		case NC_QUOTE:
		case NC_DQUOTE:
		case NC_DOLLAR:
			break; /* below */
		case NC_OTHER:
		default:
		other:
			begin_token(&ns, TK_OTHER);
			emit(&ns, (char)c);
			i++;
			continue;
		}

		/* quoted strings, quoted identifiers and $ forms */
		if (c == '\'') {
			size_t start = i;
			i = scan_string(&ns, sql, len, i, false, &lv);
			emit_literal(&ns, &lv, true);
			lit_record(&ns, &lv, start);
		} else if ((c == 'e' || c == 'E' || c == 'n' || c == 'N') && i + 1 < len && sql[i + 1] == '\'') {
			size_t start = i;
			i = scan_string(&ns, sql, len, i + 1, c == 'e' || c == 'E', &lv);
			emit_literal(&ns, &lv, true);
			lit_record(&ns, &lv, start);
		} else if ((c == 'b' || c == 'B' || c == 'x' || c == 'X') && i + 1 < len && sql[i + 1] == '\'') {
			size_t start = i;
			i = scan_string(&ns, sql, len, i + 1, false, &lv);
			emit_literal(&ns, &lv, false);
			lit_record(&ns, &lv, start);
		} else if ((c == 'u' || c == 'U') && i + 2 < len && sql[i + 1] == '&' && sql[i + 2] == '\'') {
			size_t start = i;
			i = scan_string(&ns, sql, len, i + 2, false, &lv);
			emit_literal(&ns, &lv, true);
			lit_record(&ns, &lv, start);
		} else if (c == '"' || ((c == 'u' || c == 'U') && i + 2 < len && sql[i + 1] == '&' && sql[i + 2] == '"')) {
			/* quoted identifier: kept as written (control bytes escaped so the text is safe to log) */
			size_t j = c == '"' ? i : i + 2;
			begin_token(&ns, TK_WORD);
			for (size_t k = i; k <= j; k++)
				emit(&ns, sql[k] == 'U' ? 'u' : sql[k]);
			j++;
			while (j < len) {
				unsigned char d = (unsigned char)sql[j];
				if (d == '"') {
					emit(&ns, '"');
					if (j + 1 < len && sql[j + 1] == '"') {
						emit(&ns, '"');
						j += 2;
						continue;
					}
					j++;
					break;
				}
				if (d < 0x20 || d == 0x7f) {
					static const char hex[] = "0123456789abcdef";
					emit(&ns, '\\');
					emit(&ns, 'x');
					emit(&ns, hex[d >> 4]);
					emit(&ns, hex[d & 15]);
				} else {
					emit(&ns, (char)d);
				}
				j++;
			}
			i = j;
		} else if (c == '$') {
			size_t tag = dollar_tag(sql, len, i);
			if (i + 1 < len && is_digit((unsigned char)sql[i + 1])) {
				begin_token(&ns, TK_OTHER);
				emit(&ns, '$');
				i++;
				while (i < len && is_digit((unsigned char)sql[i]))
					emit(&ns, sql[i++]);
			} else if (tag) {
				size_t start = i, body = i + tag, j = body;
				/* find the closing tag */
				while (j < len && !(sql[j] == '$' && j + tag <= len && !memcmp(sql + j, sql + i, tag)))
					j++;
				lv_init(&lv, sql + body);
				for (size_t k = body; k < j; k++)
					lv_add(&ns, &lv, sql[k]);
				lv.unterminated = j >= len;
				i = j < len ? j + tag : len;
				emit_literal(&ns, &lv, true);
				lit_record(&ns, &lv, start);
			} else {
				begin_token(&ns, TK_OTHER);
				emit(&ns, '$');
				i++;
			}
		}
	}
	if (ns.outlen > 0)
		ns.out[ns.pos < ns.outlen ? ns.pos : ns.outlen - 1] = '\0';
	if (needed)
		*needed = ns.pos;
	return ns.overflowed ? hs_final(&ns.hs) : hash_bytes(ns.out, ns.pos);
}

uint64_t shape_normalize(const char *sql, size_t len, char *out, size_t outlen, struct shape_lits *lits)
{
	return normalize_impl(sql, len, out, outlen, lits, NULL);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* A small JSON reader for libpg_query's parse tree (pg_query_parse). Nodes live in an arena freed at once.      */

enum jtype { JN_NULL, JN_BOOL, JN_NUM, JN_STR, JN_ARR, JN_OBJ };

struct jnode {
	enum jtype type;
	const char *key;     /* member name when inside an object */
	struct jnode *next;  /* next sibling (member or element) */
	struct jnode *child; /* first member / element */
	const char *str;     /* JN_STR: the unescaped value; JN_NUM: the number as written */
	long long num;       /* JN_NUM: integer value */
	bool b;              /* JN_BOOL */
};

struct arena_chunk {
	struct arena_chunk *next;
	size_t used, size;
	char data[];
};

struct arena {
	struct arena_chunk *head;
};

#define ARENA_CHUNK 60000
static struct arena_chunk *arena_spare; /* one chunk kept between classifications */

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->head->used + n > a->head->size) {
		size_t size = n > ARENA_CHUNK ? n : ARENA_CHUNK;
		struct arena_chunk *c;
		if (size == ARENA_CHUNK && arena_spare) {
			c = arena_spare;
			arena_spare = NULL;
		} else {
			c = xmalloc(sizeof(*c) + size);
		}
		c->next = a->head;
		c->used = 0;
		c->size = size;
		a->head = c;
	}
	void *p = a->head->data + a->head->used;
	a->head->used += n;
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct arena_chunk *n = a->head->next;
		if (!arena_spare && a->head->size == ARENA_CHUNK)
			arena_spare = a->head;
		else
			free(a->head);
		a->head = n;
	}
}

struct jparser {
	const char *p, *end;
	struct arena *a;
	int depth;
	bool failed;
};

static void jskip_ws(struct jparser *jp)
{
	while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\n' || *jp->p == '\r' || *jp->p == '\t'))
		jp->p++;
}

static void put_utf8(char **o, unsigned cp)
{
	char *d = *o;
	if (cp < 0x80) {
		*d++ = (char)cp;
	} else if (cp < 0x800) {
		*d++ = (char)(0xC0 | (cp >> 6));
		*d++ = (char)(0x80 | (cp & 0x3F));
	} else if (cp < 0x10000) {
		*d++ = (char)(0xE0 | (cp >> 12));
		*d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
		*d++ = (char)(0x80 | (cp & 0x3F));
	} else {
		*d++ = (char)(0xF0 | (cp >> 18));
		*d++ = (char)(0x80 | ((cp >> 12) & 0x3F));
		*d++ = (char)(0x80 | ((cp >> 6) & 0x3F));
		*d++ = (char)(0x80 | (cp & 0x3F));
	}
	*o = d;
}

/* Reads a JSON string (at the opening quote) into the arena. */
static const char *jstring(struct jparser *jp)
{
	const char *s = ++jp->p, *q = s;
	while (q < jp->end && *q != '"') {
		if (*q == '\\')
			q++;
		q++;
	}
	if (q >= jp->end) {
		jp->failed = true;
		return "";
	}
	char *out = arena_alloc(jp->a, (size_t)(q - s) + 4), *o = out;
	while (s < q) {
		if (*s != '\\') {
			*o++ = *s++;
			continue;
		}
		s++;
		switch (*s) {
		case 'n': *o++ = '\n'; s++; break;
		case 't': *o++ = '\t'; s++; break;
		case 'r': *o++ = '\r'; s++; break;
		case 'b': *o++ = '\b'; s++; break;
		case 'f': *o++ = '\f'; s++; break;
		case 'u': {
			unsigned cp = 0;
			int k;
			for (k = 1; k <= 4 && s + k < q && hexval(s[k]) >= 0; k++)
				cp = cp * 16 + (unsigned)hexval(s[k]);
			s += k;
			if (cp >= 0xD800 && cp < 0xDC00 && s + 5 < q && s[0] == '\\' && s[1] == 'u') {
				unsigned lo = 0;
				for (k = 2; k <= 5 && hexval(s[k]) >= 0; k++)
					lo = lo * 16 + (unsigned)hexval(s[k]);
				if (lo >= 0xDC00 && lo < 0xE000) {
					cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
					s += 6;
				}
			}
			put_utf8(&o, cp);
			break;
		}
		default: *o++ = *s++; break;
		}
	}
	*o = '\0';
	jp->p = q + 1;
	return out;
}

static struct jnode *jvalue(struct jparser *jp)
{
	struct jnode *n;

	jskip_ws(jp);
	if (jp->failed || jp->p >= jp->end || ++jp->depth > JSON_MAX_DEPTH) {
		jp->failed = true;
		return NULL;
	}
	n = arena_alloc(jp->a, sizeof(*n));
	memset(n, 0, sizeof(*n));
	char c = *jp->p;
	if (c == '{' || c == '[') {
		struct jnode **tail = &n->child;
		char close = c == '{' ? '}' : ']';
		n->type = c == '{' ? JN_OBJ : JN_ARR;
		jp->p++;
		jskip_ws(jp);
		if (jp->p < jp->end && *jp->p == close) {
			jp->p++;
		} else {
			for (;;) {
				const char *key = NULL;
				jskip_ws(jp);
				if (n->type == JN_OBJ) {
					if (jp->p >= jp->end || *jp->p != '"') {
						jp->failed = true;
						break;
					}
					key = jstring(jp);
					jskip_ws(jp);
					if (jp->p >= jp->end || *jp->p != ':') {
						jp->failed = true;
						break;
					}
					jp->p++;
				}
				struct jnode *v = jvalue(jp);
				if (!v)
					break;
				v->key = key;
				*tail = v;
				tail = &v->next;
				jskip_ws(jp);
				if (jp->p < jp->end && *jp->p == ',') {
					jp->p++;
					continue;
				}
				if (jp->p < jp->end && *jp->p == close) {
					jp->p++;
					break;
				}
				jp->failed = true;
				break;
			}
		}
	} else if (c == '"') {
		n->type = JN_STR;
		n->str = jstring(jp);
	} else if (c == 't' && jp->end - jp->p >= 4 && !memcmp(jp->p, "true", 4)) {
		n->type = JN_BOOL;
		n->b = true;
		jp->p += 4;
	} else if (c == 'f' && jp->end - jp->p >= 5 && !memcmp(jp->p, "false", 5)) {
		n->type = JN_BOOL;
		jp->p += 5;
	} else if (c == 'n' && jp->end - jp->p >= 4 && !memcmp(jp->p, "null", 4)) {
		n->type = JN_NULL;
		jp->p += 4;
	} else if (c == '-' || is_digit((unsigned char)c)) {
		const char *s = jp->p;
		while (jp->p < jp->end && strchr("+-0123456789.eE", *jp->p) && *jp->p)
			jp->p++;
		char *t = arena_alloc(jp->a, (size_t)(jp->p - s) + 1);
		memcpy(t, s, (size_t)(jp->p - s));
		t[jp->p - s] = '\0';
		n->type = JN_NUM;
		n->str = t;
		n->num = strtoll(t, NULL, 10);
	} else {
		jp->failed = true;
	}
	jp->depth--;
	return jp->failed ? NULL : n;
}

static const struct jnode *jget(const struct jnode *obj, const char *key)
{
	if (!obj || obj->type != JN_OBJ)
		return NULL;
	for (const struct jnode *m = obj->child; m; m = m->next)
		if (!strcmp(m->key, key))
			return m;
	return NULL;
}

static const char *jstr(const struct jnode *obj, const char *key)
{
	const struct jnode *v = jget(obj, key);
	return v && v->type == JN_STR ? v->str : NULL;
}

static long long jint(const struct jnode *obj, const char *key, long long dflt)
{
	const struct jnode *v = jget(obj, key);
	return v && v->type == JN_NUM ? v->num : dflt;
}

static bool jbool(const struct jnode *obj, const char *key)
{
	const struct jnode *v = jget(obj, key);
	return v && v->type == JN_BOOL && v->b;
}

static bool jeq(const struct jnode *obj, const char *key, const char *want)
{
	const char *s = jstr(obj, key);
	return s && !strcmp(s, want);
}

/* A parse-tree node is written {"TypeName": {fields}}: returns the fields and sets *type, or NULL. */
static const struct jnode *junwrap(const struct jnode *v, const char **type)
{
	if (!v || v->type != JN_OBJ || !v->child || v->child->next || !v->child->key)
		return NULL;
	if (!(v->child->key[0] >= 'A' && v->child->key[0] <= 'Z'))
		return NULL;
	*type = v->child->key;
	return v->child;
}

/* The body of a node of the given type, or NULL. */
static const struct jnode *jnode_of(const struct jnode *v, const char *type)
{
	const char *t;
	const struct jnode *b = junwrap(v, &t);
	return b && !strcmp(t, type) ? b : NULL;
}

/* The value of a String node ({"String": {"sval": "x"}}), or NULL. */
static const char *jstring_node(const struct jnode *v)
{
	const struct jnode *b = jnode_of(v, "String");
	if (!b)
		return NULL;
	const char *s = jstr(b, "sval");
	return s ? s : "";
}

static int jcount(const struct jnode *arr)
{
	int n = 0;
	if (arr && (arr->type == JN_ARR || arr->type == JN_OBJ))
		for (const struct jnode *e = arr->child; e; e = e->next)
			n++;
	return n;
}

static const struct jnode *jat(const struct jnode *arr, int i)
{
	if (!arr || arr->type != JN_ARR)
		return NULL;
	const struct jnode *e = arr->child;
	while (e && i-- > 0)
		e = e->next;
	return e;
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Classification                                                                                                */

/* A table occurrence found while walking; occurrences of the same table are merged at the end (pins intersect). */
struct occ {
	char name[SHAPE_NAME_MAX];
	int npins;
	struct shape_pin pins[SHAPE_MAX_PINS];
};

enum rv_mode { RV_READ, RV_WRITE };

struct cls {
	struct shape *s;                 /* shape being filled */
	const struct shape_lits *lits;   /* literals of the text being classified */
	int nocc;
	bool occ_overflow;
	const char *cte[MAX_CTE];        /* CTE names in scope (innermost last) */
	int ncte;
	bool cte_overflow;               /* too many: unqualified names are then never taken as CTEs (safe side) */
	enum rv_mode rv_mode;            /* how a RangeVar met by the generic walk counts */
	int depth;
	bool too_deep;
	int dml_depth;                   /* > 0 while inside a top-level INSERT/UPDATE/DELETE/MERGE */
	bool modifying_cte;              /* a data-modifying statement nested in another */
	bool select_into;
	bool show;
	const char *volatile_reason;     /* first volatile/unknown function reason */
	const char *locking_reason;
	bool unknown_writes;             /* something that may write tables we cannot name */
	bool set_config;                 /* calls set_config(): changes a setting we cannot name */
	struct occ occ[MAX_OCC];         /* last: not cleared between classifications (add_occ sets what it uses) */
};

static struct cls cls_state; /* classification is not reentrant; one state, reused (keeps the hot heap quiet) */

static void walk(struct cls *c, const struct jnode *v);
static void select_stmt(struct cls *c, const struct jnode *b, bool pinnable);
static void dml_stmt(struct cls *c, const char *type, const struct jnode *b, bool top);

/* Interned reason texts naming a function: they live as long as the module (never freed while a shape may point at
 * them), bounded in number. */
static char *reasons[MAX_REASONS];
static int nreasons;

static const char *intern_reason(const char *prefix, const char *name, const char *suffix, const char *fallback)
{
	char buf[SHAPE_NAME_MAX * 2 + 64];
	snprintf(buf, sizeof(buf), "%s%s%s", prefix, name, suffix);
	for (int i = 0; i < nreasons; i++)
		if (!strcmp(reasons[i], buf))
			return reasons[i];
	if (nreasons >= MAX_REASONS)
		return fallback;
	reasons[nreasons] = xstrdup(buf);
	return reasons[nreasons++];
}

static void copy_name(char *dst, const char *src)
{
	if (!strlcpy_ok(dst, src ? src : "", SHAPE_NAME_MAX))
		dst[SHAPE_NAME_MAX - 1] = '\0';
}

static bool cte_in_scope(const struct cls *c, const char *name)
{
	if (c->cte_overflow)
		return false;
	for (int i = c->ncte - 1; i >= 0; i--)
		if (!strcmp(c->cte[i], name))
			return true;
	return false;
}

static void add_written(struct cls *c, const char *name)
{
	struct shape *s = c->s;
	for (int i = 0; i < s->nwritten; i++)
		if (!strcmp(s->written[i], name))
			return;
	if (s->nwritten >= SHAPE_MAX_TABLES) {
		s->write_all_tables = true;
		return;
	}
	copy_name(s->written[s->nwritten++], name);
}

/* Records a table read; returns the occurrence index, or -1 when not tracked (overflow). */
static int add_occ(struct cls *c, const char *name)
{
	if (c->nocc >= MAX_OCC) {
		c->occ_overflow = true;
		return -1;
	}
	struct occ *o = &c->occ[c->nocc];
	copy_name(o->name, name);
	o->npins = 0;
	return c->nocc++;
}

static bool is_temp_rangevar(const struct jnode *rv)
{
	const char *schema = jstr(rv, "schemaname");
	return (schema && !strncmp(schema, "pg_temp", 7)) || jeq(rv, "relpersistence", "t");
}

/* A RangeVar body: a table read or written. Returns the occurrence index for reads (-1: CTE or untracked). */
static int rangevar(struct cls *c, const struct jnode *rv, enum rv_mode mode)
{
	const char *name = jstr(rv, "relname");
	if (!name)
		return -1;
	if (is_temp_rangevar(rv))
		c->s->uses_temp = true;
	if (mode == RV_WRITE) {
		add_written(c, name);
		return -1;
	}
	if (!jstr(rv, "schemaname") && !jstr(rv, "catalogname") && cte_in_scope(c, name))
		return -1;
	return add_occ(c, name);
}

/* Walks every member of an object except those named in skip (NULL-terminated). */
static void walk_members(struct cls *c, const struct jnode *obj, const char *const *skip)
{
	if (!obj)
		return;
	for (const struct jnode *m = obj->child; m; m = m->next) {
		bool skipped = false;
		for (const char *const *k = skip; k && *k; k++)
			if (m->key && !strcmp(m->key, *k))
				skipped = true;
		if (!skipped)
			walk(c, m);
	}
}

/* Function names: known safe (deterministic given the cache key), known volatile but free of writes, or unknown. */
static const char *const safe_funcs[] = {
	"abs", "array_agg", "array_append", "array_cat", "array_length", "array_lower", "array_position",
	"array_positions", "array_prepend", "array_remove", "array_replace", "array_to_json", "array_to_string",
	"array_upper", "avg", "bit_and", "bit_or", "bool_and", "bool_or", "btrim", "cardinality", "cbrt", "ceil",
	"ceiling", "char_length", "character_length", "coalesce", "concat", "concat_ws", "count", "cume_dist",
	"date_part", "date_trunc", "decode", "dense_rank", "div", "encode", "every", "exp", "extract", "first_value",
	"floor", "format", "generate_series", "generate_subscripts", "greatest", "initcap", "json_agg",
	"json_array_elements", "json_array_elements_text", "json_array_length", "json_build_array",
	"json_build_object", "json_each", "json_each_text", "json_extract_path", "json_extract_path_text",
	"json_object", "json_object_agg", "json_object_keys", "json_populate_record", "json_strip_nulls",
	"json_typeof", "jsonb_agg", "jsonb_array_elements", "jsonb_array_elements_text", "jsonb_array_length",
	"jsonb_build_array", "jsonb_build_object", "jsonb_concat", "jsonb_contained", "jsonb_contains",
	"jsonb_delete", "jsonb_each", "jsonb_each_text", "jsonb_exists", "jsonb_exists_all", "jsonb_exists_any",
	"jsonb_extract_path", "jsonb_extract_path_text", "jsonb_insert", "jsonb_object", "jsonb_object_agg",
	"jsonb_object_keys", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query", "jsonb_path_query_array",
	"jsonb_path_query_first", "jsonb_populate_record", "jsonb_pretty", "jsonb_set", "jsonb_strip_nulls",
	"jsonb_to_record", "jsonb_typeof", "lag", "last_value", "lead", "least", "left", "length", "ln", "log",
	"lower", "lpad", "ltrim", "max", "md5", "min", "mod", "nth_value", "ntile", "nullif", "octet_length",
	"overlay", "percent_rank", "percentile_cont", "percentile_disc", "position", "power", "quote_ident",
	"quote_literal", "quote_nullable", "rank", "regexp_match", "regexp_matches", "regexp_replace",
	"regexp_split_to_array", "regexp_split_to_table", "repeat", "replace", "reverse", "right", "round",
	"row_number", "row_to_json", "rpad", "rtrim", "sha224", "sha256", "sha384", "sha512", "sign", "split_part",
	"sqrt", "starts_with", "stddev", "stddev_pop", "stddev_samp", "string_agg", "string_to_array", "strpos",
	"substr", "substring", "sum", "to_char", "to_date", "to_hex", "to_json", "to_jsonb", "to_number",
	"to_timestamp", "to_tsquery", "to_tsvector", "plainto_tsquery", "phraseto_tsquery", "websearch_to_tsquery",
	"ts_rank", "ts_rank_cd", "ts_headline", "translate", "trim", "trunc", "unnest", "upper", "var_pop",
	"var_samp", "variance", "width_bucket", "array_fill", "array_dims", "array_ndims", "jsonb_array_append",
	"json_populate_recordset", "jsonb_populate_recordset", "jsonb_to_recordset", "json_to_record",
	"json_to_recordset", "num_nonnulls", "num_nulls", "pg_typeof", "current_schema", "current_schemas",
	"current_database", "pg_size_pretty",
};

static const char *const volatile_funcs[] = {
	"now", "random", "nextval", "currval", "lastval", "setval", "clock_timestamp", "statement_timestamp",
	"transaction_timestamp", "timeofday", "gen_random_uuid", "uuid_generate_v1", "uuid_generate_v1mc",
	"uuid_generate_v4", "pg_sleep", "pg_sleep_for", "pg_sleep_until", "set_config", "current_setting",
	"pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_unlock", "pg_advisory_unlock_all",
	"pg_try_advisory_lock", "pg_try_advisory_xact_lock", "pg_advisory_lock_shared",
	"pg_advisory_xact_lock_shared", "pg_advisory_unlock_shared", "pg_try_advisory_lock_shared",
	"pg_try_advisory_xact_lock_shared", "txid_current", "txid_current_if_assigned", "pg_current_xact_id",
	"pg_current_xact_id_if_assigned", "pg_backend_pid", "pg_notify", "age", "setseed", "inet_client_addr",
	"inet_client_port", "inet_server_addr", "inet_server_port", "pg_postmaster_start_time", "version",
	"pg_is_in_recovery", "pg_current_wal_lsn", "pg_cancel_backend", "pg_terminate_backend", "txid_snapshot_xmax",
	"txid_current_snapshot", "pg_current_snapshot", "localtimestamp", "current_timestamp", "current_date",
	/* stable, but their results follow catalogs or grants that no table write announces */
	"has_table_privilege", "has_schema_privilege", "has_column_privilege", "has_database_privilege",
	"has_function_privilege", "has_sequence_privilege", "has_any_column_privilege", "pg_has_role",
	"format_type", "pg_get_expr", "pg_get_indexdef", "pg_get_constraintdef", "pg_get_viewdef",
	"pg_get_serial_sequence", "pg_get_userbyid", "pg_get_functiondef", "obj_description", "col_description",
	"shobj_description", "to_regclass", "to_regtype", "to_regproc", "to_regnamespace", "to_regrole",
	"pg_table_is_visible", "pg_type_is_visible", "pg_relation_size", "pg_total_relation_size",
	"pg_table_size", "pg_indexes_size", "pg_database_size",
};

static bool in_list(const char *const *list, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(list[i], name))
			return true;
	return false;
}

static void set_volatile(struct cls *c, const char *reason)
{
	c->s->has_volatile = true;
	if (!c->volatile_reason)
		c->volatile_reason = reason;
}

/* A FuncCall: checks the function name against the lists. */
static void func_call(struct cls *c, const struct jnode *b)
{
	const struct jnode *names = jget(b, "funcname");
	int n = jcount(names);
	const char *schema = n >= 2 ? jstring_node(jat(names, n - 2)) : NULL;
	const char *name = n >= 1 ? jstring_node(jat(names, n - 1)) : NULL;

	if (!name) {
		set_volatile(c, "unknown function");
		c->unknown_writes = true;
		return;
	}
	if (schema && strcmp(schema, "pg_catalog") != 0) {
		set_volatile(c, intern_reason("function ", name, "() is not known to be stable",
					      "a function not known to be stable"));
		c->unknown_writes = true;
		return;
	}
	if (in_list(safe_funcs, ARRAY_SIZE(safe_funcs), name))
		return;
	if (!strcmp(name, "set_config"))
		c->set_config = true;
	if (in_list(volatile_funcs, ARRAY_SIZE(volatile_funcs), name)) {
		set_volatile(c, intern_reason("volatile function ", name, "()", "volatile function"));
		return;
	}
	set_volatile(c, intern_reason("function ", name, "() is not known to be stable",
				      "a function not known to be stable"));
	c->unknown_writes = true;
}

/* A string constant naming the current time ('now', 'today 10:00', …) makes the statement volatile. */
static void aconst(struct cls *c, const struct jnode *b)
{
	const struct jnode *sv = jget(b, "sval");
	const char *s = sv ? jstr(sv, "sval") : NULL;
	struct litval lv;

	if (!s)
		return;
	lv_init(&lv, s);
	for (const char *p = s; *p; p++)
		lv_watch(&lv, (unsigned char)*p);
	lv_word_end(&lv);
	if (lv.timeword)
		set_volatile(c, "time literal 'now', 'today', 'tomorrow' or 'yesterday'");
}

static void walk_node(struct cls *c, const char *type, const struct jnode *b)
{
	static const char *const skip_funcname[] = { "funcname", NULL };

	if (!strcmp(type, "SelectStmt")) {
		select_stmt(c, b, false);
	} else if (!strcmp(type, "InsertStmt") || !strcmp(type, "UpdateStmt") || !strcmp(type, "DeleteStmt") ||
		   !strcmp(type, "MergeStmt")) {
		dml_stmt(c, type, b, false);
	} else if (!strcmp(type, "FuncCall")) {
		func_call(c, b);
		walk_members(c, b, skip_funcname);
	} else if (!strcmp(type, "SQLValueFunction")) {
		const char *op = jstr(b, "op");
		if (op && (!strcmp(op, "SVFOP_CURRENT_DATE") || !strncmp(op, "SVFOP_CURRENT_TIME", 18) ||
			   !strncmp(op, "SVFOP_LOCALTIME", 15)))
			set_volatile(c, "volatile function current_timestamp/current_date/localtime");
	} else if (!strcmp(type, "RangeTableSample")) {
		set_volatile(c, "TABLESAMPLE");
		walk_members(c, b, NULL);
	} else if (!strcmp(type, "A_Const")) {
		aconst(c, b);
	} else if (!strcmp(type, "LockingClause")) {
		c->s->has_locking = true;
		if (!c->locking_reason) {
			const char *st = jstr(b, "strength");
			c->locking_reason = !st ? "locking clause"
					    : !strcmp(st, "LCS_FORUPDATE")	? "locking clause FOR UPDATE"
					    : !strcmp(st, "LCS_FORNOKEYUPDATE") ? "locking clause FOR NO KEY UPDATE"
					    : !strcmp(st, "LCS_FORSHARE")	? "locking clause FOR SHARE"
					    : !strcmp(st, "LCS_FORKEYSHARE")	? "locking clause FOR KEY SHARE"
										: "locking clause";
		}
		/* lockedRels name tables (or aliases) already read: nothing more to learn */
	} else if (!strcmp(type, "RangeVar")) {
		rangevar(c, b, c->rv_mode);
	} else {
		walk_members(c, b, NULL);
	}
}

/* The generic walk: visits every node, dispatching the ones that matter. */
static void walk(struct cls *c, const struct jnode *v)
{
	const char *type;
	const struct jnode *b;

	if (!v || c->too_deep)
		return;
	if (++c->depth > JSON_MAX_DEPTH) {
		c->too_deep = true;
		c->depth--;
		return;
	}
	if (v->type == JN_ARR) {
		for (const struct jnode *e = v->child; e; e = e->next)
			walk(c, e);
	} else if (v->type == JN_OBJ) {
		if ((b = junwrap(v, &type)) != NULL)
			walk_node(c, type, b);
		else if (jget(v, "relname"))
			rangevar(c, v, c->rv_mode);
		else
			walk_members(c, v, NULL);
	}
	c->depth--;
}

/* WITH: each CTE body is walked with the names visible to it (all of them if RECURSIVE, else the earlier ones);
 * afterwards all names stay in scope until the caller restores c->ncte. */
static void with_clause(struct cls *c, const struct jnode *with)
{
	const struct jnode *ctes = jget(with, "ctes");
	bool recursive = jbool(with, "recursive");
	int n = jcount(ctes);

	if (c->ncte + n > MAX_CTE) {
		c->cte_overflow = true;
		walk(c, ctes);
		return;
	}
	if (recursive)
		for (int i = 0; i < n; i++) {
			const struct jnode *cte = jnode_of(jat(ctes, i), "CommonTableExpr");
			const char *name = cte ? jstr(cte, "ctename") : NULL;
			c->cte[c->ncte++] = name ? name : "";
		}
	for (int i = 0; i < n; i++) {
		const struct jnode *cte = jnode_of(jat(ctes, i), "CommonTableExpr");
		if (!cte)
			continue;
		walk(c, jget(cte, "ctequery"));
		if (!recursive) {
			const char *name = jstr(cte, "ctename");
			c->cte[c->ncte++] = name ? name : "";
		}
	}
}

/* One FROM item of a SELECT level, as far as pins are concerned. */
struct from_item {
	const char *alias;   /* alias, or NULL */
	const char *relname; /* table name (TABLE items) */
	int occ;             /* occurrence index, or -1 when this item is not a table (CTE, subquery, function…) */
};

struct level {
	struct from_item items[MAX_FROM];
	int nitems;
	bool overflow;
	const struct jnode *conj[MAX_CONJ];
	int nconj;
};

/* Adds the top-level AND conjuncts of an expression. */
static void add_conjuncts(struct level *lv, const struct jnode *expr)
{
	const struct jnode *b = jnode_of(expr, "BoolExpr");
	if (b && jeq(b, "boolop", "AND_EXPR")) {
		for (const struct jnode *a = jget(b, "args") ? jget(b, "args")->child : NULL; a; a = a->next)
			add_conjuncts(lv, a);
		return;
	}
	if (expr && lv->nconj < MAX_CONJ)
		lv->conj[lv->nconj++] = expr;
}

static void add_item(struct level *lv, const char *alias, const char *relname, int occ)
{
	if (lv->nitems >= MAX_FROM) {
		lv->overflow = true;
		return;
	}
	lv->items[lv->nitems].alias = alias;
	lv->items[lv->nitems].relname = relname;
	lv->items[lv->nitems].occ = occ;
	lv->nitems++;
}

static const char *alias_of(const struct jnode *b)
{
	const struct jnode *a = jget(b, "alias");
	return a ? jstr(a, "aliasname") : NULL;
}

static void from_item(struct cls *c, struct level *lv, const struct jnode *item)
{
	const char *type;
	const struct jnode *b = junwrap(item, &type);

	if (!b) {
		walk(c, item);
		return;
	}
	if (!strcmp(type, "RangeVar")) {
		int occ = rangevar(c, b, RV_READ);
		add_item(lv, alias_of(b), jstr(b, "relname"), occ);
	} else if (!strcmp(type, "JoinExpr")) {
		from_item(c, lv, jget(b, "larg"));
		from_item(c, lv, jget(b, "rarg"));
		if (jeq(b, "jointype", "JOIN_INNER") && jget(b, "quals"))
			add_conjuncts(lv, jget(b, "quals"));
		walk(c, jget(b, "quals"));
		if (alias_of(b))
			add_item(lv, alias_of(b), NULL, -1);
	} else {
		walk(c, item);
		add_item(lv, alias_of(b), NULL, -1);
	}
}

static bool is_system_column(const char *col)
{
	static const char *const sys[] = { "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid", "oid" };
	return in_list(sys, ARRAY_SIZE(sys), col);
}

/* The column a ColumnRef names, resolved among the level's FROM items: returns the item index or -1. */
static int resolve_column(const struct level *lv, const struct jnode *colref, const char **col)
{
	const struct jnode *fields = jget(colref, "fields");
	int nf = jcount(fields), found = -1;
	const char *q;

	if (nf < 1 || nf > 4 || lv->overflow)
		return -1;
	*col = jstring_node(jat(fields, nf - 1));
	if (!*col || is_system_column(*col))
		return -1;
	if (nf == 1)
		return lv->nitems == 1 && lv->items[0].occ >= 0 ? 0 : -1;
	q = jstring_node(jat(fields, nf - 2));
	if (!q)
		return -1;
	for (int i = 0; i < lv->nitems; i++) {
		const struct from_item *it = &lv->items[i];
		bool match = it->alias ? (nf == 2 && !strcmp(it->alias, q)) : (it->relname && !strcmp(it->relname, q));
		if (match) {
			if (found >= 0)
				return -1; /* ambiguous */
			found = i;
		}
	}
	if (found >= 0 && lv->items[found].occ < 0)
		return -1;
	return found;
}

/* Binary search of a literal by location; returns its index or -1. */
static int lit_at(const struct shape_lits *lits, long long loc)
{
	int lo = 0, hi = lits ? lits->n - 1 : -1;
	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		if ((long long)lits->v[mid].location == loc)
			return mid;
		if ((long long)lits->v[mid].location < loc)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return -1;
}

static bool lit_equals(const struct shape_lits *lits, int i, const char *s)
{
	size_t n = strlen(s);
	return lits->v[i].len == n && !memcmp(lits->v[i].value, s, n);
}

/* A value side of an equality: $n or a constant, possibly under casts. Fills src/index; false when not pinnable.
 * A literal is pinned only when the parser's value equals the literal as the normalizer recorded it. */
static bool value_src(const struct cls *c, const struct jnode *v, enum pin_src *src, int *index, int depth)
{
	const char *type;
	const struct jnode *b = junwrap(v, &type);

	if (!b || depth > 8)
		return false;
	if (!strcmp(type, "TypeCast"))
		return value_src(c, jget(b, "arg"), src, index, depth + 1);
	if (!strcmp(type, "ParamRef")) {
		long long n = jint(b, "number", 0);
		if (n < 1 || n > 65535)
			return false;
		*src = PIN_PARAM;
		*index = (int)n;
		return true;
	}
	if (!strcmp(type, "A_Const")) {
		int li = lit_at(c->lits, jint(b, "location", -1));
		const struct jnode *sv;
		char num[32];
		if (li < 0)
			return false;
		if ((sv = jget(b, "sval")) != NULL) {
			const char *s = jstr(sv, "sval");
			if (!lit_equals(c->lits, li, s ? s : ""))
				return false;
		} else if ((sv = jget(b, "ival")) != NULL) {
			snprintf(num, sizeof(num), "%lld", jint(sv, "ival", 0));
			if (!lit_equals(c->lits, li, num))
				return false;
		} else if ((sv = jget(b, "fval")) != NULL) {
			const char *s = jstr(sv, "fval");
			if (!s || !lit_equals(c->lits, li, s))
				return false;
		} else {
			return false;
		}
		*src = PIN_LITERAL;
		*index = li;
		return true;
	}
	return false;
}

/* An equality operator "=" (unqualified or pg_catalog.=). */
static bool is_eq_expr(const struct jnode *b)
{
	const struct jnode *name = jget(b, "name");
	int n = jcount(name);
	const char *op = n >= 1 ? jstring_node(jat(name, n - 1)) : NULL;
	if (!jeq(b, "kind", "AEXPR_OP") || !op || strcmp(op, "="))
		return false;
	if (n == 2) {
		const char *schema = jstring_node(jat(name, 0));
		return schema && !strcmp(schema, "pg_catalog");
	}
	return n == 1;
}

static void pin_add(int *npins, struct shape_pin *pins, const char *col, enum pin_src src, int index)
{
	for (int i = 0; i < *npins; i++)
		if (!strcmp(pins[i].column, col))
			return; /* already pinned: both equalities hold, one is enough */
	if (*npins >= SHAPE_MAX_PINS)
		return;
	copy_name(pins[*npins].column, col);
	pins[*npins].src = src;
	pins[*npins].index = index;
	(*npins)++;
}

/* If conj is `col = value` (either order, no cast on the column), returns true with the ColumnRef and the value. */
static bool conj_equality(const struct cls *c, const struct jnode *conj, const struct jnode **colref,
			  enum pin_src *src, int *index)
{
	const struct jnode *b = jnode_of(conj, "A_Expr");
	if (!b || !is_eq_expr(b))
		return false;
	const struct jnode *l = jget(b, "lexpr"), *r = jget(b, "rexpr");
	if ((*colref = jnode_of(l, "ColumnRef")) != NULL && value_src(c, r, src, index, 0))
		return true;
	if ((*colref = jnode_of(r, "ColumnRef")) != NULL && value_src(c, l, src, index, 0))
		return true;
	return false;
}

static void level_pins(struct cls *c, const struct level *lv)
{
	for (int i = 0; i < lv->nconj; i++) {
		const struct jnode *colref;
		enum pin_src src;
		int index, item;
		const char *col;
		if (!conj_equality(c, lv->conj[i], &colref, &src, &index))
			continue;
		if ((item = resolve_column(lv, colref, &col)) < 0)
			continue;
		struct occ *o = &c->occ[lv->items[item].occ];
		pin_add(&o->npins, o->pins, col, src, index);
	}
}

/* A SELECT (or one branch of a set operation). pinnable: its WHERE / inner-join equalities pin its tables. */
static void select_stmt(struct cls *c, const struct jnode *b, bool pinnable)
{
	static const char *const skip_setop[] = { "withClause", "larg", "rarg", NULL };
	static const char *const skip_plain[] = { "withClause", "fromClause", "whereClause", "intoClause", NULL };
	int saved_cte = c->ncte;
	bool saved_ovf = c->cte_overflow;
	const struct jnode *with = jget(b, "withClause");
	const char *op = jstr(b, "op");
	const struct jnode *into;
	struct level *lv;

	if (!b)
		return;
	if (with)
		with_clause(c, with);
	if (op && strcmp(op, "SETOP_NONE") != 0) {
		select_stmt(c, jget(b, "larg"), pinnable);
		select_stmt(c, jget(b, "rarg"), pinnable);
		walk_members(c, b, skip_setop);
		c->ncte = saved_cte;
		c->cte_overflow = saved_ovf;
		return;
	}
	if ((into = jget(b, "intoClause")) != NULL) {
		const struct jnode *rel = jget(into, "rel");
		c->select_into = true;
		if (rel)
			rangevar(c, rel, RV_WRITE);
	}
	lv = xcalloc(1, sizeof(*lv));
	for (const struct jnode *f = jget(b, "fromClause") ? jget(b, "fromClause")->child : NULL; f; f = f->next)
		from_item(c, lv, f);
	if (jget(b, "whereClause")) {
		add_conjuncts(lv, jget(b, "whereClause"));
		walk(c, jget(b, "whereClause"));
	}
	if (pinnable)
		level_pins(c, lv);
	free(lv);
	walk_members(c, b, skip_plain);
	c->ncte = saved_cte;
	c->cte_overflow = saved_ovf;
}

/* Names assigned by an UPDATE's SET list (or an ON CONFLICT DO UPDATE). */
static bool assigned(const struct jnode *targets, const char *col)
{
	for (const struct jnode *t = targets ? targets->child : NULL; t; t = t->next) {
		const struct jnode *rt = jnode_of(t, "ResTarget");
		const char *name = rt ? jstr(rt, "name") : NULL;
		if (name && !strcmp(name, col))
			return true;
	}
	return false;
}

/* Pins of an UPDATE/DELETE WHERE clause on its target (alias or name; unqualified only without FROM/USING). */
static void where_pins(struct cls *c, const struct jnode *rel, const struct jnode *where, bool other_tables,
		       const struct jnode *set_list)
{
	struct level *lv = xcalloc(1, sizeof(*lv));
	struct shape_write_row row;
	int occ_dummy = 0;

	memset(&row, 0, sizeof(row));
	add_item(lv, alias_of(rel), jstr(rel, "relname"), occ_dummy);
	if (other_tables)
		add_item(lv, NULL, NULL, -1); /* makes unqualified columns ambiguous */
	add_conjuncts(lv, where);
	for (int i = 0; i < lv->nconj; i++) {
		const struct jnode *colref;
		enum pin_src src;
		int index;
		const char *col;
		if (!conj_equality(c, lv->conj[i], &colref, &src, &index))
			continue;
		if (resolve_column(lv, colref, &col) != 0)
			continue;
		if (assigned(set_list, col))
			continue;
		pin_add(&row.npins, row.pins, col, src, index);
	}
	free(lv);
	if (row.npins > 0) {
		c->s->rows[0] = row;
		c->s->nrows = 1;
	}
}

/* INSERT … VALUES with a column list: one row description per VALUES row. */
static void insert_rows(struct cls *c, const struct jnode *b)
{
	const struct jnode *cols = jget(b, "cols");
	const struct jnode *sel = jnode_of(jget(b, "selectStmt"), "SelectStmt");
	const struct jnode *values = sel ? jget(sel, "valuesLists") : NULL;
	const struct jnode *conflict = jget(b, "onConflictClause");
	const struct jnode *conflict_cols = NULL, *conflict_set = NULL;
	int ncols = jcount(cols), nrows = jcount(values), r = 0;

	if (!cols || !values || ncols == 0 || nrows == 0 || nrows > SHAPE_MAX_ROWS)
		return;
	if (jget(sel, "withClause") || jget(sel, "sortClause") || jget(sel, "limitCount") || jget(sel, "limitOffset"))
		return;
	if (conflict && jeq(conflict, "action", "ONCONFLICT_UPDATE")) {
		const struct jnode *infer = jget(conflict, "infer");
		conflict_cols = infer ? jget(infer, "indexElems") : NULL;
		conflict_set = jget(conflict, "targetList");
		if (!conflict_cols)
			return; /* ON CONSTRAINT: the updated existing row is only known to match unknown columns */
	}
	for (const struct jnode *row = values->child; row; row = row->next, r++) {
		const struct jnode *list = jnode_of(row, "List");
		const struct jnode *items = list ? jget(list, "items") : NULL;
		struct shape_write_row *wr = &c->s->rows[r];
		if (jcount(items) != ncols)
			return;
		wr->npins = 0;
		for (int i = 0; i < ncols; i++) {
			const struct jnode *rt = jnode_of(jat(cols, i), "ResTarget");
			const char *col = rt ? jstr(rt, "name") : NULL;
			enum pin_src src;
			int index;
			if (!col || jget(rt, "indirection") || is_system_column(col))
				continue;
			if (conflict_cols) {
				bool in_key = false;
				for (const struct jnode *e = conflict_cols->child; e; e = e->next) {
					const struct jnode *ie = jnode_of(e, "IndexElem");
					const char *n = ie ? jstr(ie, "name") : NULL;
					if (n && !strcmp(n, col))
						in_key = true;
				}
				if (!in_key || assigned(conflict_set, col))
					continue;
			}
			if (value_src(c, jat(items, i), &src, &index, 0))
				pin_add(&wr->npins, wr->pins, col, src, index);
		}
		if (wr->npins == 0)
			return; /* a row we cannot describe: the whole table */
	}
	c->s->nrows = r;
}

/* INSERT / UPDATE / DELETE / MERGE. top: the statement itself (row descriptions are computed); otherwise it is
 * nested (a data-modifying CTE). */
static void dml_stmt(struct cls *c, const char *type, const struct jnode *b, bool top)
{
	static const char *const skip[] = { "relation", "withClause", NULL };
	const struct jnode *rel = jget(b, "relation");
	int saved_cte = c->ncte;
	bool saved_ovf = c->cte_overflow;

	if (!top)
		c->modifying_cte = true;
	if (jget(b, "withClause"))
		with_clause(c, jget(b, "withClause"));
	if (rel)
		rangevar(c, rel, RV_WRITE);
	c->dml_depth++;
	walk_members(c, b, skip);
	c->dml_depth--;
	if (top && rel && c->s->nrows == 0) {
		if (!strcmp(type, "InsertStmt"))
			insert_rows(c, b);
		else if (!strcmp(type, "UpdateStmt"))
			where_pins(c, rel, jget(b, "whereClause"), jcount(jget(b, "fromClause")) > 0,
				   jget(b, "targetList"));
		else if (!strcmp(type, "DeleteStmt"))
			where_pins(c, rel, jget(b, "whereClause"), jcount(jget(b, "usingClause")) > 0, NULL);
	}
	c->ncte = saved_cte;
	c->cte_overflow = saved_ovf;
}

/* DDL statement types whose effect is limited to the tables they name. */
static bool ddl_is_precise(const char *type, const struct jnode *b)
{
	static const char *const precise[] = {
		"CreateStmt", "AlterTableStmt", "IndexStmt", "ViewStmt", "CreateTableAsStmt", "CreatePolicyStmt",
		"AlterPolicyStmt", "CreateTrigStmt", "RuleStmt", "ClusterStmt", "ReindexStmt", "RefreshMatViewStmt",
		"CommentStmt", "RenameStmt", "GrantStmt", "CreateStatsStmt",
	};
	if (!in_list(precise, ARRAY_SIZE(precise), type))
		return false;
	if (!strcmp(type, "GrantStmt"))
		return jeq(b, "targtype", "ACL_TARGET_OBJECT") &&
		       (jeq(b, "objtype", "OBJECT_TABLE") || jeq(b, "objtype", "OBJECT_SEQUENCE"));
	if (!strcmp(type, "RenameStmt") || !strcmp(type, "ClusterStmt") || !strcmp(type, "ReindexStmt"))
		return jget(b, "relation") != NULL;
	return true;
}

/* Does any member anywhere below say behavior = DROP_CASCADE? */
static bool has_cascade(const struct jnode *v, int depth)
{
	if (!v || depth > JSON_MAX_DEPTH)
		return false;
	if (v->key && !strcmp(v->key, "behavior") && v->type == JN_STR && !strcmp(v->str, "DROP_CASCADE"))
		return true;
	for (const struct jnode *ch = v->child; ch; ch = ch->next)
		if (has_cascade(ch, depth + 1))
			return true;
	return false;
}

static void ddl_stmt(struct cls *c, const char *type, const struct jnode *b)
{
	if (!strcmp(type, "DropStmt")) {
		const char *rt = jstr(b, "removeType");
		static const char *const rel_types[] = { "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW",
							 "OBJECT_FOREIGN_TABLE", "OBJECT_INDEX", "OBJECT_SEQUENCE" };
		if (!rt || !in_list(rel_types, ARRAY_SIZE(rel_types), rt) || jeq(b, "behavior", "DROP_CASCADE")) {
			c->s->write_all_tables = true;
			return;
		}
		for (const struct jnode *o = jget(b, "objects") ? jget(b, "objects")->child : NULL; o; o = o->next) {
			const struct jnode *list = jnode_of(o, "List");
			const struct jnode *items = list ? jget(list, "items") : NULL;
			const char *name = jcount(items) ? jstring_node(jat(items, jcount(items) - 1)) : NULL;
			if (name)
				add_written(c, name);
			else
				c->s->write_all_tables = true;
		}
		return;
	}
	c->rv_mode = RV_WRITE;
	walk_members(c, b, NULL);
	c->rv_mode = RV_READ;
	if (!strcmp(type, "RenameStmt") && jstr(b, "newname")) {
		/* the new name may now shadow a same-named table earlier in someone's search_path */
		static const char *const rel_types[] = { "OBJECT_TABLE", "OBJECT_VIEW", "OBJECT_MATVIEW",
							 "OBJECT_FOREIGN_TABLE" };
		const char *rt = jstr(b, "renameType");
		if (rt && in_list(rel_types, ARRAY_SIZE(rel_types), rt))
			add_written(c, jstr(b, "newname"));
	}
	if (!ddl_is_precise(type, b) || has_cascade(b, 0))
		c->s->write_all_tables = true;
}

/* Any option named `name` in a DefElem list (its value is not trusted: literals vary within one shape). */
static bool has_option(const struct jnode *options, const char *name)
{
	for (const struct jnode *o = options ? options->child : NULL; o; o = o->next) {
		const struct jnode *d = jnode_of(o, "DefElem");
		if (d && jeq(d, "defname", name))
			return true;
	}
	return false;
}

/* Classifies one top-level statement; returns its kind. */
static enum shape_kind classify_stmt(struct cls *c, const struct jnode *stmt)
{
	const char *type;
	const struct jnode *b = junwrap(stmt, &type);

	if (!b)
		return SHAPE_OTHER;
	if (!strcmp(type, "SelectStmt")) {
		select_stmt(c, b, true);
		if (c->modifying_cte || c->select_into)
			return SHAPE_WRITE;
		if (c->set_config) {
			/* SELECT set_config('name', …): a SET of a variable the text does not pin (the name is a literal) */
			c->s->var_name[0] = '\0';
			return SHAPE_SET;
		}
		return SHAPE_READ;
	}
	if (!strcmp(type, "InsertStmt") || !strcmp(type, "UpdateStmt") || !strcmp(type, "DeleteStmt") ||
	    !strcmp(type, "MergeStmt")) {
		dml_stmt(c, type, b, true);
		return SHAPE_WRITE;
	}
	if (!strcmp(type, "CopyStmt")) {
		const struct jnode *rel = jget(b, "relation");
		if (jbool(b, "is_from")) {
			if (rel)
				rangevar(c, rel, RV_WRITE);
			else
				c->s->write_all_tables = true;
			walk(c, jget(b, "whereClause"));
			return SHAPE_WRITE;
		}
		if (rel)
			rangevar(c, rel, RV_READ);
		walk(c, jget(b, "query"));
		return c->modifying_cte || c->s->nwritten ? SHAPE_WRITE : SHAPE_OTHER;
	}
	if (!strcmp(type, "TruncateStmt")) {
		c->rv_mode = RV_WRITE;
		walk(c, jget(b, "relations"));
		c->rv_mode = RV_READ;
		if (jeq(b, "behavior", "DROP_CASCADE"))
			c->s->write_all_tables = true;
		return SHAPE_TRUNCATE;
	}
	if (!strcmp(type, "TransactionStmt")) {
		const char *k = jstr(b, "kind");
		if (!k)
			return SHAPE_OTHER;
		if (!strcmp(k, "TRANS_STMT_BEGIN") || !strcmp(k, "TRANS_STMT_START"))
			return SHAPE_TX_BEGIN;
		if (!strcmp(k, "TRANS_STMT_COMMIT"))
			return SHAPE_TX_COMMIT;
		if (!strcmp(k, "TRANS_STMT_COMMIT_PREPARED")) {
			/* commits work done by some earlier session: what it wrote is unknown */
			c->s->write_all_tables = true;
			return SHAPE_TX_COMMIT;
		}
		if (!strcmp(k, "TRANS_STMT_ROLLBACK") || !strcmp(k, "TRANS_STMT_ROLLBACK_PREPARED"))
			return SHAPE_TX_ROLLBACK;
		return SHAPE_OTHER; /* SAVEPOINT, RELEASE, ROLLBACK TO, PREPARE TRANSACTION */
	}
	if (!strcmp(type, "VariableSetStmt")) {
		const char *k = jstr(b, "kind"), *name = jstr(b, "name");
		if (k && !strcmp(k, "VAR_RESET_ALL")) {
			c->s->var_name[0] = '\0';
			return SHAPE_SET_ROLE;
		}
		copy_name(c->s->var_name, name ? name : "");
		for (char *p = c->s->var_name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		if (!strcmp(c->s->var_name, "role") || !strcmp(c->s->var_name, "session_authorization"))
			return SHAPE_SET_ROLE;
		return SHAPE_SET;
	}
	if (!strcmp(type, "VariableShowStmt")) {
		c->show = true;
		return SHAPE_READ;
	}
	if (!strcmp(type, "ExplainStmt")) {
		if (has_option(jget(b, "options"), "analyze")) {
			enum shape_kind k = classify_stmt(c, jget(b, "query"));
			return k == SHAPE_WRITE ? SHAPE_WRITE : SHAPE_OTHER;
		}
		return SHAPE_OTHER;
	}
	if (!strcmp(type, "CallStmt") || !strcmp(type, "DoStmt") || !strcmp(type, "ExecuteStmt")) {
		/* procedures, anonymous blocks and SQL-level prepared statements may write anything */
		c->s->write_all_tables = true;
		return SHAPE_OTHER;
	}
	if (!strcmp(type, "DeclareCursorStmt")) {
		walk(c, jget(b, "query"));
		return SHAPE_OTHER;
	}
	if (!strcmp(type, "VacuumStmt")) {
		if (has_option(jget(b, "options"), "full")) {
			c->rv_mode = RV_WRITE;
			walk(c, jget(b, "rels"));
			c->rv_mode = RV_READ;
			return SHAPE_DDL;
		}
		return SHAPE_OTHER;
	}
	static const char *const others[] = {
		"PrepareStmt", "DeallocateStmt", "FetchStmt", "ClosePortalStmt", "ListenStmt", "UnlistenStmt",
		"NotifyStmt", "DiscardStmt", "LockStmt", "CheckPointStmt", "LoadStmt", "ConstraintsSetStmt",
		"AlterSystemStmt", "VariableShowStmt",
	};
	if (in_list(others, ARRAY_SIZE(others), type))
		return SHAPE_OTHER;
	ddl_stmt(c, type, b);
	return SHAPE_DDL;
}

/* Merges the read occurrences into s->read: one entry per table, pins intersected across its occurrences. */
static void merge_reads(struct cls *c)
{
	struct shape *s = c->s;
	bool done[MAX_OCC] = { false };

	if (c->occ_overflow)
		s->read_overflow = true;
	for (int i = 0; i < c->nocc; i++) {
		if (done[i])
			continue;
		if (s->nread >= SHAPE_MAX_TABLES) {
			s->read_overflow = true;
			break;
		}
		struct shape_read_table *rt = &s->read[s->nread++];
		copy_name(rt->name, c->occ[i].name);
		rt->npins = c->occ[i].npins;
		memcpy(rt->pins, c->occ[i].pins, sizeof(rt->pins));
		for (int j = i + 1; j < c->nocc; j++) {
			if (done[j] || strcmp(c->occ[j].name, rt->name))
				continue;
			done[j] = true;
			int keep = 0;
			for (int p = 0; p < rt->npins; p++) {
				bool both = false;
				for (int q = 0; q < c->occ[j].npins; q++)
					if (!strcmp(c->occ[j].pins[q].column, rt->pins[p].column) &&
					    c->occ[j].pins[q].src == rt->pins[p].src &&
					    c->occ[j].pins[q].index == rt->pins[p].index)
						both = true;
				if (both)
					rt->pins[keep++] = rt->pins[p];
			}
			rt->npins = keep;
		}
	}
}

static const char *kind_reason(enum shape_kind k)
{
	switch (k) {
	case SHAPE_READ: return NULL;
	case SHAPE_WRITE: return "not a read (writes)";
	case SHAPE_DDL: return "not a read (DDL)";
	case SHAPE_TRUNCATE: return "not a read (TRUNCATE)";
	case SHAPE_TX_BEGIN:
	case SHAPE_TX_COMMIT:
	case SHAPE_TX_ROLLBACK: return "transaction control";
	case SHAPE_SET_ROLE: return "changes the role";
	case SHAPE_SET: return "SET / RESET";
	case SHAPE_MULTI: return "several statements in one query";
	case SHAPE_OTHER: return "not a read";
	case SHAPE_UNPARSED: return "does not parse";
	}
	return "not a read";
}

/* Fills the classification of s from the exact text sql (NUL-terminated) and its literals. */
static void classify(struct shape *s, const char *sql, const struct shape_lits *lits)
{
	PgQueryParseResult pr;
	struct arena arena = { NULL };
	struct jparser jp;
	const struct jnode *root, *stmts;
	struct cls *c;
	int nstmts;

	pr = pg_query_parse(sql);
	if (pr.error || !pr.parse_tree) {
		pg_query_free_parse_result(pr);
		s->kind = SHAPE_UNPARSED;
		s->write_all_tables = true; /* a newer server may accept what this grammar does not */
		s->not_cacheable = "does not parse";
		return;
	}
	memset(&jp, 0, sizeof(jp));
	jp.p = pr.parse_tree;
	jp.end = pr.parse_tree + strlen(pr.parse_tree);
	jp.a = &arena;
	root = jvalue(&jp);
	c = &cls_state;
	memset(c, 0, offsetof(struct cls, occ));
	c->s = s;
	c->lits = lits;
	stmts = root && !jp.failed ? jget(root, "stmts") : NULL;
	nstmts = jcount(stmts);
	if (!root || jp.failed) {
		c->too_deep = true;
	} else if (nstmts == 0) {
		s->kind = SHAPE_OTHER; /* empty query */
	} else {
		enum shape_kind first = SHAPE_OTHER;
		bool role = false;
		char var[SHAPE_NAME_MAX] = "";
		for (int i = 0; i < nstmts; i++) {
			const struct jnode *raw = jat(stmts, i);
			enum shape_kind k = classify_stmt(c, jget(raw, "stmt"));
			if (i == 0)
				first = k;
			if (k == SHAPE_SET_ROLE)
				role = true;
			else if (k == SHAPE_SET && !var[0])
				copy_name(var, s->var_name);
		}
		s->kind = nstmts > 1 ? SHAPE_MULTI : first;
		if (nstmts > 1) {
			s->nrows = 0;
			copy_name(s->var_name, role ? "role" : var);
		}
	}
	if (c->too_deep) {
		/* parsed, but too complex to analyze: assume the worst */
		s->kind = SHAPE_OTHER;
		s->nread = s->nwritten = s->nrows = 0;
		s->write_all_tables = true;
		s->not_cacheable = "too complex to classify";
	} else {
		merge_reads(c);
		if (c->unknown_writes)
			s->write_all_tables = true;
		if (s->nwritten != 1 || s->kind != SHAPE_WRITE || c->modifying_cte)
			s->nrows = 0;
		if (s->kind != SHAPE_READ)
			s->not_cacheable = c->modifying_cte ? "data-modifying CTE"
					   : c->select_into ? "SELECT INTO"
							    : kind_reason(s->kind);
		else if (c->show)
			s->not_cacheable = "SHOW";
		else if (s->has_locking)
			s->not_cacheable = c->locking_reason;
		else if (s->uses_temp)
			s->not_cacheable = "temporary table (pg_temp)";
		else if (s->read_overflow)
			s->not_cacheable = "reads too many tables";
		else if (s->has_volatile)
			s->not_cacheable = c->volatile_reason;
	}
	s->cacheable_kind = s->not_cacheable == NULL;
	arena_free(&arena);
	pg_query_free_parse_result(pr);
}

/* ------------------------------------------------------------------------------------------------------------ */
/* Shape table (by id, LRU), exact-text memo (LRU) and overrides. Single-threaded: the event loop calls us.       */

struct memo;
struct tmpl;

struct shape_node {
	struct shape s;                      /* the public part; s.priv points back at this node */
	UT_hash_handle hh;                   /* in shape_tab, keyed by s.id */
	struct shape_node *lru_prev, *lru_next; /* shape LRU list (head = most recent) */
	struct memo *memos;                  /* memo entries naming this shape (dropped with it) */
	size_t normlen;                      /* strlen(s.normalized) */
	bool in_table;
	/* Whether remembering this shape's exact texts pays: a shape whose texts rarely repeat (a literal that varies
	 * per call, like pgbench's account ids) would only churn the memo. Both counts halve now and then so the
	 * decision follows the workload. */
	uint32_t memo_added;                 /* texts of this shape put in the memo */
	uint32_t memo_hits;                  /* lookups that found one of them */
	uint32_t memo_skipped;               /* texts not remembered since the last one that was */
	struct tmpl *tmpl;                   /* this shape's template (see struct tmpl), or NULL; only while in_table */
};

/* Literal of a remembered text: where its value is (in the text or in the memo's blob). */
struct memo_lit {
	uint32_t location;
	uint32_t len;
	uint32_t off;     /* offset in the text (inblob false) or in blob (inblob true) */
	bool inblob;
};

/* The memo's sampling, so that texts that rarely repeat cost little more than their normalization:
 * - remembering (memo_insert): after MEMO_MIN_SAMPLES texts of a shape were remembered, if they earned fewer than
 *   one hit per MEMO_INSERT_HIT_RATIO of them, only one text of the shape in MEMO_SAMPLE is remembered (a remembered
 *   text costs an allocation, a copy and an eviction: a few tenths of a normalization);
 * - looking up (memo_should_look): after MEMO_MIN_SAMPLES lookups, if fewer than one in MEMO_LOOKUP_HIT_RATIO hit,
 *   only one text in MEMO_SAMPLE is hashed and looked up (a lookup costs about a tenth of a normalization).
 * Both keep sampling, enough to notice when texts start to repeat. */
#define MEMO_MIN_SAMPLES 64
#define MEMO_INSERT_HIT_RATIO 2
#define MEMO_LOOKUP_HIT_RATIO 8
#define MEMO_SAMPLE 16
#define MEMO_DECAY_AT 1024

struct memo {
	uint64_t h;                          /* hash of the exact text (key) */
	UT_hash_handle hh;
	struct memo *lru_prev, *lru_next;    /* memo LRU list */
	struct memo *sh_prev, *sh_next;      /* list of memos of the same shape */
	struct shape_node *node;             /* the shape (alive while the memo exists: see shape_evict) */
	size_t len;                          /* text length */
	int nlits;
	size_t bloblen;
	struct memo_lit *lits;               /* nlits entries, inside this allocation */
	char *blob;                          /* unescaped literal bytes, inside this allocation */
	char text[];                         /* the exact text */
};

/* Template match: a text whose literals vary per call (pgbench -M simple: "... WHERE aid = 12345;") misses the memo
 * every time, so it would be normalized every time. A template is the raw text last normalized for a shape, when
 * every literal of it is a plain unsigned decimal integer (a slice of the text, digits only). A new text matches when
 * its bytes equal the template's outside those literals and each literal span holds one or more digits: the
 * normalizer then lexes it into exactly the same tokens (everything before a span is the same bytes, a digit starts
 * a number whatever its value, and where the number ends depends only on the bytes after the span, which are the
 * same), so the same normalized text, the same shape, and literals at the shifted offsets. Strings are not served:
 * their contents change the literal's value (escapes) and the shape ('now'). Templates sit in TMPL_SLOTS slots, two
 * ways per hash of the text before its first digit byte (two busy shapes with one hash do not evict each other); a template belongs to its shape node and dies when the shape
 * leaves the table, so a slot never names a freed or evicted shape. */
#define TMPL_SLOTS 256             /* power of two: TMPL_SLOTS / 2 pairs of ways */
#define TMPL_MAX_TEXT 4096         /* longer texts get no template */

struct tmpl {
	struct shape_node *node;     /* the shape (in the table while the template exists) */
	unsigned slot;               /* its index in G.tslot */
	size_t len;                  /* text length */
	int nlits;                   /* literals (1..SHAPE_MAX_LITERALS-1), all digit runs */
	uint32_t *span;              /* nlits pairs (offset, length) into text, in order; inside this allocation */
	char text[];                 /* the raw text */
};

struct override {
	uint64_t id;
	int ttl;
	UT_hash_handle hh;
};

static struct {
	bool inited;
	struct shape_config cfg;
	struct shape_node *tab;              /* shapes by id */
	struct shape_node *lru_head, *lru_tail;
	int nshapes;
	struct memo *memo;                   /* memo entries by text hash */
	struct memo *mlru_head, *mlru_tail;
	int nmemo;
	uint32_t mlookups;                   /* memo lookups made (halved now and then) */
	uint32_t mhits;                      /* those that hit */
	uint32_t mskipped;                   /* lookups skipped since the last one made */
	struct override *overrides;
	int live;                            /* shapes not yet freed (in the table or referenced) */
	struct shape_node *tslot[TMPL_SLOTS]; /* shapes with a template, by slot (see struct tmpl) */
	unsigned char tlast[TMPL_SLOTS / 2];  /* per pair of ways: the one used last (made or matched) */
	int ntmpl;                           /* templates alive */
} G;

#ifdef SHAPE_TMPL_COUNT
uint64_t shape_tmpl_hits; /* texts answered by a template (differential checks only) */
#endif

static struct shape_lits scratch_lits; /* used when the caller passes no lits */

static void shape_lru_unlink(struct shape_node *n)
{
	if (n->lru_prev)
		n->lru_prev->lru_next = n->lru_next;
	else
		G.lru_head = n->lru_next;
	if (n->lru_next)
		n->lru_next->lru_prev = n->lru_prev;
	else
		G.lru_tail = n->lru_prev;
	n->lru_prev = n->lru_next = NULL;
}

static void shape_lru_push(struct shape_node *n)
{
	n->lru_prev = NULL;
	n->lru_next = G.lru_head;
	if (G.lru_head)
		G.lru_head->lru_prev = n;
	G.lru_head = n;
	if (!G.lru_tail)
		G.lru_tail = n;
}

static void memo_lru_unlink(struct memo *m)
{
	if (m->lru_prev)
		m->lru_prev->lru_next = m->lru_next;
	else
		G.mlru_head = m->lru_next;
	if (m->lru_next)
		m->lru_next->lru_prev = m->lru_prev;
	else
		G.mlru_tail = m->lru_prev;
	m->lru_prev = m->lru_next = NULL;
}

static void memo_lru_push(struct memo *m)
{
	m->lru_prev = NULL;
	m->lru_next = G.mlru_head;
	if (G.mlru_head)
		G.mlru_head->lru_prev = m;
	G.mlru_head = m;
	if (!G.mlru_tail)
		G.mlru_tail = m;
}

/* The only way a memo entry dies. */
static void memo_free(struct memo *m)
{
	HASH_DEL(G.memo, m);
	memo_lru_unlink(m);
	if (m->sh_prev)
		m->sh_prev->sh_next = m->sh_next;
	else
		m->node->memos = m->sh_next;
	if (m->sh_next)
		m->sh_next->sh_prev = m->sh_prev;
	G.nmemo--;
	free(m);
}

/* Drops shape n's template, if any. */
static void tmpl_drop(struct shape_node *n)
{
	struct tmpl *t = n->tmpl;

	if (!t)
		return;
	if (G.tslot[t->slot] == n)
		G.tslot[t->slot] = NULL;
	n->tmpl = NULL;
	G.ntmpl--;
	free(t);
}

/* Whether one of the 8 bytes of x is an ASCII digit ("hasbetween" of Bit Twiddling Hacks, bytes strictly between
 * '0' - 1 and '9' + 1; no carry or borrow crosses a byte, and bytes >= 0x80 are masked out by ~x). */
static inline bool word_has_digit(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101ULL;
	return ((ones * (127 + ('9' + 1)) - (x & ones * 127)) & ~x & ((x & ones * 127) + ones * (127 - ('0' - 1))) &
		ones * 128) != 0;
}

/* Index of the first ASCII digit of sql[0..len), or len when there is none (8 bytes per step until one has it). */
static inline size_t first_digit(const char *sql, size_t len)
{
	size_t i = 0;
	while (i + 8 <= len && !word_has_digit(load_le64((const unsigned char *)sql + i)))
		i += 8;
	while (i < len && (unsigned)((unsigned char)sql[i] - '0') >= 10)
		i++;
	return i;
}

/* The first of the two template slots of a text whose first digit is at p (see struct tmpl). */
static inline unsigned tmpl_slot(const char *sql, size_t p)
{
	uint64_t h = hash_bytes(sql, p);
	return (unsigned)((h ^ (h >> 29)) & (TMPL_SLOTS - 2));
}

/* Whether sql[0..len) matches template t; if so, fills lits exactly as the normalizer would have (l->n is left
 * alone otherwise, and l's entries may have been written). */
static bool tmpl_match(const struct tmpl *t, const char *sql, size_t len, struct shape_lits *l)
{
	size_t pi = 0, ti = 0;

	for (int k = 0; k < t->nlits; k++) {
		size_t start = t->span[2 * k], seg = start - pi;
		if (len - ti < seg + 1 || memcmp(sql + ti, t->text + pi, seg) != 0)
			return false;
		ti += seg;
		start = ti;
		while (ti < len && (unsigned)((unsigned char)sql[ti] - '0') < 10)
			ti++;
		if (ti == start)
			return false;
		l->v[k].value = sql + start;
		l->v[k].len = ti - start;
		l->v[k].location = start;
		pi = t->span[2 * k] + t->span[2 * k + 1];
	}
	if (len - ti != t->len - pi || memcmp(sql + ti, t->text + pi, len - ti) != 0)
		return false;
	l->n = t->nlits;
	return true;
}

/* Makes sql[0..len), just normalized into lits for shape n (in the table), the template of n in the pair of slots
 * that starts at slot, when it qualifies: a parsed shape, every literal recorded and a digit run that is a slice of
 * the text. It takes n's own slot in the pair, else an empty one, else the one not used last. */
static void tmpl_make(struct shape_node *n, const char *sql, size_t len, const struct shape_lits *l, unsigned slot)
{
	struct tmpl *t;
	size_t size;
	int marks = 0;

	if (n->s.kind == SHAPE_UNPARSED || len > TMPL_MAX_TEXT || l->n <= 0 || l->n >= SHAPE_MAX_LITERALS)
		return;
	for (int k = 0; k < l->n; k++) {
		if (l->v[k].len == 0 || l->v[k].value != sql + l->v[k].location)
			return;
		if (k > 0 && l->v[k].location < l->v[k - 1].location + l->v[k - 1].len)
			return;
		for (size_t j = 0; j < l->v[k].len; j++)
			if ((unsigned)((unsigned char)l->v[k].value[j] - '0') >= 10)
				return;
	}
	/* one '?' per recorded literal and no other: no literal went unrecorded (a full lits->buf) and no ? operator */
	for (const char *q = n->s.normalized; (q = strchr(q, '?')) != NULL; q++)
		marks++;
	if (marks != l->n)
		return;
	if (G.tslot[slot] != n && (G.tslot[slot + 1] == n || (G.tslot[slot] && (!G.tslot[slot + 1] ||
										  G.tlast[slot / 2] == 0))))
		slot++;
	tmpl_drop(n); /* the newest text of the shape wins */
	if (G.tslot[slot])
		tmpl_drop(G.tslot[slot]);
	G.tlast[slot / 2] = (unsigned char)(slot & 1);
	size = sizeof(*t) + len;
	size = (size + 7) & ~(size_t)7;
	t = xmalloc(size + (size_t)l->n * 2 * sizeof(uint32_t));
	t->node = n;
	t->slot = slot;
	t->len = len;
	t->nlits = l->n;
	t->span = (uint32_t *)((char *)t + size);
	memcpy(t->text, sql, len);
	for (int k = 0; k < l->n; k++) {
		t->span[2 * k] = (uint32_t)l->v[k].location;
		t->span[2 * k + 1] = (uint32_t)l->v[k].len;
	}
	n->tmpl = t;
	G.tslot[slot] = n;
	G.ntmpl++;
}

/* Removes a shape from the table (dropping the table's reference, its template and every memo entry naming it). */
static void shape_evict(struct shape_node *n)
{
	tmpl_drop(n);
	while (n->memos)
		memo_free(n->memos);
	HASH_DEL(G.tab, n);
	shape_lru_unlink(n);
	n->in_table = false;
	G.nshapes--;
	shape_unref(&n->s);
}

/* Remembers the text sql[0..len) of shape n (or, for a shape whose texts rarely repeat, one in MEMO_SAMPLE).
 * hashed says whether h is the text's hash already (else it is computed here when needed). */
static void memo_insert(struct shape_node *n, const char *sql, size_t len, bool hashed, uint64_t h,
			const struct shape_lits *lits)
{
	struct memo *old, *m;
	size_t bloblen = 0, size;
	int nl = lits ? lits->n : 0;

	if (len > MEMO_MAX_TEXT || G.cfg.max_texts <= 0)
		return;
	/* texts of this shape rarely repeat: remember only one in MEMO_SAMPLE, enough to notice when they start to */
	if (n->memo_added >= MEMO_MIN_SAMPLES && n->memo_hits * MEMO_INSERT_HIT_RATIO < n->memo_added &&
	    ++n->memo_skipped < MEMO_SAMPLE)
		return;
	n->memo_skipped = 0;
	if (++n->memo_added >= MEMO_DECAY_AT) {
		n->memo_added /= 2;
		n->memo_hits /= 2;
	}
	if (!hashed)
		h = hash_bytes(sql ? sql : "", len);
	HASH_FIND(hh, G.memo, &h, sizeof(h), old);
	if (old)
		memo_free(old); /* same hash, another text (or a stale entry): the newest wins */
	for (int i = 0; i < nl; i++)
		if (!(lits->v[i].value >= sql && lits->v[i].value + lits->v[i].len <= sql + len))
			bloblen += lits->v[i].len;
	size = sizeof(*m) + len + 1;
	size = (size + 7) & ~(size_t)7;
	m = xmalloc(size + (size_t)nl * sizeof(struct memo_lit) + bloblen);
	memset(m, 0, sizeof(*m));
	m->h = h;
	m->node = n;
	m->len = len;
	memcpy(m->text, sql, len);
	m->text[len] = '\0';
	m->nlits = nl;
	m->lits = (struct memo_lit *)((char *)m + size);
	m->blob = (char *)(m->lits + nl);
	for (int i = 0; i < nl; i++) {
		const char *v = lits->v[i].value;
		m->lits[i].location = (uint32_t)lits->v[i].location;
		m->lits[i].len = (uint32_t)lits->v[i].len;
		if (v >= sql && v + lits->v[i].len <= sql + len) {
			m->lits[i].inblob = false;
			m->lits[i].off = (uint32_t)(v - sql);
		} else {
			m->lits[i].inblob = true;
			m->lits[i].off = (uint32_t)m->bloblen;
			memcpy(m->blob + m->bloblen, v, lits->v[i].len);
			m->bloblen += lits->v[i].len;
		}
	}
	HASH_ADD(hh, G.memo, h, sizeof(m->h), m);
	memo_lru_push(m);
	m->sh_prev = NULL;
	m->sh_next = n->memos;
	if (n->memos)
		n->memos->sh_prev = m;
	n->memos = m;
	G.nmemo++;
	while (G.nmemo > G.cfg.max_texts && G.mlru_tail)
		memo_free(G.mlru_tail);
}

/* Fills lits for a remembered text: values point into sql or into lits->buf. */
static void memo_fill_lits(const struct memo *m, const char *sql, struct shape_lits *lits)
{
	lits->n = m->nlits;
	if (m->bloblen)
		memcpy(lits->buf, m->blob, m->bloblen);
	for (int i = 0; i < m->nlits; i++) {
		lits->v[i].value = m->lits[i].inblob ? lits->buf + m->lits[i].off : sql + m->lits[i].off;
		lits->v[i].len = m->lits[i].len;
		lits->v[i].location = m->lits[i].location;
	}
}

void shape_init(const struct shape_config *cfg)
{
	if (G.inited)
		shape_shutdown();
	G.cfg.max_shapes = cfg && cfg->max_shapes > 0 ? cfg->max_shapes : 10000;
	G.cfg.max_texts = cfg && cfg->max_texts > 0 ? cfg->max_texts : 20000;
	G.mlookups = G.mhits = G.mskipped = 0;
	G.inited = true;
}

void shape_shutdown(void)
{
	while (G.mlru_head)
		memo_free(G.mlru_head);
	while (G.lru_head)
		shape_evict(G.lru_head);
	shape_override_clear_all();
	free(arena_spare);
	arena_spare = NULL;
	if (G.live == 0) {
		for (int i = 0; i < nreasons; i++)
			free(reasons[i]);
		nreasons = 0;
	}
	G.inited = false;
}

static struct shape_node *node_new(uint64_t id, const char *norm, size_t normlen)
{
	struct shape_node *n = xcalloc(1, sizeof(*n));
	n->s.id = id;
	n->s.normalized = xmalloc(normlen + 1);
	memcpy(n->s.normalized, norm, normlen);
	n->s.normalized[normlen] = '\0';
	n->normlen = normlen;
	n->s.refcount = 1;
	n->s.priv = n;
	G.live++;
	return n;
}

/* Classifies the exact text sql[0..len) into n. */
static void classify_text(struct shape_node *n, const char *sql, size_t len, const struct shape_lits *lits)
{
	char *text;

	if (sql && memchr(sql, '\0', len)) {
		n->s.kind = SHAPE_UNPARSED;
		n->s.write_all_tables = true;
		n->s.not_cacheable = "contains a NUL byte";
		return;
	}
	text = xmalloc(len + 1);
	if (len)
		memcpy(text, sql, len);
	text[len] = '\0';
	classify(&n->s, text, lits);
	free(text);
}

/* Puts a new shape in the table (which keeps the reference node_new made), evicting the least recent ones. */
static void table_insert(struct shape_node *n)
{
	HASH_ADD(hh, G.tab, s.id, sizeof(n->s.id), n);
	n->in_table = true;
	shape_lru_push(n);
	G.nshapes++;
	while (G.nshapes > G.cfg.max_shapes && G.lru_tail && G.lru_tail != n)
		shape_evict(G.lru_tail);
}

/* Whether to look this text up in the memo (see MEMO_LOOKUP_HIT_RATIO); counts the lookup when so. */
static inline bool memo_should_look(void)
{
	if (G.nmemo == 0)
		return false; /* nothing could hit */
	if (G.mlookups >= MEMO_MIN_SAMPLES && G.mhits * MEMO_LOOKUP_HIT_RATIO < G.mlookups &&
	    ++G.mskipped < MEMO_SAMPLE)
		return false;
	G.mskipped = 0;
	if (++G.mlookups >= MEMO_DECAY_AT) {
		G.mlookups /= 2;
		G.mhits /= 2;
	}
	return true;
}

struct shape *shape_get(const char *sql, size_t len, struct shape_lits *lits)
{
	struct memo *m = NULL;
	struct shape_node *n;
	uint64_t h = 0, id;
	char stackbuf[4096], *norm = stackbuf;
	size_t normlen;
	struct shape_lits *l = lits ? lits : &scratch_lits;
	bool looked, tslot_known = false;
	unsigned slot = 0;

	if (!G.inited)
		shape_init(NULL);
	if (!sql)
		len = 0;

	/* hot path 1: a text that differs from a template only in its integer literals gets the template's shape, with
	 * no normalization. Tried before the memo: it needs no hash of the whole text, and a text it matches is not put
	 * in the memo (the template will match it again; texts whose literals vary per call, pgbench's account ids,
	 * would only churn the memo) */
	if (G.ntmpl > 0) {
		size_t p = first_digit(sql, len);
		if (p < len) {
			slot = tmpl_slot(sql, p);
			tslot_known = true;
			n = G.tslot[slot];
			if (!(n && tmpl_match(n->tmpl, sql, len, l))) {
				n = G.tslot[slot + 1];
				if (n && tmpl_match(n->tmpl, sql, len, l))
					G.tlast[slot / 2] = 1;
				else
					n = NULL;
			} else {
				G.tlast[slot / 2] = 0;
			}
			if (n) {
#ifdef SHAPE_TMPL_COUNT
				shape_tmpl_hits++;
#endif
				if (G.lru_head != n) {
					shape_lru_unlink(n);
					shape_lru_push(n);
				}
				n->s.refcount++;
				return &n->s;
			}
			n = NULL;
		}
	}

	/* hot path 2: the exact text was seen before (texts with strings, or none of whose templates is kept) */
	looked = memo_should_look();
	if (looked) {
		h = hash_bytes(sql ? sql : "", len);
		HASH_FIND(hh, G.memo, &h, sizeof(h), m);
	}
	if (m && m->len == len && (len == 0 || !memcmp(m->text, sql, len))) {
		G.mhits++;
		if (m->node->memo_hits < UINT32_MAX)
			m->node->memo_hits++;
		if (G.mlru_head != m) {
			memo_lru_unlink(m);
			memo_lru_push(m);
		}
		if (G.lru_head != m->node) {
			shape_lru_unlink(m->node);
			shape_lru_push(m->node);
		}
		if (lits)
			memo_fill_lits(m, sql, lits);
		m->node->s.refcount++;
		return &m->node->s;
	}

	/* normalize, then find the shape by id or classify it */
	id = normalize_impl(sql, len, stackbuf, sizeof(stackbuf), l, &normlen);
	if (normlen >= sizeof(stackbuf)) {
		norm = xmalloc(normlen + 1);
		normalize_impl(sql, len, norm, normlen + 1, l, NULL);
	}
	HASH_FIND(hh, G.tab, &id, sizeof(id), n);
	if (n && (n->normlen != normlen || memcmp(n->s.normalized, norm, normlen) != 0)) {
		/* two normalized texts with one id: never hand out the other text's classification */
		struct shape_node *priv = node_new(id, norm, normlen);
		classify_text(priv, sql, len, l);
		priv->s.cacheable_kind = false;
		priv->s.not_cacheable = "shape id collision";
		if (norm != stackbuf)
			free(norm);
		return &priv->s;
	}
	if (n && n->s.kind == SHAPE_UNPARSED && !(sql && memchr(sql, '\0', len))) {
		/* a text whose literal did not lex (E'\u00') must not decide for the valid texts of its shape: try this
		 * one, and let it replace the shape if it parses */
		struct shape_node *fresh = node_new(id, norm, normlen);
		classify_text(fresh, sql, len, l);
		if (fresh->s.kind == SHAPE_UNPARSED) {
			shape_unref(&fresh->s);
		} else {
			shape_evict(n);
			table_insert(fresh);
			n = fresh;
		}
	}
	if (!n) {
		n = node_new(id, norm, normlen);
		classify_text(n, sql, len, l);
		table_insert(n);
	} else if (G.lru_head != n) {
		shape_lru_unlink(n);
		shape_lru_push(n);
	}
	if (norm != stackbuf)
		free(norm);
	memo_insert(n, sql, len, looked, h, l);
	if (l->n > 0 && len <= TMPL_MAX_TEXT) {
		if (!tslot_known) {
			size_t p = first_digit(sql, len);
			if (p < len)
				tmpl_make(n, sql, len, l, tmpl_slot(sql, p));
		} else {
			tmpl_make(n, sql, len, l, slot);
		}
	}
	n->s.refcount++;
	return &n->s;
}

void shape_ref(struct shape *s)
{
	if (s)
		s->refcount++;
}

void shape_unref(struct shape *s)
{
	if (!s)
		return;
	if (--s->refcount > 0)
		return;
	free(s->normalized);
	free(s->priv);
	G.live--;
}

void shape_foreach(bool (*fn)(struct shape *s, void *arg), void *arg)
{
	struct shape_node *n = G.lru_head, *next;
	for (; n; n = next) {
		next = n->lru_next;
		if (!fn(&n->s, arg))
			break;
	}
}

int shape_count(void)
{
	return G.nshapes;
}

/* Parses "0x" + 1..16 hex digits or exactly 16 hex digits. */
static bool parse_id(const char *key, uint64_t *id)
{
	const char *p = key;
	size_t n;
	bool prefixed = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');

	if (prefixed)
		p += 2;
	n = strlen(p);
	if (n == 0 || n > 16 || (!prefixed && n != 16))
		return false;
	*id = 0;
	for (size_t i = 0; i < n; i++) {
		int v = hexval(p[i]);
		if (v < 0)
			return false;
		*id = (*id << 4) | (uint64_t)v;
	}
	return true;
}

int shape_override_set(const char *key, int ttl_sec)
{
	uint64_t id;
	struct override *o;

	if (!key || ttl_sec < 0)
		return -1;
	while (is_space((unsigned char)*key))
		key++;
	if (!*key)
		return -1;
	if (!parse_id(key, &id)) {
		size_t normlen;
		if (key[0] == '0' && (key[1] == 'x' || key[1] == 'X'))
			return -1; /* looks like an id but is not one */
		id = normalize_impl(key, strlen(key), NULL, 0, NULL, &normlen);
		if (normlen == 0)
			return -1;
	}
	HASH_FIND(hh, G.overrides, &id, sizeof(id), o);
	if (!o) {
		o = xcalloc(1, sizeof(*o));
		o->id = id;
		HASH_ADD(hh, G.overrides, id, sizeof(o->id), o);
	}
	o->ttl = ttl_sec;
	return 0;
}

void shape_override_clear_all(void)
{
	struct override *o, *tmp;
	HASH_ITER(hh, G.overrides, o, tmp) {
		HASH_DEL(G.overrides, o);
		free(o);
	}
}

int shape_override_ttl(const struct shape *s)
{
	struct override *o;
	if (!s || !G.overrides)
		return -1;
	HASH_FIND(hh, G.overrides, &s->id, sizeof(s->id), o);
	return o ? o->ttl : -1;
}
