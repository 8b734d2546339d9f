-- Claim the cooldown of each (task, token) of a micro-batch, in order; the first claimant wins.
-- KEYS: one cooldown key per candidate (repeats allowed; the first claimant wins).
-- ARGV: per key, the claimant's event id and the cooldown in ms (0: no cooldown).
-- Returns per key: 1 (claimed now, or already this event's), or 0 (another event holds it),
-- then the holder's id and the cooldown's remaining ms (holder '' and 0 when there is none).
local out = {}
for k = 1, #KEYS do
  local id, ttl = ARGV[2 * k - 1], tonumber(ARGV[2 * k])
  local won, holder, left = 1, '', 0
  if ttl > 0 then
    holder = redis.call('GET', KEYS[k])
    if not holder then
      redis.call('SET', KEYS[k], id, 'PX', ttl)
      holder, left = id, ttl
    else
      left = redis.call('PTTL', KEYS[k])
      if holder ~= id then won = 0 end
    end
  end
  out[3 * k - 2], out[3 * k - 1], out[3 * k] = won, holder, left
end
return out
