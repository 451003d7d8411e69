#!/usr/bin/env bash
# bench_cache.sh — pgbench throughput of the Parlant hot lookups through direct PostgreSQL, parley (cache off and on), pgbouncer and pgpool-II's query cache, in one run.
#
# Starts a throwaway PostgreSQL 15 in a temporary directory (as "postgres" when run as root) loaded with
# contrib/parlant/schema.sql and sample_data.sql, then on loopback ports above 20000:
#   parley-off  parley in transaction mode, no cache settings
#   parley-on   parley in transaction mode with the Parlant [cache] policy (the etc/parlant.ini settings)
#   pgbouncer   Debian's pgbouncer, transaction mode, the same pool size
#   pgpool      Debian's pgpool-II, raw mode (one backend, no replication or load balancing), connection
#               caching on, memory_cache_enabled = on with memqcache_method = 'shmem'
# For each lookup (contrib/bench/parlant_{agent,tools,events}.sql) and each protocol mode (-M simple,
# extended, prepared) it runs a short warm-up pass, then a measured pass, against each target, and prints
# one table of tps with the ratios parley-on/pgpool, parley-on/direct and parley-on/pgbouncer, followed by
# the cache hit ratios seen during the measured passes and the errors of any failed cell.
# A cell is FAILED when pgbench exits non-zero, reports failed transactions, or processes none; its errors
# are printed. Nothing here fails on a timing: the script reports.
#
# Environment:
#   PARLEY_BIN          parley binary (default <repo>/parley)
#   BENCH_SECONDS       seconds per measured pass (default 10)
#   BENCH_WARM_SECONDS  seconds per warm-up pass (default 2)
#   BENCH_CLIENTS       pgbench clients (default 32); BENCH_THREADS pgbench threads (default 2)
#   BENCH_POOL_SIZE     server connections of parley and pgbouncer (default 20)
#   BENCH_MODES         protocol modes (default "simple extended prepared")
#   BENCH_LOOKUPS       lookups (default "agent tools events")
#   BENCH_TARGETS       targets (default "direct parley-off parley-on pgbouncer pgpool")
#   BENCH_HOT_AGENTS    agents 1..N the agent and tools lookups pick from (default 100)
#   BENCH_HOT_SESSIONS  sessions 1..N the events lookup picks from (default 1000)
#   BENCH_PORT_BASE     first of the six ports used (default 26540)
#   BENCH_PARLEY_CACHE_SETTINGS  [parley] lines that switch parley's cache on
#                       (default "cache_enabled = 1" and "cache_max_memory = 256MB"); settings this
#                       parley build does not know are dropped, and the header says so
#   BENCH_KEEP=1        keep the temporary directory (logs, configs, pgbench output) for inspection
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
bench_dir=$here/contrib/bench
PARLEY_BIN=${PARLEY_BIN:-$here/parley}
SECS=${BENCH_SECONDS:-10}
WARM=${BENCH_WARM_SECONDS:-2}
CLIENTS=${BENCH_CLIENTS:-32}
THREADS=${BENCH_THREADS:-2}
POOL=${BENCH_POOL_SIZE:-20}
MODES=${BENCH_MODES:-"simple extended prepared"}
LOOKUPS=${BENCH_LOOKUPS:-"agent tools events"}
TARGETS=${BENCH_TARGETS:-"direct parley-off parley-on pgbouncer pgpool"}
HOT_AGENTS=${BENCH_HOT_AGENTS:-100}
HOT_SESSIONS=${BENCH_HOT_SESSIONS:-1000}
PORT_BASE=${BENCH_PORT_BASE:-26540}
CACHE_SETTINGS=${BENCH_PARLEY_CACHE_SETTINGS:-"cache_enabled = 1
cache_max_memory = 256MB"}
PGBIN=/usr/lib/postgresql/15/bin
PGBOUNCER=/usr/sbin/pgbouncer
PGPOOL=/usr/sbin/pgpool
DB=parlant
DBUSER=parlant

PG_PORT=$PORT_BASE
PARLEY_OFF_PORT=$((PORT_BASE + 1))
PARLEY_ON_PORT=$((PORT_BASE + 2))
BOUNCER_PORT=$((PORT_BASE + 3))
PGPOOL_PORT=$((PORT_BASE + 4))
PCP_PORT=$((PORT_BASE + 5))
# pgpool-II has one child process per client connection, each with its own backend connection: it needs a
# child for every pgbench client plus one for the SHOW POOL_CACHE queries.
PGPOOL_CHILDREN=$((CLIENTS + 2))

die() { echo "bench_cache: $*" >&2; exit 1; }
note() { echo "# $*" >&2; }

[ -x "$PARLEY_BIN" ] || die "parley binary not found at $PARLEY_BIN (build first or set PARLEY_BIN)"
[ -x "$PGBIN/initdb" ] || die "$PGBIN/initdb not found (apt-get install postgresql-15)"
for t in $TARGETS; do
	case $t in
	direct | parley-off | parley-on) ;;
	pgbouncer) [ -x "$PGBOUNCER" ] || die "pgbouncer is not installed (scripts/install-deps.sh, or apt-get install pgbouncer)" ;;
	pgpool) [ -x "$PGPOOL" ] || die "pgpool2 is not installed (scripts/install-deps.sh, or apt-get install pgpool2)" ;;
	*) die "unknown target \"$t\" in BENCH_TARGETS (use direct parley-off parley-on pgbouncer pgpool)" ;;
	esac
