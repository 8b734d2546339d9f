"""Where a trade becomes an alert: the filter/alert pool (queue `alerts`).

`evaluate_events(events)` judges a micro-batch of swap events against each task's rules and
records what fired in `monitor_alert_log_v2`. Acknowledged late: if the worker dies mid-batch the
message is delivered again, and the de-duplication key makes the second pass insert nothing.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy.exc import SQLAlchemyError

from kakarot_workers import leases, runtime
from kakarot_workers.alert_log import dedup_key, record_alerts
from kakarot_workers.celery_app import app
from kakarot_workers.configs import RuleSetCache
from kakarot_workers.db.session import session_scope
from kakarot_workers.errors import EventError, NotFoundError
from kakarot_workers.events import SwapEvent, from_wire
from kakarot_workers.messages import alert_line
from kakarot_workers.rules import Firing, RuleSet, evaluate_layer1
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

_rule_sets = RuleSetCache(get_settings().config_cache_ttl_s)


def judge(rules: RuleSet, event: SwapEvent) -> list[Firing]:
    """The rules that fire on `event` (layer 1 for now; layer 2 and windows come with issue 5)."""
    return evaluate_layer1(rules, event)


def alert_row(rules: RuleSet, event: SwapEvent, firing: Firing) -> dict[str, Any]:
    """The `monitor_alert_log_v2` row for one firing."""
    incomplete = event.market_cap_usd is None or event.top10_holders_pct is None
    return {
        "dedup_key": dedup_key(
            rules.task_id, event.chain, event.tx_hash, event.log_index, firing.rule
        ),
        "task_id": rules.task_id,
        "config_id": rules.config_id,
        "config_version": rules.config_version,
        "batch_id": event.batch_id or None,
        "epoch": event.epoch or None,
        "chain_type": event.chain,
        "ca": event.ca,
        "token_symbol": event.symbol or None,
        "alert_type": firing.rule,
        "alert_data": {
            **firing.values,
            "price_usd": event.price_usd,
            "market_cap_usd": event.market_cap_usd,
            "top10_holders_pct": event.top10_holders_pct,
        },
        "tx_hash": event.tx_hash,
        "log_index": event.log_index,
        "block_number": event.block_number,
        "event_time": datetime.fromtimestamp(event.ts_ms / 1000, UTC).replace(tzinfo=None),
        "price_usd": event.price_usd,
        "amount_usd": event.amount_usd,
        "incomplete_data": int(incomplete),
        "notify_status": "none",
    }


def _parse(events: list[Any]) -> list[SwapEvent]:
    parsed = []
    for index, raw in enumerate(events):
        try:
            parsed.append(from_wire(raw))
        except EventError as exc:
            runtime.redis_client().incr(runtime.keys().events_rejected)
            log.warning("event %d of message rejected: %s", index, exc)
    return parsed


def drop_fenced(events: list[SwapEvent]) -> list[SwapEvent]:
    """The events whose fencing token is not below their batch's fence. A token below it means
    the consumer that emitted it lost its lease to a successor (a zombie, or a hand-over that is
    complete): its events are dropped and counted in `events_fenced`. Events with no token
    (tools, tests) pass."""
    fenced = sorted({e.batch_id for e in events if e.batch_id and e.fencing_token})
    if not fenced:
        return events
    client, keys = runtime.redis_client(), runtime.keys()
    current = leases.fences(client, keys, fenced)
    kept = [
        e
        for e in events
        if not (e.batch_id and e.fencing_token) or e.fencing_token >= current[e.batch_id]
    ]
    if len(kept) != len(events):
        stale = len(events) - len(kept)
        client.incrby(keys.events_fenced, stale)
        log.warning("%d event(s) dropped: their consumer's fencing token is stale", stale)
    return kept


@app.task(
    name="kakarot.alerts.evaluate_events",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    autoretry_for=(SQLAlchemyError, redis.RedisError),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=40,
)
def evaluate_events(events: list[Any]) -> int:
    """Judge a micro-batch of wire events; record and log the alerts; return how many are new."""
    if not isinstance(events, list):
        log.error("evaluate_events: expected a list of events, got %s", type(events).__name__)
        return 0
    by_task: dict[int, list[SwapEvent]] = defaultdict(list)
    for event in drop_fenced(_parse(events)):
        by_task[event.task_id].append(event)
    explorer = get_settings().explorer_tx_url
    new_rows: list[dict[str, Any]] = []
    with session_scope() as session:
        rows = []
        for task_id, task_events in by_task.items():
            try:
                rules = _rule_sets.get(session, task_id)
            except NotFoundError as exc:
                log.warning("%d event(s) of task %s skipped: %s", len(task_events), task_id, exc)
                continue
            for event in task_events:
                rows.extend(alert_row(rules, event, firing) for firing in judge(rules, event))
        if rows:
            new_rows = record_alerts(session, rows)
    for row in new_rows:
        template = explorer.get(row["chain_type"])
        log.info(
            alert_line(
                task_id=row["task_id"],
                symbol=row["token_symbol"],
                ca=row["ca"],
                rule=row["alert_type"],
                values=row["alert_data"],
                price_usd=row["price_usd"],
                tx_hash=row["tx_hash"],
                explorer_url=template.format(tx=row["tx_hash"]) if template else None,
            )
        )
    return len(new_rows)
