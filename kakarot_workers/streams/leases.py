"""Batch leases with fencing tokens: who serves a batch, provably, right now.

A consumer serves a batch only while it holds the batch's lease: a Redis string
`{consumer_id}:{token}` with a TTL. Acquiring it (set-if-absent) also takes the next value of the
batch's token counter, atomically, in one script. The holder renews it with compare-and-extend;
a renewal that finds someone else's value (or none) means the lease is lost and the consumer must
stop.

Every event carries its consumer's token and the moment it was sent, by Redis's clock (the
consumer reads that clock at each renewal and counts on with its own monotonic clock). The alert
pool refuses an event whose token is below the batch's *fence* unless it was sent before the
fence was first raised above its token (the raises are logged with Redis's time): the fence acts
at emit, not at judging. So what a dead owner sent while its lease was valid is judged even when
its successor is live before the pool reaches it, and a paused or partitioned consumer that lost
its lease can never alert again. Normally an acquisition raises the fence to the new token at
once. A graceful hand-over (warm
shutdown) is the one exception: the leaving consumer releases the lease with a hand-over marker
and keeps serving; its successor raises the fence only once its own source is live, and the
leaving consumer stops when it sees the fence pass its token. The overlap delivers some events
twice, which the alert de-duplication key absorbs; there is no gap.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from kakarot_workers import runtime
from kakarot_workers.keys import Keys

log = logging.getLogger(__name__)

_LUA = Path(__file__).with_name("lua")
_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def clock() -> float:
    """Seconds on a clock that never goes back and, unlike `time.monotonic`, keeps counting
    while the host is suspended (Linux `CLOCK_BOOTTIME`): what a lease's expiry is measured
    with, so a consumer frozen with its VM knows its lease may have lapsed."""
    if _BOOTTIME is None:
        return time.monotonic()
    return time.clock_gettime(_BOOTTIME)


_FENCE_LOG = (_LUA / "fence_log.lua").read_text()
ACQUIRE = _FENCE_LOG + (_LUA / "lease_acquire.lua").read_text()
RENEW = (_LUA / "lease_renew.lua").read_text()
RELEASE = (_LUA / "lease_release.lua").read_text()
REACQUIRE = (_LUA / "lease_reacquire.lua").read_text()
RAISE_FENCE = _FENCE_LOG + (_LUA / "fence_raise.lua").read_text()


@dataclass
class Lease:
    """One consumer's hold on one batch. `token` is its fencing token."""

    store: Leases
    batch_id: int
    consumer_id: str
    token: int
    ttl_s: float
    renewed_at: float  # `clock()` at the last confirmed acquisition or renewal
    fenced: bool = False  # whether the fence has been raised to our token
    server_ms: int = 0  # Redis's clock (ms) at the last confirmation, read at `renewed_at`

    @property
    def value(self) -> str:
        return f"{self.consumer_id}:{self.token}"

    @property
    def renew_interval_s(self) -> float:
        return self.ttl_s / 3

    def server_now_ms(self) -> int:
        """Redis's clock now, from its reading at the last confirmation and `clock()` since (a
        little ahead of it, never behind: `renewed_at` is taken before the call)."""
        return self.server_ms + int((clock() - self.renewed_at) * 1000)

    def _confirmed(self, started: float, server_ms: object) -> bool:
        if not server_ms:
            return False
        self.renewed_at, self.server_ms = started, int(server_ms)  # type: ignore[call-overload]
        return True

    def expired_locally(self, now: float | None = None) -> bool:
        """True once a full TTL has passed since the last confirmed renewal: whatever Redis
        says, we can no longer prove we own the batch."""
        return (clock() if now is None else now) - self.renewed_at >= self.ttl_s

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False if it is lost (or lapsed). Redis errors
        propagate: the caller decides (a consumer serves on through an outage)."""
        started = clock()
        server_ms = self.store.renew_script(
            keys=[self.store.keys.batch_lease(self.batch_id)],
            args=[self.value, int(self.ttl_s * 1000)],
        )
        return self._confirmed(started, server_ms)

    def reacquire(self) -> bool:
        """The lease lapsed (Redis was away): take it back with the same token if nobody has
        taken the batch since; False otherwise."""
        started = clock()
        keys = self.store.keys
        server_ms = self.store.reacquire_script(
            keys=[keys.batch_lease(self.batch_id), keys.batch_token(self.batch_id)],
            args=[self.value, self.token, int(self.ttl_s * 1000)],
        )
        return self._confirmed(started, server_ms)

    def raise_fence(self) -> None:
        """We are live: from now on, events of earlier holders are refused."""
        if not self.fenced:
            keys = self.store.keys
            self.store.raise_fence_script(
                keys=[keys.batch_fence(self.batch_id), keys.batch_fence_log(self.batch_id)],
                args=[self.token],
            )
            self.fenced = True

    def fence_passed(self) -> bool:
        """True once a successor has raised the fence above our token."""
        return self.store.fences([self.batch_id])[self.batch_id] > self.token

    def release(self, handover_s: float = 0) -> bool:
        """Give the batch up, if the lease is still ours. With `handover_s`, mark a graceful
        hand-over: our events stay valid until the successor is live (at most that long)."""
        keys = self.store.keys
        return bool(
            self.store.release_script(
                keys=[keys.batch_lease(self.batch_id), keys.batch_handover(self.batch_id)],
                args=[self.value, int(handover_s * 1000)],
            )
        )


class Leases:
    """The batch leases and fences of one Redis, their scripts registered once."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.acquire_script = client.register_script(ACQUIRE)
        self.renew_script = client.register_script(RENEW)
        self.release_script = client.register_script(RELEASE)
        self.reacquire_script = client.register_script(REACQUIRE)
        self.raise_fence_script = client.register_script(RAISE_FENCE)

    def acquire(self, batch_id: int, consumer_id: str, ttl_s: float) -> Lease | None:
        """Take the batch's lease and a new fencing token, or None if someone holds it."""
        started = clock()
        keys = self.keys
        taken = self.acquire_script(
            keys=[
                keys.batch_lease(batch_id),
                keys.batch_token(batch_id),
                keys.batch_fence(batch_id),
                keys.batch_handover(batch_id),
                keys.batch_fence_log(batch_id),
            ],
            args=[consumer_id, int(ttl_s * 1000)],
        )
        if taken is None:
            return None
        token, fenced, server_ms = taken
        return Lease(
            self, batch_id, consumer_id, int(token), ttl_s, started, bool(fenced), int(server_ms)
        )

    def holders(self, batch_ids: list[int]) -> dict[int, str | None]:
        """The lease value (`consumer:token`) of each batch, None where nobody holds it."""
        if not batch_ids:
            return {}
        values = self.client.mget([self.keys.batch_lease(b) for b in batch_ids])
        return {b: None if v is None else str(v) for b, v in zip(batch_ids, values, strict=True)}

    def fences(self, batch_ids: list[int]) -> dict[int, int]:
        """The oldest token the alert pool accepts for each batch (0 where none was ever taken)."""
        if not batch_ids:
            return {}
        values = self.client.mget([self.keys.batch_fence(b) for b in batch_ids])
        return {b: int(v or 0) for b, v in zip(batch_ids, values, strict=True)}


_stores: dict[int, Leases] = {}


def store() -> Leases:
    """This process's lease store, on its Redis client."""
    pid = os.getpid()
    found = _stores.get(pid)
    if found is None:
        found = _stores[pid] = Leases(runtime.redis_client(), runtime.keys())
    return found
