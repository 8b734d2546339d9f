-- A token's window state, shared by window_observe.lua and window_snapshot.lua (prepended).
-- The state of a token (KEYS[3k-1]) is one msgpack array: the newest trade's ts (false: none),
-- member and price, when the TTLs were last set (ms), then eight fields per window length w (ms):
-- w, the sums in cents v (volume), b (buys), s (sells), n (trades), and the window's first
-- trade's ts o, member m and price p. Flat, so packing and unpacking cost little.
local function decode(raw)
  local a = cmsgpack.unpack(raw)
  local st = {head = a[1] or nil, hm = a[2], hp = a[3], x = a[4], win = {}}
  for i = 5, #a, 8 do
    st.win[a[i]] = {v = a[i + 1], b = a[i + 2], s = a[i + 3], n = a[i + 4], o = a[i + 5],
                    m = a[i + 6], p = a[i + 7]}
  end
  return st
end
local function encode(st, ws)  -- only the window lengths in use are kept
  local a = {st.head or false, st.hm, st.hp, st.x}
  for _, w in ipairs(ws) do
    local x = st.win[w]
    a[#a + 1] = w; a[#a + 1] = x.v; a[#a + 1] = x.b; a[#a + 1] = x.s; a[#a + 1] = x.n
    a[#a + 1] = x.o; a[#a + 1] = x.m; a[#a + 1] = x.p
  end
  return cmsgpack.pack(a)
end
