#!/usr/bin/env bash
# fuzz-httpreq.sh - fuzz the debug server's request parser
# (profile/httpreq.c) with libFuzzer, ASan and UBSan for a few seconds.
#
# usage: tests/fuzz-httpreq.sh [OUTDIR]   (default: a temp dir)
#
# meson cannot build a libFuzzer target with gcc, so this script compiles
# httpreq.c and tests/fuzz_httpreq.c itself with clang (clang, or
# clang-14 as Debian 12 names it), then runs it on a copy of the seed
# corpus in tests/fuzz/httpreq (new inputs go to the copy, never into the
# source tree). Bounds: FUZZ_SECONDS (default 5) of fuzzing, 3 million runs at
# most, 8 KiB inputs, 2 s per input. Exits 77 (meson's "skipped") when no
# clang with -fsanitize=fuzzer is found; 0 when the run found nothing;
# otherwise libFuzzer's status, with the crashing input kept in OUTDIR.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
out=${1:-}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/fuzz-httpreq.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
[[ -n $out ]] || out=$tmp
mkdir -p "$out"

cc=
for c in clang clang-14; do
    if command -v "$c" >/dev/null; then
        cc=$c
        break
    fi
done
if [[ -z $cc ]]; then
    echo "fuzz-httpreq: SKIP: no clang (apt-get install clang)"
    exit 77
fi

# Whether this clang has libFuzzer at all, on a one-line probe: only
# that may skip; any error in the real sources below fails.
printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n)\n{ (void)d; (void)n; return 0; }\n' \
    >"$tmp/probe.c"
if ! "$cc" -fsanitize=fuzzer "$tmp/probe.c" -o "$tmp/probe" 2>"$tmp/cc.log"; then
    echo "fuzz-httpreq: SKIP: $cc cannot link -fsanitize=fuzzer:"
    cat "$tmp/cc.log"
    exit 77
fi

bin=$out/fuzz_httpreq
if ! "$cc" -std=gnu11 -g -O1 -Wall -Wextra -Werror \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$src/profile" "$src/profile/httpreq.c" "$here/fuzz_httpreq.c" \
    -o "$bin" 2>"$tmp/cc.log"; then
    cat "$tmp/cc.log" >&2
    exit 1
fi

mkdir -p "$tmp/corpus"
cp "$here/fuzz/httpreq/"* "$tmp/corpus/"
secs=${FUZZ_SECONDS:-5}
echo "fuzz-httpreq: $cc, ${secs} s, seeds from tests/fuzz/httpreq"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
ASAN_OPTIONS=detect_leaks=1 \
    "$bin" -max_total_time="$secs" -runs=3000000 -max_len=8192 -timeout=2 \
    -artifact_prefix="$out/" -print_final_stats=1 "$tmp/corpus" 2>&1 |
    tail -n 25
rc=${PIPESTATUS[0]}
[[ $rc == 0 ]] && echo "fuzz-httpreq: ok"
exit "$rc"
