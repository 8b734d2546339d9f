"""The batch consumer on real Redis (and its broker queue), fed by a list of recorded items:
back-pressure, the explicit drop cap, re-org retractions, and fencing in the alert pool."""

import json
import threading
import time

from kakarot_workers import queues, runtime
from kakarot_workers.alerts.evaluate import screen
from kakarot_workers.events import SwapEvent, unpack
from kakarot_workers.sources import BatchPlan, Retraction, SourceStats
from kakarot_workers.streams import leases, node
from kakarot_workers.streams.consumer import BatchConsumer
from kakarot_workers.streams.handover import HANDOVER_RESEND_S
from tests.support.scenario import queued_args, task_args, wait_for

NOW_MS = int(time.time() * 1000)


def trade(i: int) -> SwapEvent:
    return SwapEvent(
        chain="bsc",
        ca="0x" + "a" * 40,
        tx_hash=f"0x{i:064x}",
        log_index=0,
        ts_ms=NOW_MS + i,
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


class LiveSource:
    """A source that is live and quiet until stopped."""

    def __init__(self) -> None:
        self.stats = SourceStats(live=True)

    def events(self, stop: threading.Event):
        while not stop.wait(0.01):
            yield None


def run(items: list, client) -> tuple[BatchConsumer, list[dict]]:
    keys = runtime.keys()
    lease = leases.Leases(client, keys).acquire(1, "test", ttl_s=30)
    assert lease is not None
    plan = BatchPlan(1, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, ListSource(items), lease, node.NodeAgent("test-node"))
    consumer.run(threading.Event())
    messages = [json.loads(m) for m in client.lrange("alerts", 0, -1)]
    return consumer, messages


def sent_events(messages: list[dict]) -> list[dict]:
    """The events of the `evaluate_events` messages among `messages`."""
    return [
        e
        for m in messages
        if m.get("headers", {}).get("task") == queues.EVALUATE_EVENTS
        for e in unpack(task_args(m)[0])
    ]


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
        Retraction("bsc", first.tx_hash, 0, first.block_number, ca=first.ca),  # already sent
    ]
    _, messages = run(items, redis_client)
    sent = [e["tx_hash"] for e in sent_events(messages)]
    assert sent == [first.tx_hash, second.tx_hash, third.tx_hash]
    keys = runtime.keys()
    assert redis_client.get(keys.events_retracted) == "2"
    assert redis_client.hkeys(keys.retracted) == [f"bsc:{first.tx_hash}:0"]
    # the alert pool takes it out of its windows and marks its alerts (`retract_trade`)
    retractions = [task_args(m) for m in messages if m["headers"]["task"] == queues.RETRACT_TRADE]
    assert retractions == [[1, first.ca, "bsc", first.tx_hash, 0]]


def test_a_retracted_swap_mined_again_is_sent_and_judged_again(redis_client, use_env):
    use_env(KAKAROT_EMIT_MAX_EVENTS="1")
    first, second = trade(0), trade(1)
    gone = Retraction("bsc", first.tx_hash, 0, first.block_number, ca=first.ca)
    _, messages = run([first, gone, second, first], redis_client)  # a re-org, then mined again
    sent = [e["tx_hash"] for e in sent_events(messages)]
    assert sorted(sent) == sorted([first.tx_hash, second.tx_hash, first.tx_hash])
    keys = runtime.keys()
    assert redis_client.hkeys(keys.retracted) == [], "the pool judges it again"


