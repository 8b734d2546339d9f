"""The backend WebSocket protocol end to end: the node's client against `kakarot hub`, on
127.0.0.1, with real Redis and SQLite."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass

import httpx
import pytest
import websocket
from sqlalchemy import select

from kakarot_workers import backend
from kakarot_workers.backend import BackendClient
from kakarot_workers.control.reconcile import ensure_allocated, reconcile
from kakarot_workers.db.models import MonitorBatch
from kakarot_workers.db.session import session_scope
from kakarot_workers.streams.node import NodeAgent
from kakarot_workers.tools.hub import Hub
from tests.support.scenario import create_task_with, wait_for


@dataclass
class Consumer:
    """What a node knows of one of its stream consumers (the `node.Held` protocol)."""

    batch_id: int
    task_id: int
    epoch: int
    consumer_id: str = "c"
    status: str = "running"
    pending: int = 0
    progress: int = 100


class Dashboard:
    """A WebSocket peer that subscribes to topics and keeps what it is sent."""

    def __init__(self, url: str, topic: str = "*", header: list[str] | None = None) -> None:
        self.conn = websocket.create_connection(url, timeout=5, header=header or [])
        self.hello = json.loads(self.conn.recv())
        self.conn.send(json.dumps({"type": "subscribe", "topic": topic}))
        self.seen: list[dict] = []
        self.conn.settimeout(0.2)

    def wait(self, kind: str, timeout_s: float = 5) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for message in self.seen:
                if message["type"] == kind:
                    self.seen.remove(message)
                    return message
            with contextlib.suppress(websocket.WebSocketTimeoutException):
                self.seen.append(json.loads(self.conn.recv()))
        raise AssertionError(f"no {kind} within {timeout_s}s; seen {self.seen}")

    def close(self) -> None:
        self.conn.close()


def _client(hub: Hub, consumer: str, agent: NodeAgent | None = None, **options) -> BackendClient:
    agent = agent or NodeAgent(consumer)
    return BackendClient(
        hub.url,
        consumer,
        batches=agent.batch_report,
        on_batch_reload=agent.batch_reload,
        heartbeat_s=options.pop("heartbeat_s", 0.2),
        max_backoff_s=0.5,
        tick_s=0.1,
        **options,
    ).start()


@pytest.fixture
def hub(db_url, redis_client, use_env):
    hub = Hub(epoch_poll_s=0.2).start()
    use_env(KAKAROT_BACKEND_WS_URL=hub.url)
    yield hub
    hub.stop()


def test_a_node_registers_beats_and_its_events_reach_subscribed_dashboards(hub, redis_client):
    dashboard = Dashboard(hub.url)
    agent = NodeAgent("node-a")
    agent.hold(Consumer(batch_id=11, task_id=3, epoch=1))
    client = _client(hub, "node-a", agent)
    try:
        assert client.registered.wait(5) and client.session_id
        wait_for(lambda: hub.nodes["node-a"].last_heartbeat is not None, 5, "a heartbeat")
        assert hub.nodes["node-a"].batches == [
            {"batch_id": 11, "task_id": 3, "status": "running", "progress": 100}
        ]
        # events queued by any process go out once, through whichever node is connected
        assert backend.send_event("batch_status", {"batch_id": 11, "status": "error"})
        assert backend.send_task_status(3, running=True, message="failed: no heartbeat")
        status = dashboard.wait("batch_status")
        assert status["data"]["batch_id"] == 11 and status["data"]["status"] == "error"
        task = dashboard.wait("task_status")["data"]
        assert task | {"timestamp": 0} == {
            "taskId": 3,
            "status": 1,
            "message": "failed: no heartbeat",
            "timestamp": 0,
        }
        # the alert push (notify/backend.py) arrives already wrapped in `data`; it must
        # register first, and each alert is acknowledged (a repeat once more, not relayed)
        pusher = websocket.create_connection(hub.url, timeout=5)
        pusher.recv()
        alert = json.dumps({"type": "alert", "data": {"alertId": 7, "alertType": "volume"}})
        pusher.send(alert)
        assert json.loads(pusher.recv())["code"] == "not_registered"
        pusher.send(json.dumps({"type": "register", "consumer_id": "pusher-1"}))
        assert json.loads(pusher.recv())["type"] == "registered"
        pusher.send(alert)
        assert json.loads(pusher.recv())["alertId"] == 7
        pusher.send(alert)
        assert json.loads(pusher.recv()) | {"timestamp": 0} == {
            "type": "alert_ack",
            "alertId": 7,
            "timestamp": 0,
        }
        assert dashboard.wait("alert")["data"] == {"alertId": 7, "alertType": "volume"}
        assert hub.alert_ids == [7, 7]
        assert [r["type"] for r in hub.relayed].count("alert") == 1
        pusher.close()
        assert redis_client.llen("kakarot:backend:outbox") == 0
    finally:
        client.stop()
        dashboard.close()
    wait_for(lambda: not hub.nodes["node-a"].connected, 5, "the hub to see the node leave")


def test_malformed_frames_get_an_error_and_the_connection_stays_open(hub):
    conn = websocket.create_connection(hub.url, timeout=5)
    try:
        assert json.loads(conn.recv())["type"] == "connected"
        for frame, code in (
            ("not json", "bad_message"),
            (json.dumps({"no": "type"}), "bad_message"),
            (json.dumps({"type": "launch"}), "unknown_type"),
            (json.dumps({"type": "register"}), "bad_register"),
            (
                json.dumps({"type": "heartbeat", "consumer_id": "x", "batches": []}),
                "not_registered",
            ),
        ):
            conn.send(frame)
            answer = json.loads(conn.recv())
            assert (answer["type"], answer["code"]) == ("error", code), frame
        conn.send(json.dumps({"type": "ping"}))
        assert json.loads(conn.recv())["type"] == "pong"
    finally:
        conn.close()


def test_an_epoch_change_sends_batch_reload_and_each_node_acks_reloading_or_skipping(
    hub, redis_client
):
    cas = [f"0x{i:040x}" for i in range(150)]
    task_id = create_task_with(cas)
    first, second = ensure_allocated(task_id)
    # the hub has seen epoch 1 (not 0 then 1, which would send a batch_reload of its own)
    wait_for(lambda: hub.epochs_seen.get(task_id) == 1, 5, "the hub to see epoch 1")
    serving = NodeAgent(
        "node-serving", reconcile=reconcile
    )  # as the worker's Node bootstep wires it
    serving.hold(Consumer(batch_id=first, task_id=task_id, epoch=1))
    idle = NodeAgent("node-idle")
    clients = [_client(hub, "node-serving", serving), _client(hub, "node-idle", idle)]
    dashboard = Dashboard(hub.url, topic="batch_reload_ack")
    try:
        assert all(c.registered.wait(5) for c in clients)
        # a quiet period: nothing may ack yet, and nothing marks "no batch_reload is coming";
        # the hub looks at the epochs every 0.2 s, so one would have come and been acked by now
        time.sleep(0.5)
        assert list(hub.acks) == []
        from kakarot_workers.tools.admin import add_targets, target_row

        with session_scope() as session:
            add_targets(
                session, task_id, [target_row("bsc", f"0x{9:04x}{i:036x}", "N") for i in range(60)]
            )
        ensure_allocated(task_id)  # epoch 2
        wait_for(lambda: len(hub.acks) == 2, 10, "both acks")
        actions = {a["consumer_id"]: a["action"] for a in hub.acks}
        assert actions == {"node-serving": "reloading", "node-idle": "skipping"}
        assert {a["task_id"] for a in hub.acks} == {task_id}
        assert dashboard.wait("batch_reload_ack")["data"]["task_id"] == task_id
        # reloading reconciled the task: its new epoch's batches were dispatched
        assert redis_client.llen("streams") >= 1
    finally:
        for c in clients:
            c.stop()
        dashboard.close()


def test_the_client_reconnects_and_registers_again_after_the_hub_restarts(db_url, use_env):
    hub = Hub().start()
    port = hub.port
    use_env(KAKAROT_BACKEND_WS_URL=hub.url)
    client = _client(hub, "node-r")
    try:
        assert client.registered.wait(5)
        hub.stop()
        wait_for(lambda: not client.registered.is_set(), 5, "the client to notice")
        hub = Hub(port=port).start()
        wait_for(lambda: client.registered.is_set(), 10, "registered again")
        assert client.connects == 2 and "node-r" in hub.nodes
    finally:
        client.stop()
        hub.stop()


def test_a_token_guards_the_websocket_and_the_api(db_url):
    hub = Hub(token="s3cret").start()
    try:
        with pytest.raises(websocket.WebSocketBadStatusException):
            websocket.create_connection(hub.url, timeout=5)
        http_url = hub.url.replace("ws://", "http://")
        assert httpx.get(f"{http_url}/api/v1/nodes").status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{http_url}/api/v1/nodes", headers=wrong).status_code == 401
        agent = NodeAgent("node-t")
        client = _client(hub, "node-t", agent, token="s3cret")
        try:
            assert client.registered.wait(5)
        finally:
            client.stop()
        good = {"Authorization": "Bearer s3cret"}
        assert httpx.get(f"{http_url}/api/v1/nodes", headers=good).json()[0]["consumer_id"] == (
            "node-t"
        )
    finally:
        hub.stop()


def test_the_api_serves_tasks_batches_and_nodes_and_the_hub_can_write_heartbeats(
    db_url, redis_client
):
    task_id = create_task_with([f"0x{i:040x}" for i in range(120)])
    first, second = ensure_allocated(task_id)
    hub = Hub(write_heartbeats=True).start()
    agent = NodeAgent("node-h")
    agent.hold(Consumer(batch_id=first, task_id=task_id, epoch=1))
    client = _client(hub, "node-h", agent)
    http_url = hub.url.replace("ws://", "http://")
    try:
        assert client.registered.wait(5)
        wait_for(lambda: hub.heartbeats_written > 0, 5, "a heartbeat written")
        with session_scope() as session:
            rows = {b.id: b for b in session.scalars(select(MonitorBatch))}
        assert rows[first].worker_id == "node-h" and rows[first].last_heartbeat is not None
        assert rows[first].status == "running" and rows[second].last_heartbeat is None
        tasks = httpx.get(f"{http_url}/api/v1/tasks").json()
        assert [t["id"] for t in tasks] == [task_id]
        assert tasks[0]["last_heartbeat"] is not None and tasks[0]["targets"] == 120
        batches = httpx.get(f"{http_url}/api/v1/batches", params={"task_id": task_id}).json()
        assert [b["id"] for b in batches] == [first, second]
        assert httpx.get(f"{http_url}/api/v1/batches", params={"task_id": 999}).json() == []
        nodes = httpx.get(f"{http_url}/api/v1/nodes").json()
        assert nodes[0]["consumer_id"] == "node-h" and nodes[0]["connected"] is True
        assert httpx.get(f"{http_url}/api/v1/batches?task_id=x").status_code == 400
        assert httpx.get(f"{http_url}/api/v1/nope").status_code == 404
    finally:
        client.stop()
        hub.stop()


def test_send_event_is_a_no_op_without_a_backend(db_url, redis_client):
    assert not backend.send_event("batch_status", {"batch_id": 1, "status": "running"})
    assert redis_client.llen("kakarot:backend:outbox") == 0


def test_the_client_records_an_error_from_the_backend_and_keeps_the_connection(hub):
    client = _client(hub, "")  # an empty consumer id: the hub refuses the registration
    try:
        wait_for(lambda: client.errors, 5, "the error")
        assert client.errors[0]["code"] == "bad_register"
        assert not client.registered.is_set() and client.connects == 1
    finally:
        client.stop()


def test_a_full_backend_outbox_drops_the_oldest_and_counts_it(db_url, redis_client, use_env):
    use_env(KAKAROT_BACKEND_WS_URL="ws://127.0.0.1:9/unused")
    cap = backend.OUTBOX_CAP
    redis_client.rpush("kakarot:backend:outbox", *(["{}"] * cap))
    assert backend.send_event("batch_status", {"batch_id": 5, "status": "error"})
    assert redis_client.llen("kakarot:backend:outbox") == cap
    newest = json.loads(redis_client.lindex("kakarot:backend:outbox", -1))
    assert newest["batch_id"] == 5
    assert redis_client.get("kakarot:stats:backend_events_dropped") == "1"
