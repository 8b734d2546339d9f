"""Sending batches to stream consumers: one `consume_batch` per batch nobody serves, to the
least-loaded streams node (`placement`), or to the shared `streams` queue when none is known.

The pending-dispatch marker (`kakarot:batch:{id}:dispatch`, set-if-absent with a TTL of
`dispatch_marker_ttl_s`, holding the node it was sent to) makes dispatching safe to run from
several places at once: a batch is sent once per marker period however many reconcilers race.
A node whose consumer let a lease lapse without stopping (killed, frozen) is not chosen in that
pass: its heartbeat key outlives it. The consumer deletes the marker when it takes (or finds)
the lease; if the message is lost, or waits on the queue of a node that died, the marker
expires and the next reconcile sends the batch again, to a live node. A message sent to one
node's queue expires with its marker, so a node that comes back under the same name does not
find a pile of stale work.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import redis

from kakarot_workers import queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.keys import Keys
from kakarot_workers.settings import get_settings
from kakarot_workers.status import BatchStatus
from kakarot_workers.streams import leases, placement

# Batches this process sent to each node lately: a node going down re-sends all of its batches
# in a row, faster than the others' metrics show what they took, and they should spread.
RECENT_S = 5.0
_recent: dict[str, deque[float]] = {}
_recent_lock = threading.Lock()


def _recently_sent() -> Counter[str]:
    now = time.monotonic()
    counts: Counter[str] = Counter()
    with _recent_lock:
        for node_id, times in _recent.items():
            while times and now - times[0] > RECENT_S:
                times.popleft()
            counts[node_id] = len(times)
    return counts


def forget_recent() -> None:
    """Forget the batches sent lately (tests: a fresh Redis is a fresh fleet)."""
    with _recent_lock:
        _recent.clear()


def _note_sent(node_id: str) -> None:
    with _recent_lock:
        _recent.setdefault(node_id, deque()).append(time.monotonic())


def dispatch(batch_ids: list[int], node_id: str | None = None) -> None:
    """Send one `consume_batch` per batch, unconditionally: to `node_id`'s own queue, or to
    the shared `streams` queue."""
    for batch_id in batch_ids:
        if node_id is None:
            app.send_task(queues.CONSUME_BATCH, args=[batch_id])
        else:
            _note_sent(node_id)
            app.send_task(
                queues.CONSUME_BATCH,
                args=[batch_id],
                queue=queues.node_queue(node_id),
                expires=get_settings().dispatch_marker_ttl_s,
            )


def dispatch_unserved(batch_ids: list[int]) -> list[int]:
    """Send `consume_batch` once for each batch with no live lease and no pending dispatch,
    each to the least-loaded node at that moment; return those sent."""
    client, keys = runtime.redis_client(), runtime.keys()
    unowned = [b for b, holder in leases.store().holders(batch_ids).items() if not holder]
    if not unowned:
        return []
    loads = placement.node_loads(client, keys)
    planned = placement.in_flight(client, keys, batch_ids)
    suspects = _abandoned_by(client, keys, unowned)
    chosen: list[str | None] = []
    for _ in unowned:
        node_id = placement.choose(loads, planned, exclude=suspects)
        chosen.append(node_id)
        if node_id is not None:
            planned[node_id] += 1
    pipe = client.pipeline(transaction=False)
    for batch_id, node_id in zip(unowned, chosen, strict=True):
        marker = node_id or placement.ANY_NODE
        pipe.set(keys.batch_dispatch(batch_id), marker, nx=True, px=_marker_ttl_ms())
    sent = []
    for batch_id, node_id, marked in zip(unowned, chosen, pipe.execute(), strict=True):
        if marked:
            dispatch([batch_id], node_id)
            sent.append(batch_id)
    return sent


# The statuses a consumer leaves when it stops of its own accord; any other status on a batch
# nobody holds means its consumer vanished (killed, frozen) with its lease.
_LEFT = {
    BatchStatus.STOPPED,
    BatchStatus.HANDED_OVER,
    BatchStatus.RETIRED,
    BatchStatus.LEASE_LOST,
    BatchStatus.ERROR,
}


def _abandoned_by(client: redis.Redis, keys: Keys, unowned: list[int]) -> set[str]:
    """The nodes whose consumers let a lease lapse without stopping: killed or frozen. Their
    heartbeat keys outlive them (3 beats), so placement does not trust them now."""
    pipe = client.pipeline(transaction=False)
    for batch_id in unowned:
        pipe.hmget(keys.batch_status(batch_id), "node_id", "status")
    return {
        str(node_id)
        for node_id, status in pipe.execute()
        if node_id and status and status not in _LEFT
    }


def redispatch(batch_id: int, node_id: str | None = None, *, exclude: str | None = None) -> None:
    """Send the batch to another consumer now (its consumer is going down, or moving it to
    `node_id`), setting the dispatch marker so that reconcile does not send it a second time.
    Without `node_id`, the least-loaded node other than `exclude` takes it."""
    client, keys = runtime.redis_client(), runtime.keys()
    if node_id is None:
        loads = placement.node_loads(client, keys)
        node_id = placement.choose(loads, _recently_sent(), exclude=[exclude] if exclude else [])
    client.set(keys.batch_dispatch(batch_id), node_id or placement.ANY_NODE, px=_marker_ttl_ms())
    dispatch([batch_id], node_id)


def _marker_ttl_ms() -> int:
    return int(get_settings().dispatch_marker_ttl_s * 1000)
