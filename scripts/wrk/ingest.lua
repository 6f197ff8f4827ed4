-- wrk script: POST NDJSON batches of realistic log entries to a Cairn node.
-- Env: STREAM (default "bench"), BATCH entries per request (1000),
-- STEP_US µs between consecutive entries' timestamps (360: 10 M entries
-- span one hour), BASE_US first timestamp.
local stream = os.getenv("STREAM") or "bench"
local batch = tonumber(os.getenv("BATCH") or "1000")
local step = tonumber(os.getenv("STEP_US") or "360")
local base = tonumber(os.getenv("BASE_US") or "1700000000000000")

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local sources = {"api", "web", "db", "auth", "billing", "search", "cache", "queue"}
local levels = {"DEBUG", "INFO", "INFO", "INFO", "INFO", "WARN", "ERROR"}
local paths = {"/v1/orders", "/v1/users", "/v1/cart", "/v1/search", "/healthz"}
local counter = 0
local nthreads = 1

function init(args)
  nthreads = tonumber(os.getenv("THREADS") or "1")
  wrk.method = "POST"
  wrk.path = "/v1/streams/" .. stream .. "/entries"
  wrk.headers["Content-Type"] = "application/x-ndjson"
end

-- STATIC=1 builds one body per thread and sends it again and again, so the
-- load generator's own CPU stays small (timestamps then repeat).
local static_body = nil

function request()
  if os.getenv("STATIC") == "1" and static_body then
    return static_body
  end
  local lines = {}
  for i = 1, batch do
    counter = counter + 1
    local seq = counter * nthreads + (id or 0)
    local ts = base + seq * step
    lines[i] = string.format(
      '{"timestamp":%d,"level":"%s","source":"%s","message":"GET %s/%d 200 %dms user=%d"}',
      ts, levels[seq % #levels + 1], sources[seq % #sources + 1],
      paths[seq % #paths + 1], seq % 100000, seq % 250, seq % 9973)
  end
  local req = wrk.format(nil, nil, nil, table.concat(lines, "\n"))
  if os.getenv("STATIC") == "1" then
    static_body = req
  end
  return req
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
