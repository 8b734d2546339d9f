"""The admin backend's WebSocket: an `alert` push (SPEC §7, message format from the notes).

`{"type": "alert", "data": {"alertId", "alertType", "alertData", "timestamp"}}`, one per alert
(a digest sends each), on a connection of this process's own that talks like any client of the
backend: it waits for `connected`, registers (`register {consumer_id}`, this process's
`hostname-pid`) and sends nothing before `registered`.

A write to a socket the backend has closed (a restart, an idle timeout) succeeds locally and is
lost, so an alert counts as delivered only on evidence that the backend read it: its
`alert_ack {alertId}` when the backend acknowledges alerts (`KAKAROT_BACKEND_ALERT_ACKS`:
exactly once by alert id, if the backend drops an id it has seen), else a `pong` to a `ping`
sent after the alerts (the backend answers in order: at least once). Without that evidence
within `notify_timeout_s` the connection is dropped and the delivery fails as retryable; when
the connection was an old one (it may have died idle), it is tried once more at once on a new
one. The outbox sends a failed delivery again later.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from typing import Any

import websocket
from pydantic import SecretStr

from kakarot_workers import runtime
from kakarot_workers.backend import auth_header, close_quietly
from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.delivery import Delivery

# What is read and ignored while waiting for one frame at most (a backend's broadcasts).
MAX_FRAMES_SKIPPED = 1_000


class NoEvidence(Exception):
    """The backend did not answer as it should in time (or closed the connection)."""


class BackendNotifier:
    def __init__(self, token: SecretStr | None, timeout_s: float, *, acks: bool = False) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self.acks = acks
        self._socket: websocket.WebSocket | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> str | None:
        if not delivery.destination:
            raise NotifyError("backend: KAKAROT_BACKEND_WS_URL is not set", retryable=False)
        alerts: list[dict[str, Any]] = [
            {
                "type": "alert",
                "data": {
                    "alertId": summary.get("alert_id"),
                    "alertType": summary.get("rule"),
                    "alertData": summary,
                    "timestamp": int(time.time() * 1000),
                },
            }
            for summary in delivery.summaries
        ]
        with self._lock:
            for attempt in (1, 2):
                reused = self._socket is not None and self._url == delivery.destination
                try:
                    socket = self._connect(delivery.destination)
                    for alert in alerts:
                        socket.send(json.dumps(alert))
                    self._confirm(socket, [a["data"]["alertId"] for a in alerts])
                    return None
                except (OSError, websocket.WebSocketException, NoEvidence, ValueError) as exc:
                    self._close()
                    if attempt == 1 and reused:
                        continue  # it may have died idle: once more on a new connection
                    raise NotifyError(
                        f"backend: {type(exc).__name__}: {exc}"[:480], retryable=True
                    ) from None
        return None

    def _confirm(self, socket: websocket.WebSocket, alert_ids: Iterable[Any]) -> None:
        """Wait for the evidence that the backend read what was sent (see the module)."""
        if self.acks:
            waiting = set(alert_ids)
            while waiting:
                frame = self._read(socket, "alert_ack")
                waiting.discard((frame.get("data") or frame).get("alertId"))
        else:
            socket.send(json.dumps({"type": "ping", "timestamp": int(time.time() * 1000)}))
            self._read(socket, "pong")

    def _read(self, socket: websocket.WebSocket, kind: str) -> dict[str, Any]:
        """The next frame of type `kind`, skipping others, within `timeout_s`."""
        deadline = time.monotonic() + self.timeout_s
        for _ in range(MAX_FRAMES_SKIPPED):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            socket.settimeout(left)
            raw = socket.recv()
            if not raw:
                raise NoEvidence(f"the backend closed the connection (waiting for {kind})")
            frame = json.loads(raw)
            if isinstance(frame, dict) and frame.get("type") == kind:
                return frame
            if isinstance(frame, dict) and frame.get("type") == "error":
                raise NoEvidence(f"the backend says: {str(frame.get('message'))[:200]}")
        raise NoEvidence(f"no {kind} within {self.timeout_s:g}s")

    def _connect(self, url: str) -> websocket.WebSocket:
        if self._socket is not None and self._url == url and self._socket.connected:
            return self._socket
        self._close()
        token = self.token.get_secret_value() if self.token is not None else None
        socket = websocket.create_connection(url, timeout=self.timeout_s, header=auth_header(token))
        try:
            self._read(socket, "connected")
            consumer_id = runtime.consumer_id()
            socket.send(json.dumps({"type": "register", "consumer_id": consumer_id}))
            self._read(socket, "registered")
        except BaseException:
            close_quietly(socket)
            raise
        self._socket, self._url = socket, url
        return socket

    def _close(self) -> None:
        if self._socket is not None:
            close_quietly(self._socket)
        self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close()
