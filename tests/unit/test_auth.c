/* test_auth.c — cmocka tests for auth_file parsing, md5 auth and SCRAM-SHA-256 (RFC 7677 vectors, PostgreSQL secrets). */
#include "auth.h"
#include <setjmp.h>
#include <stdarg.h>
#include <unistd.h>
#include <cmocka.h>

/* RFC 7677 section 3 example (user "user", password "pencil"). */
#define RFC_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_NONCE RFC_CNONCE RFC_SNONCE
#define RFC_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=" RFC_CNONCE
#define RFC_SERVER_FIRST "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096"
#define RFC_PROOF "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_CLIENT_FINAL "c=biws,r=" RFC_NONCE ",p=" RFC_PROOF
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
/* The SCRAM secret of "pencil" with the RFC salt and 4096 iterations (computed with Python's hashlib). */
#define RFC_SECRET "SCRAM-SHA-256$4096:" RFC_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
		   "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* Fixtures generated with PostgreSQL 15: CREATE ROLE x PASSWORD 'pencil' (scram-sha-256) and
 * CREATE ROLE alice PASSWORD 'secret' (md5), then SELECT rolpassword FROM pg_authid. */
#define PG15_SCRAM_PENCIL "SCRAM-SHA-256$4096:VWZwZeICPg06aADUSnwDPQ==$" \
			  "BjfeJSdg7yyDTuT9Sr+aChxBeU5DXXdngxm6kRqA6/M=:4gnJq8yqCDrRAEaBgeN15A2iuGBAPVJkOlzigEnjMw0="
#define PG15_MD5_ALICE "md54a0a68b43b6cd5cf266fa02f196e2371"

static int reset_hooks(void **state)
{
	(void)state;
	scram_set_test_nonce(NULL);
	scram_set_test_username(NULL);
	return 0;
}

/* Runs a whole exchange between parley's client and server code. Returns 0 on success, or the failing step:
 * 1 client-first, 2 server-first, 3 client-final, 4 server-final, 5 client verify. */
static int login(const char *password, const char *secret, char *err, size_t errlen)
{
	struct scram_state cs = { 0 }, ss = { 0 };
	char m1[512], m2[512], m3[512], m4[512];
	int n1, n2, n3, n4, step = 0;

	err[0] = '\0';
	n1 = scram_client_first(&cs, password, m1, sizeof(m1));
	if (n1 < 0) {
		step = 1;
		goto out;
	}
	assert_int_equal((size_t)n1, strlen(m1));
	n2 = scram_server_first(&ss, secret, m1, (size_t)n1, m2, sizeof(m2), err, errlen);
	if (n2 < 0) {
		step = 2;
		goto out;
	}
	assert_int_equal((size_t)n2, strlen(m2));
	n3 = scram_client_final(&cs, m2, (size_t)n2, m3, sizeof(m3), err, errlen);
	if (n3 < 0) {
		step = 3;
		goto out;
	}
	n4 = scram_server_final(&ss, m3, (size_t)n3, m4, sizeof(m4), err, errlen);
	if (n4 < 0) {
		step = 4;
		goto out;
	}
	if (scram_client_verify(&cs, m4, (size_t)n4, err, errlen) < 0)
		step = 5;
out:
	scram_state_clear(&cs);
	scram_state_clear(&ss);
	return step;
}

/* ---- SCRAM: RFC 7677 vector ---- */

static void test_rfc7677_client(void **state)
{
	struct scram_state cs = { 0 };
	char out[512], err[200];
	int n;

	(void)state;
	scram_set_test_nonce(RFC_CNONCE);
	scram_set_test_username("user");
	n = scram_client_first(&cs, "pencil", out, sizeof(out));
	assert_int_equal(n, strlen(RFC_CLIENT_FIRST));
	assert_string_equal(out, RFC_CLIENT_FIRST);
	n = scram_client_final(&cs, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err, sizeof(err));
	assert_int_equal(n, strlen(RFC_CLIENT_FINAL));
	assert_string_equal(out, RFC_CLIENT_FINAL);
	assert_null(cs.password);	/* wiped once the keys are derived */
	assert_int_equal(scram_client_verify(&cs, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), 0);
	scram_state_clear(&cs);
}

static void test_rfc7677_server(void **state)
{
	struct scram_state ss = { 0 };
	char out[512], err[200];
	int n;

	(void)state;
	scram_set_test_nonce(RFC_SNONCE);
	n = scram_server_first(&ss, RFC_SECRET, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out), err,
			       sizeof(err));
	assert_int_equal(n, strlen(RFC_SERVER_FIRST));
	assert_string_equal(out, RFC_SERVER_FIRST);
	n = scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, sizeof(out), err, sizeof(err));
	assert_int_equal(n, strlen(RFC_SERVER_FINAL));
	assert_string_equal(out, RFC_SERVER_FINAL);
	assert_true(ss.have_client_key);
	scram_state_clear(&ss);
}

