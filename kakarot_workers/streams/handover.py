"""A batch changing hands without a gap: one consumer's side of it, as one phase.

The incoming consumer took the lease during a graceful hand-over (the fence was not raised on
acquisition, see `leases`): it serves at once and raises the fence `FENCE_DELAY_S` after its own
source is live, so whatever the leaving consumer read before we subscribed has been emitted.

The leaving consumer (the worker is shutting down) hands over only if it is live and another
live streams node has a free slot: it flushes, releases the lease marked as a hand-over,
dispatches the batch and serves on until the fence passes its token (or `handover_timeout_s`).
One that is not live has nothing to hand over, and one with no possible successor has nobody to
wait for: it flushes, releases the lease, sends the batch back to the queue and stops at once
(within a supervisor's stop timeout). While handing over it stops early too once no node could
take the batch any more (the others are leaving as well).

    TAKING_OVER ──live for FENCE_DELAY_S──▶ SERVING ──shutdown, live──▶ LEAVING ──no successor──┐
         │                                     │                          │ flush, release     │
         └──────────shutdown, not live─────────┴──▶ STOPPING ◀───────────┼────────────────────┘
                                                              HANDING_OVER ──fence passed──▶ (stop)
    any phase ──lease not ours──▶ LOST

A move (beat's rebalance, `control.rebalance`) is the same hand-over with the worker staying
up: a SERVING, live consumer told to move to node N goes LEAVING, flushes, releases and sends the
batch to N's queue, and serves on until N's consumer raises the fence. If nobody has taken the
lease `timeout_s` after the release, it takes the lease back (same token: nobody took one) and
serves on, so a failed move leaves no gap either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import Enum

import redis

from kakarot_workers import runtime
from kakarot_workers.streams import leases
from kakarot_workers.streams.dispatch import redispatch
from kakarot_workers.streams.leases import Lease

log = logging.getLogger(__name__)

# After a graceful hand-over, the successor raises the fence this long after its source is live.
FENCE_DELAY_S = 1.0
# A leaving consumer sends its batch to the `streams` queue again when nobody has taken the
# lease this long after the last send. The first send can be swallowed by the leaving worker
# itself: a BRPOP its broker connection issued just before the warm shutdown pops the message,
# which the worker then holds unprocessed until it exits (celery/celery#4354). kombu sends that
# BRPOP with a 1 s server-side timeout, so a message sent more than 1 s into the shutdown reaches
# another worker. A duplicate is harmless: only one consumer gets the lease.
HANDOVER_RESEND_S = 2.0


class Phase(Enum):
    TAKING_OVER = "taking_over"  # serving under a graceful hand-over; our fence not raised yet
    SERVING = "serving"  # holding the lease and the fence
    LEAVING = "leaving"  # the worker is going down: hand over at the next turn of the loop
    HANDING_OVER = "handing_over"  # lease released as a hand-over; serving until the fence passes
    STOPPING = "stopping"  # going down with nothing to hand over (not live)
    LOST = "lost"  # the lease is someone else's: touch nothing of the batch


class Handover:
    """The hand-over state of one consumer; `stop` is its loop's stop event."""

    def __init__(
        self,
        lease: Lease,
        stop: threading.Event,
        timeout_s: float,
        successor_possible: Callable[[], bool] = lambda: True,
        node_id: str = "",
    ) -> None:
        self.lease = lease
        self.node_id = node_id  # this consumer's node: not its own successor
        self.target: str | None = None  # the node a move sends the batch to
        self.stop = stop
        self.timeout_s = timeout_s
        self.successor_possible = successor_possible
        self.phase = Phase.SERVING if lease.fenced else Phase.TAKING_OVER
        self._live_since: float | None = None
        self._sent_at = 0.0
        self._watchdog: threading.Timer | None = None
        self._released_at = 0.0

    @property
    def batch_id(self) -> int:
        return self.lease.batch_id

    @property
    def renewing(self) -> bool:
        """Whether the consumer still renews its lease (it has not released nor lost it)."""
        return self.phase not in (Phase.HANDING_OVER, Phase.LOST)

    def fence_when_live(self, now: float, live: bool) -> None:
        """Taking over: once our source has been live for FENCE_DELAY_S, raise the fence; the
        leaving consumer sees it and stops."""
        if self.phase is not Phase.TAKING_OVER:
            return
        if not live:
            self._live_since = None
        elif self._live_since is None:
            self._live_since = now
        elif now - self._live_since >= FENCE_DELAY_S:
            self.lease.raise_fence()
            self.phase = Phase.SERVING
            log.info("batch %s: live; fence raised to %s", self.batch_id, self.lease.token)

    def move(self, target: str, live: bool) -> bool:
        """Beat asks to move the batch to node `target`: a serving, live consumer starts the
        hand-over (the worker stays up); otherwise the order is ignored (False)."""
        if self.phase is not Phase.SERVING or not live or target == self.node_id:
            return False
        self.target = target
        self.phase = Phase.LEAVING
        return True

    def shutdown(self, live: bool) -> None:
        """The worker is going down (from its signal handler). A live consumer hands over and
        serves on, at most `timeout_s`; one that is not live stops at once. A move under way
        becomes a plain hand-over (to any node)."""
        if self.target is not None and self.phase in (Phase.LEAVING, Phase.HANDING_OVER):
            self.target = None
            self._start_watchdog()
            return
        if self.phase not in (Phase.TAKING_OVER, Phase.SERVING):
            return
        if not live or self.timeout_s <= 0:
            self.phase = Phase.STOPPING
            self.stop.set()
            return
        self.phase = Phase.LEAVING
        self._start_watchdog()

    def _start_watchdog(self) -> None:
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.timeout_s, self.stop.set)
            self._watchdog.daemon = True
            self._watchdog.start()

    def release(self) -> None:
        """Leaving, and everything read so far flushed: release the lease as a hand-over and
        dispatch the successor (a move: to its target node); with nobody to take it, stop at
        once instead (`_finish` releases the lease and sends the batch back to the queue)."""
        if self.target is None and not self._successor_possible():
            log.info("batch %s: no other streams node can take it; stopping now", self.batch_id)
            self.stop_now()
            return
        if not self.lease.release(handover_s=self.timeout_s):
            log.warning("batch %s: lease already lost at shutdown", self.batch_id)
            self.lose()
            return
        self.phase = Phase.HANDING_OVER
        redispatch(self.batch_id, self.target, exclude=self.node_id)
        self._sent_at = self._released_at = time.monotonic()
        log.info(
            "batch %s: handing over (token %s)%s",
            self.batch_id,
            self.lease.token,
            f", moving to {self.target}" if self.target else "",
        )

    def follow_successor(self) -> None:
        """Handing over: stop once the successor has raised the fence past our token; send the
        batch again while nobody holds its lease (see HANDOVER_RESEND_S)."""
        if self.phase is not Phase.HANDING_OVER:
            return
        if self.lease.fence_passed():
            log.info("batch %s: successor is live; handed over", self.batch_id)
            self.stop.set()
        elif self.target is not None and time.monotonic() - self._released_at >= self.timeout_s:
            self._end_move()
        elif time.monotonic() - self._sent_at >= HANDOVER_RESEND_S and not self.taken():
            if self.target is None and not self._successor_possible():
                log.warning(
                    "batch %s: no other streams node can take it any more; stopping (the batch "
                    "waits on the queue)",
                    self.batch_id,
                )
                self.stop.set()
                return
            log.warning(
                "batch %s: no successor took it within %.0fs; sending it again",
                self.batch_id,
                HANDOVER_RESEND_S,
            )
            redispatch(self.batch_id, self.target, exclude=self.node_id)
            self._sent_at = time.monotonic()
            runtime.redis_client().incr(runtime.keys().handovers_resent)

    def _end_move(self) -> None:
        """A move that did not complete in `timeout_s`: nobody took the lease, so take it back
        (same token) and serve on; a successor that took it but is not live yet serves on
        without us, as after a shutdown's hand-over."""
        target, self.target = self.target, None
        if self.lease.reacquire():
            self.phase = Phase.SERVING
            log.warning(
                "batch %s: %s did not take it within %.0fs; serving on here (token %s)",
                self.batch_id,
                target,
                self.timeout_s,
                self.lease.token,
            )
        else:
            log.warning("batch %s: moved to %s, not live yet; leaving it", self.batch_id, target)
            self.stop.set()

    def _successor_possible(self) -> bool:
        try:
            return self.successor_possible()
        except redis.RedisError:
            return False  # Redis is away: nobody can take the batch over now

    def taken(self) -> bool:
        """Someone holds the batch's lease (after we released it: our successor)."""
        return leases.store().holders([self.batch_id])[self.batch_id] is not None

    def stop_now(self) -> None:
        """Stop without handing over (`_finish` releases the lease and requeues the batch)."""
        self.phase = Phase.STOPPING
        self.stop.set()

    def lose(self) -> None:
        self.phase = Phase.LOST
        self.stop.set()

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
