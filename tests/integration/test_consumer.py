"""The batch consumer on real Redis (and its broker queue), fed by a list of recorded items:
back-pressure, the explicit drop cap, re-org retractions, and fencing in the alert pool."""

import json
import threading

from kakarot_workers import leases, node, runtime
from kakarot_workers.alerts import screen
from kakarot_workers.batches import BatchPlan
from kakarot_workers.events import SwapEvent
from kakarot_workers.sources import Retraction, SourceStats
from kakarot_workers.stream import BatchConsumer


def trade(i: int) -> SwapEvent:
    return SwapEvent(
        chain="bsc",
        ca="0x" + "a" * 40,
        tx_hash=f"0x{i:064x}",
        log_index=0,
        ts_ms=1_000 + i,
        side="buy",
        amount_usd=10.0,
        price_usd=1.0,
        block_number=100 + i,
    )


class ListSource:
    """A source that yields recorded items, then ends the stream."""

    def __init__(self, items: list) -> None:
        self.items = items
        self.stats = SourceStats(live=True)

    def events(self, stop: threading.Event):
        yield from self.items
        stop.set()


def run(items: list, client) -> tuple[BatchConsumer, list[dict]]:
    keys = runtime.keys()
    lease = leases.acquire(client, keys, 1, "test", ttl_s=30)
    assert lease is not None
    plan = BatchPlan(1, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, ListSource(items), lease, node.NodeAgent("test-node"))
    consumer.run(threading.Event())
    messages = [json.loads(m) for m in client.lrange("alerts", 0, -1)]
    return consumer, messages


def sent_events(messages: list[dict]) -> list[dict]:
    import base64

    return [e for m in messages for e in json.loads(base64.b64decode(m["body"]))[0][0]]


def test_a_deep_alerts_queue_counts_back_pressure_and_drops_nothing(redis_client, use_env):
    use_env(KAKAROT_ALERTS_QUEUE_LIMIT="5", KAKAROT_EMIT_MAX_EVENTS="10")
    for _ in range(20):
        redis_client.lpush("alerts", "{}")  # a backlog the alert pool has not drained
    consumer, messages = run([trade(i) for i in range(50)], redis_client)
    counters = consumer.agent.counters
    assert counters.backpressure_count >= 1 and counters.dropped_events == 0
    assert len(sent_events([m for m in messages if m != {}])) == 50


def test_with_an_explicit_cap_events_over_it_are_dropped_and_counted(redis_client, use_env):
    use_env(
        KAKAROT_ALERTS_QUEUE_LIMIT="5", KAKAROT_ALERTS_QUEUE_CAP="10", KAKAROT_EMIT_MAX_EVENTS="10"
    )
    for _ in range(20):
        redis_client.lpush("alerts", "{}")
    consumer, messages = run([trade(i) for i in range(50)], redis_client)
    assert consumer.agent.counters.dropped_events == 50
    assert sent_events([m for m in messages if m != {}]) == []


def test_a_retracted_swap_still_buffered_is_never_sent_and_a_sent_one_is_recorded(
    redis_client, use_env
):
    use_env(KAKAROT_EMIT_MAX_EVENTS="3", KAKAROT_EMIT_MAX_MS="60000")
    first, second, third, fourth = (trade(i) for i in range(4))
    items = [
        first,
        second,
        third,  # a full micro-batch: sent
        fourth,
        Retraction("bsc", fourth.tx_hash, 0, fourth.block_number),  # still buffered
        Retraction("bsc", first.tx_hash, 0, first.block_number),  # already sent
    ]
    _, messages = run(items, redis_client)
    sent = [e["tx_hash"] for e in sent_events(messages)]
    assert sent == [first.tx_hash, second.tx_hash, third.tx_hash]
    keys = runtime.keys()
    assert redis_client.get(keys.events_retracted) == "2"
    assert redis_client.hkeys(keys.retracted) == [f"bsc:{first.tx_hash}:0"]


def test_the_alert_pool_drops_events_of_a_superseded_token(redis_client):
    keys = runtime.keys()
    old = leases.acquire(redis_client, keys, 4, "old", ttl_s=0.2)
    assert old is not None
    redis_client.delete(keys.batch_lease(4))  # as if it expired
    new = leases.acquire(redis_client, keys, 4, "new", ttl_s=5)
    assert new is not None
    stale = [
        trade(i).__class__(**{**trade(i).to_wire(), "batch_id": 4, "fencing_token": old.token})
        for i in range(3)
    ]
    fresh = trade(9).__class__(**{**trade(9).to_wire(), "batch_id": 4, "fencing_token": new.token})
    unfenced = trade(10)
    assert screen([*stale, fresh, unfenced])[0] == [fresh, unfenced]
    assert redis_client.get(keys.events_fenced) == "3"


def test_each_status_change_of_a_consumer_is_queued_once_for_the_backend(redis_client, use_env):
    use_env(KAKAROT_BACKEND_WS_URL="ws://127.0.0.1:9/unused")  # queued; nobody sends it here
    run([trade(i) for i in range(30)], redis_client)
    queued = [json.loads(m) for m in redis_client.lrange("kakarot:backend:outbox", 0, -1)]
    assert [(m["type"], m["batch_id"]) for m in queued] == [("batch_status", 1)] * len(queued)
    statuses = [m["status"] for m in queued]
    assert statuses[0] == "running" and statuses[-1] == "stopped", statuses
    changes = zip(statuses, statuses[1:], strict=False)
    assert all(a != b for a, b in changes), "only changes are reported"
