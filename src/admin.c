/* admin.c — the admin console: the virtual database "parley" (alias "pgbouncer") answering SHOW commands. */
#include "parley.h"
#include <strings.h>
#include <ctype.h>

bool admin_is_console_db(const char *dbname)
{
	return strcmp(dbname, "parley") == 0 || strcmp(dbname, "pgbouncer") == 0;
}

/* Result set writer: a RowDescription of text columns, rows, then CommandComplete. */
struct result {
	struct pkt_builder b;
	int ncols;
	int nrows;
};

static void result_begin(struct result *r, const char *const *cols, int n)
{
	uint32_t oids[64];
	pkt_init(&r->b);
	r->ncols = n;
	r->nrows = 0;
	for (int i = 0; i < n && i < 64; i++)
		oids[i] = 25; /* text */
	pkt_row_description(&r->b, cols, oids, n);
}

static void result_row(struct result *r, const char *const *vals)
{
	pkt_data_row(&r->b, vals, r->ncols);
	r->nrows++;
}

static void result_end(struct client *c, struct result *r, const char *tag)
{
	pkt_command_complete(&r->b, tag);
	pkt_ready(&r->b, 'I');
	if (!r->b.failed)
		evbuffer_add(c->s.out, r->b.buf, r->b.len);
	pkt_free(&r->b);
}

static void admin_error(struct client *c, const char *sqlstate, const char *msg)
{
	struct pkt_builder b;
	pkt_init(&b);
	pkt_error(&b, "ERROR", sqlstate, msg);
	pkt_ready(&b, 'I');
	if (!b.failed)
		evbuffer_add(c->s.out, b.buf, b.len);
	pkt_free(&b);
}

static void show_version(struct client *c)
{
	static const char *const cols[] = { "version" };
	const char *row[] = { "parley " PACKAGE_VERSION };
	struct result r;
	result_begin(&r, cols, 1);
	result_row(&r, row);
	result_end(c, &r, "SHOW");
}

/* SHOW POOLS with PgBouncer's columns, times in microseconds. */
static void show_pools(struct client *c)
{
	static const char *const cols[] = { "database", "user", "cl_active", "cl_waiting", "cl_active_cancel_req",
					    "cl_waiting_cancel_req", "sv_active", "sv_active_cancel", "sv_being_canceled",
					    "sv_idle", "sv_used", "sv_tested", "sv_login", "maxwait", "maxwait_us",
					    "pool_mode" };
	struct result r;
	struct pool *p, *tmp;
	usec_t now = now_usec();
	result_begin(&r, cols, (int)ARRAY_SIZE(cols));
	HASH_ITER(hh, g.pools, p, tmp) {
		char v[16][32];
		const char *row[16];
		usec_t wait = 0;
		if (!list_empty(&p->clients_waiting))
			wait = now - list_first_entry(&p->clients_waiting, struct client, node)->request_time;
		snprintf(v[2], 32, "%d", list_count(&p->clients_active));
		snprintf(v[3], 32, "%d", list_count(&p->clients_waiting) + list_count(&p->clients_login));
		snprintf(v[6], 32, "%d", list_count(&p->servers_active));
		snprintf(v[9], 32, "%d", list_count(&p->servers_idle));
		snprintf(v[10], 32, "%d", list_count(&p->servers_used));
		snprintf(v[11], 32, "%d", list_count(&p->servers_tested));
		snprintf(v[12], 32, "%d", list_count(&p->servers_login));
		snprintf(v[13], 32, "%lld", (long long)(wait / USEC_PER_SEC));
		snprintf(v[14], 32, "%lld", (long long)(wait % USEC_PER_SEC));
		row[0] = p->dbname;
		row[1] = p->user;
		row[2] = v[2];
		row[3] = v[3];
		row[4] = row[5] = "0";
		row[6] = v[6];
		row[7] = row[8] = "0";
		for (int i = 9; i <= 14; i++)
			row[i] = v[i];
		row[15] = pool_mode_name(p->mode);
		result_row(&r, row);
	}
	result_end(c, &r, "SHOW");
}

void admin_handle_query(struct client *c, const char *sql)
{
	char cmd[256];
	size_t n = 0;
	while (*sql && isspace((unsigned char)*sql))
		sql++;
	while (*sql && *sql != ';' && n + 1 < sizeof(cmd))
		cmd[n++] = (char)tolower((unsigned char)*sql++);
	while (n > 0 && isspace((unsigned char)cmd[n - 1]))
		n--;
	cmd[n] = '\0';
	if (strcmp(cmd, "show version") == 0)
		show_version(c);
	else if (strcmp(cmd, "show pools") == 0)
		show_pools(c);
	else {
		char msg[320];
		snprintf(msg, sizeof(msg), "unknown admin command: %s", cmd);
		admin_error(c, SQLSTATE_SYNTAX_ERROR, msg);
	}
}
