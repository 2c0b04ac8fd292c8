-- Up to a few tokens from a client's bucket shared by the fleet (GCRA, its TAT in
-- microseconds of Redis's clock): the request's own, and what its pod leases ahead.
-- KEYS: 1 the client's TAT. ARGV: 1 interval (us per token), 2 tolerance (burst x
-- interval, us), 3 now in us (tests only; empty: Redis's clock), 4 tokens wanted
-- (absent: 1).
-- Returns {tokens granted, tokens left, us until full} or {0, 0, us until a token}.
local now
if ARGV[3] ~= nil and ARGV[3] ~= '' then
  now = tonumber(ARGV[3])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local want = tonumber(ARGV[4] or '1')
if want == nil or want < 1 then want = 1 end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local room = math.floor((now + tolerance - tat) / interval)
if room < 1 then
  return {0, 0, math.ceil(tat + interval - tolerance - now)}
end
local granted = math.min(want, room)
local next = math.floor(tat + granted * interval + 0.5)
redis.call('SET', KEYS[1], string.format('%.0f', next), 'PX',
  math.floor((next - now) / 1000) + 1000)
return {granted, room - granted, math.ceil(next - now)}
