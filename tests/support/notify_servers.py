"""Local stand-ins for the services notifications go to, answering as the real APIs do.

`NotifyServer` is one HTTP server on 127.0.0.1 that speaks:
- Telegram Bot API: `POST /bot{token}/sendMessage` → `{"ok": true, "result": {"message_id": n}}`;
  a wrong token → 401 `{"ok": false, "error_code": 401, "description": "Unauthorized"}`; an
  unknown chat → 400 "Bad Request: chat not found"; rate limited → 429 with `Retry-After` and
  `parameters.retry_after`.
- WeCom robot: `POST /cgi-bin/webhook/send?key=…` → HTTP 200 `{"errcode": 0, "errmsg": "ok"}`;
  a wrong key → errcode 93000; rate limited → errcode 45009 (still HTTP 200, as WeCom does).
- A webhook receiver: `POST /hook` → 200, verifying the HMAC signature (401 if wrong).
`fail_next(service, count, how)` scripts failures: "429", "500", "wecom_limit", "drop";
`before_answer(service, action)` runs `action` once the next message is received, before it is
answered (a fault at the worst moment for the sender).
`BackendServer` is a WebSocket server (websockets) that records every frame it receives.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import websockets
from websockets.asyncio.server import serve

BOT_TOKEN = "123456:TEST-token"
CHATS = {"-1001", "-1002"}
WECOM_KEY = "wecom-test-key"
WEBHOOK_SECRET = "webhook-test-secret"


class NotifyServer:
    def __init__(self) -> None:
        self.received: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.attempts: dict[str, int] = defaultdict(int)
        self._failures: dict[str, list[str]] = defaultdict(list)
        self._before_answer: dict[str, Callable[[], None]] = {}
        self._lock = threading.Lock()
        self._next_id = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                server._handle(self, raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> NotifyServer:
        self._thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail_next(self, service: str, count: int, how: str) -> None:
        with self._lock:
            self._failures[service] += [how] * count

    def before_answer(self, service: str, action: Callable[[], None]) -> None:
        with self._lock:
            self._before_answer[service] = action

    def messages(self, service: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received[service])

    # --- request handling -------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        url = urlparse(handler.path)
        if url.path.startswith("/bot") and url.path.endswith("/sendMessage"):
            self._telegram(handler, url.path[4 : -len("/sendMessage")], raw)
        elif url.path == "/cgi-bin/webhook/send":
            self._wecom(handler, parse_qs(url.query).get("key", [""])[0], raw)
        elif url.path == "/hook":
            self._webhook(handler, raw)
        else:
            _reply(handler, 404, {"error": "not found"})

    def _scripted(self, service: str) -> str | None:
        with self._lock:
            self.attempts[service] += 1
            failures = self._failures[service]
            return failures.pop(0) if failures else None

    def _record(self, service: str, document: dict[str, Any]) -> int:
        with self._lock:
            self._next_id += 1
            self.received[service].append(document)
            message_id = self._next_id
            action = self._before_answer.pop(service, None)
        if action is not None:
            action()
        return message_id

    def _telegram(self, handler: BaseHTTPRequestHandler, token: str, raw: bytes) -> None:
        failure = self._scripted("telegram")
        if failure == "429":
            body = {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            }
            return _reply(handler, 429, body, {"Retry-After": "1"})
        if failure == "500":
            return _reply(
                handler, 502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}
            )
        if failure == "drop":
            handler.close_connection = True
            return None
        if token != BOT_TOKEN:
            return _reply(
                handler, 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
            )
        try:
            request = json.loads(raw)
        except ValueError:
            return _reply(
                handler, 400, {"ok": False, "error_code": 400, "description": "Bad Request"}
            )
        if str(request.get("chat_id")) not in CHATS:
            return _reply(
                handler,
                400,
                {"ok": False, "error_code": 400, "description": "Bad Request: chat not found"},
            )
        if not request.get("text"):
            return _reply(
                handler,
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message text is empty",
                },
            )
        message_id = self._record("telegram", request)
        return _reply(
            handler,
            200,
            {"ok": True, "result": {"message_id": message_id, "chat": {"id": request["chat_id"]}}},
        )

    def _wecom(self, handler: BaseHTTPRequestHandler, key: str, raw: bytes) -> None:
        failure = self._scripted("wecom")
        if failure == "wecom_limit":
            return _reply(handler, 200, {"errcode": 45009, "errmsg": "api freq out of limit"})
        if failure == "500":
            return _reply(handler, 500, {"errcode": -1, "errmsg": "system busy"})
        if key != WECOM_KEY:
            return _reply(handler, 200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        request = json.loads(raw)
        if request.get("msgtype") != "markdown" or not request.get("markdown", {}).get("content"):
            return _reply(handler, 200, {"errcode": 40008, "errmsg": "invalid message type"})
        self._record("wecom", request)
        return _reply(handler, 200, {"errcode": 0, "errmsg": "ok"})

    def _webhook(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        failure = self._scripted("webhook")
        if failure == "429":
            return _reply(handler, 429, {"error": "slow down"}, {"Retry-After": "1"})
        if failure == "500":
            return _reply(handler, 503, {"error": "unavailable"})
        timestamp = handler.headers.get("X-Kakarot-Timestamp", "")
        expected = (
            "sha256="
            + hmac.new(
                WEBHOOK_SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256
            ).hexdigest()
        )
        if not hmac.compare_digest(expected, handler.headers.get("X-Kakarot-Signature", "")):
            return _reply(handler, 401, {"error": "bad signature"})
        document = json.loads(raw)
        document["_delivery"] = handler.headers.get("X-Kakarot-Delivery")
        self._record("webhook", document)
        return _reply(handler, 200, {"received": True})


def _reply(
    handler: BaseHTTPRequestHandler,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


class BackendServer:
    """A WebSocket server on 127.0.0.1 recording every JSON frame, playing the admin backend's
    side as the notes define it: `connected` on connect, `registered` to `register`, `pong` to
    `ping`, and (with `acks`) `alert_ack {alertId}` to an alert."""

    def __init__(self, acks: bool = True) -> None:
        self.acks = acks
        self.frames: list[dict[str, Any]] = []
        self.sessions: list[list[dict[str, Any]]] = []  # the frames of each connection
        self.headers: list[dict[str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f.get("type") == "alert"]

    def __enter__(self) -> BackendServer:
        self._thread.start()
        assert self._ready.wait(10), "backend server did not start"
        return self

    def __exit__(self, *_: Any) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()

        async def handler(connection: Any) -> None:
            self.headers.append(dict(connection.request.headers))
            session: list[dict[str, Any]] = []
            self.sessions.append(session)
            try:
                hello = {
                    "type": "connected",
                    "session_id": "s",
                    "timestamp": int(time.time() * 1000),
                }
                await connection.send(json.dumps(hello))
                async for message in connection:
                    frame = json.loads(message)
                    self.frames.append(frame)
                    session.append(frame)
                    kind = frame.get("type")
                    if kind == "register":
                        answer = {"type": "registered", "consumer_id": frame.get("consumer_id")}
                    elif kind in ("ping", "heartbeat"):
                        answer = {"type": "pong", "timestamp": int(time.time() * 1000)}
                    elif kind == "alert" and self.acks:
                        answer = {"type": "alert_ack", "alertId": frame["data"]["alertId"]}
                    else:
                        continue
                    await connection.send(json.dumps(answer))
            except websockets.ConnectionClosed:
                pass

        # close_timeout: a notifier that only sends never answers the close handshake; do not
        # wait the default 10 s for it at teardown
        async with serve(handler, "127.0.0.1", 0, close_timeout=0.5) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stop
