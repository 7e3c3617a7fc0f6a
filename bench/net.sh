#!/usr/bin/env bash
# bench/net.sh - weft's network servers against their Go and libuv peers:
# an echo server under a lockstep load, and an HTTP server under wrk and hey.
#
# Usage: bash bench/net.sh [BUILD_DIR]     (default build-release)
#
# What runs (each server on CPU 0, each client on CPU 1, via taskset):
#   echo   weft examples/echo --procs 1, Go bench/go/echo.go at
#          GOMAXPROCS=1, libuv bench/libuv/echo.c, and weft again with
#          WEFTDEBUG=iouring=0 (epoll only: a "#" line compares the two
#          backends, no target); each at 50 and 1000
#          connections under bench/net/loadgen (64-byte lockstep
#          request/response, 1 s warmup, NET_SECS measured). loadgen reads
#          the server's utime+stime from /proc at the edges of the measured
#          window, so CPU per request covers that window only.
#   httpd  weft examples/httpd --procs 1 and Go bench/go/httpd.go at
#          GOMAXPROCS=1, each warmed up for 1 s, then under
#          `wrk -t1 -c50 -d NET_SECS --latency -s bench/net/sendjson.lua` and
#          `hey -c 50 -z NET_SECS -m POST -T application/json -d '{...}'`,
#          both sending POST /sendjson. Figures: req/s and p99 from each
#          tool, plus the server's CPU per request around the tool's run.
#
# Output: a benchstat header, one benchstat line per run, e.g.
#   BenchmarkEcho/impl=go/conns=50  690000  138000 req/s  6.91 us-cpu/req ...
#   BenchmarkHTTPd/impl=go/client=wrk  440000  88000 req/s  6000 us-p99 ...
# then for each figure "RATIO <figure> weft/<peer>=<x>" and a
# "# target <figure> weft/<peer> <= or >= <t>: met|MISSED (x)" line, the
# issue's targets: echo CPU per request <= 0.75x Go and <= 1.0x libuv, echo
# req/s >= 1.2x Go and >= 1.0x libuv, at 50 and 1000 connections; httpd
# req/s >= 1.5x Go under wrk and under hey, p99 <= 1.0x Go's. httpd also
# prints httpd_<tool>_cpu_per_req (no target) and each line ends with the
# client CPU's utilisation (softirq included: loopback work lands there):
# when the tool kept its CPU >= 95% busy in both
# servers' runs, a "# note" says so, since req/s then measures the tool.
#
# Environment: NET_SECS (measured seconds per run, default 5; the whole
# script then takes about 75 s), NET_WARMUP (echo warmup seconds,
# default 1), NET_SERVER_CPU / NET_CLIENT_CPU (default 0 / 1),
# NET_ONLY="echo" or "httpd" to run one part.
#
# Binaries: the weft servers are BUILD_DIR/examples/{echo,httpd} (flags
# --port N --procs N); loadgen and libuv_echo are
# BUILD_DIR/bench/{loadgen,libuv_echo} when meson built them from the
# current source, else they are compiled here with cc into
# BUILD_DIR/bench-net/; the Go peers are built with `go build`,
# GO111MODULE=off, into BUILD_DIR/bench-go/ with the caches there too, as
# bench/run.sh does, so this works offline.
#
# Failures: a missing binary, a server that does not start or dies, a
# client that fails (loadgen: connection errors, the server closing
# connections, wrong bytes, a stalled request; wrk: socket errors or
# non-2xx answers; hey: any error or non-200 status) prints
# "FAIL <figure> (<why>)" with the tail of stderr as "#" lines. Its figure
# is left out, the rest still runs, and the script exits 1.
#
# Bounds: every server and client runs under `timeout`; every server is
# stopped when its runs end and killed again by the EXIT trap. Ports are
# picked at random in 20000-32767 (below the kernel's ephemeral range) and
# checked unused with ss. Only 127.0.0.1 is ever used. The soft
# RLIMIT_NOFILE is raised (within the hard limit) for the servers.
#
# Rejected: the server's CPU from the shell around the whole loadgen run
# (counts the connect phase and the warmup); several runs and medians (one
# run per figure keeps this well under 3 minutes; the issue's targets are
# for one run, and CPU per request is the steady figure when other work
# shares the machine).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${1:-build-release}
if [[ ! -d $build ]]; then
    echo "net.sh: no build directory $build (meson setup $build -Dbuildtype=release)" >&2
    exit 2
