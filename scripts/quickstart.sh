#!/usr/bin/env bash
# quickstart.sh — build parley and run it in front of a throwaway PostgreSQL 15 holding Parlant sample data.
#
# Usage:
#   scripts/quickstart.sh          install missing packages, build, start PostgreSQL, run parley in the foreground
#   scripts/quickstart.sh stop     stop the throwaway PostgreSQL
#   scripts/quickstart.sh status   say whether it is running
#
# The first run creates a cluster in <repo>/.pgdata (owned by the "postgres" user when run as root) listening
# on 127.0.0.1:$PGPORT, a role parlant/parlant and a database "parlant" loaded with contrib/parlant/schema.sql
# and sample_data.sql. Later runs reuse it and start it if it is stopped. Each run rewrites .run/parley.ini
# and .run/userlist.txt. Stopping parley (Ctrl-C) leaves PostgreSQL running.
#
# Environment:
#   PGPORT=25432           port of the throwaway PostgreSQL
#   PARLEY_PORT=6432       port parley listens on
#   METRICS_PORT=9127      port of the Prometheus endpoint (/metrics, /healthz)
#   QUICKSTART_NO_EXEC=1   do everything except starting parley
#   QUICKSTART_NO_DEPS=1   do not run scripts/install-deps.sh
#   QUICKSTART_NO_BUILD=1  do not build (parley must exist to be started)
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PARLEY_ROOT"

PGPORT=${PGPORT:-25432}
PARLEY_PORT=${PARLEY_PORT:-6432}
METRICS_PORT=${METRICS_PORT:-9127}
RUN_DIR=$PARLEY_ROOT/.run
PGDATA_DIR=$PARLEY_ROOT/.pgdata
# When root, the cluster belongs to "postgres", which must be able to reach the repository. If it cannot
# (a checkout under /root, say), keep the cluster outside it.
if is_root && ! runuser -u postgres -- test -x "$PARLEY_ROOT" 2>/dev/null; then
	PGDATA_DIR=/var/tmp/parley-pgdata-$(printf '%s' "$PARLEY_ROOT" | md5sum | cut -c1-8)
fi
# Unix socket paths are limited to 107 bytes: fall back to /tmp for deep checkouts.
PGSOCK=$PGDATA_DIR
[ ${#PGSOCK} -le 80 ] || PGSOCK=/tmp
PARLEY_SOCK=$RUN_DIR
[ ${#PARLEY_SOCK} -le 80 ] || PARLEY_SOCK=/tmp
PG_LOG=$PGDATA_DIR/server.log
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h "$PGSOCK" -p "$PGPORT")

pg_ctl_() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" "$@"; }
pg_running() { [ -f "$PGDATA_DIR/postmaster.pid" ] && pg_ctl_ status >/dev/null 2>&1; }
# Port and socket directory of the running server, from postmaster.pid (lines 4 and 5).
pg_running_addr() { sed -n '4p;5p' "$PGDATA_DIR/postmaster.pid" 2>/dev/null | paste -sd ' '; }

stop_pg() {
	if ! pg_running; then
		echo "PostgreSQL in $PGDATA_DIR is not running"
		return 0
	fi
	local pid
	pid=$(head -n1 "$PGDATA_DIR/postmaster.pid")
	say "stopping PostgreSQL (pid $pid)"
	if ! pg_ctl_ -m fast -w -t 60 stop >/dev/null; then
		warn "pg_ctl stop failed; sending SIGTERM to $pid"
		kill -TERM "$pid" 2>/dev/null || true
	fi
}

case "${1:-}" in
stop)
	stop_pg
	exit 0
	;;
status)
	if pg_running; then
		echo "PostgreSQL running: pid $(head -n1 "$PGDATA_DIR/postmaster.pid"), data $PGDATA_DIR, port $(sed -n 4p "$PGDATA_DIR/postmaster.pid")"
	else
		echo "PostgreSQL in $PGDATA_DIR is not running"
	fi
	exit 0
	;;
"" | start) ;;
*)
	echo "usage: $0 [start|stop|status]" >&2
	exit 2
	;;
esac

# 1. Packages and build ---------------------------------------------------------------------------------------
if [ "${QUICKSTART_NO_DEPS:-0}" != 1 ]; then
	bash "$PARLEY_ROOT/scripts/install-deps.sh"
fi
if [ "${QUICKSTART_NO_BUILD:-0}" != 1 ]; then
	build_parley_incremental
