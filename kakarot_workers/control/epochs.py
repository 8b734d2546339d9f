"""Allocations become epochs: applying one in a transaction, and retiring the old epoch.

Design (SPEC §3):

- A batch row is one subscription. When an allocation changes a task's membership, the task
  moves to epoch N+1 in one transaction:
  * a batch whose membership did not change is **carried**: its row (same id) gets epoch N+1, its
    consumer keeps serving it without resubscribing (it learns the new epoch from Redis);
  * a batch whose membership changed gets a **new row** (new id, same batch_no) in epoch N+1, and
    so does every new batch; the old row stays in epoch N, still served;
  * `monitor_task_v2.current_epoch` is set last.
  Nothing changes — no epoch bump — when membership is the same.
- Handover without gap: an old-epoch batch is retired only once every target it serves that is
  still active is served by a live batch of the current epoch (its consumer is subscribed), or when
  the grace period (default 10 minutes) has passed since the switch. Until then both consumers see
  the overlapping targets; the alert de-duplication key makes the double delivery harmless.
  Retiring sets the row's status to `retired` and tells its consumer to stop (Redis control hash).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import redis
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from kakarot_workers.control.allocation import AllocationDiff, AllocationParams, allocate
from kakarot_workers.db.batches import get_task
from kakarot_workers.db.models import (
    TARGET_ACTIVE,
    MonitorBatch,
    MonitorBatchItem,
    MonitorTask,
    MonitorTaskTarget,
    table,
    utcnow,
)
from kakarot_workers.keys import Keys
from kakarot_workers.status import BatchStatus

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 600


@dataclass(frozen=True)
class EpochReport:
    """What an allocation did (or would do, on a dry run)."""

    task_id: int
    targets: int
    batches_before: int
    batches_after: int
    epoch_before: int
    epoch_after: int
    diff: AllocationDiff
    new_batch_ids: tuple[int, ...] = ()  # rows created in the new epoch (changed + new)
    carried_batch_ids: tuple[int, ...] = ()


def _ensure_block_batch(session: Session, task: MonitorTask, *, dry_run: bool) -> EpochReport:
    """A block task has no targets: one batch, one consumer, the whole chain (the radar)."""
    existing = session.scalars(
        select(MonitorBatch.id).where(
            MonitorBatch.task_id == task.id, MonitorBatch.epoch == task.current_epoch
        )
    ).all()
    empty = allocate(task.id, {}, []).diff
    report = EpochReport(
        task_id=task.id,
        targets=0,
        batches_before=len(existing),
        batches_after=1,
        epoch_before=task.current_epoch,
        epoch_after=task.current_epoch + (0 if existing else 1),
        diff=empty,
    )
    if existing or dry_run:
        return report
    row = MonitorBatch(
        task_id=task.id,
        batch_no=1,
        epoch=report.epoch_after,
        item_count=0,
        status=BatchStatus.PENDING,
    )
    session.add(row)
    session.flush()
    task.current_epoch = report.epoch_after
    return replace(report, new_batch_ids=(row.id,))


def current_assignment(session: Session, task: MonitorTask) -> dict[int, list[str]]:
    """Batch id → CAs in batch order, for the task's current epoch."""
    rows = session.execute(
        select(MonitorBatchItem.batch_id, MonitorTaskTarget.target_value)
        .join(MonitorBatch, MonitorBatch.id == MonitorBatchItem.batch_id)
        .join(MonitorTaskTarget, MonitorTaskTarget.id == MonitorBatchItem.target_id)
        .where(
            MonitorBatch.task_id == task.id,
            MonitorBatch.epoch == task.current_epoch,
            MonitorBatch.status != BatchStatus.RETIRED,
        )
        .order_by(MonitorBatchItem.batch_id, MonitorBatchItem.batch_order)
    ).all()
    assignment: dict[int, list[str]] = {}
    for batch_id, ca in rows:
        assignment.setdefault(batch_id, []).append(ca)
    return assignment


def apply_allocation(
    session: Session, task_id: int, params: AllocationParams, *, dry_run: bool = False
) -> EpochReport:
    """Allocate the task's active targets and write the result as a new epoch (if it changed)."""
    task = get_task(session, task_id)
    if session.get_bind().dialect.name != "sqlite":  # SQLite serialises writers by itself
        session.refresh(task, with_for_update=True)  # one allocator per task at a time
    if task.task_type == "block":
        return _ensure_block_batch(session, task, dry_run=dry_run)
    targets = session.scalars(
        select(MonitorTaskTarget).where(MonitorTaskTarget.task_id == task_id)
    ).all()
    active = {t.target_value: t for t in targets if t.status == TARGET_ACTIVE}
    current = current_assignment(session, task)
    result = allocate(task_id, current, active, params)
    diff = result.diff
    report = EpochReport(
        task_id=task_id,
        targets=len(active),
        batches_before=len(current),
        batches_after=len(result.batches),
        epoch_before=task.current_epoch,
        epoch_after=task.current_epoch + (1 if diff.membership_changed else 0),
        diff=diff,
    )
    if dry_run or not diff.membership_changed:
        return report

    epoch, now = report.epoch_after, utcnow()
    old_rows = {
        b.id: b
        for b in session.scalars(select(MonitorBatch).where(MonitorBatch.id.in_(list(current))))
    }
    if diff.kept:
        session.execute(
            update(MonitorBatch)
            .where(MonitorBatch.id.in_(sorted(diff.kept)))
            .values(epoch=epoch, update_time=now)
        )
    used_numbers = {old_rows[k].batch_no for k in diff.kept}
    key_to_id: dict[int, int] = {k: k for k in diff.kept}
    created: list[int] = []
    for key in [*sorted(diff.changed), *diff.new]:
        number = old_rows[key].batch_no if key > 0 else _next_free(used_numbers)
        used_numbers.add(number)
        row = MonitorBatch(
            task_id=task_id,
            batch_no=number,
            epoch=epoch,
            item_count=len(result.batches[key]),
            status=BatchStatus.PENDING,
        )
        session.add(row)
        session.flush()
        key_to_id[key] = row.id
        created.append(row.id)
        session.add_all(
            MonitorBatchItem(batch_id=row.id, target_id=active[ca].id, batch_order=order)
            for order, ca in enumerate(result.batches[key])
        )
    # The old rows of changed and retired batches stay in the old epoch until handover; their
    # update_time marks the switch, from which the grace period runs.
    superseded = sorted(diff.changed | diff.retired)
    if superseded:
        session.execute(
            update(MonitorBatch).where(MonitorBatch.id.in_(superseded)).values(update_time=now)
        )
    _write_target_mirror(session, targets, result.batches, key_to_id)
    task.current_epoch = epoch  # last: readers follow current_epoch
    task.update_time = now
    return replace(report, new_batch_ids=tuple(created), carried_batch_ids=tuple(sorted(diff.kept)))