done
for m in $MODES; do
	case $m in simple | extended | prepared) ;; *) die "unknown mode \"$m\" in BENCH_MODES (use simple extended prepared)" ;; esac
done
for l in $LOOKUPS; do
	case $l in agent | tools | events) ;; *) die "unknown lookup \"$l\" in BENCH_LOOKUPS (use agent tools events)" ;; esac
done
for port in $PG_PORT $PARLEY_OFF_PORT $PARLEY_ON_PORT $BOUNCER_PORT $PGPOOL_PORT $PCP_PORT; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		die "port $port is in use (set BENCH_PORT_BASE to a free range of six ports above 20000)"
	fi
done

work=$(mktemp -d /tmp/parley-bench-cache.XXXXXX)
chmod 755 "$work"
is_root() { [ "$(id -u)" = 0 ]; }
is_root && chown postgres: "$work"
# Runs a command as the owner of the throwaway cluster, from / (postgres may not be able to enter the cwd).
as_pg() { if is_root; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
# Like as_pg, but execs the command in place (setpriv does not fork), so $! of a background start is the
# daemon's own pid and cleanup can stop it by pid.
exec_as_pg() { if is_root; then exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else exec "$@"; fi; }

# Daemons to stop on exit: "pid signal" pairs, in start order.
daemons=()
cleaned=0
# Sends each daemon its shutdown signal, waits up to 5 s, then SIGKILLs it and any children it left (pgpool
# forks one process per client: those are found by parent pid). Then stops PostgreSQL and removes $work.
cleanup() {
	[ "$cleaned" = 1 ] && return
	cleaned=1
	local entry pid sig kids _
	if [ -n "${bench_pid:-}" ]; then kill -TERM "$bench_pid" 2>/dev/null || true; fi
	for entry in "${daemons[@]:-}"; do
		[ -n "$entry" ] || continue
		pid=${entry% *}
		sig=${entry#* }
		kill -"$sig" "$pid" 2>/dev/null || true
	done
	for entry in "${daemons[@]:-}"; do
		[ -n "$entry" ] || continue
		pid=${entry% *}
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			read -r -a kids <<<"$(ps -o pid= --ppid "$pid" 2>/dev/null | paste -sd' ' || true)"
			kill -KILL "$pid" "${kids[@]}" 2>/dev/null || true
		fi
	done
	if [ -f "$work/data/postmaster.pid" ]; then
		as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 ||
			kill -QUIT "$(head -n1 "$work/data/postmaster.pid")" 2>/dev/null || true
	fi
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		note "kept $work"
	else
		rm -rf "$work"
	fi
}
trap cleanup EXIT
trap 'echo "bench_cache: interrupted" >&2; exit 130' INT TERM HUP
ulimit -n 4096 2>/dev/null || true

# Waits until something accepts connections on 127.0.0.1:$1 while pid $2 lives; returns 1 if it died or
# never listened.
wait_port() {
	local port=$1 pid=$2 _
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || return 1
		"$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$DBUSER" -d "$DB" -t 1 && return 0
		sleep 0.1
	done
	return 1
}

# 1. PostgreSQL 15 with the Parlant schema and sample data ----------------------------------------------------
note "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT (work dir $work)"
as_pg "$PGBIN/initdb" -D "$work/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
as_pg sh -c "cat >>'$work/data/postgresql.conf'" <<CONF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = $((3 * CLIENTS + 2 * POOL + 40))
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w -t 60 start >/dev/null ||
	{ tail -20 "$work/pg.log" >&2; die "PostgreSQL did not start"; }
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT")
"${PSQL[@]}" -U postgres -d postgres -c "CREATE ROLE $DBUSER LOGIN" -c "CREATE DATABASE $DB OWNER $DBUSER"
note "loading contrib/parlant/schema.sql and sample_data.sql"
"${PSQL[@]}" -U "$DBUSER" -d "$DB" -f "$here/contrib/parlant/schema.sql" -f "$here/contrib/parlant/sample_data.sql" >/dev/null ||
	die "loading contrib/parlant/*.sql failed"
"${PSQL[@]}" -U postgres -d "$DB" -c "VACUUM ANALYZE"
# What the lookups return over the hot set (rows per call on average), for the header.
hot_rows=$("${PSQL[@]}" -U "$DBUSER" -d "$DB" -At -F ' ' -c "
	SELECT (SELECT count(*) FROM parlant_agent WHERE id BETWEEN 1 AND $HOT_AGENTS)::numeric / $HOT_AGENTS,
	       round((SELECT count(*) FROM parlant_agent_tool WHERE agent_id BETWEEN 1 AND $HOT_AGENTS AND enabled)::numeric / $HOT_AGENTS, 1),
	       round((SELECT sum(least(50, greatest(0, n - o))) FROM
	                (SELECT session_id, count(*) AS n FROM parlant_event WHERE session_id BETWEEN 1 AND $HOT_SESSIONS GROUP BY session_id) AS s
	                CROSS JOIN generate_series(0, 2) AS o)::numeric / (3 * $HOT_SESSIONS), 1)")
read -r rows_agent rows_tools rows_events <<<"$hot_rows"

# 2. The poolers -----------------------------------------------------------------------------------------------
printf '"%s" ""\n' "$DBUSER" >"$work/userlist.txt"
chmod 600 "$work/userlist.txt"
pooler_common="listen_addr = 127.0.0.1
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 1000
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
unix_socket_dir ="

# Writes parley's config for port $1 into $2; $3 are extra [parley] lines, $4 is 1 to add the [cache] policy.
write_parley_ini() {
	{
		echo "[databases]"
		echo "$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB"
		echo "[parley]"
		echo "listen_port = $1"
		echo "admin_users = $DBUSER"
		echo "$pooler_common"
		[ -n "$3" ] && echo "$3"
		if [ "$4" = 1 ]; then
			# The Parlant policy (etc/parlant.ini): table = TTL in seconds.
			echo "[cache]"
			echo "parlant_agent = 300"
			echo "parlant_tool = 600"
			echo "parlant_agent_tool = 600"
			echo "parlant_event = 60"
		fi
	} >"$2"
}

# Starts parley on port $1 with name $2 (log files $work/$2.*); $3 extra [parley] lines, $4 cache policy on.
# Settings this build rejects as unknown are dropped one by one (they are listed in $work/$2.dropped).
start_parley() {
	local port=$1 name=$2 extra=$3 cache=$4 pid bad
	: >"$work/$name.dropped"
	while :; do
		write_parley_ini "$port" "$work/$name.ini" "$extra" "$cache"
		"$PARLEY_BIN" "$work/$name.ini" >"$work/$name.log" 2>&1 &
		pid=$!
		if wait_port "$port" "$pid"; then
			daemons+=("$pid INT")
			return 0
		fi
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
		bad=$(sed -n 's/.*unknown setting "\([^"]*\)".*/\1/p' "$work/$name.log" | head -n1)
		if [ -n "$bad" ] && grep -q "^${bad}[ =]" <<<"$extra"; then
			echo "$bad" >>"$work/$name.dropped"
			extra=$(grep -v "^${bad}[ =]" <<<"$extra" || true)
			continue
		fi
		cat "$work/$name.log" >&2
		die "parley ($name) did not start on port $port"
	done
}

versions=()
versions+=("PostgreSQL: $("$PGBIN/postgres" --version | sed 's/^postgres (PostgreSQL) //'), pgbench $("$PGBIN/pgbench" --version | awk '{print $NF}')")
parley_version=$("$PARLEY_BIN" -V 2>&1 | head -n1)
parley_rev=$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo "?")

case " $TARGETS " in *" parley-off "*)
	note "starting parley (cache off) on 127.0.0.1:$PARLEY_OFF_PORT"
	start_parley "$PARLEY_OFF_PORT" parley-off "cache_enabled = 0" 0 ;;
esac
case " $TARGETS " in *" parley-on "*)
	note "starting parley (cache on) on 127.0.0.1:$PARLEY_ON_PORT"
	start_parley "$PARLEY_ON_PORT" parley-on "$CACHE_SETTINGS" 1 ;;
