"""The whole pipeline with real parts: simulator → streams worker → alerts worker → alert rows.

The simulator records every trade it delivered to a subscriber, so the test knows exactly which
trades must alert: every one of them at or above the threshold, each exactly once.
"""

import subprocess
import sys
import time

from sqlalchemy import select

from kakarot_workers import runtime
from kakarot_workers.alerts.tasks import evaluate_events
from kakarot_workers.celery import app
from kakarot_workers.control.reconcile import ensure_allocated
from kakarot_workers.db.models import MonitorBatch
from kakarot_workers.db.session import session_scope
from kakarot_workers.streams.dispatch import dispatch
from kakarot_workers.tools.market import Market
from kakarot_workers.tools.simulator import SimulatorServer
from tests.support.scenario import (
    alert_keys,
    create_task_for,
    wait_drained,
    wait_for,
    wait_quiet,
)

THRESHOLD_USD = 3_000.0
TOKENS = 150
RATE = 300.0
RUN_S = 6.0


def test_simulated_trades_become_exactly_one_alert_each(db_url, redis_client, workers, use_env):
    # Given: a task on 150 simulated tokens (two batches) and real streams + alerts workers
    market = Market.with_tokens(seed=11, count=TOKENS)
    with SimulatorServer(market, rate=RATE, record=True) as sim:
        use_env(KAKAROT_SIMULATOR_URL=sim.url)
        task_id = create_task_for(market.tokens, THRESHOLD_USD)
        batch_ids = ensure_allocated(task_id)
        assert len(batch_ids) == 2
        workers("streams", pool="threads", concurrency=4)
        workers("alerts", pool="prefork", concurrency=2)

        # When: every batch is dispatched and trades flow for a while
        dispatch(batch_ids)
        wait_for(lambda: len(sim.subscribed_tokens()) == TOKENS, 20, "both batches subscribed")
        time.sleep(RUN_S)  # the traffic of the scenario: trades flow for RUN_S
        sim.pause()
        delivered = sim.delivered_snapshot()
        keys = runtime.keys()
        wait_for(
            lambda: int(redis_client.get(keys.events_total) or 0) >= len(delivered),
            15,
            "every delivered trade emitted",
        )

        # Then: every delivered trade at or above the threshold has exactly one alert row
        expected = {(t.tx_hash, t.log_index) for t in delivered if t.amount_usd >= THRESHOLD_USD}
        assert len(expected) >= 20, "the scenario should produce a fair number of alerts"
        wait_for(lambda: len(alert_keys(task_id)) >= len(expected), 15, "alerts recorded")
        wait_quiet(redis_client)  # anything extra would show up now
        rows = alert_keys(task_id)
        assert len(rows) == len(set(rows)), "duplicate alert rows"
        assert set(rows) == expected
        assert int(redis_client.get(keys.events_total)) == len(delivered)

        # And: the same events delivered again (a re-delivered message) add nothing
        again = [e for e in _wire_events(task_id, delivered) if e["amount_usd"] >= THRESHOLD_USD]
        assert evaluate_events.run(again) == 0  # in this process
        app.send_task("kakarot.alerts.evaluate_events", args=[again])  # and through the worker
        wait_drained(redis_client, ["alerts"])  # the message judged (alert tasks ack late)
        assert len(alert_keys(task_id)) == len(rows)

        with session_scope() as session:
            statuses = {
                b.status
                for b in session.scalars(select(MonitorBatch).where(MonitorBatch.id.in_(batch_ids)))
            }
        assert statuses == {"running"}


def _wire_events(task_id: int, trades) -> list[dict]:
    return [
        {
            "chain": t.chain,
            "ca": t.ca,
            "tx_hash": t.tx_hash,
            "log_index": t.log_index,
            "ts_ms": int(time.time() * 1000),
            "side": t.side,
            "amount_usd": t.amount_usd,
            "price_usd": t.price_usd,
            "task_id": task_id,
        }
        for t in trades
    ]


def test_malformed_events_are_rejected_and_the_rest_still_alert(db_url, redis_client):
    market = Market.with_tokens(seed=2, count=1)
    task_id = create_task_for(market.tokens, THRESHOLD_USD)
    good = {
        "chain": "bsc",
        "ca": market.tokens[0].ca,
        "tx_hash": "0x" + "e" * 64,
        "log_index": 0,
        "ts_ms": int(time.time() * 1000),
        "side": "buy",
        "amount_usd": THRESHOLD_USD * 2,
        "price_usd": 1.0,
        "task_id": task_id,
    }
    bad = [{**good, "side": "hold"}, "not an event", {**good, "amount_usd": "lots"}]
    assert evaluate_events.run([*bad, good]) == 1
    assert int(redis_client.get(runtime.keys().events_rejected)) == 3
    assert alert_keys(task_id) == [(good["tx_hash"], 0)]


def test_streams_worker_with_no_flags_answers_inspect_ping(workers):
    worker = workers("streams")  # exactly `celery -A kakarot_workers worker -Q streams`
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "kakarot_workers",
            "inspect",
            "ping",
            "-d",
            worker.nodename,
            "--timeout",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "pong" in result.stdout and worker.nodename in result.stdout
