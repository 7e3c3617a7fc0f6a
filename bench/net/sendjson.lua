-- sendjson.lua - the wrk script of bench/net.sh: every request is
-- POST /sendjson with a small JSON body, and at the end one
-- machine-readable line for net.sh to parse:
--
--   WRK requests=N secs=S rps=R p50_us=A p99_us=B errors=E non2xx=M
--
-- errors counts wrk's socket errors (connect, read, write, timeout); non2xx
-- counts responses whose status is not 2xx/3xx (wrk's "status" errors).
-- Latencies are wrk's, in microseconds. Run: wrk -s sendjson.lua URL

wrk.method = "POST"
wrk.path = "/sendjson"
wrk.body = '{"hello":"world","n":42}'
wrk.headers["Content-Type"] = "application/json"

done = function(summary, latency, requests)
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format(
        "WRK requests=%d secs=%.3f rps=%.1f p50_us=%d p99_us=%d " ..
        "errors=%d non2xx=%d\n",
        summary.requests, secs, summary.requests / secs,
        latency:percentile(50), latency:percentile(99),
        e.connect + e.read + e.write + e.timeout, e.status))
end
