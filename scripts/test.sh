#!/usr/bin/env bash
# test.sh — build parley from scratch and run all its tests: cmocka unit tests and the pytest integration
# tests (tests/integration/run-pytest.sh), through `make check`. This is what CI runs (.ci/run).
#
# Two builds: the normal one in-tree, then (unless SKIP_SANITIZE=1) a second one with --enable-sanitizers
# (AddressSanitizer with LeakSanitizer, UndefinedBehaviorSanitizer) whose `make check` runs the whole suite again;
# the harness fails a test when the pooler's output holds a sanitizer or leak report. That build is out of tree, in
# $SANITIZE_DIR/build, from a pristine copy of the sources in $SANITIZE_DIR/src (the configured in-tree build cannot
# be the srcdir of another build). It takes about as long as the normal run.
#
# On failure it prints the logs of the failing tests; on success it ends with the cmocka totals and pytest's
# summary line of each build. Exits non-zero on any failure.
#
# Environment:
#   SKIP_SANITIZE=1   skip the second, sanitizer build
#   SANITIZE_DIR      where the sanitizer build goes (default: parley-sanitize in the tree, git-ignored)
#   SANITIZE=1        configure the normal build itself with --enable-sanitizers (then no second build)
#   FULL=1            also run `make distcheck` (slow)
#   FUZZ_SECONDS=40   seconds each libFuzzer target runs in the normal build's make check (SANITIZE_FUZZ_SECONDS=10
#                     in the sanitizer build's)
#   SKIP_DEPS=1       do not run scripts/install-deps.sh
#   CONFIGURE_FLAGS   extra ./configure arguments (word-split)
#   MAKE_JOBS=2       make -j value
set -euo pipefail
# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$PARLEY_ROOT"

if [ "${SKIP_DEPS:-0}" != 1 ]; then
	say "scripts/install-deps.sh"
	bash scripts/install-deps.sh </dev/null
fi

say "autoreconf -fi"
autoreconf -fi

conf=()
[ "${SANITIZE:-0}" = 1 ] && conf+=(--enable-sanitizers)
# shellcheck disable=SC2206
[ -n "${CONFIGURE_FLAGS:-}" ] && conf+=(${CONFIGURE_FLAGS})
say "./configure ${conf[*]}"
./configure "${conf[@]}"

say "make -j$MAKE_JOBS"
make -j"$MAKE_JOBS"

# Tests whose .trs says FAIL, ERROR or XPASS, as paths without the .trs suffix (in the current build tree).
failed_tests() {
	find tests -name '*.trs' -print0 2>/dev/null |
		xargs -0 -r grep -lE '^:test-result: (FAIL|ERROR|XPASS)' |
		sed 's/\.trs$//' | sort
}

# make check in the current directory (a configured build tree). On failure prints the test-suite.log summary and
# the logs of the failing tests, then exits with make's status. $1 names the build in the messages.
run_check() {
	local label=$1 rc=0 t
	say "make -j$MAKE_JOBS check ($label build, in $PWD)"
	make -j"$MAKE_JOBS" check </dev/null || rc=$?
	[ "$rc" -eq 0 ] && return 0
	echo
	if [ ! -f test-suite.log ]; then
		echo "make check ($label build) failed before running the tests (see the build output above)"
		exit "$rc"
	fi
	echo "================ make check failed ($label build); test-suite.log summary ================"
	sed -n '1,/^\.\. contents::/p' test-suite.log | grep -v '^\.\. contents::' || true
	for t in $(failed_tests); do
		echo
		echo "================ $t.log ($(sed -n 's/^:test-result: //p' "$t.trs" | head -n1)) ================"
		if [ "$(wc -l <"$t.log")" -gt 400 ]; then
			echo "[... first $(($(wc -l <"$t.log") - 400)) lines omitted ...]"
		fi
		tail -n 400 "$t.log"
	done
	echo
	echo "FAILED ($label build): $(failed_tests | tr '\n' ' ')(full logs: $PWD/test-suite.log and $PWD/tests/**/*.log)"
	exit "$rc"
}

