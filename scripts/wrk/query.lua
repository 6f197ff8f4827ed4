-- wrk script: time-range queries over a random 1-minute window of the data
-- written by ingest.lua. Env: STREAM, BASE_US, SPAN_US (data's time span),
-- WINDOW_US (60 s), FILTER (extra query string, e.g. "&level=ERROR").
local stream = os.getenv("STREAM") or "bench"
local base = tonumber(os.getenv("BASE_US") or "1700000000000000")
local span = tonumber(os.getenv("SPAN_US") or "3600000000")
local window = tonumber(os.getenv("WINDOW_US") or "60000000")
local filter = os.getenv("FILTER") or ""
math.randomseed(42)

function request()
  local start = base + math.random(0, span - window)
  local path = string.format("/v1/streams/%s/query?start=%d&end=%d%s", stream, start, start + window, filter)
  return wrk.format("GET", path)
end

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. ": " .. body .. "\n")
  end
end
