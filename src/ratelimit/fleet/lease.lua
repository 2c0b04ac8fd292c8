-- The fleet's global bucket (GCRA, its TAT in microseconds of Redis's clock) and the
-- register of live pods, changed in one step. Mirrors `lease::grant` in Rust.
-- KEYS: 1 the bucket's TAT, 2 the pods (sorted set: pod -> expiry, ms), 3 their demand.
-- ARGV: 1 interval (us per token), 2 tolerance (burst x interval, us), 3 tokens given
--       back, 4 tokens wanted, 5 this pod, 6 its registration's life (ms), 7 its demand
--       (requests per second), 8 "leave" to deregister, 9 now in us (tests only; empty:
--       Redis's clock).
local now
if ARGV[9] ~= nil and ARGV[9] ~= '' then
  now = tonumber(ARGV[9])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local back = tonumber(ARGV[3])
local want = tonumber(ARGV[4])

local tat = tonumber(redis.call('GET', KEYS[1]) or '0') - back * interval
if tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval)
if room < 0 then room = 0 end
local granted = want
if room < granted then granted = room end
tat = math.floor(tat + granted * interval + 0.5)
-- The key outlives the debt by a second: a bucket full again needs no state.
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',
  math.floor((tat - now) / 1000) + 1000)
local wait = tat + interval - tolerance - now
if wait < 0 then wait = 0 end

local ttl = tonumber(ARGV[6])
local now_ms = math.floor(now / 1000)
if ARGV[8] == 'leave' then
  redis.call('ZREM', KEYS[2], ARGV[5])
  redis.call('HDEL', KEYS[3], ARGV[5])
else
  redis.call('ZADD', KEYS[2], now_ms + ttl, ARGV[5])
  redis.call('HSET', KEYS[3], ARGV[5], ARGV[7])
end
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)
for _, pod in ipairs(gone) do
  redis.call('ZREM', KEYS[2], pod)
  redis.call('HDEL', KEYS[3], pod)
end
redis.call('PEXPIRE', KEYS[2], ttl * 4)
redis.call('PEXPIRE', KEYS[3], ttl * 4)
local live = redis.call('ZCARD', KEYS[2])
local total = 0
for _, d in ipairs(redis.call('HVALS', KEYS[3])) do total = total + tonumber(d) end
return {granted, math.ceil(wait), room - granted, live, math.floor(total)}
