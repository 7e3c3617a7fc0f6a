#!/usr/bin/env bash
# bench/profiling.sh - what profiling costs: the CPU profiler under an HTTP
# load, block and mutex profiling on the channel and mutex benchmarks, and
# the contention-hook checks on the wait paths when no profile is on.
#
# Usage: bash bench/profiling.sh [BUILD_DIR]     (default build-release)
#
# BUILD_DIR is a meson build directory (buildtype=release) with
# examples/httpd and bench/bench_sync built. Four parts (PROF_ONLY="cpu
# leak block hook" runs only the named ones):
#
#   cpu    examples/httpd --procs 1 --debug-addr 127.0.0.1:0 on CPU 0,
#          under `wrk -t1 -c50 -d PROF_SECS -s bench/net/sendjson.lua`
#          on CPU 1 (as bench/net.sh runs it), one server for all runs,
#          warmed up for 1 s. Runs alternate (off on, on off, ...) between
#          no profile and a CPU profile at 100 Hz running for the whole
#          wrk run: curl fetches /debug/pprof/profile?seconds=PROF_SECS+1
#          from the server's own debug server, started 0.3 s before wrk
#          (both modes wait those 0.3 s). The profile must come back as
#          HTTP 200, gzip, with samples (counted by `go tool pprof -raw`
#          when go is there). Figures: req/s, and the server's CPU per
#          request (utime+stime around the wrk run).
#          Target: the profile costs <= 2% of throughput (on/off >= 0.98).
#   leak   the same httpd and wrk, a fresh server per run, started with
#          WEFTDEBUG=leakcheck=1 (the leak monitor sampling every second)
#          or without, alternating; each run warmed up 1 s. Figures:
#          req/s, CPU per request, and the monitor thread's own CPU time
#          against the server's (a "# monitor thread" note per run).
#          Target: the monitor costs <= 1% (on/off >= 0.99 req/s, <= 1.01
#          CPU per request).
#   block  bench/bench_sync pingpong (1 and 2 Ps), chanbuf (1 and 2 Ps),
#          mutex (2 Ps) and select2 (2 Ps), without and with
#          BENCH_PROFILE=1 (block profile rate 1, mutex profile fraction
#          1: every event recorded). Target: <= 10% (on/off <= 1.10, as
#          time per operation; for chanbuf, off's items/s over on's).
#          Go's bench/go/bench_sync.go with the same opt-in runs beside it
#          for context (PROF_GO_ROUNDS pairs, no target).
#   hook   the same benchmarks without profiles, this build against one
#          where the contention-hook checks are compiled out
#          (-DWEFT_NO_CONTENTION_HOOK=1, sched/runtime.h), in
#          NOHOOK_BUILD_DIR (default BUILD_DIR-nohook; set up and built
#          here when missing, bench_sync only). Target: the checks cost
#          <= 1% (hooks/nohook <= 1.01 in time per operation). select2
#          never parks, so it reaches no check: its ratio is the noise.
#          Then `perf stat -e instructions:u,task-clock` per operation of
#          each side (pingpong, chanbuf, select2 at 1 P, mutex at 2):
#          instructions, which other work on the machine does not
#          disturb, and CPU time, which leaves out time other processes
#          held the CPU (RATIO lines without a target; skipped with a
#          note when perf cannot count).
#
# Runs: sync figures take PROF_ROUNDS rounds (default 5), each running
# the no-hook build, this build, and (in the first PROF_ON_ROUNDS rounds,
# default 3: a profiled pingpong takes seconds) this build with
# BENCH_PROFILE=1, in that order, so that drift in the machine hits all
# sides. httpd takes PROF_HTTP_ROUNDS pairs (default 3) of PROF_SECS
# seconds (default 5). With the defaults the script takes about 4 minutes.
#
# Output: a benchstat header, a benchstat line per run (variant in the
# name: /profile=on, /build=nohook), then per figure
#     # <figure> <side>: median <m> <unit>, min <a> max <b>, n=<k>
#     RATIO <figure> on/off=<x>       (or hooks/nohook=<x>)
#     # target <figure> on/off <= <t>: met|MISSED (x)
# x is always the cost factor: time per operation (or CPU per request)
# with over without, except httpd req/s, where it is on over off and the
# target is a minimum.
#
# Failures: a missing binary, a run that crashes, times out or prints no
# benchmark line, a profile run whose profiles recorded nothing (pingpong
# must record a block event), a no-hook build that still records, a CPU
# profile that is not a non-empty gzip with samples, a wrk run with errors:
# "FAIL <figure> (<why>)" with the tail of stderr as "#" lines; the rest
# still runs, and the script exits 1.
#
# Environment: PROF_ONLY, PROF_ROUNDS, PROF_ON_ROUNDS, PROF_GO_ROUNDS,
# PROF_HTTP_ROUNDS, PROF_SECS, NOHOOK_BUILD_DIR (above); NET_SERVER_CPU /
# NET_CLIENT_CPU (default 0 / 1), as bench/net.sh.
#
# Under that load the httpd server is not saturated (wrk on one CPU is the
# bottleneck), so req/s hardly moves whatever the server spends: CPU per
# request is the figure that shows the profiler's cost.
#
# Rejected: timing assertions in the test suites (a loaded machine fails
# them at random); a separate baseline without the debug server for
# httpd (the debug server is idle but for the profile, and both modes must
# run the same binary with the same flags).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
src=$(cd "$here/.." && pwd)
build=${1:-build-release}
if [[ ! -d $build ]]; then
    echo "profiling.sh: no build directory $build (meson setup $build -Dbuildtype=release)" >&2
    exit 2
