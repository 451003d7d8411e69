#!/usr/bin/env bash
# bench_pool.sh — pgbench throughput of direct PostgreSQL, parley and Debian's pgbouncer, measured in one run.
#
# Starts a throwaway PostgreSQL 15, parley and pgbouncer (same pool size, transaction mode), then runs pgbench
# (select-only and TPC-B, -M simple and -M extended) with 32 and 500 clients against each and prints the tps
# table with the ratio parley/pgbouncer. Nothing here fails on a timing: it reports.
#
# Each configuration runs BENCH_ROUNDS times with the poolers alternating which goes first; the table shows the
# median tps of each, their ratio, and the median and range of the per-round parley/pgbouncer ratios (each compares
# two neighbouring runs, so it is the figure least moved by drift: a single run on a shared 2-core machine varies by
# 10 % or more from one minute to the next). The last three columns are each pooler's own CPU time (user + system,
# read from /proc) per transaction, and their ratio: what the pooler costs the machine, a figure that a slower or
# busier minute moves far less than it moves tps.
#
# Environment: BENCH_SECONDS (default 10), BENCH_ROUNDS (default 3), BENCH_CLIENTS (default "32 500"), BENCH_POOL_SIZE (default 20),
#              BENCH_SCALE (default 10), PARLEY_BIN (default ./parley), BENCH_MODES (default "simple extended"),
#              BENCH_SCRIPTS (default "select-only tpcb-like").
set -euo pipefail

here=$(cd "$(dirname "$0")/../.." && pwd)
PARLEY_BIN=${PARLEY_BIN:-$here/parley}
SECS=${BENCH_SECONDS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENTS=${BENCH_CLIENTS:-"32 500"}
POOL=${BENCH_POOL_SIZE:-20}
SCALE=${BENCH_SCALE:-10}
MODES=${BENCH_MODES:-"simple extended"}
SCRIPTS=${BENCH_SCRIPTS:-"select-only tpcb-like"}
PGBIN=/usr/lib/postgresql/15/bin
PGPORT=${BENCH_PG_PORT:-26432}
PARLEY_PORT=${BENCH_PARLEY_PORT:-26433}
BOUNCER_PORT=${BENCH_BOUNCER_PORT:-26434}
THREADS=${BENCH_THREADS:-2}

[ -x "$PARLEY_BIN" ] || { echo "parley binary not found at $PARLEY_BIN (build first or set PARLEY_BIN)" >&2; exit 1; }
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }

