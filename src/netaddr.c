/* netaddr.c — where a PostgreSQL-protocol server listens (a unix socket directory or a host name), as a sockaddr:
 * shared by the pools' server connections, their cancel requests and the cancel forwarding between peers. */
#include "netaddr.h"
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

int pg_address(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen)
{
	memset(ss, 0, sizeof(*ss));
	if (!host || host[0] == '/') {
		struct sockaddr_un *un = (struct sockaddr_un *)ss;
		const char *dir = host ? host : "/var/run/postgresql";
		un->sun_family = AF_UNIX;
		if ((size_t)snprintf(un->sun_path, sizeof(un->sun_path), "%s/.s.PGSQL.%d", dir, port) >=
		    sizeof(un->sun_path)) {
			snprintf(err, errlen, "unix socket path too long for directory \"%s\"", dir);
			return -1;
		}
		*len = sizeof(*un);
		return 0;
	} else {
		struct addrinfo hints, *res = NULL;
		char portstr[16];
		int rc;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		snprintf(portstr, sizeof(portstr), "%d", port);
		rc = getaddrinfo(host, portstr, &hints, &res);
		if (rc != 0 || !res) {
			snprintf(err, errlen, "cannot resolve host \"%s\": %s", host, gai_strerror(rc));
			return -1;
		}
		memcpy(ss, res->ai_addr, res->ai_addrlen);
		*len = res->ai_addrlen;
		freeaddrinfo(res);
		return 0;
	}
}