esac
versions+=("parley: $parley_version ($PARLEY_BIN; checkout HEAD $parley_rev, which the binary may predate), transaction mode, default_pool_size = $POOL")
if [ -s "$work/parley-on.dropped" ]; then
	versions+=("  parley-on: this build rejects $(paste -sd, "$work/parley-on.dropped"): its cache is not configurable, so parley-on measures the pooler only")
fi
if grep -qi 'section \[cache\].*ignored' "$work/parley-on.log" 2>/dev/null; then
	versions+=("  parley-on: this build ignores the [cache] section: parley-on measures the pooler only")
fi

if [[ " $TARGETS " == *" pgbouncer "* ]]; then
	note "starting pgbouncer on 127.0.0.1:$BOUNCER_PORT"
	cat >"$work/pgbouncer.ini" <<CONF
[databases]
$DB = host=127.0.0.1 port=$PG_PORT dbname=$DB
[pgbouncer]
listen_port = $BOUNCER_PORT
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
max_db_connections = 0
$pooler_common
CONF
	is_root && chown postgres: "$work/pgbouncer.ini" "$work/userlist.txt"
	(exec_as_pg "$PGBOUNCER" "$work/pgbouncer.ini") >"$work/pgbouncer.out" 2>&1 &
	pid=$!
	wait_port "$BOUNCER_PORT" "$pid" || { cat "$work/pgbouncer.out" "$work/pgbouncer.log" >&2 2>/dev/null; die "pgbouncer did not start"; }
	daemons+=("$pid INT")
	versions+=("pgbouncer: $("$PGBOUNCER" --version 2>&1 | head -n1 | awk '{print $NF}'), transaction mode, default_pool_size = $POOL")