def test_a_hand_over_message_swallowed_by_the_leaving_worker_is_sent_again(redis_client, use_env):
    """A warm-shutting-down worker's last BRPOP can pop its own hand-over message and hold it
    until the worker exits (celery/celery#4354). Here the test pops it, as that BRPOP would:
    the leaving consumer must send the batch again, hand over to whoever takes it, and stop."""
    use_env(KAKAROT_HANDOVER_TIMEOUT_S="10")
    keys = runtime.keys()
    other_streams_node(redis_client, "node-b")
    lease = leases.Leases(redis_client, keys).acquire(7, "leaving", ttl_s=30)
    assert lease is not None
    plan = BatchPlan(7, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, LiveSource(), lease, node.NodeAgent("test-node"))
    thread = threading.Thread(target=consumer.run, args=(threading.Event(),), daemon=True)
    thread.start()
    consumer.begin_shutdown()

    def consume_batch_args() -> list | None:
        # sent to the least-loaded other node's own queue (which the leaving worker does not
        # consume: the swallowing cannot happen there, but a lost message is sent again too)
        raw = redis_client.rpop(queues.node_queue("node-b"))
        if raw is None:
            return None
        message = json.loads(raw)
        assert message["headers"]["task"] == "kakarot.streams.consume_batch"
        return task_args(message)

    swallowed = poll(consume_batch_args, 2.0)
    assert swallowed == [7]
    sent_again = poll(consume_batch_args, HANDOVER_RESEND_S + 3.0)
    assert sent_again == [7], "the leaving consumer never sent its batch again"
    # counted once sent: the test may read the message before the consumer counts it
    wait_for(lambda: redis_client.get(keys.handovers_resent) == "1", 1.0, "the resend counted")

    successor = leases.Leases(redis_client, keys).acquire(7, "successor", ttl_s=30)
    assert successor is not None and not successor.fenced  # still a graceful hand-over
    successor.raise_fence()
    thread.join(3.0)
    assert not thread.is_alive(), "the leaving consumer did not stop once the fence passed it"
    assert consumer.stop_reason == "handed_over"
    assert redis_client.get(keys.handovers_resent) == "1", "sent again although taken"


def test_with_no_other_streams_node_a_leaving_consumer_stops_at_once_and_requeues_its_batch(
    redis_client, use_env
):
    """Nobody could take over (the only other node is full, another is leaving): waiting the
    hand-over timeout would outlast a supervisor's stop timeout for nothing."""
    use_env(KAKAROT_HANDOVER_TIMEOUT_S="10")
    keys = runtime.keys()
    other_streams_node(redis_client, "node-full", batch_count=4, slots=4)
    other_streams_node(redis_client, "node-leaving", leaving=True)
    lease = leases.Leases(redis_client, keys).acquire(8, "leaving", ttl_s=30)
    assert lease is not None
    plan = BatchPlan(8, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, LiveSource(), lease, node.NodeAgent("test-node", "streams"))
    thread = threading.Thread(target=consumer.run, args=(threading.Event(),), daemon=True)
    thread.start()
    consumer.begin_shutdown()
    thread.join(3.0)
    assert not thread.is_alive(), "the leaving consumer waited for a successor that cannot come"
    assert redis_client.get(keys.batch_lease(8)) is None
    assert queued_args(redis_client, "streams") == [[8]]
    assert redis_client.hget(keys.batch_status(8), "status") == "stopped"
    assert redis_client.hget(keys.node_metrics("test-node"), "leaving") == "1"


def _serve_in_thread(client, batch_id: int, consumer_id: str) -> tuple[BatchConsumer, object]:
    lease = leases.Leases(client, runtime.keys()).acquire(batch_id, consumer_id, ttl_s=30)
    assert lease is not None and lease.fenced
    plan = BatchPlan(batch_id, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, LiveSource(), lease, node.NodeAgent("test-node", "streams"))
    thread = threading.Thread(target=consumer.run, args=(threading.Event(),), daemon=True)
    thread.start()
    return consumer, thread


def test_a_consumer_told_to_move_hands_its_batch_to_the_target_node_without_a_gap(
    redis_client, use_env
):
    use_env(KAKAROT_HANDOVER_TIMEOUT_S="10")
    keys = runtime.keys()
    other_streams_node(redis_client, "node-b")
    consumer, thread = _serve_in_thread(redis_client, 9, "mover")
    # an order for an earlier consumer of the batch is not ours
    redis_client.hset(keys.batch_control(9), "move", "someone-else>node-b")
    time.sleep(1.5)
    assert consumer.status == "running" and redis_client.llen(queues.node_queue("node-b")) == 0
    redis_client.hset(keys.batch_control(9), "move", "mover>node-b")
    sent = poll(lambda: queued_args(redis_client, queues.node_queue("node-b")) or None, 3.0)
    assert sent == [[9]], "the batch was not sent to the target node"
    assert not redis_client.hexists(keys.batch_control(9), "move"), "the order stays for others"
    assert consumer.status == "handing_over" and thread.is_alive()  # serving on: no gap
    successor = leases.Leases(redis_client, keys).acquire(9, "on-node-b", ttl_s=30)
    assert successor is not None and not successor.fenced
    successor.raise_fence()
    thread.join(3.0)
    assert not thread.is_alive(), "the moved consumer did not stop once the fence passed it"
    assert consumer.stop_reason == "handed_over"


