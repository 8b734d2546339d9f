"""Placement and rebalancing on a real Redis holding what nodes and consumers write: node
metrics and heartbeats, batch status hashes, leases and fences. (tests/faults/test_nodes.py
runs the same with real worker processes.)"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from kakarot_workers import queues, runtime
from kakarot_workers.control.rebalance import plan, rebalance
from kakarot_workers.streams import leases
from kakarot_workers.streams.dispatch import dispatch_unserved
from kakarot_workers.streams.placement import NodeLoad, choose

KAKAROT = str(Path(sys.executable).with_name("kakarot"))


def _node(client, node_id: str, batches: int = 0, slots: int = 8, **extra: str) -> None:
    keys = runtime.keys()
    client.set(keys.node_heartbeat(node_id), "2026-12-02T00:00:00+00:00", ex=30)
    client.hset(
        keys.node_metrics(node_id),
        mapping={
            "queues": f"streams,{queues.node_queue(node_id)}",
            "batch_count": batches,
            "portfolio_count": batches,
            "slots": slots,
            "cpu_usage": "1.0",
            **extra,
        },
    )


def _serving(client, node_id: str, batch_id: int, status: str = "running") -> None:
    """A consumer of `node_id` serving the batch: its lease (fenced) and its status hash."""
    keys = runtime.keys()
    consumer = f"{node_id}-c{batch_id}"
    lease = leases.Leases(client, keys).acquire(batch_id, consumer, ttl_s=30)
    assert lease is not None and lease.fenced
    client.hset(
        keys.batch_status(batch_id),
        mapping={
            "status": status,
            "consumer_id": consumer,
            "node_id": node_id,
            "task_id": 1,
            "updated_ms": 1,
            "pid": 1,
        },
    )


def _sent_to(client, queue: str) -> list[int]:
    return sorted(
        json.loads(base64.b64decode(json.loads(m)["body"]))[0][0]
        for m in client.lrange(queue, 0, -1)
    )


def test_choose_takes_the_fewest_batches_then_cpu_and_respects_slots():
    loads = [
        NodeLoad("a", batches=2, used=2, slots=4, cpu=5.0),
        NodeLoad("b", batches=1, used=1, slots=4, cpu=50.0),
        NodeLoad("c", batches=1, used=4, slots=4, cpu=1.0),  # full: 1 batch and 3 standbys
        NodeLoad("d", batches=1, used=1, slots=4, cpu=10.0),
    ]
    planned: Counter[str] = Counter()
    picks = []
    for _ in range(9):
        node = choose(loads, planned)
        picks.append(node)
        if node:
            planned[node] += 1
    # d (1 batch, less CPU than b), then b; then the three tie, and the least CPU goes first;
    # c never (no free slot); the ninth finds every slot taken
    assert picks == ["d", "b", "a", "d", "b", "a", "d", "b", None]
    assert choose(loads, Counter(), exclude=["d", "b"]) == "a"


def test_batches_go_to_the_least_loaded_live_nodes_own_queues(redis_client):
    _node(redis_client, "n1@h", batches=3)
    _node(redis_client, "n2@h", batches=0)
    _node(redis_client, "n3@h", batches=1)
    _node(redis_client, "gone@h", batches=0)
    redis_client.delete(runtime.keys().node_heartbeat("gone@h"))  # no heartbeat: not live
    _node(redis_client, "leaving@h", batches=0, leaving="1")
    assert dispatch_unserved([11, 12, 13, 14]) == [11, 12, 13, 14]
    # n2 takes two (0 → 2), n3 one (1 → 2) and then n2 or n3... all within one of even
    sent = {n: _sent_to(redis_client, queues.node_queue(n)) for n in ("n1@h", "n2@h", "n3@h")}
    counts = {n: len(b) for n, b in sent.items()}
    assert counts == {"n1@h": 0, "n2@h": 3, "n3@h": 1}, sent
    assert redis_client.llen(queues.STREAMS) == 0
    assert redis_client.get(runtime.keys().batch_dispatch(11)) in ("n2@h", "n3@h")


def test_with_no_live_node_a_batch_goes_to_the_shared_queue(redis_client):
    assert dispatch_unserved([21]) == [21]
    assert _sent_to(redis_client, queues.STREAMS) == [21]


def test_a_node_whose_consumer_vanished_with_a_lease_is_not_chosen(redis_client):
    """A killed node's heartbeat key outlives it: its batch's status still says running, with
    no lease. The batch goes elsewhere, though the dead node looks idlest."""
    _node(redis_client, "dead@h", batches=0)
    _node(redis_client, "alive@h", batches=2)
    keys = runtime.keys()
    redis_client.hset(keys.batch_status(31), mapping={"status": "running", "node_id": "dead@h"})
    assert dispatch_unserved([31]) == [31]
    assert _sent_to(redis_client, queues.node_queue("alive@h")) == [31]


def test_rebalance_plans_moves_to_within_one_of_even_and_orders_one_at_a_time(
    redis_client, use_env
):
    use_env(KAKAROT_REBALANCE_SPREAD="1", KAKAROT_REBALANCE_COOLOFF_S="60")
    keys = runtime.keys()
    _node(redis_client, "a@h", batches=4, slots=4)  # full: it still gives batches away
    _node(redis_client, "b@h", batches=4)
    _node(redis_client, "new@h", batches=0)
    for batch_id in (1, 2, 3, 4):
        _serving(redis_client, "a@h", batch_id)
    for batch_id in (5, 6, 7, 8):
        _serving(redis_client, "b@h", batch_id)

    whole = plan(redis_client, keys, whole=True)
    assert whole.load == {"a@h": 4, "b@h": 4, "new@h": 0} and whole.spread == 4
    assert [(m.source, m.target) for m in whole.moves] == [
        ("b@h", "new@h"),
        ("a@h", "new@h"),
    ]
    # the dry run orders nothing
    dry = subprocess.run(
        [KAKAROT, "rebalance", "--dry-run"], env=dict(os.environ), capture_output=True, text=True
    )
    assert dry.returncode == 0, dry.stderr
    assert "would move batch 8: b@h → new@h" in dry.stdout
    assert "would move batch 4: a@h → new@h" in dry.stdout
    assert not redis_client.hexists(keys.batch_control(8), "move")

    first = rebalance()
    assert [m.batch_id for m in first.moves] == [8]
    assert redis_client.hget(keys.batch_control(8), "move") == "b@h-c8>new@h"
    assert redis_client.exists(keys.batch_moved(8))  # the cool-off
    # one at a time: the order is not taken up yet, so the next pass waits
    second = rebalance()
    assert second.moves == [] and "8" in second.waiting
    # the consumer took the order and released the lease as a hand-over: still waiting
    redis_client.hdel(keys.batch_control(8), "move")
    redis_client.set(keys.batch_handover(8), "x", px=5000)
    redis_client.delete(keys.batch_lease(8))
    assert rebalance().moves == []
    # the successor on new@h is live and fenced: the next move goes ahead
    redis_client.delete(keys.batch_handover(8))
    _serving(redis_client, "new@h", 8)
    third = rebalance()
    assert [(m.batch_id, m.source, m.target) for m in third.moves] == [(4, "a@h", "new@h")]


def test_a_batch_in_its_cool_off_is_not_moved_again(redis_client, use_env):
    use_env(KAKAROT_REBALANCE_SPREAD="1")
    keys = runtime.keys()
    _node(redis_client, "a@h", batches=3)
    _node(redis_client, "b@h", batches=0)
    for batch_id in (1, 2, 3):
        _serving(redis_client, "a@h", batch_id)
        redis_client.set(keys.batch_moved(batch_id), "a@h", ex=60)
    assert plan(redis_client, keys, whole=True).moves == []
    redis_client.delete(keys.batch_moved(2))
    assert [m.batch_id for m in plan(redis_client, keys).moves] == [2]
