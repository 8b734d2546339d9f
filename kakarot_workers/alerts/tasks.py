"""`evaluate_events`: the alert pool's task (queue `alerts`), acknowledged late."""

from __future__ import annotations

from typing import Any

from kakarot_workers import queues, runtime
from kakarot_workers.alerts.evaluate import configs_in_force, parse_events, process, screen
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
