"""Where an alert becomes a message: Celery tasks that deliver the outbox (queue `notify`).

`deliver([id])` sends one notification; `flush_digest(task, channel)` sends a task's pending
digest notifications of a channel as one message; `sweep_outbox()` re-dispatches whatever is due
and has no task on its way (a worker died between two steps). Every message that arrives early,
twice, or for a row another worker holds is harmless: the claim in `outbox` decides.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import metrics, queues, runtime
from kakarot_workers.celery import app
from kakarot_workers.db.models import MonitorAlertOutbox, utcnow
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import NotifyError
from kakarot_workers.keys import Keys
from kakarot_workers.notify import journal, outbox
from kakarot_workers.notify.channels import CHANNELS
from kakarot_workers.notify.delivery import Delivery
from kakarot_workers.notify.notifiers import notifier
from kakarot_workers.settings import get_settings
from kakarot_workers.status import OutboxStatus

log = logging.getLogger(__name__)

# A digest flush is scheduled once per window: the marker lives a little less than the window,
# so an alert recorded after the flush has read its group schedules the next one.
DIGEST_MARKER_MARGIN_MS = 500


def dispatch(pending: Sequence[outbox.PendingNotification]) -> None:
    """Send the tasks that deliver these pending notifications: one `deliver` per row, one
    scheduled `flush_digest` per digest window of a task's channel."""
    client, keys = runtime.redis_client(), runtime.keys()
    for outbox_id, task_id, channel, digest_s in pending:
        if digest_s is None:
            deliver.apply_async(args=[[outbox_id]])
            continue
        marker_ms = max(digest_s * 1000 - DIGEST_MARKER_MARGIN_MS, 100)
        if client.set(keys.digest_pending(task_id, channel), outbox_id, px=marker_ms, nx=True):
            flush_digest.apply_async(args=[task_id, channel], countdown=digest_s)


_TASK_OPTIONS = {
    "acks_late": True,
    "reject_on_worker_lost": True,
    "ignore_result": True,
    "retry_store_errors": True,
}


@app.task(name=queues.DELIVER, **_TASK_OPTIONS)
def deliver(outbox_ids: list[int]) -> int:
    """Deliver each notification that is due and unclaimed; return how many were sent."""
    if not isinstance(outbox_ids, list) or not all(_is_id(i) for i in outbox_ids):
        deliver.poison(f"expected a list of outbox ids, got {outbox_ids!r}"[:200])
        return 0
    settings = get_settings()
    with session_scope() as session:
        claimed = outbox.claim(session, outbox_ids, settings.notify_claim_s)
        taken = {c.id for c in claimed}
        later = _not_claimed(session, [i for i in outbox_ids if i not in taken])
    for outbox_id, wait_s in later:
        deliver.apply_async(args=[[outbox_id]], countdown=wait_s)
    return sum(send([row]) for row in claimed)


@app.task(name=queues.FLUSH_DIGEST, **_TASK_OPTIONS)
def flush_digest(task_id: int, channel: str) -> int:
    """Send a task's pending digest notifications of `channel` as one message per destination."""
    if not _is_id(task_id) or channel not in CHANNELS:
        flush_digest.poison(f"expected a task id and a channel, got {task_id!r}, {channel!r}"[:200])
        return 0
    settings = get_settings()
    with session_scope() as session:
        claimed = outbox.claim(
            session, outbox.digest_group(session, task_id, channel), settings.notify_claim_s
        )
    groups: dict[str, list[outbox.Claimed]] = defaultdict(list)
    for row in claimed:
        groups[row.destination].append(row)
    return sum(send(rows) for rows in groups.values())


# beat sends the sweep again at its next tick: while a store is away it does nothing
@app.task(name=queues.SWEEP_OUTBOX, ignore_result=True, skip_while_store_away=True)
def sweep_outbox() -> int:
    """Dispatch every notification that is due (lost tasks, expired claims); return how many."""
    with session_scope() as session:
        due = outbox.due(session)
    digests = set()
    for outbox_id, task_id, channel, digest_s in due:
        if digest_s is None:
            deliver.apply_async(args=[[outbox_id]])
        else:
            digests.add((task_id, channel))
    for task_id, channel in sorted(digests):
        flush_digest.apply_async(args=[task_id, channel])
    return len(due)


