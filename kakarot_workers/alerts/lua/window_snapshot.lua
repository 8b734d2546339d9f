-- One window of a token as it stands (read-only; for tools and tests).
-- (window_state.lua is prepended: decode/encode of a token's state.)
-- KEYS[1] the token's state   ARGV[1] the window length (ms)
-- Returns the sums in cents v (volume), b (buys), s (sells), the trades n, first and last price.
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, 0, 0, 0, '', ''} end
local st = decode(raw)
local x = st.win[tonumber(ARGV[1])]
if not x then return {0, 0, 0, 0, '', st.hp} end
return {x.v, x.b, x.s, x.n, x.p, st.hp}
