#!/usr/bin/env bash
# bench/run.sh - run weft's scheduler, channel and sync benchmarks against
# their Go peers.
#
# Usage: bash bench/run.sh [BUILD_DIR]     (default build-release)
#
# BUILD_DIR is a meson build directory (buildtype=release) in which
# bench/bench_sched and bench/bench_sync are already built. The Go peers
# (bench/go/bench_sched.go, bench/go/bench_sync.go) are built here with
# plain `go build`, GO111MODULE=off, into BUILD_DIR/bench-go/, with GOCACHE
# and GOPATH under it too, so this works offline and as root on a fresh
# machine. BENCH_ONLY="pingpong mutex ..." runs only the named groups
# (spawn yield parked fanout pingpong chanbuf mutex select2; default all).
#
# Each pair runs weft and Go alternately in separate processes, prints every
# run's benchstat line (impl=weft / impl=go in the name, so
# `benchstat -col /impl` compares them), then one line
#     RATIO <figure> weft/go=<x>
# where x = weft's median / Go's median over 3 runs (BENCH_RUNS=n to
# change; parked: 1 run).
# For chanbuf the figure is items per second, so there higher is better
# and its target is a minimum. Fan-out also prints "fanout_speedup
# weft=<t1/t2> go=<t1/t2>". "# target" comment lines say whether each
# figure meets the issue's target.
#
# A run that crashes, hangs (timeout), prints no benchmark line or reports a
# wrong result makes its figure print "FAIL <figure> (...)" with the tail of
# its stderr as "#" lines; the rest still runs, and the script exits 1. So
# does a missing benchmark binary.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=${1:-build-release}
if [[ ! -d $build ]]; then
    echo "run.sh: no build directory $build (meson setup $build -Dbuildtype=release)" >&2
    exit 2
fi
build=$(cd "$build" && pwd)
go_dir=$build/bench-go
sched_weft=$build/bench/bench_sched
sched_go=$go_dir/bench_sched
sync_weft=$build/bench/bench_sync
sync_go=$go_dir/bench_sync
only=${BENCH_ONLY:-}
only=" ${only//,/ } "
runs=${BENCH_RUNS:-3} # runs per side where cheap; parked always runs once
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A reproducible Go environment: no modules, no network, caches under BUILD_DIR.
export GO111MODULE=off GOFLAGS='' GOPROXY=off
export GOCACHE=$go_dir/cache GOPATH=$go_dir/gopath
unset GOGC GODEBUG GOMEMLIMIT WEFTDEBUG GOMAXPROCS WEFTMAXPROCS

# wanted GROUP - whether BENCH_ONLY (if set) names GROUP.
wanted() {
    [[ -z ${BENCH_ONLY:-} || $only == *" $1 "* ]]
}

if { wanted spawn || wanted yield || wanted parked || wanted fanout; } &&
    [[ ! -x $sched_weft ]]; then
    echo "run.sh: $sched_weft is missing: ninja -C $build bench/bench_sched" >&2
    exit 2
fi
mkdir -p "$go_dir" "$GOCACHE" "$GOPATH"
for prog in bench_sched bench_sync; do
    if ! go build -o "$go_dir/$prog" "$here/go/$prog.go"; then
        echo "run.sh: go build of bench/go/$prog.go failed" >&2
        exit 2
    fi
done

# Header lines benchstat reads as configuration.
echo "goos: linux"
echo "goarch: $(go env GOARCH)"
echo "pkg: weft/bench"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo || true)
[[ -n $cpu ]] && echo "cpu: $cpu"
echo "go: $(go env GOVERSION)"
echo "nproc: $(nproc)"
# Other work on the machine skews every figure (2-P runs most): say so.
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "# note: load average $load1 before the run; figures may be noisy"
fi

# run_once SIDE PROCS BENCH TIMEOUT - run one benchmark process. Prints its
# benchstat line and stores its figure (3rd field) in $value; on failure
# sets $value to "" and $why to the reason, keeping stderr in $tmp/err.
value=
why=
run_once() {
    local side=$1 procs=$2 bench=$3 limit=$4 rc=0 line weft_bin go_bin
    local -a cmd
    case $bench in
    pingpong | chanbuf | mutex | select2)
        weft_bin=$sync_weft go_bin=$sync_go ;;
    *)
        weft_bin=$sched_weft go_bin=$sched_go ;;
    esac
    if [[ $side == weft ]]; then
        cmd=(env WEFTMAXPROCS="$procs" "$weft_bin" "$bench")
    else
        cmd=(env GOMAXPROCS="$procs" "$go_bin" "$bench")
    fi
    value=
    why=
    timeout -k 5 "$limit" "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" || rc=$?
    line=$(grep -m1 '^Benchmark' "$tmp/out" || true)
    [[ -n $line ]] && echo "$line"
    if ((rc == 124 || rc == 137)); then
        why="$side: timed out after ${limit}s: ${cmd[*]}"
    elif ((rc > 128)); then
        why="$side: killed by signal $((rc - 128)): ${cmd[*]}"
    elif ((rc != 0)); then
        why="$side: exit status $rc: ${cmd[*]}"
    elif [[ -z $line ]]; then
        why="$side: no benchmark line: ${cmd[*]}"
    else
        value=$(awk '{ print $3 }' <<<"$line")
    fi
    return 0
}

