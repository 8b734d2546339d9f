"""Helpers for whole-fleet scenarios: a task on simulated tokens, waiting, reading alerts."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import redis
from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.db.models import MonitorAlertLog
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.admin import add_targets, create_config, create_task, target_row
from kakarot_workers.tools.market import TokenState


def task_args(message: dict[str, Any]) -> list[Any]:
    """The positional arguments of a Celery message as it sits in its Redis queue."""
    args: list[Any] = json.loads(base64.b64decode(message["body"]))[0]
    return args


def queued_args(client: redis.Redis, queue: str) -> list[list[Any]]:
    """The positional arguments of every message waiting on `queue`."""
    return [task_args(json.loads(m)) for m in client.lrange(queue, 0, -1)]


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1
) -> None:
    """Until `predicate()`; fail naming `what` after `timeout_s`. A finer `poll_s` where the
    moment the condition turns true matters (an expiry compared with a local clock)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(poll_s)


def create_task_for(tokens: Iterable[TokenState], threshold_usd: float) -> int:
    with session_scope() as session:
        config = create_config(
            session,
            name="scenario",
            chain="bsc",
            source="simulator",
            min_transaction_usd=threshold_usd,
            # every trade at or above the threshold alerts: no cooldown in these scenarios
            events_config={"cooldown": {"seconds": 0}},
        )
        task = create_task(
            session, name="scenario", task_type="batch", chain="bsc", config_id=config.id
        )
        add_targets(session, task.id, [target_row("bsc", t.ca, t.symbol) for t in tokens])
        return task.id


def create_task_with(
    cas: Iterable[str], chain: str = "bsc", symbol: str = "TKN", **config: Any
) -> int:
    """A batch task on `cas` whose config is `config` (create_config's keyword arguments)."""
    with session_scope() as session:
        made = create_config(session, name="scenario", chain=chain, source="simulator", **config)
        task = create_task(
            session, name="scenario", task_type="batch", chain=chain, config_id=made.id
        )
        add_targets(session, task.id, [target_row(chain, ca, symbol) for ca in cas])
        return task.id


def wire_event(task_id: int, ca: str, n: int, **fields: Any) -> dict[str, Any]:
    """A wire event of trade `n` of `ca` for a task (no batch, so no fencing)."""
    event = {
        "chain": "bsc",
        "ca": ca,
        "tx_hash": f"0x{n:064x}",
        "log_index": 0,
        "ts_ms": int(time.time() * 1000),
        "side": "buy",
        "amount_usd": 100.0,
        "price_usd": 1.0,
        "symbol": "TKN",
        "market_cap_usd": 5e6,
        "top10_holders_pct": 20.0,
        "task_id": task_id,
    }
    event.update(fields)
    return event


def add_tokens(task_id: int, tokens: Iterable[TokenState]) -> None:
    with session_scope() as session:
        add_targets(session, task_id, [target_row("bsc", t.ca, t.symbol) for t in tokens])


def alert_keys(task_id: int) -> list[tuple[str, int]]:
    """(tx hash, log index) of every alert row of the task, duplicates included."""
    with session_scope() as session:
        return [
            (r.tx_hash, r.log_index)
            for r in session.scalars(
                select(MonitorAlertLog).where(MonitorAlertLog.task_id == task_id)
            )
        ]


def first_alert_at(task_id: int, config_version: int) -> float | None:
    """When the task's first alert judged under that config version was recorded (epoch s)."""
    with session_scope() as session:
        first = session.scalars(
            select(MonitorAlertLog.create_time)
            .where(
                MonitorAlertLog.task_id == task_id,
                MonitorAlertLog.config_version == config_version,
            )
            .order_by(MonitorAlertLog.create_time)
            .limit(1)
        ).first()
    return None if first is None else first.timestamp()


def wait_quiet(client: redis.Redis, quiet_s: float = 1.0, timeout_s: float = 20.0) -> None:
    """Until no event has been emitted for `quiet_s` and the alerts queue is empty."""
    key = runtime.keys().events_total
    deadline = time.monotonic() + timeout_s
    last, since = client.get(key), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = client.get(key)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s and client.llen("alerts") == 0:
            return
    raise AssertionError("the fleet did not go quiet")


# kombu's Redis transport keeps each message a worker has taken but not yet acknowledged here,
# as [message, exchange, routing key]
UNACKED = "unacked"


def broker_idle(client: redis.Redis, queues: Iterable[str]) -> bool:
    """No task of `queues` waits in its queue or is taken but unacknowledged (alert and notify
    tasks acknowledge late, when they are done), leaving out those held for a later ETA."""
    wanted = set(queues)
    pipe = client.pipeline(transaction=True)
    for queue in sorted(wanted):
        pipe.llen(queue)
    pipe.hvals(UNACKED)
    *lengths, taken = pipe.execute()
    if any(lengths):
        return False
    now = datetime.now(UTC)
    for raw in taken:
        message, _, routing_key = json.loads(raw)
        eta = message["headers"].get("eta")
        if routing_key in wanted and (eta is None or _aware(datetime.fromisoformat(eta)) <= now):
            return False
    return True


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def wait_drained(client: redis.Redis, queues: Iterable[str], timeout_s: float = 15.0) -> None:
    """Until `broker_idle` on two looks in a row: between a worker's BRPOP and its `unacked`
    entry a message is briefly in neither."""
    wanted = tuple(queues)
    last = [False]

    def idle_twice() -> bool:
        idle = broker_idle(client, wanted)
        twice, last[0] = last[0] and idle, idle
        return twice

    wait_for(idle_twice, timeout_s, f"every due task of {', '.join(wanted)} run and acknowledged")
