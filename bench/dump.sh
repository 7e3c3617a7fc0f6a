#!/usr/bin/env bash
# bench/dump.sh - the SIGQUIT dump of N (100,000) parked coroutines, weft
# against Go, in the same run; and how much faster weft's second dump is
# than its first (symbolization cached).
#
# Usage: bash bench/dump.sh [BUILD_DIR]     (default build-release)
#
# What runs:
#   sigquit  weft BUILD_DIR/bench/bench_dump N and Go bench/go/dump.go N
#            (built here with `go build`, GO111MODULE=off, into a temp dir,
#            GOCACHE under BUILD_DIR/bench-go as run.sh does) each park N
#            coroutines 4 calls deep on 4 paths (chan receive, chan send,
#            select, mutex), print "ready", and sleep. This script reads
#            the process's VmRSS, sends SIGQUIT and times from just before
#            kill(2) to the moment `wait` returns (bash's EPOCHREALTIME, in
#            microseconds; no fork in between). Both use every CPU (no
#            GOMAXPROCS/WEFTMAXPROCS). Each run must exit with status 2;
#            with stderr to a file ("out=file", the issue's figure) the
#            file must hold >= N "goroutine <id> [" headers. With stderr
#            to /dev/null ("out=null": the dump without file I/O) only the
#            status can be checked, so when out=file ran too, that figure
#            is printed only for an implementation whose out=file runs
#            all passed.
#   repeat   BUILD_DIR/bench/bench_dump --twice N: two weft_dump(fd,
#            WEFT_DUMP_ALL) calls from a coroutine into temp files, each
#            timed; the program checks both dumps itself.
#
# Output: a benchstat header, then one line per run, e.g.
#   BenchmarkDumpSIGQUIT/impl=go/out=file/n=100000  1  16700000000 ns/op
#       167000 ns/coro  277000000 rss-B  106000000 dump-B
#   BenchmarkDumpFirst/impl=weft/n=100000  1  ... ns/op ...   (repeat)
# then, from the medians over DUMP_RUNS runs (default 3) per side,
#   RATIO dump_sigquit_file weft/go=<x>     target <= 1 (lower is better)
#   RATIO dump_sigquit_null weft/go=<x>     no target
#   RATIO dump_repeat first/second=<x>      target >= 5 (median of runs)
# each with a "# target ...: met|MISSED" line where there is a target.
# Runs alternate weft and Go so that drift in the machine hits both.
#
# Failures: a missing binary, a program that does not print "ready" within
# DUMP_READY_TIMEOUT s (default 60), a dump that does not end within
# DUMP_TIMEOUT s (default 180; Go 1.19 takes ~17 s for 100,000 to a file
# on a 2-CPU EPYC VM), an exit status other than 2 (e.g. 131: killed by
# SIGQUIT's default action, i.e. no handler) or too few headers print
# "FAIL <figure> (<why>)" with the tail of stderr as "#" lines; no ratio
# is printed for that figure, that side's remaining runs of it are
# skipped, the rest still runs, and the script exits 1.
#
# Environment: DUMP_N (default 100000), DUMP_RUNS (default 3),
# DUMP_OUT="file null" (which stderr targets; default both),
# DUMP_ONLY="sigquit" or "repeat" (default both), DUMP_TIMEOUT,
# DUMP_READY_TIMEOUT.
#
# Bounds: every program runs under `timeout`; the EXIT trap kills the one
# running and removes the temp dir. Core dumps are off (ulimit -c 0): a
# process killed by SIGQUIT's default action would otherwise write one.
#
# Rejected: timing with `date +%s%N` around the kill (a fork on each side
# of the interval); polling for the exit (adds its period); timing inside
# the process (the figure is what a user waits for: signal to exit).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build-release}
if [[ ! -d $build ]]; then
    echo "dump.sh: no build directory $build (meson setup $build -Dbuildtype=release)" >&2
    exit 2
