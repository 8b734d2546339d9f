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

# KEYS: per window k, KEYS[3k-2] entries (zset of "id|cents|price|side" by ts ms), KEYS[3k-1]
# state (hash: head ts and member, open ts and member, sums in cents, trade count), KEYS[3k]
# what each trade first saw (hash id → result; apart, so the state stays small).
# ARGV: per trade one string "k|window ms|ts ms|cents|price|side|trade id" (side 'b' or 's').
# Returns per trade "volume|buys|sells|trades|open price|last price" (cents, price text).
# A new trade costs one HMGET, one ZADD and two HSETs; the zset is read only when trades leave
# the window. Ties on ts are broken by member, so the result does not depend on arrival order.
_OBSERVE = """
local function fields(text)
  local out, start = {}, 1
  for _ = 1, 6 do
    local stop = string.find(text, '|', start, true)
    out[#out + 1] = string.sub(text, start, stop - 1)
    start = stop + 1
  end
  out[#out + 1] = string.sub(text, start)
  return out
end
local function parse(member)  -- "id|cents|price|side"
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  local c = string.find(member, '|', b + 1, true)
  return string.sub(member, 1, a - 1), tonumber(string.sub(member, a + 1, b - 1)),
         string.sub(member, b + 1, c - 1), string.sub(member, c + 1)
end
local function price_of(member)
  if not member then return '' end
  local _, _, p = parse(member)
  return p
end
local out, touched = {}, {}
for i = 1, #ARGV do
  local f = fields(ARGV[i])
  local k, w, ts, cents, price, side, id =
    tonumber(f[1]), tonumber(f[2]), tonumber(f[3]), tonumber(f[4]), f[5], f[6], f[7]
  local z, h, seen = KEYS[3 * k - 2], KEYS[3 * k - 1], KEYS[3 * k]
  touched[k] = w
  local s = redis.call('HMGET', h, 'head', 'hm', 'ots', 'om', 'vol', 'buy', 'sell', 'n')
  local head, hm, ots, om = tonumber(s[1]), s[2], tonumber(s[3]), s[4]
  local vol, buy, sell, n = tonumber(s[5] or 0), tonumber(s[6] or 0), tonumber(s[7] or 0),
                            tonumber(s[8] or 0)
  local fresh = head == nil or ts > head - w
  local member = id .. '|' .. f[4] .. '|' .. price .. '|' .. side
  local result = nil
  if fresh and redis.call('ZADD', z, 'NX', ts, member) == 0 then
    result = redis.call('HGET', seen, id)  -- seen before: judged as it was then
  elseif fresh then
    vol, n = vol + cents, n + 1
    if side == 'b' then buy = buy + cents else sell = sell + cents end
    if head == nil or ts > head or (ts == head and member > hm) then head, hm = ts, member end
    if ots == nil or ts < ots or (ts == ots and member < om) then ots, om = ts, member end
    if ots <= head - w then
      local old = redis.call('ZRANGEBYSCORE', z, '-inf', head - w)
      local gone = {}
      for _, m in ipairs(old) do
        local oid, oc, _, os = parse(m)
        vol, n = vol - oc, n - 1
        if os == 'b' then buy = buy - oc else sell = sell - oc end
        gone[#gone + 1] = oid
      end
      redis.call('ZREMRANGEBYSCORE', z, '-inf', head - w)
      for from = 1, #gone, 1000 do  -- unpack has a stack limit
        redis.call('HDEL', seen, unpack(gone, from, math.min(from + 999, #gone)))
      end
      local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
      ots, om = tonumber(first[2]), first[1]
    end
    result = string.format('%d|%d|%d|%d|', vol, buy, sell, n) .. price_of(om) .. '|' ..
             price_of(hm)
    redis.call('HSET', h, 'head', head, 'hm', hm, 'ots', ots, 'om', om, 'vol', vol,
               'buy', buy, 'sell', sell, 'n', n)
    redis.call('HSET', seen, id, result)
  end
  if not result then  -- too old for the window, or its first result expired with it
    result = string.format('%d|%d|%d|%d|', vol, buy, sell, n) .. price_of(om) .. '|' ..
             price_of(hm)
  end
  out[i] = result
end
for k, w in pairs(touched) do
  for j = 3 * k - 2, 3 * k do redis.call('PEXPIRE', KEYS[j], 2 * w + 60000) end
end
return out
"""


@dataclass(frozen=True, slots=True)
class Observation:
    """One trade seen through one of its task's windows."""

    task_id: int
    seconds: int
    event: SwapEvent


class Windows:
    """The window store of one Redis; `observe` is safe from any number of processes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._observe = client.register_script(_OBSERVE)

    def snapshot(self, task_id: int, ca: str, seconds: int) -> WindowStats:
        """The window as it stands now (read-only; for tools and tests)."""
        entries = self.keys.window_entries(task_id, ca, seconds)
        pipe = self.client.pipeline(transaction=True)
        pipe.hmget(self.keys.window_state(task_id, ca, seconds), ["vol", "buy", "sell", "n"])
        pipe.zrange(entries, 0, 0)
        pipe.zrange(entries, -1, -1)
        sums, first, last = pipe.execute()
        prices = [_price(found[0]) if found else "" for found in (first, last)]
        return _stats(seconds, "|".join([*(str(v or 0) for v in sums), *prices]))

    def observe(self, observations: Sequence[Observation]) -> list[WindowStats]:
        """Add each trade to its window (once, ever) and return the window as the trade saw it."""
        if not observations:
            return []
        slots: dict[tuple[int, str, int], int] = {}
        keys: list[str] = []
        argv: list[str] = []
        for obs in observations:
            event = obs.event
            slot = (obs.task_id, event.ca, obs.seconds)
            index = slots.get(slot)
            if index is None:
                index = slots[slot] = len(slots) + 1
                keys.append(self.keys.window_entries(*slot))
                keys.append(self.keys.window_state(*slot))
                keys.append(self.keys.window_seen(*slot))
            argv.append(
                f"{index}|{obs.seconds * 1000}|{event.ts_ms}|{round(event.amount_usd * 100)}|"
                f"{event.price_usd!r}|{'b' if event.side == 'buy' else 's'}|"
                f"{event.tx_hash}:{event.log_index}"
            )
        replies = self._observe(keys=keys, args=argv)
        return [
            _stats(obs.seconds, reply) for obs, reply in zip(observations, replies, strict=True)
        ]


def _price(member: str | bytes) -> str:
    text = member.decode() if isinstance(member, bytes) else member
    return text.split("|")[2]


def _stats(seconds: int, reply: str | bytes) -> WindowStats:
    text = reply.decode() if isinstance(reply, bytes) else reply
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
