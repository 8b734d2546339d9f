-- Take a batch's lease and the next fencing token, if nobody holds the lease.
-- KEYS[1] lease (`consumer:token`, with a TTL)   KEYS[2] token counter
-- KEYS[3] fence                                  KEYS[4] hand-over marker
-- ARGV[1] consumer id   ARGV[2] lease TTL (ms)
-- Returns nil when the lease is held; else {token, fenced}: fenced is 1 when the fence was raised
-- to the new token now, 0 when the last holder is handing over (the successor raises it once live).
if redis.call('exists', KEYS[1]) == 1 then return nil end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
local fenced = 0
if redis.call('del', KEYS[4]) == 0 then
  redis.call('set', KEYS[3], token)
  fenced = 1
end
return {token, fenced}
