"""The control plane: allocate tasks into epochs, dispatch consumers, retire old epochs.

The beat jobs (allocate, reconcile, check_timeouts, …) will call these; for now they run by hand
(`kakarot allocate`, `kakarot dispatch`, `kakarot reconcile`) and from the demo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis

from kakarot_workers import leases, runtime
from kakarot_workers.allocation import AllocationParams
from kakarot_workers.batches import current_batch_ids, current_batch_ids_of_active_tasks
from kakarot_workers.celery_app import app
from kakarot_workers.db.session import session_scope
from kakarot_workers.epochs import EpochReport, apply_allocation, publish_epoch, retire_old_epochs
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

CONSUME_TASK = "kakarot.streams.consume_batch"


def allocation_params() -> AllocationParams:
    settings = get_settings()
    return AllocationParams(cap=settings.batch_cap, merge_below=settings.merge_below_fill)


def allocate_task(task_id: int, *, dry_run: bool = False) -> EpochReport:
    """Allocate the task's active targets; on a membership change, commit epoch + 1."""
    with session_scope() as session:
        report = apply_allocation(session, task_id, allocation_params(), dry_run=dry_run)
    if not dry_run:
        try:
            publish_epoch(runtime.redis_client(), runtime.keys(), report)
        except redis.RedisError as exc:  # the epoch is committed; consumers only miss a label
            log.warning(
                "task %s: epoch %s committed, but carried consumers were not told: %s",
                task_id,
                report.epoch_after,
                exc,
            )
        if report.epoch_after != report.epoch_before:
            log.info(
                "task %s: epoch %s → %s, %d new batch rows, %d carried",
                task_id,
                report.epoch_before,
                report.epoch_after,
                len(report.new_batch_ids),
                len(report.carried_batch_ids),
            )
    return report


def ensure_allocated(task_id: int) -> list[int]:
    """Allocate the task (a no-op when nothing changed) and return its current batch ids."""
    allocate_task(task_id)
    with session_scope() as session:
        return current_batch_ids(session, task_id)


def dispatch(batch_ids: list[int]) -> None:
    """Send one `consume_batch` per batch to the `streams` queue, unconditionally."""
    for batch_id in batch_ids:
        app.send_task(CONSUME_TASK, args=[batch_id])


def dispatch_unserved(batch_ids: list[int]) -> list[int]:
    """Send `consume_batch` once for each batch with no live lease and no pending dispatch;
    return those sent.

    The pending-dispatch marker (set-if-absent, TTL `dispatch_marker_ttl_s`) makes this safe to
    run from several places at once: a batch is sent once per marker period however many
    reconcilers race. The consumer deletes the marker when it takes (or finds) the lease; if
    the message is lost, the marker expires and the next reconcile sends it again.
    """
    client, keys = runtime.redis_client(), runtime.keys()
    unowned = [b for b, holder in leases.holders(client, keys, batch_ids).items() if not holder]
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


@dataclass(frozen=True)
class ReconcileReport:
    dispatched: list[int]
    retired: list[int]


def reconcile(task_id: int | None = None) -> ReconcileReport:
    """One pass of the control loop: retire old-epoch batches that are handed over (or past
    their grace period), then dispatch every unowned current-epoch batch of active tasks."""
    retired = retire_handed_over(task_id)
    with session_scope() as session:
        batch_ids = current_batch_ids_of_active_tasks(session, task_id)
    dispatched = dispatch_unserved(batch_ids)
    if dispatched or retired:
        log.info("reconcile: dispatched %s, retired %s", dispatched, retired)
    return ReconcileReport(dispatched=dispatched, retired=retired)


def retire_handed_over(task_id: int | None = None) -> list[int]:
    """Retire old-epoch batches whose targets are live in the current epoch (or past grace)."""
    with session_scope() as session:
        return retire_old_epochs(
            session,
            runtime.redis_client(),
            runtime.keys(),
            task_id=task_id,
            grace_s=get_settings().epoch_grace_s,
        )
