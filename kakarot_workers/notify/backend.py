"""The admin backend's WebSocket: an `alert` push (SPEC §7, message format from the notes).

`{"type": "alert", "data": {"alertId", "alertType", "alertData", "timestamp"}}`, one per alert
(a digest sends each). One connection per process, opened on first use and re-opened after a
failure; an optional bearer token comes from `KAKAROT_BACKEND_TOKEN`.
"""

from __future__ import annotations

import json
import threading
import time

import websocket
from pydantic import SecretStr

from kakarot_workers.backend import auth_header, close_quietly
from kakarot_workers.errors import NotifyError
from kakarot_workers.notify.delivery import Delivery


class BackendNotifier:
    def __init__(self, token: SecretStr | None, timeout_s: float) -> None:
        self.token = token
        self.timeout_s = timeout_s
        self._socket: websocket.WebSocket | None = None
        self._url: str | None = None
        self._lock = threading.Lock()

    def send(self, delivery: Delivery) -> str | None:
        if not delivery.destination:
            raise NotifyError("backend: KAKAROT_BACKEND_WS_URL is not set", retryable=False)
        frames = [
            json.dumps(
                {
                    "type": "alert",
                    "data": {
                        "alertId": summary.get("alert_id"),
                        "alertType": summary.get("rule"),
                        "alertData": summary,
                        "timestamp": int(time.time() * 1000),
                    },
                }
            )
            for summary in delivery.summaries
        ]
        with self._lock:
            try:
                socket = self._connect(delivery.destination)
                for frame in frames:
                    socket.send(frame)
            except (OSError, websocket.WebSocketException) as exc:
                self._close()
                raise NotifyError(
                    f"backend: {type(exc).__name__}: {exc}"[:480], retryable=True
                ) from None
        return None

    def _connect(self, url: str) -> websocket.WebSocket:
        if self._socket is not None and self._url == url and self._socket.connected:
            return self._socket
        self._close()
        token = self.token.get_secret_value() if self.token is not None else None
        header = auth_header(token)
        self._socket = websocket.create_connection(url, timeout=self.timeout_s, header=header)
        self._url = url
        return self._socket

    def _close(self) -> None:
        if self._socket is not None:
            close_quietly(self._socket)
        self._socket = None

    def close(self) -> None:
        with self._lock:
            self._close()
