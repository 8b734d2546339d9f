"""The control plane: allocate a task's targets into batches and dispatch their consumers.

The beat jobs (allocate, reconcile, check_timeouts, …) will live here; for now these run by hand
(`kakarot dispatch`) and from the demo.
"""

from __future__ import annotations

import logging

from kakarot_workers.batches import allocate_plain, current_batch_ids, get_task
from kakarot_workers.celery_app import app
from kakarot_workers.db.session import session_scope
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

CONSUME_TASK = "kakarot.streams.consume_batch"


def ensure_allocated(task_id: int) -> list[int]:
    """The task's current batch ids, allocating a first epoch if it has none."""
    with session_scope() as session:
        task = get_task(session, task_id)
        if task.current_epoch == 0:
            epoch = allocate_plain(session, task_id, get_settings().batch_cap)
            log.info("task %s allocated: epoch %s", task_id, epoch)
    with session_scope() as session:
        return current_batch_ids(session, task_id)


def dispatch(batch_ids: list[int]) -> None:
    """Send one `consume_batch` per batch to the `streams` queue."""
    for batch_id in batch_ids:
        app.send_task(CONSUME_TASK, args=[batch_id])
