# shellcheck shell=bash
# bench/lib.sh - helpers the server benchmarks share (net.sh,
# profiling.sh): sourced, not run. Nothing here prints or exits.

# cpu_ticks PID - utime+stime of PID (all threads) in clock ticks.
cpu_ticks() {
    local s
    local -a f
    s=$(<"/proc/$1/stat") || return 1
    s=${s##*) } # comm may hold spaces; fields 3.. follow its ')'
    read -ra f <<<"$s"
    echo $((f[11] + f[12])) # fields 14 and 15
}
# shellcheck disable=SC2034 # used by the sourcing scripts
clk_tck=$(getconf CLK_TCK)

# field KEY LINE - the value of KEY=value in LINE.
field() {
    awk -v k="$1" '{ for (i = 1; i <= NF; i++) if (index($i, k "=") == 1) {
        print substr($i, length(k) + 2); exit } }' <<<"$2"
}

# stop_tree TPID SPID - stop a server started as `timeout ... server &`
# (TPID: timeout's pid, SPID: the server's, may be empty): TERM to
# timeout, up to 2 s, then KILL both, and reap timeout.
stop_tree() {
    local i
    [[ -n $1 ]] || return 0
    kill -TERM "$1" 2>/dev/null || true
    for ((i = 0; i < 40; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    if [[ -n $2 ]]; then kill -KILL "$2" 2>/dev/null || true; fi
    kill -KILL "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
