"""Silent batches and silent tasks (beat's check_timeouts job).

A batch that says it serves (`running`, `pending`) but has not beaten for `batch_stale_s`, and
whose lease nobody holds, becomes `stale` and is dispatched again. An active task with no
heartbeat for `task_timeout_s` (since its creation when it never beat) is marked failed, with the
reason, and reconcile keeps serving it; a failed task that beats again is marked ok.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, or_, select, update

from kakarot_workers import backend, runtime
from kakarot_workers.db.models import TASK_ACTIVE, MonitorBatch, MonitorTask, table, utcnow
from kakarot_workers.db.session import session_scope
from kakarot_workers.settings import get_settings
from kakarot_workers.status import SERVING, BatchStatus, Health
from kakarot_workers.streams import leases
from kakarot_workers.streams.dispatch import dispatch_unserved

log = logging.getLogger(__name__)


@dataclass
class TimeoutReport:
    stale_batches: list[int] = field(default_factory=list)
    redispatched: list[int] = field(default_factory=list)
    failed_tasks: list[int] = field(default_factory=list)
    recovered_tasks: list[int] = field(default_factory=list)


def check_timeouts(now: datetime | None = None) -> TimeoutReport:
    """Batches serving with a heartbeat older than `batch_stale_s` and no live lease become
    `stale` and are dispatched again; active tasks silent for `task_timeout_s` (since their
    creation when they never beat) are marked failed, with the reason; a failed task that beats
    again is marked ok. Nothing else is touched."""
    now = now or utcnow()
    report = TimeoutReport()
    _stale_batches(now, report)
    _task_timeouts(now, report)
    return report


def _stale_batches(now: datetime, report: TimeoutReport) -> None:
    settings = get_settings()
    client, keys = runtime.redis_client(), runtime.keys()
    stale_before = now - timedelta(seconds=settings.batch_stale_s)
    with session_scope() as session:
        silent = list(
            session.scalars(
                select(MonitorBatch.id)
                .join(MonitorTask, MonitorTask.id == MonitorBatch.task_id)
                .where(
                    MonitorBatch.epoch == MonitorTask.current_epoch,
                    MonitorBatch.status.in_(SERVING),
                    func.coalesce(MonitorBatch.last_heartbeat, MonitorBatch.update_time)
                    < stale_before,
                    MonitorTask.del_flag == 0,
                    MonitorTask.status == TASK_ACTIVE,
                )
            )
        )
        held = leases.store().holders(silent) if silent else {}
        report.stale_batches = [b for b in silent if not held.get(b)]
        if report.stale_batches:
            batches = table(MonitorBatch)
            session.execute(
                update(batches)
                .where(batches.c.id.in_(report.stale_batches), batches.c.status.in_(SERVING))
                .values(status=BatchStatus.STALE, update_time=batches.c.update_time)
            )
    if report.stale_batches:
        log.warning("check_timeouts: batches %s are stale; dispatching again", report.stale_batches)
        client.incrby(keys.batches_stale, len(report.stale_batches))
        report.redispatched = dispatch_unserved(report.stale_batches)


def _task_timeouts(now: datetime, report: TimeoutReport) -> None:
    settings = get_settings()
    client, keys = runtime.redis_client(), runtime.keys()
    timeout = timedelta(seconds=settings.task_timeout_s)
    seen_at = func.coalesce(MonitorTask.last_heartbeat, MonitorTask.create_time)
    active = (MonitorTask.del_flag == 0, MonitorTask.status == TASK_ACTIVE)
    with session_scope() as session:
        overdue = session.execute(
            select(MonitorTask.id, MonitorTask.last_heartbeat, MonitorTask.create_time).where(
                *active,
                seen_at < now - timeout,
                or_(MonitorTask.health.is_(None), MonitorTask.health != Health.FAILED),
            )
        ).all()
        tasks = table(MonitorTask)
        for task_id, beat, created in overdue:
            reason = (
                f"no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC"
                if beat is not None
                else f"no heartbeat since its creation at {created:%Y-%m-%d %H:%M:%S} UTC"
            ) + f" (timeout {settings.task_timeout_s / 60:g} min)"
            session.execute(
                update(tasks)
                .where(tasks.c.id == task_id)
                .values(
                    health=Health.FAILED,
                    health_reason=reason,
                    health_time=now,
                    update_time=tasks.c.update_time,
                )
            )
            report.failed_tasks.append(task_id)
            log.error(
                "task %s failed: %s; reconcile keeps dispatching its batches", task_id, reason
            )
        recovered = session.scalars(
            select(MonitorTask.id).where(
                *active, MonitorTask.health == Health.FAILED, seen_at >= now - timeout
            )
        ).all()
        if recovered:
            session.execute(
                update(tasks)
                .where(tasks.c.id.in_(recovered), tasks.c.health == Health.FAILED)
                .values(
                    health=Health.OK,
                    health_reason=None,
                    health_time=now,
                    update_time=tasks.c.update_time,
                )
            )
            report.recovered_tasks = list(recovered)
    if report.failed_tasks:
        client.incrby(keys.tasks_failed, len(report.failed_tasks))
    for task_id in report.failed_tasks:
        _tell_backend(task_id, Health.FAILED)
    for task_id in report.recovered_tasks:
        _tell_backend(task_id, Health.OK)


def _tell_backend(task_id: int, health: str) -> None:
    """A `task_status` push to the backend and dashboards, when a backend is configured: the
    task is still served (status 1), the failure is in the message."""
    if health == Health.FAILED:
        message = "failed: no heartbeat from its batches (still served)"
    else:
        message = "running: its batches beat again"
    backend.send_task_status(task_id, running=True, message=message)
