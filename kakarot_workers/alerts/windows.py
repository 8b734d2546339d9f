"""Sliding windows per (task, token) in Redis: volume, buys, sells, trades, open and last price.

One Lua script call per micro-batch updates every window its events touch, atomically, so any
number of alert workers may feed the same token. A window covers (head − W, head], head being the
newest trade seen: a late trade still inside it counts, one older is ignored. A trade is added
once, by its identity (chain, tx hash, log index), whatever values a later copy carries, and what
it first saw is stored beside it (`seen`): a re-delivered message judges its events exactly as
the first pass did, and a copy with other values (a back-fill that priced it differently) is a
*conflict*: the first copy wins, the other is not judged (`observe` gives None for it). What a
*quiet* trade saw (one its caller will not read) is neither stored nor returned. Sums
are integer cents: exact, whatever the order of additions and expiries. The scripts are
`lua/window_*.lua`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import msgpack
import redis
from redis.client import NEVER_DECODE
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from kakarot_workers.alerts.rules import WindowStats
from kakarot_workers.events import SwapEvent
from kakarot_workers.keys import Keys

_LUA = Path(__file__).with_name("lua")
_STATE = (_LUA / "window_state.lua").read_text()
OBSERVE = _STATE + (_LUA / "window_observe.lua").read_text()
SNAPSHOT = _STATE + (_LUA / "window_snapshot.lua").read_text()
RETRACT = _STATE + (_LUA / "window_retract.lua").read_text()


@dataclass(frozen=True, slots=True)
class Observation:
    """One trade seen through its task's windows (their lengths in seconds). `quiet`: the caller
    will not read what the trade saw (an amount gate turns it away, `rules.reads_windows`); it
    counts in the windows all the same, and costs the script less."""

    task_id: int
    seconds: tuple[int, ...]
    event: SwapEvent
    quiet: bool = False


UNREAD: Mapping[int, WindowStats] = MappingProxyType({})
"""What `observe` gives for a quiet trade: no windows."""


class Windows:
    """The window store of one Redis; `observe` is safe from any number of processes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._observe = client.register_script(OBSERVE)
        self._snapshot = client.register_script(SNAPSHOT)
        self._retract = client.register_script(RETRACT)

    def snapshot(self, task_id: int, ca: str, seconds: int) -> WindowStats:
        """The window as it stands now (read-only; for tools and tests)."""
        reply = self._snapshot(keys=[self.keys.window_state(task_id, ca)], args=[seconds * 1000])
        return _stats(seconds, reply)

    def retract(self, task_id: int, ca: str, key: str) -> bool:
        """Take the trade `key` (`chain:tx_hash:log_index`) out of its token's windows (a chain
        re-org withdrew it); False when it was not in them."""
        keys = [
            self.keys.window_entries(task_id, ca),
            self.keys.window_state(task_id, ca),
            self.keys.window_seen(task_id, ca),
        ]
        return bool(self._retract(keys=keys, args=[key]))

    def observe(
        self, observations: Sequence[Observation]
    ) -> list[Mapping[int, WindowStats] | None]:
        """Add each trade to its token's windows (once, ever, by identity) and return, per
        trade, each window (by length in seconds) as the trade saw it (`UNREAD` for a quiet
        one); None for a copy of a trade already counted with other values (a conflict: the
        first copy wins)."""
        if not observations:
            return []
        window_entries, window_state, window_seen = (
            self.keys.window_entries,
            self.keys.window_state,
            self.keys.window_seen,
        )
        slots: dict[tuple[int, str], int] = {}
        keys: list[str] = []
        specs: dict[tuple[int, ...], int] = {}  # window-length set (ms) → its index (1-based)
        spec_of: list[int] = []  # per token
        ordered: dict[tuple[int, ...], tuple[int, ...]] = {}  # lengths as given → ascending
        trades: list[object] = []
        add = trades.extend
        for obs in observations:
            event = obs.event
            slot = (obs.task_id, event.ca)
            index = slots.get(slot)
            seconds = ordered.get(obs.seconds)
            if seconds is None:
                seconds = ordered[obs.seconds] = tuple(sorted(obs.seconds))
            if index is None:
                index = slots[slot] = len(slots) + 1
                keys += [window_entries(*slot), window_state(*slot), window_seen(*slot)]
                spec = tuple(s * 1000 for s in seconds)
                spec_of.append(specs.setdefault(spec, len(specs) + 1))
            add(
                (
                    index,
                    event.ts_ms,
                    round(event.amount_usd * 100),
                    repr(event.price_usd),
                    "b" if event.side == "buy" else "s",
                    event.key,
                    obs.quiet,
                )
            )
        batch = msgpack.packb([list(specs), spec_of, trades])
        *replies, conflicts = msgpack.unpackb(
            self._raw(self._observe, keys, [int(time.time() * 1000), batch])
        )
        results: list[Mapping[int, WindowStats] | None] = [
            UNREAD if obs.quiet else SeenWindows(ordered[obs.seconds], reply)
            for obs, reply in zip(observations, replies, strict=True)
        ]
        for position in conflicts:
            results[position - 1] = None
        return results

    def _raw(self, script: Script, keys: list[str], args: list[object]) -> bytes:
        """Run `script` and return its reply undecoded: the client decodes replies as text, and
        msgpack is binary. Loads the script where the server lacks it (restarted, flushed)."""

        def run() -> bytes:
            reply: bytes = self.client.execute_command(
                "EVALSHA", script.sha, len(keys), *keys, *args, **{NEVER_DECODE: []}
            )
            return reply

        try:
            return run()
        except NoScriptError:
            script.sha = self.client.script_load(script.script)
            return run()


class SeenWindows(Mapping[int, WindowStats]):
    """A trade's windows (by length in seconds) as the script replied them, each made a
    `WindowStats` only when read: a trade's rules often read one of them, or none (a trigger
    that turns it away first)."""

    __slots__ = ("_seconds", "_reply", "_made")

    def __init__(self, seconds: Sequence[int], reply: Sequence[int | str]) -> None:
        self._seconds = seconds  # ascending: the script's order
        self._reply = reply
        self._made: dict[int, WindowStats] = {}

    def __getitem__(self, seconds: int) -> WindowStats:
        made = self._made.get(seconds)
        if made is None:
            j = self._seconds.index(seconds)  # ValueError: not one of them
            made = self._made[seconds] = _stats(seconds, self._reply[6 * j : 6 * j + 6])
        return made

    def get(self, seconds: int, default: Any = None) -> Any:
        return self[seconds] if seconds in self._seconds else default

    def __contains__(self, seconds: object) -> bool:
        return seconds in self._seconds

    def __iter__(self) -> Iterator[int]:
        return iter(self._seconds)

    def __len__(self) -> int:
        return len(self._seconds)

    def __repr__(self) -> str:
        return repr(dict(self))


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