/* The parsed RFC secret has the RFC salt, and the same exchange works from the plain password (random salt). */
static void test_rfc_secret_parse(void **state)
{
	int iter, salt_len;
	uint8_t salt[64], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
	static const uint8_t rfc_salt[16] = { 0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
					      0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81 };

	(void)state;
	assert_int_equal(scram_parse_secret(RFC_SECRET, &iter, salt, &salt_len, stored, server), 0);
	assert_int_equal(iter, 4096);
	assert_int_equal(salt_len, 16);
	assert_memory_equal(salt, rfc_salt, 16);
	assert_int_equal(scram_parse_secret(PG15_SCRAM_PENCIL, &iter, salt, &salt_len, stored, server), 0);
	assert_int_equal(iter, 4096);
	assert_int_equal(salt_len, 16);
}

/* ---- SCRAM round trips ---- */

static void test_roundtrip_plain(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(login("pencil", "pencil", err, sizeof(err)), 0);
	assert_int_equal(login("", "", err, sizeof(err)), 0);
	assert_int_equal(login("p\xc3\xa4ss \"w,o=rd\"", "p\xc3\xa4ss \"w,o=rd\"", err, sizeof(err)), 0);
}

static void test_roundtrip_scram_secret(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(login("pencil", RFC_SECRET, err, sizeof(err)), 0);
	/* With a username hook too (escaped as a saslname); the server ignores it. */
	scram_set_test_username("a=b,c");
	assert_int_equal(login("pencil", RFC_SECRET, err, sizeof(err)), 0);
}

/* A secret produced by real PostgreSQL verifies a login by parley's client code against parley's server code. */
static void test_postgresql_secret(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(secret_kind(PG15_SCRAM_PENCIL), SECRET_SCRAM);
	assert_int_equal(login("pencil", PG15_SCRAM_PENCIL, err, sizeof(err)), 0);
	assert_int_equal(login("pencil2", PG15_SCRAM_PENCIL, err, sizeof(err)), 4);
}

static void test_wrong_password(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(login("wrong", "pencil", err, sizeof(err)), 4);
	assert_non_null(strstr(err, "proof"));
	assert_int_equal(login("wrong", RFC_SECRET, err, sizeof(err)), 4);
	assert_int_equal(login("Pencil", RFC_SECRET, err, sizeof(err)), 4);
	assert_int_equal(login("", RFC_SECRET, err, sizeof(err)), 4);
}

static void test_md5_secret_cannot_scram(void **state)
{
	char err[200];

	(void)state;
	assert_int_equal(login("secret", PG15_MD5_ALICE, err, sizeof(err)), 2);
	assert_non_null(strstr(err, "md5"));
}

static void test_make_secret(void **state)
{
	char secret[256], secret2[256], small[40], err[200];
	int iter, salt_len;
	uint8_t salt[64], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];

	(void)state;
	assert_int_equal(scram_make_secret("pencil", secret, sizeof(secret)), 0);
	assert_true(strncmp(secret, "SCRAM-SHA-256$4096:", 19) == 0);
	assert_int_equal(secret_kind(secret), SECRET_SCRAM);
	assert_int_equal(scram_parse_secret(secret, &iter, salt, &salt_len, stored, server), 0);
	assert_int_equal(iter, 4096);
	assert_int_equal(salt_len, 16);
	assert_int_equal(login("pencil", secret, err, sizeof(err)), 0);
	assert_int_equal(login("pencil!", secret, err, sizeof(err)), 4);
	/* Random salt: two secrets for the same password differ. */
	assert_int_equal(scram_make_secret("pencil", secret2, sizeof(secret2)), 0);
	assert_string_not_equal(secret, secret2);
	assert_int_equal(scram_make_secret("pencil", small, sizeof(small)), -1);
}

/* The "y,," gs2 header is accepted, and the client-final "c=" must then encode "y,,". */
static void test_gs2_y_flag(void **state)
{
	struct scram_state ss = { 0 };
	char out[512], err[200];
	static const char first[] = "y,,n=,r=" RFC_CNONCE;
	static const char final_n[] = RFC_CLIENT_FINAL;

	(void)state;
	scram_set_test_nonce(RFC_SNONCE);
	assert_true(scram_server_first(&ss, RFC_SECRET, first, strlen(first), out, sizeof(out), err, sizeof(err)) > 0);
	assert_int_equal(ss.cbind_flag, 'y');
	assert_int_equal(scram_server_final(&ss, final_n, strlen(final_n), out, sizeof(out), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "channel-binding"));
	scram_state_clear(&ss);
}

/* ---- SCRAM: malformed messages ---- */

/* A string literal that may contain NUL bytes, with its length. */
#define BIN(s) s, sizeof(s) - 1

struct bad_msg {
	const char *msg;
	size_t len;		/* 0: strlen(msg) */
	const char *err_part;	/* expected substring of the error, or NULL */
};

static size_t bad_len(const struct bad_msg *b)
{
	return b->len ? b->len : strlen(b->msg);
}

