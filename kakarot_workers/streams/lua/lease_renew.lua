-- Extend a lease, if it is still ours (compare-and-extend).
-- KEYS[1] lease   ARGV[1] our value (`consumer:token`)   ARGV[2] lease TTL (ms)
-- Returns 1 if extended, 0 if the lease is gone or someone else's.
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
