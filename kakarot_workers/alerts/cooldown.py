"""Cooldown per (task, token) in Redis: after an alert, the token stays quiet for a while.

Claimed atomically for a whole micro-batch in one script. The key holds the id of the event that
claimed it, so the same event claiming again (a re-delivered message, a retry after a database
error) still gets it: a worker dying between the claim and the commit cannot swallow the alert.
The length comes from `rules.cooldown_seconds` (tiered by market cap, overridable per config).

A held cooldown only runs out: nothing shortens it. So each process remembers the holder and
the end of every cooldown it has seen (the script returns them), and answers a claim on a token
it knows to be cooling down without a round trip: a hot token that keeps triggering costs Redis
nothing until its cooldown ends. The remembered end is earlier than the real one (it is counted
from before the call), so a claim is never refused that Redis would grant.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import redis

from kakarot_workers.keys import Keys

CLAIM = (Path(__file__).with_name("lua") / "cooldown_claim.lua").read_text()
# Remembered cooldowns are dropped once this many are held and some have ended.
_REMEMBER_MAX = 100_000


@dataclass(frozen=True, slots=True)
class Claim:
    task_id: int
    ca: str
    event_id: str
    seconds: int


class Cooldowns:
    """The cooldowns of one Redis, and those this process has seen held (safe across threads:
    an entry is only ever replaced by a newer one, and a stale read just asks Redis)."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.keys = keys
        self._claim = client.register_script(CLAIM)
        self._held: dict[tuple[int, str], tuple[str, float]] = {}  # → holder, end (monotonic)

    def claim(self, claims: Sequence[Claim]) -> list[bool]:
        """Claim each in order; True where the event may alert."""
        results: list[bool | None] = [None] * len(claims)
        asked: list[int] = []
        now = time.monotonic()
        for i, c in enumerate(claims):
            held = self._held.get((c.task_id, c.ca))
            if c.seconds <= 0:  # no cooldown
                results[i] = True
            elif held is not None and now < held[1]:
                results[i] = held[0] == c.event_id
            else:
                asked.append(i)
        if asked:
            keys = [self.keys.cooldown(claims[i].task_id, claims[i].ca) for i in asked]
            argv: list[str | int] = []
            for i in asked:
                argv += [claims[i].event_id, claims[i].seconds * 1000]
            reply = self._claim(keys=keys, args=argv)
            for n, i in enumerate(asked):
                won, holder, left_ms = reply[3 * n : 3 * n + 3]
                results[i] = bool(won)
                if int(left_ms) > 0:
                    self._held[(claims[i].task_id, claims[i].ca)] = (holder, now + left_ms / 1000)
            self._forget_ended(now)
        return [bool(r) for r in results]

    def forget(self) -> None:
        """Forget the cooldowns seen (Redis was flushed or replaced: tests, tools)."""
        self._held.clear()

    def _forget_ended(self, now: float) -> None:
        if len(self._held) > _REMEMBER_MAX:
            held = self._held.copy()  # one step under the GIL: other threads may be adding
            self._held = {k: v for k, v in held.items() if v[1] > now}
