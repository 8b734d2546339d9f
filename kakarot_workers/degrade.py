"""Degradation levels (the design notes, seed 002): as the `alerts` queue's backlog grows, the
fleet sheds work in order, never events.

- level 1 (backlog ≥ `degrade_backlog[0]` messages): the alert pool asks the metrics provider
  nothing, it judges with the cached metrics (an alert lacking one is marked incomplete);
- level 2 (≥ `[1]`): stream consumers send micro-batches `WIDEN`× as big and as long: fewer,
  bigger messages for the pool;
- level 3 (≥ `[2]`): alerts go out as digests, one message per task and channel every
  `DIGEST_S` (a task with a longer digest keeps it).

A level is left once the backlog falls below half its threshold, so the fleet does not flap at a
threshold. Every process reads the backlog itself (consumers once a second already, the pool at
most once a second) and says each change in a log line and in `kakarot_degradation_level`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from kakarot_workers import metrics

log = logging.getLogger(__name__)

WIDEN = 4
DIGEST_S = 60
HYSTERESIS = 0.5
WHAT = {
    1: "metric lookups skipped (cached metrics only)",
    2: f"micro-batches {WIDEN}× wider",
    3: f"notifications as {DIGEST_S}s digests",
}


class Degradation:
    """The level of one process, from the backlogs it reads (`update`)."""

    def __init__(self, thresholds: Sequence[int], who: str) -> None:
        self.thresholds = list(thresholds)
        self.who = who
        self.level = 0

    def update(self, backlog: int) -> int:
        """The level for this backlog: up to the highest threshold reached; down only below
        half of the current level's threshold."""
        level = self.level
        while level < len(self.thresholds) and backlog >= self.thresholds[level]:
            level += 1
        while level > 0 and backlog < self.thresholds[level - 1] * HYSTERESIS:
            level -= 1
        if level != self.level:
            said = "; ".join(WHAT[n] for n in range(1, level + 1)) or "normal"
            (log.warning if level > self.level else log.info)(
                "%s: alerts backlog %d: degradation level %d → %d (%s)",
                self.who,
                backlog,
                self.level,
                level,
                said,
            )
            self.level = level
            metrics.DEGRADATION_LEVEL.set(level)
        return level


class Sampled(Degradation):
    """A level read at most every `every_s` (the backlog read by `read`)."""

    def __init__(
        self,
        thresholds: Sequence[int],
        who: str,
        read: Callable[[], int],
        every_s: float = 1.0,
    ) -> None:
        super().__init__(thresholds, who)
        self.read = read
        self.every_s = every_s
        self._next = 0.0

    def current(self) -> int:
        now = time.monotonic()
        if self.thresholds and now >= self._next:
            self._next = now + self.every_s
            try:
                self.update(self.read())
            except Exception as exc:  # noqa: BLE001 - Redis away: keep the level
                log.debug("degradation: backlog not read (%s)", exc)
        return self.level
