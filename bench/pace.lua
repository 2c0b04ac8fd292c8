-- wrk script: each connection waits this many ms between requests, to offer a fixed rate
-- (connections × 1000 / delay per second, less the latency).
local delay_ms = tonumber(os.getenv("PACE_MS") or "10")
function delay()
  return delay_ms
end