fi
build=$(cd "$build" && pwd)
nohook=${NOHOOK_BUILD_DIR:-$build-nohook}
rounds=${PROF_ROUNDS:-5}
on_rounds=${PROF_ON_ROUNDS:-3}
go_rounds=${PROF_GO_ROUNDS:-1}
http_rounds=${PROF_HTTP_ROUNDS:-3}
secs=${PROF_SECS:-5}
scpu=${NET_SERVER_CPU:-0}
ccpu=${NET_CLIENT_CPU:-1}
only=" ${PROF_ONLY:-cpu leak block hook} "
only=${only//,/ }
for v in rounds on_rounds go_rounds http_rounds secs; do
    if ! [[ ${!v} =~ ^[0-9]+$ ]] || ((${!v} > 1000)); then
        echo "profiling.sh: $v must be a whole number" >&2
        exit 2
    fi
done
if ((rounds < 1 || secs < 1 || http_rounds < 1)); then
    echo "profiling.sh: PROF_ROUNDS, PROF_SECS and PROF_HTTP_ROUNDS must be >= 1" >&2
    exit 2
fi
sync_bin=$build/bench/bench_sync
nohook_bin=$nohook/bench/bench_sync
httpd=$build/examples/httpd
go_dir=$build/bench-go
go_sync=
failed=0
tmp=$(mktemp -d)

# The server and the profile fetch running now, for the trap.
srv_t='' srv_pid='' curl_pid=''

# cleanup - kill what is still running (no job notices), remove $tmp.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    disown -a 2>/dev/null || true
    if [[ -n $curl_pid ]]; then kill -KILL "$curl_pid" 2>/dev/null || true; fi
    if [[ -n $srv_pid ]]; then kill -KILL "$srv_pid" 2>/dev/null || true; fi
    if [[ -n $srv_t ]]; then kill -KILL "$srv_t" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A reproducible Go environment, as bench/run.sh sets it.
export GO111MODULE=off GOFLAGS='' GOPROXY=off
export GOCACHE=$go_dir/cache GOPATH=$go_dir/gopath
unset GOGC GODEBUG GOMEMLIMIT WEFTDEBUG GOMAXPROCS WEFTMAXPROCS BENCH_PROFILE

# wanted PART - whether PROF_ONLY names PART.
wanted() {
    [[ $only == *" $1 "* ]]
}

# fail_line FIGURE WHY [ERRFILE...] - print a FAIL line and stderr tails.
fail_line() {
    local figure=$1 reason=$2 f
    shift 2
    echo "FAIL $figure ($reason)"
    for f in "$@"; do
        if [[ -s $f ]]; then tail -n 6 "$f" | sed 's/^/#   /'; fi
    done
    failed=1
}

# stats NAME UNIT V... - print "# NAME: median M UNIT, min A max B, n=K"
# and set $med to the median (the middle value; the mean of the two
# middle ones when K is even).
med=
stats() {
    local name=$1 unit=$2
    shift 2
    med=$(printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        print m }')
    printf '%s\n' "$@" | sort -g | awk -v n="$name" -v u="$unit" -v m="$med" \
        '{ v[NR] = $1 } END {
        printf "# %s: median %.6g %s, min %.6g max %.6g (spread %.1f%%), n=%d\n",
            n, m, u, v[1], v[NR], (m > 0) ? 100 * (v[NR] - v[1]) / m : 0, NR }'
}

