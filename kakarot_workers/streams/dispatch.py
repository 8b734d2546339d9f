"""Sending batches to the `streams` queue: one `consume_batch` per batch nobody serves.

The pending-dispatch marker (`kakarot:batch:{id}:dispatch`, set-if-absent with a TTL of
`dispatch_marker_ttl_s`) makes dispatching safe to run from several places at once: a batch is
sent once per marker period however many reconcilers race. The consumer deletes the marker when
it takes (or finds) the lease; if the message is lost, the marker expires and the next reconcile
sends it again.
"""

from __future__ import annotations

from kakarot_workers import queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.settings import get_settings
from kakarot_workers.streams import leases


def dispatch(batch_ids: list[int]) -> None:
    """Send one `consume_batch` per batch to the `streams` queue, unconditionally."""
    for batch_id in batch_ids:
        app.send_task(queues.CONSUME_BATCH, args=[batch_id])


def dispatch_unserved(batch_ids: list[int]) -> list[int]:
    """Send `consume_batch` once for each batch with no live lease and no pending dispatch;
    return those sent."""
    client, keys = runtime.redis_client(), runtime.keys()
    unowned = [b for b, holder in leases.store().holders(batch_ids).items() if not holder]
    if not unowned:
        return []
    pipe = client.pipeline(transaction=False)
    for batch_id in unowned:
        pipe.set(keys.batch_dispatch(batch_id), "1", nx=True, px=_marker_ttl_ms())
    sent = [b for b, marked in zip(unowned, pipe.execute(), strict=True) if marked]
    dispatch(sent)
    return sent


def redispatch(batch_id: int) -> None:
    """Send the batch to another worker now (its consumer is going down), setting the dispatch
    marker so that reconcile does not send it a second time."""
    runtime.redis_client().set(runtime.keys().batch_dispatch(batch_id), "1", px=_marker_ttl_ms())
    dispatch([batch_id])


def _marker_ttl_ms() -> int:
    return int(get_settings().dispatch_marker_ttl_s * 1000)