fi
build=$(cd "$build" && pwd)
secs=${NET_SECS:-5}
warmup=${NET_WARMUP:-1}
scpu=${NET_SERVER_CPU:-0}
ccpu=${NET_CLIENT_CPU:-1}
only=${NET_ONLY:-}
if ! [[ $secs =~ ^[0-9]+$ ]] || ((secs < 1 || secs > 600)); then
    echo "net.sh: NET_SECS must be a whole number of seconds, 1..600" >&2
    exit 2
fi
if ! [[ $warmup =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
    echo "net.sh: NET_WARMUP must be a number of seconds" >&2
    exit 2
fi
go_dir=$build/bench-go
net_dir=$build/bench-net
weft_echo=$build/examples/echo
weft_httpd=$build/examples/httpd
hey_body='{"hello":"world","n":42}' # the body sendjson.lua sends too
failed=0
tmp=$(mktemp -d)

# Every server started, "timeout-pid server-pid" a line, for the trap.
server_list=$tmp/servers
: >"$server_list"

# The client running now (its timeout's pid), for the trap.
client=''

# cleanup - stop the client and kill every server still running (no job
# notices: they are disowned first), remove $tmp.
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    local t s
    disown -a 2>/dev/null || true
    if [[ -n $client ]]; then kill -TERM "$client" 2>/dev/null || true; fi
    if [[ -f $server_list ]]; then
        while read -r t s; do
            kill -KILL "$s" "$t" 2>/dev/null || true
        done <"$server_list"
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# A reproducible Go environment: no modules, no network, caches under BUILD_DIR.
export GO111MODULE=off GOFLAGS='' GOPROXY=off
export GOCACHE=$go_dir/cache GOPATH=$go_dir/gopath
unset GOGC GODEBUG GOMEMLIMIT WEFTDEBUG GOMAXPROCS WEFTMAXPROCS

# wanted PART - whether NET_ONLY (if set) names PART.
wanted() {
    [[ -z $only || " ${only//,/ } " == *" $1 "* ]]
}

for tool in taskset timeout ss pgrep go; do
    if ! command -v "$tool" >/dev/null; then
        echo "net.sh: $tool is missing (scripts/deps.sh)" >&2
        exit 2
    fi
done
ncpu=$(nproc)
if ((scpu >= ncpu || ccpu >= ncpu)); then
    echo "net.sh: need CPUs $scpu and $ccpu, have $ncpu" >&2
    exit 2
fi

# 1000 connections need more than the usual soft limit of 1024 fds.
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || ((hard > 65536)); then hard=65536; fi
if (($(ulimit -Sn) < hard)); then ulimit -Sn "$hard" || true; fi

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

# ---------------------------------------------------------------- build

mkdir -p "$go_dir" "$GOCACHE" "$GOPATH" "$net_dir"
go_echo='' go_httpd=''
if go build -o "$go_dir/echo" "$here/go/echo.go" 2>"$tmp/go-echo.err"; then
    go_echo=$go_dir/echo
fi
if go build -o "$go_dir/httpd" "$here/go/httpd.go" 2>"$tmp/go-httpd.err"; then
    go_httpd=$go_dir/httpd
fi

# pick_bin MESON_BIN SOURCE OUT [LDFLAGS...] - echo MESON_BIN when meson
# built it from the current SOURCE, else OUT, compiled from SOURCE with cc
# unless it is up to date; nothing when cc fails.
pick_bin() {
    local meson_bin=$1 src=$2 out=$3
    shift 3
    if [[ -n $meson_bin && -x $meson_bin && ! $src -nt $meson_bin ]]; then
        echo "$meson_bin"
    elif [[ -x $out && ! $src -nt $out ]] ||
        ${CC:-cc} -std=gnu11 -O2 -D_GNU_SOURCE -Wall -Wextra -o "$out" \
            "$src" "$@" 2>"$tmp/cc-$(basename "$out").err"; then
        echo "$out"
    fi
}
loadgen=$(pick_bin "$build/bench/loadgen" "$here/net/loadgen.c" \
    "$net_dir/loadgen")
uv_echo=
if [[ -x $build/bench/libuv_echo && ! $here/libuv/echo.c -nt $build/bench/libuv_echo ]]; then
    uv_echo=$build/bench/libuv_echo
elif pkg-config --exists libuv 2>/dev/null; then
    # shellcheck disable=SC2046 # pkg-config prints several words
    uv_echo=$(pick_bin "" "$here/libuv/echo.c" "$net_dir/libuv_echo" \
        $(pkg-config --cflags --libs libuv))
fi

# ---------------------------------------------------------------- header

echo "goos: linux"
echo "goarch: $(go env GOARCH)"
echo "pkg: weft/bench/net"
cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo || true)
[[ -n $cpu ]] && echo "cpu: $cpu"
echo "go: $(go env GOVERSION)"
echo "nproc: $ncpu"
echo "# server on CPU $scpu, client on CPU $ccpu, ${secs}s per measurement"
if ((scpu == ccpu)); then
    echo "# note: server and client share CPU $scpu; figures are not comparable to the issue's"
fi
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
    echo "# note: load average $load1 before the run; req/s and latency may be noisy (CPU per request less so)"
fi

# ---------------------------------------------------------------- servers

# free_port - echo a TCP port on which nothing listens or lingers.
free_port() {
    local p i
    for ((i = 0; i < 100; i++)); do
        p=$((20000 + RANDOM % 12768))
        if [[ -z $(ss -Htan "( sport = :$p or dport = :$p )" 2>/dev/null) ]]; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# start_server NAME ENV PORTFLAG BIN [ARGS...] - start BIN ARGS
# PORTFLAG <free port> with environment ENV on CPU $scpu, under timeout,
# and wait until it listens. Sets $port, $spid (the server's own pid: taskset
# and env exec it) and $tpid (timeout's). Returns 1 with $why set if it does
# not come up within 10 s. Stderr goes to $tmp/srv-NAME.err.
port='' spid='' tpid='' why=''
start_server() {
    local name=$1 envs=$2 portflag=$3 i rc
    shift 3
    port=$(free_port) || { why="no free port"; return 1; }
    # shellcheck disable=SC2086 # ENV is a list of NAME=value words
    timeout -k 2 $((3 * secs + 60)) taskset -c "$scpu" env $envs "$@" \
        "$portflag" "$port" >"$tmp/srv-$name.out" 2>"$tmp/srv-$name.err" &
    tpid=$!
    spid=
    for ((i = 0; i < 200; i++)); do
        [[ -z $spid ]] && spid=$(pgrep -P "$tpid" | head -n1 || true)
        if [[ -n $spid ]] &&
            [[ -n $(ss -Hltn "( sport = :$port )" 2>/dev/null) ]]; then
            echo "$tpid $spid" >>"$server_list"
            return 0
        fi
        if ! kill -0 "$tpid" 2>/dev/null; then
            rc=0
            wait "$tpid" 2>/dev/null || rc=$?
            why="exited at start with status $rc"
            tpid='' spid=''
            return 1
        fi
        sleep 0.05
    done
    why="did not listen on 127.0.0.1:$port within 10 s"
    stop_server
    return 1
}

# stop_server - stop the server start_server started: TERM, then KILL.
stop_server() {
    stop_tree "$tpid" "$spid"
    tpid='' spid=''
}

# run_client OUT ERR LIMIT CMD... - run CMD on CPU $ccpu under a timeout
# of LIMIT seconds, stdout to OUT and stderr to ERR, and set $rc to its
# exit status. It runs in the background and is waited for, so that a
# signal to this script acts at once (bash defers traps while a foreground
# command runs, and ignores SIGINT when that command does not die of it).
run_client() {
    local out=$1 err=$2 limit=$3
    shift 3
    timeout -k 5 "$limit" taskset -c "$ccpu" "$@" >"$out" 2>"$err" &
    client=$!
    rc=0
    wait "$client" || rc=$?
    client=''
}

# alive - whether the current server still runs.
alive() {
    [[ -n $spid ]] && kill -0 "$spid" 2>/dev/null
}

# cpu_stat CPU - "busy total" clock ticks of CPU CPU from /proc/stat.
# Busy is user, nice, system and steal: irq and softirq time is left out,
# as loopback packet processing done for the server lands there rather
# than in the server's own stime.
cpu_stat() {
    awk -v c="cpu$1" '$1 == c { b = $2 + $3 + $4 + $9
        print b, b + $5 + $6 + $7 + $8; exit }' /proc/stat
}

# cpu_all CPU - "busy total" ticks of CPU CPU, busy counting everything
# but idle and iowait: a load tool's loopback work lands in softirq.
cpu_all() {
    awk -v c="cpu$1" '$1 == c { b = $2 + $3 + $4 + $7 + $8 + $9
        print b, b + $5 + $6; exit }' /proc/stat
}