fi

if [[ " $TARGETS " == *" pgpool "* ]]; then
	note "starting pgpool-II on 127.0.0.1:$PGPOOL_PORT"
	mkdir -p "$work/pgpool/oiddir"
	: >"$work/pgpool/pcp.conf"
	# Trust on loopback: no pool_hba.conf, no pool_passwd; PostgreSQL itself trusts 127.0.0.1.
	cat >"$work/pgpool/pgpool.conf" <<CONF
backend_clustering_mode = 'raw'
listen_addresses = '127.0.0.1'
port = $PGPOOL_PORT
socket_dir = '$work/pgpool'
pcp_listen_addresses = '127.0.0.1'
pcp_port = $PCP_PORT
pcp_socket_dir = '$work/pgpool'
wd_ipc_socket_dir = '$work/pgpool'
pid_file_name = '$work/pgpool/pgpool.pid'
logdir = '$work/pgpool'
backend_hostname0 = '127.0.0.1'
backend_port0 = $PG_PORT
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
enable_pool_hba = off
pool_passwd = ''
num_init_children = $PGPOOL_CHILDREN
max_pool = 1
child_life_time = 0
child_max_connections = 0
connection_life_time = 0
client_idle_limit = 0
connection_cache = on
load_balance_mode = off
replicate_select = off
sr_check_period = 0
health_check_period = 0
failover_on_backend_error = off
use_watchdog = off
log_destination = 'stderr'
log_min_messages = warning
log_connections = off
log_statement = off
memory_cache_enabled = on
memqcache_method = 'shmem'
memqcache_total_size = 256MB
memqcache_max_num_cache = 100000
memqcache_expire = 0
memqcache_auto_cache_invalidation = on
memqcache_maxcache = 400kB
memqcache_cache_block_size = 1MB
memqcache_oiddir = '$work/pgpool/oiddir'
CONF
	is_root && chown -R postgres: "$work/pgpool"
	(exec_as_pg "$PGPOOL" -n -f "$work/pgpool/pgpool.conf" -F "$work/pgpool/pcp.conf") >"$work/pgpool.log" 2>&1 &
	pid=$!
	# SIGINT is pgpool's fast shutdown: it stops its children too.
	wait_port "$PGPOOL_PORT" "$pid" || { cat "$work/pgpool.log" >&2; daemons+=("$pid INT"); die "pgpool-II did not start"; }
	daemons+=("$pid INT")
	versions+=("pgpool-II: $("$PGPOOL" --version 2>&1 | head -n1 | sed 's/^pgpool-II version //'), raw mode, num_init_children = $PGPOOL_CHILDREN x max_pool = 1 (one backend connection per client), memqcache shmem 256MB")
