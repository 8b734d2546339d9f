-- Take a trade a chain re-org withdrew out of its token's windows.
-- (window_state.lua is prepended: decode/encode of a token's state.)
-- KEYS[1] the token's trades (zset), KEYS[2] its state, KEYS[3] what each trade first saw (hash:
-- id → member, a newline, its result); ARGV[1] the trade's id.
-- Returns 1 when the trade was in the windows, else 0. The state is rebuilt from the trades kept:
-- the head is the newest trade left, and each window its sums over (head − w, head] and its
-- first trade. (Trades that had left the longest window before are gone: when the withdrawn
-- trade was the newest, the head moves back and such trades do not come back.)
local saved = redis.call('HGET', KEYS[3], ARGV[1])
if not saved then return 0 end
local cut = string.find(saved, '\n', 1, true)
if not cut then return 0 end  -- stored before members were kept beside results
local member = string.sub(saved, 1, cut - 1)
redis.call('HDEL', KEYS[3], ARGV[1])
if redis.call('ZREM', KEYS[1], member) == 0 then return 0 end
local raw = redis.call('GET', KEYS[2])
if not raw then return 1 end
local st = decode(raw)
local function parse(m)  -- "id|cents|price|side"
  local a = string.find(m, '|', 1, true)
  local b = string.find(m, '|', a + 1, true)
  local c = string.find(m, '|', b + 1, true)
  return tonumber(string.sub(m, a + 1, b - 1)), string.sub(m, b + 1, c - 1), string.sub(m, c + 1)
end
local newest = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local ws = {}
for w, _ in pairs(st.win) do ws[#ws + 1] = w end
table.sort(ws)
if not newest[1] then
  st.head, st.hm, st.hp = nil, '', ''
  for _, w in ipairs(ws) do st.win[w] = {v = 0, b = 0, s = 0, n = 0, o = 0, m = '', p = ''} end
else
  -- ties on ts are broken by member: the head is the greatest member of the newest ts
  local head = tonumber(newest[2])
  local tied = redis.call('ZRANGEBYSCORE', KEYS[1], head, head)
  local hm = tied[#tied]
  local _, hp = parse(hm)
  st.head, st.hm, st.hp = head, hm, hp
  for _, w in ipairs(ws) do
    local x = {v = 0, b = 0, s = 0, n = 0, o = 0, m = '', p = ''}
    local inside = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. (head - w), '+inf', 'WITHSCORES')
    for i = 1, #inside, 2 do
      local c, price, side = parse(inside[i])
      x.v, x.n = x.v + c, x.n + 1
      if side == 'b' then x.b = x.b + c else x.s = x.s + c end
      if x.m == '' then x.o, x.m, x.p = tonumber(inside[i + 1]), inside[i], price end
    end
    st.win[w] = x
  end
end
redis.call('SET', KEYS[2], encode(st, ws), 'KEEPTTL')
return 1
