"""The alert log (`monitor_alert_log_v2`): idempotent inserts keyed by the de-duplication key."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Insert, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session

from kakarot_workers.db.models import MonitorAlertLog, MonitorBatch, utcnow


def dedup_key(task_id: int, chain: str, tx_hash: str, log_index: int, rule: str) -> str:
    """sha256 of `task:chain:tx:log_index:rule`: one event alerts a task at most once per rule."""
    return hashlib.sha256(
        f"{task_id}:{chain}:{tx_hash.lower()}:{log_index}:{rule}".encode()
    ).hexdigest()


def _insert_ignoring_duplicates(session: Session) -> Insert:
    table = MonitorAlertLog.__table__
    if session.get_bind().dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=["dedup_key"])
    return mysql.insert(table).prefix_with("IGNORE")


def record_alerts(session: Session, rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert alert rows, skipping those whose dedup_key exists; return the rows inserted.

    Safe to call again with the same rows (re-delivery, retries): nothing is inserted twice.
    """
    statement = _insert_ignoring_duplicates(session)
    inserted = []
    for row in rows:
        if session.execute(statement, row).rowcount == 1:
            inserted.append(row)
    per_batch = Counter(row["batch_id"] for row in inserted if row.get("batch_id"))
    for batch_id, count in per_batch.items():
        session.execute(
            update(MonitorBatch)
            .where(MonitorBatch.id == batch_id)
            .values(total_alerts=MonitorBatch.total_alerts + count, last_alert_time=utcnow())
        )
    return inserted
