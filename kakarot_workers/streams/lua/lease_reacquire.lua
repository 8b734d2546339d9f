-- Take back a lease that lapsed while Redis was away, keeping its token, if nobody has taken
-- the batch since: events sent under the token before the outage (still queued) stay valid.
-- KEYS[1] lease   KEYS[2] token counter
-- ARGV[1] lease value (`consumer:token`)   ARGV[2] token   ARGV[3] lease TTL (ms)
-- Returns the server's time in ms when the lease is ours again; 0 when someone holds it, or a
-- token was taken since (or the counter is gone with a Redis that lost its data: then a new
-- token is needed).
if redis.call('exists', KEYS[1]) == 1 then return 0 end
if redis.call('get', KEYS[2]) ~= ARGV[2] then return 0 end
redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[3])
local now = redis.call('TIME')
return tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
