-- Prepended to the scripts that raise a fence: log the raise to `token` (a string) in the hash
-- `log_key` with the server's time in ms, keeping the 16 newest raises. The newest raise
-- trimmed is kept in the field `trimmed`: an event of a token below it cannot be placed.
local function log_raise(log_key, token)
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('hset', log_key, token, string.format('%.0f', ms))
  if redis.call('hlen', log_key) - redis.call('hexists', log_key, 'trimmed') > 16 then
    local oldest = nil
    for _, t in ipairs(redis.call('hkeys', log_key)) do
      if t ~= 'trimmed' and (oldest == nil or tonumber(t) < tonumber(oldest)) then oldest = t end
    end
    redis.call('hdel', log_key, oldest)
    redis.call('hset', log_key, 'trimmed', oldest)
  end
end
