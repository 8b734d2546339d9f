"""Sliding windows per (task, token) in Redis: volume, buys, sells, trades, open and last price.

One Lua script call per micro-batch updates every window its events touch, atomically, so any
number of alert workers may feed the same token. A window covers (head − W, head], head being the
newest trade seen: a late trade still inside it counts, one older is ignored. A trade is added
once (its id is the sorted-set member), and what it first saw is stored beside it (`seen`), so a
re-delivered message judges its events exactly as the first pass did. Sums are integer cents:
exact, whatever the order of additions and expiries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import redis

from kakarot_workers.events import SwapEvent
from kakarot_workers.keys import Keys
from kakarot_workers.rules import WindowStats

# KEYS: per token k, KEYS[3k-2] trades (zset of "id|cents|price|side" by ts ms, kept for the
# longest window), KEYS[3k-1] state (hash: "head"/"hm" the newest trade's ts and member; per
# window length w in ms: "v:w" "b:w" "s:w" "n:w" sums in cents and count, "o:w" "m:w" the
# window's first trade), KEYS[3k] what each trade first saw (hash id → result).
# ARGV: first the number of tokens T, then per token its window lengths "w1,w2,…" (ms,
# ascending), then per trade one string "k|ts ms|cents|price|side|trade id" (side 'b' or 's').
# Returns per trade, per window "volume|buys|sells|trades|open price|last price" joined by ";".
# A new trade costs one HMGET, one ZADD and two HSETs; the zset is read only when trades leave
# a window. Ties on ts are broken by member, so results do not depend on arrival order.
_OBSERVE = """
local function split(text, sep, count)
  local out, start = {}, 1
  for _ = 1, count - 1 do
    local stop = string.find(text, sep, start, true)
    out[#out + 1] = string.sub(text, start, stop - 1)
    start = stop + 1
  end
  out[#out + 1] = string.sub(text, start)
  return out
end
local function parse(member)  -- "id|cents|price|side"
  local f = split(member, '|', 4)
  return f[1], tonumber(f[2]), f[3], f[4]
end
local function price_of(member)
  if not member then return '' end
  local _, _, p = parse(member)
  return p
end
local tokens = tonumber(ARGV[1])
local lengths, fieldnames = {}, {}
for k = 1, tokens do
  local ws, names = {}, {'head', 'hm'}
  for w in string.gmatch(ARGV[1 + k], '%d+') do
    ws[#ws + 1] = tonumber(w)
    for _, f in ipairs({'v:', 'b:', 's:', 'n:', 'o:', 'm:'}) do names[#names + 1] = f .. w end
  end
  lengths[k], fieldnames[k] = ws, names
end
local function result_of(ws, st, hm)
  local parts = {}
  for j, w in ipairs(ws) do
    local x = st[j]
    parts[j] = string.format('%d|%d|%d|%d|', x.v, x.b, x.s, x.n) .. price_of(x.m) .. '|' ..
               price_of(hm)
  end
  return table.concat(parts, ';')
end
local out = {}
for i = tokens + 2, #ARGV do
  local f = split(ARGV[i], '|', 6)
  local k, ts, cents, price, side, id =
    tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), f[4], f[5], f[6]
  local z, h, seen = KEYS[3 * k - 2], KEYS[3 * k - 1], KEYS[3 * k]
  local ws = lengths[k]
  local longest = ws[#ws]
  local raw = redis.call('HMGET', h, unpack(fieldnames[k]))
  local head, hm = tonumber(raw[1]), raw[2]
  local st = {}
  for j, w in ipairs(ws) do
    local b = 2 + 6 * (j - 1)
    st[j] = {v = tonumber(raw[b + 1] or 0), b = tonumber(raw[b + 2] or 0),
             s = tonumber(raw[b + 3] or 0), n = tonumber(raw[b + 4]), o = tonumber(raw[b + 5]),
             m = raw[b + 6]}
    if st[j].n == nil then  -- a window length new to this token: build it from the trades
      st[j].n = 0
      if head ~= nil then
        local inside = redis.call('ZRANGEBYSCORE', z, '(' .. (head - w), '+inf', 'WITHSCORES')
        for x = 1, #inside, 2 do
          local _, c, _, sd = parse(inside[x])
          st[j].v, st[j].n = st[j].v + c, st[j].n + 1
          if sd == 'b' then st[j].b = st[j].b + c else st[j].s = st[j].s + c end
          if x == 1 then st[j].o, st[j].m = tonumber(inside[x + 1]), inside[x] end
        end
      end
    end
  end
  local fresh = head == nil or ts > head - longest
  local member = id .. '|' .. f[3] .. '|' .. price .. '|' .. side
  local result = nil
  if fresh and redis.call('ZADD', z, 'NX', ts, member) == 0 then
    result = redis.call('HGET', seen, id)  -- seen before: judged as it was then
  elseif fresh then
    if head == nil or ts > head or (ts == head and member > hm) then head, hm = ts, member end
    local fields = {'head', head, 'hm', hm}
    for j, w in ipairs(ws) do
      local x = st[j]
      if ts > head - w then
        x.v, x.n = x.v + cents, x.n + 1
        if side == 'b' then x.b = x.b + cents else x.s = x.s + cents end
        if x.o == nil or ts < x.o or (ts == x.o and member < x.m) then x.o, x.m = ts, member end
      end
      if x.o ~= nil and x.o <= head - w then
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
        end
        local first = redis.call('ZRANGEBYSCORE', z, '(' .. (head - w), '+inf', 'WITHSCORES',
                                 'LIMIT', 0, 1)
        x.o, x.m = tonumber(first[2]), first[1]
      end
      fields[#fields + 1] = 'v:' .. w; fields[#fields + 1] = x.v
      fields[#fields + 1] = 'b:' .. w; fields[#fields + 1] = x.b
      fields[#fields + 1] = 's:' .. w; fields[#fields + 1] = x.s
      fields[#fields + 1] = 'n:' .. w; fields[#fields + 1] = x.n
      fields[#fields + 1] = 'o:' .. w; fields[#fields + 1] = x.o
      fields[#fields + 1] = 'm:' .. w; fields[#fields + 1] = x.m
    end
    result = result_of(ws, st, hm)
    redis.call('HSET', h, unpack(fields))
    redis.call('HSET', seen, id, result)
  end
  out[#out + 1] = result or result_of(ws, st, hm)
end
for k = 1, tokens do
  local ttl = 2 * lengths[k][#lengths[k]] + 60000
  for j = 3 * k - 2, 3 * k do redis.call('PEXPIRE', KEYS[j], ttl) end
end
return out
"""


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

    def snapshot(self, task_id: int, ca: str, seconds: int) -> WindowStats:
        """The window as it stands now (read-only; for tools and tests)."""
        w = seconds * 1000
        names = ["hm", f"v:{w}", f"b:{w}", f"s:{w}", f"n:{w}", f"m:{w}"]
        hm, vol, buy, sell, n, first = self.client.hmget(self.keys.window_state(task_id, ca), names)
        prices = [_price(member) if member else "" for member in (first, hm)]
        return _stats(seconds, "|".join([*(str(v or 0) for v in (vol, buy, sell, n)), *prices]))

    def observe(self, observations: Sequence[Observation]) -> list[dict[int, WindowStats]]:
        """Add each trade to its token's windows (once, ever) and return, per trade, each
        window (by length in seconds) as the trade saw it."""
        if not observations:
            return []
        slots: dict[tuple[int, str], int] = {}
        keys: list[str] = []
        lengths: list[str] = []
        trades: list[str] = []
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
                lengths.append(",".join(str(s * 1000) for s in sorted(obs.seconds)))
            trades.append(
                f"{index}|{event.ts_ms}|{round(event.amount_usd * 100)}|{event.price_usd!r}|"
                f"{'b' if event.side == 'buy' else 's'}|{event.tx_hash}:{event.log_index}"
            )
        replies = self._observe(keys=keys, args=[len(slots), *lengths, *trades])
        results = []
        for obs, reply in zip(observations, replies, strict=True):
            text = reply.decode() if isinstance(reply, bytes) else reply
            ordered = sorted(obs.seconds)
            results.append(
                {s: _stats(s, part) for s, part in zip(ordered, text.split(";"), strict=True)}
            )
        return results


def _price(member: str | bytes) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.split("|")[2]


def _stats(seconds: int, text: str) -> WindowStats:
    vol, buy, sell, trades, open_price, last_price = text.split("|")
    return WindowStats(
        seconds=seconds,
        volume_usd=int(vol) / 100,
        buy_usd=int(buy) / 100,
        sell_usd=int(sell) / 100,
        trades=int(trades),
        open_price=float(open_price) if open_price else 0.0,
        last_price=float(last_price) if last_price else 0.0,
    )
