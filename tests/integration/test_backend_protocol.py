"""The fleet's side of the backend protocol against a stand-in written from
docs/backend-protocol.md (`tests.support.notify_servers.BackendServer`, not the hub): every
message's fields and types, the batch status set, milliseconds everywhere, nothing before
`registered`, and each `batch_status` on the link of the node that serves the batch."""

from __future__ import annotations

import time
from dataclasses import dataclass

from kakarot_workers import backend
from kakarot_workers.backend import BackendClient
from kakarot_workers.streams.node import NodeAgent
from tests.support.notify_servers import BackendServer
from tests.support.scenario import wait_for

STATUSES = {"pending", "running", "paused", "stopped", "completed", "error"}


@dataclass
class Consumer:
    batch_id: int
    task_id: int
    epoch: int
    status: str
    consumer_id: str = "c"
    pending: int = 0

    @property
    def progress(self) -> int:
        return 100 if self.status in ("running", "handing_over") else 0


def _ms(value: object) -> bool:
    """An integer of milliseconds, within a minute of now."""
    return type(value) is int and abs(value - time.time() * 1000) < 60_000  # noqa: E721


def _link(url: str, node_id: str, agent: NodeAgent) -> BackendClient:
    return BackendClient(
        url,
        node_id,
        node_id=node_id,
        batches=agent.batch_report,
        on_batch_reload=agent.batch_reload,
        heartbeat_s=0.2,
        max_backoff_s=0.5,
        tick_s=0.05,
    ).start()


def test_the_fleets_messages_are_the_protocols(db_url, redis_client, use_env):
    with BackendServer() as stand_in:
        use_env(KAKAROT_BACKEND_WS_URL=stand_in.url)
        agents = {name: NodeAgent(name) for name in ("node-a", "node-b")}
        # internal states the backend must not see: connecting, handing_over
        agents["node-a"].hold(Consumer(11, 3, 1, "connecting"))
        agents["node-a"].hold(Consumer(12, 3, 1, "handing_over"))
        agents["node-b"].hold(Consumer(21, 3, 1, "running"))
        links = [_link(stand_in.url, name, agent) for name, agent in agents.items()]
        try:
            for link in links:
                assert link.registered.wait(5)
            # each batch's status from its own node; a task's status from any
            assert backend.send_event(
                "batch_status",
                {"batch_id": 11, "task_id": 3, "status": "pending", "message": "m"},
                node_id="node-a",
            )
            assert backend.send_event(
                "batch_status",
                {"batch_id": 21, "task_id": 3, "status": "running", "message": "m"},
                node_id="node-b",
            )
            assert backend.send_task_status(3, running=False, message="stopped")

            def arrived() -> bool:
                kinds = [f["type"] for f in stand_in.frames]
                return kinds.count("batch_status") == 2 and "task_status" in kinds

            wait_for(arrived, 5, "the events")
            wait_for(lambda: [f["type"] for f in stand_in.frames].count("heartbeat") >= 4, 5, "")
        finally:
            for link in links:
                link.stop()

    sessions = {s[0].get("consumer_id"): s for s in stand_in.sessions if s}
    assert set(sessions) == {"node-a", "node-b"}
    for node_id, frames in sessions.items():
        # nothing before `registered`: the first frame is `register`
        assert frames[0] == {"type": "register", "consumer_id": node_id}
        for frame in frames[1:]:
            kind = frame["type"]
            if kind == "heartbeat":
                assert set(frame) == {"type", "consumer_id", "batches", "timestamp"}
                assert frame["consumer_id"] == node_id and _ms(frame["timestamp"])
                for batch in frame["batches"]:
                    assert set(batch) == {"batch_id", "task_id", "status", "progress"}
                    assert batch["status"] in STATUSES, batch
                    assert type(batch["progress"]) is int and 0 <= batch["progress"] <= 100
            elif kind == "batch_status":
                assert set(frame) == {
                    "type",
                    "batch_id",
                    "task_id",
                    "status",
                    "message",
                    "timestamp",
                }
                assert frame["status"] in STATUSES and _ms(frame["timestamp"])
                # sent by the node that serves the batch
                assert (frame["batch_id"], node_id) in {(11, "node-a"), (21, "node-b")}
            elif kind == "task_status":
                data = frame["data"]
                assert set(data) == {"taskId", "status", "message", "timestamp"}
                assert data["taskId"] == 3 and data["status"] == 0 and data["message"] == "stopped"
                assert _ms(data["timestamp"]) and _ms(frame["timestamp"])
            else:
                assert kind == "ping", frame
    a_batches = next(f for f in sessions["node-a"] if f["type"] == "heartbeat")["batches"]
    assert {b["batch_id"]: b["status"] for b in a_batches} == {11: "pending", 12: "running"}