# report_fail FIGURE - print the FAIL line for FIGURE with $why and stderr.
report_fail() {
    echo "FAIL $1 ($why)"
    tail -n 8 "$tmp/err" | sed 's/^/#   /'
    failed=1
}

# median V... - the median of the values (the middle one, n odd).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

# measure FIGURE PROCS BENCH N TIMEOUT - run BENCH N times per side,
# alternating weft and Go; set $weft_med and $go_med (empty on failure).
weft_med=
go_med=
measure() {
    local figure=$1 procs=$2 bench=$3 n=$4 limit=$5 i side
    local -a wv=() gv=()
    local wfail=0 gfail=0
    for ((i = 0; i < n; i++)); do
        for side in weft go; do
            if [[ $side == weft ]] && ((wfail)); then continue; fi
            if [[ $side == go ]] && ((gfail)); then continue; fi
            run_once "$side" "$procs" "$bench" "$limit"
            if [[ -z $value ]]; then
                report_fail "$figure"
                if [[ $side == weft ]]; then wfail=1; else gfail=1; fi
            elif [[ $side == weft ]]; then
                wv+=("$value")
            else
                gv+=("$value")
            fi
        done
    done
    weft_med=
    go_med=
    if ((!wfail)); then weft_med=$(median "${wv[@]}"); fi
    if ((!gfail)); then go_med=$(median "${gv[@]}"); fi
}

# ratio FIGURE MAX [MIN] - print "RATIO FIGURE weft/go=x" from the
# medians, if both exist, and a comment saying whether x meets the issue's
# target: x <= MAX, or with MAX empty, x >= MIN (a figure where higher is
# better); neither: no target line.
ratio() {
    if [[ -n $weft_med && -n $go_med ]]; then
        awk -v f="$1" -v max="$2" -v min="${3:-}" -v w="$weft_med" \
            -v g="$go_med" 'BEGIN {
            x = w / g
            printf "RATIO %s weft/go=%.3f\n", f, x
            if (max != "")
                printf "# target %s weft/go <= %s: %s (%.4f)\n", f, max,
                    (x <= max) ? "met" : "MISSED", x
            else if (min != "")
                printf "# target %s weft/go >= %s: %s (%.4f)\n", f, min,
                    (x >= min) ? "met" : "MISSED", x
        }'
    fi
}

# have_sync FIGURE... - whether bench_sync is built; if not, FAIL each.
have_sync() {
    [[ -x $sync_weft ]] && return 0
    for f in "$@"; do
        echo "FAIL $f (weft: $sync_weft is missing: ninja -C $build bench/bench_sync)"
    done
    failed=1
    return 1
}

if wanted spawn; then
    for procs in 1 2; do
        measure "spawn_p${procs}_ns" "$procs" spawn "$runs" 120
        ratio "spawn_p${procs}_ns" 0.5
    done
fi

if wanted yield; then
    for procs in 1 2; do
        measure "yield_p${procs}_ns" "$procs" yield "$runs" 120
        ratio "yield_p${procs}_ns" 0.3
    done
fi

if wanted parked; then
    measure parked_rss_bytes 2 parked 1 300
    ratio parked_rss_bytes 1.6
fi

if wanted fanout; then
    measure fanout_p1_ns 1 fanout "$runs" 120
    w1=$weft_med g1=$go_med
    measure fanout_p2_ns 2 fanout "$runs" 120
    w2=$weft_med g2=$go_med
    if [[ -n $w1 && -n $w2 && -n $g1 && -n $g2 ]]; then
        awk -v w1="$w1" -v w2="$w2" -v g1="$g1" -v g2="$g2" 'BEGIN {
            ws = w1 / w2; gs = g1 / g2
            printf "fanout_speedup weft=%.2f go=%.2f\n", ws, gs
            printf "RATIO fanout_speedup weft/go=%.3f\n", ws / gs
            printf "# target fanout_speedup weft >= 1.9: %s (%.3f)\n",
                (ws >= 1.9) ? "met" : "MISSED", ws
        }'
    else
        echo "FAIL fanout_speedup (a fan-out time is missing, see above)"
        failed=1
    fi
fi

if wanted pingpong && have_sync pingpong_p1_ns pingpong_p2_ns; then
    for procs in 1 2; do
        measure "pingpong_p${procs}_ns" "$procs" pingpong "$runs" 120
        ratio "pingpong_p${procs}_ns" 0.5
    done
fi

# Items per second: higher is better, the target is a minimum (at 2 Ps).
if wanted chanbuf && have_sync chanbuf_p1_ops chanbuf_p2_ops; then
    measure chanbuf_p1_ops 1 chanbuf "$runs" 120
    ratio chanbuf_p1_ops ""
    measure chanbuf_p2_ops 2 chanbuf "$runs" 120
    ratio chanbuf_p2_ops "" 2
fi

if wanted mutex && have_sync mutex_p2_ns; then
    measure mutex_p2_ns 2 mutex "$runs" 120
    ratio mutex_p2_ns 0.8
fi

# One coroutine, nothing parks: the number of Ps does not matter; 2 as
# the machine-default case.
if wanted select2 && have_sync select2_ns; then
    measure select2_ns 2 select2 "$runs" 120
    ratio select2_ns 0.6
fi

exit "$failed"
