/* test_proto.c — cmocka tests for the wire protocol layer: header/startup parsing, the reader and the builder. */
#include "proto.h"
#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

/* Byte-string literal with its exact length (embedded NULs included, the literal's own NUL excluded). Beware that
 * "\x00" followed by a hex digit or "\0" followed by an octal digit extends the escape: split the literal there. */
#define BYTES(s) (const uint8_t *)(s), (sizeof(s) - 1)

#define V3 "\x00\x03\x00\x00"
#define CANCEL "\x04\xd2\x16\x2e"
#define SSLREQ "\x04\xd2\x16\x2f"
#define GSSREQ "\x04\xd2\x16\x30"

static void assert_bytes(const uint8_t *got, size_t got_len, const uint8_t *want, size_t want_len)
{
	assert_int_equal(got_len, want_len);
	assert_memory_equal(got, want, want_len);
}

/* ---- proto_read_header ---- */

struct header_case {
	const char *what;
	const uint8_t *data;
	size_t avail;
	uint32_t max_len;
	enum proto_rc rc;
	uint8_t type;
	uint32_t len;
	const char *why;       /* substring expected in *why on PROTO_BAD */
};

static void test_read_header_table(void **state)
{
	static const struct header_case cases[] = {
		{ "empty buffer", (const uint8_t *)"", 0, 1000, PROTO_INCOMPLETE, 0, 0, NULL },
		{ "type byte only", (const uint8_t *)"Q", 1, 1000, PROTO_INCOMPLETE, 0, 0, NULL },
		{ "truncated length", (const uint8_t *)"Q\x00\x00\x00", 4, 1000, PROTO_INCOMPLETE, 0, 0, NULL },
		{ "minimal message", (const uint8_t *)"X\x00\x00\x00\x04", 5, 1000, PROTO_OK, 'X', 4, NULL },
		{ "more data than header", (const uint8_t *)"Q\x00\x00\x00\x06hi", 7, 1000, PROTO_OK, 'Q', 6, NULL },
		{ "length exactly max", (const uint8_t *)"D\x00\x00\x03\xe8", 5, 1000, PROTO_OK, 'D', 1000, NULL },
		{ "length 3", (const uint8_t *)"Q\x00\x00\x00\x03", 5, 1000, PROTO_BAD, 'Q', 3, "below" },
		{ "length 0", (const uint8_t *)"Q\x00\x00\x00\x00", 5, 1000, PROTO_BAD, 'Q', 0, "below" },
		{ "length max+1", (const uint8_t *)"D\x00\x00\x03\xe9", 5, 1000, PROTO_BAD, 'D', 1001, "exceeds" },
		{ "negative length", (const uint8_t *)"D\x80\x00\x00\x00", 5, UINT32_MAX, PROTO_BAD, 'D', 0x80000000u,
		  "negative" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct header_case *c = &cases[i];
		struct pkt_header h = { 0xAA, 0xDEADBEEF };
		const char *why = NULL;
		enum proto_rc rc = proto_read_header(c->data, c->avail, c->max_len, &h, &why);
		print_message("header case: %s\n", c->what);
		assert_int_equal(rc, c->rc);
		if (rc == PROTO_INCOMPLETE)
			continue;
		assert_int_equal(h.type, c->type);
		assert_int_equal(h.len, c->len);
		if (rc == PROTO_BAD) {
			assert_non_null(why);
			assert_non_null(strstr(why, c->why));
		}
	}
}

static void test_read_header_null_why(void **state)
{
	struct pkt_header h;
	assert_int_equal(proto_read_header((const uint8_t *)"Q\x00\x00\x00\x01", 5, 100, &h, NULL), PROTO_BAD);
	/* An incomplete read still leaves h defined. */
	assert_int_equal(proto_read_header((const uint8_t *)"E", 1, 100, &h, NULL), PROTO_INCOMPLETE);
	assert_int_equal(h.type, 0);
	assert_int_equal(h.len, 0);
}

/* ---- proto_read_startup_len ---- */

struct startup_len_case {
	const char *what;
	const uint8_t *data;
	size_t avail;
	enum proto_rc rc;
	uint32_t len;
	const char *why;
};

static void test_read_startup_len_table(void **state)
{
	static const struct startup_len_case cases[] = {
		{ "empty", (const uint8_t *)"", 0, PROTO_INCOMPLETE, 0, NULL },
		{ "3 bytes", (const uint8_t *)"\x00\x00\x00", 3, PROTO_INCOMPLETE, 0, NULL },
		{ "length 8", (const uint8_t *)"\x00\x00\x00\x08", 4, PROTO_OK, 8, NULL },
		{ "length 8 with code", (const uint8_t *)"\x00\x00\x00\x08" SSLREQ, 8, PROTO_OK, 8, NULL },
		{ "length 10000", (const uint8_t *)"\x00\x00\x27\x10", 4, PROTO_OK, 10000, NULL },
		{ "length 7", (const uint8_t *)"\x00\x00\x00\x07", 4, PROTO_BAD, 7, "below" },
		{ "length 0", (const uint8_t *)"\x00\x00\x00\x00", 4, PROTO_BAD, 0, "below" },
		{ "length 10001", (const uint8_t *)"\x00\x00\x27\x11", 4, PROTO_BAD, 10001, "above" },
		{ "huge length", (const uint8_t *)"\xff\xff\xff\xff", 4, PROTO_BAD, UINT32_MAX, "above" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct startup_len_case *c = &cases[i];
		uint32_t len = 12345;
		const char *why = NULL;
		enum proto_rc rc = proto_read_startup_len(c->data, c->avail, &len, &why);
		print_message("startup len case: %s\n", c->what);
		assert_int_equal(rc, c->rc);
		if (rc == PROTO_INCOMPLETE)
			continue;
		assert_int_equal(len, c->len);
		if (rc == PROTO_BAD) {
			assert_non_null(why);
			assert_non_null(strstr(why, c->why));
		} else {
			assert_null(why);
		}
	}
}

/* ---- proto_parse_startup ---- */

struct startup_case {
	const char *what;
	const char *body;          /* everything after the length word */
	size_t body_len;
	uint32_t len_word;         /* 0: the real packet length */
	enum proto_rc rc;
	const char *err;           /* substring of the error on PROTO_BAD */
	uint32_t code;
	int nparams;
	const char *user;
	const char *database;
};

#define BODY(s) s, sizeof(s) - 1

static void test_parse_startup_table(void **state)
{
	static const struct startup_case cases[] = {
		{ "user and database", BODY(V3 "user\0alice\0database\0db1\0\0"), 0, PROTO_OK, NULL, PROTO_V3, 2, "alice",
		  "db1" },
		{ "user only: database NULL", BODY(V3 "user\0bob\0application_name\0psql\0\0"), 0, PROTO_OK, NULL,
		  PROTO_V3, 2, "bob", NULL },
		{ "no parameters", BODY(V3 "\0"), 0, PROTO_OK, NULL, PROTO_V3, 0, NULL, NULL },
		{ "empty value allowed", BODY(V3 "user\0u\0options\0\0\0"), 0, PROTO_OK, NULL, PROTO_V3, 2, "u", NULL },
		{ "no body at all", BODY(V3), 0, PROTO_BAD, "missing final terminator", 0, 0, NULL, NULL },
		{ "missing final NUL", BODY(V3 "user\0alice\0"), 0, PROTO_BAD, "missing final terminator", 0, 0, NULL,
		  NULL },
		{ "unterminated name", BODY(V3 "user\0alice\0data"), 0, PROTO_BAD, "unterminated parameter name", 0, 0,
		  NULL, NULL },
		{ "unterminated value", BODY(V3 "user\0ali"), 0, PROTO_BAD, "unterminated value for parameter \"user\"",
		  0, 0, NULL, NULL },
		{ "name without value", BODY(V3 "user\0"), 0, PROTO_BAD, "unterminated value", 0, 0, NULL, NULL },
		{ "data after terminator", BODY(V3 "user\0a\0\0junk"), 0, PROTO_BAD, "after the final terminator", 0, 0,
		  NULL, NULL },
		{ "second empty name", BODY(V3 "\0\0"), 0, PROTO_BAD, "after the final terminator", 0, 0, NULL, NULL },
		{ "duplicate name", BODY(V3 "user\0a\0user\0b\0\0"), 0, PROTO_BAD, "duplicate startup parameter \"user\"",
		  0, 0, NULL, NULL },
		{ "length word mismatch", BODY(V3 "user\0a\0\0"), 100, PROTO_BAD, "does not match", 0, 0, NULL, NULL },
		{ "protocol 2.0", BODY("\x00\x02\x00\x00" "user\0a\0\0"), 0, PROTO_BAD, "unsupported frontend protocol 2.0",
		  0, 0, NULL, NULL },
		{ "protocol 3.2: accepted as 3.0 (the client is sent NegotiateProtocolVersion)",
		  BODY("\x00\x03\x00\x02" "user\0a\0_pq_.x\0y\0\0"), 0, PROTO_OK, NULL, PROTO_V3, 2, "a", NULL },
		{ "protocol 4.0", BODY("\x00\x04\x00\x00" "user\0a\0\0"), 0, PROTO_BAD, "unsupported frontend protocol 4.0",
		  0, 0, NULL, NULL },
		{ "unknown request code", BODY("\x04\xd2\x16\x31"), 0, PROTO_BAD, "unsupported frontend protocol 1234.5681", 0,
		  0, NULL, NULL },
		{ "cancel request", BODY(CANCEL "\x00\x00\x30\x39\xde\xad\xbe\xef"), 0, PROTO_OK, NULL,
		  PROTO_CANCEL_REQUEST, 0, NULL, NULL },
		{ "cancel request too short", BODY(CANCEL "\x00\x00\x30\x39"), 0, PROTO_BAD, "CancelRequest length 12", 0,
		  0, NULL, NULL },
		{ "cancel request too long", BODY(CANCEL "\x00\x00\x30\x39\xde\xad\xbe\xef\x00\x00\x00\x00"), 0,
		  PROTO_BAD, "CancelRequest length 20", 0, 0, NULL, NULL },
		{ "SSL request", BODY(SSLREQ), 0, PROTO_OK, NULL, PROTO_SSL_REQUEST, 0, NULL, NULL },
		{ "SSL request with payload", BODY(SSLREQ "\x00\x00\x00\x00"), 0, PROTO_BAD, "SSLRequest length 12", 0, 0,
		  NULL, NULL },
		{ "GSSENC request", BODY(GSSREQ), 0, PROTO_OK, NULL, PROTO_GSSENC_REQUEST, 0, NULL, NULL },
		{ "GSSENC request with payload", BODY(GSSREQ "\x01"), 0, PROTO_BAD, "GSSENCRequest length 9", 0, 0, NULL,
		  NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct startup_case *c = &cases[i];
		uint8_t pkt[256];
		size_t len = 4 + c->body_len;
		struct startup_packet sp;
		char err[200] = "untouched";
		enum proto_rc rc;
		uint32_t word = c->len_word ? c->len_word : (uint32_t)len;

		print_message("startup case: %s\n", c->what);
		assert_true(len <= sizeof(pkt));
		pkt[0] = (uint8_t)(word >> 24);
		pkt[1] = (uint8_t)(word >> 16);
		pkt[2] = (uint8_t)(word >> 8);
		pkt[3] = (uint8_t)word;
		memcpy(pkt + 4, c->body, c->body_len);
		rc = proto_parse_startup(pkt, len, &sp, err, sizeof(err));
		if (rc != c->rc)
			print_message("  unexpected result, err=\"%s\"\n", err);
		assert_int_equal(rc, c->rc);
		if (rc == PROTO_BAD) {
			if (!strstr(err, c->err))
				print_message("  err=\"%s\", want \"%s\"\n", err, c->err);
			assert_non_null(strstr(err, c->err));
			/* the version errors are the ones PostgreSQL reports with 0A000 */
			assert_int_equal(sp.bad_version, strstr(c->err, "unsupported frontend protocol") != NULL);
			continue;
		}
		assert_int_equal(sp.code, c->code);
		if (c->code == PROTO_V3)
			assert_int_equal(sp.minor, ((uint8_t)c->body[2] << 8) | (uint8_t)c->body[3]);
		assert_int_equal(sp.nparams, c->nparams);
		if (c->user)
			assert_string_equal(sp.user, c->user);
		else
			assert_null(sp.user);
		if (c->database)
			assert_string_equal(sp.database, c->database);
		else
			assert_null(sp.database);
	}
}

static void test_parse_startup_details(void **state)
{
	static const uint8_t v3[] = "\x00\x00\x00\x21" V3 "user\0alice\0database\0db1\0\0";
	static const uint8_t cancel[] = "\x00\x00\x00\x10" CANCEL "\x00\x00\x30\x39\xde\xad\xbe\xef";
	struct startup_packet sp;
	char err[100];

	assert_int_equal(sizeof(v3) - 1, 0x21);
	assert_int_equal(proto_parse_startup(v3, sizeof(v3) - 1, &sp, err, sizeof(err)), PROTO_OK);
	assert_string_equal(sp.names[0], "user");
	assert_string_equal(sp.values[0], "alice");
	assert_string_equal(sp.names[1], "database");
	assert_string_equal(sp.values[1], "db1");
	/* Strings point into the caller's buffer. */
	assert_ptr_equal(sp.user, (const char *)v3 + 13);
	assert_ptr_equal(sp.database, sp.values[1]);

	assert_int_equal(proto_parse_startup(cancel, sizeof(cancel) - 1, &sp, err, sizeof(err)), PROTO_OK);
	assert_int_equal(sp.code, PROTO_CANCEL_REQUEST);
	assert_int_equal(sp.cancel_pid, 12345);
	assert_int_equal(sp.cancel_key, 0xDEADBEEFu);
	assert_int_equal(sp.nparams, 0);
}

static void test_parse_startup_bad_sizes(void **state)
{
	uint8_t big[PROTO_MAX_STARTUP + 1];
	struct startup_packet sp;
	char err[200];

	/* Shorter than length word + code. */
	assert_int_equal(proto_parse_startup((const uint8_t *)"\x00\x00\x00\x04", 4, &sp, err, sizeof(err)),
			 PROTO_BAD);
	assert_non_null(strstr(err, "too short"));
	assert_int_equal(proto_parse_startup((const uint8_t *)"\x00\x00\x00\x07\x00\x03\x00", 7, &sp, err,
					     sizeof(err)), PROTO_BAD);
	assert_non_null(strstr(err, "too short"));

	memset(big, 'a', sizeof(big));
	big[0] = 0;
	big[1] = 0;
	big[2] = (uint8_t)(sizeof(big) >> 8);
	big[3] = (uint8_t)sizeof(big);
	assert_int_equal(proto_parse_startup(big, sizeof(big), &sp, err, sizeof(err)), PROTO_BAD);
	assert_non_null(strstr(err, "too long"));

	/* A NULL / zero-size error buffer is tolerated. */
	assert_int_equal(proto_parse_startup((const uint8_t *)"\x00\x00\x00\x04", 4, &sp, NULL, 0), PROTO_BAD);
	/* Errors are truncated to the buffer. */
	assert_int_equal(proto_parse_startup((const uint8_t *)"\x00\x00\x00\x08\x00\x02\x00\x00", 8, &sp, err, 12),
			 PROTO_BAD);
	assert_int_equal(strlen(err), 11);
}

/* Builds a v3 startup packet with n distinct parameters p0=v, p1=v, … */
static void build_many_params(struct pkt_builder *b, int n)
{
	char names[STARTUP_MAX_PARAMS + 2][16];
	const char *np[STARTUP_MAX_PARAMS + 2], *vp[STARTUP_MAX_PARAMS + 2];
	assert_true(n <= STARTUP_MAX_PARAMS + 2);
	for (int i = 0; i < n; i++) {
		snprintf(names[i], sizeof(names[i]), "p%d", i);
		np[i] = names[i];
		vp[i] = "v";
	}
	pkt_startup(b, np, vp, n);
	assert_false(b->failed);
}

static void test_parse_startup_param_limit(void **state)
{
	struct pkt_builder b;
	struct startup_packet sp;
	char err[200];

	pkt_init(&b);
	build_many_params(&b, STARTUP_MAX_PARAMS);
	assert_int_equal(proto_parse_startup(b.buf, b.len, &sp, err, sizeof(err)), PROTO_OK);
	assert_int_equal(sp.nparams, STARTUP_MAX_PARAMS);
	assert_string_equal(sp.names[STARTUP_MAX_PARAMS - 1], "p63");

	pkt_reset(&b);
	build_many_params(&b, STARTUP_MAX_PARAMS + 1);
	assert_int_equal(proto_parse_startup(b.buf, b.len, &sp, err, sizeof(err)), PROTO_BAD);
	assert_non_null(strstr(err, "too many startup parameters"));
	pkt_free(&b);
}

/* ---- reader ---- */

static void test_reader_values(void **state)
{
	static const uint8_t data[] = "\x01\x02\x03\x04\x05\x06\x07" "abc\0" "\xff";
	struct pkt_reader r;
	const uint8_t *p;

	reader_init(&r, data, sizeof(data) - 1);
	assert_int_equal(reader_u8(&r), 0x01);
	assert_int_equal(reader_u16(&r), 0x0203);
	assert_int_equal(reader_u32(&r), 0x04050607u);
	assert_string_equal(reader_cstr(&r), "abc");
	p = reader_bytes(&r, 0);
	assert_non_null(p);
	p = reader_bytes(&r, 1);
	assert_ptr_equal(p, data + 11);
	assert_int_equal(p[0], 0xff);
	assert_false(r.failed);
	assert_int_equal(r.pos, r.len);
}

static void test_reader_sticky_failure(void **state)
{
	static const uint8_t data[] = "\x00\x00\x01" "x\0";
	struct pkt_reader r;

	/* u32 over 3 bytes fails… */
	reader_init(&r, data, 3);
	assert_int_equal(reader_u32(&r), 0);
	assert_true(r.failed);
	/* …and later reads fail too even where bytes remain. */
	assert_int_equal(reader_u8(&r), 0);
	assert_int_equal(reader_u16(&r), 0);
	assert_string_equal(reader_cstr(&r), "");
	assert_null(reader_bytes(&r, 0));
	assert_true(r.failed);
	assert_int_equal(r.pos, 0);

	/* Unterminated string. */
	reader_init(&r, (const uint8_t *)"abc", 3);
	assert_string_equal(reader_cstr(&r), "");
	assert_true(r.failed);

	/* String at the very end of the message. */
	reader_init(&r, data + 3, 2);
	assert_string_equal(reader_cstr(&r), "x");
	assert_false(r.failed);
	assert_string_equal(reader_cstr(&r), "");
	assert_true(r.failed);

	/* Too few bytes. */
	reader_init(&r, data, 5);
	assert_null(reader_bytes(&r, 6));
	assert_true(r.failed);

	/* Empty reader over NULL. */
	reader_init(&r, NULL, 0);
	assert_non_null(reader_bytes(&r, 0));
	assert_false(r.failed);
	assert_int_equal(reader_u8(&r), 0);
	assert_true(r.failed);
}

/* ---- builder: exact bytes ---- */

static void test_build_exact_bytes(void **state)
{
	struct pkt_builder b;
	static const uint8_t salt[4] = { 0xa1, 0xb2, 0xc3, 0xd4 };

	pkt_init(&b);
	pkt_ready(&b, 'I');
	assert_false(b.failed);
	assert_bytes(b.buf, b.len, BYTES("\x5a\x00\x00\x00\x05\x49"));

	pkt_reset(&b);
	pkt_auth(&b, AUTH_REQ_OK, NULL, 0);
	assert_bytes(b.buf, b.len, BYTES("\x52\x00\x00\x00\x08\x00\x00\x00\x00"));

	pkt_reset(&b);
	pkt_auth(&b, AUTH_REQ_MD5, salt, 4);
	assert_bytes(b.buf, b.len, BYTES("R\x00\x00\x00\x0c\x00\x00\x00\x05\xa1\xb2\xc3\xd4"));

	pkt_reset(&b);
	pkt_auth_sasl(&b, "SCRAM-SHA-256");
	assert_bytes(b.buf, b.len, BYTES("R\x00\x00\x00\x17\x00\x00\x00\x0a" "SCRAM-SHA-256\0\0"));

	pkt_reset(&b);
	pkt_backend_key(&b, 12345, 0xDEADBEEF);
	assert_bytes(b.buf, b.len, BYTES("K\x00\x00\x00\x0c\x00\x00\x30\x39\xde\xad\xbe\xef"));

	pkt_reset(&b);
	pkt_param_status(&b, "TimeZone", "UTC");
	assert_bytes(b.buf, b.len, BYTES("S\x00\x00\x00\x11TimeZone\0UTC\0"));

	pkt_reset(&b);
	pkt_query(&b, "SELECT 1");
	assert_bytes(b.buf, b.len, BYTES("Q\x00\x00\x00\x0dSELECT 1\0"));

	pkt_reset(&b);
	pkt_password(&b, "pw");
	assert_bytes(b.buf, b.len, BYTES("p\x00\x00\x00\x07pw\0"));

	pkt_reset(&b);
	pkt_terminate(&b);
	assert_bytes(b.buf, b.len, BYTES("X\x00\x00\x00\x04"));

	pkt_reset(&b);
	pkt_command_complete(&b, "SHOW");
	assert_bytes(b.buf, b.len, BYTES("C\x00\x00\x00\x09SHOW\0"));

	pkt_reset(&b);
	pkt_cancel(&b, 12345, 0xDEADBEEF);
	assert_bytes(b.buf, b.len, BYTES("\x00\x00\x00\x10" CANCEL "\x00\x00\x30\x39\xde\xad\xbe\xef"));

	pkt_reset(&b);
	pkt_sasl_initial(&b, "SCRAM-SHA-256", "n,,n=,r=abc", 11);
	assert_bytes(b.buf, b.len, BYTES("p\x00\x00\x00\x21" "SCRAM-SHA-256\0\x00\x00\x00\x0b" "n,,n=,r=abc"));

	pkt_reset(&b);
	pkt_sasl_initial(&b, "SCRAM-SHA-256", NULL, 0);
	assert_bytes(b.buf, b.len, BYTES("p\x00\x00\x00\x16" "SCRAM-SHA-256\0\xff\xff\xff\xff"));

	pkt_reset(&b);
	pkt_sasl_response(&b, "c=biws", 6);
	assert_bytes(b.buf, b.len, BYTES("p\x00\x00\x00\x0a" "c=biws"));

	pkt_reset(&b);
	pkt_startup(&b, (const char *const[]){ "user" }, (const char *const[]){ "u" }, 1);
	assert_bytes(b.buf, b.len, BYTES("\x00\x00\x00\x10" V3 "user\0u\0\0"));
	assert_false(b.failed);
	pkt_free(&b);
	assert_null(b.buf);
	assert_int_equal(b.len, 0);
}

static void test_build_error_exact_and_notice(void **state)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_error(&b, "FATAL", "08P01", "bad");
	assert_bytes(b.buf, b.len, BYTES("E\x00\x00\x00\x1f" "SFATAL\0VFATAL\0C08P01\0Mbad\0\0"));
	pkt_reset(&b);
	pkt_notice(&b, "WARNING", "01000", "w");
	assert_false(b.failed);
	assert_int_equal(b.buf[0], 'N');
	assert_int_equal(b.len - 5, sizeof("SWARNING\0VWARNING\0C01000\0Mw\0\0") - 1);
	assert_memory_equal(b.buf + 5, "SWARNING\0VWARNING\0C01000\0Mw\0\0", b.len - 5);
	pkt_reset(&b);
	/* protocol 2.0's error: no length word, the text ends at its NUL */
	pkt_error_v2(&b, "FATAL", "unsupported frontend protocol 2.0: server supports 3.0 to 3.0");
	assert_false(b.failed);
	assert_bytes(b.buf, b.len, BYTES("EFATAL:  unsupported frontend protocol 2.0: server supports 3.0 to 3.0\n\0"));
	/* inside an unfinished message it is misuse, and the builder says so */
	pkt_reset(&b);
	pkt_begin(&b, 'Q');
	pkt_error_v2(&b, "FATAL", "x");
	assert_true(b.failed);
	pkt_free(&b);
}

/* ---- builder: round trips through the parsers ---- */

static void test_error_round_trip(void **state)
{
	struct pkt_builder b;
	struct pkt_header h;
	struct error_fields ef;
	const char *why;

	pkt_init(&b);
	pkt_error(&b, "ERROR", SQLSTATE_INVALID_CATALOG, "database \"nope\" does not exist");
	assert_false(b.failed);
	assert_int_equal(proto_read_header(b.buf, b.len, 1000, &h, &why), PROTO_OK);
	assert_int_equal(h.type, BE_ERROR);
	assert_int_equal((size_t)h.len + 1, b.len);
	assert_int_equal(proto_parse_error(b.buf + 5, h.len - 4, &ef), PROTO_OK);
	assert_string_equal(ef.severity, "ERROR");
	assert_string_equal(ef.sqlstate, "3D000");
	assert_string_equal(ef.message, "database \"nope\" does not exist");
	pkt_free(&b);
}

static void test_startup_round_trip(void **state)
{
	static const char *const names[] = { "user", "database", "application_name", "client_encoding" };
	static const char *const values[] = { "alice", "shop", "psql", "UTF8" };
	struct pkt_builder b;
	struct startup_packet sp;
	uint32_t len;
	const char *why;
	char err[200];

	pkt_init(&b);
	pkt_startup(&b, names, values, 4);
	assert_false(b.failed);
	assert_int_equal(proto_read_startup_len(b.buf, b.len, &len, &why), PROTO_OK);
	assert_int_equal(len, b.len);
	assert_int_equal(proto_parse_startup(b.buf, b.len, &sp, err, sizeof(err)), PROTO_OK);
	assert_int_equal(sp.code, PROTO_V3);
	assert_int_equal(sp.nparams, 4);
	for (int i = 0; i < 4; i++) {
		assert_string_equal(sp.names[i], names[i]);
		assert_string_equal(sp.values[i], values[i]);
	}
	assert_string_equal(sp.user, "alice");
	assert_string_equal(sp.database, "shop");

	/* Cancel round trip. */
	pkt_reset(&b);
	pkt_cancel(&b, 4242, 0x01020304);
	assert_int_equal(b.len, 16);
	assert_int_equal(proto_parse_startup(b.buf, b.len, &sp, err, sizeof(err)), PROTO_OK);
	assert_int_equal(sp.code, PROTO_CANCEL_REQUEST);
	assert_int_equal(sp.cancel_pid, 4242);
	assert_int_equal(sp.cancel_key, 0x01020304);
	pkt_free(&b);
}

static void test_row_description_and_data_row(void **state)
{
	static const char *const cols[] = { "name", "count" };
	static const uint32_t oids[] = { 25, 20 };
	static const char *const vals[] = { "pool", NULL, "" };
	struct pkt_builder b;
	struct pkt_header h;
	struct pkt_reader r;
	const char *why;
	const uint8_t *p;

	pkt_init(&b);
	pkt_row_description(&b, cols, oids, 2);
	assert_false(b.failed);
	assert_int_equal(proto_read_header(b.buf, b.len, 1000, &h, &why), PROTO_OK);
	assert_int_equal(h.type, BE_ROW_DESCRIPTION);
	assert_int_equal((size_t)h.len + 1, b.len);
	reader_init(&r, b.buf + 5, h.len - 4);
	assert_int_equal(reader_u16(&r), 2);
	for (int i = 0; i < 2; i++) {
		assert_string_equal(reader_cstr(&r), cols[i]);
		assert_int_equal(reader_u32(&r), 0);            /* table oid */
		assert_int_equal(reader_u16(&r), 0);            /* attnum */
		assert_int_equal(reader_u32(&r), oids[i]);
		assert_int_equal((int16_t)reader_u16(&r), -1);  /* typlen */
		assert_int_equal((int32_t)reader_u32(&r), -1);  /* typmod */
		assert_int_equal(reader_u16(&r), 0);            /* text */
	}
	assert_false(r.failed);
	assert_int_equal(r.pos, r.len);

	pkt_reset(&b);
	pkt_data_row(&b, vals, 3);
	assert_false(b.failed);
	assert_bytes(b.buf, b.len, BYTES("D\x00\x00\x00\x16\x00\x03\x00\x00\x00\x04pool\xff\xff\xff\xff\x00\x00\x00\x00"));
	reader_init(&r, b.buf + 5, b.len - 5);
	assert_int_equal(reader_u16(&r), 3);
	assert_int_equal(reader_u32(&r), 4);
	p = reader_bytes(&r, 4);
	assert_memory_equal(p, "pool", 4);
	assert_int_equal(reader_u32(&r), UINT32_MAX);
	assert_int_equal(reader_u32(&r), 0);
	assert_false(r.failed);
	assert_int_equal(r.pos, r.len);

	pkt_reset(&b);
	pkt_row_description(&b, cols, oids, -1);
	assert_true(b.failed);
	pkt_free(&b);
}

static void test_builder_several_messages(void **state)
{
	struct pkt_builder b;
	struct pkt_header h;
	const char *why;
	size_t off = 0;
	static const uint8_t want_types[] = { BE_AUTH, BE_PARAM_STATUS, BE_BACKEND_KEY, BE_READY };

	pkt_init(&b);
	pkt_auth(&b, AUTH_REQ_OK, NULL, 0);
	pkt_param_status(&b, "client_encoding", "UTF8");
	pkt_backend_key(&b, 1, 2);
	pkt_ready(&b, 'T');
	assert_false(b.failed);
	for (size_t i = 0; i < ARRAY_SIZE(want_types); i++) {
		assert_int_equal(proto_read_header(b.buf + off, b.len - off, 1000, &h, &why), PROTO_OK);
		assert_int_equal(h.type, want_types[i]);
		off += (size_t)h.len + 1;
	}
	assert_int_equal(off, b.len);
	assert_int_equal(b.buf[b.len - 1], 'T');
	pkt_free(&b);
}

static void test_builder_large_message(void **state)
{
	size_t n = 100000;
	char *sql = malloc(n + 1);
	struct pkt_builder b;
	struct pkt_header h;
	const char *why;

	assert_non_null(sql);
	memset(sql, 'x', n);
	sql[n] = '\0';
	pkt_init(&b);
	pkt_query(&b, sql);
	assert_false(b.failed);
	assert_int_equal(b.len, 5 + n + 1);
	assert_true(b.cap >= b.len);
	assert_int_equal(proto_read_header(b.buf, b.len, UINT32_MAX, &h, &why), PROTO_OK);
	assert_int_equal(h.len, n + 5);
	assert_int_equal(b.buf[b.len - 1], 0);
	pkt_free(&b);
	free(sql);
}

static void test_builder_misuse(void **state)
{
	struct pkt_builder b;

	/* pkt_end without pkt_begin. */
	pkt_init(&b);
	pkt_end(&b);
	assert_true(b.failed);
	/* Every later call is a no-op. */
	pkt_ready(&b, 'I');
	pkt_u32(&b, 7);
	pkt_cstr(&b, "abc");
	pkt_bytes(&b, "abc", 3);
	assert_int_equal(b.len, 0);
	assert_true(b.failed);
	/* Reset clears the flag. */
	pkt_reset(&b);
	assert_false(b.failed);
	pkt_ready(&b, 'I');
	assert_int_equal(b.len, 6);

	/* pkt_end twice. */
	pkt_reset(&b);
	pkt_begin(&b, 'Z');
	pkt_u8(&b, 'I');
	pkt_end(&b);
	assert_false(b.failed);
	pkt_end(&b);
	assert_true(b.failed);

	/* Nested begin. */
	pkt_reset(&b);
	pkt_begin(&b, 'Q');
	pkt_begin(&b, 'Q');
	assert_true(b.failed);

	/* Failure in the middle of a message leaves the earlier bytes but nothing more. */
	pkt_reset(&b);
	pkt_ready(&b, 'I');
	pkt_begin(&b, 'S');
	pkt_cstr(&b, NULL);
	assert_true(b.failed);
	pkt_cstr(&b, "x");
	pkt_end(&b);
	assert_int_equal(b.len, 6 + 5);

	/* Empty or NULL startup parameter names. */
	pkt_reset(&b);
	pkt_startup(&b, (const char *const[]){ "" }, (const char *const[]){ "v" }, 1);
	assert_true(b.failed);

	/* Error with a NULL sqlstate. */
	pkt_reset(&b);
	pkt_error(&b, "ERROR", NULL, "m");
	assert_true(b.failed);

	/* An explicit untyped packet. */
	pkt_reset(&b);
	pkt_begin(&b, 0);
	pkt_u32(&b, PROTO_SSL_REQUEST);
	pkt_end(&b);
	assert_false(b.failed);
	assert_bytes(b.buf, b.len, BYTES("\x00\x00\x00\x08" SSLREQ));
	pkt_free(&b);
}

/* ---- proto_parse_error ---- */

struct error_case {
	const char *what;
	const char *body;
	size_t len;
	enum proto_rc rc;
	const char *severity;
	const char *sqlstate;
	const char *message;
};

static void test_parse_error_table(void **state)
{
	static const struct error_case cases[] = {
		{ "full", BODY("SERROR\0VERROR\0C42601\0Msyntax error\0\0"), PROTO_OK, "ERROR", "42601", "syntax error" },
		{ "V preferred over localized S (S first)", BODY("SFEHLER\0VERROR\0C42P01\0Mx\0\0"), PROTO_OK, "ERROR",
		  "42P01", "x" },
		{ "V preferred over localized S (V first)", BODY("VFATAL\0SFATALE\0C28P01\0Mpw\0\0"), PROTO_OK, "FATAL",
		  "28P01", "pw" },
		{ "S only (pre-9.6 server)", BODY("SWARNING\0C01000\0Mw\0\0"), PROTO_OK, "WARNING", "01000", "w" },
		{ "other fields skipped", BODY("SERROR\0VERROR\0C23505\0Mdup\0Ddetail\0Fnbtinsert.c\0L664\0\0"),
		  PROTO_OK, "ERROR", "23505", "dup" },
		{ "no fields", BODY("\0"), PROTO_OK, NULL, NULL, NULL },
		{ "empty body", BODY(""), PROTO_BAD, NULL, NULL, NULL },
		{ "missing terminator", BODY("SERROR\0C42601\0Mx\0"), PROTO_BAD, NULL, NULL, NULL },
		{ "unterminated field", BODY("SERROR\0Mhalf"), PROTO_BAD, NULL, NULL, NULL },
		{ "field code without value", BODY("SERROR\0M"), PROTO_BAD, NULL, NULL, NULL },
		{ "data after terminator", BODY("SERROR\0\0junk"), PROTO_BAD, NULL, NULL, NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		const struct error_case *c = &cases[i];
		struct error_fields ef = { "junk", "junk", "junk" };
		enum proto_rc rc = proto_parse_error((const uint8_t *)c->body, c->len, &ef);
		print_message("error case: %s\n", c->what);
		assert_int_equal(rc, c->rc);
		if (rc != PROTO_OK)
			continue;
#define CHECK_FIELD(f)                                  \
	do {                                            \
		if (c->f)                               \
			assert_string_equal(ef.f, c->f); \
		else                                    \
			assert_null(ef.f);              \
	} while (0)
		CHECK_FIELD(severity);
		CHECK_FIELD(sqlstate);
		CHECK_FIELD(message);
#undef CHECK_FIELD
	}
}

/* ---- proto_msg_name ---- */

static void test_msg_name(void **state)
{
	static const struct {
		uint8_t type;
		bool fe;
		const char *name;
	} cases[] = {
		{ 'Q', true, "Query" }, { 'P', true, "Parse" }, { 'B', true, "Bind" }, { 'S', true, "Sync" },
		{ 'X', true, "Terminate" }, { 'p', true, "PasswordMessage" }, { 'D', true, "Describe" },
		{ 'D', false, "DataRow" }, { 'Z', false, "ReadyForQuery" }, { 'S', false, "ParameterStatus" },
		{ 'E', false, "ErrorResponse" }, { 'E', true, "Execute" }, { 'C', true, "Close" },
		{ 'C', false, "CommandComplete" }, { 'R', false, "Authentication" }, { 'v', false, "NegotiateProtocolVersion" },
		{ 'Z', true, "unknown" }, { 'Q', false, "unknown" }, { 0, true, "unknown" }, { 0xff, false, "unknown" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		assert_string_equal(proto_msg_name(cases[i].type, cases[i].fe), cases[i].name);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_read_header_table),
		cmocka_unit_test(test_read_header_null_why),
		cmocka_unit_test(test_read_startup_len_table),
		cmocka_unit_test(test_parse_startup_table),
		cmocka_unit_test(test_parse_startup_details),
		cmocka_unit_test(test_parse_startup_bad_sizes),
		cmocka_unit_test(test_parse_startup_param_limit),
		cmocka_unit_test(test_reader_values),
		cmocka_unit_test(test_reader_sticky_failure),
		cmocka_unit_test(test_build_exact_bytes),
		cmocka_unit_test(test_build_error_exact_and_notice),
		cmocka_unit_test(test_error_round_trip),
		cmocka_unit_test(test_startup_round_trip),
		cmocka_unit_test(test_row_description_and_data_row),
		cmocka_unit_test(test_builder_several_messages),
		cmocka_unit_test(test_builder_large_message),
		cmocka_unit_test(test_builder_misuse),
		cmocka_unit_test(test_parse_error_table),
		cmocka_unit_test(test_msg_name),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
