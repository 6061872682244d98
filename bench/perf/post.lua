-- wrk script: POST a small chat-completions body; prints one JSON summary line.
-- env: BENCH_MODEL (default "mock"), BENCH_STREAM=1 for "stream": true (+ include_usage)
local model = os.getenv("BENCH_MODEL") or "mock"
local stream = os.getenv("BENCH_STREAM") == "1"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"
local extra = ""
if stream then
  extra = ',"stream":true,"stream_options":{"include_usage":true}'
end
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":'
  .. '"Say hello in five words."}],"max_tokens":32' .. extra .. '}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,'
    .. '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
