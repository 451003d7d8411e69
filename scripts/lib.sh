# lib.sh — helpers shared by scripts/*.sh; sourced, not run.
# shellcheck shell=bash

PARLEY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
MAKE_JOBS=${MAKE_JOBS:-2}

say() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as the OS user that owns the throwaway PostgreSQL: "postgres" when we are root
# (PostgreSQL refuses to run as root), ourselves otherwise. As postgres it runs from /, since the current
# directory may be one postgres cannot enter; pass absolute paths.
as_pg() {
	if is_root; then
		(cd / && runuser -u postgres -- "$@")
	else
		"$@"
	fi
}

# Generate the build system only when it is missing, configure only when there is no Makefile, then make.
# (An existing Makefile re-runs autoconf/automake/config.status by itself when their inputs change.)
build_parley_incremental() {
	cd "$PARLEY_ROOT" || return
	if [ ! -x configure ] || [ ! -f Makefile.in ]; then
		say "autoreconf -fi"
		autoreconf -fi
	fi
	if [ ! -f Makefile ]; then
		say "./configure"
		./configure
	fi
	say "make -j$MAKE_JOBS"
	make -j"$MAKE_JOBS"
}
