"""Batch leases with fencing tokens: who serves a batch, provably, right now.

A consumer serves a batch only while it holds the batch's lease: a Redis string
`{consumer_id}:{token}` with a TTL. Acquiring it (set-if-absent) also takes the next value of the
batch's token counter, atomically, in one script. The holder renews it with compare-and-extend;
a renewal that finds someone else's value (or none) means the lease is lost and the consumer must
stop.

Every event carries its consumer's token, and the alert pool drops events whose token is below
the batch's *fence*. Normally an acquisition raises the fence to the new token at once: a paused
or partitioned consumer that lost its lease can never alert again. A graceful hand-over (warm
shutdown) is the one exception: the leaving consumer releases the lease with a hand-over marker
and keeps serving; its successor raises the fence only once its own source is live, and the
leaving consumer stops when it sees the fence pass its token. The overlap delivers some events
twice, which the alert de-duplication key absorbs; there is no gap.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import redis

from kakarot_workers.keys import Keys

log = logging.getLogger(__name__)

# KEYS: lease, token counter, fence, hand-over marker. ARGV: consumer id, ttl ms.
# Returns {token, fenced}: fenced is 1 if the fence was raised now (no graceful hand-over).
_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return nil end
local token = redis.call('incr', KEYS[2])
redis.call('set', KEYS[1], ARGV[1] .. ':' .. token, 'PX', ARGV[2])
local fenced = 0
if redis.call('del', KEYS[4]) == 0 then
  redis.call('set', KEYS[3], token)
  fenced = 1
end
return {token, fenced}
"""
# KEYS: lease. ARGV: expected value, ttl ms. 1 if extended, 0 if the lease is not ours.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
# KEYS: lease, hand-over marker. ARGV: expected value, hand-over ttl ms (0: plain release).
_RELEASE = """
if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('del', KEYS[1])
if tonumber(ARGV[2]) > 0 then redis.call('set', KEYS[2], ARGV[1], 'PX', ARGV[2]) end
return 1
"""
# KEYS: fence. ARGV: token. Raise the fence to the token (never lower it); return the fence.
_RAISE_FENCE = """
local fence = tonumber(redis.call('get', KEYS[1]) or '0')
if fence < tonumber(ARGV[1]) then
  redis.call('set', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return fence
"""


@dataclass
class Lease:
    """One consumer's hold on one batch. `token` is its fencing token."""

    client: redis.Redis
    keys: Keys
    batch_id: int
    consumer_id: str
    token: int
    ttl_s: float
    renewed_at: float  # time.monotonic() of the last confirmed acquisition or renewal
    fenced: bool = False  # whether the fence has been raised to our token

    @property
    def value(self) -> str:
        return f"{self.consumer_id}:{self.token}"

    @property
    def renew_interval_s(self) -> float:
        return self.ttl_s / 3

    def expired_locally(self, now: float | None = None) -> bool:
        """True once a full TTL has passed since the last confirmed renewal: whatever Redis
        says, we can no longer prove we own the batch."""
        return (time.monotonic() if now is None else now) - self.renewed_at >= self.ttl_s

    def renew(self) -> bool:
        """Extend the lease if it is still ours; False if it is lost. Redis errors propagate:
        the caller keeps serving until `expired_locally`."""
        started = time.monotonic()
        ours = self.client.eval(
            _RENEW, 1, self.keys.batch_lease(self.batch_id), self.value, int(self.ttl_s * 1000)
        )
        if ours:
            self.renewed_at = started
        return bool(ours)

    def raise_fence(self) -> None:
        """We are live: from now on, events of earlier holders are refused."""
        if not self.fenced:
            self.client.eval(_RAISE_FENCE, 1, self.keys.batch_fence(self.batch_id), self.token)
            self.fenced = True

    def fence_passed(self) -> bool:
        """True once a successor has raised the fence above our token."""
        return int(self.client.get(self.keys.batch_fence(self.batch_id)) or 0) > self.token

    def release(self, handover_s: float = 0) -> bool:
        """Give the batch up, if the lease is still ours. With `handover_s`, mark a graceful
        hand-over: our events stay valid until the successor is live (at most that long)."""
        return bool(
            self.client.eval(
                _RELEASE,
                2,
                self.keys.batch_lease(self.batch_id),
                self.keys.batch_handover(self.batch_id),
                self.value,
                int(handover_s * 1000),
            )
        )


def acquire(
    client: redis.Redis, keys: Keys, batch_id: int, consumer_id: str, ttl_s: float
) -> Lease | None:
    """Take the batch's lease and a new fencing token, or None if someone holds it."""
    started = time.monotonic()
    taken = client.eval(
        _ACQUIRE,
        4,
        keys.batch_lease(batch_id),
        keys.batch_token(batch_id),
        keys.batch_fence(batch_id),
        keys.batch_handover(batch_id),
        consumer_id,
        int(ttl_s * 1000),
    )
    if taken is None:
        return None
    token, fenced = taken
    return Lease(client, keys, batch_id, consumer_id, int(token), ttl_s, started, bool(fenced))


def holders(client: redis.Redis, keys: Keys, batch_ids: list[int]) -> dict[int, str | None]:
    """The lease value (`consumer:token`) of each batch, None where nobody holds it."""
    if not batch_ids:
        return {}
    values = client.mget([keys.batch_lease(b) for b in batch_ids])
    return dict(zip(batch_ids, values, strict=True))


def fences(client: redis.Redis, keys: Keys, batch_ids: list[int]) -> dict[int, int]:
    """The oldest token the alert pool accepts for each batch (0 where none was ever taken)."""
    if not batch_ids:
        return {}
    values = client.mget([keys.batch_fence(b) for b in batch_ids])
    return {b: int(v or 0) for b, v in zip(batch_ids, values, strict=True)}
