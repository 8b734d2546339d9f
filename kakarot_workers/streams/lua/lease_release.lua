-- Give a lease up, if it is still ours; optionally mark a graceful hand-over.
-- KEYS[1] lease   KEYS[2] hand-over marker
-- ARGV[1] our value (`consumer:token`)   ARGV[2] hand-over TTL (ms); 0 for a plain release
-- Returns 1 if released, 0 if the lease was not ours.
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return 1
