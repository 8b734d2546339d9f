"""kill -9 an alerts worker in the middle of a stream of events: after re-delivery, every event
that should alert has exactly one alert row and one delivered message per channel."""

import random

from sqlalchemy import func, select

from kakarot_workers import runtime
from kakarot_workers.alerts.windows import Windows
from kakarot_workers.celery import app
from kakarot_workers.db.models import MonitorAlertLog, MonitorAlertOutbox
from kakarot_workers.db.session import session_scope
from tests.support.notify_servers import BOT_TOKEN, WEBHOOK_SECRET, NotifyServer
from tests.support.scenario import create_task_with, wait_drained, wait_for, wire_event

THRESHOLD_USD = 1_000.0
MESSAGES = 60
EVENTS_PER_MESSAGE = 40
CAS = [f"0x{i:040x}" for i in range(1, 41)]


def _count(model, **where) -> int:
    with session_scope() as session:
        query = select(func.count()).select_from(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return session.scalar(query) or 0


def test_alerts_worker_killed_mid_batch_loses_and_doubles_nothing(
    db_url, redis_client, workers, use_env
):
    with NotifyServer() as server:
        use_env(
            KAKAROT_BROKER_VISIBILITY_TIMEOUT_S="5",
            KAKAROT_TELEGRAM_API_URL=server.url,
            KAKAROT_TELEGRAM_BOT_TOKEN=BOT_TOKEN,
            KAKAROT_WEBHOOK_URL=f"{server.url}/hook",
            KAKAROT_WEBHOOK_SECRET=WEBHOOK_SECRET,
        )
        # Given a task notifying Telegram and a webhook, an alerts worker judging and another
        # delivering, and 2,400 events of which about a third should alert
        task_id = create_task_with(
            CAS,
            min_transaction_usd=THRESHOLD_USD,
            events_config={"cooldown": {"seconds": 0}, "volume": {"min_usd": 1, "window": "5m"}},
            trigger_logic="all",
            notify_methods={"telegram": {"chat_id": "-1001"}, "webhook": {}},
        )
        rng = random.Random(5)
        events = [
            wire_event(task_id, rng.choice(CAS), n, amount_usd=round(rng.uniform(10, 3000), 2))
            for n in range(MESSAGES * EVENTS_PER_MESSAGE)
        ]
        expected = {e["tx_hash"] for e in events if e["amount_usd"] >= THRESHOLD_USD}
        victim = workers("alerts", pool="threads", concurrency=2)  # as deployed
        workers("notify", concurrency=2)

        # When the judging worker is killed (SIGKILL, with its pool) once alerts are flowing
        for start in range(0, len(events), EVENTS_PER_MESSAGE):
            app.send_task(
                "kakarot.alerts.evaluate_events", args=[events[start : start + EVENTS_PER_MESSAGE]]
            )
        wait_for(lambda: _count(MonitorAlertLog) >= 50, 60, "alerts flowing")
        victim.kill()
        at_kill = _count(MonitorAlertLog)
        assert at_kill < len(expected), "the kill came too late to test anything"
        # and a new alerts worker takes over what was left, including the message in flight
        workers("alerts", pool="threads", concurrency=2)
        wait_for(lambda: _count(MonitorAlertLog) == len(expected), 90, "every alert recorded")
        wait_for(
            lambda: _count(MonitorAlertOutbox, status="sent") == 2 * len(expected),
            60,
            "every notification delivered",
        )
        # every message judged, the killed worker's re-delivered ones too (they come back after
        # the visibility timeout), and every delivery done: anything doubled would show up now
        wait_drained(redis_client, ["alerts", "notify"], timeout_s=30)

        # Then: one row per alerting event, one message per channel
        with session_scope() as session:
            rows = list(session.scalars(select(MonitorAlertLog.tx_hash)))
        assert sorted(rows) == sorted(expected)
        telegram = [m["text"] for m in server.messages("telegram")]
        assert len(telegram) == len(expected)
        assert {t.split("/tx/")[1][:66] for t in telegram} == expected
        hooks = server.messages("webhook")
        assert sorted(h["alert"]["tx_hash"] for h in hooks) == sorted(expected)
        assert _count(MonitorAlertOutbox) == 2 * len(expected)

        # And the windows, fed by three workers and a re-delivery, count every trade once
        windows = Windows(redis_client, runtime.keys())
        for ca in CAS:
            trades = [e for e in events if e["ca"] == ca]
            window = windows.snapshot(task_id, ca, 300)
            assert window.trades == len(trades)
            assert round(window.volume_usd * 100) == sum(
                round(e["amount_usd"] * 100) for e in trades
            )
