"""Batches in the database: what a consumer needs to know, and its status row."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from kakarot_workers.db.models import (
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


def load_batch_plan(session: Session, batch_id: int) -> BatchPlan:
    batch = session.get(MonitorBatch, batch_id)
    if batch is None:
        raise NotFoundError(f"batch {batch_id} does not exist")
    task = get_task(session, batch.task_id)
    config = task_config(session, task.id)
    tokens = list(
        session.scalars(
            select(MonitorTaskTarget.target_value)
            .join(MonitorBatchItem, MonitorBatchItem.target_id == MonitorTaskTarget.id)
            .where(MonitorBatchItem.batch_id == batch_id)
            .order_by(MonitorBatchItem.batch_order)
        )
    )
    return BatchPlan(
        batch_id=batch.id,
        task_id=task.id,
        epoch=batch.epoch,
        chain=task.chain_type,
        source=config.source if config else None,
        tokens=tokens,
        status=batch.status,
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
