"""Dead letters: messages a worker cannot take, moved aside instead of killing it or looping.

A poison message (not JSON, not an envelope kombu can read, not a task of ours, arguments of the
wrong shape) is put on a capped Redis list per queue, `kakarot:deadletter:{queue}`, newest
first, with the reason and the time, counted (`kakarot:stats:deadletter:{queue}`) and logged
once. The message is kept as it came: the raw queue item, or the task's name and arguments, so
an operator can look at it and send it again (`kakarot deadletter list|show|requeue|purge`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from kakarot_workers import runtime
from kakarot_workers.keys import Keys

log = logging.getLogger(__name__)

# The newest this many dead letters are kept per queue, each up to this many characters of the
# original item (a longer one is kept cut, and cannot be sent again).
CAP = 10_000
MAX_ITEM_CHARS = 1_000_000


@dataclass(frozen=True)
class DeadLetter:
    """One message moved aside: where it was, why, when, and the message itself."""

    queue: str
    reason: str
    at: float  # unix seconds
    raw: str | None = None  # the queue item as it was (transport-level poison)
    task: str | None = None  # or the task and its arguments (a message of ours, badly shaped)
    args: Any = None
    kwargs: Any = None
    cut: bool = False  # the raw item was longer than MAX_ITEM_CHARS and is kept cut

    @property
    def requeueable(self) -> bool:
        return (self.raw is not None and not self.cut) or self.task is not None

    def to_json(self) -> str:
        return json.dumps(
            {k: v for k, v in self.__dict__.items() if v is not None and v is not False},
            default=repr,
        )

    @classmethod
    def from_json(cls, text: str) -> DeadLetter:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def put(
    queue: str,
    reason: str,
    *,
    raw: str | bytes | None = None,
    task: str | None = None,
    args: Any = None,
    kwargs: Any = None,
    client: redis.Redis | None = None,
) -> DeadLetter:
    """Move a message aside: keep it, count it, log one line. Redis being away is logged and
    the message is dropped: the alternative, putting it back, would loop on it."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    cut = text is not None and len(text) > MAX_ITEM_CHARS
    letter = DeadLetter(
        queue=queue,
        reason=reason[:500],
        at=time.time(),
        raw=text[:MAX_ITEM_CHARS] if text is not None else None,
        task=task,
        args=args,
        kwargs=kwargs,
        cut=cut,
    )
    keys = runtime.keys()
    try:
        pipe = (client or runtime.redis_client()).pipeline(transaction=False)
        pipe.lpush(keys.deadletters(queue), letter.to_json())
        pipe.ltrim(keys.deadletters(queue), 0, CAP - 1)
        pipe.incr(keys.deadletter_count(queue))
        pipe.execute()
    except redis.RedisError as exc:
        log.error("dead letter of queue %s lost (Redis: %s): %s", queue, exc, reason)
        return letter
    what = f"task {task}" if task else f"an item of {len(text or ''):,} characters"
    log.error("dead letter on queue %s (%s): %s", queue, what, reason)
    return letter


def queues_with_letters(client: redis.Redis, keys: Keys) -> dict[str, int]:
    """Queue → how many dead letters it keeps (queues with none are left out)."""
    prefix = keys.deadletters("")
    found = {}
    for name in client.scan_iter(match=keys.deadletters("*"), count=1000):
        key = name.decode() if isinstance(name, bytes) else str(name)
        found[key[len(prefix) :]] = int(client.llen(key))
    return dict(sorted(found.items()))


def entries(client: redis.Redis, keys: Keys, queue: str, count: int = 20) -> list[DeadLetter]:
    """The newest `count` dead letters of a queue, newest first."""
    return [
        DeadLetter.from_json(str(t)) for t in client.lrange(keys.deadletters(queue), 0, count - 1)
    ]


def take(client: redis.Redis, keys: Keys, queue: str, index: int) -> DeadLetter | None:
    """Remove and return the dead letter at `index` (0: the newest), or None."""
    key = keys.deadletters(queue)
    found = client.lindex(key, index)
    if found is None:
        return None
    text = str(found)
    removed = client.lrem(key, 1, text)  # by value: an index moves as letters arrive
    return DeadLetter.from_json(text) if removed else None


def purge(client: redis.Redis, keys: Keys, queue: str) -> int:
    """Drop every dead letter of a queue; return how many there were."""
    count = int(client.llen(keys.deadletters(queue)))
    client.delete(keys.deadletters(queue))
    return count
