"""The naive alert pool, for `bench/pipeline.py` only: one Celery task per event, and per event a
database session (the task's config read again), Redis round trips for the window and the
cooldown, and a commit when it alerts. What the pool would be without micro-batching, cached
profiles and one-script windows. Same rules, same Redis, same database."""

from __future__ import annotations

from typing import Any

from kakarot_workers import runtime
from kakarot_workers.alerts.alert_log import AlertDraft, record_alerts
from kakarot_workers.alerts.drafts import draft
from kakarot_workers.alerts.profiles import build_profile
from kakarot_workers.alerts.rules import WindowStats, cooldown_seconds, judge
from kakarot_workers.celery import app
from kakarot_workers.db.batches import get_task, task_config
from kakarot_workers.db.session import session_scope
from kakarot_workers.events import from_wire

DONE_KEY = "bench:naive:done"


@app.task(name="bench.naive.evaluate_one", acks_late=True, ignore_result=True)
def evaluate_one(wire: dict[str, Any]) -> None:
    client = runtime.redis_client()
    event = from_wire(wire)
    with session_scope() as session:
        task = get_task(session, event.task_id)
        config = task_config(session, event.task_id)
        assert config is not None
        profile = build_profile(task.id, task.chain_type, config)
        windows = {}
        member = f"{event.tx_hash}:{event.log_index}|{round(event.amount_usd * 100)}"
        for seconds in profile.rules.window_lengths:
            key = f"bench:naive:win:{task.id}:{event.ca}:{seconds}"
            client.zadd(key, {member: event.ts_ms}, nx=True)
            client.zremrangebyscore(key, "-inf", event.ts_ms - seconds * 1000)
            members = client.zrangebyscore(key, "-inf", "+inf")
            volume = sum(int(m.rsplit("|", 1)[1]) for m in members) / 100
            windows[seconds] = WindowStats(seconds, volume, volume, 0.0, len(members), 1.0, 1.0)
        verdict = judge(profile.rules, event, windows)
        if verdict.alert:
            seconds = cooldown_seconds(event.market_cap_usd, profile.rules.events.cooldown)
            claimed = seconds == 0 or client.set(
                f"bench:naive:cooldown:{task.id}:{event.ca}", member, nx=True, ex=seconds
            )
            if claimed:
                made: AlertDraft = draft(profile, event, verdict, windows)
                record_alerts(session, [made])
    client.incr(DONE_KEY)
