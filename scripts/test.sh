#!/usr/bin/env bash
# test.sh — build parley from scratch and run all its tests: cmocka unit tests and the pytest integration
# tests (tests/integration/run-pytest.sh), through `make check`. This is what CI runs (.ci/run).
#
# On failure it prints the logs of the failing tests; on success it ends with the cmocka totals and pytest's
# summary line. Exits non-zero on any failure.
#
# Environment:
#   SANITIZE=1        configure with --enable-sanitizers (ASan + UBSan)
#   FULL=1            also run `make distcheck` (slow)
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

# Tests whose .trs says FAIL, ERROR or XPASS, as paths without the .trs suffix.
failed_tests() {
	find tests -name '*.trs' -print0 2>/dev/null |
		xargs -0 -r grep -lE '^:test-result: (FAIL|ERROR|XPASS)' |
		sed 's/\.trs$//' | sort
}

say "make -j$MAKE_JOBS check"
rc=0
make -j"$MAKE_JOBS" check </dev/null || rc=$?
if [ "$rc" -ne 0 ]; then
	echo
	if [ ! -f test-suite.log ]; then
		echo "make check failed before running the tests (see the build output above)"
		exit "$rc"
	fi
	echo "================ make check failed; test-suite.log summary ================"
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
	echo "FAILED: $(failed_tests | tr '\n' ' ')(full logs: test-suite.log and tests/**/*.log)"
	exit "$rc"
fi

if [ "${FULL:-0}" = 1 ]; then
	say "make distcheck"
	make -j"$MAKE_JOBS" distcheck </dev/null
fi

echo
echo "================ unit tests (cmocka) ================"
found=0
for log in tests/unit/*.log; do
	[ -f "$log" ] || continue
	found=1
	echo "${log%.log}:"
	grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]|^\[=+\] .*run' "$log" | sed 's/^/    /' || true
done
[ "$found" = 1 ] || echo "no unit test logs (was cmocka found by configure?)"

echo "================ integration tests (pytest) ================"
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