fi
[ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb not found (install postgresql-15)"

# 2. The throwaway PostgreSQL ---------------------------------------------------------------------------------
if [ ! -s "$PGDATA_DIR/PG_VERSION" ]; then
	if [ -d "$PGDATA_DIR" ] && [ -n "$(ls -A "$PGDATA_DIR" 2>/dev/null)" ]; then
		die "$PGDATA_DIR exists but holds no PostgreSQL cluster; remove it and run again"
	fi
	say "creating a PostgreSQL 15 cluster in $PGDATA_DIR"
	mkdir -p "$PGDATA_DIR"
	chmod 700 "$PGDATA_DIR"
	is_root && chown postgres: "$PGDATA_DIR"
	# Local (unix socket) connections are trusted; TCP connections need a SCRAM password.
	as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -E UTF8 --locale=C \
		--auth-local=trust --auth-host=scram-sha-256 >/dev/null
	as_pg sh -c "echo \"include_if_exists = 'quickstart.conf'\" >>'$PGDATA_DIR/postgresql.conf'"
fi

# Settings the script owns; rewritten on every run, a change restarts a running server.
conf="# written by scripts/quickstart.sh on every run
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$PGSOCK'
password_encryption = 'scram-sha-256'
max_connections = 200
shared_buffers = 128MB
synchronous_commit = off
"
conf_changed=0
if [ "$(as_pg cat "$PGDATA_DIR/quickstart.conf" 2>/dev/null || true)" != "$(printf '%s' "$conf")" ]; then
	printf '%s' "$conf" | as_pg sh -c "cat >'$PGDATA_DIR/quickstart.conf'"
	conf_changed=1
fi

if pg_running && { [ "$conf_changed" = 1 ] || [ "$(pg_running_addr)" != "$PGPORT $PGSOCK" ]; }; then
	say "settings changed: restarting PostgreSQL"
	pg_ctl_ -m fast -w -t 60 stop >/dev/null
fi
if pg_running; then
	say "PostgreSQL already running on 127.0.0.1:$PGPORT (pid $(head -n1 "$PGDATA_DIR/postmaster.pid"))"
else
	say "starting PostgreSQL on 127.0.0.1:$PGPORT (log: $PG_LOG)"
	if ! pg_ctl_ -l "$PG_LOG" -w -t 60 start >/dev/null; then
		tail -n 30 "$PG_LOG" >&2 || true
		die "PostgreSQL did not start (is port $PGPORT free? set PGPORT to use another one)"
	fi
fi

# 3. Role, database, Parlant schema and sample data -----------------------------------------------------------
"${PSQL[@]}" -U postgres -d postgres <<'SQL'
SET password_encryption = 'scram-sha-256';
DO $$ BEGIN
	IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'parlant') THEN CREATE ROLE parlant; END IF;
END $$;
ALTER ROLE parlant LOGIN PASSWORD 'parlant';
SQL
if [ -z "$("${PSQL[@]}" -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'parlant'")" ]; then
	say "creating database parlant and loading the Parlant schema and sample data"
	"${PSQL[@]}" -U postgres -d postgres -c "CREATE DATABASE parlant OWNER parlant"
	start=$(date +%s)
	if ! "${PSQL[@]}" -U parlant -d parlant -f contrib/parlant/schema.sql -f contrib/parlant/sample_data.sql >/dev/null; then
		"${PSQL[@]}" -U postgres -d postgres -c "DROP DATABASE parlant" || true
		die "loading contrib/parlant/*.sql failed"
	fi
	say "loaded in $(($(date +%s) - start)) s"
fi
# Triggers that tell parley about writes made outside it (idempotent; see doc/consistency.md)
"${PSQL[@]}" -U parlant -d parlant -f contrib/parlant/invalidation.sql >/dev/null ||
	die "installing contrib/parlant/invalidation.sql failed"

# 4. parley's configuration -----------------------------------------------------------------------------------
mkdir -p "$RUN_DIR"
(
	umask 077
	printf '"parlant" "parlant"\n' >"$RUN_DIR/userlist.txt"
)
cat >"$RUN_DIR/parley.ini" <<INI
;; written by scripts/quickstart.sh on every run; see etc/parley.ini for all settings
[databases]
parlant = host=127.0.0.1 port=$PGPORT dbname=parlant

[parley]
listen_addr = 127.0.0.1
listen_port = $PARLEY_PORT
unix_socket_dir = $PARLEY_SOCK
pool_mode = transaction
default_pool_size = 20
auth_type = scram-sha-256
auth_file = $RUN_DIR/userlist.txt
admin_users = parlant
server_connect_timeout = 5
server_idle_timeout = 30
slow_query_threshold = 1
pool_utilization_warn = 0.8
metrics_port = $METRICS_PORT

; Parlant's hot lookups answered from memory (see doc/cache.md and etc/parlant.ini)
[cache]
parlant_agent = 300
parlant_tool = 600
parlant_agent_tool = 600
parlant_journey = 600
parlant_journey_state = 600
parlant_journey_transition = 600
INI

cat <<EOF

PostgreSQL 15 (data $PGDATA_DIR) is running on 127.0.0.1:$PGPORT with database "parlant".
parley configuration: .run/parley.ini
Stop PostgreSQL with:  scripts/quickstart.sh stop   (stopping parley with Ctrl-C leaves it running)
Admin console:         psql postgresql://parlant:parlant@127.0.0.1:$PARLEY_PORT/parley   (SHOW CACHE, SHOW CACHE_FEED, SHOW SHAPES)
Prometheus metrics:    http://127.0.0.1:$METRICS_PORT/metrics

DATABASE_URL=postgresql://parlant:parlant@127.0.0.1:$PARLEY_PORT/parlant
EOF

if [ "${QUICKSTART_NO_EXEC:-0}" = 1 ]; then
	echo "QUICKSTART_NO_EXEC=1: not starting parley; start it with: ./parley .run/parley.ini"
	exit 0
fi
[ -x ./parley ] || die "./parley was not built"
echo "starting: ./parley .run/parley.ini"
exec ./parley .run/parley.ini
