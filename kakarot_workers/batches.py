"""Batches in the database: what a consumer needs to know, and its status row."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kakarot_workers.db.models import (
    TASK_ACTIVE,
    MonitorBatch,
    MonitorBatchItem,
    MonitorConfig,
    MonitorTask,
    MonitorTaskConfig,
    MonitorTaskTarget,
    utcnow,
)
from kakarot_workers.errors import NotFoundError


@dataclass(frozen=True)
class BatchPlan:
    """What one stream consumer serves: a batch's tokens, with the task's chain and source."""

    batch_id: int
    task_id: int
    epoch: int
    chain: str
    source: str | None
    tokens: list[str]
    status: str
    task_type: str = "batch"
    # CA → its pair address, where the target names one (EVM sources)
    pairs: dict[str, str] = field(default_factory=dict)


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
            MonitorBatch.status != "retired",
            MonitorTask.del_flag == 0,
            MonitorTask.status == TASK_ACTIVE,
        )
        .order_by(MonitorBatch.task_id, MonitorBatch.batch_no)
    )
    if task_id is not None:
        query = query.where(MonitorBatch.task_id == task_id)
    return list(session.scalars(query))


def load_batch_plan(session: Session, batch_id: int) -> BatchPlan:
    batch = session.get(MonitorBatch, batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} does not exist")
    task = get_task(session, batch.task_id)
    config = task_config(session, task.id)
    rows = session.execute(
        select(MonitorTaskTarget.target_value, MonitorTaskTarget.pair_address)
        .join(MonitorBatchItem, MonitorBatchItem.target_id == MonitorTaskTarget.id)
        .where(MonitorBatchItem.batch_id == batch_id)
        .order_by(MonitorBatchItem.batch_order)
    ).all()
    tokens = [ca for ca, _ in rows]
    return BatchPlan(
        batch_id=batch.id,
        task_id=task.id,
        epoch=batch.epoch,
        chain=task.chain_type,
        source=config.source if config else None,
        tokens=tokens,
        status=batch.status,
        task_type=task.task_type,
        pairs={ca: pair for ca, pair in rows if pair},
    )


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
