"""A hot standby per feed batch (`KAKAROT_STANDBY=true`): nothing lost when its owner dies.

A feed (the simulator, the market-data feed) cannot replay: its protocol has no sequence number
and no "since", so what a consumer had not sent when it died, and what the feed pushed to it
while it was paused, is gone with it. So a second consumer, on another node, subscribes to the
same tokens and keeps the last `standby_buffer_s` seconds of trades (`Buffer`). The owner writes
the last trade it sent (`batch_sent_mark`) right after each send. The standby looks at the
batch's lease every `standby_check_s`; once it is free (the owner died, was paused past its
TTL, or released it to hand the batch over), the standby takes it (a new fencing token: what the
paused owner sends after that is refused), sends from its buffer exactly the trades after the
owner's mark, and serves on as the owner on the subscription it already holds: no gap, no
replay of the feed. The mark is written after the send, so an owner killed between the two has
its last micro-batch sent twice; the alert pool counts a trade once by its identity (`windows`)
and records an alert once (its de-duplication key), so the copy changes nothing.

The owner asks for a standby (`ensure`) while it serves and none is claimed, if another live
streams node could run it; a `stand_by` task received on the owner's own node is passed on.
EVM batches need none: a successor back-fills from the checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from kakarot_workers import metrics, queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.events import SwapEvent
from kakarot_workers.keys import Keys
from kakarot_workers.settings import get_settings
from kakarot_workers.sources import Retraction, Source, SourceStats
from kakarot_workers.streams import leases
from kakarot_workers.streams.leases import Lease
from kakarot_workers.streams.node import could_take_a_batch, live_nodes

log = logging.getLogger(__name__)

# The owner asks for a standby at most this often, and the request is pending this long.
ENSURE_EVERY_S = 5.0
DISPATCH_MARKER_S = 15.0
# A `stand_by` received on the owner's node is passed on at most this many times.
MAX_PASSES = 10


@dataclass(frozen=True, slots=True)
class Mark:
    """The last trade an owner sent."""

    tx_hash: str
    log_index: int
    ts_ms: int

    def encode(self) -> str:
        return f"{self.tx_hash}|{self.log_index}|{self.ts_ms}"

    @classmethod
    def decode(cls, text: str | None) -> Mark | None:
        if not text:
            return None
        try:
            tx_hash, log_index, ts_ms = text.rsplit("|", 2)
            return cls(tx_hash, int(log_index), int(ts_ms))
        except ValueError:
            return None


def mark_of(event: SwapEvent) -> Mark:
    return Mark(event.tx_hash, event.log_index, event.ts_ms)


class Buffer:
    """The trades of the last `keep_s` seconds (by arrival), in arrival order."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._items: deque[tuple[float, SwapEvent]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, event: SwapEvent, now: float) -> None:
        self._items.append((now, event))
        self.trim(now)

    def trim(self, now: float) -> None:
        while self._items and now - self._items[0][0] > self.keep_s:
            self._items.popleft()

    def drop(self, gone: Retraction) -> None:
        """A re-org withdrew a trade: it is not sent."""
        self._items = deque(
            (at, e)
            for at, e in self._items
            if (e.tx_hash, e.log_index) != (gone.tx_hash, gone.log_index)
        )

    def after(self, mark: Mark | None) -> list[SwapEvent]:
        """The trades after the owner's last sent one: those that arrived after it here; when
        it never arrived here, those not older than it; everything when the owner sent none."""
        events = [e for _, e in self._items]
        if mark is None:
            return events
        for i in range(len(events) - 1, -1, -1):
            if (events[i].tx_hash, events[i].log_index) == (mark.tx_hash, mark.log_index):
                return events[i + 1 :]
        return [e for e in events if e.ts_ms >= mark.ts_ms]


class Continued:
    """A source that is already running, as a new owner's consumer reads it: first the
    buffered trades to send, then the live subscription, on. The subscription runs under the
    standby's stop event (`source_stop`); the consumer's stop sets it too."""

    def __init__(
        self,
        stats: SourceStats,
        first: list[SwapEvent],
        rest: Iterator[object],
        source_stop: threading.Event,
    ) -> None:
        self.stats = stats
        self._first = first
        self._rest = rest
        self._source_stop = source_stop

    def events(self, stop: threading.Event) -> Iterator[SwapEvent | Retraction | None]:
        yield from self._first
        for item in self._rest:  # a source yields at least every tick, stopped or not
            if stop.is_set():
                self._source_stop.set()
            yield item  # type: ignore[misc]


