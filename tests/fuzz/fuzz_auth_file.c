/* fuzz_auth_file.c — libFuzzer target: auth_file_load on a userlist.txt written from the input into a private temp dir, then secret classification (md5 / SCRAM secret parsing) of every secret it yields. */
#include "auth.h"
#include "fuzz_common.h"
#include <uthash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct auth_user *users = NULL, *u, *tmp;
	char err[1024];
	const char *path = fuzz_write_file("userlist.txt", data, size);
	int rc;

	err[0] = '\0';
	rc = auth_file_load(path, &users, err, sizeof(err));
	if (rc != 0) {
		FUZZ_CHECK(rc == -1 && users == NULL);
		/* "FILE:LINE: message", naming the file */
		FUZZ_CHECK(err[0] != '\0' && strstr(err, "userlist.txt:") != NULL);
		return 0;
	}
	HASH_ITER(hh, users, u, tmp) {
		int iterations, salt_len;
		uint8_t salt[64], stored[SCRAM_KEY_LEN], server[SCRAM_KEY_LEN];
		enum secret_kind kind;

		FUZZ_CHECK(u->name && u->name[0] != '\0' && u->secret);
		FUZZ_CHECK(auth_user_find(users, u->name) == u);
		kind = secret_kind(u->secret);
		FUZZ_CHECK(kind == SECRET_PLAIN || kind == SECRET_MD5 || kind == SECRET_SCRAM);
		if (kind == SECRET_MD5)
			FUZZ_CHECK(strlen(u->secret) == 35);
		/* a secret is SCRAM exactly when it parses as one, and then its parts are in range */
		rc = scram_parse_secret(u->secret, &iterations, salt, &salt_len, stored, server);
		FUZZ_CHECK((rc == 0) == (kind == SECRET_SCRAM));
		if (rc == 0)
			FUZZ_CHECK(iterations >= 1 && salt_len >= 1 && salt_len <= 64);
	}
	auth_users_free(&users);
	FUZZ_CHECK(users == NULL);
	return 0;
}
