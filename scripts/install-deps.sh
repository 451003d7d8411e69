#!/usr/bin/env bash
# install-deps.sh — install the Debian 12 (bookworm) packages parley needs to build, test and run its quick start.
#
# Idempotent: asks dpkg which packages are installed and does nothing (not even "apt-get update") when all
# are. Otherwise runs apt-get update and installs only the missing ones, as root or through sudo.
# Installing postgresql-15 lets Debian create and start its own cluster "15/main" on port 5432; parley's
# scripts do not use it and leave it alone.
set -euo pipefail

PACKAGES=(
	# build
	build-essential autoconf automake libtool pkg-config
	libevent-dev libssl-dev uthash-dev libcmocka-dev libpq-dev libpg-query-dev
	# PostgreSQL 15 server (initdb, pg_ctl, contrib modules) and client tools (psql, pgbench)
	postgresql-15 postgresql-client-15
	# the poolers parley is compared with
	pgbouncer pgpool2
	# integration tests
	python3 python3-psycopg python3-psycopg2 python3-pytest
	# the driver tests (tests/integration/clients): asyncpg, and pgjdbc compiled and run with the JDK
	# (Node.js and npm for the node-postgres/drizzle and postgres.js tests come with the machine)
	python3-asyncpg libpostgresql-jdbc-java openjdk-17-jdk-headless
	# the metrics tests: promtool check metrics/rules and a real Prometheus server scraping parley
	prometheus
	# the fuzz targets (tests/fuzz, part of make check): clang with libFuzzer and the sanitizer runtimes
	clang libclang-rt-14-dev
)

command -v dpkg-query >/dev/null 2>&1 ||
	{ echo "install-deps: dpkg-query not found; this script supports Debian 12 only. Needed: ${PACKAGES[*]}" >&2; exit 1; }

missing=()
for pkg in "${PACKAGES[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
	echo "install-deps: all ${#PACKAGES[@]} packages are installed"
	exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
	sudo=()
elif command -v sudo >/dev/null 2>&1; then
	sudo=(sudo)
else
	echo "install-deps: not root and sudo is not installed; as root run: apt-get install ${missing[*]}" >&2
	exit 1
fi

apt_get() {
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"
}
apt_get update -q
apt_get install -y -q --no-install-recommends "${missing[@]}"

still=()
for pkg in "${missing[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	[ "$status" = installed ] || still+=("$pkg")
done
if [ ${#still[@]} -ne 0 ]; then
	echo "install-deps: still not installed: ${still[*]}" >&2
	exit 1
fi
echo "install-deps: done"