# ratio FIGURE LABEL X MAX MIN - "RATIO FIGURE LABEL=X" and its target
# line: X <= MAX, or with MAX empty, X >= MIN; no target when both are
# empty.
ratio() {
    awk -v f="$1" -v l="$2" -v x="$3" -v max="$4" -v min="$5" 'BEGIN {
        printf "RATIO %s %s=%.4f\n", f, l, x
        if (max != "")
            printf "# target %s %s <= %s: %s (%.4f)\n", f, l, max,
                (x <= max) ? "met" : "MISSED", x
        else if (min != "")
            printf "# target %s %s >= %s: %s (%.4f)\n", f, l, min,
                (x >= min) ? "met" : "MISSED", x
    }'
}

# div A B - A / B with 4 decimals.
div() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b != 0) ? a / b : 0 }'
}

# medratio FIGURE LABEL UNIT NAME_A NAME_B MAX MIN A... -- B... - the
# medians of A and of B (a stats line each) and RATIO FIGURE LABEL=A/B
# with its target; the medians stay in $med_a and $med_b.
medratio() {
    local fig=$1 label=$2 unit=$3 na=$4 nb=$5 max=$6 min=$7 a=()
    shift 7
    while (($#)) && [[ $1 != -- ]]; do
        a+=("$1")
        shift
    done
    shift
    stats "$na" "$unit" "${a[@]}"
    med_a=$med
    stats "$nb" "$unit" "$@"
    med_b=$med
    ratio "$fig" "$label" "$(div "$med_a" "$med_b")" "$max" "$min"
}

# ---------------------------------------------------------------- header

echo "goos: linux"
echo "goarch: $(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/')"
echo "pkg: weft/bench/profiling"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo || true)
[[ -n $cpu ]] && echo "cpu: $cpu"
echo "nproc: $(nproc)"
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "# note: load average $load1 before the run; time figures may be noisy (instructions and CPU per request less so)"
fi

# ---------------------------------------------------------------- httpd

# start_httpd [ENV...] - start examples/httpd on CPU $scpu, with ENV
# (NAME=value words) set, and a debug server on a port of its own
# choosing; set $srv_t (timeout's pid), $srv_pid, $hport and $dport from
# its first two lines. Returns 1 with $why set.
hport='' dport=''
start_httpd() {
    local i limit=$((http_rounds * 2 * (secs + 8) + 60))
    timeout -k 2 "$limit" taskset -c "$scpu" env WEFTMAXPROCS=1 "$@" "$httpd" \
        --procs 1 --port 0 --debug-addr 127.0.0.1:0 \
        >"$tmp/srv.out" 2>"$tmp/srv.err" &
    srv_t=$!
    srv_pid='' hport='' dport=''
    for ((i = 0; i < 200; i++)); do
        [[ -z $srv_pid ]] && srv_pid=$(pgrep -P "$srv_t" | head -n1 || true)
        hport=$(sed -n 's/^httpd: listening on :\([0-9]*\) .*/\1/p' "$tmp/srv.out")
        dport=$(sed -n 's/^httpd: debug server on port \([0-9]*\) .*/\1/p' "$tmp/srv.out")
        if [[ -n $srv_pid && -n $hport && -n $dport ]]; then
            return 0
        fi
        if ! kill -0 "$srv_t" 2>/dev/null; then
            why="httpd exited at start"
            return 1
        fi
        sleep 0.05
    done
    why="httpd printed no listening and debug server lines within 10 s"
    return 1
}

# stop_httpd - TERM the server, then KILL what is left.
stop_httpd() {
    stop_tree "$srv_t" "$srv_pid"
    srv_t='' srv_pid=''
}

# count_samples FILE - the samples in a CPU profile (go tool pprof -raw);
# "" without go.
count_samples() {
    command -v go >/dev/null || return 0
    go tool pprof -raw "$1" 2>/dev/null | awk '/^Samples:/ { s = 1; next }
        /^Locations/ { s = 0 } s && /^ *[0-9]+ +[0-9]+:/ { n += $1 }
        END { print n + 0 }'
}

# leak_thread_note - "# monitor thread: ..." with the weft-leakcheck
# thread's CPU time against the whole server's (schedstat, ns), a figure
# the machine's noise does not blur; "" when it cannot be read.
leak_thread_note() {
    local t ns mon=0 all=0
    for t in /proc/"$srv_pid"/task/*; do
        ns=$(awk '{ print $1 }' "$t/schedstat" 2>/dev/null) || continue
        all=$((all + ns))
        [[ $(cat "$t/comm" 2>/dev/null) == weft-leakcheck ]] && mon=$((mon + ns))
    done
    ((all > 0)) || return 0
    awk -v m=$mon -v a=$all 'BEGIN {
        printf "# monitor thread: %.1f ms of the server'"'"'s %.0f ms of CPU (%.3f%%)\n",
            m / 1e6, a / 1e6, 100 * m / a }'
}

# http_run PART MODE - one wrk run of PROF_SECS against the server.
# PART cpu: a CPU profile is fetched around it when MODE is on; PART
# leak: the server was started with the leak monitor when MODE is on
# (its thread's CPU is noted). Appends req/s to rps_MODE and CPU us per
# request to cpu_MODE; on failure prints FAIL and sets http_bad.
declare -a rps_on=() rps_off=() cpu_on=() cpu_off=()
http_bad=0
http_run() {
    local part=$1 mode=$2 rc=0 c0 c1 line n r errs non2xx cpu code size magic
    local samples='' note='' fig=httpd_cpuprofile name=HTTPdProfile/impl=weft/cpuprofile
    local prof=0
    if [[ $part == leak ]]; then
        fig=httpd_leakcheck name=HTTPdLeakcheck/impl=weft/leakcheck
    elif [[ $mode == on ]]; then
        prof=1
    fi
    local url="http://127.0.0.1:$hport/sendjson"
    rm -f "$tmp/prof.gz"
    if ((prof)); then
        timeout -k 2 $((secs + 30)) taskset -c "$ccpu" curl -sS \
            -o "$tmp/prof.gz" -w '%{http_code} %{size_download}' \
            "http://127.0.0.1:$dport/debug/pprof/profile?seconds=$((secs + 1))" \
            >"$tmp/curl.out" 2>"$tmp/curl.err" &
        curl_pid=$!
    fi
    sleep 0.3 # the profile has started when wrk does (both modes wait)
    c0=$(cpu_ticks "$srv_pid" 2>/dev/null || true)
    timeout -k 5 $((secs + 30)) taskset -c "$ccpu" wrk -t1 -c50 -d"${secs}s" \
        --latency -s "$here/net/sendjson.lua" "$url" \
        >"$tmp/wrk.out" 2>"$tmp/wrk.err" || rc=$?
    c1=$(cpu_ticks "$srv_pid" 2>/dev/null || true)
    if ((prof)); then
        wait "$curl_pid" || true
        curl_pid=''
    fi
    cat "$tmp/wrk.out" >>"$tmp/wrk.err" # for the FAIL tail
    line=$(grep -m1 '^WRK ' "$tmp/wrk.out" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        fail_line "$fig" "$mode: wrk exit status $rc" "$tmp/wrk.err" "$tmp/srv.err"
        http_bad=1
        return 0
    fi
    errs=$(field errors "$line") non2xx=$(field non2xx "$line")
    n=$(field requests "$line") r=$(field rps "$line")
    if ((errs != 0 || non2xx != 0 || n == 0)); then
        fail_line "$fig" "$mode: wrk: $errs socket errors, $non2xx non-2xx answers, $n requests" \
            "$tmp/wrk.err" "$tmp/srv.err"
        http_bad=1
        return 0
    fi
    cpu=-
    if [[ -n $c0 && -n $c1 ]]; then
        cpu=$(awk -v d=$((c1 - c0)) -v t="$clk_tck" -v n="$n" \
            'BEGIN { printf "%.4f", d / t * 1e6 / n }')
    fi
    if ((prof)); then
        read -r code size <"$tmp/curl.out" || true
        magic=$(head -c2 "$tmp/prof.gz" 2>/dev/null | od -An -tx1 | tr -d ' \n')
        if [[ $code != 200 || $magic != 1f8b ]] || ! gzip -t "$tmp/prof.gz" 2>/dev/null; then
            fail_line "$fig" "on: the profile is not a gzip'd 200 answer (HTTP ${code:-none}, ${size:-0} bytes, magic ${magic:-none})" \
                "$tmp/curl.err" "$tmp/srv.err"
            http_bad=1
            return 0
        fi
        samples=$(count_samples "$tmp/prof.gz")
        if [[ $samples == 0 ]]; then
            fail_line "$fig" "on: the profile has no samples ($size bytes)"
            http_bad=1
            return 0
        fi
        # 100 Hz of the server's CPU time: samples * 10 ms against the
        # CPU it used while wrk ran (the profile runs 0.3 s before, 0.7 s
        # after: more samples than that is fine, far fewer is dropped).
        if [[ -n $samples && -n $c0 && -n $c1 ]]; then
            note=$(awk -v s="$samples" -v d=$((c1 - c0)) -v t="$clk_tck" \
                'BEGIN { printf "%.0f%%", (d > 0) ? 100 * s * 0.01 / (d / t) : 0 }')
            note="# profile: $size bytes, $samples samples (${note} of the server's CPU time under wrk)"
        else
            note="# profile: $size bytes"
        fi
    fi
    if [[ $part == leak && $mode == on ]]; then
        note=$(leak_thread_note)
    fi
    printf 'Benchmark%s=%s\t%s\t%s req/s\t%s us-cpu/req\t%s us-p99\n' \
        "$name" "$mode" "$n" "$r" "$cpu" "$(field p99_us "$line")"
    [[ -n $note ]] && echo "$note"
    if [[ $mode == on ]]; then
        rps_on+=("$r")
        [[ $cpu != - ]] && cpu_on+=("$cpu")
    else
        rps_off+=("$r")
        [[ $cpu != - ]] && cpu_off+=("$cpu")
    fi
    return 0
}

# http_ratios WHAT MINRPS MAXCPU - the medians and RATIO lines of an
# httpd part from rps_on/off and cpu_on/off: req/s on/off >= MINRPS, CPU
# per request on/off <= MAXCPU.
http_ratios() {
    medratio "httpd_$1_rps" on/off req/s "httpd $1=on" "httpd $1=off" \
        "" "$2" "${rps_on[@]}" -- "${rps_off[@]}"
    if ((${#cpu_on[@]} && ${#cpu_off[@]})); then
        medratio "httpd_$1_cpu_per_req" on/off us-cpu/req "httpd $1=on" \
            "httpd $1=off" "$3" "" "${cpu_on[@]}" -- "${cpu_off[@]}"
    fi
}

# httpd_check PART - the tools and CPUs the httpd parts need; 1 with a
# FAIL line printed when something is missing.
httpd_check() {
    local tool missing=''
    for tool in wrk curl taskset timeout pgrep gzip od; do
        command -v "$tool" >/dev/null || missing+=" $tool"
    done
    if [[ -n $missing ]]; then
        fail_line "httpd_$1" "missing:$missing (scripts/deps.sh)"
    elif [[ ! -x $httpd ]]; then
        fail_line "httpd_$1" "$httpd is missing (examples/httpd.c not built)"
    elif ((scpu >= $(nproc) || ccpu >= $(nproc))); then
        fail_line "httpd_$1" "need CPUs $scpu and $ccpu, have $(nproc)"
    else
        return 0
    fi
    return 1
}

if wanted cpu && httpd_check cpuprofile; then
    if ! start_httpd; then
        fail_line httpd_cpuprofile "$why" "$tmp/srv.err"
        stop_httpd
    else
        echo "# httpd: server on CPU $scpu, wrk on CPU $ccpu, ${secs}s per run, $http_rounds pairs"
        # Warm up (connections, caches); the figures are dropped.
        timeout -k 5 30 taskset -c "$ccpu" wrk -t1 -c50 -d1s \
            -s "$here/net/sendjson.lua" "http://127.0.0.1:$hport/sendjson" \
            >/dev/null 2>&1 || true
        # off on, on off, ...: a drift over the rounds hits both modes.
        for ((r = 0; r < http_rounds && !http_bad; r++)); do
            if ((r % 2)); then order="on off"; else order="off on"; fi
            for mode in $order; do
                ((http_bad)) && break
                if ! kill -0 "$srv_pid" 2>/dev/null; then
                    fail_line httpd_cpuprofile "the server died" "$tmp/srv.err"
                    http_bad=1
                    break
                fi
                http_run cpu "$mode"
            done
        done
        stop_httpd
        ((http_bad)) || http_ratios cpuprofile 0.98 1.02
    fi
fi

# The leak monitor at 1 s (WEFTDEBUG=leakcheck=1) against none: a fresh
# server per run, since the monitor starts with the runtime; warmed up
# 1 s each time. Target: <= 1% of throughput (on/off >= 0.99), and CPU
# per request <= 1.01.
if wanted leak && httpd_check leakcheck; then
    rps_on=() rps_off=() cpu_on=() cpu_off=()
    http_bad=0
    echo "# httpd leakcheck: server on CPU $scpu, wrk on CPU $ccpu, ${secs}s per run, $http_rounds pairs"
    for ((r = 0; r < http_rounds && !http_bad; r++)); do
        if ((r % 2)); then order="on off"; else order="off on"; fi
        for mode in $order; do
            ((http_bad)) && break
            envs=()
            [[ $mode == on ]] && envs=(WEFTDEBUG=leakcheck=1)
            if ! start_httpd "${envs[@]}"; then
                fail_line httpd_leakcheck "$why" "$tmp/srv.err"
                stop_httpd
                http_bad=1
                break
            fi
            timeout -k 5 30 taskset -c "$ccpu" wrk -t1 -c50 -d1s \
                -s "$here/net/sendjson.lua" "http://127.0.0.1:$hport/sendjson" \
                >/dev/null 2>&1 || true
            http_run leak "$mode"
            stop_httpd
        done
    done
    ((http_bad)) || http_ratios leakcheck 0.99 1.01
fi

# ---------------------------------------------------------- sync benches

# The figures of the block and hook parts: "name procs bench".
figures=("pingpong_p1 1 pingpong" "pingpong_p2 2 pingpong"
    "chanbuf_p1 1 chanbuf" "chanbuf_p2 2 chanbuf" "mutex_p2 2 mutex"
    "select2_p2 2 select2")

# run_sync BIN PROCS BENCH PROFILE [TAG] - one benchmark process (BIN is
# a bench_sync, weft's or Go's; PROFILE 1 sets BENCH_PROFILE=1). Prints
# its benchstat line, with TAG ("build=nohook") added to the name; sets $value to the figure as time per operation (ns;
# chanbuf: 1e9 / items per second) and $records to its "# profile" line's
# "block=N mutex=M", or $value to "" and $why to the reason, stderr kept
# in $tmp/err.
value='' records='' why=''
run_sync() {
    local bin=$1 procs=$2 bench=$3 prof=$4 tag=${5:-} rc=0 line
    local -a cmd=(env WEFTMAXPROCS="$procs" GOMAXPROCS="$procs")
    if ((prof)); then cmd+=(BENCH_PROFILE=1); fi
    cmd+=("$bin" "$bench")
    value='' records='' why=''
    timeout -k 5 180 "${cmd[@]}" >"$tmp/out" 2>"$tmp/err" || rc=$?
    line=$(grep -m1 '^Benchmark' "$tmp/out" || true)
    if [[ -n $tag ]]; then line=${line/\/procs=/\/$tag\/procs=}; fi
    [[ -n $line ]] && echo "$line"
    records=$(sed -n 's/^# profile //p' "$tmp/out" | head -n1)
    if ((rc == 124 || rc == 137)); then
        why="timed out after 180 s: ${cmd[*]}"
    elif ((rc > 128)); then
        why="killed by signal $((rc - 128)): ${cmd[*]}"
    elif ((rc != 0)); then
        why="exit status $rc: ${cmd[*]}"
    elif [[ -z $line ]]; then
        why="no benchmark line: ${cmd[*]}"
    elif ((prof)) && [[ -z $records ]]; then
        why="no '# profile' line under BENCH_PROFILE=1: ${cmd[*]}"
    else
        value=$(awk '{ if ($4 == "items/s") printf "%.4f", 1e9 / $3
            else print $3 }' <<<"$line")
    fi
    return 0
}

# Which builds the sync parts need.
want_block=0 want_hook=0
wanted block && want_block=1
wanted hook && want_hook=1
if ((want_block || want_hook)) && [[ ! -x $sync_bin ]]; then
    fail_line sync "$sync_bin is missing: ninja -C $build bench/bench_sync"
    want_block=0 want_hook=0
fi

if ((want_hook)); then
    # The no-hook build: set up when missing, always brought up to date
    # (ninja does nothing when it is). A directory set up without the
    # switch would measure nothing: refuse it.
    if [[ ! -f $nohook/build.ninja ]]; then
        echo "# setting up $nohook (-DWEFT_NO_CONTENTION_HOOK=1)"
        rm -rf "$nohook"
        if ! meson setup "$nohook" "$src" --buildtype=release \
            -Dc_args=-DWEFT_NO_CONTENTION_HOOK=1 -Dtests=false \
            -Dexamples=false >"$tmp/setup.log" 2>&1; then
            fail_line hook "meson setup $nohook failed" "$tmp/setup.log"
            want_hook=0
        fi
    fi
    if ((want_hook)) && ! grep -q 'WEFT_NO_CONTENTION_HOOK=1' "$nohook/build.ninja"; then
        fail_line hook "$nohook is not built with -DWEFT_NO_CONTENTION_HOOK=1 (remove it or set NOHOOK_BUILD_DIR)"
        want_hook=0
    fi
    if ((want_hook)) && ! ninja -C "$nohook" bench/bench_sync >"$tmp/ninja.log" 2>&1; then
        fail_line hook "ninja -C $nohook bench/bench_sync failed" "$tmp/ninja.log"
        want_hook=0
    fi
    # The switch must really silence the hook: the no-hook build, asked
    # for every block event, records none.
    if ((want_hook)); then
        run_sync "$nohook_bin" 1 pingpong 1 >/dev/null
        if [[ -z $value ]]; then
            fail_line hook "no-hook build: $why" "$tmp/err"
            want_hook=0
        elif [[ $records != "block=0 mutex=0" ]]; then
            fail_line hook "the no-hook build still records ($records)"
            want_hook=0
        fi
    fi
fi

if ((want_block)) && ((go_rounds > 0)) && command -v go >/dev/null; then
    mkdir -p "$go_dir" "$GOCACHE" "$GOPATH"
    if go build -o "$go_dir/bench_sync" "$here/go/bench_sync.go" 2>"$tmp/go.err"; then
        go_sync=$go_dir/bench_sync
    else
        echo "# note: go build of bench/go/bench_sync.go failed: no Go context"
    fi
fi

# sync_figure NAME PROCS BENCH - the block and hook parts for one figure:
# PROF_ROUNDS rounds of no-hook build, this build, this build profiled
# (first PROF_ON_ROUNDS rounds), then the Go pairs; medians and ratios.
sync_figure() {
    local name=$1 procs=$2 bench=$3 r
    local -a off=() on=() nh=() gon=() goff=()
    local bad_on=0 bad_off=0 bad_nh=0 bad_go=0 recs=''
    for ((r = 0; r < rounds; r++)); do
        if ((want_hook && !bad_nh)); then
            run_sync "$nohook_bin" "$procs" "$bench" 0 build=nohook
            if [[ -n $value ]]; then nh+=("$value"); else
                fail_line "${name}_hook" "no-hook build: $why" "$tmp/err"
                bad_nh=1
            fi
        fi
        if ((!bad_off)); then
            run_sync "$sync_bin" "$procs" "$bench" 0
            if [[ -n $value ]]; then off+=("$value"); else
                fail_line "$name" "$why" "$tmp/err"
                bad_off=1
            fi
        fi
        if ((want_block && !bad_on && r < on_rounds)); then
            run_sync "$sync_bin" "$procs" "$bench" 1
            if [[ -z $value ]]; then
                fail_line "${name}_blockprof" "$why" "$tmp/err"
                bad_on=1
            elif [[ $bench == pingpong && $records == "block=0 "* ]]; then
                # Every round trip parks: a profile without a block
                # record means the opt-in did not take.
                fail_line "${name}_blockprof" "the block profile recorded nothing ($records)"
                bad_on=1
            else
                on+=("$value")
                recs=$records
            fi
        fi
    done
    if ((want_block)) && [[ -n $go_sync ]]; then
        for ((r = 0; r < go_rounds && !bad_go; r++)); do
            for x in 0 1; do
                run_sync "$go_sync" "$procs" "$bench" "$x"
                if [[ -z $value ]]; then
                    fail_line "${name}_blockprof_go" "go: $why" "$tmp/err"
                    bad_go=1
                    break
                fi
                if ((x)); then gon+=("$value"); else goff+=("$value"); fi
            done
        done
    fi

    local unit="ns/op" offm
    [[ $bench == chanbuf ]] && unit="ns/item"
    if ((bad_off)) || ((${#off[@]} == 0)); then return 0; fi
    stats "$name off" "$unit" "${off[@]}"
    offm=$med
    if ((want_block && !bad_on)) && ((${#on[@]})); then
        stats "$name profile=on" "$unit" "${on[@]}"
        echo "# $name profile=on: records at the end: $recs"
        ratio "${name}_blockprof" on/off "$(div "$med" "$offm")" 1.10 ""
    fi
    if ((want_block && !bad_go)) && ((${#gon[@]})); then
        medratio "${name}_blockprof_go" on/off "$unit" "$name go profile=on" \
            "$name go off" "" "" "${gon[@]}" -- "${goff[@]}"
    fi
    if ((want_hook && !bad_nh)) && ((${#nh[@]})); then
        stats "$name build=nohook" "$unit" "${nh[@]}"
        ratio "${name}_hook" hooks/nohook "$(div "$offm" "$med")" 1.01 ""
    fi
}

# perf_run BIN PROCS BENCH - one run under perf stat: sets $pi to the
# user-mode instructions and $pc to the CPU time (task-clock, ns) per
# operation (the benchstat line's N), both "" when perf cannot count.
pi='' pc=''
perf_run() {
    local bin=$1 procs=$2 bench=$3 n
    pi='' pc=''
    timeout -k 5 180 perf stat -x, -e instructions:u,task-clock \
        -o "$tmp/perf" env WEFTMAXPROCS="$procs" "$bin" "$bench" \
        >"$tmp/out" 2>"$tmp/err" || return 0
    n=$(awk '/^Benchmark/ { print $2; exit }' "$tmp/out")
    [[ -n $n ]] || return 0
    pi=$(awk -F, -v n="$n" '$3 ~ /^instructions/ && $1 ~ /^[0-9]+$/ {
        printf "%.3f", $1 / n; exit }' "$tmp/perf")
    pc=$(awk -F, -v n="$n" '$3 ~ /^task-clock/ && $1 ~ /^[0-9.]+$/ {
        printf "%.3f", $1 * 1e6 / n; exit }' "$tmp/perf") # msec
    return 0
}

if ((want_block || want_hook)); then
    echo "# sync: $rounds rounds (profiled: $on_rounds), Go pairs: $go_rounds"
    for f in "${figures[@]}"; do
        read -r name procs bench <<<"$f"
        sync_figure "$name" "$procs" "$bench"
    done
fi

# Instructions and CPU time per operation. Instructions are
# deterministic where nothing spins, so the checks' cost shows even on a
# loaded machine (but an instruction is not a fixed time: no target).
# CPU time leaves out the time other processes held the CPU. One P where
# the benchmark allows (2 Ps spin in the scheduler and the mutex, adding
# instructions at random); mutex needs 2 Ps to contend at all.
if ((want_hook)); then
    if ! command -v perf >/dev/null || ! perf stat -x, -e instructions:u \
        -o /dev/null true 2>/dev/null; then
        echo "# note: perf stat cannot count instructions here: no instruction figures"
    else
        echo "# perf stat: $rounds runs per side, alternating"
        for f in "pingpong_p1 1 pingpong" "chanbuf_p1 1 chanbuf" \
            "mutex_p2 2 mutex" "select2_p1 1 select2"; do
            read -r name procs bench <<<"$f"
            ia=() ib=() ca=() cb=()
            for ((r = 0; r < rounds; r++)); do
                perf_run "$nohook_bin" "$procs" "$bench"
                [[ -n $pi ]] && ib+=("$pi")
                [[ -n $pc ]] && cb+=("$pc")
                perf_run "$sync_bin" "$procs" "$bench"
                [[ -n $pi ]] && ia+=("$pi")
                [[ -n $pc ]] && ca+=("$pc")
            done
            if ((${#ia[@]} == 0 || ${#ib[@]} == 0)); then
                echo "# note: $name: perf stat gave no count"
                continue
            fi
            medratio "${name}_hook_instr" hooks/nohook instr/op \
                "$name instructions hooks" "$name instructions nohook" "" "" \
                "${ia[@]}" -- "${ib[@]}"
            printf '# %s instructions: hooks - nohook = %+.2f per op\n' \
                "$name" "$(awk -v a="$med_a" -v b="$med_b" 'BEGIN { print a - b }')"
            if ((${#ca[@]} && ${#cb[@]})); then
                medratio "${name}_hook_cpu" hooks/nohook ns-cpu/op \
                    "$name cpu hooks" "$name cpu nohook" "" "" \
                    "${ca[@]}" -- "${cb[@]}"
            fi
        done
    fi
fi

exit "$failed"
