-- wrk script for scripts/bench: one single-row primary-key lookup per request through
-- Airlock's query endpoint, with a random id each time.
--   BENCH_TOKEN  bearer token (airlock token)
--   BENCH_SQL    the statement, with one placeholder for the id
--   BENCH_IDS    ids are drawn uniformly from 1..BENCH_IDS
-- Every response is checked: a non-2xx answer is counted (and the first one kept), so the
-- caller can refuse to report a throughput made of errors.

local token = os.getenv("BENCH_TOKEN") or error("BENCH_TOKEN is not set")
local sql = os.getenv("BENCH_SQL") or error("BENCH_SQL is not set")
local ids = tonumber(os.getenv("BENCH_IDS") or "10000")

-- Escape the statement for a JSON string (it holds no control characters).
local sql_json = '"' .. sql:gsub('\\', '\\\\'):gsub('"', '\\"') .. '"'
local prefix = '{"sql":' .. sql_json .. ',"params":['

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. token
wrk.headers["Content-Type"] = "application/json"

local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  -- Each thread has its own Lua state: seed each differently.
  math.randomseed(os.time() * 1000 + id)
  bad = 0
  first_bad = ""
end

function request()
  return wrk.format(nil, nil, nil, prefix .. math.random(1, ids) .. "]}")
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body or "", 1, 300)
    end
  end
end

-- One machine-readable line for scripts/bench (latency in microseconds).
function done(summary, latency, requests)
  local bad_total, sample = 0, ""
  for _, t in ipairs(threads) do
    bad_total = bad_total + t:get("bad")
    if sample == "" then sample = t:get("first_bad") end
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d non2xx=%d socket_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    bad_total, e.connect + e.read + e.write + e.timeout))
  if sample ~= "" then
    io.write("BENCH first_non2xx=" .. sample:gsub("\n", " ") .. "\n")
  end
end
