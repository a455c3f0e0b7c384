-- wrk script for the gateway benchmark: POSTs one OIP REST JSON inference request to
-- benchmark-echo and, when the run ends, prints one machine-readable line for bench/bench.py.
--
-- Environment (read once per thread):
--   BENCH_TOKEN    bearer token of the load-tester principal (empty: no Authorization header)
--   BENCH_MODEL    model name (default benchmark-echo)
--   BENCH_REQUEST  "infer" (default) or "live": GET /v2/health/live instead, the empty round trip
--                  the model-server section of bench/bench.py compares inference with

local token = os.getenv("BENCH_TOKEN") or ""
local model = os.getenv("BENCH_MODEL") or "benchmark-echo"

if os.getenv("BENCH_REQUEST") == "live" then
  wrk.method = "GET"
  wrk.path = "/v2/health/live"
else
  wrk.method = "POST"
  wrk.path = "/v2/models/" .. model .. "/infer"
  wrk.body = '{"inputs":[{"name":"TEXT","datatype":"BYTES","shape":[1,1],"data":["hello, gateway"]}]}'
  wrk.headers["Content-Type"] = "application/json"
end
if token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- Latency values are in microseconds. errors.status counts responses with a status >= 400 (wrk's
-- definition), so a denial or a throttle can never pass as throughput: bench.py fails the run.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,' ..
    '"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
