"""`evaluate_events`: the alert pool's task (queue `alerts`), acknowledged late."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Any

from kakarot_workers import metrics, queues, runtime
from kakarot_workers.alerts.evaluate import configs_in_force, parse_events, process, screen
from kakarot_workers.alerts.retract import retract
from kakarot_workers.celery import app
from kakarot_workers.errors import EventError
from kakarot_workers.events import unpack

log = logging.getLogger(__name__)


@app.task(
    name=queues.EVALUATE_EVENTS,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    retry_store_errors=True,
)
def evaluate_events(events: list[Any] | dict[str, Any]) -> int:
    """Judge a micro-batch (packed by `events.pack`, or a list of wire events); record and
    notify the alerts; return how many are new."""
    try:
        wire = unpack(events)
    except EventError as exc:
        evaluate_events.poison(str(exc))
        return 0
    client, keys = runtime.redis_client(), runtime.keys()
    parsed = parse_events(wire)
    with metrics.POOL_STEP.labels("screen").time():
        kept, announced = screen(parsed, configs_in_force(parsed))
    new, stats = process(kept, announced)
    pipe = client.pipeline(transaction=False)
    for name, value in stats.items():
        if value:
            pipe.incrby(keys.alert_stat(name), value)
    pipe.execute()
    _count(stats)
    _summary.add(len(wire), stats["evaluated"], new)
    return new


def _count(stats: Counter[str]) -> None:
    """The pool's counters of a micro-batch in this process's Prometheus series."""
    metrics.EVENTS_JUDGED.inc(stats["evaluated"])
    if stats["window_conflicts"]:
        metrics.WINDOW_CONFLICTS.inc(stats["window_conflicts"])
    for name, value in stats.items():
        if name.startswith("rejected_") and value:
            metrics.RULE_REJECTIONS.labels(name.removeprefix("rejected_")).inc(value)
    for name, by in (("cooldown", "cooldown"), ("skipped_no_config", "no_config")):
        if stats[name]:
            metrics.RULE_REJECTIONS.labels(by).inc(stats[name])


class Summary:
    """What this process's alert pool did, said at INFO once a minute (Celery's two lines per
    message are DEBUG lines: `logs.HOT_TASKS`)."""

    EVERY_S = 60.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since = time.monotonic()
        self._counts = [0, 0, 0, 0]  # messages, events, judged, alerts

    def add(self, events: int, judged: int, alerts: int) -> None:
        with self._lock:
            for i, value in enumerate((1, events, judged, alerts)):
                self._counts[i] += value
            now = time.monotonic()
            if now - self._since < self.EVERY_S:
                return
            (messages, received, evaluated, new), elapsed = self._counts, now - self._since
            self._counts, self._since = [0, 0, 0, 0], now
        log.info(
            "alert pool: %d message(s), %d event(s), %d judged, %d new alert(s) in the last %.0fs",
            messages,
            received,
            evaluated,
            new,
            elapsed,
        )


_summary = Summary()


@app.task(
    name=queues.RETRACT_TRADE,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    retry_store_errors=True,
)
def retract_trade(task_id: int, ca: str, chain: str, tx_hash: str, log_index: int) -> int:
    """A chain re-org withdrew this trade: out of its windows, its alerts marked retracted."""
    ints = (task_id, log_index)
    texts = (ca, chain, tx_hash)
    if not all(type(v) is int and v >= 0 for v in ints) or not all(  # noqa: E721 (no bools)
        isinstance(v, str) and 0 < len(v) <= 128 for v in texts
    ):
        retract_trade.poison(
            f"expected a task id, a CA, a chain, a tx hash and a log index, got "
            f"{task_id!r}, {ca!r}, {chain!r}, {tx_hash!r}, {log_index!r}"[:200]
        )
        return 0
    return retract(task_id, ca, chain, tx_hash, log_index)[1]
