#!/usr/bin/env bash
# panicparse-httpd.sh - the SIGQUIT dump of examples/httpd under load must
# parse with the real panicparse, which groups identical stacks.
#
# usage: tests/panicparse-httpd.sh HTTPD     (meson passes the binary)
#
# Starts HTTPD --port 0 --procs 2 (the kernel picks the port; the server
# prints it on its first stdout line), puts it under `hey -c 50` load for
# a few seconds, and sends it SIGQUIT while hey runs. Then checks:
#  1. httpd exits with status 2 and its stderr is Go's SIGQUIT dump
#     (preamble, goroutines, registers);
#  2. `panicparse -no-color -parse=false` on that dump exits 0;
#  3. its output groups the connection coroutines: some group of more
#     than one goroutine whose stack is in serve_conn;
#  4. the group counts add up to the number of "goroutine N [" headers
#     in the raw dump: panicparse parsed every goroutine, it did not stop
#     at a line it could not read.
# hey and panicparse are required (Debian packages; scripts/deps.sh
# installs them): missing, the test fails. Every step is bounded (hey -z,
# timeouts, a watchdog on the server) and the EXIT trap kills whatever is
# left. Exit status 0 on success, 1 on failure (with the reason and the
# outputs on stderr).
set -euo pipefail

httpd=${1:?usage: panicparse-httpd.sh HTTPD}
fail() {
    echo "panicparse-httpd: $*" >&2
    exit 1
}
for tool in hey panicparse; do
    command -v "$tool" >/dev/null ||
        fail "needs $tool (Debian package $tool; scripts/deps.sh installs it)"
done
[[ -x $httpd ]] || fail "no executable $httpd"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/panicparse-httpd.XXXXXX")
pid= heypid= dog=
cleanup() {
    for p in $heypid $pid $dog; do
        kill -KILL "$p" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

show() {
    for f in "$@"; do
        echo "--- $f:" >&2
        head -c 200000 "$tmp/$f" >&2 || true
    done
}

env -u WEFTDEBUG -u WEFTTRACEBACK "$httpd" --port 0 --procs 2 \
    >"$tmp/out" 2>"$tmp/err" &
pid=$!
# The server may not outlive the test, whatever happens: a watchdog that
# ends with it (its output away from ours, so nobody waits for it).
(
    exec >/dev/null 2>&1
    for _ in $(seq 1200); do
        sleep 0.1
        kill -0 "$pid" || exit 0
    done
    kill -KILL "$pid"
) &
dog=$!

port=
for _ in $(seq 200); do
    port=$(sed -n 's/^httpd: listening on :\([0-9]*\) .*/\1/p' "$tmp/out")
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || { show out err; fail "httpd exited"; }
    sleep 0.05
done
[[ -n $port ]] || { show out err; fail "httpd did not start in 10 s"; }

timeout 60 hey -z 4s -c 50 "http://127.0.0.1:$port/healthz" \
    >"$tmp/hey" 2>&1 &
heypid=$!
sleep 1.5 # 50 keep-alive connections, each with its coroutine
kill -0 "$heypid" 2>/dev/null || { show hey; fail "hey ended early"; }
kill -QUIT "$pid"

status=0
wait "$pid" || status=$?
pid=
kill -KILL "$heypid" 2>/dev/null || true
wait "$heypid" 2>/dev/null || true
heypid=

dump=$tmp/err
[[ $status == 2 ]] || { show out err; fail "httpd exit status $status, expected 2"; }
head -n 1 "$dump" | grep -qx 'SIGQUIT: quit' ||
    { show err; fail "the dump does not start with 'SIGQUIT: quit'"; }
grep -q '^rip    0x' "$dump" || grep -q '^pc     0x' "$dump" ||
    { show err; fail "no register dump after the goroutines"; }
headers=$(grep -cE '^goroutine [0-9]+ \[' "$dump" || true)
conns=$(grep -cE '^goroutine [0-9]+ \[.*name=http conn' "$dump" || true)
((conns > 1)) || { show err; fail "only $conns connection coroutines in the dump"; }

rc=0
timeout 60 panicparse -no-color -parse=false "$dump" >"$tmp/pp" 2>"$tmp/pperr" ||
    rc=$?
[[ $rc == 0 ]] || { show pp pperr err; fail "panicparse exit status $rc"; }

# Group lines: "N: state [...]", then the group's frames, indented.
read -r sum biggest < <(awk '
    /^[0-9]+: / { n = $1 + 0; sum += n; grp = n; next }
    /^[ \t]/ && /serve_conn\(/ && grp > big { big = grp }
    END { print sum + 0, big + 0 }' "$tmp/pp")
echo "panicparse-httpd: $headers goroutines in the dump ($conns connections)," \
    "panicparse groups $sum, the largest serve_conn group has $biggest"
((biggest > 1)) ||
    { show pp; fail "panicparse grouped no serve_conn stacks (largest group $biggest)"; }
((sum == headers)) ||
    { show pp err; fail "panicparse accounts for $sum goroutines, the dump has $headers"; }
echo "ok"