fi
build=$(cd "$build" && pwd)
n=${DUMP_N:-100000}
runs=${DUMP_RUNS:-3}
outs=${DUMP_OUT:-file null}
only=${DUMP_ONLY:-}
dump_limit=${DUMP_TIMEOUT:-180}
ready_limit=${DUMP_READY_TIMEOUT:-60}
for v in N:n RUNS:runs TIMEOUT:dump_limit READY_TIMEOUT:ready_limit; do
    var=${v#*:}
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "dump.sh: DUMP_${v%%:*} must be a positive whole number" >&2
        exit 2
    fi
done
for o in $outs; do
    if [[ $o != file && $o != null ]]; then
        echo "dump.sh: DUMP_OUT holds file and/or null, not $o" >&2
        exit 2
    fi
done
if [[ -z ${EPOCHREALTIME:-} ]]; then
    echo "dump.sh: needs bash >= 5 (EPOCHREALTIME)" >&2
    exit 2
fi
for tool in timeout pgrep go; do
    if ! command -v "$tool" >/dev/null; then
        echo "dump.sh: $tool is missing (scripts/deps.sh)" >&2
        exit 2
    fi
done

go_dir=$build/bench-go
weft_bin=$build/bench/bench_dump
failed=0
tmp=$(mktemp -d)

# The program running now: its timeout's pid and its own, for the trap.
tpid='' spid=''

# cleanup - kill the program still running (no job notices: disowned
# first), remove $tmp.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    disown -a 2>/dev/null || true
    if [[ -n $spid ]]; then kill -KILL "$spid" 2>/dev/null || true; fi
    if [[ -n $tpid ]]; then kill -KILL "$tpid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

ulimit -c 0

# A reproducible Go environment: no modules, no network, caches under
# BUILD_DIR. No environment that changes what either dump prints.
export GO111MODULE=off GOFLAGS='' GOPROXY=off
export GOCACHE=$go_dir/cache GOPATH=$go_dir/gopath
unset GOGC GODEBUG GOMEMLIMIT GOTRACEBACK GOMAXPROCS
unset WEFTDEBUG WEFTTRACEBACK WEFTMAXPROCS

# wanted PART - whether DUMP_ONLY (if set) names PART.
wanted() {
    [[ -z $only || " ${only//,/ } " == *" $1 "* ]]
}

# fail_line FIGURE WHY [ERRFILE...] - print a FAIL line and stderr tails.
fail_line() {
    local figure=$1 reason=$2 f
    shift 2
    echo "FAIL $figure ($reason)"
    for f in "$@"; do
        if [[ -s $f ]]; then tail -n 6 "$f" | cut -c1-200 | sed 's/^/#   /'; fi
    done
    failed=1
}

# median V... - the middle value (the lower middle for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# ---------------------------------------------------------------- build

mkdir -p "$GOCACHE" "$GOPATH"
go_bin=''
if go build -o "$tmp/dump-go" "$here/go/dump.go" 2>"$tmp/go-build.err"; then
    go_bin=$tmp/dump-go
fi
weft_why=''
if [[ ! -x $weft_bin ]]; then
    weft_why="weft: $weft_bin is missing: ninja -C $build bench/bench_dump"
elif [[ $here/bench_dump.c -nt $weft_bin ]]; then
    echo "# note: $weft_bin is older than bench/bench_dump.c (ninja -C $build)"
fi

# ---------------------------------------------------------------- header

echo "goos: linux"
echo "goarch: $(go env GOARCH)"
echo "pkg: weft/bench/dump"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo || true)
[[ -n $cpu ]] && echo "cpu: $cpu"
echo "go: $(go env GOVERSION)"
echo "nproc: $(nproc)"
echo "# $n parked coroutines per process; $runs runs per side; stderr to: $outs"
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "# note: load average $load1 before the run; figures may be noisy"
fi

# ---------------------------------------------------------------- sigquit

