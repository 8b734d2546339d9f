-- Take a batch's lease and the next fencing token, if nobody holds the lease.
-- KEYS[1] lease (`consumer:token`, with a TTL)   KEYS[2] token counter
-- KEYS[3] fence                                  KEYS[4] hand-over marker
-- KEYS[5] fence log (fence_log.lua is prepended)
-- ARGV[1] consumer id   ARGV[2] lease TTL (ms)
-- Returns nil when the lease is held; else {token, fenced, ms}: fenced is 1 when the fence was
-- raised to the new token now, 0 when the last holder is handing over (the successor raises it
-- once live); ms is the server's time (the consumer dates what it sends by this clock).
-- A token is never below the server's clock in microseconds, so tokens keep rising even when
-- Redis restarts without its data (the counter gone); integers are formatted with %.0f, exact
-- below 2^53 (Lua's tostring would round them).
if redis.call('exists', KEYS[1]) == 1 then return nil end
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000000 + tonumber(now[2])
local token = redis.call('incr', KEYS[2])
if token < floor then
  token = floor
  redis.call('set', KEYS[2], string.format('%.0f', token))
end
local text = string.format('%.0f', token)
redis.call('set', KEYS[1], ARGV[1] .. ':' .. text, 'PX', ARGV[2])
local fenced = 0
if redis.call('del', KEYS[4]) == 0 then
  redis.call('set', KEYS[3], text)
  log_raise(KEYS[5], text)
  fenced = 1
end
return {token, fenced, tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)}