static void test_server_first_malformed(void **state)
{
	static char long_nonce[300];
	static const struct bad_msg cases[] = {
		{ "", 0, "channel-binding flag" },
		{ "n", 0, "comma" },
		{ "n,", 0, "comma" },
		{ "n,,", 0, "\"n\" expected" },
		{ "n,,n=", 0, "\"r\" expected" },
		{ "n,,n=user", 0, "\"r\" expected" },
		{ "n,,r=abc", 0, "\"n\" expected" },
		{ "n,,n=,r=", 0, "invalid nonce" },
		{ "n,,n=,r=a c", 0, "invalid nonce" },
		{ "n,,n=,r=abc,", 0, "malformed attribute" },
		{ "n,,n=,r=abc,=x", 0, "malformed attribute" },
		{ "n,,n=,r=abc,xyz", 0, "malformed attribute" },
		{ "n,,n=,x=1,r=abc", 0, "\"r\" expected" },
		{ "p=tls-server-end-point,,n=,r=abc", 0, "channel binding" },
		{ "n,a=bob,n=,r=abc", 0, "authorization identity" },
		{ "x,,n=,r=abc", 0, "channel-binding flag" },
		{ "nn,,n=,r=abc", 0, "comma" },
		{ "n,,m=ext,n=,r=abc", 0, "extension" },
		{ BIN("n,,n=,r=ab\0c"), "NUL" },
		{ long_nonce, 0, "too long" },
	};
	char out[512], err[200];

	(void)state;
	snprintf(long_nonce, sizeof(long_nonce), "n,,n=,r=%0200d", 7);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct scram_state ss = { 0 };
		int n;

		err[0] = '\0';
		n = scram_server_first(&ss, "pencil", cases[i].msg, bad_len(&cases[i]), out, sizeof(out), err,
				       sizeof(err));
		if (n != -1 || !err[0] || (cases[i].err_part && !strstr(err, cases[i].err_part)))
			fail_msg("case %zu (%s): n=%d err=\"%s\"", i, cases[i].msg, n, err);
		assert_null(ss.client_first_bare);	/* state cleared on failure */
		scram_state_clear(&ss);
	}
	/* Extensions after the nonce are ignored, like PostgreSQL. */
	{
		struct scram_state ss = { 0 };
		static const char ok[] = "n,,n=ignored,r=abc,x=1,y=2";
		assert_true(scram_server_first(&ss, "pencil", ok, strlen(ok), out, sizeof(out), err, sizeof(err)) > 0);
		scram_state_clear(&ss);
	}
}

/* Every case runs after a valid server-first (RFC secret, RFC nonces), so only the final message varies. */
static void test_server_final_malformed(void **state)
{
	static const struct bad_msg cases[] = {
		{ "", 0, "\"c\" expected" },
		{ "c=bi", 0, "channel-binding" },
		{ "c=biws", 0, "\"r\" expected" },
		{ "c=eSws,r=" RFC_NONCE ",p=" RFC_PROOF, 0, "channel-binding" },
		{ "c=cD10bHMtdW5pcXVlLCw=,r=" RFC_NONCE ",p=" RFC_PROOF, 0, "channel-binding" },
		{ "c=biws,p=" RFC_PROOF, 0, "\"r\" expected" },
		{ "r=" RFC_NONCE ",c=biws,p=" RFC_PROOF, 0, "\"c\" expected" },
		{ "c=biws,r=" RFC_CNONCE ",p=" RFC_PROOF, 0, "nonce mismatch" },
		{ "c=biws,r=" RFC_NONCE "x,p=" RFC_PROOF, 0, "nonce mismatch" },
		{ "c=biws,r=" RFC_NONCE, 0, "proof missing" },
		{ "c=biws,r=" RFC_NONCE ",", 0, "malformed attribute" },
		{ "c=biws,r=" RFC_NONCE ",p=", 0, "malformed proof" },
		{ "c=biws,r=" RFC_NONCE ",p=!!!!", 0, "malformed proof" },
		{ "c=biws,r=" RFC_NONCE ",p=AAAA", 0, "malformed proof" },
		{ "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", 0, "malformed proof" },
		{ "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", 0, "garbage" },
		{ "c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4jUhM+Ute9ytag9zjfMHgsqmmiz7AndVQ=", 0, "wrong password" },
		{ "c=biws,r=" RFC_NONCE ",p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", 0, "wrong password" },
		{ BIN("c=biws,r=" RFC_NONCE ",p=dHzbZapWIk4\0jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="), "NUL" },
	};
	char out[512], err[200];

	(void)state;
	scram_set_test_nonce(RFC_SNONCE);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct scram_state ss = { 0 };
		int n;

		n = scram_server_first(&ss, RFC_SECRET, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out),
				       err, sizeof(err));
		assert_true(n > 0);
		err[0] = '\0';
		n = scram_server_final(&ss, cases[i].msg, bad_len(&cases[i]), out, sizeof(out), err, sizeof(err));
		if (n != -1 || !err[0] || (cases[i].err_part && !strstr(err, cases[i].err_part)))
			fail_msg("case %zu (%s): n=%d err=\"%s\"", i, cases[i].msg, n, err);
		/* A failed exchange cannot be continued, not even with the right proof. */
		n = scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, sizeof(out), err,
				       sizeof(err));
		assert_int_equal(n, -1);
		assert_non_null(strstr(err, "sequence"));
		scram_state_clear(&ss);
	}
}