# run_quit IMPL OUT - one SIGQUIT measurement of IMPL (weft or go) with
# stderr to a file (OUT=file) or /dev/null. Prints the benchstat line and
# sets $ns and $rss; on failure sets $ns to "" and $why, and leaves
# stderr in $tmp/err.
ns='' rss='' why=''
run_quit() {
    local impl=$1 out=$2 bin errf deadline rc=0 t0 t1 heads='' bytes='' sig
    ns='' rss='' why='' spid=''
    if [[ $impl == weft ]]; then bin=$weft_bin; else bin=$go_bin; fi
    errf=/dev/null
    [[ $out == file ]] && errf=$tmp/dump.err
    : >"$tmp/err"
    rm -f "$tmp/dump.err"
    : >"$tmp/out"
    timeout -k 5 $((ready_limit + dump_limit)) "$bin" "$n" \
        >"$tmp/out" 2>"$errf" &
    tpid=$!
    deadline=$((SECONDS + ready_limit))
    while :; do
        [[ -z $spid ]] && spid=$(pgrep -P "$tpid" | head -n1 || true)
        if [[ -n $spid ]] && grep -qx ready "$tmp/out"; then break; fi
        if ! kill -0 "$tpid" 2>/dev/null; then
            wait "$tpid" 2>/dev/null || rc=$?
            why="$impl: exited with status $rc before \"ready\""
            break
        fi
        if ((SECONDS >= deadline)); then
            why="$impl: no \"ready\" within ${ready_limit}s"
            break
        fi
        sleep 0.02
    done
    if [[ -n $why ]]; then
        [[ $errf != /dev/null ]] && cp "$errf" "$tmp/err"
        if [[ -n $spid ]]; then kill -KILL "$spid" 2>/dev/null || true; fi
        kill -KILL "$tpid" 2>/dev/null || true
        wait "$tpid" 2>/dev/null || true
        tpid='' spid=''
        return 0
    fi
    rss=$(awk '/^VmRSS:/ { print $2 * 1024; exit }' "/proc/$spid/status" 2>/dev/null || true)

    # No fork between the two clock reads. bash's report of a job killed
    # by a signal ("Quit ...") is dropped: the FAIL line says it.
    t0=$EPOCHREALTIME
    kill -QUIT "$spid"
    { wait "$tpid" || rc=$?; } 2>/dev/null
    t1=$EPOCHREALTIME
    tpid='' spid=''

    if [[ $out == file ]]; then
        heads=$(grep -c '^goroutine [0-9][0-9]* \[' "$tmp/dump.err" || true)
        bytes=$(stat -c %s "$tmp/dump.err")
        # Keep the head and the tail for a FAIL line, not 100 MB.
        if [[ -s $tmp/dump.err ]]; then
            { head -n 3 "$tmp/dump.err"; echo ...; tail -n 3 "$tmp/dump.err"; } >"$tmp/err"
        else
            echo "(stderr was empty)" >"$tmp/err"
        fi
    fi
    if ((rc == 124 || rc == 137)); then
        why="$impl: the dump did not end within ${dump_limit}s of SIGQUIT (killed)"
    elif ((rc > 128)); then
        sig=$(kill -l $((rc - 128)) 2>/dev/null || echo "?")
        why="$impl: killed by signal $((rc - 128)) (SIG$sig), exit status $rc; want 2"
        [[ $sig == QUIT ]] && why+=": SIGQUIT's default action, no handler"
    elif ((rc != 2)); then
        why="$impl: exit status $rc; want 2"
    elif [[ $out == file ]] && ((heads < n)); then
        why="$impl: $heads \"goroutine N [\" headers in the dump; want >= $n"
    fi
    if [[ -n $why ]]; then
        [[ -n $rss ]] && why+="; RSS before SIGQUIT $((rss / 1048576)) MiB"
        return 0
    fi
    if [[ $out == file && $(head -n1 "$tmp/dump.err") != "SIGQUIT: quit" ]]; then
        echo "# note: $impl: the dump does not start with \"SIGQUIT: quit\""
    fi

    ns=$(((${t1//[.,]/} - ${t0//[.,]/}) * 1000))
    printf 'BenchmarkDumpSIGQUIT/impl=%s/out=%s/n=%s\t1\t%s ns/op\t%s ns/coro\t%s rss-B' \
        "$impl" "$out" "$n" "$ns" "$(awk -v t="$ns" -v n="$n" 'BEGIN { printf "%.0f", t / n }')" \
        "${rss:-0}"
    [[ $out == file ]] && printf '\t%s dump-B' "$bytes"
    printf '\n'
}

# Results: medians by "impl/out", and whether every out=file run passed.
declare -A med=() rssmed=() filepass=()

# ratio FIGURE W G MAX - "RATIO FIGURE weft/go=W/G" and, with MAX, its
# target line (x <= MAX). Nothing when either value is missing.
ratio() {
    local figure=$1 w=$2 g=$3 max=$4
    [[ -n $w && -n $g ]] || return 0
    awk -v f="$figure" -v w="$w" -v g="$g" -v max="$max" 'BEGIN {
        x = w / g
        printf "RATIO %s weft/go=%.3f\n", f, x
        if (max != "")
            printf "# target %s weft/go <= %s: %s (%.4f)\n", f, max,
                (x <= max) ? "met" : "MISSED", x
    }'
}

if wanted sigquit; then
    for out in $outs; do
        figure=dump_sigquit_$out
        declare -A vals=() rv=() dead=()
        for impl in weft go; do vals[$impl]='' rv[$impl]='' dead[$impl]=''; done
        # out=null checks the exit status only: trust it for an
        # implementation whose out=file dumps were all complete.
        for impl in weft go; do
            if [[ $out == null && " $outs " == *" file "* && -z ${filepass[$impl]:-} ]]; then
                echo "# $figure: $impl skipped (its out=file runs failed)"
                dead[$impl]=1
            fi
        done
        [[ -z $weft_why ]] || { fail_line "$figure" "$weft_why"; dead[weft]=1; }
        [[ -n $go_bin ]] || { fail_line "$figure" "go: go build bench/go/dump.go failed" "$tmp/go-build.err"; dead[go]=1; }
        for ((i = 0; i < runs; i++)); do
            for impl in weft go; do
                [[ -z ${dead[$impl]} ]] || continue
                run_quit "$impl" "$out"
                if [[ -z $ns ]]; then
                    fail_line "$figure" "$why" "$tmp/err"
                    dead[$impl]=1
                    continue
                fi
                vals[$impl]+=" $ns"
                rv[$impl]+=" ${rss:-0}"
            done
        done
        for impl in weft go; do
            if [[ -z ${dead[$impl]} && -n ${vals[$impl]} ]]; then
                # shellcheck disable=SC2086 # lists of numbers
                med[$impl/$out]=$(median ${vals[$impl]})
                # shellcheck disable=SC2086
                rssmed[$impl]=$(median ${rv[$impl]})
                [[ $out == file ]] && filepass[$impl]=1
            fi
        done
        w=${med[weft/$out]:-} g=${med[go/$out]:-}
        awk -v f="$figure" -v w="$w" -v g="$g" -v n="$n" 'BEGIN {
            s = f " median:"
            if (w != "") s = s sprintf(" weft=%.1fms (%.0f ns/coro)", w / 1e6, w / n)
            if (g != "") s = s sprintf(" go=%.1fms (%.0f ns/goroutine)", g / 1e6, g / n)
            print "# " s
        }'
        if [[ $out == file ]]; then
            ratio "$figure" "$w" "$g" 1
        else
            ratio "$figure" "$w" "$g" ""
        fi
        unset vals rv dead
    done
    if [[ -n ${rssmed[weft]:-} || -n ${rssmed[go]:-} ]]; then
        awk -v w="${rssmed[weft]:-}" -v g="${rssmed[go]:-}" 'BEGIN {
            s = "# RSS before the dump (median):"
            if (w != "") s = s sprintf(" weft=%.1f MiB", w / 1048576)
            if (g != "") s = s sprintf(" go=%.1f MiB", g / 1048576)
            print s
        }'
    fi
fi

# ---------------------------------------------------------------- repeat

if wanted repeat; then
    figure=dump_repeat
    if [[ -n $weft_why ]]; then
        fail_line "$figure" "$weft_why"
    else
        ratios=() rfail=0
        for ((i = 0; i < runs; i++)); do
            rc=0
            TMPDIR=$tmp timeout -k 5 $((ready_limit + 2 * dump_limit)) \
                "$weft_bin" --twice "$n" >"$tmp/out" 2>"$tmp/err" &
            tpid=$!
            wait "$tpid" || rc=$?
            tpid=''
            grep '^Benchmark' "$tmp/out" || true
            line=$(grep -m1 '^dump_twice ' "$tmp/out" || true)
            if ((rc == 124 || rc == 137)); then
                fail_line "$figure" "weft: bench_dump --twice timed out" "$tmp/err"
                rfail=1
                break
            elif ((rc != 0)) || [[ -z $line ]]; then
                [[ -n $line ]] && echo "# $line"
                fail_line "$figure" "weft: bench_dump --twice: exit status $rc" "$tmp/err"
                rfail=1
                break
            fi
            echo "# $line"
            first=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^first_ns=/) print substr($i, 10) }' <<<"$line")
            second=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^second_ns=/) print substr($i, 11) }' <<<"$line")
            if [[ -z $first || -z $second ]] || ((second <= 0)); then
                fail_line "$figure" "weft: bad dump_twice line: $line"
                rfail=1
                break
            fi
            ratios+=("$(awk -v a="$first" -v b="$second" 'BEGIN { printf "%.4f", a / b }')")
        done
        if ((!rfail)); then
            x=$(median "${ratios[@]}")
            awk -v x="$x" 'BEGIN {
                printf "RATIO dump_repeat first/second=%.3f\n", x
                printf "# target dump_repeat first/second >= 5: %s (%.4f)\n",
                    (x >= 5) ? "met" : "MISSED", x
            }'
        fi
    fi
fi

exit "$failed"
