-- Raise a batch's fence to a token; never lower it. Each raise is logged with the server's time
-- (fence_log.lua, appended): events of older tokens sent before it still count.
-- KEYS[1] fence   KEYS[2] fence log   ARGV[1] token
-- Returns the fence as it stands afterwards.
local fence = tonumber(redis.call('get', KEYS[1]) or '0')
if fence < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], ARGV[1])
  log_raise(KEYS[2], ARGV[1])
  return tonumber(ARGV[1])
end
return fence
