-- Raise the announced version of configs (never lower one).
-- KEYS[1] the versions hash; ARGV pairs (config id, version). Raises each to the given version
-- when higher; returns the ids raised.
local raised = {}
for i = 1, #ARGV, 2 do
  local known = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  if tonumber(ARGV[i + 1]) > known then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    raised[#raised + 1] = ARGV[i]
  end
end
return raised
