/* fuzz_hba.c — libFuzzer target: hba_parse on arbitrary pg_hba.conf text, the invariants of every parsed rule, and hba_match for a few fixed logins (local, IPv4, IPv6, TLS). */
#include "hba.h"
#include "fuzz_common.h"
#include <sys/socket.h>

/* Logins every parsed file is matched against. */
static const struct hba_client logins[] = {
	{ .local = true, .database = "app", .user = "alice" },
	{ .addr = "127.0.0.1", .database = "app", .user = "app" },
	{ .tls = true, .addr = "10.1.2.3", .database = "db1", .user = "bob" },
	{ .addr = "::1", .database = "all", .user = "all" },
	{ .addr = "::ffff:192.168.0.1", .database = "x", .user = "y" },
	{ .addr = "2001:db8::5", .database = "replication", .user = "r", .replication = true },
};

static void check_names(const struct hba_names *nm)
{
	FUZZ_CHECK(nm->count == 0 || nm->names != NULL);
	for (size_t i = 0; i < nm->count; i++)
		FUZZ_CHECK(nm->names[i] != NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hba *h = NULL;
	char err[600];
	int rc;

	err[0] = '\0';
	rc = hba_parse((const char *)data, size, "hba.conf", NULL, &h, err, sizeof(err));
	if (rc != 0) {
		FUZZ_CHECK(rc == -1 && h == NULL);
		/* "FILE:LINE: message" */
		FUZZ_CHECK(strncmp(err, "hba.conf:", 9) == 0 && strlen(err) > 11);
		return 0;
	}
	FUZZ_CHECK(h != NULL && (h->count == 0 || h->rules != NULL));
	for (size_t i = 0; i < h->count; i++) {
		const struct hba_rule *r = &h->rules[i];
		FUZZ_CHECK(r->line >= 1 && (i == 0 || r->line > h->rules[i - 1].line));
		FUZZ_CHECK(r->method >= HBA_TRUST && r->method <= HBA_PEER);
		FUZZ_CHECK(r->method != HBA_PEER || r->conn == HBA_CONN_LOCAL);
		FUZZ_CHECK(r->method != HBA_CERT || r->conn == HBA_CONN_HOSTSSL);
		FUZZ_CHECK((r->conn == HBA_CONN_LOCAL) == (r->addr_kind == HBA_ADDR_NONE));
		if (r->addr_kind == HBA_ADDR_NET) {
			FUZZ_CHECK(r->family == AF_INET || r->family == AF_INET6);
			for (int k = 0; k < 16; k++)
				FUZZ_CHECK((r->addr[k] & (uint8_t)~r->mask[k]) == 0);
		}
		check_names(&r->db);
		check_names(&r->user);
		FUZZ_CHECK(strcmp(hba_method_name(r->method), "unknown") != 0);
	}
	for (size_t j = 0; j < ARRAY_SIZE(logins); j++) {
		const struct hba_rule *r = hba_match(h, &logins[j]);
		FUZZ_CHECK(r == NULL || (r >= h->rules && r < h->rules + h->count));
		if (r && logins[j].local)
			FUZZ_CHECK(r->conn == HBA_CONN_LOCAL);
		if (r && !logins[j].local)
			FUZZ_CHECK(r->conn != HBA_CONN_LOCAL);
	}
	hba_free(h);
	return 0;
}
