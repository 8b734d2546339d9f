"""`kakarot hub`: a backend-compatible WebSocket server for local use and tests (SPEC §7).

It speaks the backend's side of the protocol the nodes speak (`kakarot_workers.backend`):

- to every connection `connected {session_id, timestamp}`; `register {consumer_id}` →
  `registered`; `heartbeat {consumer_id, batches, timestamp}` → recorded (and, with
  `heartbeat_writer=hub`, written to `monitor_batch_v2` in bulk: the hub is then the single
  writer) and answered with `pong`; `ping` → `pong`;
- `alert {data: {alertId, …}}` from a registered connection is answered with `alert_ack
  {alertId}` (an alert id seen before is acknowledged again and not relayed twice); from a
  connection that has not registered, with `error not_registered`;
- `batch_status`, `alert`, `task_status` and `batch_reload_ack` are relayed to the connections
  that sent `subscribe {topic}` (dashboards; topic `*` for everything) as
  `{type, data, timestamp}`;
- when a task's `current_epoch` changes in the database, `batch_reload {task_id, epoch,
  message}` goes to every registered node;
- a malformed frame or an unknown type is answered with `error {code, message}`; the
  connection stays open;
- with `idle_close_s`, a connection silent that long is closed (as a backend's idle timeout
  would).

Read-only JSON on the same port: `GET /api/v1/tasks` (with last_heartbeat and health),
`/api/v1/batches` (`?task_id=N`), `/api/v1/nodes`. With a token (`KAKAROT_HUB_TOKEN`), every
request needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import logging
import secrets
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from kakarot_workers.db import heartbeats
from kakarot_workers.db.models import MonitorTask
from kakarot_workers.db.session import session_scope
from kakarot_workers.tools.admin import list_batches, list_tasks

log = logging.getLogger(__name__)

RELAYED = ("batch_status", "alert", "task_status", "batch_reload_ack")
KEEP_LAST = 1_000
SEEN_CAP = 100_000


@dataclass
class NodeState:
    consumer_id: str
    session_id: str
    remote: str
    connected: bool = True
    registered_at: float = field(default_factory=time.time)
    last_heartbeat: float | None = None
    batches: list[dict[str, Any]] = field(default_factory=list)


class Hub:
    """The server; `start()` runs it on a thread of its own (tests, `kakarot hub`)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        write_heartbeats: bool = False,
        epoch_poll_s: float = 2.0,
        idle_close_s: float | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.write_heartbeats = write_heartbeats
        self.epoch_poll_s = epoch_poll_s
        self.idle_close_s = idle_close_s
        # the latest alert ids received, duplicates included, in order (tests count them)
        self.alert_ids: list[Any] = []
        # the ids already relayed (the newest SEEN_CAP; a repeat older than that relays again)
        self._alerts_seen: dict[Any, None] = {}
        self.nodes: dict[str, NodeState] = {}
        # the latest, for tests and a look at a running hub (bounded: a hub runs for long)
        self.acks: deque[dict[str, Any]] = deque(maxlen=KEEP_LAST)
        self.relayed: deque[dict[str, Any]] = deque(maxlen=KEEP_LAST)
        self.heartbeats_written = 0
        self._node_of: dict[ServerConnection, str] = {}
        self._topics: dict[ServerConnection, set[str]] = {}
        self._epochs: dict[int, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing: asyncio.Event | None = None

    # --- life cycle ----------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def start(self) -> Hub:
        self._thread = threading.Thread(target=lambda: asyncio.run(self.serve()), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the hub did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._closing is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._closing.set)
        if self._thread is not None:
            self._thread.join(10)

    async def serve(self, until: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        self._closing = until or asyncio.Event()
        # close_timeout: at shutdown, a client that does not answer the closing handshake
        # (it is busy, or only sends) is not waited for 10 s
        async with serve(
            self._connection, self.host, self.port, process_request=self._http, close_timeout=1
        ) as server:
            self._server = server
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            watcher = asyncio.create_task(self._watch_epochs())
            try:
                await self._closing.wait()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher

    # --- HTTP: auth and the read-only API ------------------------------------------------
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not secrets.compare_digest(given, f"Bearer {self.token}"):
                return _json_response(http.HTTPStatus.UNAUTHORIZED, {"error": "unauthorized"})
        url = urlsplit(request.path)
        if not url.path.startswith("/api/"):
            return None  # the WebSocket handshake goes on
        query = parse_qs(url.query)
        try:
            if url.path == "/api/v1/tasks":
                return _json_response(http.HTTPStatus.OK, tasks_report())
            if url.path == "/api/v1/batches":
                task_id = int(query["task_id"][0]) if "task_id" in query else None
                return _json_response(http.HTTPStatus.OK, batches_report(task_id))
            if url.path == "/api/v1/nodes":
                return _json_response(http.HTTPStatus.OK, self.nodes_report())
        except ValueError as exc:
            return _json_response(http.HTTPStatus.BAD_REQUEST, {"error": str(exc)})
        return _json_response(http.HTTPStatus.NOT_FOUND, {"error": f"no such path {url.path}"})

    @property
    def epochs_seen(self) -> dict[int, int]:
        """Each task's `current_epoch` at the hub's last look (a change sends batch_reload)."""
        return dict(self._epochs or {})

    def nodes_report(self) -> list[dict[str, Any]]:
        return [
            {
                "consumer_id": n.consumer_id,
                "session_id": n.session_id,
                "remote": n.remote,
                "connected": n.connected,
                "registered_at": _iso(n.registered_at),
                "last_heartbeat": _iso(n.last_heartbeat),
                "batches": n.batches,
            }
            for n in sorted(self.nodes.values(), key=lambda n: n.consumer_id)
        ]

    # --- the WebSocket conversation ------------------------------------------------------
    async def _connection(self, connection: ServerConnection) -> None:
        session_id = uuid.uuid4().hex
        await _send(
            connection,
            {"type": "connected", "session_id": session_id, "timestamp": _now_ms()},
        )
        try:
            while True:
                if self.idle_close_s is None:
                    raw = await connection.recv()
                else:
                    try:
                        raw = await asyncio.wait_for(connection.recv(), self.idle_close_s)
                    except TimeoutError:
                        await connection.close(1000, "idle")
                        break
                await self._handle(connection, session_id, raw)
        except ConnectionClosed:
            pass
        finally:
            self._topics.pop(connection, None)
            consumer = self._node_of.pop(connection, None)
            if consumer in self.nodes and self.nodes[consumer].session_id == session_id:
                self.nodes[consumer].connected = False

    async def _handle(self, connection: ServerConnection, session_id: str, raw: Any) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            await _error(connection, "bad_message", "expected a JSON object with a `type`")
            return
        if kind == "ping":
            await _send(connection, {"type": "pong", "timestamp": _now_ms()})
        elif kind == "register":
            consumer = message.get("consumer_id")
            if not isinstance(consumer, str) or not consumer:
                await _error(connection, "bad_register", "register needs a consumer_id")
                return
            remote = connection.remote_address
            self.nodes[consumer] = NodeState(consumer, session_id, f"{remote[0]}:{remote[1]}")
            self._node_of[connection] = consumer
            await _send(connection, {"type": "registered", "consumer_id": consumer})
        elif kind == "heartbeat":
            await self._heartbeat(connection, message)
        elif kind == "subscribe":
            topic = message.get("topic")
            if not isinstance(topic, str):
                await _error(connection, "bad_subscribe", "subscribe needs a topic")
                return
            self._topics.setdefault(connection, set()).add(topic)
        elif kind == "alert":
            await self._alert(connection, message)
        elif kind in RELAYED:
            if kind == "batch_reload_ack":
                self.acks.append(message)
            await self._relay(kind, message)
        else:
            await _error(connection, "unknown_type", f"unknown message type {kind!r}")

    async def _heartbeat(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        consumer = self._node_of.get(connection)
        if consumer is None or message.get("consumer_id") != consumer:
            await _error(connection, "not_registered", "register before sending heartbeats")
            return
        batches = message.get("batches")
        if not isinstance(batches, list):
            await _error(connection, "bad_heartbeat", "heartbeat needs a list of batches")
            return
        node = self.nodes[consumer]
        node.last_heartbeat = time.time()
        node.batches = batches
        if self.write_heartbeats:
            at = datetime.now(UTC).replace(tzinfo=None)
            rows = [
                {
                    "batch_id": int(b["batch_id"]),
                    "task_id": int(b.get("task_id") or 0),
                    "status": str(b["status"]),
                    "consumer_id": None,
                    "worker_id": consumer,
                    "worker_pid": None,
                    "at": at,
                }
                for b in batches
                if isinstance(b, dict) and "batch_id" in b and "status" in b
            ]
            self.heartbeats_written += await asyncio.to_thread(heartbeats.write_heartbeats, rows)
        await _send(connection, {"type": "pong", "timestamp": _now_ms()})

    async def _alert(self, connection: ServerConnection, message: dict[str, Any]) -> None:
        if connection not in self._node_of:
            await _error(connection, "not_registered", "register before sending alerts")
            return
        data = message.get("data")
        alert_id = data.get("alertId") if isinstance(data, dict) else None
        if alert_id is None:
            await _error(connection, "bad_alert", "an alert needs data.alertId")
            return
        self.alert_ids.append(alert_id)
        del self.alert_ids[:-KEEP_LAST]
        if alert_id not in self._alerts_seen:
            self._alerts_seen[alert_id] = None
            if len(self._alerts_seen) > SEEN_CAP:
                del self._alerts_seen[next(iter(self._alerts_seen))]
            await self._relay("alert", message)
        await _send(connection, {"type": "alert_ack", "alertId": alert_id, "timestamp": _now_ms()})

    async def _relay(self, kind: str, message: dict[str, Any]) -> None:
        data = {k: v for k, v in message.items() if k not in ("type", "timestamp")}
        if "data" in data and len(data) == 1:
            data = data["data"]  # already wrapped (the alert push)
        framed = {"type": kind, "data": data, "timestamp": message.get("timestamp", _now_ms())}
        self.relayed.append(framed)
        for connection, topics in list(self._topics.items()):
            if kind in topics or "*" in topics:
                with contextlib.suppress(ConnectionClosed):
                    await _send(connection, framed)

    # --- epochs → batch_reload -----------------------------------------------------------
    async def _watch_epochs(self) -> None:
        while True:
            try:
                epochs = await asyncio.to_thread(current_epochs)
            except Exception as exc:  # noqa: BLE001 (the database may be down; try again)
                log.warning("hub: epochs unreadable: %s", exc)
            else:
                if self._epochs is not None:
                    for task_id, epoch in epochs.items():
                        if self._epochs.get(task_id, epoch) != epoch:
                            await self.broadcast_reload(task_id, epoch)
                self._epochs = epochs
            await asyncio.sleep(self.epoch_poll_s)

    async def broadcast_reload(self, task_id: int, epoch: int) -> None:
        message = {
            "type": "batch_reload",
            "task_id": task_id,
            "epoch": epoch,
            "message": f"task {task_id} is now allocated as epoch {epoch}",
        }
        for connection, consumer in list(self._node_of.items()):
            with contextlib.suppress(ConnectionClosed):
                await _send(connection, message)
                log.info("hub: batch_reload task %s epoch %s → %s", task_id, epoch, consumer)


# --- the database side ------------------------------------------------------------------------
def current_epochs() -> dict[int, int]:
    with session_scope() as session:
        rows = session.execute(
            select(MonitorTask.id, MonitorTask.current_epoch).where(MonitorTask.del_flag == 0)
        ).all()
    return {task_id: epoch for task_id, epoch in rows}


def tasks_report() -> list[dict[str, Any]]:
    with session_scope() as session:
        return [_jsonable(row) for row in list_tasks(session)]


def batches_report(task_id: int | None = None) -> list[dict[str, Any]]:
    with session_scope() as session:
        return [_jsonable(row) for row in list_batches(session, task_id)]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _iso_dt(v) if isinstance(v, datetime) else v for k, v in row.items()}


# --- small helpers ----------------------------------------------------------------------------
async def _send(connection: ServerConnection, message: dict[str, Any]) -> None:
    await connection.send(json.dumps(message))


async def _error(connection: ServerConnection, code: str, text: str) -> None:
    await _send(connection, {"type": "error", "code": code, "message": text})


def _json_response(status: http.HTTPStatus, body: Any) -> Response:
    payload = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(payload)))])
    return Response(status.value, status.phrase, headers, payload)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _iso_dt(value: datetime | None) -> str | None:
    return None if value is None else value.replace(tzinfo=UTC).isoformat(timespec="seconds")
