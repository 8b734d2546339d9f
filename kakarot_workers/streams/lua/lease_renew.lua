-- Extend a lease, if it is still ours (compare-and-extend).
-- KEYS[1] lease   ARGV[1] our value (`consumer:token`)   ARGV[2] lease TTL (ms)
-- Returns the server's time in ms if extended (the consumer dates what it sends by this
-- clock), 0 if the lease is gone or someone else's.
if redis.call('get', KEYS[1]) == ARGV[1] and redis.call('pexpire', KEYS[1], ARGV[2]) == 1 then
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
end
return 0
