-- wrk script: POST a chat completion with a client key, print a JSON summary.
-- Environment: BENCH_KEY (bearer secret), BENCH_MODEL (model name), BENCH_HEADERS
-- (optional extra request headers, one "Name: value" per line).
local key = os.getenv("BENCH_KEY") or "sk-bench"
local model = os.getenv("BENCH_MODEL") or "bench-model"

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
local extra = os.getenv("BENCH_HEADERS") or ""
for line in extra:gmatch("[^\n]+") do
  local name, value = line:match("^%s*([^:]+):%s*(.-)%s*$")
  if name then
    wrk.headers[name] = value
  end
end
wrk.body = '{"model":"' .. model .. '","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'

function done(summary, latency, requests)
  local out = {}
  out[#out + 1] = string.format('"requests":%d', summary.requests)
  out[#out + 1] = string.format('"duration_us":%d', summary.duration)
  out[#out + 1] = string.format('"bytes":%d', summary.bytes)
  out[#out + 1] = string.format('"errors_connect":%d', summary.errors.connect)
  out[#out + 1] = string.format('"errors_read":%d', summary.errors.read)
  out[#out + 1] = string.format('"errors_write":%d', summary.errors.write)
  out[#out + 1] = string.format('"errors_status":%d', summary.errors.status)
  out[#out + 1] = string.format('"errors_timeout":%d', summary.errors.timeout)
  out[#out + 1] = string.format('"latency_mean_us":%.1f', latency.mean)
  out[#out + 1] = string.format('"latency_max_us":%d', latency.max)
  for _, p in ipairs({50, 90, 99, 99.9}) do
    out[#out + 1] = string.format('"latency_p%s_us":%d', (tostring(p):gsub("%.", "_")), latency:percentile(p))
  end
  io.write("WRK_JSON {" .. table.concat(out, ",") .. "}\n")
end
