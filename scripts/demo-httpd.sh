#!/usr/bin/env bash
# demo-httpd.sh - show examples/httpd: a few requests with curl, a short
# load with hey, and how it answers a request that breaks its limits.
#
# usage: scripts/demo-httpd.sh [BUILDDIR]      (default build)
#
# Starts BUILDDIR/examples/httpd with --port 0 (the kernel picks a free
# port; the server prints it on its first line), WEFTDEBUG unset, and
# waits until /healthz answers. Then shows, each after its command line:
# curl of / and of a POST /sendjson, `hey -z 3s -c 50` POSTing JSON to
# /sendjson (its summary, latency percentiles and status codes), a request
# with a 20 KiB header (431), and a request line that is not HTTP (400,
# sent with bash's /dev/tcp, so netcat is not needed). Last, a 3-second CPU
# profile taken through the server's debug server (--debug-addr
# 127.0.0.1:0, its port on the second line) while hey loads it, shown by
# `go tool pprof -top` (skipped without go; its errors are shown, not
# fatal: a build without the CPU profiler answers 501).
#
# Bounds: every client runs under a timeout; the server is stopped at the
# end and killed by the EXIT trap whatever happens. Needs curl and hey
# (Debian: apt-get install curl hey). Exits 1 if a step fails.
set -euo pipefail

build=${1:-build}
bin=$build/examples/httpd
if [[ ! -x $bin ]]; then
    echo "demo-httpd: no $bin (build first: ninja -C $build)" >&2
    exit 1
fi
for tool in curl hey; do
    if ! command -v "$tool" >/dev/null; then
        echo "demo-httpd: needs $tool (apt-get install $tool)" >&2
        exit 1
    fi
done

log=$(mktemp "${TMPDIR:-/tmp}/demo-httpd.XXXXXX")
pid=
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -f "$log"
}
trap cleanup EXIT

# At most 5 minutes even if something hangs; the trap still runs.
env -u WEFTDEBUG timeout 300 "$bin" --port 0 --debug-addr 127.0.0.1:0 \
    >"$log" 2>&1 &
pid=$!

# The first line says which port the kernel picked.
port=
for _ in $(seq 100); do
    port=$(sed -n 's/^httpd: listening on :\([0-9]*\) .*/\1/p' "$log")
    [[ -n $port ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "demo-httpd: the server exited:" >&2
        cat "$log" >&2
        exit 1
    fi
    sleep 0.05
done
if [[ -z $port ]]; then
    echo "demo-httpd: the server did not start in 5 s" >&2
    exit 1
fi
url=http://127.0.0.1:$port
for _ in $(seq 50); do
    curl -s --max-time 1 "$url/healthz" >/dev/null && break
    sleep 0.1
done

head -n 1 "$log"
echo
echo "\$ curl -s $url/"
curl -s --max-time 5 "$url/"
echo
json='{"hello":"world"}'
echo "\$ curl -s -H 'Content-Type: application/json' -d '$json' $url/sendjson"
curl -s --max-time 5 -H 'Content-Type: application/json' -d "$json" \
    "$url/sendjson"
echo

echo "\$ hey -z 3s -c 50 -m POST -T application/json -d '$json' $url/sendjson"
# hey's summary, percentiles, status codes and errors, if any; not its
# histogram or its per-phase details.
timeout 30 hey -z 3s -c 50 -m POST -T application/json -d "$json" \
    "$url/sendjson" |
    awk '/^(Summary|Latency distr|Status code distr|Error distr)/ {
             if (n++) print ""
             on = 1; print; next
         }
         /^(Response time histogram|Details)/ { on = 0 }
         on && NF'
echo

echo "\$ curl -s -i -H \"X-Filler: <20 KiB of a>\" $url/"
filler=$(head -c 20480 /dev/zero | tr '\0' a)
curl -s -i --max-time 5 -H "X-Filler: $filler" "$url/" | tr -d '\r'
echo

echo "\$ printf 'HELLO WORLD\\r\\n\\r\\n' > /dev/tcp/127.0.0.1/$port"
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'HELLO WORLD\r\n\r\n' >&3
timeout 5 cat <&3 | tr -d '\r'
exec 3<&-
echo

dport=$(sed -n 's/^httpd: debug server on port \([0-9]*\) .*/\1/p' "$log")
if [[ -z $dport ]]; then
    echo "demo-httpd: no debug server:" >&2
    cat "$log" >&2
    exit 1
fi
profile="http://127.0.0.1:$dport/debug/pprof/profile?seconds=3"
if command -v go >/dev/null; then
    echo "\$ hey -z 4s -c 50 ... $url/sendjson &  go tool pprof -top '$profile'"
    timeout 30 hey -z 4s -c 50 -m POST -T application/json -d "$json" \
        "$url/sendjson" >/dev/null &
    hey_pid=$!
    ptmp=$(mktemp -d "${TMPDIR:-/tmp}/demo-pprof.XXXXXX")
    PPROF_TMPDIR=$ptmp timeout 60 go tool pprof -top "$profile" 2>&1 |
        head -n 25 || true
    rm -rf "$ptmp"
    wait "$hey_pid" || true
else
    echo "demo-httpd: go is not installed: no CPU profile (apt-get install golang-go)"
fi
echo

kill "$pid"
wait "$pid" 2>/dev/null || true
pid=
