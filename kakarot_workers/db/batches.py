"""Tasks and batches in the database: the reads the stages share, and a batch's status row."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kakarot_workers.db.models import (
    TASK_ACTIVE,
    MonitorBatch,
    MonitorConfig,
    MonitorTask,
    MonitorTaskConfig,
    utcnow,
)
from kakarot_workers.errors import NotFoundError
from kakarot_workers.status import BatchStatus


def task_config(session: Session, task_id: int) -> MonitorConfig | None:
    """The task's config: the first by config_order (a task uses exactly one)."""
    return session.scalars(
        select(MonitorConfig)
        .join(MonitorTaskConfig, MonitorTaskConfig.config_id == MonitorConfig.id)
        .where(MonitorTaskConfig.task_id == task_id, MonitorConfig.del_flag == 0)
        .order_by(MonitorTaskConfig.config_order, MonitorTaskConfig.id)
        .limit(1)
    ).first()


def get_task(session: Session, task_id: int) -> MonitorTask:
    task = session.get(MonitorTask, task_id)
    if task is None or task.del_flag:
        raise NotFoundError(f"task {task_id} does not exist")
    return task


def current_batch_ids(session: Session, task_id: int) -> list[int]:
    task = get_task(session, task_id)
    return list(
        session.scalars(
            select(MonitorBatch.id)
            .where(MonitorBatch.task_id == task_id, MonitorBatch.epoch == task.current_epoch)
            .order_by(MonitorBatch.batch_no)
        )
    )


def current_batch_ids_of_active_tasks(session: Session, task_id: int | None = None) -> list[int]:
    """The current-epoch batches of every active, undeleted task (or of one task)."""
    query = (
        select(MonitorBatch.id)
        .join(MonitorTask, MonitorTask.id == MonitorBatch.task_id)
        .where(
            MonitorBatch.epoch == MonitorTask.current_epoch,
            MonitorBatch.status != BatchStatus.RETIRED,
            MonitorTask.del_flag == 0,
            MonitorTask.status == TASK_ACTIVE,
        )
        .order_by(MonitorBatch.task_id, MonitorBatch.batch_no)
    )
    if task_id is not None:
        query = query.where(MonitorBatch.task_id == task_id)
    return list(session.scalars(query))


def set_batch_status(
    session: Session,
    batch_id: int,
    status: str,
    *,
    consumer_id: str | None = None,
    worker_id: str | None = None,
    worker_pid: int | None = None,
    error: str | None = None,
) -> None:
    values: dict[str, object] = {
        "status": status,
        "update_time": utcnow(),
        "last_heartbeat": utcnow(),
    }
    if consumer_id is not None:
        values.update(consumer_id=consumer_id, worker_id=worker_id, worker_pid=worker_pid)
    if error is not None:
        values.update(last_error=error[:500], error_count=MonitorBatch.error_count + 1)
    session.execute(update(MonitorBatch).where(MonitorBatch.id == batch_id).values(**values))