/* Every case runs after a client-first with the RFC client nonce. */
static void test_client_final_malformed(void **state)
{
	static const struct bad_msg cases[] = {
		{ "", 0, "\"r\" expected" },
		{ "s=" RFC_SALT ",i=4096", 0, "\"r\" expected" },
		{ "r=" RFC_CNONCE ",s=" RFC_SALT ",i=4096", 0, "nonce mismatch" },
		{ "r=x" RFC_NONCE ",s=" RFC_SALT ",i=4096", 0, "nonce mismatch" },
		{ "r=rOprNGfwEbeRWgbNEkq,s=" RFC_SALT ",i=4096", 0, "nonce mismatch" },
		{ "r=" RFC_NONCE " x,s=" RFC_SALT ",i=4096", 0, "nonce mismatch" },
		{ "r=" RFC_NONCE ",s=***,i=4096", 0, "invalid salt" },
		{ "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096", 0, "invalid salt" },
		{ "r=" RFC_NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ,i=4096", 0, "invalid salt" },
		{ "r=" RFC_NONCE ",s=,i=4096", 0, "invalid salt" },
		{ "r=" RFC_NONCE ",i=4096", 0, "\"s\" expected" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT, 0, "\"i\" expected" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",", 0, "\"i\" expected" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=0", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=-1", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=abc", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i= 4096", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=10000001", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=99999999999999999999", 0, "iteration count" },
		{ "r=" RFC_NONCE ",s=" RFC_SALT ",i=4096,x=1", 0, "garbage" },
		{ "m=ext,r=" RFC_NONCE ",s=" RFC_SALT ",i=4096", 0, "extension" },
		{ "r=" RFC_NONCE ",s=W22Z", 0, "\"i\" expected" },
		{ BIN("r=" RFC_NONCE ",s=" RFC_SALT "\0,i=4096"), "NUL" },
	};
	char out[512], err[200];

	(void)state;
	scram_set_test_nonce(RFC_CNONCE);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct scram_state cs = { 0 };
		int n;

		assert_true(scram_client_first(&cs, "pencil", out, sizeof(out)) > 0);
		err[0] = '\0';
		n = scram_client_final(&cs, cases[i].msg, bad_len(&cases[i]), out, sizeof(out), err, sizeof(err));
		if (n != -1 || !err[0] || (cases[i].err_part && !strstr(err, cases[i].err_part)))
			fail_msg("case %zu (%s): n=%d err=\"%s\"", i, cases[i].msg, n, err);
		scram_state_clear(&cs);
	}
}

/* Every case runs after a correct RFC exchange up to the client-final-message. */
static void test_client_verify_malformed(void **state)
{
	static const struct bad_msg cases[] = {
		{ "", 0, "\"v\" expected" },
		{ "e=invalid-proof", 0, "invalid-proof" },
		{ "x=abc", 0, "\"v\" expected" },
		{ "v=", 0, "malformed server signature" },
		{ "v=!!!!", 0, "malformed server signature" },
		{ "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4", 0, "malformed server signature" },
		{ "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", 0, "incorrect server signature" },
		{ RFC_SERVER_FINAL ",x=1", 0, "garbage" },
		{ BIN(RFC_SERVER_FINAL "\0"), "NUL" },
	};
	struct scram_state cs = { 0 };
	char out[512], err[200];

	(void)state;
	scram_set_test_nonce(RFC_CNONCE);
	scram_set_test_username("user");
	/* Out of sequence before the exchange. */
	assert_int_equal(scram_client_verify(&cs, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), -1);
	assert_true(scram_client_first(&cs, "pencil", out, sizeof(out)) > 0);
	assert_int_equal(scram_client_verify(&cs, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), -1);
	assert_true(scram_client_final(&cs, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err,
				       sizeof(err)) > 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		int n;

		err[0] = '\0';
		n = scram_client_verify(&cs, cases[i].msg, bad_len(&cases[i]), err, sizeof(err));
		if (n != -1 || !err[0] || (cases[i].err_part && !strstr(err, cases[i].err_part)))
			fail_msg("case %zu (%s): n=%d err=\"%s\"", i, cases[i].msg, n, err);
	}
	assert_int_equal(scram_client_verify(&cs, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), 0);
	scram_state_clear(&cs);
}

