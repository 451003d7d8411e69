/* hba.h — PgBouncer's subset of pg_hba.conf for auth_type = hba: parsing the file and finding the first rule that matches a login. */
#ifndef PARLEY_HBA_H
#define PARLEY_HBA_H
#include "common.h"
#include <openssl/ssl.h>

/* Connection types (the first field of a rule). */
enum hba_conn {
	HBA_CONN_LOCAL,      /* unix socket */
	HBA_CONN_HOST,       /* TCP, with or without TLS */
	HBA_CONN_HOSTSSL,    /* TCP with TLS */
	HBA_CONN_HOSTNOSSL,  /* TCP without TLS */
};

/* Authentication methods (the field after the address, or after the user for local rules). */
enum hba_method {
	HBA_TRUST,           /* no password (the user must still be in auth_file when one is set, as auth_type = trust) */
	HBA_REJECT,          /* refuse the login */
	HBA_MD5,             /* md5, or SCRAM when the stored secret is a SCRAM secret (as PostgreSQL) */
	HBA_PASSWORD,        /* cleartext password */
	HBA_SCRAM,           /* scram-sha-256 */
	HBA_CERT,            /* TLS client certificate whose CN equals the user name (hostssl only) */
	HBA_PEER,            /* SO_PEERCRED: the OS user of the peer process equals the user name (local only) */
};

/* How a rule's address field matches the client's address. */
enum hba_addr_kind {
	HBA_ADDR_NONE,       /* local rule: no address field */
	HBA_ADDR_ALL,        /* "all": any address */
	HBA_ADDR_NET,        /* address + mask (CIDR or separate netmask) */
	HBA_ADDR_SAMEHOST,   /* any of this machine's own addresses */
	HBA_ADDR_SAMENET,    /* any address in a subnet this machine is directly on */
};

/* The database or user field of a rule: keywords and names (quoted names and @file contents included). */
struct hba_names {
	bool all;            /* keyword all */
	bool sameuser;       /* keyword sameuser (database field only): database name equals the user name */
	bool replication;    /* keyword replication (database field only): replication connections, which parley refuses */
	char **names;        /* literal names, heap; compared case-sensitively */
	size_t count;        /* entries in names */
};

/* One line (record) of the file. */
struct hba_rule {
	enum hba_conn conn;          /* connection type */
	struct hba_names db;         /* database field */
	struct hba_names user;       /* user field */
	enum hba_addr_kind addr_kind; /* address field kind */
	int family;                  /* AF_INET or AF_INET6 for HBA_ADDR_NET */
	uint8_t addr[16];            /* network address (4 bytes used for AF_INET), already masked */
	uint8_t mask[16];            /* netmask, same layout as addr */
	enum hba_method method;      /* authentication method */
	int line;                    /* line number in the file (first line of a continued record) */
};

/* A parsed file: its rules in file order (the first match wins). */
struct hba {
	struct hba_rule *rules;      /* heap array */
	size_t count;                /* number of rules */
	char *path;                  /* file name as given, for log lines ("FILE:LINE") */
};

/* What hba_match needs to know about a login. */
struct hba_client {
	bool local;                  /* came over the unix socket */
	bool tls;                    /* TCP with TLS */
	const char *addr;            /* peer IPv4/IPv6 address as text (ignored when local) */
	const char *database;        /* requested database */
	const char *user;            /* requested user */
	bool replication;            /* a replication connection (never, for parley: it refuses them at startup) */
};

/* Reads and parses the hba file at path. @file references in the database and user fields are read relative to
 * the directory of path. On success stores a new struct hba in *out (free with hba_free) and returns 0; on error
 * returns -1 with "FILE:LINE: message" (or "FILE: message") in err and leaves *out alone. */
int hba_load(const char *path, struct hba **out, char *err, size_t errlen) MUST_CHECK;

/* Parses hba text held in memory (len bytes, NUL bytes are an error). name is used in messages; base_dir is the
 * directory for @file references (NULL: @file is an error). Same results as hba_load. */
int hba_parse(const char *text, size_t len, const char *name, const char *base_dir, struct hba **out,
	      char *err, size_t errlen) MUST_CHECK;

void hba_free(struct hba *h);

/* The first rule that matches c, or NULL when none does (the login is then refused). h may be NULL. */
const struct hba_rule *hba_match(const struct hba *h, const struct hba_client *c);

/* Method cert: true when ssl carries a client certificate that passed verification and whose subject CN is exactly
 * user; otherwise false with the reason in why. */
bool hba_cert_check(SSL *ssl, const char *user, char *why, size_t whylen);

/* Method peer: true when the process at the other end of the unix socket fd runs as the OS user named user
 * (SO_PEERCRED); otherwise false with the reason in why. */
bool hba_peer_check(int fd, const char *user, char *why, size_t whylen);

/* "trust", "md5", "scram-sha-256", ... as written in the file. */
const char *hba_method_name(enum hba_method m);

#endif
