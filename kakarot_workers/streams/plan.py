"""A batch's plan: what its consumer serves, read from the database."""

from __future__ import annotations

from datetime import UTC

from sqlalchemy import select
from sqlalchemy.orm import Session

from kakarot_workers.db.batches import get_task, task_config
from kakarot_workers.db.models import MonitorBatch, MonitorBatchItem, MonitorTaskTarget
from kakarot_workers.errors import NotFoundError
from kakarot_workers.sources import BatchPlan


def load_batch_plan(session: Session, batch_id: int) -> BatchPlan:
    """The batch's tokens (and pairs, in batch order) with its task's chain, type and source."""
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
        created_ms=int(batch.create_time.replace(tzinfo=UTC).timestamp() * 1000),
    )