fi

port_of() {
	case $1 in
	direct) echo "$PG_PORT" ;;
	parley-off) echo "$PARLEY_OFF_PORT" ;;
	parley-on) echo "$PARLEY_ON_PORT" ;;
	pgbouncer) echo "$BOUNCER_PORT" ;;
	pgpool) echo "$PGPOOL_PORT" ;;
	esac
}

# The cache hit counter of a target (answers served from its cache since it started), or nothing when it has no
# cache or does not report one.
cache_hits() {
	local out
	case $1 in
	pgpool)
		# SHOW POOL_CACHE: num_cache_hits is the first column.
		out=$("$PGBIN/psql" -X -A -t -F '|' -h 127.0.0.1 -p "$PGPOOL_PORT" -U "$DBUSER" -d "$DB" \
			-c "SHOW POOL_CACHE" 2>/dev/null) || return 0
		awk -F'|' 'NR == 1 && $1 ~ /^[0-9]+$/ { print $1 }' <<<"$out"
		;;
	parley-on)
		# parley's admin console: SHOW CACHE as name|value rows (or, failing that, a "hits" column).
		out=$("$PGBIN/psql" -X -A -F '|' -h 127.0.0.1 -p "$PARLEY_ON_PORT" -U "$DBUSER" -d parley \
			-c "SHOW CACHE" 2>/dev/null) || return 0
		awk -F'|' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
			("name" in col) && $col["name"] == "hits" { print $col["value"]; exit }
			!("name" in col) && ("hits" in col) && NR == 2 { print $col["hits"]; exit }' <<<"$out"
		;;
	esac
}

# Runs pgbench: target lookup mode seconds outfile. Returns pgbench's exit status. pgbench runs in the background
# and the shell waits for it, so a Ctrl-C (or SIGTERM) runs the trap at once instead of after the pass.
bench_pid=
pgb() {
	local port rc=0
	port=$(port_of "$1")
	"$PGBIN/pgbench" -n -h 127.0.0.1 -p "$port" -U "$DBUSER" -c "$CLIENTS" -j "$THREADS" -T "$4" -M "$3" \
		-D hot_agents="$HOT_AGENTS" -D hot_sessions="$HOT_SESSIONS" \
		-f "$bench_dir/parlant_$2.sql" "$DB" >"$5" 2>&1 &
	bench_pid=$!
	wait "$bench_pid" || rc=$?
	bench_pid=
	return "$rc"
}

# A cell's verdict from pgbench's output file $1 and exit status $2: prints the tps, or "FAILED <reason>".
verdict() {
	local out=$1 rc=$2 failed tx tps
	failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | tail -n1)
	tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | tail -n1)
	tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$out" | tail -n1)
	if [ "$rc" != 0 ]; then
		echo "FAILED pgbench exit status $rc"
	elif [ -n "$failed" ] && [ "$failed" != 0 ]; then
		echo "FAILED $failed failed transactions"
	elif [ -z "$tx" ] || [ "$tx" = 0 ] || [ -z "$tps" ]; then
		echo "FAILED no transactions processed"
	elif grep -q -i -E '(error|fatal|aborted)' "$out"; then
		echo "FAILED errors in pgbench output"
	else
		echo "$tps"
	fi
}

# 3. The runs --------------------------------------------------------------------------------------------------
declare -A TPS HIT
failures=()
{
	echo "# parley cache benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
	for v in "${versions[@]}"; do echo "# $v"; done
	echo "# pgbench: $CLIENTS clients, -j $THREADS, $SECS s per measured pass after a $WARM s warm-up pass of the same lookup and mode;" \
		"hot set: agents 1..$HOT_AGENTS, sessions 1..$HOT_SESSIONS (offsets 0..2)"
	echo "# rows per call on average: agent $(printf '%.1f' "$rows_agent"), tools $rows_tools, events $rows_events"
	echo "# parley-on [cache]: parlant_agent = 300, parlant_tool = 600, parlant_agent_tool = 600, parlant_event = 60;" \
		"[parley]: $(printf '%s' "$CACHE_SETTINGS" | paste -sd';' - | sed 's/;/; /g')"
}