static void test_out_of_sequence(void **state)
{
	struct scram_state st = { 0 };
	char out[512], err[200];

	(void)state;
	assert_int_equal(scram_server_final(&st, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, sizeof(out), err,
					   sizeof(err)), -1);
	assert_int_equal(scram_client_final(&st, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err,
					   sizeof(err)), -1);
	/* Output buffers that are too small fail cleanly. */
	assert_int_equal(scram_client_first(&st, "pencil", out, 10), -1);
	assert_int_equal(scram_server_first(&st, "pencil", RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, 20, err,
					   sizeof(err)), -1);
	scram_state_clear(&st);
}

static void test_state_clear_wipes(void **state)
{
	struct scram_state cs = { 0 }, zero = { 0 };
	char out[512], err[200];

	(void)state;
	assert_true(scram_client_first(&cs, "pencil", out, sizeof(out)) > 0);
	assert_non_null(cs.password);
	assert_true(scram_client_final(&cs, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err,
				       sizeof(err)) < 0);	/* random client nonce: mismatch */
	scram_state_clear(&cs);
	assert_memory_equal(&cs, &zero, sizeof(cs));
	scram_state_clear(&cs);	/* idempotent */
}

/* ---- secrets and md5 ---- */

static void test_secret_kind(void **state)
{
	static const struct {
		const char *secret;
		enum secret_kind kind;
	} cases[] = {
		{ "", SECRET_PLAIN },
		{ "pencil", SECRET_PLAIN },
		{ PG15_MD5_ALICE, SECRET_MD5 },
		{ "md54A0A68B43B6CD5CF266FA02F196E2371", SECRET_PLAIN },	/* uppercase: not md5 (PostgreSQL agrees) */
		{ "md54a0a68b43b6cd5cf266fa02f196e237", SECRET_PLAIN },	/* 31 digits */
		{ "md54a0a68b43b6cd5cf266fa02f196e23711", SECRET_PLAIN },	/* 33 digits */
		{ "md54a0a68b43b6cd5cf266fa02f196e237g", SECRET_PLAIN },
		{ RFC_SECRET, SECRET_SCRAM },
		{ PG15_SCRAM_PENCIL, SECRET_SCRAM },
		{ "SCRAM-SHA-256$4096:" RFC_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", SECRET_PLAIN },
		{ "SCRAM-SHA-256$0:" RFC_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
		  "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", SECRET_PLAIN },
		{ "SCRAM-SHA-256$4096:" RFC_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4q=:"
		  "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", SECRET_PLAIN },
		{ "SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
		  "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", SECRET_PLAIN },
		{ "SCRAM-SHA-1$4096:" RFC_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
		  "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=", SECRET_PLAIN },
	};

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++)
		if (secret_kind(cases[i].secret) != cases[i].kind)
			fail_msg("case %zu (%s): kind %d", i, cases[i].secret, (int)secret_kind(cases[i].secret));
}

static void test_md5_known_answers(void **state)
{
	static const uint8_t salt1[4] = { 1, 2, 3, 4 }, salt2[4] = { 0xde, 0xad, 0xbe, 0xef };
	char h[36], r[36];

	(void)state;
	/* printf 'secretalice' | md5sum -> 4a0a68b43b6cd5cf266fa02f196e2371 (also what PostgreSQL 15 stored). */
	md5_password_hash("secret", "alice", h);
	assert_string_equal(h, "md54a0a68b43b6cd5cf266fa02f196e2371");
	assert_string_equal(h, PG15_MD5_ALICE);
	/* printf '4a0a...2371\x01\x02\x03\x04' | md5sum */
	md5_salted_response(h, salt1, r);
	assert_string_equal(r, "md598a0412b9c31436fc53776e863350083");
	md5_salted_response(h, salt2, r);
	assert_string_equal(r, "md53e1d73ba00a55e8805aa0277d29996c5");
}

static void test_md5_check_response(void **state)
{
	static const uint8_t salt[4] = { 1, 2, 3, 4 }, other[4] = { 1, 2, 3, 5 };
	static const char good[] = "md598a0412b9c31436fc53776e863350083";

	(void)state;
	assert_true(md5_check_response("secret", "alice", salt, good));	/* plain secret */
	assert_true(md5_check_response(PG15_MD5_ALICE, "alice", salt, good));	/* md5 secret */
	assert_false(md5_check_response("secret", "bob", salt, good));	/* user is part of the hash */
	assert_false(md5_check_response("secret", "alice", other, good));
	assert_false(md5_check_response("Secret", "alice", salt, good));
	assert_false(md5_check_response(PG15_MD5_ALICE, "alice", salt, "md598a0412b9c31436fc53776e86335008"));
	assert_false(md5_check_response(PG15_MD5_ALICE, "alice", salt, "md598a0412b9c31436fc53776e8633500833"));
	assert_false(md5_check_response(PG15_MD5_ALICE, "alice", salt, ""));
	assert_false(md5_check_response(PG15_MD5_ALICE, "alice", salt, "secret"));
	assert_false(md5_check_response(RFC_SECRET, "alice", salt, good));	/* SCRAM secrets never pass */
	assert_false(md5_check_response(PG15_SCRAM_PENCIL, "x", salt, good));
}

