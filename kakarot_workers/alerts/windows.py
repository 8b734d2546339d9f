"""Sliding windows per (task, token) in Redis: volume, buys, sells, trades, open and last price.

One Lua script call per micro-batch updates every window its events touch, atomically, so any
number of alert workers may feed the same token. A window covers (head − W, head], head being the
newest trade seen: a late trade still inside it counts, one older is ignored. A trade is added
once (its id is the sorted-set member), and what it first saw is stored beside it (`seen`), so a
re-delivered message judges its events exactly as the first pass did. Sums are integer cents:
exact, whatever the order of additions and expiries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgpack
import redis
from redis.client import NEVER_DECODE
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from kakarot_workers.alerts.rules import WindowStats
from kakarot_workers.events import SwapEvent
from kakarot_workers.keys import Keys

# The state of a token (KEYS[3k-1]) is one msgpack array: the newest trade's ts (false: none),
# member and price, when the TTLs were last set (ms), then eight fields per window length w (ms):
# w, the sums in cents v (volume), b (buys), s (sells), n (trades), and the window's first
# trade's ts o, member m and price p. Flat, so packing and unpacking cost little.
_STATE = """
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
"""

# KEYS: per token k, KEYS[3k-2] trades (zset of "id|cents|price|side" by ts ms, kept for the
# longest window), KEYS[3k-1] its state (above), KEYS[3k] what each trade first saw (hash
# id → msgpack of its result).
# ARGV: the time now (ms), and one msgpack array [sets, set of each token, trades]: the window-
# length sets (each ms, ascending), per token k the index of its set, then six per trade: k, ts
# ms, cents, price, side ('b' or 's'), trade id. One packed argument costs the server far less
# than six per trade, and msgpack numbers need no parsing.
# Returns a msgpack array with, per trade, a flat array, per window: volume, buys, sells (cents),
# trades, first price, last price (a re-delivered trade gets the one stored for it, as it is).
# Each token's state is read and written once per call; a new trade costs one ZADD and one HSET,
# and the zset is read only when trades leave a window. The TTLs (twice the longest window, plus
# a minute) are renewed at most every 10 s. Ties on ts are broken by member, so results do not
# depend on arrival order.
_OBSERVE = (
    _STATE
    + """
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
local out = {}
for i = 1, #trades, 6 do
  local k, ts, cents, price, side, id =
    trades[i], trades[i + 1], trades[i + 2], trades[i + 3], trades[i + 4], trades[i + 5]
  local z, seen = KEYS[3 * k - 2], KEYS[3 * k]
  local ws = lengths[k]
  local st = state_of(k)
  local fresh = st.head == nil or ts > st.head - ws[#ws]
  local member = id .. '|' .. cents .. '|' .. price .. '|' .. side
  local result = nil
  if fresh and redis.call('ZADD', z, 'NX', ts, member) == 0 then
    local saved = redis.call('HGET', seen, id)  -- seen before: judged as it was then
    if saved then result = saved end
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
    result = cmsgpack.pack(result_of(k, st))
    redis.call('HSET', seen, id, result)
    dirty[k] = true
  end
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
local n = #out  -- the reply: a msgpack array of the packed results, as they are
local header
if n < 16 then header = string.char(0x90 + n)
elseif n < 65536 then header = string.char(0xdc, math.floor(n / 256), n % 256)
else header = string.char(0xdd, math.floor(n / 16777216), math.floor(n / 65536) % 256,
                          math.floor(n / 256) % 256, n % 256) end
return header .. table.concat(out)
"""
)

# The window of one length as it stands (for tools and tests).
# KEYS: the token's state; ARGV: the window length in ms. Returns v, b, s, n, first and last price.
_SNAPSHOT = (
    _STATE
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return {0, 0, 0, 0, '', ''} end
local st = decode(raw)
local x = st.win[tonumber(ARGV[1])]
if not x then return {0, 0, 0, 0, '', st.hp} end
return {x.v, x.b, x.s, x.n, x.p, st.hp}
"""
)


@dataclass(frozen=True, slots=True)
class Observation:
    """One trade seen through its task's windows (their lengths in seconds)."""

    task_id: int
    seconds: tuple[int, ...]
    event: SwapEvent


class Windows:
    """The window store of one Redis; `observe` is safe from any number of processes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._observe = client.register_script(_OBSERVE)
        self._snapshot = client.register_script(_SNAPSHOT)

    def snapshot(self, task_id: int, ca: str, seconds: int) -> WindowStats:
        """The window as it stands now (read-only; for tools and tests)."""
        reply = self._snapshot(keys=[self.keys.window_state(task_id, ca)], args=[seconds * 1000])
        return _stats(seconds, reply)

    def observe(self, observations: Sequence[Observation]) -> list[dict[int, WindowStats]]:
        """Add each trade to its token's windows (once, ever) and return, per trade, each
        window (by length in seconds) as the trade saw it."""
        if not observations:
            return []
        slots: dict[tuple[int, str], int] = {}
        keys: list[str] = []
        specs: dict[tuple[int, ...], int] = {}  # window-length set (ms) → its index (1-based)
        spec_of: list[int] = []  # per token
        trades: list[object] = []
        for obs in observations:
            event = obs.event
            slot = (obs.task_id, event.ca)
            index = slots.get(slot)
            if index is None:
                index = slots[slot] = len(slots) + 1
                keys += [
                    self.keys.window_entries(*slot),
                    self.keys.window_state(*slot),
                    self.keys.window_seen(*slot),
                ]
                spec = tuple(s * 1000 for s in sorted(obs.seconds))
                spec_of.append(specs.setdefault(spec, len(specs) + 1))
            trades += [
                index,
                event.ts_ms,
                round(event.amount_usd * 100),
                repr(event.price_usd),
                "b" if event.side == "buy" else "s",
                f"{event.tx_hash}:{event.log_index}",
            ]
        batch = msgpack.packb([list(specs), spec_of, trades])
        replies = msgpack.unpackb(self._raw(self._observe, keys, [int(time.time() * 1000), batch]))
        results = []
        for obs, reply in zip(observations, replies, strict=True):
            ordered = sorted(obs.seconds)
            results.append({s: _stats(s, reply[6 * j : 6 * j + 6]) for j, s in enumerate(ordered)})
        return results

    def _raw(self, script: Script, keys: list[str], args: list[object]) -> bytes:
        """Run `script` and return its reply undecoded: the client decodes replies as text, and
        msgpack is binary. Loads the script where the server lacks it (restarted, flushed)."""

        def run() -> bytes:
            return self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **{NEVER_DECODE: []}
            )

        try:
            return run()
        except NoScriptError:
            script.sha = self.client.script_load(script.script)
            return run()


def _stats(seconds: int, fields: Sequence[int | str]) -> WindowStats:
    """One window from the script's six fields: cents volume, buys, sells; trades; prices."""
    vol, buy, sell, trades, open_price, last_price = fields
    return WindowStats(
        seconds,
        int(vol) / 100,
        int(buy) / 100,
        int(sell) / 100,
        int(trades),
        float(open_price) if open_price else 0.0,
        float(last_price) if last_price else 0.0,
    )