def test_a_move_nobody_takes_up_ends_with_the_batch_served_here_under_the_same_token(
    redis_client, use_env
):
    use_env(KAKAROT_HANDOVER_TIMEOUT_S="1")
    keys = runtime.keys()
    other_streams_node(redis_client, "node-b")
    consumer, thread = _serve_in_thread(redis_client, 10, "mover")
    token = consumer.lease.token
    redis_client.hset(keys.batch_control(10), "move", "mover>node-b")
    assert poll(lambda: redis_client.rpop(queues.node_queue("node-b")), 3.0)  # lost
    assert poll(lambda: consumer.status == "handing_over" or None, 2.0)
    assert redis_client.get(keys.batch_lease(10)) is None  # released as a hand-over
    assert poll(lambda: consumer.status == "running" or None, 5.0), "never took it back"
    assert redis_client.get(keys.batch_lease(10)) == f"mover:{token}"
    assert thread.is_alive() and consumer.lease.token == token
    consumer.handover.stop.set()
    thread.join(3.0)


def other_streams_node(
    client, node_id: str, batch_count: int = 0, slots: int = 4, leaving: bool = False
) -> None:
    """Another live node serving `streams`, as its heartbeat and metrics show it."""
    keys = runtime.keys()
    client.set(keys.node_heartbeat(node_id), "now", ex=30)
    client.hset(
        keys.node_metrics(node_id),
        mapping={
            "queues": "streams",
            "batch_count": batch_count,
            "slots": slots,
            "leaving": int(leaving),
        },
    )


