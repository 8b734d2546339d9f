"""`evaluate_events`: the alert pool's task (queue `alerts`), acknowledged late."""

from __future__ import annotations

from typing import Any

from kakarot_workers import queues, runtime
from kakarot_workers.alerts.evaluate import configs_in_force, parse_events, process, screen
from kakarot_workers.alerts.retract import retract
from kakarot_workers.celery import app


@app.task(
    name=queues.EVALUATE_EVENTS,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    retry_store_errors=True,
)
def evaluate_events(events: list[Any]) -> int:
    """Judge a micro-batch of wire events; record and notify the alerts; return how many are new."""
    if not isinstance(events, list):
        evaluate_events.poison(f"expected a list of events, got a {type(events).__name__}")
        return 0
    client, keys = runtime.redis_client(), runtime.keys()
    parsed = parse_events(events)
    kept, announced = screen(parsed, configs_in_force(parsed))
    new, stats = process(kept, announced)
    pipe = client.pipeline(transaction=False)
    for name, value in stats.items():
        if value:
            pipe.incrby(keys.alert_stat(name), value)
    pipe.execute()
    return new


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
