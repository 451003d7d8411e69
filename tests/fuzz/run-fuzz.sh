#!/usr/bin/env bash
# run-fuzz.sh — `make check` test: builds the libFuzzer targets (build.sh) and runs each briefly on its seed corpus; fails on any crash, leak, sanitizer report or timeout, printing the reproducer.
#
# Environment:
#   FUZZ_SECONDS      seconds per target (default 40: 8 targets ≈ 5.5 minutes, plus about 45 s for a first build)
#   FUZZ_TARGETS      space-separated subset of targets (default: all of build.sh's)
#   PARLEY_SRCDIR     source tree (make check sets it)
#   PARLEY_BUILDDIR   configured build tree (default: the directory of $PARLEY_BIN, else the current directory)
# New inputs the fuzzer finds go to BUILDDIR/tests/fuzz/out/work/<target>/ (the committed seeds are never written);
# a crashing input is saved as BUILDDIR/tests/fuzz/out/crash/<target>/crash-<sha1> and printed in hex.
# Reproduce with: BUILDDIR/tests/fuzz/out/<target> <file>. A finding that is fixed goes into
# tests/fuzz/corpus/<target>/ as a regression seed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
srcdir=${PARLEY_SRCDIR:-$(cd "$here/../.." && pwd)}
if [ -n "${PARLEY_BUILDDIR:-}" ]; then
	builddir=$PARLEY_BUILDDIR
elif [ -n "${PARLEY_BIN:-}" ]; then
	builddir=$(cd "$(dirname "$PARLEY_BIN")" && pwd)
else
	builddir=$PWD
fi
seconds=${FUZZ_SECONDS:-40}
out=$builddir/tests/fuzz/out

echo "run-fuzz: building the fuzz targets with clang (tests/fuzz/build.sh)"
if ! exes=$(PARLEY_SRCDIR=$srcdir PARLEY_BUILDDIR=$builddir bash "$srcdir/tests/fuzz/build.sh"); then
	echo "run-fuzz: FAIL: the fuzz targets could not be built (see the message above)"
	echo "0 passed, 1 failed"
	exit 1
fi

passed=0
failed=0
failed_names=()
start_all=$(date +%s)
for exe in $exes; do
	t=$(basename "$exe")
	work=$out/work/$t
	crash=$out/crash/$t
	log=$out/$t.log
	mkdir -p "$work" "$crash"
	rm -f "$crash"/*	# reproducers of an earlier run would be misleading
	echo "run-fuzz: $t for ${seconds}s (seeds: tests/fuzz/corpus/$t)"
	# -rss_limit_mb/-timeout: a slow or greedy input is a finding too. -close_fd_mask=1: the code's own stdout noise
	# is dropped (stderr, where the sanitizers report, stays).
	"$exe" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 -close_fd_mask=1 \
		-artifact_prefix="$crash/" "$work" "$srcdir/tests/fuzz/corpus/$t" >"$log" 2>&1
	rc=$?
	stats=$(grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb):' "$log" |
		sed 's/^stat:://' | tr '\n' ' ')
	cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n1)
	if [ "$rc" -eq 0 ]; then
		echo "run-fuzz: PASS: $t: $cov $stats"
		passed=$((passed + 1))
	else
		echo "run-fuzz: FAIL: $t exited with $rc; the end of its log ($log):"
		tail -n 60 "$log" | sed 's/^/    /'
		for f in "$crash"/*; do
			[ -f "$f" ] || continue
			echo "run-fuzz: reproducer $f ($(wc -c <"$f") bytes), reproduce with: $exe $f"
			od -A d -t x1z -v "$f" | head -n 40 | sed 's/^/    /'
		done
		failed=$((failed + 1))
		failed_names+=("$t")
	fi
done
echo "run-fuzz: fuzzing took $(($(date +%s) - start_all))s"
[ "$failed" -eq 0 ] || echo "run-fuzz: failed targets: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