def poll(read, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read()
        if value is not None:
            return value
        time.sleep(0.02)
    return None


def test_the_alert_pool_drops_events_of_a_superseded_token(redis_client):
    keys = runtime.keys()
    old = leases.Leases(redis_client, keys).acquire(4, "old", ttl_s=0.2)
    assert old is not None
    redis_client.delete(keys.batch_lease(4))  # as if it expired
    new = leases.Leases(redis_client, keys).acquire(4, "new", ttl_s=5)
    assert new is not None
    stale = [
        trade(i).__class__(**{**trade(i).to_wire(), "batch_id": 4, "fencing_token": old.token})
        for i in range(3)
    ]
    fresh = trade(9).__class__(**{**trade(9).to_wire(), "batch_id": 4, "fencing_token": new.token})
    unfenced = trade(10)
    assert screen([*stale, fresh, unfenced])[0] == [fresh, unfenced]
    assert redis_client.get(keys.events_fenced) == "3"


def test_the_fence_acts_at_emit_a_dead_owners_events_count_a_zombies_do_not(redis_client):
    """Events sent under a lease that was valid then are judged even after a successor took
    the batch; events a paused owner sends after the successor's fence rose are refused."""
    keys = runtime.keys()
    store = leases.Leases(redis_client, keys)
    old = store.acquire(5, "old", ttl_s=0.3)
    assert old is not None and old.server_ms > 0

    def sent_by(lease, n: int, sent_ms: int):
        wire = {**trade(n).to_wire(), "batch_id": 5, "fencing_token": lease.token}
        return trade(n).__class__(**{**wire, "sent_ms": sent_ms})

    before = sent_by(old, 1, old.server_now_ms())  # sent, then the owner died (kill -9)
    wait_for(lambda: redis_client.get(keys.batch_lease(5)) is None, 5, "the lease to lapse")
    new = store.acquire(5, "new", ttl_s=5)
    assert new is not None and new.token > old.token
    time.sleep(0.01)
    zombie = sent_by(old, 2, old.server_now_ms())  # the old owner woke up and sent this
    undated = sent_by(old, 3, 0)  # an old token with no send time
    fresh = sent_by(new, 4, new.server_now_ms())
    assert screen([before, zombie, undated, fresh])[0] == [before, fresh]
    assert redis_client.get(keys.events_fenced) == "2"
    # a third owner: an event of the first is judged by the first raise above its token
    redis_client.delete(keys.batch_lease(5))
    third = store.acquire(5, "third", ttl_s=5)
    assert third is not None
    assert screen([before, zombie])[0] == [before]


def test_an_event_whose_first_raise_above_left_the_fence_log_is_refused(redis_client):
    keys = runtime.keys()
    store = leases.Leases(redis_client, keys)
    tokens = []
    for i in range(20):  # 20 owners in turn: the log keeps the newest 16 raises
        lease = store.acquire(6, f"owner-{i}", ttl_s=5)
        assert lease is not None
        tokens.append((lease.token, lease.server_now_ms()))
        redis_client.delete(keys.batch_lease(6))
        time.sleep(0.003)  # the raises a few ms apart
    assert len(redis_client.hgetall(keys.batch_fence_log(6))) == 17  # 16 and `trimmed`

    def sent(token: int, sent_ms: int) -> SwapEvent:
        wire = {**trade(token % 1000).to_wire(), "batch_id": 6, "fencing_token": token}
        return trade(0).__class__(**{**wire, "sent_ms": sent_ms})

    early = sent(tokens[1][0], tokens[1][1])  # sent before the raise to tokens[2], trimmed
    late = sent(tokens[10][0], tokens[10][1])  # its next raise is still logged
    assert screen([early, late])[0] == [late]


def test_each_status_change_of_a_consumer_is_queued_once_for_the_backend(redis_client, use_env):
    use_env(KAKAROT_BACKEND_WS_URL="ws://127.0.0.1:9/unused")  # queued; nobody sends it here
    run([trade(i) for i in range(30)], redis_client)
    # on the serving node's own list: its connection sends them (`backend`)
    outbox = runtime.keys().backend_outbox_of("test-node")
    queued = [json.loads(m) for m in redis_client.lrange(outbox, 0, -1)]
    assert queued and redis_client.llen("kakarot:backend:outbox") == 0
    assert [(m["type"], m["batch_id"]) for m in queued] == [("batch_status", 1)] * len(queued)
    statuses = [m["status"] for m in queued]
    assert statuses[0] == "running" and statuses[-1] == "stopped", statuses
    changes = zip(statuses, statuses[1:], strict=False)
    assert all(a != b for a, b in changes), "only changes are reported"


def test_an_implausible_event_from_a_source_is_dropped_alone_and_counted_durably(redis_client):
    """The consumer checks every event a source yields (the EVM source builds them itself):
    a bad one never reaches the alert pool, the others do, and the rejects are counted in
    Redis (in all, for the batch, by reason), with those the source refused on its own."""
    from msgspec.structs import replace

    future = replace(trade(1), ts_ms=10**18)
    unknown_chain = replace(trade(2), chain="mars")

    class RejectingSource(ListSource):
        def events(self, stop):
            self.stats.reject("frame")  # a frame the source could not parse
            yield from super().events(stop)

    keys = runtime.keys()
    lease = leases.Leases(redis_client, keys).acquire(1, "test", ttl_s=30)
    plan = BatchPlan(1, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    source = RejectingSource([trade(0), future, unknown_chain, trade(3)])
    BatchConsumer(plan, source, lease, node.NodeAgent("test-node")).run(threading.Event())

    sent = sent_events([json.loads(m) for m in redis_client.lrange("alerts", 0, -1)])
    assert [e["tx_hash"] for e in sent] == [trade(0).tx_hash, trade(3).tx_hash]
    assert redis_client.get(keys.frames_rejected) == "3"
    assert redis_client.hgetall(keys.rejects_by_batch) == {"1": "3"}
    assert redis_client.hgetall(keys.rejects_by_reason) == {
        "source:ts_ms": "1",
        "source:chain": "1",
        "source:frame": "1",
    }


class TradingSource:
    """A live source that yields a trade every few milliseconds until stopped."""

    def __init__(self) -> None:
        self.stats = SourceStats(live=True)

    def events(self, stop: threading.Event):
        n = 0
        while not stop.wait(0.005):
            n += 1
            yield trade(n)


def test_a_standby_takes_over_after_the_owners_mark_and_stops_when_told(redis_client, use_env):
    """The standby buffers the batch's trades; when the owner's lease lapses it takes the
    batch, sends the trades after the owner's mark, serves on, and stops like any owner when
    the control plane tells it to (its subscription runs under its own stop event)."""
    from kakarot_workers.streams.standby import Mark, Standby

    use_env(KAKAROT_STANDBY="true", KAKAROT_STANDBY_CHECK_S="0.05", KAKAROT_LEASE_TTL_S="1")
    keys = runtime.keys()
    owner = leases.Leases(redis_client, keys).acquire(8, "owner", ttl_s=1)
    assert owner is not None
    keeper = Standby(8, "standby", TradingSource())
    assert keeper.claim() and not Standby(8, "another", TradingSource()).claim()
    stop = threading.Event()
    taken: list = []
    thread = threading.Thread(target=lambda: taken.append(keeper.wait(stop)), daemon=True)
    thread.start()
    time.sleep(0.3)  # trades 1.. buffered; the owner sent up to trade 5 and died
    redis_client.set(keys.batch_sent_mark(8), Mark(trade(5).tx_hash, 0, trade(5).ts_ms).encode())
    thread.join(5)
    ((lease, source),) = taken
    assert lease.token > owner.token and lease.fenced
    assert redis_client.get(keys.batch_standby(8)) is None, "no longer a standby"
    plan = BatchPlan(8, 1, 1, "bsc", "simulator", ["0x" + "a" * 40], "running")
    consumer = BatchConsumer(plan, source, lease, node.NodeAgent("test-node"))
    serving = threading.Thread(target=consumer.run, args=(threading.Event(),), daemon=True)
    serving.start()
    wait_for(lambda: len(sent_events(_messages(redis_client))) > 20, 5, "the new owner to send")
    redis_client.hset(keys.batch_control(8), "stop", "retired")
    serving.join(5)
    assert not serving.is_alive(), "told to stop, the new owner stopped"
    sent = [e["tx_hash"] for e in sent_events(_messages(redis_client))]
    assert sent[0] == trade(6).tx_hash and len(sent) == len(set(sent))
    assert sent == [trade(n).tx_hash for n in range(6, 6 + len(sent))]


def _messages(client) -> list[dict]:
    """The messages on the `alerts` queue, oldest first (Celery pushes on the left)."""
    return [json.loads(m) for m in reversed(client.lrange("alerts", 0, -1))]


def test_a_node_killed_without_a_clean_shutdown_leaves_kakarot_nodes_by_itself(
    redis_client, use_env
):
    use_env(KAKAROT_NODE_FORGET_S="120")
    keys = runtime.keys()
    agent = node.NodeAgent("gone-node", "streams")
    agent.beat()  # … then kill -9: no clean shutdown removes its keys
    assert redis_client.hget(keys.node_metrics("gone-node"), "queues") == "streams"
    assert 110 <= redis_client.ttl(keys.node_metrics("gone-node")) <= 120
    assert 0 < redis_client.ttl(keys.node_heartbeat("gone-node")) <= 30


def test_under_a_deep_alerts_backlog_a_consumer_sends_wider_micro_batches(redis_client, use_env):
    use_env(KAKAROT_EMIT_MAX_EVENTS="10", KAKAROT_DEGRADE_BACKLOG="[5, 10, 15]")
    redis_client.lpush("alerts", *["{}"] * 20)  # a backlog the pool has not drained
    consumer, messages = run([trade(i) for i in range(100)], redis_client)
    sizes = [len(unpack(task_args(m)[0])) for m in reversed(messages) if m != {}]
    assert sizes == [40, 40, 20], sizes  # 4× the usual 10, nothing dropped
    assert consumer.degradation.level == 3
