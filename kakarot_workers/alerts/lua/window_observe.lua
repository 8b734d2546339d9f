-- Add a micro-batch of trades to their tokens' windows and say what each trade saw.
-- (window_state.lua is prepended: decode/encode of a token's state.)
-- KEYS: per token k, KEYS[3k-2] trades (zset of "id|cents|price|side" by ts ms, kept for the
-- longest window), KEYS[3k-1] its state (window_state.lua), KEYS[3k] what each trade first saw (hash
-- id → its member, a newline, and the msgpack of its result).
-- ARGV: the time now (ms), and one msgpack array [sets, set of each token, trades]: the window-
-- length sets (each ms, ascending), per token k the index of its set, then seven per trade: k,
-- ts ms, cents, price, side ('b' or 's'), trade id, quiet. One packed argument costs the server
-- far less than seven per trade, and msgpack numbers need no parsing. A quiet trade is one whose
-- windows its caller will not read (an amount gate turns it away): it counts in them as any
-- other, but what it saw is neither kept nor returned (its result is an empty array); a later
-- copy that does read them sees the windows as they are then.
-- A trade counts once by its id (chain:tx:log index), whatever values a later copy carries: a copy
-- gets the result stored for the first one, as it is; a copy whose values differ is a conflict.
-- Returns a msgpack array with, per trade, a flat array, per window: volume, buys, sells (cents),
-- trades, first price, last price; then one more element: the positions (1-based) of the trades
-- that were conflicting copies.
-- Each token's state is read and written once per call; a new trade costs one ZADD and one HSET,
-- and the zset is read only when trades leave a window. The TTLs (twice the longest window, plus
-- a minute) are renewed at most every 10 s. Ties on ts are broken by member, so results do not
-- depend on arrival order.
local function parse(member)  -- "id|cents|price|side"
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  local c = string.find(member, '|', b + 1, true)
  return string.sub(member, 1, a - 1), tonumber(string.sub(member, a + 1, b - 1)),
         string.sub(member, b + 1, c - 1), string.sub(member, c + 1)
end
local now = tonumber(ARGV[1])
local batch = cmsgpack.unpack(ARGV[2])
local spec, trades, lengths, states, dirty = batch[1], batch[3], {}, {}, {}
for k, j in ipairs(batch[2]) do lengths[k] = spec[j] end
local function first_after(z, after, x)  -- the window's first trade: the oldest after `after`
  local first = redis.call('ZRANGEBYSCORE', z, '(' .. after, '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if first[1] then
    local _, _, price = parse(first[1])
    x.o, x.m, x.p = tonumber(first[2]), first[1], price
  else
    x.o, x.m, x.p = 0, '', ''
  end
end
local function state_of(k)
  local st = states[k]
  if st then return st end
  local raw = redis.call('GET', KEYS[3 * k - 1])
  st = raw and decode(raw) or {hm = '', hp = '', x = 0, win = {}}
  for _, w in ipairs(lengths[k]) do
    if st.win[w] == nil then  -- a window length new to this token: built from the trades
      local x = {v = 0, b = 0, s = 0, n = 0, o = 0, m = '', p = ''}
      if st.head ~= nil then
        local inside = redis.call('ZRANGEBYSCORE', KEYS[3 * k - 2], '(' .. (st.head - w), '+inf')
        for _, m in ipairs(inside) do
          local _, c, _, sd = parse(m)
          x.v, x.n = x.v + c, x.n + 1
          if sd == 'b' then x.b = x.b + c else x.s = x.s + c end
        end
        first_after(KEYS[3 * k - 2], st.head - w, x)
      end
      st.win[w] = x
      dirty[k] = true
    end
  end
  states[k] = st
  return st
end
local function result_of(k, st)
  local out = {}
  for _, w in ipairs(lengths[k]) do
    local x = st.win[w]
    out[#out + 1] = x.v; out[#out + 1] = x.b; out[#out + 1] = x.s; out[#out + 1] = x.n
    out[#out + 1] = x.p; out[#out + 1] = st.hp
  end
  return out
end
local out, conflicts = {}, {}
local EMPTY = '\144'  -- msgpack's empty array: what a quiet trade saw
for i = 1, #trades, 7 do
  local k, ts, cents, price, side, id, quiet = trades[i], trades[i + 1], trades[i + 2],
    trades[i + 3], trades[i + 4], trades[i + 5], trades[i + 6]
  local z, seen = KEYS[3 * k - 2], KEYS[3 * k]
  local ws = lengths[k]
  local st = state_of(k)
  local fresh = st.head == nil or ts > st.head - ws[#ws]
  local member = id .. '|' .. cents .. '|' .. price .. '|' .. side
  local result = nil
  local saved = redis.call('HGET', seen, id)
  if saved then  -- seen before: judged as it was then
    local cut = string.find(saved, '\n', 1, true)
    if cut then
      if string.sub(saved, 1, cut - 1) ~= member then conflicts[#conflicts + 1] = (i + 6) / 7 end
      result = string.sub(saved, cut + 1)
      if result == EMPTY then result = nil end  -- first seen quiet: the windows as they are
    else
      result = saved  -- stored before members were kept beside results
    end
  elseif fresh and redis.call('ZADD', z, 'NX', ts, member) == 0 then
    result = nil  -- in the window without a record of what it saw: judged against it as it is
  elseif fresh then
    if st.head == nil or ts > st.head or (ts == st.head and member > st.hm) then
      st.head, st.hm, st.hp = ts, member, price
    end
    local head = st.head
    for j, w in ipairs(ws) do
      local x = st.win[w]
      if ts > head - w then
        x.v, x.n = x.v + cents, x.n + 1
        if side == 'b' then x.b = x.b + cents else x.s = x.s + cents end
        if x.m == '' or ts < x.o or (ts == x.o and member < x.m) then
          x.o, x.m, x.p = ts, member, price
        end
      end
      if x.m ~= '' and x.o <= head - w then
        local old = redis.call('ZRANGEBYSCORE', z, x.o, head - w)
        local gone = {}
        for _, m in ipairs(old) do
          local oid, oc, _, os = parse(m)
          x.v, x.n = x.v - oc, x.n - 1
          if os == 'b' then x.b = x.b - oc else x.s = x.s - oc end
          gone[#gone + 1] = oid
        end
        if j == #ws then  -- leaving the longest window: leaving the token's trades
          redis.call('ZREMRANGEBYSCORE', z, '-inf', head - w)
          for from = 1, #gone, 1000 do  -- unpack has a stack limit
            redis.call('HDEL', seen, unpack(gone, from, math.min(from + 999, #gone)))
          end
          st.x = 0  -- the hash may have gone with its last field: renew the TTLs
        end
        first_after(z, head - w, x)
      end
    end
    result = quiet and EMPTY or cmsgpack.pack(result_of(k, st))
    redis.call('HSET', seen, id, member .. '\n' .. result)
    dirty[k] = true
  end
  if quiet then result = EMPTY end
  out[#out + 1] = result or cmsgpack.pack(result_of(k, st))
end
for k, st in pairs(states) do
  if dirty[k] then
    local renew = now - st.x > 10000
    if renew then st.x = now end
    redis.call('SET', KEYS[3 * k - 1], encode(st, lengths[k]), 'KEEPTTL')
    if renew then
      local ttl = 2 * lengths[k][#lengths[k]] + 60000
      for j = 3 * k - 2, 3 * k do redis.call('PEXPIRE', KEYS[j], ttl) end
    end
  end
end
out[#out + 1] = cmsgpack.pack(conflicts)
local n = #out  -- the reply: a msgpack array of the packed results, as they are
local header
if n < 16 then header = string.char(0x90 + n)
elseif n < 65536 then header = string.char(0xdc, math.floor(n / 256), n % 256)
else header = string.char(0xdd, math.floor(n / 16777216), math.floor(n / 65536) % 256,
                          math.floor(n / 256) % 256, n % 256) end
return header .. table.concat(out)