static void test_random_bytes(void **state)
{
	uint8_t a[32] = { 0 }, b[32] = { 0 };

	(void)state;
	assert_int_equal(random_bytes(a, sizeof(a)), 0);
	assert_int_equal(random_bytes(b, sizeof(b)), 0);
	assert_memory_not_equal(a, b, sizeof(a));
	assert_int_equal(random_bytes(a, 0), 0);
}

/* ---- auth_file ---- */

/* ---- SCRAM pass-through: log into a server with a secret and the ClientKey learned from a client's proof ---- */

/* Plays the RFC 7677 exchange against parley's server code and returns the ClientKey it learned from the proof. */
static void learn_rfc_client_key(uint8_t key[SCRAM_KEY_LEN])
{
	struct scram_state ss = { 0 };
	char out[512], err[200];

	scram_set_test_nonce(RFC_SNONCE);
	assert_true(scram_server_first(&ss, RFC_SECRET, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), out, sizeof(out),
				       err, sizeof(err)) > 0);
	assert_true(scram_server_final(&ss, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), out, sizeof(out), err,
				       sizeof(err)) > 0);
	assert_true(ss.have_client_key);
	memcpy(key, ss.client_key, SCRAM_KEY_LEN);
	scram_state_clear(&ss);
	scram_set_test_nonce(NULL);
}

/* With the learned key, parley's client sends the very bytes a client knowing the password sends (RFC vector). */
static void test_passthrough_rfc7677(void **state)
{
	struct scram_state cs = { 0 };
	uint8_t key[SCRAM_KEY_LEN];
	char out[512], err[200];
	int n;

	(void)state;
	learn_rfc_client_key(key);
	scram_set_test_nonce(RFC_CNONCE);
	scram_set_test_username("user");
	n = scram_client_first_with_key(&cs, RFC_SECRET, key, out, sizeof(out));
	assert_int_equal(n, strlen(RFC_CLIENT_FIRST));
	assert_string_equal(out, RFC_CLIENT_FIRST);
	n = scram_client_final(&cs, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err, sizeof(err));
	assert_int_equal(n, strlen(RFC_CLIENT_FINAL));
	assert_string_equal(out, RFC_CLIENT_FINAL);
	assert_int_equal(scram_client_verify(&cs, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), err, sizeof(err)), 0);
	/* A forged server signature is still caught. */
	scram_state_clear(&cs);
	assert_true(scram_client_first_with_key(&cs, RFC_SECRET, key, out, sizeof(out)) > 0);
	assert_true(scram_client_final(&cs, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), out, sizeof(out), err,
				       sizeof(err)) > 0);
	assert_int_equal(scram_client_verify(&cs, "v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", 46, err, sizeof(err)), -1);
	scram_state_clear(&cs);
}

/* A whole exchange with random nonces: client with key against server code holding the same secret; a server that
 * stores another secret of the same password (other salt) is refused before any proof is sent. */
static void test_passthrough_roundtrip_and_mismatch(void **state)
{
	struct scram_state cs = { 0 }, ss = { 0 };
	uint8_t key[SCRAM_KEY_LEN];
	char m1[512], m2[512], m3[512], m4[512], err[200], other[200];
	int n1, n2, n3, n4;

	(void)state;
	learn_rfc_client_key(key);
	n1 = scram_client_first_with_key(&cs, RFC_SECRET, key, m1, sizeof(m1));
	assert_true(n1 > 0);
	n2 = scram_server_first(&ss, RFC_SECRET, m1, (size_t)n1, m2, sizeof(m2), err, sizeof(err));
	assert_true(n2 > 0);
	n3 = scram_client_final(&cs, m2, (size_t)n2, m3, sizeof(m3), err, sizeof(err));
	assert_true(n3 > 0);
	n4 = scram_server_final(&ss, m3, (size_t)n3, m4, sizeof(m4), err, sizeof(err));
	assert_true(n4 > 0);
	assert_int_equal(scram_client_verify(&cs, m4, (size_t)n4, err, sizeof(err)), 0);
	scram_state_clear(&cs);
	scram_state_clear(&ss);

	assert_int_equal(scram_make_secret("pencil", other, sizeof(other)), 0);
	n1 = scram_client_first_with_key(&cs, RFC_SECRET, key, m1, sizeof(m1));
	assert_true(n1 > 0);
	n2 = scram_server_first(&ss, other, m1, (size_t)n1, m2, sizeof(m2), err, sizeof(err));
	assert_true(n2 > 0);
	err[0] = '\0';
	assert_int_equal(scram_client_final(&cs, m2, (size_t)n2, m3, sizeof(m3), err, sizeof(err)), -1);
	assert_non_null(strstr(err, "differs from the one in auth_file"));
	scram_state_clear(&cs);
	scram_state_clear(&ss);
}