def ensure(client: redis.Redis, keys: Keys, batch_id: int, node_id: str) -> bool:
    """Ask for a standby for the batch (its owner, on `node_id`, calls this while it serves):
    unless one is claimed or asked for, or no other live streams node could run it."""
    if client.exists(keys.batch_standby(batch_id)):
        return False
    others = [
        n
        for n, metrics in live_nodes(client, keys).items()
        if n != node_id and could_take_a_batch(metrics)
    ]
    if not others:
        return False
    if not client.set(
        keys.batch_standby_dispatch(batch_id), node_id, nx=True, ex=int(DISPATCH_MARKER_S)
    ):
        return False
    app.send_task(queues.STAND_BY, args=[batch_id, node_id])
    log.info(
        "batch %s: a standby asked for (another node: %s)", batch_id, ", ".join(sorted(others))
    )
    return True


class Standby:
    """Keeps the batch's recent trades until the lease is free, then takes the batch over."""

    def __init__(self, batch_id: int, consumer_id: str, source: Source) -> None:
        settings = get_settings()
        self.batch_id = batch_id
        self.consumer_id = consumer_id
        self.source = source
        self.buffer = Buffer(settings.standby_buffer_s)
        self.check_s = settings.standby_check_s
        self.claim_ttl_s = settings.lease_ttl_s
        self.client = runtime.redis_client()
        self.keys = runtime.keys()

    def claim(self) -> bool:
        """Be the batch's one standby (False: another one is)."""
        return bool(
            self.client.set(
                self.keys.batch_standby(self.batch_id),
                self.consumer_id,
                nx=True,
                px=int(self.claim_ttl_s * 1000),
            )
        )

    def _still_claimed(self) -> bool:
        key = self.keys.batch_standby(self.batch_id)
        pipe = self.client.pipeline()
        pipe.get(key)
        pipe.pexpire(key, int(self.claim_ttl_s * 1000))
        value, _ = pipe.execute()
        return bool(value == self.consumer_id)

    def _unclaim(self) -> None:
        key = self.keys.batch_standby(self.batch_id)
        if self.client.get(key) == self.consumer_id:
            self.client.delete(key)

    def _told_to_stop(self) -> bool:
        return bool(self.client.hget(self.keys.batch_control(self.batch_id), "stop"))

    def wait(self, stop: threading.Event) -> tuple[Lease, Continued] | None:
        """Buffer the batch's trades until its lease is free, then take it: the lease, and the
        source to serve as its owner (the trades after the owner's mark first). None when
        stopped, told to stop, or no longer the standby."""
        stream = self.source.events(stop)
        next_check = 0.0
        try:
            for item in stream:
                now = time.monotonic()
                if isinstance(item, SwapEvent):
                    self.buffer.add(item, now)
                elif isinstance(item, Retraction):
                    self.buffer.drop(item)
                else:
                    self.buffer.trim(now)
                if now < next_check:
                    continue
                next_check = now + self.check_s
                try:
                    lease = self._take_when_free()
                except redis.RedisError as exc:
                    log.warning("batch %s standby: Redis unreachable (%s)", self.batch_id, exc)
                    continue
                if lease is not None:
                    replay = self._replay(lease)
                    return lease, Continued(self.source.stats, replay, stream, stop)
        except (_GiveUp, BaseException) as exc:
            _close(stream)
            self._quietly_unclaim()
            if isinstance(exc, _GiveUp):
                return None
            raise
        self._quietly_unclaim()
        return None

    def _replay(self, lease: Lease) -> list[SwapEvent]:
        """The buffered trades after the owner's mark (all of them when it cannot be read: the
        copies count once)."""
        mark = None
        with contextlib.suppress(redis.RedisError):
            mark = Mark.decode(str(self.client.get(self.keys.batch_sent_mark(self.batch_id)) or ""))
            self._unclaim()
        replay = self.buffer.after(mark)
        metrics.STANDBY_TAKEOVERS.inc()
        log.warning(
            "batch %s: the standby takes over (token %s), sending %d buffered trade(s) after "
            "the owner's last (%s)",
            self.batch_id,
            lease.token,
            len(replay),
            mark.encode() if mark else "none",
        )
        return replay

    def _quietly_unclaim(self) -> None:
        with contextlib.suppress(redis.RedisError):  # else the claim lapses by itself
            self._unclaim()

    def _take_when_free(self) -> Lease | None:
        """The lease, if it is free and we took it; None to keep waiting. Raises _GiveUp when
        we are no longer the standby, or the batch is told to stop."""
        if not self._still_claimed() or self._told_to_stop():
            raise _GiveUp
        if self.client.exists(self.keys.batch_lease(self.batch_id)):
            return None
        return leases.store().acquire(self.batch_id, self.consumer_id, get_settings().lease_ttl_s)


class _GiveUp(Exception):
    """The standby stops waiting."""


def _close(stream: Iterator[object]) -> None:
    close = getattr(stream, "close", None)
    if close is not None:
        close()