# The cmocka totals and pytest's summary of the build tree in the current directory; $1 names the build.
print_summary() {
	local label=$1 found=0 log plog
	echo
	echo "================ $label build: unit tests (cmocka) ================"
	for log in tests/unit/*.log; do
		[ -f "$log" ] || continue
		found=1
		echo "${log%.log}:"
		grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]|^\[=+\] .*run' "$log" | sed 's/^/    /' || true
	done
	[ "$found" = 1 ] || echo "no unit test logs (was cmocka found by configure?)"

	echo "================ $label build: integration tests (pytest) ================"
	plog=tests/integration/run-pytest.sh.log
	if [ -f "$plog" ]; then
		# the "short test summary info" section if any (skips, xfails), then the final "N passed in Xs" line
		sed -n '/short test summary info/,/^=\+ .* in [0-9.]\+s/p' "$plog"
		if ! grep -q 'short test summary info' "$plog"; then
			grep -E '^=+ .*(passed|failed|skipped|error|no tests ran).* in [0-9.]+s' "$plog" | tail -n1 ||
				tail -n 3 "$plog"
		fi
	else
		echo "$plog not found"
	fi
}

# A pristine copy of the source tree in $1 (the in-tree build is configured, so it cannot serve as the srcdir of a
# second, out-of-tree build): in a git checkout the tracked and untracked-but-not-ignored files as they are in the
# working tree (uncommitted edits included), then autoreconf; otherwise `make distdir`.
copy_sources() {
	local dest=$1 f
	rm -rf "$dest"
	if git -C "$PARLEY_ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		mkdir -p "$dest"
		git -C "$PARLEY_ROOT" ls-files -z --cached --others --exclude-standard |
			while IFS= read -r -d '' f; do
				if [ -e "$PARLEY_ROOT/$f" ]; then printf '%s\0' "$f"; fi
			done |
			tar -C "$PARLEY_ROOT" --null -T - -cf - | tar -C "$dest" -xf -
		(cd "$dest" && autoreconf -fi)
	else
		make distdir distdir=parley-sanitize-distdir >/dev/null
		mv parley-sanitize-distdir "$dest"
	fi
}

run_check normal
normal_secs=$SECONDS # since the script started: dependencies, autoreconf, configure, build and make check

if [ "${FULL:-0}" = 1 ]; then
	say "make distcheck"
	make -j"$MAKE_JOBS" distcheck </dev/null
fi

print_summary normal

if [ "${SKIP_SANITIZE:-0}" = 1 ]; then
	echo
	echo "sanitizer build skipped (SKIP_SANITIZE=1)"
elif [ "${SANITIZE:-0}" = 1 ]; then
	echo
	echo "sanitizer build skipped: the normal build above already has --enable-sanitizers (SANITIZE=1)"
else
	san_top=${SANITIZE_DIR:-$PARLEY_ROOT/parley-sanitize}
	case "$san_top" in /*) ;; *) san_top=$PWD/$san_top ;; esac
	SECONDS=0
	say "sanitizer build: sources copied to $san_top/src, built in $san_top/build"
	copy_sources "$san_top/src"
	rm -rf "$san_top/build"
	mkdir -p "$san_top/build"
	cd "$san_top/build"
	# shellcheck disable=SC2206
	san_conf=(--enable-sanitizers ${CONFIGURE_FLAGS:-})
	say "$san_top/src/configure ${san_conf[*]}"
	"$san_top/src/configure" "${san_conf[@]}"
	say "make -j$MAKE_JOBS (sanitizer build)"
	make -j"$MAKE_JOBS"
	# LeakSanitizer on (the last setting wins), UBSan reports with a stack; the harness fails a test whose
	# pooler output holds a sanitizer report, and parley exits normally on the harness's SIGTERM, so leaks show.
	export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1"
	export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1"
	# the fuzz targets carry clang's own sanitizers whatever the build: a short second pass is enough here
	export FUZZ_SECONDS=${SANITIZE_FUZZ_SECONDS:-10}
	run_check sanitizer
	print_summary "sanitizer (ASan+UBSan+LSan)"
	cd "$PARLEY_ROOT"
	echo
	echo "both builds passed: normal ${normal_secs}s (with deps), sanitizer ${SECONDS}s (copy, build, make check)" \
		"(logs in $san_top/build)"
fi
