"""Poison messages on every queue, with real workers: each is moved to the queue's dead letters
with its reason, the worker never exits or loops, and the next good message is served. Then the
operator's side: `kakarot deadletter list|show|requeue|purge`."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from kakarot_workers import deadletters, runtime
from kakarot_workers.celery import app
from kakarot_workers.db.models import MonitorAlertLog
from kakarot_workers.db.session import session_scope
from tests.support.scenario import create_task_with, wait_drained, wait_for, wire_event

CA = "0x" + "c" * 40
KAKAROT = str(Path(sys.executable).with_name("kakarot"))
NOT_AN_ENVELOPE = json.dumps({"a": 1})


def _envelope_with_body(task: str, queue: str, body: str) -> str:
    """A well-formed envelope of a task message whose JSON body is `body` as it is."""
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": "bad-body-1", "root_id": "bad-body-1"},
            "properties": {
                "correlation_id": "bad-body-1",
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": "bad-body-tag",
            },
        }
    )


def _alert_txs(task_id: int) -> set[str]:
    with session_scope() as session:
        return set(
            session.scalars(
                select(MonitorAlertLog.tx_hash).where(MonitorAlertLog.task_id == task_id)
            )
        )


def _letters(queue: str) -> list[deadletters.DeadLetter]:
    return deadletters.entries(runtime.redis_client(), runtime.keys(), queue, 100)


def test_poison_on_every_queue_goes_to_the_dead_letters_and_the_workers_go_on(
    db_url, redis_client, workers
):
    # Given a worker on every queue, and a task with a rule every good trade here passes
    task_id = create_task_with(
        [CA], min_transaction_usd=1000, events_config={"cooldown": {"seconds": 0}}
    )
    started = [
        workers("alerts", pool="threads", concurrency=2),
        workers("streams", pool="threads", concurrency=2),
        workers("notify,control", concurrency=1),
    ]

    # When every kind of poison lands on every queue, before and between good messages
    good = [wire_event(task_id, CA, n, amount_usd=5000.0) for n in (1, 2)]
    app.send_task("kakarot.alerts.evaluate_events", args=[[good[0]]])
    for queue in ("alerts", "streams", "notify", "control"):
        redis_client.lpush(queue, "not json at all")
        redis_client.lpush(queue, NOT_AN_ENVELOPE)
        redis_client.lpush(queue, "[" * 100_000)  # nested too deep to parse
    app.send_task("kakarot.alerts.no_such_task", args=[], queue="alerts")
    redis_client.lpush(
        "alerts", _envelope_with_body("kakarot.alerts.evaluate_events", "alerts", "{not json")
    )
    app.send_task("kakarot.alerts.evaluate_events", args=[{"not": "a list"}])
    app.send_task("kakarot.alerts.evaluate_events", args=[[good[1]], "one too many"])
    app.send_task("kakarot.streams.consume_batch", args=["abc"])
    app.send_task("kakarot.streams.consume_batch", args=[99_999])  # no such batch: one line
    app.send_task("kakarot.notify.deliver", args=[["x"]])
    app.send_task("kakarot.notify.flush_digest", args=[task_id, "pigeon"])
    app.send_task("kakarot.control.reconcile", args=[1, 2])
    app.send_task(
        "kakarot.alerts.evaluate_events", args=[[good[1]]], serializer="pickle"
    )  # a body this fleet never accepts (JSON only)
    app.send_task("kakarot.alerts.evaluate_events", args=[[good[1]]])

    # Then every good trade alerts, the queues drain, and every worker still runs
    wait_for(lambda: _alert_txs(task_id) == {e["tx_hash"] for e in good}, 15, "both alerts")
    wait_drained(redis_client, ["alerts", "streams", "notify", "control"], 15)
    assert all(w.process.poll() is None for w in started), "a worker exited"

    # and each poison is a dead letter of its queue, with its reason
    reasons = {q: sorted(letter.reason for letter in _letters(q)) for q in ("alerts", "streams")}
    for queue in ("alerts", "streams", "notify", "control"):
        letters = _letters(queue)
        raw = [letter for letter in letters if letter.raw is not None]
        assert any(letter.raw == "not json at all" for letter in raw), queue
        assert any(letter.raw == NOT_AN_ENVELOPE for letter in raw), queue
        assert sum("not JSON" in letter.reason for letter in raw) == 2, queue
        assert any("no properties.delivery_tag" in letter.reason for letter in raw), queue
        assert int(redis_client.get(runtime.keys().deadletter_count(queue))) == len(letters)
    assert any("no such task: 'kakarot.alerts.no_such_task'" in r for r in reasons["alerts"])
    assert any("packed version None unknown" in r for r in reasons["alerts"])
    assert any("body not decodable (application/json)" in r for r in reasons["alerts"])
    assert any(
        "arguments that do not fit kakarot.alerts.evaluate_events" in r for r in reasons["alerts"]
    )
    assert any(
        "Refusing to deserialize untrusted content of type pickle" in r for r in reasons["alerts"]
    )
    assert any("a batch id is a positive integer, not 'abc'" in r for r in reasons["streams"])
    notify = [letter.reason for letter in _letters("notify")]
    assert any("expected a list of outbox ids" in r for r in notify)
    assert any("expected a task id and a channel" in r for r in notify)
    control = [letter.reason for letter in _letters("control")]
    assert any("arguments that do not fit kakarot.control.reconcile" in r for r in control)
    # a batch that does not exist is not poison: nothing to keep, one line in the log
    assert not any("99999" in str(letter.args) for letter in _letters("streams"))
    worker_logs = "".join(w.log_text() for w in started)
    assert "batch 99999 not consumed: batch 99999 does not exist" in worker_logs
    assert "Traceback" not in worker_logs, "a poison message is one line, not a traceback"


def test_the_operator_lists_shows_requeues_and_purges_dead_letters(
    db_url, redis_client, workers, tmp_path
):
    task_id = create_task_with([CA], min_transaction_usd=1000)
    event = wire_event(task_id, CA, 7, amount_usd=5000.0)
    # a task message of ours moved aside (say the alert pool was in a bad state), and a raw item
    deadletters.put("alerts", "for the test", task="kakarot.alerts.evaluate_events", args=[[event]])
    deadletters.put("alerts", "not JSON: for the test", raw="garbage")

    env = {**os.environ, "COLUMNS": "200"}  # rich tables wrap to 80 columns off a terminal

    def kakarot(*args: str) -> str:
        result = subprocess.run(
            [KAKAROT, "deadletter", *args], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "alerts: 2" in kakarot("list")
    listed = kakarot("list", "alerts")
    assert "not JSON: for the test" in listed and "kakarot.alerts.evaluate_events" in listed
    shown = json.loads(kakarot("show", "alerts", "1"))
    assert shown["task"] == "kakarot.alerts.evaluate_events" and shown["args"] == [[event]]

    workers("alerts", pool="threads", concurrency=2)
    assert "sent again to alerts: kakarot.alerts.evaluate_events" in kakarot(
        "requeue", "alerts", "1"
    )
    wait_for(lambda: _alert_txs(task_id) == {event["tx_hash"]}, 15, "the requeued alert")
    assert [letter.raw for letter in _letters("alerts")] == ["garbage"]
    assert "dropped 1 dead letter(s) of alerts" in kakarot("purge", "alerts")
    assert _letters("alerts") == []
    assert "no dead letters" in kakarot("list")
