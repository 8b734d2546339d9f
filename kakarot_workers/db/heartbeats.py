"""Batch heartbeats into `monitor_batch_v2`, in bulk, by the one writer the settings name.

The stream consumers keep their status in Redis (`streams.reporter`, refreshed every few
seconds, expiring with its consumer). The writer copies it to the database: beat's
sync_heartbeats job (`heartbeat_writer=beat`, the default) from Redis, each node for its own
batches (`node`), or `kakarot hub` (`hub`) from the heartbeats nodes send it. Two statements per
pass, whatever the number of batches.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, update

from kakarot_workers.db.models import MonitorBatch, MonitorTask, table
from kakarot_workers.db.session import session_scope
from kakarot_workers.status import LIVE, BatchStatus


def write_heartbeats(rows: list[dict[str, Any]]) -> int:
    """Write batch heartbeats (and their tasks' newest) in two statements; return rows given.
    A retired batch stays retired, and a heartbeat never moves back in time."""
    if not rows:
        return 0
    batches = table(MonitorBatch)
    statement = (
        update(batches)
        .where(
            batches.c.id == bindparam("b_id"),
            batches.c.status != BatchStatus.RETIRED,
            or_(batches.c.last_heartbeat.is_(None), batches.c.last_heartbeat <= bindparam("b_at")),
        )
        .values(
            status=bindparam("b_status"),
            # a writer that does not know a field (the hub knows nodes, not consumers) keeps it
            consumer_id=func.coalesce(bindparam("b_consumer"), batches.c.consumer_id),
            worker_id=func.coalesce(bindparam("b_worker"), batches.c.worker_id),
            worker_pid=func.coalesce(bindparam("b_pid"), batches.c.worker_pid),
            last_heartbeat=bindparam("b_at"),
            update_time=batches.c.update_time,
        )
    )
    params = [
        {
            "b_id": r["batch_id"],
            "b_status": r["status"],
            "b_consumer": r["consumer_id"],
            "b_worker": r["worker_id"],
            "b_pid": r["worker_pid"],
            "b_at": r["at"],
        }
        for r in rows
    ]
    newest: dict[int, datetime] = {}
    for r in rows:
        if r["task_id"] and r["status"] in LIVE:
            newest[r["task_id"]] = max(r["at"], newest.get(r["task_id"], r["at"]))
    tasks = table(MonitorTask)
    with session_scope() as session:
        session.execute(statement, params)
        if newest:
            session.execute(
                update(tasks)
                .where(
                    tasks.c.id == bindparam("t_id"),
                    or_(
                        tasks.c.last_heartbeat.is_(None), tasks.c.last_heartbeat < bindparam("t_at")
                    ),
                )
                .values(last_heartbeat=bindparam("t_at"), update_time=tasks.c.update_time),
                [{"t_id": t, "t_at": at} for t, at in newest.items()],
            )
    return len(rows)