# other_work NAME STAT0 STAT1 T0 T1 - a "# note" when more than 10% of
# CPU $scpu went to something other than the server (ticks T0..T1) between
# cpu_stat readings STAT0 and STAT1: other work on the machine skews the
# server's figures, CPU per request included.
other_work() {
    [[ -n $2 && -n $3 && -n $4 && -n $5 ]] || return 0
    awk -v n="$1" -v s0="$2" -v s1="$3" -v t0="$4" -v t1="$5" \
        -v c="$scpu" 'BEGIN {
        split(s0, a, " "); split(s1, b, " ")
        tot = b[2] - a[2]; if (tot <= 0) exit
        o = (b[1] - a[1] - (t1 - t0)) / tot
        if (o > 0.1)
            printf "# note: %s: %.0f%% of CPU %d went to other work\n",
                n, 100 * o, c
    }'
}

# server_cmd KIND IMPL - set $cmd_env, $cmd_flag and the array cmd for a
# server; return 1 with $why set when its binary is missing.
cmd_env='' cmd_flag=''
cmd=()
server_cmd() {
    cmd=() cmd_env='' cmd_flag=--port
    case $1/$2 in
    echo/weft)
        [[ -x $weft_echo ]] || { why="weft: $weft_echo is missing (examples/echo.c not built)"; return 1; }
        cmd=("$weft_echo" --procs 1) cmd_env=WEFTMAXPROCS=1 ;;
    echo/weft-epoll)
        [[ -x $weft_echo ]] || { why="weft: $weft_echo is missing (examples/echo.c not built)"; return 1; }
        cmd=("$weft_echo" --procs 1) cmd_env="WEFTMAXPROCS=1 WEFTDEBUG=iouring=0" ;;
    httpd/weft)
        [[ -x $weft_httpd ]] || { why="weft: $weft_httpd is missing (examples/httpd.c not built)"; return 1; }
        cmd=("$weft_httpd" --procs 1) cmd_env=WEFTMAXPROCS=1 ;;
    echo/go)
        [[ -n $go_echo ]] || { why="go: go build bench/go/echo.go failed"; return 1; }
        cmd=("$go_echo") cmd_env=GOMAXPROCS=1 cmd_flag=-port ;;
    httpd/go)
        [[ -n $go_httpd ]] || { why="go: go build bench/go/httpd.go failed"; return 1; }
        cmd=("$go_httpd") cmd_env=GOMAXPROCS=1 cmd_flag=-port ;;
    echo/libuv)
        [[ -n $uv_echo ]] || { why="libuv: no libuv_echo (libuv1-dev missing, or cc failed)"; return 1; }
        cmd=("$uv_echo") ;;
    esac
}

