"""The alert log (`monitor_alert_log_v2`) and its outbox, written together in one transaction.

An alert row is unique by its de-duplication key (task, chain, tx, log index, rule); each of its
notifications is an outbox row unique by (task, chain, tx, log index, channel). Recording the
same alerts again (a re-delivered message, a retry) inserts nothing and returns the same
pending notifications, so whoever recorded them last makes sure they are delivered.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import Insert, select, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.orm import Session

from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox, MonitorBatch, utcnow
from kakarot_workers.notify.channels import Channel
from kakarot_workers.notify.messages import AlertSummary, RuleFiring
from kakarot_workers.notify.outbox import PendingNotification
from kakarot_workers.status import NotifyStatus, OutboxStatus


def dedup_key(task_id: int, chain: str, tx_hash: str, log_index: int, rule: str) -> str:
    """sha256 of `task:chain:tx:log_index:rule`: one event alerts a task at most once per rule."""
    return hashlib.sha256(
        f"{task_id}:{chain}:{tx_hash.lower()}:{log_index}:{rule}".encode()
    ).hexdigest()


class AlertData(TypedDict):
    """`monitor_alert_log_v2.alert_data`: the values that fired, and what the alert knew."""

    rules: list[RuleFiring]
    side: str
    amount_usd: float
    price_usd: float
    change_pct: float | None
    market_cap_usd: float | None
    top10_holders_pct: float | None
    missing: list[str]


class AlertRow(TypedDict):
    """One row of `monitor_alert_log_v2`, as the alert pool writes it."""

    dedup_key: str
    task_id: int
    config_id: int
    config_version: int
    batch_id: int | None
    epoch: int | None
    chain_type: str
    ca: str
    token_symbol: str | None
    alert_type: str
    alert_data: AlertData
    tx_hash: str
    log_index: int
    block_number: int | None
    event_time: datetime
    price_usd: float
    amount_usd: float
    incomplete_data: int
    notify_status: NotifyStatus


@dataclass
class AlertDraft:
    """An alert to record: its row, what its messages say, and the (channel, destination) pairs
    to notify (`notify.channels.NotifyMethods.targets`)."""

    row: AlertRow
    summary: AlertSummary
    targets: list[tuple[Channel, str]] = field(default_factory=list)
    digest_s: int | None = None


@dataclass(frozen=True)
class Recorded:
    """What recording did: the rows new this time, and every notification still pending."""

    new_rows: list[AlertRow]
    pending: list[PendingNotification]


def _insert_ignoring_duplicates(session: Session, model: Any, key: str) -> Insert:
    table = model.__table__
    if session.get_bind().dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=[key])
    return mysql.insert(table).prefix_with("IGNORE")


def _revive(session: Session, keys: set[str]) -> None:
    """Alerts judged again whose trade a re-org had withdrawn: it is in the chain again (the
    pool does not judge a trade while it is withdrawn), so the alert stands, and its retracted
    notifications are pending again."""
    ids = list(
        session.scalars(
            select(MonitorAlertLog.id).where(
                MonitorAlertLog.dedup_key.in_(keys), MonitorAlertLog.retracted == 1
            )
        )
    )
    if not ids:
        return
    session.execute(update(MonitorAlertLog).where(MonitorAlertLog.id.in_(ids)).values(retracted=0))
    session.execute(
        update(MonitorAlertOutbox)
        .where(
            MonitorAlertOutbox.alert_id.in_(ids),
            MonitorAlertOutbox.status == OutboxStatus.RETRACTED,
        )
        .values(status=OutboxStatus.PENDING, next_attempt_at=None)
    )
    session.execute(
        update(MonitorAlertLog)
        .where(MonitorAlertLog.id.in_(ids), MonitorAlertLog.notify_status == NotifyStatus.RETRACTED)
        .values(notify_status=NotifyStatus.PENDING)
    )


def record_alerts(session: Session, drafts: Sequence[AlertDraft]) -> Recorded:
    """Insert the alert rows and their outbox rows (duplicates skipped), in the caller's
    transaction; return the rows inserted now and the pending notifications of all of them."""
    if not drafts:
        return Recorded([], [])
    keys = [d.row["dedup_key"] for d in drafts]
    existing = set(
        session.scalars(
            select(MonitorAlertLog.dedup_key).where(MonitorAlertLog.dedup_key.in_(keys))
        )
    )
    fresh = [d for d in drafts if d.row["dedup_key"] not in existing]
    now = utcnow()
    if existing:
        _revive(session, existing)
    if fresh:
        rows = [{**d.row, "create_time": now} for d in fresh]
        session.execute(_insert_ignoring_duplicates(session, MonitorAlertLog, "dedup_key"), rows)
        per_batch = Counter(d.row["batch_id"] for d in fresh if d.row.get("batch_id"))
        for batch_id, count in per_batch.items():
            session.execute(
                update(MonitorBatch)
                .where(MonitorBatch.id == batch_id)
                .values(total_alerts=MonitorBatch.total_alerts + count, last_alert_time=now)
            )
    ids = dict(
        session.execute(
            select(MonitorAlertLog.dedup_key, MonitorAlertLog.id).where(
                MonitorAlertLog.dedup_key.in_(keys)
            )
        ).all()
    )
    outbox = []
    for draft in drafts:
        alert_id = ids[draft.row["dedup_key"]]
        row = draft.row
        for channel, destination in draft.targets:
            outbox.append(
                {
                    "dedup_key": dedup_key(
                        row["task_id"], row["chain_type"], row["tx_hash"], row["log_index"], channel
                    ),
                    "alert_id": alert_id,
                    "task_id": row["task_id"],
                    "channel": channel,
                    "destination": destination,
                    "payload": {**draft.summary, "alert_id": alert_id},
                    "digest_s": draft.digest_s,
                    "status": OutboxStatus.PENDING,
                    "attempts": 0,
                    "create_time": now,
                    "update_time": now,
                }
            )
    pending: list[PendingNotification] = []
    if outbox:
        session.execute(
            _insert_ignoring_duplicates(session, MonitorAlertOutbox, "dedup_key"), outbox
        )
        found = session.execute(
            select(
                MonitorAlertOutbox.id,
                MonitorAlertOutbox.task_id,
                MonitorAlertOutbox.channel,
                MonitorAlertOutbox.digest_s,
            ).where(
                MonitorAlertOutbox.dedup_key.in_([o["dedup_key"] for o in outbox]),
                MonitorAlertOutbox.status == OutboxStatus.PENDING,
            )
        ).all()
        pending = [PendingNotification(*row) for row in found]
    return Recorded([d.row for d in fresh], pending)
