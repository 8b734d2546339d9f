"""Sliding windows per (task, token) in Redis: volume, buys, sells, trades, open and last price.

One Lua script call per micro-batch updates every window its events touch, atomically, so any
number of alert workers may feed the same token. A window covers (head − W, head], head being the
newest trade seen: a late trade still inside it counts, one older is ignored. A trade is added
once (its id is the sorted-set member), and what it first saw is stored with it (`v:{id}`), so a
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

# KEYS: per window k, KEYS[2k-1] entries (zset) and KEYS[2k] state (hash).
# ARGV: per trade 7 values: k, window ms, trade id, ts ms, cents, price, side ('b'|'s').
# Returns per trade "volume|buys|sells|trades|open price|last price" (cents, price text).
_OBSERVE = """
local function parse(member)
  local a = string.find(member, '|', 1, true)
  local b = string.find(member, '|', a + 1, true)
  local c = string.find(member, '|', b + 1, true)
  return string.sub(member, 1, a - 1), tonumber(string.sub(member, a + 1, b - 1)),
         string.sub(member, b + 1, c - 1), string.sub(member, c + 1)
end
local function stats(z, h)
  local sums = redis.call('HMGET', h, 'vol', 'buy', 'sell', 'n')
  local first = redis.call('ZRANGE', z, 0, 0)
  local last = redis.call('ZRANGE', z, -1, -1)
  local open_price, last_price = '', ''
  if first[1] then local _, _, p = parse(first[1]); open_price = p end
  if last[1] then local _, _, p = parse(last[1]); last_price = p end
  return (sums[1] or '0') .. '|' .. (sums[2] or '0') .. '|' .. (sums[3] or '0') .. '|' ..
         (sums[4] or '0') .. '|' .. open_price .. '|' .. last_price
end
local out = {}
local i = 1
while i <= #ARGV do
  local k, w, id = tonumber(ARGV[i]), tonumber(ARGV[i + 1]), ARGV[i + 2]
  local ts, cents, price, side = tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  i = i + 7
  local z, h = KEYS[2 * k - 1], KEYS[2 * k]
  local seen = redis.call('HGET', h, 'v:' .. id)
  if seen then
    out[#out + 1] = seen
  else
    local head = tonumber(redis.call('HGET', h, 'head'))
    local fresh = head == nil or ts > head - w
    local member = id .. '|' .. cents .. '|' .. price .. '|' .. side
    if fresh and redis.call('ZADD', z, 'NX', ts, member) == 1 then
      redis.call('HINCRBY', h, 'vol', cents)
      redis.call('HINCRBY', h, side == 'b' and 'buy' or 'sell', cents)
      redis.call('HINCRBY', h, 'n', 1)
      if head == nil or ts > head then
        redis.call('HSET', h, 'head', ts)
        local cutoff = ts - w
        local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
        for _, m in ipairs(old) do
          local oid, oc, _, os = parse(m)
          redis.call('HINCRBY', h, 'vol', -oc)
          redis.call('HINCRBY', h, os == 'b' and 'buy' or 'sell', -oc)
          redis.call('HINCRBY', h, 'n', -1)
          redis.call('HDEL', h, 'v:' .. oid)
        end
        if #old > 0 then redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff) end
      end
    end
    local result = stats(z, h)
    if fresh then redis.call('HSET', h, 'v:' .. id, result) end
    out[#out + 1] = result
  end
  redis.call('PEXPIRE', z, 2 * w + 60000)
  redis.call('PEXPIRE', h, 2 * w + 60000)
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
        argv: list[str | int] = []
        for obs in observations:
            event = obs.event
            slot = (obs.task_id, event.ca, obs.seconds)
            index = slots.get(slot)
            if index is None:
                index = slots[slot] = len(slots) + 1
                keys.append(self.keys.window_entries(*slot))
                keys.append(self.keys.window_state(*slot))
            argv += [
                index,
                obs.seconds * 1000,
                f"{event.tx_hash}:{event.log_index}",
                event.ts_ms,
                round(event.amount_usd * 100),
                repr(event.price_usd),
                "b" if event.side == "buy" else "s",
            ]
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