# ratio FIGURE W P PEER MAX MIN - "RATIO FIGURE weft/PEER=W/P" and its
# target line: x <= MAX, or with MAX empty, x >= MIN. Nothing when either
# value is missing (its FAIL line said why).
ratio() {
    local figure=$1 w=$2 p=$3 peer=$4 max=$5 min=$6
    [[ -n $w && -n $p ]] || return 0
    awk -v f="$figure" -v w="$w" -v p="$p" -v peer="$peer" -v max="$max" \
        -v min="$min" 'BEGIN {
        if (p + 0 == 0) { printf "# %s: the %s figure is 0\n", f, peer; exit }
        x = w / p
        printf "RATIO %s weft/%s=%.3f\n", f, peer, x
        if (max != "")
            printf "# target %s weft/%s <= %s: %s (%.4f)\n", f, peer, max,
                (x <= max) ? "met" : "MISSED", x
        else if (min != "")
            printf "# target %s weft/%s >= %s: %s (%.4f)\n", f, peer, min,
                (x >= min) ? "met" : "MISSED", x
    }'
}

# Results by "impl/conns" (echo) and "impl/tool" (httpd).
declare -A rps=() cpureq=() hrps=() hp99=() hcpu=() hcutil=()

# ---------------------------------------------------------------- echo

