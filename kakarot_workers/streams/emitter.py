"""How events leave a consumer: in micro-batches, and through a Redis outage without loss.

`EventBatcher` groups events (of any type; a consumer's are `SwapEvent`s, packed into one message
per group when sent): a group is full at `max_events` and due `max_ms` after its first event.
`Emitter` sends each group to the alert pool; when the broker (Redis) cannot take it, the group
is kept, in order, and sent before anything newer once the broker answers again (tried at most
every `RETRY_S`, so a consumer keeps reading its source meanwhile). After a failure the emitter
is `held` until the consumer has confirmed its lease with Redis (`resume`): events kept under a
lease that expired meanwhile must go out with the token of the lease taken again, or the alert
pool would fence them off (the consumer stamps each group with its lease's token as it sends
it). What is kept is bounded (`cap_events`): beyond it the newest groups are dropped and
counted, never the oldest.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

import kombu.exceptions
import redis

log = logging.getLogger(__name__)

E = TypeVar("E")


class LeaseUnconfirmed(ConnectionError):
    """Not sent: the consumer has not confirmed its lease for a full TTL (it was paused, or Redis
    is away), so it cannot prove the batch is still its own; kept until it has."""


# What a send raises while the broker is away (kombu wraps redis-py's connection errors), or
# the consumer may not send.
BROKER_DOWN = (kombu.exceptions.OperationalError, redis.RedisError, ConnectionError, OSError)
RETRY_S = 1.0


class EventBatcher(Generic[E]):
    """Collects events and hands them on in groups: full at `max_events`, due after `max_ms`."""

    def __init__(
        self,
        max_events: int,
        max_ms: int,
        send: Callable[[list[E]], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.max_s = max_ms / 1000
        self.send = send
        self.clock = clock
        self.pending: list[E] = []
        self._first_at = 0.0

    def add(self, event: E) -> None:
        if not self.pending:
            self._first_at = self.clock()
        self.pending.append(event)
        if len(self.pending) >= self.max_events:
            self.flush()

    def flush_if_due(self) -> None:
        if self.pending and self.clock() - self._first_at >= self.max_s:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            events, self.pending = self.pending, []
            self.send(events)


class Emitter(Generic[E]):
    """Sends groups of events with `send`; keeps them while the broker is away (see module)."""

    def __init__(
        self,
        send: Callable[[list[E]], None],
        cap_events: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.send = send
        self.cap_events = cap_events
        self.clock = clock
        self.unsent: deque[list[E]] = deque()
        self.unsent_events = 0
        self.dropped = 0  # events dropped because the buffer was full
        self.sent_events = 0
        self._next_try = 0.0
        self._down_since: float | None = None
        self.held = False  # after a failure, until `resume`

    @property
    def broker_down(self) -> bool:
        return self._down_since is not None

    def emit(self, events: list[E]) -> None:
        """Send `events` now, or keep them behind those already waiting."""
        if self.held or self.unsent or self.clock() < self._next_try:
            self._keep(events)
            self.retry()
            return
        try:
            self.send(events)
        except BROKER_DOWN as exc:
            self._failed(exc)
            self._keep(events)
            return
        self.sent_events += len(events)

    def retry(self) -> None:
        """Send what is kept, oldest first, if it is time to try again; stop at a failure."""
        if self.held or not self.unsent or self.clock() < self._next_try:
            return
        while self.unsent:
            events = self.unsent[0]
            try:
                self.send(events)
            except BROKER_DOWN as exc:
                self._failed(exc)
                return
            self.unsent.popleft()
            self.unsent_events -= len(events)
            self.sent_events += len(events)
        if self._down_since is not None:
            log.warning(
                "broker back after %.1fs; every kept event sent", self.clock() - self._down_since
            )
            self._down_since = None

    def resume(self) -> None:
        """The consumer's lease is confirmed: what is kept may go out."""
        self.held = False
        self._next_try = 0.0

    def keep_only(self, wanted: Callable[[E], bool]) -> int:
        """Drop the kept events that are not `wanted` (a re-org retracted them); how many."""
        before = self.unsent_events
        groups = [[e for e in events if wanted(e)] for events in self.unsent]
        self.unsent = deque(g for g in groups if g)
        self.unsent_events = sum(len(g) for g in self.unsent)
        return before - self.unsent_events

    def _keep(self, events: list[E]) -> None:
        if self.unsent_events + len(events) > self.cap_events:
            self.dropped += len(events)
            return
        self.unsent.append(events)
        self.unsent_events += len(events)

    def _failed(self, exc: BaseException) -> None:
        now = self.clock()
        self._next_try = now + RETRY_S
        self.held = True
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "broker unreachable (%s: %s); keeping events (at most %d) until it is back",
                type(exc).__name__,
                str(exc)[:200],
                self.cap_events,
            )