/* A key that does not belong to the secret, or a secret that is not a SCRAM secret, is refused at once. */
static void test_passthrough_bad_inputs(void **state)
{
	struct scram_state cs = { 0 };
	uint8_t key[SCRAM_KEY_LEN];
	char out[512];

	(void)state;
	learn_rfc_client_key(key);
	assert_int_equal(scram_client_first_with_key(&cs, PG15_SCRAM_PENCIL, key, out, sizeof(out)), -1);
	assert_int_equal(scram_client_first_with_key(&cs, "pencil", key, out, sizeof(out)), -1);
	assert_int_equal(scram_client_first_with_key(&cs, PG15_MD5_ALICE, key, out, sizeof(out)), -1);
	assert_int_equal(scram_client_first_with_key(&cs, NULL, key, out, sizeof(out)), -1);
	assert_int_equal(scram_client_first_with_key(&cs, RFC_SECRET, key, out, 8), -1);	/* no room */
	key[0] ^= 1;
	assert_int_equal(scram_client_first_with_key(&cs, RFC_SECRET, key, out, sizeof(out)), -1);
	assert_false(cs.have_client_key);
	assert_false(cs.keys_preset);
}

/* Writes content (len bytes) to a fresh mkstemp file; path receives its name. */
static void write_temp(char path[64], const char *content, size_t len)
{
	int fd;

	strcpy(path, "/tmp/test_auth_XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, content, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

/* Learned keys are kept per auth_file user, only for the secret they belong to, and survive a reload that keeps
 * that secret. */
static void test_auth_user_scram_keys(void **state)
{
	static const char v1[] = "\"scram\" \"" RFC_SECRET "\"\n\"plain\" \"pencil\"\n\"gone\" \"" RFC_SECRET "\"\n";
	static const char v2[] = "\"scram\" \"" RFC_SECRET "\"\n\"plain\" \"pencil\"\n";
	static const char v3[] = "\"scram\" \"" PG15_SCRAM_PENCIL "\"\n";
	struct auth_user *users = NULL, *fresh = NULL, *third = NULL;
	uint8_t key[SCRAM_KEY_LEN];
	char path[64], err[256];

	(void)state;
	learn_rfc_client_key(key);
	write_temp(path, v1, strlen(v1));
	assert_int_equal(auth_file_load(path, &users, err, sizeof(err)), 0);
	unlink(path);
	auth_user_remember_scram_key(users, "plain", "pencil", key);	/* not a SCRAM secret */
	assert_false(auth_user_find(users, "plain")->has_scram_client_key);
	auth_user_remember_scram_key(users, "scram", PG15_SCRAM_PENCIL, key);	/* secret changed meanwhile */
	assert_false(auth_user_find(users, "scram")->has_scram_client_key);
	auth_user_remember_scram_key(users, "nobody", RFC_SECRET, key);
	auth_user_remember_scram_key(users, "scram", RFC_SECRET, key);
	assert_true(auth_user_find(users, "scram")->has_scram_client_key);
	assert_memory_equal(auth_user_find(users, "scram")->scram_client_key, key, SCRAM_KEY_LEN);
	assert_false(auth_user_find(users, "gone")->has_scram_client_key);

	write_temp(path, v2, strlen(v2));
	assert_int_equal(auth_file_load(path, &fresh, err, sizeof(err)), 0);
	unlink(path);
	auth_users_carry_scram_keys(fresh, users);
	assert_true(auth_user_find(fresh, "scram")->has_scram_client_key);
	assert_memory_equal(auth_user_find(fresh, "scram")->scram_client_key, key, SCRAM_KEY_LEN);
	assert_false(auth_user_find(fresh, "plain")->has_scram_client_key);

	write_temp(path, v3, strlen(v3));
	assert_int_equal(auth_file_load(path, &third, err, sizeof(err)), 0);
	unlink(path);
	auth_users_carry_scram_keys(third, fresh);	/* the secret changed: the old key is useless */
	assert_false(auth_user_find(third, "scram")->has_scram_client_key);
	auth_users_free(&users);
	auth_users_free(&fresh);
	auth_users_free(&third);
}

static void test_auth_file_good(void **state)
{
	static const char content[] =
		"; PgBouncer-style comment\n"
		"# shell-style comment\n"
		"\n"
		"   \t\n"
		"\"alice\" \"secret\"\n"
		"  \"bob\"\t\"" PG15_MD5_ALICE "\"   anything after is ignored\n"
		"\"we\"\"ird\" \"pa\"\"ss \"\"word\"\"\"\n"
		"\"carol\" \"\"\n"
		"\"scram\" \"" RFC_SECRET "\"\n"
		"\"alice\" \"newer\"\n"
		"\"dave\" \"x\"\r\n"
		"\"eve\"\"\" \"y\"";	/* no final newline; user eve" with password y */
	char path[64], err[256] = "";
	struct auth_user *users = NULL, *u;

	(void)state;
	write_temp(path, content, strlen(content));
	assert_int_equal(auth_file_load(path, &users, err, sizeof(err)), 0);
	unlink(path);
	assert_int_equal(HASH_COUNT(users), 7);
	assert_string_equal(auth_user_find(users, "alice")->secret, "newer");	/* last line wins */
	u = auth_user_find(users, "bob");
	assert_non_null(u);
	assert_string_equal(u->secret, PG15_MD5_ALICE);
	assert_int_equal(secret_kind(u->secret), SECRET_MD5);
	assert_string_equal(auth_user_find(users, "we\"ird")->secret, "pa\"ss \"word\"");
	assert_string_equal(auth_user_find(users, "carol")->secret, "");
	assert_int_equal(secret_kind(auth_user_find(users, "scram")->secret), SECRET_SCRAM);
	assert_string_equal(auth_user_find(users, "dave")->secret, "x");
	assert_string_equal(auth_user_find(users, "eve\"")->secret, "y");
	assert_null(auth_user_find(users, "nobody"));
	assert_null(auth_user_find(users, "Alice"));
	assert_null(auth_user_find(users, NULL));
	auth_users_free(&users);
	assert_null(users);

	/* An empty file is a valid, empty user list. */
	write_temp(path, "", 0);
	users = NULL;
	assert_int_equal(auth_file_load(path, &users, err, sizeof(err)), 0);
	unlink(path);
	assert_null(users);
}

static void test_auth_file_malformed(void **state)
{
	static const struct {
		const char *line;
		size_t len;	/* 0: strlen */
		const char *why;
	} cases[] = {
		{ "alice \"x\"", 0, "expected a double-quoted user name" },
		{ "'alice' 'x'", 0, "expected a double-quoted user name" },
		{ "\"alice", 0, "unterminated quoted user name" },
		{ "\"alice\"\"", 0, "unterminated quoted user name" },
		{ "\"alice\"", 0, "missing password" },
		{ "\"alice\"   ", 0, "missing password" },
		{ "\"alice\" x", 0, "expected a double-quoted password" },
		{ "\"alice\" secret", 0, "expected a double-quoted password" },
		{ "\"alice\" \"secret", 0, "unterminated quoted password" },
		{ "\"alice\" \"sec\"\"", 0, "unterminated quoted password" },
		{ "\"\" \"x\"", 0, "empty user name" },
		{ BIN("\"al\0ice\" \"x\""), "NUL byte" },
	};
	static const char head[] = "\"good\" \"pw\"\n; comment\n";	/* the bad line is line 3 */
	static const char tail[] = "\n\"later\" \"pw\"\n";

	(void)state;
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		char path[64], err[256] = "", expect[128], buf[256];
		size_t ll = cases[i].len ? cases[i].len : strlen(cases[i].line), n = 0;
		struct auth_user *users = (struct auth_user *)&expect;	/* must stay untouched on error */

		memcpy(buf, head, strlen(head));
		n += strlen(head);
		memcpy(buf + n, cases[i].line, ll);
		n += ll;
		memcpy(buf + n, tail, strlen(tail));
		n += strlen(tail);
		write_temp(path, buf, n);
		snprintf(expect, sizeof(expect), "%s:3: ", path);
		if (auth_file_load(path, &users, err, sizeof(err)) != -1 || strncmp(err, expect, strlen(expect)) != 0 ||
		    !strstr(err, cases[i].why))
			fail_msg("case %zu: err=\"%s\"", i, err);
		assert_ptr_equal(users, (struct auth_user *)&expect);
		unlink(path);
	}
}

static void test_auth_file_missing(void **state)
{
	static const char path[] = "/nonexistent-parley-dir/userlist.txt";
	char err[256] = "";
	struct auth_user *users = NULL;

	(void)state;
	assert_int_equal(auth_file_load(path, &users, err, sizeof(err)), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, strerror(ENOENT)));
	assert_null(users);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rfc7677_client, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_rfc7677_server, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_rfc_secret_parse, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_roundtrip_plain, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_roundtrip_scram_secret, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_postgresql_secret, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_wrong_password, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_md5_secret_cannot_scram, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_make_secret, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_gs2_y_flag, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_server_first_malformed, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_server_final_malformed, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_client_final_malformed, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_client_verify_malformed, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_out_of_sequence, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_state_clear_wipes, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_passthrough_rfc7677, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_passthrough_roundtrip_and_mismatch, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_passthrough_bad_inputs, reset_hooks, reset_hooks),
		cmocka_unit_test_setup_teardown(test_auth_user_scram_keys, reset_hooks, reset_hooks),
		cmocka_unit_test(test_secret_kind),
		cmocka_unit_test(test_md5_known_answers),
		cmocka_unit_test(test_md5_check_response),
		cmocka_unit_test(test_random_bytes),
		cmocka_unit_test(test_auth_file_good),
		cmocka_unit_test(test_auth_file_malformed),
		cmocka_unit_test(test_auth_file_missing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