# run_echo IMPL CONNS - one echo measurement; fills rps and cpureq.
run_echo() {
    local impl=$1 conns=$2 figure="echo_c$2" rc=0 line name died=
    local r c n st0 st1 t0 t1
    name="echo-$impl-$conns"
    if ! server_cmd echo "$impl"; then
        fail_line "$figure" "$why" "$tmp/go-echo.err"
        return 0
    fi
    if ! start_server "$name" "$cmd_env" "$cmd_flag" "${cmd[@]}"; then
        fail_line "$figure" "$impl: ${cmd[0]##*/} $why" "$tmp/srv-$name.err"
        return 0
    fi
    st0=$(cpu_stat "$scpu") t0=$(cpu_ticks "$spid" 2>/dev/null || true)
    run_client "$tmp/lg.out" "$tmp/lg.err" $((secs + 40)) "$loadgen" \
        --port "$port" --conns "$conns" --duration "$secs" \
        --warmup "$warmup" --size 64 --server-pid "$spid"
    st1=$(cpu_stat "$scpu") t1=$(cpu_ticks "$spid" 2>/dev/null || true)
    other_work "$impl conns=$conns" "$st0" "$st1" "$t0" "$t1"
    line=$(grep -m1 '^loadgen ' "$tmp/lg.out" || true)
    alive || died=", and the server died"
    stop_server
    if ((rc == 124 || rc == 137)); then
        fail_line "$figure" "$impl: loadgen timed out$died" \
            "$tmp/lg.err" "$tmp/srv-$name.err"
    elif ((rc != 0)) || [[ -z $line ]]; then
        [[ -n $line ]] && echo "# $impl: $line"
        fail_line "$figure" "$impl: loadgen exit status $rc$died" \
            "$tmp/lg.err" "$tmp/srv-$name.err"
    else
        r=$(field rps "$line") c=$(field server_cpu_us_per_req "$line")
        n=$(field requests "$line")
        printf 'BenchmarkEcho/impl=%s/conns=%s\t%s\t%s req/s\t%s us-cpu/req\t%s us-p50\t%s us-p99\t%s cpu-util\n' \
            "$impl" "$conns" "$n" "$r" "$c" "$(field lat_p50_us "$line")" \
            "$(field lat_p99_us "$line")" "$(field server_cpu_util "$line")"
        rps[$impl/$conns]=$r
        cpureq[$impl/$conns]=$c
    fi
}

if wanted echo; then
    for conns in 50 1000; do
        if [[ -z $loadgen ]]; then
            fail_line "echo_c$conns" "loadgen: cc bench/net/loadgen.c failed" \
                "$tmp/cc-loadgen.err"
            continue
        fi
        # Alternate the servers so that drift in the machine hits all.
        for impl in weft go libuv weft-epoll; do
            run_echo "$impl" "$conns"
        done
        k=$conns
        # weft with io_uring off (no target): what the io_uring path buys.
        [[ -n ${cpureq[weft-epoll/$k]:-} && -n ${cpureq[weft/$k]:-} ]] &&
            awk -v a="${cpureq[weft/$k]}" -v b="${cpureq[weft-epoll/$k]}" \
                -v k="$k" 'BEGIN { if (b > 0) printf "# echo_c%s_cpu_per_req weft io_uring/epoll=%.3f\n", k, a / b }'
        ratio "echo_c${k}_cpu_per_req" "${cpureq[weft/$k]:-}" "${cpureq[go/$k]:-}" go 0.75 ""
        ratio "echo_c${k}_cpu_per_req" "${cpureq[weft/$k]:-}" "${cpureq[libuv/$k]:-}" libuv 1.0 ""
        ratio "echo_c${k}_rps" "${rps[weft/$k]:-}" "${rps[go/$k]:-}" go "" 1.2
        ratio "echo_c${k}_rps" "${rps[weft/$k]:-}" "${rps[libuv/$k]:-}" libuv "" 1.0
    done