def send(rows: Sequence[outbox.Claimed]) -> int:
    """Send claimed rows (one, or a digest) as one message and record the outcome; rows the
    journal says were sent already are recorded as sent instead."""
    settings = get_settings()
    client, keys = runtime.redis_client(), runtime.keys()
    rows = _not_sent_yet(client, keys, rows)
    if not rows:
        return 0
    first = rows[0]
    message = Delivery(
        ids=tuple(r.id for r in rows),
        channel=first.channel,  # type: ignore[arg-type]
        destination=first.destination,
        summaries=tuple(r.payload for r in rows),
    )
    started = time.perf_counter()
    try:
        try:
            reference = notifier(message.channel).send(message)
        finally:
            metrics.NOTIFY_SECONDS.labels(first.channel).observe(time.perf_counter() - started)
    except Exception as exc:  # noqa: BLE001 - a notifier bug must not leave the row claimed
        error = exc if isinstance(exc, NotifyError) else NotifyError(repr(exc), retryable=True)
        attempts = max(r.attempts for r in rows)
        with session_scope() as session:
            if error.retryable and attempts < settings.notify_max_attempts:
                wait = outbox.backoff_s(
                    attempts, settings.notify_max_backoff_s, error.retry_after_s
                )
                outbox.mark_retry(session, rows, str(error), wait)
            else:
                outbox.mark_failed(session, rows, str(error))
                wait = None
        metrics.DELIVERIES.labels(first.channel, "failed" if wait is None else "retried").inc()
        if wait is None:
            client.incr(keys.notify_stat(first.channel, "failed"))
            log.error(
                "notification %s (%s) failed after %d attempt(s): %s",
                message.ids,
                first.channel,
                attempts,
                error,
            )
        else:
            client.incr(keys.notify_stat(first.channel, "retried"))
            log.warning(
                "notification %s (%s) attempt %d failed, next in %.1fs: %s",
                message.ids,
                first.channel,
                attempts,
                wait,
                error,
            )
            if first.digest_s is not None:
                flush_digest.apply_async(args=[first.task_id, first.channel], countdown=wait)
            else:
                deliver.apply_async(args=[[first.id]], countdown=wait)
        return 0
    _record_sent(client, keys, rows, reference)
    _count_sent(client, keys, first.channel)
    log.info(
        "notification %s sent by %s in %.0f ms",
        message.ids,
        first.channel,
        (time.perf_counter() - started) * 1000,
    )
    return 1


def _record_sent(
    client: redis.Redis, keys: Keys, rows: Sequence[outbox.Claimed], reference: str | None
) -> None:
    """Mark the rows of a message the service accepted `sent`. When the database fails, the
    journal keeps the fact (and the error goes on: the task retries, and whichever delivery
    takes the rows next records them from the journal)."""
    try:
        with session_scope() as session:
            outbox.mark_sent(session, rows, reference)
    except SQLAlchemyError as exc:
        ids = [r.id for r in rows]
        try:
            journal.remember(client, keys, ids, reference)
        except redis.RedisError:
            log.error(
                "notification %s was sent, but neither the database nor Redis could record "
                "it: it may be sent again once its claim expires",
                ids,
            )
            raise exc from None
        log.warning(
            "notification %s was sent, but the database could not record it (%s): recorded "
            "as sent once it answers",
            ids,
            str(exc).splitlines()[0][:200],
        )
        raise


def _not_sent_yet(
    client: redis.Redis, keys: Keys, rows: Sequence[outbox.Claimed]
) -> list[outbox.Claimed]:
    """The rows still to send. Those the journal holds (sent while the database was away)
    are marked sent with their message's reference. A row claimed for the first time cannot
    be in the journal: it is not read then."""
    if all(r.attempts <= 1 for r in rows):
        return list(rows)
    sent = journal.recall(client, keys, [r.id for r in rows])
    if not sent:
        return list(rows)
    messages: dict[journal.Sent, list[outbox.Claimed]] = defaultdict(list)
    for row in rows:
        if row.id in sent:
            messages[sent[row.id]].append(row)
    with session_scope() as session:
        for message, done in messages.items():
            outbox.mark_sent(session, done, message.reference)
    journal.forget(client, keys, sent)
    for done in messages.values():
        _count_sent(client, keys, done[0].channel)
        log.info(
            "notification %s (%s) had been sent while the database could not record it: "
            "recorded as sent",
            tuple(r.id for r in done),
            done[0].channel,
        )
    return [r for r in rows if r.id not in sent]


def _count_sent(client: redis.Redis, keys: Keys, channel: str) -> None:
    client.incr(keys.notify_stat(channel, "sent"))
    metrics.DELIVERIES.labels(channel, "sent").inc()


def _is_id(value: Any) -> bool:
    return type(value) is int and value > 0  # noqa: E721 (a bool is no id)


def _not_claimed(session, ids: list[int]) -> list[tuple[int, float]]:  # type: ignore[no-untyped-def]
    """Rows this delivery could not claim but that still need one: (id, seconds to wait)."""
    if not ids:
        return []
    now = utcnow()
    later = []
    for row in session.query(MonitorAlertOutbox).filter(MonitorAlertOutbox.id.in_(ids)):
        if row.digest_s is not None:
            continue
        if row.status == OutboxStatus.PENDING and row.next_attempt_at is not None:
            later.append((row.id, max((row.next_attempt_at - now).total_seconds(), 0.0) + 0.05))
        elif row.status == OutboxStatus.SENDING and row.claimed_until is not None:
            later.append((row.id, max((row.claimed_until - now).total_seconds(), 0.0) + 0.05))
    return later
