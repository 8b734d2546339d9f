"""kill -9 of an alerts worker while the queue is full: every micro-batch it had taken is judged
after all, and every trade once.

kombu takes a message with BRPOP and books it as unacknowledged in a second round trip; a worker
killed in between loses the message, and its trades are never judged (before `broker.TAKE`, 5 of
23 kills of a loaded worker lost a micro-batch of 200 trades). This test sends micro-batches to
two alerts workers, kills one of them mid-queue and starts it again, several times, and checks
the outcome a trader sees: every trade at or above the gate alerts exactly once, and every trade
is counted in its token's windows once. Each round is another chance to hit the gap: with the old
take, the rounds here miss it together about one time in four.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from kakarot_workers import runtime
from kakarot_workers.celery import send_packed
from kakarot_workers.events import SwapEvent, pack
from kakarot_workers.tools.fleet import WorkerProcess
from tests.support.scenario import alert_keys, create_task_with, wait_for

pytestmark = pytest.mark.faults

ROUNDS = 6
MESSAGES = 150  # per round
EVENTS_PER_MESSAGE = 100
GATE_USD = 2_000.0  # about one trade in five alerts
TOKENS = 40
VISIBILITY_S = 5  # a killed worker's messages come back after this


def _round_of_trades(rng: random.Random, round_no: int, cas: list[str]) -> list[SwapEvent]:
    start = int(time.time() * 1000)
    return [
        SwapEvent(
            chain="bsc",
            ca=rng.choice(cas),
            tx_hash=f"0x{round_no:08x}{n:056x}",
            log_index=n % 4,
            ts_ms=start + n,
            side=rng.choice(("buy", "sell")),
            amount_usd=round(rng.uniform(10, 2500), 2),
            price_usd=round(rng.uniform(0.9, 1.1), 6),
            symbol="TKN",
            market_cap_usd=5e6,
            top10_holders_pct=30.0,
        )
        for n in range(MESSAGES * EVENTS_PER_MESSAGE)
    ]


def _counted_in_windows(client: redis.Redis, task_id: int, cas: list[str]) -> int:
    """Trades in the task's windows: each is kept once, by its identity, with what it saw."""
    keys = runtime.keys()
    return sum(int(client.hlen(keys.window_seen(task_id, ca))) for ca in cas)


def test_kill_9_a_loaded_alerts_worker_loses_no_micro_batch(
    db_url: str, redis_client: redis.Redis, workers: Callable[..., WorkerProcess], use_env: Any
) -> None:
    use_env(KAKAROT_BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S))
    cas = [f"0x{i:040x}" for i in range(TOKENS)]
    task_id = create_task_with(
        cas,
        min_transaction_usd=GATE_USD,
        events_config={"cooldown": {"seconds": 0}, "volume": {"min_usd": 1, "window": "5m"}},
    )
    evaluated = runtime.keys().alert_stat("evaluated")
    start = {"queues": "alerts", "pool": "threads", "concurrency": 2}
    victim, _survivor = workers(**start), workers(**start)
    rng = random.Random(19)
    sent: list[SwapEvent] = []
    for round_no in range(1, ROUNDS + 1):
        trades = _round_of_trades(rng, round_no, cas)
        before = int(redis_client.get(evaluated) or 0)
        for i in range(0, len(trades), EVENTS_PER_MESSAGE):
            batch = pack(trades[i : i + EVENTS_PER_MESSAGE], task_id=task_id)
            send_packed("kakarot.alerts.evaluate_events", [batch], queue="alerts", argsrepr="[…]")
        sent += trades

        # kill it while it is taking messages from a full queue
        def judged_a_fifth(fifth: int = before + len(trades) // 5) -> bool:
            return int(redis_client.get(evaluated) or 0) >= fifth

        wait_for(
            judged_a_fifth,
            30,
            "the pool to judge a fifth of the round",
            poll_s=0.005,
        )
        queued = redis_client.llen("alerts")
        victim.kill()
        print(f"round {round_no}: killed with {queued} message(s) still queued")
        assert queued > 0, "the kill came after the queue was empty: nothing tested"
        victim = workers(**start)
        # what it had taken comes back after the visibility timeout, and is judged
        deadline = time.monotonic() + VISIBILITY_S + 30
        while time.monotonic() < deadline and not (
            _counted_in_windows(redis_client, task_id, cas) == len(sent)
            and redis_client.llen("alerts") == 0
            and redis_client.hlen("unacked") == 0
        ):
            time.sleep(0.2)
        counted = _counted_in_windows(redis_client, task_id, cas)
        assert counted == len(sent), (
            f"round {round_no}: {len(sent) - counted} trade(s) never judged"
        )
    must_alert = sorted((t.tx_hash, t.log_index) for t in sent if t.amount_usd >= GATE_USD)
    wait_for(lambda: len(alert_keys(task_id)) >= len(must_alert), 30, "the alert rows")
    time.sleep(1)  # a duplicate would come now
    rows = sorted(alert_keys(task_id))
    assert rows == must_alert, (
        f"{len(set(must_alert) - set(rows))} trade(s) never alerted, "
        f"{len(rows) - len(set(rows))} duplicate row(s)"
    )