fi

# ---------------------------------------------------------------- httpd

# run_http IMPL TOOL NAME - one wrk or hey run against the running server
# NAME; fills hrps[IMPL/TOOL] (req/s) and hp99[IMPL/TOOL] (microseconds).
run_http() {
    local impl=$1 tool=$2 name=$3 figure="httpd_$2" rc=0 c0 c1 r p99 n cpu
    local url="http://127.0.0.1:$port/sendjson" line errs non2xx bad st0 st1
    local died='' cl0 cl1 cutil
    st0=$(cpu_stat "$scpu") c0=$(cpu_ticks "$spid" 2>/dev/null || true)
    cl0=$(cpu_all "$ccpu")
    if [[ $tool == wrk ]]; then
        run_client "$tmp/cl.out" "$tmp/cl.err" $((secs + 30)) wrk -t1 -c50 \
            -d"${secs}s" --latency -s "$here/net/sendjson.lua" "$url"
    else
        run_client "$tmp/cl.out" "$tmp/cl.err" $((secs + 30)) hey -c 50 \
            -z "${secs}s" -m POST -T application/json -d "$hey_body" "$url"
    fi
    st1=$(cpu_stat "$scpu") c1=$(cpu_ticks "$spid" 2>/dev/null || true)
    cl1=$(cpu_all "$ccpu")
    other_work "$impl $tool" "$st0" "$st1" "$c0" "$c1"
    # How busy the client's CPU was: at ~100% the tool, not the server,
    # sets req/s, and only the server's CPU per request compares them.
    cutil=$(awk -v a="$cl0" -v b="$cl1" 'BEGIN { split(a, x, " ");
        split(b, y, " "); t = y[2] - x[2]
        printf "%.3f", (t > 0) ? (y[1] - x[1]) / t : 0 }')
    cat "$tmp/cl.out" >>"$tmp/cl.err" # for the FAIL tail
    alive || died=", and the server died"
    if ((rc == 124 || rc == 137)); then
        fail_line "$figure" "$impl: $tool timed out$died" "$tmp/cl.err" "$tmp/srv-$name.err"
        return 0
    elif ((rc != 0)); then
        fail_line "$figure" "$impl: $tool exit status $rc$died" "$tmp/cl.err" "$tmp/srv-$name.err"
        return 0
    fi
    if [[ $tool == wrk ]]; then
        line=$(grep -m1 '^WRK ' "$tmp/cl.out" || true)
        if [[ -z $line ]]; then
            fail_line "$figure" "$impl: no WRK line from sendjson.lua" "$tmp/cl.err"
            return 0
        fi
        errs=$(field errors "$line") non2xx=$(field non2xx "$line")
        n=$(field requests "$line") r=$(field rps "$line")
        p99=$(field p99_us "$line")
        if ((errs != 0 || non2xx != 0 || n == 0)); then
            fail_line "$figure" "$impl: wrk: $errs socket errors, $non2xx non-2xx answers, $n requests$died" \
                "$tmp/cl.err" "$tmp/srv-$name.err"
            return 0
        fi
    else
        r=$(awk '/Requests\/sec:/ { print $2; exit }' "$tmp/cl.out")
        p99=$(awk '$1 == "99%" && $2 == "in" { printf "%.0f", $3 * 1e6; exit }' "$tmp/cl.out")
        n=$(awk '/^ *\[200\]/ { print $2; exit }' "$tmp/cl.out")
        bad=$(awk '/^Status code distribution:/ { s = 1; next }
            /^Error distribution:/ { s = 0; e = 1; next }
            s && /^ *\[[0-9]+\]/ && $1 != "[200]" { print "status " $1 " x" $2 }
            e && NF { print "errors: " $0 }' "$tmp/cl.out" | head -n1)
        if [[ -n $bad || -z $r || -z $p99 || -z $n ]]; then
            fail_line "$figure" "$impl: hey: ${bad:-no Requests/sec, 99% or [200] line}$died" \
                "$tmp/cl.err" "$tmp/srv-$name.err"
            return 0
        fi
    fi
    cpu=-
    if [[ -n $c0 && -n $c1 ]] && ((n > 0)); then
        cpu=$(awk -v d=$((c1 - c0)) -v t="$clk_tck" -v n="$n" \
            'BEGIN { printf "%.3f", d / t * 1e6 / n }')
    fi
    printf 'BenchmarkHTTPd/impl=%s/client=%s\t%s\t%s req/s\t%s us-p99\t%s us-cpu/req\t%s client-cpu-util\n' \
        "$impl" "$tool" "$n" "$r" "$p99" "$cpu" "$cutil"
    hrps[$impl/$tool]=$r
    hp99[$impl/$tool]=$p99
    [[ $cpu == - ]] || hcpu[$impl/$tool]=$cpu
    hcutil[$impl/$tool]=$cutil
}

if wanted httpd; then
    tools=()
    for tool in wrk hey; do
        if command -v "$tool" >/dev/null; then
            tools+=("$tool")
        else
            fail_line "httpd_$tool" "$tool is not installed (scripts/deps.sh)"
        fi
    done
    for impl in weft go; do
        ((${#tools[@]})) || break
        name="httpd-$impl"
        if ! server_cmd httpd "$impl"; then
            for tool in "${tools[@]}"; do
                fail_line "httpd_$tool" "$why" "$tmp/go-httpd.err"
            done
            continue
        fi
        if ! start_server "$name" "$cmd_env" "$cmd_flag" "${cmd[@]}"; then
            for tool in "${tools[@]}"; do
                fail_line "httpd_$tool" "$impl: ${cmd[0]##*/} $why" "$tmp/srv-$name.err"
            done
            continue
        fi
        # Warm up (connections, caches, Go's heap); the figures are dropped.
        if [[ ${tools[0]} == wrk ]]; then
            run_client /dev/null /dev/null 30 wrk -t1 -c50 -d1s \
                -s "$here/net/sendjson.lua" "http://127.0.0.1:$port/sendjson"
        else
            run_client /dev/null /dev/null 30 hey -c 50 -z 1s -m POST \
                -T application/json -d "$hey_body" \
                "http://127.0.0.1:$port/sendjson"
        fi
        for tool in "${tools[@]}"; do
            if ! alive; then
                fail_line "httpd_$tool" "$impl: the server died" "$tmp/srv-$name.err"
                continue
            fi
            run_http "$impl" "$tool" "$name"
        done
        stop_server
    done
    for tool in wrk hey; do
        ratio "httpd_${tool}_rps" "${hrps[weft/$tool]:-}" "${hrps[go/$tool]:-}" go "" 1.5
        ratio "httpd_${tool}_p99" "${hp99[weft/$tool]:-}" "${hp99[go/$tool]:-}" go 1.0 ""
        ratio "httpd_${tool}_cpu_per_req" "${hcpu[weft/$tool]:-}" "${hcpu[go/$tool]:-}" go "" ""
        awk -v t="$tool" -v w="${hcutil[weft/$tool]:-0}" -v g="${hcutil[go/$tool]:-0}" \
            -v c="$ccpu" 'BEGIN { if (w >= 0.95 && g >= 0.95)
            printf "# note: %s kept CPU %d %.0f%% / %.0f%% busy (weft / go runs): the client sets req/s for both servers, so httpd_%s_rps measures %s; compare httpd_%s_cpu_per_req\n",
                t, c, 100 * w, 100 * g, t, t, t }'
    done
fi

exit "$failed"
