"""The node's side of the backend WebSocket (SPEC §7, message names and fields from the notes).

One `BackendClient` per worker node (a thread of its main process, started by the worker's
`BackendLink` bootstep) when `KAKAROT_BACKEND_WS_URL` is set:

    node → backend: register {consumer_id}; heartbeat {consumer_id, batches, timestamp} every
                    `backend_heartbeat_s`; ping; batch_reload_ack {task_id, consumer_id,
                    action}; and the queued events: the batch_status of the batches it serves
                    (`send_event`), the fleet's task_status (`send_task_status`).
    backend → node: connected {session_id}, registered {consumer_id}, batch_reload {task_id,
                    epoch}, pong, error {code, message}.

Every message, field and unit: docs/backend-protocol.md. Nothing is sent before `registered`;
timestamps are milliseconds; `consumer_id` is the process's `hostname-pid`.

A lost connection is re-opened with back-off (jittered, capped), and the node registers again.
An optional bearer token (`KAKAROT_BACKEND_TOKEN`) goes in the Authorization header; it is
never logged.

Events go through Redis lists (capped): a batch's status change onto the list of the node that
serves it (`kakarot:backend:outbox:{node}`), which that node's client sends on its own
connection; a task's status (raised in a pool child, on any node) onto the fleet's list
(`kakarot:backend:outbox`), which whichever node's client is connected takes. Each is taken off
atomically, so it is sent once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import websocket

from kakarot_workers import runtime
from kakarot_workers.reconnect import Reconnecting
from kakarot_workers.settings import get_settings

log = logging.getLogger(__name__)

OUTBOX_CAP = 10_000
RELAY_PER_TICK = 100
# A backend that has not answered `register` by then is asked again on a new connection.
REGISTER_TIMEOUT_S = 10.0


def send_event(kind: str, data: dict[str, Any], *, node_id: str | None = None) -> bool:
    """Queue a flat event for the backend (`batch_status`: the node serving the batch sends it,
    `node_id`); False when no backend is configured or Redis refused it (events are advisory:
    the database stays the record)."""
    return _queue({"type": kind, **data, "timestamp": int(time.time() * 1000)}, node_id)


def send_task_status(task_id: int, running: bool, message: str) -> bool:
    """Queue a `task_status` as the notes define it: `data {taskId, status (1 running, 0
    stopped), message, timestamp}`; whichever node is connected sends it."""
    now = int(time.time() * 1000)
    data = {"taskId": task_id, "status": 1 if running else 0, "message": message, "timestamp": now}
    return _queue({"type": "task_status", "data": data, "timestamp": now}, None)


def _queue(message: dict[str, Any], node_id: str | None) -> bool:
    if not get_settings().backend_ws_url:
        return False
    kind = message["type"]
    client, keys = runtime.redis_client(), runtime.keys()
    outbox = keys.backend_outbox if node_id is None else keys.backend_outbox_of(node_id)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(outbox, json.dumps(message))
        pipe.ltrim(outbox, -OUTBOX_CAP, -1)
        length = pipe.execute()[0]
        if length > OUTBOX_CAP:  # no node has been connected for long: the oldest one goes
            client.incrby(keys.backend_events_dropped, length - OUTBOX_CAP)
            log.warning("backend outbox full (%d): the oldest event was dropped", OUTBOX_CAP)
    except redis.RedisError as exc:
        log.warning("backend event %s not queued: %s", kind, exc)
        return False
    return True


class BackendClient(Reconnecting):
    """The conversation of one node with the backend; `start()` runs it in a thread."""

    thread_name = "backend-client"
    retry_on = (OSError, websocket.WebSocketException, ValueError)

    def __init__(
        self,
        url: str,
        consumer_id: str,
        *,
        batches: Callable[[], list[dict[str, Any]]],
        on_batch_reload: Callable[[int, int], str],
        token: str | None = None,
        heartbeat_s: float = 30.0,
        ping_s: float = 30.0,
        max_backoff_s: float = 10.0,
        tick_s: float = 0.5,
        node_id: str | None = None,
    ) -> None:
        super().__init__(max_backoff_s)
        self.url = url
        self.consumer_id = consumer_id
        self.node_id = node_id or consumer_id  # whose batch_status events it sends
        self.batches = batches
        self.on_batch_reload = on_batch_reload
        self.token = token
        self.heartbeat_s = heartbeat_s
        self.ping_s = ping_s
        self.tick_s = tick_s
        self.session_id: str | None = None
        self.registered = threading.Event()
        self.connects = 0
        self.errors: list[dict[str, Any]] = []

    # --- one connection ------------------------------------------------------------------
    def __str__(self) -> str:
        return f"backend {self.url}"

    def serve(self) -> None:
        conn = self._connect()
        self.failures = 0
        try:
            self._converse(conn)
        finally:
            close_quietly(conn)

    def disconnected(self) -> None:
        self.registered.clear()

    def _connect(self) -> websocket.WebSocket:
        conn = websocket.create_connection(self.url, timeout=5, header=auth_header(self.token))
        try:
            hello = json.loads(conn.recv())
            if not isinstance(hello, dict) or hello.get("type") != "connected":
                raise ValueError(f"expected `connected` first, got {str(hello)[:100]!r}")
            self.session_id = hello.get("session_id") or hello.get("sessionId")
            conn.send(json.dumps({"type": "register", "consumer_id": self.consumer_id}))
            conn.settimeout(self.tick_s)
        except BaseException:
            close_quietly(conn)
            raise
        self.connects += 1
        return conn

    def _converse(self, conn: websocket.WebSocket) -> None:
        last_heartbeat = last_ping = 0.0
        connected_at = time.monotonic()
        while not self.stopping:
            now = time.monotonic()
            if not self.registered.is_set() and now - connected_at > REGISTER_TIMEOUT_S:
                raise ValueError(f"not registered within {REGISTER_TIMEOUT_S:g}s")
            if self.registered.is_set() and now - last_heartbeat >= self.heartbeat_s:
                self._send(conn, self.heartbeat())
                last_heartbeat = now
            if self.registered.is_set() and now - last_ping >= self.ping_s:
                self._send(conn, {"type": "ping"})
                last_ping = now
            if self.registered.is_set():
                self._relay(conn)
            try:
                raw = conn.recv()
            except websocket.WebSocketTimeoutException:
                continue
            if not raw:
                raise websocket.WebSocketConnectionClosedException("closed by the backend")
            self._handle(conn, raw)

    def heartbeat(self) -> dict[str, Any]:
        return {
            "type": "heartbeat",
            "consumer_id": self.consumer_id,
            "batches": self.batches(),
            "timestamp": int(time.time() * 1000),
        }

    def _send(self, conn: websocket.WebSocket, message: dict[str, Any]) -> None:
        conn.send(json.dumps(message))

    def _relay(self, conn: websocket.WebSocket) -> None:
        """Send the events queued in Redis, oldest first: this node's own (the batches it
        serves), then the fleet's (any process). They are taken off each list atomically, so
        two nodes never send the same one; a failed send puts the rest back at the head for
        the next connection."""
        keys = runtime.keys()
        for outbox in (keys.backend_outbox_of(self.node_id), keys.backend_outbox):
            self._relay_list(conn, outbox)

    def _relay_list(self, conn: websocket.WebSocket, outbox: str) -> None:
        client = runtime.redis_client()
        try:
            popped = client.lpop(outbox, RELAY_PER_TICK)
        except redis.RedisError as exc:
            log.warning("backend outbox unreadable: %s", exc)
            return
        queued = [str(raw) for raw in popped or []]  # JSON text: the client decodes replies
        for index, raw in enumerate(queued):
            try:
                conn.send(raw)
            except (OSError, websocket.WebSocketException):
                with contextlib.suppress(redis.RedisError):
                    client.lpush(outbox, *reversed(queued[index:]))
                raise

    def _handle(self, conn: websocket.WebSocket, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, TypeError, KeyError):
            log.warning("backend sent a frame that is not a message: %r", raw[:200])
            return
        if kind == "registered":
            self.registered.set()
            log.info("backend: registered as %s", self.consumer_id)
        elif kind == "batch_reload":
            try:
                task_id, epoch = int(message["task_id"]), int(message["epoch"])
            except (KeyError, TypeError, ValueError):
                log.warning("backend: batch_reload without task_id/epoch: %r", raw[:200])
                return
            action = self.on_batch_reload(task_id, epoch)
            self._send(
                conn,
                {
                    "type": "batch_reload_ack",
                    "task_id": task_id,
                    "consumer_id": self.consumer_id,
                    "action": action,
                },
            )
        elif kind == "error":
            self.errors.append(message)
            log.warning("backend error %s: %s", message.get("code"), message.get("message"))
        elif kind in ("pong", "connected"):
            pass
        else:
            log.info("backend: message %r ignored", kind)


def auth_header(token: str | None) -> list[str]:
    """The handshake headers carrying the backend's bearer token (none without one)."""
    return [f"Authorization: Bearer {token}"] if token else []


def close_quietly(conn: websocket.WebSocket) -> None:
    """Close politely if the peer still listens, and always release the socket."""
    with contextlib.suppress(Exception):
        conn.close(timeout=1)
    with contextlib.suppress(Exception):
        conn.shutdown()
