/* netaddr.h — address of a PostgreSQL-protocol server (netaddr.c). */
#ifndef PARLEY_NETADDR_H
#define PARLEY_NETADDR_H
#include <stddef.h>
#include <sys/socket.h>

/* Where a PostgreSQL-protocol server listens: the unix socket DIR/.s.PGSQL.PORT when host is NULL (the default
 * directory /var/run/postgresql) or a path, else host resolved for TCP. 0, or -1 with a message in err. */
int pg_address(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len, char *err, size_t errlen);

#endif
