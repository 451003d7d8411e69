#!/usr/bin/env bash
# build.sh — builds parley's libFuzzer targets (tests/fuzz/fuzz_*.c) with clang -fsanitize=fuzzer,address,undefined, linking the project's own sources.
#
# `make fuzz` runs it; tests/fuzz/run-fuzz.sh (a `make check` test) runs it before fuzzing. The automake build uses
# gcc, so this compiles the needed sources again with clang into BUILDDIR/tests/fuzz/out/ (objects in obj/, one
# executable per target); only what changed since the last build is recompiled.
#
# Environment:
#   PARLEY_SRCDIR     source tree (default: the tree this script is in)
#   PARLEY_BUILDDIR   configured build tree holding src/build_config.h (default: the current directory)
#   CLANG             compiler (default: clang)
#   FUZZ_TARGETS      space-separated subset of targets to build (default: all)
# Prints the path of each executable built on stdout (progress on stderr); exits non-zero (saying what to install) if clang cannot build fuzzers.
set -euo pipefail

srcdir=${PARLEY_SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
builddir=${PARLEY_BUILDDIR:-$PWD}
CLANG=${CLANG:-clang}
out=$builddir/tests/fuzz/out
obj=$out/obj

# Project sources each target links (beyond its own file).
declare -A SOURCES=(
	[fuzz_proto]="log proto"
	[fuzz_startup]="log proto"
	[fuzz_config]="log config"
	[fuzz_auth_file]="log auth scram"
	[fuzz_scram]="log auth scram"
	[fuzz_shape]="log shape"
	[fuzz_hba]="log hba"
	[fuzz_relay]="log proto config shape cache relay session ibuf"
)
ALL_TARGETS="fuzz_proto fuzz_startup fuzz_config fuzz_auth_file fuzz_scram fuzz_shape fuzz_relay fuzz_hba"
targets=${FUZZ_TARGETS:-$ALL_TARGETS}

die() {
	echo "fuzz/build.sh: $*" >&2
	exit 1
}

command -v "$CLANG" >/dev/null 2>&1 ||
	die "$CLANG not found: the fuzz targets need clang with libFuzzer (Debian 12: apt-get install clang libclang-rt-14-dev, or run scripts/install-deps.sh)"
[ -f "$builddir/src/build_config.h" ] ||
	die "$builddir/src/build_config.h not found: run configure first (or set PARLEY_BUILDDIR to a configured build tree)"

mkdir -p "$obj"

# libFuzzer's runtime comes with libclang-rt-14-dev on Debian 12; check once that clang can link a fuzzer at all.
probe=$out/.probe
if [ ! -x "$probe" ]; then
	printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n);\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n' >"$out/.probe.c"
	"$CLANG" -fsanitize=fuzzer,address,undefined "$out/.probe.c" -o "$probe" 2>"$out/.probe.log" ||
		die "$CLANG cannot build a libFuzzer program ($(head -n1 "$out/.probe.log")): install libclang-rt-14-dev (scripts/install-deps.sh)"
fi

# shellcheck disable=SC2207
PKG_CFLAGS=($(pkg-config --cflags libevent libssl libcrypto libpq))
# shellcheck disable=SC2207
PKG_LIBS=($(pkg-config --libs libevent libssl libcrypto))
SAN=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
CFLAGS=(-g -O1 -std=gnu11 -D_GNU_SOURCE "-DSYSCONFDIR=\"/etc\"" "${SAN[@]}"
	-I"$srcdir/src" -I"$builddir/src" -I"$srcdir/tests/fuzz" "${PKG_CFLAGS[@]}")

# Newest header the objects depend on: any change rebuilds everything (cheap: a handful of files).
newest_header=$builddir/src/build_config.h
for h in "$srcdir"/src/*.h "$srcdir"/tests/fuzz/*.h; do
	[ "$h" -nt "$newest_header" ] && newest_header=$h
done

# compile SRC OBJ EXTRA_FLAGS...: recompiles when the object is missing or older than its source or a header.
compile() {
	local src=$1 o=$2
	shift 2
	if [ ! -f "$o" ] || [ "$src" -nt "$o" ] || [ "$newest_header" -nt "$o" ]; then
		echo "  CLANG    ${src#"$srcdir"/}" >&2
		"$CLANG" "${CFLAGS[@]}" "$@" -c "$src" -o "$o.tmp"
		mv "$o.tmp" "$o"
	fi
}

for t in $targets; do
	[ -n "${SOURCES[$t]+x}" ] || die "unknown fuzz target $t (known: $ALL_TARGETS)"
	objs=()
	for m in ${SOURCES[$t]}; do
		# project sources: instrumented for coverage, warnings shown but not fatal (they are gcc -Werror clean)
		compile "$srcdir/src/$m.c" "$obj/$m.o" -fsanitize=fuzzer-no-link -Wall -Wextra -Wno-unused-parameter
		objs+=("$obj/$m.o")
	done
	compile "$srcdir/tests/fuzz/$t.c" "$obj/$t.o" -fsanitize=fuzzer-no-link -Wall -Wextra -Werror -Wno-unused-parameter
	exe=$out/$t
	need=0
	[ -x "$exe" ] || need=1
	for o in "$obj/$t.o" "${objs[@]}"; do
		[ "$o" -nt "$exe" ] && need=1
	done
	if [ "$need" = 1 ]; then
		echo "  LINK     $t" >&2
		libs=("${PKG_LIBS[@]}")
		case $t in fuzz_shape | fuzz_relay) libs=(-lpg_query "${libs[@]}") ;; esac
		"$CLANG" -fsanitize=fuzzer "${SAN[@]}" "$obj/$t.o" "${objs[@]}" "${libs[@]}" -lm -o "$exe.tmp" ||
			die "linking $t failed; an undefined reference to a function of another module usually means a source it links (${SOURCES[$t]}) now calls something new: add that source to SOURCES in tests/fuzz/build.sh, or for fuzz_relay a stand-in in tests/fuzz/fuzz_relay.c"
		mv "$exe.tmp" "$exe"
	fi
	echo "$exe"
done