work=$(mktemp -d /tmp/parley-bench.XXXXXX)
chown postgres "$work"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pids=()
cleanup() {
	for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
	[ -f "$work/data/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$work/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT
ulimit -n 4096 2>/dev/null || true

echo "# starting PostgreSQL 15 on 127.0.0.1:$PGPORT" >&2
as_pg "$PGBIN/initdb" -D "$work/data" -A trust -U postgres >/dev/null
cat >>"$work/data/postgresql.conf" <<CONF
port = $PGPORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 600
shared_buffers = 256MB
fsync = off
synchronous_commit = off
full_page_writes = off
CONF
as_pg "$PGBIN/pg_ctl" -D "$work/data" -l "$work/pg.log" -w start >/dev/null
"$PGBIN/pgbench" -i -q -s "$SCALE" -h 127.0.0.1 -p "$PGPORT" -U postgres postgres >/dev/null 2>&1

echo '"postgres" "postgres"' >"$work/userlist.txt"
chown postgres "$work/userlist.txt"
common="listen_addr = 127.0.0.1
auth_type = trust
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
max_client_conn = 2000
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
log_connections = 0
log_disconnections = 0
unix_socket_dir ="
cat >"$work/parley.ini" <<CONF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres
[parley]
listen_port = $PARLEY_PORT
logfile = $work/parley.log
$common
CONF
cat >"$work/pgbouncer.ini" <<CONF
[databases]
postgres = host=127.0.0.1 port=$PGPORT dbname=postgres
[pgbouncer]
listen_port = $BOUNCER_PORT
logfile = $work/pgbouncer.log
$common
CONF
chown postgres "$work"/*.ini

# Each pooler runs in a session of its own (setsid), as a service would (systemd gives each its own cgroup), and as
# PostgreSQL does (pg_ctl): with the kernel's autogroup scheduling (sched_autogroup_enabled, on by default) a pooler
# left in this script's session would share one CPU share with pgbench's threads. Measured here: pgbouncer started
# with -d (which calls setsid) and parley left in the shell's session made parley look 5-15 % slower in select-only
# runs; with both in their own session they were level. (setsid does not fork here: the script's background jobs are
# not process-group leaders, so $! is the pooler itself and the cleanup's kill reaches it.)
setsid "$PARLEY_BIN" -q "$work/parley.ini" >"$work/parley.out" 2>&1 &
pids+=($!)
parley_pid=$!
# pgbouncer drops to "postgres" itself (-u), so that $! is pgbouncer and the cleanup's kill reaches it (a
# runuser in between would be killed and leave pgbouncer running).
if [ "$(id -u)" = 0 ]; then bouncer_user=(-u postgres); else bouncer_user=(); fi
setsid /usr/sbin/pgbouncer -q "${bouncer_user[@]}" "$work/pgbouncer.ini" >"$work/pgbouncer.out" 2>&1 &
pids+=($!)
bouncer_pid=$!
for port in $PARLEY_PORT $BOUNCER_PORT; do
	for _ in $(seq 50); do "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
done

# Before every TPC-B run, what pgbench itself does unless -n (vacuum the two small tables, empty the history), plus
# a checkpoint, directly on PostgreSQL and outside the timed window: each run then starts from the same table state
# instead of inheriting the dead rows and the history of the runs before it (which made the later of two
# neighbouring runs slower, whichever pooler it was).
prep() { # script
	[ "$1" = tpcb-like ] || return 0
	"$PGBIN/psql" -X -q -h 127.0.0.1 -p "$PGPORT" -U postgres -d postgres \
		-c "VACUUM pgbench_branches" -c "VACUUM pgbench_tellers" -c "TRUNCATE pgbench_history" -c "CHECKPOINT" >/dev/null
}

# CPU time (user + system, in clock ticks) the process has used so far: fields 14 and 15 of /proc/PID/stat, counted
# after the ") " that ends the command name.
cpu_ticks() { [ -n "$1" ] && sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{ print $12 + $13 }' || echo 0; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

run() { # target port clients mode script [pooler pid] -> "tps cpu", cpu: the pooler's microseconds per transaction
	local port=$2 c=$3 mode=$4 script=$5 pid=${6:-} out t0 t1 n
	local j=$THREADS
	[ "$c" -lt "$j" ] && j=$c
	prep "$script"
	t0=$(cpu_ticks "$pid")
	out=$("$PGBIN/pgbench" -n -h 127.0.0.1 -p "$port" -U postgres -c "$c" -j "$j" -T "$SECS" -M "$mode" -b "$script" postgres 2>&1) || {
		echo "pgbench against $1 failed:" >&2; echo "$out" | tail -5 >&2; echo "0 0"; return; }
	t1=$(cpu_ticks "$pid")
	if echo "$out" | grep -qi 'error'; then echo "# $1 reported errors:" >&2; echo "$out" | grep -i error | head -3 >&2; fi
	n=$(echo "$out" | sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' | tail -1)
	# the CPU includes the pooler's work for the clients' logins and logouts, which pgbench's tps leaves out
	echo "$(echo "$out" | sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | tail -1)" \
		"$(awk -v d=$((t1 - t0)) -v n="${n:-0}" -v us="$TICK_US" 'BEGIN { if (n > 0) printf "%.2f", d * us / n; else print 0 }')"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Geometric mean of the per-round ratios with its 90 % confidence interval (Student's t on the logs): "0.98
# (0.95-1.01)" says the rounds cannot tell parley from pgbouncer at that level, "1.06 (1.03-1.09)" that parley is
# ahead. Rounds with a failed run (ratio 0) are left out; one usable round gives no interval.
ratio_ci() {
	printf '%s\n' "$@" | awk '
		$1 > 0 { l[++n] = log($1); s += l[n] }
		END {
			if (n == 0) { print "n/a"; exit }
			m = s / n
			if (n == 1) { printf "%.2f", exp(m); exit }
			for (i = 1; i <= n; i++) ss += (l[i] - m) ^ 2
			split("6.314 2.920 2.353 2.132 2.015 1.943 1.895 1.860 1.833 1.812 1.796 1.782 1.771 1.761 1.753 1.746 1.740 1.734 1.729", t, " ")
			df = n - 1; tc = df <= 19 ? t[df] : 1.70
			h = tc * sqrt(ss / df / n)
			printf "%.2f (%.2f-%.2f)", exp(m), exp(m - h), exp(m + h)
		}'
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
printf '%-12s %-9s %7s %12s %12s %12s %10s %12s %15s %20s %9s %9s %9s\n' script mode clients direct pgbouncer parley parley/pgb \
	"round median" "rounds min-max" "geomean (90% CI)" "pgb cpu" "parl cpu" "cpu ratio"
for script in $SCRIPTS; do
	for mode in $MODES; do
		for c in $CLIENTS; do
			ds=() bs=() ps=() rs=() bcs=() pcs=()
			for r in $(seq "$ROUNDS"); do
				# the two poolers take turns going first, so drift (checkpoints, autovacuum, other load) does
				# not always favour the same one; each round's ratio compares two neighbouring runs
				read -r d _ < <(run direct "$PGPORT" "$c" "$mode" "$script")
				ds+=("$d")
				if [ $((r % 2)) = 1 ]; then
					read -r b bc < <(run pgbouncer "$BOUNCER_PORT" "$c" "$mode" "$script" "$bouncer_pid")
					read -r p pc < <(run parley "$PARLEY_PORT" "$c" "$mode" "$script" "$parley_pid")
				else
					read -r p pc < <(run parley "$PARLEY_PORT" "$c" "$mode" "$script" "$parley_pid")
					read -r b bc < <(run pgbouncer "$BOUNCER_PORT" "$c" "$mode" "$script" "$bouncer_pid")
				fi
				bs+=("$b") ps+=("$p") bcs+=("$bc") pcs+=("$pc")
				rs+=("$(awk -v p="$p" -v b="$b" 'BEGIN { if (b > 0) printf "%.3f", p / b; else print 0 }')")
			done
			d=$(median "${ds[@]}") b=$(median "${bs[@]}") p=$(median "${ps[@]}")
			ratio=$(awk -v p="$p" -v b="$b" 'BEGIN { if (b > 0) printf "%.2f", p / b; else print "n/a" }')
			spread=$(printf '%s\n' "${rs[@]}" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }')
			rmed=$(printf '%.2f' "$(median "${rs[@]}")")
			ci=$(ratio_ci "${rs[@]}")
			bc=$(median "${bcs[@]}") pc=$(median "${pcs[@]}")
			cratio=$(awk -v p="$pc" -v b="$bc" 'BEGIN { if (b > 0) printf "%.2f", p / b; else print "n/a" }')
			printf '%-12s %-9s %7s %12.0f %12.0f %12.0f %10s %12s %15s %20s %9.1f %9.1f %9s\n' "$script" "$mode" "$c" "$d" "$b" "$p" \
				"$ratio" "$rmed" "$spread" "$ci" "$bc" "$pc" "$cratio"
		done
	done
done
echo "# pool size $POOL, transaction mode, $SECS s per run, median of $ROUNDS rounds, pgbench -j $THREADS, scale $SCALE, $(nproc) cores" >&2
echo "# cpu: the pooler's own CPU time (user + system, /proc/PID/stat) per transaction in microseconds, median of the rounds;" \
	"cpu ratio parley/pgbouncer below 1 means parley spent less" >&2
# pgbench, PostgreSQL and the poolers share the machine's cores: other load skews the numbers, so say how much
# there was (on a quiet machine the 1-minute load stays near the number of pgbench threads plus one or two).
echo "# load average before: $load_before, after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