def _next_free(used: set[int]) -> int:
    number = 1
    while number in used:
        number += 1
    return number


def _write_target_mirror(
    session: Session,
    targets: Sequence[MonitorTaskTarget],
    batches: Mapping[int, tuple[str, ...]],
    key_to_id: Mapping[int, int],
) -> None:
    """Keep `batch_id`/`batch_order` on targets in step; write only the rows that differ."""
    place = {
        ca: (key_to_id[key], order) for key, cas in batches.items() for order, ca in enumerate(cas)
    }
    changes = []
    for target in targets:
        batch_id, order = place.get(target.target_value, (None, None))
        if (target.batch_id, target.batch_order) != (batch_id, order):
            changes.append({"tid": target.id, "bid": batch_id, "border": order})
    if changes:
        session.connection().execute(
            update(table(MonitorTaskTarget))
            .where(table(MonitorTaskTarget).c.id == bindparam("tid"))
            # update_time is the backend's: it marks edits of the target (the allocate job
            # looks for them), not where we placed it
            .values(
                batch_id=bindparam("bid"),
                batch_order=bindparam("border"),
                update_time=table(MonitorTaskTarget).c.update_time,
            ),
            changes,
        )
        session.expire_all()


def publish_epoch(client: redis.Redis, keys: Keys, report: EpochReport) -> None:
    """Tell carried batches' consumers their new epoch (they stamp it on events)."""
    if report.epoch_after == report.epoch_before:
        return
    pipe = client.pipeline(transaction=False)
    for batch_id in report.carried_batch_ids:
        pipe.hset(keys.batch_control(batch_id), "epoch", report.epoch_after)
    pipe.execute()


def is_live(client: redis.Redis, keys: Keys, batch_id: int) -> bool:
    """A batch is live while its consumer reports it subscribed (status key, refreshed with TTL)."""
    return client.hget(keys.batch_status(batch_id), "status") == BatchStatus.RUNNING


def retire_old_epochs(
    session: Session,
    client: redis.Redis,
    keys: Keys,
    *,
    task_id: int | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    now: datetime | None = None,
) -> list[int]:
    """Retire old-epoch batches whose targets are all served live in the current epoch, or whose
    grace period is over; tell their consumers to stop. Returns the ids retired."""
    now = now or utcnow()
    query = (
        select(MonitorBatch)
        .join(MonitorTask, MonitorTask.id == MonitorBatch.task_id)
        .where(
            MonitorBatch.epoch < MonitorTask.current_epoch,
            MonitorBatch.status != BatchStatus.RETIRED,
        )
    )
    if task_id is not None:
        query = query.where(MonitorBatch.task_id == task_id)
    retired = []
    for batch in session.scalars(query).all():
        owners = _current_owners(session, batch)
        waiting = sorted(
            {owner for owner in owners if owner is None or not is_live(client, keys, owner)},
            key=lambda o: -1 if o is None else o,
        )
        overdue = now - batch.update_time >= timedelta(seconds=grace_s)
        if waiting and not overdue:
            continue
        if waiting:
            log.warning(
                "batch %s retired at the end of its grace period; new owners not live: %s",
                batch.id,
                waiting,
            )
        batch.status = BatchStatus.RETIRED
        batch.update_time = now
        retired.append(batch.id)
    session.flush()
    if retired:
        pipe = client.pipeline(transaction=False)
        for batch_id in retired:
            pipe.hset(keys.batch_control(batch_id), "stop", BatchStatus.RETIRED)
        pipe.execute()
    return retired


def _current_owners(session: Session, batch: MonitorBatch) -> set[int | None]:
    """The current-epoch batch of each still-active target of `batch` (None: none yet)."""
    rows = session.execute(
        select(MonitorTaskTarget.batch_id)
        .join(MonitorBatchItem, MonitorBatchItem.target_id == MonitorTaskTarget.id)
        .where(MonitorBatchItem.batch_id == batch.id, MonitorTaskTarget.status == TARGET_ACTIVE)
    ).all()
    return {row[0] for row in rows}
