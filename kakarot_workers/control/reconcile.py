"""The control loop: allocate tasks whose targets changed into new epochs, retire old epochs
once handed over, and dispatch every current-epoch batch nobody serves.

Beat's jobs run these (`control.tasks`); so do `kakarot allocate`, `kakarot dispatch`,
`kakarot reconcile` and the demo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import redis
from sqlalchemy import func, select

from kakarot_workers import runtime
from kakarot_workers.control.allocation import AllocationParams
from kakarot_workers.control.epochs import (
    EpochReport,
    apply_allocation,
    publish_epoch,
    retire_old_epochs,
)
from kakarot_workers.db.batches import current_batch_ids, current_batch_ids_of_active_tasks
from kakarot_workers.db.models import TARGET_ACTIVE, TASK_ACTIVE, MonitorTask, MonitorTaskTarget
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import ConfigError
from kakarot_workers.settings import get_settings
from kakarot_workers.streams.dispatch import dispatch_unserved

log = logging.getLogger(__name__)


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


def target_signatures(task_id: int | None = None) -> dict[int, str]:
    """Per active task (or one), a signature of its active targets: count, newest id, newest
    update (allocation keeps `update_time` when it records a target's batch)."""
    tasks_query = select(MonitorTask.id, MonitorTask.task_type).where(
        MonitorTask.del_flag == 0, MonitorTask.status == TASK_ACTIVE
    )
    targets_query = (
        select(
            MonitorTaskTarget.task_id,
            func.count(),
            func.max(MonitorTaskTarget.id),
            func.max(MonitorTaskTarget.update_time),
        )
        .where(MonitorTaskTarget.status == TARGET_ACTIVE)
        .group_by(MonitorTaskTarget.task_id)
    )
    if task_id is not None:
        tasks_query = tasks_query.where(MonitorTask.id == task_id)
        targets_query = targets_query.where(MonitorTaskTarget.task_id == task_id)
    with session_scope() as session:
        tasks = session.execute(tasks_query).all()
        rows = session.execute(targets_query).all()
    by_task = {row[0]: f"{row[1]}:{row[2]}:{row[3]}" for row in rows}
    return {task_id: f"{task_type}|{by_task.get(task_id, '0')}" for task_id, task_type in tasks}


def allocate_changed() -> list[int]:
    """Allocate every active task whose target signature differs from its last allocation's;
    return those tasks."""
    client, keys = runtime.redis_client(), runtime.keys()
    signatures = target_signatures()
    known = client.hgetall(keys.target_signatures)
    changed = [t for t, sig in signatures.items() if known.get(str(t)) != sig]
    done = []
    for task_id in changed:
        try:
            allocate_task(task_id)
        except ConfigError as exc:  # one bad task never holds up the others
            log.error("allocate: task %s skipped: %s", task_id, exc)
            continue
        client.hset(keys.target_signatures, str(task_id), signatures[task_id])
        done.append(task_id)
    gone = [t for t in known if int(t) not in signatures]
    if gone:
        client.hdel(keys.target_signatures, *gone)
    return done


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
