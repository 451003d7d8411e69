/* fuzz_scram.c — libFuzzer target: the SCRAM-SHA-256 message parsers of both sides (scram_server_first/final on fuzzed client messages, scram_client_final/verify on fuzzed server messages) and SCRAM secret parsing. */
#include "auth.h"
#include "fuzz_common.h"

/*
 * Input: one mode byte, then PART1 '\0' PART2 (a NUL never belongs to a SCRAM message, so it is a safe separator).
 *   mode 0: parley as server: scram_server_first(PART1 as client-first-message), then scram_server_final(PART2).
 *   mode 1: parley as client: scram_client_first_with_key, then scram_client_final(PART1 as server-first-message),
 *           then scram_client_verify(PART2 as server-final-message).
 *   mode 2: PART1 as a stored secret: secret_kind / scram_parse_secret, and when it is a SCRAM secret, a server
 *           exchange with it (PART2 as client-first-message) and a client start with it.
 * Nonces are fixed (scram_set_test_nonce) so the fuzzer can learn them from the seeds; the stored secret below is the
 * one of password "fuzzpass", and FUZZ_CLIENT_KEY its ClientKey, so the seeds can reach a successful exchange. No
 * path runs PBKDF2 (plain-password secrets are skipped), which would make runs slow without parsing anything new.
 */
#define FUZZ_SECRET                                                       \
	"SCRAM-SHA-256$4096:JeH2nvMYoctJ76DMD31tLA==$8vXv4EneFPVc3shfGnpLWHV9" \
	"wFn6xtFMJXrlCOJqrhE=:GuKNA9B9YUel2JbOEN98dJee2A8q+YDxYssJvV+p2Wk="
static const uint8_t FUZZ_CLIENT_KEY[SCRAM_KEY_LEN] = {
	0x19, 0x32, 0x27, 0xb9, 0x76, 0x15, 0x3e, 0xc3, 0x51, 0x86, 0xa2, 0xcb, 0x1f, 0x4a, 0x2c, 0xc3,
	0x4f, 0x21, 0x44, 0x8c, 0x27, 0x19, 0xf9, 0x17, 0xec, 0xd0, 0x8e, 0x69, 0x83, 0x2c, 0xbd, 0x9b,
};

/* An output of n bytes must be a NUL-terminated string of that length inside out. */
static void check_out(int n, const char *out, size_t outlen, const char *err)
{
	if (n >= 0) {
		FUZZ_CHECK((size_t)n < outlen && strlen(out) == (size_t)n);
	} else {
		FUZZ_CHECK(n == -1);
		FUZZ_CHECK(err[0] != '\0' && memchr(err, '\0', 256));
	}
}

static void server_side(const char *secret, const char *p1, size_t l1, const char *p2, size_t l2)
{
	struct scram_state st;
	char out[512], err[256];
	int n;

	memset(&st, 0, sizeof(st));
	err[0] = '\0';
	n = scram_server_first(&st, secret, p1, l1, out, sizeof(out), err, sizeof(err));
	check_out(n, out, sizeof(out), err);
	if (n >= 0) {
		FUZZ_CHECK(strncmp(out, "r=", 2) == 0);
		err[0] = '\0';
		n = scram_server_final(&st, p2, l2, out, sizeof(out), err, sizeof(err));
		check_out(n, out, sizeof(out), err);
		if (n >= 0)
			FUZZ_CHECK(strncmp(out, "v=", 2) == 0 && st.have_client_key);
		/* a finished or failed exchange cannot be continued */
		err[0] = '\0';
		FUZZ_CHECK(scram_server_final(&st, p2, l2, out, sizeof(out), err, sizeof(err)) == -1);
	}
	scram_state_clear(&st);
}

static void client_side(const char *secret, const uint8_t *key, const char *p1, size_t l1, const char *p2, size_t l2)
{
	struct scram_state st;
	char out[512], err[256];
	int n;

	memset(&st, 0, sizeof(st));
	n = scram_client_first_with_key(&st, secret, key, out, sizeof(out));
	if (n < 0) {
		scram_state_clear(&st);
		return;
	}
	FUZZ_CHECK(strncmp(out, "n,,n=", 5) == 0);
	err[0] = '\0';
	n = scram_client_final(&st, p1, l1, out, sizeof(out), err, sizeof(err));
	check_out(n, out, sizeof(out), err);
	if (n >= 0) {
		FUZZ_CHECK(strncmp(out, "c=biws,r=", 9) == 0 && strstr(out, ",p=") != NULL);
		err[0] = '\0';
		n = scram_client_verify(&st, p2, l2, err, sizeof(err));
		FUZZ_CHECK(n == 0 || (n == -1 && err[0] != '\0'));
	}
	scram_state_clear(&st);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul;
	char *p1, *p2;
	size_t l1, l2;
	uint8_t mode;

	if (size < 1)
		return 0;
	scram_set_test_nonce("fuzznonce");
	mode = data[0] % 3;
	data++;
	size--;
	nul = memchr(data, '\0', size);
	l1 = nul ? (size_t)(nul - data) : size;
	l2 = nul ? size - l1 - 1 : 0;
	/* exact-size heap copies (not NUL-terminated: the parsers take a length), so ASan sees any overread */
	p1 = malloc(l1 ? l1 : 1);
	p2 = malloc(l2 ? l2 : 1);
	memcpy(p1, data, l1);
	if (l2)
		memcpy(p2, nul + 1, l2);

	switch (mode) {
	case 0:
		server_side(FUZZ_SECRET, p1, l1, p2, l2);
		break;
	case 1:
		client_side(FUZZ_SECRET, FUZZ_CLIENT_KEY, p1, l1, p2, l2);
		break;
	default: {
		char *secret = malloc(l1 + 1);
		int iterations, salt_len;
		uint8_t salt[64], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
		enum secret_kind kind;

		memcpy(secret, p1, l1);
		secret[l1] = '\0';
		kind = secret_kind(secret);
		if (scram_parse_secret(secret, &iterations, salt, &salt_len, stored, server) == 0) {
			FUZZ_CHECK(kind == SECRET_SCRAM);
			FUZZ_CHECK(iterations >= 1 && salt_len >= 1 && salt_len <= 64);
		}
		if (kind != SECRET_PLAIN)
			server_side(secret, p2, l2, "", 0);
		if (kind == SECRET_SCRAM)
			client_side(secret, FUZZ_CLIENT_KEY, p2, l2, "", 0);
		free(secret);
		break;
	}
	}
	free(p1);
	free(p2);
	scram_set_test_nonce(NULL);
	return 0;
}
