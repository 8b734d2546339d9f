"""Delivering notifications from the outbox (`monitor_alert_outbox_v2`), each at most once.

A delivery claims its row (`pending` → `sending`, with a claim that expires), sends, and marks it
`sent` with the service's message reference. A retryable failure puts it back to `pending` with
`next_attempt_at` (Retry-After when the service gave one, else exponential back-off); a permanent
one, or the last attempt, marks it `failed` with the error. A row whose claim expired (its worker
died mid-send) may be claimed again: the only window for a second message is a worker dying
between the service's answer and the `sent` commit (a database failing there is covered by
`notify.journal`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox, utcnow
from kakarot_workers.notify.messages import AlertSummary
from kakarot_workers.status import NotifyStatus, OutboxStatus


class PendingNotification(NamedTuple):
    """An outbox row waiting for delivery: what dispatching it needs to know."""

    outbox_id: int
    task_id: int
    channel: str
    digest_s: int | None  # None: sent alone; else gathered into the task's digest of that window


@dataclass(frozen=True)
class Claimed:
    id: int
    alert_id: int
    task_id: int
    channel: str
    destination: str
    payload: AlertSummary
    attempts: int
    digest_s: int | None


def _claimable(now: datetime):  # type: ignore[no-untyped-def]
    row = MonitorAlertOutbox
    return or_(
        and_(
            row.status == OutboxStatus.PENDING,
            or_(row.next_attempt_at.is_(None), row.next_attempt_at <= now),
        ),
        and_(row.status == OutboxStatus.SENDING, row.claimed_until < now),
    )


def claim(session: Session, ids: Sequence[int], claim_s: float) -> list[Claimed]:
    """Claim the rows of `ids` that are due and not held by a live claim; commit it."""
    now = utcnow()
    until = now + timedelta(seconds=claim_s)
    claimed = []
    for outbox_id in ids:
        result = session.execute(
            update(MonitorAlertOutbox)
            .where(MonitorAlertOutbox.id == outbox_id, _claimable(now))
            .values(
                status=OutboxStatus.SENDING,
                claimed_until=until,
                attempts=MonitorAlertOutbox.attempts + 1,
                update_time=now,
            )
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            row = session.get(MonitorAlertOutbox, outbox_id)
            assert row is not None
            claimed.append(
                Claimed(
                    row.id,
                    row.alert_id,
                    row.task_id,
                    row.channel,
                    row.destination or "",
                    row.payload,
                    row.attempts,
                    row.digest_s,
                )
            )
    session.commit()
    return claimed


def mark_sent(session: Session, rows: Sequence[Claimed], message_ref: str | None) -> None:
    now = utcnow()
    session.execute(
        update(MonitorAlertOutbox)
        .where(MonitorAlertOutbox.id.in_([r.id for r in rows]))
        .values(
            status=OutboxStatus.SENT,
            sent_at=now,
            claimed_until=None,
            message_ref=message_ref,
            update_time=now,
        )
    )
    roll_up(session, {r.alert_id for r in rows})


def mark_retry(session: Session, rows: Sequence[Claimed], error: str, wait_s: float) -> None:
    now = utcnow()
    session.execute(
        update(MonitorAlertOutbox)
        .where(
            MonitorAlertOutbox.id.in_([r.id for r in rows]),
            MonitorAlertOutbox.status == OutboxStatus.SENDING,  # not if retracted meanwhile
        )
        .values(
            status=OutboxStatus.PENDING,
            claimed_until=None,
            next_attempt_at=now + timedelta(seconds=wait_s),
            last_error=error[:500],
            update_time=now,
        )
    )


def mark_failed(session: Session, rows: Sequence[Claimed], error: str) -> None:
    now = utcnow()
    session.execute(
        update(MonitorAlertOutbox)
        .where(
            MonitorAlertOutbox.id.in_([r.id for r in rows]),
            MonitorAlertOutbox.status == OutboxStatus.SENDING,  # not if retracted meanwhile
        )
        .values(
            status=OutboxStatus.FAILED, claimed_until=None, last_error=error[:500], update_time=now
        )
    )
    roll_up(session, {r.alert_id for r in rows})


def roll_up(session: Session, alert_ids: set[int]) -> None:
    """An alert's notify_status: `sent` once every notification is sent (or retracted, one
    sent), `failed` once none is left to try and one failed, `retracted` when a re-org withdrew
    the trade before any was sent, `pending` otherwise."""
    for alert_id in alert_ids:
        statuses = set(
            session.scalars(
                select(MonitorAlertOutbox.status).where(MonitorAlertOutbox.alert_id == alert_id)
            )
        )
        if statuses and statuses <= {OutboxStatus.RETRACTED}:
            status = NotifyStatus.RETRACTED
        elif statuses <= {OutboxStatus.SENT, OutboxStatus.RETRACTED}:
            status = NotifyStatus.SENT
        elif statuses <= {OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.RETRACTED}:
            status = NotifyStatus.FAILED
        else:
            continue
        session.execute(
            update(MonitorAlertLog)
            .where(MonitorAlertLog.id == alert_id)
            .values(notify_status=status)
        )


def backoff_s(attempts: int, max_backoff_s: float, retry_after_s: float | None) -> float:
    """Wait before the next attempt: what the service asked, else 1, 2, 4 … s with jitter."""
    if retry_after_s is not None:
        return min(max(retry_after_s, 0.0), max_backoff_s * 5)
    base: float = min(max_backoff_s, 2.0 ** max(attempts - 1, 0))
    return base * random.uniform(0.8, 1.2)


def digest_group(session: Session, task_id: int, channel: str) -> list[int]:
    """Ids of the pending digest rows of a task's channel (oldest first)."""
    return list(
        session.scalars(
            select(MonitorAlertOutbox.id)
            .where(
                MonitorAlertOutbox.task_id == task_id,
                MonitorAlertOutbox.channel == channel,
                MonitorAlertOutbox.digest_s.is_not(None),
                MonitorAlertOutbox.status.in_((OutboxStatus.PENDING, OutboxStatus.SENDING)),
            )
            .order_by(MonitorAlertOutbox.id)
        )
    )


def due(session: Session, limit: int = 500) -> list[PendingNotification]:
    """Rows a sweep should (re)dispatch: pending and due, or claimed by a worker that vanished."""
    rows = session.execute(
        select(
            MonitorAlertOutbox.id,
            MonitorAlertOutbox.task_id,
            MonitorAlertOutbox.channel,
            MonitorAlertOutbox.digest_s,
        )
        .where(_claimable(utcnow()))
        .order_by(MonitorAlertOutbox.id)
        .limit(limit)
    ).all()
    return [PendingNotification(*row) for row in rows]
