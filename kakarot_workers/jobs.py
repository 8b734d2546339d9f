"""The control plane's periodic jobs: celery beat sends them to the `control` queue.

- `kakarot.control.allocate`: re-allocate the tasks whose active targets changed;
- `kakarot.control.reconcile`: retire old epochs, dispatch unowned current-epoch batches;
- `kakarot.control.check_timeouts`: silent batches become `stale` and are dispatched again;
  silent tasks are marked failed;
- `kakarot.control.sync_heartbeats`: the consumers' Redis status → `monitor_batch_v2`, in bulk;
- `kakarot.control.poll_configs`: config versions in the database → the announced versions;
- `kakarot.notify.sweep_outbox`: notifications left behind by a dead worker.

Every job is safe to run twice at once (two beats in a split brain, a retried message): the
dispatch markers, the version maximum and conditional updates make the second run a no-op.
Beat itself holds a Redis lock (RedBeat), so normally only one runs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import redis
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import (
    backend_client,
    config_versions,
    control,
    heartbeats,
    leases,
    runtime,
)
from kakarot_workers.celery_app import app
from kakarot_workers.db.models import (
    TARGET_ACTIVE,
    TASK_ACTIVE,
    MonitorBatch,
    MonitorTask,
    MonitorTaskTarget,
    utcnow,
)
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import ConfigError
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

HEALTH_OK = "ok"
HEALTH_FAILED = "failed"

_JOB = {
    "ignore_result": True,
    "autoretry_for": (SQLAlchemyError, redis.RedisError),
    "retry_backoff": True,
    "max_retries": 3,
}


# --- allocate -------------------------------------------------------------------------------
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
            control.allocate_task(task_id)
        except ConfigError as exc:  # one bad task never holds up the others
            log.error("allocate: task %s skipped: %s", task_id, exc)
            continue
        client.hset(keys.target_signatures, str(task_id), signatures[task_id])
        done.append(task_id)
    gone = [t for t in known if int(t) not in signatures]
    if gone:
        client.hdel(keys.target_signatures, *gone)
    return done


@app.task(name="kakarot.control.allocate", **_JOB)
def allocate_job() -> list[int]:
    return allocate_changed()


@app.task(name="kakarot.control.reconcile", **_JOB)
def reconcile_job() -> dict[str, list[int]]:
    report = control.reconcile()
    return {"dispatched": report.dispatched, "retired": report.retired}


# --- check_timeouts --------------------------------------------------------------------------
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
                    MonitorBatch.status.in_(heartbeats.SERVING),
                    func.coalesce(MonitorBatch.last_heartbeat, MonitorBatch.update_time)
                    < stale_before,
                    MonitorTask.del_flag == 0,
                    MonitorTask.status == TASK_ACTIVE,
                )
            )
        )
        held = leases.holders(client, keys, silent) if silent else {}
        report.stale_batches = [b for b in silent if not held.get(b)]
        if report.stale_batches:
            batches = MonitorBatch.__table__
            session.execute(
                update(batches)
                .where(
                    batches.c.id.in_(report.stale_batches), batches.c.status.in_(heartbeats.SERVING)
                )
                .values(status="stale", update_time=batches.c.update_time)
            )
    if report.stale_batches:
        log.warning("check_timeouts: batches %s are stale; dispatching again", report.stale_batches)
        client.incrby(keys.batches_stale, len(report.stale_batches))
        report.redispatched = control.dispatch_unserved(report.stale_batches)


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
                or_(MonitorTask.health.is_(None), MonitorTask.health != HEALTH_FAILED),
            )
        ).all()
        tasks = MonitorTask.__table__
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
                    health=HEALTH_FAILED,
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
                *active, MonitorTask.health == HEALTH_FAILED, seen_at >= now - timeout
            )
        ).all()
        if recovered:
            session.execute(
                update(tasks)
                .where(tasks.c.id.in_(recovered), tasks.c.health == HEALTH_FAILED)
                .values(
                    health=HEALTH_OK,
                    health_reason=None,
                    health_time=now,
                    update_time=tasks.c.update_time,
                )
            )
            report.recovered_tasks = list(recovered)
    if report.failed_tasks:
        client.incrby(keys.tasks_failed, len(report.failed_tasks))
    for task_id in report.failed_tasks:
        _tell_backend(task_id, HEALTH_FAILED)
    for task_id in report.recovered_tasks:
        _tell_backend(task_id, HEALTH_OK)


def _tell_backend(task_id: int, health: str) -> None:
    """A `task_status` push to the backend and dashboards, when a backend is configured."""
    backend_client.send_event(
        "task_status", {"taskId": task_id, "health": health, "status": TASK_ACTIVE}
    )


@app.task(name="kakarot.control.check_timeouts", **_JOB)
def check_timeouts_job() -> dict[str, list[int]]:
    report = check_timeouts()
    return {"stale": report.stale_batches, "failed": report.failed_tasks}


# --- sync_heartbeats -------------------------------------------------------------------------
def sync_heartbeats() -> int:
    """Copy the consumers' Redis status to `monitor_batch_v2` when beat is the writer."""
    if get_settings().heartbeat_writer != "beat":
        return 0
    client, keys = runtime.redis_client(), runtime.keys()
    return heartbeats.write_heartbeats(heartbeats.batch_heartbeats(client, keys))


@app.task(name="kakarot.control.sync_heartbeats", **_JOB)
def sync_heartbeats_job() -> int:
    return sync_heartbeats()


# --- configs ---------------------------------------------------------------------------------
@app.task(name="kakarot.control.poll_configs", **_JOB)
def poll_configs_job() -> list[int]:
    return config_versions.poll_configs()