for lookup in $LOOKUPS; do
	for mode in $MODES; do
		for t in $TARGETS; do
			note "$lookup / $mode / $t"
			out=$work/pgbench.$lookup.$mode.$t
			rc=0
			pgb "$t" "$lookup" "$mode" "$WARM" "$out.warm" || rc=$?
			before=$(cache_hits "$t")
			rc=0
			pgb "$t" "$lookup" "$mode" "$SECS" "$out" || rc=$?
			after=$(cache_hits "$t")
			v=$(verdict "$out" "$rc")
			TPS[$lookup.$mode.$t]=$v
			if [[ $v == FAILED* ]]; then
				failures+=("$lookup / $mode / $t: ${v#FAILED }")
				{
					echo "## $lookup / $mode / $t: ${v#FAILED } — pgbench said:"
					# Distinct messages (client numbers folded) with their counts, in order of first appearance.
					awk '/^(transaction type|scaling factor|query mode|number of clients|number of threads|duration|maximum number of tries|latency|initial connection time|tps|pgbench \(|progress)/ { next }
						{ line = $0; gsub(/client [0-9]+/, "client N", line); if (!(line in seen)) order[n++] = line; seen[line]++ }
						END { for (i = 0; i < n && i < 12; i++) printf "    %6dx %s\n", seen[order[i]], order[i] }' "$out"
				} >"$out.failure"
				cat "$out.failure" >&2
			fi
			if [ -n "$before" ] && [ -n "$after" ]; then
				tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | tail -n1)
				HIT[$lookup.$mode.$t]=$(awk -v b="$before" -v a="$after" -v tx="${tx:-0}" 'BEGIN {
					if (tx > 0) printf "%.1f%%", 100 * (a - b) / tx; else print "-" }')
			fi
		done
	done
done

# 4. The table -------------------------------------------------------------------------------------------------
ratio() { # a b -> a/b, or n/a when either is missing or failed
	awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2f", a / b; else print "n/a" }'
}
cell() { # the tps of a cell, rounded, or FAILED / -
	local v=${TPS[$1]:-}
	if [ -z "$v" ]; then echo "-"; elif [[ $v == FAILED* ]]; then echo "FAILED"; else printf '%.0f' "$v"; fi
}
echo
printf '%-7s %-9s' lookup mode
for t in $TARGETS; do printf ' %10s' "$t"; done
printf ' %13s %13s %13s\n' on/pgpool on/direct on/pgbouncer
for lookup in $LOOKUPS; do
	for mode in $MODES; do
		k=$lookup.$mode
		printf '%-7s %-9s' "$lookup" "$mode"
		for t in $TARGETS; do printf ' %10s' "$(cell "$k.$t")"; done
		printf ' %13s %13s %13s\n' "$(ratio "${TPS[$k.parley-on]:-}" "${TPS[$k.pgpool]:-}")" \
			"$(ratio "${TPS[$k.parley-on]:-}" "${TPS[$k.direct]:-}")" \
			"$(ratio "${TPS[$k.parley-on]:-}" "${TPS[$k.pgbouncer]:-}")"
	done
done
echo "(on/X = tps of parley-on / tps of X on the same line; n/a where either cell FAILED or was not run)"
echo "(load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); other work on the machine makes single cells vary widely: compare within a run, repeat a line to confirm)"
echo
echo "answers served from the cache during the measured passes, per pgbench transaction (hits counter delta / transactions; - = no counter):"
printf '%-7s %-9s %10s %10s\n' lookup mode parley-on pgpool
for lookup in $LOOKUPS; do
	for mode in $MODES; do
		printf '%-7s %-9s %10s %10s\n' "$lookup" "$mode" "${HIT[$lookup.$mode.parley-on]:--}" "${HIT[$lookup.$mode.pgpool]:--}"
	done
done
if [ ${#failures[@]} -gt 0 ]; then
	echo
	echo "FAILED cells (tps not shown; pgbench's errors):"
	cat "$work"/pgbench.*.failure
fi
