"""Sliding windows fed by several real alert workers at once, laid out as deployed (two worker
processes, threads pool, 2 slots each): the trades of a few tokens arrive shuffled over ten
minutes, in messages that go to whichever slot is free, and a fifth of the messages arrive twice,
as a re-delivery would send them. Afterwards each window holds exactly the trades of its last W
seconds (count, sums, open and last price), and every trade that should alert has exactly one
row."""

import random
import socket
import time

import httpx

from kakarot_workers import runtime
from kakarot_workers.alerts.windows import Windows
from kakarot_workers.celery import app
from tests.support.scenario import alert_keys, create_task_with, wait_for, wire_event

THRESHOLD_USD = 2_000.0
CAS = [f"0x{i:040x}" for i in range(0xA1, 0xA5)]
TRADES = 1_600
SPAN_S = 600
EVENTS_PER_MESSAGE = 20
WINDOWS_S = (60, 300)


def test_two_worker_processes_keep_shuffled_and_redelivered_windows_exact(
    db_url, redis_client, workers
):
    # Given a task with a 1-minute and a 5-minute window; a trade alerts when it reaches the
    # threshold (the volume rule always holds: the window contains the trade itself)
    task_id = create_task_with(
        CAS,
        min_transaction_usd=THRESHOLD_USD,
        events_config={
            "cooldown": {"seconds": 0},
            "volume": {"min_usd": 1, "window": "5m"},
            "price_change": {"threshold_pct": 10_000, "window": "1m", "direction": "both"},
        },
        trigger_logic="any",
    )
    rng = random.Random(17)
    t0 = int(time.time() * 1000) - SPAN_S * 1000
    stamps = rng.sample(range(t0, t0 + SPAN_S * 1000), TRADES)  # distinct: no ties to break
    events = [
        wire_event(
            task_id,
            rng.choice(CAS),
            n,
            ts_ms=stamps[n],
            side=rng.choice(["buy", "sell"]),
            amount_usd=round(rng.uniform(10, 3_000), 2),
            price_usd=round(rng.uniform(0.5, 2.0), 6),
        )
        for n in range(TRADES)
    ]
    rng.shuffle(events)
    messages = [
        events[start : start + EVENTS_PER_MESSAGE]
        for start in range(0, len(events), EVENTS_PER_MESSAGE)
    ]
    messages += rng.sample(messages, len(messages) // 5)  # re-delivered, later and elsewhere
    rng.shuffle(messages)
    ports = [_free_port(), _free_port()]
    first, second = (
        workers("alerts", pool="threads", concurrency=2, env={"KAKAROT_PROBE_PORT": str(port)})
        for port in ports
    )

    # When every message is queued at once for the two processes
    for message in messages:
        app.send_task("kakarot.alerts.evaluate_events", args=[message])
    keys = runtime.keys()
    judged = len(messages) * EVENTS_PER_MESSAGE
    wait_for(
        lambda: int(redis_client.get(keys.alert_stat("evaluated")) or 0) >= judged,
        60,
        "every message judged",
    )

    # Then both processes took part
    assert all(count > 0 for count in _messages_done(ports)), "one process did all"
    # and each window holds exactly the trades of its last W seconds, as of the newest trade
    windows = Windows(redis_client, keys)
    for ca in CAS:
        trades = sorted((e for e in events if e["ca"] == ca), key=lambda e: e["ts_ms"])
        newest = trades[-1]["ts_ms"]
        for seconds in WINDOWS_S:
            inside = [e for e in trades if e["ts_ms"] > newest - seconds * 1000]
            window = windows.snapshot(task_id, ca, seconds)
            assert window.trades == len(inside), (ca, seconds)
            assert round(window.volume_usd * 100) == sum(_cents(e) for e in inside)
            assert round(window.buy_usd * 100) == sum(
                _cents(e) for e in inside if e["side"] == "buy"
            )
            assert window.open_price == inside[0]["price_usd"]
            assert window.last_price == trades[-1]["price_usd"]
    # and every trade at the threshold has exactly one alert row, re-deliveries included
    expected = {(e["tx_hash"], 0) for e in events if e["amount_usd"] >= THRESHOLD_USD}
    rows = alert_keys(task_id)
    assert len(rows) == len(set(rows)), "duplicate alert rows"
    assert set(rows) == expected


def _cents(event: dict) -> int:
    return round(event["amount_usd"] * 100)


def _messages_done(ports: list[int]) -> list[float]:
    """The `evaluate_events` messages each worker process finished, from its own /metrics
    (Celery's per-message log lines are DEBUG lines): above 0 when the process took part."""
    series = 'kakarot_tasks_total{result="success",task="kakarot.alerts.evaluate_events"} '
    done = []
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        lines = [line for line in text.splitlines() if line.startswith(series)]
        done.append(float(lines[0].split()[-1]) if lines else 0.0)
    return done


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
