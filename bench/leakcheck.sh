#!/usr/bin/env bash
# bench/leakcheck.sh - what the leak monitor costs: examples/httpd --procs 1
# (on CPU 0) under wrk -t1 -c50 POST /sendjson (on CPU 1), with
# WEFTDEBUG=leakcheck=1 and without, alternating, LC_ROUNDS rounds of
# LC_SECS seconds each (defaults 5 and 5), one benchstat line per run:
#   BenchmarkHTTPdLeakcheck/leakcheck=off  1  88000 req/s
# then the medians and "# leakcheck cost: X% (target <= 1%)", and for each
# run with the monitor its thread's CPU time against the server's
# ("# monitor thread CPU: ..."), which the machine's noise does not blur.
#
# Usage: bash bench/leakcheck.sh [BUILD_DIR]   (default build-release)
# Alternating on/off within one run and taking medians is what makes a
# 1% difference visible on a noisy machine; the budget is the issue's.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
build=$(cd "${1:-build-release}" && pwd)
rounds=${LC_ROUNDS:-5}
secs=${LC_SECS:-5}
httpd=$build/examples/httpd
[[ -x $httpd ]] || { echo "leakcheck.sh: no $httpd" >&2; exit 2; }
command -v wrk >/dev/null || { echo "leakcheck.sh: no wrk" >&2; exit 2; }
port=$((20000 + RANDOM % 12000))
pid=
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; true' EXIT

run() { # $1: on|off -> prints req/s
    local env=()
    [[ $1 == on ]] && env=(WEFTDEBUG=leakcheck=1)
    env "${env[@]}" taskset -c 0 timeout $((secs + 30)) "$httpd" \
        --port $port --procs 1 --debug-addr off >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
        curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && break
        sleep 0.1
    done
    # warm up 1 s, then measure
    taskset -c 1 wrk -t1 -c50 -d1s -s "$here/net/sendjson.lua" \
        "http://127.0.0.1:$port/" >/dev/null 2>&1
    local out
    out=$(taskset -c 1 wrk -t1 -c50 -d${secs}s -s "$here/net/sendjson.lua" \
        "http://127.0.0.1:$port/" 2>&1)
    # The monitor's own CPU against the whole server's, from schedstat
    # (ns on CPU per thread): a bound that does not depend on the noise.
    if [[ $1 == on ]]; then
        local mon=0 all=0 t srv
        srv=$(pgrep -P $pid -n || echo $pid) # timeout's child: httpd
        for t in /proc/$srv/task/*; do
            local ns; ns=$(awk '{print $1}' "$t/schedstat")
            all=$((all + ns))
            [[ $(cat "$t/comm") == weft-leakcheck ]] && mon=$((mon + ns))
        done
        awk -v m=$mon -v a=$all 'BEGIN { printf "# monitor thread CPU: %.1f ms of %.0f ms (%.3f%%)\n", m/1e6, a/1e6, 100*m/a }' >&2
    fi
    kill $pid; wait $pid 2>/dev/null || true; pid=
    awk '/Requests\/sec/ {print $2}' <<<"$out"
}

echo "goos: linux"
echo "pkg: weft/leakcheck"
on=() off=()
for r in $(seq "$rounds"); do
    for mode in off on; do
        [[ $((r % 2)) == 0 ]] && mode=$([[ $mode == off ]] && echo on || echo off)
        v=$(run $mode)
        echo "BenchmarkHTTPdLeakcheck/leakcheck=$mode 1 $v req/s"
        if [[ $mode == on ]]; then on+=("$v"); else off+=("$v"); fi
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mon=$(median "${on[@]}") moff=$(median "${off[@]}")
awk -v on="$mon" -v off="$moff" 'BEGIN {
    c = (off - on) / off * 100
    printf "# median req/s: off %.0f, on %.0f\n", off, on
    printf "# leakcheck cost: %.2f%% (target <= 1%%): %s\n", c, c <= 1 ? "met" : "MISSED"
}'
